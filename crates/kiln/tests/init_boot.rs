//! kiln-init as PID 1: pkg/init (the static kiln-init), pkg/kernel and pkg/busybox, built by
//! `kiln pkg build`, make a system whose onboot containers run in order under kiln-init, their
//! output prefixed with their names, the last one powering the machine off.
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
