//! Services: their state, start order (after the services they name in `dependsOn`) and
//! restart policy (`restart: no | on-failure | always`, kiln's manifest extensions carried in
//! runtime.json) with a delay that doubles from one second up to thirty, reset once a run lasts
//! ten seconds. Each run starts from the image: runtime.json's host mounts (a writable root's
//! overlay) are made for the run and undone after it, as a restarted Kubernetes container gets
//! a fresh writable layer; what must survive a restart goes in a volume or a bind.

use crate::control::WaitState;
use kiln_runtime::{Exit, Running};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When a service is restarted: runtime.json's typed policy.
pub type Restart = kiln_spec::RestartPolicy;

/// Where a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (onboot is still running).
    NotStarted,
    /// Its process is running.
    Running,
    /// It ended and its restart is due at this time.
    Restarting(Instant),
    /// It ended (or failed to start) and no restart is pending.
    Exited,
    /// Stopped by the operator: not restarted until started again.
    Stopped,
}

impl State {
    /// Whether `kiln-ctl wait` for `wanted` is over.
    pub fn reached(self, wanted: WaitState) -> bool {
        match wanted {
            WaitState::Running => self == State::Running,
            WaitState::Exited => matches!(self, State::Restarting(_) | State::Exited),
            WaitState::Stopped => matches!(self, State::Exited | State::Stopped),
        }
    }
}

/// One service and its state.
#[derive(Debug)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// Restart policy.
    pub restart: Restart,
    /// Services it starts after.
    pub depends_on: Vec<String>,
    /// The running container.
    pub running: Option<Running>,
    /// The threads copying its output (of the current or the last run).
    pub output: Vec<JoinHandle<()>>,
    /// How its last run ended (None: never ran, or did not start).
    pub last_exit: Option<Exit>,
    /// Whether it was ever started (or tried to be).
    pub tried: bool,
    /// Consecutive restarts.
    pub restarts: u32,
    /// When the current run started.
    pub started: Option<Instant>,
    /// When a restart is due.
    pub due: Option<Instant>,
    /// When a stopped service that has not ended is killed.
    pub kill_due: Option<Instant>,
    /// Stopped by the operator: not restarted until started again.
    pub held: bool,
    /// Restart at once when it exits (the operator asked for a restart).
    pub restart_now: bool,
}

impl Service {
    /// Read a service's bundle: its restart policy and dependencies from runtime.json. A
    /// runtime.json the runtime would refuse is reported here; the service then has neither,
    /// and its start fails with the same error.
    pub fn load(bundle: PathBuf, name: String) -> Service {
        let (restart, depends_on) = match kiln_spec::load_runtime(&bundle) {
            Ok(Some(rt)) => (
                rt.restart.unwrap_or(Restart::No),
                rt.depends_on.unwrap_or_default(),
            ),
            Ok(None) => (Restart::No, Vec::new()),
            Err(e) => {
                crate::log(&format!("service {name}: {e}"));
                (Restart::No, Vec::new())
            }
        };
        Service {
            name,
            bundle,
            restart,
            depends_on,
            running: None,
            output: Vec::new(),
            last_exit: None,
            tried: false,
            restarts: 0,
            started: None,
            due: None,
            kill_due: None,
            held: false,
            restart_now: false,
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        match (&self.running, self.due) {
            (Some(_), _) => State::Running,
            (None, Some(due)) => State::Restarting(due),
            (None, None) if self.held => State::Stopped,
            (None, None) if self.tried => State::Exited,
            (None, None) => State::NotStarted,
        }
    }

    /// Decide what follows an exit (the container is already cleaned up and `running` taken);
    /// returns the delay before the restart, if there is one.
    pub fn exited(&mut self, exit: Exit, now: Instant) -> Option<Duration> {
        self.last_exit = Some(exit);
        self.kill_due = None;
        if self.held {
            return None;
        }
        if self.restart_now {
            self.restart_now = false;
            self.due = Some(now);
            return Some(Duration::ZERO);
        }
        let failed = !exit.success();
        let again = match self.restart {
            Restart::No => false,
            Restart::OnFailure => failed,
            Restart::Always => true,
        };
        if !again {
            return None;
        }
        if self
            .started
            .is_some_and(|s| now.duration_since(s) > Duration::from_secs(10))
        {
            self.restarts = 0;
        }
        let delay = Duration::from_secs(1u64 << self.restarts.min(5)).min(Duration::from_secs(30));
        self.restarts += 1;
        self.due = Some(now + delay);
        Some(delay)
    }
}

impl Service {
    /// One line of `kiln-ctl list`.
    pub fn describe(&self, now: Instant) -> String {
        let policy = match self.restart {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        };
        format!(
            "{:<20} {:<24} restarts {:<3} restart {policy}",
            self.name,
            self.state_text(now),
            self.restarts
        )
    }

    /// Its state in words: `running (pid 42)`, `restarting in 3 s`, `exited (code 1)` ...
    pub fn state_text(&self, now: Instant) -> String {
        match (self.state(), &self.running) {
            (_, Some(r)) => format!("running (pid {})", r.container_pid()),
            (State::Restarting(due), None) => format!(
                "restarting in {} s",
                due.saturating_duration_since(now).as_secs()
            ),
            (State::Stopped, None) => "stopped (held)".into(),
            (State::Exited, None) => match self.last_exit {
                Some(exit) => format!("exited ({exit})"),
                None => "failed to start".into(),
            },
            _ => "not started".into(),
        }
    }
}

/// Start order: each service after those it depends on (unknown names are ignored; a cycle is
/// broken in directory order).
pub fn start_order(services: &[Service]) -> Vec<usize> {
    let mut order = Vec::new();
    let mut placed = vec![false; services.len()];
    while order.len() < services.len() {
        let ready = (0..services.len()).find(|&i| {
            !placed[i]
                && services[i].depends_on.iter().all(|d| {
                    services
                        .iter()
                        .position(|s| &s.name == d)
                        .is_none_or(|j| placed[j])
                })
        });
        let next = ready.or_else(|| (0..services.len()).find(|&i| !placed[i]));
        let Some(i) = next else { break };
        placed[i] = true;
        order.push(i);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str], restart: Restart) -> Service {
        let mut s = Service::load(PathBuf::from("/nonexistent"), name.into());
        s.depends_on = deps.iter().map(|d| d.to_string()).collect();
        s.restart = restart;
        s
    }

    #[test]
    fn order_follows_dependencies() {
        let s = vec![
            svc("web", &["db", "cache"], Restart::No),
            svc("db", &[], Restart::No),
            svc("cache", &["db"], Restart::No),
        ];
        assert_eq!(start_order(&s), vec![1, 2, 0]);
        let cycle = vec![svc("a", &["b"], Restart::No), svc("b", &["a"], Restart::No)];
        assert_eq!(start_order(&cycle).len(), 2);
    }

    #[test]
    fn restart_policies_and_backoff() {
        let now = Instant::now();
        let fail = Exit::Code(3);
        let ok = Exit::Code(0);
        assert_eq!(svc("n", &[], Restart::No).exited(fail, now), None);
        assert_eq!(svc("f", &[], Restart::OnFailure).exited(ok, now), None);
        let mut f = svc("f", &[], Restart::OnFailure);
        let delays: Vec<_> = (0..7)
            .map(|_| f.exited(fail, now).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30].map(Some).to_vec());
        assert_eq!(
            svc("a", &[], Restart::Always).exited(ok, now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            svc("s", &[], Restart::Always).exited(Exit::Signal(9), now),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn states_answer_waits() {
        let now = Instant::now();
        let mut s = svc("s", &[], Restart::OnFailure);
        assert_eq!(s.state(), State::NotStarted);
        assert!(!s.state().reached(WaitState::Stopped));
        assert!(!s.state().reached(WaitState::Exited));
        s.tried = true;
        s.exited(Exit::Code(1), now);
        assert!(matches!(s.state(), State::Restarting(_)));
        assert!(s.state().reached(WaitState::Exited));
        assert!(!s.state().reached(WaitState::Stopped));
        assert!(
            s.describe(now).contains("restarting in 1 s"),
            "{}",
            s.describe(now)
        );
        s.due = None;
        assert_eq!(s.state(), State::Exited);
        assert!(s.state().reached(WaitState::Stopped) && s.state().reached(WaitState::Exited));
        assert!(
            s.describe(now).contains("exited (code 1)"),
            "{}",
            s.describe(now)
        );
        s.held = true;
        assert_eq!(s.state(), State::Stopped);
        assert!(s.state().reached(WaitState::Stopped) && !s.state().reached(WaitState::Exited));
        assert!(s.describe(now).contains("stopped (held)"));
    }
}
