//! arm64 boot media. kiln's bootloader package built for arm64 (`kiln --arch arm64 pkg build
//! pkg/bootloader`: GRUB's arm64-efi image and systemd-boot's aa64 stub, fetched and made on
//! this machine without emulation) and an arm64 system (Debian's arm64 kernel; an init image
//! whose busybox `/init` prints a marker and powers off) written by `kiln --arch arm64 build` as
//! a UKI, EFI disks and the UEFI ISOs. Independent tools check what they hold (`file`, sgdisk,
//! mtools, xorriso, qemu-img): `EFI/BOOT/BOOTAA64.EFI`, arm64 EFI programs, the arm64 kernel,
//! no BIOS boot code. The BIOS formats are refused for arm64, and every medium boots under
//! `qemu-system-aarch64 -M virt` with UEFI firmware (AAVMF) to the marker and a power-off.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MARKER: &str = "KILN-ARM64-MEDIA-MARKER";
const EFI_PROGRAM: &str = "PE32+ executable (EFI application) Aarch64";
/// The UEFI firmware for qemu's arm64 `virt` machine (Debian's `qemu-efi-aarch64`).
const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

/// The formats written, with the file each writes for the name `sys`.
const FORMATS: &[(&str, &str)] = &[
    ("uki", "sys.efi"),
    ("raw-efi", "sys-efi.img"),
    ("qcow2-efi", "sys-efi.qcow2"),
    ("iso-efi", "sys-efi.iso"),
    ("iso-efi-initrd", "sys-efi-initrd.iso"),
];

/// The formats that boot only through a PC BIOS.
const BIOS_FORMATS: &[&str] = &[
    "iso-bios",
    "raw-bios",
    "qcow2-bios",
    "vhd",
    "dynamic-vhd",
    "vmdk",
    "gcp",
    "aws",
];

/// The test system's images for arm64, from Debian's arm64 packages unpacked on the build
/// machine (`FROM --platform=$BUILDPLATFORM`: nothing of arm64 runs): the `kernel` stage is a
/// LinuxKit kernel image (`/kernel`, an empty `/kernel.tar`), the `init` stage busybox and an
/// `/init` that prints the marker and the machine and powers off.
const SYSTEM_DOCKERFILE: &str = r#"FROM --platform=$BUILDPLATFORM debian:bookworm AS fetch
ARG TARGETARCH
RUN dpkg --add-architecture "$TARGETARCH" \
 && apt-get update \
 && cd /tmp \
 && pkg=$(apt-cache depends "linux-image-$TARGETARCH:$TARGETARCH" | awk '/Depends: linux-image-/ {print $2; exit}') \
 && apt-get download "$pkg" "busybox-static:$TARGETARCH" \
 && mkdir -p /src /out/init/bin \
 && dpkg-deb --fsys-tarfile linux-image-*.deb | tar -x -C /src ./boot \
 && dpkg-deb --fsys-tarfile busybox-static_*.deb | tar -x -C /src ./bin/busybox \
 && cp /src/boot/vmlinuz-* /out/kernel \
 && tar -cf /out/kernel.tar -T /dev/null \
 && cp /src/bin/busybox /out/init/bin/busybox \
 && printf '#!/bin/busybox sh\n/bin/busybox echo "KILN-ARM64-MEDIA-MARKER $(/bin/busybox uname -m)"\n/bin/busybox poweroff -f\n' > /out/init/init \
 && chmod 0755 /out/init/init \
 && rm -rf /src /tmp/*.deb /var/lib/apt/lists/*

FROM scratch AS kernel
COPY --from=fetch /out/kernel /out/kernel.tar /

FROM scratch AS init
COPY --from=fetch /out/init/ /
"#;

struct Built {
    cache: PathBuf,
    /// The bootloader image's name.
    bootloader: String,
    /// Its files (the image's root filesystem).
    bootloader_files: PathBuf,
    manifest: PathBuf,
    /// The outputs.
    dir: PathBuf,
}

/// Whether the tools of these tests are here (skipped with a reason when not, outside CI).
fn prerequisites() -> bool {
    is_root()
        && tools_present(&[
            "file",
            "sgdisk",
            "mdir",
            "mcopy",
            "xorriso",
            "qemu-img",
            "debootstrap",
        ])
}

/// The bootloader package and the system built once for all the tests of this binary.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cache = shared_store();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-media");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("mkdir");

        let out = run_ok(
            kiln()
                .args(["--arch", "arm64", "pkg", "build", "--cache"])
                .arg(&cache)
                .arg(repo_root().join("pkg/bootloader")),
        );
        let bootloader = out.lines().last().expect("the image's name").to_string();
        let bootloader_files = root.join("bootloader");
        export_filesystem(&cache, &bootloader, &bootloader_files);

        let sys = root.join("system");
        std::fs::create_dir_all(&sys).expect("mkdir");
        std::fs::write(sys.join("Dockerfile"), SYSTEM_DOCKERFILE).expect("Dockerfile");
        for stage in ["kernel", "init"] {
            run_ok(
                kiln()
                    .args(["--arch", "arm64", "image", "build", "--target", stage])
                    .args(["-t", &format!("kiln-test/arm64-media-{stage}")])
                    .arg("--cache")
                    .arg(&cache)
                    .arg(&sys),
            );
        }
        // No console named: the boot media add the arm64 one (ttyAMA0).
        let manifest = root.join("sys.yml");
        std::fs::write(
            &manifest,
            "kernel:\n  image: kiln-test/arm64-media-kernel\n  cmdline: \"quiet\"\n\
             init:\n  - kiln-test/arm64-media-init\n",
        )
        .expect("manifest");
        let dir = root.join("out");
        let mut formats: Vec<&str> = FORMATS.iter().map(|(f, _)| *f).collect();
        formats.push("kernel+initrd");
        run_ok(
            kiln()
                .args([
                    "--arch", "arm64", "build", "--name", "sys", "--size", "128M",
                ])
                .args(["-f", &formats.join(",")])
                .args(["--bootloader", &bootloader, "--cache"])
                .arg(&cache)
                .arg("--dir")
                .arg(&dir)
                .arg(&manifest)
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
        Built {
            cache,
            bootloader,
            bootloader_files,
            manifest,
            dir,
        }
    })
}

/// The root filesystem of `image` (for arm64) unpacked into `dir`.
fn export_filesystem(cache: &Path, image: &str, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let tar = dir.with_extension("tar");
    run_ok(
        kiln()
            .args([
                "--arch",
                "arm64",
                "cache",
                "export",
                "--format",
                "filesystem",
            ])
            .arg("--cache")
            .arg(cache)
            .arg("-o")
            .arg(&tar)
            .arg(image),
    );
    run_ok(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(dir));
}

/// What `file` says of `path`.
fn file_type(path: &Path) -> String {
    run_ok(Command::new("file").arg("-b").arg(path))
        .trim()
        .to_string()
}

fn output(name: &str) -> PathBuf {
    built().dir.join(name)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file's data of the PE section `name`, without the file alignment's padding (which
/// must be zeros), given the content's length `len`.
fn pe_section<'a>(pe: &'a [u8], name: &str, len: usize) -> &'a [u8] {
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([pe[at], pe[at + 1]]));
    let u32_at = |at: usize| {
        usize::try_from(u32::from_le_bytes([
            pe[at],
            pe[at + 1],
            pe[at + 2],
            pe[at + 3],
        ]))
        .expect("usize")
    };
    let coff = u32_at(0x3c) + 4;
    let table = coff + 20 + u16_at(coff + 16);
    let mut field = [0u8; 8];
    field[..name.len()].copy_from_slice(name.as_bytes());
    let header = (0..u16_at(coff + 2))
        .map(|i| table + 40 * i)
        .find(|&h| pe[h..h + 8] == field)
        .unwrap_or_else(|| panic!("no {name} section"));
    let (raw_size, raw_offset) = (u32_at(header + 16), u32_at(header + 20));
    let data = &pe[raw_offset..raw_offset + raw_size];
    assert!(data[len..].iter().all(|&b| b == 0), "{name}: padding");
    &data[..len]
}

/// The files in the FAT file system at byte `offset` of `image` under `dir` (mtools).
fn fat_listing(image: &Path, offset: u64, dir: &str) -> String {
    run_ok(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(format!("{}@@{offset}", image.display()))
            .arg(format!("::{dir}")),
    )
}

/// The file `path` of the FAT file system at byte `offset` of `image` (mtools).
fn fat_file(image: &Path, offset: u64, path: &str) -> Vec<u8> {
    let out = Command::new("mcopy")
        .args(["-n", "-i"])
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::{path}"))
        .arg("-")
        .output()
        .expect("spawn mcopy");
    assert!(
        out.status.success(),
        "mcopy {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The file `path` of the ISO `iso`, extracted by xorriso into `dir`.
fn iso_file(iso: &Path, path: &str, dir: &Path) -> PathBuf {
    let to = dir.join(path.trim_start_matches('/').replace('/', "_"));
    run_ok(
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", path])
            .arg(&to),
    );
    to
}

#[test]
fn the_bootloader_package_for_arm64_holds_arm64_efi_programs_only() {
    if !prerequisites() {
        return;
    }
    let files = &built().bootloader_files.join("boot-files");
    let mut listed: Vec<String> = walk(files)
        .into_iter()
        .map(|p| {
            p.strip_prefix(files)
                .expect("below")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "VERSIONS",
            "copyright/grub",
            "copyright/systemd-boot-efi",
            "grub/arm64-efi/BOOTAA64.EFI",
            "systemd-boot/linuxaa64.efi.stub",
        ],
        "no BIOS images, no x86 programs"
    );
    for program in [
        "grub/arm64-efi/BOOTAA64.EFI",
        "systemd-boot/linuxaa64.efi.stub",
    ] {
        let kind = file_type(&files.join(program));
        assert!(kind.starts_with(EFI_PROGRAM), "{program}: {kind}");
    }
    let versions = String::from_utf8(read(&files.join("VERSIONS"))).expect("utf-8");
    for package in ["grub-common ", "grub-efi-arm64-bin ", "systemd-boot-efi "] {
        assert!(versions.contains(package), "{versions}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}

#[test]
fn the_uki_is_an_arm64_efi_program_holding_the_arm64_kernel() {
    if !prerequisites() {
        return;
    }
    let kernel = read(&output("sys-kernel"));
    let kind = file_type(&output("sys-kernel"));
    assert!(
        kind.starts_with("Linux kernel ARM64 boot executable Image"),
        "{kind}"
    );
    let uki_path = output("sys.efi");
    let kind = file_type(&uki_path);
    assert!(kind.starts_with(EFI_PROGRAM), "{kind}");
    let uki = read(&uki_path);
    assert!(pe_section(&uki, ".linux", kernel.len()) == kernel.as_slice());
    let initrd = read(&output("sys-initrd.img"));
    assert!(pe_section(&uki, ".initrd", initrd.len()) == initrd.as_slice());
    let cmdline = b"quiet console=ttyAMA0";
    assert_eq!(pe_section(&uki, ".cmdline", cmdline.len()), cmdline);
    // kernel+initrd keeps the manifest's command line: the console is the boot media's.
    assert_eq!(read(&output("sys-cmdline")), b"quiet");
}

#[test]
fn the_efi_disks_hold_bootaa64_on_their_esp() {
    if !prerequisites() {
        return;
    }
    let disk = output("sys-efi.img");
    run_ok(Command::new("sgdisk").arg("-v").arg(&disk));
    let table = run_ok(Command::new("sgdisk").arg("-p").arg(&disk));
    let esp = table
        .lines()
        .find(|l| l.contains("EF00"))
        .unwrap_or_else(|| panic!("no EFI system partition:\n{table}"));
    let start: u64 = esp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{esp}"));
    assert_eq!(table.matches("EF00").count(), 1, "{table}");
    let offset = start * 512;
    let listing = fat_listing(&disk, offset, "EFI/BOOT");
    assert!(listing.contains("BOOTAA64.EFI"), "{listing}");
    assert!(!listing.contains("BOOTX64"), "{listing}");
    let boot = fat_file(&disk, offset, "EFI/BOOT/BOOTAA64.EFI");
    assert!(
        boot == read(&output("sys.efi")),
        "the ESP's program is the UKI"
    );
    // No BIOS boot code in the protective MBR.
    let head = read_head(&disk, 512);
    assert!(head[..440].iter().all(|&b| b == 0), "MBR boot code");

    // The qcow2 disk is the same disk.
    let qcow2 = output("sys-efi.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "qcow2"])
            .arg(&qcow2),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let raw = tmp.path().join("raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&qcow2)
            .arg(&raw),
    );
    run_ok(Command::new("cmp").arg(&raw).arg(&disk));
}

fn read_head(path: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut head = vec![0u8; len];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    head
}

#[test]
fn the_uefi_isos_hold_bootaa64_and_no_bios_boot() {
    if !prerequisites() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let grub = read(
        &built()
            .bootloader_files
            .join("boot-files/grub/arm64-efi/BOOTAA64.EFI"),
    );
    for (iso, program) in [
        ("sys-efi.iso", read(&output("sys.efi"))),
        ("sys-efi-initrd.iso", grub),
    ] {
        let path = output(iso);
        let catalog = run_ok(
            Command::new("xorriso")
                .args(["-indev"])
                .arg(&path)
                .args(["-report_el_torito", "plain"]),
        );
        let entries: Vec<&str> = catalog
            .lines()
            .filter(|l| l.starts_with("El Torito boot img :"))
            .collect();
        assert_eq!(entries.len(), 1, "{iso}: one boot entry:\n{catalog}");
        assert!(entries[0].contains("UEFI"), "{iso}:\n{catalog}");
        assert!(!catalog.contains("BIOS"), "{iso}:\n{catalog}");
        // Hybrid for UEFI (a partition table), without BIOS boot code.
        assert!(read_head(&path, 440).iter().all(|&b| b == 0), "{iso}");

        let dir = tmp.path().join(iso);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let esp = iso_file(&path, "/boot/efi.img", &dir);
        let listing = fat_listing(&esp, 0, "EFI/BOOT");
        assert!(listing.contains("BOOTAA64.EFI"), "{iso}: {listing}");
        let boot = dir.join("BOOTAA64.EFI");
        std::fs::write(&boot, fat_file(&esp, 0, "EFI/BOOT/BOOTAA64.EFI")).expect("write");
        let kind = file_type(&boot);
        assert!(kind.starts_with(EFI_PROGRAM), "{iso}: {kind}");
        assert!(read(&boot) == program, "{iso}: the ESP's program");
    }
    // iso-efi-initrd: GRUB reads the arm64 kernel and initrd from the ISO.
    let iso = output("sys-efi-initrd.iso");
    let kernel = iso_file(&iso, "/boot/kernel", tmp.path());
    assert!(read(&kernel) == read(&output("sys-kernel")));
    let initrd = iso_file(&iso, "/boot/initrd.img", tmp.path());
    assert!(read(&initrd) == read(&output("sys-initrd.img")));
    let cfg =
        String::from_utf8(read(&iso_file(&iso, "/boot/grub/grub.cfg", tmp.path()))).expect("utf-8");
    assert!(
        cfg.contains("\nlinux '/boot/kernel' 'quiet' 'console=ttyAMA0'\n"),
        "{cfg}"
    );
    assert!(!cfg.contains("serial"), "the firmware's console:\n{cfg}");
}

#[test]
fn a_second_build_gives_identical_bytes() {
    if !prerequisites() {
        return;
    }
    let b = built();
    let again = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-media-again");
    let _ = std::fs::remove_dir_all(&again);
    let formats: Vec<&str> = FORMATS.iter().map(|(f, _)| *f).collect();
    run_ok(
        kiln()
            .args([
                "--arch", "arm64", "build", "--name", "sys", "--size", "128M",
            ])
            .args(["-f", &formats.join(",")])
            .args(["--bootloader", &b.bootloader, "--cache"])
            .arg(&b.cache)
            .arg("--dir")
            .arg(&again)
            .arg(&b.manifest)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    for (format, file) in FORMATS {
        let (first, second) = (output(file), again.join(file));
        let same = Command::new("cmp")
            .arg(&first)
            .arg(&second)
            .status()
            .expect("spawn cmp");
        assert!(
            same.success(),
            "{format}: {file} differs between two builds"
        );
    }
    let _ = std::fs::remove_dir_all(&again);
}

#[test]
fn the_bios_formats_are_refused_for_arm64() {
    if !prerequisites() {
        return;
    }
    let b = built();
    let tmp = tempfile::tempdir().expect("tempdir");
    for format in BIOS_FORMATS {
        let out = kiln()
            .args(["--arch", "arm64", "build", "--name", "bios", "-f", format])
            .args(["--bootloader", &b.bootloader, "--cache"])
            .arg(&b.cache)
            .arg("--dir")
            .arg(tmp.path())
            .arg(&b.manifest)
            .output()
            .expect("spawn kiln");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{format} was written for arm64");
        assert!(
            stderr.contains(&format!(
                "format {format} boots through a PC BIOS, which arm64 machines do not have: use "
            )) && stderr.contains("efi"),
            "{format}: {stderr}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "nothing written: {left:?}");
}

/// Boot under `qemu-system-aarch64 -M virt` with AAVMF and the extra qemu arguments `drive`
/// (which may name `{}`: a copy of the output `file` in a temporary directory); asserts the
/// marker and a power-off on the serial console.
fn boots(file: &str, drive: &[&str]) {
    if !prerequisites() || !tools_present(&["qemu-system-aarch64"]) {
        return;
    }
    if !Path::new(AAVMF_CODE).is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {AAVMF_CODE}: run scripts/install-deps.sh"
        );
        eprintln!("skipping: no {AAVMF_CODE} (apt-get install qemu-efi-aarch64)");
        return;
    }
    let built = output(file);
    let state = tempfile::tempdir().expect("tempdir");
    // Copies: the firmware writes its variables, the guest its disk.
    let copy = state.path().join(file);
    std::fs::copy(&built, &copy).expect("copy");
    let vars = state.path().join("vars.fd");
    std::fs::copy(AAVMF_VARS, &vars).expect("copy");
    let copy = copy.to_str().expect("utf-8").to_string();
    let out = Command::new("timeout")
        .arg("240")
        .arg("qemu-system-aarch64")
        .args([
            "-M",
            "virt",
            "-cpu",
            "cortex-a57",
            "-m",
            "1024",
            "-accel",
            "tcg",
        ])
        .args(["-nographic", "-nic", "none", "-no-reboot"])
        .args([
            "-drive",
            &format!("if=pflash,format=raw,readonly=on,file={AAVMF_CODE}"),
        ])
        .args([
            "-drive",
            &format!("if=pflash,format=raw,file={}", vars.display()),
        ])
        .args(drive.iter().map(|a| a.replace("{}", &copy)))
        .output()
        .expect("spawn qemu-system-aarch64");
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains(&format!("{MARKER} aarch64")),
        "{file}: no marker (exit {:?}):\n{console}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && console.contains("reboot: Power down"),
        "{file}: no clean power-off (exit {:?}):\n{console}",
        out.status
    );
}

const VIRTIO_DISK: &[&str] = &[
    "-drive",
    "if=none,id=d0,format=raw,file={}",
    "-device",
    "virtio-blk-pci,drive=d0",
];

const CDROM: &[&str] = &[
    "-device",
    "virtio-scsi-pci",
    "-drive",
    "if=none,id=cd,media=cdrom,format=raw,file={}",
    "-device",
    "scsi-cd,drive=cd",
];

#[test]
fn raw_efi_boots_under_aavmf() {
    boots("sys-efi.img", VIRTIO_DISK);
}

#[test]
fn qcow2_efi_boots_under_aavmf() {
    boots(
        "sys-efi.qcow2",
        &[
            "-drive",
            "if=none,id=d0,format=qcow2,file={}",
            "-device",
            "virtio-blk-pci,drive=d0",
        ],
    );
}

#[test]
fn iso_efi_boots_from_a_cdrom_under_aavmf() {
    boots("sys-efi.iso", CDROM);
}

#[test]
fn iso_efi_initrd_boots_grub_from_a_cdrom_under_aavmf() {
    boots("sys-efi-initrd.iso", CDROM);
}

#[test]
fn iso_efi_boots_as_a_disk_under_aavmf() {
    boots("sys-efi.iso", VIRTIO_DISK);
}

#[test]
fn the_uki_boots_from_a_fat_drive_under_aavmf() {
    if !prerequisites() {
        return;
    }
    // The firmware starts EFI/BOOT/BOOTAA64.EFI of a FAT drive qemu makes of a directory.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arm64-media-uki-esp");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("EFI/BOOT")).expect("mkdir");
    std::fs::copy(output("sys.efi"), dir.join("EFI/BOOT/BOOTAA64.EFI")).expect("copy");
    let drive = format!("if=none,id=d0,format=raw,file=fat:rw:{}", dir.display());
    boots(
        "sys.efi",
        &["-drive", &drive, "-device", "virtio-blk-pci,drive=d0"],
    );
}
