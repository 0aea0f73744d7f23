//! The manifest schema: LinuxKit's YAML format, field for field.
//!
//! Every optional field is an `Option` so that "absent" and "present but empty" stay distinct:
//! LinuxKit merges image labels with the YAML by presence, not by value. Field order is the order
//! LinuxKit prints them in `--dry-run`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// A whole manifest (one file, or several merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The kernel image and its command line.
    #[serde(default, skip_serializing_if = "Kernel::is_empty")]
    pub kernel: Kernel,
    /// Images merged at `/` to make the base system.
    #[serde(default)]
    pub init: Vec<String>,
    /// Containers run once, in order, at boot.
    #[serde(default)]
    pub onboot: Vec<Image>,
    /// Containers run once, in order, at shutdown.
    #[serde(default)]
    pub onshutdown: Vec<Image>,
    /// Containers run for the life of the system.
    #[serde(default)]
    pub services: Vec<Image>,
    /// Files and directories added to the root filesystem.
    #[serde(default)]
    pub files: Vec<File>,
    /// Named volumes that containers can bind.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Images that must be signed, and by which keys (see [`Trust`]). Merged, the lists of
    /// every file's section, in order.
    #[serde(default, skip_serializing)]
    pub trust: Option<Trust>,
}

impl Manifest {
    /// The containers of `section` (`onboot`, `onshutdown` or `services`; anything else is
    /// `services`).
    pub fn containers(&self, section: &str) -> &[Image] {
        match section {
            "onboot" => &self.onboot,
            "onshutdown" => &self.onshutdown,
            _ => &self.services,
        }
    }
}

/// `kernel:`: which image holds the kernel and how to boot it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// The kernel image reference.
    #[serde(default)]
    pub image: String,
    /// The kernel command line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmdline: String,
    /// The kernel file name in the image (default `kernel`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binary: String,
    /// The modules tarball name in the image (default `kernel.tar`, `none` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar: Option<String>,
    /// A CPU microcode cpio archive in the image, prepended to the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ucode: Option<String>,
}

impl Kernel {
    /// True when no kernel field is set.
    pub fn is_empty(&self) -> bool {
        *self == Kernel::default()
    }
}

/// `trust:`: images that must be signed. LinuxKit's `image` and `org` lists (which LinuxKit
/// once checked with Docker Content Trust and later ignored), and kiln's `keys`: the public keys
/// (cosign PEM files, paths relative to the manifest file) their signatures must verify with.
/// Each file's section is kept on its own ([`crate::ManifestSet::trust_sections`]); `kiln-trust`
/// turns them into policy rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Images (repositories, or images by tag or digest) whose images must be signed.
    #[serde(default)]
    pub image: Option<Vec<String>>,
    /// Organisations (Docker Hub namespaces, or `registry/namespace`, or whole registries)
    /// whose images must be signed.
    #[serde(default)]
    pub org: Option<Vec<String>>,
    /// A kiln extension: public key files, relative to the manifest file, one of which must
    /// have signed each image `image` and `org` cover. Without it, the policy file's rule for
    /// the image must be `signedBy`.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
}

impl Trust {
    /// True when the section names no image and no organisation.
    pub fn is_empty(&self) -> bool {
        self.image.as_ref().is_none_or(Vec::is_empty) && self.org.as_ref().is_none_or(Vec::is_empty)
    }
}

/// A uid or gid: a number, or the name of a container of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// A numeric id.
    Num(i64),
    /// A container name (or `root`) resolved to the id kiln allocates it.
    Name(String),
}

/// One container (an onboot, onshutdown or service entry), or the settings an image carries in
/// its `org.mobyproject.config` label (where `name` and `image` must stay empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Image {
    /// The container name: its directory under /containers and its id for named uids.
    #[serde(default)]
    pub name: String,
    /// The image reference.
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    #[serde(
        default,
        rename = "capabilities.add",
        skip_serializing_if = "Option::is_none"
    )]
    pub capabilities_add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambient: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binds: Option<Vec<String>>,
    #[serde(default, rename = "binds.add", skip_serializing_if = "Option::is_none")]
    pub binds_add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Device>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    #[serde(
        default,
        rename = "maskedPaths",
        skip_serializing_if = "Option::is_none"
    )]
    pub masked_paths: Option<Vec<String>>,
    #[serde(
        default,
        rename = "readonlyPaths",
        skip_serializing_if = "Option::is_none"
    )]
    pub readonly_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Id>,
    #[serde(
        default,
        rename = "additionalGids",
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_gids: Option<Vec<Id>>,
    #[serde(
        default,
        rename = "noNewPrivileges",
        skip_serializing_if = "Option::is_none"
    )]
    pub no_new_privileges: Option<bool>,
    #[serde(
        default,
        rename = "oomScoreAdj",
        skip_serializing_if = "Option::is_none"
    )]
    pub oom_score_adj: Option<i64>,
    #[serde(
        default,
        rename = "rootfsPropagation",
        skip_serializing_if = "Option::is_none"
    )]
    pub rootfs_propagation: Option<String>,
    #[serde(
        default,
        rename = "cgroupsPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub cgroups_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<IndexMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimits: Option<Vec<String>>,
    #[serde(
        default,
        rename = "uidMappings",
        skip_serializing_if = "Option::is_none"
    )]
    pub uid_mappings: Option<Vec<IdMapping>>,
    #[serde(
        default,
        rename = "gidMappings",
        skip_serializing_if = "Option::is_none"
    )]
    pub gid_mappings: Option<Vec<IdMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<IndexMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// kiln extension: restart policy of a service, `no` (the default, as in LinuxKit),
    /// `on-failure` or `always`; kiln-init restarts with a growing delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// kiln extension: services this one starts after.
    #[serde(default, rename = "dependsOn", skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// kiln extension: the seccomp filter of the container, `docker-default` (Docker's default
    /// profile, resolved for the container's capabilities and the target architecture) or
    /// `unconfined` (none, the default, as in LinuxKit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompProfile>,
}

/// The seccomp filter a container asks for (`seccomp:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeccompProfile {
    /// Docker's default profile, as `docker run` applies it.
    DockerDefault,
    /// No filter (LinuxKit's behaviour).
    Unconfined,
}

/// When kiln-init restarts a service that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never (LinuxKit's behaviour).
    No,
    /// When it exits with a non-zero status or is killed.
    OnFailure,
    /// Whenever it exits.
    Always,
}

/// An OCI mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Where it is mounted in the container.
    #[serde(default)]
    pub destination: String,
    /// The file system type (`bind`, `tmpfs`, ...).
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The source (a path for binds).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Mount options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
}

/// A device node created in the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Path in the container, or `all` to allow a whole class.
    pub path: String,
    /// `c`, `b`, `u` or `p`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Major number.
    #[serde(default)]
    pub major: i64,
    /// Minor number.
    #[serde(default)]
    pub minor: i64,
    /// Octal file mode, e.g. "0666".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A user-namespace id mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdMapping {
    /// First id outside.
    #[serde(rename = "hostID")]
    pub host_id: u32,
    /// First id inside.
    #[serde(rename = "containerID")]
    pub container_id: u32,
    /// How many ids.
    pub size: u32,
}

/// OCI `linux.resources`: cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceCgroup>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Pids>,
    #[serde(
        default,
        rename = "blockIO",
        alias = "blockio",
        skip_serializing_if = "Option::is_none"
    )]
    pub block_io: Option<BlockIo>,
    #[serde(
        default,
        rename = "hugepageLimits",
        alias = "hugepagelimits",
        skip_serializing_if = "Option::is_none"
    )]
    pub hugepage_limits: Option<Vec<HugepageLimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// A device cgroup rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct DeviceCgroup {
    pub allow: bool,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

/// Memory limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Memory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<i64>,
    #[serde(
        default,
        rename = "kernelTCP",
        alias = "kerneltcp",
        skip_serializing_if = "Option::is_none"
    )]
    pub kernel_tcp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u64>,
    #[serde(
        default,
        rename = "disableOOMKiller",
        alias = "disableoomkiller",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_oom_killer: Option<bool>,
}

/// CPU limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    #[serde(
        default,
        rename = "realtimeRuntime",
        alias = "realtimeruntime",
        skip_serializing_if = "Option::is_none"
    )]
    pub realtime_runtime: Option<i64>,
    #[serde(
        default,
        rename = "realtimePeriod",
        alias = "realtimeperiod",
        skip_serializing_if = "Option::is_none"
    )]
    pub realtime_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mems: Option<String>,
}

/// Process-count limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pids {
    /// Maximum number of processes.
    pub limit: i64,
}

/// Block I/O weights and throttles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct BlockIo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    #[serde(
        default,
        rename = "leafWeight",
        skip_serializing_if = "Option::is_none"
    )]
    pub leaf_weight: Option<u16>,
    #[serde(
        default,
        rename = "weightDevice",
        skip_serializing_if = "Option::is_none"
    )]
    pub weight_device: Option<Vec<serde_json::Value>>,
    #[serde(
        default,
        rename = "throttleReadBpsDevice",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle_read_bps_device: Option<Vec<serde_json::Value>>,
    #[serde(
        default,
        rename = "throttleWriteBpsDevice",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle_write_bps_device: Option<Vec<serde_json::Value>>,
    #[serde(
        default,
        rename = "throttleReadIOPSDevice",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle_read_iops_device: Option<Vec<serde_json::Value>>,
    #[serde(
        default,
        rename = "throttleWriteIOPSDevice",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle_write_iops_device: Option<Vec<serde_json::Value>>,
}

/// A hugepage limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct HugepageLimit {
    #[serde(rename = "pageSize")]
    pub page_size: String,
    pub limit: u64,
}

/// Network class and priorities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Network {
    #[serde(default, rename = "classID", skip_serializing_if = "Option::is_none")]
    pub class_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<Vec<serde_json::Value>>,
}

/// `runtime:`: what kiln-init does around the container (not part of the OCI spec).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Runtime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkdir: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(
        default,
        rename = "bindNS",
        skip_serializing_if = "Namespaces::is_empty"
    )]
    pub bind_ns: Namespaces,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Paths where a container's namespaces are bind-mounted for others to join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Namespaces {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
}

impl Namespaces {
    /// True when no namespace path is set.
    pub fn is_empty(&self) -> bool {
        *self == Namespaces::default()
    }
}

/// A network interface kiln-init creates before starting the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Interface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub add: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    #[serde(default, rename = "createInRoot")]
    pub create_in_root: bool,
}

/// A file, directory or symlink added to the root filesystem.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Path in the image (leading `/` optional).
    pub path: String,
    /// Create a directory.
    #[serde(default)]
    pub directory: bool,
    /// Create a symlink to this target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub symlink: String,
    /// Literal contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
    /// Read contents from this host file (relative to the manifest's directory).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Write the merged manifest here, as `yaml` or `json`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    /// Skip the file when `source` does not exist.
    #[serde(default)]
    pub optional: bool,
    /// Octal mode (default 0600, 0700 for directories).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Id>,
    /// Group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<Id>,
}

/// A named volume, optionally seeded from an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The name that binds refer to.
    pub name: String,
    /// An image whose contents seed the volume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// Containers may only bind it read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// Storage format of the volume (LinuxKit: `oci` or empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Platforms to pull the volume image for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
}
