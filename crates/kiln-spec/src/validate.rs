//! Validation that makes the runtime fail closed: what parses but must not run. Every refusal
//! names the field and its value.
//!
//! - user (and time) namespaces are refused, not skipped: kiln does not create them;
//! - device paths, mount destinations, masked and read-only paths must stay inside the
//!   container's root (`..` may not climb above it), and `cgroupsPath` inside the cgroup root;
//! - a sysctl must be one the container's own namespaces hold (runc's list): `kernel.msg*`,
//!   `kernel.sem`, `kernel.shm*` and `fs.mqueue.*` with an IPC namespace, `net.*` with a network
//!   namespace, `kernel.hostname` and `kernel.domainname` with a UTS namespace;
//! - a bind mount of the host's /proc (or anything under it) is refused;
//! - capability and rlimit names must be known; absent capabilities mean none;
//! - confinement kiln cannot apply (AppArmor profiles, SELinux labels) is refused rather than
//!   ignored; a `linux.seccomp` filter is applied (the runtime compiles and checks it).

use crate::config::{Mount, NamespaceType, Spec};
use crate::error::Invalid;
use crate::runtime::Runtime;
use std::collections::BTreeSet;

/// Every capability kiln knows, in kernel order.
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Every resource limit, as config.json names them.
pub const RLIMITS: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// Root propagation values (`linux.rootfsPropagation`).
const PROPAGATIONS: [&str; 8] = [
    "shared",
    "slave",
    "private",
    "unbindable",
    "rshared",
    "rslave",
    "rprivate",
    "runbindable",
];

/// The largest major and minor device numbers the kernel has (12 and 20 bits): larger ones
/// would be truncated into a different device.
const MAX_MAJOR: i64 = (1 << 12) - 1;
const MAX_MINOR: i64 = (1 << 20) - 1;

/// `path` (in the container) made absolute and cleaned of `.`, `..` and repeated slashes; an
/// error saying why when it is empty, holds a NUL byte, or climbs above the root with `..`.
pub fn container_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("is empty: give an absolute path in the container".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(
                        "leaves the container's root (`..` climbs above /): give a path \
                                inside the container"
                            .into(),
                    );
                }
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether the host path `source` is the host's /proc or under it (lexically: `..` stops at
/// /). Relative paths are not host /proc.
pub fn is_host_proc(source: &str) -> bool {
    if !source.starts_with('/') {
        return false;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in source.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.first() == Some(&"proc")
}

/// The namespace a sysctl belongs to, `None` when it is not namespaced (setting it in a
/// container would change the host's value). runc's list.
pub fn sysctl_namespace(key: &str) -> Option<NamespaceType> {
    if key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key == "kernel.sem_next_id"
        || key.starts_with("kernel.shm")
        || key.starts_with("fs.mqueue.")
    {
        Some(NamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(NamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceType::Uts)
    } else {
        None
    }
}

impl Spec {
    /// Check what the runtime must refuse although it parses (see the module documentation).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.validate_process()?;
        if self.root.path.is_empty() {
            return Err(Invalid::new(
                "root.path",
                &self.root.path,
                "is empty: give the root file system's directory (relative to the bundle)",
            ));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            validate_mount(i, m)?;
        }
        self.validate_namespaces()?;
        self.validate_sysctls()?;
        self.validate_linux_paths()?;
        self.validate_resources()?;
        let linux = &self.linux;
        if !linux.rootfs_propagation.is_empty()
            && !PROPAGATIONS.contains(&linux.rootfs_propagation.as_str())
        {
            return Err(Invalid::new(
                "linux.rootfsPropagation",
                &linux.rootfs_propagation,
                format!(
                    "unknown propagation: use one of {}",
                    PROPAGATIONS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn validate_process(&self) -> Result<(), Invalid> {
        let p = &self.process;
        if p.args.is_empty() {
            return Err(Invalid::new(
                "process.args",
                &p.args,
                "is empty: give the command to run",
            ));
        }
        if !p.cwd.starts_with('/') {
            return Err(Invalid::new(
                "process.cwd",
                &p.cwd,
                "is not an absolute path: give the working directory in the container",
            ));
        }
        if let Some(caps) = &p.capabilities {
            for (set, names) in caps.sets() {
                for (j, name) in names.iter().enumerate() {
                    if !CAPABILITIES.contains(&name.as_str()) {
                        return Err(Invalid::new(
                            format!("process.capabilities.{set}[{j}]"),
                            name,
                            "unknown capability: write the kernel's names, like CAP_NET_ADMIN",
                        ));
                    }
                }
            }
        }
        for (i, r) in p.rlimits.iter().enumerate() {
            if !RLIMITS.contains(&r.kind.as_str()) {
                return Err(Invalid::new(
                    format!("process.rlimits[{i}].type"),
                    &r.kind,
                    "unknown rlimit: write names like RLIMIT_NOFILE",
                ));
            }
            if r.soft > r.hard {
                return Err(Invalid::new(
                    format!("process.rlimits[{i}].soft"),
                    &r.soft,
                    format!("is above the hard limit {}", r.hard),
                ));
            }
        }
        for (field, value, what) in [
            (
                "process.apparmorProfile",
                &p.apparmor_profile,
                "AppArmor profiles",
            ),
            ("process.selinuxLabel", &p.selinux_label, "SELinux labels"),
        ] {
            if !value.is_empty() {
                return Err(Invalid::new(
                    field,
                    value,
                    format!(
                        "kiln does not apply {what}: remove it rather than run the container \
                         unconfined"
                    ),
                ));
            }
        }
        if let Some(adj) = p.oom_score_adj
            && !(-1000..=1000).contains(&adj)
        {
            return Err(Invalid::new(
                "process.oomScoreAdj",
                &adj,
                "is out of range: give a number from -1000 to 1000",
            ));
        }
        Ok(())
    }

    fn validate_namespaces(&self) -> Result<(), Invalid> {
        let linux = &self.linux;
        let mut seen = BTreeSet::new();
        for (i, ns) in linux.namespaces.iter().enumerate() {
            let field = format!("linux.namespaces[{i}].type");
            match ns.kind {
                NamespaceType::User => {
                    return Err(Invalid::new(
                        field,
                        &ns.kind,
                        "kiln does not support user namespaces: remove the entry (the \
                         container's ids are then the host's) or use another runtime",
                    ));
                }
                NamespaceType::Time => {
                    return Err(Invalid::new(
                        field,
                        &ns.kind,
                        "kiln does not support time namespaces: remove the entry",
                    ));
                }
                _ => {}
            }
            if !seen.insert(ns.kind) {
                return Err(Invalid::new(
                    field,
                    &ns.kind,
                    "is listed twice: give each namespace type once",
                ));
            }
            if !ns.path.is_empty() && !ns.path.starts_with('/') {
                return Err(Invalid::new(
                    format!("linux.namespaces[{i}].path"),
                    &ns.path,
                    "is not an absolute path: give the namespace file to join (/proc/PID/ns/...)",
                ));
            }
        }
        for (field, mappings) in [
            ("linux.uidMappings", &linux.uid_mappings),
            ("linux.gidMappings", &linux.gid_mappings),
        ] {
            if !mappings.is_empty() {
                return Err(Invalid::new(
                    field,
                    mappings,
                    "id mappings need a user namespace, which kiln does not support: remove them",
                ));
            }
        }
        Ok(())
    }

    fn validate_sysctls(&self) -> Result<(), Invalid> {
        for (key, value) in &self.linux.sysctl {
            let field = format!("linux.sysctl.{key}");
            let well_formed = !key.is_empty()
                && key
                    .split('.')
                    .all(|c| !c.is_empty() && !c.contains(['/', '\0']));
            if !well_formed {
                return Err(Invalid::new(
                    field,
                    value,
                    "is not a kernel parameter name: write names like net.ipv4.ip_forward",
                ));
            }
            let Some(kind) = sysctl_namespace(key) else {
                return Err(Invalid::new(
                    field,
                    value,
                    format!(
                        "{key} is not namespaced: setting it in the container would change the \
                         host's value (allowed: kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* \
                         with an ipc namespace, net.* with a network namespace, kernel.hostname \
                         and kernel.domainname with a uts namespace)"
                    ),
                ));
            };
            if self.namespace(kind).is_none() {
                return Err(Invalid::new(
                    field,
                    value,
                    format!(
                        "needs {} {} namespace: add {{\"type\": \"{}\"}} to linux.namespaces, \
                         or the host's value would change",
                        if kind == NamespaceType::Ipc {
                            "an"
                        } else {
                            "a"
                        },
                        kind.name(),
                        kind.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_linux_paths(&self) -> Result<(), Invalid> {
        let linux = &self.linux;
        for (i, d) in linux.devices.iter().enumerate() {
            let field = format!("linux.devices[{i}].path");
            let path = container_path(&d.path).map_err(|m| Invalid::new(&field, &d.path, m))?;
            if path == "/" {
                return Err(Invalid::new(
                    field,
                    &d.path,
                    "names the root: give the device's path, like /dev/fuse",
                ));
            }
            for (name, n, max) in [("major", d.major, MAX_MAJOR), ("minor", d.minor, MAX_MINOR)] {
                if !(0..=max).contains(&n) {
                    return Err(Invalid::new(
                        format!("linux.devices[{i}].{name}"),
                        &n,
                        format!("is out of range: give a number from 0 to {max}"),
                    ));
                }
            }
        }
        for (key, list) in [
            ("maskedPaths", &linux.masked_paths),
            ("readonlyPaths", &linux.readonly_paths),
        ] {
            for (i, p) in list.iter().enumerate() {
                container_path(p).map_err(|m| Invalid::new(format!("linux.{key}[{i}]"), p, m))?;
            }
        }
        if !linux.cgroups_path.is_empty() {
            container_path(&linux.cgroups_path).map_err(|_| {
                Invalid::new(
                    "linux.cgroupsPath",
                    &linux.cgroups_path,
                    "leaves the cgroup root (`..` climbs above it): give a path like kiln/NAME",
                )
            })?;
        }
        Ok(())
    }

    fn validate_resources(&self) -> Result<(), Invalid> {
        let Some(r) = &self.linux.resources else {
            return Ok(());
        };
        for (file, value) in &r.unified {
            let plain =
                !file.is_empty() && file != "." && file != ".." && !file.contains(['/', '\0']);
            if !plain {
                return Err(Invalid::new(
                    format!("linux.resources.unified.{file}"),
                    value,
                    "is not a cgroup interface file name: write names like memory.max",
                ));
            }
        }
        Ok(())
    }
}

/// A config.json mount: its destination stays in the root, it is not an id-mapped mount, and
/// it does not bind the host's /proc.
fn validate_mount(i: usize, m: &Mount) -> Result<(), Invalid> {
    container_path(&m.destination)
        .map_err(|msg| Invalid::new(format!("mounts[{i}].destination"), &m.destination, msg))?;
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(Invalid::new(
            format!("mounts[{i}].uidMappings"),
            &m.uid_mappings,
            "kiln does not support id-mapped mounts: remove the mappings",
        ));
    }
    if m.is_bind() && is_host_proc(&m.source) {
        return Err(Invalid::new(
            format!("mounts[{i}].source"),
            &m.source,
            "binds the host's /proc into the container: mount a new proc file system instead \
             ({\"type\": \"proc\", \"source\": \"proc\"})",
        ));
    }
    Ok(())
}

impl Runtime {
    /// Check the interfaces and host paths (see the module documentation).
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, iface) in self.interfaces.iter().enumerate() {
            if iface.name.is_empty() {
                return Err(Invalid::new(
                    format!("interfaces[{i}].name"),
                    &iface.name,
                    "is empty: give the interface's name in the container",
                ));
            }
            match iface.add.as_str() {
                "" => {}
                "veth" if !iface.peer.is_empty() => {}
                "veth" => {
                    return Err(Invalid::new(
                        format!("interfaces[{i}].peer"),
                        &iface.peer,
                        "is empty: a veth pair needs the name of its host end",
                    ));
                }
                _ => {
                    return Err(Invalid::new(
                        format!("interfaces[{i}].add"),
                        &iface.add,
                        "cannot be created: use veth, or leave it empty to move a host interface in",
                    ));
                }
            }
        }
        for (kind, path) in self.bind_ns.entries() {
            if !path.is_empty() && !path.starts_with('/') {
                return Err(Invalid::new(
                    format!("bindNS.{kind}"),
                    &path,
                    "is not an absolute path: give the host path to bind the namespace to",
                ));
            }
        }
        for (i, dir) in self.mkdir.iter().enumerate() {
            if !dir.starts_with('/') {
                return Err(Invalid::new(
                    format!("mkdir[{i}]"),
                    dir,
                    "is not an absolute path: give the host directory to create",
                ));
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !m.destination.starts_with('/') {
                return Err(Invalid::new(
                    format!("mounts[{i}].destination"),
                    &m.destination,
                    "is not an absolute path: give the host path to mount on",
                ));
            }
        }
        Ok(())
    }
}
