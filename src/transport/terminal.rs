//! The terminal approval channel (implemented in the core issue).
