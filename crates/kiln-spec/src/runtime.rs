//! runtime.json: what LinuxKit's init (and kiln-init) does on the host around a container —
//! host mounts and directories made before it starts (`mounts`, `mkdir`), network interfaces
//! created or moved into it and its namespaces bound to paths once it exists (`interfaces`,
//! `bindNS`) — plus kiln's own extensions for kiln-init (`restart`, `dependsOn`), written only
//! when set so that LinuxKit's files stay byte for byte the same.
//!
//! LinuxKit always writes `cgroups`, `mounts`, `mkdir`, `interfaces`, `bindNS` (every kind,
//! empty when unset) and `namespace`; so does kiln. On reading, absent fields are empty.

use crate::config::Mount;
use crate::de::{described, object, objects, some};
use serde::{Deserialize, Serialize};

/// The whole runtime.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// cgroups LinuxKit's init creates for the container.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Mounts made on the host before the container starts (its root, shared binds).
    #[serde(default, deserialize_with = "objects")]
    pub mounts: Vec<Mount>,
    /// Directories made on the host before the container starts.
    #[serde(default)]
    pub mkdir: Vec<String>,
    /// Network interfaces created or moved into the container's network namespace.
    #[serde(default, deserialize_with = "objects")]
    pub interfaces: Vec<Interface>,
    /// Paths to bind the container's namespaces to, for other containers to join.
    #[serde(default, rename = "bindNS", deserialize_with = "object")]
    pub bind_ns: BindNs,
    /// The containerd namespace LinuxKit runs the service in (kiln ignores it).
    #[serde(default)]
    pub namespace: String,
    /// kiln extension: when kiln-init restarts the service.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub restart: Option<RestartPolicy>,
    /// kiln extension: services started before this one.
    #[serde(
        default,
        rename = "dependsOn",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub depends_on: Option<Vec<String>>,
}

/// A network interface for the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface's name in the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What to create: `veth` (a pair), or empty to move an existing host interface in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub add: String,
    /// The host end of a veth pair.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// Create the interface in the host's namespace first (LinuxKit's flag).
    #[serde(default, rename = "createInRoot")]
    pub create_in_root: bool,
}

/// `bindNS`: for each namespace kind, the host path to bind it to (empty: not bound).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BindNs {
    #[serde(default)]
    pub cgroup: String,
    #[serde(default)]
    pub ipc: String,
    #[serde(default)]
    pub mnt: String,
    #[serde(default)]
    pub net: String,
    #[serde(default)]
    pub pid: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub uts: String,
}

impl BindNs {
    /// The kinds (as /proc/PID/ns names them) and their paths, in the file's order.
    pub fn entries(&self) -> [(&'static str, &str); 7] {
        [
            ("cgroup", &self.cgroup),
            ("ipc", &self.ipc),
            ("mnt", &self.mnt),
            ("net", &self.net),
            ("pid", &self.pid),
            ("user", &self.user),
            ("uts", &self.uts),
        ]
    }

    /// Whether no namespace is to be bound.
    pub fn is_empty(&self) -> bool {
        self.entries().iter().all(|(_, p)| p.is_empty())
    }
}

/// When kiln-init restarts a service that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum RestartPolicy {
    /// Never (LinuxKit's behaviour).
    No,
    /// When it exits with a non-zero status or is killed.
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl TryFrom<String> for RestartPolicy {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "no" => Ok(RestartPolicy::No),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err("unknown restart policy: expected no, on-failure or always".into()),
        }
    }
}

described! {
    Runtime => "a LinuxKit runtime configuration (a JSON object)",
    Interface => "an interface object (name, add, peer, createInRoot)",
    BindNs => "an object of namespace kinds (cgroup, ipc, mnt, net, pid, user, uts) and paths",
}
