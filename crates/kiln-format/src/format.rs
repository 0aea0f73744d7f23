//! The output formats kiln writes, as one typed list, and the interface every format's writer
//! implements.

use crate::kernel_initrd::Compression;
use kiln_fs::Sink;
use std::io;
use std::path::{Path, PathBuf};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// `NAME-kernel`, `NAME-initrd.img` and `NAME-cmdline`, for qemu, iPXE and other loaders
    /// that are handed a kernel.
    KernelInitrd,
    /// `NAME.tar`: the root filesystem as a tar archive.
    Tar,
    /// `NAME-initrd.tar`: a tar holding `kernel`, `initrd.img` and `cmdline`.
    TarKernelInitrd,
    /// `NAME-docker.tar`: the root filesystem laid out for `docker import`.
    Docker,
    /// `NAME.efi`: a Unified Kernel Image that UEFI firmware starts.
    Uki,
    /// `NAME.iso`: an ISO that BIOS firmware boots from a CD or, hybrid, from a disk.
    IsoBios,
    /// `NAME-efi.iso`: an ISO that UEFI firmware boots (a UKI on its EFI system partition).
    IsoEfi,
    /// `NAME-efi-initrd.iso`: an ISO for UEFI with the kernel and initrd as files beside the
    /// boot loader (GRUB) rather than inside it.
    IsoEfiInitrd,
    /// `NAME-bios.img`: a raw disk that BIOS firmware boots (MBR, GRUB, a FAT boot partition).
    RawBios,
    /// `NAME-efi.img`: a raw disk that UEFI firmware boots (GPT, an EFI system partition).
    RawEfi,
    /// `NAME.qcow2`: the BIOS disk as qcow2.
    Qcow2Bios,
    /// `NAME-efi.qcow2`: the UEFI disk as qcow2.
    Qcow2Efi,
    /// `NAME.vhd`: the BIOS disk as a fixed VHD, as Azure wants.
    Vhd,
    /// `NAME.vhd`: the BIOS disk as a dynamic VHD.
    DynamicVhd,
    /// `NAME.vmdk`: the BIOS disk as VMDK.
    Vmdk,
    /// `NAME.img.tar.gz`: the BIOS disk as `disk.raw` in a gzipped tar, as Google Compute
    /// Engine imports it.
    Gcp,
    /// `NAME.raw`: the BIOS disk as a raw image for Amazon EC2 imports.
    Aws,
    /// `NAME-kernel`, `NAME-initrd.img` (kiln-init and the kernel's modules only),
    /// `NAME-cmdline` and `NAME-squashfs.img`, the root filesystem, which kiln-init mounts from
    /// the first virtio disk.
    KernelSquashfs,
    /// As [`Format::KernelSquashfs`] with the root as erofs: `NAME-erofs.img`.
    KernelErofs,
    /// As [`Format::KernelSquashfs`] with the root as an ISO 9660 image, `NAME.iso`, which
    /// kiln-init mounts from the first CD-ROM drive.
    KernelIso,
    /// `NAME.tar`: what goes on a Raspberry Pi 3's SD card (its boot partition): the Pi's
    /// firmware from [`Target::firmware`], config.txt, cmdline.txt, the arm64 kernel, the
    /// initrd and the device trees.
    Rpi3,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 21] = [
        Format::KernelInitrd,
        Format::Tar,
        Format::TarKernelInitrd,
        Format::Docker,
        Format::Uki,
        Format::IsoBios,
        Format::IsoEfi,
        Format::IsoEfiInitrd,
        Format::RawBios,
        Format::RawEfi,
        Format::Qcow2Bios,
        Format::Qcow2Efi,
        Format::Vhd,
        Format::DynamicVhd,
        Format::Vmdk,
        Format::Gcp,
        Format::Aws,
        Format::KernelSquashfs,
        Format::KernelErofs,
        Format::KernelIso,
        Format::Rpi3,
    ];

    /// The format's name on the command line and in manifests (LinuxKit's names).
    pub fn name(self) -> &'static str {
        match self {
            Format::KernelInitrd => "kernel+initrd",
            Format::Tar => "tar",
            Format::TarKernelInitrd => "tar-kernel-initrd",
            Format::Docker => "docker",
            Format::Uki => "uki",
            Format::IsoBios => "iso-bios",
            Format::IsoEfi => "iso-efi",
            Format::IsoEfiInitrd => "iso-efi-initrd",
            Format::RawBios => "raw-bios",
            Format::RawEfi => "raw-efi",
            Format::Qcow2Bios => "qcow2-bios",
            Format::Qcow2Efi => "qcow2-efi",
            Format::Vhd => "vhd",
            Format::DynamicVhd => "dynamic-vhd",
            Format::Vmdk => "vmdk",
            Format::Gcp => "gcp",
            Format::Aws => "aws",
            Format::KernelSquashfs => "kernel+squashfs",
            Format::KernelErofs => "kernel+erofs",
            Format::KernelIso => "kernel+iso",
            Format::Rpi3 => "rpi3",
        }
    }

    /// The suffix of the format's main output after `NAME`.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::KernelInitrd => "-initrd.img",
            Format::Tar => ".tar",
            Format::TarKernelInitrd => "-initrd.tar",
            Format::Docker => "-docker.tar",
            Format::Uki => ".efi",
            Format::IsoBios => ".iso",
            Format::IsoEfi => "-efi.iso",
            Format::IsoEfiInitrd => "-efi-initrd.iso",
            Format::RawBios => "-bios.img",
            Format::RawEfi => "-efi.img",
            Format::Qcow2Bios => ".qcow2",
            Format::Qcow2Efi => "-efi.qcow2",
            Format::Vhd | Format::DynamicVhd => ".vhd",
            Format::Vmdk => ".vmdk",
            Format::Gcp => ".img.tar.gz",
            Format::Aws => ".raw",
            Format::KernelSquashfs => "-squashfs.img",
            Format::KernelErofs => "-erofs.img",
            Format::KernelIso => ".iso",
            Format::Rpi3 => ".tar",
        }
    }

    /// One line saying what the format writes.
    pub fn description(self) -> &'static str {
        match self {
            Format::KernelInitrd => "NAME-kernel, NAME-initrd.img and NAME-cmdline",
            Format::Tar => "NAME.tar, the root filesystem as a tar archive",
            Format::TarKernelInitrd => "NAME-initrd.tar holding kernel, initrd.img and cmdline",
            Format::Docker => "NAME-docker.tar, the root filesystem for `docker import`",
            Format::Uki => "NAME.efi, a Unified Kernel Image for UEFI firmware",
            Format::IsoBios => "NAME.iso, a hybrid ISO for BIOS firmware (CD or disk)",
            Format::IsoEfi => "NAME-efi.iso, a hybrid ISO for UEFI firmware",
            Format::IsoEfiInitrd => {
                "NAME-efi-initrd.iso, an ISO for UEFI, kernel and initrd as files"
            }
            Format::RawBios => "NAME-bios.img, a raw disk for BIOS firmware",
            Format::RawEfi => "NAME-efi.img, a raw disk for UEFI firmware",
            Format::Qcow2Bios => "NAME.qcow2, a qcow2 disk for BIOS firmware",
            Format::Qcow2Efi => "NAME-efi.qcow2, a qcow2 disk for UEFI firmware",
            Format::Vhd => "NAME.vhd, a fixed VHD disk (Azure)",
            Format::DynamicVhd => "NAME.vhd, a dynamic VHD disk",
            Format::Vmdk => "NAME.vmdk, a VMDK disk",
            Format::Gcp => "NAME.img.tar.gz, disk.raw for Google Compute Engine",
            Format::Aws => "NAME.raw, a raw disk for Amazon EC2",
            Format::KernelSquashfs => {
                "NAME-kernel, NAME-initrd.img, NAME-cmdline and the root as NAME-squashfs.img"
            }
            Format::KernelErofs => {
                "NAME-kernel, NAME-initrd.img, NAME-cmdline and the root as NAME-erofs.img"
            }
            Format::KernelIso => {
                "NAME-kernel, NAME-initrd.img, NAME-cmdline and the root as NAME.iso (a CD-ROM)"
            }
            Format::Rpi3 => "NAME.tar, a Raspberry Pi 3's SD card boot partition (arm64)",
        }
    }

    /// Whether assembly lays the root filesystem out for a container engine (LinuxKit's
    /// `docker` format) rather than for booting.
    pub fn container_layout(self) -> bool {
        self == Format::Docker
    }

    /// Whether the format is made from the kernel, initrd and command line of a build (the
    /// boot media: ISOs, disks, UKIs), with boot loader files from [`Target::bootloader`].
    pub fn is_boot_media(self) -> bool {
        !matches!(
            self,
            Format::KernelInitrd
                | Format::Tar
                | Format::TarKernelInitrd
                | Format::Docker
                | Format::KernelSquashfs
                | Format::KernelErofs
                | Format::KernelIso
                | Format::Rpi3
        )
    }

    /// The read-only root image the format always carries (`kernel+squashfs`, `kernel+erofs`).
    pub fn root_image(self) -> Option<RootFs> {
        match self {
            Format::KernelSquashfs => Some(RootFs::Squashfs),
            Format::KernelErofs => Some(RootFs::Erofs),
            Format::KernelIso => Some(RootFs::Iso9660),
            _ => None,
        }
    }

    /// A writer of this format for `target`. Nothing appears under the output names before
    /// [`FormatWriter::finish`] succeeds.
    pub fn writer(self, target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
        crate::outputs::writer(&[self], target)
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| FormatError::Unknown(s.to_string()))
    }
}

/// Where a booted system's root filesystem lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RootFs {
    /// In RAM: unpacked from the initrd (LinuxKit's way).
    #[default]
    Ram,
    /// A read-only squashfs image on a disk partition.
    Squashfs,
    /// A read-only erofs image on a disk partition.
    Erofs,
    /// An ISO 9660 image on a CD-ROM (`kernel+iso` only).
    Iso9660,
}

impl RootFs {
    /// The name on the command line (`--root`) and the kernel's file system type.
    pub fn name(self) -> &'static str {
        match self {
            RootFs::Ram => "ram",
            RootFs::Squashfs => "squashfs",
            RootFs::Erofs => "erofs",
            RootFs::Iso9660 => "iso9660",
        }
    }
}

impl std::str::FromStr for RootFs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [RootFs::Ram, RootFs::Squashfs, RootFs::Erofs]
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("`{s}`: the root is ram, squashfs or erofs"))
    }
}

/// Where and how the outputs are written.
#[derive(Debug, Clone)]
pub struct Target {
    /// The directory outputs go to.
    pub dir: PathBuf,
    /// The base name of the outputs (`NAME` in [`Format::description`]).
    pub name: String,
    /// The tar format's output file instead of `DIR/NAME.tar` (`-` for standard output).
    pub tar_output: Option<PathBuf>,
    /// The initrd's compression.
    pub compression: Compression,
    /// The modification time of members the writers add themselves (SOURCE_DATE_EPOCH).
    pub mtime: u64,
    /// Where initrd segments are cached between builds (none: no cache); see
    /// [`crate::segment_cache_dir`].
    pub segment_cache: Option<PathBuf>,
    /// The size of disk images, in bytes (LinuxKit's `--size`).
    pub disk_size: u64,
    /// The boot loader files the boot media formats need (from kiln's bootloader package).
    pub bootloader: Option<std::sync::Arc<crate::Bootloader>>,
    /// The Raspberry Pi firmware the rpi3 format needs (from kiln's rpi3-firmware package).
    pub firmware: Option<std::sync::Arc<crate::Firmware>>,
    /// Where the boot media formats put the root filesystem: in the initrd (RAM), or in a
    /// read-only image on a partition of the disk, with an initrd holding only kiln-init and
    /// the kernel's modules.
    pub root: RootFs,
}

impl Target {
    /// Outputs named `NAME...` in `dir`.
    pub fn new(
        dir: impl Into<PathBuf>,
        name: impl Into<String>,
        compression: Compression,
        mtime: u64,
    ) -> Self {
        Target {
            dir: dir.into(),
            name: name.into(),
            tar_output: None,
            compression,
            mtime,
            segment_cache: None,
            disk_size: 1024 << 20,
            bootloader: None,
            firmware: None,
            root: RootFs::Ram,
        }
    }

    /// How the initrd formats write their initrd.
    pub fn initrd_options(&self) -> crate::InitrdOptions {
        crate::InitrdOptions {
            cache: self.segment_cache.clone(),
            ..crate::InitrdOptions::new(self.compression)
        }
    }

    /// The output `NAME{suffix}` in the output directory.
    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.name))
    }
}

/// A format's writer: a [`Sink`] for the root filesystem, finished into its output files.
pub trait FormatWriter: Sink {
    /// Complete the outputs and move them into place; returns their paths (none for standard
    /// output).
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError>;
}

/// An output that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// No such format.
    #[error("unknown output format `{0}`; kiln writes: {names}", names = Format::ALL.map(Format::name).join(", "))]
    Unknown(String),
    /// Two formats asked for write the same file.
    #[error("formats {0} and {1} both write NAME{suffix}; ask for one of them", suffix = .0.suffix())]
    SameOutput(Format, Format),
    /// A boot media format needs the boot loader files.
    #[error(
        "format {0} needs kiln's boot loader files: build them with `kiln pkg build pkg/bootloader` and pass the image with --bootloader IMAGE"
    )]
    NoBootloader(Format),
    /// The boot loader image lacks a file a format needs.
    #[error(
        "format {format}: the boot loader image has no {file}; build it from kiln's pkg/bootloader"
    )]
    BootloaderFile {
        /// The format.
        format: Format,
        /// The missing file.
        file: String,
    },
    /// A format that boots through a PC BIOS, asked for an architecture without one.
    #[error(
        "format {format} boots through a PC BIOS, which {arch} machines do not have: use {instead}, which boot{s} under UEFI",
        s = if .instead.contains(" or ") { "" } else { "s" }
    )]
    NoBios {
        /// The format.
        format: Format,
        /// The system's architecture.
        arch: crate::Arch,
        /// The formats to use instead.
        instead: &'static str,
    },
    /// The rpi3 format needs the Raspberry Pi firmware.
    #[error(
        "format {0} needs the Raspberry Pi firmware: build it with `kiln --arch arm64 pkg build pkg/rpi3-firmware` and pass the image with --firmware IMAGE"
    )]
    NoFirmware(Format),
    /// The firmware image lacks a file a format needs.
    #[error(
        "format {format}: the firmware image has no {file}; build it from kiln's pkg/rpi3-firmware"
    )]
    FirmwareFile {
        /// The format.
        format: Format,
        /// The missing file.
        file: String,
    },
    /// What a format is made of does not fit it (the kernel of another architecture, a missing
    /// device tree, ...).
    #[error("format {format}: {why}")]
    Content {
        /// The format.
        format: Format,
        /// What is wrong and what to do.
        why: String,
    },
    /// A format cannot carry its root as an image yet.
    #[error(
        "format {0} cannot carry the root as an image yet: build it with --root ram, or use raw-efi, qcow2-efi, kernel+squashfs or kernel+erofs"
    )]
    NoRootImage(Format),
    /// The content does not fit the disk size.
    #[error(
        "format {format}: {needed} MiB of content does not fit a {size} MiB disk; give a larger --size"
    )]
    TooSmall {
        /// The format.
        format: Format,
        /// MiB needed.
        needed: u64,
        /// MiB given.
        size: u64,
    },
    /// Writing an output failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Shorthand: an I/O error while writing `path`.
pub(crate) fn write_err(path: &Path) -> impl FnOnce(io::Error) -> FormatError + '_ {
    move |source| FormatError::Write {
        path: path.to_path_buf(),
        source,
    }
}
