//! cli scenarios
