//! Each boot media format from the captured kernel, initrd and command line: the Unified
//! Kernel Image, the UEFI disk (GPT, an EFI system partition holding the UKI), the BIOS disk
//! (MBR, GRUB embedded after it, a FAT boot partition holding the kernel, the initrd and
//! grub.cfg), their qcow2, VHD, VMDK, GCE and AWS forms, and the ISOs. Intermediate images
//! (the UKI, each raw disk) are made once per build, however many formats use them.
//!
//! The boot loader's architecture ([`crate::Bootloader::arch`]) picks the EFI files and the
//! name firmware starts (`EFI/BOOT/BOOTX64.EFI`, `EFI/BOOT/BOOTAA64.EFI`), GRUB's console, the
//! root partition's type and, on arm64, a serial console for the kernel; the BIOS formats exist
//! on amd64 only.

use super::boot_media::{BootFiles, copy_file};
use crate::fat::{self, Source};
use crate::format::{Format, FormatError, Target, write_err};
use crate::grub;
use crate::iso9660::{BiosBoot, EfiBoot, FileSource, HybridMbr, IsoBuilder};
use crate::partition::{self, Gpt, GptPartition, Guid, Mbr, MbrPartition, Place, TableKind};
use crate::uki::{self, UkiSections};
use crate::vdisk::{self, DiskContainer, DiskIds};
use crate::{Arch, AtomicOutput, Spool};
use std::cell::OnceCell;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The os-release a UKI carries (`.osrel`), which boot menus show.
const OS_RELEASE: &str = "NAME=kiln\nID=kiln\nPRETTY_NAME=\"kiln system\"\n";

/// Where the BIOS media and `iso-efi-initrd` keep the kernel, initrd and GRUB's configuration.
const KERNEL: &str = "boot/kernel";
const INITRD: &str = "boot/initrd.img";
const GRUB_CFG: &str = "boot/grub/grub.cfg";
/// MBR partition type of a FAT16 partition addressed by LBA.
const MBR_FAT16_LBA: u8 = 0x0e;

/// Makes the outputs of one build, sharing intermediate images.
pub(crate) struct Packager<'a> {
    boot: &'a BootFiles,
    target: &'a Target,
    uki: OnceCell<Spool>,
    efi_disk: OnceCell<Spool>,
    bios_disk: OnceCell<Spool>,
}

impl<'a> Packager<'a> {
    pub(crate) fn new(boot: &'a BootFiles, target: &'a Target) -> Self {
        Packager {
            boot,
            target,
            uki: OnceCell::new(),
            efi_disk: OnceCell::new(),
            bios_disk: OnceCell::new(),
        }
    }

    /// Write `format`; returns its file.
    pub(crate) fn write(&self, format: Format) -> Result<PathBuf, FormatError> {
        super::boot_media::check_arch(format, self.arch())?;
        let dest = self.target.path(format.suffix());
        let mut out = AtomicOutput::create(&dest).map_err(write_err(&dest))?;
        let io = |r: io::Result<()>| r.map_err(write_err(&dest));
        match format {
            Format::Uki => io(copy_file(self.uki(format)?.as_file(), &mut out))?,
            Format::RawEfi => io(copy_sparse(self.efi_disk(format)?.as_file(), &mut out))?,
            Format::RawBios | Format::Aws => {
                io(copy_sparse(self.bios_disk(format)?.as_file(), &mut out))?
            }
            Format::Qcow2Efi => self.container(format, DiskContainer::Qcow2, true, &mut out)?,
            Format::Qcow2Bios => self.container(format, DiskContainer::Qcow2, false, &mut out)?,
            Format::Vhd => self.container(format, DiskContainer::VhdFixed, false, &mut out)?,
            Format::DynamicVhd => {
                self.container(format, DiskContainer::VhdDynamic, false, &mut out)?
            }
            Format::Vmdk => self.container(format, DiskContainer::Vmdk, false, &mut out)?,
            Format::Gcp => {
                let raw = self.bios_disk(format)?;
                io(gcp_tarball(raw.as_file(), self.target.mtime, &mut out))?
            }
            Format::IsoBios | Format::IsoEfi | Format::IsoEfiInitrd => {
                self.iso(format, &mut out)?
            }
            Format::KernelInitrd
            | Format::Tar
            | Format::TarKernelInitrd
            | Format::Docker
            | Format::KernelSquashfs
            | Format::KernelErofs
            | Format::KernelIso
            | Format::Rpi3 => {
                return Err(media_err(format, &dest, "not a boot media format"));
            }
        }
        out.commit().map_err(write_err(&dest))
    }

    fn dest(&self, format: Format) -> PathBuf {
        self.target.path(format.suffix())
    }

    fn bootloader_file(&self, format: Format, name: &str) -> Result<&'a [u8], FormatError> {
        self.target
            .bootloader
            .as_deref()
            .ok_or(FormatError::NoBootloader(format))?
            .file(format, name)
    }

    /// The architecture the boot media are for: the boot loader's.
    fn arch(&self) -> Arch {
        self.target
            .bootloader
            .as_deref()
            .map(|b| b.arch)
            .unwrap_or_default()
    }

    /// The EFI program `name` of the boot loader, which must be built for the architecture.
    fn efi_program(&self, format: Format, name: &str) -> Result<&'a [u8], FormatError> {
        let program = self.bootloader_file(format, name)?;
        let arch = self.arch();
        match uki::pe_machine(program) {
            Some(m) if m == arch.pe_machine() => Ok(program),
            found => {
                let what = match found {
                    Some(m) => format!("an EFI program for PE machine {m:#06x}"),
                    None => "not an EFI program".to_string(),
                };
                Err(media_err(
                    format,
                    &self.dest(format),
                    format!(
                        "the boot loader's {name} is {what}, not one for {arch} ({:#06x}): \
                         use kiln's bootloader package built for {arch} \
                         (`kiln --arch {arch} pkg build pkg/bootloader`)",
                        arch.pe_machine()
                    ),
                ))
            }
        }
    }

    fn spool(&self) -> Result<Spool, FormatError> {
        Spool::create(&self.target.dir).map_err(write_err(&self.target.dir))
    }

    /// The kernel command line of a disk with the partition table `table`: the build's (with
    /// the architecture's console when it names none: [`Arch::boot_cmdline`]), plus the
    /// switches that make kiln-init mount the root partition when the root is on one (by its
    /// GPT name, or on an MBR disk by the disk signature and partition number).
    fn cmdline(&self, table: TableKind) -> String {
        let cmdline = self.arch().boot_cmdline(&self.boot.cmdline);
        let Some(root) = &self.boot.root else {
            return cmdline;
        };
        let device = match table {
            TableKind::Gpt => format!("PARTLABEL={}", root.label),
            TableKind::Mbr => format!("PARTUUID={:08x}-02", self.mbr_signature()),
        };
        super::root_split::root_cmdline(&cmdline, &device, root.fs)
    }

    fn mbr_signature(&self) -> u32 {
        self.derive_u32("mbr disk signature")
    }

    /// A 32-bit identifier derived from the content for `purpose`.
    fn derive_u32(&self, purpose: &str) -> u32 {
        let d = self.boot.derive(purpose);
        u32::from_le_bytes([d[0], d[1], d[2], d[3]])
    }

    /// The Unified Kernel Image: the systemd-boot stub with os-release, the command line, the
    /// initrd and the kernel as sections.
    fn uki(&self, format: Format) -> Result<&Spool, FormatError> {
        if let Some(u) = self.uki.get() {
            return Ok(u);
        }
        let stub = self.efi_program(format, self.arch().efi_stub())?;
        let mut tmp = self.spool()?;
        let sections = UkiSections {
            osrel: Source::Bytes(OS_RELEASE.as_bytes().to_vec()),
            cmdline: Source::Bytes(self.cmdline(TableKind::Gpt).into_bytes()),
            uname: None,
            initrd: vec![Source::File(self.boot.initrd.path().to_path_buf())],
            linux: Source::File(self.boot.kernel.path().to_path_buf()),
        };
        uki::write_uki(tmp.as_file_mut(), &Source::Bytes(stub.to_vec()), &sections)
            .map_err(|e| media_err(format, &self.dest(format), e))?;
        Ok(self.uki.get_or_init(|| tmp))
    }

    /// The UEFI disk: a GPT whose one partition, the EFI system partition, fills the disk and
    /// holds the UKI as `EFI/BOOT/BOOTX64.EFI` (`BOOTAA64.EFI` on arm64).
    fn efi_disk(&self, format: Format) -> Result<&Spool, FormatError> {
        if let Some(d) = self.efi_disk.get() {
            return Ok(d);
        }
        let uki = self.uki(format)?.path().to_path_buf();
        let files = vec![(self.arch().efi_boot_path().to_string(), Source::File(uki))];
        let seed = self.boot.id;
        let disk_size = self.target.disk_size;
        let Some(root) = &self.boot.root else {
            let place = self.partition_place(format, &files, TableKind::Gpt)?;
            let table = Gpt {
                disk_guid: Guid::derive(&seed, "disk"),
                boot_code: None,
                partitions: vec![GptPartition::new(
                    "EFI System",
                    partition::ESP,
                    Guid::derive(&seed, "esp"),
                    place,
                )],
            };
            let tmp = self.disk(format, place, "KILN-EFI", &files, |disk| {
                partition::write_gpt(disk, disk_size, &table).map_err(io::Error::other)
            })?;
            return Ok(self.efi_disk.get_or_init(|| tmp));
        };
        let places = self.places_with_root(format, &files, TableKind::Gpt)?;
        let table = Gpt {
            disk_guid: Guid::derive(&seed, "disk"),
            boot_code: None,
            partitions: vec![
                GptPartition::new(
                    "EFI System",
                    partition::ESP,
                    Guid::derive(&seed, "esp"),
                    places[0],
                ),
                GptPartition::new(
                    &root.label,
                    self.arch().root_partition_type(),
                    Guid::derive(&seed, "root"),
                    places[1],
                ),
            ],
        };
        let tmp = self.disk(format, places[0], "KILN-EFI", &files, |disk| {
            write_root(disk, &root.file, places[1])?;
            partition::write_gpt(disk, disk_size, &table).map_err(io::Error::other)
        })?;
        Ok(self.efi_disk.get_or_init(|| tmp))
    }

    /// The BIOS disk: an MBR with GRUB's boot code, GRUB's core embedded after it, and one
    /// active FAT partition filling the disk with the kernel, initrd and grub.cfg.
    fn bios_disk(&self, format: Format) -> Result<&Spool, FormatError> {
        if let Some(d) = self.bios_disk.get() {
            return Ok(d);
        }
        let dest = self.dest(format);
        let boot_img = self.bootloader_file(format, grub::files::BOOT_IMG)?;
        let core_img = self.bootloader_file(format, grub::files::CORE_IMG)?;
        let files = self.boot_tree(format)?;
        // The boot partition fills the disk, or with the root on disk, is as small as its files
        // allow and the root partition (the second: PARTUUID=SIGNATURE-02) fills the rest.
        let places = match &self.boot.root {
            None => vec![self.partition_place(format, &files, TableKind::Mbr)?],
            Some(_) => self.places_with_root(format, &files, TableKind::Mbr)?,
        };
        let place = places[0];
        let area = grub::bios_disk_boot_area(boot_img, core_img, place.start)
            .map_err(|e| media_err(format, &dest, e))?;
        let mut partitions = vec![MbrPartition {
            kind: if fat::fat_bits(place.len()) == 32 {
                partition::MBR_FAT32_LBA
            } else {
                MBR_FAT16_LBA
            },
            bootable: true,
            place,
        }];
        if let Some(&root_place) = places.get(1) {
            partitions.push(MbrPartition {
                kind: partition::MBR_LINUX,
                bootable: false,
                place: root_place,
            });
        }
        let table = Mbr {
            boot_code: Some(area.mbr_code.to_vec()),
            disk_signature: self.mbr_signature(),
            partitions,
        };
        let disk_size = self.target.disk_size;
        let tmp = self.disk(format, place, "KILN-BOOT", &files, |disk| {
            if let (Some(root), Some(&root_place)) = (&self.boot.root, places.get(1)) {
                write_root(disk, &root.file, root_place)?;
            }
            partition::write_mbr(disk, disk_size, &table).map_err(io::Error::other)?;
            disk.seek(SeekFrom::Start(grub::EMBED_LBA * grub::SECTOR_SIZE as u64))?;
            disk.write_all(&area.embedding)
        })?;
        Ok(self.bios_disk.get_or_init(|| tmp))
    }

    /// The kernel, initrd and grub.cfg, as the BIOS media and `iso-efi-initrd` hold them.
    fn boot_tree(&self, format: Format) -> Result<Vec<(String, Source)>, FormatError> {
        let cfg = grub::grub_cfg(
            self.arch(),
            &format!("/{KERNEL}"),
            &format!("/{INITRD}"),
            &self.cmdline(TableKind::Mbr),
        )
        .map_err(|e| media_err(format, &self.dest(format), e))?;
        Ok(vec![
            (KERNEL.into(), Source::File(self.boot.kernel.path().into())),
            (INITRD.into(), Source::File(self.boot.initrd.path().into())),
            (GRUB_CFG.into(), Source::Bytes(cfg.into_bytes())),
        ])
    }

    /// The one partition of a disk of `--size`, filling it; an error naming both sizes when
    /// `files` do not fit.
    fn partition_place(
        &self,
        format: Format,
        files: &[(String, Source)],
        kind: TableKind,
    ) -> Result<Place, FormatError> {
        let needed =
            fat::required_size(files).map_err(|e| media_err(format, &self.dest(format), e))?;
        let (_, min_disk) = partition::plan(&[needed], kind);
        let disk_size = self.target.disk_size;
        if min_disk > disk_size
            || !disk_size.is_multiple_of(partition::ALIGN_SECTORS * partition::SECTOR)
        {
            return Err(FormatError::TooSmall {
                format,
                needed: min_disk.div_ceil(1 << 20),
                size: disk_size >> 20,
            });
        }
        // What the table needs besides the partition: 1 MiB before it, and the backup GPT
        // (rounded to 1 MiB) after it.
        let overhead = min_disk - partition::plan(&[needed], kind).0[0].len();
        let (places, total) = partition::plan(&[disk_size - overhead], kind);
        debug_assert_eq!(total, disk_size);
        Ok(places[0])
    }

    /// A boot partition as small as `files` allow, then the root partition filling the rest
    /// of a disk of `--size`; an error naming both sizes when they do not fit.
    fn places_with_root(
        &self,
        format: Format,
        files: &[(String, Source)],
        kind: TableKind,
    ) -> Result<Vec<Place>, FormatError> {
        let dest = self.dest(format);
        let boot = fat::required_size(files).map_err(|e| media_err(format, &dest, e))?;
        let root_len = match &self.boot.root {
            Some(root) => std::fs::metadata(&root.file)
                .map_err(write_err(&root.file))?
                .len(),
            None => 0,
        };
        let disk_size = self.target.disk_size;
        let (_, min_disk) = partition::plan(&[boot, root_len], kind);
        if min_disk > disk_size || !disk_size.is_multiple_of(1 << 20) {
            return Err(FormatError::TooSmall {
                format,
                needed: min_disk.div_ceil(1 << 20),
                size: disk_size >> 20,
            });
        }
        Ok(partition::plan(&[boot, root_len + (disk_size - min_disk)], kind).0)
    }

    /// A raw disk of `--size`: a FAT file system labelled `label` holding `files` in `place`,
    /// then the partition table (and boot code) that `table` writes.
    fn disk(
        &self,
        format: Format,
        place: Place,
        label: &str,
        files: &[(String, Source)],
        table: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<Spool, FormatError> {
        let dest = self.dest(format);
        let mut tmp = self.spool()?;
        let disk = tmp.as_file_mut();
        disk.set_len(self.target.disk_size)
            .map_err(write_err(&dest))?;
        let volume_id = self.derive_u32(&format!("fat volume {label}"));
        {
            let mut slice =
                partition::Slice::partition(&mut *disk, place).map_err(write_err(&dest))?;
            fat::write_fat(
                &mut slice,
                place.len(),
                label,
                volume_id,
                self.target.mtime,
                files,
            )
            .map_err(|e| media_err(format, &dest, e))?;
        }
        table(disk).map_err(write_err(&dest))?;
        Ok(tmp)
    }

    /// The BIOS or UEFI disk in a virtual disk container.
    fn container(
        &self,
        format: Format,
        kind: DiskContainer,
        efi: bool,
        out: &mut AtomicOutput,
    ) -> Result<(), FormatError> {
        let dest = self.dest(format);
        let raw = if efi {
            self.efi_disk(format)?
        } else {
            self.bios_disk(format)?
        };
        let mut raw = raw.reopen().map_err(write_err(&dest))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ids =
            DiskIds::new(self.target.mtime, self.boot.derive("virtual disk")).with_file_name(name);
        vdisk::write_container(kind, &mut raw, out, &ids).map_err(write_err(&dest))
    }

    /// An ISO: for BIOS (`iso-bios`, hybrid: it boots as a disk too) the kernel, initrd and
    /// grub.cfg as files with GRUB's El Torito image; for UEFI an EFI system partition image
    /// holding the UKI (`iso-efi`), or GRUB for UEFI, which reads the kernel and initrd from
    /// the ISO (`iso-efi-initrd`).
    fn iso(&self, format: Format, out: &mut AtomicOutput) -> Result<(), FormatError> {
        let dest = self.dest(format);
        let err = |e: crate::iso9660::IsoError| media_err(format, &dest, e);
        let mut iso = IsoBuilder::new("KILN", self.target.mtime).map_err(err)?;
        let efi_boot = self.arch().efi_boot_path().to_string();
        let esp_files = match format {
            Format::IsoBios => {
                self.add_boot_tree(&mut iso, format)?;
                let eltorito = "boot/grub/i386-pc/eltorito.img";
                let image = self.bootloader_file(format, grub::files::ELTORITO_IMG)?;
                iso.add_file(eltorito, FileSource::Bytes(image.to_vec()))
                    .map_err(err)?;
                iso.set_bios_boot(BiosBoot::grub(eltorito));
                let mbr = self.bootloader_file(format, grub::files::BOOT_HYBRID_IMG)?;
                iso.set_hybrid(HybridMbr::grub(mbr.to_vec()));
                None
            }
            Format::IsoEfi => {
                let uki = self.uki(format)?.path().to_path_buf();
                Some(vec![(efi_boot, Source::File(uki))])
            }
            _ => {
                self.add_boot_tree(&mut iso, format)?;
                let grub_efi = self.efi_program(format, self.arch().grub_efi())?;
                Some(vec![(efi_boot, Source::Bytes(grub_efi.to_vec()))])
            }
        };
        // Kept until the ISO is written: it is read from its file then.
        let mut esp = None;
        if let Some(files) = esp_files {
            let image = self.esp_image(format, &files)?;
            let len = image.as_file().metadata().map_err(write_err(&dest))?.len();
            iso.add_file("boot/efi.img", FileSource::host(image.path(), len))
                .map_err(err)?;
            iso.set_efi_boot(EfiBoot::new("boot/efi.img"));
            // Hybrid too: UEFI firmware finds the ESP through the MBR when it boots the ISO
            // as a disk. The MBR's boot code is zeros (no BIOS code), on arm64 as on amd64.
            iso.set_hybrid(HybridMbr {
                boot_code: vec![0; partition::BOOT_CODE_LEN],
                grub2_patch: false,
            });
            esp = Some(image);
        }
        iso.write(out).map_err(err)?;
        drop(esp);
        Ok(())
    }

    fn add_boot_tree(&self, iso: &mut IsoBuilder, format: Format) -> Result<(), FormatError> {
        let dest = self.dest(format);
        for (path, source) in self.boot_tree(format)? {
            let source = match source {
                Source::Bytes(b) => FileSource::Bytes(b),
                Source::File(p) => {
                    let len = std::fs::metadata(&p).map_err(write_err(&p))?.len();
                    FileSource::host(p, len)
                }
            };
            iso.add_file(&path, source)
                .map_err(|e| media_err(format, &dest, e))?;
        }
        Ok(())
    }

    /// A FAT image holding `files`, as small as they allow (an ISO's EFI boot image).
    fn esp_image(&self, format: Format, files: &[(String, Source)]) -> Result<Spool, FormatError> {
        let dest = self.dest(format);
        let size = fat::required_size(files).map_err(|e| media_err(format, &dest, e))?;
        let mut tmp = self.spool()?;
        let volume_id = self.derive_u32("iso esp volume");
        fat::write_fat(
            tmp.as_file_mut(),
            size,
            "KILN-EFI",
            volume_id,
            self.target.mtime,
            files,
        )
        .map_err(|e| media_err(format, &dest, e))?;
        Ok(tmp)
    }
}

fn media_err(format: Format, dest: &Path, e: impl std::fmt::Display) -> FormatError {
    FormatError::Write {
        path: dest.to_path_buf(),
        source: io::Error::other(format!("{format}: {e}")),
    }
}

/// Write the root image at `place` of `disk`.
fn write_root(disk: &mut File, image: &Path, place: Place) -> io::Result<()> {
    let mut slice = partition::Slice::partition(&mut *disk, place)?;
    let mut image = File::open(image)?;
    io::copy(&mut image, &mut slice)?;
    Ok(())
}

/// Copy a disk image, leaving holes where it reads zeros.
fn copy_sparse(from: &File, out: &mut AtomicOutput) -> io::Result<()> {
    let mut r = from.try_clone()?;
    r.seek(SeekFrom::Start(0))?;
    let len = r.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from((len - at).min(buf.len() as u64)).unwrap_or(buf.len());
        r.read_exact(&mut buf[..want])?;
        if buf[..want].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(i64::try_from(want).unwrap_or(i64::MAX)))?;
        } else {
            out.write_all(&buf[..want])?;
        }
        at += want as u64;
    }
    out.set_len(len)
}

/// `disk.raw` in a gzipped tar, as Google Compute Engine imports a disk: GNU tar, time stamps
/// from `mtime`, a gzip header without a time.
fn gcp_tarball(raw: &File, mtime: u64, out: &mut AtomicOutput) -> io::Result<()> {
    let mut raw = raw.try_clone()?;
    raw.seek(SeekFrom::Start(0))?;
    let len = raw.metadata()?.len();
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut header,
        "disk.raw",
        io::BufReader::with_capacity(1 << 20, raw),
    )?;
    tar.into_inner()?.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bootloader;
    use crate::uki::tests::tiny_stub;
    use std::sync::Arc;

    const KERNEL_BYTES: &[u8] = b"an arm64 Image";

    /// Boot files of a system whose command line is `quiet`.
    fn boot(dir: &Path) -> BootFiles {
        let spool = |content: &[u8]| {
            let mut s = Spool::create(dir).expect("spool");
            s.as_file_mut().write_all(content).expect("write");
            s
        };
        BootFiles {
            kernel: spool(KERNEL_BYTES),
            initrd: spool(b"an initrd"),
            cmdline: "quiet".into(),
            root: None,
            id: [7; 32],
        }
    }

    fn target(dir: &Path, arch: Arch, files: &[(&str, Vec<u8>)]) -> Target {
        let bootloader = Bootloader {
            files: files
                .iter()
                .map(|(n, b)| ((*n).to_string(), b.clone()))
                .collect(),
            arch,
        };
        Target {
            disk_size: 64 << 20,
            bootloader: Some(Arc::new(bootloader)),
            ..Target::new(dir, "sys", crate::Compression::Gzip, 1_700_000_000)
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn arm64_media_take_the_arm64_files_and_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = boot(dir.path());
        let grub_efi = tiny_stub(0xaa64);
        let target = target(
            dir.path(),
            Arch::Arm64,
            &[
                (grub::files::EFI_STUB_ARM64, tiny_stub(0xaa64)),
                (grub::files::GRUB_EFI_ARM64, grub_efi.clone()),
            ],
        );
        let packager = Packager::new(&boot, &target);

        let uki = std::fs::read(packager.write(Format::Uki).expect("uki")).expect("read");
        assert_eq!(uki::pe_machine(&uki), Some(0xaa64));
        assert!(
            find(&uki, b"quiet console=ttyAMA0").is_some(),
            "console added"
        );

        // The ESP's root directory entry for EFI/BOOT/BOOTAA64.EFI: its 8.3 name.
        let disk = std::fs::read(packager.write(Format::RawEfi).expect("raw-efi")).expect("read");
        assert!(find(&disk, b"BOOTAA64EFI").is_some());
        assert!(find(&disk, b"BOOTX64 EFI").is_none());

        let iso = std::fs::read(packager.write(Format::IsoEfiInitrd).expect("iso")).expect("read");
        let cfg = "# Written by kiln: boot at once, with output on the firmware's console.\n";
        assert!(find(&iso, cfg.as_bytes()).is_some());
        assert!(find(&iso, b"linux '/boot/kernel' 'quiet' 'console=ttyAMA0'\n").is_some());
        assert!(find(&iso, &grub_efi).is_some(), "GRUB for arm64 on the ESP");
        assert!(find(&iso, KERNEL_BYTES).is_some());
    }

    #[test]
    fn an_arm64_root_partition_has_the_arm64_root_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut boot = boot(dir.path());
        let image = dir.path().join("root.img");
        std::fs::write(&image, vec![0x5a; 4096]).expect("root image");
        boot.root = Some(super::super::boot_media::RootImage {
            file: image,
            label: "kiln-root-test".into(),
            fs: crate::RootFs::Squashfs,
        });
        let target = target(
            dir.path(),
            Arch::Arm64,
            &[(grub::files::EFI_STUB_ARM64, tiny_stub(0xaa64))],
        );
        let packager = Packager::new(&boot, &target);
        let disk = std::fs::read(packager.write(Format::RawEfi).expect("raw-efi")).expect("read");
        // The GPT's entries (from LBA 2) name the arm64 root type, not x86-64's.
        let entries = &disk[1024..1024 + 128 * 4];
        assert!(find(entries, &partition::LINUX_ROOT_ARM64.0).is_some());
        assert!(find(entries, &partition::LINUX_ROOT_X86_64.0).is_none());
        assert!(
            find(
                &disk,
                b"quiet console=ttyAMA0 kiln.root=PARTLABEL=kiln-root-test"
            )
            .is_some()
        );
    }

    #[test]
    fn amd64_media_keep_their_names_and_command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = boot(dir.path());
        let target = target(
            dir.path(),
            Arch::Amd64,
            &[(grub::files::EFI_STUB, tiny_stub(0x8664))],
        );
        let packager = Packager::new(&boot, &target);
        let disk = std::fs::read(packager.write(Format::RawEfi).expect("raw-efi")).expect("read");
        assert!(find(&disk, b"BOOTX64 EFI").is_some());
        assert!(find(&disk, b"quiet").is_some());
        assert!(
            find(&disk, b"console=").is_none(),
            "no console added on amd64"
        );
    }

    #[test]
    fn efi_programs_of_another_architecture_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = boot(dir.path());
        // An amd64 stub under the arm64 name, as a mislabelled image would have it.
        let target = target(
            dir.path(),
            Arch::Arm64,
            &[(grub::files::EFI_STUB_ARM64, tiny_stub(0x8664))],
        );
        let packager = Packager::new(&boot, &target);
        let err = packager.write(Format::Uki).expect_err("wrong machine");
        let text = err.to_string();
        assert!(text.contains("PE machine 0x8664"), "{text}");
        assert!(text.contains("not one for arm64 (0xaa64)"), "{text}");
        assert!(
            text.contains("kiln --arch arm64 pkg build pkg/bootloader"),
            "{text}"
        );
        // A missing file is named.
        let err = packager.write(Format::IsoEfiInitrd).expect_err("no GRUB");
        assert!(
            err.to_string().contains(grub::files::GRUB_EFI_ARM64),
            "{err}"
        );
        // And BIOS media are refused, whatever the package holds.
        let err = packager.write(Format::RawBios).expect_err("no BIOS");
        assert!(matches!(err, FormatError::NoBios { .. }), "{err}");
        assert!(!target.path(Format::RawBios.suffix()).exists());
    }
}
