//! Every way a malformed or hostile configuration used to fail open is refused with the field
//! named; LinuxKit's files round-trip byte for byte.

use crate::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

/// config.json as LinuxKit writes it for a service with most options (03-security's).
const LINUXKIT_CONFIG: &str = r#"{
    "ociVersion": "1.2.1",
    "process": {
        "user": {
            "uid": 1000,
            "gid": 1000,
            "additionalGids": [
                10,
                20
            ]
        },
        "args": [
            "/bin/tool",
            "run"
        ],
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ],
        "cwd": "/",
        "capabilities": {
            "bounding": [
                "CAP_CHOWN",
                "CAP_NET_BIND_SERVICE"
            ],
            "effective": [
                "CAP_NET_BIND_SERVICE",
                "CAP_CHOWN"
            ],
            "inheritable": [
                "CAP_CHOWN",
                "CAP_NET_BIND_SERVICE"
            ],
            "permitted": [
                "CAP_CHOWN",
                "CAP_NET_BIND_SERVICE"
            ],
            "ambient": [
                "CAP_NET_BIND_SERVICE"
            ]
        },
        "rlimits": [
            {
                "type": "RLIMIT_NOFILE",
                "hard": 4096,
                "soft": 1024
            },
            {
                "type": "RLIMIT_NPROC",
                "hard": 18446744073709551615,
                "soft": 18446744073709551615
            }
        ],
        "noNewPrivileges": true,
        "oomScoreAdj": -500
    },
    "root": {
        "path": "rootfs"
    },
    "hostname": "secure-host",
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
            "destination": "/state",
            "type": "bind",
            "source": "/var/lib",
            "options": [
                "rbind",
                "ro"
            ]
        }
    ],
    "annotations": {
        "org.example.owner": "platform-team"
    },
    "linux": {
        "sysctl": {
            "net.ipv4.ip_forward": "1"
        },
        "resources": {
            "devices": [
                {
                    "allow": true,
                    "type": "c",
                    "major": 1,
                    "minor": 3,
                    "access": "rwm"
                }
            ],
            "memory": {
                "limit": 67108864
            },
            "cpu": {
                "shares": 512
            }
        },
        "cgroupsPath": "kiln/secure",
        "namespaces": [
            {
                "type": "pid"
            },
            {
                "type": "network",
                "path": "/run/netns/app"
            },
            {
                "type": "mount"
            }
        ],
        "devices": [
            {
                "path": "/dev/null",
                "type": "c",
                "major": 1,
                "minor": 3,
                "fileMode": 438
            }
        ],
        "rootfsPropagation": "shared",
        "maskedPaths": [
            "/proc/kcore"
        ],
        "readonlyPaths": [
            "/proc/sys"
        ]
    }
}"#;

const LINUXKIT_RUNTIME: &str = r#"{
    "cgroups": [],
    "mounts": [
        {
            "destination": "/containers/onboot/000-netprep/tmp",
            "type": "tmpfs",
            "source": "tmpfs"
        },
        {
            "destination": "/containers/onboot/000-netprep/tmp",
            "options": [
                "remount",
                "private"
            ]
        }
    ],
    "mkdir": [
        "/var/lib/netprep",
        "/run/netns"
    ],
    "interfaces": [
        {
            "name": "veth-a",
            "add": "veth",
            "peer": "veth-b",
            "createInRoot": false
        }
    ],
    "bindNS": {
        "cgroup": "",
        "ipc": "",
        "mnt": "",
        "net": "/run/netns/app",
        "pid": "",
        "user": "",
        "uts": ""
    },
    "namespace": ""
}"#;

fn base() -> Value {
    serde_json::from_str(LINUXKIT_CONFIG).expect("fixture")
}

fn file() -> &'static Path {
    Path::new("/bundle/config.json")
}

/// Parse and validate `v` as config.json.
fn check(v: &Value) -> Result<Spec, SpecError> {
    let spec = parse_config(&v.to_string(), file())?;
    spec.validate().map_err(|problem| SpecError::Field {
        file: file().to_path_buf(),
        at: None,
        problem,
    })?;
    Ok(spec)
}

/// `v` is refused, the message naming the file, `field` and `value`.
#[track_caller]
fn refused(v: &Value, field: &str, value: &str) -> String {
    let err = match check(v) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.starts_with("/bundle/config.json"), "{msg}");
    let invalid = err
        .invalid()
        .unwrap_or_else(|| panic!("not a field error: {msg}"));
    assert_eq!(invalid.field, field, "{msg}");
    assert!(
        msg.contains(&format!("{field} = {value}")),
        "`{field} = {value}` not in: {msg}"
    );
    msg
}

#[test]
fn linuxkit_files_round_trip_byte_for_byte() {
    let spec = check(&base()).expect("valid");
    assert_eq!(
        String::from_utf8(to_go_json(&spec)).expect("utf-8"),
        LINUXKIT_CONFIG
    );
    let rt = parse_runtime(LINUXKIT_RUNTIME, Path::new("runtime.json")).expect("runtime");
    rt.validate().expect("valid runtime");
    assert_eq!(
        String::from_utf8(to_go_json(&rt)).expect("utf-8"),
        LINUXKIT_RUNTIME
    );
}

#[test]
fn uid_of_the_wrong_type_is_refused_never_root() {
    for (bad, shown) in [
        (json!("0"), "\"0\""),
        (json!("1000"), "\"1000\""),
        (json!(-1), "-1"),
        (json!(4_294_967_296_u64), "4294967296"),
        (json!(1.5), "1.5"),
        (json!(null), "null"),
        (json!([1000]), "[1000]"),
    ] {
        let mut v = base();
        v["process"]["user"]["uid"] = bad;
        let msg = refused(&v, "process.user.uid", shown);
        assert!(msg.contains("4294967295"), "says what to expect: {msg}");
    }
    let mut v = base();
    v["process"]["user"]["gid"] = json!(-5);
    refused(&v, "process.user.gid", "-5");
    let mut v = base();
    v["process"]["user"]["additionalGids"] = json!([10, "wheel"]);
    refused(&v, "process.user.additionalGids[1]", "\"wheel\"");
}

#[test]
fn a_missing_uid_is_refused() {
    let mut v = base();
    v["process"]["user"]
        .as_object_mut()
        .expect("user")
        .remove("uid");
    let err = check(&v).expect_err("missing uid");
    assert_eq!(
        err.invalid().map(|i| i.field.as_str()),
        Some("process.user.uid")
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn capabilities_of_the_wrong_type_are_refused() {
    for (bad, shown) in [
        (json!(["CAP_SYS_ADMIN"]), "[\"CAP_SYS_ADMIN\"]"),
        (json!("ALL"), "\"ALL\""),
        (json!(null), "null"),
        (json!(true), "true"),
    ] {
        let mut v = base();
        v["process"]["capabilities"] = bad;
        let msg = refused(&v, "process.capabilities", shown);
        assert!(msg.contains("bounding"), "says what to expect: {msg}");
    }
    let mut v = base();
    v["process"]["capabilities"]["bounding"] = json!("CAP_SYS_ADMIN");
    refused(&v, "process.capabilities.bounding", "\"CAP_SYS_ADMIN\"");
    let mut v = base();
    v["process"]["capabilities"]["effective"] = json!(["CAP_CHOWN", "CAP_EVERYTHING"]);
    refused(
        &v,
        "process.capabilities.effective[1]",
        "\"CAP_EVERYTHING\"",
    );
}

#[test]
fn absent_capabilities_are_none() {
    let mut v = base();
    v["process"]
        .as_object_mut()
        .expect("process")
        .remove("capabilities");
    let spec = check(&v).expect("valid");
    assert_eq!(spec.process.capabilities, None);
    let caps = spec.capabilities();
    assert!(caps.sets().iter().all(|(_, s)| s.is_empty()), "{caps:?}");
}

#[test]
fn flags_and_lists_given_as_strings_are_refused() {
    let mut v = base();
    v["process"]["noNewPrivileges"] = json!("true");
    refused(&v, "process.noNewPrivileges", "\"true\"");
    let mut v = base();
    v["root"]["readonly"] = json!("true");
    refused(&v, "root.readonly", "\"true\"");
    let mut v = base();
    v["linux"]["maskedPaths"] = json!("/proc/kcore");
    refused(&v, "linux.maskedPaths", "\"/proc/kcore\"");
    let mut v = base();
    v["linux"]["readonlyPaths"] = json!("/proc/sys");
    refused(&v, "linux.readonlyPaths", "\"/proc/sys\"");
    let mut v = base();
    v["process"]["rlimits"] = json!("nofile,1024,4096");
    refused(&v, "process.rlimits", "\"nofile,1024,4096\"");
    let mut v = base();
    v["process"]["rlimits"][0]["soft"] = json!("1024");
    refused(&v, "process.rlimits[0].soft", "\"1024\"");
    let mut v = base();
    v["process"]["oomScoreAdj"] = json!(null);
    refused(&v, "process.oomScoreAdj", "null");
    let mut v = base();
    v["process"]["rlimits"][0]["type"] = json!("RLIMIT_BOGUS");
    refused(&v, "process.rlimits[0].type", "\"RLIMIT_BOGUS\"");
}

#[test]
fn user_and_unknown_namespaces_are_refused() {
    let mut v = base();
    v["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "user"}));
    let msg = refused(&v, "linux.namespaces[3].type", "\"user\"");
    assert!(msg.contains("does not support user namespaces"), "{msg}");
    let mut v = base();
    v["linux"]["namespaces"][0] = json!({"type": "bogus"});
    refused(&v, "linux.namespaces[0].type", "\"bogus\"");
    let mut v = base();
    v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    refused(
        &v,
        "linux.uidMappings",
        "[{\"containerID\":0,\"hostID\":1000,\"size\":1}]",
    );
    let mut v = base();
    v["linux"]["namespaces"][2] = json!({"type": "pid"});
    refused(&v, "linux.namespaces[2].type", "\"pid\"");
}

#[test]
fn paths_that_leave_the_root_are_refused() {
    let mut v = base();
    v["linux"]["devices"][0]["path"] = json!("/dev/../../../tmp/kiln-escape");
    let msg = refused(
        &v,
        "linux.devices[0].path",
        "\"/dev/../../../tmp/kiln-escape\"",
    );
    assert!(msg.contains("leaves the container's root"), "{msg}");
    let mut v = base();
    v["mounts"][0]["destination"] = json!("/../etc");
    refused(&v, "mounts[0].destination", "\"/../etc\"");
    let mut v = base();
    v["linux"]["maskedPaths"] = json!(["../../etc/shadow"]);
    refused(&v, "linux.maskedPaths[0]", "\"../../etc/shadow\"");
    let mut v = base();
    v["linux"]["cgroupsPath"] = json!("../../../etc");
    refused(&v, "linux.cgroupsPath", "\"../../../etc\"");
    let mut v = base();
    v["linux"]["devices"][0]["major"] = json!(1 << 12);
    refused(&v, "linux.devices[0].major", "4096");
    let mut v = base();
    v["linux"]["resources"]["unified"] = json!({"../../cgroup.procs": "1"});
    refused(&v, "linux.resources.unified.../../cgroup.procs", "\"1\"");
    // `..` that stays inside is fine.
    let mut v = base();
    v["linux"]["devices"][0]["path"] = json!("/dev/x/../null");
    check(&v).expect("stays inside");
}

#[test]
fn sysctls_must_be_namespaced() {
    let mut v = base();
    v["linux"]["sysctl"] = json!({"vm.overcommit_ratio": "51"});
    let msg = refused(&v, "linux.sysctl.vm.overcommit_ratio", "\"51\"");
    assert!(msg.contains("not namespaced"), "{msg}");
    let mut v = base();
    v["linux"]["sysctl"] = json!({"kernel.shmmax": "1"});
    let msg = refused(&v, "linux.sysctl.kernel.shmmax", "\"1\"");
    assert!(msg.contains("ipc namespace"), "{msg}");
    v["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "ipc"}));
    check(&v).expect("with an ipc namespace");
    let mut v = base();
    v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}]);
    refused(&v, "linux.sysctl.net.ipv4.ip_forward", "\"1\"");
    let mut v = base();
    v["linux"]["sysctl"] = json!({"kernel.domainname": "x", "kernel.hostname": "y"});
    refused(&v, "linux.sysctl.kernel.domainname", "\"x\"");
    v["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({"type": "uts"}));
    check(&v).expect("with a uts namespace");
    let mut v = base();
    v["linux"]["sysctl"] = json!({"net..x": "1"});
    refused(&v, "linux.sysctl.net..x", "\"1\"");
    let mut v = base();
    v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": 1});
    refused(&v, "linux.sysctl.net.ipv4.ip_forward", "1");
}

#[test]
fn binding_the_hosts_proc_is_refused() {
    for source in ["/proc", "/proc/1/root", "/x/../proc/sys", "//proc"] {
        let mut v = base();
        v["mounts"][1]["source"] = json!(source);
        let msg = refused(&v, "mounts[1].source", &Value::from(source).to_string());
        assert!(msg.contains("host's /proc"), "{msg}");
    }
    // A bind by option only.
    let mut v = base();
    v["mounts"][0] = json!({"destination": "/p", "source": "/proc", "options": ["rbind"]});
    refused(&v, "mounts[0].source", "\"/proc\"");
    // A new proc file system is what containers should mount.
    let mut v = base();
    v["mounts"][0] = json!({"destination": "/proc", "type": "proc", "source": "proc"});
    check(&v).expect("a new proc");
}

#[test]
fn confinement_kiln_cannot_apply_is_refused_not_ignored() {
    // A seccomp filter is applied by the runtime, not refused.
    let mut v = base();
    v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ERRNO"});
    check(&v).expect("a seccomp filter");
    let mut v = base();
    v["process"]["apparmorProfile"] = json!("docker-default");
    refused(&v, "process.apparmorProfile", "\"docker-default\"");
    let mut v = base();
    v["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    refused(
        &v,
        "process.selinuxLabel",
        "\"system_u:system_r:container_t:s0\"",
    );
}

#[test]
fn syntax_errors_are_located() {
    let err = parse_config("{\"ociVersion\": ", file()).expect_err("truncated");
    assert!(matches!(err, SpecError::Syntax { line: 1, .. }), "{err}");
    let err = parse_config(&format!("{LINUXKIT_CONFIG} x"), file()).expect_err("trailing");
    assert!(matches!(err, SpecError::Syntax { .. }), "{err}");
    let err = parse_config("[]", file()).expect_err("not an object");
    assert!(err.to_string().contains("(the top level)"), "{err}");
    // A struct given as a list (serde would read it field by field) is refused.
    let mut v = base();
    v["process"]["user"] = json!([0, 0]);
    refused(&v, "process.user", "[0,0]");
    let mut v = base();
    v["process"]["capabilities"] = json!([["CAP_SYS_ADMIN"]]);
    refused(&v, "process.capabilities", "[[\"CAP_SYS_ADMIN\"]]");
    let mut v = base();
    v["mounts"][0] = json!(["/x", "bind", "/proc"]);
    refused(&v, "mounts[0]", "[\"/x\",\"bind\",\"/proc\"]");
}

#[test]
fn runtime_json_is_typed_too() {
    let rt: Value = serde_json::from_str(LINUXKIT_RUNTIME).expect("fixture");
    let parse = |v: &Value| {
        let r = parse_runtime(&v.to_string(), Path::new("runtime.json"))?;
        r.validate().map_err(|problem| SpecError::Field {
            file: "runtime.json".into(),
            at: None,
            problem,
        })?;
        Ok::<_, SpecError>(r)
    };
    let field = |v: &Value| {
        parse(v)
            .expect_err("refused")
            .invalid()
            .map(|i| i.field.clone())
    };
    let mut v = rt.clone();
    v["mkdir"] = json!("/var/lib/x");
    assert_eq!(field(&v).as_deref(), Some("mkdir"));
    let mut v = rt.clone();
    v["interfaces"][0]["peer"] = json!("");
    assert_eq!(field(&v).as_deref(), Some("interfaces[0].peer"));
    let mut v = rt.clone();
    v["interfaces"][0]["add"] = json!("bridge");
    assert_eq!(field(&v).as_deref(), Some("interfaces[0].add"));
    let mut v = rt.clone();
    v["bindNS"]["net"] = json!(7);
    assert_eq!(field(&v).as_deref(), Some("bindNS.net"));
    let mut v = rt.clone();
    v["restart"] = json!("sometimes");
    assert_eq!(field(&v).as_deref(), Some("restart"));
    let mut v = rt.clone();
    v["restart"] = json!("on-failure");
    v["dependsOn"] = json!(["db"]);
    let r = parse(&v).expect("extensions");
    assert_eq!(r.restart, Some(RestartPolicy::OnFailure));
    assert_eq!(r.depends_on, Some(vec!["db".to_string()]));
    // Absent fields are empty.
    let r = parse(&json!({})).expect("empty");
    assert!(r.mounts.is_empty() && r.bind_ns.is_empty() && r.restart.is_none());
}

#[test]
fn loading_refuses_what_is_not_a_small_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(load_runtime(dir.path()).expect("no runtime.json").is_none());
    assert!(matches!(
        load_config(dir.path()),
        Err(SpecError::Read { .. })
    ));
    std::fs::create_dir(dir.path().join(CONFIG_FILE)).expect("mkdir");
    let err = load_config(dir.path()).expect_err("a directory");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_dir(dir.path().join(CONFIG_FILE)).expect("rmdir");
    let big = format!(
        "{{\"x\": \"{}\"}}",
        "a".repeat(usize::try_from(MAX_FILE_SIZE).unwrap_or(0))
    );
    std::fs::write(dir.path().join(CONFIG_FILE), big).expect("write");
    let err = load_config(dir.path()).expect_err("too large");
    assert!(err.to_string().contains("larger than"), "{err}");
    std::fs::write(dir.path().join(CONFIG_FILE), LINUXKIT_CONFIG).expect("write");
    let spec = load_config(dir.path()).expect("valid");
    assert_eq!(spec.process.user.uid, 1000);
}

#[test]
fn container_paths_are_cleaned() {
    assert_eq!(
        container_path("/dev//x/./y/../null").as_deref(),
        Ok("/dev/x/null")
    );
    assert_eq!(container_path("dev/null").as_deref(), Ok("/dev/null"));
    assert_eq!(container_path("/..").ok(), None);
    assert_eq!(container_path("").ok(), None);
    assert!(is_host_proc("/proc/self/../1"));
    assert!(!is_host_proc("/process"));
    assert!(!is_host_proc("proc"));
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z/._-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every field path of the fixture that holds a scalar or a container.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(PathStep::Key(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathStep::Index(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn replace_at(v: &mut Value, path: &[PathStep], new: Value) {
    let mut cur = v;
    for step in path {
        cur = match step {
            PathStep::Key(k) => &mut cur[k.as_str()],
            PathStep::Index(i) => &mut cur[*i],
        };
    }
    *cur = new;
}

proptest! {
    /// Replacing any field of a valid config by any JSON value either parses to a config that
    /// round-trips, or is refused with an error naming a field of the file (never a panic, never
    /// a silent default: what parses is what the file says).
    #[test]
    fn any_field_replaced_by_any_value(choice in any::<prop::sample::Index>(), new in any_json()) {
        let original = base();
        let mut all = Vec::new();
        paths(&original, &mut Vec::new(), &mut all);
        let path = &all[choice.index(all.len())];
        let mut v = original.clone();
        replace_at(&mut v, path, new);
        match parse_config(&v.to_string(), file()) {
            Ok(spec) => {
                // Parsed: re-serialized, it parses to the same configuration.
                let again = parse_config(
                    &String::from_utf8(to_go_json(&spec)).expect("utf-8"),
                    file(),
                ).expect("round trip");
                prop_assert_eq!(&again, &spec);
                let _ = spec.validate();
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("/bundle/config.json"), "{}", msg);
            }
        }
    }

    /// A uid that is not a number from 0 to 4294967295 is always refused.
    #[test]
    fn uid_out_of_range_is_refused(n in prop_oneof![i64::MIN..0i64, Just(-1i64)], m in (u64::from(u32::MAX) + 1)..u64::MAX, s in "[0-9]{1,6}") {
        for bad in [json!(n), json!(m), json!(s)] {
            let mut v = base();
            v["process"]["user"]["uid"] = bad;
            let e = parse_config(&v.to_string(), file()).expect_err("refused");
            prop_assert_eq!(e.invalid().map(|i| i.field.as_str()), Some("process.user.uid"));
        }
    }

    /// A cleaned container path never climbs out: it is absolute and has no `.` or `..`.
    #[test]
    fn container_path_stays_inside(parts in prop::collection::vec(prop_oneof![
        Just(".."), Just("."), Just(""), Just("dev"), Just("x"), Just("...")
    ], 0..10)) {
        let p = parts.join("/");
        if let Ok(clean) = container_path(&p) {
            prop_assert!(clean.starts_with('/'));
            prop_assert!(clean.split('/').all(|c| c != ".." && c != "."), "{}", clean);
            // Lexically, as many `..` as remain never exceed the depth reached.
            let mut depth = 0i32;
            for c in p.split('/') {
                match c {
                    "" | "." => {}
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
                prop_assert!(depth >= 0);
            }
        }
    }

    /// Arbitrary text never panics the parsers.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_config(&text, file()).map(|s| s.validate());
        let _ = parse_runtime(&text, file()).map(|r| r.validate());
    }
}
