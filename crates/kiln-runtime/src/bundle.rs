//! OCI bundles as `kiln build` writes them under /containers: `config.json` (the OCI runtime
//! spec: process, root, hostname, mounts, namespaces) and LinuxKit's `runtime.json` (mounts and
//! directories the host prepares before the container starts).

use crate::{Container, Mount, Namespace, NsKind, RuntimeError, mount_host};
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

/// The container a bundle's config.json describes.
pub fn load(bundle: &Path) -> Result<Container, RuntimeError> {
    let c = read_json(&bundle.join("config.json"))?;
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
