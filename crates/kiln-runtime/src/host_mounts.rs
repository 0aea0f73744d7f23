//! Mounts on the host side, outside any container: runtime.json's `mounts` (a writable root's
//! tmpfs and overlay, a read-only root's bind, binds a container shares), made by
//! [`mount_host`] before the container starts. The lifecycle keeps the targets of those a
//! bundle's preparation stacked and undoes them, the last first, when the container is cleaned
//! up.

use crate::error::{RuntimeError, errno};
use crate::rootfs::mount_options;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::path::Path;

/// Mount on the host side (kiln-init's runtime.json mounts): `target` is created first, and an
/// overlay's upper and work directories too. An entry with only propagation options changes
/// the propagation of what is mounted at `target`. Returns whether a new mount was stacked on
/// `target` (a remount or a propagation change stacks none): the caller undoes it.
pub fn mount_host(
    source: &str,
    target: &Path,
    fstype: &str,
    options: &[String],
) -> Result<bool, RuntimeError> {
    let (flags, propagation, data) = mount_options(options);
    let prep = |source: io::Error| RuntimeError::Prepare {
        path: target.to_path_buf(),
        source,
    };
    fs::create_dir_all(target).map_err(prep)?;
    for d in &data {
        if let Some(dir) = d
            .strip_prefix("upperdir=")
            .or_else(|| d.strip_prefix("workdir="))
        {
            fs::create_dir_all(dir).map_err(prep)?;
        }
    }
    let none: Option<&str> = None;
    let only_propagation = source.is_empty() && fstype.is_empty() && flags.is_empty();
    let mut stacked = false;
    if !only_propagation {
        let data = data.join(",");
        mount(
            (!source.is_empty()).then_some(source),
            target,
            (!fstype.is_empty()).then_some(fstype),
            flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(|e| prep(errno(e)))?;
        // A remount changes a mount; every other call stacks a new one.
        stacked = !flags.contains(MsFlags::MS_REMOUNT);
    }
    if !propagation.is_empty() {
        let changed = mount(none, target, none, propagation, none).map_err(|e| prep(errno(e)));
        if let Err(e) = changed {
            if stacked {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(stacked)
}

/// Undo one host mount (detached, so that a process still using it does not keep it).
pub(crate) fn unmount(target: &Path) -> Result<(), String> {
    match umount2(target, MntFlags::MNT_DETACH) {
        // Already gone (not a mount point any more, or the path with it).
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(format!("unmounting {}: {}", target.display(), errno(e))),
    }
}
