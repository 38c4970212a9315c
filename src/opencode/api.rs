//! (OpenCode side: api)
