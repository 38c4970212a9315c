//! The OpenCode side: wire types, the event stream, API calls and the
//! `opencode serve` child process. Nothing outside this module knows
//! OpenCode's JSON shapes or URLs.
//!
//! ```text
//!   server::Server::start ── spawns `opencode serve`, waits for its listening line
//!        │ base_url, password
//!        ▼
//!   api::Api ── every call: Basic auth, ?directory=, a timeout
//!        │
//!        ├─► events::subscribe ── returns after HTTP 200 + server.connected
//!        │        └─► EventStream::next ─► wire::Event
//!        └─► create_session → prompt_async → reply_permission … → abort → dispose
//! ```
//!
//! - [`wire`]: pure parsing of event frames and permission requests.
//! - [`api`]: the HTTP calls; `Reply` has no `always` on purpose.
//! - [`events`]: the SSE subscription, ordered before the prompt.
//! - [`server`]: the child in its own process group, dying with gatekeep.
//! - [`compat`]: the OpenCode releases gatekeep drives, checked at start.
pub mod api;
pub mod bridge;
pub mod compat;
pub mod config;
pub mod events;
pub mod gate;
pub mod guard;
pub mod server;
pub mod wire;
