//! macOS: `libproc` for ancestry, and a watchdog for the parent-death
//! signal macOS does not have.
//!
//! What macOS does not offer is not faked: a same-user process can read
//! gatekeep's environment there (`sysctl KERN_PROCARGS2`), and there is no
//! child subreaper, so [`harden`] reports both as false (docs/design.md).

use std::os::unix::process::CommandExt as _;

use super::Hardening;

pub(super) fn harden() -> Hardening {
    Hardening::default()
}

/// The watchdog's pipe: gatekeep keeps the write end for its whole life.
pub(super) struct Tether(Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>);

/// No parent-death signal on macOS: a watchdog (`sh`, in its own process
/// group) blocks reading a pipe whose only writer is gatekeep. When gatekeep
/// dies, however it dies, the read ends and the watchdog kills the child's
/// process group. The pipe is close-on-exec, so the child never holds it.
pub(super) fn tether(_cmd: &mut tokio::process::Command) -> Tether {
    Tether(nix::unistd::pipe().ok())
}

pub(super) fn hold(tether: Tether, pid: u32) {
    let Some((read, write)) = tether.0 else {
        return;
    };
    let script = format!("read _ignored; kill -KILL -{pid} 2>/dev/null");
    let spawned = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .stdin(read)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if spawned.is_ok() {
        // Held open for the life of the process: only its death closes it.
        std::mem::forget(write);
    }
}

fn bsd_info(pid: u32) -> Option<libc::proc_bsdinfo> {
    let mut info = std::mem::MaybeUninit::<libc::proc_bsdinfo>::zeroed();
    let size = i32::try_from(std::mem::size_of::<libc::proc_bsdinfo>()).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: `info` is a writable buffer of exactly `size` bytes, and
    // proc_pidinfo writes at most that many.
    let written = unsafe {
        libc::proc_pidinfo(
            i32::try_from(pid).ok()?,
            libc::PROC_PIDTBSDINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    #[allow(unsafe_code)]
    // SAFETY: a full-size answer initialised every field (zeroed before).
    (written == size).then(|| unsafe { info.assume_init() })
}

pub(super) fn process(pid: u32) -> Option<super::Proc> {
    let info = bsd_info(pid)?;
    Some(super::Proc {
        parent: info.pbi_ppid,
        // SZOMB
        zombie: info.pbi_status == 5,
    })
}

pub(super) fn command_name(pid: u32) -> Option<String> {
    let info = bsd_info(pid)?;
    let bytes: Vec<u8> = info
        .pbi_comm
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

pub(super) fn sandbox() -> Result<std::path::PathBuf, String> {
    Err(
        "the agent's box is not available on macOS yet (gatekeep builds it with Linux \
         namespaces); run the agent as another user for a boundary"
            .to_owned(),
    )
}

pub(super) fn all_pids() -> Vec<u32> {
    let mut pids = vec![0i32; 16_384];
    let size = i32::try_from(pids.len() * std::mem::size_of::<i32>()).unwrap_or(i32::MAX);
    #[allow(unsafe_code)]
    // SAFETY: `pids` is a writable buffer of `size` bytes.
    let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), size) };
    let n = usize::try_from(n).unwrap_or(0).min(pids.len());
    pids.iter()
        .take(n)
        .filter_map(|p| u32::try_from(*p).ok())
        .collect()
}
