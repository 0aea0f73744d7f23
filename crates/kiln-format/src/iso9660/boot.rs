//! El Torito (boot record, boot catalog, boot image patching) and the hybrid MBR.

use super::layout::{Plan, SECTOR, file_len};
use super::{FileSource, HybridMbr, IsoBuilder, IsoError, Kind};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Largest boot image patched in memory (GRUB's and isolinux's are far smaller).
const MAX_PATCHED: u64 = 32 << 20;
/// Where GRUB's El Torito image keeps the 512-byte LBA of the rest of its core.
const GRUB2_ELTORITO_PATCH: usize = 512 * 5 - 12;
/// Where GRUB's `boot_hybrid.img` keeps the 512-byte LBA of the sector it loads.
const GRUB2_MBR_PATCH: usize = 0x1b0;

/// Platform id of x86 BIOS in the boot catalog.
const PLATFORM_BIOS: u8 = 0;
/// Platform id of UEFI in the boot catalog.
const PLATFORM_EFI: u8 = 0xef;

/// Check the boot options against each other.
pub(crate) fn check(b: &IsoBuilder, bios_node: Option<usize>) -> Result<(), IsoError> {
    if let Some(h) = &b.hybrid {
        if h.boot_code.len() > 440 {
            return Err(IsoError::Hybrid(
                "the boot code is longer than 440 bytes: pass only the first 440 bytes",
            ));
        }
        if h.grub2_patch && bios_node.is_none() {
            return Err(IsoError::Hybrid(
                "the GRUB patch points at the BIOS boot image: set a BIOS boot entry",
            ));
        }
    }
    if let (Some(bios), Some(n)) = (&b.bios, bios_node) {
        let len = file_len(b, n);
        let need = if bios.grub2_boot_info {
            Some((GRUB2_ELTORITO_PATCH as u64 + 8, "at least 2556 bytes"))
        } else if bios.boot_info_table {
            Some((64, "at least 64 bytes"))
        } else {
            None
        };
        if let Some((min, what)) = need {
            if len < min {
                return Err(IsoError::BootImageSize {
                    path: bios.image.clone(),
                    len,
                    need: what,
                });
            }
            if len > MAX_PATCHED {
                return Err(IsoError::BootImageSize {
                    path: bios.image.clone(),
                    len,
                    need: "at most 32 MiB",
                });
            }
        }
    }
    Ok(())
}

/// The BIOS boot image with its patches applied, when it needs any: (node, bytes).
#[allow(clippy::cast_possible_truncation)] // patched images are at most 32 MiB (checked)
pub(crate) fn patched_bios_image(
    b: &IsoBuilder,
    plan: &Plan,
    node: usize,
) -> Result<Option<(usize, Vec<u8>)>, IsoError> {
    let Some(bios) = &b.bios else {
        return Ok(None);
    };
    if !bios.boot_info_table && !bios.grub2_boot_info {
        return Ok(None);
    }
    let Kind::File(src) = &b.nodes[node].kind else {
        return Ok(None);
    };
    let mut img = match src {
        FileSource::Bytes(bytes) => bytes.clone(),
        FileSource::Host { path, len } => {
            let mut buf = Vec::with_capacity(*len as usize);
            std::fs::File::open(path)
                .and_then(|f| f.take(*len).read_to_end(&mut buf))
                .map_err(|source| IsoError::Read {
                    path: path.clone(),
                    source,
                })?;
            if buf.len() as u64 != *len {
                return Err(IsoError::ShortFile {
                    path: path.clone(),
                    got: buf.len() as u64,
                    len: *len,
                });
            }
            buf
        }
        FileSource::Range { file, offset, len } => {
            let mut buf = vec![0u8; *len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*file.0, &mut buf, *offset).map_err(
                |source| IsoError::ReadRange {
                    offset: *offset,
                    len: *len,
                    source,
                },
            )?;
            buf
        }
    };
    let lba = plan.file_lba[&node];
    if bios.grub2_boot_info {
        let v = u64::from(lba) * 4 + 5;
        img[GRUB2_ELTORITO_PATCH..GRUB2_ELTORITO_PATCH + 8].copy_from_slice(&v.to_le_bytes());
    }
    if bios.boot_info_table {
        boot_info_table(&mut img, lba);
    }
    Ok(Some((node, img)))
}

/// Write the boot info table (offsets 8..64) into `img`, which sits at sector `lba`.
#[allow(clippy::cast_possible_truncation)] // patched images are at most 32 MiB (checked)
pub(crate) fn boot_info_table(img: &mut [u8], lba: u32) {
    let mut sum = 0u32;
    for chunk in img[64..].chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        sum = sum.wrapping_add(u32::from_le_bytes(w));
    }
    let len = img.len() as u32;
    img[8..12].copy_from_slice(&16u32.to_le_bytes());
    img[12..16].copy_from_slice(&lba.to_le_bytes());
    img[16..20].copy_from_slice(&len.to_le_bytes());
    img[20..24].copy_from_slice(&sum.to_le_bytes());
    img[24..64].fill(0);
}

/// The El Torito boot record volume descriptor.
#[allow(clippy::cast_possible_truncation)] // the sector size is a small constant
pub(crate) fn boot_record(plan: &Plan) -> Vec<u8> {
    let mut v = vec![0u8; SECTOR as usize];
    v[1..6].copy_from_slice(b"CD001");
    v[6] = 1;
    v[7..7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    v[71..75].copy_from_slice(&plan.catalog.unwrap_or(0).to_le_bytes());
    v
}

/// One 32-byte no-emulation boot entry.
fn entry(sectors: u16, lba: u32) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0] = 0x88; // bootable
    e[1] = 0; // no emulation
    e[6..8].copy_from_slice(&sectors.to_le_bytes());
    e[8..12].copy_from_slice(&lba.to_le_bytes());
    e
}

/// The boot catalog sector.
#[allow(clippy::cast_possible_truncation)] // the sector size is a small constant
pub(crate) fn catalog(b: &IsoBuilder, plan: &Plan) -> Vec<u8> {
    let mut c = vec![0u8; SECTOR as usize];
    let bios = plan
        .bios_node
        .zip(b.bios.as_ref())
        .map(|(n, bios)| entry(bios.load_sectors, plan.file_lba[&n]));
    let efi = plan.efi_node.map(|n| {
        // The whole FAT image, in 512-byte sectors; 0 (the rest of the medium) when too big.
        let sectors = file_len(b, n).div_ceil(2048) * 4;
        entry(u16::try_from(sectors).unwrap_or(0), plan.file_lba[&n])
    });
    // Validation entry.
    c[0] = 1;
    c[1] = if bios.is_some() {
        PLATFORM_BIOS
    } else {
        PLATFORM_EFI
    };
    c[30] = 0x55;
    c[31] = 0xaa;
    let sum = c[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    c[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    match (bios, efi) {
        (Some(bios), Some(efi)) => {
            c[32..64].copy_from_slice(&bios);
            // Final section header: one UEFI entry.
            c[64] = 0x91;
            c[65] = PLATFORM_EFI;
            c[66..68].copy_from_slice(&1u16.to_le_bytes());
            c[96..128].copy_from_slice(&efi);
        }
        (Some(e), None) | (None, Some(e)) => c[32..64].copy_from_slice(&e),
        (None, None) => {}
    }
    c
}

/// CHS address of 512-byte sector `lba` with 64 heads and 32 sectors per track, as isohybrid
/// writes it; past cylinder 1023 the maximum.
#[allow(clippy::cast_possible_truncation)] // CHS fields are bounded by the geometry
fn chs(lba: u64) -> [u8; 3] {
    let (heads, secs) = (64u64, 32u64);
    let c = lba / (heads * secs);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / secs) % heads;
    let s = lba % secs + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

fn partition(active: bool, kind: u8, start: u64, count: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = if active { 0x80 } else { 0 };
    p[1..4].copy_from_slice(&chs(start));
    p[4] = kind;
    p[5..8].copy_from_slice(&chs(start + count.max(1) - 1));
    let start32 = u32::try_from(start).unwrap_or(u32::MAX);
    let count32 = u32::try_from(count).unwrap_or(u32::MAX);
    p[8..12].copy_from_slice(&start32.to_le_bytes());
    p[12..16].copy_from_slice(&count32.to_le_bytes());
    p
}

/// The hybrid MBR (512 bytes).
pub(crate) fn mbr(b: &IsoBuilder, plan: &Plan, h: &HybridMbr) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..h.boot_code.len()].copy_from_slice(&h.boot_code);
    if h.grub2_patch
        && let Some(n) = plan.bios_node
    {
        let v = u64::from(plan.file_lba[&n]) * 4 + 4;
        m[GRUB2_MBR_PATCH..GRUB2_MBR_PATCH + 8].copy_from_slice(&v.to_le_bytes());
    }
    m[440..444].copy_from_slice(&disk_signature(b));
    let total = u64::from(plan.total) * 4;
    let esp = plan.efi_node.map(|n| {
        (
            u64::from(plan.file_lba[&n]) * 4,
            file_len(b, n).div_ceil(512),
        )
    });
    let iso_type = if esp.is_some() { 0x00 } else { 0x17 };
    m[446..462].copy_from_slice(&partition(true, iso_type, 0, total));
    if let Some((start, count)) = esp {
        m[462..478].copy_from_slice(&partition(false, 0xef, start, count));
    }
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// A disk signature derived from the volume id, time and tree (paths and lengths).
fn disk_signature(b: &IsoBuilder) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(b.volume_id.as_bytes());
    h.update(b.mtime.to_le_bytes());
    for n in &b.nodes {
        h.update(n.path.as_bytes());
        h.update([0]);
        if let Kind::File(s) = &n.kind {
            h.update(s.len().to_le_bytes());
        }
    }
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}
