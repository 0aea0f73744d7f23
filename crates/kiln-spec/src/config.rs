//! config.json: the OCI runtime configuration (runtime-spec 1.2), the subset kiln writes and
//! runs. Field names and their order follow the runtime-spec Go structs (`specs-go`), and Go's
//! `omitempty` is `skip_serializing_if`, so that what kiln writes is byte for byte what LinuxKit
//! writes. Unknown fields are ignored on reading (as runc does); a known field of the wrong type,
//! or `null`, is an error.

use crate::de::{described, object, objects, some, some_object};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn is_false(b: &bool) -> bool {
    !*b
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The runtime-spec version the file follows.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container's process.
    #[serde(deserialize_with = "object")]
    pub process: Process,
    /// The root file system.
    #[serde(deserialize_with = "object")]
    pub root: Root,
    /// The container's host name (set when it has its own UTS namespace).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Mounts made in the container, in order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub mounts: Vec<Mount>,
    /// Arbitrary metadata (Go sorts map keys: a `BTreeMap` writes them in the same order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Linux-specific configuration.
    #[serde(deserialize_with = "object")]
    pub linux: Linux,
}

/// The container's process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// The user it runs as.
    #[serde(deserialize_with = "object")]
    pub user: User,
    /// The command and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The environment, as `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The working directory (absolute, in the container).
    pub cwd: String,
    /// Capability sets. Absent means no capabilities at all (as runc), never root's.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub capabilities: Option<Capabilities>,
    /// Resource limits.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub rlimits: Vec<Rlimit>,
    /// Set `no_new_privs`.
    #[serde(default, rename = "noNewPrivileges", skip_serializing_if = "is_false")]
    pub no_new_privileges: bool,
    /// An AppArmor profile to confine the process with (kiln applies none: refused).
    #[serde(
        default,
        rename = "apparmorProfile",
        skip_serializing_if = "String::is_empty"
    )]
    pub apparmor_profile: String,
    /// The OOM killer's score adjustment (-1000..=1000).
    #[serde(
        default,
        rename = "oomScoreAdj",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub oom_score_adj: Option<i32>,
    /// An SELinux label to confine the process with (kiln applies none: refused).
    #[serde(
        default,
        rename = "selinuxLabel",
        skip_serializing_if = "String::is_empty"
    )]
    pub selinux_label: String,
}

/// The user a process runs as: numeric ids only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The file mode creation mask.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub umask: Option<u32>,
    /// Supplementary groups.
    #[serde(
        default,
        rename = "additionalGids",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub additional_gids: Vec<u32>,
}

/// The five capability sets, by name (`CAP_NET_ADMIN`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Every capability the process can ever gain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounding: Vec<String>,
    /// Effective.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effective: Vec<String>,
    /// Inheritable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inheritable: Vec<String>,
    /// Permitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permitted: Vec<String>,
    /// Ambient (kept across exec by non-root users).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ambient: Vec<String>,
}

impl Capabilities {
    /// The sets with their names, in the file's order.
    pub fn sets(&self) -> [(&'static str, &[String]); 5] {
        [
            ("bounding", &self.bounding),
            ("effective", &self.effective),
            ("inheritable", &self.inheritable),
            ("permitted", &self.permitted),
            ("ambient", &self.ambient),
        ]
    }
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource: `RLIMIT_NOFILE`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Hard limit.
    pub hard: u64,
    /// Soft limit.
    pub soft: u64,
}

/// The root file system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// The root's directory, relative to the bundle or absolute.
    pub path: String,
    /// Make the root read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub readonly: bool,
}

/// A mount (config.json's `mounts`, and runtime.json's host mounts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Where it is mounted (in the container for config.json, on the host for runtime.json).
    pub destination: String,
    /// File system type (`bind` for binds).
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The device, a host path for binds, or a name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Mount options: flags (`ro`, `rbind`, ...) and data (`mode=755`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Id-mapped mount: user ids (kiln does not support them).
    #[serde(
        default,
        rename = "uidMappings",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub uid_mappings: Vec<IdMapping>,
    /// Id-mapped mount: group ids (kiln does not support them).
    #[serde(
        default,
        rename = "gidMappings",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub gid_mappings: Vec<IdMapping>,
}

impl Mount {
    /// Whether this is a bind mount (type `bind`, or a `bind`/`rbind` option).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind" || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
}

/// A user or group id mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// First id inside.
    #[serde(rename = "containerID")]
    pub container_id: u32,
    /// First id outside.
    #[serde(rename = "hostID")]
    pub host_id: u32,
    /// How many ids.
    pub size: u32,
}

/// Linux-specific configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Linux {
    /// User id mappings of a user namespace (kiln does not support user namespaces).
    #[serde(
        default,
        rename = "uidMappings",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub uid_mappings: Vec<IdMapping>,
    /// Group id mappings of a user namespace.
    #[serde(
        default,
        rename = "gidMappings",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub gid_mappings: Vec<IdMapping>,
    /// Kernel parameters set in the container's namespaces (`net.ipv4.ip_forward` = `1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    /// cgroup limits.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub resources: Option<Resources>,
    /// The cgroup, relative to the cgroup root.
    #[serde(
        default,
        rename = "cgroupsPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub cgroups_path: String,
    /// Namespaces to create or join.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub namespaces: Vec<Namespace>,
    /// Device nodes to create in the container.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub devices: Vec<Device>,
    /// A seccomp filter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub seccomp: Option<Seccomp>,
    /// Propagation of the root mount (`shared`, `rslave`, ...).
    #[serde(
        default,
        rename = "rootfsPropagation",
        skip_serializing_if = "String::is_empty"
    )]
    pub rootfs_propagation: String,
    /// Paths hidden from the container.
    #[serde(default, rename = "maskedPaths", skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    #[serde(
        default,
        rename = "readonlyPaths",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub readonly_paths: Vec<String>,
}

/// A namespace kind, as config.json names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum NamespaceType {
    /// Process ids.
    Pid,
    /// Network.
    Network,
    /// Mounts.
    Mount,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Host and domain name.
    Uts,
    /// User and group ids (not supported by kiln).
    User,
    /// Control groups.
    Cgroup,
    /// Clocks (not supported by kiln).
    Time,
}

impl NamespaceType {
    /// Every kind.
    pub const ALL: [NamespaceType; 8] = [
        NamespaceType::Pid,
        NamespaceType::Network,
        NamespaceType::Mount,
        NamespaceType::Ipc,
        NamespaceType::Uts,
        NamespaceType::User,
        NamespaceType::Cgroup,
        NamespaceType::Time,
    ];

    /// The name used in config.json.
    pub fn name(self) -> &'static str {
        match self {
            NamespaceType::Pid => "pid",
            NamespaceType::Network => "network",
            NamespaceType::Mount => "mount",
            NamespaceType::Ipc => "ipc",
            NamespaceType::Uts => "uts",
            NamespaceType::User => "user",
            NamespaceType::Cgroup => "cgroup",
            NamespaceType::Time => "time",
        }
    }
}

impl TryFrom<String> for NamespaceType {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        NamespaceType::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                "unknown namespace type: expected one of pid, network, mount, ipc, uts, user, \
                 cgroup, time"
                    .to_string()
            })
    }
}

/// A namespace to create (no path) or join (the path of an existing one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Which kind.
    #[serde(rename = "type")]
    pub kind: NamespaceType,
    /// Join the namespace at this path instead of creating one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

/// A device node's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum DeviceType {
    /// Character device.
    #[serde(rename = "c")]
    Char,
    /// Character device, unbuffered.
    #[serde(rename = "u")]
    Unbuffered,
    /// Block device.
    #[serde(rename = "b")]
    Block,
    /// FIFO.
    #[serde(rename = "p")]
    Fifo,
}

impl DeviceType {
    /// The letter used in config.json.
    pub fn letter(self) -> char {
        match self {
            DeviceType::Char => 'c',
            DeviceType::Unbuffered => 'u',
            DeviceType::Block => 'b',
            DeviceType::Fifo => 'p',
        }
    }
}

impl TryFrom<String> for DeviceType {
    type Error = String;

    fn try_from(letter: String) -> Result<Self, String> {
        match letter.as_str() {
            "c" => Ok(DeviceType::Char),
            "u" => Ok(DeviceType::Unbuffered),
            "b" => Ok(DeviceType::Block),
            "p" => Ok(DeviceType::Fifo),
            _ => Err("unknown device type: expected c, u, b or p".into()),
        }
    }
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its path in the container (`/dev/fuse`).
    pub path: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: DeviceType,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits (default 0666).
    #[serde(
        default,
        rename = "fileMode",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub file_mode: Option<u32>,
    /// Owner (default 0).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub uid: Option<u32>,
    /// Group (default 0).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub gid: Option<u32>,
}

/// cgroup limits (`linux.resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Device access rules.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub devices: Vec<DeviceCgroup>,
    /// Memory limits.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub memory: Option<Memory>,
    /// CPU limits.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub cpu: Option<Cpu>,
    /// Process-count limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub pids: Option<Pids>,
    /// Block I/O weights and throttles.
    #[serde(
        default,
        rename = "blockIO",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub block_io: Option<BlockIo>,
    /// Hugepage limits.
    #[serde(
        default,
        rename = "hugepageLimits",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub hugepage_limits: Vec<HugepageLimit>,
    /// Network class and priorities.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_object"
    )]
    pub network: Option<Network>,
    /// cgroup v2 interface files and their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

/// A device cgroup rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCgroup {
    /// Allow or deny.
    pub allow: bool,
    /// `c`, `b` or `a`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Major number (absent: all).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub major: Option<i64>,
    /// Minor number (absent: all).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub minor: Option<i64>,
    /// `r`, `w`, `m` or a combination.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub access: String,
}

/// Memory limits, in bytes (-1: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Memory {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub limit: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub reservation: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub swap: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub kernel: Option<i64>,
    #[serde(
        default,
        rename = "kernelTCP",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub kernel_tcp: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub swappiness: Option<u64>,
    #[serde(
        default,
        rename = "disableOOMKiller",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub disable_oom_killer: Option<bool>,
    #[serde(
        default,
        rename = "useHierarchy",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub use_hierarchy: Option<bool>,
    #[serde(
        default,
        rename = "checkBeforeUpdate",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub check_before_update: Option<bool>,
}

/// CPU limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Cpu {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub shares: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub quota: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub burst: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub period: Option<u64>,
    #[serde(
        default,
        rename = "realtimeRuntime",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub realtime_runtime: Option<i64>,
    #[serde(
        default,
        rename = "realtimePeriod",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub realtime_period: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpus: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mems: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub idle: Option<i64>,
}

/// Process-count limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    /// Maximum number of processes (0 or less: unlimited).
    pub limit: i64,
}

/// Block I/O weights and throttles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct BlockIo {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub weight: Option<u16>,
    #[serde(
        default,
        rename = "leafWeight",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub leaf_weight: Option<u16>,
    #[serde(
        default,
        rename = "weightDevice",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub weight_device: Vec<WeightDevice>,
    #[serde(
        default,
        rename = "throttleReadBpsDevice",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub throttle_read_bps_device: Vec<ThrottleDevice>,
    #[serde(
        default,
        rename = "throttleWriteBpsDevice",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub throttle_write_bps_device: Vec<ThrottleDevice>,
    #[serde(
        default,
        rename = "throttleReadIOPSDevice",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub throttle_read_iops_device: Vec<ThrottleDevice>,
    #[serde(
        default,
        rename = "throttleWriteIOPSDevice",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub throttle_write_iops_device: Vec<ThrottleDevice>,
}

/// A per-device block I/O weight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub weight: Option<u16>,
    #[serde(
        default,
        rename = "leafWeight",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub leaf_weight: Option<u16>,
}

/// A per-device block I/O throttle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ThrottleDevice {
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

/// A hugepage limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct HugepageLimit {
    #[serde(rename = "pageSize")]
    pub page_size: String,
    pub limit: u64,
}

/// Network class and priorities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Network {
    #[serde(
        default,
        rename = "classID",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub class_id: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub priorities: Vec<InterfacePriority>,
}

/// An interface's network priority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct InterfacePriority {
    pub name: String,
    pub priority: u32,
}

/// A seccomp filter (`linux.seccomp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Seccomp {
    #[serde(rename = "defaultAction")]
    pub default_action: String,
    #[serde(
        default,
        rename = "defaultErrnoRet",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(
        default,
        rename = "listenerPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub listener_path: String,
    #[serde(
        default,
        rename = "listenerMetadata",
        skip_serializing_if = "String::is_empty"
    )]
    pub listener_metadata: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub syscalls: Vec<Syscall>,
}

/// One seccomp rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Syscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(
        default,
        rename = "errnoRet",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some"
    )]
    pub errno_ret: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "objects"
    )]
    pub args: Vec<SeccompArg>,
}

/// A condition on a system call argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default, rename = "valueTwo", skip_serializing_if = "is_zero")]
    pub value_two: u64,
    pub op: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Spec {
    /// The capability sets the process gets: absent capabilities are none at all.
    pub fn capabilities(&self) -> Capabilities {
        self.process.capabilities.clone().unwrap_or_default()
    }

    /// The namespace entry of this kind, if the config asks for one.
    pub fn namespace(&self, kind: NamespaceType) -> Option<&Namespace> {
        self.linux.namespaces.iter().find(|n| n.kind == kind)
    }
}

described! {
    Spec => "an OCI runtime configuration (a JSON object)",
    Process => "an object describing the process (user, args, env, cwd, ...)",
    User => "an object with a numeric uid and gid",
    Capabilities => "an object with the capability sets bounding, effective, inheritable, permitted and ambient (lists of names like CAP_CHOWN)",
    Rlimit => "an object with type (RLIMIT_...), hard and soft",
    Root => "an object with the root's path",
    Mount => "a mount object (destination, type, source, options)",
    IdMapping => "an object with containerID, hostID and size",
    Linux => "an object with the Linux configuration (namespaces, devices, ...)",
    Namespace => "an object with a namespace type and an optional path",
    Device => "a device object (path, type, major, minor, fileMode, uid, gid)",
    Resources => "an object of cgroup limits (devices, memory, cpu, pids, ...)",
    DeviceCgroup => "a device rule object (allow, type, major, minor, access)",
    Memory => "an object of memory limits",
    Cpu => "an object of CPU limits",
    Pids => "an object with the pids limit",
    BlockIo => "an object of block I/O weights and throttles",
    WeightDevice => "an object with major, minor and weight",
    ThrottleDevice => "an object with major, minor and rate",
    HugepageLimit => "an object with pageSize and limit",
    Network => "an object with classID and priorities",
    InterfacePriority => "an object with name and priority",
    Seccomp => "a seccomp object (defaultAction, architectures, syscalls, ...)",
    Syscall => "a seccomp rule object (names, action, args)",
    SeccompArg => "a seccomp argument object (index, value, valueTwo, op)",
}
