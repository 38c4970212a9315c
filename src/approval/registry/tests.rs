use std::time::{Duration, SystemTime};

use super::*;
use crate::approval::rules::DenyRuleError;
use crate::approval::{Channel, Permission, Subject};

fn request(id: &str, session: &str) -> Ask {
    Ask::bash(id, session, "echo hi")
}

/// A deadline at `at`; the wall clock is only for display.
fn due(at: Instant) -> Deadline {
    Deadline {
        at,
        wall: SystemTime::UNIX_EPOCH,
        left: Duration::from_secs(60),
    }
}

fn alice() -> Actor {
    Actor {
        channel: Channel::Discord,
        id: "1".to_owned(),
        name: "alice".to_owned(),
    }
}

fn open(reg: &mut Registry, id: &str, session: &str, deadline: Instant) -> u32 {
    match reg.ask(request(id, session), due(deadline)) {
        Asked::Open {
            shown: request,
            superseded,
        } => {
            assert!(superseded.is_none());
            request.number
        }
        Asked::Refused(s) => panic!("refused: {s:?}"),
    }
}

#[test]
fn approve_claims_then_settles_on_success() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
    let claim = reg
        .claim(n, Verdict::Approve, alice(), now)
        .expect("first click wins");
    assert_eq!(claim.reply, Reply::Once);
    let settled = reg.claim_succeeded(n).expect("settles");
    assert_eq!(
        settled.settlement,
        Settlement::Approved {
            by: alice(),
            also: vec![]
        }
    );
    assert_eq!(settled.reply, None);
    // The echo of our own reply changes nothing.
    let echo = reg.replied("ses_1", "per_a", &Echo::Approved { always: false });
    assert_eq!(echo, Replied::default(), "nothing changes, no intrusion");
}

#[test]
fn second_click_is_refused_while_in_progress_and_after() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
    let _claim = reg.claim(n, Verdict::Approve, alice(), now).expect("first");
    assert_eq!(
        reg.claim(n, Verdict::Deny { reason: None }, alice(), now),
        Err(Refusal::InProgress)
    );
    let _ = reg.claim_succeeded(n);
    assert!(matches!(
        reg.claim(n, Verdict::Approve, alice(), now),
        Err(Refusal::AlreadyDecided(Settlement::Approved { .. }))
    ));
}

#[test]
fn deadline_expires_open_entries_but_not_claimed_ones() {
    let now = Instant::now();
    let deadline = now + Duration::from_secs(10);
    let mut reg = Registry::new();
    let a = open(&mut reg, "per_a", "ses_1", deadline);
    let b = open(&mut reg, "per_b", "ses_2", deadline);
    let _claim = reg
        .claim(b, Verdict::Approve, alice(), now)
        .expect("claim b");
    assert_eq!(reg.next_deadline(), Some(deadline));
    let expired = reg.expire_due(deadline);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].number, a);
    assert_eq!(expired[0].settlement, Settlement::Expired);
    assert!(expired[0].reply.is_some(), "an expired request is rejected");
    assert_eq!(reg.next_deadline(), None);
    // The claim still wins after the deadline.
    assert!(reg
        .claim_succeeded(b)
        .is_some_and(|s| s.settlement.is_approved()));
}

#[test]
fn click_after_deadline_is_refused() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now);
    assert_eq!(
        reg.claim(n, Verdict::Approve, alice(), now),
        Err(Refusal::PastDeadline)
    );
}

#[test]
fn failed_claim_reopens_before_deadline_and_denies_after() {
    let now = Instant::now();
    let deadline = now + Duration::from_secs(10);
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", deadline);
    let _c = reg.claim(n, Verdict::Approve, alice(), now).expect("claim");
    assert_eq!(reg.claim_failed(n, now), ClaimFailed::Reopened);
    let _c = reg
        .claim(n, Verdict::Approve, alice(), now)
        .expect("claim again");
    match reg.claim_failed(n, deadline) {
        ClaimFailed::Denied(s) => {
            assert_eq!(s.settlement, Settlement::Expired);
            assert!(matches!(s.reply, Some(Reply::Reject { .. })));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn reject_echo_cascades_to_open_entries_of_the_same_session_only() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let a = open(&mut reg, "per_a", "ses_1", later);
    let b = open(&mut reg, "per_b", "ses_1", later);
    let c = open(&mut reg, "per_c", "ses_1", later);
    let other = open(&mut reg, "per_d", "ses_2", later);
    let _claim_c = reg
        .claim(c, Verdict::Approve, alice(), now)
        .expect("claim c");
    let _claim_a = reg
        .claim(a, Verdict::Deny { reason: None }, alice(), now)
        .expect("claim a");

    let settled = reg.replied("ses_1", "per_a", &Echo::Rejected).settled;
    let numbers: Vec<u32> = settled.iter().map(|s| s.number).collect();
    assert_eq!(
        numbers,
        vec![a, b],
        "c is claimed and waits for its own echo"
    );
    assert!(matches!(settled[0].settlement, Settlement::Denied { .. }));
    assert_eq!(
        settled[1].settlement,
        Settlement::DeniedWithRelated { related: a }
    );
    // The cascaded entries' own echoes are then no-ops.
    assert_eq!(
        reg.replied("ses_1", "per_b", &Echo::Rejected),
        Replied::default()
    );
    // c's echo says reject (OpenCode cascaded it): it was not approved.
    let c_settled = reg.replied("ses_1", "per_c", &Echo::Rejected).settled;
    assert_eq!(
        c_settled[0].settlement,
        Settlement::RepliedElsewhere {
            echo: Some(Echo::Rejected)
        }
    );
    assert_eq!(
        reg.pending().iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![other]
    );
}

#[test]
fn reask_supersedes_the_old_entry() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let first = open(&mut reg, "per_a", "ses_1", later);
    let Asked::Open {
        shown: request,
        superseded,
    } = reg.ask(request("per_a", "ses_1"), due(later))
    else {
        panic!("refused")
    };
    let old = superseded.expect("old entry superseded");
    assert_eq!(old.number, first);
    assert_eq!(
        old.settlement,
        Settlement::Superseded {
            by_number: request.number
        }
    );
    assert_eq!(old.reply, None);
    assert!(matches!(
        reg.claim(first, Verdict::Approve, alice(), now),
        Err(Refusal::AlreadyDecided(Settlement::Superseded { .. }))
    ));
    assert!(reg
        .claim(request.number, Verdict::Approve, alice(), now)
        .is_ok());
}

#[test]
fn close_denies_open_and_claimed_and_everything_after() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let a = open(&mut reg, "per_a", "ses_1", later);
    let b = open(&mut reg, "per_b", "ses_1", later);
    let _claim = reg.claim(b, Verdict::Approve, alice(), now).expect("claim");
    let closed = reg.close(EndReason::TimedOut);
    assert_eq!(
        closed.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![a, b]
    );
    assert!(closed.iter().all(|s| s.reply
        == Some(Reply::Reject {
            message: "denied by gatekeep: run timed out".to_owned()
        })));
    // A claim that completes after close must not turn into an approval.
    assert!(reg.claim_succeeded(b).is_none());
    assert_eq!(
        reg.claim(a, Verdict::Approve, alice(), now),
        Err(Refusal::AlreadyDecided(Settlement::RunEnded(
            EndReason::TimedOut
        )))
    );
    match reg.ask(request("per_late", "ses_1"), due(later)) {
        Asked::Refused(s) => assert!(matches!(s.reply, Some(Reply::Reject { .. }))),
        Asked::Open { .. } => panic!("a request after close must be denied"),
    }
    assert!(reg.close(EndReason::Interrupted).is_empty());
}

#[test]
fn reply_from_another_client_settles_without_a_reply_of_ours() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
    let echo = reg.replied("ses_1", "per_a", &Echo::Approved { always: false });
    assert_eq!(echo.settled[0].number, n);
    assert_eq!(echo.settled[0].reply, None);
    assert!(reg.pending().is_empty());
    // gatekeep is the only legitimate replier: that approval is an intrusion.
    assert_eq!(echo.intrusion.map(|i| i.number), Some(Some(n)));
}

#[test]
fn a_foreign_reject_is_harmless_and_only_replied_elsewhere() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
    let echo = reg.replied("ses_1", "per_a", &Echo::Rejected);
    assert_eq!(echo.intrusion, None);
    assert_eq!(
        echo.settled[0].settlement,
        Settlement::RepliedElsewhere {
            echo: Some(Echo::Rejected)
        }
    );
    assert_eq!(echo.settled[0].number, n);
}

#[test]
fn every_approval_gatekeep_did_not_send_is_an_intrusion() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let once = Echo::Approved { always: false };
    let mut reg = Registry::new();

    // A request gatekeep never saw.
    let unknown = reg.replied("ses_1", "per_unknown", &once);
    assert_eq!(unknown.intrusion.map(|i| i.number), Some(None));

    // One gatekeep denied: its final state is corrected.
    let denied = open(&mut reg, "per_denied", "ses_1", later);
    let _ = reg.claim(denied, Verdict::Deny { reason: None }, alice(), now);
    let _ = reg.claim_succeeded(denied);
    let echo = reg.replied("ses_1", "per_denied", &once);
    assert!(echo.intrusion.is_some());
    assert_eq!(
        echo.settled[0].settlement,
        Settlement::Intruded { echo: once.clone() }
    );

    // One being denied right now: the approval won the race.
    let racing = open(&mut reg, "per_racing", "ses_1", later);
    let _ = reg.claim(racing, Verdict::Deny { reason: None }, alice(), now);
    assert!(reg
        .replied("ses_1", "per_racing", &once)
        .intrusion
        .is_some());

    // `always` is never gatekeep's, even on a request it approved.
    let approved = open(&mut reg, "per_approved", "ses_1", later);
    let _ = reg.claim(approved, Verdict::Approve, alice(), now);
    let always = Echo::Approved { always: true };
    assert!(reg
        .replied("ses_1", "per_approved", &always)
        .intrusion
        .is_some());

    // An answer to a question nobody here answered.
    let question = match reg.ask(a_question("que_a"), due(later)) {
        Asked::Open { shown, .. } => shown.number,
        Asked::Refused(s) => panic!("refused: {s:?}"),
    };
    let echo = reg.replied("ses_1", "que_a", &Echo::Answered);
    assert_eq!(echo.intrusion.map(|i| i.number), Some(Some(question)));
}

#[test]
fn resync_settles_open_entries_that_opencode_no_longer_waits_on() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let a = open(&mut reg, "per_a", "ses_1", later);
    let b = open(&mut reg, "per_b", "ses_1", later);
    let still: std::collections::HashSet<String> = ["per_b".to_owned()].into();
    let settled = reg.resync(&still);
    assert_eq!(
        settled.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![a]
    );
    assert_eq!(settled[0].reply, None);
    assert_eq!(
        reg.pending().iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![b]
    );
}

fn request_for(id: &str, kind: &str, command: &str) -> Ask {
    Ask::permission_request(
        id,
        "ses_1",
        Permission {
            kind: kind.to_owned(),
            patterns: vec!["echo hi".to_owned()],
            command: Some(command.to_owned()),
            ..Permission::default()
        },
    )
}

#[test]
fn a_trust_rule_approves_the_same_exact_request_again_and_nothing_else() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let Asked::Open { shown: first, .. } =
        reg.ask(request_for("per_a", "bash", "cargo test"), due(later))
    else {
        panic!("refused")
    };
    let _c = reg
        .claim(first.number, Verdict::ApproveAndTrust, alice(), now)
        .expect("claim");
    let s = reg.claim_succeeded(first.number).expect("settled");
    assert_eq!(s.settlement, Settlement::ApprovedAndTrusted { by: alice() });

    match reg.ask(request_for("per_b", "bash", "cargo test"), due(later)) {
        Asked::Refused(s) => {
            assert_eq!(
                s.settlement,
                Settlement::ApprovedByRule {
                    rule_of: first.number,
                    by: alice()
                }
            );
            assert_eq!(s.reply, Some(Reply::Once));
        }
        Asked::Open { .. } => panic!("the trust rule should approve the same request"),
    }
    // A different command, or the same text under another kind, is asked.
    assert!(matches!(
        reg.ask(
            request_for("per_c", "bash", "cargo test --release"),
            due(later)
        ),
        Asked::Open { .. }
    ));
    assert!(matches!(
        reg.ask(request_for("per_d", "edit", "cargo test"), due(later)),
        Asked::Open { .. }
    ));
}

#[test]
fn a_deny_rule_wins_over_a_trust_rule() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let rule = DenyRule::parse("bash:rm -rf *").expect("valid rule");
    let mut reg = Registry::with_deny_rules(vec![rule]);
    let Asked::Open { shown: first, .. } =
        reg.ask(request_for("per_a", "bash", "rm -rf"), due(later))
    else {
        panic!("`rm -rf` alone does not match `rm -rf *`")
    };
    let _c = reg
        .claim(first.number, Verdict::ApproveAndTrust, alice(), now)
        .expect("claim");
    let _s = reg.claim_succeeded(first.number);
    match reg.ask(request_for("per_b", "bash", "rm -rf /"), due(later)) {
        Asked::Refused(s) => {
            assert_eq!(
                s.settlement,
                Settlement::DeniedByRule {
                    rule: "bash:rm -rf *".to_owned()
                }
            );
            assert!(
                matches!(s.reply, Some(Reply::Reject { message }) if message.contains("bash:rm -rf *"))
            );
        }
        Asked::Open { .. } => panic!("--deny must deny at once"),
    }
}

#[test]
fn deny_rules_are_checked_when_read() {
    assert!(matches!(
        DenyRule::parse("rm -rf *"),
        Err(DenyRuleError::Shape(_))
    ));
    assert!(matches!(
        DenyRule::parse("bash:"),
        Err(DenyRuleError::Shape(_))
    ));
    assert!(matches!(
        DenyRule::parse("bash:[unclosed"),
        Err(DenyRuleError::Glob { .. })
    ));
    let any_kind = DenyRule::parse("*:*secret*").expect("valid");
    assert!(any_kind.matches(&request_for("per_x", "read", "cat secret.txt")));
}

fn a_question(id: &str) -> Ask {
    Ask {
        subject: Subject::Question(vec![crate::approval::Question {
            header: "Q".to_owned(),
            text: "Which?".to_owned(),
            options: vec![("A".to_owned(), String::new())],
            multiple: false,
            custom: true,
        }]),
        ..request(id, "ses_1")
    }
}

#[test]
fn an_approval_never_settles_a_question_and_an_answer_never_settles_a_permission() {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut reg = Registry::new();
    let Asked::Open { shown: request, .. } = reg.ask(a_question("que_a"), due(later)) else {
        panic!("refused")
    };
    let question = request.number;
    let permission = open(&mut reg, "per_c", "ses_1", later);
    let answer = Verdict::Answer {
        answers: vec![vec!["A".to_owned()]],
    };
    for verdict in [Verdict::Approve, Verdict::ApproveAndTrust] {
        assert_eq!(
            reg.claim(question, verdict, alice(), now),
            Err(Refusal::WrongKind)
        );
    }
    assert_eq!(
        reg.claim(permission, answer.clone(), alice(), now),
        Err(Refusal::WrongKind)
    );
    // Neither entry was consumed: the right answer still wins.
    let claim = reg
        .claim(question, answer, alice(), now)
        .expect("an answer fits");
    assert_eq!(
        claim.reply,
        Reply::Answer {
            answers: vec![vec!["A".to_owned()]]
        }
    );
    assert!(reg
        .claim(permission, Verdict::Approve, alice(), now)
        .is_ok());
}

#[test]
fn an_unanswered_question_is_dismissed_not_rejected_like_a_permission() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let Asked::Open { shown: request, .. } = reg.ask(a_question("que_a"), due(now)) else {
        panic!("refused")
    };
    let expired = reg.expire_due(now);
    assert_eq!(expired[0].number, request.number);
    assert_eq!(expired[0].reply, Some(Reply::Dismiss));
}

#[test]
fn channel_failure_denies() {
    let now = Instant::now();
    let mut reg = Registry::new();
    let n = open(&mut reg, "per_a", "ses_1", now + Duration::from_secs(60));
    let s = reg.channel_failed(n, "429".to_owned()).expect("denied");
    assert!(matches!(s.reply, Some(Reply::Reject { .. })));
    assert!(reg.channel_failed(n, "again".to_owned()).is_none());
}

/// The two-person rule: `[[require]] match = "bash:git push*"`,
/// `approvals = 2`; the policy file is `/repo/gatekeep.toml`.
mod two_person {
    use std::path::PathBuf;

    use super::*;
    use crate::approval::rules::{PolicyFiles, RequireRule};

    fn person(id: &str) -> Actor {
        Actor {
            channel: Channel::Discord,
            id: id.to_owned(),
            name: format!("user{id}"),
        }
    }

    fn at_the_terminal() -> Actor {
        Actor {
            channel: Channel::Terminal,
            id: "me".to_owned(),
            name: "me".to_owned(),
        }
    }

    fn from_another_terminal() -> Actor {
        Actor {
            channel: Channel::Local,
            id: "me".to_owned(),
            name: "me".to_owned(),
        }
    }

    fn policy(require: bool) -> Registry {
        let rules = if require {
            vec![RequireRule::new(
                DenyRule::parse("bash:git push*").expect("rule"),
                2,
            )]
        } else {
            vec![]
        };
        Registry::new().with_policy(
            rules,
            PolicyFiles::new(
                std::path::Path::new("/repo"),
                &[
                    PathBuf::from("/repo/gatekeep.toml"),
                    PathBuf::from("/repo/opencode.json"),
                ],
            ),
        )
    }

    fn ask(reg: &mut Registry, ask: Ask, deadline: Instant) -> Shown {
        match reg.ask(ask, due(deadline)) {
            Asked::Open { shown, .. } => shown,
            Asked::Refused(s) => panic!("refused: {s:?}"),
        }
    }

    /// A `git push`, which the rule says needs two, due in a minute.
    fn a_push(reg: &mut Registry, id: &str, now: Instant) -> Shown {
        ask(
            reg,
            Ask::bash(id, "ses_1", "git push"),
            now + Duration::from_secs(60),
        )
    }

    fn edit_of(path: &str) -> Ask {
        Ask::permission_request(
            "per_edit",
            "ses_1",
            Permission {
                kind: "edit".to_owned(),
                patterns: vec![path.to_owned()],
                path: Some(format!("/repo/{path}")),
                ..Permission::default()
            },
        )
    }

    #[test]
    fn a_matching_request_runs_only_after_a_second_person_approves() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = ask(
            &mut reg,
            Ask::bash("per_a", "ses_1", "git push origin main"),
            now + Duration::from_secs(60),
        );
        assert_eq!(shown.needs.approvals, 2);
        let first = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        let Err(Refusal::Counted(progress)) = first else {
            panic!("the first approval must not reach OpenCode: {first:?}")
        };
        assert_eq!(progress.to_string(), "1 of 2 approvals — approved by user1");
        let again = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        assert!(matches!(again, Err(Refusal::SameApprover(_))), "{again:?}");
        let claim = reg
            .claim(shown.number, Verdict::Approve, person("2"), now)
            .expect("the second person's approval is sent");
        assert_eq!(claim.reply, Reply::Once);
        let settled = reg.claim_succeeded(shown.number).expect("settles");
        assert_eq!(
            settled.settlement,
            Settlement::Approved {
                by: person("2"),
                also: vec![person("1")]
            }
        );
    }

    #[test]
    fn a_request_the_rule_does_not_match_needs_one() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = ask(
            &mut reg,
            Ask::bash("per_a", "ses_1", "git status"),
            now + Duration::from_secs(60),
        );
        assert_eq!(shown.needs.approvals, 1);
        assert!(reg
            .claim(shown.number, Verdict::Approve, person("1"), now)
            .is_ok());
    }

    #[test]
    fn the_terminal_and_another_terminal_are_one_person() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = a_push(&mut reg, "per_a", now);
        assert!(matches!(
            reg.claim(shown.number, Verdict::Approve, at_the_terminal(), now),
            Err(Refusal::Counted(_))
        ));
        assert!(matches!(
            reg.claim(shown.number, Verdict::Approve, from_another_terminal(), now),
            Err(Refusal::SameApprover(_))
        ));
        assert!(reg
            .claim(shown.number, Verdict::Approve, person("9"), now)
            .is_ok());
    }

    #[test]
    fn a_deny_after_one_approval_denies_at_once() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = a_push(&mut reg, "per_a", now);
        let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        let claim = reg
            .claim(
                shown.number,
                Verdict::Deny { reason: None },
                person("2"),
                now,
            )
            .expect("a deny wins");
        assert!(matches!(claim.reply, Reply::Reject { .. }));
        // Even the first approver may change their mind.
        let mut reg = policy(true);
        let shown = a_push(&mut reg, "per_b", now);
        let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        assert!(reg
            .claim(
                shown.number,
                Verdict::Deny { reason: None },
                person("1"),
                now
            )
            .is_ok());
    }

    #[test]
    fn the_deadline_after_one_approval_denies() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = a_push(&mut reg, "per_a", now);
        let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        let expired = reg.expire_due(now + Duration::from_secs(61));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].settlement, Settlement::Expired);
        assert!(matches!(expired[0].reply, Some(Reply::Reject { .. })));
    }

    #[test]
    fn the_run_ending_after_one_approval_denies() {
        let now = Instant::now();
        let mut reg = policy(true);
        let shown = a_push(&mut reg, "per_a", now);
        let _ = reg.claim(shown.number, Verdict::Approve, person("1"), now);
        let closed = reg.close(EndReason::Terminated);
        assert_eq!(closed.len(), 1);
        assert!(matches!(closed[0].reply, Some(Reply::Reject { .. })));
        assert!(matches!(
            reg.claim(shown.number, Verdict::Approve, person("2"), now),
            Err(Refusal::AlreadyDecided(_))
        ));
    }

    #[test]
    fn a_trust_rule_never_satisfies_a_require_rule() {
        let now = Instant::now();
        let mut reg = policy(true);
        // Two people approve and "trust" the push.
        let shown = a_push(&mut reg, "per_a", now);
        let _ = reg.claim(shown.number, Verdict::ApproveAndTrust, person("1"), now);
        let _ = reg
            .claim(shown.number, Verdict::ApproveAndTrust, person("2"), now)
            .expect("sent");
        let settled = reg.claim_succeeded(shown.number).expect("settles");
        assert!(
            matches!(settled.settlement, Settlement::Approved { .. }),
            "no trust rule was made: {settled:?}"
        );
        // The same push again is asked again, of two people.
        let again = a_push(&mut reg, "per_b", now);
        assert_eq!(again.needs.approvals, 2);
    }

    #[test]
    fn an_edit_of_the_policy_is_always_asked_and_needs_two_when_any_rule_does() {
        let now = Instant::now();
        for path in ["gatekeep.toml", "./opencode.json", "sub/../gatekeep.toml"] {
            let mut reg = policy(true);
            let shown = ask(&mut reg, edit_of(path), now + Duration::from_secs(60));
            assert!(shown.needs.policy_change, "{path}");
            assert_eq!(shown.needs.approvals, 2, "{path}");
        }
        // Without any `[[require]]`: one person, but never a trust rule.
        let mut reg = policy(false);
        let shown = ask(
            &mut reg,
            edit_of("gatekeep.toml"),
            now + Duration::from_secs(60),
        );
        assert_eq!(shown.needs.approvals, 1);
        let _ = reg
            .claim(shown.number, Verdict::ApproveAndTrust, person("1"), now)
            .expect("sent");
        let settled = reg.claim_succeeded(shown.number).expect("settles");
        assert!(matches!(settled.settlement, Settlement::Approved { .. }));
        let mut again = edit_of("gatekeep.toml");
        again.id = "per_edit2".to_owned();
        assert!(matches!(
            reg.ask(again, due(now + Duration::from_secs(60))),
            Asked::Open { .. }
        ));
        // Another file of the workspace is an ordinary edit.
        let mut reg = policy(true);
        let shown = ask(
            &mut reg,
            edit_of("src/main.rs"),
            now + Duration::from_secs(60),
        );
        assert!(!shown.needs.policy_change);
        assert_eq!(shown.needs.approvals, 1);
    }
}
