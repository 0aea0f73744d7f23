//! Starting the container's process with `std::process::Command` and the pre-exec hook (see
//! `hook`), plain or gated. A gated start lets the container wait, in its namespaces and before
//! its root is set up, until a set-up function has run with its pid (runtime.json's interfaces
//! and namespace bindings). Either way the caller learns the pid of the container's own process
//! (the command), not only that of the runtime's intermediate process.

use crate::container::Container;
use crate::error::{RuntimeError, errno};
use crate::failure;
use crate::hook::{ParentDeath, Pipes};
use crate::sys;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command};

/// What must run on the host while a gated container waits; it gets the container's pid.
pub(crate) type Setup<'a> = &'a (dyn Fn(u32) -> Result<(), RuntimeError> + Sync);

/// A started container.
pub(crate) struct Spawned {
    /// The runtime's intermediate process: the parent's child, which exits with the container's
    /// status.
    pub(crate) child: Child,
    /// The container's process, when its pid arrived.
    pub(crate) container_pid: Option<u32>,
}

/// Read the pid the intermediate process sends (None when it ended without sending one).
fn read_pid(from: OwnedFd) -> Option<u32> {
    let mut bytes = [0u8; 4];
    fs::File::from(from).read_exact(&mut bytes).ok()?;
    u32::try_from(i32::from_ne_bytes(bytes)).ok()
}

/// Why a gated set-up did not run to the end.
enum SetupFailure {
    /// No pid arrived: the start failed before the container existed.
    NoPid,
    /// The set-up (or opening the gate) failed.
    Failed(RuntimeError),
}

/// Start `c`, its cgroup joined through `cgroup_procs`, after `configure` has set up the command
/// (stdio, say); with `setup`, gated; with `parent_death`, tied to this process. A failure
/// names the step that failed.
pub(crate) fn spawn(
    c: &Container,
    cgroup_procs: Option<fs::File>,
    parent_death: Option<ParentDeath>,
    configure: impl FnOnce(&mut Command),
    setup: Option<Setup<'_>>,
) -> Result<Spawned, RuntimeError> {
    let spawn_err = |source| RuntimeError::Spawn {
        command: c.command_line(),
        source,
    };
    let Some(program) = c.args.first() else {
        return Err(spawn_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty command",
        )));
    };
    let pipe = |flags| pipe2(OFlag::O_CLOEXEC | flags).map_err(|e| spawn_err(errno(e)));
    let (pid_read, pid_write) = pipe(OFlag::empty())?;
    let (report_read, report_write) = pipe(OFlag::O_NONBLOCK)?;
    let (gate, go_write) = match setup {
        Some(_) => {
            let (go_read, go_write) = pipe(OFlag::empty())?;
            let raw = go_write.as_raw_fd();
            (Some((go_read, raw)), Some(go_write))
        }
        None => (None, None),
    };
    let pipes = Pipes {
        pid_write,
        gate,
        report: report_write,
    };
    let prepared = c.prepare(pipes, cgroup_procs, parent_death)?;
    let mut cmd = Command::new(program);
    cmd.args(&c.args[1..]).env_clear();
    for kv in &c.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    sys::install_hook(&mut cmd, prepared);
    configure(&mut cmd);
    let (Some(setup), Some(go_write)) = (setup, go_write) else {
        let spawned = cmd.spawn();
        // The hook's copies of the pipes go with the command: the pid read below ends.
        drop(cmd);
        let child = spawned.map_err(|e| failure::start_error(c, &report_read, e))?;
        return Ok(Spawned {
            child,
            container_pid: read_pid(pid_read),
        });
    };
    std::thread::scope(|scope| {
        // spawn() returns only once the container has exec'd, so the set-up runs beside it.
        let helper = scope.spawn(move || -> Result<u32, SetupFailure> {
            let pid = read_pid(pid_read).ok_or(SetupFailure::NoPid)?;
            setup(pid).map_err(SetupFailure::Failed)?;
            nix::unistd::write(&go_write, b"g")
                .map_err(|e| SetupFailure::Failed(spawn_err(errno(e))))?;
            Ok(pid)
        });
        let spawned = cmd.spawn();
        // Closes this process's end of the pid pipe, so the helper ends if no pid came.
        drop(cmd);
        let set_up = helper.join().unwrap_or_else(|_| {
            Err(SetupFailure::Failed(RuntimeError::Config(
                "container set-up panicked".into(),
            )))
        });
        match (spawned, set_up) {
            (Ok(child), Ok(pid)) => Ok(Spawned {
                child,
                container_pid: Some(pid),
            }),
            (Ok(mut child), Err(failure)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(match failure {
                    SetupFailure::Failed(e) => e,
                    SetupFailure::NoPid => spawn_err(io::Error::other(
                        "the runtime's process ended without starting the container",
                    )),
                })
            }
            (Err(_), Err(SetupFailure::Failed(e))) => Err(e),
            (Err(e), _) => Err(failure::start_error(c, &report_read, e)),
        }
    })
}
