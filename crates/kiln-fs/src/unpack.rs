//! Unpacking a layer tar into a directory in overlayfs' format, so that it can serve as a
//! lower directory: `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` the
//! `trusted.overlay.opaque` attribute on its directory (`user.overlay.opaque` in a user
//! namespace, for a rootless build's overlays). Hostile members are refused: paths that
//! climb out, entries beneath a symlink or a non-directory, hard links to paths that are not in
//! the layer.

use crate::entry::{Entry, Kind};
use crate::layers::{entry_from_tar, normalize};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

/// A layer or entry that could not be written into a directory.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A member refused as hostile (it climbs out, writes beneath a symlink, ...).
    #[error("layer {layer}: refusing entry `{path}`: {message}")]
    Refused {
        /// The layer digest, or what the entries came from.
        layer: String,
        /// The member's path as it is in the layer.
        path: String,
        /// Why.
        message: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path it failed on.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.into();
    move |source| UnpackError::Io { path, source }
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// The attribute overlayfs reads to treat a directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same, for overlayfs mounted with `userxattr` (in a user namespace, where `trusted.*`
/// attributes cannot be set).
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The opaque attribute for the overlays this process mounts: [`USER_OPAQUE_XATTR`] in a user
/// namespace (see [`in_user_namespace`]), else [`OPAQUE_XATTR`].
pub fn opaque_xattr() -> &'static str {
    if in_user_namespace() {
        USER_OPAQUE_XATTR
    } else {
        OPAQUE_XATTR
    }
}

/// Whether this process is in a user namespace other than the initial one (its uid map is not
/// the identity over every id), as a rootless build is.
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| {
        fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
    })
}

/// Unpack the (uncompressed) layer `reader` into the empty directory `dest`. `layer` names the
/// layer in errors.
pub fn unpack(reader: impl Read, dest: &Path, layer: &str) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let bad = |path: &str, message: String| UnpackError::Refused {
        layer: layer.to_string(),
        path: path.to_string(),
        message,
    };
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for member in archive.entries().map_err(io_err(dest))? {
        let mut member = member.map_err(io_err(dest))?;
        let raw = String::from_utf8_lossy(&member.path_bytes()).to_string();
        let rel = match normalize(&raw) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(m) => return Err(bad(&raw, m)),
        };
        let (parent, base) = match rel.rsplit_once('/') {
            Some((p, b)) => (Some(p), b),
            None => (None, rel.as_str()),
        };
        let parent_dir = match parent {
            Some(p) => ensure_dir(dest, p).map_err(|m| bad(&raw, m))?,
            None => dest.to_path_buf(),
        };
        if base == OPAQUE {
            xattr::set(&parent_dir, opaque_xattr(), b"y").map_err(io_err(&parent_dir))?;
            continue;
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            let target = parent_dir.join(hidden);
            remove_existing(&target)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| io_err(&target)(e.into()))?;
            continue;
        }
        let Some(entry) = entry_from_tar(&mut member, rel.clone()).map_err(io_err(dest))? else {
            continue;
        };
        let target = parent_dir.join(base);
        create(&entry, &target, dest, &mut member).map_err(|e| match e {
            Create::Bad(m) => bad(&raw, m),
            Create::Io(e) => io_err(&target)(e),
        })?;
        if entry.kind == Kind::Dir {
            dir_times.push((target, entry.mtime));
        }
    }
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Write one entry of a flattened image (paths already normalised and checked) under `root`.
/// A directory's time is its entry's: what is written into it afterwards leaves it as it was.
pub fn write_entry(root: &Path, entry: &Entry, data: &mut dyn Read) -> Result<(), UnpackError> {
    use std::os::unix::fs::MetadataExt as _;
    let target = root.join(&entry.path);
    // Adding the entry changes its directory's time: put back afterwards.
    let parent = target
        .parent()
        .filter(|p| *p != root)
        .and_then(|p| Some((p, fs::symlink_metadata(p).ok()?)))
        .filter(|(_, m)| m.is_dir())
        .map(|(p, m)| (p, m.mtime(), m.mtime_nsec()));
    create(entry, &target, root, data).map_err(|e| match e {
        Create::Bad(m) => UnpackError::Refused {
            layer: "flattened image".into(),
            path: entry.path.clone(),
            message: m,
        },
        Create::Io(e) => io_err(&target)(e),
    })?;
    if entry.kind == Kind::Dir {
        set_mtime(&target, entry.mtime).map_err(io_err(&target))?;
    }
    if let Some((dir, secs, nanos)) = parent {
        set_time(dir, secs, nanos).map_err(io_err(dir))?;
    }
    Ok(())
}

enum Create {
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for Create {
    fn from(e: io::Error) -> Self {
        Create::Io(e)
    }
}

/// Make sure every component of `rel` under `root` is a real directory, creating missing ones.
fn ensure_dir(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("writes beneath the symlink `{part}`"));
            }
            Ok(_) => return Err(format!("writes beneath `{part}`, which is not a directory")),
            Err(_) => {
                fs::create_dir(&p).map_err(|e| e.to_string())?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(p)
}

fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
        Err(_) => Ok(()),
    }
}

fn create(entry: &Entry, target: &Path, root: &Path, data: &mut dyn Read) -> Result<(), Create> {
    let existing = fs::symlink_metadata(target).ok();
    if !(entry.kind == Kind::Dir && existing.as_ref().is_some_and(|m| m.is_dir())) {
        remove_existing(target).map_err(|e| Create::Bad(e.to_string()))?;
    }
    match &entry.kind {
        Kind::Dir => {
            if !target.is_dir() {
                fs::create_dir(target)?;
            }
        }
        Kind::File => {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(target)?;
            io::copy(data, &mut f)?;
        }
        Kind::Symlink(to) => symlink(to, target)?,
        Kind::Hardlink(to) => {
            let Ok(Some(rel)) = normalize(to) else {
                return Err(Create::Bad(format!(
                    "hard link to `{to}` outside the layer"
                )));
            };
            let source = root.join(&rel);
            match fs::symlink_metadata(&source) {
                Ok(m) if !m.is_dir() => {
                    if let Some(parent) = rel.rsplit_once('/').map(|(p, _)| p) {
                        ensure_dir(root, parent).map_err(Create::Bad)?;
                    }
                    fs::hard_link(&source, target)?;
                }
                _ => {
                    return Err(Create::Bad(format!(
                        "hard link to `{to}`, which is not an earlier file of this layer"
                    )));
                }
            }
            return Ok(());
        }
        Kind::Char { major, minor } | Kind::Block { major, minor } => {
            let kind = if matches!(entry.kind, Kind::Char { .. }) {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknod(
                target,
                kind,
                Mode::empty(),
                makedev((*major).into(), (*minor).into()),
            )
            .map_err(|e| Create::Io(e.into()))?;
        }
        Kind::Fifo => {
            nix::unistd::mkfifo(target, Mode::empty()).map_err(|e| Create::Io(e.into()))?;
        }
    }
    let id =
        |n: u64| u32::try_from(n).map_err(|_| Create::Bad(format!("owner {n} is out of range")));
    let (uid, gid) = (id(entry.uid)?, id(entry.gid)?);
    match lchown(target, Some(uid), Some(gid)) {
        // An id the user namespace of a rootless build does not map.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput && in_user_namespace() => {
            return Err(Create::Bad(format!(
                "owner {uid}:{gid} is outside the ids of this rootless build's user namespace \
                 (the user, then the subordinate ranges in /etc/subuid and /etc/subgid): give \
                 the user a larger range, or build as root"
            )));
        }
        r => r?,
    }
    if !matches!(entry.kind, Kind::Symlink(_)) {
        fs::set_permissions(target, fs::Permissions::from_mode(entry.mode))?;
    }
    for (name, value) in &entry.xattrs {
        // Attributes the file system refuses (for example trusted.* on some) are skipped.
        let _ = xattr::set(target, name, value);
    }
    if entry.kind != Kind::Dir {
        set_mtime(target, entry.mtime)?;
    }
    Ok(())
}

/// Set a path's modification time without following a final symlink.
pub fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    set_time(path, i64::try_from(mtime).unwrap_or(i64::MAX), 0)
}

/// Set a path's access and modification times (seconds and nanoseconds) without following a
/// final symlink.
fn set_time(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(secs, nanos);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    b.append_link(&mut h, path, link).expect("link")
                }
                _ => {
                    // Raw names, so that `..` reaches the archive unchanged.
                    let name = path.as_bytes();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.set_cksum();
                    b.append(&h, std::io::empty()).expect("append")
                }
            }
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn hostile_members_are_refused_and_nothing_escapes() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let cases: Vec<Vec<(&str, tar::EntryType, &str)>> = vec![
            vec![("../escape", Regular, "")],
            vec![("a", Symlink, "/"), ("a/etc/passwd", Regular, "")],
            vec![("a", Symlink, ".."), ("a/x", Regular, "")],
            vec![("f", Regular, ""), ("f/x", Regular, "")],
            vec![("h", Link, "../../etc/passwd")],
            vec![("d", Directory, ""), ("d/../../x", Regular, "")],
        ];
        for entries in cases {
            let outer = tempfile::tempdir().expect("tempdir");
            let dest = outer.path().join("root");
            fs::create_dir(&dest).expect("mkdir");
            let data = tar_of(&entries);
            let r = unpack(&data[..], &dest, "sha256:test");
            assert!(r.is_err(), "{entries:?} was accepted");
            let escaped: Vec<_> = fs::read_dir(outer.path())
                .expect("read")
                .flatten()
                .filter(|e| e.file_name() != "root")
                .collect();
            assert!(escaped.is_empty(), "{entries:?} wrote outside: {escaped:?}");
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        use tar::EntryType::{Directory, Regular};
        let dir = tempfile::tempdir().expect("tempdir");
        let data = tar_of(&[
            ("etc", Directory, ""),
            ("etc/.wh.issue", Regular, ""),
            ("etc/.wh..wh..opq", Regular, ""),
        ]);
        unpack(&data[..], dir.path(), "sha256:test").expect("unpack");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = fs::symlink_metadata(dir.path().join("etc/issue")).expect("whiteout");
        assert!(m.file_type().is_char_device() && m.rdev() == 0);
        assert_eq!(
            xattr::get(dir.path().join("etc"), OPAQUE_XATTR).expect("xattr"),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn written_entries_keep_their_directories_times() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write_entry(root, &Entry::dir("etc", 0o755, 1000), &mut io::empty()).expect("dir");
        write_entry(root, &Entry::dir("etc/sub", 0o700, 2000), &mut io::empty()).expect("dir");
        write_entry(
            root,
            &Entry::file("etc/sub/f", 0o644, 2, 5),
            &mut &b"hi"[..],
        )
        .expect("file");
        write_entry(root, &Entry::file("etc/g", 0o644, 0, 7), &mut io::empty()).expect("file");
        let mtime = |p: &str| fs::symlink_metadata(root.join(p)).expect("meta").mtime();
        assert_eq!(
            (mtime("etc"), mtime("etc/sub"), mtime("etc/sub/f")),
            (1000, 2000, 5)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let _ = unpack(&data[..], dir.path(), "sha256:fuzz");
        }
    }
}
