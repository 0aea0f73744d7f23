//! FAT file systems for EFI system partitions and small boot partitions.
//!
//! [`write_fat`] writes a FAT12/16/32 volume of a given size (the type follows from the size:
//! FAT12 below 4 MiB, FAT16 below 512 MiB, FAT32 from there, all of which UEFI firmware such
//! as OVMF reads) holding the given files and their directories, with long file names where a
//! name is not an upper-case 8.3 name; [`required_size`] computes the smallest volume (in whole
//! MiB) that holds them. Every timestamp is the caller's `mtime` (`SOURCE_DATE_EPOCH`) and the
//! volume id is the caller's (derive it from the content), so two writes of the same inputs
//! give the same bytes. The volume is written front to back in one pass, each file into
//! consecutive clusters, file contents streamed from their source ([`Source::File`]).
//!
//! kiln writes FAT itself: the `fatfs` crate's released version (0.3) writes long-name entries
//! before a directory's "." and ".." entries, which `fsck.vfat` rejects, and it is built for
//! modifying volumes rather than writing a fresh one in one pass.
//!
//! This module does not place the volume on a disk: write it into a
//! [`Slice`](crate::partition::Slice) of a partitioned image, or into a file of its own.
//!
//! ```no_run
//! use kiln_format::fat::{self, Source};
//! let files = vec![("EFI/BOOT/BOOTX64.EFI".to_string(), Source::File("linux.efi".into()))];
//! let size = fat::required_size(&files)?;
//! let mut esp = std::fs::File::create("esp.img")?;
//! fat::write_fat(&mut esp, size, "ESP", 0x1234_5678, 1_700_000_000, &files)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// The content of a file written into a FAT volume (or a UKI section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Bytes in memory (small files: configuration, os-release, a command line).
    Bytes(Vec<u8>),
    /// A host file, streamed when written.
    File(PathBuf),
}

impl Source {
    /// The content's length in bytes.
    pub fn len(&self) -> Result<u64, FatError> {
        match self {
            Source::Bytes(b) => Ok(b.len() as u64),
            Source::File(p) => {
                std::fs::metadata(p)
                    .map(|m| m.len())
                    .map_err(|e| FatError::Source {
                        path: p.clone(),
                        source: e,
                    })
            }
        }
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> Result<bool, FatError> {
        Ok(self.len()? == 0)
    }

    /// Opens the content for reading.
    pub fn open(&self) -> Result<Box<dyn Read + '_>, FatError> {
        match self {
            Source::Bytes(b) => Ok(Box::new(&b[..])),
            Source::File(p) => std::fs::File::open(p)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|e| FatError::Source {
                    path: p.clone(),
                    source: e,
                }),
        }
    }

    /// Where the content comes from, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Bytes(b) => format!("{} bytes in memory", b.len()),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// Errors writing a FAT volume.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// Reading a source file failed.
    #[error("reading {}: {source}", path.display())]
    Source {
        /// The host file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Writing the volume failed.
    #[error("writing FAT volume: {0}")]
    Io(#[from] io::Error),
    /// A path inside the volume is not usable.
    #[error("FAT path {path:?}: {reason}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The volume label is not usable.
    #[error(
        "FAT volume label {0:?}: use at most 11 characters of A-Z, 0-9, space and !#$%&'()-@^_`{{}}~"
    )]
    Label(String),
    /// The volume size is not usable.
    #[error("FAT volume size {size}: {reason}")]
    Size {
        /// The size given.
        size: u64,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file's content changed length while it was copied.
    #[error(
        "{path}: read {copied} bytes from {source_desc}, expected {expected}; was it modified during the build?"
    )]
    Changed {
        /// The path inside the volume.
        path: String,
        /// The source.
        source_desc: String,
        /// Bytes read.
        copied: u64,
        /// Bytes expected.
        expected: u64,
    },
}

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// The smallest volume written: 1 MiB.
pub const MIN_SIZE: u64 = MIB;
/// The largest volume written (2^32 - 1 sectors).
pub const MAX_SIZE: u64 = (u32::MAX as u64) * SECTOR;
/// Entries in the fixed root directory of FAT12/16 volumes.
const ROOT_ENTRIES: u64 = 512;
const ATTR_READ_ONLY_ETC_LFN: u8 = 0x0f;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;

#[allow(clippy::cast_possible_truncation)] // bounded by the clamp: see below
/// The FAT (here UTC) date and time of a Unix time, clamped to FAT's range
/// 1980-01-01 .. 2107-12-31, with FAT's 2-second resolution: (date, time).
fn dos_time(unix: u64) -> (u16, u16) {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let c = kiln_fs::time::civil(unix.clamp(MIN, MAX));
    let year = u64::try_from(c.year).unwrap_or(1980);
    let date = ((year - 1980) << 9) | (u64::from(c.month) << 5) | u64::from(c.day);
    let time = (u64::from(c.hour) << 11) | (u64::from(c.minute) << 5) | (u64::from(c.second) / 2);
    // The clamp bounds year - 1980 to 127, so both fit 16 bits.
    (date as u16, time as u16)
}

/// The 11-byte label: upper-cased, space-padded; `None` when empty ("NO NAME").
fn label_bytes(label: &str) -> Result<Option<[u8; 11]>, FatError> {
    let up = label.to_ascii_uppercase();
    let ok = up.len() <= 11
        && up
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" !#$%&'()-@^_`{}~".contains(&b));
    if !ok || (!up.is_empty() && up.starts_with(' ')) {
        return Err(FatError::Label(label.to_string()));
    }
    if up.trim().is_empty() {
        return Ok(None);
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(Some(out))
}

/// Splits and checks a volume path: '/'-separated, no empty, "." or ".." components, no
/// characters FAT long names cannot hold.
fn components(path: &str) -> Result<Vec<&str>, FatError> {
    let err = |reason: &str| FatError::Path {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(err(
                "empty, \".\" or \"..\" component; give a path like EFI/BOOT/BOOTX64.EFI",
            ));
        }
        if p.encode_utf16().count() > 255 {
            return Err(err("component longer than 255 UTF-16 code units"));
        }
        if p.chars().any(|c| c < ' ' || "\"*:<>?\\|".contains(c)) {
            return Err(err(
                "contains a character FAT cannot hold (control, \" * : < > ? \\ |)",
            ));
        }
        if p.ends_with('.') || p.ends_with(' ') {
            return Err(err("component ends in '.' or space, which FAT drops"));
        }
    }
    Ok(parts)
}

/// Characters allowed in a short (8.3) name besides A-Z and 0-9.
fn sfn_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'()-@^_`{}~".contains(&b) || b >= 0x80
}

/// The short name for `name` when it is one already (upper-case 8.3), as 11 padded bytes.
fn exact_sfn(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    let valid = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| sfn_char(b) && b < 0x80);
    if base.is_empty() || !valid(base, 8) || !valid(ext, 3) {
        return None;
    }
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(out)
}

/// A short name for a long `name`, unique among `taken`: the upper-cased name itself when only
/// case kept it from being one, else the basis name with a numeric tail ("LONG-N~1.CON").
fn generated_sfn(name: &str, taken: &[[u8; 11]]) -> [u8; 11] {
    if let Some(s) = exact_sfn(&name.to_ascii_uppercase())
        && !taken.contains(&s)
    {
        return s;
    }
    let clean = |s: &str| -> Vec<u8> {
        s.to_ascii_uppercase()
            .bytes()
            .filter(|&b| b != b' ' && b != b'.')
            .map(|b| if sfn_char(b) && b < 0x80 { b } else { b'_' })
            .collect()
    };
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (clean(&trimmed[..i]), clean(&trimmed[i + 1..])),
        None => (clean(trimmed), Vec::new()),
    };
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    let mut n: u32 = 1;
    loop {
        let tail = format!("~{n}");
        let keep = 8usize.saturating_sub(tail.len()).min(base.len());
        let mut out = [b' '; 11];
        out[..keep].copy_from_slice(&base[..keep]);
        out[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        let e = ext.len().min(3);
        out[8..8 + e].copy_from_slice(&ext[..e]);
        if !taken.contains(&out) {
            return out;
        }
        n += 1;
    }
}

fn lfn_checksum(sfn: &[u8; 11]) -> u8 {
    sfn.iter().fold(0u8, |sum, &b| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b)
    })
}

/// One directory entry to write: long-name entries (if any) then the short entry.
#[derive(Debug, Clone)]
struct Entry {
    /// The long name, when the entry needs one.
    long: Option<String>,
    sfn: [u8; 11],
    attr: u8,
    /// What the entry points at.
    target: Target,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// A directory, by index.
    Dir(usize),
    /// A file, by index into the sorted file list.
    File(usize),
    /// A fixed cluster (".", "..") or none (volume label).
    Cluster(u32),
}

impl Entry {
    /// Slots (32-byte entries) this entry takes.
    fn slots(&self) -> u64 {
        1 + self
            .long
            .as_ref()
            .map_or(0, |l| (l.encode_utf16().count() as u64).div_ceil(13))
    }
}

/// A directory: its entries in order.
#[derive(Debug, Default)]
struct DirNode {
    /// Upper-cased child name -> index in `entries` (to find existing children).
    by_name: BTreeMap<String, usize>,
    entries: Vec<Entry>,
}

impl DirNode {
    fn slots(&self) -> u64 {
        self.entries.iter().map(Entry::slots).sum()
    }
}

/// The directory tree of a volume; directory 0 is the root.
struct Tree<'a> {
    dirs: Vec<DirNode>,
    /// Files in write order: (path, length, source).
    files: Vec<(&'a str, u64, Option<&'a Source>)>,
}

/// Builds the tree. "." and ".." are added when clusters are known.
fn tree<'a>(
    files: impl Iterator<Item = (&'a str, u64, Option<&'a Source>)>,
    label: Option<[u8; 11]>,
) -> Result<Tree<'a>, FatError> {
    let mut sorted: Vec<(Vec<&str>, &'a str, u64, Option<&'a Source>)> = Vec::new();
    for (path, len, src) in files {
        sorted.push((components(path)?, path, len, src));
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut t = Tree {
        dirs: vec![DirNode::default()],
        files: Vec::new(),
    };
    if let Some(l) = label {
        t.dirs[0].entries.push(Entry {
            long: None,
            sfn: l,
            attr: ATTR_VOLUME_ID,
            target: Target::Cluster(0),
        });
    }
    for (parts, path, len, src) in sorted {
        let mut dir = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let key = part.to_uppercase();
            if let Some(&e) = t.dirs[dir].by_name.get(&key) {
                match t.dirs[dir].entries[e].target {
                    Target::Dir(d) if !last => {
                        dir = d;
                        continue;
                    }
                    _ => {
                        return Err(FatError::Path {
                            path: path.to_string(),
                            reason: "given twice, or both as a file and as a directory (FAT \
                                     names ignore case)"
                                .into(),
                        });
                    }
                }
            }
            let taken: Vec<[u8; 11]> = t.dirs[dir].entries.iter().map(|e| e.sfn).collect();
            let (long, sfn) = match exact_sfn(part) {
                Some(s) if !taken.contains(&s) => (None, s),
                _ => (Some(part.to_string()), generated_sfn(part, &taken)),
            };
            let (attr, target) = if last {
                t.files.push((path, len, src));
                (ATTR_ARCHIVE, Target::File(t.files.len() - 1))
            } else {
                t.dirs.push(DirNode::default());
                (ATTR_DIRECTORY, Target::Dir(t.dirs.len() - 1))
            };
            let node = &mut t.dirs[dir];
            node.by_name.insert(key, node.entries.len());
            node.entries.push(Entry {
                long,
                sfn,
                attr,
                target,
            });
            if let Target::Dir(d) = target {
                dir = d;
            }
        }
    }
    Ok(t)
}

/// The layout of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    bits: u8,
    sectors: u64,
    /// Sectors per cluster.
    spc: u64,
    reserved: u64,
    fat_sectors: u64,
    root_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn cluster_bytes(&self) -> u64 {
        self.spc * SECTOR
    }
}

/// The cluster size customary for a volume of `total` bytes and `bits`.
fn preferred_cluster(total: u64, bits: u8) -> u64 {
    let c = match bits {
        12 => total.next_power_of_two() / MIB * 512,
        16 if total <= 16 * MIB => 1024,
        16 if total <= 128 * MIB => 2048,
        16 => total.next_power_of_two() / (64 * MIB) * 1024,
        _ if total <= 8 << 30 => 4096,
        _ => total.next_power_of_two() / (2 << 30) * 1024,
    };
    c.clamp(512, 32 << 10)
}

fn try_geometry(sectors: u64, bits: u8, cluster: u64) -> Option<Geometry> {
    let spc = cluster / SECTOR;
    let (reserved, root_sectors) = if bits == 32 {
        (32, 0)
    } else {
        (1, ROOT_ENTRIES * 32 / SECTOR)
    };
    let mut fat_sectors = 1;
    let clusters = loop {
        let data = sectors.checked_sub(reserved + 2 * fat_sectors + root_sectors)?;
        let clusters = data / spc;
        let need = ((clusters + 2) * u64::from(bits))
            .div_ceil(8)
            .div_ceil(SECTOR);
        if need <= fat_sectors {
            break clusters;
        }
        fat_sectors = need;
    };
    let ok = match bits {
        12 => (1..4085).contains(&clusters),
        16 => (4085..65525).contains(&clusters),
        _ => (65525..0x0FFF_FFF5).contains(&clusters),
    };
    ok.then_some(Geometry {
        bits,
        sectors,
        spc,
        reserved,
        fat_sectors,
        root_sectors,
        clusters,
    })
}

/// The geometry of a volume of `size` bytes: the FAT type by size, the customary cluster size,
/// else the nearest that gives a valid cluster count.
fn geometry(size: u64) -> Result<Geometry, FatError> {
    let sectors = size / SECTOR;
    let preferred = fat_bits(size);
    let mut order = vec![preferred];
    order.extend([12, 16, 32].into_iter().filter(|&b| b != preferred));
    for bits in order {
        let first = preferred_cluster(size, bits);
        let mut sizes = vec![first];
        let mut c = first;
        while c > 512 {
            c /= 2;
            sizes.push(c);
        }
        let mut c = first;
        while c < 32 << 10 {
            c *= 2;
            sizes.push(c);
        }
        for cluster in sizes {
            if let Some(g) = try_geometry(sectors, bits, cluster) {
                return Ok(g);
            }
        }
    }
    Err(FatError::Size {
        size,
        reason: "no FAT layout fits this size; choose another".into(),
    })
}

/// Which FAT a volume of `size_bytes` gets: 12 below 4 MiB, 16 below 512 MiB, 32 from there
/// (UEFI wants FAT32 for large system partitions; firmware reads all three).
pub fn fat_bits(size_bytes: u64) -> u8 {
    if size_bytes < 4 * MIB {
        12
    } else if size_bytes < 512 * MIB {
        16
    } else {
        32
    }
}

/// Clusters a directory with `slots` entries takes (at least one).
fn dir_clusters(slots: u64, g: &Geometry) -> u64 {
    (slots * 32).div_ceil(g.cluster_bytes()).max(1)
}

/// Whether the tree fits a volume of geometry `g`.
fn fits(t: &Tree, g: &Geometry) -> bool {
    let root_slots = t.dirs[0].slots();
    let mut need: u64 = t
        .files
        .iter()
        .map(|f| f.1.div_ceil(g.cluster_bytes()))
        .sum();
    for (i, d) in t.dirs.iter().enumerate() {
        if i == 0 {
            if g.bits == 32 {
                need += dir_clusters(root_slots, g);
            }
        } else {
            need += dir_clusters(d.slots() + 2, g);
        }
    }
    need <= g.clusters && (g.bits == 32 || root_slots <= ROOT_ENTRIES)
}

/// The smallest size in whole MiB (at least [`MIN_SIZE`]) of a volume that holds files of the
/// given paths and lengths, with their directories.
pub fn required_size_for(files: &[(&str, u64)]) -> Result<u64, FatError> {
    let t = tree(files.iter().map(|(p, l)| (*p, *l, None)), None)?;
    let data: u64 = files.iter().map(|f| f.1).sum();
    // A lower bound, then up in steps of 1/64 (at least 1 MiB) and back down in MiB steps.
    let mut size = data.div_ceil(MIB).max(1) * MIB;
    let ok = |size: u64| geometry(size).is_ok_and(|g| fits(&t, &g));
    let mut step = 0;
    while !ok(size) {
        if size > MAX_SIZE {
            return Err(FatError::Size {
                size,
                reason: "the files do not fit the largest FAT volume".into(),
            });
        }
        step = (size / 64).div_ceil(MIB).max(1) * MIB;
        size += step;
    }
    let floor = size - step;
    while size > floor.max(MIN_SIZE) && ok(size - MIB) {
        size -= MIB;
    }
    Ok(size)
}

/// [`required_size_for`] the lengths of the given sources.
pub fn required_size(files: &[(String, Source)]) -> Result<u64, FatError> {
    let lens = files
        .iter()
        .map(|(p, s)| Ok((p.as_str(), s.len()?)))
        .collect::<Result<Vec<_>, FatError>>()?;
    required_size_for(&lens)
}

/// Sets FAT entry `n` to `value` in `fat` (sized for every cluster of the volume).
#[allow(clippy::cast_possible_truncation)] // entries are packed into 12, 16 or 28 bits
fn set_fat(fat: &mut [u8], bits: u8, n: u64, value: u32) {
    let n = n as usize;
    match bits {
        12 => {
            let off = n * 3 / 2;
            let v = (value & 0xfff) as u16;
            if n.is_multiple_of(2) {
                fat[off] = (v & 0xff) as u8;
                fat[off + 1] = (fat[off + 1] & 0xf0) | (v >> 8) as u8;
            } else {
                fat[off] = (fat[off] & 0x0f) | ((v & 0x0f) << 4) as u8;
                fat[off + 1] = (v >> 4) as u8;
            }
        }
        16 => fat[n * 2..n * 2 + 2].copy_from_slice(&(value as u16).to_le_bytes()),
        _ => fat[n * 4..n * 4 + 4].copy_from_slice(&(value & 0x0fff_ffff).to_le_bytes()),
    }
}

/// Serialises one directory's entries into `buf` (whose length is the directory's size).
#[allow(clippy::cast_possible_truncation)] // names have at most 20 LFN entries; clusters split in halves
fn dir_bytes(
    entries: &[Entry],
    cluster_of: impl Fn(Target) -> (u32, u32),
    stamp: (u16, u16),
    buf: &mut [u8],
) {
    let (date, time) = stamp;
    let mut at = 0;
    for e in entries {
        if let Some(long) = &e.long {
            let units: Vec<u16> = long.encode_utf16().collect();
            let count = units.len().div_ceil(13);
            let sum = lfn_checksum(&e.sfn);
            for seq in (1..=count).rev() {
                let mut part = [0xffffu16; 13];
                let chunk = &units[(seq - 1) * 13..units.len().min(seq * 13)];
                part[..chunk.len()].copy_from_slice(chunk);
                if chunk.len() < 13 {
                    part[chunk.len()] = 0;
                }
                let s = &mut buf[at..at + 32];
                s.fill(0);
                s[0] = seq as u8 | if seq == count { 0x40 } else { 0 };
                s[11] = ATTR_READ_ONLY_ETC_LFN;
                s[13] = sum;
                for (k, u) in part.iter().enumerate() {
                    let o = match k {
                        0..=4 => 1 + 2 * k,
                        5..=10 => 14 + 2 * (k - 5),
                        _ => 28 + 2 * (k - 11),
                    };
                    s[o..o + 2].copy_from_slice(&u.to_le_bytes());
                }
                at += 32;
            }
        }
        let (cluster, size) = cluster_of(e.target);
        let s = &mut buf[at..at + 32];
        s.fill(0);
        s[..11].copy_from_slice(&e.sfn);
        s[11] = e.attr;
        if e.attr != ATTR_VOLUME_ID {
            s[14..16].copy_from_slice(&time.to_le_bytes());
            s[16..18].copy_from_slice(&date.to_le_bytes());
            s[18..20].copy_from_slice(&date.to_le_bytes());
            s[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
            s[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
            s[28..32].copy_from_slice(&size.to_le_bytes());
        }
        s[22..24].copy_from_slice(&time.to_le_bytes());
        s[24..26].copy_from_slice(&date.to_le_bytes());
        at += 32;
    }
}

/// The boot sector.
#[allow(clippy::cast_possible_truncation)] // geometry() bounds every field to its width
fn boot_sector(g: &Geometry, volume_id: u32, label: Option<[u8; 11]>) -> [u8; 512] {
    let mut b = [0u8; 512];
    let code_at: usize = if g.bits == 32 { 0x5a } else { 0x3e };
    b[0] = 0xeb;
    b[1] = (code_at - 2) as u8;
    b[2] = 0x90;
    b[3..11].copy_from_slice(b"MSWIN4.1");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = g.spc as u8;
    b[14..16].copy_from_slice(&(g.reserved as u16).to_le_bytes());
    b[16] = 2;
    let root_entries = if g.bits == 32 { 0 } else { ROOT_ENTRIES as u16 };
    b[17..19].copy_from_slice(&root_entries.to_le_bytes());
    if g.sectors < 65536 && g.bits != 32 {
        b[19..21].copy_from_slice(&(g.sectors as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&(g.sectors as u32).to_le_bytes());
    }
    b[21] = 0xf8;
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    let label = label.unwrap_or(*b"NO NAME    ");
    let ext = if g.bits == 32 {
        b[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes()); // root cluster
        b[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
        b[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
        64
    } else {
        b[22..24].copy_from_slice(&(g.fat_sectors as u16).to_le_bytes());
        36
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    b[ext + 3..ext + 7].copy_from_slice(&volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(&label);
    let fs_type: &[u8; 8] = match g.bits {
        12 => b"FAT12   ",
        16 => b"FAT16   ",
        _ => b"FAT32   ",
    };
    b[ext + 18..ext + 26].copy_from_slice(fs_type);
    // Not bootable: ask the BIOS for the next boot device (int 18h), else halt.
    b[code_at..code_at + 5].copy_from_slice(&[0xcd, 0x18, 0xf4, 0xeb, 0xfd]);
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

#[allow(clippy::cast_possible_truncation)] // cluster counts are below 2^28
fn fs_info(free: u64, next_free: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    b[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    b[492..496].copy_from_slice(&(next_free as u32).to_le_bytes());
    b[508..512].copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    b
}

fn zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    static Z: [u8; 64 << 10] = [0; 64 << 10];
    while n > 0 {
        let k = usize::try_from(n).map_or(Z.len(), |n| n.min(Z.len()));
        out.write_all(&Z[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Writes a FAT volume of `size_bytes` (a multiple of 512, from 1 MiB) at the current start
/// of `out` (position 0) holding `files`: each path ('/'-separated, e.g.
/// `EFI/BOOT/BOOTX64.EFI`) gets its directories; names that are not upper-case 8.3 names get
/// long names. Every timestamp is `mtime` (Unix seconds, clamped to FAT's 1980..2107), the
/// label (up to 11 characters, upper-cased; empty for none) and `volume_id` are the caller's.
///
/// Everything up to the end of the last file's last cluster is written, in one forward pass;
/// the free clusters after it are not touched, so `out` must read as zeros there for
/// reproducible bytes (a new or sparse file). `out` is extended to `size_bytes` if shorter.
// Cluster numbers are below 2^28 and file sizes below 2^32 (both checked), the FAT fits memory.
#[allow(clippy::cast_possible_truncation)]
pub fn write_fat<T: Write + Seek>(
    out: &mut T,
    size_bytes: u64,
    label: &str,
    volume_id: u32,
    mtime: u64,
    files: &[(String, Source)],
) -> Result<(), FatError> {
    if !size_bytes.is_multiple_of(SECTOR) || !(MIN_SIZE..=MAX_SIZE).contains(&size_bytes) {
        return Err(FatError::Size {
            size: size_bytes,
            reason: format!("give a multiple of {SECTOR} bytes from {MIN_SIZE} to {MAX_SIZE}"),
        });
    }
    let label = label_bytes(label)?;
    let lens = files
        .iter()
        .map(|(p, s)| Ok((p.as_str(), s.len()?, Some(s))))
        .collect::<Result<Vec<_>, FatError>>()?;
    let mut t = tree(lens.into_iter(), label)?;
    if let Some((path, len, _)) = t.files.iter().find(|f| f.1 > u64::from(u32::MAX)) {
        return Err(FatError::Path {
            path: path.to_string(),
            reason: format!("{len} bytes; FAT holds files up to 4 GiB - 1"),
        });
    }
    let g = geometry(size_bytes)?;
    if !fits(&t, &g) {
        let need = required_size(files)?;
        return Err(FatError::Size {
            size: size_bytes,
            reason: format!("too small for the files; they need {need} bytes"),
        });
    }
    let cb = g.cluster_bytes();

    // Allocate: the FAT32 root, then directories in tree order, then files in path order,
    // each in consecutive clusters.
    let mut next: u64 = 2;
    let mut dir_at = vec![(0u64, 0u64); t.dirs.len()]; // (first cluster, clusters)
    for (i, d) in t.dirs.iter().enumerate() {
        if i == 0 && g.bits != 32 {
            continue;
        }
        let slots = d.slots() + if i == 0 { 0 } else { 2 };
        let n = dir_clusters(slots, &g);
        dir_at[i] = (next, n);
        next += n;
    }
    let mut file_at = Vec::with_capacity(t.files.len());
    for f in &t.files {
        let n = f.1.div_ceil(cb);
        file_at.push(if n == 0 { (0, 0) } else { (next, n) });
        next += n;
    }
    // "." and ".." head every directory but the root.
    let mut parent = vec![0usize; t.dirs.len()];
    for (i, d) in t.dirs.iter().enumerate() {
        for e in &d.entries {
            if let Target::Dir(c) = e.target {
                parent[c] = i;
            }
        }
    }
    for i in 1..t.dirs.len() {
        let up = if parent[i] == 0 {
            0
        } else {
            dir_at[parent[i]].0 as u32
        };
        let dot = |name: &[u8], cluster: u32| Entry {
            long: None,
            sfn: {
                let mut s = [b' '; 11];
                s[..name.len()].copy_from_slice(name);
                s
            },
            attr: ATTR_DIRECTORY,
            target: Target::Cluster(cluster),
        };
        let own = dir_at[i].0 as u32;
        t.dirs[i]
            .entries
            .splice(0..0, [dot(b".", own), dot(b"..", up)]);
    }

    let mut fat = vec![0u8; (g.fat_sectors * SECTOR) as usize];
    let eoc: u32 = match g.bits {
        12 => 0xfff,
        16 => 0xffff,
        _ => 0x0fff_ffff,
    };
    set_fat(&mut fat, g.bits, 0, eoc & !0xff | 0xf8);
    set_fat(&mut fat, g.bits, 1, eoc);
    for &(first, n) in dir_at.iter().chain(&file_at) {
        for c in first..first + n {
            let v = if c + 1 == first + n {
                eoc
            } else {
                (c + 1) as u32
            };
            set_fat(&mut fat, g.bits, c, v);
        }
    }

    out.seek(SeekFrom::Start(0))?;
    let mut w = BufWriter::with_capacity(1 << 20, &mut *out);
    let boot = boot_sector(&g, volume_id, label);
    w.write_all(&boot)?;
    if g.bits == 32 {
        let info = fs_info(g.clusters + 2 - next, next);
        w.write_all(&info)?;
        zeros(&mut w, 4 * SECTOR)?;
        w.write_all(&boot)?; // sector 6: backup boot sector
        w.write_all(&info)?; // sector 7: its FSInfo
        zeros(&mut w, (g.reserved - 8) * SECTOR)?;
    } else {
        zeros(&mut w, (g.reserved - 1) * SECTOR)?;
    }
    w.write_all(&fat)?;
    w.write_all(&fat)?;
    drop(fat);

    let stamp = dos_time(mtime);
    let cluster_of = |target: Target| -> (u32, u32) {
        match target {
            Target::Dir(d) => (dir_at[d].0 as u32, 0),
            Target::File(f) => (file_at[f].0 as u32, t.files[f].1 as u32),
            Target::Cluster(c) => (c, 0),
        }
    };
    for (i, d) in t.dirs.iter().enumerate() {
        let bytes = if i == 0 && g.bits != 32 {
            g.root_sectors * SECTOR
        } else {
            dir_at[i].1 * cb
        };
        let mut buf = vec![0u8; bytes as usize];
        dir_bytes(&d.entries, cluster_of, stamp, &mut buf);
        w.write_all(&buf)?;
    }
    let mut buf = vec![0u8; 256 << 10];
    for (f, &(path, len, src)) in t.files.iter().enumerate() {
        let Some(src) = src else { continue };
        let mut reader = src.open()?.take(len);
        let mut copied = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FatError::Source {
                        path: PathBuf::from(src.describe()),
                        source: e,
                    });
                }
            };
            w.write_all(&buf[..n])?;
            copied += n as u64;
        }
        if copied != len {
            return Err(FatError::Changed {
                path: path.to_string(),
                source_desc: src.describe(),
                copied,
                expected: len,
            });
        }
        zeros(&mut w, file_at[f].1 * cb - len)?;
    }
    w.flush()?;
    drop(w);
    let len = out.seek(SeekFrom::End(0))?;
    if len < size_bytes {
        out.seek(SeekFrom::Start(size_bytes - 1))?;
        out.write_all(&[0])?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test images are small
mod tests {
    use super::*;
    use std::process::Command;

    use crate::test_tools::tool;

    fn files(big: &std::path::Path) -> Vec<(String, Source)> {
        vec![
            (
                "EFI/BOOT/BOOTX64.EFI".into(),
                Source::File(big.to_path_buf()),
            ),
            (
                "EFI/kiln/cmdline.txt".into(),
                Source::Bytes(b"console=ttyS0\n".to_vec()),
            ),
            (
                "loader/entries/a-long-entry-name.conf".into(),
                Source::Bytes(b"title kiln\n".to_vec()),
            ),
            ("empty".into(), Source::Bytes(Vec::new())),
        ]
    }

    fn content(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn write(path: &std::path::Path, size: u64, files: &[(String, Source)]) {
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create image");
        write_fat(&mut f, size, "kiln-esp", 0x0bad_cafe, 1_700_000_001, files).expect("write fat");
    }

    #[test]
    fn dos_time_converts_and_clamps() {
        let ymd = |d: u16| (1980 + (d >> 9), (d >> 5) & 15, d & 31);
        let hms = |t: u16| (t >> 11, (t >> 5) & 63, (t & 31) * 2);
        let (d, t) = dos_time(1_700_000_001); // 2023-11-14T22:13:21Z
        assert_eq!(ymd(d), (2023, 11, 14));
        assert_eq!(hms(t), (22, 13, 20));
        assert_eq!(dos_time(0), ((1 << 5) | 1, 0));
        assert_eq!(ymd(dos_time(u64::MAX).0), (2107, 12, 31));
        assert_eq!(ymd(dos_time(951_782_400).0), (2000, 2, 29));
    }

    #[test]
    fn short_names_and_checksum() {
        assert_eq!(exact_sfn("BOOTX64.EFI"), Some(*b"BOOTX64 EFI"));
        assert_eq!(exact_sfn("EFI"), Some(*b"EFI        "));
        assert_eq!(exact_sfn("grub.cfg"), None);
        assert_eq!(exact_sfn("TOOLONGNAME.EFI"), None);
        assert_eq!(generated_sfn("grub.cfg", &[]), *b"GRUB    CFG");
        assert_eq!(
            generated_sfn("a-long-entry-name.conf", &[]),
            *b"A-LONG~1CON"
        );
        assert_eq!(
            generated_sfn("a-long-entry-other.conf", &[*b"A-LONG~1CON"]),
            *b"A-LONG~2CON"
        );
        assert_eq!(generated_sfn(".hidden file", &[]), *b"HIDDEN~1   ");
        // The checksum of the example in Microsoft's FAT specification style: stable value.
        assert_eq!(lfn_checksum(b"A-LONG~1CON"), lfn_checksum(b"A-LONG~1CON"));
        assert_ne!(lfn_checksum(b"A-LONG~1CON"), lfn_checksum(b"A-LONG~2CON"));
    }

    #[test]
    fn geometry_is_valid_for_every_size_class() {
        for mib in [
            1u64, 2, 3, 4, 5, 8, 16, 17, 33, 64, 128, 129, 255, 256, 257, 511, 512, 513, 1024, 4096,
        ] {
            let g = geometry(mib * MIB).unwrap_or_else(|e| panic!("{mib} MiB: {e}"));
            assert_eq!(g.bits, fat_bits(mib * MIB), "{mib} MiB: {g:?}");
            let used = g.reserved + 2 * g.fat_sectors + g.root_sectors + g.clusters * g.spc;
            assert!(used <= g.sectors, "{mib} MiB: {g:?}");
            assert!(
                (g.clusters + 2) * u64::from(g.bits) <= g.fat_sectors * SECTOR * 8,
                "{g:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_names_labels_and_sizes() {
        let mut v = io::Cursor::new(Vec::new());
        let one = |p: &str| vec![(p.to_string(), Source::Bytes(vec![1]))];
        for bad in ["EFI//X", "../X", "A/./B", "a:b", "x."] {
            assert!(
                matches!(
                    write_fat(&mut v, MIB, "", 1, 0, &one(bad)),
                    Err(FatError::Path { .. })
                ),
                "{bad}"
            );
        }
        let twice = vec![
            ("efi/boot/x".to_string(), Source::Bytes(vec![1])),
            ("EFI/BOOT/X".to_string(), Source::Bytes(vec![2])),
        ];
        assert!(matches!(
            write_fat(&mut v, MIB, "", 1, 0, &twice),
            Err(FatError::Path { .. })
        ));
        assert!(matches!(
            write_fat(&mut v, MIB, "TWELVE CHARS", 1, 0, &[]),
            Err(FatError::Label(_))
        ));
        assert!(matches!(
            write_fat(&mut v, MIB + 1, "", 1, 0, &[]),
            Err(FatError::Size { .. })
        ));
        let big = vec![("X".to_string(), Source::Bytes(vec![0; 2 << 20]))];
        let e = write_fat(&mut v, MIB, "", 1, 0, &big).expect_err("too small");
        assert!(e.to_string().contains("too small for the files"), "{e}");
    }

    #[test]
    fn required_size_fits_and_picks_fat_type() {
        let mut v = io::Cursor::new(Vec::new());
        for lens in [
            vec![0u64],
            vec![100, 200],
            vec![3 << 20, 1 << 20, 5],
            vec![20 << 20, 17 << 20],
        ] {
            let files: Vec<(String, Source)> = lens
                .iter()
                .enumerate()
                .map(|(i, &l)| {
                    (
                        format!("EFI/D{i}/file-number-{i}.bin"),
                        Source::Bytes(vec![7; l as usize]),
                    )
                })
                .collect();
            let size = required_size(&files).expect("size");
            assert_eq!(size % MIB, 0);
            let data: u64 = lens.iter().sum();
            assert!(
                size < data + data / 8 + 2 * MIB,
                "{size} too large for {data}"
            );
            v.get_mut().clear();
            write_fat(&mut v, size, "", 1, 0, &files).expect("fits");
            assert_eq!(v.get_ref().len() as u64, size);
        }
        assert_eq!(fat_bits(2 * MIB), 12);
        assert_eq!(fat_bits(100 * MIB), 16);
        assert_eq!(fat_bits(600 * MIB), 32);
        // Many root entries overflow a FAT16 root directory: the size grows to FAT32.
        let names: Vec<String> = (0..600).map(|i| format!("f{i}")).collect();
        let many: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        assert!(required_size_for(&many).expect("many") >= 512 * MIB);
        assert_eq!(required_size_for(&[]).expect("empty"), MIB);
    }

    #[test]
    fn fsck_and_mtools_read_it_back_and_writes_repeat() {
        if !tool("fsck.vfat") || !tool("mcopy") || !tool("mdir") {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.efi");
        let bytes = content(3 * 1024 * 1024 + 123);
        std::fs::write(&big, &bytes).expect("write source");
        let files = files(&big);
        let size = required_size(&files).expect("size");
        for size in [size, 600 * MIB] {
            let img = dir.path().join("esp.img");
            write(&img, size, &files);
            let p = img.to_str().expect("utf-8");
            let out = Command::new("fsck.vfat")
                .args(["-n", p])
                .output()
                .expect("fsck.vfat");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "fsck.vfat -n failed for {size}: {text}"
            );
            assert!(!text.contains("Dirty bit"), "{text}");
            let out = Command::new("mcopy")
                .args(["-n", "-i", p, "::EFI/BOOT/BOOTX64.EFI", "-"])
                .output()
                .expect("mcopy");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.stdout == bytes,
                "BOOTX64.EFI differs ({} bytes)",
                out.stdout.len()
            );
            let out = Command::new("mcopy")
                .args([
                    "-n",
                    "-i",
                    p,
                    "::loader/entries/a-long-entry-name.conf",
                    "-",
                ])
                .output()
                .expect("mcopy");
            assert_eq!(
                out.stdout,
                b"title kiln\n",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = Command::new("mdir")
                .args(["-i", p, "::EFI/BOOT"])
                .output()
                .expect("mdir");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("BOOTX64  EFI"), "{text}");
            assert!(text.contains("2023-11-14"), "timestamps from mtime: {text}");
            let out = Command::new("minfo").args(["-i", p, "::"]).output();
            if let Ok(out) = out {
                let text = String::from_utf8_lossy(&out.stdout);
                let want = if size >= 512 * MIB { "FAT32" } else { "FAT16" };
                assert!(text.contains(want), "{want} expected: {text}");
                assert!(text.contains("serial number: 0BADCAFE"), "{text}");
                assert!(text.contains("KILN-ESP"), "{text}");
            }
            let img2 = dir.path().join("esp2.img");
            write(&img2, size, &files);
            assert!(
                std::fs::read(&img).expect("read") == std::fs::read(&img2).expect("read"),
                "two writes of {size} bytes differ"
            );
        }
    }
}
