//! A private mount namespace for the whole calling process ([`private_mount_namespace`]), so
//! that what it mounts (a build's overlays) is never seen on the host and disappears with it.

use crate::error::{RuntimeError, errno};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use std::fs;

/// Move the calling process into a mount namespace of its own whose mounts are slaves of the
/// host's: mounts the host makes later still appear in it, but nothing the process mounts
/// propagates out. When the process (and every process it started in that namespace) has
/// ended, its mounts are gone with the namespace, even after SIGKILL.
///
/// Call it at the very start of `main`, before any thread is started: a namespace belongs to
/// a thread, and only threads started afterwards share it. A process that already has other
/// threads gets an error and stays where it is. Returns false, changing nothing, when the
/// process may not create a mount namespace (not root): its mounts are then the host's, as
/// they would be without this call.
pub fn private_mount_namespace() -> Result<bool, RuntimeError> {
    let threads = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        .unwrap_or(1);
    if threads > 1 {
        return Err(RuntimeError::Config(format!(
            "a private mount namespace must be entered before any thread is started \
             (this process has {threads} threads)"
        )));
    }
    // To return to, should making the mounts slaves fail.
    let original = fs::File::open("/proc/self/ns/mnt").ok();
    match unshare(CloneFlags::CLONE_NEWNS) {
        Ok(()) => {}
        Err(nix::Error::EPERM) => return Ok(false),
        Err(e) => return Err(RuntimeError::MountNamespace(errno(e))),
    }
    let slave = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    );
    if let Err(e) = slave {
        // The new namespace still shares the host's mounts both ways: leave it.
        if let Some(ns) = &original {
            let _ = setns(ns, CloneFlags::CLONE_NEWNS);
        }
        return Err(RuntimeError::MountNamespace(errno(e)));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The namespace taken is tested through the `kiln` binary (crates/kiln/tests/run_sandbox.rs):
    // a test harness always has more than one thread.
    #[test]
    fn a_process_with_threads_is_refused_and_stays_in_its_namespace() {
        let before = fs::read_link("/proc/self/ns/mnt").expect("mount namespace");
        // Another thread that lives through the call.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let e = private_mount_namespace().expect_err("refused with threads");
        assert!(e.to_string().contains("before any thread"), "{e}");
        assert_eq!(fs::read_link("/proc/self/ns/mnt").expect("ns"), before);
        drop(tx);
        let _ = other.join();
    }
}
