//! Partition tables: MBR (for BIOS disks) and GPT (with its protective MBR), written into a
//! raw disk image of a given size.
//!
//! This module owns the partition table and nothing else: the caller plans where partitions go
//! ([`plan`] aligns them to 1 MiB), writes their contents through a [`Slice`] of the image, and
//! supplies every identifier (disk GUID, partition GUIDs, MBR disk signature), so two writes of
//! the same inputs give the same bytes. [`Guid::derive`] turns content (a digest, a seed) into
//! stable GUIDs. Encoding the tables is left to `gptman` and `mbrman`; this module validates
//! the layout first and clears the sectors the tables occupy, so a reused image file cannot leak
//! stale bytes into the result.
//!
//! ```no_run
//! use kiln_format::partition::{self, Gpt, GptPartition, Guid};
//! let seed = b"digest of the root";
//! let sizes = [64 << 20, 512 << 20];
//! let (places, disk_size) = partition::plan(&sizes, partition::TableKind::Gpt);
//! let table = Gpt {
//!     disk_guid: Guid::derive(seed, "disk"),
//!     boot_code: None,
//!     partitions: vec![
//!         GptPartition::new("EFI System", partition::ESP, Guid::derive(seed, "esp"), places[0]),
//!         GptPartition::new("root", partition::LINUX_FS, Guid::derive(seed, "root"), places[1]),
//!     ],
//! };
//! let mut disk = std::fs::File::options().read(true).write(true).create(true).open("disk.img")?;
//! disk.set_len(disk_size)?;
//! partition::write_gpt(&mut disk, disk_size, &table)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

/// The sector size of every table written here, in bytes.
pub const SECTOR: u64 = 512;

/// The alignment of partitions placed by [`plan`]: 1 MiB, in sectors.
pub const ALIGN_SECTORS: u64 = (1 << 20) / SECTOR;

/// Sectors a GPT occupies at each end of the disk besides the MBR: the header and 128 entries
/// of 128 bytes (32 sectors).
const GPT_ARRAY_SECTORS: u64 = 32;

/// Size of the x86 boot code area at the start of an MBR.
pub const BOOT_CODE_LEN: usize = 440;

/// Errors writing a partition table.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Reading or writing the image failed.
    #[error("writing the partition table: {0}")]
    Io(#[from] io::Error),
    /// The layout cannot be written.
    #[error("partition {index} ({name}): {reason}")]
    Layout {
        /// 1-based partition number.
        index: usize,
        /// The partition's name or type.
        name: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The table as a whole is invalid.
    #[error("{0}")]
    Table(String),
    /// A GUID string does not parse.
    #[error("invalid GUID {0:?}: expected the form XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX")]
    Guid(String),
    /// The GPT encoder refused the table.
    #[error("encoding the GPT: {0}")]
    Gpt(#[from] gptman::Error),
    /// The MBR encoder refused the table.
    #[error("encoding the MBR: {0}")]
    Mbr(#[from] mbrman::Error),
}

/// A GUID as GPT stores it: the first three fields little-endian (mixed-endian byte order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID whose canonical form is `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// The GUID from its 16 bytes in canonical (big-endian, string) order.
    pub const fn from_canonical(b: [u8; 16]) -> Guid {
        Guid::from_fields(
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]),
            [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        )
    }

    /// The 16 bytes in canonical (string) order.
    pub fn canonical(&self) -> [u8; 16] {
        let g = self.0;
        [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ]
    }

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` (either case).
    pub fn parse(s: &str) -> Result<Guid, PartitionError> {
        let bad = || PartitionError::Guid(s.to_string());
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut b = [0u8; 16];
        hex::decode_to_slice(&hex, &mut b).map_err(|_| bad())?;
        Ok(Guid::from_canonical(b))
    }

    /// A stable GUID derived from `seed` (content: a digest, an image name) and `purpose` (which
    /// GUID of the disk this is: "disk", "esp", "root"): the first 16 bytes of
    /// SHA-256(purpose, seed), marked as an RFC 9562 version 8 (name-based, custom hash) UUID.
    pub fn derive(seed: &[u8], purpose: &str) -> Guid {
        let mut h = Sha256::new();
        h.update(b"kiln guid\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(seed);
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid::from_canonical(b)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = hex::encode_upper(self.canonical());
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &c[0..8],
            &c[8..12],
            &c[12..16],
            &c[16..20],
            &c[20..32]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Partition type: EFI System Partition (C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
pub const ESP: Guid = Guid::from_fields(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
/// Partition type: Linux filesystem data (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
pub const LINUX_FS: Guid = Guid::from_fields(
    0x0FC6_3DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
);
/// Partition type: Linux root (x86-64) of the Discoverable Partitions Specification
/// (4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709).
pub const LINUX_ROOT_X86_64: Guid = Guid::from_fields(
    0x4F68_BCE3,
    0xE8CD,
    0x4DB1,
    [0x96, 0xE7, 0xFB, 0xCA, 0xF9, 0x84, 0xB7, 0x09],
);
/// Partition type: Linux root (64-bit ARM, aarch64) of the Discoverable Partitions
/// Specification (B921B045-1DF0-41C3-AF44-4C6F280D3FAE).
pub const LINUX_ROOT_ARM64: Guid = Guid::from_fields(
    0xB921_B045,
    0x1DF0,
    0x41C3,
    [0xAF, 0x44, 0x4C, 0x6F, 0x28, 0x0D, 0x3F, 0xAE],
);
/// Partition type: BIOS boot partition, where GRUB puts its core image on a GPT disk
/// (21686148-6449-6E6F-744E-656564454649).
pub const BIOS_BOOT: Guid = Guid::from_fields(
    0x2168_6148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);

/// MBR partition type: FAT16 with LBA (0x0e).
pub const MBR_FAT16_LBA: u8 = 0x0e;
/// MBR partition type: FAT32 with LBA (0x0c).
pub const MBR_FAT32_LBA: u8 = 0x0c;
/// MBR partition type: EFI System Partition (0xef).
pub const MBR_ESP: u8 = 0xef;
/// MBR partition type: Linux (0x83).
pub const MBR_LINUX: u8 = 0x83;

/// GPT attribute bit 2: legacy BIOS bootable (what a GPT-aware BIOS MBR such as syslinux's
/// `gptmbr.bin` looks for).
pub const GPT_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// Where a partition lies on the disk, in sectors of [`SECTOR`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// First sector.
    pub start: u64,
    /// Number of sectors.
    pub sectors: u64,
}

impl Place {
    /// Byte offset of the partition.
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }
    /// Size of the partition in bytes.
    pub fn len(&self) -> u64 {
        self.sectors * SECTOR
    }
    /// Whether the partition has no sectors.
    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
}

/// Which table a disk gets; decides how much room [`plan`] leaves at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// An MBR: nothing after the last partition.
    Mbr,
    /// A GPT: the backup table after the last partition.
    Gpt,
}

/// Places partitions of the given sizes (bytes, each rounded up to 1 MiB) one after another,
/// the first at 1 MiB, each at a 1 MiB boundary, and returns their places and the disk size in
/// bytes (a multiple of 1 MiB, with room for the backup GPT when `kind` is [`TableKind::Gpt`]).
pub fn plan(sizes: &[u64], kind: TableKind) -> (Vec<Place>, u64) {
    let mut next = ALIGN_SECTORS;
    let mut places = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let sectors = size.div_ceil(SECTOR).div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS;
        places.push(Place {
            start: next,
            sectors,
        });
        next += sectors;
    }
    let end = match kind {
        TableKind::Mbr => next,
        TableKind::Gpt => next + 1 + GPT_ARRAY_SECTORS,
    };
    let disk_sectors = end.div_ceil(ALIGN_SECTORS) * ALIGN_SECTORS;
    (places, disk_sectors * SECTOR)
}

/// One GPT partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// Partition name (at most 36 UTF-16 code units), e.g. "EFI System".
    pub name: String,
    /// Partition type, e.g. [`ESP`], [`LINUX_FS`], [`BIOS_BOOT`].
    pub type_guid: Guid,
    /// Unique partition GUID (`PARTUUID=` on a kernel command line); derive it from content.
    pub guid: Guid,
    /// Where the partition lies.
    pub place: Place,
    /// Attribute bits, e.g. [`GPT_LEGACY_BIOS_BOOTABLE`].
    pub attributes: u64,
}

impl GptPartition {
    /// A partition without attribute bits.
    pub fn new(name: &str, type_guid: Guid, guid: Guid, place: Place) -> GptPartition {
        GptPartition {
            name: name.to_string(),
            type_guid,
            guid,
            place,
            attributes: 0,
        }
    }
}

/// A GPT disk's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// x86 boot code for the protective MBR's first 440 bytes (a GPT-aware BIOS MBR); zeros
    /// when `None`. When given, the protective MBR entry is marked bootable, which some BIOSes
    /// need to boot the disk at all.
    pub boot_code: Option<Vec<u8>>,
    /// Partitions, numbered from 1 in this order (at most 128).
    pub partitions: Vec<GptPartition>,
}

/// One MBR (primary) partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MbrPartition {
    /// Partition type byte, e.g. [`MBR_FAT32_LBA`], [`MBR_LINUX`], [`MBR_ESP`].
    pub kind: u8,
    /// The active flag (0x80) a BIOS MBR boots from.
    pub bootable: bool,
    /// Where the partition lies (below 2 TiB).
    pub place: Place,
}

/// An MBR disk's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    /// x86 boot code for the first 440 bytes (e.g. syslinux's `mbr.bin`); zeros when `None`.
    pub boot_code: Option<Vec<u8>>,
    /// The disk signature at byte 440 (`PARTUUID=SSSSSSSS-NN` on a kernel command line).
    pub disk_signature: u32,
    /// Up to four primary partitions, numbered from 1 in this order.
    pub partitions: Vec<MbrPartition>,
}

/// A window `[offset, offset + len)` of a stream, itself a stream: seeks are relative to the
/// window, the end is the window's end and writes cannot pass it. Use it to write a file
/// system into a partition of a disk image.
#[derive(Debug)]
pub struct Slice<T> {
    inner: T,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> Slice<T> {
    /// The window of `inner` from byte `offset`, `len` bytes long, positioned at its start.
    pub fn new(mut inner: T, offset: u64, len: u64) -> io::Result<Slice<T>> {
        inner.seek(SeekFrom::Start(offset))?;
        Ok(Slice {
            inner,
            offset,
            len,
            pos: 0,
        })
    }

    /// The window over a partition's place.
    pub fn partition(inner: T, place: Place) -> io::Result<Slice<T>> {
        Slice::new(inner, place.offset(), place.len())
    }

    /// The underlying stream.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: Read + Seek> Read for Slice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<T: Write + Seek> Write for Slice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write past the end of a {}-byte partition", self.len),
            ));
        }
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for Slice<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition start",
            )
        })?;
        self.inner.seek(SeekFrom::Start(self.offset + target))?;
        self.pos = target;
        Ok(target)
    }
}

fn zero(out: &mut (impl Write + Seek), offset: u64, len: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    out.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(ZEROS.len(), |l| l.min(ZEROS.len()));
        out.write_all(&ZEROS[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Makes `out` at least `disk_size` bytes long (a sparse tail) without touching its content.
fn ensure_len(out: &mut (impl Write + Seek), disk_size: u64) -> io::Result<()> {
    let len = out.seek(SeekFrom::End(0))?;
    if len < disk_size {
        out.seek(SeekFrom::Start(disk_size - 1))?;
        out.write_all(&[0])?;
    }
    Ok(())
}

fn boot_code(code: Option<&Vec<u8>>) -> Result<[u8; BOOT_CODE_LEN], PartitionError> {
    let mut out = [0u8; BOOT_CODE_LEN];
    if let Some(code) = code {
        // Boot code images (syslinux mbr.bin: 440 bytes, gptmbr.bin: 440 bytes) may be a full
        // 512-byte sector; only the code area is taken.
        if code.len() > BOOT_CODE_LEN && code.len() != 512 {
            return Err(PartitionError::Table(format!(
                "MBR boot code is {} bytes; it must be at most {BOOT_CODE_LEN} bytes (or a \
                 512-byte sector, of which the first {BOOT_CODE_LEN} are used)",
                code.len()
            )));
        }
        let n = code.len().min(BOOT_CODE_LEN);
        out[..n].copy_from_slice(&code[..n]);
    }
    Ok(out)
}

/// Checks that partitions lie in `[first, last]` (sectors, inclusive) and do not overlap.
fn check_places(items: &[(String, Place)], first: u64, last: u64) -> Result<(), PartitionError> {
    for (i, (name, p)) in items.iter().enumerate() {
        let err = |reason: String| PartitionError::Layout {
            index: i + 1,
            name: name.clone(),
            reason,
        };
        if p.sectors == 0 {
            return Err(err("has no sectors; give it a size".into()));
        }
        let end = p
            .start
            .checked_add(p.sectors - 1)
            .ok_or_else(|| err("overflows".into()))?;
        if p.start < first || end > last {
            return Err(err(format!(
                "sectors {}..={end} lie outside the usable sectors {first}..={last}; make the \
                 disk larger or the partition smaller",
                p.start
            )));
        }
        for (j, (other, q)) in items.iter().enumerate().skip(i + 1) {
            if p.start < q.start + q.sectors && q.start < p.start + p.sectors {
                return Err(err(format!(
                    "overlaps partition {} ({other}): sectors {}+{} and {}+{}",
                    j + 1,
                    p.start,
                    p.sectors,
                    q.start,
                    q.sectors
                )));
            }
        }
    }
    Ok(())
}

fn check_disk_size(disk_size: u64, min_sectors: u64) -> Result<u64, PartitionError> {
    if !disk_size.is_multiple_of(SECTOR) || disk_size / SECTOR < min_sectors {
        return Err(PartitionError::Table(format!(
            "disk size {disk_size} must be a multiple of {SECTOR} bytes and at least {} bytes",
            min_sectors * SECTOR
        )));
    }
    Ok(disk_size / SECTOR)
}

/// Writes a GPT into the first `disk_size` bytes of `out`: the protective MBR (with
/// `table.boot_code`) in sector 0, the primary header at LBA 1 with its entries from LBA 2, and
/// the backup entries and header in the last 33 sectors. Partition contents are not touched;
/// the sectors of the tables are overwritten entirely. `out` is extended to `disk_size` if it
/// is shorter.
pub fn write_gpt<T: Read + Write + Seek>(
    out: &mut T,
    disk_size: u64,
    table: &Gpt,
) -> Result<(), PartitionError> {
    let sectors = check_disk_size(disk_size, 3 + 2 * GPT_ARRAY_SECTORS + 1)?;
    let first = 2 + GPT_ARRAY_SECTORS;
    let last = sectors - 2 - GPT_ARRAY_SECTORS;
    if table.partitions.len() > 128 {
        return Err(PartitionError::Table(format!(
            "{} partitions given; a GPT holds at most 128",
            table.partitions.len()
        )));
    }
    let items: Vec<(String, Place)> = table
        .partitions
        .iter()
        .map(|p| (p.name.clone(), p.place))
        .collect();
    check_places(&items, first, last)?;
    for (i, p) in table.partitions.iter().enumerate() {
        let err = |reason: &str| PartitionError::Layout {
            index: i + 1,
            name: p.name.clone(),
            reason: reason.to_string(),
        };
        if p.name.encode_utf16().count() > 36 {
            return Err(err("name is longer than 36 UTF-16 code units; shorten it"));
        }
        if p.type_guid == Guid::default() {
            return Err(err(
                "type GUID is zero, which marks an unused entry; give a type",
            ));
        }
        if p.guid == Guid::default() {
            return Err(err("partition GUID is zero; derive one with Guid::derive"));
        }
        if table.partitions[..i].iter().any(|q| q.guid == p.guid) {
            return Err(err(
                "partition GUID repeats an earlier partition's; make them unique",
            ));
        }
    }
    let code = boot_code(table.boot_code.as_ref())?;

    ensure_len(out, disk_size)?;
    let mut disk = Slice::new(&mut *out, 0, disk_size)?;
    // Clear both tables' sectors: gptman writes only the structures themselves.
    zero(&mut disk, 0, first * SECTOR)?;
    zero(
        &mut disk,
        (last + 1) * SECTOR,
        (sectors - last - 1) * SECTOR,
    )?;

    let mut gpt = gptman::GPT::new_from(&mut disk, SECTOR, table.disk_guid.0)?;
    for (n, p) in (1u32..).zip(&table.partitions) {
        gpt[n] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_guid.0,
            unique_partition_guid: p.guid.0,
            starting_lba: p.place.start,
            ending_lba: p.place.start + p.place.sectors - 1,
            attribute_bits: p.attributes,
            partition_name: p.name.as_str().into(),
        };
    }
    gpt.write_into(&mut disk)?;
    if table.boot_code.is_some() {
        gptman::GPT::write_bootable_protective_mbr_into(&mut disk, SECTOR)?;
    } else {
        gptman::GPT::write_protective_mbr_into(&mut disk, SECTOR)?;
    }
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&code)?;
    disk.flush()?;
    Ok(())
}

#[allow(clippy::cast_possible_truncation)] // bounded: see the last comment
/// CHS address of `lba` for the customary 255 heads × 63 sectors geometry, or the 1023/254/63
/// marker past what CHS can address (as fdisk writes).
fn chs(lba: u64) -> mbrman::CHS {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let cylinder = lba / (HEADS * SPT);
    if cylinder > 1023 {
        return mbrman::CHS::new(1023, 254, 63);
    }
    let head = (lba / SPT) % HEADS;
    let sector = lba % SPT + 1;
    // All three are bounded above by the checks and the modulos.
    mbrman::CHS::new(cylinder as u16, head as u8, sector as u8)
}

/// Writes an MBR partition table into sector 0 of `out` (a disk image of `disk_size` bytes):
/// boot code, disk signature, up to four primary partitions and the 0x55AA signature. Only
/// sector 0 is written; `out` is extended to `disk_size` if it is shorter.
pub fn write_mbr<T: Write + Seek>(
    out: &mut T,
    disk_size: u64,
    table: &Mbr,
) -> Result<(), PartitionError> {
    let sectors = check_disk_size(disk_size, 2)?;
    if table.partitions.len() > 4 {
        return Err(PartitionError::Table(format!(
            "{} partitions given; an MBR holds at most 4 primary partitions",
            table.partitions.len()
        )));
    }
    let items: Vec<(String, Place)> = table
        .partitions
        .iter()
        .map(|p| (format!("type {:#04x}", p.kind), p.place))
        .collect();
    check_places(&items, 1, sectors - 1)?;
    let mut header = mbrman::MBRHeader::new(table.disk_signature.to_le_bytes());
    header.bootstrap_code = boot_code(table.boot_code.as_ref())?;
    for (i, p) in table.partitions.iter().enumerate() {
        let err = |reason: String| PartitionError::Layout {
            index: i + 1,
            name: format!("type {:#04x}", p.kind),
            reason,
        };
        if p.kind == 0 {
            return Err(err("type 0 marks an unused entry; give a type".into()));
        }
        let start = u32::try_from(p.place.start)
            .map_err(|_| err("starts beyond 2 TiB, which an MBR cannot address".into()))?;
        let count = u32::try_from(p.place.sectors)
            .map_err(|_| err("is larger than 2 TiB, which an MBR cannot address".into()))?;
        let entry = header
            .get_mut(i + 1)
            .ok_or_else(|| err("no such MBR slot".into()))?;
        *entry = mbrman::MBRPartitionEntry {
            boot: if p.bootable { 0x80 } else { 0x00 },
            first_chs: chs(p.place.start),
            sys: p.kind,
            last_chs: chs(p.place.start + p.place.sectors - 1),
            starting_lba: start,
            sectors: count,
        };
    }
    ensure_len(out, disk_size)?;
    header.write_into(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test images are small
mod tests {
    use super::*;
    use std::process::Command;

    use crate::test_tools::tool;

    fn run(cmd: &str, args: &[&str]) -> (bool, String) {
        let o = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    }

    fn gpt_table() -> (Gpt, u64) {
        let (places, size) = plan(&[1 << 20, 3 << 20, 2 << 20], TableKind::Gpt);
        let seed = b"test seed";
        let table = Gpt {
            disk_guid: Guid::derive(seed, "disk"),
            boot_code: None,
            partitions: vec![
                GptPartition {
                    attributes: GPT_LEGACY_BIOS_BOOTABLE,
                    ..GptPartition::new("bios", BIOS_BOOT, Guid::derive(seed, "bios"), places[0])
                },
                GptPartition::new("EFI System", ESP, Guid::derive(seed, "esp"), places[1]),
                GptPartition::new("root", LINUX_FS, Guid::derive(seed, "root"), places[2]),
            ],
        };
        (table, size)
    }

    #[test]
    fn guid_round_trips_and_derives_stably() {
        assert_eq!(ESP.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(
            ESP.0[..4],
            [0x28, 0x73, 0x2a, 0xc1],
            "first field is little-endian on disk"
        );
        let parsed = Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!(parsed.ok(), Some(LINUX_FS));
        assert!(Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de").is_err());
        assert!(Guid::parse("0fc63daf84834772-8e79-3d69d8477de4x").is_err());
        let a = Guid::derive(b"x", "disk");
        assert_eq!(a, Guid::derive(b"x", "disk"));
        assert_ne!(a, Guid::derive(b"x", "esp"));
        assert_ne!(a, Guid::derive(b"y", "disk"));
        let s = a.to_string();
        assert_eq!(&s[14..15], "8", "version 8 in {s}");
        assert!("89AB".contains(&s[19..20]), "RFC variant in {s}");
    }

    #[test]
    fn plan_aligns_to_mib() {
        let (places, size) = plan(&[1, (1 << 20) + 1], TableKind::Gpt);
        assert_eq!(
            places[0],
            Place {
                start: 2048,
                sectors: 2048
            }
        );
        assert_eq!(
            places[1],
            Place {
                start: 4096,
                sectors: 4096
            }
        );
        assert_eq!(size, 5 << 20, "the backup GPT needs one more MiB");
        let (_, size) = plan(&[1, (1 << 20) + 1], TableKind::Mbr);
        assert_eq!(size, 4 << 20);
    }

    #[test]
    fn gpt_verified_by_sgdisk_and_fdisk() {
        if !tool("sgdisk") || !tool("fdisk") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let (table, size) = gpt_table();
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create image");
        // Garbage where the tables go must not survive.
        f.write_all(&[0xa5; 34 * 512]).expect("garbage");
        f.seek(SeekFrom::Start(size - 33 * 512)).expect("seek");
        f.write_all(&[0x5a; 33 * 512]).expect("garbage");
        write_gpt(&mut f, size, &table).expect("write gpt");
        drop(f);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), size);
        let p = path.to_str().expect("utf-8 path");

        let (ok, out) = run("sgdisk", &["-v", p]);
        assert!(ok && out.contains("No problems found"), "sgdisk -v: {out}");
        let (ok, out) = run("sgdisk", &["-p", p]);
        assert!(ok, "sgdisk -p: {out}");
        assert!(
            out.contains(&format!("Disk identifier (GUID): {}", table.disk_guid)),
            "{out}"
        );
        // Number, start, end, type code, name.
        for (n, start, end, code, name) in [
            (1, 2048, 4095, "EF02", "bios"),
            (2, 4096, 10239, "EF00", "EFI System"),
            (3, 10240, 14335, "8300", "root"),
        ] {
            let line = out
                .lines()
                .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
                .unwrap_or_else(|| panic!("partition {n} missing: {out}"));
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[1], start.to_string(), "{line}");
            assert_eq!(f[2], end.to_string(), "{line}");
            assert_eq!(f[5], code, "{line}");
            assert_eq!(f[6..].join(" "), name, "{line}");
        }
        let (ok, out) = run("sgdisk", &["-i", "2", p]);
        assert!(ok, "{out}");
        assert!(
            out.contains(&format!(
                "Partition unique GUID: {}",
                table.partitions[1].guid
            )),
            "{out}"
        );
        let (ok, out) = run("sgdisk", &["-A", "1:show", p]);
        assert!(ok && out.contains("legacy BIOS bootable"), "{out}");

        let (ok, out) = run("fdisk", &["-l", p]);
        assert!(ok, "fdisk -l: {out}");
        assert!(out.contains("Disklabel type: gpt"), "{out}");
        assert!(out.contains("EFI System"), "{out}");
        assert!(out.contains("BIOS boot"), "{out}");
        assert!(out.contains("Linux filesystem"), "{out}");
        assert!(!out.to_lowercase().contains("corrupt"), "{out}");

        // Two writes give the same bytes.
        let path2 = dir.path().join("disk2.img");
        let mut f2 = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path2)
            .expect("create image");
        write_gpt(&mut f2, size, &table).expect("write gpt");
        drop(f2);
        assert!(
            std::fs::read(&path).expect("read") == std::fs::read(&path2).expect("read"),
            "two writes differ"
        );
    }

    #[test]
    fn gpt_with_boot_code_marks_protective_entry_bootable() {
        let (mut table, size) = gpt_table();
        table.boot_code = Some(vec![0xeb; 440]);
        let mut disk = io::Cursor::new(vec![0u8; size as usize]);
        write_gpt(&mut disk, size, &table).expect("write gpt");
        let d = disk.into_inner();
        assert_eq!(&d[..440], &[0xeb; 440][..]);
        assert_eq!(d[446], 0x80, "protective entry bootable");
        assert_eq!(d[446 + 4], 0xee);
        assert_eq!(&d[510..512], &[0x55, 0xaa]);
        assert_eq!(&d[512..520], b"EFI PART");
        assert_eq!(&d[size as usize - 512..size as usize - 504], b"EFI PART");
    }

    #[test]
    fn gpt_rejects_bad_layouts() {
        let (table, size) = gpt_table();
        let mut disk = io::Cursor::new(Vec::new());
        let mut overlap = table.clone();
        overlap.partitions[1].place.start -= 1;
        let e = write_gpt(&mut disk, size, &overlap).expect_err("overlap");
        assert!(e.to_string().contains("overlaps partition"), "{e}");
        let mut past = table.clone();
        past.partitions[2].place.sectors += 2048;
        let e = write_gpt(&mut disk, size, &past).expect_err("past end");
        assert!(e.to_string().contains("outside the usable sectors"), "{e}");
        let mut dup = table.clone();
        dup.partitions[2].guid = dup.partitions[1].guid;
        assert!(write_gpt(&mut disk, size, &dup).is_err());
        let mut long = table;
        long.partitions[0].name = "x".repeat(37);
        assert!(write_gpt(&mut disk, size, &long).is_err());
    }

    #[test]
    fn mbr_verified_by_fdisk() {
        if !tool("fdisk") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        let (places, size) = plan(&[2 << 20, 3 << 20], TableKind::Mbr);
        let table = Mbr {
            boot_code: Some(vec![0xfa; 440]),
            disk_signature: 0x1234_abcd,
            partitions: vec![
                MbrPartition {
                    kind: MBR_FAT16_LBA,
                    bootable: true,
                    place: places[0],
                },
                MbrPartition {
                    kind: MBR_LINUX,
                    bootable: false,
                    place: places[1],
                },
            ],
        };
        let mut f = std::fs::File::create(&path).expect("create image");
        write_mbr(&mut f, size, &table).expect("write mbr");
        drop(f);
        let p = path.to_str().expect("utf-8 path");
        let (ok, out) = run("fdisk", &["-l", p]);
        assert!(ok, "fdisk -l: {out}");
        assert!(out.contains("Disklabel type: dos"), "{out}");
        assert!(out.contains("Disk identifier: 0x1234abcd"), "{out}");
        let rows: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| l.starts_with(p))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 2, "{out}");
        // Device Boot Start End Sectors Size Id Type
        assert_eq!(rows[0][1..5], ["*", "2048", "6143", "4096"], "{out}");
        assert_eq!(rows[0][6], "e", "{out}");
        assert_eq!(rows[1][1..4], ["6144", "12287", "6144"], "{out}");
        assert_eq!(rows[1][5], "83", "{out}");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..440], &[0xfa; 440][..]);
        assert_eq!(bytes.len() as u64, size);
    }

    #[test]
    fn mbr_rejects_too_many_and_huge() {
        let mut disk = io::Cursor::new(Vec::new());
        let p = MbrPartition {
            kind: MBR_LINUX,
            bootable: false,
            place: Place {
                start: 2048,
                sectors: 2048,
            },
        };
        let five = Mbr {
            boot_code: None,
            disk_signature: 1,
            partitions: vec![p.clone(); 5],
        };
        assert!(write_mbr(&mut disk, 8 << 20, &five).is_err());
        let code = Mbr {
            boot_code: Some(vec![0; 441]),
            disk_signature: 1,
            partitions: vec![p],
        };
        assert!(write_mbr(&mut disk, 8 << 20, &code).is_err());
    }

    #[test]
    fn slice_confines_io() {
        let mut disk = io::Cursor::new(vec![0u8; 100]);
        let mut s = Slice::new(&mut disk, 10, 20).expect("slice");
        assert_eq!(s.seek(SeekFrom::End(0)).expect("seek"), 20);
        s.seek(SeekFrom::Start(15)).expect("seek");
        assert!(
            s.write_all(&[1; 10]).is_err(),
            "writes stop at the window end"
        );
        s.seek(SeekFrom::Start(0)).expect("seek");
        s.write_all(&[7; 3]).expect("write");
        let mut buf = [0u8; 40];
        s.seek(SeekFrom::Start(0)).expect("seek");
        assert_eq!(s.read(&mut buf).expect("read"), 20);
        let d = disk.into_inner();
        assert_eq!(&d[9..14], &[0, 7, 7, 7, 0]);
        assert_eq!(&d[25..30], &[1, 1, 1, 1, 1]);
        assert_eq!(d[30], 0);
    }
}
