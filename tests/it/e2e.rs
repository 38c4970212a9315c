//! End-to-end against the real OpenCode 1.18.33 with a scripted fake LLM,
//! entirely on loopback (`support::real_opencode`, `support::fake_llm`).
//!
//! Two groups:
//! - `server_*`: plain HTTP against `opencode serve`, no gatekeep. They pin
//!   the protocol facts gatekeep relies on (docs/opencode-facts.md), so an
//!   OpenCode upgrade that changes them fails here, by name.
//! - `gatekeep_*`: the real `gatekeep` binary at a pseudo-terminal
//!   supervising the real OpenCode.
//!
//! Every test holds a [`slot`] (at most two OpenCode servers at once on the
//! 2-core CI machine) and bounds every wait.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::fake_llm::FakeLlm;
use crate::support::gatekeep::Gatekeep;
use crate::support::real_opencode::{
    processes_mentioning, slot, Options, RealOpencode, Serve, MODEL, PROVIDER,
};

/// Bound on one step of a run against the real server (an LLM round trip,
/// a permission arriving, a session going idle).
const STEP: Duration = Duration::from_secs(30);

/// A minimal OpenCode API client for the `server_*` tests.
struct Client {
    http: reqwest::Client,
    base: String,
    dir: String,
    password: String,
}

impl Client {
    fn new(serve: &Serve, oc: &RealOpencode, password: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            base: serve.base.clone(),
            dir: oc.dir().to_string_lossy().into_owned(),
            password: password.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .query(&[("directory", &self.dir)])
            .basic_auth("opencode", Some(&self.password))
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("POST to opencode");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .query(&[("directory", &self.dir)])
            .basic_auth("opencode", Some(&self.password))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("GET from opencode")
            .json()
            .await
            .expect("json body")
    }

    /// Open `/event` and return its events once `server.connected` arrived.
    async fn events(&self) -> Events {
        let mut events = self.events_at("/event").await;
        events.wait("server.connected", |_| true).await;
        events
    }

    /// Open the server-sent events at `path`, as they come.
    async fn events_at(&self, path: &str) -> Events {
        let resp = self
            .http
            .get(self.url(path))
            .query(&[("directory", &self.dir)])
            .basic_auth("opencode", Some(&self.password))
            .send()
            .await
            .expect("open /event");
        assert_eq!(resp.status().as_u16(), 200);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut bytes = resp.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = bytes.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    if let Some(data) = line.trim_end().strip_prefix("data:") {
                        if let Ok(event) = serde_json::from_str::<Value>(data.trim()) {
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    async fn create_session(&self, body: &Value) -> String {
        let (status, info) = self.post("/session", body).await;
        assert_eq!(status, 200, "POST /session: {info}");
        info["id"].as_str().expect("session id").to_owned()
    }

    async fn prompt(&self, session: &str, text: &str) {
        let body = json!({
            "parts": [{ "type": "text", "text": text }],
            "model": { "providerID": PROVIDER, "modelID": MODEL },
            "agent": "build",
        });
        let (status, _) = self
            .post(&format!("/session/{session}/prompt_async"), &body)
            .await;
        assert_eq!(status, 204, "prompt_async");
    }

    async fn reply(&self, request: &str, body: &Value) {
        let (status, answer) = self
            .post(&format!("/permission/{request}/reply"), body)
            .await;
        assert_eq!((status, answer), (200, json!(true)), "reply to {request}");
    }
}

/// The event stream, with everything already received kept for asserts.
struct Events {
    rx: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    /// The next event of `kind` whose properties satisfy `pred`.
    async fn wait(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event in {STEP:?}; seen: {:?}", self.kinds()))
                .unwrap_or_else(|| panic!("event stream ended before {kind}"));
            self.seen.push(event.clone());
            if event["type"] == kind && pred(&event["properties"]) {
                return event["properties"].clone();
            }
        }
    }

    async fn idle(&mut self, session: &str) {
        self.wait("session.idle", |p| p["sessionID"] == session)
            .await;
    }

    fn kinds(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| e["type"].as_str())
            .filter(|k| !k.starts_with("message.") && *k != "plugin.added")
            .map(str::to_owned)
            .collect()
    }

    fn all(&self, kind: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["properties"].clone())
            .collect()
    }
}

const PASSWORD: &str = "e2e-test-password-not-secret";

/// A real server for `oc`, a client and its open event stream.
async fn connect(oc: &RealOpencode) -> (Serve, Client, Events) {
    let serve = oc.serve(PASSWORD);
    eprintln!("opencode serve ready after {:?}", serve.ready_after);
    let client = Client::new(&serve, oc, PASSWORD);
    let events = client.events().await;
    (serve, client, events)
}

#[tokio::test]
async fn server_asks_for_bash_and_a_deny_reason_reaches_the_model() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    let root = client.create_session(&json!({})).await;

    client.prompt(&root, "BASH<touch approved.txt>").await;
    let asked = events
        .wait("permission.asked", |p| p["sessionID"] == root)
        .await;
    assert_eq!(asked["permission"], "bash");
    assert_eq!(asked["metadata"]["command"], "touch approved.txt");
    assert!(
        !oc.dir().join("approved.txt").exists(),
        "ran before approval"
    );
    client
        .reply(
            asked["id"].as_str().expect("id"),
            &json!({ "reply": "once" }),
        )
        .await;
    events.idle(&root).await;
    assert!(
        oc.dir().join("approved.txt").exists(),
        "approved command did not run"
    );

    client.prompt(&root, "BASH<touch denied.txt>").await;
    let asked = events
        .wait("permission.asked", |p| p["sessionID"] == root)
        .await;
    let reason = "use the other file, please";
    client
        .reply(
            asked["id"].as_str().expect("id"),
            &json!({ "reply": "reject", "message": reason }),
        )
        .await;
    events.idle(&root).await;
    assert!(!oc.dir().join("denied.txt").exists(), "denied command ran");
    let told = llm.tool_results();
    assert!(
        told.iter().any(|t| t.contains(reason)),
        "the deny reason never reached the model; tool results: {told:?}"
    );
    // Title generation answered too (the fake saw a request without tools).
    assert!(llm.requests().len() > llm.agent_requests().len());
    assert_no_npm_install(&oc);
}

/// What gatekeep reads after a stream gap to learn whether the run ended
/// meanwhile (`GET /session/status` without the idle root, its last
/// message complete), and the heartbeat its watchdog counts on.
#[tokio::test]
async fn server_reports_a_finished_turn_the_way_gatekeep_reconciles_it() {
    use gatekeep::opencode::wire::{last_message, status_of, LastMessage, SessionStatus};
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    let root = client.create_session(&json!({})).await;
    client.prompt(&root, "just say hello").await;
    events.idle(&root).await;
    let statuses = client.get("/session/status").await;
    assert!(
        matches!(
            status_of(&statuses, &root),
            None | Some(SessionStatus::Idle)
        ),
        "{statuses}"
    );
    let messages = client
        .get(&format!("/session/{root}/message?limit=1"))
        .await;
    assert_eq!(messages.as_array().map(Vec::len), Some(1), "{messages}");
    assert_eq!(
        last_message(&messages),
        LastMessage::Completed,
        "{messages}"
    );
    // Every 10 s, even with nothing else to say.
    events.wait("server.heartbeat", |_| true).await;
}

/// OpenCode 1.18's newer protocol, side by side with the routes gatekeep
/// drives (docs/design.md, "OpenCode versions"): `/api/event` carries the
/// session's durable events (`data`, `durable.seq`), but the agent's
/// permission and question requests go only through the old bus
/// (`permission.asked` on `/event`), and the new per-session list does not
/// show them; answering through the old route settles them. Captured into
/// `tests/fixtures/opencode-1.18.33/api/events.jsonl` with
/// `GATEKEEP_CAPTURE=1`.
#[tokio::test]
async fn server_new_api_does_not_carry_the_requests_gatekeep_answers() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    let mut api = client.events_at("/api/event").await;
    api.wait("server.connected", |_| true).await;
    let root = client.create_session(&json!({})).await;
    client.prompt(&root, "BASH<touch via_api.txt>").await;
    let asked = events
        .wait("permission.asked", |p| p["sessionID"] == root)
        .await;
    let listed = client.get(&format!("/api/session/{root}/permission")).await;
    assert_eq!(
        listed,
        json!({ "data": [] }),
        "the new list shows the request"
    );
    let id = asked["id"].as_str().expect("id");
    client.reply(id, &json!({ "reply": "once" })).await;
    events.idle(&root).await;
    assert!(oc.dir().join("via_api.txt").exists());
    client.prompt(&root, "QUESTION<Ship it?>").await;
    let question = events
        .wait("question.asked", |p| p["sessionID"] == root)
        .await;
    let qid = question["id"].as_str().expect("question id");
    let (status, _) = client
        .post(&format!("/question/{qid}/reject"), &json!({}))
        .await;
    assert_eq!(status, 200);
    events.idle(&root).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = api.rx.try_recv() {
        api.seen.push(event);
    }
    let created = api
        .seen
        .iter()
        .find(|e| e["type"] == "session.created")
        .expect("session.created on /api/event");
    assert_eq!(created["data"]["info"]["id"], root.as_str());
    assert!(created["durable"]["seq"].is_u64(), "{created}");
    let kinds: Vec<&str> = api.seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("permission") || k.starts_with("question")),
        "{kinds:?}"
    );
    if std::env::var("GATEKEEP_CAPTURE").is_ok_and(|v| v == "1") {
        let lines: Vec<String> = api.seen.iter().map(Value::to_string).collect();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/opencode-1.18.33/api/events.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write the capture");
    }
}

/// An `always` given in an earlier, interactive OpenCode session of the
/// same user and project does not let a later server skip the question:
/// OpenCode 1.18 keeps it in memory only (`GET /api/permission/saved`
/// stays empty), so a new server asks again and gatekeep sees it.
#[tokio::test]
async fn server_an_always_from_an_earlier_server_is_not_kept() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    {
        let (_serve, client, mut events) = connect(&oc).await;
        let root = client.create_session(&json!({})).await;
        client.prompt(&root, "BASH<touch first.txt>").await;
        let asked = events
            .wait("permission.asked", |p| p["sessionID"] == root)
            .await;
        let id = asked["id"].as_str().expect("id");
        client.reply(id, &json!({ "reply": "always" })).await;
        events.idle(&root).await;
        assert_eq!(
            client.get("/api/permission/saved").await,
            json!({ "data": [] })
        );
    }
    let (_serve, client, mut events) = connect(&oc).await;
    assert_eq!(
        client.get("/api/permission/saved").await,
        json!({ "data": [] })
    );
    let root = client.create_session(&json!({})).await;
    client.prompt(&root, "BASH<touch second.txt>").await;
    let asked = events
        .wait("permission.asked", |p| p["sessionID"] == root)
        .await;
    assert_eq!(asked["patterns"], json!(["touch second.txt"]));
    assert!(!oc.dir().join("second.txt").exists(), "ran without asking");
}

/// OpenCode did not try to `npm install @opencode-ai/plugin` into its
/// config directory (the seed in `real_opencode` keeps it from the
/// registry): no npm cache appeared, `node_modules` is still empty.
fn assert_no_npm_install(oc: &RealOpencode) {
    assert!(
        !oc.home().join(".npm").exists(),
        "OpenCode ran npm (it would reach registry.npmjs.org): see docs/opencode-facts.md"
    );
    let modules = oc.home().join(".config/opencode/node_modules");
    let installed: Vec<_> = std::fs::read_dir(&modules)
        .expect("seeded node_modules")
        .collect();
    assert!(
        installed.is_empty(),
        "OpenCode installed packages: {installed:?}"
    );
}

/// The per-session ruleset does not reach subagents (the `task` tool keeps
/// only `deny` and `external_directory` rules of the parent); the
/// `OPENCODE_PERMISSION` environment of the server does, even over a
/// workspace config that allows.
#[tokio::test]
async fn server_gate_reaches_subagents_only_through_opencode_permission() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let allow = Options {
        permission: json!({ "bash": "allow" }),
        ..Options::default()
    };
    let Some(oc) = RealOpencode::with(&llm, allow.clone()) else {
        return;
    };
    {
        let (_serve, client, mut events) = connect(&oc).await;
        let ruleset =
            json!({ "permission": [{ "permission": "bash", "pattern": "*", "action": "ask" }] });
        let root = client.create_session(&ruleset).await;
        client
            .prompt(&root, "TASK<BASH[touch by_sub_unasked.txt]>")
            .await;
        let child = events
            .wait("session.created", |p| p["info"]["parentID"] == root)
            .await;
        assert_eq!(child["info"]["agent"], "general");
        assert_eq!(child["info"]["title"], "sub job (@general subagent)");
        events.idle(&root).await;
        assert!(
            events.all("permission.asked").is_empty(),
            "OpenCode now passes ask rules to subagents: gatekeep's --gate can rely on the session ruleset"
        );
        assert!(oc.dir().join("by_sub_unasked.txt").exists());
    }

    let gated = Options {
        env: vec![(
            "OPENCODE_PERMISSION".to_owned(),
            json!({ "bash": "ask" }).to_string(),
        )],
        ..allow
    };
    let Some(oc) = RealOpencode::with(&llm, gated) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    let root = client.create_session(&json!({})).await;
    client.prompt(&root, "TASK<BASH[touch by_sub.txt]>").await;
    let child = events
        .wait("session.created", |p| p["info"]["parentID"] == root)
        .await;
    let child_id = child["sessionID"].as_str().expect("child id").to_owned();
    let asked = events.wait("permission.asked", |_| true).await;
    assert_eq!(
        asked["sessionID"],
        child_id.as_str(),
        "the ask came from the subagent's session"
    );
    assert_eq!(asked["metadata"]["command"], "touch by_sub.txt");
    assert!(!oc.dir().join("by_sub.txt").exists());
    client
        .reply(
            asked["id"].as_str().expect("id"),
            &json!({ "reply": "once" }),
        )
        .await;
    events.idle(&root).await;
    assert!(oc.dir().join("by_sub.txt").exists());
}

/// A workspace's agent-level permission beats `OPENCODE_PERMISSION` (it is
/// merged into the top-level `permission` only), but an agent-level rule in
/// `OPENCODE_CONFIG_CONTENT` beats the workspace's: that is what `--gate`
/// needs for subagents whose agent config allows.
#[tokio::test]
async fn server_agent_config_beats_opencode_permission_but_not_config_content() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let options = Options {
        permission: json!({ "bash": "allow" }),
        agent: Some(json!({
            "general": { "permission": { "bash": "allow" } },
            "explore": { "permission": { "bash": "allow" } },
        })),
        env: vec![
            (
                "OPENCODE_PERMISSION".to_owned(),
                json!({ "bash": "ask" }).to_string(),
            ),
            (
                "OPENCODE_CONFIG_CONTENT".to_owned(),
                json!({ "agent": { "explore": { "permission": { "bash": "ask" } } } }).to_string(),
            ),
        ],
    };
    let Some(oc) = RealOpencode::with(&llm, options) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    // GET /agent shows each agent's merged ruleset: what a gate check reads.
    let agents = client.get("/agent").await;
    let last_bash_rule = |name: &str| {
        agents
            .as_array()
            .expect("agent list")
            .iter()
            .find(|a| a["name"] == name)
            .and_then(|a| a["permission"].as_array())
            .and_then(|rules| {
                rules
                    .iter()
                    .rev()
                    .find(|r| r["permission"] == "bash" || r["permission"] == "*")
            })
            .map(|r| r["action"].clone())
    };
    assert_eq!(last_bash_rule("general"), Some(json!("allow")), "{agents}");
    assert_eq!(last_bash_rule("explore"), Some(json!("ask")), "{agents}");
    assert_eq!(last_bash_rule("build"), Some(json!("ask")), "{agents}");

    let root = client.create_session(&json!({})).await;
    client
        .prompt(&root, "TASK<BASH[touch by_general.txt]>")
        .await;
    events.idle(&root).await;
    assert!(
        events.all("permission.asked").is_empty(),
        "OPENCODE_PERMISSION now beats agent-level config"
    );
    assert!(oc.dir().join("by_general.txt").exists());
}

/// A reject with a message still rejects the session's other pending
/// requests, and then the agent loop stops: the model is not called again.
#[tokio::test]
async fn server_reject_with_message_cascades_to_parallel_requests() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let (_serve, client, mut events) = connect(&oc).await;
    let root = client.create_session(&json!({})).await;
    client
        .prompt(&root, "BASH<touch p1> BASH<touch p2> BASH<touch p3>")
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let asked = events
            .wait("permission.asked", |p| p["sessionID"] == root)
            .await;
        ids.push(asked["id"].as_str().expect("id").to_owned());
    }
    let pending = client.get("/permission").await;
    assert_eq!(pending.as_array().map(Vec::len), Some(3), "{pending}");
    client
        .reply(
            &ids[1],
            &json!({ "reply": "reject", "message": "not this one" }),
        )
        .await;
    for _ in 0..3 {
        let replied = events
            .wait("permission.replied", |p| p["sessionID"] == root)
            .await;
        assert_eq!(replied["reply"], "reject");
    }
    events.idle(&root).await;
    for f in ["p1", "p2", "p3"] {
        assert!(!oc.dir().join(f).exists(), "{f} ran");
    }
    assert_eq!(client.get("/permission").await, json!([]));
    assert_eq!(
        llm.agent_requests().len(),
        1,
        "the model was called again after the cascade"
    );
}

// ---------------------------------------------------------------------------
// gatekeep against the real OpenCode, approvals at a pseudo-terminal.

/// Bound on gatekeep showing something (OpenCode start-up included).
const SHOW: Duration = Duration::from_secs(45);

pub(crate) async fn expect(gk: &Gatekeep, text: &str) {
    expect_within(gk, text, SHOW).await;
}

async fn expect_within(gk: &Gatekeep, text: &str, bound: Duration) {
    let start = Instant::now();
    while !gk.screen().contains(text) {
        assert!(
            start.elapsed() < bound,
            "gatekeep never showed {text:?}; screen so far:\n{}",
            gk.screen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// gatekeep at a terminal running `message` in `oc`'s workspace.
pub(crate) fn gatekeep(oc: &RealOpencode, args: &[&str], message: &str) -> Gatekeep {
    let dir = oc.dir().to_str().expect("utf-8 workspace");
    let mut all = vec!["--dir", dir];
    all.extend_from_slice(args);
    let model = RealOpencode::model();
    let tail = ["run", "-m", model.as_str(), message];
    Gatekeep::at_terminal(&all, oc.bin(), &tail, &oc.env_pairs())
}

/// After gatekeep exited: no process it started is left in the workspace.
pub(crate) async fn assert_no_opencode_left(oc: &RealOpencode) {
    let needle = oc.dir().to_string_lossy().into_owned();
    let start = Instant::now();
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "processes left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gatekeep_approve_runs_the_command() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "BASH<touch approved.txt>");
    expect(&gk, "touch approved.txt").await;
    assert!(!oc.dir().join("approved.txt").exists());
    gk.type_line("a");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(oc.dir().join("approved.txt").exists(), "{}", gk.screen());
    assert!(
        gk.stdout().contains("after tools"),
        "stdout: {}",
        gk.stdout()
    );
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_deny_with_reason_reaches_the_model_and_nothing_runs() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "BASH<touch denied.txt>");
    expect(&gk, "touch denied.txt").await;
    gk.type_line("r");
    expect(&gk, "reason").await;
    gk.type_line("not in this repository");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(!oc.dir().join("denied.txt").exists());
    assert!(
        llm.tool_results()
            .iter()
            .any(|t| t.contains("not in this repository")),
        "reason not in the model's next request: {:?}",
        llm.tool_results()
    );
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_plain_deny_does_not_run() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "BASH<touch denied.txt>");
    expect(&gk, "touch denied.txt").await;
    gk.type_line("d");
    let code = gk.exit_code().await;
    assert!(!oc.dir().join("denied.txt").exists());
    assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_unanswered_request_is_denied_at_its_deadline() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &["--approval-timeout", "2s"], "BASH<touch late.txt>");
    expect(&gk, "touch late.txt").await;
    let code = gk.exit_code().await;
    assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
    assert!(!oc.dir().join("late.txt").exists());
    let told = llm.tool_results();
    assert!(
        told.iter().any(|t| t.contains("approval deadline")),
        "the model was not told why: {told:?}"
    );
    assert_no_opencode_left(&oc).await;
}

/// The run times out while an approved command is still running: exit 124
/// and nothing left behind, not even the command OpenCode started.
#[tokio::test]
async fn gatekeep_run_timeout_exits_124_and_leaves_nothing() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(
        &oc,
        &["--timeout", "60s"],
        "BASH<sleep 300 && touch never.txt>",
    );
    expect(&gk, "sleep 300").await;
    let needle = oc.dir().to_string_lossy().into_owned();
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "the process check cannot see OpenCode in its workspace"
    );
    gk.type_line("a");
    // The run's deadline is generous because OpenCode's start-up alone takes
    // up to 15 s on a loaded 2-core machine, and the request must still have
    // time left when it is approved.
    expect_within(&gk, "timed out", Duration::from_secs(90)).await;
    assert_eq!(gk.exit_code().await, 124, "{}", gk.screen());
    assert!(!oc.dir().join("never.txt").exists());
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_sigterm_while_pending_exits_143_and_nothing_ran() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "BASH<touch never.txt>");
    expect(&gk, "touch never.txt").await;
    gk.signal(Signal::SIGTERM);
    assert_eq!(gk.exit_code().await, 143, "{}", gk.screen());
    assert!(!oc.dir().join("never.txt").exists());
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_three_parallel_calls_one_denied_all_settled_none_ran() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "BASH<touch p1> BASH<touch p2> BASH<touch p3>");
    expect(&gk, "touch p1").await;
    expect(&gk, "touch p2").await;
    expect(&gk, "touch p3").await;
    gk.type_line("d 2");
    let code = gk.exit_code().await;
    assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
    for f in ["p1", "p2", "p3"] {
        assert!(!oc.dir().join(f).exists(), "{f} ran");
    }
    assert!(
        gk.screen().contains("0 approved, 3 denied"),
        "{}",
        gk.screen()
    );
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_subagent_request_is_gated_and_labelled() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "TASK<BASH[touch by_sub.txt]>");
    expect(&gk, "touch by_sub.txt").await;
    assert!(
        gk.screen().contains("(subagent: "),
        "not labelled: {}",
        gk.screen()
    );
    assert!(!oc.dir().join("by_sub.txt").exists());
    gk.type_line("a");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(oc.dir().join("by_sub.txt").exists());
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_edit_request_shows_its_diff() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let path = oc.dir().join("notes.txt");
    std::fs::write(&path, "line one\nline two\n").expect("seed the file");
    let message = format!("EDIT<{}|line two|line 2>", path.display());
    let mut gk = gatekeep(&oc, &[], &message);
    expect(&gk, "+line 2").await;
    assert!(gk.screen().contains("-line two"), "{}", gk.screen());
    assert!(gk.screen().contains("notes.txt"), "{}", gk.screen());
    gk.type_line("a");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert_eq!(
        std::fs::read_to_string(&path).expect("edited"),
        "line one\nline 2\n"
    );
    assert_no_opencode_left(&oc).await;
}

/// The agent edits the policy file of its own run: the edit is marked,
/// needs two people (a `[[require]]` rule exists), and one approval at the
/// terminal changes nothing.
#[tokio::test]
async fn gatekeep_an_agent_cannot_loosen_its_own_policy_file() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let policy = oc.dir().join("gatekeep.toml");
    let rules = "[[require]]\nmatch = \"bash:git push*\"\napprovals = 2\n";
    std::fs::write(&policy, rules).expect("write the policy");
    let message = format!("EDIT<{}|approvals = 2|approvals = 1>", policy.display());
    let mut gk = gatekeep(&oc, &[], &message);
    expect(&gk, "POLICY CHANGE").await;
    assert!(
        gk.screen().contains("needs 2 different approvers"),
        "{}",
        gk.screen()
    );
    assert!(!gk.screen().contains("[t]rust"), "{}", gk.screen());
    gk.type_line("a");
    expect(&gk, "1 of 2 approvals").await;
    gk.type_line("a");
    expect(&gk, "approved #1 already").await;
    assert_eq!(std::fs::read_to_string(&policy).expect("policy"), rules);
    gk.type_line("d");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert_eq!(
        std::fs::read_to_string(&policy).expect("policy"),
        rules,
        "the agent loosened its own policy"
    );
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_gate_bash_gates_where_the_config_allows() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let allow = Options {
        permission: json!({ "bash": "allow" }),
        ..Options::default()
    };
    let Some(oc) = RealOpencode::with(&llm, allow) else {
        return;
    };
    let mut gk = gatekeep(
        &oc,
        &["--gate", "bash"],
        "BASH<touch root.txt> TASK<BASH[touch sub.txt]>",
    );
    expect(&gk, "touch root.txt").await;
    expect(&gk, "touch sub.txt").await;
    assert!(
        !oc.dir().join("root.txt").exists(),
        "the root's bash ran ungated"
    );
    assert!(
        !oc.dir().join("sub.txt").exists(),
        "the subagent's bash ran ungated"
    );
    let screen = gk.screen();
    let (root, sub) = (
        number_of_request(&screen, "touch root.txt"),
        number_of_request(&screen, "touch sub.txt"),
    );
    gk.type_line(&format!("a {root}"));
    gk.type_line(&format!("a {sub}"));
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(oc.dir().join("root.txt").exists());
    assert!(oc.dir().join("sub.txt").exists());
    assert_no_opencode_left(&oc).await;
}

/// An agent's question is relayed to the approval channel and the answer
/// reaches the model.
#[tokio::test]
async fn gatekeep_relays_a_question_and_the_answer_reaches_the_model() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(&oc, &[], "QUESTION<Shall I delete the tests?>");
    expect(&gk, "Shall I delete the tests?").await;
    // An approval is not an answer: refused, the question stays.
    gk.type_line("a");
    expect(&gk, "is a question").await;
    gk.type_line("2");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert_eq!(llm.agent_requests().len(), 2, "{}", gk.screen());
    assert!(
        llm.tool_results().iter().any(|r| r.contains("No")),
        "{:?}",
        llm.tool_results()
    );
    assert_no_opencode_left(&oc).await;
}

/// With `--no-questions` an agent's question is never left waiting
/// (OpenCode would wait forever): gatekeep dismisses it and the run ends.
#[tokio::test]
async fn gatekeep_no_questions_dismisses_a_question_and_the_run_ends() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    let mut gk = gatekeep(
        &oc,
        &["--no-questions"],
        "QUESTION<Shall I delete the tests?>",
    );
    expect(&gk, "asked a question").await;
    let code = gk.exit_code().await;
    assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
    // Like a plain reject, a rejected question stops the agent loop: the
    // model is not called again.
    assert_eq!(llm.agent_requests().len(), 1, "{}", gk.screen());
    assert_no_opencode_left(&oc).await;
}

/// The request number shown for the request whose command is `command`.
pub(crate) fn number_of_request(screen: &str, command: &str) -> u32 {
    // Releases before 1.17 send no `metadata.command`: the patterns show.
    let at = screen
        .find(&format!("command: {command}"))
        .or_else(|| screen.find(&format!("patterns: {command}")))
        .unwrap_or_else(|| panic!("{command} not shown: {screen}"));
    let head = &screen[..at];
    let start = head
        .rfind("[#")
        .expect("a request header before the command")
        + 2;
    let end = start + head[start..].find(']').expect("closing bracket");
    head[start..end].parse().expect("request number")
}

#[test]
fn request_numbers_are_read_from_the_terminal_screen() {
    let screen = "[#1] approval needed: bash\n  command: touch a\n[#2] approval needed: bash\n  command: touch b\n";
    assert_eq!(number_of_request(screen, "touch b"), 2);
    assert_eq!(number_of_request(screen, "touch a"), 1);
}

// ---------------------------------------------------------------------------
// gatekeep against the real OpenCode, approvals in the fake Discord (no
// terminal, as in CI).

mod discord {
    use std::time::Duration;

    use nix::sys::signal::Signal;
    use serde_json::{json, Value};

    use super::assert_no_opencode_left;
    use crate::support::fake_discord::{FakeDiscord, StoredMessage};
    use crate::support::fake_llm::FakeLlm;
    use crate::support::gatekeep::Gatekeep;
    use crate::support::real_opencode::{slot, Options, RealOpencode};
    use crate::support::scenario::{admin, button};

    const CHANNEL: u64 = 700;
    const TOKEN: &str = "fake-e2e-bot-token-Qm4x";
    /// OpenCode start-up, an LLM round trip and Discord posting included.
    const WAIT: Duration = Duration::from_secs(45);

    /// gatekeep with Discord approvals, no terminal.
    fn gatekeep(
        oc: &RealOpencode,
        discord: &FakeDiscord,
        args: &[&str],
        message: &str,
    ) -> Gatekeep {
        let dir = oc.dir().to_str().expect("utf-8 workspace");
        let channel = CHANNEL.to_string();
        let base = discord.base();
        let mut all = vec![
            "--dir",
            dir,
            "--channel",
            &channel,
            "--discord-api-url",
            &base,
        ];
        all.extend_from_slice(args);
        let model = RealOpencode::model();
        let tail = ["run", "-m", model.as_str(), message];
        let mut env = oc.env_pairs();
        env.push(("DISCORD_TOKEN", TOKEN));
        Gatekeep::detached(&all, oc.bin(), &tail, &env)
    }

    /// The approval message in the run's thread that mentions `needle`.
    async fn request(discord: &FakeDiscord, needle: &str) -> StoredMessage {
        let thread = discord.wait_thread(WAIT).await;
        discord.wait_message(thread, needle, WAIT).await
    }

    async fn click(discord: &FakeDiscord, msg: &StoredMessage, label: &str) -> Value {
        let (id, _) = discord.click(msg.id, &button(msg, label), &admin(), msg.channel_id);
        discord.wait_ack(id, WAIT).await.0
    }

    /// Waits until the message's buttons are gone; its final JSON.
    async fn settled(discord: &FakeDiscord, msg: &StoredMessage) -> String {
        discord
            .wait_until("the final state of the request", WAIT, |f| {
                let m = f.message(msg.id)?;
                (m.payload["components"] == json!([])).then(|| m.payload.to_string())
            })
            .await
    }

    async fn exit_code(gk: &mut Gatekeep, discord: &FakeDiscord) -> i32 {
        let code = gk.exit_code().await;
        assert!(!gk.screen().contains(TOKEN), "the bot token was printed");
        assert!(
            discord
                .requests()
                .iter()
                .all(|r| !r.body.to_string().contains(TOKEN)),
            "the bot token was sent in a body"
        );
        code
    }

    #[tokio::test]
    async fn approve_in_discord_runs_the_command() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(&oc, &discord, &[], "BASH<touch approved.txt>");
        let msg = request(&discord, "touch approved.txt").await;
        assert!(!oc.dir().join("approved.txt").exists());
        click(&discord, &msg, "Approve").await;
        assert!(settled(&discord, &msg)
            .await
            .contains("Approved by <@4242>"));
        assert_eq!(exit_code(&mut gk, &discord).await, 0, "{}", gk.screen());
        assert!(oc.dir().join("approved.txt").exists());
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn deny_with_reason_in_discord_reaches_the_model() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(&oc, &discord, &[], "BASH<touch denied.txt>");
        let msg = request(&discord, "touch denied.txt").await;
        let ack = click(&discord, &msg, "Deny with reason…").await;
        let modal = ack["data"]["custom_id"]
            .as_str()
            .expect("a modal")
            .to_owned();
        let (id, _) = discord.submit_modal(&modal, "not on a Friday", &admin(), msg.channel_id);
        discord.wait_ack(id, WAIT).await;
        settled(&discord, &msg).await;
        assert_eq!(exit_code(&mut gk, &discord).await, 0, "{}", gk.screen());
        assert!(!oc.dir().join("denied.txt").exists());
        assert!(
            llm.tool_results()
                .iter()
                .any(|t| t.contains("not on a Friday")),
            "reason not in the model's next request: {:?}",
            llm.tool_results()
        );
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn three_parallel_calls_one_denied_in_discord_none_ran() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(
            &oc,
            &discord,
            &[],
            "BASH<touch p1> BASH<touch p2> BASH<touch p3>",
        );
        let msgs = [
            request(&discord, "touch p1").await,
            request(&discord, "touch p2").await,
            request(&discord, "touch p3").await,
        ];
        click(&discord, &msgs[1], "Deny").await;
        for msg in &msgs {
            let final_state = settled(&discord, msg).await;
            assert!(final_state.contains("enied"), "not denied: {final_state}");
        }
        let code = exit_code(&mut gk, &discord).await;
        assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
        for f in ["p1", "p2", "p3"] {
            assert!(!oc.dir().join(f).exists(), "{f} ran");
        }
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn subagent_request_in_discord_is_labelled() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(&oc, &discord, &[], "TASK<BASH[touch by_sub.txt]>");
        let msg = request(&discord, "touch by_sub.txt").await;
        let shown = msg.payload.to_string();
        assert!(
            shown.contains("subagent: "),
            "not labelled as a subagent's: {shown}"
        );
        click(&discord, &msg, "Approve").await;
        assert_eq!(exit_code(&mut gk, &discord).await, 0, "{}", gk.screen());
        assert!(oc.dir().join("by_sub.txt").exists());
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn edit_request_in_discord_shows_its_diff() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let path = oc.dir().join("notes.txt");
        std::fs::write(&path, "line one\nline two\n").expect("seed the file");
        let message = format!("EDIT<{}|line two|line 2>", path.display());
        let mut gk = gatekeep(&oc, &discord, &[], &message);
        let msg = request(&discord, "notes.txt").await;
        // The diff is in the embed, or in an attached file when long.
        let path_part = format!("/channels/{}/messages", msg.channel_id);
        let mut shown = String::new();
        for r in discord.requests() {
            if r.path.contains(&path_part) {
                shown.push_str(&r.body.to_string());
                for (_, _, content) in &r.files {
                    shown.push_str(&String::from_utf8_lossy(content));
                }
            }
        }
        assert!(
            shown.contains("+line 2") && shown.contains("-line two"),
            "no diff: {shown}"
        );
        click(&discord, &msg, "Deny").await;
        assert_eq!(exit_code(&mut gk, &discord).await, 0, "{}", gk.screen());
        assert_eq!(
            std::fs::read_to_string(&path).expect("file"),
            "line one\nline two\n"
        );
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn gate_bash_in_discord_gates_root_and_subagent_where_config_allows() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let allow = Options {
            permission: json!({ "bash": "allow" }),
            ..Options::default()
        };
        let Some(oc) = RealOpencode::with(&llm, allow) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(
            &oc,
            &discord,
            &["--gate", "bash"],
            "BASH<touch root.txt> TASK<BASH[touch sub.txt]>",
        );
        let root = request(&discord, "touch root.txt").await;
        let sub = request(&discord, "touch sub.txt").await;
        assert!(!oc.dir().join("root.txt").exists() && !oc.dir().join("sub.txt").exists());
        click(&discord, &root, "Approve").await;
        click(&discord, &sub, "Approve").await;
        assert_eq!(exit_code(&mut gk, &discord).await, 0, "{}", gk.screen());
        assert!(oc.dir().join("root.txt").exists() && oc.dir().join("sub.txt").exists());
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn unanswered_request_in_discord_expires_at_its_deadline() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(
            &oc,
            &discord,
            &["--approval-timeout", "2s"],
            "BASH<touch late.txt>",
        );
        let msg = request(&discord, "touch late.txt").await;
        let final_state = settled(&discord, &msg).await;
        assert!(
            final_state.to_lowercase().contains("expired"),
            "{final_state}"
        );
        let code = exit_code(&mut gk, &discord).await;
        assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
        assert!(!oc.dir().join("late.txt").exists());
        assert!(
            llm.tool_results()
                .iter()
                .any(|t| t.contains("approval deadline")),
            "the model was not told why: {:?}",
            llm.tool_results()
        );
        assert_no_opencode_left(&oc).await;
    }

    #[tokio::test]
    async fn sigterm_while_pending_in_discord_exits_143_and_nothing_ran() {
        let _slot = slot();
        let llm = FakeLlm::start();
        let Some(oc) = RealOpencode::workspace(&llm) else {
            return;
        };
        let discord = FakeDiscord::start().await;
        let mut gk = gatekeep(&oc, &discord, &[], "BASH<touch never.txt>");
        let msg = request(&discord, "touch never.txt").await;
        gk.signal(Signal::SIGTERM);
        assert_eq!(exit_code(&mut gk, &discord).await, 143, "{}", gk.screen());
        let final_state = settled(&discord, &msg).await;
        assert!(final_state.contains("terminated"), "{final_state}");
        assert!(!oc.dir().join("never.txt").exists());
        assert_no_opencode_left(&oc).await;
    }
}

/// Where the tests look for OpenCode, and what they do when it is missing.
#[test]
fn opencode_lookup_skips_locally_and_fails_under_ci() {
    use crate::support::real_opencode::{lookup, Lookup};
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing/opencode");
    let present = dir.path().join("opencode");
    std::fs::write(&present, "").expect("a file");

    assert_eq!(lookup(None, &missing, false), Lookup::Skip);
    assert!(
        matches!(lookup(None, &missing, true), Lookup::Fail(why) if why.contains("scripts/install-opencode"))
    );
    assert_eq!(lookup(None, &present, true), Lookup::Found(present.clone()));
    assert_eq!(
        lookup(Some(present.clone().into()), &missing, true),
        Lookup::Found(present.clone())
    );
    // A wrong OPENCODE_BIN fails even outside CI rather than skipping.
    assert!(matches!(
        lookup(Some(missing.clone().into()), &present, false),
        Lookup::Fail(_)
    ));
    // An empty one is ignored.
    assert_eq!(
        lookup(Some("".into()), &present, false),
        Lookup::Found(present)
    );
}

/// What an approved command tries in order to answer the agent's next
/// request itself, every route the agent's processes have: OpenCode's
/// password from its own environment and from `/proc/<opencode>/environ`,
/// gatekeep's environment (the bot token), gatekeep's local socket, and a
/// daemonised helper (`setsid`, double fork) trying the same a few seconds
/// later. With a password it approves request #2 over OpenCode's API.
const PROBE: &str = r#"
GK="$1"
p=$$
while [ "$p" -gt 1 ]; do
  case "$(cat /proc/$p/comm)" in
    opencode*) oc=$p ;;
    gatekeep) gk=$p ;;
  esac
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
echo "$oc $gk" > found.txt
env > env.txt
tr '\0' '\n' < /proc/$oc/environ > oc-environ.txt 2>&1
tr '\0' '\n' < /proc/$gk/environ > gk-environ.txt 2>&1
"$GK" pending > pending.txt 2>&1
approve_with() {
  pw="$1"; [ -n "$pw" ] || return 0
  port=$(tr '\0' '\n' < /proc/$oc/cmdline | grep -A1 -- --port | tail -n 1)
  auth=$(printf 'opencode:%s' "$pw" | base64 -w0)
  for id in $(exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /permission?directory=%s HTTP/1.0\r\nAuthorization: Basic %s\r\n\r\n' "$PWD" "$auth" >&3; cat <&3 | grep -o 'per_[A-Za-z0-9]*' | sort -u); do
    body='{"reply":"once"}'
    exec 4<>/dev/tcp/127.0.0.1/$port
    printf 'POST /permission/%s/reply?directory=%s HTTP/1.0\r\nAuthorization: Basic %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$id" "$PWD" "$auth" "${#body}" "$body" >&4
    cat <&4 >> intruded.txt
  done
}
approve_with "$OPENCODE_SERVER_PASSWORD"
approve_with "$(grep '^OPENCODE_SERVER_PASSWORD=' oc-environ.txt | cut -d= -f2-)"
late() {
  sleep 2
  "$GK" pending > late-pending.txt 2>&1
  dir="${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/gatekeep}"
  for sock in "${dir:-/tmp/gatekeep-$(id -u)}"/*.sock; do
    "$GK" approve 2 --run "$(basename "$sock" .sock)" >> late-approve.txt 2>&1
  done
}
export -f late; export GK
setsid bash -c '( late ) &' 
exit 0
"#;

/// The first start after installing or upgrading OpenCode: several runs
/// at once under one fresh HOME race on OpenCode's database migration
/// (measured: 3 of 8 `opencode serve` exited with a failed `CREATE TABLE`;
/// without the retry this test failed the same way).
/// None of them may fail for it.
#[tokio::test]
async fn gatekeep_eight_runs_at_once_on_a_fresh_home_all_start() {
    // Eight servers at once: every slot, so no other real OpenCode test
    // competes for the two cores meanwhile.
    let _slots = (slot(), slot());
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    assert!(
        !oc.home().join(".local/share/opencode/opencode.db").exists(),
        "the HOME is not fresh"
    );
    let mut runs: Vec<Gatekeep> = (0..8)
        .map(|i| gatekeep(&oc, &[], &format!("just say hello, run {i}")))
        .collect();
    for (i, run) in runs.iter_mut().enumerate() {
        // Eight OpenCode start-ups share two cores.
        let code = run.exit_code_within(Duration::from_secs(120)).await;
        assert_eq!(code, 0, "run {i}:\n{}", run.screen());
        assert!(
            run.stdout().contains("nothing to do"),
            "run {i}: {}",
            run.stdout()
        );
    }
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_the_agent_cannot_answer_its_own_requests_even_outside_the_box() {
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    std::fs::write(oc.dir().join("probe.sh"), PROBE).expect("probe");
    let token = "Mzk3NTEyMzQ1Njc4OTAxMjM0.GkTest.a-token-the-agent-must-not-see";
    let dir = oc.dir().to_str().expect("utf-8 workspace");
    let model = RealOpencode::model();
    let message = format!(
        "BASH<bash probe.sh {}> BASH<touch second.txt>",
        env!("CARGO_BIN_EXE_gatekeep")
    );
    let tail = ["run", "-m", model.as_str(), message.as_str()];
    let mut env = oc.env_pairs();
    env.push(("DISCORD_TOKEN", token));
    // Outside the box: what holds even there (the box hides all of it).
    let mut gk = Gatekeep::at_terminal(&["--dir", dir, "--no-isolate"], oc.bin(), &tail, &env);
    expect(&gk, "touch second.txt").await;
    gk.type_line("1 a");
    // The probe and its daemon have had their chance.
    expect(&gk, "✓ bash").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let read = |f: &str| std::fs::read_to_string(oc.dir().join(f)).unwrap_or_default();
    let found: Vec<String> = read("found.txt")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        found.len(),
        2,
        "the probe did not find OpenCode and gatekeep: {found:?}"
    );
    assert!(
        !oc.dir().join("second.txt").exists(),
        "the second command ran without a human"
    );
    assert!(
        !gk.screen().contains("something other than gatekeep"),
        "an approval got through: {}",
        gk.screen()
    );
    let secret_lines = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("OPENCODE_SERVER_PASSWORD=") && l.len() > 25)
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        secret_lines(&read("env.txt")),
        Vec::<String>::new(),
        "password in the tools' environment"
    );
    assert_eq!(
        secret_lines(&read("oc-environ.txt")),
        Vec::<String>::new(),
        "password in /proc/<opencode>/environ"
    );
    for f in ["env.txt", "oc-environ.txt", "gk-environ.txt"] {
        assert!(!read(f).contains(token), "the bot token is readable in {f}");
    }
    // Other tests' runs may be live too: with several, `pending` lists
    // none of them and the helper tries to approve in every one.
    assert!(
        read("pending.txt").contains("cannot see or answer requests"),
        "{}",
        read("pending.txt")
    );
    let late = read("late-approve.txt");
    assert!(late.contains("cannot see or answer requests"), "{late}");
    // Another test's run may end between the listing and the attempt:
    // then there is nothing to approve in it either.
    assert!(
        late.lines()
            .all(|l| l.contains("cannot see or answer requests")
                || l.contains("no live gatekeep run with id")),
        "a late attempt was not refused: {late}"
    );
    assert!(read("intruded.txt").is_empty(), "{}", read("intruded.txt"));
    // A human decides the second request.
    gk.type_line("d");
    let code = gk.exit_code().await;
    assert!(code == 0 || code == 1, "exit {code}: {}", gk.screen());
    assert!(!oc.dir().join("second.txt").exists());
    assert_no_opencode_left(&oc).await;
}

#[tokio::test]
async fn gatekeep_isolate_hides_gatekeep_and_its_socket_from_the_agent() {
    if let Err(why) = gatekeep::platform::sandbox() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "--isolate cannot be tested here: {why} (scripts/test installs it)"
        );
        eprintln!("SKIPPED gatekeep_isolate_hides_gatekeep_and_its_socket_from_the_agent: {why}");
        return;
    }
    let _slot = slot();
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        return;
    };
    std::fs::write(oc.dir().join("probe.sh"), PROBE).expect("probe");
    // Wherever the build lives (a clone under /tmp is private in the box),
    // the probe finds a gatekeep in the workspace.
    let bin = oc.dir().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::fs::copy(env!("CARGO_BIN_EXE_gatekeep"), bin.join("gatekeep")).expect("gatekeep copy");
    let dir = oc.dir().to_str().expect("utf-8 workspace");
    let model = RealOpencode::model();
    let message = format!("BASH<bash probe.sh {}>", bin.join("gatekeep").display());
    let tail = ["run", "-m", model.as_str(), message.as_str()];
    let mut gk = Gatekeep::at_terminal(
        &["--dir", dir, "--isolate"],
        oc.bin(),
        &tail,
        &oc.env_pairs(),
    );
    expect(&gk, "bash probe.sh").await;
    gk.type_line("a");
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    let read = |f: &str| std::fs::read_to_string(oc.dir().join(f)).unwrap_or_default();
    // Inside the sandbox the agent's ancestry ends at OpenCode: gatekeep is
    // not a process it can see, and neither is its socket.
    let found: Vec<String> = read("found.txt")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(found.len(), 1, "the probe saw: {found:?}");
    assert!(
        read("pending.txt").contains("no gatekeep run is live"),
        "{}",
        read("pending.txt")
    );
    assert!(read("intruded.txt").is_empty(), "{}", read("intruded.txt"));
    assert_no_opencode_left(&oc).await;
}
