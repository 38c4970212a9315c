use std::time::Duration;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::super::clicks::Nonce;
use super::super::RunInfo;
use super::group::{group_edit, group_message};
use super::question::answer_modal;
use super::reply::{ephemeral, followup_edit, reason_modal, reminder};
use super::request::{request_final_edit, request_message, settlement_colour, settlement_text};
use super::run::{run_start, run_start_final, run_summary, thread_name};
use super::text::{code_block, escape_markdown};
use super::{no_mentions, ping, DENIED};
use crate::approval::messages::RunReport;
use crate::approval::{Actor, EndReason};
use crate::approval::{Ask, Deadline, Permission, Subject};
use crate::approval::{Channel, Settlement, Shown};
use crate::config::Ping;
use crate::redact::Redactor;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn request() -> Shown {
    Shown {
        needs: crate::approval::Needs::default(),
        number: 3,
        deadline: Deadline::shown_as(at(1_800_000_600), Duration::from_secs(600)),
        ask: Ask {
            id: "per_1".into(),
            session_id: "ses_1".into(),
            agent: None,
            subject: Subject::Permission(Permission {
                kind: "bash".into(),
                patterns: vec!["rm -rf build".into()],
                command: Some("rm -rf build && echo ```done``` @everyone".into()),
                path: None,
                diff: None,
                description: Some("Clean the **build** dir <@123> [x](http://evil)".into()),
            }),
        },
    }
}

/// The permission of a test request, to change one field of it.
fn permission(r: &mut Shown) -> &mut Permission {
    match &mut r.ask.subject {
        Subject::Permission(p) => p,
        Subject::Question(_) => unreachable!("a permission request"),
    }
}

/// Someone is pinged (the snapshots of the run messages do not change).
fn pinged() -> Ping {
    Ping {
        users: vec![42],
        roles: vec![],
    }
}

fn nonce() -> Nonce {
    Nonce::fixed("00112233aabbccdd")
}

fn user() -> Actor {
    Actor {
        channel: Channel::Discord,
        id: "4242".into(),
        name: "alice".into(),
    }
}

#[test]
fn open_request() {
    let r = request_message(&request(), &Redactor::default(), &nonce(), None);
    assert!(r.files.is_empty());
    insta::assert_json_snapshot!(r.payload);
}

#[test]
fn subagent_edit_with_diff_and_secret() {
    let mut req = request();
    req.ask.agent = Some("general: write tests".into());
    let p = permission(&mut req);
    p.kind = "edit".into();
    p.command = None;
    p.path = Some("/w/src/main.rs".into());
    p.diff = Some(
        "--- a\n+++ b\n-old\n+API_KEY=abc123def\n+token ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .into(),
    );
    p.description = None;
    let r = request_message(&req, &Redactor::default(), &nonce(), None);
    insta::assert_json_snapshot!(r.payload);
}

#[test]
fn long_command_is_attached_whole() {
    let mut req = request();
    permission(&mut req).command = Some(format!("echo {} PASSWORD=hunter22", "x".repeat(5000)));
    let r = request_message(&req, &Redactor::default(), &nonce(), None);
    assert_eq!(r.files.len(), 1);
    let file = String::from_utf8(r.files[0].content.clone()).expect("utf-8");
    assert!(
        file.ends_with("PASSWORD=[redacted]"),
        "{}",
        &file[file.len() - 40..]
    );
    assert_eq!(r.payload["attachments"][0]["filename"], "request-3.txt");
    let desc = r.payload["embeds"][0]["description"]
        .as_str()
        .expect("description");
    assert!(desc.chars().count() < 4096);
}

#[test]
fn settled_states() {
    let req = request();
    let states = [
        Settlement::Approved {
            by: user(),
            also: vec![],
        },
        Settlement::Denied {
            by: user(),
            reason: Some("not in **prod** @here".into()),
        },
        Settlement::Denied {
            by: Actor {
                channel: Channel::Terminal,
                id: "bob".into(),
                name: "bob".into(),
            },
            reason: None,
        },
        Settlement::Expired,
        Settlement::DeniedWithRelated { related: 2 },
        Settlement::Superseded { by_number: 4 },
        Settlement::RunEnded(EndReason::TimedOut),
        Settlement::ChannelFailed {
            detail: "HTTP 500".into(),
        },
    ];
    let rendered: Vec<Value> = states
        .iter()
        .map(|s| request_final_edit(&req, &Redactor::default(), &nonce(), s, at(1_800_000_100)))
        .collect();
    for r in &rendered {
        assert_eq!(r["components"], json!([]));
        assert_eq!(r["allowed_mentions"], no_mentions());
    }
    insta::assert_json_snapshot!(rendered
        .iter()
        .map(|r| r["embeds"][0]["fields"].clone())
        .collect::<Vec<_>>());
}

fn info() -> RunInfo {
    RunInfo {
        title: "fix the flaky test".into(),
        workspace: "repo_name".into(),
        host: "ci-runner-1".into(),
        model: Some("p/m".into()),
        opencode_version: Some("1.18.33".into()),
        ci: Some("https://github.com/o/r/actions/runs/1".into()),
        policy: None,
        caveats: Vec::new(),
    }
}

#[test]
fn run_messages() {
    let report = RunReport {
        outcome: "finished".into(),
        exit_code: 0,
        duration: Duration::from_secs(95),
        approved: 2,
        denied: 1,
    };
    let red = Redactor::default();
    insta::assert_json_snapshot!(json!({
        "start": run_start(&info(), &red, at(1_800_000_000), &pinged()),
        "final": run_start_final(&info(), &red, &report),
        "summary": run_summary(&report),
        "thread": thread_name(&info(), &red),
        "modal": reason_modal(&nonce(), 3),
    }));
}

#[test]
fn group_of_requests() {
    let requests: Vec<Shown> = (5..9)
        .map(|n| {
            let mut r = request();
            r.number = n;
            permission(&mut r).command = Some(format!("make target{n}"));
            r
        })
        .collect();
    let mut states = BTreeMap::new();
    let red = Redactor::default();
    let open = group_message(5, &requests, &states, &red, &nonce());
    assert_eq!(open.files.len(), 1);
    states.insert(
        6,
        (
            Settlement::Approved {
                by: user(),
                also: vec![],
            },
            at(1_800_000_100),
        ),
    );
    let partly = group_edit(5, &requests, &states, &red, &nonce());
    for n in [5, 7, 8] {
        states.insert(n, (Settlement::Expired, at(1_800_000_200)));
    }
    let done = group_edit(5, &requests, &states, &red, &nonce());
    assert_eq!(done["components"], json!([]));
    insta::assert_json_snapshot!(json!({ "open": open.payload, "partly": partly, "done": done }));
}

fn question_request(questions: Vec<crate::approval::Question>) -> Shown {
    let mut r = request();
    r.ask.id = "que_1".into();
    r.number = 7;
    r.ask.subject = Subject::Question(questions);
    r
}

fn asked(options: usize, multiple: bool, custom: bool) -> crate::approval::Question {
    crate::approval::Question {
        header: "Deploy @everyone".into(),
        text: "Ship **now**? <@123> [yes](http://evil)".into(),
        options: (1..=options)
            .map(|i| (format!("Option {i} `x`"), format!("does thing {i} @here")))
            .collect(),
        multiple,
        custom,
    }
}

#[test]
fn open_question_with_option_buttons() {
    let req = question_request(vec![asked(2, false, true)]);
    let r = request_message(&req, &Redactor::default(), &nonce(), None);
    assert!(r.files.is_empty());
    assert_eq!(r.payload["allowed_mentions"], no_mentions());
    let text = r.payload["embeds"].to_string();
    assert!(
        !text.contains("@everyone") && !text.contains("**now**"),
        "{text}"
    );
    insta::assert_json_snapshot!(r.payload);
}

#[test]
fn question_components_by_shape() {
    let red = Redactor::default();
    let shape = |q: Vec<crate::approval::Question>| {
        request_message(&question_request(q), &red, &nonce(), None).payload["components"].clone()
    };
    // 20 single-choice options: four rows of five buttons, then the
    // answer and Dismiss buttons.
    let many = shape(vec![asked(20, false, false)]);
    assert_eq!(many.as_array().map(Vec::len), Some(5));
    assert_eq!(many[4]["components"][0]["label"], "Dismiss");
    // 21 options, or several to choose: a select menu.
    let menu = shape(vec![asked(21, false, true)]);
    assert_eq!(menu[0]["components"][0]["type"], 3);
    assert_eq!(menu[0]["components"][0]["max_values"], 1);
    let multi = shape(vec![asked(3, true, false)]);
    assert_eq!(multi[0]["components"][0]["max_values"], 3);
    // More than a menu holds: 25 shown, typing reaches the rest.
    let huge = shape(vec![asked(30, false, false)]);
    assert_eq!(
        huge[0]["components"][0]["options"].as_array().map(Vec::len),
        Some(25)
    );
    assert_eq!(huge[1]["components"][0]["label"], "Type the answer…");
    // No options, no free text: only Dismiss.
    let none = shape(vec![asked(0, false, false)]);
    assert_eq!(
        none,
        json!([{ "type": 1, "components": [{ "type": 2, "style": 4, "label": "Dismiss", "custom_id": "gk1:00112233aabbccdd:7:x" }] }])
    );
    // Six questions: too many for a modal.
    let six = shape((0..6).map(|_| asked(2, false, true)).collect());
    assert_eq!(six[0]["components"].as_array().map(Vec::len), Some(1));
    // A long label is cut to Discord's 80.
    let mut long = asked(1, false, false);
    long.options[0].0 = "y".repeat(200);
    let cut = shape(vec![long]);
    assert_eq!(
        cut[0]["components"][0]["label"]
            .as_str()
            .map(|l| l.chars().count()),
        Some(80)
    );
}

#[test]
fn several_questions_and_their_modal() {
    let red = Redactor::default();
    let mut second = asked(3, true, false);
    second.header = String::new();
    second.text = "Which targets?".into();
    let req = question_request(vec![asked(2, false, true), second]);
    let open = request_message(&req, &red, &nonce(), None);
    let modal = answer_modal(&req, &red, &nonce());
    let answered = request_final_edit(
        &req,
        &red,
        &nonce(),
        &Settlement::Answered {
            by: user(),
            answers: vec![
                vec!["Option 1 `x`".into()],
                vec!["a **b** @everyone".into()],
            ],
        },
        at(1_800_000_100),
    );
    let dismissed = request_final_edit(
        &req,
        &red,
        &nonce(),
        &Settlement::Denied {
            by: user(),
            reason: None,
        },
        at(1_800_000_100),
    );
    for r in [&answered, &dismissed] {
        assert_eq!(r["components"], json!([]));
        assert_eq!(r["allowed_mentions"], no_mentions());
    }
    assert!(!answered.to_string().contains("@everyone"));
    insta::assert_json_snapshot!(json!({
        "open": open.payload,
        "modal": modal,
        "answered": answered,
        "dismissed_fields": dismissed["embeds"][0]["fields"],
    }));
}

#[test]
fn a_huge_question_is_attached() {
    let mut q = asked(25, true, true);
    q.text = "@everyone ".repeat(2000);
    let req = question_request(vec![q]);
    let r = request_message(&req, &Redactor::default(), &nonce(), None);
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.payload["attachments"][0]["filename"], "question-7.txt");
    let description = r.payload["embeds"][0]["description"]
        .as_str()
        .expect("description");
    assert!(description.chars().count() <= 4096);
}

#[test]
fn a_waiting_request_pings_exactly_the_configured_people_and_an_edit_nobody() {
    let ping_them = Ping {
        users: vec![11, 12],
        roles: vec![21],
    };
    let mut posted = request_message(&request(), &Redactor::default(), &nonce(), None).payload;
    ping(&mut posted, &ping_them);
    assert_eq!(posted["content"], "<@11> <@12> <@&21>");
    assert_eq!(
        posted["allowed_mentions"],
        json!({ "parse": [], "users": ["11", "12"], "roles": ["21"] })
    );
    let edit = request_final_edit(
        &request(),
        &Redactor::default(),
        &nonce(),
        &Settlement::Expired,
        at(1),
    );
    assert_eq!(edit["allowed_mentions"], no_mentions());
    let reminder = reminder(
        &[
            (
                3,
                at(1_800_000_600),
                Some("https://discord.com/channels/1/2/99".into()),
            ),
            (4, at(1_800_000_900), None),
        ],
        &ping_them,
        99,
    );
    assert_eq!(reminder["allowed_mentions"], posted["allowed_mentions"]);
    assert_eq!(reminder["message_reference"]["message_id"], "99");
    insta::assert_json_snapshot!(reminder);
    // Nobody configured: nothing to add, nobody pinged.
    let mut quiet = request_message(&request(), &Redactor::default(), &nonce(), None).payload;
    ping(&mut quiet, &Ping::default());
    assert_eq!(quiet["allowed_mentions"], no_mentions());
    assert!(quiet.get("content").is_none());
}

#[test]
fn an_intrusion_is_shown_as_one_in_red() {
    let settlement = Settlement::Intruded {
        echo: crate::approval::Echo::Approved { always: false },
    };
    let text = settlement_text(&settlement, at(1_800_000_000));
    assert!(text.starts_with("🚨 approved once"), "{text}");
    assert!(text.contains("something other than gatekeep"), "{text}");
    assert_eq!(settlement_colour(&settlement), DENIED);
}

#[test]
fn fence_and_markdown_cannot_break_out() {
    let escaped = escape_markdown("**x** `y` @everyone <@1> # h");
    assert!(!escaped.contains("@everyone"));
    assert!(!escaped.contains("**"));
    let block = code_block("sh", "a ``` b");
    assert_eq!(block.matches("```").count(), 2);
}

#[test]
fn every_payload_disallows_mentions() {
    let req = request();
    let red = Redactor::default();
    assert_eq!(
        request_message(&req, &red, &nonce(), None).payload["allowed_mentions"],
        no_mentions()
    );
    assert_eq!(
        run_start(&info(), &red, at(0), &pinged())["allowed_mentions"],
        no_mentions()
    );
    assert_eq!(ephemeral("x")["data"]["allowed_mentions"], no_mentions());
    assert_eq!(followup_edit("x")["allowed_mentions"], no_mentions());
}
