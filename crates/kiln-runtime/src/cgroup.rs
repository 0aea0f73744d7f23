//! Control groups: the container's cgroup is created and its limits written before the process
//! starts; the process moves itself in first thing in the pre-exec hook, so everything it runs
//! is accounted from the start. When the container has ended, what is left in a cgroup it
//! created is killed and the cgroup removed.
//!
//! Configurations (`cgroupsPath`, `linux.resources`) apply on cgroup v2, the unified hierarchy.
//! A process limit ([`process_limit`], what a build's RUN steps get) also works on a host that
//! keeps the pids controller in a cgroup v1 hierarchy (hybrid hosts), and falls back to
//! RLIMIT_NPROC where no pids controller is writable.

use crate::error::RuntimeError;
use crate::security::Rlimit;
use kiln_spec::Resources;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the unified hierarchy is mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// Where a cgroup v1 pids controller is mounted on a hybrid host.
pub const V1_PIDS_ROOT: &str = "/sys/fs/cgroup/pids";

/// The kind of hierarchy a [`Cgroup`] is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2, the unified hierarchy: controllers are enabled on the way down.
    Unified,
    /// A cgroup v1 hierarchy holding this one controller (`pids`).
    V1(String),
}

/// A cgroup to run the container in, with the limits to write into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The mount point of the hierarchy.
    pub root: PathBuf,
    /// Which kind of hierarchy `root` is.
    pub hierarchy: Hierarchy,
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
            hierarchy: Hierarchy::Unified,
            path: path.trim_matches('/').to_string(),
            settings: Vec::new(),
        }
    }

    /// A cgroup in the cgroup v1 hierarchy of `controller` mounted at `root`.
    pub fn v1(root: impl Into<PathBuf>, controller: &str, path: &str) -> Self {
        Cgroup {
            root: root.into(),
            hierarchy: Hierarchy::V1(controller.to_string()),
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
    pub fn add_resources(&mut self, r: &Resources) {
        let mut set = |file: &str, value: String| self.settings.push((file.into(), value));
        let max_or = |n: i64| {
            if n < 0 {
                "max".to_string()
            } else {
                n.to_string()
            }
        };
        if let Some(mem) = &r.memory {
            if let Some(limit) = mem.limit {
                set("memory.max", max_or(limit));
                // OCI's swap is memory plus swap; cgroup v2 limits swap alone.
                if let Some(swap) = mem.swap {
                    let only_swap = if swap < 0 || limit < 0 {
                        -1
                    } else {
                        (swap - limit).max(0)
                    };
                    set("memory.swap.max", max_or(only_swap));
                }
            }
            if let Some(low) = mem.reservation {
                set("memory.low", max_or(low));
            }
        }
        if let Some(cpu) = &r.cpu {
            if let Some(shares) = cpu.shares.filter(|s| *s > 0) {
                // The conversion runc and crun use: 2..262144 onto 1..10000.
                let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                set("cpu.weight", weight.to_string());
            }
            if let Some(quota) = cpu.quota {
                let period = cpu.period.unwrap_or(100_000);
                set("cpu.max", format!("{} {period}", max_or(quota)));
            }
            for (value, file) in [(&cpu.cpus, "cpuset.cpus"), (&cpu.mems, "cpuset.mems")] {
                if !value.is_empty() {
                    set(file, value.clone());
                }
            }
        }
        if let Some(pids) = &r.pids {
            let limit = pids.limit;
            set(
                "pids.max",
                if limit <= 0 {
                    "max".into()
                } else {
                    limit.to_string()
                },
            );
        }
        for (file, value) in &r.unified {
            set(file, value.clone());
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
        let (magic, what) = match self.hierarchy {
            Hierarchy::Unified => (
                nix::sys::statfs::CGROUP2_SUPER_MAGIC,
                "is not a cgroup v2 (unified) hierarchy; kiln applies cgroupsPath and \
                 resources only on cgroup v2",
            ),
            Hierarchy::V1(_) => (
                nix::sys::statfs::CGROUP_SUPER_MAGIC,
                "is not a cgroup v1 hierarchy",
            ),
        };
        if stat.filesystem_type() != magic {
            return Err(err(&self.root, io::Error::other(what)));
        }
        let mut controllers: Vec<&str> = self
            .settings
            .iter()
            .filter_map(|(file, _)| file.split_once('.').map(|(c, _)| c))
            .filter(|c| *c != "cgroup")
            .collect();
        controllers.sort_unstable();
        controllers.dedup();
        // cgroup v1 has no controllers to enable: the hierarchy is the controller's.
        let enable: String = match self.hierarchy {
            Hierarchy::Unified => controllers.iter().map(|c| format!("+{c} ")).collect(),
            Hierarchy::V1(_) => String::new(),
        };
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
        loop {
            match fs::remove_dir(&dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if kill_rest {
                        // Again on each round: without `cgroup.kill`, a process can fork
                        // between reading the list and the kill.
                        kill_all(&dir);
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

impl Cgroup {
    /// The `cgroup.procs` of the cgroup the calling process is in, in this cgroup's hierarchy
    /// (from /proc/self/cgroup): where a process leaves this cgroup for.
    pub(crate) fn own_procs(&self) -> Option<PathBuf> {
        let list = fs::read_to_string("/proc/self/cgroup").ok()?;
        self.procs_of(&list)
    }

    /// As [`Cgroup::own_procs`], from the contents of a /proc/PID/cgroup.
    fn procs_of(&self, list: &str) -> Option<PathBuf> {
        let path = list.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mine = match &self.hierarchy {
                Hierarchy::Unified => controllers.is_empty(),
                Hierarchy::V1(c) => controllers.split(',').any(|x| x == c),
            };
            mine.then_some(path)
        })?;
        let dir = self.root.join(path.trim_start_matches('/'));
        (dir != self.dir()).then(|| dir.join("cgroup.procs"))
    }
}

/// How a container's processes are capped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessLimit {
    /// A cgroup of its own whose `pids.max` is the limit (cgroup v2, or a v1 pids controller).
    Cgroup(Cgroup),
    /// No pids controller can be written: RLIMIT_NPROC, which the kernel checks against every
    /// process of the container's user on the host, not only the container's.
    Rlimit(Rlimit),
}

/// The parent of the cgroups [`process_limit`] makes.
const RUN_PARENT: &str = "kiln";

/// The cap of `max` processes for a container, the best way this host allows: a new cgroup
/// `kiln/run-PID-N` (PID this process's, N counting) with `pids.max`, on cgroup v2 when the
/// unified hierarchy at [`DEFAULT_ROOT`] has the pids controller, else in the cgroup v1 pids
/// hierarchy at [`V1_PIDS_ROOT`]; RLIMIT_NPROC when neither can be written (not root, a
/// read-only /sys/fs/cgroup). The cgroup is created when the container is, and removed with
/// it (`Created`). The first call also removes such cgroups that processes no longer alive
/// left behind (a runtime killed with SIGKILL).
pub fn process_limit(max: u64) -> ProcessLimit {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static USABLE: OnceLock<Option<Cgroup>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let base = USABLE.get_or_init(|| {
        let unified = Cgroup::new("");
        let v1 = Cgroup::v1(V1_PIDS_ROOT, "pids", "");
        let has_pids = |dir: &Path| {
            fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        };
        [unified, v1].into_iter().find(|base| {
            if base.hierarchy == Hierarchy::Unified && !has_pids(&base.root) {
                return false;
            }
            remove_stale(base);
            // A probe: the hierarchy is usable when a cgroup with a limit can be made there.
            let mut probe = base.clone();
            probe.path = format!("{RUN_PARENT}/probe-{pid}");
            probe.settings = vec![("pids.max".into(), "1".into())];
            let made = probe.create().is_ok();
            let _ = probe.remove(false);
            made
        })
    });
    let max = max.max(1);
    match base {
        Some(base) => {
            let mut cg = base.clone();
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            cg.path = format!("{RUN_PARENT}/run-{pid}-{n}");
            cg.settings = vec![("pids.max".into(), max.to_string())];
            ProcessLimit::Cgroup(cg)
        }
        None => {
            // The hard limit cannot be raised without CAP_SYS_RESOURCE: stay within it.
            let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
                .map_or(u64::MAX, |(_, hard)| hard)
                .min(max);
            ProcessLimit::Rlimit(Rlimit {
                resource: libc::RLIMIT_NPROC,
                soft: hard,
                hard,
            })
        }
    }
}

/// Remove the cgroups `kiln/run-PID-N` under `base` whose process PID no longer runs, killing
/// what is left in them.
fn remove_stale(base: &Cgroup) {
    let Ok(entries) = fs::read_dir(base.root.join(RUN_PARENT)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive && entry.path().is_dir() {
            let mut stale = base.clone();
            stale.path = format!("{RUN_PARENT}/{}", name.to_string_lossy());
            let _ = stale.remove(true);
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

    fn resources(v: serde_json::Value) -> Resources {
        serde_json::from_value(v).expect("valid resources")
    }

    #[test]
    fn resources_become_cgroup_v2_settings() {
        let mut cg = Cgroup::new("/kiln/secure/");
        cg.add_resources(&resources(serde_json::json!({
            "memory": {"limit": 67108864, "swap": 100663296, "reservation": 1024},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 32},
            "unified": {"io.weight": "50"},
        })));
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
        cg.add_resources(&resources(
            serde_json::json!({"memory": {"limit": -1}, "pids": {"limit": 0}}),
        ));
        assert_eq!(cg.settings[0].1, "max");
        assert_eq!(cg.settings[1].1, "max");
    }

    #[test]
    fn the_cgroup_to_leave_for_is_the_callers_own() {
        let list = "12:pids:/user.slice/session-3.scope\n1:name=systemd:/x\n0::/init.scope\n";
        let v1 = Cgroup::v1("/sys/fs/cgroup/pids", "pids", "kiln/run-1-0");
        assert_eq!(
            v1.procs_of(list),
            Some(PathBuf::from(
                "/sys/fs/cgroup/pids/user.slice/session-3.scope/cgroup.procs"
            ))
        );
        let v2 = Cgroup::new("kiln/run-1-0");
        assert_eq!(
            v2.procs_of(list),
            Some(PathBuf::from("/sys/fs/cgroup/init.scope/cgroup.procs"))
        );
        // The root cgroup; none for a controller the process is not in.
        assert_eq!(
            v2.procs_of("0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cgroup.procs"))
        );
        assert_eq!(Cgroup::v1("/x", "memory", "a").procs_of(list), None);
    }

    #[test]
    fn a_process_limit_cgroup_is_made_and_stale_ones_removed() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: cgroups need root");
            return;
        }
        let ProcessLimit::Cgroup(cg) = process_limit(16) else {
            // A host without a writable pids controller: the rlimit is within the hard one.
            let ProcessLimit::Rlimit(r) = process_limit(16) else {
                unreachable!()
            };
            assert!(r.resource == libc::RLIMIT_NPROC && r.hard <= 16);
            return;
        };
        let prefix = format!("kiln/run-{}-", std::process::id());
        assert!(cg.path.starts_with(&prefix), "{}", cg.path);
        assert_eq!(cg.settings, [("pids.max".to_string(), "16".to_string())]);
        let (_procs, made) = cg.create().expect("create");
        assert!(made);
        assert_eq!(
            fs::read_to_string(cg.dir().join("pids.max"))
                .expect("pids.max")
                .trim(),
            "16"
        );
        cg.remove(true).expect("remove");
        assert!(!cg.dir().exists());

        // One whose process is gone (no pid is this large) goes; one of a live process stays.
        let mut base = cg.clone();
        base.path = String::new();
        base.settings.clear();
        let mut stale = cg.clone();
        stale.path = "kiln/run-999999999-0".into();
        let mut live = cg.clone();
        live.path = format!("{prefix}stale-test");
        for c in [&stale, &live] {
            c.create().expect("create");
        }
        remove_stale(&base);
        assert!(!stale.dir().exists(), "the stale cgroup stayed");
        assert!(live.dir().exists(), "a live process's cgroup was removed");
        live.remove(false).expect("remove");
    }
}
