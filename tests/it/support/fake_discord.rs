//! fake_discord
