//! Output formats: writers that turn kiln's entry stream into files.
//!
//! This crate owns every output format kiln writes ([`Format`]; [`writer`] makes one writer
//! for all the formats of a build, fed by one assembly pass), the archive writers they share
//! ([`TarSink`], [`CpioSink`]), reading back a tar it wrote ([`TarReader`], for reuse by a
//! later build), the initrd writer ([`InitrdWriter`]: compressed on every core, segments
//! cached between builds), the kernel+initrd split ([`KernelInitrd`]) and atomic output files
//! ([`AtomicOutput`]): an output appears under its name only once it is complete. The boot
//! media are built from kiln's own writers of the formats inside them: FAT ([`fat`]), MBR and
//! GPT ([`partition`]), Unified Kernel Images ([`uki`]), GRUB's placement on BIOS media
//! ([`grub`]), ISO 9660 with El Torito and Rock Ridge ([`iso9660`]), qcow2, VHD and VMDK
//! ([`vdisk`]), squashfs ([`squashfs`]) and erofs ([`erofs`]); boot loader binaries come
//! from kiln's bootloader package ([`Bootloader`]), for the machine's architecture ([`Arch`]:
//! amd64 or arm64), and the Raspberry Pi's firmware from kiln's rpi3-firmware package
//! ([`Firmware`]). It does not assemble anything; it consumes a [`kiln_fs::Sink`] stream.
//!
//! Adding a format is one [`Format`] variant and its module under `formats/` (a writer of its
//! own, or a packaging of the boot media's capture in `formats/packager.rs`).
//!
//! ```no_run
//! use kiln_format::{Compression, Format, Target};
//! let target = Target::new(".", "linuxkit", Compression::Gzip, 0);
//! let mut writer = Format::Tar.writer(&target)?;
//! // ... assembly feeds `writer` (a kiln_fs::Sink) ...
//! let written = writer.finish()?;
//! # Ok::<(), kiln_format::FormatError>(())
//! ```

mod arch;
mod atomic;
mod cpio;
pub mod erofs;
pub mod fat;
mod format;
mod formats;
pub mod grub;
mod initrd;
pub mod iso9660;
mod kernel_image;
mod kernel_initrd;
mod outputs;
pub mod partition;
pub mod squashfs;
mod tar_reader;
mod tar_sink;
#[cfg(test)]
mod test_tools;
pub mod uki;
pub mod vdisk;

pub use arch::Arch;
pub use atomic::{AtomicOutput, Spool, remove_own_partials, remove_stale_partials};
pub use cpio::CpioSink;
pub use format::{Format, FormatError, FormatWriter, RootFs, Target};
pub use formats::boot_media::Bootloader;
pub use formats::rpi3::Firmware;
pub use initrd::{
    CleanStats, InitrdOptions, InitrdStats, InitrdWriter, clean_segment_cache, segment_cache_dir,
};
pub use kernel_image::decompress_kernel;
pub use kernel_initrd::{Compression, KernelInitrd};
pub use outputs::writer;
pub use tar_reader::{Data, TarEntry, TarReader};
pub use tar_sink::{PAX_DIGEST, PAX_LOCATION, PAX_SEGMENT, PAX_SOURCE, PAX_XATTR, TarSink};
