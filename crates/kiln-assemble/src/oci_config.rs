//! The OCI runtime config (`config.json`) and kiln-init's `runtime.json` for one container, from
//! the manifest entry, the image's `org.mobyproject.config` label and the image config, with
//! LinuxKit's precedence: the YAML over the label over the image config; `capabilities.add` and
//! `binds.add` in the YAML append to the label's list.
//!
//! Both are built as kiln-spec's typed configuration — the contract kiln-runtime reads back —
//! and written with [`to_go_json`], so they have LinuxKit's shape exactly (the same keys present
//! and absent, in Go's order) and LinuxKit's init and kiln-init read the same files. Paths that
//! would leave the container's root and sysctls no namespace holds are refused here, located in
//! the manifest, rather than at boot.
//!
//! `seccomp: docker-default` (a kiln extension, in the entry or the label) writes Docker's
//! default profile into `linux.seccomp`, resolved as `docker run` resolves it: for the
//! container's bounding capabilities, the target architecture and [`SECCOMP_KERNEL`].

use kiln_manifest::{Id, Image, Runtime, SeccompProfile};
use kiln_oci::spec::ExecConfig;
use kiln_spec as spec;
use kiln_spec::docker_seccomp::{self, KernelVersion};
use std::collections::{BTreeMap, HashMap};

pub use kiln_spec::{CAPABILITIES as ALL_CAPS, RLIMITS, to_go_json};

/// The kernel version the `minKernel` conditions of Docker's profile are resolved for: Docker
/// resolves them for the kernel it runs on, but config.json is written before the kernel that
/// runs it is known. kiln's kernel package and LinuxKit's current kernels are newer; with
/// Docker's current profile only ptrace, process_vm_readv and process_vm_writev depend on it
/// (allowed from Linux 4.8 on).
pub const SECCOMP_KERNEL: KernelVersion = KernelVersion { major: 5, minor: 4 };

/// A problem with one field: `(field, message)`, located by the caller.
pub type FieldError = (String, String);

/// The generated files for one container.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// config.json.
    pub config: spec::Spec,
    /// runtime.json without the rootfs mounts (assembly adds those).
    pub runtime: RuntimeJson,
    /// Whether the root filesystem is read-only (no overlay).
    pub readonly: bool,
}

/// runtime.json's content before the rootfs mounts are prepended.
#[derive(Debug, Clone)]
pub struct RuntimeJson {
    runtime: spec::Runtime,
}

impl RuntimeJson {
    /// The mounts kiln-init makes for the container (without the rootfs mounts).
    pub fn mounts(&self) -> &[spec::Mount] {
        &self.runtime.mounts
    }

    /// The whole runtime.json, with `rootfs_mounts` (see [`rootfs_mounts`]) first.
    pub fn with_rootfs(&self, rootfs_mounts: Vec<spec::Mount>) -> spec::Runtime {
        let mut runtime = self.runtime.clone();
        let mut mounts = rootfs_mounts;
        mounts.append(&mut runtime.mounts);
        runtime.mounts = mounts;
        runtime
    }
}

/// The host mounts that make the root of the container at `/{prefix}/rootfs` from the image
/// extracted at `/{root}`: a bind when the root is read-only, otherwise an overlay with its
/// upper and work directories on a tmpfs at `/{prefix}/tmp`.
pub fn rootfs_mounts(prefix: &str, root: &str, readonly: bool) -> Vec<spec::Mount> {
    let mount =
        |destination: String, kind: &str, source: String, options: Vec<String>| spec::Mount {
            destination,
            kind: kind.into(),
            source,
            options,
            ..Default::default()
        };
    if readonly {
        return vec![mount(
            format!("/{prefix}/rootfs"),
            "",
            format!("/{root}"),
            vec!["bind".into()],
        )];
    }
    vec![
        mount(format!("/{prefix}/tmp"), "tmpfs", "tmpfs".into(), vec![]),
        mount(
            format!("/{prefix}/tmp"),
            "",
            String::new(),
            vec!["remount".into(), "private".into()],
        ),
        mount(
            format!("/{prefix}/rootfs"),
            "overlay",
            "overlay".into(),
            vec![
                format!("lowerdir=/{root}"),
                format!("upperdir=/{prefix}/tmp/upper"),
                format!("workdir=/{prefix}/tmp/work"),
            ],
        ),
    ]
}

/// Build config.json and runtime.json for `yaml` (the manifest entry) over `label` over `image`.
/// `ids` maps container names to the uids/gids allocated to them; `arch` is the target's
/// architecture (`amd64`, `arm64`, or the kernel's names `x86_64`, `aarch64`).
pub fn bundle(
    yaml: &Image,
    label: &Image,
    image: &ExecConfig,
    ids: &HashMap<String, u32>,
    arch: &str,
) -> Result<Bundle, FieldError> {
    let m = Merged { yaml, label };
    let readonly = yaml.readonly.or(label.readonly).unwrap_or(false);
    let process = m.process(image, ids)?;
    let bounding = process
        .capabilities
        .as_ref()
        .map(|c| c.bounding.as_slice())
        .unwrap_or_default();
    let mounts = m.mounts(readonly)?;
    let linux = m.linux(bounding, arch)?;
    let config = spec::Spec {
        oci_version: "1.2.1".into(),
        process,
        root: spec::Root {
            path: "rootfs".into(),
            readonly,
        },
        hostname: m.pick(|i| &i.hostname).cloned().unwrap_or_default(),
        mounts,
        annotations: m
            .pick(|i| &i.annotations)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux,
    };
    Ok(Bundle {
        config,
        runtime: RuntimeJson {
            runtime: m.runtime(),
        },
        readonly,
    })
}

/// The manifest entry over its image's label.
struct Merged<'a> {
    yaml: &'a Image,
    label: &'a Image,
}

impl<'a> Merged<'a> {
    /// The YAML's value of a field, else the label's.
    fn pick<T>(&self, field: impl Fn(&'a Image) -> &'a Option<T>) -> Option<&'a T> {
        field(self.yaml).as_ref().or(field(self.label).as_ref())
    }

    /// The first non-empty string of the YAML's, the label's and `fallback`.
    fn pick_str(
        &self,
        field: impl Fn(&'a Image) -> &'a Option<String>,
        fallback: &Option<String>,
        default: &str,
    ) -> String {
        [field(self.yaml), field(self.label), fallback]
            .into_iter()
            .filter_map(|c| c.as_deref())
            .find(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    }

    /// The YAML's list if given, else the label's with the YAML's additions.
    fn list_with_add(
        &self,
        field: impl Fn(&'a Image) -> &'a Option<Vec<String>>,
        add: &'a Option<Vec<String>>,
    ) -> Vec<String> {
        match field(self.yaml) {
            Some(list) => list.clone(),
            None => field(self.label)
                .iter()
                .flatten()
                .chain(add.iter().flatten())
                .cloned()
                .collect(),
        }
    }

    fn process(
        &self,
        image: &ExecConfig,
        ids: &HashMap<String, u32>,
    ) -> Result<spec::Process, FieldError> {
        let mut inspect: Vec<String> = image.entrypoint.clone().unwrap_or_default();
        inspect.extend(image.cmd.clone().unwrap_or_default());
        let oom_score_adj = self
            .yaml
            .oom_score_adj
            .or(self.label.oom_score_adj)
            .map(|adj| {
                i32::try_from(adj)
                    .ok()
                    .filter(|a| (-1000..=1000).contains(a))
                    .ok_or_else(|| {
                        field_error(
                            "oomScoreAdj",
                            format!("{adj} is out of range: give a number from -1000 to 1000"),
                        )
                    })
            })
            .transpose()?;
        Ok(spec::Process {
            user: self.user(ids)?,
            args: self.pick(|i| &i.command).cloned().unwrap_or(inspect),
            env: self
                .pick(|i| &i.env)
                .cloned()
                .or_else(|| image.env.clone())
                .unwrap_or_default(),
            cwd: self.pick_str(|i| &i.cwd, &image.working_dir, "/"),
            capabilities: Some(self.capabilities()?),
            rlimits: self.rlimits()?,
            no_new_privileges: self
                .yaml
                .no_new_privileges
                .or(self.label.no_new_privileges)
                .unwrap_or(false),
            apparmor_profile: String::new(),
            oom_score_adj,
            selinux_label: String::new(),
        })
    }

    fn user(&self, ids: &HashMap<String, u32>) -> Result<spec::User, FieldError> {
        let mut additional_gids = Vec::new();
        for (i, g) in self
            .pick(|i| &i.additional_gids)
            .into_iter()
            .flatten()
            .enumerate()
        {
            additional_gids.push(numeric_id(Some(g), ids, &format!("additionalGids[{i}]"))?);
        }
        Ok(spec::User {
            uid: numeric_id(self.pick(|i| &i.uid), ids, "uid")?,
            gid: numeric_id(self.pick(|i| &i.gid), ids, "gid")?,
            umask: None,
            additional_gids,
        })
    }

    /// LinuxKit's sets: `capabilities` effective, the union with `ambient` as bounding,
    /// inheritable and permitted (sorted), `ambient` as given.
    fn capabilities(&self) -> Result<spec::Capabilities, FieldError> {
        let caps =
            special_caps(self.list_with_add(|i| &i.capabilities, &self.yaml.capabilities_add));
        let ambient = special_caps(self.pick(|i| &i.ambient).cloned().unwrap_or_default());
        let mut bounding: Vec<String> = Vec::new();
        for (field, list) in [("capabilities", &caps), ("ambient", &ambient)] {
            for c in list {
                if !ALL_CAPS.contains(&c.as_str()) {
                    return Err(field_error(
                        field,
                        format!(
                            "unknown capability `{c}` (capabilities are written like CAP_NET_ADMIN)"
                        ),
                    ));
                }
                if !bounding.contains(c) {
                    bounding.push(c.clone());
                }
            }
        }
        bounding.sort();
        Ok(spec::Capabilities {
            bounding: bounding.clone(),
            effective: caps,
            inheritable: bounding.clone(),
            permitted: bounding,
            ambient,
        })
    }

    fn rlimits(&self) -> Result<Vec<spec::Rlimit>, FieldError> {
        self.pick(|i| &i.rlimits)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| parse_rlimit(r).map_err(|m| (format!("rlimits[{i}]"), m)))
            .collect()
    }

    /// config.json's mounts: LinuxKit's defaults, then `tmpfs`, `binds` and `mounts`, a later
    /// one replacing an earlier one at the same destination; sorted by destination.
    fn mounts(&self, readonly: bool) -> Result<Vec<spec::Mount>, FieldError> {
        let mut mounts = Mounts::default();
        mounts.defaults(readonly);
        for (i, t) in self.pick(|i| &i.tmpfs).into_iter().flatten().enumerate() {
            mounts.tmpfs(i, t)?;
        }
        let binds = self.list_with_add(|i| &i.binds, &self.yaml.binds_add);
        for (i, b) in binds.iter().enumerate() {
            mounts.bind(i, b)?;
        }
        for (i, m) in self.pick(|i| &i.mounts).into_iter().flatten().enumerate() {
            mounts.manifest(i, m)?;
        }
        Ok(mounts.0.into_values().collect())
    }

    /// `linux`; `bounding` is the process's bounding set, which Docker's seccomp profile is
    /// resolved for on `arch`.
    fn linux(&self, bounding: &[String], arch: &str) -> Result<spec::Linux, FieldError> {
        let mut resources = self.resources()?;
        let devices = self.devices(&mut resources)?;
        let mut sysctl = BTreeMap::new();
        for (key, value) in self.pick(|i| &i.sysctl).into_iter().flatten() {
            if spec::sysctl_namespace(key).is_none() {
                return Err(field_error(
                    &format!("sysctl.{key}"),
                    format!(
                        "{key} is not namespaced: setting it in a container would change the \
                         host's value (set it on the host, with an onboot sysctl container)"
                    ),
                ));
            }
            sysctl.insert(key.clone(), value.clone());
        }
        let masked_paths = in_root("maskedPaths", self.pick(|i| &i.masked_paths))?;
        let readonly_paths = in_root("readonlyPaths", self.pick(|i| &i.readonly_paths))?;
        Ok(spec::Linux {
            uid_mappings: mappings(self.pick(|i| &i.uid_mappings)),
            gid_mappings: mappings(self.pick(|i| &i.gid_mappings)),
            sysctl,
            resources: Some(resources),
            cgroups_path: self.pick(|i| &i.cgroups_path).cloned().unwrap_or_default(),
            namespaces: self.namespaces(),
            devices,
            seccomp: self.seccomp(bounding, arch)?,
            rootfs_propagation: self
                .pick(|i| &i.rootfs_propagation)
                .cloned()
                .unwrap_or_default(),
            masked_paths,
            readonly_paths,
        })
    }

    /// `seccomp`: Docker's default profile as `docker run` resolves it, or no filter.
    fn seccomp(
        &self,
        bounding: &[String],
        arch: &str,
    ) -> Result<Option<spec::Seccomp>, FieldError> {
        match self.yaml.seccomp.or(self.label.seccomp) {
            None | Some(SeccompProfile::Unconfined) => Ok(None),
            Some(SeccompProfile::DockerDefault) => {
                let arch = kiln_oci::spec::normalize_arch(arch);
                docker_seccomp::default_profile(bounding, arch, SECCOMP_KERNEL)
                    .map(Some)
                    .map_err(|e| field_error("seccomp", format!("docker-default: {e}")))
            }
        }
    }

    /// The manifest's `resources`, as typed as config.json's.
    fn resources(&self) -> Result<spec::Resources, FieldError> {
        let Some(r) = self.pick(|i| &i.resources) else {
            return Ok(spec::Resources::default());
        };
        let value = serde_json::to_value(r).map_err(|e| field_error("resources", e.to_string()))?;
        spec::Resources::from_value(value)
            .map_err(|e| field_error(&format!("resources.{}", e.field), e.message))
    }

    /// `devices`: nodes to create, each also allowed in the device cgroup (`path: all` only
    /// allows a whole class).
    fn devices(&self, resources: &mut spec::Resources) -> Result<Vec<spec::Device>, FieldError> {
        let mut devices = Vec::new();
        for (i, d) in self.pick(|i| &i.devices).into_iter().flatten().enumerate() {
            let all = d.path == "all";
            resources.devices.push(spec::DeviceCgroup {
                allow: true,
                kind: d.kind.clone(),
                major: (!all).then_some(d.major),
                minor: (!all).then_some(d.minor),
                access: "rwm".into(),
            });
            if all {
                continue;
            }
            check_path(&format!("devices[{i}].path"), &d.path)?;
            let mode = d.mode.as_deref().unwrap_or("");
            let file_mode = u32::from_str_radix(mode, 8).map_err(|_| {
                field_error(
                    &format!("devices[{i}].mode"),
                    format!("cannot parse device mode `{mode}` as an octal value"),
                )
            })?;
            let kind = spec::DeviceType::try_from(d.kind.clone())
                .map_err(|m| field_error(&format!("devices[{i}].type"), m))?;
            devices.push(spec::Device {
                path: d.path.clone(),
                kind,
                major: d.major,
                minor: d.minor,
                file_mode: Some(file_mode),
                uid: None,
                gid: None,
            });
        }
        Ok(devices)
    }

    /// LinuxKit's namespaces: network, ipc, uts, pid and user as asked (`host`/`root` share the
    /// host's, `new` or empty make one, a path joins one), and always a new mount namespace.
    fn namespaces(&self) -> Vec<spec::Namespace> {
        let mut out = Vec::new();
        for (kind, value, none_is_new) in [
            (
                spec::NamespaceType::Network,
                self.pick_str(|i| &i.net, &None, "root"),
                true,
            ),
            (
                spec::NamespaceType::Ipc,
                self.pick_str(|i| &i.ipc, &None, "root"),
                false,
            ),
            (
                spec::NamespaceType::Uts,
                self.pick_str(|i| &i.uts, &None, "root"),
                false,
            ),
            (
                spec::NamespaceType::Pid,
                self.pick_str(|i| &i.pid, &None, ""),
                false,
            ),
            (
                spec::NamespaceType::User,
                self.pick_str(|i| &i.userns, &None, "root"),
                false,
            ),
        ] {
            if value == "host" || value == "root" {
                continue;
            }
            let path = if value == "new" || (none_is_new && value == "none") {
                String::new()
            } else {
                value
            };
            out.push(spec::Namespace { kind, path });
        }
        out.push(spec::Namespace {
            kind: spec::NamespaceType::Mount,
            path: String::new(),
        });
        out
    }

    /// runtime.json without the rootfs mounts: `runtime:` of the YAML over the label's, field by
    /// field, and kiln's extensions when set.
    fn runtime(&self) -> spec::Runtime {
        let empty = Runtime::default();
        let y = self.yaml.runtime.as_ref().unwrap_or(&empty);
        let l = self.label.runtime.as_ref().unwrap_or(&empty);
        let (yn, ln) = (&y.bind_ns, &l.bind_ns);
        let ns = |a: &Option<String>, b: &Option<String>| {
            a.as_ref().or(b.as_ref()).cloned().unwrap_or_default()
        };
        spec::Runtime {
            cgroups: y
                .cgroups
                .as_ref()
                .or(l.cgroups.as_ref())
                .cloned()
                .unwrap_or_default(),
            mounts: y
                .mounts
                .as_ref()
                .or(l.mounts.as_ref())
                .into_iter()
                .flatten()
                .map(spec_mount)
                .collect(),
            mkdir: y
                .mkdir
                .as_ref()
                .or(l.mkdir.as_ref())
                .cloned()
                .unwrap_or_default(),
            interfaces: y
                .interfaces
                .as_ref()
                .or(l.interfaces.as_ref())
                .into_iter()
                .flatten()
                .map(|i| spec::Interface {
                    name: i.name.clone(),
                    add: i.add.clone(),
                    peer: i.peer.clone(),
                    create_in_root: i.create_in_root,
                })
                .collect(),
            bind_ns: spec::BindNs {
                cgroup: ns(&yn.cgroup, &ln.cgroup),
                ipc: ns(&yn.ipc, &ln.ipc),
                mnt: ns(&yn.mnt, &ln.mnt),
                net: ns(&yn.net, &ln.net),
                pid: ns(&yn.pid, &ln.pid),
                user: ns(&yn.user, &ln.user),
                uts: ns(&yn.uts, &ln.uts),
            },
            namespace: y
                .namespace
                .as_ref()
                .or(l.namespace.as_ref())
                .cloned()
                .unwrap_or_default(),
            restart: self.yaml.restart.or(self.label.restart).map(|r| match r {
                kiln_manifest::RestartPolicy::No => spec::RestartPolicy::No,
                kiln_manifest::RestartPolicy::OnFailure => spec::RestartPolicy::OnFailure,
                kiln_manifest::RestartPolicy::Always => spec::RestartPolicy::Always,
            }),
            depends_on: self.pick(|i| &i.depends_on).cloned(),
        }
    }
}

/// config.json's mounts by destination (LinuxKit keeps one per destination, sorted).
#[derive(Default)]
struct Mounts(BTreeMap<String, spec::Mount>);

impl Mounts {
    fn put(&mut self, destination: &str, kind: &str, source: &str, options: Vec<String>) {
        self.0.insert(
            destination.to_string(),
            spec::Mount {
                destination: destination.into(),
                kind: kind.into(),
                source: source.into(),
                options,
                ..Default::default()
            },
        );
    }

    /// LinuxKit's defaults: /proc, /dev, /dev/pts, /sys and /sys/fs/cgroup.
    fn defaults(&mut self, readonly: bool) {
        let opts = |v: &[&str], ro: bool| -> Vec<String> {
            let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            if ro {
                v.push("ro".into());
            }
            v
        };
        self.put(
            "/proc",
            "proc",
            "proc",
            opts(&["nosuid", "nodev", "noexec", "relatime"], false),
        );
        self.put(
            "/dev",
            "tmpfs",
            "tmpfs",
            opts(
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
                readonly,
            ),
        );
        self.put(
            "/dev/pts",
            "devpts",
            "devpts",
            opts(
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
                false,
            ),
        );
        self.put(
            "/sys",
            "sysfs",
            "sysfs",
            opts(&["nosuid", "noexec", "nodev"], readonly),
        );
        self.put(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            opts(&["nosuid", "noexec", "nodev", "relatime", "ro"], false),
        );
    }

    /// `tmpfs: [DEST[:OPTIONS]]`.
    fn tmpfs(&mut self, i: usize, t: &str) -> Result<(), FieldError> {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() > 2 {
            return Err(field_error(
                &format!("tmpfs[{i}]"),
                format!("cannot parse tmpfs `{t}`: too many `:` (write DEST or DEST:OPTIONS)"),
            ));
        }
        check_path(&format!("tmpfs[{i}]"), parts[0])?;
        let opts = parts
            .get(1)
            .map(|o| o.split(',').map(String::from).collect())
            .unwrap_or_default();
        self.put(parts[0], "tmpfs", "tmpfs", opts);
        Ok(())
    }

    /// `binds: [SOURCE:DEST[:OPTIONS]]`.
    fn bind(&mut self, i: usize, b: &str) -> Result<(), FieldError> {
        let parts: Vec<&str> = b.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(field_error(
                &format!("binds[{i}]"),
                format!("cannot parse bind `{b}`: write SOURCE:DEST or SOURCE:DEST:OPTIONS"),
            ));
        }
        check_path(&format!("binds[{i}]"), parts[1])?;
        let opts: Vec<String> = match parts.get(2) {
            Some(o) => o
                .split(',')
                .map(String::from)
                .chain(["rbind".to_string()])
                .collect(),
            None => vec!["rw".into(), "rbind".into(), "rshared".into()],
        };
        self.put(parts[1], "bind", parts[0], opts);
        Ok(())
    }

    /// `mounts:` as LinuxKit completes them: the type from a well-known source, the source
    /// from the type, the destination from the type.
    fn manifest(&mut self, i: usize, m: &kiln_manifest::Mount) -> Result<(), FieldError> {
        let mut kind = m.kind.clone();
        if kind.is_empty()
            && ["mqueue", "devpts", "proc", "sysfs", "cgroup"].contains(&m.source.as_str())
        {
            kind = m.source.clone();
        }
        if kind.is_empty() && m.destination == "/dev" {
            kind = "tmpfs".into();
        }
        if kind.is_empty() {
            return Err(field_error(
                &format!("mounts[{i}]"),
                format!("mount for destination {} is missing a type", m.destination),
            ));
        }
        let source = if m.source.is_empty() {
            kind.clone()
        } else {
            m.source.clone()
        };
        let dest = if m.destination.is_empty() {
            default_mountpoint(&kind).to_string()
        } else {
            m.destination.clone()
        };
        if dest.is_empty() {
            return Err(field_error(
                &format!("mounts[{i}]"),
                format!("mount of type {kind} is missing a destination"),
            ));
        }
        check_path(&format!("mounts[{i}].destination"), &dest)?;
        self.put(&dest, &kind, &source, m.options.clone().unwrap_or_default());
        Ok(())
    }
}

/// A list of paths in the container, each checked to stay inside its root.
fn in_root(key: &str, list: Option<&Vec<String>>) -> Result<Vec<String>, FieldError> {
    let list = list.cloned().unwrap_or_default();
    for (i, p) in list.iter().enumerate() {
        check_path(&format!("{key}[{i}]"), p)?;
    }
    Ok(list)
}

fn field_error(field: &str, message: String) -> FieldError {
    (field.to_string(), message)
}

/// A path in the container must stay inside its root.
fn check_path(field: &str, path: &str) -> Result<(), FieldError> {
    spec::container_path(path)
        .map(drop)
        .map_err(|m| field_error(field, format!("`{path}` {m}")))
}

fn spec_mount(m: &kiln_manifest::Mount) -> spec::Mount {
    spec::Mount {
        destination: m.destination.clone(),
        kind: m.kind.clone(),
        source: m.source.clone(),
        options: m.options.clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn mappings(v: Option<&Vec<kiln_manifest::IdMapping>>) -> Vec<spec::IdMapping> {
    v.into_iter()
        .flatten()
        .map(|m| spec::IdMapping {
            container_id: m.container_id,
            host_id: m.host_id,
            size: m.size,
        })
        .collect()
}

fn special_caps(list: Vec<String>) -> Vec<String> {
    if list.len() == 1 {
        match list[0].to_lowercase().as_str() {
            "none" => return Vec::new(),
            "all" => return ALL_CAPS.iter().map(|s| s.to_string()).collect(),
            _ => {}
        }
    }
    list
}

fn default_mountpoint(kind: &str) -> &'static str {
    match kind {
        "proc" => "/proc",
        "devpts" => "/dev/pts",
        "sysfs" => "/sys",
        "cgroup" => "/sys/fs/cgroup",
        "mqueue" => "/dev/mqueue",
        _ => "",
    }
}

fn numeric_id(id: Option<&Id>, ids: &HashMap<String, u32>, field: &str) -> Result<u32, FieldError> {
    match id {
        None => Ok(0),
        // LinuxKit converts with Go's uint32(): keep the same wrap-around for compatibility.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(Id::Num(n)) => Ok(*n as u32),
        Some(Id::Name(n)) if n.is_empty() || n == "root" => Ok(0),
        Some(Id::Name(n)) => ids
            .get(n)
            .copied()
            .ok_or_else(|| (field.to_string(), format!("cannot find id `{n}`"))),
    }
}

/// `name,soft,hard` (`nofile,1024,4096`; `unlimited` for no limit).
fn parse_rlimit(s: &str) -> Result<spec::Rlimit, String> {
    let parts: Vec<&str> = s.splitn(3, ',').collect();
    if parts.len() != 3 {
        return Err(format!(
            "cannot parse rlimit `{s}`: write it as name,soft,hard (for example nofile,1024,4096)"
        ));
    }
    let mut name = parts[0].trim().to_uppercase();
    if !name.starts_with("RLIMIT_") {
        name = format!("RLIMIT_{name}");
    }
    if !RLIMITS.contains(&name.as_str()) {
        return Err(format!("unknown rlimit `{}`", parts[0].trim()));
    }
    let value = |v: &str| -> Result<u64, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("unlimited") {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| {
                format!("cannot parse `{v}` in rlimit `{s}` as a number or `unlimited`")
            })
        }
    };
    Ok(spec::Rlimit {
        kind: name,
        hard: value(parts[2])?,
        soft: value(parts[1])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_manifest::Device;

    /// What LinuxKit writes for an image whose command is `/bin/tool run` (01-minimal).
    const MINIMAL_CONFIG: &str = r#"{
    "ociVersion": "1.2.1",
    "process": {
        "user": {
            "uid": 0,
            "gid": 0
        },
        "args": [
            "/bin/tool",
            "run"
        ],
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ],
        "cwd": "/",
        "capabilities": {}
    },
    "root": {
        "path": "rootfs"
    },
    "mounts": [
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": [
                "nosuid",
                "strictatime",
                "mode=755",
                "size=65536k"
            ]
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": [
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620"
            ]
        },
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": [
                "nosuid",
                "nodev",
                "noexec",
                "relatime"
            ]
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": [
                "nosuid",
                "noexec",
                "nodev"
            ]
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": [
                "nosuid",
                "noexec",
                "nodev",
                "relatime",
                "ro"
            ]
        }
    ],
    "linux": {
        "resources": {},
        "namespaces": [
            {
                "type": "pid"
            },
            {
                "type": "mount"
            }
        ]
    }
}"#;
    const MINIMAL_RUNTIME: &str = r#"{
    "cgroups": [],
    "mounts": [
        {
            "destination": "/containers/onboot/000-tool/tmp",
            "type": "tmpfs",
            "source": "tmpfs"
        },
        {
            "destination": "/containers/onboot/000-tool/tmp",
            "options": [
                "remount",
                "private"
            ]
        },
        {
            "destination": "/containers/onboot/000-tool/rootfs",
            "type": "overlay",
            "source": "overlay",
            "options": [
                "lowerdir=/containers/onboot/000-tool/lower",
                "upperdir=/containers/onboot/000-tool/tmp/upper",
                "workdir=/containers/onboot/000-tool/tmp/work"
            ]
        }
    ],
    "mkdir": [],
    "interfaces": [],
    "bindNS": {
        "cgroup": "",
        "ipc": "",
        "mnt": "",
        "net": "",
        "pid": "",
        "user": "",
        "uts": ""
    },
    "namespace": ""
}"#;

    fn image() -> ExecConfig {
        ExecConfig {
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]),
            cmd: Some(vec!["/bin/tool".into(), "run".into()]),
            ..Default::default()
        }
    }

    fn build(yaml: &Image) -> Result<Bundle, FieldError> {
        bundle(yaml, &Image::default(), &image(), &HashMap::new(), "amd64")
    }

    #[test]
    fn a_minimal_container_is_written_as_linuxkit_does() {
        let b = build(&Image::default()).expect("bundle");
        assert_eq!(
            String::from_utf8(to_go_json(&b.config)).expect("utf-8"),
            MINIMAL_CONFIG
        );
        let prefix = "containers/onboot/000-tool";
        let rt = b.runtime.with_rootfs(rootfs_mounts(
            prefix,
            &format!("{prefix}/lower"),
            b.readonly,
        ));
        assert_eq!(
            String::from_utf8(to_go_json(&rt)).expect("utf-8"),
            MINIMAL_RUNTIME
        );
        // What assembly writes, the runtime accepts.
        let text = String::from_utf8(to_go_json(&b.config)).expect("utf-8");
        let read = kiln_spec::parse_config(&text, "config.json".as_ref()).expect("parses");
        read.validate().expect("valid");
        assert_eq!(read, b.config);
    }

    #[test]
    fn paths_leaving_the_root_are_refused_at_build_time() {
        let yaml = Image {
            devices: Some(vec![Device {
                path: "/dev/../../tmp/evil".into(),
                kind: "b".into(),
                major: 8,
                minor: 0,
                mode: Some("0666".into()),
            }]),
            ..Default::default()
        };
        let (field, msg) = build(&yaml).expect_err("refused");
        assert_eq!(field, "devices[0].path");
        assert!(
            msg.contains("/dev/../../tmp/evil") && msg.contains("leaves"),
            "{msg}"
        );
        let yaml = Image {
            binds: Some(vec!["/var:/../../host".into()]),
            ..Default::default()
        };
        assert_eq!(build(&yaml).expect_err("refused").0, "binds[0]");
        let yaml = Image {
            tmpfs: Some(vec!["../x:size=1m".into()]),
            ..Default::default()
        };
        assert_eq!(build(&yaml).expect_err("refused").0, "tmpfs[0]");
        let yaml = Image {
            masked_paths: Some(vec!["/../proc".into()]),
            ..Default::default()
        };
        assert_eq!(build(&yaml).expect_err("refused").0, "maskedPaths[0]");
    }

    #[test]
    fn sysctls_no_namespace_holds_are_refused_at_build_time() {
        let mut sysctl = indexmap::IndexMap::new();
        sysctl.insert("vm.overcommit_ratio".to_string(), "51".to_string());
        let yaml = Image {
            sysctl: Some(sysctl),
            ..Default::default()
        };
        let (field, msg) = build(&yaml).expect_err("refused");
        assert_eq!(field, "sysctl.vm.overcommit_ratio");
        assert!(msg.contains("not namespaced"), "{msg}");
    }

    #[test]
    fn maps_are_written_in_gos_order_and_strings_escaped_as_go_does() {
        let mut sysctl = indexmap::IndexMap::new();
        sysctl.insert("net.ipv4.tcp_syncookies".to_string(), "1".to_string());
        sysctl.insert("net.core.somaxconn".to_string(), "1024".to_string());
        let yaml = Image {
            sysctl: Some(sysctl),
            command: Some(vec!["sh".into(), "-c".into(), "a && b > c".into()]),
            ..Default::default()
        };
        let text =
            String::from_utf8(to_go_json(&build(&yaml).expect("bundle").config)).expect("utf-8");
        let core = text.find("net.core.somaxconn").expect("core");
        let ipv4 = text.find("net.ipv4.tcp_syncookies").expect("ipv4");
        assert!(core < ipv4, "{text}");
        assert!(text.contains(r#""a \u0026\u0026 b \u003e c""#), "{text}");
    }

    #[test]
    fn capabilities_and_rlimits_are_typed() {
        let yaml = Image {
            capabilities: Some(vec!["CAP_NET_ADMIN".into()]),
            ambient: Some(vec!["CAP_CHOWN".into()]),
            rlimits: Some(vec!["nofile,1024,unlimited".into()]),
            restart: Some(kiln_manifest::RestartPolicy::OnFailure),
            ..Default::default()
        };
        let b = build(&yaml).expect("bundle");
        let caps = b.config.capabilities();
        assert_eq!(caps.bounding, ["CAP_CHOWN", "CAP_NET_ADMIN"]);
        assert_eq!(caps.effective, ["CAP_NET_ADMIN"]);
        assert_eq!(caps.ambient, ["CAP_CHOWN"]);
        assert_eq!(b.config.process.rlimits[0].hard, u64::MAX);
        let rt = b.runtime.with_rootfs(Vec::new());
        assert_eq!(rt.restart, Some(kiln_spec::RestartPolicy::OnFailure));
        let yaml = Image {
            capabilities: Some(vec!["CAP_EVERYTHING".into()]),
            ..Default::default()
        };
        assert_eq!(build(&yaml).expect_err("refused").0, "capabilities");
        let yaml = Image {
            rlimits: Some(vec!["bogus,1,1".into()]),
            ..Default::default()
        };
        assert_eq!(build(&yaml).expect_err("refused").0, "rlimits[0]");
    }

    fn rules_for<'a>(seccomp: &'a spec::Seccomp, name: &str) -> Vec<&'a spec::Syscall> {
        seccomp
            .syscalls
            .iter()
            .filter(|s| s.names.iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn docker_default_seccomp_is_resolved_for_the_capabilities() {
        let yaml = Image {
            capabilities: Some(vec!["CAP_NET_ADMIN".into()]),
            ambient: Some(vec!["CAP_SYS_CHROOT".into()]),
            seccomp: Some(SeccompProfile::DockerDefault),
            ..Default::default()
        };
        let b = build(&yaml).expect("bundle");
        let seccomp = b.config.linux.seccomp.as_ref().expect("a filter");
        // Exactly what Docker's resolution gives for the bounding set (ambient included).
        let expected = docker_seccomp::default_profile(
            &["CAP_NET_ADMIN", "CAP_SYS_CHROOT"],
            "amd64",
            SECCOMP_KERNEL,
        )
        .expect("resolves");
        assert_eq!(seccomp, &expected);
        assert_eq!(seccomp.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(
            seccomp.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert_eq!(rules_for(seccomp, "chroot").len(), 1);
        for denied in ["unshare", "mount", "setns", "keyctl", "add_key", "reboot"] {
            assert!(rules_for(seccomp, denied).is_empty(), "{denied}");
        }
        assert_eq!(rules_for(seccomp, "ptrace").len(), 1, "minKernel 4.8 holds");

        // With CAP_SYS_ADMIN the calls Docker grants it are allowed, on arm64 too.
        let admin = Image {
            capabilities: Some(vec!["CAP_SYS_ADMIN".into()]),
            seccomp: Some(SeccompProfile::DockerDefault),
            ..Default::default()
        };
        let b = bundle(
            &admin,
            &Image::default(),
            &image(),
            &HashMap::new(),
            "aarch64",
        )
        .expect("bundle");
        let seccomp = b.config.linux.seccomp.as_ref().expect("a filter");
        assert_eq!(
            seccomp.architectures,
            ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        );
        for allowed in ["unshare", "mount", "setns"] {
            assert_eq!(rules_for(seccomp, allowed).len(), 1, "{allowed}");
        }
        assert!(rules_for(seccomp, "chroot").is_empty());
        assert!(rules_for(seccomp, "arch_prctl").is_empty());
    }

    #[test]
    fn the_written_config_carries_the_profile_and_reads_back() {
        let yaml = Image {
            seccomp: Some(SeccompProfile::DockerDefault),
            ..Default::default()
        };
        let b = build(&yaml).expect("bundle");
        let text = String::from_utf8(to_go_json(&b.config)).expect("utf-8");
        assert!(
            text.contains(
                "        \"seccomp\": {\n            \"defaultAction\": \"SCMP_ACT_ERRNO\",\n            \"defaultErrnoRet\": 1,\n            \"architectures\": [\n                \"SCMP_ARCH_X86_64\","
            ),
            "{text}"
        );
        assert!(
            !text.contains("includes") && !text.contains("minKernel"),
            "{text}"
        );
        let read = kiln_spec::parse_config(&text, "config.json".as_ref()).expect("parses");
        read.validate().expect("valid");
        assert_eq!(read, b.config);
    }

    #[test]
    fn seccomp_comes_from_the_label_unless_the_entry_says_unconfined() {
        let label = Image {
            seccomp: Some(SeccompProfile::DockerDefault),
            ..Default::default()
        };
        let from_label = bundle(
            &Image::default(),
            &label,
            &image(),
            &HashMap::new(),
            "amd64",
        )
        .expect("bundle");
        assert!(from_label.config.linux.seccomp.is_some());
        let yaml = Image {
            seccomp: Some(SeccompProfile::Unconfined),
            ..Default::default()
        };
        let unconfined = bundle(&yaml, &label, &image(), &HashMap::new(), "amd64").expect("bundle");
        assert_eq!(unconfined.config.linux.seccomp, None);
        // `unconfined` writes what no key writes: LinuxKit's config, byte for byte.
        assert_eq!(
            String::from_utf8(to_go_json(&build(&yaml).expect("bundle").config)).expect("utf-8"),
            MINIMAL_CONFIG
        );
    }

    #[test]
    fn docker_default_on_an_architecture_docker_does_not_know_is_refused() {
        let yaml = Image {
            seccomp: Some(SeccompProfile::DockerDefault),
            ..Default::default()
        };
        let (field, msg) = bundle(
            &yaml,
            &Image::default(),
            &image(),
            &HashMap::new(),
            "sparc64",
        )
        .expect_err("refused");
        assert_eq!(field, "seccomp");
        assert!(
            msg.contains("\"sparc64\"") && msg.contains("amd64"),
            "{msg}"
        );
        // Without the key the architecture does not matter.
        bundle(
            &Image::default(),
            &Image::default(),
            &image(),
            &HashMap::new(),
            "sparc64",
        )
        .expect("no filter, no resolution");
    }
}
