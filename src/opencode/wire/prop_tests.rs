//! Hostile input: whatever OpenCode (or something impersonating it on the
//! stream) sends, parsing never panics, and a `permission.asked` is never
//! lost — it parses, or it comes back as the fail-closed variant with its id.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// Names the parser looks at, so random objects hit the real code paths.
const KEYS: &[&str] = &[
    "id",
    "sessionID",
    "permission",
    "patterns",
    "metadata",
    "command",
    "filepath",
    "diff",
    "always",
    "tool",
    "messageID",
    "callID",
    "type",
    "properties",
    "payload",
    "info",
    "parentID",
    "part",
    "status",
    "error",
    "requestID",
    "reply",
    "delta",
    "field",
    "partID",
    "state",
    "time",
    "end",
    "tokens",
    "cost",
    "model",
];

const KINDS: &[&str] = &[
    "server.connected",
    "server.heartbeat",
    "session.created",
    "session.updated",
    "message.updated",
    "permission.asked",
    "permission.replied",
    "session.status",
    "session.idle",
    "session.error",
    "message.part.updated",
    "message.part.delta",
    "question.asked",
    "server.instance.disposed",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,6}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        1 => (1usize..4).prop_map(|n| "x\u{202e}\u{1b}[2J\"\\".repeat(n * 700)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KINDS).prop_map(str::to_owned),
        1 => ".{0,20}",
    ]
}

/// A well-formed `permission.asked` properties object.
fn permission_props(id: &str) -> Value {
    json!({
        "id": id,
        "sessionID": "ses_1",
        "permission": "bash",
        "patterns": ["ls"],
        "metadata": { "command": "ls" },
        "always": ["ls *"],
        "tool": { "messageID": "msg_1", "callID": "c1" },
    })
}

#[test]
fn session_statuses_are_read_leniently_and_idle_ones_are_absent() {
    let all = json!({
        "ses_busy": { "type": "busy" },
        "ses_retry": { "type": "retry", "attempt": 2, "message": "overloaded", "next": 1 },
        "ses_odd": { "kind": "busy" },
        "ses_new": { "type": "thinking" },
    });
    assert_eq!(status_of(&all, "ses_busy"), Some(SessionStatus::Busy));
    assert!(matches!(
        status_of(&all, "ses_retry"),
        Some(SessionStatus::Retry {
            attempt: Some(2),
            ..
        })
    ));
    assert_eq!(status_of(&all, "ses_odd"), None);
    assert_eq!(
        status_of(&all, "ses_new"),
        Some(SessionStatus::Unknown("thinking".into()))
    );
    assert_eq!(status_of(&all, "ses_idle"), None);
    assert_eq!(status_of(&json!([1, 2]), "ses_busy"), None);
}

#[test]
fn the_last_message_says_whether_the_turn_is_over() {
    let one = |info: Value| json!([{ "info": info, "parts": [] }]);
    assert_eq!(
        last_message(&one(
            json!({ "role": "assistant", "time": { "created": 1, "completed": 2 } })
        )),
        LastMessage::Completed
    );
    assert_eq!(
        last_message(&one(
            json!({ "role": "assistant", "time": { "created": 1 } })
        )),
        LastMessage::Open
    );
    assert_eq!(
        last_message(&one(json!({ "role": "user", "time": { "created": 1 } }))),
        LastMessage::Open
    );
    assert_eq!(
        last_message(&one(
            json!({ "role": "assistant", "time": { "created": 1, "completed": 2 },
            "error": { "name": "APIError", "data": { "message": "down" } } })
        )),
        LastMessage::Failed {
            name: "APIError".into(),
            message: Some("down".into())
        }
    );
    for odd in [json!([]), json!({}), json!([{ "info": 3 }]), json!(null)] {
        assert_eq!(last_message(&odd), LastMessage::Open, "{odd}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text at all: an error at worst, never a panic; text that
    /// names `permission.asked` is never an error (it may be one).
    #[test]
    fn any_text_parses_or_errs(data in prop_oneof![".{0,200}", "\\PC{0,50}permission\\.asked\\PC{0,80}"]) {
        let parsed = Event::parse(&data);
        if data.contains("permission.asked") {
            prop_assert!(parsed.is_ok(), "{data:?} -> {parsed:?}");
        }
    }

    /// Any JSON in a frame of any kind, in either envelope: never a
    /// panic, and a `permission.asked` is always an `Ok` request.
    #[test]
    fn any_properties_of_any_kind(kind in kind(), props in json_value(), global in any::<bool>()) {
        let frame = json!({ "id": "evt_1", "type": kind, "properties": props });
        let frame = if global {
            json!({ "directory": "/w", "payload": frame })
        } else {
            frame
        };
        let parsed = Event::parse(&frame.to_string());
        if kind == "permission.asked" {
            prop_assert!(
                matches!(parsed, Ok(Event::PermissionAsked(_) | Event::PermissionMalformed(_))),
                "{parsed:?}"
            );
        }
    }

    /// A request with a readable id keeps it, whatever else is wrong
    /// with it: it is shown, or it is denied by that id.
    #[test]
    fn a_permission_keeps_its_id_whatever_else_breaks(
        id in "per_[A-Za-z0-9]{1,30}",
        breaks in prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..4),
        removed in prop::collection::vec(prop::sample::select(&["sessionID", "permission", "patterns", "metadata", "always", "tool"][..]), 0..3),
    ) {
        let mut props = permission_props(&id);
        for (key, value) in breaks {
            if key != "id" {
                props[key] = value;
            }
        }
        for key in removed {
            if let Some(map) = props.as_object_mut() {
                map.remove(key);
            }
        }
        let frame = json!({ "type": "permission.asked", "properties": props });
        match Event::parse(&frame.to_string()) {
            Ok(Event::PermissionAsked(p)) => prop_assert_eq!(p.id, id),
            Ok(Event::PermissionMalformed(m)) => prop_assert_eq!(m.request_id, Some(id)),
            other => prop_assert!(false, "lost the request: {:?}", other),
        }
    }

    /// A `permission.asked` frame cut anywhere after its type (a
    /// truncated write) is never an error, and once the request's id
    /// is complete it is recovered for the denial.
    #[test]
    fn a_truncated_permission_frame_is_never_dropped(
        id in "per_[A-Za-z0-9]{1,30}",
        cut in 0usize..400,
    ) {
        // OpenCode's key order: id, type, properties.
        let frame = format!(
            r#"{{"id":"evt_1","type":"permission.asked","properties":{}}}"#,
            permission_props(&id)
        );
        let type_end = frame.find("permission.asked").map_or(0, |i| i + "permission.asked".len());
        let cut = (type_end + cut).min(frame.len() - 1);
        let parsed = Event::parse(&frame[..cut]);
        let Ok(Event::PermissionMalformed(m)) = parsed else {
            return Err(TestCaseError::fail(format!("{parsed:?}")));
        };
        let id_end = frame.find(&format!("\"{id}\"")).map_or(usize::MAX, |i| i + id.len() + 2);
        if cut >= id_end {
            prop_assert_eq!(m.request_id, Some(id));
        }
    }

    /// Mistyped fields of the other events the run depends on are an
    /// error for that one frame (the stream goes on), never a panic or
    /// a made-up event.
    #[test]
    fn mistyped_session_events_are_errors_not_guesses(
        kind in prop::sample::select(&["session.idle", "permission.replied", "session.status"][..]),
        session in json_value().prop_filter("not a string", |v| !v.is_string()),
    ) {
        let frame = json!({ "type": kind, "properties": {
            "sessionID": session, "requestID": "per_1", "reply": "once", "status": { "type": "idle" } } });
        let parsed = Event::parse(&frame.to_string());
        prop_assert!(matches!(parsed, Err(WireError::Malformed { .. })), "{parsed:?}");
    }
}
