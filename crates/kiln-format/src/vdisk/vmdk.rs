//! Stream-optimized VMDK (VMware "Virtual Disk Format 1.1", "Stream-Optimized Compressed
//! Sparse Extents").
//!
//! Why stream-optimized rather than monolithicSparse: it is the variant ESXi and vSphere import
//! (OVF/OVA), and the one the clouds' VMware importers (AWS VM Import, among others) ask for;
//! its grains are deflate-compressed, so the file is small to upload; and it is written in one
//! forward pass with the grain tables after their grains. qemu's vmdk driver reads it (and
//! `qemu-img check`s it); VirtualBox and VMware Workstation import it. Its limitation: qemu
//! refuses to overwrite a grain already in the file, so a guest that writes to the disk should
//! run it with `snapshot=on` or from a copy converted to another format.
//!
//! Layout:
//!
//! ```text
//! sector 0              header (grain directory offset: "at the end")
//! sector 1...           descriptor (text)
//! sector 128...         for each 32 MiB of the disk (one grain table's reach):
//!                           its non-zero grains, each a marker (LBA, length) and zlib data,
//!                           padded to a sector
//!                           a grain table marker and the grain table (if it maps any grain)
//!                       grain directory marker, grain directory
//!                       footer marker, footer (the header with the directory's offset)
//!                       end-of-stream marker
//! ```

use std::fmt::Write as _;
use std::io::{self, Read, Seek, SeekFrom, Write};

use flate2::Compression;
use flate2::write::ZlibEncoder;

use super::{DiskIds, SECTOR, for_each_unit, index_in, invalid, is_zero, too_large};

/// Sectors per grain (64 KiB grains, the usual size).
const GRAIN_SECTORS: u64 = 128;
const GRAIN_LEN: usize = 64 << 10;
const GRAIN: u64 = GRAIN_LEN as u64;
/// Entries per grain table: 512 grains, 32 MiB of disk.
const GT_LEN: usize = 512;
const GT_ENTRIES: u64 = GT_LEN as u64;
const GT_ENTRIES_U32: u32 = 512;
/// Sectors of one grain table (4-byte entries).
const GT_SECTORS: u64 = GT_ENTRIES * 4 / SECTOR;
/// The first grain's sector: header and descriptor before it, aligned to a grain.
const OVERHEAD: u64 = GRAIN_SECTORS;

/// Header flags: valid newline-detection bytes, compressed grains, markers.
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
/// Grain directory offset meaning "read it from the footer".
const GD_AT_END: u64 = u64::MAX;
const COMPRESS_DEFLATE: u16 = 1;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// qemu's limit for a sparse extent: 2^32 sectors, 2 TiB.
pub(super) const MAX_SIZE: u64 = (1 << 32) * SECTOR;

/// Write the `size`-byte raw image as a stream-optimized VMDK to `out`.
pub(super) fn write(
    raw: &mut impl Read,
    size: u64,
    out: &mut (impl Write + Seek),
    ids: &DiskIds,
) -> io::Result<()> {
    let capacity = size / SECTOR;
    let descriptor = descriptor(capacity, ids)?;
    let desc_sectors = (descriptor.len() as u64 + 1).div_ceil(SECTOR);
    if 1 + desc_sectors > OVERHEAD {
        return Err(invalid(format!(
            "the VMDK descriptor for extent name {:?} is too long; give a shorter file name",
            ids.file_name
        )));
    }
    let grains = size.div_ceil(GRAIN);
    let tables = grains.div_ceil(GT_ENTRIES);
    let mut gd =
        vec![0u32; usize::try_from(tables).map_err(|_| too_large("VMDK's grain directory"))?];
    let mut gt = vec![0u32; GT_LEN];
    let mut gt_used = false;

    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header(capacity, desc_sectors, GD_AT_END))?;
    let mut desc = descriptor.into_bytes();
    desc.resize(usize::try_from((OVERHEAD - 1) * SECTOR).unwrap_or(0), 0);
    out.write_all(&desc)?;
    let mut next = OVERHEAD;

    let mut compressed = Vec::with_capacity(GRAIN_LEN + 1024);
    for_each_unit(raw, size, GRAIN_LEN, |index, data| {
        if index % GT_ENTRIES == 0 && index > 0 {
            flush_gt(
                out,
                &mut next,
                &mut gd,
                index / GT_ENTRIES - 1,
                &mut gt,
                &mut gt_used,
            )?;
        }
        if is_zero(data) {
            return Ok(());
        }
        compressed.clear();
        compressed.extend_from_slice(&(index * GRAIN_SECTORS).to_le_bytes()); // LBA
        compressed.extend_from_slice(&[0u8; 4]); // length, below
        let mut encoder = ZlibEncoder::new(std::mem::take(&mut compressed), Compression::new(6));
        encoder.write_all(data)?;
        compressed = encoder.finish()?;
        let len =
            u32::try_from(compressed.len() - 12).map_err(|_| too_large("a grain's length"))?;
        compressed[8..12].copy_from_slice(&len.to_le_bytes());
        let padded = (compressed.len() as u64).div_ceil(SECTOR) * SECTOR;
        compressed.resize(usize::try_from(padded).unwrap_or(0), 0);
        gt[index_in(index, GT_LEN)] = sector32(next)?;
        gt_used = true;
        out.write_all(&compressed)?;
        next += padded / SECTOR;
        Ok(())
    })?;
    flush_gt(out, &mut next, &mut gd, tables - 1, &mut gt, &mut gt_used)?;

    // Grain directory.
    let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    let gd_sectors = (gd_bytes.len() as u64).div_ceil(SECTOR);
    out.write_all(&marker(gd_sectors, MARKER_GD))?;
    let gd_offset = next + 1;
    out.write_all(&gd_bytes)?;
    super::write_zeros(out, gd_sectors * SECTOR - gd_bytes.len() as u64)?;
    next = gd_offset + gd_sectors;
    sector32(next)?;

    // Footer and end of stream.
    out.write_all(&marker(1, MARKER_FOOTER))?;
    out.write_all(&header(capacity, desc_sectors, gd_offset))?;
    out.write_all(&marker(0, MARKER_EOS))?;
    out.flush()
}

/// Write the grain table `table` if it maps any grain, record it in the directory and clear it.
fn flush_gt(
    out: &mut impl Write,
    next: &mut u64,
    gd: &mut [u32],
    table: u64,
    gt: &mut [u32],
    used: &mut bool,
) -> io::Result<()> {
    if !*used {
        return Ok(());
    }
    out.write_all(&marker(GT_SECTORS, MARKER_GT))?;
    let at = *next + 1;
    gd[usize::try_from(table).map_err(|_| too_large("VMDK's grain directory"))?] = sector32(at)?;
    let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
    out.write_all(&bytes)?;
    *next = at + GT_SECTORS;
    gt.fill(0);
    *used = false;
    Ok(())
}

/// A sector number as grain tables and the directory store it (32 bits).
fn sector32(sector: u64) -> io::Result<u32> {
    u32::try_from(sector).map_err(|_| too_large("VMDK's 32-bit sector offsets (2 TiB of file)"))
}

/// A metadata marker sector: `sectors` of metadata of `kind` follow.
fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&sectors.to_le_bytes()); // numSectors
    // 8..12: size 0, which marks metadata rather than a grain.
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The sparse extent header (also the footer, with the directory's offset).
fn header(capacity: u64, desc_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV"); // magic
    h[4..8].copy_from_slice(&3u32.to_le_bytes()); // version 3: stream-optimized
    h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor offset
    h[36..44].copy_from_slice(&desc_sectors.to_le_bytes()); // descriptor size
    h[44..48].copy_from_slice(&GT_ENTRIES_U32.to_le_bytes()); // numGTEsPerGT
    h[48..56].copy_from_slice(&0u64.to_le_bytes()); // no redundant directory
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    h[72] = 0; // clean shutdown
    h[73..77].copy_from_slice(b"\n \r\n"); // newline-detection bytes
    h[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

/// The embedded descriptor.
fn descriptor(capacity: u64, ids: &DiskIds) -> io::Result<String> {
    let name = &ids.file_name;
    if name.is_empty()
        || name.len() > 255
        || !name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"')
    {
        return Err(invalid(format!(
            "VMDK extent name {name:?} must be 1 to 255 printable ASCII characters without '\"'"
        )));
    }
    let id = &ids.unique_id;
    let mut cid = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    if cid == u32::MAX {
        // ffffffff means "no parent"; keep the disk's own CID distinct from it.
        cid -= 1;
    }
    let hex = |bytes: &[u8]| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let spaced = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // IDE geometry: 16 heads, 63 sectors, at most 16383 cylinders.
    let cylinders = (capacity / (16 * 63)).clamp(1, 16383);
    Ok(format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"ide\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.longContentID = \"{long}\"\n\
         ddb.uuid = \"{uuid_a}-{uuid_b}\"\n\
         ddb.virtualHWVersion = \"4\"\n",
        long = hex(id),
        uuid_a = spaced(&id[..8]),
        uuid_b = spaced(&id[8..]),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        have_qemu_img, qemu_img, round_trip, sample_raw, virtual_size, write_to,
    };
    use super::super::{DiskContainer, DiskIds};
    use super::*;

    #[test]
    fn qemu_checks_and_reads_back() {
        if !have_qemu_img() {
            return;
        }
        let dir = tempfile::tempdir().expect("test setup");
        let ids = DiskIds::new(0, [0x42; 16]).with_file_name("kiln.vmdk");
        // Several grain tables, a partial last grain.
        let size = (100 << 20) + 9 * 512;
        let raw = sample_raw(dir.path(), size);
        let out = write_to(DiskContainer::Vmdk, &raw, dir.path(), &ids);
        let check = qemu_img(&["check", "-f", "vmdk", out.to_str().expect("test setup")]);
        assert!(check.contains("No errors were found"), "{check}");
        let info = qemu_img(&["info", "-f", "vmdk", out.to_str().expect("test setup")]);
        assert!(info.contains("create type: streamOptimized"), "{info}");
        assert!(info.contains("cid: 1111638594"), "{info}"); // 0x42424242
        assert_eq!(virtual_size(&out, "vmdk"), size);
        assert_eq!(round_trip(&out, "vmdk", &raw), size);
        let len = std::fs::metadata(&out).expect("test setup").len();
        assert!(len < 300 << 10, "vmdk of a sparse image is {len} bytes");
    }

    #[test]
    fn layout_ends_with_footer_and_end_of_stream() {
        let dir = tempfile::tempdir().expect("test setup");
        let raw = sample_raw(dir.path(), 8 << 20);
        let out = write_to(
            DiskContainer::Vmdk,
            &raw,
            dir.path(),
            &DiskIds::new(0, [1; 16]),
        );
        let bytes = std::fs::read(&out).expect("test setup");
        assert_eq!(bytes.len() % 512, 0);
        let end = bytes.len();
        assert_eq!(&bytes[end - 512..], &[0u8; 512][..]);
        assert_eq!(
            &bytes[end - 1536 + 12..end - 1536 + 16],
            &MARKER_FOOTER.to_le_bytes()
        );
        assert_eq!(&bytes[end - 1024..end - 1020], b"KDMV");
        assert_eq!(&bytes[..4], b"KDMV");
        assert_eq!(&bytes[56..64], &GD_AT_END.to_le_bytes());
        let text = String::from_utf8_lossy(&bytes[512..1024]);
        assert!(text.contains("RW 16384 SPARSE \"disk.vmdk\""), "{text}");
    }

    #[test]
    fn bad_extent_names_are_refused() {
        for name in ["", "a\"b", "new\nline"] {
            let ids = DiskIds::new(0, [0; 16]).with_file_name(name);
            let err = descriptor(1, &ids).expect_err("should fail");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
