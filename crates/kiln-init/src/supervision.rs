//! Supervision: every container kiln build laid out under /containers runs through kiln-runtime's
//! lifecycle (host mounts, cgroup, start, cleanup after the exit). `onboot` runs in order, each
//! to completion (a failure is reported and boot goes on, as in LinuxKit); then `services` start
//! in dependency order and are restarted by their policy (see `services`); at power-off the
//! services are stopped (SIGTERM, SIGKILL after ten seconds) and `onshutdown` runs.
//!
//! One event loop does everything: it waits for a signal (signals are blocked in every thread
//! and taken synchronously), reaps every exited process (kiln-init is PID 1: orphans too),
//! answers `kiln-ctl` requests (see `control`), starts restarts that are due, and answers
//! `kiln-ctl wait` as soon as a service reaches the state asked for. Timers (restart delays,
//! stop grace periods, wait deadlines) wake it with a SIGCHLD.
//!
//! Container output goes to the console, prefixed with the container's name, and to
//! /var/log/NAME.log.

use crate::cmdline::Switches;
use crate::control::{Command, Request};
use crate::log;
use crate::modules::{self, Loading};
use crate::services::{self, Restart, Service};
use kiln_runtime::{Created, Exit, Options, Running, RuntimeError};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONTAINERS: &str = "/containers";
/// How long a service has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The signals the supervisor takes synchronously: block them in this thread before any other
/// thread starts (threads inherit the mask; containers start with an empty one).
pub fn block_signals() -> SigSet {
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
    signals
}

/// A `kiln-ctl wait` not answered yet.
struct Waiter {
    name: String,
    state: crate::control::WaitState,
    asked: Instant,
    deadline: Instant,
    reply: mpsc::Sender<String>,
}

/// The services, the event loop and what it is waiting for.
pub struct Supervisor {
    services: Vec<Service>,
    signals: SigSet,
    requests: Option<mpsc::Receiver<Request>>,
    waiters: Vec<Waiter>,
    switches: &'static Switches,
    /// The onboot or onshutdown container being waited for, and its exit once reaped.
    oneshot: Option<(Pid, Option<Exit>)>,
    /// A power-off asked while onboot ran.
    shutdown: Option<RebootMode>,
    /// Shutting down: nothing is started any more.
    stopping: bool,
    /// The modules for the devices present, loading; containers that may use a device wait.
    devices: Option<Loading>,
}

impl Supervisor {
    /// The services of /containers/services (less those the command line skips).
    pub fn new(
        signals: SigSet,
        requests: Option<mpsc::Receiver<Request>>,
        switches: &'static Switches,
        devices: Option<Loading>,
    ) -> Supervisor {
        let services = bundles("services")
            .into_iter()
            .map(|b| {
                let name = name_of(&b);
                let mut svc = Service::load(b, name);
                if switches.no_restart {
                    svc.restart = Restart::No;
                }
                svc
            })
            .filter(|s| !switches.skips(&s.name))
            .collect();
        Supervisor {
            services,
            signals,
            requests,
            waiters: Vec::new(),
            switches,
            oneshot: None,
            shutdown: None,
            stopping: false,
            devices,
        }
    }

    /// Run onboot, start the services and supervise them until power-off.
    pub fn run(mut self) -> ! {
        self.run_section("onboot");
        if let Some(mode) = self.shutdown {
            self.shut_down(mode);
        }
        for i in services::start_order(&self.services) {
            self.start_service(i);
        }
        self.check_waiters();
        if !self.services.is_empty() {
            let running = self.services.iter().filter(|s| s.running.is_some()).count();
            log(&format!(
                "{running} of {} services running, {:.2} s after the kernel",
                self.services.len(),
                crate::boot::since_boot()
            ));
        }
        loop {
            if let Some(mode) = self.next_event() {
                self.shut_down(mode);
            }
        }
    }

    /// Wait for a signal and handle what it means. Returns how to power off when that was
    /// asked.
    fn next_event(&mut self) -> Option<RebootMode> {
        match self.signals.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(Signal::SIGINT) => return Some(RebootMode::RB_AUTOBOOT),
            Ok(Signal::SIGTERM | Signal::SIGUSR2 | Signal::SIGPWR) => {
                return Some(RebootMode::RB_POWER_OFF);
            }
            Ok(Signal::SIGUSR1) => return Some(RebootMode::RB_HALT_SYSTEM),
            _ => return None,
        }
        self.reap();
        self.check_waiters();
        self.serve_requests();
        self.restart_due();
        self.kill_overdue();
        self.check_waiters();
        None
    }

    /// Reap every process that has ended: a service (cleaned up, then its policy decides),
    /// the onboot/onshutdown container waited for, or an orphan.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some((waited, done)) = &mut self.oneshot
                && *waited == pid
            {
                *done = Some(exit);
                continue;
            }
            let raw = u32::try_from(pid.as_raw()).unwrap_or(0);
            if let Some(i) = self
                .services
                .iter()
                .position(|s| s.running.as_ref().is_some_and(|r| r.pid() == raw))
            {
                self.service_exited(i, exit);
            }
        }
    }

    fn service_exited(&mut self, i: usize, exit: Exit) {
        let svc = &mut self.services[i];
        if let Some(running) = svc.running.take()
            && let Err(e) = running.reaped()
        {
            log(&format!("service {}: {e}", svc.name));
        }
        match svc.exited(exit, Instant::now()) {
            Some(delay) => log(&format!(
                "service {} {}; restarting in {} s",
                svc.name,
                describe(exit),
                delay.as_secs()
            )),
            None => log(&format!("service {} {}", svc.name, describe(exit))),
        }
        self.schedule();
    }

    fn start_service(&mut self, i: usize) {
        let debug = self.switches.debug;
        let svc = &mut self.services[i];
        svc.tried = true;
        svc.due = None;
        match start(&svc.bundle, &svc.name, debug, self.devices.as_ref()) {
            Ok((running, output)) => {
                svc.running = Some(running);
                svc.output = output;
                svc.started = Some(Instant::now());
                log(&format!("service {} started", svc.name));
            }
            Err(e) => log(&format!("service {}: {e}", svc.name)),
        }
    }

    /// Start the services whose restart is due.
    fn restart_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.services.len() {
            if !self.stopping && self.services[i].due.is_some_and(|d| d <= now) {
                self.start_service(i);
            }
        }
    }

    /// Kill the stopped services that did not end within their grace period.
    fn kill_overdue(&mut self) {
        let now = Instant::now();
        for svc in &mut self.services {
            if svc.kill_due.is_some_and(|d| d <= now) {
                svc.kill_due = None;
                if let Some(r) = &svc.running {
                    log(&format!(
                        "service {} did not stop within {} s; killing it",
                        svc.name,
                        STOP_GRACE.as_secs()
                    ));
                    let _ = r.signal(Signal::SIGKILL);
                }
            }
        }
    }

    /// Wake the loop (a SIGCHLD from a timer thread) at the earliest restart, stop deadline or
    /// wait deadline; every wake-up checks them all.
    fn schedule(&self) {
        let next = self
            .services
            .iter()
            .flat_map(|s| [s.due, s.kill_due])
            .flatten()
            .chain(self.waiters.iter().map(|w| w.deadline))
            .min();
        if let Some(at) = next {
            std::thread::spawn(move || {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let _ = kill(Pid::this(), Signal::SIGCHLD);
            });
        }
    }

    /// Answer the `kiln-ctl wait` requests whose service reached the state, or whose time is up.
    fn check_waiters(&mut self) {
        let now = Instant::now();
        let services = &self.services;
        self.waiters.retain(|w| {
            let Some(svc) = services.iter().find(|s| s.name == w.name) else {
                return false;
            };
            if svc.state().reached(w.state) {
                let _ = w.reply.send(format!("{} is {}\n", w.name, w.state));
                false
            } else if now >= w.deadline {
                let _ = w.reply.send(format!(
                    "error: {} is not {} after {:.1} s; it is {}\n",
                    w.name,
                    w.state,
                    now.duration_since(w.asked).as_secs_f64(),
                    svc.state_text(now)
                ));
                false
            } else {
                true
            }
        });
    }

    fn serve_requests(&mut self) {
        let Some(rx) = &self.requests else { return };
        let requests: Vec<Request> = rx.try_iter().collect();
        for req in requests {
            self.answer(req);
        }
    }

    /// Carry out a `kiln-ctl` request and answer it (a wait that is not over yet is answered
    /// later).
    fn answer(&mut self, req: Request) {
        let now = Instant::now();
        let name = match &req.command {
            Command::List => {
                let list: String = self
                    .services
                    .iter()
                    .map(|s| s.describe(now) + "\n")
                    .collect();
                let _ = req.reply.send(list);
                return;
            }
            Command::Logs(_) => {
                let _ = req
                    .reply
                    .send("error: logs are read by the control thread\n".into());
                return;
            }
            Command::Start(n) | Command::Stop(n) | Command::Restart(n) => n,
            Command::Wait { name, .. } => name,
        };
        let Some(i) = self.services.iter().position(|s| &s.name == name) else {
            let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
            let _ = req.reply.send(format!(
                "error: no service {name:?} (services: {})\n",
                names.join(", ")
            ));
            return;
        };
        let answer = match req.command {
            Command::Wait {
                name,
                state,
                timeout,
            } => {
                if self.services[i].state().reached(state) {
                    format!("{name} is {state}\n")
                } else {
                    self.waiters.push(Waiter {
                        name,
                        state,
                        asked: now,
                        deadline: now + timeout,
                        reply: req.reply,
                    });
                    self.schedule();
                    return;
                }
            }
            Command::Stop(name) => {
                log(&format!("stop {name} (kiln-ctl)"));
                let svc = &mut self.services[i];
                svc.held = true;
                svc.due = None;
                match &svc.running {
                    Some(r) => {
                        if ask_to_stop(&name, r) {
                            svc.kill_due = Some(now + STOP_GRACE);
                            self.schedule();
                        }
                        format!("stopping {name}\n")
                    }
                    None => format!("{name} is not running\n"),
                }
            }
            Command::Restart(name) if self.services[i].running.is_some() => {
                log(&format!("restart {name} (kiln-ctl)"));
                let svc = &mut self.services[i];
                svc.held = false;
                svc.restart_now = true;
                if let Some(r) = &svc.running
                    && ask_to_stop(&name, r)
                {
                    svc.kill_due = Some(now + STOP_GRACE);
                    self.schedule();
                }
                format!("restarting {name}\n")
            }
            Command::Start(name) | Command::Restart(name) => {
                if let Some(r) = &self.services[i].running {
                    format!("{name} is already running (pid {})\n", r.container_pid())
                } else if self.stopping {
                    "error: the system is shutting down\n".to_string()
                } else {
                    log(&format!("start {name} (kiln-ctl)"));
                    self.services[i].held = false;
                    self.start_service(i);
                    match &self.services[i].running {
                        Some(r) => format!("started {name} (pid {})\n", r.container_pid()),
                        None => format!("error: {name} did not start; see the console\n"),
                    }
                }
            }
            Command::List | Command::Logs(_) => return,
        };
        let _ = req.reply.send(answer);
    }

    /// Run each bundle of `section` to completion, in order.
    fn run_section(&mut self, section: &str) {
        for b in bundles(section) {
            let name = name_of(&b);
            if section == "onboot" && self.shutdown.is_some() {
                log(&format!("{section} {name} skipped: powering off"));
                continue;
            }
            if self.switches.skips(&name) {
                log(&format!("{section} {name} skipped (kiln.skip)"));
                continue;
            }
            let (running, output) =
                match start(&b, &name, self.switches.debug, self.devices.as_ref()) {
                    Ok(started) => started,
                    Err(e) => {
                        log(&format!("{section} {name}: {e}"));
                        continue;
                    }
                };
            let pid = Pid::from_raw(i32::try_from(running.pid()).unwrap_or(i32::MAX));
            self.oneshot = Some((pid, None));
            let exit = loop {
                if let Some((_, Some(exit))) = self.oneshot {
                    break exit;
                }
                if let Some(mode) = self.next_event() {
                    self.shutdown.get_or_insert(mode);
                }
            };
            self.oneshot = None;
            if let Err(e) = running.reaped() {
                log(&format!("{section} {name}: {e}"));
            }
            // Everything it printed reaches the console before the next step.
            for t in output {
                let _ = t.join();
            }
            if !exit.success() {
                log(&format!("{section} {name} {}", describe(exit)));
            }
        }
    }

    /// Stop the services, run onshutdown, power off (or reboot, or halt).
    fn shut_down(mut self, mode: RebootMode) -> ! {
        log("shutting down");
        self.stopping = true;
        let deadline = Instant::now() + STOP_GRACE;
        for svc in &mut self.services {
            svc.restart = Restart::No;
            svc.due = None;
            svc.kill_due = None;
            if let Some(r) = &svc.running {
                ask_to_stop(&svc.name, r);
            }
        }
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            let _ = kill(Pid::this(), Signal::SIGCHLD);
        });
        while self.services.iter().any(|s| s.running.is_some()) && Instant::now() < deadline {
            // Power-off requests meanwhile change nothing.
            let _ = self.next_event();
        }
        for svc in &mut self.services {
            if let Some(running) = svc.running.take() {
                log(&format!(
                    "service {} did not stop within {} s; killing it",
                    svc.name,
                    STOP_GRACE.as_secs()
                ));
                // Dropping it kills it, waits for it and cleans up.
                drop(running);
            }
        }
        // What the services printed reaches the console (unless a process they left behind
        // still holds their output).
        let flushed = Instant::now() + Duration::from_secs(2);
        while self
            .services
            .iter()
            .any(|s| s.output.iter().any(|t| !t.is_finished()))
            && Instant::now() < flushed
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.run_section("onshutdown");
        nix::unistd::sync();
        let _ = reboot(mode);
        // reboot only returns on failure; PID 1 must not exit.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Ask a service's container to stop with SIGTERM, or kill it at once when SIGTERM would be
/// lost on it (PID 1 of its namespace without a handler). Returns whether it was asked (and
/// has a grace period).
fn ask_to_stop(name: &str, r: &Running) -> bool {
    if r.ignores(Signal::SIGTERM) {
        log(&format!(
            "service {name} does not handle SIGTERM (PID 1 of its namespace); killing it"
        ));
        let _ = r.signal(Signal::SIGKILL);
        false
    } else {
        let _ = r.signal(Signal::SIGTERM);
        true
    }
}

/// How an exit reads in the log.
fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(0) => "exited".into(),
        Exit::Code(c) => format!("failed with code {c}"),
        Exit::Signal(s) => match Signal::try_from(s) {
            Ok(sig) => format!("killed by {sig}"),
            Err(_) => format!("killed by signal {s}"),
        },
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
fn forward(name: String, stream: impl std::io::Read + Send + 'static) -> JoinHandle<()> {
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

/// Create and start the container of `bundle` (runtime.json's host mounts first), once the
/// modules for the devices present are loaded if it may use a device; returns it and the
/// threads copying its output (done when it has ended).
fn start(
    bundle: &Path,
    name: &str,
    debug: bool,
    devices: Option<&Loading>,
) -> Result<(Running, Vec<JoinHandle<()>>), RuntimeError> {
    if let Some(devices) = devices
        && modules::needs_devices(bundle)
    {
        devices.wait();
    }
    let created = Created::from_bundle(
        bundle,
        Options {
            host_mounts: true,
            // The root may be an image directory other containers use.
            remove_mountpoints: false,
            // Started from threads that may end first: a parent-death signal would kill it.
            die_with_parent: false,
        },
    )?;
    let args = debug.then(|| created.container().args.clone());
    let mut running = created.start(|cmd| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    })?;
    let mut forwarders = Vec::new();
    if let Some(out) = running.take_stdout() {
        forwarders.push(forward(name.to_string(), out));
    }
    if let Some(err) = running.take_stderr() {
        forwarders.push(forward(name.to_string(), err));
    }
    if let Some(args) = args {
        log(&format!(
            "{name}: started {args:?} as pid {}",
            running.container_pid()
        ));
    }
    Ok((running, forwarders))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_exits_read_well() {
        assert_eq!(name_of(Path::new("/containers/onboot/003-dhcp")), "dhcp");
        assert_eq!(name_of(Path::new("/containers/services/web-1")), "web-1");
        assert_eq!(describe(Exit::Code(0)), "exited");
        assert_eq!(describe(Exit::Code(3)), "failed with code 3");
        assert_eq!(describe(Exit::Signal(15)), "killed by SIGTERM");
    }
}
