//! discord scenarios
