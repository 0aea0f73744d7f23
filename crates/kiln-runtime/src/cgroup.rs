//! Control groups (v2, the unified hierarchy): the container's cgroup is created and its limits
//! written before the process starts; the process moves itself in first thing in the pre-exec
//! hook, so everything it runs is accounted from the start. When the container has ended, what
//! is left in a cgroup it created is killed and the cgroup removed.

use crate::error::RuntimeError;
use serde_json::Value;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the unified hierarchy is mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup to run the container in, with the limits to write into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The mount point of the unified hierarchy.
    pub root: PathBuf,
    /// The cgroup, relative to `root` (`kiln/redis`).
    pub path: String,
    /// Interface files and values (`memory.max` = `67108864`), written in order.
    pub settings: Vec<(String, String)>,
}

impl Cgroup {
    /// A cgroup under [`DEFAULT_ROOT`].
    pub fn new(path: &str) -> Self {
        Cgroup {
            root: DEFAULT_ROOT.into(),
            path: path.trim_matches('/').to_string(),
            settings: Vec::new(),
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.path)
    }

    /// Add the limits of an OCI `linux.resources` object (memory, cpu, pids and `unified`;
    /// device rules need eBPF on cgroup v2 and are not applied).
    pub fn add_resources(&mut self, r: &Value) {
        let mut set = |file: &str, value: String| self.settings.push((file.into(), value));
        let int = |v: &Value| v.as_i64();
        let max_or = |n: i64| {
            if n < 0 {
                "max".to_string()
            } else {
                n.to_string()
            }
        };
        let mem = &r["memory"];
        if let Some(limit) = int(&mem["limit"]) {
            set("memory.max", max_or(limit));
            // OCI's swap is memory plus swap; cgroup v2 limits swap alone.
            if let Some(swap) = int(&mem["swap"]) {
                let only_swap = if swap < 0 || limit < 0 {
                    -1
                } else {
                    (swap - limit).max(0)
                };
                set("memory.swap.max", max_or(only_swap));
            }
        }
        if let Some(low) = int(&mem["reservation"]) {
            set("memory.low", max_or(low));
        }
        let cpu = &r["cpu"];
        if let Some(shares) = cpu["shares"].as_u64().filter(|s| *s > 0) {
            // The conversion runc and crun use: 2..262144 onto 1..10000.
            let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
            set("cpu.weight", weight.to_string());
        }
        if let Some(quota) = int(&cpu["quota"]) {
            let period = cpu["period"].as_u64().unwrap_or(100_000);
            set("cpu.max", format!("{} {period}", max_or(quota)));
        }
        for (key, file) in [("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")] {
            if let Some(v) = cpu[key].as_str().filter(|v| !v.is_empty()) {
                set(file, v.to_string());
            }
        }
        if let Some(limit) = int(&r["pids"]["limit"]) {
            set(
                "pids.max",
                if limit <= 0 {
                    "max".into()
                } else {
                    limit.to_string()
                },
            );
        }
        if let Some(unified) = r["unified"].as_object() {
            for (file, v) in unified {
                set(
                    file,
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                );
            }
        }
    }

    /// Create the cgroup (enabling the controllers its limits need on the way down), write
    /// the limits, and open its `cgroup.procs` for the process to move itself in. Also says
    /// whether the cgroup itself was created (it may exist already, shared with others).
    pub(crate) fn create(&self) -> Result<(fs::File, bool), RuntimeError> {
        let err = |path: &Path, e: io::Error| RuntimeError::Cgroup {
            path: path.to_path_buf(),
            source: e,
        };
        let stat = nix::sys::statfs::statfs(&self.root).map_err(|e| err(&self.root, e.into()))?;
        if stat.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Err(err(
                &self.root,
                io::Error::other(
                    "is not a cgroup v2 (unified) hierarchy; kiln applies cgroupsPath and \
                     resources only on cgroup v2",
                ),
            ));
        }
        let mut controllers: Vec<&str> = self
            .settings
            .iter()
            .filter_map(|(file, _)| file.split_once('.').map(|(c, _)| c))
            .filter(|c| *c != "cgroup")
            .collect();
        controllers.sort_unstable();
        controllers.dedup();
        let enable: String = controllers.iter().map(|c| format!("+{c} ")).collect();
        let mut dir = self.root.clone();
        let mut created = false;
        for part in self.path.split('/').filter(|p| !p.is_empty()) {
            if !enable.is_empty() {
                let control = dir.join("cgroup.subtree_control");
                fs::write(&control, enable.trim_end()).map_err(|e| err(&control, e))?;
            }
            dir.push(part);
            created = match fs::create_dir(&dir) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(err(&dir, e)),
            };
        }
        if dir == self.root {
            return Err(err(
                &dir,
                io::Error::other("is the root cgroup; give a cgroupsPath below it"),
            ));
        }
        // From here on a failure leaves a cgroup this call made: remove it again.
        let made = |e: RuntimeError| {
            if created {
                let _ = fs::remove_dir(&dir);
            }
            e
        };
        for (file, value) in &self.settings {
            let path = dir.join(file);
            fs::write(&path, value).map_err(|e| made(err(&path, e)))?;
        }
        let procs = dir.join("cgroup.procs");
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| made(err(&procs, e)))?;
        Ok((file, created))
    }

    /// Remove the cgroup once its processes are gone (they leave it a moment after exiting);
    /// with `kill_rest`, processes still in it (a container's daemons when it shared the host's
    /// PID namespace) are killed first, as runc does.
    pub(crate) fn remove(&self, kill_rest: bool) -> Result<(), RuntimeError> {
        let dir = self.dir();
        let err = |source| RuntimeError::Cgroup {
            path: dir.clone(),
            source,
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut killed = false;
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if kill_rest && !killed {
                        kill_all(&dir);
                        killed = true;
                    }
                    if Instant::now() >= deadline {
                        let left = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                        let pids: Vec<&str> = left.split_whitespace().collect();
                        return Err(err(io::Error::other(format!(
                            "still holds processes {} (left in place)",
                            pids.join(" ")
                        ))));
                    }
                    // The kernel empties it asynchronously after the last exit.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
}

/// Kill every process in the cgroup at `dir`: `cgroup.kill` where the kernel has it (5.14),
/// each pid of `cgroup.procs` otherwise.
fn kill_all(dir: &Path) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Move the calling process into the cgroup whose `cgroup.procs` is open as `procs` (in the
/// pre-exec hook: one write, no allocation).
pub(crate) fn join(procs: &fs::File) -> io::Result<()> {
    nix::unistd::write(procs, b"0")
        .map(drop)
        .map_err(crate::error::errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_become_cgroup_v2_settings() {
        let mut cg = Cgroup::new("/kiln/secure/");
        cg.add_resources(&serde_json::json!({
            "memory": {"limit": 67108864, "swap": 100663296, "reservation": 1024},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 32},
            "unified": {"io.weight": "50"},
        }));
        assert_eq!(cg.path, "kiln/secure");
        let s: Vec<(&str, &str)> = cg
            .settings
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            s,
            [
                ("memory.max", "67108864"),
                ("memory.swap.max", "33554432"),
                ("memory.low", "1024"),
                ("cpu.weight", "20"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0"),
                ("pids.max", "32"),
                ("io.weight", "50"),
            ]
        );
    }

    #[test]
    fn unlimited_values_are_max() {
        let mut cg = Cgroup::new("x");
        cg.add_resources(&serde_json::json!({"memory": {"limit": -1}, "pids": {"limit": 0}}));
        assert_eq!(cg.settings[0].1, "max");
        assert_eq!(cg.settings[1].1, "max");
    }
}
