//! e2e scenarios
