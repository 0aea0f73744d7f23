//! Overlay mounts of a stage's layers: the unpacked layer directories as read-only lower
//! directories and a fresh upper directory that collects the step's changes. After the step the
//! upper directory *is* the new layer, in overlayfs' format (whiteouts as 0/0 character devices,
//! opaque directories marked with the `trusted.overlay.opaque` attribute, or
//! `user.overlay.opaque` in a user namespace: a rootless build mounts with `userxattr` there,
//! where `trusted.*` attributes cannot be set).

use crate::error::{BuildError, io_err};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A mounted overlay, unmounted on drop.
pub struct Overlay {
    /// Where the merged view is.
    pub merged: PathBuf,
    /// The upper directory (absent for read-only views).
    pub upper: Option<PathBuf>,
    scratch: Option<tempfile::TempDir>,
}

impl Overlay {
    /// Mount `lowers` (bottom first) with a new upper directory, all under `scratch_root`.
    pub fn writable(scratch_root: &Path, lowers: &[PathBuf]) -> Result<Overlay, BuildError> {
        Self::mount(scratch_root, lowers, true)
    }

    /// Mount `lowers` (bottom first) read-only.
    pub fn readonly(scratch_root: &Path, lowers: &[PathBuf]) -> Result<Overlay, BuildError> {
        Self::mount(scratch_root, lowers, false)
    }

    fn mount(
        scratch_root: &Path,
        lowers: &[PathBuf],
        writable: bool,
    ) -> Result<Overlay, BuildError> {
        fs::create_dir_all(scratch_root).map_err(io_err(scratch_root))?;
        let scratch = tempfile::Builder::new()
            .prefix("ov")
            .tempdir_in(scratch_root)
            .map_err(io_err(scratch_root))?;
        let s = scratch.path();
        let mk = |name: &str| -> Result<PathBuf, BuildError> {
            let p = s.join(name);
            fs::create_dir(&p).map_err(io_err(&p))?;
            Ok(p)
        };
        let merged = mk("m")?;
        let empty = mk("e")?;
        // Short symlinks keep the mount options under the kernel's one-page limit.
        let links = mk("l")?;
        let mut lowerdirs = Vec::new();
        for (i, dir) in distinct_lowers(lowers).into_iter().enumerate().rev() {
            let link = links.join(i.to_string());
            // The link lives elsewhere: a relative store path would point nowhere.
            let target = std::path::absolute(dir).map_err(io_err(dir))?;
            symlink(&target, &link).map_err(io_err(&link))?;
            lowerdirs.push(link.display().to_string());
        }
        lowerdirs.push(empty.display().to_string());
        if !writable && lowerdirs.len() == 1 {
            lowerdirs.push(mk("e2")?.display().to_string());
        }
        let mut options = format!("lowerdir={}", lowerdirs.join(":"));
        if kiln_fs::unpack::in_user_namespace() {
            options.insert_str(0, "userxattr,");
        }
        let upper = if writable {
            let upper = mk("u")?;
            let work = mk("w")?;
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
            Some(upper)
        } else {
            None
        };
        if options.len() >= 4000 {
            return Err(BuildError::Io {
                path: merged,
                source: std::io::Error::other(format!(
                    "{} layers are too many to mount at once",
                    lowers.len()
                )),
            });
        }
        let flags = if writable {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            flags,
            Some(options.as_str()),
        )
        .map_err(|e| BuildError::Io {
            path: merged.clone(),
            source: std::io::Error::other(format!("mounting overlay: {e}")),
        })?;
        Ok(Overlay {
            merged,
            upper,
            scratch: Some(scratch),
        })
    }

    /// Unmount and hand over the upper directory with the scratch area that holds it (removed
    /// when the returned guard drops, unless the upper directory was moved away first).
    pub fn finish(mut self) -> Result<(PathBuf, tempfile::TempDir), BuildError> {
        self.unmount()?;
        let upper = self.upper.take().ok_or_else(|| BuildError::Io {
            path: self.merged.clone(),
            source: std::io::Error::other("read-only overlay has no changes"),
        })?;
        let scratch = self.scratch.take().ok_or_else(|| BuildError::Io {
            path: self.merged.clone(),
            source: std::io::Error::other("overlay already finished"),
        })?;
        Ok((upper, scratch))
    }

    fn unmount(&self) -> Result<(), BuildError> {
        match umount2(&self.merged, MntFlags::empty()) {
            Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
            Err(_) => umount2(&self.merged, MntFlags::MNT_DETACH).map_err(|e| BuildError::Io {
                path: self.merged.clone(),
                source: std::io::Error::other(format!("unmounting overlay: {e}")),
            }),
        }
    }
}

/// `lowers` (bottom first) with each directory only at its topmost place. Two steps can
/// produce byte-identical layers (the same unpacked directory), and overlayfs refuses a lower
/// directory named twice (ELOOP). Dropping the lower occurrences changes nothing in the merged
/// view: the upper occurrence names the same paths, and it decides each of them.
fn distinct_lowers(lowers: &[PathBuf]) -> Vec<&PathBuf> {
    lowers
        .iter()
        .enumerate()
        .filter(|(i, dir)| !lowers[i + 1..].contains(dir))
        .map(|(_, dir)| dir)
        .collect()
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_named_twice_keeps_its_topmost_place() {
        let p = |s: &str| PathBuf::from(s);
        let lowers = [p("/base"), p("/a"), p("/b"), p("/a"), p("/c"), p("/a")];
        assert_eq!(
            distinct_lowers(&lowers),
            vec![&p("/base"), &p("/b"), &p("/c"), &p("/a")]
        );
        assert_eq!(distinct_lowers(&[]), Vec::<&PathBuf>::new());
    }
}
