//! kiln-init as PID 1: pkg/init (the static kiln-init), pkg/kernel and pkg/busybox, built by
//! `kiln pkg build`, make a system whose onboot containers run in order under kiln-init, their
//! output prefixed with their names, the last one powering the machine off.

mod common;

use common::*;
use std::process::Command;

#[test]
fn kiln_init_runs_onboot_containers_and_powers_off() {
    let cache = shared_store();
    run_ok(Command::new("bash").arg(repo_root().join("scripts/build-init.sh")));
    let refs = build_packages(&cache, &["kernel", "init", "busybox"]);
    let (kernel, init, busybox) = (&refs[0], &refs[1], &refs[2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("hello.yml");
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
    )
    .expect("manifest");
    run_ok(
        kiln()
            .args(["build", "-f", "kernel+initrd", "--name", "hello", "--cache"])
            .arg(&cache)
            .arg("--dir")
            .arg(dir.path())
            .arg(&manifest),
    );
    let out = Command::new("timeout")
        .arg("240")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "qemu", "--accel", "tcg", "--networking", "none"])
        .arg(dir.path().join("hello"))
        .output()
        .expect("spawn kiln run qemu");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}:\n{console}", out.status);
    let first = console
        .find("first: first ran")
        .unwrap_or_else(|| panic!("no output of first:\n{console}"));
    let second = console
        .find("second: second saw one")
        .unwrap_or_else(|| panic!("second did not see first's file:\n{console}"));
    assert!(first < second, "onboot out of order:\n{console}");
    assert!(console.contains("Power down"), "{console}");
}
