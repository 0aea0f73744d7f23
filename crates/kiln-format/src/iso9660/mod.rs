//! ISO 9660 images with Rock Ridge names and El Torito boot, optionally hybrid (an MBR in the
//! system area so that the same image also boots as a disk).
//!
//! [`IsoBuilder`] collects a tree of directories and files (file contents are either bytes in
//! memory or a host file read while writing, so memory does not grow with file sizes), up to two
//! El Torito boot entries ([`BiosBoot`], [`EfiBoot`]) and an optional [`HybridMbr`], and writes
//! the image to any [`Write`] in one sequential pass. Every byte follows from the input: all
//! time stamps are the builder's `mtime`, and the MBR disk signature is derived from the tree.
//!
//! Layout, in 2048-byte sectors: 0-15 system area (the hybrid MBR), 16 primary volume
//! descriptor, 17 El Torito boot record (when booting), then the terminator, the boot catalog,
//! the L and M path tables, the directories (breadth first), the Rock Ridge continuation areas,
//! the file contents (boot images first, then in directory order) and 300 KiB of zeros at
//! the end (where empty files point), as xorriso pads, for readers that read ahead.
//!
//! Names: every file and directory carries its exact name in a Rock Ridge `NM` entry (with
//! `PX` and `TF`), which Linux, GRUB and xorriso read; the ISO 9660 names are level-1 style
//! (`KERNEL.;1`, upper case, 8.3, made unique per directory) for readers without Rock Ridge.
//!
//! This module does not make boot loader images or FAT file systems: a boot image is a file
//! the caller adds to the tree (for UEFI, a FAT image holding `EFI/BOOT/BOOTX64.EFI`).
//!
//! ```no_run
//! use kiln_format::iso9660::{BiosBoot, EfiBoot, FileSource, HybridMbr, IsoBuilder};
//! let mut iso = IsoBuilder::new("KILN", 0)?;
//! iso.add_file("boot/kernel", FileSource::host("/tmp/kernel", 1234))?;
//! iso.add_file("boot/grub/i386-pc/eltorito.img", FileSource::Bytes(vec![0; 4096]))?;
//! iso.add_file("boot/efi.img", FileSource::host("/tmp/efi.img", 1 << 20))?;
//! iso.set_bios_boot(BiosBoot::grub("boot/grub/i386-pc/eltorito.img"));
//! iso.set_efi_boot(EfiBoot::new("boot/efi.img"));
//! iso.set_hybrid(HybridMbr::grub(vec![0; 440]));
//! let mut out = std::fs::File::create("out.iso")?;
//! let summary = iso.write(&mut out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod boot;
mod layout;
mod records;
mod sink;
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)] // tests: a failure panics
mod sink_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // tests: a failure panics
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub use layout::{IsoLayout, SECTOR};
pub use sink::IsoSink;

/// Errors of the ISO writer.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// A path given to the builder is not usable.
    #[error("invalid ISO path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path was added twice, or as a file and as a directory.
    #[error("ISO path {path:?} is added twice: each file is added once")]
    Duplicate {
        /// The path.
        path: String,
    },
    /// A path is a file but something is added below it.
    #[error("ISO path {path:?} is a file, so {child:?} cannot be added below it")]
    NotADirectory {
        /// The file.
        path: String,
        /// The path that needs it to be a directory.
        child: String,
    },
    /// The volume identifier is not usable.
    #[error("ISO volume id {0:?} is invalid: use at most 32 printable ASCII characters")]
    VolumeId(String),
    /// A boot entry names a path that is not a file in the image.
    #[error("El Torito {entry} boot image {path:?} is not a file in the ISO: add it first")]
    MissingBootImage {
        /// `bios` or `efi`.
        entry: &'static str,
        /// The path.
        path: String,
    },
    /// A boot image to patch is too small or too large.
    #[error("El Torito boot image {path:?} is {len} bytes: patching needs {need}")]
    BootImageSize {
        /// The path in the image.
        path: String,
        /// Its length.
        len: u64,
        /// What the patch needs.
        need: &'static str,
    },
    /// A file is too large for a single ISO 9660 extent.
    #[error("ISO file {path:?} is {len} bytes: files of 4 GiB or more are not supported")]
    FileTooLarge {
        /// The path in the image.
        path: String,
        /// Its length.
        len: u64,
    },
    /// The hybrid MBR options do not fit together.
    #[error("hybrid MBR: {0}")]
    Hybrid(&'static str),
    /// The image would have more sectors than ISO 9660 can address.
    #[error("the ISO would be {0} sectors of 2048 bytes: ISO 9660 addresses at most 2^32")]
    TooLarge(u64),
    /// Reading a host file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The host file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A host file is shorter than its declared length.
    #[error("{path} ended after {got} of its {len} bytes: it changed while the ISO was written")]
    ShortFile {
        /// The host file.
        path: PathBuf,
        /// Bytes read.
        got: u64,
        /// Declared length.
        len: u64,
    },
    /// Reading a [`FileSource::Range`] failed (or the file ended before it).
    #[error("reading {len} bytes at offset {offset} of an open file: {source}")]
    ReadRange {
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The error.
        source: io::Error,
    },
    /// A path cannot be written as Rock Ridge says it should be.
    #[error("ISO path {path:?}: {reason}")]
    Unsupported {
        /// The path.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// Writing the image failed.
    #[error("writing the ISO: {0}")]
    Write(#[source] io::Error),
}

/// Where a file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// The first `len` bytes of a host file, read while the image is written.
    Host {
        /// The host file.
        path: PathBuf,
        /// Its length: the file must hold at least that many bytes when the ISO is written.
        len: u64,
    },
    /// `len` bytes at `offset` of an open file (read with positioned reads, so one file can
    /// hold the contents of many).
    Range {
        /// The open file.
        file: SharedFile,
        /// Where the contents start.
        offset: u64,
        /// Their length.
        len: u64,
    },
}

/// An open file shared by several [`FileSource::Range`]s; two are equal when they are the
/// same open file.
#[derive(Debug, Clone)]
pub struct SharedFile(pub Arc<File>);

impl PartialEq for SharedFile {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedFile {}

impl FileSource {
    /// The first `len` bytes of the host file `path`.
    pub fn host(path: impl Into<PathBuf>, len: u64) -> Self {
        FileSource::Host {
            path: path.into(),
            len,
        }
    }

    /// The length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileSource::Bytes(b) => b.len() as u64,
            FileSource::Host { len, .. } | FileSource::Range { len, .. } => *len,
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads a [`FileSource::Range`] with positioned reads.
pub(crate) struct RangeReader<'a> {
    pub file: &'a File,
    pub pos: u64,
    pub end: u64,
}

impl io::Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// The El Torito BIOS entry (platform 0x00, no emulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosBoot {
    /// The boot image: a file path in the ISO.
    pub image: String,
    /// How many 512-byte sectors the BIOS loads (4 for GRUB's and isolinux's images).
    pub load_sectors: u16,
    /// Write the 56-byte boot info table at offset 8 of the image (PVD LBA, image LBA, image
    /// length, checksum of the image from byte 64), as isolinux and GRUB's `cdboot` need.
    pub boot_info_table: bool,
    /// Write at offset 2548 of the image the 64-bit little-endian 512-byte LBA of the image
    /// plus 5, where GRUB's El Torito image (`eltorito.img`) keeps the first sector of the
    /// rest of its core (what `xorriso --grub2-boot-info` does).
    pub grub2_boot_info: bool,
}

impl BiosBoot {
    /// A GRUB `eltorito.img` at `image`: load 4 sectors, boot info table and GRUB patch.
    pub fn grub(image: &str) -> Self {
        BiosBoot {
            image: image.to_string(),
            load_sectors: 4,
            boot_info_table: true,
            grub2_boot_info: true,
        }
    }

    /// An isolinux image at `image`: load 4 sectors, boot info table.
    pub fn isolinux(image: &str) -> Self {
        BiosBoot {
            image: image.to_string(),
            load_sectors: 4,
            boot_info_table: true,
            grub2_boot_info: false,
        }
    }
}

/// The El Torito UEFI entry (platform 0xEF, no emulation): a FAT image (an ESP) in the ISO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiBoot {
    /// The FAT image: a file path in the ISO.
    pub image: String,
}

impl EfiBoot {
    /// The FAT image at `image`.
    pub fn new(image: &str) -> Self {
        EfiBoot {
            image: image.to_string(),
        }
    }
}

/// An MBR in the system area, so that the ISO also boots as a disk.
///
/// Partition 1 (active) covers the whole image from sector 0; partition 2, type 0xEF, covers
/// the UEFI boot image when there is one, so that UEFI firmware booting the image as a disk
/// finds the ESP. Partition 1 then has type 0x00, which firmware skips (EDK2 rejects an MBR
/// whose typed partitions overlap), else 0x17, as xorriso does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridMbr {
    /// Boot code for the MBR's first bytes (at most 440), e.g. the first 440 bytes of GRUB's
    /// `boot_hybrid.img`, or isolinux's `isohdpfx.bin`.
    pub boot_code: Vec<u8>,
    /// Write at offset 0x1b0 the 64-bit little-endian 512-byte LBA of the BIOS boot image plus
    /// 4: where GRUB's `boot_hybrid.img` reads the sector to load (the disk boot part of
    /// `eltorito.img`, 2048 bytes into it), as `xorriso --grub2-mbr` does. Needs a
    /// [`BiosBoot`] entry, with [`BiosBoot::grub2_boot_info`].
    pub grub2_patch: bool,
}

impl HybridMbr {
    /// GRUB's `boot_hybrid.img` (its first 440 bytes are used) with the GRUB patch.
    pub fn grub(boot_hybrid: Vec<u8>) -> Self {
        let mut boot_code = boot_hybrid;
        boot_code.truncate(440);
        HybridMbr {
            boot_code,
            grub2_patch: true,
        }
    }
}

/// What [`IsoBuilder::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoSummary {
    /// Bytes written (a multiple of 2048).
    pub bytes: u64,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Dir(BTreeMap<String, usize>),
    File(FileSource),
    /// Another name of the file node: the same extent (a hard link).
    Link(usize),
    Symlink(String),
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// The POSIX attributes of a node written in its Rock Ridge `PX` and `TF` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr {
    /// Permission bits, with setuid, setgid and sticky (no file type).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// The link count of a non-directory (directories count their subdirectories).
    pub nlink: u32,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// The name as written (empty for the root).
    pub name: String,
    /// The full path (empty for the root).
    pub path: String,
    pub parent: usize,
    pub kind: Kind,
    /// Attributes; `None`: root-owned, 0755 directories and 0644 files at the image time.
    pub attr: Option<Attr>,
}

/// Builds an ISO 9660 image; see the module documentation.
#[derive(Debug)]
pub struct IsoBuilder {
    pub(crate) volume_id: String,
    pub(crate) mtime: u64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) bios: Option<BiosBoot>,
    pub(crate) efi: Option<EfiBoot>,
    pub(crate) hybrid: Option<HybridMbr>,
}

impl IsoBuilder {
    /// An empty image with volume identifier `volume_id` (at most 32 printable ASCII
    /// characters; GRUB's `search --label` and Linux's `/dev/disk/by-label` see it) whose
    /// every time stamp is `mtime` (seconds since the Unix epoch).
    pub fn new(volume_id: &str, mtime: u64) -> Result<Self, IsoError> {
        if volume_id.len() > 32 || !volume_id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(IsoError::VolumeId(volume_id.to_string()));
        }
        Ok(IsoBuilder {
            volume_id: volume_id.to_string(),
            mtime,
            nodes: vec![Node {
                name: String::new(),
                path: String::new(),
                parent: 0,
                kind: Kind::Dir(BTreeMap::new()),
                attr: None,
            }],
            bios: None,
            efi: None,
            hybrid: None,
        })
    }

    /// Add the directory `path` (`a/b/c`, relative), and its parents. Adding an existing
    /// directory again is allowed.
    pub fn add_dir(&mut self, path: &str) -> Result<(), IsoError> {
        let parts = split_path(path)?;
        self.ensure_dirs(path, &parts).map(|_| ())
    }

    /// Add the file `path` (`boot/kernel`), creating its parent directories.
    pub fn add_file(&mut self, path: &str, source: FileSource) -> Result<(), IsoError> {
        let parts = split_path(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(IsoError::InvalidPath {
                path: path.to_string(),
                reason: "a file needs a name",
            });
        };
        if source.len() > u64::from(u32::MAX) {
            return Err(IsoError::FileTooLarge {
                path: path.to_string(),
                len: source.len(),
            });
        }
        let parent = self.ensure_dirs(path, dirs)?;
        let id = self.nodes.len();
        let Kind::Dir(children) = &mut self.nodes[parent].kind else {
            unreachable!("ensure_dirs returns a directory");
        };
        if children.contains_key(*name) {
            return Err(IsoError::Duplicate {
                path: path.to_string(),
            });
        }
        children.insert(name.to_string(), id);
        self.nodes.push(Node {
            name: name.to_string(),
            path: parts.join("/"),
            parent,
            kind: Kind::File(source),
            attr: None,
        });
        Ok(())
    }

    /// Boot BIOS machines from `boot` (the El Torito default entry).
    pub fn set_bios_boot(&mut self, boot: BiosBoot) {
        self.bios = Some(boot);
    }

    /// Boot UEFI machines from `boot` (a section entry for platform 0xEF, or the default entry
    /// when there is no BIOS entry).
    pub fn set_efi_boot(&mut self, boot: EfiBoot) {
        self.efi = Some(boot);
    }

    /// Write an MBR into the system area, so that the image also boots as a disk.
    pub fn set_hybrid(&mut self, hybrid: HybridMbr) {
        self.hybrid = Some(hybrid);
    }

    /// Where everything goes: sizes and the extents of files, without writing.
    pub fn layout(&self) -> Result<IsoLayout, IsoError> {
        layout::Plan::new(self).map(|p| p.public(self))
    }

    /// Write the image to `out`, sequentially from byte 0.
    pub fn write<W: Write + ?Sized>(&self, out: &mut W) -> Result<IsoSummary, IsoError> {
        let plan = layout::Plan::new(self)?;
        plan.write(self, out)
    }

    /// The directory at `parts`, created as needed; `full` is the path for errors.
    fn ensure_dirs(&mut self, full: &str, parts: &[&str]) -> Result<usize, IsoError> {
        let mut cur = 0;
        for (i, name) in parts.iter().enumerate() {
            let next = self.nodes.len();
            let path = parts[..=i].join("/");
            let Kind::Dir(children) = &mut self.nodes[cur].kind else {
                unreachable!("cur is always a directory");
            };
            match children.get(*name) {
                Some(&id) => {
                    if !matches!(self.nodes[id].kind, Kind::Dir(_)) {
                        return Err(IsoError::NotADirectory {
                            path,
                            child: full.to_string(),
                        });
                    }
                    cur = id;
                }
                None => {
                    children.insert(name.to_string(), next);
                    self.nodes.push(Node {
                        name: name.to_string(),
                        path,
                        parent: cur,
                        kind: Kind::Dir(BTreeMap::new()),
                        attr: None,
                    });
                    cur = next;
                }
            }
        }
        Ok(cur)
    }

    /// The node of the file at `path`.
    pub(crate) fn find_file(&self, path: &str) -> Option<usize> {
        let parts = split_path(path).ok()?;
        let mut cur = 0;
        for name in parts {
            let Kind::Dir(children) = &self.nodes[cur].kind else {
                return None;
            };
            cur = *children.get(name)?;
        }
        matches!(self.nodes[cur].kind, Kind::File(_)).then_some(cur)
    }
}

/// The components of a relative path; empty components are skipped.
fn split_path(path: &str) -> Result<Vec<&str>, IsoError> {
    let bad = |reason| IsoError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts {
        if *p == "." || *p == ".." {
            return Err(bad("`.` and `..` are not names"));
        }
        if p.len() > 255 {
            return Err(bad("a name is longer than 255 bytes"));
        }
        if p.contains('\0') {
            return Err(bad("a name contains a NUL byte"));
        }
    }
    Ok(parts)
}
