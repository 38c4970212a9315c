//! What gatekeep prints about itself: the agent's text on stdout, status and
//! tool activity on stderr.
//!
//! Everything that came from the agent passes through
//! [`crate::redact::terminal_safe_bounded`] first: agent text is untrusted and may
//! carry escape sequences meant for the terminal.

use std::io::Write;

use crate::config::Verbosity;
use crate::redact::terminal_safe_bounded;

/// Longest agent text printed in one piece to the terminal.
const MAX_TEXT: usize = 64 * 1024;

/// The terminal, as seen by gatekeep's own output.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    verbosity: Verbosity,
}

impl Console {
    #[must_use]
    pub fn new(verbosity: Verbosity) -> Self {
        Self { verbosity }
    }

    /// A state change worth one line (hidden with `--quiet`).
    pub fn status(&self, line: &str) {
        if self.verbosity > Verbosity::Quiet {
            eprintln!("gatekeep: {line}");
        }
    }

    /// Detail for `--verbose`.
    pub fn detail(&self, line: &str) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("gatekeep: {line}");
        }
    }

    /// Something went wrong; always shown.
    pub fn error(&self, line: &str) {
        eprintln!("gatekeep: {line}");
    }

    /// The agent's own words: stdout, sanitized.
    pub fn agent_text(&self, text: &str) {
        let text = terminal_safe_bounded(text, MAX_TEXT);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Tool activity reported by OpenCode, sanitized.
    pub fn tool(&self, line: &str) {
        if self.verbosity > Verbosity::Quiet {
            eprintln!("  {}", terminal_safe_bounded(line, 500));
        }
    }
}
