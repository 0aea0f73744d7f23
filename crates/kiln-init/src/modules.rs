//! Kernel modules from /lib/modules/VERSION: by name with their dependencies (modules.dep), for
//! the devices present at boot (their modalias matched against modules.alias), and on demand:
//! kiln-init is the kernel's modprobe helper (/proc/sys/kernel/modprobe), so mounting an ext4
//! disk or opening an IPv6 socket in a container loads what it needs.

use std::collections::HashSet;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The module tree of the running kernel.
pub struct Modules {
    dir: PathBuf,
    deps: Vec<(String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    loaded: HashSet<String>,
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// Shell-style matching with `*` and `?`, as modules.alias patterns use.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

impl Modules {
    /// Read the tree of the running kernel, if there is one.
    pub fn open() -> Option<Modules> {
        let release = nix::sys::utsname::uname()
            .ok()?
            .release()
            .to_string_lossy()
            .to_string();
        let dir = Path::new("/lib/modules").join(release);
        let dep = fs::read_to_string(dir.join("modules.dep")).ok()?;
        let deps = dep
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(m, d)| {
                (
                    m.to_string(),
                    d.split_whitespace().map(str::to_string).collect(),
                )
            })
            .collect();
        let aliases = fs::read_to_string(dir.join("modules.alias"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("alias "))
            .filter_map(|l| l.split_once(' '))
            .map(|(a, m)| (a.to_string(), m.replace('-', "_")))
            .collect();
        let loaded = fs::read_to_string("/proc/modules")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        Some(Modules {
            dir,
            deps,
            aliases,
            loaded,
        })
    }

    /// Load `name` and what it depends on. Modules built into the kernel or already loaded
    /// succeed at once.
    pub fn load(&mut self, name: &str) -> Result<(), String> {
        let name = name.replace('-', "_");
        if self.loaded.contains(&name) {
            return Ok(());
        }
        let Some((path, deps)) = self
            .deps
            .iter()
            .find(|(p, _)| module_name(p) == name)
            .cloned()
        else {
            return Err(format!("module {name} is not in {}", self.dir.display()));
        };
        for dep in deps.iter().rev() {
            self.insert(dep)?;
        }
        self.insert(&path)
    }

    /// Load a module named directly or through an alias (`fs-ext4`, `net-pf-10`), as the
    /// kernel asks for them.
    pub fn load_wanted(&mut self, wanted: &str) -> Result<(), String> {
        if self.load(wanted).is_ok() {
            return Ok(());
        }
        let modules: Vec<String> = self
            .aliases
            .iter()
            .filter(|(pattern, _)| glob(pattern.as_bytes(), wanted.as_bytes()))
            .map(|(_, m)| m.clone())
            .collect();
        if modules.is_empty() {
            return Err(format!("no module provides {wanted}"));
        }
        // Several modules may offer it (crc32c_intel needs SSE 4.2, crc32c_generic does not):
        // one that loads is enough.
        let mut last = Ok(());
        for m in &modules {
            match self.load(m) {
                Ok(()) => return Ok(()),
                Err(e) => last = Err(e),
            }
        }
        last
    }

    fn insert(&mut self, rel: &str) -> Result<(), String> {
        let name = module_name(rel);
        if self.loaded.contains(&name) {
            return Ok(());
        }
        let path = self.dir.join(rel);
        let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match nix::kmod::finit_module(file.as_fd(), c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::Error::EEXIST) => {
                self.loaded.insert(name);
                Ok(())
            }
            Err(e) => Err(format!("loading {name}: {e}")),
        }
    }

    /// Load the modules for every device that announces a modalias. Returns what was loaded.
    pub fn coldplug(&mut self) -> Vec<String> {
        // A bus driver (virtio_pci) brings up devices of its own (virtio_net, virtio_blk): go
        // round again until nothing new is loaded.
        let mut all = Vec::new();
        loop {
            let round = self.coldplug_once();
            if round.is_empty() {
                return all;
            }
            all.extend(round);
        }
    }

    fn coldplug_once(&mut self) -> Vec<String> {
        let mut wanted = Vec::new();
        for bus in fs::read_dir("/sys/bus").into_iter().flatten().flatten() {
            for dev in fs::read_dir(bus.path().join("devices"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(alias) = fs::read_to_string(dev.path().join("modalias")) else {
                    continue;
                };
                let alias = alias.trim();
                for (pattern, module) in &self.aliases {
                    if glob(pattern.as_bytes(), alias.as_bytes()) && !wanted.contains(module) {
                        wanted.push(module.clone());
                    }
                }
            }
        }
        let mut done = Vec::new();
        for m in wanted {
            if !self.loaded.contains(&m) && self.load(&m).is_ok() {
                done.push(m);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(module_name("kernel/fs/overlayfs/overlay.ko"), "overlay");
        assert_eq!(
            module_name("kernel/drivers/net/virtio-net.ko.xz"),
            "virtio_net"
        );
    }
}
