//! The life of one container run, the same for kiln-init, `kiln run bundle` and a build's `RUN`
//! steps:
//!
//! 1. **create** ([`Created::new`], [`Created::from_bundle`]): for a bundle, runtime.json's host
//!    mounts and directories (when asked); the cgroup with its limits; the mount points the
//!    container's mounts need in its root;
//! 2. **start** ([`Created::start`]): the process, plain, or gated when runtime.json has
//!    interfaces or namespace bindings to set up while the container waits in its namespaces;
//! 3. **wait** ([`Running::wait`]), or the caller reaps the process itself, as PID 1 reaps every
//!    child, and says so ([`Running::reaped`]);
//! 4. **cleanup**: processes left in a cgroup the run created are killed and the cgroup is
//!    removed; the mount points made are removed when asked (an exclusive root such as a build
//!    step's; a root other containers may use at the same time keeps them); runtime.json's host
//!    mounts are undone, the last first.
//!
//! Cleanup runs on every path: after the exit, when creating or starting fails part-way, and
//! when a [`Created`] or [`Running`] is dropped (a running container is killed first). What a
//! container is meant to leave behind stays: runtime.json's `mkdir` directories, namespaces
//! bound to paths by `bindNS`, veth peers on the host, and mounts the container itself
//! propagated to the host through a shared mount.
//!
//! ```no_run
//! use kiln_runtime::{Container, lifecycle::{Created, Options}};
//!
//! let container = Container::new("/tmp/rootfs", vec!["/bin/true".into()]);
//! let created = Created::new(container, Options { remove_mountpoints: true, ..Options::default() })?;
//! let exit = created.start(|cmd| { cmd.stdin(std::process::Stdio::null()); })?.wait()?;
//! assert!(exit.success());
//! # Ok::<(), kiln_runtime::RuntimeError>(())
//! ```

use crate::bundle::{self, HostSetup};
use crate::cgroup::Cgroup;
use crate::container::{Container, MountPoints};
use crate::error::{RuntimeError, errno};
use crate::hook::ParentDeath;
use crate::host_mounts;
use crate::prepare::cstr;
use crate::spawn;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};

/// What a run sets up around the container besides what its configuration asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// For a bundle: carry out runtime.json's host mounts and directories first (kiln-init
    /// does; `kiln run bundle --prepare`). The mounts are undone at cleanup.
    pub host_mounts: bool,
    /// Remove the mount points made in the root file system at cleanup, and restore the times
    /// of the directories that held them, so that the root is left as it was. Only for a root
    /// no other container uses meanwhile: removing a directory that is a mount point in
    /// another container's namespace detaches that mount.
    pub remove_mountpoints: bool,
    /// Tie the run to the thread that starts it: when that thread (or the whole process) dies,
    /// even by SIGKILL, the runtime's process gets a parent-death signal, kills the container
    /// (and with it every process of its PID namespace) and removes the cgroup the run
    /// created. SIGTERM, SIGINT and SIGHUP sent to the runtime's process do the same. For a
    /// build's RUN steps and `kiln run bundle`; not for a supervisor that starts containers
    /// from threads that may end before them (the signal follows the starting *thread*, not
    /// the process), such as kiln-init.
    pub die_with_parent: bool,
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code. A container killed by signal N reports 128+N here: the
    /// runtime's intermediate process passes the status on as an exit code, as shells do.
    Code(i32),
    /// The runtime's process for it was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// The status as one number: the code, or 128+N for a signal N (what `docker run` and shells
    /// report).
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            // Stopped or continued: not an end; reported as a failure.
            (None, None) => Exit::Code(255),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "code {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {s} ({})", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// What a run made on the host, undone once (explicitly, or on drop).
#[derive(Debug, Default)]
struct Cleanup {
    command: String,
    /// A cgroup the run created (not one that existed before).
    cgroup: Option<Cgroup>,
    mountpoints: MountPoints,
    remove_mountpoints: bool,
    /// runtime.json's host mounts, in the order they were made.
    host_mounts: Vec<PathBuf>,
    done: bool,
}

impl Cleanup {
    fn run(&mut self) -> Result<(), RuntimeError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut problems = Vec::new();
        if let Some(cg) = self.cgroup.take()
            && let Err(e) = cg.remove(true)
        {
            problems.push(e.to_string());
        }
        if self.remove_mountpoints {
            problems.extend(self.mountpoints.remove());
        }
        for target in self.host_mounts.drain(..).rev() {
            if let Err(e) = host_mounts::unmount(&target) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Cleanup {
                command: std::mem::take(&mut self.command),
                problems: problems.join("; "),
            })
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Errors have nowhere to go here; explicit paths report them.
        let _ = self.run();
    }
}

/// A container created on the host, not started yet.
#[derive(Debug)]
pub struct Created {
    container: Container,
    host: HostSetup,
    cgroup_procs: Option<std::fs::File>,
    die_with_parent: bool,
    cleanup: Cleanup,
}

impl Created {
    /// Create `container` (a build step's, say): its cgroup, and the mount points its mounts
    /// need in its root.
    pub fn new(container: Container, options: Options) -> Result<Created, RuntimeError> {
        Created::with_host(container, HostSetup::default(), Vec::new(), options)
    }

    /// Create the container of the bundle in `dir` (config.json, and runtime.json when
    /// present): runtime.json's host mounts and directories when `options.host_mounts`, then as
    /// [`Created::new`]. Its interfaces and namespace bindings are set up at the start.
    pub fn from_bundle(dir: &Path, options: Options) -> Result<Created, RuntimeError> {
        let container = bundle::load(dir)?;
        let host = bundle::host_setup(dir)?;
        let mut mounted = Vec::new();
        if options.host_mounts
            && let Err(e) = bundle::prepare_host(dir, &mut mounted)
        {
            // Undo what was made before the failure.
            for target in mounted.iter().rev() {
                let _ = host_mounts::unmount(target);
            }
            return Err(e);
        }
        Created::with_host(container, host, mounted, options)
    }

    fn with_host(
        container: Container,
        host: HostSetup,
        host_mounts: Vec<PathBuf>,
        options: Options,
    ) -> Result<Created, RuntimeError> {
        let mut created = Created {
            cleanup: Cleanup {
                command: container.command_line(),
                cgroup: None,
                mountpoints: MountPoints::default(),
                remove_mountpoints: options.remove_mountpoints,
                host_mounts,
                done: false,
            },
            container,
            host,
            cgroup_procs: None,
            die_with_parent: options.die_with_parent,
        };
        // From here on, a failure drops `created`, which cleans up what was made.
        if let Some(cg) = &created.container.cgroup {
            let (procs, made) = cg.create()?;
            created.cgroup_procs = Some(procs);
            if made {
                created.cleanup.cgroup = Some(cg.clone());
            }
        }
        created
            .container
            .make_mountpoints(&mut created.cleanup.mountpoints)?;
        Ok(created)
    }

    /// The container.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// Start the process, after `configure` has set up the command (its stdio: inherited unless
    /// changed). A failure names the step that failed; a program that cannot be executed is
    /// [`RuntimeError::Exec`]. Everything created is cleaned up when the start fails.
    pub fn start(mut self, configure: impl FnOnce(&mut Command)) -> Result<Running, RuntimeError> {
        let procs = self.cgroup_procs.take();
        let host = std::mem::take(&mut self.host);
        let apply = |pid: u32| host.apply(pid);
        let setup: Option<spawn::Setup<'_>> = if host.is_empty() { None } else { Some(&apply) };
        let parent_death = self.parent_death()?;
        let spawned = spawn::spawn(&self.container, procs, parent_death, configure, setup)?;
        let pid = spawned.child.id();
        Ok(Running {
            container_pid: spawned.container_pid.unwrap_or(pid),
            child: spawned.child,
            cleanup: std::mem::take(&mut self.cleanup),
            finished: false,
        })
    }

    /// What ties the runtime's process to this one, with `Options::die_with_parent`: this
    /// process, and the cgroup the run created with where to leave it for.
    fn parent_death(&self) -> Result<Option<ParentDeath>, RuntimeError> {
        if !self.die_with_parent {
            return Ok(None);
        }
        let cgroup = match &self.cleanup.cgroup {
            Some(cg) => match cg.own_procs() {
                Some(procs) => Some((
                    cstr(cg.dir().as_os_str().as_bytes())?,
                    cstr(procs.as_os_str().as_bytes())?,
                )),
                None => None,
            },
            None => None,
        };
        Ok(Some(ParentDeath {
            parent: nix::unistd::getpid(),
            cgroup,
        }))
    }

    /// Start with stdin empty and the given stdout and stderr, and wait for the end.
    pub fn run(
        self,
        stdout: std::process::Stdio,
        stderr: std::process::Stdio,
    ) -> Result<Exit, RuntimeError> {
        self.start(|cmd| {
            cmd.stdin(std::process::Stdio::null())
                .stdout(stdout)
                .stderr(stderr);
        })?
        .wait()
    }
}

/// A started container. Dropping it before it has ended kills it, waits for it and cleans up.
#[derive(Debug)]
pub struct Running {
    child: Child,
    container_pid: u32,
    cleanup: Cleanup,
    finished: bool,
}

impl Running {
    /// The pid of the runtime's process for the container, the caller's child: what `waitpid`
    /// reports when the container has ended.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the container's own process (the command).
    pub fn container_pid(&self) -> u32 {
        self.container_pid
    }

    /// Send `signal` to the container's process. A container that is PID 1 of its PID
    /// namespace gets only the signals it handles, except SIGKILL.
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        let pid = Pid::from_raw(i32::try_from(self.container_pid).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|e| RuntimeError::Spawn {
            command: self.cleanup.command.clone(),
            source: errno(e),
        })
    }

    /// Whether `signal` would be lost on the container: the kernel gives PID 1 of a PID
    /// namespace only the signals it has a handler for (SIGKILL aside). A supervisor can then
    /// kill at once instead of waiting out a grace period.
    pub fn ignores(&self, signal: Signal) -> bool {
        if signal == Signal::SIGKILL {
            return false;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.container_pid))
        else {
            return false;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let namespace_init = field("NSpid:").and_then(|p| p.split_whitespace().last()) == Some("1");
        let caught = field("SigCgt:")
            .and_then(|m| u64::from_str_radix(m, 16).ok())
            .unwrap_or(u64::MAX);
        namespace_init && caught & (1u64 << (signal as i32 - 1)) == 0
    }

    /// The container's stdout, when the command was configured with a pipe for it.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The container's stderr, when the command was configured with a pipe for it.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Wait for the container to end, then clean up. A cleanup that leaves something behind is
    /// an error (naming what), even when the container succeeded.
    pub fn wait(mut self) -> Result<Exit, RuntimeError> {
        let status = self.child.wait().map_err(|source| RuntimeError::Spawn {
            command: self.cleanup.command.clone(),
            source,
        })?;
        self.finished = true;
        self.cleanup.run()?;
        Ok(Exit::from(status))
    }

    /// The caller reaped the process ([`Running::pid`]) itself (PID 1 reaps every child);
    /// clean up.
    pub fn reaped(mut self) -> Result<(), RuntimeError> {
        self.finished = true;
        self.cleanup.run()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            // The intermediate process reaps the container and then exits; it is killed itself
            // only when the container's pid is not known.
            if self.signal(Signal::SIGKILL).is_err() || self.container_pid == self.child.id() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // `cleanup` is dropped next, which cleans up.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Mount;
    use std::fs;

    /// Running containers needs root; CI runs the tests as root.
    fn is_root() -> bool {
        let root = nix::unistd::Uid::effective().is_root();
        if !root {
            eprintln!("skipped: running containers needs root");
        }
        root
    }

    /// Give an empty root the host's /usr, /bin, /lib... (links as the host has them, binds
    /// made at each start for the directories), so that the host's shell runs in it. Returns
    /// the binds.
    fn host_tools(root: &Path) -> Vec<Mount> {
        let mut binds = Vec::new();
        for dir in ["usr", "bin", "sbin", "lib", "lib64"] {
            let host = Path::new("/").join(dir);
            match fs::read_link(&host) {
                Ok(link) => std::os::unix::fs::symlink(link, root.join(dir)).expect("symlink"),
                Err(_) if host.is_dir() => binds.push(Mount::Bind {
                    source: host,
                    target: format!("/{dir}"),
                    readonly: true,
                }),
                Err(_) => {}
            }
        }
        binds
    }

    fn container(root: &Path, binds: &[Mount], args: &[&str]) -> Container {
        let mut c = Container::new(root, args.iter().map(|a| a.to_string()).collect());
        c.network = crate::Network::None;
        c.mounts = binds.to_vec();
        c
    }

    /// The entries of a directory, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The mount points of this process under `dir`.
    fn mounts_under(dir: &Path) -> Vec<String> {
        let prefix = dir.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    /// Start `c` with its stdout piped and wait for its first line (the container says when
    /// it is ready).
    fn start_reading_a_line(c: Container, options: Options) -> (Running, String) {
        let mut running = Created::new(c, options)
            .expect("created")
            .start(|cmd| {
                cmd.stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped());
            })
            .expect("started");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(running.take_stdout().expect("stdout")),
            &mut line,
        )
        .expect("read");
        (running, line)
    }

    fn run(c: Container) -> Result<Exit, RuntimeError> {
        let options = Options {
            remove_mountpoints: true,
            ..Options::default()
        };
        Created::new(c, options)?.run(std::process::Stdio::null(), std::process::Stdio::null())
    }

    #[test]
    fn exit_statuses_and_exec_failures_leave_the_root_as_it_was() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let binds = host_tools(root);
        let sh = |script: &str| container(root, &binds, &["/bin/sh", "-c", script]);
        // What the root holds; it must be the same after each run.
        let links = entries(root);

        assert_eq!(run(sh("exit 3")).expect("runs"), Exit::Code(3));
        assert_eq!(entries(root), links);
        // Killed by a signal (outside a PID namespace of its own: its init ignores SIGKILL
        // from inside).
        let mut killed = sh("kill -9 $$");
        killed.namespaces = Some(vec![crate::Namespace {
            kind: crate::NsKind::Mount,
            path: None,
        }]);
        assert_eq!(run(killed).expect("runs").code(), 128 + 9);
        assert!(run(sh("true")).expect("runs").success());

        let missing = run(container(root, &binds, &["/no/such/program"])).expect_err("not found");
        assert!(
            matches!(missing, RuntimeError::Exec { .. }) && missing.is_not_found(),
            "{missing:?}"
        );
        assert!(
            missing.to_string().contains("/no/such/program"),
            "{missing}"
        );
        let directory = run(container(root, &binds, &["/usr"])).expect_err("not a program");
        assert!(
            matches!(directory, RuntimeError::Exec { .. }) && !directory.is_not_found(),
            "{directory:?}"
        );

        // A step that fails is named, and is not taken for an exec failure.
        let mut bad = sh("true");
        bad.cwd = "/no/such/dir".into();
        let e = run(bad).expect_err("no such cwd");
        assert!(
            matches!(&e, RuntimeError::Start { step, .. } if step.contains("/no/such/dir")),
            "{e:?}"
        );

        assert_eq!(entries(root), links, "mount points were left in the root");
        assert!(mounts_under(root).is_empty(), "{:?}", mounts_under(root));
    }

    #[test]
    fn a_dropped_container_is_killed_and_cleaned_up() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let binds = host_tools(root);
        let c = container(root, &binds, &["/bin/sh", "-c", "exec sleep 600"]);
        let trapping = container(
            root,
            &binds,
            &[
                "/bin/sh",
                "-c",
                "trap 'exit 0' TERM; echo trapped; sleep 600 & wait",
            ],
        );
        let links = entries(root);
        let options = Options {
            remove_mountpoints: true,
            ..Options::default()
        };
        let running = Created::new(c, options)
            .expect("created")
            .start(|cmd| {
                cmd.stdin(std::process::Stdio::null());
            })
            .expect("started");
        let pid = Pid::from_raw(i32::try_from(running.container_pid()).expect("pid"));
        assert_ne!(running.container_pid(), running.pid());
        assert!(kill(pid, None).is_ok(), "the container is not running");
        // PID 1 of its namespace without a handler: SIGTERM would be lost.
        assert!(running.ignores(Signal::SIGTERM));
        assert!(!running.ignores(Signal::SIGKILL));
        assert!(
            entries(root).len() > links.len(),
            "no mount points were made"
        );
        drop(running);
        assert!(kill(pid, None).is_err(), "the container survived");
        assert_eq!(entries(root), links);
        assert!(mounts_under(root).is_empty(), "{:?}", mounts_under(root));

        // One that handles SIGTERM (once its trap is set: it says so) ends by it.
        let (running, line) = start_reading_a_line(trapping, options);
        assert_eq!(line, "trapped\n");
        assert!(!running.ignores(Signal::SIGTERM));
        running.signal(Signal::SIGTERM).expect("signal");
        assert_eq!(running.wait().expect("wait"), Exit::Code(0));
        assert_eq!(entries(root), links);
    }

    #[test]
    fn a_tied_run_is_stopped_with_its_process_limit_cgroup_by_a_stop_signal() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let binds = host_tools(root);
        let options = Options {
            remove_mountpoints: true,
            die_with_parent: true,
            ..Options::default()
        };
        // Statuses pass through as without the tie.
        let mut exits = container(root, &binds, &["/bin/sh", "-c", "exit 3"]);
        let cgroup = match crate::cgroup::process_limit(64) {
            crate::cgroup::ProcessLimit::Cgroup(cg) => Some(cg),
            crate::cgroup::ProcessLimit::Rlimit(_) => {
                eprintln!("no writable pids controller: the cgroup part is not checked");
                None
            }
        };
        exits.cgroup = cgroup.clone();
        let exit = Created::new(exits, options)
            .expect("created")
            .run(std::process::Stdio::null(), std::process::Stdio::null())
            .expect("runs");
        assert_eq!(exit, Exit::Code(3));
        if let Some(cg) = &cgroup {
            assert!(!cg.dir().exists(), "{} was left", cg.dir().display());
        }

        // SIGTERM to the runtime's process is what it gets when its parent dies: the
        // container, and every process of its PID namespace, end, and the runtime's process
        // removes the cgroup itself before it dies of the signal.
        let mut c = container(
            root,
            &binds,
            &["/bin/sh", "-c", "sleep 600 & echo started; exec sleep 601"],
        );
        let cgroup = match crate::cgroup::process_limit(64) {
            crate::cgroup::ProcessLimit::Cgroup(cg) => Some(cg),
            crate::cgroup::ProcessLimit::Rlimit(_) => None,
        };
        c.cgroup = cgroup.clone();
        let (running, line) = start_reading_a_line(c, options);
        assert_eq!(line, "started\n");
        let container_pid = Pid::from_raw(i32::try_from(running.container_pid()).expect("pid"));
        // The background sleep: the container's child.
        let children = fs::read_to_string(format!(
            "/proc/{container_pid}/task/{container_pid}/children"
        ))
        .expect("children");
        let background: Vec<Pid> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect();
        assert_eq!(background.len(), 1, "{children:?}");
        if let Some(cg) = &cgroup {
            let procs = fs::read_to_string(cg.dir().join("cgroup.procs")).expect("procs");
            assert_eq!(procs.lines().count(), 3, "{procs}");
        }
        let intermediate = Pid::from_raw(i32::try_from(running.pid()).expect("pid"));
        kill(intermediate, Signal::SIGTERM).expect("signal");
        let status = nix::sys::wait::waitpid(intermediate, None).expect("wait");
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGTERM, _)
            ),
            "{status:?}"
        );
        // Reaped: pids are not reused so soon.
        assert!(kill(container_pid, None).is_err(), "the container survived");
        assert!(kill(background[0], None).is_err(), "its child survived");
        if let Some(cg) = &cgroup {
            assert!(!cg.dir().exists(), "{} was left", cg.dir().display());
        }
        running.reaped().expect("cleanup");
        assert!(mounts_under(root).is_empty(), "{:?}", mounts_under(root));
    }
}
