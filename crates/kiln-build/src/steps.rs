//! What each instruction does to a stage, by its typed [`Kind`]: config-only instructions and
//! WORKDIR are in [`config`], COPY and ADD in [`copy`], RUN (a container on the stage's root)
//! here. Steps that change the file system go through [`Engine::fs_step`].

mod config;
mod copy;
mod mounts;

use crate::dockerfile::{Instruction, Kind, Run, RunNetwork, RunSecurity};
use crate::engine::Engine;
use crate::error::{BuildError, io_err};
use crate::events::{Event, TAIL_LINES, tail};
use crate::fsops;
use crate::image::DEFAULT_PATH;
use crate::state::State;
use kiln_runtime::{Container, Mount, Network};
use std::fs;

/// Apply one instruction of a stage's body.
pub(crate) fn apply(e: &Engine, st: &mut State, ins: &Instruction) -> Result<(), BuildError> {
    match &ins.kind {
        Kind::Run(r) => run(e, st, ins, r)?,
        Kind::Copy(c) => copy::copy(e, st, ins, c)?,
        Kind::Add(a) => copy::add(e, st, ins, a)?,
        Kind::Workdir(path) => config::workdir(e, st, ins, path)?,
        Kind::Arg(decls) => config::arg(e, st, ins, decls)?,
        Kind::Env(pairs) => config::env(e, st, ins, pairs)?,
        Kind::Label(pairs) => config::label(e, st, ins, pairs)?,
        Kind::User(user) => config::user(e, st, ins, user)?,
        Kind::StopSignal(signal) => config::stop_signal(e, st, ins, signal)?,
        Kind::Expose(ports) => config::expose(e, st, ins, ports)?,
        Kind::Volume(paths) => config::volume(e, st, ins, paths)?,
        Kind::Cmd(args) => config::cmd(st, ins, args),
        Kind::Entrypoint(args) => config::entrypoint(st, ins, args),
        Kind::Shell(shell) => config::shell(st, ins, shell),
        Kind::Healthcheck(check) => config::healthcheck(st, ins, check),
        Kind::Onbuild(trigger) => config::onbuild(st, ins, trigger),
        Kind::Maintainer(name) => config::maintainer(st, ins, name),
        // The planner starts a stage at each FROM: a body never holds one.
        Kind::From(_) => return Err(e.err(ins.line, "FROM inside a stage")),
    }
    Ok(())
}

fn run(e: &Engine, st: &mut State, ins: &Instruction, cmd: &Run) -> Result<(), BuildError> {
    let args = cmd.argv(&st.shell());
    let network = match cmd.network {
        RunNetwork::Default => e.opts.network,
        RunNetwork::Host => Network::Host,
        RunNetwork::None => Network::None,
    };
    let user = st.config.get_str("User").to_string();
    let cwd = match st.config.get_str("WorkingDir") {
        "" => "/".to_string(),
        w => w.to_string(),
    };
    let mut env: Vec<(String, String)> = st.config.env();
    for (k, v) in &st.args {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let insecure = cmd.security == RunSecurity::Insecure;
    let sandbox_name = if insecure {
        "insecure"
    } else {
        "docker-default"
    };
    let mounts = mounts::plan(e, st, ins.line, &cmd.mounts, &cwd)?;
    let arch = st
        .config
        .0
        .get("architecture")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut material = format!(
        "RUN {:?} env={:?} user={user} cwd={cwd} net={network:?} sandbox={sandbox_name}",
        args, env
    );
    // Without mounts the key is what it always was.
    material.push_str(&mounts.material);
    let history = format!("RUN {}", ins.text);
    let file = e.file.clone();
    let line = ins.line;
    let scratch = e.ws.scratch();
    let pids_limit = e.opts.pids_limit;
    let log = e.log_path(st.stage, ins.line);
    let echo = e.opts.echo_run_output;
    let sink = e
        .opts
        .run_output
        .clone()
        .map(|f| (f, e.stage_label(st.stage), line));
    e.fs_step(st, ins, &material, &history, &mut |root| {
        // Checked only when the step runs: a cached step needs no emulator.
        if !arch.is_empty() {
            crate::binfmt::check(&arch).map_err(|message| BuildError::Dockerfile {
                file: file.clone(),
                line,
                message,
            })?;
        }
        let (uid, gid, groups) = if user.is_empty() {
            (0, 0, Vec::new())
        } else {
            fsops::lookup_user(root, &user).map_err(|m| BuildError::Dockerfile {
                file: file.clone(),
                line,
                message: format!("USER {user}: {m}"),
            })?
        };
        fsops::mkdir_all(root, &cwd, None)?;
        let files = tempfile::Builder::new()
            .prefix("run")
            .tempdir_in(&scratch)
            .map_err(io_err(&scratch))?;
        let resolv = files.path().join("resolv.conf");
        let hosts = files.path().join("hosts");
        let host_resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
        fs::write(&resolv, host_resolv).map_err(io_err(&resolv))?;
        fs::write(
            &hosts,
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tkiln\n",
        )
        .map_err(io_err(&hosts))?;
        let active = mounts.activate(e, line)?;
        let mut container = Container::new(root, args.clone());
        // Proxy build arguments reach the step without entering its cache key or the image.
        container.env = crate::vars::with_proxy_env(env.clone(), &e.opts.build_args);
        container.env.extend(active.env.iter().cloned());
        container.cwd = cwd.clone();
        (container.uid, container.gid, container.additional_gids) = (uid, gid, groups);
        container.network = network;
        if insecure {
            // Allowed by the build (`--allow security.insecure`), checked before any step ran.
            e.progress(Event::Warning {
                message: format!(
                    "RUN --security=insecure ({file}:{line}): no sandbox, all of root's capabilities"
                ),
            });
            limit_processes(&mut container, pids_limit);
        } else {
            sandbox(&mut container, pids_limit)?;
        }
        container.mounts = vec![
            Mount::Bind {
                source: resolv.clone(),
                target: "/etc/resolv.conf".into(),
                readonly: false,
            },
            Mount::Bind {
                source: hosts.clone(),
                target: "/etc/hosts".into(),
                readonly: false,
            },
        ];
        container.mounts.extend(active.mounts.iter().cloned());
        // The step's output (stdout and stderr, interleaved) goes to its log file, and to
        // kiln's stderr when echoed, so that stdout stays the build's result.
        let (reader, writer) = std::io::pipe().map_err(io_err(&log))?;
        let copier = copy_output(reader, &log, echo, sink.clone())?;
        let stderr_end = writer.try_clone().map_err(io_err(&log))?;
        // The root is the step's own: the mount points made for it are removed afterwards,
        // leaving no trace in the layer. The step ends with this process, however it ends.
        let options = kiln_runtime::Options {
            remove_mountpoints: true,
            die_with_parent: true,
            ..kiln_runtime::Options::default()
        };
        let exit = kiln_runtime::Created::new(container, options)
            .and_then(|c| c.run(writer.into(), stderr_end.into()));
        // The write ends are closed now: the copier ends at the end of the output.
        let copied = copier.join();
        // Cache locks, writable copies and the secrets' tmpfs last until the step is over.
        drop(active);
        let exit = exit?;
        match copied {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(io_err(&log)(err)),
            Err(_) => return Err(io_err(&log)(std::io::Error::other("the log writer failed"))),
        }
        if !exit.success() {
            return Err(BuildError::RunFailed {
                file: file.clone(),
                line,
                command: args.join(" ").chars().take(200).collect(),
                status: exit.to_string(),
                log: log.clone(),
                tail: tail(&log, TAIL_LINES).into(),
            });
        }
        Ok(())
    })
}

/// Copy a RUN step's output from `reader` into a new log file at `log` (and to kiln's stderr
/// when `echo`, and to `sink` with its stage name and line when given) on a thread of its own,
/// until every write end is closed.
fn copy_output(
    mut reader: std::io::PipeReader,
    log: &std::path::Path,
    echo: bool,
    sink: Option<(crate::RunOutput, String, usize)>,
) -> Result<std::thread::JoinHandle<std::io::Result<()>>, BuildError> {
    if let Some(dir) = log.parent() {
        // Another build may have pruned an old log directory: make sure this one is there.
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut file = fs::File::create(log).map_err(io_err(log))?;
    Ok(std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            file.write_all(&buf[..n])?;
            if echo {
                // The build goes on if kiln's stderr is gone; the log keeps everything.
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            if let Some((f, stage, line)) = &sink {
                f(stage, *line, &buf[..n]);
            }
        }
        file.sync_all()
    }))
}

/// The capabilities Docker and BuildKit give a RUN step (Docker's default set).
const RUN_CAPABILITIES: &[&str] = &kiln_runtime::security::DOCKER_DEFAULT_CAPABILITIES;

/// Paths runc hides from a container by default.
const RUN_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths runc makes read-only by default.
const RUN_READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Confine a RUN step as Docker confines a container by default: Docker's default capability
/// set (bounding, effective and permitted; no CAP_SYS_ADMIN or CAP_SYS_MODULE), its default
/// seccomp profile for those capabilities (which here also refuses block device nodes: there
/// is no device cgroup to make them useless), no_new_privs, runc's masked and read-only paths.
/// The standard mounts give it a fresh /dev with only the default devices and a read-only
/// /sys; the runtime's PID namespace and parent-death signals end every process of the step.
/// At most `pids_limit` processes (see [`limit_processes`]).
fn sandbox(container: &mut Container, pids_limit: u64) -> Result<(), BuildError> {
    let caps = kiln_runtime::security::capability_mask(RUN_CAPABILITIES)?;
    container.capabilities = Some(kiln_runtime::Capabilities {
        bounding: caps,
        effective: caps,
        permitted: caps,
        inheritable: 0,
        ambient: 0,
    });
    container.seccomp = Some(run_seccomp()?);
    container.no_new_privileges = true;
    container.masked_paths = RUN_MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    container.readonly_paths = RUN_READONLY_PATHS.iter().map(|p| p.to_string()).collect();
    limit_processes(container, pids_limit);
    Ok(())
}

/// Docker's default seccomp filter for RUN steps, compiled once per process: it depends only
/// on [`RUN_CAPABILITIES`].
fn run_seccomp() -> Result<std::sync::Arc<kiln_runtime::seccomp::Program>, BuildError> {
    static PROGRAM: std::sync::OnceLock<
        Result<std::sync::Arc<kiln_runtime::seccomp::Program>, String>,
    > = std::sync::OnceLock::new();
    let program = PROGRAM.get_or_init(|| {
        kiln_runtime::seccomp::docker_default_without_block_devices(RUN_CAPABILITIES)
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    });
    program.clone().map_err(|e| {
        kiln_runtime::RuntimeError::Config(format!("Docker's default seccomp profile: {e}")).into()
    })
}

/// At most `pids_limit` processes (0: no limit) in the step: a pids cgroup of its own (v2, or
/// v1 on hybrid hosts), or RLIMIT_NPROC where the host has no writable pids controller (said
/// once).
fn limit_processes(container: &mut Container, pids_limit: u64) {
    if pids_limit > 0 {
        match kiln_runtime::process_limit(pids_limit) {
            kiln_runtime::ProcessLimit::Cgroup(cg) => container.cgroup = Some(cg),
            kiln_runtime::ProcessLimit::Rlimit(limit) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    if kiln_fs::unpack::in_user_namespace() {
                        // Rootless: the host's cgroups are never the user's to write; expected.
                        tracing::info!(
                            "rootless build: RUN steps run without a cgroup of their own, \
                             limited by RLIMIT_NPROC to {} processes of this user",
                            limit.soft
                        );
                    } else {
                        tracing::warn!(
                            "no writable pids cgroup controller (cgroup v2 or v1): RUN steps \
                             are limited by RLIMIT_NPROC to {} processes of their user on the \
                             whole host",
                            limit.soft
                        );
                    }
                });
                container.rlimits.push(limit);
            }
        }
    }
}
