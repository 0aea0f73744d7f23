//! OCI bundles as `kiln build` writes them under /containers: `config.json` (the OCI runtime
//! spec: process, root, hostname, mounts, namespaces) and LinuxKit's `runtime.json` (mounts and
//! directories the host prepares before the container starts).

use crate::security::{self, Capabilities, Rlimit};
use crate::{
    Cgroup, Container, Device, Interface, Mount, Namespace, NsKind, RuntimeError, mount_host,
};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn read_json(path: &Path) -> Result<Value, RuntimeError> {
    let text = fs::read_to_string(path).map_err(|source| RuntimeError::Prepare {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| RuntimeError::Prepare {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn uint(v: &Value) -> u32 {
    v.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// Carry out a bundle's runtime.json on the host: its mounts (the writable root's tmpfs and
/// overlay, binds the container shares) and its directories.
pub fn prepare_host(bundle: &Path) -> Result<(), RuntimeError> {
    let path = bundle.join("runtime.json");
    if !path.exists() {
        return Ok(());
    }
    let rt = read_json(&path)?;
    for dir in strings(&rt["mkdir"]) {
        fs::create_dir_all(&dir).map_err(|source| RuntimeError::Prepare {
            path: dir.into(),
            source,
        })?;
    }
    for m in rt["mounts"].as_array().into_iter().flatten() {
        let dest = m["destination"].as_str().unwrap_or_default();
        mount_host(
            m["source"].as_str().unwrap_or_default(),
            Path::new(dest),
            m["type"].as_str().unwrap_or_default(),
            &strings(&m["options"]),
        )?;
    }
    Ok(())
}

/// What runtime.json asks of the host between creating the container's namespaces and
/// starting it.
#[derive(Debug, Default)]
pub struct HostSetup {
    /// Interfaces to create or move into its network namespace.
    pub interfaces: Vec<Interface>,
    /// `bindNS`: namespace kind to the path to bind it to.
    pub bind_ns: Value,
}

impl HostSetup {
    /// Whether anything is to be done (otherwise the container need not wait for it).
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty()
            && self
                .bind_ns
                .as_object()
                .is_none_or(|m| m.values().all(|v| v.as_str().is_none_or(str::is_empty)))
    }

    /// Carry it out for the container whose (first) process is `pid`.
    pub fn apply(&self, pid: u32) -> Result<(), RuntimeError> {
        crate::setup_interfaces(pid, &self.interfaces)?;
        crate::bind_namespaces(pid, &self.bind_ns)
    }
}

/// The interfaces and namespace bindings of a bundle's runtime.json.
pub fn host_setup(bundle: &Path) -> Result<HostSetup, RuntimeError> {
    let path = bundle.join("runtime.json");
    if !path.exists() {
        return Ok(HostSetup::default());
    }
    let rt = read_json(&path)?;
    let located = |e: RuntimeError| RuntimeError::Config(format!("{}: {e}", path.display()));
    Ok(HostSetup {
        interfaces: Interface::from_json(&rt["interfaces"]).map_err(located)?,
        bind_ns: rt["bindNS"].clone(),
    })
}

fn capabilities(c: &Value) -> Result<Option<Capabilities>, RuntimeError> {
    if !c.is_object() {
        return Ok(None);
    }
    let mask = |key: &str| security::capability_mask(&strings(&c[key]));
    Ok(Some(Capabilities {
        bounding: mask("bounding")?,
        effective: mask("effective")?,
        permitted: mask("permitted")?,
        inheritable: mask("inheritable")?,
        ambient: mask("ambient")?,
    }))
}

fn rlimits(v: &Value) -> Result<Vec<Rlimit>, RuntimeError> {
    let mut out = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        out.push(Rlimit {
            resource: security::rlimit_resource(r["type"].as_str().unwrap_or_default())?,
            soft: r["soft"].as_u64().unwrap_or(0),
            hard: r["hard"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

fn devices(v: &Value) -> Vec<Device> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|d| Device {
            path: d["path"].as_str().unwrap_or_default().to_string(),
            kind: d["type"]
                .as_str()
                .and_then(|t| t.chars().next())
                .unwrap_or('c'),
            major: d["major"].as_u64().unwrap_or(0),
            minor: d["minor"].as_u64().unwrap_or(0),
            mode: d["fileMode"]
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(0o666),
            uid: uint(&d["uid"]),
            gid: uint(&d["gid"]),
        })
        .collect()
}

/// The cgroup: `cgroupsPath`, or `kiln/NAME` when only resources are given.
fn cgroup(linux: &Value, name: &str) -> Option<Cgroup> {
    let resources = &linux["resources"];
    let path = linux["cgroupsPath"].as_str().filter(|p| !p.is_empty());
    let mut cg = Cgroup::new(path.unwrap_or(&format!("kiln/{name}")));
    cg.add_resources(resources);
    (path.is_some() || !cg.settings.is_empty()).then_some(cg)
}

/// The container a bundle's config.json describes.
pub fn load(bundle: &Path) -> Result<Container, RuntimeError> {
    let config_path = bundle.join("config.json");
    let c = read_json(&config_path)?;
    let located = |e: RuntimeError| RuntimeError::Config(format!("{}: {e}", config_path.display()));
    let root = c["root"]["path"].as_str().unwrap_or("rootfs");
    let mut container = Container::new(bundle.join(root), strings(&c["process"]["args"]));
    container.readonly_root = c["root"]["readonly"].as_bool().unwrap_or(false);
    container.env = strings(&c["process"]["env"]);
    container.cwd = c["process"]["cwd"].as_str().unwrap_or("/").to_string();
    let user = &c["process"]["user"];
    container.uid = uint(&user["uid"]);
    container.gid = uint(&user["gid"]);
    container.additional_gids = user["additionalGids"]
        .as_array()
        .map(|a| a.iter().map(uint).collect())
        .unwrap_or_default();
    if let Some(h) = c["hostname"].as_str() {
        container.hostname = h.to_string();
    }
    container.standard_mounts = false;
    let process = &c["process"];
    container.capabilities = capabilities(&process["capabilities"]).map_err(located)?;
    container.rlimits = rlimits(&process["rlimits"]).map_err(located)?;
    container.no_new_privileges = process["noNewPrivileges"].as_bool().unwrap_or(false);
    container.oom_score_adj = process["oomScoreAdj"]
        .as_i64()
        .and_then(|v| i32::try_from(v).ok());
    let linux = &c["linux"];
    container.sysctls = linux["sysctl"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    container.masked_paths = strings(&linux["maskedPaths"]);
    container.readonly_paths = strings(&linux["readonlyPaths"]);
    container.devices = devices(&linux["devices"]);
    container.rootfs_propagation = linux["rootfsPropagation"].as_str().map(str::to_string);
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    container.cgroup = cgroup(linux, &name);
    let mut namespaces = Vec::new();
    for ns in c["linux"]["namespaces"].as_array().into_iter().flatten() {
        let kind = match ns["type"].as_str().unwrap_or_default() {
            "pid" => NsKind::Pid,
            "network" => NsKind::Net,
            "mount" => NsKind::Mount,
            "ipc" => NsKind::Ipc,
            "uts" => NsKind::Uts,
            "cgroup" => NsKind::Cgroup,
            _ => continue,
        };
        let path = ns["path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(Into::into);
        namespaces.push(Namespace { kind, path });
    }
    container.namespaces = Some(namespaces);
    for m in c["mounts"].as_array().into_iter().flatten() {
        container.mounts.push(Mount::Oci {
            source: m["source"].as_str().unwrap_or_default().to_string(),
            target: m["destination"].as_str().unwrap_or_default().to_string(),
            fstype: m["type"].as_str().unwrap_or_default().to_string(),
            options: strings(&m["options"]),
        });
    }
    Ok(container)
}
