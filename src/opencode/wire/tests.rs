use super::*;
use std::path::{Path, PathBuf};

/// OpenCode 1.18's newer `/api/event` frames (`data` instead of
/// `properties`, a `durable` sequence): were gatekeep ever pointed at
/// that stream, they would be skipped, never taken for requests.
#[test]
fn frames_of_the_newer_api_are_never_mistaken_for_requests() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/opencode-1.18.33/api/events.jsonl");
    let text = std::fs::read_to_string(path).expect("the capture is readable");
    let frames: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(frames.len() >= 3);
    for frame in frames {
        let parsed = Event::parse(frame);
        assert!(
            !matches!(
                parsed,
                Ok(Event::PermissionAsked(_) | Event::PermissionMalformed(_))
            ),
            "taken for a request: {frame}"
        );
    }
}

/// A whole approve-less run captured from OpenCode 1.3.2 (its
/// `message.updated` has no top-level `sessionID`, which once tore the
/// stream down): every frame reads, none as an error, and what a
/// decision depends on reads as such.
#[test]
fn an_old_release_reads_frame_by_frame() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencode-1.3.2/events.jsonl");
    let text = std::fs::read_to_string(path).expect("the capture is readable");
    let mut kinds = Vec::new();
    for frame in text.lines().filter(|l| !l.trim().is_empty()) {
        let event = Event::parse(frame).unwrap_or_else(|e| panic!("{e}: {frame}"));
        assert!(!matches!(event, Event::Unreadable { .. }), "{frame}");
        kinds.push(event.kind().to_owned());
    }
    for needed in [
        "permission.asked",
        "permission.replied",
        "session.status",
        "session.idle",
    ] {
        assert!(
            kinds.iter().any(|k| k == needed),
            "{needed} missing: {kinds:?}"
        );
    }
    let asked = text
        .lines()
        .find_map(|l| match Event::parse(l) {
            Ok(Event::PermissionAsked(request)) => Some(request),
            _ => None,
        })
        .expect("a request");
    assert_eq!(asked.patterns, vec!["touch old.txt".to_owned()]);
}

fn reference_dir() -> PathBuf {
    // Copies of /work/shared/reference/opencode-1.18.33, recorded from
    // the real server.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencode-1.18.33")
}

/// Every frame of a capture, as the JSON text `data:` would carry.
fn frames(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("capture is readable");
    if path.extension().is_some_and(|e| e == "sse") {
        return text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect();
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("capture line is JSON");
            v["ev"].to_string()
        })
        .collect()
}

fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(reference_dir())
        .expect("reference captures exist")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl" || e == "sse"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_frame_of_every_capture_parses() {
    let files = captures();
    assert_eq!(files.len(), 7, "expected the 7 captures, got {files:?}");
    let mut total = 0;
    for file in files {
        let frames = frames(&file);
        assert!(!frames.is_empty(), "{} has no frames", file.display());
        for frame in frames {
            let ev =
                Event::parse(&frame).unwrap_or_else(|e| panic!("{}: {e}: {frame}", file.display()));
            assert!(
                !matches!(ev, Event::PermissionMalformed(_)),
                "{}: permission did not parse: {frame}",
                file.display()
            );
            // Every type gatekeep models must be recognised, not Other.
            let raw: Value = serde_json::from_str(&frame).expect("json");
            let raw = raw.get("payload").cloned().unwrap_or(raw);
            let kind = raw["type"].as_str().expect("type");
            assert_eq!(ev.kind(), kind, "{}: {frame}", file.display());
            total += 1;
        }
    }
    assert_eq!(total, 294, "frames in the 7 captures");
}

fn parse_capture(name: &str) -> Vec<Event> {
    frames(&reference_dir().join(name))
        .iter()
        .map(|f| Event::parse(f).expect("parses"))
        .collect()
}

#[test]
fn once_capture_fields() {
    let evs = parse_capture("events_once.jsonl");
    assert_eq!(evs[0], Event::ServerConnected);
    let created = evs
        .iter()
        .find_map(|e| match e {
            Event::SessionCreated(s) => Some(s.clone()),
            _ => None,
        })
        .expect("session.created");
    assert_eq!(created.id, "ses_e009b293dffeHlo5q9sYMzBEhP");
    assert_eq!(created.parent_id, None);

    let asked = evs
        .iter()
        .find_map(|e| match e {
            Event::PermissionAsked(p) => Some(p.clone()),
            _ => None,
        })
        .expect("permission.asked");
    assert_eq!(
        asked,
        PermissionRequest {
            id: "per_1ff64da60001VP2VoRpYCMh3Kl".into(),
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
            permission: "bash".into(),
            patterns: vec!["echo hi > out.txt".into()],
            metadata: PermissionMetadata {
                command: Some("echo hi > out.txt".into()),
                ..PermissionMetadata::default()
            },
            always: vec!["echo *".into()],
            tool: Some(ToolRef {
                message_id: "msg_1ff64d719001u0ntqu78mkXLAF".into(),
                call_id: "call_1_0".into(),
            }),
        }
    );
    assert!(evs.contains(&Event::PermissionReplied {
        session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
        request_id: "per_1ff64da60001VP2VoRpYCMh3Kl".into(),
        reply: ReplyKind::Once,
    }));
    assert!(evs.contains(&Event::PartDelta {
        session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
        message_id: "msg_1ff64daa4001OrQaYZbeXBJ7hc".into(),
        part_id: "prt_1ff64daf4001puDPtID8bYAtJV".into(),
        field: "text".into(),
        delta: "done: (no output)".into(),
    }));
    assert_eq!(
        evs.last(),
        Some(&Event::SessionIdle {
            session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into()
        })
    );
    assert!(evs.contains(&Event::SessionStatus {
        session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
        status: SessionStatus::Busy,
    }));
    // The user's prompt is echoed as a text part of a user message.
    assert!(evs.contains(&Event::MessageUpdated {
        session_id: "ses_e009b293dffeHlo5q9sYMzBEhP".into(),
        message_id: "msg_1ff64d6f6001qxwRxjVlz6yK4X".into(),
        role: "user".into(),
    }));
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Other { kind } if kind == "plugin.added")));
}

#[test]
fn tool_parts_carry_name_status_and_call_id() {
    let evs = parse_capture("events_once.jsonl");
    let tools: Vec<(String, ToolStatus, Option<String>)> = evs
        .iter()
        .filter_map(|e| match e {
            Event::PartUpdated(Part::Tool {
                tool,
                call_id,
                status,
                title,
                ..
            }) if call_id == "call_1_0" => Some((tool.clone(), status.clone(), title.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        tools,
        vec![
            ("bash".into(), ToolStatus::Pending, None),
            ("bash".into(), ToolStatus::Running, None),
            ("bash".into(), ToolStatus::Running, None),
            (
                "bash".into(),
                ToolStatus::Completed,
                Some("echo hi > out.txt".into())
            ),
        ]
    );
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::PartUpdated(Part::Text { text, .. }) if text == "please write the file"
    )));
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::PartUpdated(Part::Other { kind, .. }) if kind == "step-start"
    )));
}

#[test]
fn reject_cascade_capture_has_two_replies() {
    let evs = parse_capture("events_multi_reject.jsonl");
    let replied: Vec<(&str, &ReplyKind)> = evs
        .iter()
        .filter_map(|e| match e {
            Event::PermissionReplied {
                request_id, reply, ..
            } => Some((request_id.as_str(), reply)),
            _ => None,
        })
        .collect();
    assert_eq!(
        replied,
        vec![
            ("per_1ff650a03001Ldql6QW5vDZZ3l", &ReplyKind::Reject),
            ("per_1ff650a10001612NZ7dRZgL24K", &ReplyKind::Reject),
        ]
    );
    let always = parse_capture("events_multi_always.jsonl");
    assert!(always.iter().any(|e| matches!(
        e,
        Event::PermissionReplied {
            reply: ReplyKind::Always,
            ..
        }
    )));
}

#[test]
fn abort_capture_has_session_error_and_heartbeats() {
    let evs = parse_capture("events_noreply_abort.jsonl");
    assert_eq!(evs.iter().filter(|e| **e == Event::Heartbeat).count(), 2);
    assert!(evs.contains(&Event::SessionError {
        session_id: Some("ses_e009adf47ffe5DuCFAz4ktsMe8".into()),
        name: "MessageAbortedError".into(),
        message: Some("Aborted".into()),
    }));
}

#[test]
fn dispose_capture_ends_with_instance_disposed() {
    let evs = parse_capture("events_dispose.sse");
    assert_eq!(
        evs.last(),
        Some(&Event::InstanceDisposed {
            directory: Some("/workspace/proj".into())
        })
    );
    let updated = evs
        .iter()
        .find_map(|e| match e {
            Event::SessionUpdated(s) => Some(s.clone()),
            _ => None,
        })
        .expect("session.updated");
    assert_eq!(updated.title.as_deref(), Some("dispose"));
    assert_eq!(updated.agent.as_deref(), Some("build"));
}

#[test]
fn global_event_wrapper_is_unwrapped() {
    let evs = parse_capture("events_legacy_global.jsonl");
    assert_eq!(evs[0], Event::ServerConnected);
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::PermissionAsked(p) if p.id == "per_1ff65a848001fJtsXmssLJUjxL"
    )));
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Other { kind } if kind == "sync")));
}

#[test]
fn child_session_has_parent() {
    let frame = r#"{"id":"evt_1","type":"session.created","properties":{"sessionID":"ses_child","info":{"id":"ses_child","parentID":"ses_root","title":"explore (@general subagent)"}}}"#;
    let Event::SessionCreated(info) = Event::parse(frame).expect("parses") else {
        panic!("not session.created")
    };
    assert_eq!(info.parent_id.as_deref(), Some("ses_root"));
    assert_eq!(info.title.as_deref(), Some("explore (@general subagent)"));
}

#[test]
fn unknown_types_are_other() {
    let ev = Event::parse(r#"{"id":"evt_x","type":"brand.new.thing","properties":{"x":[1]}}"#)
        .expect("unknown type is fine");
    assert_eq!(
        ev,
        Event::Other {
            kind: "brand.new.thing".into()
        }
    );
    // No properties at all is fine for types we ignore.
    assert!(matches!(
        Event::parse(r#"{"type":"x.y"}"#),
        Ok(Event::Other { .. })
    ));
}

#[test]
fn malformed_permission_keeps_ids() {
    // `patterns` of the wrong type.
    let frame = r#"{"id":"evt_1","type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def","permission":"bash","patterns":"oops"}}"#;
    assert_eq!(
        Event::parse(frame).expect("never an error"),
        Event::PermissionMalformed(MalformedPermission {
            request_id: Some("per_abc".into()),
            session_id: Some("ses_def".into()),
            reason: "invalid type: string \"oops\", expected a sequence".into(),
        })
    );
    // Missing the permission kind.
    let frame =
        r#"{"type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def"}}"#;
    assert!(matches!(
        Event::parse(frame),
        Ok(Event::PermissionMalformed(MalformedPermission { request_id: Some(ref r), .. })) if r == "per_abc"
    ));
}

#[test]
fn truncated_permission_frame_is_salvaged() {
    let frame = r#"{"id":"evt_1","type":"permission.asked","properties":{"id":"per_abc","sessionID":"ses_def","permission":"ba"#;
    let Ok(Event::PermissionMalformed(m)) = Event::parse(frame) else {
        panic!("truncated permission must not be an error")
    };
    assert_eq!(m.request_id.as_deref(), Some("per_abc"));
    assert_eq!(m.session_id.as_deref(), Some("ses_def"));
}

#[test]
fn metadata_of_unexpected_type_is_absent_not_fatal() {
    let frame = r#"{"type":"permission.asked","properties":{"id":"per_1","sessionID":"ses_1","permission":"edit","patterns":["a.rs"],"metadata":{"filepath":"/w/a.rs","diff":{"not":"a string"},"extra":1},"always":[]}}"#;
    let Ok(Event::PermissionAsked(p)) = Event::parse(frame) else {
        panic!("should parse")
    };
    assert_eq!(p.metadata.filepath.as_deref(), Some("/w/a.rs"));
    assert_eq!(p.metadata.diff, None);
    assert_eq!(p.tool, None);
}

#[test]
fn a_display_event_of_another_shape_is_skipped_not_an_error() {
    // OpenCode 1.1.65 / 1.3.2: `message.updated` without a top-level
    // `sessionID` (it is inside `info`).
    let old = r#"{"type":"message.updated","properties":{"info":{"id":"msg_1","role":"user","sessionID":"ses_1"}}}"#;
    assert_eq!(
        Event::parse(old).expect("parses"),
        Event::MessageUpdated {
            session_id: "ses_1".into(),
            message_id: "msg_1".into(),
            role: "user".into()
        }
    );
    for frame in [
        r#"{"type":"message.updated","properties":{"info":{"role":3}}}"#,
        r#"{"type":"message.part.updated","properties":{"part":"a string"}}"#,
        r#"{"type":"message.part.delta","properties":{"delta":{}}}"#,
    ] {
        assert!(
            matches!(Event::parse(frame), Ok(Event::Unreadable { .. })),
            "{frame}"
        );
    }
}

#[test]
fn other_garbage_is_an_error() {
    assert!(matches!(
        Event::parse("not json"),
        Err(WireError::NotJson(_))
    ));
    assert!(matches!(Event::parse(r#"{"x":1}"#), Err(WireError::NoType)));
    assert!(matches!(
        Event::parse(r#"{"type":"session.idle","properties":{}}"#),
        Err(WireError::Malformed { .. })
    ));
}

#[test]
fn permission_list_items_parse() {
    // GET /permission returns PermissionRequest[]: the asked properties.
    let body = r#"[{"id":"per_1","sessionID":"ses_1","permission":"bash","patterns":["ls"],"metadata":{"command":"ls"},"always":["ls *"],"tool":{"messageID":"msg_1","callID":"c1"}}]"#;
    let list: Vec<PermissionRequest> = serde_json::from_str(body).expect("parses");
    assert_eq!(list[0].metadata.command.as_deref(), Some("ls"));
    assert_eq!(
        list[0].tool.as_ref().map(|t| t.call_id.as_str()),
        Some("c1")
    );
}

#[test]
fn retry_status_and_error_without_data() {
    let ev = Event::parse(r#"{"type":"session.status","properties":{"sessionID":"ses_1","status":{"type":"retry","attempt":2,"message":"rate limited","next":5}}}"#)
        .expect("parses");
    assert_eq!(
        ev,
        Event::SessionStatus {
            session_id: "ses_1".into(),
            status: SessionStatus::Retry {
                attempt: Some(2),
                message: Some("rate limited".into())
            }
        }
    );
    let ev = Event::parse(r#"{"type":"session.error","properties":{}}"#).expect("parses");
    assert_eq!(
        ev,
        Event::SessionError {
            session_id: None,
            name: "UnknownError".into(),
            message: None
        }
    );
}
