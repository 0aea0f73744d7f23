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

pub mod bundle;

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
    /// A mount as an OCI runtime config describes it.
    Oci {
        /// Source (a host path for binds, a name otherwise).
        source: String,
        /// Path in the container.
        target: String,
        /// File system type (empty for binds).
        fstype: String,
        /// Options: flags (`ro`, `nosuid`, `rbind`, `rprivate`, ...) and data (`mode=755`).
        options: Vec<String>,
    },
}

/// A namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    /// Process ids.
    Pid,
    /// Network.
    Net,
    /// Mounts.
    Mount,
    /// System V IPC.
    Ipc,
    /// Host name.
    Uts,
    /// Control groups.
    Cgroup,
}

impl NsKind {
    fn flag(self) -> CloneFlags {
        match self {
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        }
    }
}

/// A namespace to create (no path) or join (the path of an existing one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Which kind.
    pub kind: NsKind,
    /// Join this one instead of creating one.
    pub path: Option<PathBuf>,
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
    /// Mount /proc, /dev (with the usual devices) and /sys before `mounts` (builds do; OCI
    /// bundles list their own).
    pub standard_mounts: bool,
    /// The namespaces to create or join; `None`: new mount, PID, UTS and IPC namespaces, and a
    /// new network namespace when `network` is `None`.
    pub namespaces: Option<Vec<Namespace>>,
    /// Make the root file system read-only.
    pub readonly_root: bool,
}

impl Container {
    /// A container running `args` on `rootfs` as root, with builder defaults.
    pub fn new(rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Container {
            rootfs: rootfs.into(),
            args,
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "kiln".into(),
            network: Network::Host,
            mounts: Vec::new(),
            standard_mounts: true,
            namespaces: None,
            readonly_root: false,
        }
    }
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
    mounts: Vec<PreparedMount>,
    standard_mounts: bool,
    readonly_root: bool,
    joins: Vec<(std::fs::File, CloneFlags)>,
    unshare: CloneFlags,
    hostname: CString,
    cwd: CString,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// One mount, ready for the system call.
struct PreparedMount {
    source: Option<CString>,
    target: CString,
    fstype: Option<CString>,
    flags: MsFlags,
    data: Option<CString>,
    /// Remount read-only after a bind.
    readonly_bind: bool,
    /// Propagation to set afterwards.
    propagation: MsFlags,
    /// Failure is tolerated (cgroup and mqueue, which a kernel may lack).
    optional: bool,
    /// The target is a file (a bind of a file), not a directory.
    file_target: bool,
}

/// Split OCI mount options into flags, propagation and data.
fn mount_options(options: &[String]) -> (MsFlags, MsFlags, Vec<String>) {
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

/// Mount on the host side (kiln-init's runtime.json mounts): `target` is created first, and an
/// overlay's upper and work directories too.
pub fn mount_host(
    source: &str,
    target: &Path,
    fstype: &str,
    options: &[String],
) -> Result<(), RuntimeError> {
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
    }
    if !propagation.is_empty() {
        mount(none, target, none, propagation, none).map_err(|e| prep(errno(e)))?;
    }
    Ok(())
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
                Mount::Oci {
                    source,
                    target,
                    fstype,
                    ..
                } => {
                    let file = fstype.is_empty() && Path::new(source).is_file();
                    want.push((in_root(&self.rootfs, target), !file));
                }
            }
        }
        if !self.standard_mounts {
            want.drain(..STANDARD_MOUNTPOINTS.len());
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
            mounts.push(match m {
                Mount::Bind {
                    source,
                    target,
                    readonly,
                } => PreparedMount {
                    source: Some(cstr(source.as_os_str().as_bytes())?),
                    target: p(target)?,
                    fstype: None,
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                    data: None,
                    readonly_bind: *readonly,
                    propagation: MsFlags::empty(),
                    optional: false,
                    file_target: source.is_file(),
                },
                Mount::Tmpfs { target } => PreparedMount {
                    source: Some(cstr("tmpfs")?),
                    target: p(target)?,
                    fstype: Some(cstr("tmpfs")?),
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    data: None,
                    readonly_bind: false,
                    propagation: MsFlags::empty(),
                    optional: false,
                    file_target: false,
                },
                Mount::Oci {
                    source,
                    target,
                    fstype,
                    options,
                } => {
                    let (mut flags, propagation, data) = mount_options(options);
                    let bind = flags.contains(MsFlags::MS_BIND) || fstype == "bind";
                    if fstype == "bind" {
                        flags |= MsFlags::MS_BIND;
                    }
                    let readonly_bind = bind && flags.contains(MsFlags::MS_RDONLY);
                    let data = data.join(",");
                    PreparedMount {
                        source: (!source.is_empty()).then(|| cstr(source)).transpose()?,
                        target: p(target)?,
                        fstype: (!bind && !fstype.is_empty())
                            .then(|| cstr(fstype))
                            .transpose()?,
                        flags,
                        data: (!data.is_empty() && !bind)
                            .then(|| cstr(&data))
                            .transpose()?,
                        readonly_bind,
                        propagation,
                        optional: matches!(fstype.as_str(), "cgroup" | "cgroup2" | "mqueue"),
                        file_target: bind && Path::new(source).is_file(),
                    }
                }
            });
        }
        let mut joins = Vec::new();
        let mut unshare_flags = CloneFlags::CLONE_NEWNS;
        match &self.namespaces {
            None => {
                unshare_flags |=
                    CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
                if self.network == Network::None {
                    unshare_flags |= CloneFlags::CLONE_NEWNET;
                }
            }
            Some(list) => {
                for ns in list {
                    match &ns.path {
                        Some(path) => {
                            let f =
                                fs::File::open(path).map_err(|source| RuntimeError::Prepare {
                                    path: path.clone(),
                                    source,
                                })?;
                            joins.push((f, ns.kind.flag()));
                        }
                        None => unshare_flags |= ns.kind.flag(),
                    }
                }
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
            standard_mounts: self.standard_mounts,
            readonly_root: self.readonly_root,
            joins,
            unshare: unshare_flags,
            hostname: cstr(&self.hostname)?,
            cwd: cstr(if self.cwd.is_empty() { "/" } else { &self.cwd })?,
            uid: Uid::from_raw(self.uid),
            gid: Gid::from_raw(self.gid),
            groups: self
                .additional_gids
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect(),
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
    // The container starts with no signals blocked, whatever its parent blocks.
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(errno)?;
    for (file, kind) in &p.joins {
        nix::sched::setns(file, *kind).map_err(errno)?;
    }
    unshare(p.unshare).map_err(errno)?;
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
        ForkResult::Child => {
            // If the waiting parent is killed, the container is told to stop too.
            // SAFETY: plain system call.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        }
    }
    setup_root(p)?;
    if p.unshare.contains(CloneFlags::CLONE_NEWUTS) {
        sethostname(&p.hostname)?;
    }
    if p.unshare.contains(CloneFlags::CLONE_NEWNET) {
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
    if p.standard_mounts {
        standard_mounts(p)?;
    }
    for m in &p.mounts {
        // The target may live on a file system mounted just before (a /dev tmpfs).
        // SAFETY: plain system calls on NUL-terminated strings; failures show in mount().
        unsafe {
            if m.file_target {
                let fd = libc::open(
                    m.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
            } else {
                libc::mkdir(m.target.as_ptr(), 0o755);
            }
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
            Err(_) if m.optional => continue,
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
    }
    if p.readonly_root {
        mount(
            none,
            p.rootfs.as_c_str(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            none,
        )
        .map_err(errno)?;
    }
    enter_root(p)
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
    Ok(())
}

/// Make the prepared root the process's root.
fn enter_root(p: &Prepared) -> io::Result<()> {
    chdir(p.rootfs.as_c_str()).map_err(errno)?;
    match pivot_root(".", ".") {
        Ok(()) => umount2(".", MntFlags::MNT_DETACH).map_err(errno)?,
        // The initramfs root cannot be pivoted away from: move the new root over it and chroot,
        // as runc's --no-pivot does.
        Err(nix::Error::EINVAL) => {
            let none: Option<&str> = None;
            mount(Some("."), "/", none, MsFlags::MS_MOVE, none).map_err(errno)?;
            nix::unistd::chroot(".").map_err(errno)?;
        }
        Err(e) => return Err(errno(e)),
    }
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

/// Bring `lo` up in the current network namespace (best effort).
#[allow(clippy::cast_possible_truncation)]
pub fn loopback_up() {
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
        let mut c = Container::new(dir.path(), vec!["true".into()]);
        c.mounts.push(Mount::Bind {
            source: PathBuf::from("/etc/hostname"),
            target: "/etc/hostname".into(),
            readonly: true,
        });
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
