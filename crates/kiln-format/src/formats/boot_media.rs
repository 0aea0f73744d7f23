//! The boot media formats (ISOs, disks, UKIs): one capture of the kernel, initrd and command
//! line that assembly produces, then each format packaged from it with the boot loader files
//! of kiln's bootloader package.

use crate::format::{Format, FormatError, FormatWriter, Target, write_err};
use crate::{Arch, AtomicOutput, InitrdOptions, KernelInitrd, Spool};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Boot loader files by their path in kiln's bootloader package (`grub/boot.img`, ...), for
/// machines of one architecture.
#[derive(Debug, Default, Clone)]
pub struct Bootloader {
    /// The files.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The architecture of the machines the files boot, and of the system: the boot media are
    /// written for it (its firmware, file names, console).
    pub arch: Arch,
}

impl Bootloader {
    /// The file `name`, which `format` needs.
    pub(crate) fn file(&self, format: Format, name: &str) -> Result<&[u8], FormatError> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| FormatError::BootloaderFile {
                format,
                file: name.to_string(),
            })
    }
}

/// Whether `format` can be written for machines of `arch`: the formats that boot only
/// through a PC BIOS cannot for an architecture without one (arm64), and the error says what
/// to use instead.
pub(crate) fn check_arch(format: Format, arch: Arch) -> Result<(), FormatError> {
    if arch.has_bios() {
        return Ok(());
    }
    let instead = match format {
        Format::IsoBios => "iso-efi or iso-efi-initrd",
        Format::Qcow2Bios => "qcow2-efi",
        Format::RawBios | Format::Aws | Format::Gcp => "raw-efi",
        Format::Vhd | Format::DynamicVhd | Format::Vmdk => "raw-efi or qcow2-efi",
        _ => return Ok(()),
    };
    Err(FormatError::NoBios {
        format,
        arch,
        instead,
    })
}

/// A read-only root file system image for a partition of the disk.
pub(crate) struct RootImage {
    /// The image.
    pub file: PathBuf,
    /// The partition's name on GPT disks, which the command line's `kiln.root=PARTLABEL=`
    /// names (MBR disks name the partition by `kiln.root=PARTUUID=SIGNATURE-02`).
    pub label: String,
    /// Its file system.
    pub fs: crate::RootFs,
}

/// What every boot medium is made of.
pub(crate) struct BootFiles {
    /// The kernel.
    pub kernel: Spool,
    /// The initrd.
    pub initrd: Spool,
    /// The kernel command line (without the switches naming a root partition, which depend on
    /// the disk: see [`super::packager`]).
    pub cmdline: String,
    /// The root image, when the root is on a partition rather than in the initrd.
    pub root: Option<RootImage>,
    /// A digest of the content, from which identifiers that must be unique (disk GUIDs, volume
    /// serials) are derived: the same content gives the same bytes.
    pub id: [u8; 32],
}

impl BootFiles {
    /// 16 bytes derived from the content for `purpose` (a GUID, a serial).
    pub fn derive(&self, purpose: &str) -> [u8; 16] {
        let d = Sha256::new()
            .chain_update(self.id)
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }
}

/// The kernel, initrd and command line of a build, captured into spool files.
pub(crate) struct KernelCapture {
    split: KernelInitrd<File, File>,
    kernel: Spool,
    initrd: Spool,
}

impl KernelCapture {
    /// A capture in `target`'s directory, the initrd written with `options`.
    pub(crate) fn new(target: &Target, options: InitrdOptions) -> Result<Self, FormatError> {
        std::fs::create_dir_all(&target.dir).map_err(write_err(&target.dir))?;
        let spool = || Spool::create(&target.dir).map_err(write_err(&target.dir));
        let (kernel, initrd) = (spool()?, spool()?);
        let reopen = |t: &Spool| t.reopen().map_err(write_err(t.path()));
        Ok(KernelCapture {
            split: KernelInitrd::new(reopen(&kernel)?, reopen(&initrd)?, options),
            kernel,
            initrd,
        })
    }

    /// The kernel, the initrd and the command line. The spool files are read back by this
    /// process only: they are not synced.
    pub(crate) fn finish(self, target: &Target) -> Result<(Spool, Spool, String), FormatError> {
        let initrd_path = target.path("-initrd.img");
        let (_, _, cmdline) = self.split.finish().map_err(write_err(&initrd_path))?;
        Ok((self.kernel, self.initrd, cmdline))
    }
}

kiln_fs::forward_sink!(KernelCapture => split);

struct Capture {
    capture: KernelCapture,
    formats: Vec<Format>,
    kernel_initrd: bool,
    target: Target,
}

/// The writer of the boot media `formats`; with `kernel_initrd`, the kernel+initrd outputs are
/// copied from the same capture.
pub(crate) fn writer(
    formats: &[Format],
    kernel_initrd: bool,
    target: &Target,
) -> Result<Box<dyn FormatWriter>, FormatError> {
    Ok(Box::new(Capture {
        capture: KernelCapture::new(target, target.initrd_options())?,
        formats: formats.to_vec(),
        kernel_initrd,
        target: target.clone(),
    }))
}

kiln_fs::forward_sink!(Capture => capture);

impl FormatWriter for Capture {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let Capture {
            capture,
            formats,
            kernel_initrd,
            target,
        } = *self;
        let (kernel, initrd, cmdline) = capture.finish(&target)?;
        let id = content_id(&[kernel.path(), initrd.path()], &cmdline)
            .map_err(write_err(&target.path("-initrd.img")))?;
        let boot = BootFiles {
            kernel,
            initrd,
            cmdline,
            root: None,
            id,
        };
        let mut written = Vec::new();
        if kernel_initrd {
            written.extend(write_kernel_files(
                &target,
                &boot.kernel,
                &boot.initrd,
                &boot.cmdline,
            )?);
        }
        let packager = super::packager::Packager::new(&boot, &target);
        for f in formats {
            written.push(packager.write(f)?);
        }
        Ok(written)
    }
}

/// A digest of `files` and `cmdline`.
pub(crate) fn content_id(files: &[&Path], cmdline: &str) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    for f in files {
        io::copy(&mut File::open(f)?, &mut h)?;
        h.update(b"\0");
    }
    h.update(cmdline.as_bytes());
    Ok(h.finalize().into())
}

/// NAME-kernel, NAME-initrd.img and NAME-cmdline: copies of `kernel` and `initrd`, and
/// `cmdline`.
pub(crate) fn write_kernel_files(
    target: &Target,
    kernel: &Spool,
    initrd: &Spool,
    cmdline: &str,
) -> Result<Vec<PathBuf>, FormatError> {
    let mut written = Vec::new();
    for (suffix, file) in [("-kernel", kernel), ("-initrd.img", initrd)] {
        let path = target.path(suffix);
        let mut out = AtomicOutput::create(&path).map_err(write_err(&path))?;
        copy_file(file.as_file(), &mut out).map_err(write_err(&path))?;
        written.push(out.commit().map_err(write_err(&path))?);
    }
    let path = target.path("-cmdline");
    let mut out = AtomicOutput::create(&path).map_err(write_err(&path))?;
    io::Write::write_all(&mut out, cmdline.as_bytes()).map_err(write_err(&path))?;
    written.push(out.commit().map_err(write_err(&path))?);
    Ok(written)
}

/// Copy all of `from` (whatever its position) to `out`.
pub(crate) fn copy_file(from: &File, out: &mut AtomicOutput) -> io::Result<()> {
    let mut r = from.try_clone()?;
    r.seek(SeekFrom::Start(0))?;
    io::copy(&mut r, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_formats_are_refused_on_arm64_with_what_to_use() {
        for f in Format::ALL {
            assert!(check_arch(f, Arch::Amd64).is_ok(), "{f}");
        }
        let uefi = [
            Format::Uki,
            Format::IsoEfi,
            Format::IsoEfiInitrd,
            Format::RawEfi,
            Format::Qcow2Efi,
        ];
        for f in uefi {
            assert!(check_arch(f, Arch::Arm64).is_ok(), "{f}");
        }
        let refused: Vec<Format> = Format::ALL
            .into_iter()
            .filter(|f| check_arch(*f, Arch::Arm64).is_err())
            .collect();
        assert_eq!(
            refused,
            [
                Format::IsoBios,
                Format::RawBios,
                Format::Qcow2Bios,
                Format::Vhd,
                Format::DynamicVhd,
                Format::Vmdk,
                Format::Gcp,
                Format::Aws
            ]
        );
        let err = check_arch(Format::IsoBios, Arch::Arm64).expect_err("BIOS only");
        assert_eq!(
            err.to_string(),
            "format iso-bios boots through a PC BIOS, which arm64 machines do not have: use \
             iso-efi or iso-efi-initrd, which boot under UEFI"
        );
        let err = check_arch(Format::RawBios, Arch::Arm64).expect_err("BIOS only");
        assert!(
            err.to_string()
                .ends_with("use raw-efi, which boots under UEFI"),
            "{err}"
        );
    }
}
