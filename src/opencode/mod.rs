//! The OpenCode side: wire types, the event stream, API calls and the
//! `opencode serve` child process.
pub mod api;
pub mod events;
pub mod server;
pub mod wire;
