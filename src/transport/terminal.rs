//! The terminal approval channel: for a person running gatekeep by hand.
//!
//! Requests are shown on stderr; answers are read line by line from stdin:
//! `a` approve, `t` approve and trust the same exact request for the rest of
//! the run, `d` deny, `r` deny with a reason (asked for on the next line,
//! or given inline: `r not in prod`). With several requests waiting, the
//! answer goes to the oldest one unless a number is given (`2 a`, `a 2`).
//!
//! stdin is read on a plain thread: a blocking read of a terminal cannot be
//! cancelled, and a tokio blocking task would hold up the runtime's shutdown
//! until the user pressed enter.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;

use tokio::sync::mpsc;

use crate::approval::messages::{DecideOutcome, Decider, Notice};
use crate::approval::{Actor, Shown, Verdict};
use crate::console::Console;
use crate::redact::{terminal_safe_bounded, Redactor};

/// Longest command or diff shown in full at the terminal.
const MAX_SHOWN: usize = 4000;

/// Start reading stdin lines on their own thread.
#[must_use]
pub fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    // The thread ends at end of input or when the receiver is gone; the
    // process may exit while it is blocked in a read, which is fine.
    let _ = std::thread::Builder::new()
        .name("gatekeep-stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    rx
}

/// What a line typed at the prompt means.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Approve(Option<u32>),
    /// Approve, and the same exact request again for the rest of the run.
    Trust(Option<u32>),
    Deny(Option<u32>),
    DenyWithReason(Option<u32>, Option<String>),
    Unclear,
}

fn parse_answer(line: &str) -> Answer {
    let mut words = line.split_whitespace().peekable();
    let mut number = None;
    if let Some(n) = words
        .peek()
        .and_then(|w| w.trim_start_matches('#').parse::<u32>().ok())
    {
        number = Some(n);
        words.next();
    }
    let Some(verb) = words.next() else {
        return Answer::Unclear;
    };
    let mut rest: Vec<&str> = words.collect();
    if number.is_none() {
        if let Some(n) = rest
            .first()
            .and_then(|w| w.trim_start_matches('#').parse::<u32>().ok())
        {
            number = Some(n);
            rest.remove(0);
        }
    }
    match verb.to_ascii_lowercase().as_str() {
        "a" | "y" | "yes" | "approve" if rest.is_empty() => Answer::Approve(number),
        "t" | "trust" if rest.is_empty() => Answer::Trust(number),
        "d" | "n" | "no" | "deny" if rest.is_empty() => Answer::Deny(number),
        "r" | "reason" => {
            let reason = rest.join(" ");
            Answer::DenyWithReason(number, (!reason.is_empty()).then_some(reason))
        }
        _ => Answer::Unclear,
    }
}

/// Render one question of the agent for the terminal.
fn render_question(request: &Shown, redactor: &Redactor, who: &str) -> String {
    let clean = |s: &str| redactor.shown(s, MAX_SHOWN);
    let mut out = String::new();
    let _ = writeln!(out, "\n[#{}] question from the agent{who}", request.number);
    for (i, q) in request.ask.questions().iter().enumerate() {
        let header = if q.header.is_empty() {
            String::new()
        } else {
            format!("{}: ", clean(&q.header))
        };
        let _ = writeln!(out, "  {}. {header}{}", i + 1, clean(&q.text));
        for (n, (label, description)) in q.options.iter().enumerate() {
            let _ = writeln!(
                out,
                "     {}) {} — {}",
                n + 1,
                clean(label),
                clean(description)
            );
        }
    }
    footer(
        &mut out,
        request,
        "answer with option numbers (1 or 1,3), or `= your own words`; `;` between questions; d dismisses",
        &format!("prefix `#{}` to pick this one", request.number),
    );
    out
}

/// The time left and how to answer, ending the prompt.
fn footer(out: &mut String, request: &Shown, how: &str, pick: &str) {
    let left = std::time::Duration::from_secs(request.deadline.left.as_secs());
    let _ = writeln!(out, "  time left: {}", humantime::format_duration(left));
    let pick = if request.number > 1 {
        format!(" — {pick}")
    } else {
        String::new()
    };
    let _ = write!(out, "  {how}{pick}: ");
}

/// A typed answer to a question: per question (separated by `;`), option
/// numbers (`1` or `1,3`) or free text after `=`. `None` when it does not
/// fit the question.
fn parse_question_answer(text: &str, request: &Shown) -> Option<Vec<Vec<String>>> {
    let parts: Vec<&str> = text.split(';').map(str::trim).collect();
    if parts.len() != request.ask.questions().len() {
        return None;
    }
    parts
        .iter()
        .zip(request.ask.questions())
        .map(|(part, q)| match part.strip_prefix('=') {
            Some(free) => q.free_text(free),
            None => q.pick_numbers(part),
        })
        .collect()
}

/// Render one request for the terminal. Pure, so it can be tested.
#[must_use]
pub fn render(request: &Shown, redactor: &Redactor) -> String {
    let clean = |s: &str| redactor.shown(s, MAX_SHOWN);
    let mut out = String::new();
    let who = match &request.ask.agent {
        Some(agent) => format!(" (subagent: {})", clean(agent)),
        None => String::new(),
    };
    if request.ask.is_question() {
        return render_question(request, redactor, &who);
    }
    let _ = writeln!(
        out,
        "\n[#{}] approval needed: {}{}",
        request.number,
        clean(request.ask.kind()),
        who
    );
    if let Some(command) = &request.ask.command() {
        let _ = writeln!(out, "  command: {}", clean(command));
    }
    if let Some(path) = &request.ask.path() {
        let _ = writeln!(out, "  path: {}", clean(path));
    }
    if request.ask.command().is_none()
        && request.ask.path().is_none()
        && !request.ask.patterns().is_empty()
    {
        let _ = writeln!(
            out,
            "  patterns: {}",
            clean(&request.ask.patterns().join(", "))
        );
    }
    if let Some(description) = &request.ask.description() {
        let _ = writeln!(out, "  why: {}", clean(description));
    }
    if let Some(diff) = &request.ask.diff() {
        let _ = writeln!(out, "  diff:");
        for line in clean(diff).lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if request.needs.policy_change {
        let _ = writeln!(
            out,
            "  POLICY CHANGE: this edits gatekeep's own policy (the policy file or OpenCode's config)"
        );
    }
    if request.needs.approvals > 1 {
        let _ = writeln!(
            out,
            "  needs {} different approvers (this terminal counts as one)",
            request.needs.approvals
        );
    }
    let how = if request.needs.trustable() {
        "answer [a]pprove, [t]rust (approve this exact request for the rest of the run), [d]eny, [r]eason (deny with a reason)"
    } else {
        "answer [a]pprove, [d]eny, [r]eason (deny with a reason)"
    };
    footer(
        &mut out,
        request,
        how,
        &format!("prefix the number to pick, e.g. `{} a`", request.number),
    );
    out
}

/// Serve the terminal channel until the run ends.
pub async fn serve(
    mut notices: mpsc::UnboundedReceiver<Notice>,
    mut lines: mpsc::UnboundedReceiver<String>,
    decider: Decider,
    redactor: Redactor,
    actor: Actor,
    console: Console,
) {
    let mut pending: BTreeMap<u32, Shown> = BTreeMap::new();
    // A deny-with-reason waiting for its reason on the next line.
    let mut awaiting_reason: Option<u32> = None;
    let mut input_open = true;
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(Notice::Show(request)) => {
                    // Through the console: its live status line stays down
                    // while a question waits here.
                    console.prompt(&render(&request, &redactor));
                    pending.insert(request.number, request);
                }
                Some(Notice::Settled { number, settlement, .. }) => {
                    if pending.remove(&number).is_some() {
                        console.say(&format!("\n[#{number}] {settlement}"));
                        if pending.is_empty() {
                            console.prompts_done();
                        }
                    }
                    if awaiting_reason == Some(number) {
                        awaiting_reason = None;
                    }
                }
                Some(Notice::Decided { request, settlement }) => {
                    let subject = redactor.shown(request.ask.summary(), 200);
                    let kind = terminal_safe_bounded(request.ask.kind(), 64);
                    console.say(&format!("\n[#{}] {kind} `{subject}`: {settlement}", request.number));
                }
                Some(Notice::Progress(progress)) => {
                    console.say(&format!(
                        "\n[#{}] {}; another approver is needed",
                        progress.number,
                        terminal_safe_bounded(&progress.to_string(), 400)
                    ));
                }
                Some(Notice::Refused { .. } | Notice::Undelivered { .. } | Notice::Intruded(_) | Notice::Closing(_)) => {}
                Some(Notice::RunEnded(_)) | None => return,
            },
            line = lines.recv(), if input_open => {
                let Some(line) = line else {
                    // End of input: nobody can answer here any more. The
                    // requests stay pending until their deadline.
                    input_open = false;
                    if !pending.is_empty() {
                        console.say("\ngatekeep: stdin closed; pending requests will be denied at their deadline");
                    }
                    continue;
                };
                let decision = match awaiting_reason.take() {
                    Some(number) => Some((number, Verdict::Deny { reason: reason_of(&line) })),
                    None => interpret(&line, &pending, &mut awaiting_reason, &console),
                };
                if let Some((number, verdict)) = decision {
                    let outcome = decider.decide(number, verdict, actor.clone()).await;
                    report(number, &outcome, &console);
                }
            }
        }
    }
}

fn reason_of(line: &str) -> Option<String> {
    let reason = line.trim();
    (!reason.is_empty()).then(|| reason.to_owned())
}

/// A line meant for a pending question: `#N` picks the question, otherwise
/// the oldest pending request is the target when it is a question. `None`
/// when the line is not for a question (a permission answer follows).
#[allow(clippy::option_option)]
fn question_answer(
    line: &str,
    pending: &BTreeMap<u32, Shown>,
    console: &Console,
) -> Option<Option<(u32, Verdict)>> {
    let line = line.trim();
    let (target, rest) = match line
        .strip_prefix('#')
        .and_then(|r| r.split_once(char::is_whitespace))
    {
        Some((n, rest)) => (
            n.parse::<u32>().ok().and_then(|n| pending.get(&n)),
            rest.trim(),
        ),
        None => (pending.values().next(), line),
    };
    let request = target.filter(|r| r.ask.is_question())?;
    if matches!(rest, "d" | "n" | "no" | "deny" | "dismiss") {
        return Some(Some((request.number, Verdict::Deny { reason: None })));
    }
    if let Some(answers) = parse_question_answer(rest, request) {
        return Some(Some((request.number, Verdict::Answer { answers })));
    }
    console.say(&format!(
        "gatekeep: #{} is a question: answer with its option numbers or `= your own words`, one answer per question separated by `;`, or d to dismiss",
        request.number
    ));
    Some(None)
}

/// Turn a typed line into a decision, or explain why it is not one.
fn interpret(
    line: &str,
    pending: &BTreeMap<u32, Shown>,
    awaiting_reason: &mut Option<u32>,
    console: &Console,
) -> Option<(u32, Verdict)> {
    if line.trim().is_empty() {
        return None;
    }
    if let Some(answered) = question_answer(line, pending, console) {
        return answered;
    }
    let answer = parse_answer(line);
    let target = |n: Option<u32>| n.or_else(|| pending.keys().next().copied());
    let (number, verdict) = match answer {
        Answer::Unclear => {
            console.say("gatekeep: type a (approve), d (deny) or r (deny with a reason), optionally with a request number");
            return None;
        }
        Answer::Approve(n) => (target(n), Verdict::Approve),
        Answer::Trust(n) => (target(n), Verdict::ApproveAndTrust),
        Answer::Deny(n) => (target(n), Verdict::Deny { reason: None }),
        Answer::DenyWithReason(n, Some(reason)) => (
            target(n),
            Verdict::Deny {
                reason: Some(reason),
            },
        ),
        Answer::DenyWithReason(n, None) => {
            if let Some(number) = target(n) {
                console.prompt(&format!("reason for denying #{number}: "));
                *awaiting_reason = Some(number);
            } else {
                console.say("gatekeep: nothing is waiting for an answer");
            }
            return None;
        }
    };
    if number.is_none() {
        console.say("gatekeep: nothing is waiting for an answer");
    }
    number.map(|n| (n, verdict))
}

fn report(number: u32, outcome: &DecideOutcome, console: &Console) {
    match outcome {
        // The settlement (or the count) is printed when its notice arrives.
        DecideOutcome::Accepted(_) | DecideOutcome::Counted(_) => {}
        DecideOutcome::AlreadyDecided(s) => {
            console.say(&format!("gatekeep: #{number} was already decided: {s}"));
        }
        DecideOutcome::InProgress => {
            console.say(&format!("gatekeep: #{number} is being decided already"));
        }
        DecideOutcome::Unknown => console.say(&format!("gatekeep: there is no request #{number}")),
        DecideOutcome::RunEnded => {
            console.say("gatekeep: the run is ending; nothing more is forwarded");
        }
        DecideOutcome::WrongKind => {
            console.say(&format!("gatekeep: #{number} takes another kind of answer (a question is answered with its option numbers or text; a permission with a, t, d or r)"));
        }
        DecideOutcome::SameApprover(p) => console.say(&format!(
            "gatekeep: you approved #{number} already ({p}); another person must approve it too"
        )),
        DecideOutcome::Failed(e) => {
            console.say(&format!("gatekeep: #{number} could not be delivered to OpenCode ({e}); it is still open, try again"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::approval::{Ask, Deadline, Permission, Subject};

    /// A console for the tests' explanations (nothing is asserted on them).
    fn quiet() -> Console {
        Console::new(crate::config::Verbosity::Quiet)
    }

    fn question(multiple: bool) -> Shown {
        Shown {
            needs: crate::approval::Needs::default(),
            number: 1,
            deadline: Deadline::shown_as(SystemTime::UNIX_EPOCH, Duration::from_secs(60)),
            ask: Ask {
                id: "que_1".into(),
                session_id: "ses".into(),
                agent: None,
                subject: Subject::Question(vec![crate::approval::Question {
                    header: "Pick".into(),
                    text: "Which database?".into(),
                    options: vec![
                        ("Postgres".into(), "the usual".into()),
                        ("SQLite".into(), "embedded".into()),
                    ],
                    multiple,
                    custom: true,
                }]),
            },
        }
    }

    #[test]
    fn question_answers_are_option_numbers_or_free_text() {
        let single = question(false);
        assert_eq!(
            parse_question_answer("2", &single),
            Some(vec![vec!["SQLite".to_owned()]])
        );
        assert_eq!(
            parse_question_answer("1,2", &single),
            None,
            "one choice only"
        );
        assert_eq!(
            parse_question_answer("1,2", &question(true)),
            Some(vec![vec!["Postgres".to_owned(), "SQLite".to_owned()]])
        );
        assert_eq!(
            parse_question_answer("= MySQL, sadly", &single),
            Some(vec![vec!["MySQL, sadly".to_owned()]])
        );
        assert_eq!(parse_question_answer("3", &single), None);
        assert_eq!(parse_question_answer("a", &single), None);
        let pending: BTreeMap<u32, Shown> = [(1, single)].into();
        assert_eq!(
            question_answer("a", &pending, &quiet()),
            Some(None),
            "an approval is not an answer"
        );
        assert!(matches!(
            question_answer("#1 d", &pending, &quiet()),
            Some(Some((1, Verdict::Deny { .. })))
        ));
    }

    #[test]
    fn answers_accept_numbers_before_or_after_the_verb() {
        assert_eq!(parse_answer("a"), Answer::Approve(None));
        assert_eq!(parse_answer("t 3"), Answer::Trust(Some(3)));
        assert_eq!(parse_answer("2 a"), Answer::Approve(Some(2)));
        assert_eq!(parse_answer("deny #3"), Answer::Deny(Some(3)));
        assert_eq!(
            parse_answer("r 4 not on main"),
            Answer::DenyWithReason(Some(4), Some("not on main".into()))
        );
        assert_eq!(parse_answer("r"), Answer::DenyWithReason(None, None));
        assert_eq!(parse_answer("approve everything"), Answer::Unclear);
        assert_eq!(parse_answer("maybe"), Answer::Unclear);
    }

    #[test]
    fn rendering_neutralises_escapes_and_redacts_secrets() {
        let request = Shown {
            needs: crate::approval::Needs::default(),
            number: 1,
            deadline: Deadline::shown_as(SystemTime::UNIX_EPOCH, Duration::from_secs(90)),
            ask: Ask {
                id: "per_1".into(),
                session_id: "ses".into(),
                agent: Some("general".into()),
                subject: Subject::Permission(Permission {
                    kind: "bash".into(),
                    patterns: vec![],
                    command: Some(
                        "echo \u{1b}[31mred\u{1b}[0m ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
                            .into(),
                    ),
                    path: None,
                    diff: None,
                    description: Some("prints".into()),
                }),
            },
        };
        let shown = render(&request, &Redactor::new(vec![]));
        assert!(!shown.contains('\u{1b}'), "{shown}");
        assert!(!shown.contains("ghp_0123"), "{shown}");
        assert!(shown.contains("(subagent: general)"));
        assert!(shown.contains("time left: 1m 30s"));
    }
}
