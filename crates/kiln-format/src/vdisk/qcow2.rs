//! qcow2 version 3 (qemu's docs/interop/qcow2.txt), 64 KiB clusters, 16-bit refcounts.
//!
//! Layout, written in one pass over the raw image:
//!
//! ```text
//! cluster 0            header (filled in last)
//! for each 512 MiB of the disk (one L2 table's reach):
//!     its non-zero data clusters, in guest order
//!     its L2 table (only if it maps any cluster)
//! L1 table
//! refcount table, then refcount blocks
//! ```
//!
//! Every cluster of the file is used exactly once, so every refcount is 1 and the refcount
//! blocks are written without a table in memory. Memory: one L2 table and the L1 table (8 bytes
//! per 512 MiB of disk).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{SECTOR, for_each_unit, index_in, is_zero, too_large};

const CLUSTER_BITS: u32 = 16;
const CLUSTER_LEN: usize = 1 << CLUSTER_BITS;
const CLUSTER: u64 = CLUSTER_LEN as u64;
/// 8-byte entries per L2 table (one cluster).
const L2_LEN: usize = CLUSTER_LEN / 8;
const L2_ENTRIES: u64 = L2_LEN as u64;
/// Refcount width: 2^4 = 16 bits.
const REFCOUNT_ORDER: u32 = 4;
/// 16-bit refcounts per refcount block (one cluster).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER * 8 / (1 << REFCOUNT_ORDER);
/// "Copied" flag of L1/L2 entries: the cluster's refcount is exactly 1.
const COPIED: u64 = 1 << 63;
/// qemu refuses L1 tables above 32 MiB (4 Mi entries): with 64 KiB clusters, 2 PiB of disk.
const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// Host offsets are 56 bits wide (bits 9-55 of an entry).
const MAX_OFFSET: u64 = 1 << 56;

/// The largest disk a qcow2 with 64 KiB clusters holds within qemu's L1 limit: 2 PiB.
pub(super) const MAX_SIZE: u64 = MAX_L1_ENTRIES * L2_ENTRIES * CLUSTER;

/// Version 3 header length without optional fields (qcow2.txt: at least 104 bytes).
const HEADER_LEN: usize = 104;
const HEADER_LEN_U32: u32 = 104;

/// Write the `size`-byte raw image read from `raw` as qcow2 to `out`.
pub(super) fn write(
    raw: &mut impl Read,
    size: u64,
    out: &mut (impl Write + Seek),
) -> io::Result<()> {
    debug_assert!(size > 0 && size.is_multiple_of(SECTOR) && size <= MAX_SIZE);
    let guest_clusters = size.div_ceil(CLUSTER);
    let l1_entries = guest_clusters.div_ceil(L2_ENTRIES);
    let l1_len = usize::try_from(l1_entries).map_err(|_| too_large("qcow2's L1 table limit"))?;
    let mut l1 = vec![0u64; l1_len];
    let mut l2 = vec![0u64; L2_LEN];
    let mut l2_used = false;

    // The header's cluster is reserved now and written once the tables are placed.
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&[0u8; CLUSTER_LEN])?;
    let mut next = CLUSTER;

    for_each_unit(raw, size, CLUSTER_LEN, |index, data| {
        if index % L2_ENTRIES == 0 && index > 0 {
            let table = index / L2_ENTRIES - 1;
            flush_l2(out, &mut next, &mut l1, table, &mut l2, &mut l2_used)?;
        }
        if is_zero(data) {
            return Ok(());
        }
        l2[index_in(index, L2_LEN)] = next | COPIED;
        l2_used = true;
        out.write_all(data)?;
        next = checked_next(next)?;
        Ok(())
    })?;
    flush_l2(
        out,
        &mut next,
        &mut l1,
        l1_entries - 1,
        &mut l2,
        &mut l2_used,
    )?;

    // L1 table, padded to whole clusters.
    let l1_offset = next;
    let l1_bytes = be64_table(&l1);
    out.write_all(&l1_bytes)?;
    let l1_clusters = (l1_bytes.len() as u64).div_ceil(CLUSTER);
    super::write_zeros(out, l1_clusters * CLUSTER - l1_bytes.len() as u64)?;
    next = l1_offset
        .checked_add(l1_clusters * CLUSTER)
        .filter(|&n| n < MAX_OFFSET)
        .ok_or_else(|| too_large("qcow2's 56-bit offsets"))?;

    // Refcount table and blocks: they must count themselves too.
    let used = next / CLUSTER;
    let (table_clusters, blocks) = refcount_layout(used);
    let total = used + table_clusters + blocks;
    if total
        .checked_mul(CLUSTER)
        .is_none_or(|end| end >= MAX_OFFSET)
    {
        return Err(too_large("qcow2's 56-bit offsets"));
    }
    let table_offset = next;
    let first_block = table_offset + table_clusters * CLUSTER;
    let mut table = Vec::with_capacity(usize::try_from(blocks).unwrap_or(0));
    for b in 0..blocks {
        table.push(first_block + b * CLUSTER);
    }
    let table_bytes = be64_table(&table);
    out.write_all(&table_bytes)?;
    super::write_zeros(out, table_clusters * CLUSTER - table_bytes.len() as u64)?;
    let mut block = vec![0u8; CLUSTER_LEN];
    for b in 0..blocks {
        let start = b * REFCOUNTS_PER_BLOCK;
        let counted = total.saturating_sub(start).min(REFCOUNTS_PER_BLOCK);
        block.fill(0);
        for entry in block
            .chunks_exact_mut(2)
            .take(usize::try_from(counted).unwrap_or(usize::MAX))
        {
            entry.copy_from_slice(&1u16.to_be_bytes());
        }
        out.write_all(&block)?;
    }

    let header = header(size, l1_entries, l1_offset, table_offset, table_clusters)?;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header)?;
    out.seek(SeekFrom::Start(total * CLUSTER))?;
    out.flush()
}

/// Write the L2 table `table` at `next` if it maps any cluster, point the L1 table at it and
/// clear it.
fn flush_l2(
    out: &mut impl Write,
    next: &mut u64,
    l1: &mut [u64],
    table: u64,
    l2: &mut [u64],
    used: &mut bool,
) -> io::Result<()> {
    if !*used {
        return Ok(());
    }
    let slot = usize::try_from(table).map_err(|_| too_large("qcow2's L1 table limit"))?;
    l1[slot] = *next | COPIED;
    out.write_all(&be64_table(l2))?;
    *next = checked_next(*next)?;
    l2.fill(0);
    *used = false;
    Ok(())
}

/// The offset after a cluster written at `next`, checked against qcow2's offset width.
fn checked_next(next: u64) -> io::Result<u64> {
    next.checked_add(CLUSTER)
        .filter(|&n| n < MAX_OFFSET)
        .ok_or_else(|| too_large("qcow2's 56-bit offsets"))
}

/// Clusters of refcount table and of refcount blocks needed when `used` clusters precede them.
fn refcount_layout(used: u64) -> (u64, u64) {
    let (mut table, mut blocks) = (1u64, 1u64);
    loop {
        let total = used + table + blocks;
        let need_blocks = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_table = (need_blocks * 8).div_ceil(CLUSTER);
        if need_blocks == blocks && need_table == table {
            return (table, blocks);
        }
        // Sizes only grow, so this reaches the fixed point.
        blocks = need_blocks.max(blocks);
        table = need_table.max(table);
    }
}

/// A table of big-endian 64-bit entries.
fn be64_table(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// The version 3 header (qcow2.txt, "Header").
fn header(
    size: u64,
    l1_entries: u64,
    l1_offset: u64,
    refcount_table_offset: u64,
    refcount_table_clusters: u64,
) -> io::Result<Vec<u8>> {
    let l1_size = u32::try_from(l1_entries).map_err(|_| too_large("qcow2's L1 table limit"))?;
    let table_clusters = u32::try_from(refcount_table_clusters)
        .map_err(|_| too_large("qcow2's refcount table limit"))?;
    let mut h = Vec::with_capacity(HEADER_LEN + 8);
    h.extend_from_slice(b"QFI\xfb"); // magic
    h.extend_from_slice(&3u32.to_be_bytes()); // version
    h.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
    h.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
    h.extend_from_slice(&CLUSTER_BITS.to_be_bytes()); // cluster_bits
    h.extend_from_slice(&size.to_be_bytes()); // size
    h.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
    h.extend_from_slice(&l1_size.to_be_bytes()); // l1_size
    h.extend_from_slice(&l1_offset.to_be_bytes()); // l1_table_offset
    h.extend_from_slice(&refcount_table_offset.to_be_bytes()); // refcount_table_offset
    h.extend_from_slice(&table_clusters.to_be_bytes()); // refcount_table_clusters
    h.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
    h.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
    h.extend_from_slice(&0u64.to_be_bytes()); // incompatible_features
    h.extend_from_slice(&0u64.to_be_bytes()); // compatible_features
    h.extend_from_slice(&0u64.to_be_bytes()); // autoclear_features
    h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes()); // refcount_order
    h.extend_from_slice(&HEADER_LEN_U32.to_be_bytes()); // header_length
    debug_assert_eq!(h.len(), HEADER_LEN);
    h.extend_from_slice(&[0u8; 8]); // end of header extensions
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        have_qemu_img, qemu_img, round_trip, sample_raw, virtual_size, write_to,
    };
    use super::super::{DiskContainer, DiskIds};
    use super::*;

    #[test]
    fn refcounts_count_themselves() {
        assert_eq!(refcount_layout(10), (1, 1));
        // 32766 used + table + block fill the first block exactly.
        assert_eq!(refcount_layout(REFCOUNTS_PER_BLOCK - 2), (1, 1));
        assert_eq!(refcount_layout(REFCOUNTS_PER_BLOCK - 1), (1, 2));
        // One table cluster addresses 8192 blocks.
        let (t, b) = refcount_layout(8192 * REFCOUNTS_PER_BLOCK);
        assert!(t * 8192 >= b && (8192 * REFCOUNTS_PER_BLOCK + t + b) <= b * REFCOUNTS_PER_BLOCK);
        assert_eq!(t, 2);
    }

    #[test]
    fn qemu_checks_and_reads_back() {
        if !have_qemu_img() {
            return;
        }
        let dir = tempfile::tempdir().expect("test setup");
        let ids = DiskIds::new(0, [9; 16]);
        // Over one L2 table's reach (512 MiB), not a whole number of clusters.
        let size = (530 << 20) + 3 * 512;
        let raw = sample_raw(dir.path(), size);
        let out = write_to(DiskContainer::Qcow2, &raw, dir.path(), &ids);
        let check = qemu_img(&["check", "-f", "qcow2", out.to_str().expect("test setup")]);
        assert!(check.contains("No errors were found"), "{check}");
        assert_eq!(virtual_size(&out, "qcow2"), size);
        assert_eq!(round_trip(&out, "qcow2", &raw), size);
        // Zero clusters stay unallocated: data is under 200 KiB.
        let len = std::fs::metadata(&out).expect("test setup").len();
        assert!(len < 1 << 20, "qcow2 of a sparse image is {len} bytes");
    }
}
