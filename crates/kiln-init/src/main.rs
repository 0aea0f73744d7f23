//! kiln-init is PID 1 of a kiln system. It switches to a read-only view of the initramfs
//! (`readonly_root`), mounts the kernel file systems, loads modules (for the devices present,
//! by list, and on demand as the kernel's modprobe helper), sets the host name and brings up
//! loopback, then runs every container `kiln build` laid out under /containers: `onboot` in
//! order, each to completion (a failure is reported and boot goes on, as in LinuxKit), then
//! `services` concurrently, restarted by their policy (see `services`). It reaps orphans,
//! answers `kiln-ctl` on its control socket (`control`), and at power-off (SIGTERM, SIGUSR2,
//! SIGPWR or the ACPI power button; ctrl-alt-del reboots) stops the services, runs
//! `onshutdown` and powers off. Container output goes to the console, prefixed with the
//! container's name, and to /var/log/NAME.log. Kernel command-line switches: see `cmdline`.
//!
//! Built static (`-C target-feature=+crt-static`) so that it needs nothing from the image.

mod cmdline;
mod control;
mod modules;
mod power_button;
mod readonly_root;
mod services;

use kiln_runtime::bundle;
use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use services::Service;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const CONTAINERS: &str = "/containers";

fn log(msg: &str) {
    println!("kiln-init: {msg}");
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
fn since_boot() -> f64 {
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

/// The bundles of a section, in order.
fn bundles(section: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(Path::new(CONTAINERS).join(section))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("config.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The container's name: its directory without the `NNN-` order prefix of onboot/onshutdown.
fn name_of(bundle: &Path) -> String {
    let dir = bundle
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match dir.split_once('-') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest.to_string(),
        _ => dir,
    }
}

/// Copy a container's output to the console (prefixed) and to its log file.
fn forward(
    name: String,
    stream: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("/var/log/{name}.log"))
            .ok();
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            println!("{name}: {line}");
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    })
}

/// Start the container in `bundle` (making runtime.json's host mounts first when `prepare`);
/// returns its pid and the threads copying its output (done when it has exited).
fn start(bundle: &Path, prepare: bool) -> Result<(Pid, Vec<std::thread::JoinHandle<()>>), String> {
    let name = name_of(bundle);
    if prepare {
        bundle::prepare_host(bundle).map_err(|e| e.to_string())?;
    }
    let container = bundle::load(bundle).map_err(|e| e.to_string())?;
    let host = bundle::host_setup(bundle).map_err(|e| e.to_string())?;
    container.prepare_mountpoints().map_err(|e| e.to_string())?;
    let stdio = |cmd: &mut std::process::Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    };
    let mut child = if host.is_empty() {
        container.spawn(stdio).map_err(|e| e.to_string())?
    } else {
        // Interfaces and namespace bindings need the namespaces, before the container goes on.
        container
            .spawn_gated(stdio, |pid| host.apply(pid))
            .map_err(|e| format!("starting {name}: {e}"))?
    };
    let mut forwarders = Vec::new();
    if let Some(out) = child.stdout.take() {
        forwarders.push(forward(name.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        forwarders.push(forward(name.clone(), err));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    if cmdline::Switches::read().debug {
        log(&format!(
            "{name}: started {:?} as pid {pid}",
            container.args
        ));
    }
    // Reaped by the main loop, never by `Child`.
    std::mem::forget(child);
    Ok((pid, forwarders))
}

fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, 0) => "exited".into(),
        WaitStatus::Exited(_, c) => format!("failed with code {c}"),
        WaitStatus::Signaled(_, s, _) => format!("killed by {s}"),
        other => format!("{other:?}"),
    }
}

/// Reap until `pid` exits; service exits on the way are handled.
fn wait_for(pid: Pid, services: &mut [Service]) -> WaitStatus {
    loop {
        match waitpid(None, None) {
            Ok(s) if s.pid() == Some(pid) => return s,
            Ok(s) => reaped(s, services),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return WaitStatus::StillAlive,
        }
    }
}

/// A process exited: if it was a service, report it and schedule its restart by policy.
fn reaped(status: WaitStatus, services: &mut [Service]) {
    let Some(pid) = status.pid() else {
        return;
    };
    let Some(svc) = services.iter_mut().find(|s| s.pid == Some(pid)) else {
        return;
    };
    match svc.exited(&status, Instant::now()) {
        Some(delay) => log(&format!(
            "service {} {}; restarting in {} s",
            svc.name,
            describe(&status),
            delay.as_secs()
        )),
        None => log(&format!("service {} {}", svc.name, describe(&status))),
    }
    schedule(services);
}

/// Wake the main loop when the earliest pending restart is due (a SIGCHLD from a timer thread;
/// every wake-up checks for due restarts).
fn schedule(services: &[Service]) {
    if let Some(due) = services.iter().filter_map(|s| s.due).min() {
        std::thread::spawn(move || {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let _ = kill(Pid::this(), Signal::SIGCHLD);
        });
    }
}

fn start_service(svc: &mut Service) {
    match start(&svc.bundle, !svc.prepared) {
        Ok((pid, _output)) => {
            svc.prepared = true;
            svc.pid = Some(pid);
            svc.started = Some(Instant::now());
            svc.due = None;
            log(&format!("service {} started", svc.name));
        }
        Err(e) => log(&format!("service {}: {e}", svc.name)),
    }
}

/// Start the services whose restart is due.
fn restart_due(services: &mut [Service]) {
    let now = Instant::now();
    for svc in services.iter_mut() {
        if svc.due.is_some_and(|d| d <= now) {
            start_service(svc);
        }
    }
}

/// Carry out a `kiln-ctl` request; returns the answer.
fn control_request(req: &control::Request, services: &mut [Service]) -> String {
    let now = Instant::now();
    if req.command == "list" {
        return services
            .iter()
            .map(|s| s.describe(now) + "\n")
            .collect::<String>();
    }
    let Some(svc) = services.iter_mut().find(|s| s.name == req.name) else {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return format!(
            "error: no service {:?} (services: {})\n",
            req.name,
            names.join(", ")
        );
    };
    log(&format!("{} {} (kiln-ctl)", req.command, svc.name));
    match (req.command.as_str(), svc.pid) {
        ("stop", Some(pid)) => {
            svc.held = true;
            svc.due = None;
            let _ = kill(pid, Signal::SIGTERM);
            format!("stopping {}\n", svc.name)
        }
        ("stop", None) => {
            svc.held = true;
            svc.due = None;
            format!("{} is not running\n", svc.name)
        }
        ("restart", Some(pid)) => {
            svc.held = false;
            svc.restart_now = true;
            let _ = kill(pid, Signal::SIGTERM);
            format!("restarting {}\n", svc.name)
        }
        ("start" | "restart", None) => {
            svc.held = false;
            start_service(svc);
            match svc.pid {
                Some(pid) => format!("started {} (pid {pid})\n", svc.name),
                None => format!("error: {} did not start; see the console\n", svc.name),
            }
        }
        ("start", Some(pid)) => format!("{} is already running (pid {pid})\n", svc.name),
        (other, _) => format!("error: unknown command {other:?}\n"),
    }
}

/// Run each bundle of `section` to completion, in order.
fn run_section(section: &str, services: &mut [Service], switches: &cmdline::Switches) {
    for b in bundles(section) {
        let name = name_of(&b);
        if switches.skips(&name) {
            log(&format!("{section} {name} skipped (kiln.skip)"));
            continue;
        }
        match start(&b, true) {
            Ok((pid, output)) => {
                let status = wait_for(pid, services);
                // Everything it printed reaches the console before the next step.
                for t in output {
                    let _ = t.join();
                }
                if !matches!(status, WaitStatus::Exited(_, 0)) {
                    log(&format!("{section} {name} {}", describe(&status)));
                }
            }
            Err(e) => log(&format!("{section} {name}: {e}")),
        }
    }
}

fn shutdown(services: &mut [Service], mode: RebootMode) -> ! {
    log("shutting down");
    for svc in services.iter_mut() {
        svc.restart = services::Restart::No;
        svc.due = None;
        if let Some(pid) = svc.pid {
            let _ = kill(pid, Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while services.iter().any(|s| s.pid.is_some()) && Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
            Ok(s) => reaped(s, services),
        }
    }
    for pid in services.iter().filter_map(|s| s.pid) {
        let _ = kill(pid, Signal::SIGKILL);
    }
    run_section("onshutdown", services, cmdline::Switches::read());
    nix::unistd::sync();
    let _ = reboot(mode);
    // reboot only returns on failure; PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The kernel runs its modprobe helper as `HELPER -q -- MODULE`.
fn modprobe_helper(args: &[String]) -> std::process::ExitCode {
    let Some(wanted) = args.iter().skip(1).find(|a| !a.starts_with('-')) else {
        return std::process::ExitCode::FAILURE;
    };
    match modules::Modules::open().map(|mut m| m.load_wanted(wanted)) {
        Some(Ok(())) => std::process::ExitCode::SUCCESS,
        Some(Err(e)) => {
            if !args.iter().any(|a| a == "-q") {
                eprintln!("modprobe: {e}");
            }
            std::process::ExitCode::FAILURE
        }
        None => std::process::ExitCode::FAILURE,
    }
}

fn main() -> std::process::ExitCode {
    // The same program is the control client (`kiln-ctl list`, also as a container's PID 1)
    // and the kernel's modprobe helper.
    let args: Vec<String> = std::env::args().collect();
    if args
        .get(1)
        .is_some_and(|a| control::COMMANDS.contains(&a.as_str()))
    {
        return control::client(&args[1..]);
    }
    if std::process::id() != 1 {
        return modprobe_helper(&args);
    }
    // Signals are taken synchronously by the main loop; containers get an empty mask.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ] {
        signals.add(s);
    }
    let _ = signals.thread_block();
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
    let mut modules = modules::Modules::open();
    if let Some(m) = modules.as_mut() {
        let loaded = m.coldplug();
        if !loaded.is_empty() {
            log(&format!(
                "modules for the devices present: {}",
                loaded.join(" ")
            ));
        }
        // Containers with a writable root need overlayfs; /etc/modules lists more.
        let listed = fs::read_to_string("/etc/modules").unwrap_or_default();
        for name in std::iter::once("overlay")
            .chain(listed.split_whitespace().filter(|w| !w.starts_with('#')))
        {
            if let Err(e) = m.load(name) {
                log(&e);
            }
        }
    }
    // Modules the kernel asks for later are loaded by this same program.
    if let Ok(me) = fs::read_link("/proc/self/exe") {
        let _ = fs::write(
            "/proc/sys/kernel/modprobe",
            me.as_os_str().as_encoded_bytes(),
        );
    }
    set_hostname();
    kiln_runtime::loopback_up();
    // ctrl-alt-del sends SIGINT to init instead of rebooting at once.
    let _ = set_cad_enabled(false);
    log(&format!(
        "starting, {:.2} s after the kernel{}",
        since_boot(),
        if readonly { ", root read-only" } else { "" }
    ));
    let switches = cmdline::Switches::read();
    let requests = match control::listen() {
        Ok(rx) => {
            // The client is this program; containers that bind /run find it there.
            let _ = fs::File::create(control::CLIENT);
            let _ = mount(
                Some("/proc/self/exe"),
                control::CLIENT,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            );
            Some(rx)
        }
        Err(e) => {
            log(&format!("control socket {}: {e}", control::SOCKET));
            None
        }
    };
    power_button::watch(modules.as_mut());
    let mut services: Vec<Service> = bundles("services")
        .into_iter()
        .map(|b| {
            let name = name_of(&b);
            let mut svc = Service::load(b, name);
            if switches.no_restart {
                svc.restart = services::Restart::No;
            }
            svc
        })
        .filter(|s| !switches.skips(&s.name))
        .collect();
    run_section("onboot", &mut services, switches);
    for i in services::start_order(&services) {
        start_service(&mut services[i]);
    }
    if !services.is_empty() {
        let running = services.iter().filter(|s| s.pid.is_some()).count();
        log(&format!(
            "{running} of {} services running, {:.2} s after the kernel",
            services.len(),
            since_boot()
        ));
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                loop {
                    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) | Err(_) => break,
                        Ok(s) => reaped(s, &mut services),
                    }
                }
                if let Some(rx) = &requests {
                    while let Ok(req) = rx.try_recv() {
                        let answer = control_request(&req, &mut services);
                        let _ = req.reply.send(answer);
                    }
                }
                restart_due(&mut services);
            }
            Ok(Signal::SIGINT) => shutdown(&mut services, RebootMode::RB_AUTOBOOT),
            Ok(Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR) => {
                shutdown(&mut services, RebootMode::RB_POWER_OFF)
            }
            Ok(Signal::SIGUSR1) => shutdown(&mut services, RebootMode::RB_HALT_SYSTEM),
            _ => {}
        }
    }
}
