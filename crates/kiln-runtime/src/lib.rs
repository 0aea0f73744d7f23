//! kiln-runtime runs a process as a container: in new or joined namespaces, on a prepared root
//! filesystem with its mounts, after `pivot_root`, limited by capabilities, rlimits,
//! no_new_privs, masked and read-only paths, sysctls and a cgroup v2, as the requested user.
//! `kiln image build` runs `RUN` steps with it; kiln-init (and `kiln run bundle`) run OCI
//! bundles with it ([`bundle`]), carrying out runtime.json's interfaces and namespace bindings
//! while the container waits ([`Container::spawn_gated`]).
//!
//! Written on nix/libc rather than youki's libcontainer: it must be a small part of the static
//! PID 1 in the guest, and it needs exactly the OCI subset LinuxKit's configs use.
//!
//! The process is started with `std::process::Command` and a `pre_exec` hook that unshares the
//! namespaces and forks once more, so that the command is PID 1 of its PID namespace. The
//! intermediate process only waits and passes on the exit status. Everything the hook needs is
//! prepared before the fork: the hook itself does not allocate.
#![allow(unsafe_code)]

pub mod bundle;
pub mod cgroup;
mod failure;
mod netdev;
mod rootfs;
pub mod security;

pub use cgroup::Cgroup;
pub use netdev::{Interface, bind_namespaces, setup_interfaces};
pub use rootfs::mount_host;
pub use security::{Capabilities, Rlimit};

use failure::Step;
use nix::mount::MsFlags;
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, fork, setgid, setgroups, setuid};
use rootfs::{PreparedMount, mount_options};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
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
    /// The container's configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// Creating or configuring the container's cgroup failed.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Setting up a network interface or a namespace binding failed.
    #[error("{what}: {source}")]
    Network {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Preparing the root filesystem failed.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The path being prepared.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A step of starting the container failed.
    #[error("starting {command:?} in the container, {step}: {source}")]
    Start {
        /// The command.
        command: String,
        /// What was being done.
        step: String,
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
    /// Capability sets; `None` leaves the caller's (full root for the builder).
    pub capabilities: Option<Capabilities>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
    /// The OOM killer's score adjustment (-1000..1000).
    pub oom_score_adj: Option<i32>,
    /// Kernel parameters set in the container's namespaces (`net.ipv4.ip_forward` = `1`).
    pub sysctls: Vec<(String, String)>,
    /// Paths hidden from the container (an empty read-only tmpfs over directories, /dev/null
    /// over files).
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// Device nodes created in the container's /dev.
    pub devices: Vec<Device>,
    /// The cgroup to run in, with its limits.
    pub cgroup: Option<Cgroup>,
    /// Propagation of the root mount (`shared`, `slave`, `private`; default `rprivate`).
    pub rootfs_propagation: Option<String>,
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its path in the container (`/dev/fuse`).
    pub path: String,
    /// `c` (or `u`), `b` or `p`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
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
            capabilities: None,
            rlimits: Vec::new(),
            no_new_privileges: false,
            oom_score_adj: None,
            sysctls: Vec::new(),
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            devices: Vec::new(),
            cgroup: None,
            rootfs_propagation: None,
        }
    }
}

/// Mount points /proc, /dev and /sys need in the root filesystem.
pub const STANDARD_MOUNTPOINTS: &[&str] = &["proc", "dev", "sys"];

/// Device nodes bound from the host into the container's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Everything the child needs, converted to C strings before the fork.
pub(crate) struct Prepared {
    rootfs: CString,
    proc_dir: CString,
    sys_dir: CString,
    dev_dir: CString,
    pts_dir: CString,
    shm_dir: CString,
    host_devices: Vec<(CString, CString)>,
    /// The config mounts a file system (not a bind) on /dev: add the default devices.
    fresh_dev: bool,
    /// Device nodes to create: path, mode (type and permissions), device number, owner.
    devices: Vec<(CString, libc::mode_t, libc::dev_t, Uid, Gid)>,
    masked_paths: Vec<CString>,
    readonly_paths: Vec<CString>,
    root_propagation: MsFlags,
    /// `/proc/sys/...` files and their values.
    sysctls: Vec<(CString, CString)>,
    rlimits: Vec<Rlimit>,
    capabilities: Option<Capabilities>,
    last_capability: u32,
    no_new_privileges: bool,
    /// The value for /proc/self/oom_score_adj.
    oom_score_adj: Option<CString>,
    /// The cgroup's `cgroup.procs`, open for writing.
    cgroup_procs: Option<fs::File>,
    /// The pipes of a gated start (see `spawn_gated`).
    gate: Option<GatePipes>,
    /// Where the hook records the step that failed (see `failure`).
    report: OwnedFd,
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
            // Another container on the same root may create them at the same time.
            for d in missing.iter().rev() {
                match fs::create_dir(d) {
                    Ok(()) => created.push(d.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(prep(e)),
                }
            }
            let made = if dir {
                fs::create_dir(&path)
            } else {
                fs::File::create_new(&path).map(drop)
            };
            match made {
                Ok(()) => created.push(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(prep(e)),
            }
        }
        Ok(created)
    }

    fn prepare(&self, gate: Option<GatePipes>, report: OwnedFd) -> Result<Prepared, RuntimeError> {
        let root = &self.rootfs;
        let p = |rel: &str| cstr(in_root(root, rel).as_os_str().as_bytes());
        let unified_cgroups = nix::sys::statfs::statfs(cgroup::DEFAULT_ROOT)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
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
                    // A cgroup v1 mount where the host has only the unified hierarchy.
                    let fstype = if fstype == "cgroup" && unified_cgroups {
                        "cgroup2"
                    } else {
                        fstype.as_str()
                    };
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
                        optional: matches!(fstype, "cgroup" | "cgroup2" | "mqueue"),
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
        let mut host_devices = Vec::new();
        for d in DEVICES {
            host_devices.push((cstr(format!("/dev/{d}"))?, p(&format!("dev/{d}"))?));
        }
        let mut devices = Vec::new();
        for d in &self.devices {
            let kind = match d.kind {
                'c' | 'u' => libc::S_IFCHR,
                'b' => libc::S_IFBLK,
                'p' => libc::S_IFIFO,
                other => {
                    return Err(RuntimeError::Config(format!(
                        "device {}: unknown type {other:?} (c, u, b or p)",
                        d.path
                    )));
                }
            };
            devices.push((
                p(&d.path)?,
                kind | (d.mode & 0o7777),
                libc::makedev(
                    u32::try_from(d.major).unwrap_or(u32::MAX),
                    u32::try_from(d.minor).unwrap_or(u32::MAX),
                ),
                Uid::from_raw(d.uid),
                Gid::from_raw(d.gid),
            ));
        }
        let mut sysctls = Vec::new();
        for (key, value) in &self.sysctls {
            if key.contains("..") || key.starts_with('/') {
                return Err(RuntimeError::Config(format!(
                    "sysctl {key:?}: not a parameter name"
                )));
            }
            sysctls.push((
                cstr(format!("/proc/sys/{}", key.replace('.', "/")))?,
                cstr(value)?,
            ));
        }
        let root_propagation = match self.rootfs_propagation.as_deref() {
            None | Some("" | "rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            Some(other) => {
                let (_, propagation, _) = mount_options(&[other.to_string()]);
                if propagation.is_empty() {
                    return Err(RuntimeError::Config(format!(
                        "rootfsPropagation {other:?}: expected shared, slave or private (r-)"
                    )));
                }
                propagation
            }
        };
        let cgroup_procs = self.cgroup.as_ref().map(Cgroup::create).transpose()?;
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
            host_devices,
            fresh_dev: !self.standard_mounts
                && self.mounts.iter().any(|m| {
                    matches!(m, Mount::Oci { target, fstype, options, .. }
                        if target.trim_end_matches('/') == "/dev"
                            && !fstype.is_empty()
                            && fstype != "bind"
                            && !options.iter().any(|o| o == "bind" || o == "rbind"))
                }),
            devices,
            masked_paths: self
                .masked_paths
                .iter()
                .map(|m| p(m))
                .collect::<Result<_, _>>()?,
            readonly_paths: self
                .readonly_paths
                .iter()
                .map(|m| p(m))
                .collect::<Result<_, _>>()?,
            root_propagation,
            sysctls,
            rlimits: self.rlimits.clone(),
            capabilities: self.capabilities,
            last_capability: security::last_capability(),
            no_new_privileges: self.no_new_privileges,
            oom_score_adj: self
                .oom_score_adj
                .map(|v| cstr(v.to_string()))
                .transpose()?,
            cgroup_procs,
            gate,
            report,
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
        self.command_with(None).map(|(cmd, _)| cmd)
    }

    /// Start the process, after `configure` has set up the command (stdio, say). A failure
    /// names the step that failed: the mount, device, path or id.
    pub fn spawn(
        &self,
        configure: impl FnOnce(&mut Command),
    ) -> Result<std::process::Child, RuntimeError> {
        let (mut cmd, report) = self.command_with(None)?;
        configure(&mut cmd);
        let spawned = cmd.spawn();
        // The hook's copy of the report pipe goes with the command.
        drop(cmd);
        spawned.map_err(|e| failure::start_error(self, Some(&report), e))
    }

    /// Start the container from a command [`Container::command`] would give, after `configure`
    /// has set its stdio, but let it wait, in its namespaces and before its root is set up,
    /// until `setup` has run with its pid: time to bind its namespaces (`/proc/PID/ns/*`) and
    /// move network interfaces in. If `setup` fails the container is abandoned.
    pub fn spawn_gated(
        &self,
        configure: impl FnOnce(&mut Command),
        setup: impl FnOnce(u32) -> Result<(), RuntimeError> + Send,
    ) -> Result<std::process::Child, RuntimeError> {
        let spawn_err = |source| RuntimeError::Spawn {
            command: self.args.join(" "),
            source,
        };
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(errno);
        let (ready_read, ready_write) = pipe().map_err(spawn_err)?;
        let (go_read, go_write) = pipe().map_err(spawn_err)?;
        let go_write_raw = go_write.as_raw_fd();
        let (mut cmd, report) = self.command_with(Some(GatePipes {
            ready_write,
            go_read,
            go_write: go_write_raw,
        }))?;
        configure(&mut cmd);
        std::thread::scope(|scope| {
            // spawn() returns only once the container has exec'd, so the set-up runs beside it.
            let helper = scope.spawn(move || -> Result<(), RuntimeError> {
                let mut pid = [0u8; 4];
                let mut file = fs::File::from(ready_read);
                std::io::Read::read_exact(&mut file, &mut pid).map_err(spawn_err)?;
                setup(u32::from_ne_bytes(pid))?;
                nix::unistd::write(&go_write, b"g").map_err(|e| spawn_err(errno(e)))?;
                Ok(())
            });
            let spawned = cmd.spawn();
            // Closes this process's end of the ready pipe, so the helper ends if no pid came.
            drop(cmd);
            let set_up = helper
                .join()
                .unwrap_or_else(|_| Err(RuntimeError::Config("container set-up panicked".into())));
            match (spawned, set_up) {
                (Ok(child), Ok(())) => Ok(child),
                (Ok(mut child), Err(e)) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(e)
                }
                (Err(_), Err(e)) => Err(e),
                (Err(e), Ok(())) => Err(failure::start_error(self, Some(&report), e)),
            }
        })
    }

    /// The command, and the read end of the pipe its hook reports a failing step on.
    fn command_with(&self, gate: Option<GatePipes>) -> Result<(Command, OwnedFd), RuntimeError> {
        let (report_read, report_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| RuntimeError::Spawn {
                    command: self.args.join(" "),
                    source: errno(e),
                })?;
        let prepared = self.prepare(gate, report_write)?;
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
        Ok((cmd, report_read))
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
        let mut child = self.spawn(|cmd| {
            cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        })?;
        let status = child.wait().map_err(spawn_err)?;
        if let Some(cg) = &self.cgroup {
            cg.remove()?;
        }
        Ok(status)
    }
}

/// The pipes of a gated start: the intermediate process sends the container's pid on
/// `ready_write`; the container waits for a byte on `go_read`, after closing its inherited copy
/// of the other end (`go_write`).
struct GatePipes {
    ready_write: OwnedFd,
    go_read: OwnedFd,
    go_write: RawFd,
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The pre-exec hook: cgroup, new namespaces, a second fork, mounts, pivot_root, limits,
/// identity, capabilities.
fn enter(p: &Prepared) -> io::Result<()> {
    // The container starts with no signals blocked, whatever its parent blocks.
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(errno)?;
    if let Some(procs) = &p.cgroup_procs {
        at(p, Step::Cgroup, 0, cgroup::join(procs))?;
    }
    if let Some(value) = &p.oom_score_adj {
        at(
            p,
            Step::OomScore,
            0,
            write_file(c"/proc/self/oom_score_adj", value),
        )?;
    }
    for (i, (file, kind)) in p.joins.iter().enumerate() {
        at(
            p,
            Step::JoinNamespace,
            i,
            nix::sched::setns(file, *kind).map_err(errno),
        )?;
    }
    at(p, Step::Unshare, 0, unshare(p.unshare).map_err(errno))?;
    // SAFETY: called in the single-threaded child between fork and exec.
    match unsafe { fork() }.map_err(errno)? {
        ForkResult::Parent { child } => {
            if let Some(gate) = &p.gate {
                let pid = child.as_raw().to_ne_bytes();
                // SAFETY: write(2) from a stack buffer to an open descriptor.
                unsafe { libc::write(gate.ready_write.as_raw_fd(), pid.as_ptr().cast(), 4) };
            }
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
    if let Some(gate) = &p.gate {
        at(
            p,
            Step::Gate,
            0,
            wait_for_gate(&gate.go_read, gate.go_write),
        )?;
    }
    // /proc/sys shows the namespaces of the process that opens it: set before leaving the host's /proc.
    for (i, (path, value)) in p.sysctls.iter().enumerate() {
        at(p, Step::Sysctl, i, write_file(path, value))?;
    }
    rootfs::setup_root(p)?;
    if p.unshare.contains(CloneFlags::CLONE_NEWUTS) {
        at(p, Step::Hostname, 0, sethostname(&p.hostname))?;
    }
    if p.unshare.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up();
    }
    at(p, Step::Rlimit, 0, security::apply_rlimits(&p.rlimits))?;
    if let Some(caps) = &p.capabilities {
        at(
            p,
            Step::Bounding,
            0,
            security::apply_bounding(caps, p.last_capability),
        )?;
    }
    if p.no_new_privileges {
        at(p, Step::NoNewPrivs, 0, security::apply_no_new_privs())?;
    }
    at(p, Step::Groups, 0, setgroups(&p.groups).map_err(errno))?;
    at(p, Step::Gid, 0, setgid(p.gid).map_err(errno))?;
    at(p, Step::Uid, 0, setuid(p.uid).map_err(errno))?;
    if let Some(caps) = &p.capabilities {
        at(
            p,
            Step::Capabilities,
            0,
            security::apply_sets(caps, p.last_capability),
        )?;
    }
    at(p, Step::Cwd, 0, chdir(p.cwd.as_c_str()).map_err(errno))
}

/// Record the step on the report pipe when `r` failed (see `failure`).
pub(crate) fn at<T>(p: &Prepared, step: Step, index: usize, r: io::Result<T>) -> io::Result<T> {
    if r.is_err() {
        failure::record(&p.report, step, index);
    }
    r
}

/// Block until the caller opens the gate (or drops it: then the container is abandoned).
fn wait_for_gate(read: &OwnedFd, write: RawFd) -> io::Result<()> {
    // SAFETY: closing this process's copy of the write end, so a dropped gate reads as EOF.
    unsafe { libc::close(write) };
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(read, &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => {
                return Err(io::Error::other(
                    "the container was abandoned before its start",
                ));
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(errno(e)),
        }
    }
}

/// Write `value` to the file at `path` (no allocation; for the pre-exec hook).
fn write_file(path: &std::ffi::CStr, value: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: plain system calls on NUL-terminated strings and a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes = value.to_bytes();
        let rc = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
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
