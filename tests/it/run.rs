//! run scenarios
