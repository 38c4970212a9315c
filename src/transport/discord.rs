//! The Discord approval channel (implemented in the Discord issue).
