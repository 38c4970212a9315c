//! gatekeep's integration tests, compiled as one binary.
//!
//! `support` holds the fakes (OpenCode server, Discord, LLM) and the
//! harness that runs the real `gatekeep` binary against them.

mod support;

mod action;
mod cli;
mod discord;
mod e2e;
mod faults;
mod fleet;
mod hostile;
mod run;
mod tools;
