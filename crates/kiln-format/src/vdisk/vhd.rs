//! VHD, fixed and dynamic (Microsoft's "Virtual Hard Disk Image Format Specification").
//!
//! A fixed VHD is the raw data, padded to a whole MiB (Azure refuses other sizes), followed by
//! the 512-byte footer. A dynamic VHD is a copy of the footer, the dynamic disk header, the
//! block allocation table (BAT), the allocated 2 MiB blocks (each a one-sector bitmap, all
//! sectors marked present, then the data) and the footer.
//!
//! Size: the footer's "current size" is the disk's size, and the CHS geometry is computed from
//! it by the specification's algorithm. The geometry usually covers a little less than the
//! size, and readers differ on which one is the disk's size: Hyper-V, Azure and VirtualBox use
//! the current size, Virtual PC and qemu the geometry, except that qemu uses the current size
//! when the creator application is one it knows to write it exactly (`win `, `qem2`, `d2v `,
//! `tap\0`, `CTXS`; qemu's block/vpc.c). A kiln disk has its backup GPT in the last sectors, so
//! losing them to geometry rounding would break it; rounding the size up to a geometry-exact
//! one is not possible together with Azure's whole-MiB rule. The creator application is
//! therefore `qem2`, the value qemu itself writes with `force_size` (the way LinuxKit and
//! Azure's documentation make VHDs with qemu-img), meaning "the current size is exact": every
//! reader then sees the same size.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{DiskIds, SECTOR, for_each_unit, is_zero, too_large};

/// qemu's and Hyper-V's limit for VHD: 2040 GiB (0xff000000 sectors).
pub(super) const MAX_SIZE: u64 = 0xff00_0000 * SECTOR;

const MIB: u64 = 1 << 20;
/// Dynamic VHD block size: the specification's default, 2 MiB.
const BLOCK_LEN: usize = 2 << 20;
const BLOCK: u64 = BLOCK_LEN as u64;
const BLOCK_U32: u32 = 2 << 20;
/// The sector bitmap before each block: one bit per sector, padded to a sector.
const BITMAP_LEN: usize = (BLOCK_LEN / 512 / 8).div_ceil(512) * 512;
const BITMAP: u64 = BITMAP_LEN as u64;
/// BAT entry of a block with no data.
const UNALLOCATED: u32 = 0xffff_ffff;
/// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
const VHD_EPOCH: u64 = 946_684_800;
/// Footer offset of the dynamic header (after the footer copy), and of the BAT after it.
const DYNAMIC_HEADER_OFFSET: u64 = 512;
const BAT_OFFSET: u64 = DYNAMIC_HEADER_OFFSET + 1024;

const DISK_FIXED: u32 = 2;
const DISK_DYNAMIC: u32 = 3;

/// Write the `size`-byte raw image as a fixed VHD: data padded to a whole MiB, then the footer.
/// Zero chunks are skipped by seeking, so `out` keeps holes where the raw image has zeros.
pub(super) fn write_fixed(
    raw: &mut impl Read,
    size: u64,
    out: &mut (impl Write + Seek),
    ids: &DiskIds,
) -> io::Result<()> {
    let disk = size.div_ceil(MIB) * MIB;
    if disk > MAX_SIZE {
        return Err(too_large(
            "VHD's limit of 2040 GiB once rounded to a whole MiB",
        ));
    }
    let unit = 64 << 10;
    let mut pos = 0u64;
    out.seek(SeekFrom::Start(0))?;
    for_each_unit(raw, size, unit, |index, data| {
        let offset = index * unit as u64;
        let len = (size - offset).min(unit as u64);
        if is_zero(data) {
            return Ok(());
        }
        if pos != offset {
            out.seek(SeekFrom::Start(offset))?;
        }
        out.write_all(&data[..usize::try_from(len).unwrap_or(unit)])?;
        pos = offset + len;
        Ok(())
    })?;
    out.seek(SeekFrom::Start(disk))?;
    out.write_all(&footer(disk, DISK_FIXED, u64::MAX, ids)?)?;
    out.flush()
}

/// Write the `size`-byte raw image as a dynamic VHD with 2 MiB blocks.
pub(super) fn write_dynamic(
    raw: &mut impl Read,
    size: u64,
    out: &mut (impl Write + Seek),
    ids: &DiskIds,
) -> io::Result<()> {
    let blocks = size.div_ceil(BLOCK);
    let entries = u32::try_from(blocks).map_err(|_| too_large("VHD's block table"))?;
    let mut bat =
        vec![UNALLOCATED; usize::try_from(entries).map_err(|_| too_large("VHD's block table"))?];
    let bat_bytes = (u64::from(entries) * 4).div_ceil(SECTOR) * SECTOR;
    let footer = footer(size, DISK_DYNAMIC, DYNAMIC_HEADER_OFFSET, ids)?;

    out.seek(SeekFrom::Start(0))?;
    out.write_all(&footer)?;
    out.write_all(&dynamic_header(entries))?;
    // The BAT is written once the blocks are placed.
    out.seek(SeekFrom::Start(BAT_OFFSET + bat_bytes))?;
    let mut next = BAT_OFFSET + bat_bytes;
    let bitmap = [0xffu8; BITMAP_LEN];
    for_each_unit(raw, size, BLOCK_LEN, |index, data| {
        if is_zero(data) {
            return Ok(());
        }
        let sector =
            u32::try_from(next / SECTOR).map_err(|_| too_large("VHD's 32-bit block offsets"))?;
        bat[usize::try_from(index).map_err(|_| too_large("VHD's block table"))?] = sector;
        out.write_all(&bitmap)?;
        out.write_all(data)?;
        next += BITMAP + BLOCK;
        Ok(())
    })?;
    out.write_all(&footer)?;
    out.seek(SeekFrom::Start(BAT_OFFSET))?;
    let table: Vec<u8> = bat.iter().flat_map(|e| e.to_be_bytes()).collect();
    out.write_all(&table)?;
    out.seek(SeekFrom::Start(next + SECTOR))?;
    out.flush()
}

/// The 512-byte footer (specification, "Hard Disk Footer Format").
fn footer(size: u64, disk_type: u32, data_offset: u64, ids: &DiskIds) -> io::Result<[u8; 512]> {
    let (cylinders, heads, sectors) = geometry(size / SECTOR);
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix"); // cookie
    f[8..12].copy_from_slice(&2u32.to_be_bytes()); // features: reserved bit, always set
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // file format version 1.0
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    f[24..28].copy_from_slice(&vhd_time(ids.timestamp).to_be_bytes());
    // See the module documentation for why `qem2`.
    f[28..32].copy_from_slice(b"qem2"); // creator application
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // creator version
    f[36..40].copy_from_slice(b"Wi2k"); // creator host OS, as qemu writes it
    f[40..48].copy_from_slice(&size.to_be_bytes()); // original size
    f[48..56].copy_from_slice(&size.to_be_bytes()); // current size
    f[56..58].copy_from_slice(&cylinders.to_be_bytes());
    f[58] = heads;
    f[59] = sectors;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&ids.unique_id);
    // 84: saved state 0; the rest reserved, zero.
    let sum = checksum(&f);
    f[64..68].copy_from_slice(&sum.to_be_bytes());
    if size > MAX_SIZE {
        return Err(too_large("VHD's limit of 2040 GiB"));
    }
    Ok(f)
}

/// The 1024-byte dynamic disk header (specification, "Dynamic Disk Header Format").
fn dynamic_header(entries: u32) -> [u8; 1024] {
    let mut h = [0u8; 1024];
    h[0..8].copy_from_slice(b"cxsparse");
    // Data offset: unused, all ones (the specification says 0xFFFFFFFF; Microsoft's tools
    // write and expect all 64 bits set).
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&BAT_OFFSET.to_be_bytes()); // table offset
    h[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // header version
    h[28..32].copy_from_slice(&entries.to_be_bytes()); // max table entries
    h[32..36].copy_from_slice(&BLOCK_U32.to_be_bytes()); // block size
    // 40..: no parent (UUID, time stamp, name, locators all zero).
    let sum = checksum(&h);
    h[36..40].copy_from_slice(&sum.to_be_bytes());
    h
}

/// One's complement of the byte sum (the checksum field is zero while summing).
fn checksum(bytes: &[u8]) -> u32 {
    !bytes
        .iter()
        .fold(0u32, |sum, &b| sum.wrapping_add(u32::from(b)))
}

/// Seconds since 2000-01-01 UTC, clamped to what 32 bits hold.
fn vhd_time(unix: u64) -> u32 {
    u32::try_from(unix.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX)
}

/// CHS geometry for `total` sectors (specification, Appendix "CHS Calculation"): cylinders,
/// heads, sectors per track.
fn geometry(total: u64) -> (u16, u8, u8) {
    let total = total.min(65535 * 16 * 255);
    let (sectors, heads, cylinders_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cth = total / sectors;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cth = total / sectors;
        }
        if cth >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cth = total / sectors;
        }
        (sectors, heads, cth)
    };
    // All three fit their fields: cylinders <= 65535, heads <= 16, sectors <= 255.
    (
        u16::try_from(cylinders_times_heads / heads).unwrap_or(u16::MAX),
        u8::try_from(heads).unwrap_or(u8::MAX),
        u8::try_from(sectors).unwrap_or(u8::MAX),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        have_qemu_img, qemu_img, round_trip, sample_raw, virtual_size, write_to,
    };
    use super::super::{DiskContainer, DiskIds};
    use super::*;
    use std::fs::File;

    #[test]
    fn geometry_follows_the_specification() {
        // 1 GiB: 17 and 31 sectors per track give too many cylinders; 63 does.
        assert_eq!(geometry(2_097_152), (2080, 16, 63));
        // 10 MiB: 17 sectors, 4 heads.
        assert_eq!(geometry(20_480), (301, 4, 17));
        // Past 65535 x 16 x 63 sectors: 255 sectors per track, capped at 127 GiB.
        assert_eq!(geometry(65535 * 16 * 63), (16_191, 16, 255));
        assert_eq!(geometry(1 << 40), (65535, 16, 255));
    }

    #[test]
    fn geometry_matches_qemu() {
        if !have_qemu_img() {
            return;
        }
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("g.vhd");
        // Above 127 GiB qemu deviates from the specification (255 heads), so stay below it.
        for mib in [1u64, 3, 10, 31, 100, 257, 1000, 1024, 4097, 40_000, 120_000] {
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "vpc",
                path.to_str().expect("test setup"),
                &format!("{mib}M"),
            ]);
            let mut head = [0u8; 512];
            File::open(&path)
                .expect("test setup")
                .read_exact(&mut head)
                .expect("test setup");
            // qemu rounds the size up to a whole geometry, then records it as the current
            // size: the geometry of that size must be the one qemu recorded.
            let current = u64::from_be_bytes(head[48..56].try_into().expect("8 bytes"));
            let theirs = (u16::from_be_bytes([head[56], head[57]]), head[58], head[59]);
            assert!(current >= mib << 20);
            assert_eq!(geometry(current / 512), theirs, "{mib} MiB");
        }
    }

    #[test]
    fn footer_fields() {
        let ids = DiskIds::new(VHD_EPOCH + 1234, [7; 16]);
        let f = footer(3 << 20, DISK_FIXED, u64::MAX, &ids).expect("test setup");
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().expect("test setup")),
            1234
        );
        assert_eq!(&f[68..84], &[7; 16]);
        let mut zeroed = f;
        zeroed[64..68].fill(0);
        assert_eq!(
            u32::from_be_bytes(f[64..68].try_into().expect("test setup")),
            checksum(&zeroed)
        );
        assert_eq!(vhd_time(0), 0);
        assert_eq!(vhd_time(u64::MAX), u32::MAX);
    }

    fn check(kind: DiskContainer, size: u64, expected_virtual: u64) {
        let dir = tempfile::tempdir().expect("test setup");
        let ids = DiskIds::new(1_700_000_000, [3; 16]);
        let raw = sample_raw(dir.path(), size);
        let out = write_to(kind, &raw, dir.path(), &ids);
        assert_eq!(virtual_size(&out, "vpc"), expected_virtual, "{kind:?}");
        assert_eq!(round_trip(&out, "vpc", &raw), expected_virtual, "{kind:?}");
        let info = qemu_img(&["info", "-f", "vpc", out.to_str().expect("test setup")]);
        assert!(info.contains("file format: vpc"), "{info}");
    }

    #[test]
    fn fixed_reads_back_exactly() {
        if !have_qemu_img() {
            return;
        }
        // A whole MiB that is not a whole CHS geometry (qemu would lose sectors with `vpc `).
        let size = 67 << 20;
        let (c, h, spt) = geometry(size / 512);
        assert!(u64::from(c) * u64::from(h) * u64::from(spt) * 512 < size);
        check(DiskContainer::VhdFixed, size, size);
        // Not a whole MiB: padded with zeros to the next one.
        check(DiskContainer::VhdFixed, (20 << 20) + 7 * 512, 21 << 20);
    }

    #[test]
    fn fixed_layout() {
        let dir = tempfile::tempdir().expect("test setup");
        let raw = sample_raw(dir.path(), 5 << 20);
        let out = write_to(
            DiskContainer::VhdFixed,
            &raw,
            dir.path(),
            &DiskIds::new(0, [1; 16]),
        );
        let bytes = std::fs::read(&out).expect("test setup");
        assert_eq!(bytes.len() as u64, (5 << 20) + 512);
        assert_eq!(
            &bytes[..5 << 20],
            &std::fs::read(&raw).expect("test setup")[..]
        );
        assert_eq!(&bytes[5 << 20..(5 << 20) + 8], b"conectix");
        assert_eq!(
            u32::from_be_bytes(bytes[(5 << 20) + 60..][..4].try_into().expect("test setup")),
            2
        );
    }

    #[test]
    fn dynamic_reads_back_exactly() {
        if !have_qemu_img() {
            return;
        }
        // Not a whole block: the last block is partial.
        let size = (67 << 20) + 5 * 512;
        check(DiskContainer::VhdDynamic, size, size);
        let dir = tempfile::tempdir().expect("test setup");
        let raw = sample_raw(dir.path(), size);
        let out = write_to(
            DiskContainer::VhdDynamic,
            &raw,
            dir.path(),
            &DiskIds::new(0, [1; 16]),
        );
        let bytes = std::fs::read(&out).expect("test setup");
        // Footer copy, header, BAT (34 entries in one sector), the blocks holding the sample's
        // data (0 for the start and 1 MiB, 15 and 16 for the middle, 33 for the end) and the
        // footer.
        assert_eq!(&bytes[..512], &bytes[bytes.len() - 512..]);
        assert_eq!(bytes.len() as u64, 2048 + 4 * (BITMAP + BLOCK) + 512);
    }
}
