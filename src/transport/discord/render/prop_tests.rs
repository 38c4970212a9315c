//! Hostile agent text: whatever a request carries (mentions, markdown and
//! fence breakout, ANSI, zero-width and bidi characters, megabytes), every
//! payload stays within Discord's limits, pings nobody, carries none of the
//! disguising characters, and still shows the whole subject (inline or
//! attached).

use std::time::Duration;

use proptest::prelude::*;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::super::clicks::Nonce;
use super::group::{group_edit, group_message};
use super::question::answer_modal;
use super::request::{request_final_edit, request_message};
use super::text::{clean, fence_safe, FIELD, MAX_TEXT_BYTES};
use super::{no_mentions, ping};
use crate::approval::{Actor, Ask, Deadline, Echo, EndReason, Permission, Subject};
use crate::approval::{Channel, Settlement, Shown};
use crate::config::Ping;
use crate::redact::Redactor;

const TITLE: usize = 256;
const DESCRIPTION: usize = 4096;
const FIELDS: usize = 25;
const FIELD_NAME: usize = 256;
const TOTAL: usize = 6000;

/// Pieces of hostile text.
const PIECES: &[&str] = &[
    "@everyone",
    "@here",
    "<@123456789012345678>",
    "<@&987654321098765432>",
    "<#111>",
    "```",
    "`",
    "**",
    "__",
    "~~",
    "||",
    "> ",
    "# ",
    "[approved](https://evil.example)",
    "\\",
    "\u{1b}[31m",
    "\u{1b}]8;;https://evil.example\u{7}",
    "\u{1b}[2J",
    "\u{9b}1m",
    "\u{200b}",
    "\u{200d}",
    "\u{202e}",
    "\u{2066}",
    "\u{feff}",
    "\r",
    "\n",
    "\t",
    "\u{7}",
    "a",
    "é",
    "😀",
    "rm -rf / ",
    "✅ Approved by <@1>",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat()),
        2 => (prop::sample::select(PIECES), 1usize..400).prop_map(|(p, n)| p.repeat(n)),
    ]
}

fn actor() -> impl Strategy<Value = Actor> {
    (any::<bool>(), hostile()).prop_map(|(discord, name)| Actor {
        channel: if discord {
            Channel::Discord
        } else {
            Channel::Terminal
        },
        id: if discord { "4242".into() } else { name.clone() },
        name,
    })
}

fn settlement() -> impl Strategy<Value = Settlement> {
    prop_oneof![
        actor().prop_map(|by| Settlement::Approved { by, also: vec![] }),
        // A human's reason: the modal allows 1000 characters.
        (
            actor(),
            prop::option::of(hostile().prop_map(|r| r.chars().take(1000).collect()))
        )
            .prop_map(|(by, reason)| Settlement::Denied { by, reason }),
        Just(Settlement::Expired),
        any::<u32>().prop_map(|related| Settlement::DeniedWithRelated { related }),
        any::<u32>().prop_map(|by_number| Settlement::Superseded { by_number }),
        Just(Settlement::RunEnded(EndReason::OpenCodeDied)),
        hostile().prop_map(|detail| Settlement::ChannelFailed { detail }),
        hostile().prop_map(|word| Settlement::RepliedElsewhere {
            echo: Some(Echo::Unknown(word))
        }),
    ]
}

prop_compose! {
    fn request()(
        number in 1u32..1_000_000,
        kind in prop_oneof![Just("bash".to_owned()), hostile()],
        agent in prop::option::of(hostile()),
        command in prop::option::of(hostile()),
        path in prop::option::of(hostile()),
        diff in prop::option::of(hostile()),
        description in prop::option::of(hostile()),
        patterns in prop::collection::vec(hostile(), 0..4),
    ) -> Shown {
        Shown {
            needs: crate::approval::Needs::default(),
            number,
            deadline: Deadline::shown_as(UNIX_EPOCH + Duration::from_secs(1_800_000_000), Duration::from_secs(600)),
            ask: Ask {
                id: "per_1".into(),
                session_id: "ses_1".into(),
                agent,
                subject: Subject::Permission(Permission {
                    kind,
                    patterns,
                    command,
                    path,
                    diff,
                    description,
                }),
            },
        }
    }
}

/// Who Discord notifies for a posted `payload`: mentions in `content`
/// (embeds never notify) that `allowed_mentions` allows.
fn would_ping(payload: &Value) -> (Vec<u64>, Vec<u64>, bool) {
    let content = payload["content"].as_str().unwrap_or("");
    let allowed = &payload["allowed_mentions"];
    let parses = |kind: &str| {
        allowed.is_null()
            || allowed["parse"]
                .as_array()
                .is_some_and(|p| p.iter().any(|v| v == kind))
    };
    let listed = |kind: &str, id: u64| {
        allowed[kind].as_array().is_some_and(|l| {
            l.iter()
                .any(|v| v.as_str() == Some(id.to_string().as_str()))
        })
    };
    let mention = regex::Regex::new(r"<@(!|&)?(\d+)>").expect("regex");
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    for cap in mention.captures_iter(content) {
        let id: u64 = cap[2].parse().unwrap_or(0);
        if cap.get(1).is_some_and(|m| m.as_str() == "&") {
            if parses("roles") || listed("roles", id) {
                roles.push(id);
            }
        } else if parses("users") || listed("users", id) {
            users.push(id);
        }
    }
    let everyone =
        (content.contains("@everyone") || content.contains("@here")) && parses("everyone");
    (users, roles, everyone)
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// Discord's limits and gatekeep's own rules for one message payload.
fn check_payload(payload: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(&payload["allowed_mentions"], &no_mentions());
    let text = payload.to_string();
    for c in [
        '\u{1b}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200d}', '\u{feff}', '\u{7}', '\r',
    ] {
        prop_assert!(!text.contains(c), "{c:?} reached Discord");
    }
    for embed in payload["embeds"].as_array().into_iter().flatten() {
        let title = chars(&embed["title"]);
        let description = chars(&embed["description"]);
        prop_assert!(title <= TITLE, "title of {title}");
        prop_assert!(description <= DESCRIPTION, "description of {description}");
        let fields = embed["fields"].as_array().cloned().unwrap_or_default();
        prop_assert!(fields.len() <= FIELDS);
        let mut total = title + description;
        for f in &fields {
            let (name, value) = (chars(&f["name"]), chars(&f["value"]));
            prop_assert!((1..=FIELD_NAME).contains(&name), "field name of {name}");
            prop_assert!(
                (1..=FIELD).contains(&value),
                "field {} of {value}",
                f["name"]
            );
            total += name + value;
        }
        prop_assert!(total <= TOTAL, "embed of {total} characters");
    }
    for row in payload["components"].as_array().into_iter().flatten() {
        for c in row["components"].as_array().into_iter().flatten() {
            prop_assert!((1..=100).contains(&chars(&c["custom_id"])));
            for o in c["options"].as_array().into_iter().flatten() {
                prop_assert!(
                    (1..=100).contains(&chars(&o["label"])),
                    "option {}",
                    o["label"]
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the agent wrote, a posted request notifies exactly the
    /// configured people or a subset of them: never `@everyone`, never
    /// an id of the agent's choosing.
    #[test]
    fn agent_text_never_pings_anyone_but_the_configured_people(
        request in request(),
        users in prop::collection::vec(1u64..1_000_000, 0..3),
        roles in prop::collection::vec(1u64..1_000_000, 0..3),
    ) {
        let configured = Ping { users: users.clone(), roles: roles.clone() };
        let nonce = Nonce::fixed("00112233aabbccdd");
        let mut rendered = request_message(&request, &Redactor::default(), &nonce, None);
        ping(&mut rendered.payload, &configured);
        let (pinged_users, pinged_roles, everyone) = would_ping(&rendered.payload);
        prop_assert!(!everyone);
        prop_assert!(pinged_users.iter().all(|u| users.contains(u)), "{pinged_users:?}");
        prop_assert!(pinged_roles.iter().all(|r| roles.contains(r)), "{pinged_roles:?}");
    }

    #[test]
    fn a_request_message_fits_and_shows_the_whole_subject(request in request()) {
        let red = Redactor::default();
        let nonce = Nonce::fixed("00112233aabbccdd");
        let rendered = request_message(&request, &red, &nonce, None);
        check_payload(&rendered.payload)?;
        let subject = clean(&red, request.ask.summary(), MAX_TEXT_BYTES);
        let description = rendered.payload["embeds"][0]["description"].as_str().unwrap_or("");
        let inline = description.contains(&fence_safe(&subject));
        let attached = rendered.files.iter().any(|f| f.content == subject.as_bytes());
        prop_assert!(inline || attached, "the subject is neither shown nor attached");
    }

    #[test]
    fn every_final_state_fits(request in request(), settlement in settlement()) {
        let red = Redactor::default();
        let nonce = Nonce::fixed("00112233aabbccdd");
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        check_payload(&request_final_edit(&request, &red, &nonce, &settlement, at))?;
    }

    #[test]
    fn a_group_message_fits(
        requests in prop::collection::vec(request(), 4..=10),
        settled in prop::collection::vec(prop::option::of(settlement()), 10),
    ) {
        let red = Redactor::default();
        let nonce = Nonce::fixed("00112233aabbccdd");
        let requests: Vec<Shown> = requests
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.number = 7 + u32::try_from(i).unwrap_or(0);
                r
            })
            .collect();
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        let states: BTreeMap<u32, (Settlement, SystemTime)> = requests
            .iter()
            .zip(settled)
            .filter_map(|(r, s)| Some((r.number, (s?, at))))
            .collect();
        check_payload(&group_message(7, &requests, &BTreeMap::new(), &red, &nonce).payload)?;
        check_payload(&group_edit(7, &requests, &states, &red, &nonce))?;
    }
}

prop_compose! {
    fn question()(
        header in hostile(),
        text in hostile(),
        options in prop::collection::vec((hostile(), hostile()), 0..30),
        multiple in any::<bool>(),
        custom in any::<bool>(),
    ) -> crate::approval::Question {
        crate::approval::Question { header, text, options, multiple, custom }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Hostile questions: within Discord's limits open and settled,
    /// button labels within 80, at most five rows of components.
    #[test]
    fn a_question_message_fits(
        request in request(),
        questions in prop::collection::vec(question(), 1..7),
        settlement in settlement(),
    ) {
        let mut request = request;
        request.ask.subject = Subject::Question(questions);
        let red = Redactor::default();
        let nonce = Nonce::fixed("00112233aabbccdd");
        let open = request_message(&request, &red, &nonce, None);
        check_payload(&open.payload)?;
        let rows = open.payload["components"].as_array().cloned().unwrap_or_default();
        prop_assert!((1..=5).contains(&rows.len()));
        for row in &rows {
            let components = row["components"].as_array().cloned().unwrap_or_default();
            prop_assert!((1..=5).contains(&components.len()));
            for c in &components {
                if c["type"] == 2 {
                    prop_assert!((1..=80).contains(&chars(&c["label"])), "{}", c["label"]);
                }
            }
        }
        let modal = answer_modal(&request, &red, &nonce);
        let inputs = modal["data"]["components"].as_array().cloned().unwrap_or_default();
        prop_assert!(inputs.len() <= 5);
        for input in &inputs {
            prop_assert!((1..=45).contains(&chars(&input["components"][0]["label"])));
        }
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_100);
        check_payload(&request_final_edit(&request, &red, &nonce, &settlement, at))?;
    }
}

/// A megabyte of hostile command: shown as a preview, attached (cut
/// to the bound, with a marker), and within every limit.
#[test]
fn a_one_megabyte_command_is_attached_and_fits() {
    let command = "`@everyone\u{202e}\u{1b}[0m rm -rf / ".repeat(1 << 16);
    assert!(command.len() > 1 << 20);
    let request = Shown {
        needs: crate::approval::Needs::default(),
        number: 1,
        deadline: Deadline::shown_as(UNIX_EPOCH, Duration::from_secs(600)),
        ask: Ask {
            id: "per_1".into(),
            session_id: "ses_1".into(),
            agent: Some("@here".repeat(500)),
            subject: Subject::Permission(Permission {
                kind: "bash".into(),
                patterns: vec![command.clone()],
                command: Some(command),
                path: None,
                diff: Some("```\n".repeat(3000)),
                description: Some("**".repeat(3000)),
            }),
        },
    };
    let nonce = Nonce::fixed("00112233aabbccdd");
    let rendered = request_message(&request, &Redactor::default(), &nonce, None);
    check_payload(&rendered.payload).expect("within Discord's limits");
    assert_eq!(rendered.files.len(), 2, "command and diff attached");
    let file = String::from_utf8(rendered.files[0].content.clone()).expect("utf-8");
    assert!(file.len() <= MAX_TEXT_BYTES + 64 && file.ends_with("more bytes)"));
    assert!(!file.contains('\u{202e}') && !file.contains('\u{1b}'));
}
