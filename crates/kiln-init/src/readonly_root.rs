//! A read-only root. The kernel unpacks the initramfs into rootfs, which can be neither made
//! read-only nor pivoted away from. kiln-init binds it onto a directory, gives that view a
//! fresh tmpfs /var (carrying over what the image put in /var), remounts it read-only and makes
//! it the root (move and chroot, as switch_root does). Nothing is copied but /var, and
//! containers can then use a real pivot_root. `kiln.rw` on the kernel command line keeps the
//! root writable.

use nix::mount::{MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;

const NEW_ROOT: &str = "/.kiln-root";

fn errno(what: &str) -> impl Fn(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

/// Whether the root is the initramfs (rootfs) and the command line does not say `kiln.rw`.
/// Needs /proc; call before anything else is mounted.
fn wanted() -> bool {
    let none: Option<&str> = None;
    let _ = fs::create_dir_all("/proc");
    if mount(Some("proc"), "/proc", Some("proc"), MsFlags::empty(), none).is_err() {
        return false;
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
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
    root_is_rootfs && !cmdline.split_whitespace().any(|w| w == "kiln.rw")
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

/// Switch to a read-only view of the initramfs, if that is wanted. Returns whether it did.
pub fn switch() -> io::Result<bool> {
    if !wanted() {
        return Ok(false);
    }
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
    Ok(true)
}
