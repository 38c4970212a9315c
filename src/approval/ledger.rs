//! Every request of the run and how it ended: what the approval task hands
//! back when it closes, read by the summary, the audit and the exit. Its own
//! file, so that the task's messages and the task itself both use it
//! without importing each other.

use std::time::{Duration, SystemTime};

use super::{Settlement, Shown};

/// One settled request, for the run summary.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub request: Shown,
    pub settlement: Settlement,
    pub asked_at: SystemTime,
    pub settled_at: SystemTime,
    pub time_to_decision: Duration,
}

/// Every request of the run and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub entries: Vec<LedgerEntry>,
}

impl Ledger {
    #[must_use]
    pub fn approved(&self) -> u32 {
        self.entries
            .iter()
            .filter(|e| e.settlement.is_approved())
            .count() as u32
    }

    #[must_use]
    pub fn denied(&self) -> u32 {
        self.entries.len() as u32 - self.approved()
    }

    /// Whether any request was still open when the run ended (denied by the
    /// close).
    #[must_use]
    pub fn had_open_at_end(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.settlement, Settlement::RunEnded(_)))
    }
}
