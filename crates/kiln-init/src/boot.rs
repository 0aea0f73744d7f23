//! Boot, before any container runs: a read-only view of the initramfs (`readonly_root`), the
//! kernel file systems, modules (`overlay` and /etc/modules; those for the devices present on a
//! thread of their own, which containers that may use a device wait for; later ones on demand,
//! this program being the kernel's modprobe helper), the host name and loopback.

use crate::modules::{Loading, Modules};
use crate::{log, power_button, readonly_root};
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::set_cad_enabled;
use std::fs;

/// What boot leaves for the rest of init.
pub struct Booted {
    /// The modules for the devices present, loading on a thread of their own, when the image
    /// has modules.
    pub devices: Option<Loading>,
}

/// Bring the system up to the point where containers can run.
pub fn boot() -> Booted {
    // The kernel starts init with 1024/4096 open files; servers in containers want more.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        1 << 20,
        1 << 20,
    );
    let readonly = match readonly_root::switch() {
        Ok(done) => done,
        Err(e) => {
            log(&format!("keeping the root writable: {e}"));
            false
        }
    };
    early_mounts(readonly);
    let devices = match Modules::open() {
        Some(mut m) => {
            load_listed(&mut m);
            Some(load_devices(&m))
        }
        None => {
            power_button::watch(None);
            None
        }
    };
    // Modules the kernel asks for later are loaded by this same program.
    if let Ok(me) = fs::read_link("/proc/self/exe") {
        let _ = fs::write(
            "/proc/sys/kernel/modprobe",
            me.as_os_str().as_encoded_bytes(),
        );
    }
    set_hostname();
    if let Err(e) = kiln_runtime::loopback_up() {
        log(&format!("bringing up lo: {e}"));
    }
    // ctrl-alt-del sends SIGINT to init instead of rebooting at once.
    let _ = set_cad_enabled(false);
    log(&format!(
        "starting, {:.2} s after the kernel{}",
        since_boot(),
        if readonly { ", root read-only" } else { "" }
    ));
    Booted { devices }
}

/// `overlay` (every container's root is one) and the modules /etc/modules lists.
fn load_listed(m: &mut Modules) {
    let listed = fs::read_to_string("/etc/modules").unwrap_or_default();
    for name in
        std::iter::once("overlay").chain(listed.split_whitespace().filter(|w| !w.starts_with('#')))
    {
        if let Err(e) = m.load(name) {
            log(&e);
        }
    }
}

/// Start loading the modules for the devices present; the power button is watched once they
/// are loaded.
fn load_devices(m: &Modules) -> Loading {
    let mut buttons = m.clone();
    let nice = |n| {
        let _ = kiln_runtime::set_thread_nice(n);
    };
    m.load_in_background(nice, move |loaded| {
        log(&format!(
            "modules for the devices present: {}, {:.2} s after the kernel",
            loaded.join(" "),
            since_boot()
        ));
        power_button::watch(Some(&mut buttons));
    })
}

/// The kernel file systems every system needs. Failures are reported, not fatal.
fn early_mounts(readonly_root: bool) {
    let none: Option<&str> = None;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: &[(&str, &str, &str, MsFlags, Option<&str>)] = &[
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
        (
            "shm",
            "/dev/shm",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, None),
    ];
    for (source, target, fstype, flags, data) in table {
        let _ = fs::create_dir_all(target);
        if let Err(e) = mount(Some(*source), *target, Some(*fstype), *flags, *data) {
            // devtmpfs may already be mounted by the kernel.
            if e != nix::Error::EBUSY {
                log(&format!("mounting {target}: {e}"));
            }
        }
    }
    for d in ["/var/log", "/var/lib", "/run/netns", "/run/resolvconf"] {
        let _ = fs::create_dir_all(d);
    }
    // /etc/resolv.conf links here (as in LinuxKit); a DHCP client fills it in.
    let _ = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/run/resolvconf/resolv.conf");
    // /var is a mount point of its own, so that containers binding it shared (the mount
    // package) can mount under it for everyone.
    if !readonly_root {
        let _ = mount(Some("/var"), "/var", none, MsFlags::MS_BIND, none);
    }
    let _ = mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SHARED, none);
}

/// Seconds since the kernel started (the guest's own clock, suspend included).
pub fn since_boot() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

fn set_hostname() {
    let name = fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kiln".into());
    if let Err(e) = nix::unistd::sethostname(&name) {
        log(&format!("setting the host name: {e}"));
    }
}
