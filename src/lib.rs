//! gatekeep supervises one unattended OpenCode run and puts a human between
//! the agent and every gated tool call.
//!
//! # Layout
//!
//! The data flow, one module per step (docs/design.md has the long form):
//!
//! ```text
//!   opencode serve ─SSE─► opencode::events ─wire::Event─► run::events
//!        ─opencode::bridge (Ask, Echo)─► approval::messages::Input
//!        ─► approval::task (owns approval::registry) ─Notice─► transport::{discord, terminal, local},
//!                                                               records::audit, console
//!   Discord gateway (the run's own session, or `gatekeep hub` over a local
//!        socket) ─click─► transport::discord ─ack accepted by Discord─►
//!   transports ─Decider::decide(number, verdict)─► approval::task
//!        ─Reply─► opencode::bridge::OpenCodeReplier ─► OpenCode API
//!   run::watch: every tool part and the policy surface (surface) ─breach─► the run ends (exit 5)
//!   run owns: the `opencode serve` child (in the agent's box, sandbox), every task, and the one shutdown
//!   sequence (run::teardown: deny pending → sweep → abort → dispose → stop
//!   → kill what the agent left; after an intrusion, OpenCode is killed first)
//! ```
//!
//! Arrows point one way: [`approval`] imports no transport, no HTTP and
//! nothing of OpenCode; [`opencode`] and [`transport`] import approval types.
//! The one shutdown signal is the run's end reason: signals, the clock and
//! the event loop each produce one, and [`run`] passes it down to the
//! teardown and, through `Notice::RunEnded`, to every follower.
//!
//! - [`cli`]: the raw command line (clap); [`tail`] parses the
//!   `opencode run …` words after `--`; [`policy`] reads `gatekeep.toml`,
//!   the layer beneath flags and variables; [`config`] is the validated result.
//! - [`opencode`]: wire types, the SSE event stream, API calls, the child
//!   process, `--gate`, the one reader of OpenCode's configuration, the
//!   releases gatekeep drives (`compat`), and the bridge to approval types.
//!   Nothing outside it knows OpenCode's JSON.
//! - [`approval`]: what is asked ([`approval::Ask`]) and shown
//!   ([`approval::Shown`]), the registry (a pure state machine: every request
//!   settled exactly once), the deny and trust rules, the messages of the
//!   task that owns it, and the task.
//! - [`transport`]: approval channels (Discord, the terminal, other
//!   terminals of the same user). Each renders requests with pure functions
//!   and sends decisions back through an [`approval::messages::Decider`].
//! - [`run`]: one run, a file per step (start, followers, events, sessions,
//!   teardown); [`signals`] turns SIGINT/SIGTERM/SIGHUP into end reasons;
//!   [`exit`] maps outcomes to the documented exit codes.
//! - [`records`]: the hash-chained `--audit-log` and the `--summary-json`.
//! - [`redact`]: secret redaction and neutralising of untrusted agent text,
//!   shared by every channel; [`console`]: all of gatekeep's own output (a
//!   live status line at a terminal, timestamped lines elsewhere).
//! - [`doctor`]: `gatekeep doctor`, the checks before an unattended run;
//!   [`hub`]: `gatekeep hub`, one Discord session for every run on a host
//!   (its protocol and the runs' side are in `transport::discord::hub`,
//!   when a session may start in `transport::discord::session`).
//! - [`sandbox`]: the agent's box (bubblewrap) around `opencode serve`;
//!   [`surface`]: the policy surface — the files that decide what the agent
//!   may do — watched during the run and checked at start.
//! - [`platform`]: what gatekeep needs from Linux or macOS (hardening, the
//!   child's tether, process ancestry), behind one interface.

// Every dependency is used by the library (the binary and the tests link
// them all too, so the lint is checked on the library alone).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod approval;
pub mod cli;
pub mod config;
pub mod console;
pub mod doctor;
pub mod exit;
pub mod hub;
pub mod opencode;
pub mod platform;
pub mod policy;
pub mod records;
pub mod redact;
pub mod run;
pub mod sandbox;
pub mod signals;
pub mod surface;
pub mod tail;
pub mod transport;
