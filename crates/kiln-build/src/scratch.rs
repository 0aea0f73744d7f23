//! Each build's own scratch directory under the working area's `tmp/`, and the removal of what
//! a killed build left there.
//!
//! A build's scratch directory `tmp/NAME` comes with a lock file `tmp/NAME.lock` that the build
//! holds locked (`flock`) for as long as it runs. A later build, or `kiln cache clean`, can then
//! tell a scratch directory whose build died (`kill -9`: nothing ran its clean-up) from one a
//! concurrent build still uses, and removes only the first kind ([`remove_stale`]). Live scratch
//! directories are also listed in a process-wide register, which a signal handler empties with
//! [`remove_own`] before the process exits.

use crate::error::{BuildError, io_err};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const LOCK_SUFFIX: &str = ".lock";

/// The scratch directories of this process.
static OWN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A build's scratch directory, locked while it lives and removed when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: fs::File,
}

impl Scratch {
    /// Create a new locked scratch directory in `parent`.
    pub(crate) fn create(parent: &Path) -> Result<Scratch, BuildError> {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        // The lock file appears locked, before the directory exists, so a directory never
        // appears without its lock held.
        let lock_file =
            kiln_fs::locked::create_locked(parent, "s-", LOCK_SUFFIX).map_err(io_err(parent))?;
        let (lock, lock_path) = lock_file.keep().map_err(|e| io_err(parent)(e.error))?;
        let dir = dir_of(&lock_path);
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        if let Ok(mut own) = OWN.lock() {
            own.push(dir.clone());
        }
        Ok(Scratch {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut own) = OWN.lock() {
            own.retain(|d| d != &self.dir);
        }
        remove_tree(&self.dir);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// The scratch directory a lock file guards.
fn dir_of(lock_path: &Path) -> PathBuf {
    let name = lock_path.file_name().unwrap_or_default().to_string_lossy();
    lock_path.with_file_name(name.trim_end_matches(LOCK_SUFFIX))
}

/// Detach the overlay mounts (their merged directories, `m`) a build left anywhere in the
/// scratch space under `dir`: only a process killed before it unmounted them leaves any, and
/// only where it mounted them.
pub(crate) fn detach_overlays(dir: &Path) {
    for e in walkdir::WalkDir::new(dir)
        .max_depth(4)
        .into_iter()
        .flatten()
    {
        if e.file_type().is_dir() && e.file_name() == "m" {
            let _ = nix::mount::umount2(e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Detach the overlays left under `dir`, then remove it.
fn remove_tree(dir: &Path) {
    detach_overlays(dir);
    let _ = fs::remove_dir_all(dir);
}

/// Remove every scratch directory of this process (for a signal handler, before exit).
/// Returns how many there were.
pub fn remove_own() -> usize {
    let Ok(mut own) = OWN.lock() else {
        return 0;
    };
    let dirs: Vec<PathBuf> = own.drain(..).collect();
    for dir in &dirs {
        remove_tree(dir);
        let mut lock = dir.clone().into_os_string();
        lock.push(LOCK_SUFFIX);
        let _ = fs::remove_file(lock);
    }
    dirs.len()
}

/// Remove the scratch directories in `parent` whose build is gone (their lock is free); those
/// of running builds stay. Returns how many were removed.
pub(crate) fn remove_stale(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().ends_with(LOCK_SUFFIX) {
            continue;
        }
        let Ok(lock) = fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let dir = dir_of(&path);
        if dir.exists() {
            remove_tree(&dir);
            removed += 1;
        }
        let _ = fs::remove_file(&path);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scratch_of_dead_builds_is_removed() {
        let parent = tempfile::tempdir().expect("tempdir");
        let live = Scratch::create(parent.path()).expect("scratch");
        fs::write(live.path().join("f"), b"x").expect("test file");
        // A killed build: its lock file is present but nobody holds it.
        let dead_dir = parent.path().join("s-dead");
        fs::create_dir_all(dead_dir.join("ov1/u")).expect("test file");
        fs::write(parent.path().join("s-dead.lock"), b"").expect("test file");

        assert_eq!(remove_stale(parent.path()), 1);
        assert!(!dead_dir.exists());
        assert!(!parent.path().join("s-dead.lock").exists());
        assert!(live.path().join("f").exists());

        let dir = live.path().to_path_buf();
        drop(live);
        assert!(!dir.exists());
        assert_eq!(fs::read_dir(parent.path()).expect("read_dir").count(), 0);

        // A signal handler removes this process's scratch (one test: the register is global).
        let scratch = Scratch::create(parent.path()).expect("scratch");
        let dir = scratch.path().to_path_buf();
        fs::create_dir(dir.join("sub")).expect("test file");
        assert!(remove_own() >= 1);
        assert!(!dir.exists());
        assert_eq!(fs::read_dir(parent.path()).expect("read_dir").count(), 0);
        // The exit that follows a signal skips destructors.
        std::mem::forget(scratch);
    }
}
