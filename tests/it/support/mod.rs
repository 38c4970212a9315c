//! Test fakes and harness shared by every scenario.
#![allow(dead_code)]

pub mod fake_discord;
pub mod fake_llm;
pub mod fake_opencode;
pub mod gatekeep;
pub mod real_opencode;
pub mod scenario;
