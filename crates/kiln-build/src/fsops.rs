//! File operations inside a stage's root filesystem, as COPY, ADD and WORKDIR need them. Paths
//! in the root are resolved as the container would see them: symlinks are followed, but never
//! out of the root (an absolute link target or `..` stops at the root, like `chroot`).

use crate::error::{BuildError, io_err};
use kiln_fs::unpack::set_mtime;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Component, Path, PathBuf};

/// Resolve `path` (absolute within the container) under `root`, following symlinks inside the
/// root. The final component is followed too when `follow_last` is set. Missing components are
/// kept as they are.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> PathBuf {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = root.join(resolved.join("/")).join(&part);
        let is_last = pending.is_empty();
        if (!is_last || follow_last)
            && links < 255
            && let Ok(target) = fs::read_link(&candidate)
        {
            links += 1;
            let target = target.to_string_lossy().to_string();
            if target.starts_with('/') {
                resolved.clear();
            }
            for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                pending.push(c.to_string());
            }
            continue;
        }
        resolved.push(part);
    }
    root.join(resolved.join("/"))
}

/// Owner and mode applied to what COPY and ADD write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs {
    /// `--chown`: the owner of everything written.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`: the mode of everything written.
    pub mode: Option<u32>,
    /// Keep the source's owner when `owner` is unset (copies from stages and images); otherwise
    /// files from the build context belong to root.
    pub keep_owner: bool,
}

/// Create the directory `path` in the root (and missing parents, 0755, owned by `owner` or
/// root), following symlinks inside the root. A symlink whose target does not exist yet gets
/// its target created, with the target's missing parents, as BuildKit does.
pub fn mkdir_all(
    root: &Path,
    path: &str,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, BuildError> {
    let mut current = String::new();
    for part in path.split('/').filter(|c| !c.is_empty()) {
        current.push('/');
        current.push_str(part);
        let p = resolve_in_root(root, &current, true);
        match fs::metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io_err(&p)(io::Error::other(format!(
                    "`{current}` exists and is not a directory"
                ))));
            }
            Err(_) => create_resolved(root, &p, &current, owner)?,
        }
    }
    Ok(resolve_in_root(root, path, true))
}

/// Create the missing directories of `resolved`, a path [`resolve_in_root`] gave: the part of
/// it that exists has no symlinks left, the rest is missing. `path` names it in errors.
fn create_resolved(
    root: &Path,
    resolved: &Path,
    path: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    let rel = resolved.strip_prefix(root).unwrap_or(resolved);
    let mut p = root.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                // A link loop (resolution gave up) or a file on the way.
                return Err(io_err(&p)(io::Error::other(format!(
                    "cannot create the directory `{path}`: `{}` is not a directory",
                    p.strip_prefix(root).unwrap_or(&p).display()
                ))));
            }
            Err(_) => {
                fs::create_dir(&p).map_err(io_err(&p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(io_err(&p))?;
                let (u, g) = owner.unwrap_or((0, 0));
                lchown(&p, Some(u), Some(g)).map_err(io_err(&p))?;
            }
        }
    }
    Ok(())
}

/// Copy `src` (a file, directory or symlink on the host side) to `dest` (a host path already
/// resolved inside the root). Directories are merged into an existing directory. Paths for which
/// `skip` says yes (excluded by .dockerignore) are left out.
pub fn copy_tree(
    src: &Path,
    dest: &Path,
    attrs: Attrs,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let ft = meta.file_type();
    let (uid, gid) = attrs.owner.unwrap_or(if attrs.keep_owner {
        (meta.uid(), meta.gid())
    } else {
        (0, 0)
    });
    if ft.is_dir() {
        match fs::symlink_metadata(dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                remove(dest)?;
                fs::create_dir(dest).map_err(io_err(dest))?;
            }
            Err(_) => fs::create_dir(dest).map_err(io_err(dest))?,
        }
        let mut children: Vec<_> = fs::read_dir(src)
            .map_err(io_err(src))?
            .collect::<Result<_, _>>()
            .map_err(io_err(src))?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            if skip(&child.path()) {
                continue;
            }
            copy_tree(&child.path(), &dest.join(child.file_name()), attrs, skip)?;
        }
        finish(dest, &meta, uid, gid, attrs.mode)?;
        return Ok(());
    }
    if fs::symlink_metadata(dest).is_ok() {
        remove(dest)?;
    }
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err(src))?;
        symlink(&target, dest).map_err(io_err(dest))?;
        lchown(dest, Some(uid), Some(gid)).map_err(io_err(dest))?;
        return Ok(());
    }
    if ft.is_file() {
        fs::copy(src, dest).map_err(io_err(dest))?;
    } else if is_special(&ft) {
        // Device nodes, FIFOs and sockets of a stage's root (its /dev), as BuildKit copies
        // them: made anew with the same type and device number (as root).
        make_node(dest, &meta).map_err(io_err(dest))?;
    } else {
        return Err(io_err(src)(io::Error::other(
            "only files, directories, symlinks and device nodes can be copied",
        )));
    }
    finish(dest, &meta, uid, gid, attrs.mode)
}

fn is_special(ft: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket()
}

/// A node at `dest` of `meta`'s type, permissions and device number.
fn make_node(dest: &Path, meta: &fs::Metadata) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag};
    let kind = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
    let perm = Mode::from_bits_truncate(meta.mode() & 0o7777);
    nix::sys::stat::mknod(dest, kind, perm, meta.rdev()).map_err(io::Error::from)
}

/// Give the directory `dest` the owner, mode and modification time of `src` (or `attrs`'
/// owner and mode), as [`copy_tree`] gives the directories it copies.
pub fn copy_attrs(src: &Path, dest: &Path, attrs: Attrs) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    let (uid, gid) = attrs.owner.unwrap_or(if attrs.keep_owner {
        (meta.uid(), meta.gid())
    } else {
        (0, 0)
    });
    finish(dest, &meta, uid, gid, attrs.mode)
}

/// Remove whatever is at `path` (a directory with its contents); nothing there is fine.
pub fn remove(path: &Path) -> Result<(), BuildError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
        Err(_) => Ok(()),
    }
}

fn finish(
    dest: &Path,
    meta: &fs::Metadata,
    uid: u32,
    gid: u32,
    mode: Option<u32>,
) -> Result<(), BuildError> {
    lchown(dest, Some(uid), Some(gid)).map_err(io_err(dest))?;
    let mode = mode.unwrap_or(meta.mode() & 0o7777);
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(io_err(dest))?;
    set_mtime(dest, u64::try_from(meta.mtime()).unwrap_or(0)).map_err(io_err(dest))
}

/// Whether a relative path stays inside its base (no `..` beyond the start).
pub fn stays_inside(rel: &Path) -> bool {
    let mut depth = 0i32;
    for c in rel.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

/// Look up a user (name or number) and group in the root's /etc/passwd and /etc/group, as
/// `USER` and `--chown` do. `user` may be `name`, `uid`, `name:group` or `uid:gid`.
pub fn lookup_user(root: &Path, spec: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = fs::read_to_string(resolve_in_root(root, "/etc/passwd", true)).unwrap_or_default();
    let groups = fs::read_to_string(resolve_in_root(root, "/etc/group", true)).unwrap_or_default();
    let (uid, primary, name) = match user.parse::<u32>() {
        Ok(uid) => {
            let entry = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == user);
            let gid = entry
                .as_ref()
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(uid);
            (
                uid,
                if group.is_none() && entry.is_none() {
                    0
                } else {
                    gid
                },
                entry.map(|f| f[0].to_string()),
            )
        }
        Err(_) => {
            let f = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == user)
                .ok_or_else(|| format!("unknown user {user:?}: not in /etc/passwd of the image"))?;
            (
                f[2].parse()
                    .map_err(|_| format!("bad uid for {user:?} in /etc/passwd"))?,
                f[3].parse()
                    .map_err(|_| format!("bad gid for {user:?} in /etc/passwd"))?,
                Some(user.to_string()),
            )
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("unknown group {g:?}: not in /etc/group of the image"))?,
        },
    };
    let mut extra = Vec::new();
    if let Some(name) = name.filter(|_| group.is_none()) {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() > 3
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && g != gid
            {
                extra.push(g);
            }
        }
    }
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        symlink("usr/bin", root.join("bin")).expect("link");
        symlink("/../../etc", root.join("escape")).expect("link");
        assert_eq!(
            resolve_in_root(root, "/bin/sh", true),
            root.join("usr/bin/sh")
        );
        assert_eq!(
            resolve_in_root(root, "/escape/passwd", true),
            root.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(root, "/../../x", true), root.join("x"));
        assert_eq!(resolve_in_root(root, "/bin", false), root.join("bin"));
    }

    #[test]
    fn directories_are_created_through_dangling_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        symlink("/opt/app/data", root.join("data")).expect("link");
        symlink("rel/sub", root.join("rl")).expect("link");
        symlink("../../x", root.join("up")).expect("link");
        let d = mkdir_all(root, "/data/deep", Some((7, 8))).expect("through absolute link");
        assert_eq!(d, root.join("opt/app/data/deep"));
        assert!(d.is_dir());
        assert!(
            fs::symlink_metadata(root.join("data"))
                .expect("link")
                .file_type()
                .is_symlink()
        );
        let m = fs::metadata(root.join("opt/app")).expect("created");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (7, 8, 0o755));
        let d = mkdir_all(root, "/rl/", None).expect("through relative link");
        assert_eq!(d, root.join("rel/sub"));
        assert!(d.is_dir());
        // A target that climbs out stays inside the root.
        let d = mkdir_all(root, "/up", None).expect("inside the root");
        assert_eq!(d, root.join("x"));
        // A file on the way is an error, not a replacement.
        fs::write(root.join("file"), "f").expect("write");
        symlink("/file/sub", root.join("tofile")).expect("link");
        assert!(mkdir_all(root, "/tofile/x", None).is_err());
        assert!(root.join("file").is_file());
    }

    #[test]
    fn users_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("etc")).expect("mkdir");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("w");
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
        )
        .expect("w");
        assert_eq!(
            lookup_user(dir.path(), "app").expect("app"),
            (1000, 1001, vec![10])
        );
        assert_eq!(
            lookup_user(dir.path(), "app:wheel").expect("app"),
            (1000, 10, vec![])
        );
        assert_eq!(lookup_user(dir.path(), "42:7").expect("n"), (42, 7, vec![]));
        assert_eq!(lookup_user(dir.path(), "1000").expect("n").1, 1001);
        assert!(lookup_user(dir.path(), "nobody").is_err());
    }
}
