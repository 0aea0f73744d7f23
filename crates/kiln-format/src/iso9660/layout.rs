//! Where everything goes (the plan), and writing the image from the plan in one pass.

use super::records::{self, Record, Susp};
use super::{Attr, FileSource, IsoBuilder, IsoError, IsoSummary, Kind, RangeReader, boot};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

/// The ISO 9660 logical sector size.
pub const SECTOR: u64 = 2048;
const SECTOR_USIZE: usize = 2048;
/// Zero sectors after the last file (300 KiB, as xorriso pads): readers that read ahead in
/// large blocks (GRUB's disk cache reads 32 KiB, Linux reads ahead) must not hit the end of
/// a CD, where a BIOS may fail the whole read or return garbage.
const TAIL_PAD: u64 = 150;

/// Where the pieces of an image go, in 2048-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoLayout {
    /// Sectors in the image.
    pub sectors: u32,
    /// Each file's extent: path -> (first sector, length in bytes).
    pub files: BTreeMap<String, (u32, u64)>,
    /// The El Torito boot catalog's sector, when booting.
    pub catalog: Option<u32>,
}

impl IsoLayout {
    /// The image size in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.sectors) * SECTOR
    }
}

#[derive(Debug)]
pub(crate) struct RecPlan {
    /// The node the record describes.
    node: usize,
    dir: bool,
    fi: Vec<u8>,
    /// The recording time.
    secs: u64,
    susp: Susp,
    /// Where each continuation area is: (lba, offset).
    cont_at: Vec<(u32, u32)>,
}

#[derive(Debug)]
pub(crate) struct DirPlan {
    /// Path table number of the parent (1-based).
    parent_number: u16,
    /// The identifier in the path table (`[0]` for the root).
    id: Vec<u8>,
    pub(crate) lba: u32,
    sectors: u32,
    records: Vec<RecPlan>,
}

/// The plan of an image.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) dirs: Vec<DirPlan>,
    /// Directory plan index by node (dirs only).
    dir_of: BTreeMap<usize, usize>,
    /// First sector by node (files only).
    pub(crate) file_lba: BTreeMap<usize, u32>,
    /// Files with content, in data order.
    data_order: Vec<usize>,
    pub(crate) catalog: Option<u32>,
    path_table_size: u32,
    l_table: u32,
    m_table: u32,
    cont_lba: u32,
    cont: Vec<u8>,
    pad_lba: u32,
    pub(crate) total: u32,
    pub(crate) bios_node: Option<usize>,
    pub(crate) efi_node: Option<usize>,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFIFO: u32 = 0o010_000;

/// The attributes of `node`, defaults filled in.
fn attr(b: &IsoBuilder, node: usize) -> Attr {
    let n = &b.nodes[node];
    n.attr.unwrap_or(Attr {
        perm: match n.kind {
            Kind::Dir(_) => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => 0o644,
        },
        uid: 0,
        gid: 0,
        mtime: b.mtime,
        nlink: 1,
    })
}

/// The Rock Ridge entries of a record of `node`: `PX`, `TF`, `PN` for devices, then (with
/// `named`) `NM` and `SL` for symbolic links.
fn rr_entries(b: &IsoBuilder, node: usize, named: bool) -> Vec<Vec<u8>> {
    let n = &b.nodes[node];
    let a = attr(b, node);
    let (ftype, nlink) = match &n.kind {
        Kind::Dir(_) => (S_IFDIR, dir_nlink(b, node)),
        Kind::File(_) | Kind::Link(_) => (S_IFREG, a.nlink),
        Kind::Symlink(_) => (S_IFLNK, a.nlink),
        Kind::Device { block: true, .. } => (S_IFBLK, a.nlink),
        Kind::Device { block: false, .. } => (S_IFCHR, a.nlink),
        Kind::Fifo => (S_IFIFO, a.nlink),
    };
    let mut v = vec![
        records::px(ftype | (a.perm & 0o7777), nlink.max(1), a.uid, a.gid),
        records::tf(a.mtime),
    ];
    if let Kind::Device { major, minor, .. } = n.kind {
        v.push(records::pn(major, minor));
    }
    if named {
        v.extend(records::nm(&n.name));
        if let Kind::Symlink(t) = &n.kind {
            v.extend(records::sl(t));
        }
    }
    v
}

fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR)
}

impl Plan {
    #[allow(clippy::cast_possible_truncation)] // sector numbers are checked against u32::MAX before the plan is used
    pub(crate) fn new(b: &IsoBuilder) -> Result<Plan, IsoError> {
        let bios_node = match &b.bios {
            Some(bios) => {
                Some(
                    b.find_file(&bios.image)
                        .ok_or_else(|| IsoError::MissingBootImage {
                            entry: "bios",
                            path: bios.image.clone(),
                        })?,
                )
            }
            None => None,
        };
        let efi_node = match &b.efi {
            Some(efi) => {
                Some(
                    b.find_file(&efi.image)
                        .ok_or_else(|| IsoError::MissingBootImage {
                            entry: "efi",
                            path: efi.image.clone(),
                        })?,
                )
            }
            None => None,
        };
        boot::check(b, bios_node)?;
        let booting = bios_node.is_some() || efi_node.is_some();

        // Directories breadth first, children in ISO name order: the path table order.
        let mut dirs: Vec<DirPlan> = Vec::new();
        let mut dir_of = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([(0usize, 1u16, vec![0u8])]);
        while let Some((node, parent_number, id)) = queue.pop_front() {
            let Kind::Dir(children) = &b.nodes[node].kind else {
                continue;
            };
            let number = dirs.len() + 1;
            let number16 = u16::try_from(number).map_err(|_| IsoError::InvalidPath {
                path: b.nodes[node].path.clone(),
                reason: "an ISO 9660 image holds at most 65535 directories",
            })?;
            let mut taken = BTreeSet::new();
            let mut named: Vec<(Vec<u8>, usize, bool)> = children
                .iter()
                .map(|(name, &child)| {
                    let is_dir = matches!(b.nodes[child].kind, Kind::Dir(_));
                    let mut fi = records::iso_name(name, is_dir, &mut taken).into_bytes();
                    if !is_dir {
                        fi.extend_from_slice(b";1");
                    }
                    (fi, child, is_dir)
                })
                .collect();
            named.sort();
            let subdirs = named.iter().filter(|n| n.2).count() as u32;
            let parent = b.nodes[node].parent;
            let root = node == 0;
            debug_assert_eq!(2 + subdirs, dir_nlink(b, node));
            let mut dot = Vec::new();
            if root {
                dot.push(records::sp());
            }
            dot.extend(rr_entries(b, node, false));
            if root {
                dot.push(records::er());
            }
            let mut recs = vec![
                rec(node, true, vec![0], attr(b, node).mtime, dot),
                rec(
                    parent,
                    true,
                    vec![1],
                    attr(b, parent).mtime,
                    rr_entries(b, parent, false),
                ),
            ];
            for (fi, child, is_dir) in named {
                let entries = rr_entries(b, child, true);
                if is_dir {
                    queue.push_back((child, number16, fi.clone()));
                }
                recs.push(rec(child, is_dir, fi, attr(b, child).mtime, entries));
            }
            dir_of.insert(node, dirs.len());
            dirs.push(DirPlan {
                parent_number,
                id,
                lba: 0,
                sectors: 0,
                records: recs,
            });
        }

        // Fixed area: system area, descriptors, catalog, path tables.
        let mut next: u64 = 16;
        next += 1; // primary volume descriptor
        if booting {
            next += 1; // boot record
        }
        next += 1; // terminator
        let catalog = booting.then(|| {
            let c = next as u32;
            next += 1;
            c
        });
        let path_table_size: usize = dirs.iter().map(|d| 8 + d.id.len() + d.id.len() % 2).sum();
        let pt_sectors = sectors_for(path_table_size as u64);
        let l_table = next as u32;
        next += pt_sectors;
        let m_table = next as u32;
        next += pt_sectors;

        // Directories: records never cross a sector.
        for d in &mut dirs {
            d.lba = next as u32;
            let mut off = 0usize;
            let mut sectors = 1u64;
            for r in &d.records {
                let len = records::record_len(r.fi.len(), &r.susp);
                if off + len > SECTOR_USIZE {
                    sectors += 1;
                    off = 0;
                }
                off += len;
            }
            d.sectors = sectors as u32;
            next += sectors;
        }

        // Continuation areas: each within one sector, chained by `CE` entries.
        let cont_lba = next;
        let mut cont = Vec::new();
        let at_of = |at: usize| {
            (
                (cont_lba + (at / SECTOR_USIZE) as u64) as u32,
                (at % SECTOR_USIZE) as u32,
            )
        };
        for d in &mut dirs {
            for r in &mut d.records {
                let mut starts = Vec::with_capacity(r.susp.cont.len());
                let mut pos = cont.len();
                for i in 0..r.susp.cont.len() {
                    let len = r.susp.area_len(i);
                    let off = pos % SECTOR_USIZE;
                    if off + len > SECTOR_USIZE {
                        pos += SECTOR_USIZE - off;
                    }
                    starts.push(pos);
                    pos += len;
                }
                for (i, &at) in starts.iter().enumerate() {
                    cont.resize(at, 0);
                    cont.extend_from_slice(&r.susp.cont[i]);
                    if let Some(&next_at) = starts.get(i + 1) {
                        let (lba, off) = at_of(next_at);
                        cont.extend_from_slice(&records::ce(
                            lba,
                            off,
                            r.susp.area_len(i + 1) as u32,
                        ));
                    }
                }
                r.cont_at = starts.into_iter().map(at_of).collect();
            }
        }
        next += sectors_for(cont.len() as u64);

        // File contents: the boot images first, then the rest in directory order.
        let mut file_lba = BTreeMap::new();
        let mut data_order = Vec::new();
        let mut empty = BTreeSet::new();
        let boot_images = bios_node.into_iter().chain(efi_node);
        let others = dirs
            .iter()
            .flat_map(|d| d.records[2..].iter().map(|r| r.node));
        let mut links = Vec::new();
        for node in boot_images.chain(others) {
            if file_lba.contains_key(&node) || empty.contains(&node) {
                continue;
            }
            let src = match &b.nodes[node].kind {
                Kind::File(src) => src,
                Kind::Dir(_) => continue,
                Kind::Link(target) => {
                    links.push((node, *target));
                    continue;
                }
                Kind::Symlink(_) | Kind::Device { .. } | Kind::Fifo => {
                    empty.insert(node);
                    continue;
                }
            };
            if src.is_empty() {
                empty.insert(node);
                continue;
            }
            file_lba.insert(node, next as u32);
            data_order.push(node);
            next += sectors_for(src.len());
        }
        let pad_lba = next;
        for n in empty {
            file_lba.insert(n, pad_lba as u32);
        }
        for (link, target) in links {
            let lba = match file_lba.get(&target) {
                Some(&lba) => lba,
                None => {
                    return Err(IsoError::Unsupported {
                        path: b.nodes[link].path.clone(),
                        reason: "a hard link to a file that is not in the image".into(),
                    });
                }
            };
            file_lba.insert(link, lba);
        }
        next += TAIL_PAD;
        if next > u64::from(u32::MAX) {
            return Err(IsoError::TooLarge(next));
        }
        Ok(Plan {
            dirs,
            dir_of,
            file_lba,
            data_order,
            catalog,
            path_table_size: path_table_size as u32,
            l_table,
            m_table,
            cont_lba: cont_lba as u32,
            cont,
            pad_lba: pad_lba as u32,
            total: next as u32,
            bios_node,
            efi_node,
        })
    }

    /// The public view.
    pub(crate) fn public(&self, b: &IsoBuilder) -> IsoLayout {
        IsoLayout {
            sectors: self.total,
            files: self
                .file_lba
                .iter()
                .map(|(&n, &lba)| (b.nodes[n].path.clone(), (lba, file_len(b, n))))
                .collect(),
            catalog: self.catalog,
        }
    }

    /// The extent (lba, bytes) of the record's target.
    #[allow(clippy::cast_possible_truncation)] // directories are small, files under 4 GiB (checked by add_file)
    fn extent(&self, b: &IsoBuilder, r: &RecPlan) -> (u32, u32) {
        if r.dir {
            let d = &self.dirs[self.dir_of[&r.node]];
            (d.lba, d.sectors * SECTOR as u32)
        } else {
            (self.file_lba[&r.node], file_len(b, r.node) as u32)
        }
    }

    /// The root directory's record for the volume descriptor.
    #[allow(clippy::cast_possible_truncation)] // directories are small
    pub(crate) fn root_record(&self, b: &IsoBuilder) -> Vec<u8> {
        let root = &self.dirs[0];
        let mut out = Vec::new();
        Record {
            lba: root.lba,
            len: root.sectors * SECTOR as u32,
            secs: attr(b, 0).mtime,
            dir: true,
            fi: &[0],
            susp: &Susp::default(),
            cont_at: (0, 0),
        }
        .render(&mut out);
        out
    }

    #[allow(clippy::cast_possible_truncation)] // identifiers are at most 8 bytes
    fn path_table(&self, big_endian: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.path_table_size as usize);
        for d in &self.dirs {
            out.push(d.id.len() as u8);
            out.push(0);
            if big_endian {
                out.extend_from_slice(&d.lba.to_be_bytes());
                out.extend_from_slice(&d.parent_number.to_be_bytes());
            } else {
                out.extend_from_slice(&d.lba.to_le_bytes());
                out.extend_from_slice(&d.parent_number.to_le_bytes());
            }
            out.extend_from_slice(&d.id);
            if d.id.len() % 2 == 1 {
                out.push(0);
            }
        }
        out
    }

    #[allow(clippy::cast_possible_truncation)] // directories are small
    fn directory(&self, b: &IsoBuilder, d: &DirPlan) -> Vec<u8> {
        let mut out = Vec::with_capacity(d.sectors as usize * SECTOR_USIZE);
        for r in &d.records {
            let len = records::record_len(r.fi.len(), &r.susp);
            let off = out.len() % SECTOR_USIZE;
            if off + len > SECTOR_USIZE {
                out.resize(out.len() + SECTOR_USIZE - off, 0);
            }
            let (lba, bytes) = self.extent(b, r);
            Record {
                lba,
                len: bytes,
                secs: r.secs,
                dir: r.dir,
                fi: &r.fi,
                susp: &r.susp,
                cont_at: r.cont_at.first().copied().unwrap_or((0, 0)),
            }
            .render(&mut out);
        }
        out.resize(d.sectors as usize * SECTOR_USIZE, 0);
        out
    }

    /// The primary volume descriptor (ECMA-119 8.4).
    #[allow(clippy::cast_possible_truncation)] // the sector size is a small constant
    fn pvd(&self, b: &IsoBuilder) -> Vec<u8> {
        let mut v = vec![0u8; SECTOR_USIZE];
        v[0] = 1;
        v[1..6].copy_from_slice(b"CD001");
        v[6] = 1;
        put_str(&mut v[8..40], "LINUX");
        put_str(&mut v[40..72], &b.volume_id);
        v[80..88].copy_from_slice(&records::both32(self.total));
        v[120..124].copy_from_slice(&records::both16(1));
        v[124..128].copy_from_slice(&records::both16(1));
        v[128..132].copy_from_slice(&records::both16(SECTOR as u16));
        v[132..140].copy_from_slice(&records::both32(self.path_table_size));
        v[140..144].copy_from_slice(&self.l_table.to_le_bytes());
        v[148..152].copy_from_slice(&self.m_table.to_be_bytes());
        let root = self.root_record(b);
        v[156..156 + root.len()].copy_from_slice(&root);
        put_str(&mut v[190..318], "");
        put_str(&mut v[318..446], "");
        put_str(&mut v[446..574], "");
        put_str(&mut v[574..702], "KILN");
        put_str(&mut v[702..813], "");
        v[813..830].copy_from_slice(&records::date17(b.mtime));
        v[830..847].copy_from_slice(&records::date17(b.mtime));
        v[847..864].copy_from_slice(&records::date17_unset());
        v[864..881].copy_from_slice(&records::date17_unset());
        v[881] = 1;
        v
    }

    /// Write the image.
    #[allow(clippy::cast_possible_truncation)] // section sizes are small
    pub(crate) fn write<W: Write + ?Sized>(
        &self,
        b: &IsoBuilder,
        out: &mut W,
    ) -> Result<IsoSummary, IsoError> {
        let mut w = Counter { out, n: 0 };
        let bios_image = match self.bios_node {
            Some(n) => boot::patched_bios_image(b, self, n)?,
            None => None,
        };
        let mut system = vec![0u8; 16 * SECTOR_USIZE];
        if let Some(h) = &b.hybrid {
            let mbr = boot::mbr(b, self, h);
            system[..512].copy_from_slice(&mbr);
        }
        w.put(&system)?;
        w.put(&self.pvd(b))?;
        if self.catalog.is_some() {
            w.put(&boot::boot_record(self))?;
        }
        let mut term = vec![0u8; SECTOR_USIZE];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        term[6] = 1;
        w.put(&term)?;
        if self.catalog.is_some() {
            w.put(&boot::catalog(b, self))?;
        }
        for big in [false, true] {
            let mut t = self.path_table(big);
            t.resize(sectors_for(t.len() as u64) as usize * SECTOR_USIZE, 0);
            w.put(&t)?;
        }
        for d in &self.dirs {
            debug_assert_eq!(w.n, u64::from(d.lba) * SECTOR);
            w.put(&self.directory(b, d))?;
        }
        debug_assert_eq!(w.n, u64::from(self.cont_lba) * SECTOR);
        let mut cont = self.cont.clone();
        cont.resize(sectors_for(cont.len() as u64) as usize * SECTOR_USIZE, 0);
        w.put(&cont)?;
        for &n in &self.data_order {
            debug_assert_eq!(w.n, u64::from(self.file_lba[&n]) * SECTOR);
            let Kind::File(src) = &b.nodes[n].kind else {
                continue;
            };
            match (&bios_image, src) {
                (Some((bn, bytes)), _) if *bn == n => w.put(bytes)?,
                (_, FileSource::Bytes(bytes)) => w.put(bytes)?,
                (_, FileSource::Host { path, len }) => {
                    let f = std::fs::File::open(path).map_err(|source| IsoError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    let got = w.copy_from(f.take(*len)).map_err(|e| match e {
                        CopyError::Read(source) => IsoError::Read {
                            path: path.clone(),
                            source,
                        },
                        CopyError::Write(e) => IsoError::Write(e),
                    })?;
                    if got != *len {
                        return Err(IsoError::ShortFile {
                            path: path.clone(),
                            got,
                            len: *len,
                        });
                    }
                }
                (_, FileSource::Range { file, offset, len }) => {
                    let r = RangeReader {
                        file: &file.0,
                        pos: *offset,
                        end: offset.saturating_add(*len),
                    };
                    let err = |source| IsoError::ReadRange {
                        offset: *offset,
                        len: *len,
                        source,
                    };
                    let got = w.copy_from(r).map_err(|e| match e {
                        CopyError::Read(source) => err(source),
                        CopyError::Write(e) => IsoError::Write(e),
                    })?;
                    if got != *len {
                        return Err(err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the file ended after {got} bytes"),
                        )));
                    }
                }
            }
            w.pad()?;
        }
        debug_assert_eq!(w.n, u64::from(self.pad_lba) * SECTOR);
        for _ in 0..TAIL_PAD {
            w.put(&[0u8; SECTOR_USIZE])?;
        }
        debug_assert_eq!(w.n, u64::from(self.total) * SECTOR);
        Ok(IsoSummary { bytes: w.n })
    }
}

fn rec(node: usize, dir: bool, fi: Vec<u8>, secs: u64, entries: Vec<Vec<u8>>) -> RecPlan {
    let base = 33 + fi.len() + usize::from(fi.len().is_multiple_of(2));
    RecPlan {
        node,
        dir,
        secs,
        susp: records::split_susp(base, entries),
        fi,
        cont_at: Vec::new(),
    }
}

/// The link count of directory `node`: 2 plus its subdirectories.
#[allow(clippy::cast_possible_truncation)] // a directory has fewer than 2^32 entries
fn dir_nlink(b: &IsoBuilder, node: usize) -> u32 {
    match &b.nodes[node].kind {
        Kind::Dir(c) => {
            2 + c
                .values()
                .filter(|&&n| matches!(b.nodes[n].kind, Kind::Dir(_)))
                .count() as u32
        }
        _ => 1,
    }
}

pub(crate) fn file_len(b: &IsoBuilder, node: usize) -> u64 {
    match &b.nodes[node].kind {
        Kind::File(s) => s.len(),
        Kind::Link(target) => match &b.nodes[*target].kind {
            Kind::File(s) => s.len(),
            _ => 0,
        },
        _ => 0,
    }
}

/// `s` padded with spaces to the field.
fn put_str(field: &mut [u8], s: &str) {
    field.fill(b' ');
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// A writer that counts bytes.
struct Counter<'a, W: Write + ?Sized> {
    out: &'a mut W,
    n: u64,
}

impl<W: Write + ?Sized> Counter<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), IsoError> {
        self.out.write_all(bytes).map_err(IsoError::Write)?;
        self.n += bytes.len() as u64;
        Ok(())
    }

    /// Zeros up to the next sector boundary.
    #[allow(clippy::cast_possible_truncation)] // the remainder is below 2048
    fn pad(&mut self) -> Result<(), IsoError> {
        let rem = (self.n % SECTOR) as usize;
        if rem != 0 {
            self.put(&vec![0u8; SECTOR_USIZE - rem])?;
        }
        Ok(())
    }

    fn copy_from(&mut self, mut r: impl Read) -> Result<u64, CopyError> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            self.out.write_all(&buf[..n]).map_err(CopyError::Write)?;
            self.n += n as u64;
            total += n as u64;
        }
    }
}
