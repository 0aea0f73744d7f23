//! A data volume that survives a reboot, and cgroup v2 limits in the guest: pkg/format puts
//! ext4 on a fresh virtio disk once, pkg/mount mounts it on /var/lib (shared, so the host and
//! other containers see it), a container counts boots in a file there; a second boot of the
//! same disk finds the file system and the first boot's data. A container with resources runs
//! under its memory and pids limits. pkg/poweroff ends each boot.

mod common;

use common::*;

fn manifest() -> String {
    format!(
        r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: format
    image: {format}
  - name: mount
    image: {mount}
    command: ["/usr/bin/mount.sh", "/var/lib"]
  - name: counter
    image: {busybox}
    binds:
      - /var/lib:/var/lib
    command: ["/bin/sh", "-c", "echo boot >> /var/lib/boots && echo boots=$(wc -l < /var/lib/boots) on $(grep ' /var/lib ' /proc/mounts | cut -d' ' -f1,3)"]
  - name: limits
    image: {busybox}
    cgroupsPath: kiln/limits
    resources:
      memory:
        limit: 33554432
      pids:
        limit: 12
      cpu:
        shares: 512
    command: ["/bin/sh", "-c", "c=/sys/fs/cgroup/kiln/limits; echo cg=$(cat /proc/self/cgroup) mem=$(cat $c/memory.max) pids=$(cat $c/pids.max) weight=$(cat $c/cpu.weight); echo running=$( (for i in $(seq 30); do (echo x; sleep 2) & done; wait) 2>/dev/null | grep -c x)"]
  - name: poweroff
    image: {poweroff}
"#,
        kernel = pkg_ref("kernel"),
        init = pkg_ref("init"),
        format = pkg_ref("format"),
        mount = pkg_ref("mount"),
        busybox = pkg_ref("busybox"),
        poweroff = pkg_ref("poweroff"),
    )
}

#[test]
fn ext4_volume_survives_a_reboot_and_cgroup_limits_hold() {
    let cache = shared_store();
    build_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_manifest(&cache, &manifest(), dir.path(), "volume");
    let disk = dir.path().join("data.img");
    let disk_arg = format!("{},size=128M", disk.display());
    let boot = || boot_ok(&system, &["--networking", "none", "--disk", &disk_arg]);

    let first = boot();
    assert!(
        first.contains("format: formatting /dev/vda as ext4"),
        "{first}"
    );
    assert!(
        first.contains("counter: boots=1 on /dev/vda ext4"),
        "{first}"
    );
    // cgroup v2 limits, read back from the container's own cgroup.
    assert!(
        first.contains("limits: cg=0::/kiln/limits mem=33554432 pids=12 weight=20"),
        "{first}"
    );
    let running: usize = first
        .split("limits: running=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no process count:\n{first}"));
    assert!(
        (1..=12).contains(&running),
        "{running} of 30 processes started under pids.max 12:\n{first}"
    );

    let second = boot();
    // The formatted disk is not picked again: its data stays.
    assert!(second.contains("format: no unformatted disk"), "{second}");
    assert!(
        second.contains("counter: boots=2 on /dev/vda ext4"),
        "{second}"
    );
}
