//! Which OpenCode gatekeep drives (docs/design.md, "OpenCode versions").
//!
//! Checked once the server is up and before anything reaches the agent:
//! the version it reports (`GET /global/health`), and that it still serves
//! the routes gatekeep uses (`GET /permission`). OpenCode 1.18 serves those
//! and a newer `/api/...` protocol side by side; a release that drops the
//! old routes is refused with a clear message instead of a run that hangs.

use std::fmt;

/// The oldest release gatekeep keeps every promise with: the first of the
/// compatibility matrix in `scripts/test`. (1.3.2 and 1.1.65 let an edit
/// through without asking under a workspace config of `edit: ask`.)
pub const OLDEST: Version = Version::new(1, 14, 41);
/// The newest release in the test matrix (the pinned one). Newer ones are
/// run, with a note, as long as they serve the routes gatekeep uses.
pub const NEWEST_TESTED: Version = Version::new(1, 18, 33);

/// A release number, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    major: u32,
    minor: u32,
    patch: u32,
}

impl Version {
    #[must_use]
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// `1.18.33`, `v1.18.33` or `1.18.33-beta.1`; `None` for anything
    /// else (a development build says `0.0.0-…` or a commit).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        // OpenCode 2 says `opencode v2.2.5`; 1.x says `1.18.33`.
        let text = text.trim();
        let core = text
            .strip_prefix("opencode ")
            .unwrap_or(text)
            .trim_start_matches('v');
        let core = core.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let version = Self::new(parts.next()??, parts.next()??, parts.next()??);
        (parts.next().is_none() && version != Self::new(0, 0, 0)).then_some(version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The supported range, as said in messages.
#[must_use]
pub fn range() -> String {
    format!("{OLDEST} or a newer 1.x (tested up to {NEWEST_TESTED})")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompatError {
    #[error(
        "OpenCode {found} is too old for gatekeep, which supports {}: upgrade it \
         (npm install -g opencode-ai@latest)",
        range()
    )]
    TooOld { found: Version },
    #[error(
        "OpenCode {found} is OpenCode 2 (`@opencode/cli`), whose server speaks another API: \
         this gatekeep drives OpenCode {} only. For gatekeep runs install \
         `npm install -g opencode-ai@{NEWEST_TESTED}` (OpenCode 2's installer replaces it: \
         give its path after `--`)",
        range()
    )]
    NextMajor { found: Version },
    #[error(
        "this OpenCode ({found}) no longer serves the API gatekeep drives (GET /permission \
         answered HTTP {status}); gatekeep supports {}",
        range()
    )]
    RoutesGone { found: String, status: u16 },
}

/// What the check found, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Inside the tested range.
    Tested(Version),
    /// Newer than any tested release, and it serves gatekeep's routes.
    Newer(Version),
    /// It did not say which release it is.
    Unknown,
}

/// Judges what the server reported: its version (if it said) and the
/// status of `GET /permission` (`None`: that call failed in transport, no
/// verdict from it).
pub fn judge(
    version: Option<&str>,
    permission_status: Option<u16>,
) -> Result<Support, CompatError> {
    let version = version.and_then(Version::parse);
    if let Some(status @ (404 | 405 | 410)) = permission_status {
        return Err(CompatError::RoutesGone {
            found: version.map_or_else(|| "unknown version".to_owned(), |v| v.to_string()),
            status,
        });
    }
    Ok(match version {
        Some(found) if found < OLDEST => return Err(CompatError::TooOld { found }),
        Some(found) if found.major > OLDEST.major => return Err(CompatError::NextMajor { found }),
        Some(found) if found > NEWEST_TESTED => Support::Newer(found),
        Some(found) => Support::Tested(found),
        None => Support::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_releases_are_spelled() {
        assert_eq!(Version::parse("1.18.33"), Some(Version::new(1, 18, 33)));
        assert_eq!(Version::parse(" v1.2.3\n"), Some(Version::new(1, 2, 3)));
        assert_eq!(
            Version::parse("1.19.0-beta.2"),
            Some(Version::new(1, 19, 0))
        );
        assert_eq!(
            Version::parse("opencode v2.2.5\n"),
            Some(Version::new(2, 2, 5))
        );
        for odd in ["", "1.18", "1.18.x", "0.0.0-dev-202601", "local", "1.2.3.4"] {
            assert_eq!(Version::parse(odd), None, "{odd}");
        }
        assert!(Version::new(1, 9, 0) < Version::new(1, 18, 0));
    }

    #[test]
    fn the_range_is_enforced_and_newer_releases_run_while_they_serve_the_routes() {
        assert_eq!(
            judge(Some("1.18.33"), Some(200)),
            Ok(Support::Tested(NEWEST_TESTED))
        );
        assert_eq!(
            judge(Some(&OLDEST.to_string()), Some(200)),
            Ok(Support::Tested(OLDEST))
        );
        assert_eq!(
            judge(Some("opencode v2.2.5"), Some(200)),
            Err(CompatError::NextMajor {
                found: Version::new(2, 2, 5)
            }),
            "OpenCode 2 answers every path with its web page, 200"
        );
        assert_eq!(
            judge(Some("1.0.200"), Some(200)),
            Err(CompatError::TooOld {
                found: Version::new(1, 0, 200)
            })
        );
        assert_eq!(
            judge(Some("1.19.0"), Some(200)),
            Ok(Support::Newer(Version::new(1, 19, 0)))
        );
        assert!(matches!(
            judge(Some("1.19.0"), Some(404)),
            Err(CompatError::RoutesGone { status: 404, .. })
        ));
        assert_eq!(judge(None, None), Ok(Support::Unknown));
        let err = judge(Some("1.0.0"), Some(200))
            .expect_err("too old")
            .to_string();
        assert!(
            err.contains("1.0.0") && err.contains(&OLDEST.to_string()),
            "{err}"
        );
    }
}
