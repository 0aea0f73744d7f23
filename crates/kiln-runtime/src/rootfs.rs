//! The container's root file system, set up by the pre-exec hook: the mounts made inside it (OCI
//! mounts with their options, or the builder's standard /proc, /dev and /sys), device nodes,
//! masked and read-only paths, and the switch into it (pivot_root, or move-and-chroot from an
//! initramfs). Runs between fork and exec: system calls on prepared C strings only.
//!
//! Every path under the new root is resolved inside it ([`resolve`]): a mount is made onto
//! `/proc/self/fd/N` of its target opened inside the root, a device or a link is made relative
//! to its parent directory opened that way, so that a symbolic link in the image cannot lead
//! any of them out of the root.

pub(crate) mod resolve;

use crate::error::errno;
use crate::failure::Step;
use crate::hook::{Prepared, at};
use nix::fcntl::{AtFlags, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstat, mknodat, umask};
use nix::unistd::{
    Gid, Uid, UnlinkatFlags, chdir, fchdir, fchownat, pivot_root, symlinkat, unlinkat,
};
use resolve::{Kind, ProcFd};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// No source, file system type or data for mount(2).
const NONE: Option<&CStr> = None;

/// One mount, ready for the system call.
pub(crate) struct PreparedMount {
    pub(crate) source: Option<CString>,
    pub(crate) target: CString,
    pub(crate) fstype: Option<CString>,
    pub(crate) flags: MsFlags,
    pub(crate) data: Option<CString>,
    /// Remount read-only after a bind.
    pub(crate) readonly_bind: bool,
    /// Propagation to set afterwards.
    pub(crate) propagation: MsFlags,
    /// Failure is tolerated (cgroup and mqueue, which a kernel may lack).
    pub(crate) optional: bool,
    /// The target is a file (a bind of a file), not a directory.
    pub(crate) file_target: bool,
}

/// Split OCI mount options into flags, propagation and data.
pub(crate) fn mount_options(options: &[String]) -> (MsFlags, MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "remount" => flags |= MsFlags::MS_REMOUNT,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "private" => propagation = MsFlags::MS_PRIVATE,
            "rprivate" => propagation = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "shared" => propagation = MsFlags::MS_SHARED,
            "rshared" => propagation = MsFlags::MS_SHARED | MsFlags::MS_REC,
            "slave" => propagation = MsFlags::MS_SLAVE,
            "rslave" => propagation = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    (flags, propagation, data)
}

pub(crate) fn setup_root(p: &Prepared) -> io::Result<()> {
    at(p, Step::RootBind, 0, bind_root(p))?;
    // The root bound onto itself: every path under it is resolved from this descriptor.
    let root = open(
        p.rootfs.as_c_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno);
    let root = at(p, Step::RootBind, 0, root)?;
    let root = root.as_fd();
    if p.standard_mounts {
        at(p, Step::StandardMounts, 0, standard_mounts(p, root))?;
    }
    for (i, m) in p.mounts.iter().enumerate() {
        at(p, Step::Mount, i, oci_mount(p, root, m))?;
    }
    // A config that mounts a fresh /dev gets the default devices in it, as runc gives.
    if p.fresh_dev {
        at(p, Step::StandardMounts, 0, default_devices(p, root))?;
    }
    for (i, device) in p.devices.iter().enumerate() {
        at(p, Step::Device, i, make_device(p, root, device))?;
    }
    for (i, path) in p.readonly_paths.iter().enumerate() {
        at(
            p,
            Step::ReadonlyPath,
            i,
            ignore_missing(readonly_path(p, root, path)),
        )?;
    }
    for (i, path) in p.masked_paths.iter().enumerate() {
        at(
            p,
            Step::MaskedPath,
            i,
            ignore_missing(mask_path(p, root, path)),
        )?;
    }
    if p.readonly_root {
        // The root's own mount (the bind of the root onto itself), opened by its path.
        let r = open(
            p.rootfs.as_c_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
        .and_then(|fd| remount_readonly_fd(fd.as_fd(), MsFlags::MS_REC));
        at(p, Step::ReadonlyRoot, 0, r)?;
    }
    at(p, Step::PivotRoot, 0, enter_root(p))
}

/// The path in the container of `host`, one of the paths [`Prepared`] holds under the root
/// (the root's path joined with it): what follows the root's path.
fn inside<'a>(p: &Prepared, host: &'a CStr) -> io::Result<&'a [u8]> {
    let root = p.rootfs.to_bytes();
    match host.to_bytes().strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest[0] == b'/' || root.ends_with(b"/") => Ok(rest),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// Mount onto `target` (a path in the container) opened inside the root: through
/// `/proc/self/fd/N`, the mount lands on what was resolved, not where a name leads.
fn mount_at(
    root: BorrowedFd<'_>,
    target: &[u8],
    source: Option<&CStr>,
    fstype: Option<&CStr>,
    flags: MsFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    let fd = resolve::open(root, target, OFlag::O_PATH)?;
    let path = ProcFd::new(fd.as_fd());
    mount(source, path.as_cstr(), fstype, flags, data).map_err(errno)
}

/// Set the root's propagation and bind the container's root onto itself.
fn bind_root(p: &Prepared) -> io::Result<()> {
    let none: Option<&str> = None;
    if p.root_propagation.contains(MsFlags::MS_SHARED) {
        // Shared (LinuxKit's mount packages): the other mounts stay peers of the host's, so
        // what the container mounts under a shared bind (say /var) appears on the host. Only
        // the root and the container's own root mount are made private, so that its /proc,
        // /dev, ... stay inside and pivot_root is allowed.
        mount(none, "/", none, MsFlags::MS_PRIVATE, none).map_err(errno)?;
        match mount(none, p.rootfs.as_c_str(), none, MsFlags::MS_PRIVATE, none) {
            // Not a mount point: the bind below makes it one, under a private parent.
            Ok(()) | Err(nix::Error::EINVAL) => {}
            Err(e) => return Err(errno(e)),
        }
    } else {
        mount(none, "/", none, MsFlags::MS_REC | p.root_propagation, none).map_err(errno)?;
    }
    mount(
        Some(p.rootfs.as_c_str()),
        p.rootfs.as_c_str(),
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(errno)?;
    Ok(())
}

/// One mount of the config (a failed optional one is skipped).
fn oci_mount(p: &Prepared, root: BorrowedFd<'_>, m: &PreparedMount) -> io::Result<()> {
    let target = inside(p, &m.target)?;
    // The target may live on a file system mounted just before (a /dev tmpfs). A failure
    // here shows in the mount.
    let kind = if m.file_target {
        Kind::File(0o644)
    } else {
        Kind::Dir
    };
    let _ = resolve::create(root, target, kind, &mut ());
    let r = mount_at(
        root,
        target,
        m.source.as_deref(),
        m.fstype.as_deref(),
        m.flags,
        m.data.as_deref(),
    );
    match r {
        Ok(()) => {}
        Err(_) if m.optional => return Ok(()),
        Err(e) => return Err(e),
    }
    // Resolved again each time: the new mount, not what it covers.
    if m.readonly_bind {
        remount_readonly(root, target, MsFlags::empty())?;
    }
    if !m.propagation.is_empty() {
        mount_at(root, target, NONE, NONE, m.propagation, NONE)?;
    }
    Ok(())
}

/// /proc, /sys, a tmpfs /dev with the usual devices, devpts and /dev/shm.
fn standard_mounts(p: &Prepared, root: BorrowedFd<'_>) -> io::Result<()> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_dir = inside(p, &p.proc_dir)?;
    let fresh = mount_at(root, proc_dir, Some(c"proc"), Some(c"proc"), nodev, NONE);
    if refused(&fresh) {
        // In a user namespace, where the host's /proc has parts covered (a container's):
        // the host's, as rootless runtimes do.
        let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount_at(root, proc_dir, Some(c"/proc"), NONE, rbind, NONE)?;
    } else {
        fresh?;
    }
    let sys_dir = inside(p, &p.sys_dir)?;
    let ro = nodev | MsFlags::MS_RDONLY;
    let fresh = mount_at(root, sys_dir, Some(c"sysfs"), Some(c"sysfs"), ro, NONE);
    if refused(&fresh) {
        // In a user namespace sysfs needs a network namespace of its own; with the host's
        // network, the host's /sys, read-only.
        let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount_at(root, sys_dir, Some(c"/sys"), NONE, rbind, NONE)?;
        remount_readonly(root, sys_dir, MsFlags::empty())?;
    } else {
        fresh?;
    }
    let dev_dir = inside(p, &p.dev_dir)?;
    let tmpfs = Some(c"tmpfs");
    mount_at(
        root,
        dev_dir,
        tmpfs,
        tmpfs,
        MsFlags::MS_NOSUID,
        Some(c"mode=755"),
    )?;
    default_devices(p, root)?;
    let (pts, shm) = (inside(p, &p.pts_dir)?, inside(p, &p.shm_dir)?);
    for dir in [pts, shm] {
        // It may exist already; a failure shows in the mount.
        let _ = resolve::create(root, dir, Kind::Dir, &mut ());
    }
    mount_at(
        root,
        pts,
        Some(c"devpts"),
        Some(c"devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=620"),
    )?;
    mount_at(root, shm, Some(c"shm"), tmpfs, nodev, Some(c"mode=1777"))
}

/// The devices every container has in /dev (null, zero, full, random, urandom, tty: bound
/// from the host) and the usual links (ptmx, fd, stdin, stdout, stderr).
fn default_devices(p: &Prepared, root: BorrowedFd<'_>) -> io::Result<()> {
    for (host, inside_path) in &p.host_devices {
        let target = inside(p, inside_path)?;
        // A failure shows in the bind.
        let _ = resolve::create(root, target, Kind::File(0o666), &mut ());
        mount_at(
            root,
            target,
            Some(host.as_c_str()),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )?;
    }
    for (target, link) in &p.dev_links {
        // Best effort, as runc: a link that exists already stays.
        let (dir, name) = resolve::split(inside(p, link)?);
        let mut name_buf = [0u8; 256];
        if let (Ok(dir), Ok(name)) = (
            resolve::open(root, dir, OFlag::O_PATH | OFlag::O_DIRECTORY),
            resolve::to_cstr(name, &mut name_buf),
        ) {
            let _ = symlinkat(target.as_c_str(), &dir, name);
        }
    }
    Ok(())
}

/// Make the prepared root the process's root.
fn enter_root(p: &Prepared) -> io::Result<()> {
    // A handle on the old root: after pivot_root(".", ".") it is stacked on the new one, and
    // "." would name both.
    let old_root = open(
        c"/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    chdir(p.rootfs.as_c_str()).map_err(errno)?;
    let result = match pivot_root(".", ".") {
        Ok(()) => {
            // Make the old root a slave before detaching it, so that the detach does not
            // unmount the host's shared mounts too (runc does the same).
            let none: Option<&str> = None;
            fchdir(&old_root).map_err(errno)?;
            mount(none, ".", none, MsFlags::MS_SLAVE | MsFlags::MS_REC, none)
                .and_then(|()| umount2(".", MntFlags::MNT_DETACH))
                .map_err(errno)
        }
        // The initramfs root cannot be pivoted away from: move the new root over it and chroot,
        // as runc's --no-pivot does.
        Err(nix::Error::EINVAL) => {
            let none: Option<&str> = None;
            mount(Some("."), "/", none, MsFlags::MS_MOVE, none)
                .and_then(|()| nix::unistd::chroot("."))
                .map_err(errno)
        }
        Err(e) => Err(errno(e)),
    };
    drop(old_root);
    result?;
    if p.root_propagation.contains(MsFlags::MS_SHARED) {
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_SHARED | MsFlags::MS_REC, none).map_err(errno)?;
    }
    chdir("/").map_err(errno)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// One of the container's device nodes (replacing whatever is at its path), made in its
/// parent directory resolved inside the root (created if missing).
fn make_device(
    p: &Prepared,
    root: BorrowedFd<'_>,
    device: &(CString, libc::mode_t, libc::dev_t, Uid, Gid),
) -> io::Result<()> {
    let (path, mode, dev, uid, gid) = device;
    let (parent, name) = resolve::split(inside(p, path)?);
    if name.is_empty() || name == b"." || name == b".." {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let dir = resolve::make_dirs(root, parent, &mut ())?;
    let mut name_buf = [0u8; 256];
    let name = resolve::to_cstr(name, &mut name_buf)?;
    // Whatever is there is replaced (a link itself, not what it leads to).
    let _ = unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir);
    let kind = SFlag::from_bits_truncate(*mode & libc::S_IFMT);
    let perm = Mode::from_bits_truncate(*mode & 0o7777);
    // The permissions as given, not less the umask (this process is single-threaded).
    let umask_before = umask(Mode::empty());
    let made = mknodat(&dir, name, kind, perm, *dev);
    umask(umask_before);
    made.map_err(errno)?;
    fchownat(
        &dir,
        name,
        Some(*uid),
        Some(*gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(errno)
}

/// Bind a path over itself, read-only.
fn readonly_path(p: &Prepared, root: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    let target = inside(p, path)?;
    let fd = resolve::open(root, target, OFlag::O_PATH)?;
    let at = ProcFd::new(fd.as_fd());
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(at.as_cstr()), at.as_cstr(), NONE, flags, NONE).map_err(errno)?;
    // Resolved again: the bind just made.
    remount_readonly(root, target, MsFlags::MS_REC)
}

/// Whether a mount failed because the kernel refuses it here (EPERM: a user namespace).
fn refused(r: &io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EPERM))
}

/// Make the mount at `target` (a path in the container, resolved inside the root) read-only,
/// keeping its other flags: in a user namespace the kernel refuses a remount that would clear
/// the flags it locked (nosuid, nodev, noexec, atime) on mounts that came from the host.
fn remount_readonly(root: BorrowedFd<'_>, target: &[u8], extra: MsFlags) -> io::Result<()> {
    let fd = resolve::open(root, target, OFlag::O_PATH)?;
    remount_readonly_fd(fd.as_fd(), extra)
}

/// [`remount_readonly`] of the mount `fd` (an `O_PATH` descriptor) is on.
fn remount_readonly_fd(fd: BorrowedFd<'_>, extra: MsFlags) -> io::Result<()> {
    let kept = nix::sys::statvfs::fstatvfs(fd).map_or(MsFlags::empty(), |st| {
        use nix::sys::statvfs::FsFlags;
        [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ]
        .into_iter()
        .filter(|(f, _)| st.flags().contains(*f))
        .fold(MsFlags::empty(), |acc, (_, m)| acc | m)
    });
    let path = ProcFd::new(fd);
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept | extra;
    mount(NONE, path.as_cstr(), NONE, flags, NONE).map_err(errno)
}

/// Hide a path: an empty read-only tmpfs over a directory, /dev/null over anything else.
fn mask_path(p: &Prepared, root: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    let fd = resolve::open(root, inside(p, path)?, OFlag::O_PATH)?;
    let meta = fstat(&fd).map_err(errno)?;
    let at = ProcFd::new(fd.as_fd());
    if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let tmpfs = Some(c"tmpfs");
        mount(tmpfs, at.as_cstr(), tmpfs, MsFlags::MS_RDONLY, NONE).map_err(errno)
    } else {
        mount(
            Some(c"/dev/null"),
            at.as_cstr(),
            NONE,
            MsFlags::MS_BIND,
            NONE,
        )
        .map_err(errno)
    }
}
