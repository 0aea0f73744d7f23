//! The container's root file system, set up by the pre-exec hook: the mounts made inside it (OCI
//! mounts with their options, or the builder's standard /proc, /dev and /sys), device nodes,
//! masked and read-only paths, and the switch into it (pivot_root, or move-and-chroot from an
//! initramfs). Runs between fork and exec: system calls on prepared C strings only.

use crate::error::errno;
use crate::failure::Step;
use crate::hook::{Prepared, at};
use nix::fcntl::{AT_FDCWD, OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, mknod};
use nix::unistd::{Gid, Uid, chdir, fchdir, mkdir, pivot_root, symlinkat, unlink};
use std::ffi::{CStr, CString};
use std::io;

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
    if p.standard_mounts {
        at(p, Step::StandardMounts, 0, standard_mounts(p))?;
    }
    for (i, m) in p.mounts.iter().enumerate() {
        at(p, Step::Mount, i, oci_mount(m))?;
    }
    // A config that mounts a fresh /dev gets the default devices in it, as runc gives.
    if p.fresh_dev {
        at(p, Step::StandardMounts, 0, default_devices(p))?;
    }
    for (i, device) in p.devices.iter().enumerate() {
        at(p, Step::Device, i, make_device(device))?;
    }
    for (i, path) in p.readonly_paths.iter().enumerate() {
        at(
            p,
            Step::ReadonlyPath,
            i,
            ignore_missing(readonly_path(path)),
        )?;
    }
    for (i, path) in p.masked_paths.iter().enumerate() {
        at(p, Step::MaskedPath, i, ignore_missing(mask_path(path)))?;
    }
    if p.readonly_root {
        let none: Option<&str> = None;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        let r = mount(none, p.rootfs.as_c_str(), none, flags, none).map_err(errno);
        at(p, Step::ReadonlyRoot, 0, r)?;
    }
    at(p, Step::PivotRoot, 0, enter_root(p))
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
fn oci_mount(m: &PreparedMount) -> io::Result<()> {
    let none: Option<&str> = None;
    // The target may live on a file system mounted just before (a /dev tmpfs). A failure
    // here shows in mount() below.
    if m.file_target {
        let _ = create_file(&m.target, 0o644);
    } else {
        let _ = mkdir(m.target.as_c_str(), Mode::from_bits_truncate(0o755));
    }
    let r = mount(
        m.source.as_deref(),
        m.target.as_c_str(),
        m.fstype.as_deref(),
        m.flags,
        m.data.as_deref(),
    );
    match r {
        Ok(()) => {}
        Err(_) if m.optional => return Ok(()),
        Err(e) => return Err(errno(e)),
    }
    if m.readonly_bind {
        mount(
            none,
            m.target.as_c_str(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )
        .map_err(errno)?;
    }
    if !m.propagation.is_empty() {
        mount(none, m.target.as_c_str(), none, m.propagation, none).map_err(errno)?;
    }
    Ok(())
}

/// /proc, /sys, a tmpfs /dev with the usual devices, devpts and /dev/shm.
fn standard_mounts(p: &Prepared) -> io::Result<()> {
    let none: Option<&str> = None;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        p.proc_dir.as_c_str(),
        Some("proc"),
        nodev,
        none,
    )
    .map_err(errno)?;
    mount(
        Some("sysfs"),
        p.sys_dir.as_c_str(),
        Some("sysfs"),
        nodev | MsFlags::MS_RDONLY,
        none,
    )
    .map_err(errno)?;
    mount(
        Some("tmpfs"),
        p.dev_dir.as_c_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )
    .map_err(errno)?;
    default_devices(p)?;
    for dir in [&p.pts_dir, &p.shm_dir] {
        // It may exist already; a failure shows in the mount.
        let _ = mkdir(dir.as_c_str(), Mode::from_bits_truncate(0o755));
    }
    mount(
        Some("devpts"),
        p.pts_dir.as_c_str(),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(errno)?;
    mount(
        Some("shm"),
        p.shm_dir.as_c_str(),
        Some("tmpfs"),
        nodev,
        Some("mode=1777"),
    )
    .map_err(errno)?;
    Ok(())
}

/// The devices every container has in /dev (null, zero, full, random, urandom, tty: bound
/// from the host) and the usual links (ptmx, fd, stdin, stdout, stderr).
fn default_devices(p: &Prepared) -> io::Result<()> {
    let none: Option<&str> = None;
    for (host, inside) in &p.host_devices {
        // A failure shows in the bind.
        let _ = create_file(inside, 0o666);
        mount(
            Some(host.as_c_str()),
            inside.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(errno)?;
    }
    for (target, link) in &p.dev_links {
        // Best effort, as runc: a link that exists already stays.
        let _ = symlinkat(target.as_c_str(), AT_FDCWD, link.as_c_str());
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

/// One of the container's device nodes (replacing whatever is at its path).
fn make_device(device: &(CString, libc::mode_t, libc::dev_t, Uid, Gid)) -> io::Result<()> {
    let (path, mode, dev, uid, gid) = device;
    // Whatever is there is replaced.
    let _ = unlink(path.as_c_str());
    let kind = SFlag::from_bits_truncate(*mode & libc::S_IFMT);
    let perm = Mode::from_bits_truncate(*mode & 0o7777);
    mknod(path.as_c_str(), kind, perm, *dev).map_err(errno)?;
    // mknod applies the umask.
    fchmodat(
        AT_FDCWD,
        path.as_c_str(),
        perm,
        FchmodatFlags::FollowSymlink,
    )
    .map_err(errno)?;
    nix::unistd::chown(path.as_c_str(), Some(*uid), Some(*gid)).map_err(errno)
}

/// Bind a path over itself, read-only.
fn readonly_path(path: &CStr) -> io::Result<()> {
    let none: Option<&str> = None;
    mount(
        Some(path),
        path,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(errno)?;
    mount(
        none,
        path,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        none,
    )
    .map_err(errno)
}

/// Hide a path: an empty read-only tmpfs over a directory, /dev/null over anything else.
fn mask_path(path: &CStr) -> io::Result<()> {
    let none: Option<&str> = None;
    let meta = nix::sys::stat::stat(path).map_err(errno)?;
    if meta.st_mode & libc::S_IFMT == libc::S_IFDIR {
        mount(
            Some(c"tmpfs"),
            path,
            Some(c"tmpfs"),
            MsFlags::MS_RDONLY,
            none,
        )
        .map_err(errno)
    } else {
        mount(Some(c"/dev/null"), path, none, MsFlags::MS_BIND, none).map_err(errno)
    }
}

/// Create the file at `path` if it is missing (a mount point for a file).
fn create_file(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    open(
        path,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map(drop)
    .map_err(errno)
}
