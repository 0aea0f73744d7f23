//! Virtual disk containers: a raw disk image rewritten as qcow2, VHD (fixed or dynamic) or VMDK.
//!
//! The disk formats (`raw-bios`, `raw-efi`, ...) produce a raw image; this module wraps such an
//! image in the container a hypervisor or cloud expects ([`DiskContainer`]) with
//! [`write_container`]. Each writer reads the raw image once, sequentially, in large chunks;
//! memory is bounded by the chunk size plus tables proportional to the number of clusters.
//! All-zero clusters (blocks, grains) are left unallocated, so a mostly empty disk gives a small
//! container (except fixed VHD, whose zero ranges are skipped by seeking and stay holes in the
//! output file).
//!
//! Everything a container records besides the data comes from [`DiskIds`]: nothing is random
//! and nothing is read from the clock, so the same raw image and ids give the same bytes.
//!
//! This module does not build the raw image (partition tables and file systems live elsewhere)
//! and does not read containers back.
//!
//! ```no_run
//! use kiln_format::vdisk::{DiskContainer, DiskIds, write_container};
//! let mut raw = std::fs::File::open("disk.img")?;
//! let mut out = std::fs::File::create("disk.qcow2")?;
//! let ids = DiskIds::derive(1_700_000_000, b"content digest of the raw image");
//! write_container(DiskContainer::Qcow2, &mut raw, &mut out, &ids)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

mod qcow2;
mod vhd;
mod vmdk;

/// The container formats [`write_container`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskContainer {
    /// qcow2 version 3, 64 KiB clusters, zero clusters unallocated (`qcow2-bios`, `qcow2-efi`).
    Qcow2,
    /// Fixed VHD: the raw data, padded to a whole MiB, then a 512-byte footer (`vhd`, as Azure
    /// wants it).
    VhdFixed,
    /// Dynamic VHD: 2 MiB blocks, all-zero blocks unallocated (`dynamic-vhd`).
    VhdDynamic,
    /// Stream-optimized VMDK: deflate-compressed 64 KiB grains, what ESXi, vSphere (OVF/OVA)
    /// and the clouds' VMware importers take (`vmdk`).
    Vmdk,
}

impl DiskContainer {
    /// Every container, in a fixed order.
    pub const ALL: [DiskContainer; 4] = [
        DiskContainer::Qcow2,
        DiskContainer::VhdFixed,
        DiskContainer::VhdDynamic,
        DiskContainer::Vmdk,
    ];

    /// The name of qemu's block driver that reads this container (`-drive format=...`).
    pub fn qemu_format(self) -> &'static str {
        match self {
            DiskContainer::Qcow2 => "qcow2",
            DiskContainer::VhdFixed | DiskContainer::VhdDynamic => "vpc",
            DiskContainer::Vmdk => "vmdk",
        }
    }

    /// The largest raw image, in bytes, this container holds.
    pub fn max_size(self) -> u64 {
        match self {
            DiskContainer::Qcow2 => qcow2::MAX_SIZE,
            DiskContainer::VhdFixed | DiskContainer::VhdDynamic => vhd::MAX_SIZE,
            DiskContainer::Vmdk => vmdk::MAX_SIZE,
        }
    }
}

/// What a container records besides the data, fixed by the caller so that output is
/// reproducible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIds {
    /// Seconds since the Unix epoch (from `SOURCE_DATE_EPOCH`): VHD's time stamp. VHD counts
    /// from 2000-01-01 in 32 bits; earlier times are written as 2000-01-01 and times after
    /// 2136-02-07 as that date.
    pub timestamp: u64,
    /// 16 bytes derived from the content: VHD's unique id, VMDK's CID (first 4 bytes) and
    /// `ddb.uuid`/`ddb.longContentID`.
    pub unique_id: [u8; 16],
    /// The file name the VMDK descriptor gives its own extent (a stream-optimized VMDK names
    /// itself). Printable ASCII without `"`; at most 255 bytes. `disk.vmdk` unless set.
    pub file_name: String,
}

impl DiskIds {
    /// Ids from a time stamp and a unique id; the VMDK extent is named `disk.vmdk`.
    pub fn new(timestamp: u64, unique_id: [u8; 16]) -> Self {
        DiskIds {
            timestamp,
            unique_id,
            file_name: "disk.vmdk".to_owned(),
        }
    }

    /// Ids whose unique id is derived from `content` (for example the digest of the raw
    /// image): the first 16 bytes of its SHA-256, marked as an RFC 9562 version 8 UUID.
    pub fn derive(timestamp: u64, content: &[u8]) -> Self {
        let digest = Sha256::digest(content);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id[6] = (id[6] & 0x0f) | 0x80;
        id[8] = (id[8] & 0x3f) | 0x80;
        DiskIds::new(timestamp, id)
    }

    /// The same ids with the VMDK extent named `name` (the output's file name, e.g.
    /// `NAME.vmdk`).
    pub fn with_file_name(mut self, name: impl Into<String>) -> Self {
        self.file_name = name.into();
        self
    }
}

/// Write the raw disk image `raw` as a `kind` container to `out`.
///
/// `raw` is read from its start to its length (which must be a non-zero multiple of 512 and at
/// most [`DiskContainer::max_size`]); its current position does not matter. `out` must be
/// empty: the container is written from offset 0, seeking back to fill in headers and tables,
/// and a fixed VHD skips its zero ranges by seeking (leaving holes in a file).
///
/// Errors: `InvalidInput` naming the size or limit when the raw image does not fit the
/// container, `UnexpectedEof` if the raw image shrinks while being read, and any I/O error of
/// `raw` or `out`.
pub fn write_container(
    kind: DiskContainer,
    raw: &mut File,
    out: &mut (impl Write + Seek),
    ids: &DiskIds,
) -> io::Result<()> {
    let size = raw_size(raw, kind)?;
    raw.seek(SeekFrom::Start(0))?;
    match kind {
        DiskContainer::Qcow2 => qcow2::write(raw, size, out),
        DiskContainer::VhdFixed => vhd::write_fixed(raw, size, out, ids),
        DiskContainer::VhdDynamic => vhd::write_dynamic(raw, size, out, ids),
        DiskContainer::Vmdk => vmdk::write(raw, size, out, ids),
    }
}

/// The size of the raw image, checked against the container's limits.
fn raw_size(raw: &File, kind: DiskContainer) -> io::Result<u64> {
    let size = raw.metadata()?.len();
    if size == 0 {
        return Err(invalid(
            "the raw disk image is empty; give a disk size".to_owned(),
        ));
    }
    if size % SECTOR != 0 {
        return Err(invalid(format!(
            "the raw disk image is {size} bytes, not a multiple of 512-byte sectors"
        )));
    }
    let max = kind.max_size();
    if size > max {
        return Err(invalid(format!(
            "the raw disk image is {size} bytes; {} holds at most {max} bytes ({}); give a smaller disk size",
            kind.qemu_format(),
            human(max),
        )));
    }
    Ok(size)
}

/// A sector.
const SECTOR: u64 = 512;

/// Bytes read from the raw image at a time: a multiple of every container's allocation unit.
const CHUNK: usize = 4 << 20;

/// Read `size` bytes of `raw` sequentially and call `f(index, unit)` for each `unit`-byte piece
/// (`unit` divides [`CHUNK`]); the last piece is padded with zeros to a whole unit.
fn for_each_unit(
    raw: &mut impl Read,
    size: u64,
    unit: usize,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    debug_assert!(unit > 0 && CHUNK.is_multiple_of(unit));
    let mut buf = vec![0u8; CHUNK];
    let mut remaining = size;
    let mut index = 0u64;
    while remaining > 0 {
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        raw.read_exact(&mut buf[..want]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the raw disk image ended {remaining} bytes early; it changed while being written"
                    ),
                )
            } else {
                e
            }
        })?;
        let padded = want.div_ceil(unit) * unit;
        buf[want..padded].fill(0);
        for piece in buf[..padded].chunks_exact(unit) {
            f(index, piece)?;
            index += 1;
        }
        remaining -= want as u64;
    }
    Ok(())
}

/// The position of unit `index` within a table of `len` entries (`index % len`).
fn index_in(index: u64, len: usize) -> usize {
    let len64 = len as u64;
    // The remainder is below `len`, a usize.
    usize::try_from(index % len64).unwrap_or(0)
}

/// Whether `buf` holds only zero bytes.
fn is_zero(buf: &[u8]) -> bool {
    // Slice equality is a memcmp: fast in every build profile.
    buf.chunks(ZEROS.len())
        .all(|block| block == &ZEROS[..block.len()])
}

/// A block of zeros to compare and write.
static ZEROS: [u8; 4096] = [0; 4096];

/// An `InvalidInput` error with `message`.
fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// An error for a container that would exceed a limit of its format while being written.
fn too_large(what: &str) -> io::Error {
    invalid(format!(
        "the container grew past {what}; give a smaller disk size"
    ))
}

/// `bytes` in the largest binary unit that divides it.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && value >= 1024 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

/// Write `len` zero bytes.
fn write_zeros(out: &mut impl Write, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64);
        out.write_all(&ZEROS[..usize::try_from(n).unwrap_or(0)])?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Whether `qemu-img` can be run; in CI its absence fails the test, elsewhere the caller
    /// skips.
    pub(crate) fn have_qemu_img() -> bool {
        crate::test_tools::tool("qemu-img")
    }

    /// Run `qemu-img ARGS`, failing the test with its output unless it succeeds; its stdout.
    pub(crate) fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("running qemu-img");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "qemu-img {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// A deterministic pseudo-random (incompressible) byte stream.
    pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24).to_le_bytes()[0]
            })
            .collect()
    }

    /// A sparse raw image of `size` bytes with data in the first sector, a random grain-sized
    /// region, text in the middle straddling a 2 MiB boundary, and the last sector.
    pub(crate) fn sample_raw(dir: &Path, size: u64) -> PathBuf {
        let path = dir.join("disk.raw");
        let mut f = File::create(&path).expect("test setup");
        f.set_len(size).expect("test setup");
        let mut put = |offset: u64, data: &[u8]| {
            f.seek(SeekFrom::Start(offset)).expect("test setup");
            f.write_all(data).expect("test setup");
        };
        put(0, &[0x55; 512]);
        put(1 << 20, &noise(7, 70_000));
        let middle = (size / 2) & !((2 << 20) - 1);
        put(middle - 1000, "kiln ".repeat(600).as_bytes());
        put(size - 512, &[0xaa; 512]);
        path
    }

    /// Write `kind` from the raw image at `raw` into `dir`; the container's path.
    pub(crate) fn write_to(kind: DiskContainer, raw: &Path, dir: &Path, ids: &DiskIds) -> PathBuf {
        let out_path = dir.join(format!("disk.{}", kind.qemu_format()));
        let mut out = File::create(&out_path).expect("test setup");
        write_container(
            kind,
            &mut File::open(raw).expect("test setup"),
            &mut out,
            ids,
        )
        .expect("test setup");
        out_path
    }

    /// Convert `container` back to raw with qemu and compare with `raw`: identical for
    /// `raw.len()` bytes, zeros after (a fixed VHD is padded to a whole MiB); the converted
    /// size.
    pub(crate) fn round_trip(container: &Path, format: &str, raw: &Path) -> u64 {
        let back = container.with_extension("back");
        qemu_img(&[
            "convert",
            "-f",
            format,
            "-O",
            "raw",
            container.to_str().expect("test setup"),
            back.to_str().expect("test setup"),
        ]);
        let original_len = std::fs::metadata(raw).expect("test setup").len();
        let converted_len = std::fs::metadata(&back).expect("test setup").len();
        assert!(
            converted_len >= original_len,
            "{format}: converted image is shorter"
        );
        let mut original = File::open(raw).expect("test setup");
        let mut converted = File::open(&back).expect("test setup");
        let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut offset = 0u64;
        while offset < converted_len {
            let n = usize::try_from((converted_len - offset).min(1 << 20)).expect("small");
            converted.read_exact(&mut b[..n]).expect("test setup");
            let from_raw = usize::try_from(original_len.saturating_sub(offset))
                .unwrap_or(n)
                .min(n);
            original.read_exact(&mut a[..from_raw]).expect("test setup");
            a[from_raw..n].fill(0);
            if a[..n] != b[..n] {
                let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
                panic!(
                    "{format}: converted image differs from the raw input (zero-padded) at byte {}",
                    offset + at as u64
                );
            }
            offset += n as u64;
        }
        converted_len
    }

    /// qemu's virtual size of `path` read as `format`.
    pub(crate) fn virtual_size(path: &Path, format: &str) -> u64 {
        let info = qemu_img(&[
            "info",
            "--output=json",
            "-f",
            format,
            path.to_str().expect("test setup"),
        ]);
        let key = "\"virtual-size\":";
        let at = info.find(key).expect("virtual-size in qemu-img info") + key.len();
        info[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number after virtual-size")
    }

    /// Write every container twice from the same raw image into memory.
    fn twice(kind: DiskContainer, raw: &Path, ids: &DiskIds) -> (Vec<u8>, Vec<u8>) {
        let mut a = io::Cursor::new(Vec::new());
        let mut b = io::Cursor::new(Vec::new());
        write_container(kind, &mut File::open(raw).expect("test setup"), &mut a, ids)
            .expect("test setup");
        write_container(kind, &mut File::open(raw).expect("test setup"), &mut b, ids)
            .expect("test setup");
        (a.into_inner(), b.into_inner())
    }

    #[test]
    fn two_writes_are_identical_and_ids_matter() {
        let dir = tempfile::tempdir().expect("test setup");
        let raw = sample_raw(dir.path(), 9 << 20);
        let ids = DiskIds::derive(1_700_000_000, b"one");
        let other = DiskIds::derive(1_700_000_000, b"two");
        for kind in DiskContainer::ALL {
            let (a, b) = twice(kind, &raw, &ids);
            assert!(!a.is_empty());
            assert!(a == b, "{kind:?}: two writes differ");
            if kind != DiskContainer::Qcow2 {
                let (c, _) = twice(kind, &raw, &other);
                assert!(a != c, "{kind:?}: the unique id is not recorded");
            }
        }
    }

    #[test]
    fn derived_ids_are_version_8_uuids() {
        let ids = DiskIds::derive(0, b"x");
        assert_eq!(ids.unique_id[6] >> 4, 8);
        assert_eq!(ids.unique_id[8] >> 6, 2);
        assert_eq!(ids, DiskIds::derive(0, b"x"));
        assert_ne!(ids.unique_id, DiskIds::derive(0, b"y").unique_id);
    }

    #[test]
    fn bad_sizes_are_refused() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("raw");
        let ids = DiskIds::new(0, [1; 16]);
        for (len, needle) in [(0, "empty"), (1000, "multiple of 512")] {
            let f = File::create(&path).expect("test setup");
            f.set_len(len).expect("test setup");
            for kind in DiskContainer::ALL {
                let err = write_container(
                    kind,
                    &mut File::open(&path).expect("test setup"),
                    &mut io::Cursor::new(Vec::new()),
                    &ids,
                )
                .expect_err("should fail");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
                assert!(err.to_string().contains(needle), "{err}");
            }
        }
        // Sparse files larger than VMDK's and VHD's limits (qcow2's 2 PiB exceeds what most
        // file systems allow a file).
        for kind in [
            DiskContainer::VhdFixed,
            DiskContainer::VhdDynamic,
            DiskContainer::Vmdk,
        ] {
            let f = File::create(&path).expect("test setup");
            if f.set_len(kind.max_size() + 512).is_err() {
                eprintln!("skipping the {kind:?} limit: the file system refuses the size");
                continue;
            }
            let err = write_container(
                kind,
                &mut File::open(&path).expect("test setup"),
                &mut io::Cursor::new(Vec::new()),
                &ids,
            )
            .expect_err("should fail");
            assert!(
                err.to_string().contains(&human(kind.max_size())),
                "{kind:?}: {err}"
            );
        }
    }

    #[test]
    fn units_cover_the_image_and_pad_the_last() {
        let data: Vec<u8> = noise(3, CHUNK + 3 * 512);
        let mut seen = Vec::new();
        for_each_unit(&mut &data[..], data.len() as u64, 65536, |i, unit| {
            assert_eq!(unit.len(), 65536);
            seen.push((i, unit.to_vec()));
            Ok(())
        })
        .expect("test setup");
        assert_eq!(seen.len(), CHUNK / 65536 + 1);
        let joined: Vec<u8> = seen.into_iter().flat_map(|(_, u)| u).collect();
        assert_eq!(&joined[..data.len()], &data[..]);
        assert!(is_zero(&joined[data.len()..]));
        let err =
            for_each_unit(&mut &data[..100], 512, 512, |_, _| Ok(())).expect_err("should fail");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn zero_detection() {
        let mut buf = vec![0u8; 65536];
        assert!(is_zero(&buf));
        buf[65535] = 1;
        assert!(!is_zero(&buf));
        buf[65535] = 0;
        buf[0] = 0x80;
        assert!(!is_zero(&buf));
    }
}
