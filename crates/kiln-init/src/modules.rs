//! Kernel modules from /lib/modules/VERSION: by name with their dependencies (modules.dep) and
//! `pre:` soft dependencies (modules.softdep), for the devices present at boot (their modalias
//! matched against modules.alias), and on demand: kiln-init is the kernel's modprobe helper
//! (/proc/sys/kernel/modprobe), so mounting an ext4 disk or opening an IPv6 socket in a
//! container loads what it needs.
//!
//! Boot time goes mostly into probing devices (ACPI interrupt routing, ATA port resets), not
//! into reading files, so `coldplug` loads the modules of independent devices on threads of
//! their own and looks for new devices (a bus driver brings up devices of its own) each time one
//! is loaded. `load_in_background` runs that at a low priority while init goes on: containers
//! that cannot use a device (`needs_devices`) start at once, the others wait for
//! `Loading::wait`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// The module tree of the running kernel, and which of its modules are loaded. Clones share
/// both, so threads can load modules at the same time (the kernel serialises loads of one
/// module: the second waits for the first and then finds it loaded).
#[derive(Clone)]
pub struct Modules {
    index: Arc<Index>,
    loaded: Arc<Mutex<HashSet<String>>>,
    /// Set on the clones a background load works with.
    priority: Option<Arc<Priority>>,
}

/// The scheduling priority of a background load: low (nice 19) so that containers get the CPU
/// first, normal once someone waits for it.
struct Priority {
    /// Sets the calling thread's nice value.
    nice: fn(i32),
    /// Someone waits: back to nice 0 before the next module.
    hurry: AtomicBool,
}

impl Priority {
    /// Lower the calling thread's priority, unless someone waits already.
    fn lower(&self) {
        if !self.hurry.load(Ordering::Relaxed) {
            (self.nice)(19);
        }
    }

    fn apply(&self) {
        if self.hurry.load(Ordering::Relaxed) {
            (self.nice)(0);
        }
    }
}

/// What modules.dep, modules.softdep and modules.alias say, read once.
struct Index {
    dir: PathBuf,
    /// Module name -> its path (relative to `dir`) and the paths of what it needs, the last
    /// needed first.
    modules: HashMap<String, (String, Vec<String>)>,
    /// Module name -> modules or aliases to load before it.
    pre: HashMap<String, Vec<String>>,
    /// Read on first use: the modprobe helper mostly loads modules by name.
    aliases: OnceLock<Aliases>,
}

/// modules.alias, indexed by each pattern's literal prefix (the part before its first wildcard),
/// so that a device is matched against the few patterns that can match it.
#[derive(Default)]
struct Aliases {
    /// Patterns and their module, in file order.
    patterns: Vec<(String, String)>,
    /// Literal prefix -> indexes into `patterns`.
    by_prefix: HashMap<String, Vec<usize>>,
}

impl Aliases {
    fn parse(text: &str) -> Aliases {
        let mut a = Aliases::default();
        for (pattern, module) in text
            .lines()
            .filter_map(|l| l.strip_prefix("alias "))
            .filter_map(|l| l.split_once(' '))
        {
            let literal = pattern
                .find(['*', '?', '['])
                .map_or(pattern, |i| &pattern[..i]);
            a.by_prefix
                .entry(literal.to_string())
                .or_default()
                .push(a.patterns.len());
            a.patterns
                .push((pattern.to_string(), module.trim().replace('-', "_")));
        }
        a
    }

    /// The modules whose alias patterns match `alias`, in file order, without repeats.
    fn matching(&self, alias: &str) -> Vec<String> {
        let mut hits: Vec<usize> = (0..=alias.len())
            .filter(|&n| alias.is_char_boundary(n))
            .filter_map(|n| self.by_prefix.get(&alias[..n]))
            .flatten()
            .copied()
            .filter(|&i| glob(self.patterns[i].0.as_bytes(), alias.as_bytes()))
            .collect();
        hits.sort_unstable();
        let mut out: Vec<String> = Vec::new();
        for i in hits {
            let m = &self.patterns[i].1;
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Shell-style matching with `*`, `?` and `[...]` classes, as modules.alias patterns use.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => None,
            Some(b'?') => Some(1),
            Some(b'[') => Some(class(&pattern[p..], text[t])),
            Some(&c) if c == text[t] => Some(1),
            _ => Some(0),
        };
        match step {
            None => {
                star = Some(p);
                mark = t;
                p += 1;
            }
            Some(n) if n > 0 => {
                p += n;
                t += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    t = mark;
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

/// Match `c` against the class at the start of `pattern` (`[abc]`, `[a-z]`, `[!a]`): the class's
/// length when it matches, 0 when it does not. An unterminated `[` is a literal.
fn class(pattern: &[u8], c: u8) -> usize {
    let Some(end) = pattern
        .iter()
        .skip(2)
        .position(|&b| b == b']')
        .map(|i| i + 2)
    else {
        return usize::from(c == b'[');
    };
    let (negate, body) = match pattern[1] {
        b'!' | b'^' => (true, &pattern[2..end]),
        _ => (false, &pattern[1..end]),
    };
    let mut hit = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            hit |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= body[i] == c;
            i += 1;
        }
    }
    if hit != negate { end + 1 } else { 0 }
}

/// Run `job` on a new thread of the scope `s`, or here and now when no thread can be made.
fn spawn_or_run<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    job: impl FnOnce() + Send + 'scope,
) {
    let job = Arc::new(Mutex::new(Some(job)));
    let run = {
        let job = Arc::clone(&job);
        move || {
            let job = job.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(job) = job {
                job();
            }
        }
    };
    if std::thread::Builder::new().spawn_scoped(s, run).is_err() {
        let job = job.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(job) = job {
            job();
        }
    }
}

/// The modules loaded now, as /proc/modules lists them: only those that are live, so that one
/// still initialising (loaded by another thread or process) is waited for, not taken as done.
fn live_modules() -> HashSet<String> {
    fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("Live"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

impl Modules {
    /// Read the tree of the running kernel, if there is one.
    pub fn open() -> Option<Modules> {
        let release = nix::sys::utsname::uname()
            .ok()?
            .release()
            .to_string_lossy()
            .to_string();
        Modules::open_dir(&Path::new("/lib/modules").join(release))
    }

    /// Read the tree in `dir` (a /lib/modules/VERSION directory).
    fn open_dir(dir: &Path) -> Option<Modules> {
        let dep = fs::read_to_string(dir.join("modules.dep")).ok()?;
        let modules = dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(m, d)| {
                let needs = d.split_whitespace().rev().map(str::to_string).collect();
                (module_name(m), (m.to_string(), needs))
            })
            .collect();
        let mut pre: HashMap<String, Vec<String>> = HashMap::new();
        for line in fs::read_to_string(dir.join("modules.softdep"))
            .unwrap_or_default()
            .lines()
        {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else {
                continue;
            };
            let mut in_pre = false;
            for w in words {
                match w {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    _ if in_pre => pre
                        .entry(module.replace('-', "_"))
                        .or_default()
                        .push(w.to_string()),
                    _ => {}
                }
            }
        }
        Some(Modules {
            index: Arc::new(Index {
                dir: dir.to_path_buf(),
                modules,
                pre,
                aliases: OnceLock::new(),
            }),
            loaded: Arc::new(Mutex::new(live_modules())),
            priority: None,
        })
    }

    fn aliases(&self) -> &Aliases {
        self.index.aliases.get_or_init(|| {
            Aliases::parse(
                &fs::read_to_string(self.index.dir.join("modules.alias")).unwrap_or_default(),
            )
        })
    }

    fn is_loaded(&self, name: &str) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    /// Load `name` and what it depends on. Modules built into the kernel or already loaded
    /// succeed at once.
    pub fn load(&mut self, name: &str) -> Result<(), String> {
        self.load_depth(name, 0)
    }

    fn load_depth(&self, name: &str, depth: usize) -> Result<(), String> {
        let name = name.replace('-', "_");
        if self.is_loaded(&name) {
            return Ok(());
        }
        let Some((path, needs)) = self.index.modules.get(&name) else {
            return Err(format!(
                "module {name} is not in {}",
                self.index.dir.display()
            ));
        };
        // Soft dependencies (ext4 wants crc32c): best effort, as modprobe does them.
        if depth < 8 {
            for soft in self.index.pre.get(&name).into_iter().flatten() {
                let _ = self.load_wanted_depth(soft, depth + 1);
            }
        }
        for dep in needs {
            self.insert(dep)?;
        }
        self.insert(path)
    }

    /// Load a module named directly or through an alias (`fs-ext4`, `net-pf-10`), as the
    /// kernel asks for them.
    pub fn load_wanted(&mut self, wanted: &str) -> Result<(), String> {
        self.load_wanted_depth(wanted, 0)
    }

    fn load_wanted_depth(&self, wanted: &str, depth: usize) -> Result<(), String> {
        if self.index.modules.contains_key(&wanted.replace('-', "_")) {
            return self.load_depth(wanted, depth);
        }
        let modules = self.aliases().matching(wanted);
        if modules.is_empty() {
            return Err(format!("no module provides {wanted}"));
        }
        // Several modules may offer it (crc32c_intel needs SSE 4.2, crc32c_generic does not):
        // one that loads is enough.
        let mut last = Ok(());
        for m in &modules {
            match self.load_depth(m, depth) {
                Ok(()) => return Ok(()),
                Err(e) => last = Err(e),
            }
        }
        last
    }

    fn insert(&self, rel: &str) -> Result<(), String> {
        let name = module_name(rel);
        if self.is_loaded(&name) {
            return Ok(());
        }
        if let Some(p) = &self.priority {
            p.apply();
        }
        let path = self.index.dir.join(rel);
        let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match nix::kmod::finit_module(file.as_fd(), c"", nix::kmod::ModuleInitFlags::empty()) {
            // EEXIST: loaded already, or by someone else meanwhile (the kernel waited for it).
            Ok(()) | Err(nix::Error::EEXIST) => {
                self.loaded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name);
                Ok(())
            }
            Err(e) => Err(format!("loading {name}: {e}")),
        }
    }

    /// Load the modules for every device that announces a modalias. Each module (with what it
    /// needs) loads on a thread of its own, so that one device's probe waiting for its hardware
    /// does not hold up the others; each time one is loaded, the devices that appeared since (a
    /// bus driver such as virtio_pci brings up devices of its own) are looked at. Returns what
    /// was loaded, sorted.
    fn coldplug(&self) -> Vec<String> {
        let (tx, rx) = mpsc::channel::<(String, Result<(), String>)>();
        let mut seen = HashSet::new();
        let mut started = HashSet::new();
        let mut loaded = Vec::new();
        std::thread::scope(|s| {
            let mut running = 0usize;
            loop {
                if let Some(p) = &self.priority {
                    p.apply();
                }
                for m in self.new_devices(&mut seen) {
                    if self.is_loaded(&m) || !started.insert(m.clone()) {
                        continue;
                    }
                    let (tx, me) = (tx.clone(), self.clone());
                    running += 1;
                    spawn_or_run(s, move || {
                        let r = me.load_depth(&m, 0);
                        let _ = tx.send((m, r));
                    });
                }
                if running == 0 {
                    break;
                }
                let Ok((m, result)) = rx.recv() else {
                    break;
                };
                running -= 1;
                // A device without a working driver is not an error of the system's.
                if result.is_ok() {
                    loaded.push(m);
                }
            }
        });
        loaded.sort();
        loaded
    }

    /// The modules wanted by devices not in `seen` (which they are added to), in the order the
    /// buses list them.
    fn new_devices(&self, seen: &mut HashSet<PathBuf>) -> Vec<String> {
        let mut wanted: Vec<String> = Vec::new();
        let mut buses: Vec<PathBuf> = fs::read_dir("/sys/bus")
            .into_iter()
            .flatten()
            .flatten()
            .map(|b| b.path().join("devices"))
            .collect();
        buses.sort();
        for bus in buses {
            let mut devices: Vec<PathBuf> = fs::read_dir(&bus)
                .into_iter()
                .flatten()
                .flatten()
                .map(|d| d.path())
                .collect();
            devices.sort();
            for dev in devices {
                if !seen.insert(dev.clone()) {
                    continue;
                }
                let Ok(alias) = fs::read_to_string(dev.join("modalias")) else {
                    continue;
                };
                for m in self.aliases().matching(alias.trim()) {
                    if !wanted.contains(&m) {
                        wanted.push(m);
                    }
                }
            }
        }
        wanted
    }

    /// Start loading, on a thread of its own, the modules for the devices present (as
    /// `coldplug` does); `done` is called there with what was loaded, before the returned
    /// `Loading` reports it finished. `nice` sets the calling thread's nice value: the load
    /// calls it with 19 as it starts, so that containers get the CPU first, and with 0 once
    /// someone waits for it (`Loading::wait`).
    pub fn load_in_background(
        &self,
        nice: fn(i32),
        done: impl FnOnce(Vec<String>) + Send + 'static,
    ) -> Loading {
        let priority = Arc::new(Priority {
            nice,
            hurry: AtomicBool::new(false),
        });
        let loading = Loading {
            finished: Arc::new((Mutex::new(false), Condvar::new())),
            priority: Arc::clone(&priority),
        };
        let me = Modules {
            priority: Some(priority),
            ..self.clone()
        };
        let job: Job = Box::new(move |me: &Modules| {
            // The threads started from here inherit it.
            if let Some(p) = &me.priority {
                p.lower();
            }
            done(me.coldplug());
        });
        let job = Arc::new(Mutex::new(Some(job)));
        let run = {
            let (me, job) = (me.clone(), Arc::clone(&job));
            let finished = Finished(Arc::clone(&loading.finished));
            move || {
                // Reports the load finished however the job ends, a panic included.
                let _finished = finished;
                let job = job.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(job) = job {
                    job(&me);
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("modules".into())
            .spawn(run)
        {
            // No thread: load here and now.
            println!("kiln-init: loading modules in the background: {e}");
            let job = job.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(job) = job {
                job(&me);
            }
        }
        loading
    }
}

type Job = Box<dyn FnOnce(&Modules) + Send>;

/// Marks a `Loading` finished when dropped.
struct Finished(Arc<(Mutex<bool>, Condvar)>);

impl Finished {
    fn set(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.set();
    }
}

/// Modules loading on a thread of their own (`Modules::load_in_background`). Clones refer to
/// the same load.
#[derive(Clone)]
pub struct Loading {
    finished: Arc<(Mutex<bool>, Condvar)>,
    priority: Arc<Priority>,
}

impl Loading {
    /// Load at normal priority from the next module on.
    fn hurry(&self) {
        self.priority.hurry.store(true, Ordering::Relaxed);
    }

    /// Block until every module for the devices present is loaded (or failed to); the load goes
    /// on at normal priority meanwhile.
    pub fn wait(&self) {
        self.hurry();
        let (flag, cv) = &*self.finished;
        let mut done = flag.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            done = cv.wait(done).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Capabilities that reach devices: mounting and administering them, network administration
/// (configuring interfaces), loading modules, raw I/O, making device nodes.
const DEVICE_CAPABILITIES: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_MKNOD",
];

/// Whether the container of `bundle` may use a device, and so must start only once the modules
/// for the devices present are loaded: when its config.json gives it a capability in
/// `DEVICE_CAPABILITIES`, device nodes (`linux.devices`), or a bind of the host's /, /dev or
/// /sys, or when its runtime.json mounts anything but tmpfs and overlay or creates network
/// interfaces. A container without these cannot configure, open or mount a device (it may still
/// see one appear in /sys, or a network interface in the host's network namespace, while it
/// runs). Anything unreadable counts as needing devices.
pub fn needs_devices(bundle: &Path) -> bool {
    let Some(config) = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    else {
        return true;
    };
    let runtime = match fs::read(bundle.join("runtime.json")) {
        Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) => Some(v),
            Err(_) => return true,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => return true,
    };
    config_needs_devices(&config, runtime.as_ref())
}

fn config_needs_devices(config: &serde_json::Value, runtime: Option<&serde_json::Value>) -> bool {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let caps = &config["process"]["capabilities"];
    let capability = [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ]
    .iter()
    .flat_map(|set| strings(&caps[*set]))
    .any(|c| DEVICE_CAPABILITIES.contains(&c.as_str()));
    let devices = config["linux"]["devices"]
        .as_array()
        .is_some_and(|d| !d.is_empty());
    let host_path = |source: &str| {
        let s = source.trim_end_matches('/');
        s.is_empty() || ["/dev", "/sys"].iter().any(|p| Path::new(s).starts_with(p))
    };
    let bind = config["mounts"].as_array().into_iter().flatten().any(|m| {
        let is_bind =
            m["type"] == "bind" || strings(&m["options"]).iter().any(|o| o.ends_with("bind"));
        is_bind && m["source"].as_str().is_some_and(host_path)
    });
    let Some(runtime) = runtime else {
        return capability || devices || bind;
    };
    let runtime_mount = runtime["mounts"].as_array().into_iter().flatten().any(|m| {
        !matches!(
            m["type"].as_str(),
            None | Some("tmpfs") | Some("overlay") | Some("none")
        ) || m["source"].as_str().is_some_and(|s| s.starts_with("/dev"))
    });
    let interfaces = runtime["interfaces"]
        .as_array()
        .is_some_and(|i| !i.is_empty());
    capability || devices || bind || runtime_mount || interfaces
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fresh directory under the system's temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let d = std::env::temp_dir().join(format!(
                "kiln-init-modules-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&d).expect("temporary directory");
            TempDir(d)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn alias_patterns() {
        assert!(glob(
            b"pci:v00001AF4d00001000sv*sd*bc*sc*i*",
            b"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(!glob(
            b"pci:v00001AF4d00001001*",
            b"pci:v00001AF4d00001000sv00001AF4"
        ));
        assert!(glob(b"fs-overlay", b"fs-overlay"));
        assert!(!glob(b"fs-overlay", b"fs-overlayx"));
        assert!(glob(b"a*b?d", b"axxbcd"));
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko"), "overlay");
        assert_eq!(
            module_name("kernel/drivers/net/virtio-net.ko.xz"),
            "virtio_net"
        );
    }

    #[test]
    fn alias_classes() {
        let p = b"usb:v152Dp0567d011[4-7]dc*";
        assert!(glob(p, b"usb:v152Dp0567d0115dc00"));
        assert!(!glob(p, b"usb:v152Dp0567d0118dc00"));
        assert!(glob(b"x[!ab]y", b"xcy"));
        assert!(!glob(b"x[!ab]y", b"xay"));
        assert!(glob(b"x[ab]*", b"xb123"));
        // An unterminated class is a literal bracket.
        assert!(glob(b"x[a", b"x[a"));
        assert!(!glob(b"x[a", b"xa"));
    }

    #[test]
    fn aliases_match_by_prefix_in_file_order() {
        let a = Aliases::parse(
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias crypto-crc32c crc32c-intel\n\
             alias crypto-crc32c crc32c_generic\n\
             alias *:crc32c* catchall\n\
             alias acpi*:LNXPWRBN:* button\n",
        );
        assert_eq!(
            a.matching("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(
            a.matching("crypto-crc32c"),
            ["crc32c_intel", "crc32c_generic"]
        );
        assert_eq!(a.matching("acpi:LNXPWRBN:"), ["button"]);
        assert_eq!(a.matching("x:crc32c-foo"), ["catchall"]);
        assert!(a.matching("pci:v00008086d00007010").is_empty());
    }

    #[test]
    fn reads_a_tree_with_soft_dependencies() {
        let dir = TempDir::new();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/lib/crc16.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/crypto/crc32c_generic.ko:\n",
        )
        .expect("write");
        fs::write(
            dir.path().join("modules.softdep"),
            "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c post: other\n",
        )
        .expect("write");
        fs::write(
            dir.path().join("modules.alias"),
            "alias crypto-crc32c crc32c_generic\nalias fs-ext4 ext4\n",
        )
        .expect("write");
        let m = Modules::open_dir(dir.path()).expect("tree");
        let (path, needs) = &m.index.modules["ext4"];
        assert_eq!(path, "kernel/fs/ext4/ext4.ko");
        // Loaded in reverse order of modules.dep: what the last one needs comes first.
        assert_eq!(needs, &["kernel/fs/jbd2/jbd2.ko", "kernel/lib/crc16.ko"]);
        assert_eq!(m.index.pre["ext4"], ["crypto-crc32c"]);
        assert_eq!(m.aliases().matching("fs-ext4"), ["ext4"]);
        let mut m2 = m.clone();
        let e = m2.load("nosuch").expect_err("unknown module");
        assert!(e.contains("module nosuch is not in"), "{e}");
        let e = m2.load_wanted("net-pf-99").expect_err("unknown alias");
        assert_eq!(e, "no module provides net-pf-99");
    }

    #[test]
    fn loading_reports_when_finished() {
        let l = Loading {
            finished: Arc::new((Mutex::new(false), Condvar::new())),
            priority: Arc::new(Priority {
                nice: |_| {},
                hurry: AtomicBool::new(false),
            }),
        };
        assert!(!*l.finished.0.lock().expect("lock"));
        let other = l.clone();
        let t = std::thread::spawn(move || {
            let (flag, cv) = &*other.finished;
            *flag.lock().expect("lock") = true;
            cv.notify_all();
        });
        l.wait();
        assert!(*l.finished.0.lock().expect("lock"));
        t.join().expect("join");
    }

    #[test]
    fn background_load_reports_and_its_priority() {
        use std::sync::atomic::AtomicI32;
        static NICE: AtomicI32 = AtomicI32::new(-1);
        let dir = TempDir::new();
        fs::write(dir.path().join("modules.dep"), "kernel/a.ko:\n").expect("write");
        // No alias matches a device of the machine the test runs on.
        fs::write(dir.path().join("modules.alias"), "alias kiln-test-none a\n").expect("write");
        let m = Modules::open_dir(dir.path()).expect("tree");
        let (tx, rx) = mpsc::channel();
        let loading = m.load_in_background(
            |n| NICE.store(n, Ordering::Relaxed),
            move |loaded| {
                let _ = tx.send((loaded, NICE.load(Ordering::Relaxed)));
            },
        );
        loading.wait();
        assert!(*loading.finished.0.lock().expect("lock"));
        let (loaded, nice) = rx.recv().expect("report");
        assert!(loaded.is_empty(), "{loaded:?}");
        // Lowered as it started; back to 0 if `wait` came before the end.
        assert!(nice == 19 || nice == 0, "{nice}");
        // After a wait, any later load runs at normal priority.
        let p = &loading.priority;
        p.lower();
        assert_eq!(NICE.load(Ordering::Relaxed), nice);
        p.apply();
        assert_eq!(NICE.load(Ordering::Relaxed), 0);
    }

    fn config(caps: &[&str], mounts: serde_json::Value) -> serde_json::Value {
        json!({
            "process": {"capabilities": {"bounding": caps, "effective": caps}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]},
            "mounts": mounts,
        })
    }

    fn runtime(mounts: serde_json::Value, interfaces: serde_json::Value) -> serde_json::Value {
        json!({"mounts": mounts, "interfaces": interfaces, "mkdir": []})
    }

    #[test]
    fn which_containers_wait_for_devices() {
        let own_root = runtime(
            json!([
                {"destination": "/containers/onboot/000-a/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/containers/onboot/000-a/tmp", "options": ["remount", "private"]},
                {"destination": "/containers/onboot/000-a/rootfs", "type": "overlay", "source": "overlay"}
            ]),
            json!([]),
        );
        let proc = json!([{"destination": "/proc", "type": "proc", "source": "proc"},
                          {"destination": "/sys", "type": "sysfs", "source": "sysfs"}]);
        // A plain container (a shell printing something; redis) does not wait.
        assert!(!config_needs_devices(
            &config(&[], proc.clone()),
            Some(&own_root)
        ));
        let redis = json!([{"destination": "/data", "type": "bind", "source": "/var/lib/redis", "options": ["rw", "rbind"]}]);
        assert!(!config_needs_devices(
            &config(&["CAP_SETUID", "CAP_SETGID"], redis),
            Some(&own_root)
        ));
        assert!(!config_needs_devices(&config(&["CAP_KILL"], proc), None));
        // A DHCP client configures interfaces; a formatter or mounter uses disks.
        assert!(config_needs_devices(
            &config(&["CAP_NET_ADMIN", "CAP_NET_RAW"], json!([])),
            Some(&own_root)
        ));
        assert!(config_needs_devices(
            &config(&["CAP_SYS_ADMIN"], json!([])),
            None
        ));
        // The host's /dev or /sys bound in, or all of /.
        for source in ["/dev", "/dev/", "/sys/class", "/"] {
            let m = json!([{"destination": "/dev", "type": "bind", "source": source, "options": ["rbind"]}]);
            assert!(
                config_needs_devices(&config(&[], m), None),
                "bind of {source}"
            );
        }
        let m = json!([{"destination": "/x", "source": "/dev", "options": ["rbind", "ro"]}]);
        assert!(config_needs_devices(&config(&[], m), None));
        // /devices is not /dev.
        let m = json!([{"destination": "/x", "type": "bind", "source": "/devices"}]);
        assert!(!config_needs_devices(&config(&[], m), None));
        // Device nodes.
        let mut c = config(&[], json!([]));
        c["linux"]["devices"] =
            json!([{"path": "/dev/vda", "type": "b", "major": 254, "minor": 0}]);
        assert!(config_needs_devices(&c, None));
        // runtime.json mounting a disk, or making interfaces.
        let disk = runtime(
            json!([{"destination": "/var/lib", "type": "ext4", "source": "/dev/vda1"}]),
            json!([]),
        );
        assert!(config_needs_devices(&config(&[], json!([])), Some(&disk)));
        let veth = runtime(json!([]), json!([{"name": "eth1", "add": "veth"}]));
        assert!(config_needs_devices(&config(&[], json!([])), Some(&veth)));
    }

    #[test]
    fn unreadable_bundles_wait_for_devices() {
        let dir = TempDir::new();
        assert!(needs_devices(dir.path()), "no config.json");
        fs::write(dir.path().join("config.json"), "{not json").expect("write");
        assert!(needs_devices(dir.path()), "bad config.json");
        fs::write(
            dir.path().join("config.json"),
            config(&[], json!([])).to_string(),
        )
        .expect("write");
        assert!(!needs_devices(dir.path()), "plain config, no runtime.json");
        fs::write(dir.path().join("runtime.json"), "[").expect("write");
        assert!(needs_devices(dir.path()), "bad runtime.json");
    }
}
