//! Many runs, one bot, one host: session starts take turns and never draw
//! an opcode 9, a hub spends one session start for all of them, and a hub
//! that goes away leaves no request approved without a human.
//!
//! Every run here shares one `XDG_RUNTIME_DIR` (the host's state
//! directory, where the identify lock and the hub's socket live) and one
//! fake Discord that enforces Discord's session-start rules.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::support::fake_discord::{FakeDiscord, StoredMessage, IDENTIFY_INTERVAL};
use crate::support::fake_opencode::FakeOpenCode;
use crate::support::gatekeep::Gatekeep;
use crate::support::scenario::{admin, button};

const CHANNEL: u64 = 500;
const TOKEN: &str = "fake-bot-token-fleet-Qw81";
/// Generous: twenty runs queue for their session starts, 5 s apart.
const FLEET_WAIT: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(30);

/// One host: its state directory.
struct Host {
    /// Removed with the host.
    _state: TempDir,
    /// `XDG_RUNTIME_DIR` for every gatekeep on this host.
    runtime_dir: String,
}

impl Host {
    fn new() -> Self {
        let state = tempfile::tempdir().expect("state dir");
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod state dir");
        let runtime_dir = state.path().to_str().expect("utf-8").to_owned();
        Self {
            _state: state,
            runtime_dir,
        }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("DISCORD_TOKEN", TOKEN),
            ("XDG_RUNTIME_DIR", &self.runtime_dir),
        ]
    }

    /// `gatekeep run` on this host, with Discord approvals and no terminal.
    fn run(&self, oc: &FakeOpenCode, discord: &FakeDiscord, extra: &[&str]) -> Gatekeep {
        let channel = CHANNEL.to_string();
        let base = discord.base();
        let mut args = vec![
            "--dir",
            oc.workspace().to_str().expect("utf-8"),
            "--channel",
            &channel,
            "--discord-api-url",
            &base,
        ];
        args.extend_from_slice(extra);
        Gatekeep::detached(&args, oc.program(), &["run", "go"], &self.env())
    }

    /// `gatekeep hub` on this host, once it said it is ready.
    async fn hub(&self, discord: &FakeDiscord) -> Gatekeep {
        let hub = Gatekeep::command(&["hub", "--discord-api-url", &discord.base()], &self.env());
        hub.expect("ready").await;
        hub
    }
}

/// The request message showing `text`, in whichever run's thread.
async fn request_message(discord: &FakeDiscord, text: &str) -> StoredMessage {
    discord
        .wait_until(&format!("a request showing {text:?}"), FLEET_WAIT, |f| {
            f.threads().into_iter().find_map(|thread| {
                f.messages_in(thread)
                    .into_iter()
                    .find(|m| m.payload.to_string().contains(text) && approve_button_of(m))
            })
        })
        .await
}

fn approve_button_of(m: &StoredMessage) -> bool {
    m.payload["components"][0]["components"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["label"] == "Approve"))
}

async fn prompted(oc: &FakeOpenCode, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(p) = oc.prompts().into_iter().find(|p| p.streams_open > 0) {
            return p.session_id;
        }
        assert!(Instant::now() < deadline, "the run was never prompted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` runs started at the same moment; each asks once, a human approves
/// each in its own thread, each finishes. Returns the runs' screens.
async fn fleet_approves(host: &Host, discord: &FakeDiscord, n: usize) -> Vec<String> {
    let ocs: Vec<FakeOpenCode> = (0..n).map(|_| FakeOpenCode::start()).collect();
    let mut runs: Vec<Gatekeep> = ocs.iter().map(|oc| host.run(oc, discord, &[])).collect();
    let mut clicks = Vec::new();
    for (i, oc) in ocs.iter().enumerate() {
        let root = prompted(oc, FLEET_WAIT).await;
        let subject = format!("echo fleet run {i} of {n}");
        let id = oc.ask_permission(&root, "bash", &subject);
        let msg = request_message(discord, &subject).await;
        let (interaction, _) =
            discord.click(msg.id, &button(&msg, "Approve"), &admin(), msg.channel_id);
        clicks.push(interaction);
        let replies = oc.wait_for_replies(1).await;
        assert_eq!(
            (replies[0].request_id.as_str(), replies[0].reply()),
            (id.as_str(), "once"),
            "run {i}"
        );
        oc.finish_session(&root);
    }
    let mut screens = Vec::new();
    for (i, run) in runs.iter_mut().enumerate() {
        let code = run.exit_code().await;
        assert_eq!(code, 0, "run {i}:\n{}", run.screen());
        screens.push(run.screen());
    }
    // Every run saw every click; each click was answered once, by its own.
    let mut answered: HashMap<u64, usize> = HashMap::new();
    for r in discord.requests() {
        if let Some(id) = r
            .path
            .strip_prefix("/api/v10/interactions/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse().ok())
        {
            *answered.entry(id).or_default() += 1;
        }
    }
    for id in &clicks {
        assert_eq!(answered.get(id), Some(&1), "click {id}: {answered:?}");
    }
    assert_eq!(answered.len(), clicks.len(), "{answered:?}");
    screens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_runs_on_one_host_take_turns_and_none_is_refused_a_session() {
    let host = Host::new();
    let discord = FakeDiscord::start().await;
    discord.enforce_identify_spacing();
    let started = Instant::now();
    let screens = fleet_approves(&host, &discord, 20).await;
    assert_eq!(discord.invalid_sessions(), 0, "an IDENTIFY came too early");
    assert_eq!(discord.identifies(), 20);
    // They really queued: twenty starts need nineteen intervals.
    assert!(started.elapsed() >= IDENTIFY_INTERVAL * 19);
    assert!(
        screens
            .iter()
            .any(|s| s.contains("waiting for a Discord connection slot")),
        "no run said it was waiting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_hub_twenty_runs_spend_one_session_start() {
    let host = Host::new();
    let discord = FakeDiscord::start().await;
    discord.enforce_identify_spacing();
    let mut hub = host.hub(&discord).await;
    let screens = fleet_approves(&host, &discord, 20).await;
    assert_eq!(discord.identifies(), 1, "only the hub identifies");
    assert_eq!(discord.invalid_sessions(), 0);
    assert!(screens.iter().all(|s| s.contains("gatekeep hub")));
    hub.signal(Signal::SIGTERM);
    assert_eq!(hub.exit_code().await, 0, "{}", hub.screen());
    assert!(!hub.screen().contains(TOKEN));
}

/// A run attached to a hub, with one request waiting: (run, its OpenCode,
/// the request id, the request message).
async fn waiting_on_a_hub(
    host: &Host,
    discord: &FakeDiscord,
) -> (Gatekeep, FakeOpenCode, String, StoredMessage) {
    let oc = FakeOpenCode::start();
    let run = host.run(&oc, discord, &[]);
    let root = prompted(&oc, WAIT).await;
    let id = oc.ask_permission(&root, "bash", "git push origin main");
    let msg = request_message(discord, "git push origin main").await;
    assert!(run.screen().contains("gatekeep hub"), "{}", run.screen());
    (run, oc, id, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_hub_dies_a_run_opens_its_own_session_and_still_takes_clicks() {
    let host = Host::new();
    let discord = FakeDiscord::start().await;
    let hub = host.hub(&discord).await;
    let channel = CHANNEL.to_string();
    let mut doctor = Gatekeep::command(
        &[
            "doctor",
            "--channel",
            &channel,
            "--discord-api-url",
            &discord.base(),
        ],
        &host.env(),
    );
    doctor.exit_code().await;
    assert!(
        doctor
            .stdout()
            .contains("a gatekeep hub of this bot listens"),
        "{}",
        doctor.stdout()
    );
    let (mut run, oc, id, msg) = waiting_on_a_hub(&host, &discord).await;
    hub.signal(Signal::SIGKILL);
    run.expect("own gateway session").await;
    discord
        .wait_until("the run's own session", WAIT, |f| {
            (f.identifies() == 2).then_some(())
        })
        .await;
    let (interaction, _) =
        discord.click(msg.id, &button(&msg, "Approve"), &admin(), msg.channel_id);
    discord.wait_ack(interaction, WAIT).await;
    let replies = oc.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "once")
    );
    oc.finish_session(&oc.prompts()[0].session_id);
    assert_eq!(run.exit_code().await, 0, "{}", run.screen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_hub_dies_and_no_session_may_start_what_waits_is_denied() {
    let host = Host::new();
    let discord = FakeDiscord::start().await;
    let hub = host.hub(&discord).await;
    let (mut run, oc, id, _msg) = waiting_on_a_hub(&host, &discord).await;
    // Only the reserve is left: the run must not start a session.
    discord.set_session_starts_left(20);
    hub.signal(Signal::SIGKILL);
    let replies = oc.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "reject"),
        "{}",
        run.screen()
    );
    assert_eq!(discord.identifies(), 1, "the run spent a session start");
    assert!(
        run.screen().contains("daily session starts"),
        "{}",
        run.screen()
    );
    oc.finish_session(&oc.prompts()[0].session_id);
    run.exit_code().await;
    assert!(oc.replies().iter().all(|r| r.reply() == "reject"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_with_no_reserve_a_run_never_spends_the_last_session_start() {
    let host = Host::new();
    let discord = FakeDiscord::start().await;
    discord.set_session_starts_left(1);
    let oc = FakeOpenCode::start();
    let mut first = host.run(&oc, &discord, &["--identify-reserve", "0"]);
    let root = prompted(&oc, WAIT).await;
    let second_oc = FakeOpenCode::start();
    let mut second = host.run(&second_oc, &discord, &["--identify-reserve", "0"]);
    assert_eq!(second.exit_code().await, 3, "{}", second.screen());
    assert!(second_oc.prompts().is_empty(), "the agent was prompted");
    assert!(!discord.token_was_reset(), "Discord reset the bot's token");
    oc.finish_session(&root);
    assert_eq!(first.exit_code().await, 0, "{}", first.screen());
}
