//! real_opencode
