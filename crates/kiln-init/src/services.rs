//! Services: started concurrently (after the services they name in `dependsOn`), watched, and
//! restarted by their policy (`restart: no | on-failure | always`, kiln's manifest extensions
//! carried in runtime.json) with a delay that doubles from one second up to thirty, reset once a
//! run lasts ten seconds.

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// When a service is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never.
    No,
    /// After a non-zero exit or a signal.
    OnFailure,
    /// After every exit.
    Always,
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
    /// The running process.
    pub pid: Option<Pid>,
    /// Consecutive restarts.
    pub restarts: u32,
    /// When the current run started.
    pub started: Option<Instant>,
    /// When a restart is due.
    pub due: Option<Instant>,
    /// Whether runtime.json's host mounts were made (once per boot).
    pub prepared: bool,
    /// Stopped by the operator: not restarted until started again.
    pub held: bool,
    /// Restart at once when it exits (the operator asked for a restart).
    pub restart_now: bool,
}

impl Service {
    /// Read a service's bundle.
    pub fn load(bundle: PathBuf, name: String) -> Service {
        let rt: serde_json::Value = fs::read_to_string(bundle.join("runtime.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let restart = match rt["restart"].as_str() {
            Some("on-failure") => Restart::OnFailure,
            Some("always") => Restart::Always,
            _ => Restart::No,
        };
        let depends_on = rt["dependsOn"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Service {
            name,
            bundle,
            restart,
            depends_on,
            pid: None,
            restarts: 0,
            started: None,
            due: None,
            prepared: false,
            held: false,
            restart_now: false,
        }
    }

    /// Decide what follows an exit; returns the delay before the restart, if there is one.
    pub fn exited(&mut self, status: &WaitStatus, now: Instant) -> Option<Duration> {
        self.pid = None;
        if self.held {
            return None;
        }
        if self.restart_now {
            self.restart_now = false;
            self.due = Some(now);
            return Some(Duration::ZERO);
        }
        let failed = !matches!(status, WaitStatus::Exited(_, 0));
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
        let state = match (self.pid, self.due) {
            (Some(pid), _) => format!("running (pid {pid})"),
            (None, Some(due)) => format!(
                "restarting in {} s",
                due.saturating_duration_since(now).as_secs()
            ),
            (None, None) if self.held => "stopped (held)".into(),
            (None, None) => "stopped".into(),
        };
        let policy = match self.restart {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        };
        format!(
            "{:<20} {:<24} restarts {:<3} restart {policy}",
            self.name, state, self.restarts
        )
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
        let fail = WaitStatus::Exited(Pid::from_raw(9), 3);
        let ok = WaitStatus::Exited(Pid::from_raw(9), 0);
        assert_eq!(svc("n", &[], Restart::No).exited(&fail, now), None);
        assert_eq!(svc("f", &[], Restart::OnFailure).exited(&ok, now), None);
        let mut f = svc("f", &[], Restart::OnFailure);
        let delays: Vec<_> = (0..7)
            .map(|_| f.exited(&fail, now).map(|d| d.as_secs()))
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30].map(Some).to_vec());
        assert_eq!(
            svc("a", &[], Restart::Always).exited(&ok, now),
            Some(Duration::from_secs(1))
        );
    }
}
