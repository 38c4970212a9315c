//! The guard: a small OpenCode plugin that gatekeep writes for each run, so
//! that OpenCode's password never reaches the agent's tools.
//!
//! OpenCode 1.18.33 reads `OPENCODE_SERVER_PASSWORD` from its environment
//! once, when the server starts; every tool it runs inherits that
//! environment, and `/proc/<opencode>/environ` shows it to the same user.
//! Measured on the real server (docs/design.md, "Nothing but gatekeep
//! answers"): a plugin loaded when the instance starts — before any tool can
//! run — that overwrites the value in the environment block and removes the
//! variable leaves the server authenticated and the tools without it. It
//! also makes OpenCode non-dumpable (Linux), so the same user cannot read
//! its memory. The plugin writes a marker when it has run, saying whether
//! it could wipe the value; without a marker that says so the run is
//! refused before the prompt. The marker is removed before every start of
//! the server, so a restart's is its own.

use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The plugin for one run, in a private directory removed with it.
#[derive(Debug)]
pub struct Guard {
    dir: PathBuf,
}

/// The plugin's text. `{marker}` is where it reports that it ran.
const PLUGIN: &str = r#"// Written by gatekeep for one run; removed when the run ends.
// OpenCode's password must never reach the agent's tools: they inherit this
// process's environment. The server read it at start-up already.
const name = "OPENCODE_SERVER_PASSWORD";
const secret = process.env[name] ?? "";
let wiped = false;
try {
  const { dlopen, FFIType, toArrayBuffer } = await import("bun:ffi");
  const linux = process.platform === "linux";
  const libc = dlopen(linux ? "libc.so.6" : "libc.dylib", {
    getenv: { args: [FFIType.ptr], returns: FFIType.ptr },
    ...(linux ? { prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 } } : {}),
  });
  // Overwrite the value where /proc/<pid>/environ shows it.
  const at = libc.symbols.getenv(Buffer.from(name + "\0"));
  if (at && secret.length) new Uint8Array(toArrayBuffer(at, 0, secret.length)).fill(0);
  wiped = true;
  // PR_SET_DUMPABLE 0: the same user can no longer read this process's memory.
  if (linux) libc.symbols.prctl(4, 0, 0, 0, 0);
} catch {}
delete process.env[name];
await Bun.write({marker}, JSON.stringify({ pid: process.pid, wiped }));
export const GatekeepGuard = async () => ({});
"#;

impl Guard {
    /// Write the plugin into a new private directory.
    pub fn install() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "gatekeep-guard-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let guard = Self { dir };
        let marker =
            serde_json::to_string(&guard.marker().to_string_lossy()).map_err(io::Error::other)?;
        std::fs::write(guard.plugin(), PLUGIN.replace("{marker}", &marker))?;
        Ok(guard)
    }

    /// What OpenCode's `plugin` list names it by.
    #[must_use]
    pub fn plugin_spec(&self) -> String {
        format!("file://{}", self.plugin().display())
    }

    /// Before a start of the server: the marker of an earlier one must
    /// not count for it.
    pub fn reset(&self) {
        let _ = std::fs::remove_file(self.marker());
    }

    /// Wait up to `bound` for the plugin to report that it ran and wiped
    /// the password.
    pub async fn loaded_within(&self, bound: Duration) -> bool {
        #[derive(serde::Deserialize)]
        struct Marker {
            wiped: bool,
        }
        let until = tokio::time::Instant::now() + bound;
        loop {
            // A marker being written may not parse yet: read it again.
            let marker = std::fs::read_to_string(self.marker()).ok();
            if let Some(m) = marker.and_then(|t| serde_json::from_str::<Marker>(&t).ok()) {
                return m.wiped;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn plugin(&self) -> PathBuf {
        self.dir.join("gatekeep-guard.js")
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("loaded")
    }

    /// The private directory (for tests).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_private_names_its_marker_and_goes_with_the_run() {
        let guard = Guard::install().expect("installed");
        let dir = guard.dir().to_owned();
        let mode = std::fs::metadata(&dir).expect("dir").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        let text = std::fs::read_to_string(guard.plugin()).expect("plugin");
        assert!(text.contains(&guard.marker().to_string_lossy().into_owned()));
        assert!(guard.plugin_spec().starts_with("file:///"));
        drop(guard);
        assert!(!dir.exists(), "removed with the run");
    }
}
