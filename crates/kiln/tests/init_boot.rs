//! kiln-init as PID 1: pkg/init (the static kiln-init), pkg/kernel and pkg/busybox, built by
//! `kiln pkg build`, make a system whose onboot containers run in order under kiln-init, their
//! output prefixed with their names, the last one powering the machine off.

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
    let console = boot_manifest(
        &cache,
        &format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
services:
  - name: crasher
    image: {busybox}
    command: ["/bin/sh", "-c", "echo crash; exit 3"]
    restart: on-failure
  - name: late
    image: {busybox}
    command: ["/bin/sh", "-c", "echo late up; exec sleep 1000"]
    dependsOn: [crasher]
  - name: quitter
    image: {busybox}
    command: ["/bin/sh", "-c", "echo quit; exit 1"]
  - name: ctl
    image: {busybox}
    binds:
      - /run:/run
    command: ["/bin/sh", "-c", "sleep 2; k=/run/kiln/kiln-ctl; $k list; $k stop late; sleep 1; $k list | grep '^late'; $k start late; $k logs quitter; $k stop nosuch || echo ctl-error-ok"]
  - name: stopper
    image: {busybox}
    command: ["/bin/sh", "-c", "sleep 10; kill -TERM 1"]
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
    command: ["/bin/sh", "-c", "echo one > /run/order; echo first ran"]
    binds: ["/run:/run"]
  - name: second
    image: {busybox}
    command: ["/bin/sh", "-c", "echo second saw $(cat /run/order)"]
    binds: ["/run:/run"]
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
    assert!(console.contains("Power down"), "{console}");
}
