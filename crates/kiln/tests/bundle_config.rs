//! `kiln run bundle` fails closed: each hostile or malformed bundle is refused before anything
//! runs, with a message naming config.json (or runtime.json), the field and its value, and
//! nothing is created outside the bundle — nor inside it. A well-formed bundle on the same
//! runtime runs, without capabilities when it asks for none. Needs root, as the runtime does.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The busybox package unpacked once, for the bundle that runs.
fn busybox_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| unpacked_busybox("bundle-config-busybox", &["proc", "dev"]))
}

/// A config that would run `/bin/sh` as root with no capabilities, in new namespaces, on
/// `rootfs`, and print RAN.
fn config(rootfs: &Path) -> Value {
    json!({
        "ociVersion": "1.2.1",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", "echo RAN; grep CapEff /proc/self/status"],
            "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"],
            "cwd": "/"
        },
        "root": {"path": rootfs},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "network"}
            ]
        }
    })
}

/// What a bundle run printed and its exit code.
struct Run {
    code: Option<i32>,
    output: String,
}

/// `kiln run bundle --prepare DIR` with `config` (and `runtime`) written as given.
fn run(bundle: &Path, config: &str, runtime: Option<&str>) -> Run {
    std::fs::write(bundle.join("config.json"), config).expect("config.json");
    if let Some(rt) = runtime {
        std::fs::write(bundle.join("runtime.json"), rt).expect("runtime.json");
    }
    let out = kiln()
        .args(["run", "bundle", "--prepare"])
        .arg(bundle)
        .output()
        .expect("spawn kiln run bundle");
    Run {
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).expect("inside").to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_well_formed_bundle_runs_without_capabilities_when_it_names_none() {
    if !is_root() {
        return;
    }
    let bundle = tempfile::tempdir().expect("tempdir");
    let r = run(bundle.path(), &config(busybox_root()).to_string(), None);
    assert_eq!(r.code, Some(0), "{}", r.output);
    assert!(r.output.contains("RAN"), "{}", r.output);
    // Absent capabilities are none, even for uid 0 (as runc), not all of root's.
    assert!(
        r.output.contains("CapEff:\t0000000000000000"),
        "{}",
        r.output
    );
}

/// One hostile change to a valid config: the field it must be refused for and how its value
/// is shown.
struct Case {
    name: &'static str,
    change: fn(&mut Value),
    field: &'static str,
    shown: &'static str,
}

/// From work/bundle/rootfs, `/../../escaped` is work/escaped: outside the bundle, where the
/// test looks for it.
const ESCAPE: &str = "../../escaped";

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "uid as a string",
            change: |c| c["process"]["user"]["uid"] = json!("0"),
            field: "process.user.uid",
            shown: "\"0\"",
        },
        Case {
            name: "negative uid",
            change: |c| c["process"]["user"]["uid"] = json!(-1),
            field: "process.user.uid",
            shown: "-1",
        },
        Case {
            name: "uid above u32",
            change: |c| c["process"]["user"]["uid"] = json!(4_294_967_296_u64),
            field: "process.user.uid",
            shown: "4294967296",
        },
        Case {
            name: "capabilities as a list",
            change: |c| c["process"]["capabilities"] = json!(["CAP_SYS_ADMIN"]),
            field: "process.capabilities",
            shown: "[\"CAP_SYS_ADMIN\"]",
        },
        Case {
            name: "capabilities as a string",
            change: |c| c["process"]["capabilities"] = json!("ALL"),
            field: "process.capabilities",
            shown: "\"ALL\"",
        },
        Case {
            name: "capabilities null",
            change: |c| c["process"]["capabilities"] = Value::Null,
            field: "process.capabilities",
            shown: "null",
        },
        Case {
            name: "noNewPrivileges as a string",
            change: |c| c["process"]["noNewPrivileges"] = json!("true"),
            field: "process.noNewPrivileges",
            shown: "\"true\"",
        },
        Case {
            name: "readonly as a string",
            change: |c| c["root"]["readonly"] = json!("true"),
            field: "root.readonly",
            shown: "\"true\"",
        },
        Case {
            name: "maskedPaths as a string",
            change: |c| c["linux"]["maskedPaths"] = json!("/proc/kcore"),
            field: "linux.maskedPaths",
            shown: "\"/proc/kcore\"",
        },
        Case {
            name: "rlimits as a string",
            change: |c| c["process"]["rlimits"] = json!("nofile,1024,4096"),
            field: "process.rlimits",
            shown: "\"nofile,1024,4096\"",
        },
        Case {
            name: "rlimit values as strings",
            change: |c| {
                c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": "8", "soft": 8}])
            },
            field: "process.rlimits[0].hard",
            shown: "\"8\"",
        },
        Case {
            name: "a user namespace",
            change: |c| push(&mut c["linux"]["namespaces"], json!({"type": "user"})),
            field: "linux.namespaces[5].type",
            shown: "\"user\"",
        },
        Case {
            name: "an unknown namespace",
            change: |c| push(&mut c["linux"]["namespaces"], json!({"type": "time2"})),
            field: "linux.namespaces[5].type",
            shown: "\"time2\"",
        },
        Case {
            name: "a device path leaving the root",
            change: |c| {
                c["linux"]["devices"] = json!([{"path": format!("/{ESCAPE}-dev"),
                    "type": "b", "major": 8, "minor": 0, "fileMode": 438}])
            },
            field: "linux.devices[0].path",
            shown: "\"/../../escaped-dev\"",
        },
        Case {
            name: "a mount destination leaving the root",
            change: |c| {
                push(
                    &mut c["mounts"],
                    json!({"destination": format!("/{ESCAPE}-mnt"), "type": "tmpfs",
                        "source": "tmpfs"}),
                )
            },
            field: "mounts[1].destination",
            shown: "\"/../../escaped-mnt\"",
        },
        Case {
            name: "a sysctl no namespace holds",
            change: |c| c["linux"]["sysctl"] = json!({"vm.overcommit_ratio": "51"}),
            field: "linux.sysctl.vm.overcommit_ratio",
            shown: "\"51\"",
        },
        Case {
            name: "the host's /proc bound in",
            change: |c| {
                push(
                    &mut c["mounts"],
                    json!({"destination": "/host-proc", "type": "bind", "source": "/proc",
                        "options": ["rbind"]}),
                )
            },
            field: "mounts[1].source",
            shown: "\"/proc\"",
        },
    ]
}

fn push(list: &mut Value, v: Value) {
    if let Some(a) = list.as_array_mut() {
        a.push(v);
    }
}

#[test]
fn hostile_configs_are_refused_with_the_field_and_nothing_is_created() {
    if !is_root() {
        return;
    }
    let overcommit = || std::fs::read_to_string("/proc/sys/vm/overcommit_ratio").expect("sysctl");
    let host_overcommit = overcommit();
    let mut failures = Vec::new();
    for case in cases() {
        // work/bundle/rootfs: an escape through `..` from the root lands in work/.
        let work = tempfile::tempdir().expect("tempdir");
        let bundle = work.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).expect("rootfs");
        let mut c = config(Path::new("rootfs"));
        (case.change)(&mut c);
        let r = run(&bundle, &c.to_string(), None);
        let named = format!("{} = {}", case.field, case.shown);
        if r.code == Some(0)
            || r.output.contains("RAN")
            || !r.output.contains("config.json")
            || !r.output.contains(&named)
        {
            failures.push(format!(
                "{}: expected a refusal naming config.json and `{named}`, got {:?}:\n{}",
                case.name, r.code, r.output
            ));
        }
        let left: Vec<PathBuf> = tree(work.path());
        let expected: Vec<PathBuf> = ["bundle", "bundle/config.json", "bundle/rootfs"]
            .iter()
            .map(PathBuf::from)
            .collect();
        if left != expected {
            failures.push(format!("{}: files were created: {left:?}", case.name));
        }
    }
    assert_eq!(overcommit(), host_overcommit, "the host's sysctl changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_runtime_json_is_refused_before_the_host_is_touched() {
    if !is_root() {
        return;
    }
    for (runtime, named) in [
        (json!({"mkdir": "/tmp/x"}), "mkdir = \"/tmp/x\""),
        (
            json!({"mkdir": ["relative/dir"]}),
            "mkdir[0] = \"relative/dir\"",
        ),
        (
            json!({"interfaces": [{"name": "x0", "add": "bridge"}]}),
            "interfaces[0].add = \"bridge\"",
        ),
        (json!({"bindNS": {"net": 7}}), "bindNS.net = 7"),
        (json!({"restart": "sometimes"}), "restart = \"sometimes\""),
    ] {
        let work = tempfile::tempdir().expect("tempdir");
        let bundle = work.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).expect("rootfs");
        let c = config(Path::new("rootfs"));
        let r = run(&bundle, &c.to_string(), Some(&runtime.to_string()));
        assert_ne!(r.code, Some(0), "{runtime}: {}", r.output);
        assert!(
            r.output.contains("runtime.json") && r.output.contains(named),
            "{runtime}: expected `{named}` in:\n{}",
            r.output
        );
        assert!(!r.output.contains("RAN"), "{}", r.output);
        assert!(
            !Path::new("relative/dir").exists() && !work.path().join("bundle/relative").exists(),
            "a directory was created"
        );
    }
}

/// The mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// A bundle whose root holds a link out of it: `abs` to the directory `outside` next to the
/// bundle by its absolute path, `rel` climbing there with `../../outside`. On the host both
/// lead out of the root; the runtime resolves them inside it (as if the root were `/`), so
/// mounts, devices, masked and read-only paths through them land inside the root, or the run
/// is refused when nothing is there, and never is anything made or mounted outside.
#[test]
fn links_in_the_root_cannot_lead_mounts_or_devices_out_of_it() {
    if !is_root() {
        return;
    }
    let mut failures = Vec::new();
    for link in ["abs", "rel"] {
        for case in ["resolves inside", "mount to nothing", "device to nothing"] {
            let name = format!("{link}, {case}");
            let work = tempfile::tempdir().expect("tempdir");
            let (bundle, outside) = (work.path().join("bundle"), work.path().join("outside"));
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&bundle).expect("bundle");
            std::fs::create_dir(&outside).expect("outside");
            run_ok(
                std::process::Command::new("cp")
                    .arg("-a")
                    .arg(busybox_root())
                    .arg(&rootfs),
            );
            std::os::unix::fs::symlink(&outside, rootfs.join("abs")).expect("link");
            std::os::unix::fs::symlink("../../outside", rootfs.join("rel")).expect("link");
            // Where the link leads when resolved inside the root.
            let resolved = match link {
                "abs" => outside.clone(),
                _ => PathBuf::from("/outside"),
            };
            let resolved = resolved.to_string_lossy().into_owned();
            std::fs::write(bundle.join("host-file"), "FROM-THE-HOST\n").expect("host file");
            let mut c = config(Path::new("rootfs"));
            match case {
                "resolves inside" => {
                    let there = rootfs.join(resolved.trim_start_matches('/'));
                    std::fs::create_dir_all(&there).expect("inside");
                    std::fs::write(there.join("secret"), "TOP-SECRET\n").expect("secret");
                    push(
                        &mut c["mounts"],
                        json!({"destination": format!("/{link}/mnt"), "type": "tmpfs",
                            "source": "tmpfs"}),
                    );
                    push(
                        &mut c["mounts"],
                        json!({"destination": format!("/{link}/file"), "type": "bind",
                            "source": bundle.join("host-file"), "options": ["bind", "ro"]}),
                    );
                    c["linux"]["devices"] = json!([{"path": format!("/{link}/null"),
                        "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
                    c["linux"]["maskedPaths"] = json!([format!("/{link}/secret")]);
                    c["linux"]["readonlyPaths"] = json!([format!("/{link}/mnt")]);
                    c["process"]["args"] = json!([
                        "/bin/sh",
                        "-c",
                        format!(
                            "echo RAN; grep -q ' {resolved}/mnt ' /proc/self/mountinfo && echo MOUNTED; \
                         cat /{link}/file /{link}/secret; ls -l /{link}/null; \
                         touch /{link}/mnt/w 2>/dev/null && echo WRITABLE || echo READ-ONLY"
                        )
                    ]);
                }
                "mount to nothing" => push(
                    &mut c["mounts"],
                    json!({"destination": format!("/{link}/mnt"), "type": "tmpfs",
                        "source": "tmpfs"}),
                ),
                _ => {
                    c["linux"]["devices"] = json!([{"path": format!("/{link}/null"),
                        "type": "c", "major": 1, "minor": 3, "fileMode": 438}])
                }
            }
            let r = run(&bundle, &c.to_string(), None);
            match case {
                "resolves inside" => {
                    let ran = r.code == Some(0)
                        && ["RAN", "MOUNTED", "FROM-THE-HOST", "crw-rw-rw-", "READ-ONLY"]
                            .iter()
                            .all(|s| r.output.contains(s))
                        && !r.output.contains("TOP-SECRET")
                        && !r.output.contains("WRITABLE");
                    if !ran {
                        failures.push(format!(
                            "{name}: expected the run with its mounts inside the root, got \
                             {:?}:\n{}",
                            r.code, r.output
                        ));
                    }
                }
                _ => {
                    let what = if case == "mount to nothing" {
                        format!("/{link}/mnt")
                    } else {
                        format!("/{link}/null")
                    };
                    // The command line, with its `echo RAN`, is in the message: not a line RAN.
                    let ran = r.output.lines().any(|l| l == "RAN");
                    if r.code == Some(0) || ran || !r.output.contains(&what) {
                        failures.push(format!(
                            "{name}: expected a refusal naming {what}, got {:?}:\n{}",
                            r.code, r.output
                        ));
                    }
                }
            }
            let left: Vec<PathBuf> = std::fs::read_dir(work.path())
                .expect("read_dir")
                .flatten()
                .map(|e| e.path())
                .collect();
            let mut expected = vec![bundle.clone(), outside.clone()];
            expected.sort();
            let mut left_sorted = left.clone();
            left_sorted.sort();
            if left_sorted != expected || !tree(&outside).is_empty() {
                failures.push(format!(
                    "{name}: something was made outside the bundle: {left:?}, {:?}",
                    tree(&outside)
                ));
            }
            let mounted = mounts_under(work.path());
            if !mounted.is_empty() {
                failures.push(format!("{name}: mounts remain: {mounted:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
