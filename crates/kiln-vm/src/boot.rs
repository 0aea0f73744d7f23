//! What a guest boots from: a kernel and initrd handed to qemu, or an image that firmware boots
//! (an ISO, a disk in any of the formats kiln writes, a Unified Kernel Image), under SeaBIOS or
//! UEFI firmware (OVMF).

use crate::{VmError, input, io_at};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What qemu boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A kernel and initrd loaded by qemu itself, with a command line.
    Kernel {
        /// The kernel.
        kernel: PathBuf,
        /// The initrd.
        initrd: PathBuf,
        /// Kernel command line (the console is added when missing).
        cmdline: String,
    },
    /// An ISO image on a CD-ROM drive.
    Cdrom(PathBuf),
    /// A disk image, in qemu's format `format` (`raw`, `qcow2`, `vpc`, `vmdk`).
    Disk {
        /// The image.
        path: PathBuf,
        /// qemu's name of its format.
        format: String,
    },
    /// A Unified Kernel Image (a PE file), which UEFI firmware starts from a FAT drive that
    /// holds it as `EFI/BOOT/BOOTX64.EFI` (made in the state directory).
    Uki(PathBuf),
}

/// The firmware the guest starts with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Firmware {
    /// qemu's default: SeaBIOS on x86.
    #[default]
    Bios,
    /// UEFI firmware from this file (OVMF on x86).
    Uefi(PathBuf),
}

/// Where Debian (package `ovmf`) and other distributions put the UEFI firmware for x86_64.
const OVMF_PATHS: &[&str] = &[
    "/usr/share/ovmf/OVMF.fd",
    "/usr/share/qemu/OVMF.fd",
    "/usr/share/OVMF/OVMF.fd",
    "/usr/share/edk2/ovmf/OVMF.fd",
];

/// The UEFI firmware images of arm64 guests (`-M virt`), one file as `-bios` takes it.
const AAVMF_PATHS: &[&str] = &[
    "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    "/usr/share/edk2/aarch64/QEMU_EFI.fd",
];

/// The UEFI firmware for a guest of qemu architecture `arch`: `given` (`--fw`), else OVMF
/// (x86_64) or EDK II's arm64 build (aarch64) where Debian and others install them.
pub fn uefi_firmware(given: Option<&Path>, arch: &str) -> Result<PathBuf, VmError> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(input(p, "--fw: no such firmware file"))
        };
    }
    let (paths, package) = match arch {
        "aarch64" => (AAVMF_PATHS, "qemu-efi-aarch64"),
        _ => (OVMF_PATHS, "ovmf"),
    };
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            input(
                Path::new(paths[0]),
                format!(
                    "no UEFI firmware for {arch} found: install it (Debian: apt-get install \
                     {package}) or give --fw PATH"
                ),
            )
        })
}

/// What a file kiln wrote is, from its name and first bytes, and whether it needs UEFI: the
/// outputs of the disk, ISO and UKI formats (`NAME-efi.img`, `NAME.qcow2`, `NAME.vhd`,
/// `NAME.vmdk`, `NAME.iso`, `NAME.efi`, `NAME.raw`, ...). Returns `None` for a file that is no
/// image kiln knows.
pub fn detect(path: &Path) -> Result<Option<(Boot, bool)>, VmError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut block = Vec::with_capacity(512);
    fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut block))
        .map_err(io_at(path))?;
    // A tar (the `tar`, `rpi3`, `docker` and `kernel+initrd` tar outputs) is no disk: qemu would
    // boot it as one and firmware would find nothing to start.
    if block.get(257..262) == Some(b"ustar") && !name.ends_with(".iso") {
        return Err(input(
            path,
            "a tar archive (the tar, rpi3 or docker format) is not something qemu boots: build \
             the system with -f kernel+initrd, or a disk or ISO format (raw-bios, qcow2-efi, \
             iso-efi, ...), and run that",
        ));
    }
    let head = &block[..block.len().min(4)];
    let efi_name = name.contains("-efi.") || name.contains("-efi-initrd.");
    let disk = |format: &str| Boot::Disk {
        path: path.to_path_buf(),
        format: format.into(),
    };
    let boot = if name.ends_with(".iso") {
        (Boot::Cdrom(path.to_path_buf()), efi_name)
    } else if name.ends_with(".efi") || head.starts_with(b"MZ") {
        (Boot::Uki(path.to_path_buf()), true)
    } else if head == b"QFI\xfb" {
        (disk("qcow2"), efi_name)
    } else if name.ends_with(".vhd") {
        (disk("vpc"), efi_name)
    } else if head == b"KDMV" || name.ends_with(".vmdk") {
        (disk("vmdk"), efi_name)
    } else if name.ends_with(".img") || name.ends_with(".raw") {
        (disk("raw"), efi_name)
    } else {
        return Ok(None);
    };
    Ok(Some(boot))
}

/// Unpack `disk.raw` from a Google Compute Engine image (`NAME.img.tar.gz`) into `dir`.
pub fn unpack_gcp(tarball: &Path, dir: &Path) -> Result<PathBuf, VmError> {
    let f = fs::File::open(tarball).map_err(io_at(tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    fs::create_dir_all(dir).map_err(io_at(dir))?;
    let out = dir.join("disk.raw");
    for entry in archive.entries().map_err(io_at(tarball))? {
        let mut entry = entry.map_err(io_at(tarball))?;
        if entry.path().map_err(io_at(tarball))?.as_os_str() == "disk.raw" {
            let mut w = fs::File::create(&out).map_err(io_at(&out))?;
            std::io::copy(&mut entry, &mut w).map_err(io_at(&out))?;
            return Ok(out);
        }
    }
    Err(input(tarball, "no disk.raw in this image tarball"))
}

/// The FAT directory UEFI firmware reads a UKI from: `dir/EFI/BOOT/BOOTX64.EFI` (a copy), or
/// `BOOTAA64.EFI` when the UKI is an arm64 EFI program (PE machine 0xaa64).
pub(crate) fn uki_directory(uki: &Path, dir: &Path) -> Result<PathBuf, VmError> {
    let mut head = Vec::new();
    fs::File::open(uki)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .map_err(io_at(uki))?;
    let arm64 = kiln_format::Arch::Arm64;
    let path = if kiln_format::uki::pe_machine(&head) == Some(arm64.pe_machine()) {
        arm64.efi_boot_path()
    } else {
        kiln_format::Arch::Amd64.efi_boot_path()
    };
    let root = dir.join("uki-esp");
    let target = root.join(path);
    if let Some(boot) = target.parent() {
        fs::create_dir_all(boot).map_err(io_at(boot))?;
    }
    fs::copy(uki, &target).map_err(io_at(&target))?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_recognised_by_name_and_magic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: &[(&str, &[u8], &str, bool)] = &[
            ("s.iso", b"\0\0\0\0", "cdrom", false),
            ("s-efi.iso", b"\0\0\0\0", "cdrom", true),
            ("s-efi-initrd.iso", b"\0\0\0\0", "cdrom", true),
            ("s.efi", b"MZ\0\0", "uki", true),
            ("s.qcow2", b"QFI\xfb", "qcow2", false),
            ("s-efi.qcow2", b"QFI\xfb", "qcow2", true),
            ("s.vhd", b"conectix", "vpc", false),
            ("s.vmdk", b"KDMV", "vmdk", false),
            ("s-bios.img", b"\0\0\0\0", "raw", false),
            ("s-efi.img", b"\0\0\0\0", "raw", true),
            ("s.raw", b"\0\0\0\0", "raw", false),
        ];
        for (name, head, kind, uefi) in cases {
            let p = dir.path().join(name);
            fs::write(&p, head).expect("write");
            let (boot, efi) = detect(&p).expect("read").expect(name);
            let got = match boot {
                Boot::Cdrom(_) => "cdrom".to_string(),
                Boot::Uki(_) => "uki".to_string(),
                Boot::Disk { format, .. } => format,
                Boot::Kernel { .. } => "kernel".to_string(),
            };
            assert_eq!((got.as_str(), efi), (*kind, *uefi), "{name}");
        }
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        let card = dir.path().join("s-rpi3.tar");
        fs::write(&card, &tar).expect("write");
        let e = detect(&card).expect_err("a tar");
        assert!(e.to_string().contains("kernel+initrd"), "{e}");
        let other = dir.path().join("notes.txt");
        fs::write(&other, b"text").expect("write");
        assert!(detect(&other).expect("read").is_none());
    }
}
