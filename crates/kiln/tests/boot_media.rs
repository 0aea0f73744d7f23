//! Every boot media format kiln writes boots: one build writes them all in one assembly pass
//! (a system whose onboot container prints a marker and powers the machine off), then each
//! output boots in qemu under TCG through `kiln run qemu FILE`, which picks SeaBIOS or OVMF,
//! a CD-ROM or a disk, and qemu's driver (raw, qcow2, vpc, vmdk) from the file; the GCE
//! tarball boots from the disk.raw it holds. Each output also passes an independent checker
//! (qemu-img, sgdisk/fdisk, fsck.vfat, xorriso), and a second build gives identical bytes.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const MARKER: &str = "KILN-MARKER-BOOT-MEDIA";

/// Every boot media format, with the file it writes for the name `sys`.
const FORMATS: &[(&str, &str)] = &[
    ("uki", "sys.efi"),
    ("iso-bios", "sys.iso"),
    ("iso-efi", "sys-efi.iso"),
    ("raw-bios", "sys-bios.img"),
    ("raw-efi", "sys-efi.img"),
    ("qcow2-bios", "sys.qcow2"),
    ("qcow2-efi", "sys-efi.qcow2"),
    ("vhd", "sys.vhd"),
    ("vmdk", "sys.vmdk"),
    ("gcp", "sys.img.tar.gz"),
    ("aws", "sys.raw"),
];

struct Built {
    cache: PathBuf,
    bootloader: String,
    manifest: PathBuf,
    dir: PathBuf,
}

/// Build the system once in every format (and kernel+initrd, to check they share the pass).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cache = shared_store();
        build_init();
        let refs = build_packages(&cache, &["kernel", "init", "busybox", "bootloader"]);
        let (kernel, init, busybox, bootloader) = (&refs[0], &refs[1], &refs[2], &refs[3]);
        // This binary's own directory, emptied at each run.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-media");
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("out");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let manifest = root.join("sys.yml");
        std::fs::write(
            &manifest,
            format!(
                r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0"
init:
  - {init}
onboot:
  - name: marker
    image: {busybox}
    command: ["/bin/echo", "{MARKER}"]
  - name: poweroff
    image: {busybox}
    command: ["/sbin/poweroff", "-f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#
            ),
        )
        .expect("manifest");
        build_all(&cache, bootloader, &manifest, &dir);
        Built {
            cache,
            bootloader: bootloader.clone(),
            manifest,
            dir,
        }
    })
}

fn all_formats() -> String {
    let mut names: Vec<&str> = FORMATS.iter().map(|(f, _)| *f).collect();
    names.push("kernel+initrd");
    names.join(",")
}

fn build_all(cache: &Path, bootloader: &str, manifest: &Path, dir: &Path) {
    run_ok(
        kiln()
            .args([
                "build",
                "--name",
                "sys",
                "--size",
                "256M",
                "-f",
                &all_formats(),
            ])
            .args(["--bootloader", bootloader, "--cache"])
            .arg(cache)
            .arg("--dir")
            .arg(dir)
            .arg(manifest)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

fn boots(file: &str) {
    let path = built().dir.join(file);
    assert!(path.is_file(), "{} was not written", path.display());
    let state = tempfile::tempdir().expect("tempdir");
    let (status, console) = run_system(
        &path,
        &[
            "--networking",
            "none",
            "--mem",
            "512",
            "--state",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert!(
        console.contains(MARKER),
        "{file}: no marker on the console (exit {status:?}):\n{console}"
    );
    assert!(
        status.success(),
        "{file}: no clean power-off (exit {status:?}):\n{console}"
    );
}

#[test]
fn uki_boots_under_ovmf() {
    boots("sys.efi");
}

#[test]
fn iso_bios_boots_under_seabios() {
    boots("sys.iso");
}

#[test]
fn iso_efi_boots_under_ovmf() {
    boots("sys-efi.iso");
}

#[test]
fn raw_bios_boots_under_seabios() {
    boots("sys-bios.img");
}

#[test]
fn raw_efi_boots_under_ovmf() {
    boots("sys-efi.img");
}

#[test]
fn qcow2_bios_boots_under_seabios() {
    boots("sys.qcow2");
}

#[test]
fn qcow2_efi_boots_under_ovmf() {
    boots("sys-efi.qcow2");
}

#[test]
fn vhd_boots_through_qemus_vpc_driver() {
    boots("sys.vhd");
}

#[test]
fn vmdk_boots_through_qemus_vmdk_driver() {
    boots("sys.vmdk");
}

#[test]
fn gcp_tarball_boots_from_its_disk_raw() {
    boots("sys.img.tar.gz");
}

#[test]
fn aws_raw_disk_boots_under_seabios() {
    boots("sys.raw");
}

/// Run a checker; its output on failure.
fn check(program: &str, args: &[&str], file: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} {}:\n{text}",
        file.display()
    );
    text
}

#[test]
fn every_output_passes_an_independent_checker() {
    let b = built();
    let at = |f: &str| b.dir.join(f);
    for (file, format) in [
        ("sys.qcow2", "qcow2"),
        ("sys-efi.qcow2", "qcow2"),
        ("sys.vmdk", "vmdk"),
    ] {
        check("qemu-img", &["check", "-f", format], &at(file));
    }
    let info = check("qemu-img", &["info", "-f", "vpc"], &at("sys.vhd"));
    assert!(info.contains("virtual size: 256 MiB"), "{info}");
    let gpt = check("sgdisk", &["-v"], &at("sys-efi.img"));
    assert!(gpt.contains("No problems found"), "{gpt}");
    let mbr = check("fdisk", &["-l"], &at("sys-bios.img"));
    assert!(mbr.contains("sys-bios.img1"), "{mbr}");
    for iso in ["sys.iso", "sys-efi.iso"] {
        let report = check(
            "xorriso",
            &["-report_el_torito", "plain", "-indev"],
            &at(iso),
        );
        assert!(report.contains("El Torito boot img"), "{iso}:\n{report}");
    }
    // The ESPs: the EFI disk's first partition, extracted at its offset.
    let esp = tempfile::NamedTempFile::new().expect("tempfile");
    let parts = check("sfdisk", &["--json"], &at("sys-efi.img"));
    let table: serde_json::Value = serde_json::from_str(&parts).expect("sfdisk json");
    let first = &table["partitiontable"]["partitions"][0];
    let (start, size) = (
        first["start"].as_u64().expect("start"),
        first["size"].as_u64().expect("size"),
    );
    let mut disk = std::fs::File::open(at("sys-efi.img")).expect("open disk");
    std::io::Seek::seek(&mut disk, std::io::SeekFrom::Start(start * 512)).expect("seek");
    let mut part = std::io::Read::take(disk, size * 512);
    std::io::copy(&mut part, &mut esp.as_file()).expect("copy the ESP");
    check("fsck.vfat", &["-n"], esp.path());
}

#[test]
fn a_second_build_gives_identical_bytes() {
    let b = built();
    let again = tempfile::tempdir().expect("tempdir");
    build_all(&b.cache, &b.bootloader, &b.manifest, again.path());
    for (format, file) in FORMATS {
        let (x, y) = (
            std::fs::read(b.dir.join(file)).expect("first"),
            std::fs::read(again.path().join(file)).expect("second"),
        );
        assert!(x == y, "{format}: {file} differs between two builds");
    }
}
