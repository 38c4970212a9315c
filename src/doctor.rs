//! `gatekeep doctor`: checks before relying on an unattended run.

use crate::cli::DoctorArgs;
use crate::exit::Code;

/// Run every check; 0 when ready, 3 otherwise.
#[must_use]
pub fn run(_args: &DoctorArgs) -> Code {
    Code::ChannelUnavailable
}
