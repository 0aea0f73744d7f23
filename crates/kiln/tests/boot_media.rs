//! Every boot media format kiln writes boots: one build writes them all in one assembly pass
//! (a system whose onboot container prints a marker and powers the machine off), then each
//! output boots in qemu under TCG through `kiln run qemu FILE`, which picks SeaBIOS or OVMF,
//! a CD-ROM or a disk, and qemu's driver (raw, qcow2, vpc, vmdk) from the file; the GCE
//! tarball boots from the disk.raw it holds. Each output also passes an independent checker
//! (qemu-img, sgdisk/fdisk, fsck.vfat, xorriso), a second build gives identical bytes, and
//! an unprivileged user with nothing on PATH but kiln builds them all (root on disk included).

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
    ("iso-efi-initrd", "sys-efi-initrd.iso"),
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
            marker_system(
                kernel,
                init,
                busybox,
                &format!(r#"["/bin/echo", "{MARKER}"]"#),
            ),
        )
        .expect("manifest");
        build_all(&cache, bootloader, &manifest, &dir);
        build_dynamic_vhd(&cache, bootloader, &manifest, &dir);
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

/// dynamic-vhd writes NAME.vhd as vhd does: built under another name, `dyn`.
fn build_dynamic_vhd(cache: &Path, bootloader: &str, manifest: &Path, dir: &Path) {
    run_ok(
        kiln()
            .args([
                "build",
                "--name",
                "dyn",
                "--size",
                "256M",
                "-f",
                "dynamic-vhd",
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
    let built = built().dir.join(file);
    assert!(built.is_file(), "{} was not written", built.display());
    // A copy boots, so that the guest's writes and qemu's lock leave the build's output alone
    // for the other tests.
    let state = tempfile::tempdir().expect("tempdir");
    let path = state.path().join(file);
    run_ok(
        std::process::Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&built)
            .arg(&path),
    );
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
fn iso_efi_initrd_boots_under_ovmf() {
    boots("sys-efi-initrd.iso");
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
fn dynamic_vhd_boots_through_qemus_vpc_driver() {
    boots("dyn.vhd");
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

/// Run a checker on `file` (after `args`, before `after`); its output, which must be a success.
fn check(program: &str, args: &[&str], file: &Path) -> String {
    check_around(program, args, file, &[])
}

fn check_around(program: &str, args: &[&str], file: &Path, after: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .arg(file)
        .args(after)
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
    for vhd in ["sys.vhd", "dyn.vhd"] {
        let info = check("qemu-img", &["info", "-f", "vpc"], &at(vhd));
        assert!(info.contains("virtual size: 256 MiB"), "{vhd}:\n{info}");
    }
    let gpt = check("sgdisk", &["-v"], &at("sys-efi.img"));
    assert!(gpt.contains("No problems found"), "{gpt}");
    let mbr = check("fdisk", &["-l"], &at("sys-bios.img"));
    assert!(mbr.contains("sys-bios.img1"), "{mbr}");
    for iso in ["sys.iso", "sys-efi.iso", "sys-efi-initrd.iso"] {
        let report = check_around(
            "xorriso",
            &["-indev"],
            &at(iso),
            &["-report_el_torito", "plain"],
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
    build_dynamic_vhd(&b.cache, &b.bootloader, &b.manifest, again.path());
    for (format, file) in FORMATS.iter().chain(&[("dynamic-vhd", "dyn.vhd")]) {
        let (x, y) = (
            std::fs::read(b.dir.join(file)).expect("first"),
            std::fs::read(again.path().join(file)).expect("second"),
        );
        assert!(x == y, "{format}: {file} differs between two builds");
    }
}

/// `cmd` as the unprivileged user `nobody` when this test runs as root (as CI does), with an
/// empty environment but `env`.
fn unprivileged(program: &Path, env: &[(&str, &Path)]) -> std::process::Command {
    let mut cmd = if nix_root() {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(program);
        c
    } else {
        std::process::Command::new(program)
    };
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn nix_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// With the images in its store, an unprivileged user with nothing on PATH but kiln builds
/// every format: no root, no loop devices, no mounts, no host tools, no Docker daemon.
#[test]
fn an_unprivileged_build_with_nothing_on_path_writes_every_format() {
    let b = built();
    let home = tempfile::tempdir().expect("tempdir");
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let kiln_bin = bin.join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln_bin).expect("copy kiln");
    // The images the build needs, handed over as an archive the user imports.
    let manifest = std::fs::read_to_string(&b.manifest).expect("manifest");
    let mut images: Vec<String> = manifest
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("- ");
            l.strip_prefix("image: ")
                .or(Some(l).filter(|l| l.starts_with("kiln/")))
        })
        .map(|s| s.trim().to_string())
        .collect();
    images.sort();
    images.dedup();
    images.push(b.bootloader.clone());
    let archive = home.path().join("images.tar");
    run_ok(
        kiln()
            .args(["cache", "export", "--cache"])
            .arg(&b.cache)
            .arg("-o")
            .arg(&archive)
            .args(&images),
    );
    std::fs::copy(&b.manifest, home.path().join("sys.yml")).expect("manifest copy");
    if nix_root() {
        run_ok(
            std::process::Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(home.path()),
        );
        run_ok(
            std::process::Command::new("chmod")
                .args(["755"])
                .arg(home.path()),
        );
    }
    let store = home.path().join("store");
    let env = [("PATH", bin.as_path()), ("HOME", home.path())];
    run_ok(
        unprivileged(&kiln_bin, &env)
            .args(["cache", "import", "--cache"])
            .arg(&store)
            .arg(&archive),
    );
    let out = home.path().join("out");
    run_ok(
        unprivileged(&kiln_bin, &env)
            .args([
                "build",
                "--name",
                "sys",
                "--size",
                "256M",
                "-f",
                &all_formats(),
            ])
            .args(["--bootloader", &b.bootloader, "--cache"])
            .arg(&store)
            .arg("--dir")
            .arg(&out)
            .arg(home.path().join("sys.yml"))
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    // The root on disk too: squashfs on a partition, erofs on a whole disk.
    for (name, formats) in [
        ("rootfs", "raw-efi,qcow2-efi,raw-bios"),
        ("whole", "kernel+erofs"),
        ("cd", "kernel+iso"),
    ] {
        run_ok(
            unprivileged(&kiln_bin, &env)
                .args([
                    "build", "--name", name, "--size", "256M", "--root", "squashfs",
                ])
                .args(["-f", formats, "--bootloader", &b.bootloader, "--cache"])
                .arg(&store)
                .arg("--dir")
                .arg(&out)
                .arg(home.path().join("sys.yml")),
        );
    }
    for file in [
        "rootfs-efi.img",
        "rootfs-efi.qcow2",
        "whole-erofs.img",
        "whole-initrd.img",
    ] {
        assert!(out.join(file).is_file(), "{file} was not written");
    }
    for (format, file) in FORMATS {
        let (ours, root_built) = (
            std::fs::read(out.join(file)).unwrap_or_else(|e| panic!("{format}: {e}")),
            std::fs::read(b.dir.join(file)).expect("the root build's output"),
        );
        assert!(
            ours == root_built,
            "{format}: {file} differs from the root build's"
        );
    }
}
