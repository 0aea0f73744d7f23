//! What runs in the child between `fork` and `exec` (the pre-exec hook): join the cgroup, enter
//! or create the namespaces, fork once more so that the command is PID 1 of its PID namespace
//! (its new mount and cgroup namespaces are made after the fork, the container's alone),
//! wait at the gate, set sysctls, set up the root file system, then limits, identity,
//! capabilities and the seccomp filter (last, just before the exec, with no_new_privs; before
//! the change of identity without it, as runc does).
//!
//! The hook runs in a forked copy of a process that may have other threads: it must not
//! allocate or take locks. Everything it needs is converted beforehand into [`Prepared`]
//! (C strings, open descriptors, numbers), and it only makes system calls (nix's wrappers, which
//! take `&CStr` without copying, or [`crate::sys`]).
//!
//! The intermediate process (the hook's first child) sends the container's pid on a pipe,
//! closes every other descriptor, waits for the container and exits with its status (a signal
//! N as 128+N). A step that fails is recorded on the report pipe (see `failure`).
//!
//! The container dies with the intermediate process (a parent-death signal). When asked
//! ([`ParentDeath`]), the intermediate process dies with its own parent too: the parent's death
//! (or SIGTERM, SIGINT, SIGHUP) makes it kill the container, which ends every process of the
//! container's PID namespace, remove the cgroup the run created, and die of that signal.

use crate::failure::{self, Step};
use crate::rootfs::{self, PreparedMount};
use crate::security::{self, Capabilities, Rlimit};
use crate::{cgroup, error::errno, sys};
use nix::mount::MsFlags;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, chdir, setgid, setgroups, setuid};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The pipes shared by the parent and the hook.
pub(crate) struct Pipes {
    /// The intermediate process writes the container's pid (4 bytes) here.
    pub(crate) pid_write: OwnedFd,
    /// A gated start: the container waits for a byte on the first, after closing its inherited
    /// copy of the write end (the second).
    pub(crate) gate: Option<(OwnedFd, RawFd)>,
    /// Where the hook records the step that failed (see `failure`).
    pub(crate) report: OwnedFd,
}

/// Tie the intermediate process to its parent (`Options::die_with_parent`).
pub(crate) struct ParentDeath {
    /// The parent (the process that starts the container).
    pub(crate) parent: Pid,
    /// The cgroup the run created, which the intermediate process removes when its parent is
    /// gone: the directory, and the `cgroup.procs` to move itself to first.
    pub(crate) cgroup: Option<(CString, CString)>,
}

/// The signals that stop a container tied to its parent; SIGTERM is the parent-death signal.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Everything the hook needs, converted before the fork.
pub(crate) struct Prepared {
    pub(crate) rootfs: CString,
    pub(crate) proc_dir: CString,
    pub(crate) sys_dir: CString,
    pub(crate) dev_dir: CString,
    pub(crate) pts_dir: CString,
    pub(crate) shm_dir: CString,
    pub(crate) host_devices: Vec<(CString, CString)>,
    /// The config mounts a file system (not a bind) on /dev: add the default devices.
    pub(crate) fresh_dev: bool,
    /// Device nodes to create: path, mode (type and permissions), device number, owner.
    pub(crate) devices: Vec<(CString, libc::mode_t, libc::dev_t, Uid, Gid)>,
    pub(crate) masked_paths: Vec<CString>,
    pub(crate) readonly_paths: Vec<CString>,
    pub(crate) root_propagation: MsFlags,
    /// `/proc/sys/...` files and their values.
    pub(crate) sysctls: Vec<(CString, CString)>,
    pub(crate) rlimits: Vec<Rlimit>,
    pub(crate) capabilities: Option<Capabilities>,
    pub(crate) last_capability: u32,
    pub(crate) no_new_privileges: bool,
    /// The compiled filter (installed by [`sys::install_seccomp`]).
    pub(crate) seccomp: Option<std::sync::Arc<crate::seccomp::Program>>,
    /// The value for /proc/self/oom_score_adj.
    pub(crate) oom_score_adj: Option<CString>,
    /// The cgroup's `cgroup.procs`, open for writing.
    pub(crate) cgroup_procs: Option<fs::File>,
    /// Whether (and how) the intermediate process dies with its parent.
    pub(crate) parent_death: Option<ParentDeath>,
    pub(crate) pipes: Pipes,
    pub(crate) dev_links: Vec<(CString, CString)>,
    pub(crate) mounts: Vec<PreparedMount>,
    pub(crate) standard_mounts: bool,
    pub(crate) readonly_root: bool,
    pub(crate) joins: Vec<(fs::File, CloneFlags)>,
    pub(crate) unshare: CloneFlags,
    pub(crate) hostname: CString,
    pub(crate) cwd: CString,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    pub(crate) groups: Vec<Gid>,
}

/// The hook (installed by [`sys::install_hook`]).
pub(crate) fn enter(p: &Prepared) -> io::Result<()> {
    // The container starts with default signal handling and no signals blocked, whatever its
    // parent does.
    sys::reset_signal_dispositions();
    let unblock = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    at(p, Step::Signals, 0, unblock.map_err(errno))?;
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
    // The mount and cgroup namespaces are the container's alone: the intermediate process
    // stays in those of its parent, where the paths it may clean up are.
    let own = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
    at(p, Step::Unshare, 0, unshare(p.unshare - own).map_err(errno))?;
    if let Some(death) = &p.parent_death {
        at(p, Step::ParentDeath, 0, tie_to_parent(death))?;
    }
    let intermediate = nix::unistd::getpid();
    match at(p, Step::Fork, 0, sys::fork_in_hook())? {
        ForkResult::Parent { child } => wait_and_exit(p, child),
        ForkResult::Child => {}
    }
    at(p, Step::Unshare, 0, unshare(p.unshare & own).map_err(errno))?;
    if p.parent_death.is_some() {
        // The signals the intermediate process waits for are blocked: not in the container.
        let unblock = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        at(p, Step::Signals, 0, unblock.map_err(errno))?;
    }
    // The container cannot outlive the process that reports its exit. If that one died before
    // this took effect, the parent is another process by now (in a new PID namespace the
    // parent is outside it and shows as 0: nothing to compare).
    let orphaned = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(errno)
        .and_then(|()| {
            let parent = nix::unistd::getppid();
            if parent == intermediate || parent.as_raw() == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ESRCH))
            }
        });
    at(p, Step::ParentDeath, 0, orphaned)?;
    if let Some((go_read, go_write)) = &p.pipes.gate {
        at(p, Step::Gate, 0, wait_for_gate(go_read, *go_write))?;
    }
    // /proc/sys shows the namespaces of the process that opens it: set before leaving the host's /proc.
    for (i, (path, value)) in p.sysctls.iter().enumerate() {
        at(p, Step::Sysctl, i, write_file(path, value))?;
    }
    // runc's umask: what the container creates (and the mount points made for it) does not
    // depend on the umask of whoever started it.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    rootfs::setup_root(p)?;
    if p.unshare.contains(CloneFlags::CLONE_NEWUTS) {
        let name = OsStr::from_bytes(p.hostname.to_bytes());
        at(
            p,
            Step::Hostname,
            0,
            nix::unistd::sethostname(name).map_err(errno),
        )?;
    }
    if p.unshare.contains(CloneFlags::CLONE_NEWNET) {
        // Best effort: a container without loopback still runs.
        let _ = loopback_up();
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
    } else if let Some(program) = &p.seccomp {
        // Without no_new_privs the kernel takes a filter only with CAP_SYS_ADMIN in effect:
        // before the change of user and capabilities, which then run under the filter (runc).
        at(p, Step::Seccomp, 0, sys::install_seccomp(program))?;
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
    at(p, Step::Cwd, 0, chdir(p.cwd.as_c_str()).map_err(errno))?;
    if p.no_new_privileges
        && let Some(program) = &p.seccomp
    {
        // Last, so that only the exec runs under the filter.
        at(p, Step::Seccomp, 0, sys::install_seccomp(program))?;
    }
    // What fails from here on is the exec itself.
    failure::record(&p.pipes.report, Step::Exec, 0);
    Ok(())
}

/// The intermediate process: report the container's pid, close everything but stdio (so the
/// parent sees the container's exec), wait for the container and pass its status on.
fn wait_and_exit(p: &Prepared, child: Pid) -> ! {
    let pid = child.as_raw().to_ne_bytes();
    // If this write fails the parent reads no pid and signals this process instead.
    let _ = nix::unistd::write(&p.pipes.pid_write, &pid);
    sys::close_from_3();
    if let Some(death) = &p.parent_death {
        wait_or_stop(child, death);
    }
    loop {
        if let Some(code) = passed_on(waitpid(child, None)) {
            sys::exit_immediately(code)
        }
    }
}

/// The exit code the intermediate process passes on for a wait's result: the container's own,
/// 128+N for a signal N, 255 when the wait fails; None while it has not ended.
fn passed_on(waited: nix::Result<WaitStatus>) -> Option<i32> {
    match waited {
        Ok(WaitStatus::Exited(_, c)) => Some(c),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) | Err(nix::Error::EINTR) => None,
        Err(_) => Some(255),
    }
}

/// In the intermediate process before the fork: wait for the stop signals and SIGCHLD (blocked,
/// for [`wait_or_stop`]), receive SIGTERM when the parent dies, and check that it has not died
/// already (then this process has another parent by now).
fn tie_to_parent(death: &ParentDeath) -> io::Result<()> {
    let mut blocked = stop_signals();
    blocked.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).map_err(errno)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(errno)?;
    if nix::unistd::getppid() == death.parent {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::ESRCH))
    }
}

/// The intermediate process tied to its parent: pass the container's status on when it ends;
/// when a stop signal arrives (the parent died), kill the container (and with it its PID
/// namespace), remove the run's cgroup, and die of the signal.
fn wait_or_stop(child: Pid, death: &ParentDeath) -> ! {
    let mut waited = stop_signals();
    waited.add(Signal::SIGCHLD);
    loop {
        let signal = match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                let waited = waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
                match passed_on(waited) {
                    Some(code) => sys::exit_immediately(code),
                    None => continue,
                }
            }
            Ok(signal) => signal,
            // sigwait fails only on an invalid set.
            Err(_) => Signal::SIGTERM,
        };
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        // PID 1 of a namespace is reaped only after every other process in it.
        while let Err(nix::Error::EINTR) = waitpid(child, None) {}
        if let Some((dir, procs)) = &death.cgroup {
            leave_and_remove(dir, procs);
        }
        let mut only = SigSet::empty();
        only.add(signal);
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
        sys::exit_immediately(128 + signal as i32)
    }
}

/// Move this process out of the cgroup at `dir` (to the cgroup whose `cgroup.procs` is
/// `procs`) and remove it; best effort, for about a second (cgroup v2 empties asynchronously).
fn leave_and_remove(dir: &CStr, procs: &CStr) {
    let _ = write_file(procs, c"0");
    for _ in 0..100 {
        match nix::unistd::unlinkat(
            nix::fcntl::AT_FDCWD,
            dir,
            nix::unistd::UnlinkatFlags::RemoveDir,
        ) {
            Err(nix::Error::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(10)),
            _ => return,
        }
    }
}

/// Record the step on the report pipe when `r` failed (see `failure`).
pub(crate) fn at<T>(p: &Prepared, step: Step, index: usize, r: io::Result<T>) -> io::Result<T> {
    if r.is_err() {
        failure::record(&p.pipes.report, step, index);
    }
    r
}

/// Block until the caller opens the gate (or drops it: then the container is abandoned).
fn wait_for_gate(read: &OwnedFd, write: RawFd) -> io::Result<()> {
    // This process's copy of the write end: closed, so that a dropped gate reads as EOF.
    let _ = nix::unistd::close(write);
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
fn write_file(path: &CStr, value: &CStr) -> io::Result<()> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(errno)?;
    nix::unistd::write(&fd, value.to_bytes())
        .map(drop)
        .map_err(errno)
}

/// Bring `lo` up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(errno)?;
    // IFF_UP and IFF_RUNNING fit the 16-bit flags field.
    #[allow(clippy::cast_possible_truncation)]
    let flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    sys::set_interface_flags(&fd, b"lo", flags)
}
