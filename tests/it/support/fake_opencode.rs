//! fake_opencode
