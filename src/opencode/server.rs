//! (OpenCode side: server)
