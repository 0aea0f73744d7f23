//! A read-only root. The kernel unpacks the initramfs into rootfs, which can be neither made
//! read-only nor pivoted away from. kiln-init binds it onto a directory, gives that view a
//! fresh tmpfs /var (carrying over what the image put in /var), remounts it read-only and makes
//! it the root (move and chroot, as switch_root does). Nothing is copied but /var, and
//! containers can then use a real pivot_root. `kiln.rw` on the kernel command line keeps the
//! root writable.
//!
//! With `kiln.root=SPEC` the root is a read-only squashfs, erofs or ISO 9660 file system on a
//! block device (a disk partition, a whole disk, a CD-ROM) instead (`root_device` finds and
//! mounts it): it gets the same fresh /var (carrying over the image's /var from the device) and
//! becomes the root the same way, so that the rest of boot runs from it unchanged. Failing
//! that is fatal: the machine powers off with an error naming SPEC.

use crate::cmdline::{DiskRoot, Switches};
use crate::{log, root_device};
use nix::mount::{MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;

const NEW_ROOT: &str = "/.kiln-root";

/// Where the disk root's fresh /var is filled before it is moved onto it.
const NEW_VAR: &str = "/.kiln-var";

/// Directories a root on a block device must have, as mount points for the rest of boot.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "run", "tmp", "var"];

/// Which root this boot wants.
#[derive(Debug)]
enum Wanted {
    /// Keep the root as it is.
    Nothing,
    /// A read-only view of the initramfs.
    Ram,
    /// The root on a block device (`kiln.root`).
    Disk(DiskRoot),
}

fn errno(what: &str) -> impl Fn(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// A view of the initramfs, when the root is the initramfs (rootfs) and the command line does
/// not say `kiln.rw`; the root on a block device when it says `kiln.root` (a malformed one is
/// fatal). Needs /proc; call before anything else is mounted.
fn wanted() -> Wanted {
    let none: Option<&str> = None;
    let _ = fs::create_dir_all("/proc");
    if mount(Some("proc"), "/proc", Some("proc"), MsFlags::empty(), none).is_err() {
        return Wanted::Nothing;
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // Read (and kept for the rest of boot) while /proc is there.
    let disk = Switches::read().root.clone();
    let root_is_rootfs = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split(" - ");
            let left = f.next().unwrap_or_default();
            let fstype = f
                .next()
                .unwrap_or_default()
                .split(' ')
                .next()
                .unwrap_or_default();
            left.split(' ').nth(4) == Some("/") && fstype == "rootfs"
        });
    let _ = umount2("/proc", nix::mount::MntFlags::MNT_DETACH);
    let rw = cmdline.split_whitespace().any(|w| w == "kiln.rw");
    match disk {
        Some(Err(e)) => root_device::fatal(&e),
        Some(Ok(_)) if !root_is_rootfs => {
            log("kiln.root ignored: the root is not the initramfs");
            Wanted::Nothing
        }
        Some(Ok(disk)) => {
            if rw {
                log("kiln.rw ignored: a root from kiln.root is read-only");
            }
            Wanted::Disk(disk)
        }
        None if root_is_rootfs && !rw => Wanted::Ram,
        None => Wanted::Nothing,
    }
}

/// Copy a directory tree (directories, files, symlinks; modes and owners).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// Switch to a read-only view of the initramfs, or to the root on a block device, if that is
/// wanted. Returns whether it did. Failing to switch to a block device's root powers off.
pub fn switch() -> io::Result<bool> {
    match wanted() {
        Wanted::Nothing => Ok(false),
        Wanted::Ram => switch_to_initramfs().map(|()| true),
        Wanted::Disk(disk) => match switch_to_device(&disk) {
            Ok(()) => Ok(true),
            Err(e) => root_device::fatal(&e),
        },
    }
}

/// Mount the root `disk` names, give it a fresh /var and make it the root.
fn switch_to_device(disk: &DiskRoot) -> Result<(), String> {
    let none: Option<&str> = None;
    root_device::mount_kernel_fs()?;
    let mounted = root_device::mount_root(disk, Path::new(NEW_ROOT))?;
    let missing: Vec<&str> = MOUNT_POINTS
        .iter()
        .copied()
        .filter(|d| !Path::new(NEW_ROOT).join(d).is_dir())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "kiln.root={}: the root file system lacks the directories /{}, which the system \
             mounts on; add them to the image",
            disk.spec,
            missing.join(", /")
        ));
    }
    log(&mounted);
    // A fresh /var filled with the image's /var (hidden once the tmpfs is on it), then moved
    // onto it.
    let what = |e: io::Error| format!("copying the image's /var to a tmpfs: {e}");
    fs::create_dir_all(NEW_VAR).map_err(what)?;
    mount(
        Some("tmpfs"),
        NEW_VAR,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs for /var: {e}"))?;
    let var = Path::new(NEW_ROOT).join("var");
    copy_tree(&var, Path::new(NEW_VAR)).map_err(what)?;
    mount(Some(NEW_VAR), &var, none, MsFlags::MS_MOVE, none)
        .map_err(|e| format!("moving the tmpfs onto /var: {e}"))?;
    root_device::release_initramfs();
    let moved = |e: nix::Error| format!("making {NEW_ROOT} the root: {e}");
    nix::unistd::chdir(NEW_ROOT).map_err(moved)?;
    mount(Some("."), "/", none, MsFlags::MS_MOVE, none).map_err(moved)?;
    nix::unistd::chroot(".").map_err(moved)?;
    nix::unistd::chdir("/").map_err(moved)?;
    Ok(())
}

/// Switch to a read-only view of the initramfs.
fn switch_to_initramfs() -> io::Result<()> {
    let none: Option<&str> = None;
    fs::create_dir_all(NEW_ROOT)?;
    mount(Some("/"), NEW_ROOT, none, MsFlags::MS_BIND, none).map_err(errno("binding /"))?;
    // Mount points the rest of boot needs, made while the view can still be written.
    for dir in ["proc", "sys", "dev", "run", "tmp"] {
        fs::create_dir_all(Path::new(NEW_ROOT).join(dir))?;
    }
    let var = Path::new(NEW_ROOT).join("var");
    fs::create_dir_all(&var)?;
    mount(
        Some("tmpfs"),
        &var,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(errno("mounting /var"))?;
    // The image's /var, still visible through the old root.
    if Path::new("/var").is_dir() {
        copy_tree(Path::new("/var"), &var)?;
    }
    mount(
        none,
        NEW_ROOT,
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        none,
    )
    .map_err(errno("remounting the root read-only"))?;
    nix::unistd::chdir(NEW_ROOT)?;
    mount(Some("."), "/", none, MsFlags::MS_MOVE, none).map_err(errno("moving the root"))?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")?;
    Ok(())
}
