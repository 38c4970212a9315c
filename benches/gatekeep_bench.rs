//! How fast and how light gatekeep is (issue 7): the real release binary
//! against the test fakes on loopback, in Discord channel mode.
//!
//!     cargo bench --bench gatekeep_bench
//!
//! prints a table and writes `target/bench/gatekeep-bench.json` (or the path
//! in `GATEKEEP_BENCH_JSON`). `GATEKEEP_BENCH_QUICK=1` runs a tenth of the
//! samples (a smoke run); `GATEKEEP_BENCH_ONLY=startup|approvals|attach|
//! pending|fleet|real|whole|idle` runs one part. Nothing here asserts a timing: the targets are
//! printed beside the figures.
//!
//! What is measured (every time stamp is taken by the fake that saw the
//! traffic, so the bench's own waiting adds nothing):
//!
//! 1. `permission.asked` emitted by the fake OpenCode → the approval
//!    message received by the fake Discord, one request at a time.
//! 2. A click dispatched on the fake gateway → the reply received by the
//!    fake OpenCode.
//! 3. A flood of `message.part.delta` events: events per second (until a
//!    request sent after the flood reaches Discord) and gatekeep's CPU time
//!    per event (`/proc/<pid>/stat` utime + stime).
//! 4. gatekeep's peak RSS (`VmHWM`) with 100 requests pending at once.
//! 5. Start-up overhead: gatekeep's spawn → prompt received, minus the time
//!    the OpenCode executable alone needs to print its listening line.
//! 6. Fail-close: SIGTERM → every pending request rejected, the server's
//!    processes gone and gatekeep exited.
//! 8. The whole run, as a user feels it: `opencode run` alone, `opencode
//!    serve` driven directly over HTTP (the floor of any supervisor that
//!    answers permissions) and `gatekeep run -- opencode run`, with the same
//!    text-only prompt, the pinned OpenCode and the scripted model, rotating,
//!    each in a fresh HOME; wall time (spawn → exit) and CPU time of the
//!    whole process tree (`cutime + cstime` of this process after each
//!    wait), medians and their ratios, and the median of each round's
//!    ratio; gatekeep's own CPU as it reports it with `-v`. And the size of
//!    the release binary.
//! 9. A long wait: gatekeep's CPU share and RSS over a minute with one
//!    request pending, with and without a terminal.
//! 7. A fleet on one host and one bot (fake Discord enforcing one IDENTIFY
//!    per 5 s): N runs started at once, time until every run's request is
//!    posted and IDENTIFYs spent, each run with its own session and with a
//!    `gatekeep hub`; the hub's peak RSS.
//!
//! With the real OpenCode (`target/opencode/bin/opencode` or `OPENCODE_BIN`,
//! see `scripts/install-opencode`), 5 and 6 are measured again (5 also for
//! a minimal client of `opencode serve`, the floor; the fake Discord takes
//! [`DISCORD_RTT`] to answer), and the OpenCode client (`opencode run
//! --attach`) is run against the same flood.
//!
//! `cargo test --all-targets` builds this target in test mode and runs it
//! without `--bench`: it then prints how to run it and exits at once.

// Counts and ticks are far below 2^52: converting them to f64 is exact.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

// The integration tests' fakes and harness, shared rather than copied. Their
// own unit tests (imports included) only build in the test binary.
#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports, clippy::wildcard_imports)]
mod support;

use support::fake_discord::{FakeDiscord, Member, Recorded};
use support::fake_llm::FakeLlm;
use support::fake_opencode::{process_alive, FakeOpenCode, ReplyRecord};
use support::gatekeep::Gatekeep;
use support::real_opencode::{processes_mentioning, RealOpencode};

const CHANNEL: u64 = 500;
const TOKEN: &str = "gk-bench-token-3b8e1d";
const MANAGE_CHANNELS: u64 = 1 << 4;
const TAIL: &[&str] = &["run", "-m", "fake/model", "benchmark", "the", "supervisor"];
const WAIT: Duration = Duration::from_secs(30);
/// How long the fake Discord takes to answer each REST call in the runs
/// with the real OpenCode: about a round trip to Discord's API from a
/// cloud host, so that what waits for Discord shows as it would.
const DISCORD_RTT: Duration = Duration::from_millis(100);
/// Empty proxy variables: a proxy must never capture loopback traffic.
const NO_PROXY: &[(&str, &str)] = &[
    ("HTTP_PROXY", ""),
    ("HTTPS_PROXY", ""),
    ("ALL_PROXY", ""),
    ("http_proxy", ""),
    ("https_proxy", ""),
    ("all_proxy", ""),
];

/// How many samples of each kind.
struct Sizes {
    approvals: usize,
    warmup: usize,
    flood: usize,
    pending: usize,
    startups: usize,
    real_runs: usize,
    fleets: Vec<usize>,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::var("GATEKEEP_BENCH_QUICK").is_ok_and(|v| v == "1");
        let div = if quick { 10 } else { 1 };
        Self {
            approvals: 1_000 / div,
            warmup: 20,
            flood: 100_000 / div,
            pending: 100,
            startups: 20 / div.min(4),
            real_runs: if quick { 1 } else { 3 },
            fleets: if quick { vec![5] } else { vec![5, 10, 20] },
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("gatekeep_bench: run it with `cargo bench --bench gatekeep_bench` (skipped)");
        return;
    }
    let sizes = Sizes::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime");
    let mut report = Report::default();
    // `GATEKEEP_BENCH_ONLY=fleet` (say) runs one part.
    let only = std::env::var("GATEKEEP_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    rt.block_on(async {
        if part("startup") {
            startup_with_fake(&sizes, &mut report).await;
        }
        if part("approvals") {
            approvals_and_flood(&sizes, &mut report).await;
        }
        if part("attach") {
            attach_client_flood(&sizes, &mut report).await;
        }
        if part("pending") {
            pending_and_fail_close(&sizes, &mut report).await;
        }
        if part("fleet") {
            fleets(&sizes, &mut report).await;
        }
        if part("real") {
            with_real_opencode(&sizes, &mut report).await;
        }
        if part("idle") {
            idle(&sizes, &mut report).await;
        }
        if part("whole") {
            whole_run(&sizes, &mut report).await;
        }
    });
    report.print_and_write();
}

// ---- the runs -----------------------------------------------------------------

/// One supervised run: the release binary, detached, against both fakes.
struct Run {
    opencode: FakeOpenCode,
    discord: FakeDiscord,
    gk: Gatekeep,
    spawned: Instant,
    root: String,
    thread: u64,
    /// Prompt received by the fake, since `spawned`.
    to_prompt: Duration,
}

impl Run {
    async fn start() -> Self {
        let opencode = FakeOpenCode::start();
        let discord = FakeDiscord::start().await;
        let base = discord.base();
        let channel = CHANNEL.to_string();
        let workspace = opencode.workspace().to_str().expect("utf-8").to_owned();
        let args = [
            "--channel",
            &channel,
            "--discord-api-url",
            &base,
            "--dir",
            &workspace,
        ];
        let mut envs = vec![("DISCORD_TOKEN", TOKEN)];
        envs.extend_from_slice(NO_PROXY);
        let spawned = Instant::now();
        let gk = Gatekeep::detached(&args, opencode.program(), TAIL, &envs);
        let prompt = opencode.wait_for_prompt().await;
        let thread = discord.wait_thread(WAIT).await;
        Self {
            to_prompt: prompt.at.duration_since(spawned),
            root: prompt.session_id,
            opencode,
            discord,
            gk,
            spawned,
            thread,
        }
    }

    /// The run ends well; waits for gatekeep's exit.
    async fn finish(mut self) {
        self.opencode.finish_session(&self.root);
        let code = self.gk.exit_code().await;
        assert_eq!(code, 0, "gatekeep failed:\n{}", self.gk.screen());
        let _ = self.spawned;
    }
}

/// Waits for the first request from index `from` that satisfies `pred`;
/// returns it and the index after it.
async fn next_request(
    discord: &FakeDiscord,
    from: usize,
    what: &str,
    pred: impl Fn(&Recorded) -> bool,
) -> (Recorded, usize) {
    discord
        .wait_until(what, WAIT, |d| {
            d.requests_from(from)
                .into_iter()
                .enumerate()
                .find(|(_, r)| pred(r))
                .map(|(i, r)| (r, from + i + 1))
        })
        .await
}

/// Waits for reply number `index` (0-based) received by the fake OpenCode.
async fn reply_at(opencode: &FakeOpenCode, index: usize) -> ReplyRecord {
    opencode
        .wait_until("a permission reply", WAIT, |f| {
            f.replies_from(index).into_iter().next()
        })
        .await
}

/// The `custom_id` of the button labelled `label` in a message payload.
fn button(payload: &Value, label: &str) -> String {
    payload["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .find(|b| b["label"] == label)
        .and_then(|b| b["custom_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no button {label:?} in {payload}"))
}

fn admin() -> Member {
    Member::new(4242).permissions(MANAGE_CHANNELS)
}

/// (5) with the fake: gatekeep's spawn → prompt, and the fake's own
/// readiness measured the same way without gatekeep.
async fn startup_with_fake(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: start-up with the fake OpenCode ({} runs)",
        sizes.startups
    );
    let mut to_prompt = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..sizes.startups {
        let fake = FakeOpenCode::start();
        alone.push(serve_alone(fake.program(), fake.workspace(), &[]).ready);
        let run = Run::start().await;
        to_prompt.push(run.to_prompt);
        run.finish().await;
    }
    let to_prompt = Stats::of(to_prompt);
    let alone = Stats::of(alone);
    report.add(
        "5",
        "start-up overhead, fake OpenCode (spawn → prompt − ready)",
        format!("{} ms", ms(to_prompt.p50.saturating_sub(alone.p50))),
        "≤ 50 ms",
        json!({
            "spawn_to_prompt": to_prompt.json(), "opencode_alone_ready": alone.json(),
            "overhead_p50_ms": ms_f(to_prompt.p50.saturating_sub(alone.p50)),
        }),
        Some(to_prompt.p50.saturating_sub(alone.p50) <= Duration::from_millis(50)),
    );
}

/// (7) N runs on one host, one bot: until every request is posted.
async fn fleets(sizes: &Sizes, report: &mut Report) {
    for &n in &sizes.fleets {
        for hub in [false, true] {
            eprintln!(
                "bench: a fleet of {n} runs ({})",
                if hub { "hub" } else { "own sessions" }
            );
            let (all_posted, identifies, invalid, hub_rss) = fleet(n, hub).await;
            let what = format!(
                "fleet of {n}: all requests posted, {}",
                if hub { "with a hub" } else { "a session each" }
            );
            let mut value = format!(
                "{:.1} s, {identifies} IDENTIFY, {invalid} opcode 9",
                all_posted.as_secs_f64()
            );
            if let Some(rss) = hub_rss {
                let _ = write!(value, ", hub peak RSS {}", mb(Some(rss)));
            }
            report.add(
                "7",
                &what,
                value,
                if hub { "1 IDENTIFY" } else { "no opcode 9" },
                json!({ "runs": n, "hub": hub, "all_posted_s": all_posted.as_secs_f64(),
                        "identifies": identifies, "opcode_9": invalid, "hub_peak_rss_kb": hub_rss }),
                Some(invalid == 0 && (!hub || identifies == 1)),
            );
        }
    }
}

/// One fleet: (spawn → the last request posted, IDENTIFYs, opcode 9s, the
/// hub's peak RSS).
async fn fleet(n: usize, with_hub: bool) -> (Duration, u32, u32, Option<u64>) {
    let host = tempfile::tempdir().expect("state dir");
    std::fs::set_permissions(
        host.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let discord = FakeDiscord::start().await;
    discord.enforce_identify_spacing();
    let base = discord.base();
    let channel = CHANNEL.to_string();
    let state = host.path().to_str().expect("utf-8").to_owned();
    let mut envs = vec![
        ("DISCORD_TOKEN", TOKEN),
        ("XDG_RUNTIME_DIR", state.as_str()),
    ];
    envs.extend_from_slice(NO_PROXY);
    let hub = with_hub.then(|| Gatekeep::command(&["hub", "--discord-api-url", &base], &envs));
    if let Some(hub) = &hub {
        hub.expect("ready").await;
    }
    let ocs: Vec<FakeOpenCode> = (0..n).map(|_| FakeOpenCode::start()).collect();
    let spawned = Instant::now();
    let mut runs: Vec<Gatekeep> = ocs
        .iter()
        .map(|oc| {
            let workspace = oc.workspace().to_str().expect("utf-8").to_owned();
            let args = [
                "--channel",
                &channel,
                "--discord-api-url",
                &base,
                "--dir",
                &workspace,
            ];
            Gatekeep::detached(&args, oc.program(), TAIL, &envs)
        })
        .collect();
    let mut last = spawned;
    for (i, oc) in ocs.iter().enumerate() {
        let root = oc
            .wait_until("the prompt", Duration::from_secs(300), |f| {
                f.prompts().into_iter().find(|p| p.streams_open > 0)
            })
            .await
            .session_id;
        let subject = format!("echo fleet member {i}");
        oc.ask_permission(&root, "bash", &subject);
        let posted = discord
            .wait_until("the request", WAIT, |d| {
                d.requests()
                    .into_iter()
                    .find(|r| r.method == "POST" && r.body.to_string().contains(&subject))
            })
            .await;
        last = last.max(posted.at);
        oc.finish_session(&root);
    }
    for run in &mut runs {
        let _ = run.exit_code().await;
    }
    let hub_rss = hub.as_ref().and_then(|h| vm_hwm(h.pid()));
    if let Some(hub) = &hub {
        hub.signal(Signal::SIGTERM);
    }
    (
        last.duration_since(spawned),
        discord.identifies(),
        discord.invalid_sessions(),
        hub_rss,
    )
}

/// What `opencode serve` alone takes.
struct Alone {
    /// Spawn → listening line.
    ready: Duration,
    /// SIGTERM → its process group gone.
    gone: Duration,
}

/// Spawns `program serve …` alone and times it (see [`Alone`]).
fn serve_alone(program: &Path, dir: &Path, envs: &[(&str, &str)]) -> Alone {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt as _;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let mut child = Command::new(program)
        .args([
            "serve",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .current_dir(dir)
        .envs(envs.iter().copied())
        .env("OPENCODE_SERVER_PASSWORD", "bench-alone")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the OpenCode executable");
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    let stdout = child.stdout.take().expect("stdout");
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.contains("server listening on") {
            ready = Some(started.elapsed());
            break;
        }
    }
    let ready = ready.expect("the OpenCode executable printed its listening line");
    let t0 = Instant::now();
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGTERM);
    let _ = child.wait();
    // Until no process of the group is left (killpg with no signal fails).
    while nix::sys::signal::killpg(pgid, None).is_ok() && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    let gone = t0.elapsed();
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
    Alone { ready, gone }
}

/// `opencode serve` alone, started as a minimal client starts a run: from
/// its listening line, `GET /agent` (its first answer for the workspace: the
/// real server sets a directory's instance up on first use) and `POST
/// /session` at once, then the prompt (`prompt_async`). Returns (first
/// answer, prompt accepted): the second is what any supervisor waits for,
/// since the prompt needs the session and the session the instance.
async fn minimal_start(oc: &RealOpencode) -> (Duration, Duration) {
    const PASSWORD: &str = "bench-minimal";
    let serve = oc.serve(PASSWORD);
    let t0 = Instant::now();
    let http = reqwest::Client::new();
    let first = async {
        let answer = http
            .get(format!("{}/agent", serve.base))
            .basic_auth("opencode", Some(PASSWORD))
            .send()
            .await
            .expect("GET /agent");
        assert!(
            answer.status().is_success(),
            "GET /agent: {}",
            answer.status()
        );
        t0.elapsed()
    };
    let session = async {
        let session: Value = http
            .post(format!("{}/session", serve.base))
            .basic_auth("opencode", Some(PASSWORD))
            .json(&json!({}))
            .send()
            .await
            .expect("create a session")
            .json()
            .await
            .expect("session json");
        session["id"].as_str().expect("session id").to_owned()
    };
    let (first, id) = tokio::join!(first, session);
    let model = RealOpencode::model();
    let (provider, model) = model.split_once('/').expect("provider/model");
    let accepted = http
        .post(format!("{}/session/{id}/prompt_async", serve.base))
        .basic_auth("opencode", Some(PASSWORD))
        .json(&json!({ "parts": [{ "type": "text", "text": TEXT_ONLY }],
                       "model": { "providerID": provider, "modelID": model } }))
        .send()
        .await
        .expect("prompt");
    assert!(
        accepted.status().is_success(),
        "prompt: {}",
        accepted.status()
    );
    let accepted = t0.elapsed();
    drop(serve);
    (first, accepted)
}

/// (1), (2) and (3) in one run.
async fn approvals_and_flood(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: {} approvals one at a time, then a flood of {} deltas",
        sizes.approvals, sizes.flood
    );
    let run = Run::start().await;
    let thread_messages = format!("/api/v10/channels/{}/messages", run.thread);
    let mut rest = 0;
    let mut asked = Vec::new();
    let mut clicked = Vec::new();
    for i in 0..sizes.warmup + sizes.approvals {
        let subject = format!("echo approval-{i}");
        let t_ask = Instant::now();
        run.opencode.ask_permission(&run.root, "bash", &subject);
        let (post, next) = next_request(&run.discord, rest, "the request's message", |r| {
            r.method == "POST" && r.path == thread_messages && r.body.to_string().contains(&subject)
        })
        .await;
        rest = next;
        let message_id = run
            .discord
            .newest_message_id(run.thread)
            .expect("the message is stored");
        let custom_id = button(&post.body, "Approve");
        let (interaction, _) = run
            .discord
            .click(message_id, &custom_id, &admin(), run.thread);
        let t_click = run
            .discord
            .dispatched_at(interaction)
            .expect("the click was dispatched");
        // One reply per request, in order.
        let reply = reply_at(&run.opencode, i).await;
        assert_eq!(reply.reply(), "once", "{:?}", reply.body);
        // The message's final edit: the outbox is idle before the next ask.
        let edited = format!("{thread_messages}/{message_id}");
        let (_, next) = next_request(&run.discord, rest, "the final edit", |r| {
            r.method == "PATCH" && r.path == edited
        })
        .await;
        rest = next;
        if i >= sizes.warmup {
            asked.push(post.at.duration_since(t_ask));
            clicked.push(reply.at.saturating_duration_since(t_click));
        }
    }
    let asked = Stats::of(asked);
    let clicked = Stats::of(clicked);
    report.add(
        "1",
        &format!(
            "permission.asked → Discord message, p50 / p99 (n={})",
            asked.n
        ),
        format!("{} / {} ms", ms(asked.p50), ms(asked.p99)),
        "≤ 2 / ≤ 10 ms",
        asked.json(),
        Some(asked.p50 <= Duration::from_millis(2) && asked.p99 <= Duration::from_millis(10)),
    );
    report.add(
        "2",
        &format!("click → reply at OpenCode, p50 / p99 (n={})", clicked.n),
        format!("{} / {} ms", ms(clicked.p50), ms(clicked.p99)),
        "≤ 2 / ≤ 10 ms",
        clicked.json(),
        Some(clicked.p50 <= Duration::from_millis(2) && clicked.p99 <= Duration::from_millis(10)),
    );

    flood(sizes, report, &run, rest).await;
    run.finish().await;
}

/// (3) with gatekeep, in the run of (1) and (2), then with the OpenCode
/// client.
async fn flood(sizes: &Sizes, report: &mut Report, run: &Run, rest: usize) {
    let pid = run.gk.pid();
    let thread_messages = format!("/api/v10/channels/{}/messages", run.thread);
    // Framed in advance so only sending is timed.
    let chunks = flood_chunks(&run.root, sizes.flood);
    let hwm_before = vm_hwm(pid);
    let cpu_before = cpu_time(pid);
    let t0 = Instant::now();
    for chunk in &chunks {
        run.opencode.emit_raw(chunk);
    }
    let subject = "echo after-the-flood";
    run.opencode.ask_permission(&run.root, "bash", subject);
    let (post, _) = next_request(&run.discord, rest, "the message after the flood", |r| {
        r.method == "POST" && r.path == thread_messages && r.body.to_string().contains(subject)
    })
    .await;
    let elapsed = post.at.duration_since(t0);
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let rate = sizes.flood as f64 / elapsed.as_secs_f64();
    let cpu_per_event_us = cpu.as_secs_f64() * 1e6 / sizes.flood as f64;
    let hwm_after_flood = vm_hwm(pid);
    let hwm_after_approvals = hwm_before;
    report.add(
        "3",
        &format!("ingest of {} message.part.delta: events/s", sizes.flood),
        format!("{rate:.0}"),
        "≥ 100000",
        json!({
            "events": sizes.flood, "elapsed_ms": ms_f(elapsed), "events_per_s": rate,
            "cpu_ms": ms_f(cpu), "cpu_us_per_event": cpu_per_event_us,
            "clock_ticks_per_s": clk_tck(),
        }),
        Some(rate >= 100_000.0),
    );
    report.add(
        "3",
        "  gatekeep CPU time per event",
        format!("{cpu_per_event_us:.2} µs"),
        "",
        json!({ "cpu_us_per_event": cpu_per_event_us }),
        None,
    );
    report.add(
        "4",
        "  gatekeep peak RSS after the approvals / after the flood",
        format!("{} / {}", mb(hwm_after_approvals), mb(hwm_after_flood)),
        "",
        json!({ "vm_hwm_kb_after_approvals": hwm_after_approvals, "vm_hwm_kb_after_flood": hwm_after_flood }),
        None,
    );
}

/// `n` deltas of the root session's text, in chunks of about 64 KiB.
fn flood_chunks(root: &str, n: usize) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut chunk = String::with_capacity(70_000);
    for i in 0..n {
        let event = json!({
            "id": format!("evt_flood{i:08}"),
            "type": "message.part.delta",
            "properties": {
                "sessionID": root, "messageID": "msg_flood0001", "partID": "prt_flood0001",
                "field": "text", "delta": format!(" token{i} of the streamed answer"),
            },
        });
        let _ = write!(chunk, "data: {event}\n\n");
        if chunk.len() >= 64 * 1024 {
            chunks.push(std::mem::take(&mut chunk).into_bytes());
            chunk.reserve(70_000);
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk.into_bytes());
    }
    chunks
}

/// (4) and (6) with the fake: 100 requests pending, peak RSS, SIGTERM.
async fn pending_and_fail_close(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: {} requests pending at once, then SIGTERM",
        sizes.pending
    );
    let mut run = Run::start().await;
    let pid = run.gk.pid();
    for i in 0..sizes.pending {
        run.opencode
            .ask_permission(&run.root, "bash", &format!("make target-{i}"));
    }
    // Every request is shown once Discord has been quiet for a while.
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = run.discord.requests_from(0).len();
        if now == seen {
            break;
        }
        seen = now;
    }
    let discord_calls = run.discord.requests_from(0).len();
    let hwm = vm_hwm(pid);
    let rss = vm_rss(pid);
    report.add(
        "4",
        &format!("peak RSS with {} requests pending", sizes.pending),
        mb(hwm),
        "≤ 25 MB",
        json!({ "vm_hwm_kb": hwm, "vm_rss_kb": rss, "pending": run.opencode.pending_count(),
                "discord_rest_calls_so_far": discord_calls }),
        Some(hwm.is_some_and(|kb| kb <= 25 * 1024)),
    );

    let server = run.opencode.script_pid().expect("the fake ran");
    let replies_before = run.opencode.replies_from(0).len();
    let t0 = Instant::now();
    run.gk.signal(Signal::SIGTERM);
    let mut server_gone = None;
    let mut exited = None;
    while (server_gone.is_none() || exited.is_none()) && t0.elapsed() < WAIT {
        if server_gone.is_none() && !process_alive(server) {
            server_gone = Some(t0.elapsed());
        }
        if exited.is_none() && !process_alive(pid) {
            exited = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rejects = run.opencode.replies_from(replies_before);
    let all_rejected = (run.opencode.pending_count() == 0)
        .then(|| rejects.iter().map(|r| r.at.duration_since(t0)).max())
        .flatten();
    let code = run.gk.exit_code().await;
    let done = all_rejected.zip(server_gone).map(|(a, b)| a.max(b));
    report.add(
        "6",
        &format!(
            "fail-close, fake OpenCode ({} pending): SIGTERM → all rejected and server gone",
            sizes.pending
        ),
        done.map_or_else(|| "never".to_owned(), |d| format!("{} ms", ms(d))),
        "≤ 1 s",
        json!({
            "all_rejected_ms": all_rejected.map(ms_f), "server_gone_ms": server_gone.map(ms_f),
            "gatekeep_exited_ms": exited.map(ms_f), "exit_code": code,
            "reject_calls": rejects.iter().filter(|r| r.reply() == "reject").count(),
        }),
        Some(done.is_some_and(|d| d <= Duration::from_secs(1))),
    );
    report.add(
        "6",
        "  gatekeep exited (final Discord messages sent)",
        exited.map_or_else(|| "never".to_owned(), |d| format!("{} ms", ms(d))),
        "",
        json!({ "gatekeep_exited_ms": exited.map(ms_f) }),
        None,
    );
}

/// (9) A long wait: one request pending, nothing happening, for a minute
/// (10 s quick); gatekeep's CPU share and RSS before and after, without a
/// terminal (Discord) and at one (the status line's countdown redraws every
/// second).
async fn idle(sizes: &Sizes, report: &mut Report) {
    let wait = if sizes.real_runs < 3 {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    };
    for at_terminal in [false, true] {
        // Without a terminal: the Discord channel mode of the other parts.
        let (gk, opencode, root, _discord) = if at_terminal {
            let opencode = FakeOpenCode::start();
            let workspace = opencode.workspace().to_str().expect("utf-8").to_owned();
            let gk =
                Gatekeep::at_terminal(&["--dir", &workspace], opencode.program(), TAIL, NO_PROXY);
            let root = opencode.wait_for_prompt().await.session_id;
            (gk, opencode, root, None)
        } else {
            let run = Run::start().await;
            (run.gk, run.opencode, run.root, Some(run.discord))
        };
        opencode.ask_permission(&root, "bash", "make deploy");
        // Shown, and the first redraws done.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = gk.pid();
        let (cpu0, rss0) = (cpu_time(pid), vm_rss(pid));
        tokio::time::sleep(wait).await;
        let (cpu1, rss1) = (cpu_time(pid), vm_rss(pid));
        let share = ms_f(cpu1.saturating_sub(cpu0)) / ms_f(wait) * 100.0;
        let place = if at_terminal {
            "at a terminal"
        } else {
            "without a terminal"
        };
        report.add(
            "9",
            &format!("idle, 1 request waiting {}s, {place}: CPU, RSS before → after", wait.as_secs()),
            format!("{share:.3} %, {} → {}", mb(rss0), mb(rss1)),
            "≤ 0.1 %, flat",
            json!({ "cpu_percent": share, "rss_before_kb": rss0, "rss_after_kb": rss1, "seconds": wait.as_secs() }),
            Some(share <= 0.1 && rss1 <= rss0.map(|kb| kb + 256)),
        );
        drop(gk);
    }
}

// ---- the real OpenCode ------------------------------------------------------------

/// (5) and (6) against the real OpenCode, when installed.
#[allow(clippy::too_many_lines)] // the samples, then their rows, read top to bottom
async fn with_real_opencode(sizes: &Sizes, report: &mut Report) {
    let llm = FakeLlm::start();
    if RealOpencode::workspace(&llm).is_none() {
        report.add(
            "5",
            "start-up overhead, real OpenCode",
            "skipped".into(),
            "",
            json!("not installed"),
            None,
        );
        report.add(
            "6",
            "fail-close, real OpenCode",
            "skipped".into(),
            "",
            json!("not installed"),
            None,
        );
        return;
    }
    // Start-up is judged on p50 of 10 (issue 16); the whole run has its own.
    let samples = if sizes.real_runs < 3 { 2 } else { 10 };
    eprintln!("bench: the real OpenCode ({samples} runs each)");
    let mut alone = Vec::new();
    let mut alone_first = Vec::new();
    let mut minimal = Vec::new();
    let mut alone_term = Vec::new();
    let mut to_started = Vec::new();
    let mut after_ready = Vec::new();
    let mut closes = Vec::new();
    for _ in 0..samples {
        let oc = RealOpencode::workspace(&llm).expect("installed");
        let a = serve_alone(oc.bin(), oc.dir(), &oc.env_pairs());
        alone.push(a.ready);
        alone_term.push(a.gone);
        drop(oc);
        let oc = RealOpencode::workspace(&llm).expect("installed");
        let (first, accepted) = minimal_start(&oc).await;
        alone_first.push(first);
        minimal.push(accepted);
        drop(oc);
        let oc = RealOpencode::workspace(&llm).expect("installed");
        let (started, ready_to_started, close) = real_run(&oc).await;
        to_started.push(started);
        after_ready.push(ready_to_started);
        closes.push(close);
    }
    let alone = Stats::of(alone);
    let alone_term = Stats::of(alone_term);
    let to_started = Stats::of(to_started);
    let after_ready = Stats::of(after_ready);
    let first = Stats::of(alone_first);
    let minimal = Stats::of(minimal);
    // Signed: the real server's own start-up varies by more than gatekeep
    // adds, so the subtraction is noise; the time gatekeep spends after
    // OpenCode's listening line is measured directly too.
    let overhead = ms_f(to_started.p50) - ms_f(alone.p50);
    report.add(
        "5",
        "start-up, real OpenCode: spawn → run started / serve alone ready (p50)",
        format!("{} / {} ms", ms(to_started.p50), ms(alone.p50)),
        "",
        json!({ "spawn_to_run_started": to_started.json(), "opencode_serve_alone_ready": alone.json(),
                "difference_p50_ms": overhead }),
        None,
    );
    for (what, stats) in [
        (
            "  gatekeep: listening line seen → prompt accepted",
            &after_ready,
        ),
        (
            "  serve alone: listening line → first answer for the workspace",
            &first,
        ),
        (
            "  serve alone, minimal client: listening line → prompt accepted",
            &minimal,
        ),
    ] {
        report.add(
            "5",
            &format!("{what} (p50 / max)"),
            format!("{} / {} ms", ms(stats.p50), ms(stats.max)),
            "",
            stats.json(),
            None,
        );
    }
    let overhead = ms_f(after_ready.p50) - ms_f(first.p50);
    report.add(
        "5",
        "start-up overhead, real OpenCode (gatekeep after listening − first answer, p50)",
        format!("{overhead:.0} ms"),
        "≤ 10 ms",
        json!({ "overhead_p50_ms": overhead, "samples": samples }),
        Some(overhead <= 10.0),
    );
    // The session and the prompt are two more of OpenCode's answers, one
    // after the other, that no client can start earlier: the floor.
    let own = ms_f(after_ready.p50) - ms_f(minimal.p50);
    report.add(
        "5",
        "  of which over a minimal client (gatekeep − minimal client, p50)",
        format!("{own:.0} ms"),
        "",
        json!({ "own_p50_ms": own, "samples": samples }),
        None,
    );
    report.add(
        "6",
        "  opencode serve alone: SIGTERM → process group gone (p50 / max)",
        format!("{} / {} ms", ms(alone_term.p50), ms(alone_term.max)),
        "",
        alone_term.json(),
        None,
    );
    let gone = Stats::of(closes.iter().map(|c| c.server_gone).collect());
    let exited = Stats::of(closes.iter().map(|c| c.exited).collect());
    report.add(
        "6",
        "fail-close, real OpenCode (1 pending): SIGTERM → rejected, server gone (p50 / max)",
        format!("{} / {} ms", ms(gone.p50), ms(gone.max)),
        "",
        Value::Array(closes.iter().map(Close::json).collect()),
        None,
    );
    report.add(
        "6",
        "  gatekeep exited, real OpenCode (p50 / max)",
        format!("{} / {} ms", ms(exited.p50), ms(exited.max)),
        "",
        exited.json(),
        None,
    );
    // The server's group gone is the teardown's last step but one (the
    // agent's leftovers); what follows is the final edits and the exit.
    let after = Stats::of(
        closes
            .iter()
            .map(|c| c.exited.saturating_sub(c.server_gone))
            .collect(),
    );
    report.add(
        "6",
        "  exit after the server is gone (p50 / max)",
        format!("{} / {} ms", ms(after.p50), ms(after.max)),
        "≤ 50 ms",
        after.json(),
        Some(after.p50 <= Duration::from_millis(50)),
    );
}

/// (8) The whole run with the real OpenCode, supervised and not.
async fn whole_run(sizes: &Sizes, report: &mut Report) {
    let size = std::fs::metadata(env!("CARGO_BIN_EXE_gatekeep")).map_or(0, |m| m.len());
    report.add(
        "8",
        "release binary (what `cargo install` builds)",
        format!("{:.1} MB", size as f64 / 1_048_576.0),
        "≤ 20 MB",
        json!({ "bytes": size }),
        Some(size <= 20 * 1_048_576),
    );
    let llm = FakeLlm::start();
    if RealOpencode::workspace(&llm).is_none() {
        report.add(
            "8",
            "whole run",
            "skipped".into(),
            "",
            json!("not installed"),
            None,
        );
        return;
    }
    // OpenCode's own run-to-run spread is wide and bimodal (a burst of
    // about a second of CPU lands before the turn in some runs and after it
    // in others), so a ratio near 1 needs many rounds to resolve.
    let rounds = if sizes.real_runs < 3 { 3 } else { 11 };
    eprintln!(
        "bench: the whole run: alone (twice), served and supervised ({rounds} rounds, rotating)"
    );
    let (runs, own_cpu) = rotate_ways(&llm, rounds).await;
    for (what, way) in [
        ("supervised / alone", Way::Supervised),
        ("alone again / alone (noise floor)", Way::AloneAgain),
    ] {
        let (wall, cpu) = paired_ratios(&runs, way);
        report.add(
            "8",
            &format!("whole run: {what}, median of the rounds' ratios (wall; CPU)"),
            format!("{wall:.3}; {cpu:.3}"),
            "",
            json!({ "wall": wall, "cpu": cpu, "rounds": rounds }),
            None,
        );
    }
    let mut medians = BTreeMap::new();
    for (way, (wall, cpu)) in runs {
        medians.insert(way, (Stats::of(wall), Stats::of(cpu)));
    }
    let (aw, ac) = &medians[&Way::Alone];
    let (sw, sc) = &medians[&Way::Served];
    let (gw, gc) = &medians[&Way::Supervised];
    let (nw, nc) = &medians[&Way::AloneAgain];
    let ratio = |a: &Stats, b: &Stats| ms_f(a.p50) / ms_f(b.p50);
    let mean_ratio = |a: &Stats, b: &Stats| ms_f(a.mean) / ms_f(b.mean);
    for (what, sup, base, target, met) in [
        (
            "wall, supervised / alone",
            gw,
            aw,
            "≤ 1.02",
            Some(ratio(gw, aw) <= 1.02),
        ),
        (
            "CPU, supervised / alone",
            gc,
            ac,
            "≤ 1.02",
            Some(ratio(gc, ac) <= 1.02),
        ),
        ("wall, supervised / served", gw, sw, "", None),
        ("CPU, supervised / served", gc, sc, "", None),
        ("wall, served / alone", sw, aw, "", None),
        ("CPU, served / alone", sc, ac, "", None),
        ("wall, alone again / alone (noise floor)", nw, aw, "", None),
        ("CPU, alone again / alone (noise floor)", nc, ac, "", None),
    ] {
        report.add(
            "8",
            &format!("whole run, text-only prompt: {what} (median; mean)"),
            format!(
                "{} / {} ms = {:.3}; {:.3}",
                ms(sup.p50),
                ms(base.p50),
                ratio(sup, base),
                mean_ratio(sup, base)
            ),
            target,
            json!({ "numerator": sup.json(), "denominator": base.json(),
                    "ratio": ratio(sup, base), "mean_ratio": mean_ratio(sup, base) }),
            met,
        );
    }
    let own = Stats::of(own_cpu);
    let share = ms_f(own.p50) / ms_f(gc.p50);
    report.add(
        "8",
        "whole run: gatekeep's own CPU (median) and its share of the supervised run's",
        format!("{} ms = {:.1} %", ms(own.p50), share * 100.0),
        "",
        json!({ "own_cpu": own.json(), "share": share }),
        None,
    );
}

/// `way` against `opencode run` alone, round by round: (wall, CPU), the
/// median of each round's ratio. Runs of one round ran next to each other,
/// so their ratios leave out most of the host's drift over the bench.
fn paired_ratios(runs: &WayRuns, way: Way) -> (f64, f64) {
    let ratios = |of: &[Duration], to: &[Duration]| {
        median_f(
            of.iter()
                .zip(to)
                .map(|(a, b)| ms_f(*a) / ms_f(*b))
                .collect(),
        )
    };
    let (of, to) = (&runs[&way], &runs[&Way::Alone]);
    (ratios(&of.0, &to.0), ratios(&of.1, &to.1))
}

/// The median of `values` (the mean of the middle two for an even count).
fn median_f(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

/// Every way once per round, the first way rotating so drift favours none:
/// (wall, CPU) of each run by way, and gatekeep's own CPU per supervised run.
async fn rotate_ways(llm: &FakeLlm, rounds: usize) -> (WayRuns, Vec<Duration>) {
    let mut runs = WayRuns::new();
    let mut own_cpu = Vec::new();
    for i in 0..rounds {
        for k in 0..Way::ALL.len() {
            let way = Way::ALL[(i + k) % Way::ALL.len()];
            let oc = RealOpencode::workspace(llm).expect("installed");
            let (wall, cpu) = match way {
                Way::Alone | Way::AloneAgain => alone_run(&oc),
                Way::Served => served_run(&oc).await,
                Way::Supervised => {
                    let (wall, cpu, own) = supervised_run(&oc).await;
                    own_cpu.push(own);
                    (wall, cpu)
                }
            };
            let entry = runs.entry(way).or_default();
            entry.0.push(wall);
            entry.1.push(cpu);
        }
    }
    (runs, own_cpu)
}

type WayRuns = BTreeMap<Way, (Vec<Duration>, Vec<Duration>)>;

/// The ways to run the same prompt: `opencode run` alone; `opencode serve`
/// driven directly over HTTP (what any supervisor that answers permissions
/// has to run, gatekeep's floor); `gatekeep run`; and `opencode run` alone a
/// second time, whose ratio to the first is what the method cannot tell
/// from 1 (the noise floor, measured in the same run).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    Alone,
    Served,
    Supervised,
    AloneAgain,
}

impl Way {
    const ALL: [Way; 4] = [Way::Alone, Way::Served, Way::Supervised, Way::AloneAgain];
}

const TEXT_ONLY: &str = "just say hello";

/// `opencode run` alone: (wall, CPU of its process tree).
fn alone_run(oc: &RealOpencode) -> (Duration, Duration) {
    let model = RealOpencode::model();
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let out = Command::new(oc.bin())
        .args(["run", "-m", model.as_str(), TEXT_ONLY])
        .current_dir(oc.dir())
        .envs(oc.env_pairs())
        // OpenCode takes the project from `PWD` when it is set.
        .env("PWD", oc.dir())
        .stdin(Stdio::null())
        .output()
        .expect("run opencode");
    let wall = t0.elapsed();
    assert!(
        out.status.success(),
        "opencode run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, children_cpu().saturating_sub(cpu0))
}

/// `opencode serve` started and driven directly: a session, the prompt
/// (its answer comes when the turn is over), SIGTERM to its process group.
async fn served_run(oc: &RealOpencode) -> (Duration, Duration) {
    const PASSWORD: &str = "bench-password";
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let serve = oc.serve(PASSWORD);
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{}{path}", serve.base))
            .basic_auth("opencode", Some(PASSWORD))
            .json(&body)
            .send()
    };
    let session: Value = post("/session".into(), json!({}))
        .await
        .expect("create a session")
        .json()
        .await
        .expect("session json");
    let id = session["id"].as_str().expect("session id").to_owned();
    let answer = post(
        format!("/session/{id}/message"),
        json!({ "parts": [{ "type": "text", "text": TEXT_ONLY }] }),
    )
    .await
    .expect("prompt");
    assert!(answer.status().is_success(), "prompt: {}", answer.status());
    drop(serve);
    (t0.elapsed(), children_cpu().saturating_sub(cpu0))
}

/// The same run under gatekeep (Discord channel mode, the fake Discord):
/// (wall, CPU of the tree, gatekeep's own CPU as it reports it with `-v`).
async fn supervised_run(oc: &RealOpencode) -> (Duration, Duration, Duration) {
    let discord = FakeDiscord::start().await;
    discord.delay_next(u32::MAX, DISCORD_RTT, "");
    let base = discord.base();
    let channel = CHANNEL.to_string();
    let dir = oc.dir().to_str().expect("utf-8").to_owned();
    let args = [
        "-v",
        "--channel",
        &channel,
        "--discord-api-url",
        &base,
        "--dir",
        &dir,
        "--no-hub",
    ];
    let model = RealOpencode::model();
    let tail = ["run", "-m", model.as_str(), TEXT_ONLY];
    let mut envs = oc.env_pairs();
    envs.push(("DISCORD_TOKEN", TOKEN));
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let mut gk = Gatekeep::detached(&args, oc.bin(), &tail, &envs);
    let code = gk.exit_code_within(Duration::from_secs(120)).await;
    let wall = t0.elapsed();
    let screen = gk.screen();
    assert_eq!(code, 0, "gatekeep failed:\n{screen}");
    // `GATEKEEP_BENCH_SHOW=1`: the screen printed (where the time goes).
    if std::env::var("GATEKEEP_BENCH_SHOW").is_ok_and(|v| v == "1") {
        eprintln!("{screen}");
    }
    let own = screen
        .split_once("CPU used: gatekeep ")
        .and_then(|(_, rest)| rest.split_once(" ms"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .expect("gatekeep -v reports its CPU");
    drop(gk);
    (
        wall,
        children_cpu().saturating_sub(cpu0),
        Duration::from_millis(own),
    )
}

/// Whether no process of group `pgid` is left, not even one that is
/// still exiting (a signal with no signal fails).
fn group_gone(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err()
}

/// The process group of `pid`, from `/proc`.
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(2)?.parse().ok()
}

/// CPU time of this process's waited-for children (`cutime + cstime`).
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat.rsplit_once(") ").map_or(0, |(_, rest)| {
        rest.split(' ')
            .skip(13)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum()
    });
    Duration::from_secs_f64(ticks as f64 / clk_tck() as f64)
}

struct Close {
    denied_shown: Duration,
    server_gone: Duration,
    exited: Duration,
}

impl Close {
    fn json(&self) -> Value {
        json!({ "denial_shown_in_discord_ms": ms_f(self.denied_shown), "server_gone_ms": ms_f(self.server_gone),
                "gatekeep_exited_ms": ms_f(self.exited) })
    }
}

/// gatekeep (`-v`) with the real OpenCode and the fake Discord: time to
/// "run started" (the prompt was accepted) from the spawn and from "OpenCode
/// is listening", then SIGTERM while a bash request waits.
async fn real_run(oc: &RealOpencode) -> (Duration, Duration, Close) {
    let discord = FakeDiscord::start().await;
    discord.delay_next(u32::MAX, DISCORD_RTT, "");
    let base = discord.base();
    let channel = CHANNEL.to_string();
    let dir = oc.dir().to_str().expect("utf-8").to_owned();
    let args = [
        "-v",
        "--channel",
        &channel,
        "--discord-api-url",
        &base,
        "--dir",
        &dir,
    ];
    let model = RealOpencode::model();
    let tail = ["run", "-m", model.as_str(), "BASH<touch never.txt>"];
    let mut envs = oc.env_pairs();
    envs.push(("DISCORD_TOKEN", TOKEN));
    let spawned = Instant::now();
    let mut gk = Gatekeep::detached(&args, oc.bin(), &tail, &envs);
    let mut listening = None;
    let started = loop {
        let screen = gk.screen();
        if listening.is_none() && screen.contains("OpenCode is listening") {
            listening = Some(spawned.elapsed());
        }
        if screen.contains("run started") {
            break spawned.elapsed();
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(90),
            "no start:\n{}",
            gk.screen()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let thread = discord.wait_thread(WAIT).await;
    let messages = format!("/api/v10/channels/{thread}/messages");
    let (_, rest) = next_request(&discord, 0, "the bash request", |r| {
        r.method == "POST" && r.path == messages && r.body.to_string().contains("touch never.txt")
    })
    .await;
    let pid = gk.pid();
    // OpenCode's process groups, found through the processes working in
    // the workspace (gatekeep's own command line names it too). A group is
    // gone when a signal can no longer reach it, as for `opencode serve`
    // alone above: not when its processes show as zombies or release their
    // working directory. A dying process does both early, while its other
    // threads are still exiting and its memory is still being unmapped
    // (80-120 ms for OpenCode here), and that is OpenCode's exit, not
    // gatekeep's; gatekeep reaps the leader the moment it is done.
    let mut groups: Vec<i32> = processes_mentioning(&dir)
        .into_iter()
        .filter(|(p, _)| *p != pid)
        .filter_map(|(p, _)| process_group(p))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    assert!(!groups.is_empty(), "OpenCode runs in the workspace");
    let t0 = Instant::now();
    gk.signal(Signal::SIGTERM);
    let mut server_gone = None;
    let mut exited = None;
    while (server_gone.is_none() || exited.is_none()) && t0.elapsed() < WAIT {
        if server_gone.is_none() && groups.iter().all(|g| group_gone(*g)) {
            server_gone = Some(t0.elapsed());
        }
        if exited.is_none() && !process_alive(pid) {
            exited = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = gk.exit_code().await;
    let denied = discord
        .requests_from(rest)
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path.starts_with(&messages))
        .map_or(WAIT, |r| r.at.saturating_duration_since(t0));
    let server_gone = server_gone.unwrap_or(WAIT);
    let exited = exited.unwrap_or(WAIT);
    (
        started,
        started.saturating_sub(listening.unwrap_or(started)),
        Close {
            denied_shown: denied,
            server_gone,
            exited,
        },
    )
}

// ---- the OpenCode client against the same flood ----------------------------------------

/// (3) and (4) for the OpenCode client, `opencode run --attach <fake>`,
/// against the same flood. The client answers a `permission.asked` of its
/// own session with `reject` by itself (docs/design.md): one asked after the
/// flood is the end marker, as the Discord message is for gatekeep.
async fn attach_client_flood(sizes: &Sizes, report: &mut Report) {
    let llm = FakeLlm::start();
    let Some(oc) = RealOpencode::workspace(&llm) else {
        report.add(
            "3",
            "  opencode run --attach: events/s",
            "skipped".into(),
            "",
            json!("OpenCode not installed"),
            None,
        );
        return;
    };
    let fake = FakeOpenCode::start();
    // As if a server had been started with this password: the fake reads
    // it from its records.
    std::fs::write(fake.tempdir().join("records/password"), "bench-attach")
        .expect("write the fake's password");
    let workspace = fake.workspace().to_str().expect("utf-8").to_owned();
    let mut client = Command::new(oc.bin())
        .args([
            "run",
            "--attach",
            &fake.url(),
            "-p",
            "bench-attach",
            "--dir",
            &workspace,
        ])
        .arg("benchmark the client")
        .current_dir(fake.workspace())
        .envs(oc.env_pairs())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn opencode run --attach");
    let pid = i32::try_from(client.id()).expect("pid fits");
    let session = fake.wait_for_prompt().await.session_id;
    let chunks = flood_chunks(&session, sizes.flood);
    let hwm_before = vm_hwm(pid);
    let cpu_before = tree_cpu_time(pid);
    let t0 = Instant::now();
    for chunk in &chunks {
        fake.emit_raw(chunk);
    }
    fake.ask_permission(&session, "bash", "echo after-the-flood");
    let reply = reply_at(&fake, 0).await;
    let elapsed = reply.at.duration_since(t0);
    let cpu = tree_cpu_time(pid).saturating_sub(cpu_before);
    let hwm = vm_hwm(pid);
    fake.finish_session(&session);
    let deadline = Instant::now() + WAIT;
    while client.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = client.kill();
    let _ = client.wait();
    let rate = sizes.flood as f64 / elapsed.as_secs_f64();
    let cpu_per_event_us = cpu.as_secs_f64() * 1e6 / sizes.flood as f64;
    report.add(
        "3",
        "  opencode run --attach, same flood: events/s",
        format!("{rate:.0}"),
        "",
        json!({
            "events": sizes.flood, "elapsed_ms": ms_f(elapsed), "events_per_s": rate,
            "cpu_ms": ms_f(cpu), "cpu_us_per_event": cpu_per_event_us,
            "end_marker": "its own auto-reject of a request asked after the flood",
            "reply": reply.reply(),
        }),
        None,
    );
    report.add(
        "3",
        "  opencode run --attach: CPU time per event",
        format!("{cpu_per_event_us:.2} µs"),
        "",
        json!({ "cpu_us_per_event": cpu_per_event_us }),
        None,
    );
    report.add(
        "4",
        "  opencode run --attach: peak RSS before / after the flood",
        format!("{} / {}", mb(hwm_before), mb(hwm)),
        "",
        json!({ "vm_hwm_kb_before_flood": hwm_before, "vm_hwm_kb_after_flood": hwm }),
        None,
    );
}

// ---- /proc --------------------------------------------------------------------

/// utime + stime of `pid` and its descendants (all their threads).
fn tree_cpu_time(pid: i32) -> Duration {
    let mut total = Duration::ZERO;
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        total += cpu_time(p);
        todo.extend(children(p));
    }
    total
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// utime + stime of `pid` (all its threads).
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat.rsplit_once(") ").map_or(0, |(_, rest)| {
        rest.split(' ')
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum()
    });
    Duration::from_secs_f64(ticks as f64 / clk_tck() as f64)
}

fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

fn status_kb(pid: i32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn vm_hwm(pid: i32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

fn vm_rss(pid: i32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

// ---- figures ----------------------------------------------------------------

struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    min: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Self {
        assert!(!v.is_empty(), "no samples");
        v.sort();
        let n = v.len();
        let pct = |p: usize| v[(n * p).div_ceil(100).max(1) - 1];
        Self {
            n,
            p50: pct(50),
            p99: pct(99),
            min: v[0],
            max: v[n - 1],
            mean: v.iter().sum::<Duration>() / u32::try_from(n).expect("sample count fits"),
        }
    }

    fn json(&self) -> Value {
        json!({ "n": self.n, "p50_ms": ms_f(self.p50), "p99_ms": ms_f(self.p99),
                "min_ms": ms_f(self.min), "max_ms": ms_f(self.max), "mean_ms": ms_f(self.mean) })
    }
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ms(d: Duration) -> String {
    format!("{:.2}", ms_f(d))
}

fn mb(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "n/a".to_owned(),
        |kb| format!("{:.1} MB", kb as f64 / 1024.0),
    )
}

struct Row {
    number: &'static str,
    what: String,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    json: BTreeMap<String, Value>,
}

impl Report {
    fn add(
        &mut self,
        number: &'static str,
        what: &str,
        value: String,
        target: &'static str,
        detail: Value,
        met: Option<bool>,
    ) {
        let key = format!("{number}. {}", what.trim());
        let mut entry = json!({ "value": value, "target": target, "met": met });
        entry["detail"] = detail;
        self.json.insert(key, entry);
        self.rows.push(Row {
            number,
            what: what.to_owned(),
            value,
            target,
            met,
        });
    }

    fn print_and_write(&self) {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\ngatekeep benchmarks ({}; {} cores)\n",
            machine(),
            cores()
        );
        let _ = writeln!(out, "| # | measure | value | target | met |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {met} |",
                r.number, r.what, r.value, r.target
            );
        }
        println!("{out}");
        let path = std::env::var_os("GATEKEEP_BENCH_JSON").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/gatekeep-bench.json"),
            PathBuf::from,
        );
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("bench output directory");
        }
        let doc = json!({
            "machine": machine(), "cores": cores(),
            "gatekeep": env!("CARGO_BIN_EXE_gatekeep"),
            "results": self.json,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
            .expect("write the bench JSON");
        println!("written: {}", path.display());
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
