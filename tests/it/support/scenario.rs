//! The Discord scenario: one supervised run with Discord approvals against
//! both fakes, and the helpers every Discord test clicks with. A scenario
//! reads as a few lines of intent: start a run, find the request's message,
//! click a button as someone, read the final state.

use std::time::Duration;

use serde_json::{json, Value};

use super::fake_discord::{FakeDiscord, Member, StoredMessage};
use super::fake_opencode::FakeOpenCode;
use super::gatekeep::Gatekeep;

/// The approval channel; the run's thread is created under it.
pub const CHANNEL: u64 = 500;
/// The bot token gatekeep is given; it must never show anywhere.
/// Deliberately not in a known token format: only exact-value redaction
/// can keep it out of what gatekeep shows.
pub const TOKEN: &str = "gk-test-token-7f3a9c5e1b-never-shown";
/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);
/// Discord's window for acknowledging a click.
pub const ACK_LIMIT: Duration = Duration::from_secs(3);
/// Discord's Manage Channels permission bit.
pub const MANAGE_CHANNELS: u64 = 1 << 4;
pub const TAIL: &[&str] = &["run", "-m", "fake/model", "fix", "the", "test"];

/// Someone allowed to decide (Manage Channels, no approver lists).
pub fn admin() -> Member {
    Member::new(4242).permissions(MANAGE_CHANNELS)
}

/// One supervised run with Discord approvals: the real binary, detached
/// from any terminal, against both fakes.
pub struct DiscordRun {
    pub opencode: FakeOpenCode,
    pub discord: FakeDiscord,
    pub gk: Gatekeep,
    /// The root session gatekeep created and prompted.
    pub root: String,
}

impl DiscordRun {
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_with(FakeOpenCode::start(), FakeDiscord::start().await, extra).await
    }

    pub async fn start_with(opencode: FakeOpenCode, discord: FakeDiscord, extra: &[&str]) -> Self {
        let mut run = Self::launch(opencode, discord, extra);
        run.root = run.opencode.wait_for_prompt().await.session_id;
        run
    }

    /// Starts gatekeep without waiting for anything.
    pub fn launch(opencode: FakeOpenCode, discord: FakeDiscord, extra: &[&str]) -> Self {
        let base = discord.base();
        let channel = CHANNEL.to_string();
        let workspace = opencode.workspace().to_str().expect("utf-8").to_owned();
        let mut args = vec![
            "--channel",
            &channel,
            "--discord-api-url",
            &base,
            "--dir",
            &workspace,
        ];
        args.extend_from_slice(extra);
        let gk = Gatekeep::detached(&args, opencode.program(), TAIL, &[("DISCORD_TOKEN", TOKEN)]);
        Self {
            opencode,
            discord,
            gk,
            root: String::new(),
        }
    }

    /// The run's thread: where request messages are posted.
    pub fn thread(&self) -> Option<u64> {
        self.discord.requests().iter().find_map(|r| {
            let rest = r.path.strip_prefix("/api/v10/channels/")?;
            let (channel, tail) = rest.split_once('/')?;
            let channel: u64 = channel.parse().ok()?;
            (r.method == "POST" && tail == "messages" && channel != CHANNEL).then_some(channel)
        })
    }

    /// The message of the request whose subject contains `needle`, once
    /// it is posted.
    pub async fn message(&self, needle: &str) -> StoredMessage {
        self.discord
            .wait_until(&format!("a request message with {needle:?}"), WAIT, |d| {
                let thread = self.thread()?;
                d.messages_in(thread)
                    .into_iter()
                    .find(|m| m.payload.to_string().contains(needle))
            })
            .await
    }

    /// Clicks `label` on `msg` as `member` in the run's thread; returns
    /// (interaction id, token).
    pub fn click(&self, msg: &StoredMessage, label: &str, member: &Member) -> (u64, String) {
        let custom_id = button(msg, label);
        self.discord
            .click(msg.id, &custom_id, member, msg.channel_id)
    }

    /// Waits until `msg` shows a final state (buttons gone); its Decision.
    pub async fn final_state(&self, msg: &StoredMessage) -> String {
        self.discord
            .wait_until("the final state of a request", WAIT, |d| {
                let m = d.message(msg.id)?;
                (m.payload["components"] == json!([])).then(|| decision(&m.payload))
            })
            .await
    }

    /// No `once` was ever sent to OpenCode.
    pub fn assert_nothing_approved(&self) {
        let approved: Vec<_> = self
            .opencode
            .replies()
            .into_iter()
            .filter(|r| r.reply() != "reject")
            .map(|r| (r.request_id, r.body))
            .collect();
        assert!(
            approved.is_empty(),
            "approved without a click: {approved:?}"
        );
    }

    /// After gatekeep exited: the OpenCode server is gone too.
    pub async fn assert_server_gone(&self) {
        self.opencode.wait_for_script_exit().await;
    }
}

/// The `custom_id` of the button labelled `label`.
pub fn button(msg: &StoredMessage, label: &str) -> String {
    msg.payload["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .find(|b| b["label"] == label)
        .and_then(|b| b["custom_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no button {label:?} in {}", msg.payload))
}

/// The Decision field of a request message.
pub fn decision(payload: &Value) -> String {
    payload["embeds"][0]["fields"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "Decision"))
        .and_then(|f| f["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}
