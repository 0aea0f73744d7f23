//! OCI bundles as `kiln build` writes them under /containers: `config.json` (the OCI runtime
//! spec: process, root, hostname, mounts, namespaces) and LinuxKit's `runtime.json` (mounts and
//! directories the host prepares before the container starts).
//!
//! Both are read through kiln-spec: strictly typed and validated, so a malformed or hostile
//! field is an error naming the file, the field and the value, never a default. What only the
//! running host can tell is checked here: a bind source that resolves into /proc, and a sysctl
//! written into a namespace joined by path that is the host's own.

use crate::security::{self, Capabilities, Rlimit};
use crate::{
    Cgroup, Container, Device, Interface, Mount, Namespace, NsKind, RuntimeError, mount_host,
};
use kiln_spec::{CONFIG_FILE, NamespaceType, Spec};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Carry out a bundle's runtime.json on the host: its mounts (the writable root's tmpfs and
/// overlay, binds the container shares) and its directories. The targets of the mounts it
/// stacks are added to `made` in order, also when it fails, so that the caller can undo them.
pub fn prepare_host(bundle: &Path, made: &mut Vec<PathBuf>) -> Result<(), RuntimeError> {
    let Some(rt) = kiln_spec::load_runtime(bundle)? else {
        return Ok(());
    };
    for dir in &rt.mkdir {
        fs::create_dir_all(dir).map_err(|source| RuntimeError::Prepare {
            path: dir.into(),
            source,
        })?;
    }
    for m in &rt.mounts {
        let target = Path::new(&m.destination);
        if mount_host(&m.source, target, &m.kind, &m.options)? {
            made.push(target.to_path_buf());
        }
    }
    Ok(())
}

/// What runtime.json asks of the host between creating the container's namespaces and
/// starting it.
#[derive(Debug, Default)]
pub struct HostSetup {
    /// Interfaces to create or move into its network namespace.
    pub interfaces: Vec<Interface>,
    /// `bindNS`: each namespace kind (as /proc/PID/ns names it) with the path to bind it to.
    pub bind_ns: Vec<(&'static str, PathBuf)>,
}

impl HostSetup {
    /// Whether anything is to be done (otherwise the container need not wait for it).
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.bind_ns.is_empty()
    }

    /// Carry it out for the container whose (first) process is `pid`.
    pub fn apply(&self, pid: u32) -> Result<(), RuntimeError> {
        crate::setup_interfaces(pid, &self.interfaces)?;
        crate::bind_namespaces(pid, &self.bind_ns)
    }
}

/// The interfaces and namespace bindings of a bundle's runtime.json.
pub fn host_setup(bundle: &Path) -> Result<HostSetup, RuntimeError> {
    let Some(rt) = kiln_spec::load_runtime(bundle)? else {
        return Ok(HostSetup::default());
    };
    let interfaces = rt
        .interfaces
        .iter()
        .map(|i| Interface {
            name: i.name.clone(),
            add: i.add.clone(),
            peer: i.peer.clone(),
        })
        .collect();
    let bind_ns = rt
        .bind_ns
        .entries()
        .into_iter()
        .filter(|(_, path)| !path.is_empty())
        .map(|(kind, path)| (kind, PathBuf::from(path)))
        .collect();
    Ok(HostSetup {
        interfaces,
        bind_ns,
    })
}

/// A refusal of a field of `file` that only the running host can judge.
fn refuse(file: &Path, field: &str, value: &str, message: &str) -> RuntimeError {
    RuntimeError::Config(format!(
        "{}: {field} = {}: {message}",
        file.display(),
        Value::from(value)
    ))
}

/// The capability masks: absent capabilities are none at all, as in runc.
fn capabilities(spec: &Spec) -> Result<Capabilities, RuntimeError> {
    let caps = spec.capabilities();
    Ok(Capabilities {
        bounding: security::capability_mask(&caps.bounding)?,
        effective: security::capability_mask(&caps.effective)?,
        permitted: security::capability_mask(&caps.permitted)?,
        inheritable: security::capability_mask(&caps.inheritable)?,
        ambient: security::capability_mask(&caps.ambient)?,
    })
}

fn rlimits(spec: &Spec) -> Result<Vec<Rlimit>, RuntimeError> {
    spec.process
        .rlimits
        .iter()
        .map(|r| {
            Ok(Rlimit {
                resource: security::rlimit_resource(&r.kind)?,
                soft: r.soft,
                hard: r.hard,
            })
        })
        .collect()
}

/// A path in the container, cleaned (validation refused those that leave the root).
fn inside(file: &Path, field: &str, path: &str) -> Result<String, RuntimeError> {
    kiln_spec::container_path(path).map_err(|m| refuse(file, field, path, &m))
}

fn devices(spec: &Spec, file: &Path) -> Result<Vec<Device>, RuntimeError> {
    let mut out = Vec::new();
    for (i, d) in spec.linux.devices.iter().enumerate() {
        let number = |n: i64, what: &str| {
            u64::try_from(n).map_err(|_| {
                refuse(
                    file,
                    &format!("linux.devices[{i}].{what}"),
                    &n.to_string(),
                    "is negative",
                )
            })
        };
        out.push(Device {
            path: inside(file, &format!("linux.devices[{i}].path"), &d.path)?,
            kind: d.kind.letter(),
            major: number(d.major, "major")?,
            minor: number(d.minor, "minor")?,
            mode: d.file_mode.unwrap_or(0o666),
            uid: d.uid.unwrap_or(0),
            gid: d.gid.unwrap_or(0),
        });
    }
    Ok(out)
}

/// The cgroup: `cgroupsPath`, or `kiln/NAME` when only resources are given.
fn cgroup(spec: &Spec, name: &str, file: &Path) -> Result<Option<Cgroup>, RuntimeError> {
    let linux = &spec.linux;
    let path = if linux.cgroups_path.is_empty() {
        None
    } else {
        Some(inside(file, "linux.cgroupsPath", &linux.cgroups_path)?)
    };
    let mut cg = Cgroup::new(path.as_deref().unwrap_or(&format!("kiln/{name}")));
    if let Some(resources) = &linux.resources {
        cg.add_resources(resources);
    }
    Ok((path.is_some() || !cg.settings.is_empty()).then_some(cg))
}

fn namespaces(spec: &Spec, file: &Path) -> Result<Vec<Namespace>, RuntimeError> {
    let mut out = Vec::new();
    for (i, ns) in spec.linux.namespaces.iter().enumerate() {
        let kind = match ns.kind {
            NamespaceType::Pid => NsKind::Pid,
            NamespaceType::Network => NsKind::Net,
            NamespaceType::Mount => NsKind::Mount,
            NamespaceType::Ipc => NsKind::Ipc,
            NamespaceType::Uts => NsKind::Uts,
            NamespaceType::Cgroup => NsKind::Cgroup,
            NamespaceType::User | NamespaceType::Time => {
                return Err(refuse(
                    file,
                    &format!("linux.namespaces[{i}].type"),
                    ns.kind.name(),
                    "is not supported by kiln",
                ));
            }
        };
        let path = (!ns.path.is_empty()).then(|| PathBuf::from(&ns.path));
        out.push(Namespace { kind, path });
    }
    Ok(out)
}

/// Config mounts; a bind's relative source is relative to the bundle (as the OCI spec says),
/// and a bind whose source resolves into the host's /proc (through a symlink, say) is refused.
fn mounts(spec: &Spec, bundle: &Path, file: &Path) -> Result<Vec<Mount>, RuntimeError> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let mut source = m.source.clone();
        if m.is_bind() {
            if !source.is_empty() && !source.starts_with('/') {
                source = bundle.join(&source).to_string_lossy().into_owned();
            }
            if let Ok(real) = fs::canonicalize(&source)
                && real.starts_with("/proc")
            {
                return Err(refuse(
                    file,
                    &format!("mounts[{i}].source"),
                    &m.source,
                    &format!(
                        "resolves to {}: binding the host's /proc into the container is refused \
                         (mount a new proc file system instead)",
                        real.display()
                    ),
                ));
            }
        }
        out.push(Mount::Oci {
            source,
            target: inside(file, &format!("mounts[{i}].destination"), &m.destination)?,
            fstype: m.kind.clone(),
            options: m.options.clone(),
        });
    }
    Ok(out)
}

/// A sysctl is written into the namespace of its kind; when that namespace is joined by path,
/// the path must not be this process's own (the host's) namespace.
fn check_sysctl_namespaces(spec: &Spec, file: &Path) -> Result<(), RuntimeError> {
    for (key, value) in &spec.linux.sysctl {
        let Some(kind) = kiln_spec::sysctl_namespace(key) else {
            continue;
        };
        let Some(ns) = spec.namespace(kind).filter(|ns| !ns.path.is_empty()) else {
            continue;
        };
        let proc_name = match kind {
            NamespaceType::Network => "net",
            NamespaceType::Ipc => "ipc",
            NamespaceType::Uts => "uts",
            _ => continue,
        };
        // A path that cannot be opened is reported when the runtime joins it.
        let (Ok(joined), Ok(own)) = (
            fs::metadata(&ns.path),
            fs::metadata(format!("/proc/self/ns/{proc_name}")),
        ) else {
            continue;
        };
        if joined.dev() == own.dev() && joined.ino() == own.ino() {
            return Err(refuse(
                file,
                &format!("linux.sysctl.{key}"),
                value,
                &format!(
                    "the {} namespace joined at {} is the host's own: setting it would change \
                     the host's value",
                    kind.name(),
                    ns.path
                ),
            ));
        }
    }
    Ok(())
}

/// The container a bundle's config.json describes.
pub fn load(bundle: &Path) -> Result<Container, RuntimeError> {
    let spec = kiln_spec::load_config(bundle)?;
    let file = bundle.join(CONFIG_FILE);
    check_sysctl_namespaces(&spec, &file)?;
    let process = &spec.process;
    let mut container = Container::new(bundle.join(&spec.root.path), process.args.clone());
    container.readonly_root = spec.root.readonly;
    container.env = process.env.clone();
    container.cwd = process.cwd.clone();
    container.uid = process.user.uid;
    container.gid = process.user.gid;
    container.additional_gids = process.user.additional_gids.clone();
    if !spec.hostname.is_empty() {
        container.hostname = spec.hostname.clone();
    }
    container.standard_mounts = false;
    container.capabilities = Some(capabilities(&spec).map_err(|e| located(&file, e))?);
    container.rlimits = rlimits(&spec).map_err(|e| located(&file, e))?;
    container.no_new_privileges = process.no_new_privileges;
    container.seccomp = spec
        .linux
        .seccomp
        .as_ref()
        .map(|s| crate::seccomp::compile(s).map(std::sync::Arc::new))
        .transpose()
        .map_err(|e| RuntimeError::Config(format!("{}: {e}", file.display())))?;
    container.oom_score_adj = process.oom_score_adj;
    let linux = &spec.linux;
    container.sysctls = linux
        .sysctl
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    container.masked_paths = linux
        .masked_paths
        .iter()
        .enumerate()
        .map(|(i, p)| inside(&file, &format!("linux.maskedPaths[{i}]"), p))
        .collect::<Result<_, _>>()?;
    container.readonly_paths = linux
        .readonly_paths
        .iter()
        .enumerate()
        .map(|(i, p)| inside(&file, &format!("linux.readonlyPaths[{i}]"), p))
        .collect::<Result<_, _>>()?;
    container.devices = devices(&spec, &file)?;
    container.rootfs_propagation =
        (!linux.rootfs_propagation.is_empty()).then(|| linux.rootfs_propagation.clone());
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    container.cgroup = cgroup(&spec, &name, &file)?;
    container.namespaces = Some(namespaces(&spec, &file)?);
    container.mounts = mounts(&spec, bundle, &file)?;
    Ok(container)
}

fn located(file: &Path, e: RuntimeError) -> RuntimeError {
    RuntimeError::Config(format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Value {
        json!({
            "ociVersion": "1.2.1",
            "process": {
                "user": {"uid": 1000, "gid": 1000},
                "args": ["/bin/true"],
                "cwd": "/"
            },
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/data", "type": "bind", "source": "data",
                        "options": ["rbind"]}],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}],
                "devices": [{"path": "/dev/./fuse", "type": "c", "major": 10, "minor": 229}],
                "maskedPaths": ["/proc//kcore"]
            }
        })
    }

    fn bundle(config: &Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
        dir
    }

    fn error(config: &Value) -> String {
        let dir = bundle(config);
        match load(dir.path()) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_typed_config_becomes_a_container() {
        let dir = bundle(&config());
        let c = load(dir.path()).expect("load");
        assert_eq!((c.uid, c.gid), (1000, 1000));
        // Absent capabilities: none at all, not root's.
        assert_eq!(c.capabilities, Some(Capabilities::default()));
        assert_eq!(c.devices[0].path, "/dev/fuse");
        assert_eq!((c.devices[0].mode, c.devices[0].kind), (0o666, 'c'));
        assert_eq!(c.masked_paths, ["/proc/kcore"]);
        assert_eq!(c.rootfs, dir.path().join("rootfs"));
        let Mount::Oci { source, target, .. } = &c.mounts[0] else {
            panic!("{:?}", c.mounts[0]);
        };
        assert_eq!(Path::new(source), dir.path().join("data"));
        assert_eq!(target, "/data");
        assert_eq!(c.namespaces.as_ref().map(Vec::len), Some(3));
    }

    #[test]
    fn a_uid_of_the_wrong_type_is_refused_with_the_file_and_field() {
        for bad in [json!("0"), json!(-1), json!(4_294_967_296_u64)] {
            let mut v = config();
            v["process"]["user"]["uid"] = bad.clone();
            let msg = error(&v);
            assert!(
                msg.contains("config.json")
                    && msg.contains("process.user.uid")
                    && msg.contains(&bad.to_string()),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_bind_that_resolves_into_proc_is_refused() {
        // The bind's source is `data`, relative to the bundle.
        let dir = bundle(&config());
        std::os::unix::fs::symlink("/proc/self", dir.path().join("data")).expect("symlink");
        let msg = load(dir.path())
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("mounts[0].source") && msg.contains("/proc"),
            "{msg}"
        );
    }

    #[test]
    fn a_sysctl_in_the_hosts_own_namespace_is_refused() {
        let mut v = config();
        v["linux"]["namespaces"][2]["path"] = json!("/proc/self/ns/net");
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        let msg = error(&v);
        assert!(
            msg.contains("linux.sysctl.net.ipv4.ip_forward") && msg.contains("host's own"),
            "{msg}"
        );
        v["linux"]["sysctl"] = json!({"vm.overcommit_ratio": "51"});
        let msg = error(&v);
        assert!(msg.contains("linux.sysctl.vm.overcommit_ratio"), "{msg}");
    }

    #[test]
    fn runtime_json_is_read_strictly() {
        let dir = bundle(&config());
        assert!(host_setup(dir.path()).expect("none").is_empty());
        let rt = json!({
            "interfaces": [{"name": "eth1", "add": "veth", "peer": "h1", "createInRoot": false}],
            "bindNS": {"net": "/run/netns/x"}
        });
        fs::write(dir.path().join("runtime.json"), rt.to_string()).expect("write");
        let h = host_setup(dir.path()).expect("setup");
        assert_eq!(h.interfaces[0].peer, "h1");
        assert_eq!(h.bind_ns, [("net", PathBuf::from("/run/netns/x"))]);
        fs::write(dir.path().join("runtime.json"), r#"{"mkdir": "/tmp/x"}"#).expect("write");
        let msg = prepare_host(dir.path(), &mut Vec::new())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("runtime.json") && msg.contains("mkdir"),
            "{msg}"
        );
    }
}
