//! pkg/kernel, built by `kiln pkg build`, boots under qemu (TCG): a test initramfs made by
//! `kiln build` from the kernel package and a busybox-based init prints a marker after loading
//! virtio_net (with its dependencies, through modules.dep) and finding the NIC. The driver
//! probes the device while modprobe runs, so the NIC is there when modprobe returns: the script
//! does not wait for it.

mod common;

use common::{build_packages, build_system, kiln, run_ok, run_system, shared_store};

const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "kernel $(uname -r)"
modprobe virtio_pci && modprobe virtio_net && ls /sys/class/net
[ -e /sys/class/net/eth0 ] && echo KILN-MARKER-VIRTIO-NET
modprobe ext4 && grep -qw ext4 /proc/filesystems && echo KILN-MARKER-EXT4
echo KILN-MARKER-BOOTED
poweroff -f
"#;

#[test]
fn kernel_package_boots_and_loads_modules() {
    let cache = shared_store();
    let refs = build_packages(&cache, &["kernel", "busybox"]);
    let (kernel, busybox) = (&refs[0], &refs[1]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("init");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(ctx.join("init"), INIT).expect("write init");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {busybox}\nCOPY --chmod=755 init /init\n"),
    )
    .expect("write Dockerfile");
    run_ok(
        kiln()
            .args(["image", "build", "-t", "kiln-test/boot-init", "--cache"])
            .arg(&cache)
            .arg(&ctx),
    );
    let manifest = dir.path().join("boot.yml");
    std::fs::write(
        &manifest,
        format!(
            "kernel:\n  image: {kernel}\n  cmdline: \"console=ttyS0 panic=-1\"\ninit:\n  - kiln-test/boot-init\n"
        ),
    )
    .expect("write manifest");
    let system = build_system(&cache, &manifest, dir.path(), "boot");
    // User networking gives the guest a virtio-net NIC.
    let (_, out) = run_system(&system, &["--networking", "user"]);
    for marker in [
        "KILN-MARKER-VIRTIO-NET",
        "KILN-MARKER-EXT4",
        "KILN-MARKER-BOOTED",
    ] {
        assert!(
            out.contains(marker),
            "no {marker} in the console output:\n{out}"
        );
    }
}
