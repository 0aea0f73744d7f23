//! `seccomp: docker-default` in a manifest (a kiln extension): `kiln build` writes Docker's
//! default profile into the container's config.json, and the runtime applies it. Two services
//! of the busybox package run the same command, one with the key and one without; each
//! config.json, as built, runs with `kiln run bundle`. The command makes a call Docker's
//! profile denies to a container without CAP_SYS_ADMIN but the kernel allows a root process
//! without capabilities: unshare(CLONE_NEWUSER) (`unshare -U`). Needs root, as the runtime does.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

/// What each service runs: the exit status of `unshare -U true` (and its complaint), then the
/// process's seccomp mode (2: a filter).
const SCRIPT: &str = "unshare -U true; echo unshare=$?; grep Seccomp: /proc/self/status";

/// Run `config` (a built config.json, its root pointed at `rootfs`) with `kiln run bundle`;
/// returns the exit code and the output.
fn run_bundle(mut config: Value, rootfs: &Path) -> (Option<i32>, String) {
    config["root"]["path"] = Value::String(rootfs.display().to_string());
    let bundle = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec(&config).expect("json"),
    )
    .expect("config.json");
    let out = kiln()
        .args(["run", "bundle"])
        .arg(bundle.path())
        .output()
        .expect("spawn kiln run bundle");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn docker_default_from_the_manifest_denies_what_docker_denies() {
    if !is_root() {
        return;
    }
    let cache = shared_store();
    let built = build_packages(&cache, &["busybox"]);
    let image = built.last().expect("busybox image name").trim().to_string();
    // The image's files, with the mount points of LinuxKit's default mounts.
    let rootfs = unpacked_busybox(
        "seccomp-manifest-busybox",
        &["proc", "dev", "dev/pts", "sys", "sys/fs/cgroup"],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("seccomp.yml");
    let command = format!("[\"/bin/sh\", \"-c\", \"{SCRIPT}\"]");
    std::fs::write(
        &manifest,
        format!(
            "services:\n\
             \x20 - name: confined\n    image: {image}\n    command: {command}\n    seccomp: docker-default\n\
             \x20 - name: open\n    image: {image}\n    command: {command}\n"
        ),
    )
    .expect("manifest");
    let tar = dir.path().join("seccomp.tar");
    run_ok(
        kiln()
            .args(["build", "--format", "tar", "-o"])
            .arg(&tar)
            .arg("--cache")
            .arg(&cache)
            .arg(&manifest),
    );
    let (_, contents) = listing(&std::fs::read(&tar).expect("output"));
    let config = |name: &str| -> Value {
        let path = format!("containers/services/{name}/config.json");
        let bytes = contents
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is not in the output"));
        serde_json::from_slice(bytes).expect("config.json is JSON")
    };
    let (confined, open) = (config("confined"), config("open"));

    // The built configs differ in linux.seccomp only: Docker's profile, resolved for a
    // container without capabilities (no unshare rule), or nothing.
    let seccomp = &confined["linux"]["seccomp"];
    assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO", "{seccomp}");
    let names: Vec<&str> = seccomp["syscalls"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["names"].as_array().expect("names"))
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"read") && !names.contains(&"unshare"));
    assert!(open["linux"].get("seccomp").is_none(), "{open}");
    let mut without = confined.clone();
    without["linux"]
        .as_object_mut()
        .expect("linux")
        .remove("seccomp");
    assert_eq!(without, open);

    // Without the key the call goes through; with it, EPERM.
    let (code, out) = run_bundle(open, &rootfs);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("unshare=0") && out.contains("Seccomp:\t0"),
        "without seccomp:\n{out}"
    );
    let (code, out) = run_bundle(confined, &rootfs);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("unshare=1")
            && out.contains("Operation not permitted")
            && out.contains("Seccomp:\t2"),
        "with docker-default:\n{out}"
    );
}
