//! kiln-init as PID 1: pkg/init (the static kiln-init), pkg/kernel and pkg/busybox, built by
//! `kiln pkg build`, make a system whose onboot containers run in order under kiln-init, their
//! output prefixed with their names, the last one powering the machine off.
//!
//! An lz4 initrd (`--compress lz4`, the kernel's legacy lz4 format, one stream per chunk of
//! every segment) is unpacked by the kernel and boots the same way.
//!
//! Guest-side scripts never sleep to let something happen: they wait for events, with
//! `kiln-ctl wait NAME STATE` or by reading a FIFO another container writes when it is ready.

mod common;

use common::*;

/// Build kiln-init and the packages; returns (kernel, init, busybox) image names.
fn packages(cache: &std::path::Path) -> (String, String, String) {
    build_init();
    let refs = build_packages(cache, &["kernel", "init", "busybox"]);
    (refs[0].clone(), refs[1].clone(), refs[2].clone())
}

/// Build `manifest` (YAML text) and boot it; returns the console output.
fn boot_manifest(cache: &std::path::Path, manifest: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_manifest(cache, manifest, dir.path(), "system");
    boot_ok(&system, &["--networking", "none"])
}

#[test]
fn services_restart_by_policy_in_order_and_onshutdown_runs() {
    let cache = shared_store();
    let (kernel, init, busybox) = packages(&cache);
    // late tells ctl it is up by writing to a FIFO (the write waits for ctl to read). checked
    // runs in a cgroup of its own on a writable root (runtime.json's overlay) until ctl writes
    // to its FIFO; ctl, in the host's PID namespace, reads kiln-init's mount table and the
    // cgroup tree while checked runs and after it has ended. stopper powers off once crasher
    // has been restarted three times and ctl is done.
    let ctl = [
        "k=/run/kiln/kiln-ctl",
        "read up < /run/late-up",
        "$k list",
        "$k stop late",
        "$k wait late stopped",
        "$k list | grep '^late'",
        "$k start late",
        "read up < /run/late-up",
        "$k wait quitter exited",
        "$k logs quitter",
        "$k stop nosuch || echo ctl-error-ok",
        "$k wait crasher stopped --timeout 0.5 || echo wait-timed-out",
        "$k wait checked running",
        "checked() { echo checked $1: mounts $(cut -d' ' -f5 /proc/1/mountinfo | grep -c '^/containers/services/checked/') cgroup $(ls -d /sys/fs/cgroup/kiln/checked 2>/dev/null || echo none); }",
        "checked during",
        "echo go > /run/checked-gate",
        "$k wait checked stopped",
        "checked after",
    ]
    .join("; ");
    let stopper = "k=/run/kiln/kiln-ctl; \
        for i in 1 2 3; do $k wait crasher exited && $k wait crasher running; done; \
        $k wait ctl exited && kill -TERM 1";
    let console = boot_manifest(
        &cache,
        &format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: fifos
    image: {busybox}
    binds: ["/run:/run"]
    command: ["/bin/busybox", "mkfifo", "/run/late-up", "/run/checked-gate"]
services:
  - name: crasher
    image: {busybox}
    command: ["/bin/sh", "-c", "echo crash; exit 3"]
    restart: on-failure
  - name: late
    image: {busybox}
    binds: ["/run:/run"]
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; echo late up; echo up > /run/late-up; sleep 1000 & wait"]
    dependsOn: [crasher]
  - name: quitter
    image: {busybox}
    command: ["/bin/sh", "-c", "echo quit; exit 1"]
  - name: checked
    image: {busybox}
    cgroupsPath: kiln/checked
    binds: ["/run:/run"]
    command: ["/bin/sh", "-c", "grep '^0::' /proc/self/cgroup; exec cat /run/checked-gate"]
  - name: ctl
    image: {busybox}
    binds: ["/run:/run"]
    pid: host
    command: ["/bin/sh", "-c", "{ctl}"]
  - name: stopper
    image: {busybox}
    binds: ["/run:/run"]
    command: ["/bin/sh", "-c", "{stopper}"]
    pid: host
onshutdown:
  - name: goodbye
    image: {busybox}
    command: ["/bin/echo", "goodbye from onshutdown"]
"#
        ),
    );
    let crashes = console.matches("crasher: crash").count();
    assert!(crashes >= 3, "crasher ran {crashes} times:\n{console}");
    assert!(
        console.contains("service crasher failed with code 3; restarting in 1 s"),
        "{console}"
    );
    assert_eq!(
        console.matches("quitter: quit").count(),
        1,
        "a `no` service was restarted:\n{console}"
    );
    assert!(
        console.contains("service quitter failed with code 1\n")
            || console.contains("service quitter failed with code 1\r"),
        "{console}"
    );
    let crasher = console
        .find("service crasher started")
        .expect("crasher started");
    let late = console.find("service late started").expect("late started");
    assert!(crasher < late, "dependsOn not honoured:\n{console}");
    // kiln-ctl from inside a container, through the control socket.
    assert!(console.contains("ctl: crasher "), "{console}");
    assert!(
        console
            .lines()
            .any(|l| l.starts_with("ctl: late") && l.contains("stopped (held)")),
        "{console}"
    );
    assert!(console.contains("ctl: started late (pid"), "{console}");
    assert_eq!(console.matches("late: late up").count(), 2, "{console}");
    assert!(console.contains("ctl: quit"), "{console}");
    assert!(console.contains("ctl: ctl-error-ok"), "{console}");
    assert!(console.contains("ctl: wait-timed-out"), "{console}");
    // While checked ran: its cgroup, its runtime.json mounts (tmp and the overlay root).
    assert!(console.contains("checked: 0::/kiln/checked"), "{console}");
    assert!(
        console.contains("ctl: checked during: mounts 2 cgroup /sys/fs/cgroup/kiln/checked"),
        "{console}"
    );
    // After it ended, none of them.
    assert!(
        console.contains("ctl: checked after: mounts 0 cgroup none"),
        "{console}"
    );
    let goodbye = console
        .find("goodbye: goodbye from onshutdown")
        .unwrap_or_else(|| panic!("onshutdown did not run:\n{console}"));
    assert!(console[goodbye..].contains("Power down"), "{console}");
}

#[test]
fn kiln_init_runs_onboot_containers_and_powers_off() {
    let cache = shared_store();
    let (kernel, init, busybox) = packages(&cache);
    let console = boot_manifest(
        &cache,
        &format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: first
    image: {busybox}
    command: ["/bin/sh", "-c", "echo one > /run/order; echo first ran; grep -q ' / / .* - overlay ' /proc/self/mountinfo && echo first on its overlay"]
    binds: ["/run:/run"]
  - name: second
    image: {busybox}
    command: ["/bin/sh", "-c", "echo second saw $(cat /run/order); echo first left $(cut -d' ' -f5 /proc/1/mountinfo | grep -c '^/containers/onboot/[0-9]*-first/') mounts"]
    binds: ["/run:/run"]
    pid: host
  - name: poweroff
    image: {busybox}
    command: ["/sbin/poweroff", "-f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#
        ),
    );
    let first = console
        .find("first: first ran")
        .unwrap_or_else(|| panic!("no output of first:\n{console}"));
    let second = console
        .find("second: second saw one")
        .unwrap_or_else(|| panic!("second did not see first's file:\n{console}"));
    assert!(first < second, "onboot out of order:\n{console}");
    // first ran on the overlay runtime.json mounted for it, and it was gone once first ended.
    assert!(console.contains("first: first on its overlay"), "{console}");
    assert!(console.contains("second: first left 0 mounts"), "{console}");
    assert!(console.contains("Power down"), "{console}");
}

/// The number that starts every lz4 stream of the kernel's legacy format, little-endian.
const LZ4_LEGACY_MAGIC: [u8; 4] = 0x184C_2102u32.to_le_bytes();

/// The lz4 streams of `initrd` (the kernel's legacy format), walked as the kernel walks them:
/// a magic number, then block lengths and blocks, a magic number where a length would be
/// starting the next stream. None when the walk does not end exactly at the end.
fn lz4_streams(initrd: &[u8]) -> Option<usize> {
    if !initrd.starts_with(&LZ4_LEGACY_MAGIC) {
        return None;
    }
    let (mut at, mut streams) = (0, 0);
    while at < initrd.len() {
        let word: [u8; 4] = initrd.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        if word == LZ4_LEGACY_MAGIC {
            streams += 1;
        } else {
            at += usize::try_from(u32::from_le_bytes(word)).ok()?;
        }
    }
    (at == initrd.len()).then_some(streams)
}

#[test]
fn an_lz4_initrd_of_several_segments_boots() {
    let cache = shared_store();
    let (kernel, init, busybox) = packages(&cache);
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("lz4.yml");
    std::fs::write(
        &manifest,
        format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: first
    image: {busybox}
    command: ["/bin/sh", "-c", "echo unpacked from lz4; grep -q '^overlay ' /proc/modules && echo overlay module loaded"]
  - name: poweroff
    image: {busybox}
    command: ["/sbin/poweroff", "-f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#
        ),
    )
    .expect("manifest");
    let out = kiln()
        .args(["build", "-f", "kernel+initrd", "--compress", "lz4"])
        .args(["--name", "lz4", "--cache"])
        .arg(&cache)
        .arg("--dir")
        .arg(dir.path())
        .arg(&manifest)
        .env("KILN_LOG", "debug")
        .output()
        .expect("spawn kiln");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln build failed:\n{log}");
    // The kernel's modules, kiln-init and busybox are segments of their own (compressed now
    // or taken from the store's cache), each one lz4 stream or more.
    let segments = log
        .lines()
        .filter(|l| l.contains("initrd segment compressed") || l.contains("initrd segment reused"))
        .count();
    assert!(segments >= 3, "{segments} segments:\n{log}");
    let initrd = std::fs::read(dir.path().join("lz4-initrd.img")).expect("initrd");
    let streams = lz4_streams(&initrd);
    assert!(
        streams.is_some_and(|n| n > segments),
        "not a sequence of legacy lz4 streams ({streams:?})"
    );
    let console = boot_ok(&dir.path().join("lz4"), &["--networking", "none"]);
    assert!(console.contains("first: unpacked from lz4"), "{console}");
    // A module from the initrd (every container's root is an overlay).
    assert!(
        console.contains("first: overlay module loaded"),
        "{console}"
    );
    assert!(console.contains("Power down"), "{console}");
}
