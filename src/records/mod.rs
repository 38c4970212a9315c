//! What a run leaves behind for later: the hash-chained audit log
//! (`--audit-log`, a follower of the approval task's notices like a
//! transport) and the run summary (`--summary-json`).

pub mod audit;
pub mod summary;
