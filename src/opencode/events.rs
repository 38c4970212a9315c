//! (OpenCode side: events)
