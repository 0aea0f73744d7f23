//! Every output of a build from one assembly pass: the writers of the formats asked for, fed
//! the same entry stream through a [`kiln_fs::Tee`]. The boot media formats (ISOs, disks,
//! UKIs) share one capture of the kernel, initrd and command line, so the initrd is written
//! once however many of them are asked for.

use crate::format::{Format, FormatError, FormatWriter, RootFs, Target};
use crate::formats;
use kiln_fs::Tee;
use std::path::PathBuf;

/// One writer for all of `formats` (each at most once; two that write the same file are an
/// error). The docker format lays the root out differently: assemble it on its own.
pub fn writer(formats: &[Format], target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
    let mut asked: Vec<Format> = Vec::new();
    for &f in formats {
        if asked.contains(&f) {
            continue;
        }
        if let Some(&other) = asked.iter().find(|o| o.suffix() == f.suffix()) {
            return Err(FormatError::SameOutput(other, f));
        }
        asked.push(f);
    }
    // NAME-kernel, NAME-initrd.img and NAME-cmdline come from one format at most.
    let kernel_files: Vec<Format> = asked
        .iter()
        .copied()
        .filter(|f| *f == Format::KernelInitrd || f.root_image().is_some())
        .collect();
    if let [first, second, ..] = kernel_files[..] {
        return Err(FormatError::SameOutput(first, second));
    }
    let media: Vec<Format> = asked
        .iter()
        .copied()
        .filter(|f| f.is_boot_media())
        .collect();
    // Checked before assembly, whichever way the media are made.
    if target.bootloader.is_none()
        && let Some(&f) = media.first()
    {
        return Err(FormatError::NoBootloader(f));
    }
    if let Some(bootloader) = &target.bootloader {
        for &f in &media {
            formats::boot_media::check_arch(f, bootloader.arch)?;
        }
    }
    let whole_disk: Vec<Format> = asked
        .iter()
        .copied()
        .filter(|f| f.root_image().is_some())
        .collect();
    let (ram_media, disk_root_media) = if target.root == RootFs::Ram {
        (media, Vec::new())
    } else {
        (Vec::new(), media)
    };
    let mut writers: Vec<Box<dyn FormatWriter>> = Vec::new();
    for &f in &asked {
        match f {
            Format::KernelInitrd if ram_media.is_empty() => {
                writers.push(formats::kernel_initrd::writer(target)?)
            }
            // Written from the boot media's capture.
            Format::KernelInitrd => {}
            Format::Tar => writers.push(formats::tar::writer(target, ".tar", true)?),
            Format::Docker => writers.push(formats::tar::writer(target, "-docker.tar", false)?),
            Format::TarKernelInitrd => writers.push(formats::tar_kernel_initrd::writer(target)?),
            Format::Rpi3 => writers.push(formats::rpi3::writer(target)?),
            _ => {}
        }
    }
    if !ram_media.is_empty() {
        let kernel_initrd = asked.contains(&Format::KernelInitrd);
        writers.push(formats::boot_media::writer(
            &ram_media,
            kernel_initrd,
            target,
        )?);
    }
    if !whole_disk.is_empty() || !disk_root_media.is_empty() {
        writers.push(formats::root_split::writer(
            &whole_disk,
            &disk_root_media,
            target,
        )?);
    }
    Ok(match writers.len() {
        1 => writers.remove(0),
        _ => Box::new(All(Tee::new(writers))),
    })
}

/// Several writers behind one.
struct All(Tee<Box<dyn FormatWriter>>);

kiln_fs::forward_sink!(All => 0);

impl FormatWriter for All {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let mut written = Vec::new();
        for w in self.0.into_inner() {
            written.extend(w.finish()?);
        }
        Ok(written)
    }
}
