//! gatekeep supervises one unattended OpenCode run and puts a human between
//! the agent and every gated tool call.
//!
//! # Layout
//!
//! ```text
//!   OpenCode events ─asked/replied─► approval task ─Notice─► transports (terminal, Discord)
//!   transports ─decide(number, verdict)─► approval task ─reply─► OpenCode API
//!   supervisor owns: the `opencode serve` child, every task, the cancellation
//!   token and the one shutdown sequence (deny pending → abort → dispose → stop)
//! ```
//!
//! - [`cli`]: the raw command line (clap); [`tail`] parses the
//!   `opencode run …` words after `--`; [`config`] is the validated result.
//! - [`opencode`]: wire types, the SSE event stream, API calls and the child
//!   process. Nothing outside it knows OpenCode's JSON shapes.
//! - [`approval`]: the registry (a pure state machine: every request settled
//!   exactly once) and the task that owns it, its deadlines and the replies.
//! - [`transport`]: approval channels. Each renders requests with pure
//!   functions and sends decisions back through a [`transport::Decider`].
//! - [`redact`]: secret redaction and neutralising of untrusted agent text,
//!   shared by every channel.
//! - [`supervisor`]: one run from start to teardown; [`signals`] turns
//!   SIGINT/SIGTERM/SIGHUP into end reasons; [`exit`] maps outcomes to the
//!   documented exit codes.
//! - [`console`]: gatekeep's own output (a live status line at a terminal,
//!   timestamped lines elsewhere); [`summary`] writes `--summary-json`;
//!   [`audit`] is the hash-chained `--audit-log` (a notice subscriber like a
//!   transport) and its verifier.

pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod doctor;
pub mod exit;
pub mod gate;
pub mod opencode;
pub mod redact;
pub mod signals;
pub mod summary;
pub mod supervisor;
pub mod tail;
pub mod transport;
