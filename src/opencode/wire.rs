//! (OpenCode side: wire)
