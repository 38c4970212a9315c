//! Faults: the real `gatekeep` binary against the fake OpenCode and the
//! fake Discord while something breaks — OpenCode dies, Discord's REST
//! fails, is rate limited or slow, the gateway drops or is gone for good,
//! gatekeep itself is killed, a report file cannot be written. In every
//! case nothing is approved without a click and nothing pending is lost.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::fake_discord::FakeDiscord;
use crate::support::fake_opencode::{process_alive, FakeOpenCode, FakeOptions};
use crate::support::gatekeep::Gatekeep;
use crate::support::scenario::{admin, DiscordRun, ACK_LIMIT, CHANNEL, TAIL, WAIT};

#[tokio::test]
async fn opencode_killed_while_a_request_is_pending_exits_4_and_discord_says_so() {
    let mut run = DiscordRun::start(&[]).await;
    run.opencode
        .ask_permission(&run.root, "bash", "make release");
    let msg = run.message("make release").await;
    run.opencode.kill_server_process();
    assert_eq!(run.gk.exit_code().await, 4, "{}", run.gk.screen());
    let state = run.final_state(&msg).await;
    assert!(state.contains("OpenCode died"), "{state}");
    let start = &run.discord.messages_in(CHANNEL)[0];
    assert!(
        start.payload.to_string().contains("OpenCode died"),
        "the run-start message does not say how the run ended: {}",
        start.payload
    );
    run.assert_nothing_approved();
}

#[tokio::test]
async fn rest_5xx_and_429_bursts_delay_a_request_but_it_is_shown_and_answered() {
    let run = DiscordRun::start(&[]).await;
    // Fewer failures than the delivery retries allow.
    run.discord.fail_next(2, 502, None, "/messages");
    run.discord.fail_next(2, 429, Some(0.3), "/messages");
    let id = run
        .opencode
        .ask_permission(&run.root, "bash", "cargo test --workspace");
    let msg = run.message("cargo test --workspace").await;
    assert!(
        run.discord
            .requests()
            .iter()
            .filter(|r| r.status >= 429)
            .count()
            >= 4,
        "the faults were not hit"
    );
    run.assert_nothing_approved();
    let (interaction, _) = run.click(&msg, "Approve", &admin());
    let (_, took) = run.discord.wait_ack(interaction, WAIT).await;
    assert!(took < ACK_LIMIT, "acknowledged after {took:?}");
    let replies = run.opencode.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "once")
    );
    assert!(run.final_state(&msg).await.contains("Approved"));
}

#[tokio::test]
async fn a_request_discord_keeps_refusing_is_denied_as_a_channel_failure() {
    let mut run = DiscordRun::start(&[]).await;
    // More 5xx than the delivery retries allow, on the thread only.
    run.discord.fail_next(50, 503, None, "/messages");
    let id = run
        .opencode
        .ask_permission(&run.root, "bash", "terraform apply");
    let replies = run.opencode.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "reject")
    );
    assert!(
        replies[0]
            .message()
            .is_some_and(|m| m.contains("approval channel failed")),
        "{:?}",
        replies[0].message()
    );
    run.opencode.finish_session(&run.root);
    assert_eq!(run.gk.exit_code().await, 0, "{}", run.gk.screen());
    run.assert_nothing_approved();
}

#[tokio::test]
async fn a_slow_discord_does_not_delay_the_acknowledgement_of_a_click() {
    let run = DiscordRun::start(&[]).await;
    run.opencode.ask_permission(&run.root, "bash", "npm ci");
    let msg = run.message("npm ci").await;
    // From now on every message post and edit takes 10 s.
    run.discord
        .delay_next(100, Duration::from_secs(10), "/channels/");
    let (interaction, _) = run.click(&msg, "Approve", &admin());
    let (_, took) = run.discord.wait_ack(interaction, WAIT).await;
    assert!(took < ACK_LIMIT, "acknowledged after {took:?}");
    let replies = run.opencode.wait_for_replies(1).await;
    assert_eq!(replies[0].reply(), "once");
}

#[tokio::test]
async fn a_gateway_closed_by_discord_resumes_and_clicks_still_count() {
    let run = DiscordRun::start(&[]).await;
    run.opencode.ask_permission(&run.root, "bash", "make docs");
    let msg = run.message("make docs").await;
    run.discord.close_gateway();
    run.discord
        .wait_until("a resumed gateway", WAIT, |d| {
            (d.resumes() >= 1).then_some(())
        })
        .await;
    run.discord.wait_gateway(WAIT).await;
    let (interaction, _) = run.click(&msg, "Deny", &admin());
    run.discord.wait_ack(interaction, WAIT).await;
    let replies = run.opencode.wait_for_replies(1).await;
    assert_eq!(replies[0].reply(), "reject");
    assert!(run.final_state(&msg).await.contains("Denied"));
}

/// The end of a run ends its gateway session with a normal close (1000),
/// so Discord drops the session at once instead of holding it for a
/// resume that never comes.
#[tokio::test]
async fn a_finished_run_closes_its_gateway_session_normally() {
    let mut run = DiscordRun::start(&[]).await;
    run.opencode.finish_session(&run.root);
    assert_eq!(run.gk.exit_code().await, 0, "{}", run.gk.screen());
    let closes = run
        .discord
        .wait_until("a close frame from gatekeep", WAIT, |d| {
            let closes = d.client_closes();
            (!closes.is_empty()).then_some(closes)
        })
        .await;
    assert_eq!(closes, vec![1000]);
    run.discord
        .wait_until("no session left open", WAIT, |d| {
            (d.live_sessions() == 0).then_some(())
        })
        .await;
}

/// How the run ended is final once the registry is closed, so its last
/// messages do not wait for OpenCode's stop (docs/design.md, "Teardown"):
/// here a server that ignores SIGTERM holds the stop for its whole grace.
#[tokio::test]
async fn the_runs_last_messages_go_out_while_opencode_is_still_stopping() {
    let opencode = FakeOpenCode::start_with(FakeOptions {
        ignore_sigterm: true,
        ..FakeOptions::default()
    });
    let run = DiscordRun::start_with(opencode, FakeDiscord::start().await, &[]).await;
    let server = run.opencode.script_pid().expect("server started");
    run.opencode.finish_session(&run.root);
    let run_start = run
        .discord
        .wait_until("the run-start message's final state", WAIT, |d| {
            let start = d.messages_in(CHANNEL).into_iter().next()?;
            (start.edits > 0).then_some(start)
        })
        .await;
    assert!(
        process_alive(server),
        "the run's last messages waited for OpenCode to be killed"
    );
    assert!(run_start.payload.to_string().contains("Run finished"));
    let mut gk = run.gk;
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(!process_alive(server), "gatekeep exited before OpenCode");
}

#[tokio::test]
async fn with_the_gateway_gone_for_good_requests_expire_denied() {
    let mut run = DiscordRun::start(&["--approval-timeout", "2s"]).await;
    run.discord.kill_gateway();
    let id = run
        .opencode
        .ask_permission(&run.root, "bash", "kubectl delete ns prod");
    let msg = run.message("kubectl delete ns prod").await;
    let replies = run.opencode.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "reject")
    );
    assert!(run.final_state(&msg).await.contains("Expired"));
    run.opencode.finish_session(&run.root);
    assert_eq!(run.gk.exit_code().await, 0, "{}", run.gk.screen());
    run.assert_nothing_approved();
    run.assert_server_gone().await;
}

#[tokio::test]
async fn sigkill_of_gatekeep_on_the_discord_path_takes_opencode_down_within_2s() {
    let run = DiscordRun::start(&[]).await;
    run.opencode.ask_permission(&run.root, "bash", "sleep 1000");
    run.message("sleep 1000").await;
    let pid = run.opencode.script_pid().expect("server started");
    run.gk.signal(Signal::SIGKILL);
    let start = Instant::now();
    while process_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "OpenCode outlived a SIGKILLed gatekeep"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.assert_nothing_approved();
}

/// `POST /permission/{id}/reply` as another client of the same server.
async fn reply_as_another_client(opencode: &FakeOpenCode, id: &str, reply: &str) {
    let password = opencode.recorded_password().expect("password recorded");
    let status = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
        .post(format!("{}/permission/{id}/reply", opencode.url()))
        .query(&[("directory", opencode.workspace().to_str().expect("utf-8"))])
        .basic_auth("opencode", Some(password))
        .json(&json!({ "reply": reply }))
        .send()
        .await
        .expect("reply sent")
        .status();
    assert!(status.is_success(), "{status}");
}

#[tokio::test]
async fn a_request_answered_while_the_event_stream_was_down_is_shown_settled() {
    let opencode = FakeOpenCode::start_with(FakeOptions {
        hold_connected: true,
        ..FakeOptions::default()
    });
    let mut run = DiscordRun::launch(opencode, FakeDiscord::start().await, &[]);
    run.opencode.wait_for_streams(1).await;
    run.opencode.release_connected();
    run.root = run.opencode.wait_for_prompt().await.session_id;
    let opencode = &run.opencode;
    let id = opencode.ask_permission(&run.root, "bash", "git push");
    let msg = run.message("git push").await;
    opencode.break_stream();
    // gatekeep reconnects; the new stream is held, so the gap lasts.
    opencode.wait_for_streams(2).await;
    reply_as_another_client(opencode, &id, "reject").await;
    opencode.release_connected();
    let state = run.final_state(&msg).await;
    assert!(state.contains("outside gatekeep"), "{state}");
    opencode.finish_session(&run.root);
    assert_eq!(run.gk.exit_code().await, 0, "{}", run.gk.screen());
}

// ---- report files that cannot be written -----------------------------------

/// gatekeep at a terminal with `extra` options, and the root session once
/// prompted.
async fn at_terminal(fake: &FakeOpenCode, extra: &[&str]) -> (Gatekeep, String) {
    let mut args = vec!["--dir", fake.workspace().to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let gk = Gatekeep::at_terminal(&args, fake.program(), TAIL, &[]);
    let root = fake.wait_for_prompt().await.session_id;
    (gk, root)
}

/// A request is asked and denied at the terminal, then the run finishes.
async fn deny_one_and_finish(fake: &FakeOpenCode, gk: &mut Gatekeep, root: &str) {
    let id = fake.ask_permission(root, "bash", "rm -rf target");
    gk.expect("command: rm -rf target").await;
    gk.type_line("d");
    let replies = fake.wait_for_replies(1).await;
    assert_eq!(
        (replies[0].request_id.as_str(), replies[0].reply()),
        (id.as_str(), "reject")
    );
    fake.finish_session(root);
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_created_stops_the_run_before_it_starts() {
    let fake = FakeOpenCode::start();
    let path = fake.tempdir().join("no-such-dir").join("audit.jsonl");
    let path = path.to_str().expect("utf-8");
    let mut gk = Gatekeep::at_terminal(
        &[
            "--dir",
            fake.workspace().to_str().expect("utf-8"),
            "--audit-log",
            path,
        ],
        fake.program(),
        TAIL,
        &[],
    );
    assert_eq!(gk.exit_code().await, 2, "{}", gk.screen());
    assert!(
        gk.screen().contains(path),
        "the error names the file: {}",
        gk.screen()
    );
    assert!(fake.script_pid().is_none(), "OpenCode was started anyway");
    assert!(fake.prompts().is_empty());
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_is_reported_and_the_run_stays_safe() {
    let fake = FakeOpenCode::start();
    // Every write to /dev/full fails with ENOSPC.
    let (mut gk, root) = at_terminal(&fake, &["--audit-log", "/dev/full"]).await;
    deny_one_and_finish(&fake, &mut gk, &root).await;
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(
        gk.screen().contains("/dev/full"),
        "the failure is not reported: {}",
        gk.screen()
    );
    assert!(fake.replies().iter().all(|r| r.reply() == "reject"));
    fake.wait_for_script_exit().await;
}

#[tokio::test]
async fn a_summary_that_cannot_be_written_is_reported_and_changes_nothing_else() {
    let fake = FakeOpenCode::start();
    let path = fake.tempdir().join("no-such-dir").join("summary.json");
    let path = path.to_str().expect("utf-8").to_owned();
    let (mut gk, root) = at_terminal(&fake, &["--summary-json", &path]).await;
    deny_one_and_finish(&fake, &mut gk, &root).await;
    assert_eq!(gk.exit_code().await, 0, "{}", gk.screen());
    assert!(
        gk.screen().contains("no-such-dir"),
        "the failure is not reported: {}",
        gk.screen()
    );
    assert!(fake.replies().iter().all(|r| r.reply() == "reject"));
    fake.wait_for_script_exit().await;
}
