//! The OCI runtime config (`config.json`) and kiln-init's `runtime.json` for one container, from
//! the manifest entry, the image's `org.mobyproject.config` label and the image config, with
//! LinuxKit's precedence: the YAML over the label over the image config; `capabilities.add` and
//! `binds.add` in the YAML append to the label's list.
//!
//! The JSON has LinuxKit's shape exactly (the same keys present and absent) so that LinuxKit's
//! init and kiln-init read the same files.

use kiln_manifest::{Id, Image, Mount, Resources, Runtime};
use kiln_oci::spec::ExecConfig;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// Every capability kiln knows, in kernel order.
pub const ALL_CAPS: [&str; 41] = [
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

const RLIMITS: [&str; 16] = [
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

/// A problem with one field: `(field, message)`, located by the caller.
pub type FieldError = (String, String);

fn pick<'a, T>(yaml: &'a Option<T>, label: &'a Option<T>) -> Option<&'a T> {
    yaml.as_ref().or(label.as_ref())
}

fn pick_str(default: &str, candidates: &[&Option<String>]) -> String {
    candidates
        .iter()
        .filter_map(|c| c.as_deref())
        .find(|s| !s.is_empty())
        .unwrap_or(default)
        .to_string()
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

fn mount_json(m: &Mount) -> Value {
    let mut o = Map::new();
    o.insert("destination".into(), json!(m.destination));
    if !m.kind.is_empty() {
        o.insert("type".into(), json!(m.kind));
    }
    if !m.source.is_empty() {
        o.insert("source".into(), json!(m.source));
    }
    if let Some(opts) = m.options.as_ref().filter(|o| !o.is_empty()) {
        o.insert("options".into(), json!(opts));
    }
    Value::Object(o)
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

fn parse_rlimit(s: &str) -> Result<Value, String> {
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
    Ok(json!({"type": name, "hard": value(parts[2])?, "soft": value(parts[1])?}))
}

/// The generated files for one container.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// config.json.
    pub config: Value,
    /// runtime.json without the rootfs mounts (assembly prepends those).
    pub runtime: RuntimeJson,
    /// Whether the root filesystem is read-only (no overlay).
    pub readonly: bool,
}

/// runtime.json's content before the rootfs mounts are prepended.
#[derive(Debug, Clone)]
pub struct RuntimeJson {
    /// Extra mounts kiln-init performs.
    pub mounts: Vec<Value>,
    rest: Runtime,
    /// kiln extensions for kiln-init: restart policy and start ordering (absent unless set,
    /// so LinuxKit's files stay byte for byte the same).
    extensions: Vec<(&'static str, Value)>,
}

impl RuntimeJson {
    /// The JSON, with `rootfs_mounts` first.
    pub fn to_json(&self, rootfs_mounts: Vec<Value>) -> Value {
        let r = &self.rest;
        let mut mounts = rootfs_mounts;
        mounts.extend(self.mounts.iter().cloned());
        let ns = &r.bind_ns;
        let s = |v: &Option<String>| json!(v.clone().unwrap_or_default());
        let interfaces: Vec<Value> = r
            .interfaces
            .iter()
            .flatten()
            .map(|i| {
                let mut o = Map::new();
                for (k, v) in [("name", &i.name), ("add", &i.add), ("peer", &i.peer)] {
                    if !v.is_empty() {
                        o.insert(k.into(), json!(v));
                    }
                }
                o.insert("createInRoot".into(), json!(i.create_in_root));
                Value::Object(o)
            })
            .collect();
        let mut out = json!({
            "cgroups": r.cgroups.clone().unwrap_or_default(),
            "mounts": mounts,
            "mkdir": r.mkdir.clone().unwrap_or_default(),
            "interfaces": interfaces,
            "bindNS": {"cgroup": s(&ns.cgroup), "ipc": s(&ns.ipc), "mnt": s(&ns.mnt), "net": s(&ns.net), "pid": s(&ns.pid), "user": s(&ns.user), "uts": s(&ns.uts)},
            "namespace": r.namespace.clone().unwrap_or_default(),
        });
        if let Value::Object(m) = &mut out {
            for (k, v) in &self.extensions {
                m.insert((*k).to_string(), v.clone());
            }
        }
        out
    }
}

fn merge_runtime(label: Option<&Runtime>, yaml: Option<&Runtime>) -> Runtime {
    let empty = Runtime::default();
    let (l, y) = (label.unwrap_or(&empty), yaml.unwrap_or(&empty));
    Runtime {
        cgroups: pick(&y.cgroups, &l.cgroups).cloned(),
        mounts: pick(&y.mounts, &l.mounts).cloned(),
        mkdir: pick(&y.mkdir, &l.mkdir).cloned(),
        interfaces: pick(&y.interfaces, &l.interfaces).cloned(),
        bind_ns: kiln_manifest::Namespaces {
            cgroup: pick(&y.bind_ns.cgroup, &l.bind_ns.cgroup).cloned(),
            ipc: pick(&y.bind_ns.ipc, &l.bind_ns.ipc).cloned(),
            mnt: pick(&y.bind_ns.mnt, &l.bind_ns.mnt).cloned(),
            net: pick(&y.bind_ns.net, &l.bind_ns.net).cloned(),
            pid: pick(&y.bind_ns.pid, &l.bind_ns.pid).cloned(),
            user: pick(&y.bind_ns.user, &l.bind_ns.user).cloned(),
            uts: pick(&y.bind_ns.uts, &l.bind_ns.uts).cloned(),
        },
        namespace: pick(&y.namespace, &l.namespace).cloned(),
    }
}

/// Build config.json and runtime.json for `yaml` (the manifest entry) over `label` over `image`.
/// `ids` maps container names to the uids/gids allocated to them.
pub fn bundle(
    yaml: &Image,
    label: &Image,
    image: &ExecConfig,
    ids: &HashMap<String, u32>,
) -> Result<Bundle, FieldError> {
    let mut inspect: Vec<String> = image.entrypoint.clone().unwrap_or_default();
    inspect.extend(image.cmd.clone().unwrap_or_default());
    let args = pick(&yaml.command, &label.command)
        .cloned()
        .unwrap_or(inspect);
    let env = pick(&yaml.env, &label.env)
        .cloned()
        .or_else(|| image.env.clone())
        .unwrap_or_default();
    let cwd = pick_str("/", &[&yaml.cwd, &label.cwd, &image.working_dir]);
    let readonly = yaml.readonly.or(label.readonly).unwrap_or(false);

    let ro = |mut v: Vec<&'static str>| -> Vec<&'static str> {
        if readonly {
            v.push("ro");
        }
        v
    };
    let mut mounts: BTreeMap<String, Value> = BTreeMap::new();
    let mut put = |dest: &str, kind: &str, source: &str, options: Option<Vec<String>>| {
        let m = Mount {
            destination: dest.into(),
            kind: kind.into(),
            source: source.into(),
            options,
        };
        mounts.insert(dest.to_string(), mount_json(&m));
    };
    let strs = |v: Vec<&str>| Some(v.into_iter().map(String::from).collect::<Vec<_>>());
    put(
        "/proc",
        "proc",
        "proc",
        strs(vec!["nosuid", "nodev", "noexec", "relatime"]),
    );
    put(
        "/dev",
        "tmpfs",
        "tmpfs",
        strs(ro(vec!["nosuid", "strictatime", "mode=755", "size=65536k"])),
    );
    put(
        "/dev/pts",
        "devpts",
        "devpts",
        strs(vec![
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ]),
    );
    put(
        "/sys",
        "sysfs",
        "sysfs",
        strs(ro(vec!["nosuid", "noexec", "nodev"])),
    );
    put(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        strs(vec!["nosuid", "noexec", "nodev", "relatime", "ro"]),
    );
    for (i, t) in pick(&yaml.tmpfs, &label.tmpfs)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() > 2 {
            return Err((
                format!("tmpfs[{i}]"),
                format!("cannot parse tmpfs `{t}`: too many `:` (write DEST or DEST:OPTIONS)"),
            ));
        }
        let opts = parts
            .get(1)
            .map(|o| o.split(',').map(String::from).collect());
        put(parts[0], "tmpfs", "tmpfs", opts);
    }
    let binds: Vec<String> = match &yaml.binds {
        Some(b) => b.clone(),
        None => label
            .binds
            .iter()
            .flatten()
            .chain(yaml.binds_add.iter().flatten())
            .cloned()
            .collect(),
    };
    for (i, b) in binds.iter().enumerate() {
        let parts: Vec<&str> = b.split(':').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err((
                format!("binds[{i}]"),
                format!("cannot parse bind `{b}`: write SOURCE:DEST or SOURCE:DEST:OPTIONS"),
            ));
        }
        let opts: Vec<String> = match parts.get(2) {
            Some(o) => o
                .split(',')
                .map(String::from)
                .chain(["rbind".to_string()])
                .collect(),
            None => vec!["rw".into(), "rbind".into(), "rshared".into()],
        };
        put(parts[1], "bind", parts[0], Some(opts));
    }
    for (i, m) in pick(&yaml.mounts, &label.mounts)
        .into_iter()
        .flatten()
        .enumerate()
    {
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
            return Err((
                format!("mounts[{i}]"),
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
            return Err((
                format!("mounts[{i}]"),
                format!("mount of type {kind} is missing a destination"),
            ));
        }
        put(&dest, &kind, &source, m.options.clone());
    }

    let mut namespaces = Vec::new();
    let ns = |kind: &str, value: String, namespaces: &mut Vec<Value>, none_is_new: bool| {
        if value == "host" || value == "root" {
            return;
        }
        let path = if value == "new" || (none_is_new && value == "none") {
            String::new()
        } else {
            value
        };
        namespaces.push(if path.is_empty() {
            json!({"type": kind})
        } else {
            json!({"type": kind, "path": path})
        });
    };
    ns(
        "network",
        pick_str("root", &[&yaml.net, &label.net]),
        &mut namespaces,
        true,
    );
    ns(
        "ipc",
        pick_str("root", &[&yaml.ipc, &label.ipc]),
        &mut namespaces,
        false,
    );
    ns(
        "uts",
        pick_str("root", &[&yaml.uts, &label.uts]),
        &mut namespaces,
        false,
    );
    ns(
        "pid",
        pick_str("", &[&yaml.pid, &label.pid]),
        &mut namespaces,
        false,
    );
    ns(
        "user",
        pick_str("root", &[&yaml.userns, &label.userns]),
        &mut namespaces,
        false,
    );
    namespaces.push(json!({"type": "mount"}));

    let caps: Vec<String> = match &yaml.capabilities {
        Some(c) => c.clone(),
        None => label
            .capabilities
            .iter()
            .flatten()
            .chain(yaml.capabilities_add.iter().flatten())
            .cloned()
            .collect(),
    };
    let caps = special_caps(caps);
    let ambient = special_caps(
        pick(&yaml.ambient, &label.ambient)
            .cloned()
            .unwrap_or_default(),
    );
    let mut bounding: Vec<String> = Vec::new();
    for (field, list) in [("capabilities", &caps), ("ambient", &ambient)] {
        for c in list {
            if !ALL_CAPS.contains(&c.as_str()) {
                return Err((
                    field.into(),
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
    let mut capabilities = Map::new();
    for (k, v) in [
        ("bounding", &bounding),
        ("effective", &caps),
        ("inheritable", &bounding),
        ("permitted", &bounding),
        ("ambient", &ambient),
    ] {
        if !v.is_empty() {
            capabilities.insert(k.into(), json!(v));
        }
    }

    let mut rlimits = Vec::new();
    for (i, r) in pick(&yaml.rlimits, &label.rlimits)
        .into_iter()
        .flatten()
        .enumerate()
    {
        rlimits.push(parse_rlimit(r).map_err(|m| (format!("rlimits[{i}]"), m))?);
    }

    let uid = numeric_id(pick(&yaml.uid, &label.uid), ids, "uid")?;
    let gid = numeric_id(pick(&yaml.gid, &label.gid), ids, "gid")?;
    let mut additional = Vec::new();
    for (i, g) in pick(&yaml.additional_gids, &label.additional_gids)
        .into_iter()
        .flatten()
        .enumerate()
    {
        additional.push(numeric_id(Some(g), ids, &format!("additionalGids[{i}]"))?);
    }

    let mut user = Map::new();
    user.insert("uid".into(), json!(uid));
    user.insert("gid".into(), json!(gid));
    if !additional.is_empty() {
        user.insert("additionalGids".into(), json!(additional));
    }
    let mut process = Map::new();
    process.insert("user".into(), Value::Object(user));
    if !args.is_empty() {
        process.insert("args".into(), json!(args));
    }
    if !env.is_empty() {
        process.insert("env".into(), json!(env));
    }
    process.insert("cwd".into(), json!(cwd));
    process.insert("capabilities".into(), Value::Object(capabilities));
    if !rlimits.is_empty() {
        process.insert("rlimits".into(), json!(rlimits));
    }
    if yaml
        .no_new_privileges
        .or(label.no_new_privileges)
        .unwrap_or(false)
    {
        process.insert("noNewPrivileges".into(), json!(true));
    }
    if let Some(adj) = yaml.oom_score_adj.or(label.oom_score_adj) {
        process.insert("oomScoreAdj".into(), json!(adj));
    }

    let mut resources: Resources = pick(&yaml.resources, &label.resources)
        .cloned()
        .unwrap_or_default();
    let mut devices = Vec::new();
    for (i, d) in pick(&yaml.devices, &label.devices)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cgroup_rule = |major, minor| kiln_manifest::DeviceCgroup {
            allow: true,
            kind: Some(d.kind.clone()),
            major,
            minor,
            access: Some("rwm".into()),
        };
        if d.path == "all" {
            resources
                .devices
                .get_or_insert_with(Vec::new)
                .push(cgroup_rule(None, None));
            continue;
        }
        let mode = d.mode.as_deref().unwrap_or("");
        let mode = u32::from_str_radix(mode, 8).map_err(|_| {
            (
                format!("devices[{i}].mode"),
                format!("cannot parse device mode `{mode}` as an octal value"),
            )
        })?;
        devices.push(json!({"path": d.path, "type": d.kind, "major": d.major, "minor": d.minor, "fileMode": mode}));
        resources
            .devices
            .get_or_insert_with(Vec::new)
            .push(cgroup_rule(Some(d.major), Some(d.minor)));
    }

    let mut linux = Map::new();
    let mappings = |v: Option<&Vec<kiln_manifest::IdMapping>>| -> Vec<Value> {
        v.into_iter()
            .flatten()
            .map(|m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.size}))
            .collect()
    };
    let uid_maps = mappings(pick(&yaml.uid_mappings, &label.uid_mappings));
    let gid_maps = mappings(pick(&yaml.gid_mappings, &label.gid_mappings));
    if !uid_maps.is_empty() {
        linux.insert("uidMappings".into(), json!(uid_maps));
    }
    if !gid_maps.is_empty() {
        linux.insert("gidMappings".into(), json!(gid_maps));
    }
    if let Some(s) = pick(&yaml.sysctl, &label.sysctl).filter(|s| !s.is_empty()) {
        linux.insert("sysctl".into(), json!(s));
    }
    if resources.devices.as_ref().is_some_and(|d| d.is_empty()) {
        resources.devices = None;
    }
    linux.insert(
        "resources".into(),
        serde_json::to_value(&resources).unwrap_or_else(|_| json!({})),
    );
    if let Some(p) = pick(&yaml.cgroups_path, &label.cgroups_path).filter(|p| !p.is_empty()) {
        linux.insert("cgroupsPath".into(), json!(p));
    }
    linux.insert("namespaces".into(), json!(namespaces));
    if !devices.is_empty() {
        linux.insert("devices".into(), json!(devices));
    }
    if let Some(p) =
        pick(&yaml.rootfs_propagation, &label.rootfs_propagation).filter(|p| !p.is_empty())
    {
        linux.insert("rootfsPropagation".into(), json!(p));
    }
    for (key, v) in [
        ("maskedPaths", pick(&yaml.masked_paths, &label.masked_paths)),
        (
            "readonlyPaths",
            pick(&yaml.readonly_paths, &label.readonly_paths),
        ),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            linux.insert(key.into(), json!(v));
        }
    }

    let mut root = Map::new();
    root.insert("path".into(), json!("rootfs"));
    if readonly {
        root.insert("readonly".into(), json!(true));
    }
    let mut config = Map::new();
    config.insert("ociVersion".into(), json!("1.2.1"));
    config.insert("process".into(), Value::Object(process));
    config.insert("root".into(), Value::Object(root));
    if let Some(h) = pick(&yaml.hostname, &label.hostname).filter(|h| !h.is_empty()) {
        config.insert("hostname".into(), json!(h));
    }
    config.insert(
        "mounts".into(),
        Value::Array(mounts.into_values().collect()),
    );
    if let Some(a) = pick(&yaml.annotations, &label.annotations).filter(|a| !a.is_empty()) {
        config.insert("annotations".into(), json!(a));
    }
    config.insert("linux".into(), Value::Object(linux));

    let rest = merge_runtime(label.runtime.as_ref(), yaml.runtime.as_ref());
    let runtime_mounts = rest.mounts.iter().flatten().map(mount_json).collect();
    Ok(Bundle {
        config: Value::Object(config),
        runtime: RuntimeJson {
            mounts: runtime_mounts,
            rest,
            extensions: {
                let mut e = Vec::new();
                if let Some(r) = yaml.restart.or(label.restart) {
                    e.push(("restart", json!(r)));
                }
                if let Some(d) = pick(&yaml.depends_on, &label.depends_on) {
                    e.push(("dependsOn", json!(d)));
                }
                e
            },
        },
        readonly,
    })
}

/// Go's `json.MarshalIndent(v, "", "    ")`: kiln writes config.json and runtime.json byte for
/// byte as LinuxKit does.
pub fn to_go_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    out
}
