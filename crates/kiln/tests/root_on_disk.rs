//! A root larger than RAM: a system whose service image holds 700 MB boots in a 384 MB guest
//! from `kernel+erofs` (the root as an erofs image on the first virtio disk, an initrd of
//! kiln-init and the kernel's modules only), and its service reads the last bytes of that
//! content. A small system built with `--root squashfs` as `raw-efi` (the root on a partition
//! named on the command line) boots under OVMF, with `--root erofs` as `raw-bios` under
//! SeaBIOS, and `kernel+squashfs` and `kernel+iso` (the root on a CD-ROM) boot too. The root images
//! pass `fsck.erofs` and `unsquashfs`, and two builds give identical bytes.

mod common;

use common::*;
use std::path::Path;

const FAR_END: &str = "KILN-FAR-END-OF-700-MB";
const MARKER: &str = "KILN-MARKER-ROOT-ON-DISK";

/// The kernel, init, busybox and bootloader packages.
fn packages(cache: &Path) -> Vec<String> {
    build_init();
    build_packages(cache, &["kernel", "init", "busybox", "bootloader"])
}

/// A system whose onboot container prints the marker and the root's file system type.
fn small_manifest(kernel: &str, init: &str, busybox: &str) -> String {
    let marker = format!(
        r#"["/bin/sh", "-c", "echo {MARKER} root=$(grep ' / / ' /proc/1/mountinfo | head -n 1 | sed 's/.* - //' | cut -d' ' -f1)"]"#
    );
    marker_system(kernel, init, busybox, &marker)
}

fn build(cache: &Path, manifest: &Path, dir: &Path, args: &[&str]) {
    run_ok(
        kiln()
            .args(["build", "--name", "sys", "--cache"])
            .arg(cache)
            .arg("--dir")
            .arg(dir)
            .args(args)
            .arg(manifest)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

#[test]
fn a_system_larger_than_ram_boots_from_an_erofs_root() {
    let cache = shared_store();
    let refs = packages(&cache);
    let (kernel, init, busybox) = (&refs[0], &refs[1], &refs[2]);
    let dir = tempfile::tempdir().expect("tempdir");
    // A 700 MB image of random bytes (incompressible), the marker at its far end.
    let ctx = dir.path().join("big");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {busybox}\nRUN head -c 734003200 /dev/urandom > /big && printf {FAR_END} >> /big\n"
        ),
    )
    .expect("Dockerfile");
    run_ok(
        kiln()
            .args(["image", "build", "-t", "kiln-test/big:700m", "--cache"])
            .arg(&cache)
            .arg(&ctx),
    );
    let manifest = dir.path().join("sys.yml");
    std::fs::write(
        &manifest,
        format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0"
init:
  - {init}
services:
  - name: reader
    image: kiln-test/big:700m
    command: ["/bin/sh", "-c", "echo read $(tail -c {len} /big) of $(wc -c < /big) bytes; poweroff -f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#,
            len = FAR_END.len()
        ),
    )
    .expect("manifest");
    let out = dir.path().join("out");
    build(&cache, &manifest, &out, &["-f", "kernel+erofs"]);
    let image = out.join("sys-erofs.img");
    let size = std::fs::metadata(&image).expect("erofs image").len();
    assert!(size > 700 << 20, "the root image holds {size} bytes");
    let console = boot_ok(&out.join("sys"), &["--mem", "384", "--networking", "none"]);
    let line = format!(
        "reader: read {FAR_END} of {} bytes",
        734003200 + FAR_END.len()
    );
    assert!(
        console.contains(&line),
        "no `{line}` on the console:\n{console}"
    );
    assert!(
        console.contains("erofs"),
        "kiln-init did not say it mounted the erofs root:\n{console}"
    );
    let _ = std::fs::remove_dir_all(&out);
    run_ok(
        kiln()
            .args(["cache", "rm", "kiln-test/big:700m", "--cache"])
            .arg(&cache),
    );
}

#[test]
fn root_images_on_a_partition_and_a_whole_disk_boot() {
    let cache = shared_store();
    let refs = packages(&cache);
    let (kernel, init, busybox, bootloader) = (&refs[0], &refs[1], &refs[2], &refs[3]);
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("sys.yml");
    std::fs::write(&manifest, small_manifest(kernel, init, busybox)).expect("manifest");

    let efi = dir.path().join("efi");
    build(
        &cache,
        &manifest,
        &efi,
        &[
            "-f",
            "raw-efi",
            "--root",
            "squashfs",
            "--size",
            "128M",
            "--bootloader",
            bootloader,
        ],
    );
    let console = boot_ok(
        &efi.join("sys-efi.img"),
        &["--mem", "512", "--networking", "none"],
    );
    assert!(
        console.contains(&format!("{MARKER} root=squashfs")),
        "raw-efi --root squashfs:\n{console}"
    );

    // A BIOS disk: the root partition is named by the MBR's signature (PARTUUID=SSSSSSSS-02).
    let bios = dir.path().join("bios");
    build(
        &cache,
        &manifest,
        &bios,
        &[
            "-f",
            "raw-bios",
            "--root",
            "erofs",
            "--size",
            "128M",
            "--bootloader",
            bootloader,
        ],
    );
    let console = boot_ok(
        &bios.join("sys-bios.img"),
        &["--mem", "512", "--networking", "none"],
    );
    assert!(
        console.contains(&format!("{MARKER} root=erofs")),
        "raw-bios --root erofs:\n{console}"
    );

    let whole = dir.path().join("whole");
    build(&cache, &manifest, &whole, &["-f", "kernel+squashfs"]);
    let console = boot_ok(
        &whole.join("sys"),
        &["--mem", "512", "--networking", "none"],
    );
    assert!(
        console.contains(&format!("{MARKER} root=squashfs")),
        "kernel+squashfs:\n{console}"
    );
    let again = dir.path().join("again");
    build(&cache, &manifest, &again, &["-f", "kernel+squashfs"]);
    for file in ["sys-squashfs.img", "sys-initrd.img", "sys-cmdline"] {
        assert!(
            std::fs::read(whole.join(file)).expect("first")
                == std::fs::read(again.join(file)).expect("second"),
            "{file} differs between two builds"
        );
    }
    let listing = run_ok(
        std::process::Command::new("unsquashfs")
            .arg("-l")
            .arg(whole.join("sys-squashfs.img")),
    );
    assert!(
        listing.contains("squashfs-root/containers/onboot"),
        "{listing}"
    );

    // kernel+iso: the root as an ISO 9660 image in the first CD-ROM drive.
    let iso = dir.path().join("iso");
    build(&cache, &manifest, &iso, &["-f", "kernel+iso"]);
    let report = run_ok(
        std::process::Command::new("xorriso")
            .arg("-indev")
            .arg(iso.join("sys.iso"))
            .args(["-find", "/containers/onboot", "-maxdepth", "1"]),
    );
    assert!(report.contains("/containers/onboot/"), "{report}");
    let console = boot_ok(&iso.join("sys"), &["--mem", "512", "--networking", "none"]);
    assert!(
        console.contains(&format!("{MARKER} root=iso9660")),
        "kernel+iso:\n{console}"
    );
    let iso_again = dir.path().join("iso-again");
    build(&cache, &manifest, &iso_again, &["-f", "kernel+iso"]);
    assert!(
        std::fs::read(iso.join("sys.iso")).expect("first")
            == std::fs::read(iso_again.join("sys.iso")).expect("second"),
        "kernel+iso: sys.iso differs between two builds"
    );

    let erofs = dir.path().join("erofs");
    build(&cache, &manifest, &erofs, &["-f", "kernel+erofs"]);
    run_ok(std::process::Command::new("fsck.erofs").arg(erofs.join("sys-erofs.img")));
    let erofs_again = dir.path().join("erofs-again");
    build(&cache, &manifest, &erofs_again, &["-f", "kernel+erofs"]);
    assert!(
        std::fs::read(erofs.join("sys-erofs.img")).expect("first")
            == std::fs::read(erofs_again.join("sys-erofs.img")).expect("second"),
        "kernel+erofs: sys-erofs.img differs between two builds"
    );
}
