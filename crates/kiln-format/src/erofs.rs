//! An EROFS writer: [`ErofsSink`] turns the entry stream into an uncompressed EROFS image
//! (4 KiB blocks) that Linux mounts read-only as a root larger than RAM.
//!
//! There is no compression: every file is `FLAT_PLAIN` (whole blocks) or `FLAT_INLINE` (whole
//! blocks, and a tail of at most 2 KiB stored right after the inode). The image is laid out
//! in three areas so that file data streams straight to the output:
//!
//! 1. block 0 (the superblock at byte 1024), then every file's whole blocks in stream order;
//! 2. the directory blocks and other blocks written by [`ErofsSink::finish`];
//! 3. the metadata area (`meta_blkaddr`): inodes (compact, 32 bytes, when the time equals
//!    the image's and the ids fit 16 bits; extended, 64 bytes, otherwise), their inline
//!    extended attributes and inline tails. The root directory is its first inode.
//!
//! File tails wait in a temporary file until `finish`; only metadata stays in memory. The
//! output is deterministic: directory entries sorted by name, inodes in a depth-first walk in
//! that order, the superblock's UUID derived from the image's content (a SHA-256 of all blocks
//! before the superblock is filled in).
//!
//! ```no_run
//! use kiln_format::erofs::ErofsSink;
//! use kiln_fs::{Entry, Sink};
//! let file = std::fs::File::create("root.erofs")?;
//! let mut sink = ErofsSink::new(file, 1_700_000_000)?;
//! sink.add(&Entry::dir("etc", 0o755, 0), &mut std::io::empty())?;
//! sink.add(&Entry::file("etc/hostname", 0o644, 5, 0), &mut &b"kiln\n"[..])?;
//! sink.finish()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::squashfs::tree::{Meta, NodeKind, Tree};
use kiln_fs::{Entry, Sink};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: u64 = 4096;
const BLOCK_BITS: u8 = 12;
const SUPER_OFFSET: u64 = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
/// Tails up to this size are stored inline, larger ones in a block of their own.
const INLINE_MAX: u64 = 2048;

const LAYOUT_PLAIN: u16 = 0;
const LAYOUT_INLINE: u16 = 2;

const S_IFREG: u16 = 0o100_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFLNK: u16 = 0o120_000;
const S_IFCHR: u16 = 0o020_000;
const S_IFBLK: u16 = 0o060_000;
const S_IFIFO: u16 = 0o010_000;

const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
const FT_CHR: u8 = 3;
const FT_BLK: u8 = 4;
const FT_FIFO: u8 = 5;
const FT_LNK: u8 = 7;

const DIRENT_SIZE: usize = 12;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Where a regular file's data lies.
#[derive(Debug)]
struct FileData {
    size: u64,
    /// The first of its blocks (whole blocks, and the padded tail when not inline).
    blkaddr: u32,
    /// The inline tail's offset in the spill file.
    inline: Option<u64>,
}

impl FileData {
    fn tail_len(&self) -> u64 {
        if self.inline.is_some() {
            self.size % BLOCK
        } else {
            0
        }
    }
}

/// A [`Sink`] that writes an EROFS image to `W`, from `W`'s position at creation.
pub struct ErofsSink<W: Write + Seek> {
    out: W,
    base: u64,
    /// The next free block.
    next_block: u64,
    mtime: u64,
    tree: Tree<FileData>,
    spill: File,
    spill_len: u64,
    hash: Sha256,
    buf: Vec<u8>,
}

/// The hash-and-count writer every image byte after the superblock block goes through.
fn emit(out: &mut impl Write, hash: &mut Sha256, bytes: &[u8]) -> io::Result<()> {
    hash.update(bytes);
    out.write_all(bytes)
}

impl<W: Write + Seek> ErofsSink<W> {
    /// A writer of an image built at `mtime` (seconds since the epoch, as
    /// `SOURCE_DATE_EPOCH`): the image's build time and the time of directories the stream
    /// does not name (the root, missing parents). File tails wait in an anonymous temporary
    /// file in the system's temporary directory.
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
    pub fn new(mut out: W, mtime: u64) -> io::Result<Self> {
        let base = out.stream_position()?;
        out.write_all(&[0u8; BLOCK as usize])?;
        Ok(ErofsSink {
            out,
            base,
            next_block: 1,
            mtime,
            tree: Tree::new(mtime),
            spill: tempfile::tempfile()?,
            spill_len: 0,
            hash: Sha256::new(),
            buf: vec![0; 32 * BLOCK as usize],
        })
    }

    fn blkaddr(&self, path: &str) -> io::Result<u32> {
        u32::try_from(self.next_block)
            .map_err(|_| invalid(format!("{path}: the image exceeds 16 TiB, the erofs limit")))
    }

    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
    fn write_file(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<FileData> {
        let full = e.size / BLOCK;
        let tail = e.size % BLOCK;
        let inline = tail > 0 && tail <= INLINE_MAX;
        let fd = FileData {
            size: e.size,
            blkaddr: if e.size == 0 {
                0
            } else {
                self.blkaddr(&e.path)?
            },
            inline: inline.then_some(self.spill_len),
        };
        let short = |err: io::Error| {
            io::Error::new(
                err.kind(),
                format!(
                    "{}: the data ended before its {} bytes: {err}",
                    e.path, e.size
                ),
            )
        };
        let mut left = full * BLOCK;
        while left > 0 {
            let n = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
            data.read_exact(&mut self.buf[..n]).map_err(short)?;
            emit(&mut self.out, &mut self.hash, &self.buf[..n])?;
            left -= n as u64;
        }
        self.next_block += full;
        if tail > 0 {
            let t = tail as usize;
            self.buf[..BLOCK as usize].fill(0);
            data.read_exact(&mut self.buf[..t]).map_err(short)?;
            if inline {
                self.spill.write_all(&self.buf[..t])?;
                self.spill_len += tail;
            } else {
                emit(&mut self.out, &mut self.hash, &self.buf[..BLOCK as usize])?;
                self.next_block += 1;
            }
        }
        Ok(fd)
    }

    /// Write the directories, the metadata and the superblock; returns the output, positioned
    /// after the image.
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
    pub fn finish(mut self) -> io::Result<W> {
        let tree = std::mem::replace(&mut self.tree, Tree::new(self.mtime));
        let order = tree.order();
        let links = tree.nlinks(&order);

        // What every inode needs: its directory blocks, its inline tail, its xattrs.
        let mut plans: Vec<Option<Plan>> = (0..tree.nodes.len()).map(|_| None).collect();
        for &n in &order {
            let node = &tree.nodes[n];
            let xattrs = xattr_body(&node.meta.xattrs)?;
            if node.meta.uid > u64::from(u32::MAX) || node.meta.gid > u64::from(u32::MAX) {
                return Err(invalid(format!(
                    "uid {} or gid {} does not fit erofs's 32 bits",
                    node.meta.uid, node.meta.gid
                )));
            }
            let compact = node.meta.mtime == self.mtime
                && node.meta.uid <= 0xffff
                && node.meta.gid <= 0xffff
                && links[n] <= 0xffff;
            let (size, tail) = match &node.kind {
                NodeKind::Dir(children) => {
                    let blocks = dir_blocks(children);
                    let last = blocks.last().map_or(0, |b| b.used as u64);
                    let size = (blocks.len() as u64 - 1) * BLOCK + last;
                    (size, if last <= INLINE_MAX { last } else { 0 })
                }
                NodeKind::File(f) => (f.size, f.tail_len()),
                NodeKind::Symlink(t) => {
                    let len = t.len() as u64;
                    (len, if len <= INLINE_MAX { len } else { 0 })
                }
                _ => (0, 0),
            };
            let compact = compact && size <= u64::from(u32::MAX);
            plans[n] = Some(Plan {
                isize: if compact { 32 } else { 64 },
                compact,
                xattrs,
                size,
                tail,
                blkaddr: 0,
                nid: 0,
            });
        }

        // The metadata area: inodes 32-byte aligned; an inode with its xattrs and inline tail
        // stays inside one block when it can.
        let mut off = 0u64;
        for &n in &order {
            let Some(p) = plans[n].as_mut() else { continue };
            let total = p.isize + p.xattrs.len() as u64 + p.tail;
            if total <= BLOCK && off % BLOCK + total > BLOCK {
                off = off.div_ceil(BLOCK) * BLOCK;
            }
            p.nid = off / 32;
            off = (off + total).div_ceil(32) * 32;
        }
        let meta_len = off;
        if plans[0].as_ref().map_or(0, |p| p.nid) != 0 {
            return Err(io::Error::other("the root inode is not the first"));
        }

        // Blocks for directories and symlinks not stored inline, after the file data.
        for &n in &order {
            let Some(p) = plans[n].as_mut() else { continue };
            match &tree.nodes[n].kind {
                NodeKind::Dir(_) | NodeKind::Symlink(_) => {
                    let blocks = (p.size - p.tail).div_ceil(BLOCK);
                    p.blkaddr = if blocks > 0 {
                        self.blkaddr("a directory")?
                    } else {
                        0
                    };
                    self.next_block += blocks;
                }
                NodeKind::File(f) => p.blkaddr = f.blkaddr,
                _ => {}
            }
        }
        let meta_blkaddr = self.blkaddr("the metadata")?;
        let nid_of = |n: usize| plans[n].as_ref().map_or(0, |p| p.nid);

        // Directory and symlink blocks.
        let parent = parents(&tree, &order);
        let mut dir_tails: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for &n in &order {
            let Some(p) = plans[n].as_ref() else { continue };
            match &tree.nodes[n].kind {
                NodeKind::Dir(children) => {
                    let blocks = dir_blocks(children);
                    let count = blocks.len();
                    for (i, b) in blocks.iter().enumerate() {
                        let bytes = b.encode(n, parent[n], &tree, &nid_of);
                        if i + 1 == count && p.tail > 0 {
                            dir_tails.insert(n, bytes[..b.used].to_vec());
                        } else {
                            emit(&mut self.out, &mut self.hash, &bytes)?;
                        }
                    }
                }
                NodeKind::Symlink(t) if p.tail == 0 => {
                    let mut block = vec![0u8; BLOCK as usize];
                    block[..t.len()].copy_from_slice(t.as_bytes());
                    emit(&mut self.out, &mut self.hash, &block)?;
                }
                _ => {}
            }
        }

        // The metadata area.
        self.spill.seek(SeekFrom::Start(0))?;
        let mut spill = io::BufReader::new(&mut self.spill);
        let mut meta = Vec::with_capacity(64 * 1024);
        let mut written = 0u64;
        let mut ino = 0u32;
        for &n in &order {
            let Some(p) = plans[n].as_ref() else { continue };
            let node = &tree.nodes[n];
            ino += 1;
            let start = p.nid * 32;
            meta.resize(meta.len() + (start - written) as usize, 0);
            written = start;
            let inode = encode_inode(p, node, links[n], ino);
            meta.extend_from_slice(&inode);
            meta.extend_from_slice(&p.xattrs);
            written += (inode.len() + p.xattrs.len()) as u64;
            if p.tail > 0 {
                match &node.kind {
                    NodeKind::Dir(_) => {
                        meta.extend_from_slice(dir_tails.get(&n).map_or(&[][..], |v| v))
                    }
                    NodeKind::Symlink(t) => meta.extend_from_slice(t.as_bytes()),
                    NodeKind::File(f) => {
                        let spill_off = f.inline.unwrap_or(0);
                        let mut tail = vec![0u8; p.tail as usize];
                        spill_at(&mut spill, spill_off, &mut tail)?;
                        meta.extend_from_slice(&tail);
                    }
                    _ => {}
                }
                written += p.tail;
            }
            if meta.len() >= 1 << 20 {
                emit(&mut self.out, &mut self.hash, &meta)?;
                meta.clear();
            }
        }
        drop(spill);
        let pad = (meta_len.div_ceil(BLOCK) * BLOCK - written) as usize;
        meta.resize(meta.len() + pad, 0);
        emit(&mut self.out, &mut self.hash, &meta)?;
        let blocks = u64::from(meta_blkaddr) + meta_len.div_ceil(BLOCK);
        let blocks = u32::try_from(blocks)
            .map_err(|_| invalid("the image exceeds 16 TiB, the erofs limit".into()))?;

        // The superblock, with a UUID derived from everything else.
        let digest = std::mem::take(&mut self.hash).finalize();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&digest[..16]);
        uuid[6] = (uuid[6] & 0x0f) | 0x50;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let mut sb = Vec::with_capacity(128);
        sb.extend_from_slice(&MAGIC.to_le_bytes());
        sb.extend_from_slice(&0u32.to_le_bytes()); // checksum (feature not set)
        sb.extend_from_slice(&0u32.to_le_bytes()); // feature_compat
        sb.push(BLOCK_BITS);
        sb.push(0); // sb_extslots
        sb.extend_from_slice(&(nid_of(0) as u16).to_le_bytes());
        sb.extend_from_slice(&(order.len() as u64).to_le_bytes());
        sb.extend_from_slice(&self.mtime.to_le_bytes());
        sb.extend_from_slice(&0u32.to_le_bytes()); // build_time_nsec
        sb.extend_from_slice(&blocks.to_le_bytes());
        sb.extend_from_slice(&meta_blkaddr.to_le_bytes());
        sb.extend_from_slice(&0u32.to_le_bytes()); // xattr_blkaddr (no shared xattrs)
        sb.extend_from_slice(&uuid);
        sb.extend_from_slice(&[0u8; 16]); // volume_name
        sb.extend_from_slice(&0u32.to_le_bytes()); // feature_incompat
        sb.resize(128, 0);
        let end = self.base + u64::from(blocks) * BLOCK;
        self.out.seek(SeekFrom::Start(self.base + SUPER_OFFSET))?;
        self.out.write_all(&sb)?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write + Seek> Sink for ErofsSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut tree = std::mem::replace(&mut self.tree, Tree::new(0));
        let r = tree.add(e, || self.write_file(e, data));
        self.tree = tree;
        r
    }
}

/// Read `buf.len()` bytes at `off` of the spill file, reading forward when it can (tails are
/// read back in nearly the order they were written).
fn spill_at(spill: &mut io::BufReader<&mut File>, off: u64, buf: &mut [u8]) -> io::Result<()> {
    let pos = spill.stream_position()?;
    if pos != off {
        spill.seek(SeekFrom::Start(off))?;
    }
    spill.read_exact(buf)
}

/// The layout of one inode.
struct Plan {
    isize: u64,
    compact: bool,
    xattrs: Vec<u8>,
    size: u64,
    /// Bytes stored inline after the inode and its xattrs.
    tail: u64,
    blkaddr: u32,
    nid: u64,
}

/// The directory holding each node (the root holds itself; directories have one name).
fn parents<D>(tree: &Tree<D>, order: &[usize]) -> Vec<usize> {
    let mut parent = vec![0; tree.nodes.len()];
    for &d in order {
        if let NodeKind::Dir(children) = &tree.nodes[d].kind {
            for &c in children.values() {
                parent[c] = d;
            }
        }
    }
    parent
}

/// One directory block: its entries (name, what) and the bytes used.
struct DirBlock<'a> {
    entries: Vec<(&'a str, Target)>,
    used: usize,
}

#[derive(Clone, Copy)]
enum Target {
    Dot,
    DotDot,
    Node(usize),
}

/// A directory's entries, `.` and `..` among them, sorted by name and cut into blocks.
#[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
fn dir_blocks(children: &BTreeMap<String, usize>) -> Vec<DirBlock<'_>> {
    let mut all: Vec<(&str, Target)> = children
        .iter()
        .map(|(k, &v)| (k.as_str(), Target::Node(v)))
        .collect();
    all.push((".", Target::Dot));
    all.push(("..", Target::DotDot));
    all.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut blocks = Vec::new();
    let mut cur = DirBlock {
        entries: Vec::new(),
        used: 0,
    };
    for (name, t) in all {
        let need = DIRENT_SIZE + name.len();
        if cur.used + need > BLOCK as usize {
            blocks.push(std::mem::replace(
                &mut cur,
                DirBlock {
                    entries: Vec::new(),
                    used: 0,
                },
            ));
        }
        cur.entries.push((name, t));
        cur.used += need;
    }
    blocks.push(cur);
    blocks
}

impl DirBlock<'_> {
    /// The block's bytes (a whole block, zero-padded).
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
    fn encode<D>(
        &self,
        dir: usize,
        parent: usize,
        tree: &Tree<D>,
        nid_of: &dyn Fn(usize) -> u64,
    ) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK as usize];
        let mut nameoff = DIRENT_SIZE * self.entries.len();
        for (i, (name, t)) in self.entries.iter().enumerate() {
            let node = match t {
                Target::Dot => dir,
                Target::DotDot => parent,
                Target::Node(n) => *n,
            };
            let ft = match &tree.nodes[node].kind {
                NodeKind::Dir(_) => FT_DIR,
                NodeKind::File(_) => FT_REG,
                NodeKind::Symlink(_) => FT_LNK,
                NodeKind::Char(..) => FT_CHR,
                NodeKind::Block(..) => FT_BLK,
                NodeKind::Fifo => FT_FIFO,
            };
            let d = &mut b[i * DIRENT_SIZE..(i + 1) * DIRENT_SIZE];
            d[..8].copy_from_slice(&nid_of(node).to_le_bytes());
            d[8..10].copy_from_slice(&(nameoff as u16).to_le_bytes());
            d[10] = ft;
            b[nameoff..nameoff + name.len()].copy_from_slice(name.as_bytes());
            nameoff += name.len();
        }
        b
    }
}

/// The inline extended attributes of an inode (header and entries), empty without any.
fn xattr_body(xattrs: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    if xattrs.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted = xattrs.to_vec();
    sorted.sort();
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut b = vec![0u8; 12];
    for (name, value) in &sorted {
        let (index, rest) = if name == "system.posix_acl_access" {
            (2u8, "")
        } else if name == "system.posix_acl_default" {
            (3, "")
        } else if let Some(r) = name.strip_prefix("user.") {
            (1, r)
        } else if let Some(r) = name.strip_prefix("trusted.") {
            (4, r)
        } else if let Some(r) = name.strip_prefix("security.") {
            (6, r)
        } else {
            return Err(invalid(format!(
                "extended attribute {name}: erofs stores only user., trusted., security. and \
                 POSIX ACL attributes"
            )));
        };
        let name_len = u8::try_from(rest.len())
            .map_err(|_| invalid(format!("extended attribute {name}: name too long")))?;
        let value_len = u16::try_from(value.len())
            .map_err(|_| invalid(format!("extended attribute {name}: value over 64 KiB")))?;
        b.push(name_len);
        b.push(index);
        b.extend_from_slice(&value_len.to_le_bytes());
        b.extend_from_slice(rest.as_bytes());
        b.extend_from_slice(value);
        b.resize(b.len().div_ceil(4) * 4, 0);
    }
    if b.len() > 12 + 4 * 0xfffe {
        return Err(invalid(
            "extended attributes of one file exceed what erofs stores inline".into(),
        ));
    }
    Ok(b)
}

/// Linux's encoding of a device number in 32 bits.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block size, compact fields checked before use
fn encode_inode(
    p: &Plan,
    node: &crate::squashfs::tree::Node<FileData>,
    nlink: u32,
    ino: u32,
) -> Vec<u8> {
    let Meta {
        perm,
        uid,
        gid,
        mtime,
        ..
    } = &node.meta;
    let (ifmt, iu) = match &node.kind {
        NodeKind::Dir(_) => (S_IFDIR, p.blkaddr),
        NodeKind::File(_) => (S_IFREG, p.blkaddr),
        NodeKind::Symlink(_) => (S_IFLNK, p.blkaddr),
        NodeKind::Char(ma, mi) => (S_IFCHR, encode_dev(*ma, *mi)),
        NodeKind::Block(ma, mi) => (S_IFBLK, encode_dev(*ma, *mi)),
        NodeKind::Fifo => (S_IFIFO, 0),
    };
    let perm = if matches!(node.kind, NodeKind::Symlink(_)) {
        0o777
    } else {
        *perm as u16 & 0o7777
    };
    let layout = if p.tail > 0 {
        LAYOUT_INLINE
    } else {
        LAYOUT_PLAIN
    };
    let icount: u16 = if p.xattrs.is_empty() {
        0
    } else {
        ((p.xattrs.len() - 12) / 4 + 1) as u16
    };
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(&((layout << 1) | u16::from(!p.compact)).to_le_bytes());
    b.extend_from_slice(&icount.to_le_bytes());
    b.extend_from_slice(&(ifmt | perm).to_le_bytes());
    if p.compact {
        b.extend_from_slice(&(nlink as u16).to_le_bytes());
        b.extend_from_slice(&(p.size as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&iu.to_le_bytes());
        b.extend_from_slice(&ino.to_le_bytes());
        b.extend_from_slice(&(*uid as u16).to_le_bytes());
        b.extend_from_slice(&(*gid as u16).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    } else {
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&p.size.to_le_bytes());
        b.extend_from_slice(&iu.to_le_bytes());
        b.extend_from_slice(&ino.to_le_bytes());
        b.extend_from_slice(&u32::try_from(*uid).unwrap_or(u32::MAX).to_le_bytes());
        b.extend_from_slice(&u32::try_from(*gid).unwrap_or(u32::MAX).to_le_bytes());
        b.extend_from_slice(&mtime.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&nlink.to_le_bytes());
        b.resize(64, 0);
    }
    b
}

#[cfg(test)]
mod tests;
