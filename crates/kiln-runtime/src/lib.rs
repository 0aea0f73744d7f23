//! kiln-runtime runs a process as a container: in new mount, PID, UTS and IPC namespaces (and a
//! new network namespace unless host networking is asked for), on a prepared root filesystem,
//! with its own /proc, /dev and /sys, after `pivot_root`, as the requested user. It is what
//! `kiln image build` runs `RUN` steps with.
//!
//! The process is started with `std::process::Command` and a `pre_exec` hook that unshares the
//! namespaces and forks once more, so that the command is PID 1 of its PID namespace. The
//! intermediate process only waits and passes on the exit status. Everything the hook needs is
//! prepared before the fork: the hook itself does not allocate.
#![allow(unsafe_code)]

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, fork, pivot_root, setgid, setgroups, setuid};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Errors from preparing or starting a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A path or argument holds a NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// Preparing the root filesystem failed.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The path being prepared.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The process could not be started.
    #[error("starting {command:?} in the container: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        source: io::Error,
    },
}

/// How the container reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

/// A mount made inside the container before the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind `source` (a host path) at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path in the container.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A tmpfs at `target`.
    Tmpfs {
        /// Path in the container.
        target: String,
    },
}

/// A process to run in a container.
#[derive(Debug, Clone)]
pub struct Container {
    /// The root filesystem (a directory the caller prepared, for example an overlay mount).
    pub rootfs: PathBuf,
    /// The command and its arguments; the command is looked up in the container's PATH.
    pub args: Vec<String>,
    /// The environment, as `KEY=value`.
    pub env: Vec<String>,
    /// Working directory in the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Host name (the container gets its own UTS namespace either way).
    pub hostname: String,
    /// Networking.
    pub network: Network,
    /// Extra mounts, made after /proc, /dev and /sys.
    pub mounts: Vec<Mount>,
}

/// Mount points /proc, /dev and /sys need in the root filesystem.
pub const STANDARD_MOUNTPOINTS: &[&str] = &["proc", "dev", "sys"];

/// Device nodes bound from the host into the container's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Everything the child needs, converted to C strings before the fork.
struct Prepared {
    rootfs: CString,
    proc_dir: CString,
    sys_dir: CString,
    dev_dir: CString,
    pts_dir: CString,
    shm_dir: CString,
    devices: Vec<(CString, CString)>,
    dev_links: Vec<(CString, CString)>,
    mounts: Vec<(Option<CString>, CString, &'static str, MsFlags, bool)>,
    hostname: CString,
    cwd: CString,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    network: Network,
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, RuntimeError> {
    CString::new(s.as_ref())
        .map_err(|_| RuntimeError::Nul(String::from_utf8_lossy(s.as_ref()).into()))
}

fn in_root(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

impl Container {
    /// Create what the mounts need in the root filesystem (mount points for /proc, /dev, /sys
    /// and each extra mount). Returns the paths it created, so the caller can remove them again
    /// (they are not part of what the process did).
    pub fn prepare_mountpoints(&self) -> Result<Vec<PathBuf>, RuntimeError> {
        let mut created = Vec::new();
        let mut want: Vec<(PathBuf, bool)> = STANDARD_MOUNTPOINTS
            .iter()
            .map(|d| (in_root(&self.rootfs, d), true))
            .collect();
        for m in &self.mounts {
            match m {
                Mount::Bind { source, target, .. } => {
                    want.push((in_root(&self.rootfs, target), source.is_dir()));
                }
                Mount::Tmpfs { target } => want.push((in_root(&self.rootfs, target), true)),
            }
        }
        for (path, dir) in want {
            if fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            let mut missing = Vec::new();
            let mut p = path.parent();
            while let Some(parent) = p {
                if parent == self.rootfs || fs::symlink_metadata(parent).is_ok() {
                    break;
                }
                missing.push(parent.to_path_buf());
                p = parent.parent();
            }
            let prep = |source| RuntimeError::Prepare {
                path: path.clone(),
                source,
            };
            for d in missing.iter().rev() {
                fs::create_dir(d).map_err(prep)?;
                created.push(d.clone());
            }
            if dir {
                fs::create_dir(&path).map_err(prep)?;
            } else {
                fs::File::create(&path).map_err(prep)?;
            }
            created.push(path);
        }
        Ok(created)
    }

    fn prepare(&self) -> Result<Prepared, RuntimeError> {
        let root = &self.rootfs;
        let p = |rel: &str| cstr(in_root(root, rel).as_os_str().as_bytes());
        let mut mounts = Vec::new();
        for m in &self.mounts {
            match m {
                Mount::Bind {
                    source,
                    target,
                    readonly,
                } => mounts.push((
                    Some(cstr(source.as_os_str().as_bytes())?),
                    p(target)?,
                    "",
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    *readonly,
                )),
                Mount::Tmpfs { target } => mounts.push((
                    None,
                    p(target)?,
                    "tmpfs",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    false,
                )),
            }
        }
        let mut devices = Vec::new();
        for d in DEVICES {
            devices.push((cstr(format!("/dev/{d}"))?, p(&format!("dev/{d}"))?));
        }
        let mut dev_links = Vec::new();
        for (target, link) in [
            ("pts/ptmx", "dev/ptmx"),
            ("/proc/self/fd", "dev/fd"),
            ("/proc/self/fd/0", "dev/stdin"),
            ("/proc/self/fd/1", "dev/stdout"),
            ("/proc/self/fd/2", "dev/stderr"),
        ] {
            dev_links.push((cstr(target)?, p(link)?));
        }
        Ok(Prepared {
            rootfs: cstr(root.as_os_str().as_bytes())?,
            proc_dir: p("proc")?,
            sys_dir: p("sys")?,
            dev_dir: p("dev")?,
            pts_dir: p("dev/pts")?,
            shm_dir: p("dev/shm")?,
            devices,
            dev_links,
            mounts,
            hostname: cstr(&self.hostname)?,
            cwd: cstr(if self.cwd.is_empty() { "/" } else { &self.cwd })?,
            uid: Uid::from_raw(self.uid),
            gid: Gid::from_raw(self.gid),
            groups: self
                .additional_gids
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect(),
            network: self.network,
        })
    }

    /// A `Command` that starts the process in the container. Stdio is inherited unless the
    /// caller changes it. The mount points must exist (see [`Container::prepare_mountpoints`]).
    pub fn command(&self) -> Result<Command, RuntimeError> {
        let prepared = self.prepare()?;
        let Some(program) = self.args.first() else {
            return Err(RuntimeError::Spawn {
                command: String::new(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        let mut cmd = Command::new(program);
        cmd.args(&self.args[1..]).env_clear();
        for kv in &self.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            cmd.env(k, v);
        }
        // SAFETY: the hook runs between fork and exec. It only makes system calls on data
        // prepared above and never allocates or takes locks.
        unsafe {
            cmd.pre_exec(move || enter(&prepared));
        }
        Ok(cmd)
    }

    /// Run the process to completion with inherited stdio.
    pub fn run(&self) -> Result<ExitStatus, RuntimeError> {
        self.run_with(Stdio::inherit(), Stdio::inherit())
    }

    /// Run the process to completion with the given stdout and stderr; stdin is empty.
    pub fn run_with(&self, stdout: Stdio, stderr: Stdio) -> Result<ExitStatus, RuntimeError> {
        let spawn_err = |source| RuntimeError::Spawn {
            command: self.args.join(" "),
            source,
        };
        let mut cmd = self.command()?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        child.wait().map_err(spawn_err)
    }
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The pre-exec hook: new namespaces, a second fork, mounts, pivot_root, identity.
fn enter(p: &Prepared) -> io::Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if p.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(errno)?;
    // SAFETY: called in the single-threaded child between fork and exec.
    match unsafe { fork() }.map_err(errno)? {
        ForkResult::Parent { child } => {
            // Close everything but stdio so the parent sees exec succeed, then pass on the status.
            // SAFETY: plain system calls.
            unsafe {
                libc::close_range(3, libc::c_uint::MAX, 0);
            }
            let code = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => break c,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) => continue,
                    Err(nix::Error::EINTR) => continue,
                    Err(_) => break 127,
                }
            };
            // SAFETY: terminate the intermediate process without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {}
    }
    setup_root(p)?;
    sethostname(&p.hostname)?;
    if p.network == Network::None {
        loopback_up();
    }
    setgroups(&p.groups).map_err(errno)?;
    setgid(p.gid).map_err(errno)?;
    setuid(p.uid).map_err(errno)?;
    chdir(p.cwd.as_c_str()).map_err(errno)
}

fn setup_root(p: &Prepared) -> io::Result<()> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(errno)?;
    mount(
        Some(p.rootfs.as_c_str()),
        p.rootfs.as_c_str(),
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(errno)?;
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
    for (host, inside) in &p.devices {
        // SAFETY: plain system calls on NUL-terminated strings.
        let fd = unsafe { libc::open(inside.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o666) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        mount(
            Some(host.as_c_str()),
            inside.as_c_str(),
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(errno)?;
    }
    for dir in [&p.pts_dir, &p.shm_dir] {
        // SAFETY: plain system call.
        unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
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
    for (target, link) in &p.dev_links {
        // SAFETY: plain system call.
        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    }
    for (source, target, fstype, flags, readonly) in &p.mounts {
        let fstype = if fstype.is_empty() {
            None
        } else {
            Some(*fstype)
        };
        let source = source.as_deref().or(Some(c"tmpfs"));
        mount(source, target.as_c_str(), fstype, *flags, none).map_err(errno)?;
        if *readonly {
            mount(
                none,
                target.as_c_str(),
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                none,
            )
            .map_err(errno)?;
        }
    }
    chdir(p.rootfs.as_c_str()).map_err(errno)?;
    pivot_root(".", ".").map_err(errno)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(errno)?;
    chdir("/").map_err(errno)
}

fn sethostname(name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: plain system call with a valid pointer and length.
    let rc = unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bring `lo` up in a fresh network namespace (best effort).
#[allow(clippy::cast_possible_truncation)]
fn loopback_up() {
    // SAFETY: plain system calls on a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        // IFF_UP and IFF_RUNNING fit the 16-bit flags field.
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_created_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("proc")).expect("mkdir");
        let c = Container {
            rootfs: dir.path().to_path_buf(),
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "kiln".into(),
            network: Network::Host,
            mounts: vec![Mount::Bind {
                source: PathBuf::from("/etc/hostname"),
                target: "/etc/hostname".into(),
                readonly: true,
            }],
        };
        let created = c.prepare_mountpoints().expect("prepare");
        let names: Vec<_> = created
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("inside").to_path_buf())
            .collect();
        assert_eq!(
            names,
            ["dev", "sys", "etc", "etc/hostname"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert!(dir.path().join("etc/hostname").is_file());
    }
}
