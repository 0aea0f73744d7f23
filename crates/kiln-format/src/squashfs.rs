//! A squashfs 4.0 writer: [`SquashfsSink`] turns the entry stream into a compressed read-only
//! image that Linux mounts as a root larger than RAM.
//!
//! File data is cut into blocks as it arrives, compressed on one thread per core and written
//! straight to the output in order; all-zero blocks become holes; the tail of each file (its
//! last partial block) is packed with other tails into fragment blocks, as mksquashfs does. Only metadata (the directory tree, the block sizes of each file)
//! stays in memory; the inode, directory, fragment, id and xattr tables are written by
//! [`SquashfsSink::finish`], followed by the superblock at the start.
//!
//! The output is deterministic: directory entries are sorted by name, inode numbers follow a
//! depth-first walk in that order, timestamps come from the entries, the image's time is the one
//! given (`SOURCE_DATE_EPOCH`). There is no data deduplication and no NFS export table.
//! Hard links share one inode; extended attributes in the `user.`, `trusted.` and `security.`
//! namespaces are kept.
//!
//! ```no_run
//! use kiln_format::squashfs::{SquashfsOptions, SquashfsSink};
//! use kiln_fs::{Entry, Sink};
//! let file = std::fs::File::create("root.squashfs")?;
//! let mut sink = SquashfsSink::new(file, 1_700_000_000, SquashfsOptions::default())?;
//! sink.add(&Entry::dir("etc", 0o755, 0), &mut std::io::empty())?;
//! sink.add(&Entry::file("etc/hostname", 0o644, 5, 0), &mut &b"kiln\n"[..])?;
//! sink.finish()?;
//! # Ok::<(), std::io::Error>(())
//! ```

#[cfg(test)]
pub(crate) mod testutil;
pub(crate) mod tree;

use kiln_fs::{Entry, Sink};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use tree::{Meta, NodeKind, Tree};

const MAGIC: u32 = 0x7371_7368;
const METADATA_SIZE: usize = 8192;
const METADATA_UNCOMPRESSED: u16 = 0x8000;
const DATA_UNCOMPRESSED: u32 = 1 << 24;
const INVALID: u64 = u64::MAX;
const INVALID_FRAG: u32 = u32::MAX;
const NO_XATTR: u32 = u32::MAX;
const FLAG_NO_XATTRS: u16 = 0x0200;

/// Basic inode types (the extended ones are these plus 7).
const T_DIR: u16 = 1;
const T_FILE: u16 = 2;
const T_SYMLINK: u16 = 3;
const T_BLOCK: u16 = 4;
const T_CHAR: u16 = 5;
const T_FIFO: u16 = 6;
const EXTENDED: u16 = 7;

/// How data and metadata blocks are compressed. Debian's kernel reads all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquashfsCompression {
    /// zstd at a level from 1 to 22 (mksquashfs uses 15).
    Zstd(i32),
    /// xz (LZMA2) at a preset from 0 to 9, with a dictionary of one block, as mksquashfs.
    Xz(u32),
    /// zlib ("gzip" to squashfs) at a level from 1 to 12 (libdeflate's scale).
    Gzip(i32),
}

impl SquashfsCompression {
    fn id(self) -> u16 {
        match self {
            SquashfsCompression::Gzip(_) => 1,
            SquashfsCompression::Xz(_) => 4,
            SquashfsCompression::Zstd(_) => 6,
        }
    }
}

/// Options of a [`SquashfsSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquashfsOptions {
    /// The compressor; zstd level 9 by default (as small as mksquashfs' default gzip, and
    /// several times faster).
    pub compression: SquashfsCompression,
    /// The data block size: a power of two from 4 KiB to 1 MiB; 128 KiB by default.
    pub block_size: u32,
    /// Compression threads; 0 (the default) for one per core. The image does not depend on
    /// it.
    pub threads: usize,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compression: SquashfsCompression::Zstd(9),
            block_size: 128 * 1024,
            threads: 0,
        }
    }
}

enum Codec {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Xz(u32, u32),
    Gzip(Box<libdeflater::Compressor>),
}

impl Codec {
    fn new(c: SquashfsCompression, block_size: u32) -> io::Result<Codec> {
        Ok(match c {
            SquashfsCompression::Zstd(level) => {
                Codec::Zstd(Box::new(zstd::bulk::Compressor::new(level)?))
            }
            SquashfsCompression::Xz(preset) => Codec::Xz(preset.min(9), block_size),
            SquashfsCompression::Gzip(level) => {
                let lvl = libdeflater::CompressionLvl::new(level).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("gzip level {level} is out of range; use 1 to 12"),
                    )
                })?;
                Codec::Gzip(Box::new(libdeflater::Compressor::new(lvl)))
            }
        })
    }

    /// `src` compressed, or `None` when that is not smaller.
    fn compress(&mut self, src: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let out = match self {
            Codec::Zstd(c) => c.compress(src)?,
            Codec::Gzip(c) => {
                let mut out = vec![0; c.zlib_compress_bound(src.len())];
                let n = c
                    .zlib_compress(src, &mut out)
                    .map_err(|e| io::Error::other(format!("zlib compression: {e:?}")))?;
                out.truncate(n);
                out
            }
            Codec::Xz(preset, dict) => {
                let mut opts =
                    liblzma::stream::LzmaOptions::new_preset(*preset).map_err(io::Error::other)?;
                opts.dict_size((*dict).max(8192));
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(&opts);
                let stream = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )
                .map_err(io::Error::other)?;
                let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
                enc.write_all(src)?;
                enc.finish()?
            }
        };
        Ok((out.len() < src.len()).then_some(out))
    }
}

/// A table written as a sequence of metadata blocks (8 KiB each before compression).
struct MetaWriter {
    data: Vec<u8>,
    cur: Vec<u8>,
    starts: Vec<u64>,
}

impl MetaWriter {
    fn new() -> Self {
        MetaWriter {
            data: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
            starts: Vec::new(),
        }
    }

    /// Where the next byte goes: the start of its block in the table and its offset there.
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
    fn pos(&self) -> (u64, u16) {
        (self.data.len() as u64, self.cur.len() as u16)
    }

    /// The position as a squashfs reference (block start << 16 | offset).
    fn reference(&self) -> u64 {
        let (block, offset) = self.pos();
        (block << 16) | u64::from(offset)
    }

    fn write(&mut self, codec: &mut Codec, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(METADATA_SIZE - self.cur.len());
            self.cur.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.cur.len() == METADATA_SIZE {
                self.flush(codec)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
    fn flush(&mut self, codec: &mut Codec) -> io::Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        self.starts.push(self.data.len() as u64);
        match codec.compress(&self.cur)? {
            Some(c) => {
                self.data.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.data.extend_from_slice(&c);
            }
            None => {
                let len = self.cur.len() as u16 | METADATA_UNCOMPRESSED;
                self.data.extend_from_slice(&len.to_le_bytes());
                self.data.extend_from_slice(&self.cur);
            }
        }
        self.cur.clear();
        Ok(())
    }

    fn finish(mut self, codec: &mut Codec) -> io::Result<(Vec<u8>, Vec<u64>)> {
        self.flush(codec)?;
        Ok((self.data, self.starts))
    }
}

/// Where a regular file's data lies: blocks of the sequence [`Pipeline`] numbers, resolved
/// to positions and stored sizes by [`SquashfsSink::finish`].
#[derive(Debug)]
struct FileData {
    size: u64,
    /// The sequence number of the first whole block and the number of whole blocks.
    first: u64,
    count: u64,
    /// The fragment holding the tail and the tail's offset in it.
    fragment: Option<(u32, u32)>,
    sparse: u64,
}

/// What became of one block of the sequence.
enum Done {
    Compressed(Vec<u8>),
    Raw(Vec<u8>),
    Hole,
}

type Job = (u64, Vec<u8>);
type Finished = (u64, io::Result<Done>);

/// Compresses blocks on worker threads and writes them in sequence order, recording where each
/// went. At most a few blocks per worker are in flight, so memory stays bounded.
struct Pipeline {
    jobs: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<Finished>,
    workers: Vec<thread::JoinHandle<()>>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    pending: BTreeMap<u64, Done>,
    /// Position (relative to the image start) and stored size field of each written block.
    written: Vec<(u64, u32)>,
}

impl Pipeline {
    fn new(opts: SquashfsOptions) -> io::Result<Pipeline> {
        let threads = if opts.threads == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, results) = mpsc::channel::<Finished>();
        let mut workers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let mut codec = Codec::new(opts.compression, opts.block_size)?;
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            workers.push(thread::spawn(move || {
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    let done = codec.compress(&data).map(|c| match c {
                        Some(c) => Done::Compressed(c),
                        None => Done::Raw(data),
                    });
                    if tx.send((seq, done)).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(Pipeline {
            jobs: Some(jobs),
            results,
            workers,
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: threads * 4,
            pending: BTreeMap::new(),
            written: Vec::new(),
        })
    }

    /// Queue `data` (or record a hole, written as nothing); returns its sequence number.
    fn submit(
        &mut self,
        out: &mut dyn Write,
        pos: &mut u64,
        data: Vec<u8>,
        hole: bool,
    ) -> io::Result<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if hole {
            self.pending.insert(seq, Done::Hole);
        } else {
            while self.in_flight >= self.max_in_flight {
                self.receive(out, pos)?;
            }
            let jobs = self
                .jobs
                .as_ref()
                .ok_or_else(|| io::Error::other("the compression pipeline is closed"))?;
            jobs.send((seq, data))
                .map_err(|_| io::Error::other("a compression thread stopped"))?;
            self.in_flight += 1;
        }
        self.write_ready(out, pos).map(|()| seq)
    }

    /// Wait for one result.
    fn receive(&mut self, out: &mut dyn Write, pos: &mut u64) -> io::Result<()> {
        let (seq, done) = self
            .results
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(seq, done?);
        self.write_ready(out, pos)
    }

    /// Write the blocks whose turn it is.
    #[allow(clippy::cast_possible_truncation)] // blocks are at most 1 MiB
    fn write_ready(&mut self, out: &mut dyn Write, pos: &mut u64) -> io::Result<()> {
        while let Some(done) = self.pending.remove(&self.next_write) {
            let field = match done {
                Done::Compressed(c) => {
                    out.write_all(&c)?;
                    c.len() as u32
                }
                Done::Raw(d) => {
                    out.write_all(&d)?;
                    d.len() as u32 | DATA_UNCOMPRESSED
                }
                Done::Hole => 0,
            };
            self.written.push((*pos, field));
            *pos += u64::from(field & !DATA_UNCOMPRESSED);
            self.next_write += 1;
        }
        Ok(())
    }

    /// Wait for every queued block and stop the workers.
    fn drain(&mut self, out: &mut dyn Write, pos: &mut u64) -> io::Result<()> {
        while self.in_flight > 0 {
            self.receive(out, pos)?;
        }
        self.write_ready(out, pos)?;
        self.stop();
        Ok(())
    }

    fn stop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.jobs = None;
        // Unblock workers waiting to send, then let them see the closed job channel.
        while self.results.try_recv().is_ok() {}
        self.stop();
    }
}

/// A [`Sink`] that writes a squashfs image to `W`, from `W`'s position at creation.
pub struct SquashfsSink<W: Write + Seek> {
    out: W,
    base: u64,
    /// Bytes written after the superblock's place, relative to `base`.
    pos: u64,
    opts: SquashfsOptions,
    mtime: u64,
    codec: Codec,
    pipeline: Pipeline,
    tree: Tree<FileData>,
    frag: Vec<u8>,
    /// The sequence number of each fragment block.
    fragments: Vec<u64>,
}

fn other(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<W: Write + Seek> SquashfsSink<W> {
    /// A writer of an image built at `mtime` (seconds since the epoch, as
    /// `SOURCE_DATE_EPOCH`): the time of the image and of directories the stream does not
    /// name (the root, missing parents).
    pub fn new(mut out: W, mtime: u64, opts: SquashfsOptions) -> io::Result<Self> {
        if !(4096..=1 << 20).contains(&opts.block_size) || !opts.block_size.is_power_of_two() {
            return Err(other(format!(
                "squashfs block size {} is invalid; use a power of two from 4096 to 1048576",
                opts.block_size
            )));
        }
        let base = out.stream_position()?;
        out.write_all(&[0u8; 96])?;
        Ok(SquashfsSink {
            out,
            base,
            pos: 96,
            codec: Codec::new(opts.compression, opts.block_size)?,
            pipeline: Pipeline::new(opts)?,
            opts,
            mtime,
            tree: Tree::new(mtime),
            frag: Vec::new(),
            fragments: Vec::new(),
        })
    }

    fn flush_fragment(&mut self) -> io::Result<()> {
        if self.frag.is_empty() {
            return Ok(());
        }
        if u32::try_from(self.fragments.len()).is_err() {
            return Err(other(
                "more than 2^32 fragment blocks do not fit a squashfs image".into(),
            ));
        }
        let frag = std::mem::take(&mut self.frag);
        let seq = self
            .pipeline
            .submit(&mut self.out, &mut self.pos, frag, false)?;
        self.fragments.push(seq);
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation)] // offsets in a fragment are below the block size
    fn write_file(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<FileData> {
        let bs = self.opts.block_size as usize;
        let mut fd = FileData {
            size: e.size,
            first: self.pipeline.next_seq,
            count: 0,
            fragment: None,
            sparse: 0,
        };
        let mut left = e.size;
        while left > 0 {
            let n = usize::try_from(left.min(bs as u64)).unwrap_or(bs);
            let mut buf = vec![0u8; n];
            data.read_exact(&mut buf).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!(
                        "{}: the data ended before its {} bytes: {err}",
                        e.path, e.size
                    ),
                )
            })?;
            left -= n as u64;
            if n == bs {
                let hole = buf.iter().all(|&b| b == 0);
                if hole {
                    fd.sparse += bs as u64;
                }
                let seq = self
                    .pipeline
                    .submit(&mut self.out, &mut self.pos, buf, hole)?;
                if fd.count == 0 {
                    fd.first = seq;
                }
                fd.count += 1;
            } else {
                if self.frag.len() + n > bs {
                    self.flush_fragment()?;
                }
                fd.fragment = Some((self.fragments.len() as u32, self.frag.len() as u32));
                if self.frag.capacity() < bs {
                    self.frag.reserve_exact(bs - self.frag.len());
                }
                self.frag.extend_from_slice(&buf);
            }
        }
        Ok(fd)
    }

    /// Write the tables and the superblock; returns the output, positioned after the image
    /// (padded to a multiple of 4 KiB).
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_fragment()?;
        self.pipeline.drain(&mut self.out, &mut self.pos)?;
        let written = std::mem::take(&mut self.pipeline.written);
        let tree = std::mem::replace(&mut self.tree, Tree::new(self.mtime));
        let order = tree.order();
        let links = tree.nlinks(&order);
        let mut ino = vec![0u32; tree.nodes.len()];
        for (i, &n) in order.iter().enumerate() {
            ino[n] = u32::try_from(i + 1)
                .map_err(|_| other("more than 2^32 inodes do not fit a squashfs image".into()))?;
        }
        let inode_count = order.len() as u32;
        let mut parent = vec![inode_count + 1; tree.nodes.len()];
        for &n in &order {
            if let NodeKind::Dir(children) = &tree.nodes[n].kind {
                for &c in children.values() {
                    parent[c] = ino[n];
                }
            }
        }

        let mut ids = Ids::default();
        let mut xattrs = Xattrs::default();
        let mut inodes = MetaWriter::new();
        let mut dirs = MetaWriter::new();
        let mut refs: Vec<Option<u64>> = vec![None; tree.nodes.len()];
        let mut root_ref = 0;
        // Directories after all their descendants: the reverse of the depth-first order.
        for &d in order.iter().rev() {
            let NodeKind::Dir(children) = &tree.nodes[d].kind else {
                continue;
            };
            for &c in children.values() {
                if refs[c].is_none() {
                    let r = write_inode(
                        &mut inodes,
                        &mut self.codec,
                        &tree.nodes[c].meta,
                        &tree.nodes[c].kind,
                        ino[c],
                        links[c],
                        &mut ids,
                        &mut xattrs,
                        &written,
                        None,
                    )?;
                    refs[c] = Some(r);
                }
            }
            let listing_ref = dirs.pos();
            let mut listing = Vec::new();
            write_listing(&mut listing, children, &tree, &refs, &ino);
            dirs.write(&mut self.codec, &listing)?;
            let r = write_inode(
                &mut inodes,
                &mut self.codec,
                &tree.nodes[d].meta,
                &tree.nodes[d].kind,
                ino[d],
                links[d],
                &mut ids,
                &mut xattrs,
                &written,
                Some(DirInfo {
                    start: listing_ref.0,
                    offset: listing_ref.1,
                    size: listing.len() as u64 + 3,
                    parent: parent[d],
                }),
            )?;
            refs[d] = Some(r);
            if d == 0 {
                root_ref = r;
            }
        }

        let (inode_table, _) = inodes.finish(&mut self.codec)?;
        let (dir_table, _) = dirs.finish(&mut self.codec)?;
        let inode_table_start = self.pos;
        self.out.write_all(&inode_table)?;
        self.pos += inode_table.len() as u64;
        let directory_table_start = self.pos;
        self.out.write_all(&dir_table)?;
        self.pos += dir_table.len() as u64;

        let mut frag_entries = Vec::with_capacity(self.fragments.len() * 16);
        for &seq in &self.fragments {
            let (start, size) = written[seq as usize];
            frag_entries.extend_from_slice(&start.to_le_bytes());
            frag_entries.extend_from_slice(&size.to_le_bytes());
            frag_entries.extend_from_slice(&0u32.to_le_bytes());
        }
        let fragment_table_start = self.write_indexed_table(&frag_entries, &[])?;

        let mut id_entries = Vec::with_capacity(ids.list.len() * 4);
        for id in &ids.list {
            id_entries.extend_from_slice(&id.to_le_bytes());
        }
        let id_table_start = self.write_indexed_table(&id_entries, &[])?;

        let xattr_id_table_start = if xattrs.sets.is_empty() {
            INVALID
        } else {
            let xattr_table_start = self.pos;
            let (kv, _) = xattrs.kv.finish(&mut self.codec)?;
            self.out.write_all(&kv)?;
            self.pos += kv.len() as u64;
            let mut header = Vec::with_capacity(16);
            header.extend_from_slice(&xattr_table_start.to_le_bytes());
            header.extend_from_slice(&(xattrs.ids.len() as u32 / 16).to_le_bytes());
            header.extend_from_slice(&0u32.to_le_bytes());
            let ids_bytes = std::mem::take(&mut xattrs.ids);
            self.write_indexed_table(&ids_bytes, &header)?
        };

        let bytes_used = self.pos;
        let pad = (4096 - bytes_used % 4096) % 4096;
        self.out.write_all(&vec![0u8; pad as usize])?;

        let mut sb = Vec::with_capacity(96);
        sb.extend_from_slice(&MAGIC.to_le_bytes());
        sb.extend_from_slice(&inode_count.to_le_bytes());
        sb.extend_from_slice(&clamp32(self.mtime).to_le_bytes());
        sb.extend_from_slice(&self.opts.block_size.to_le_bytes());
        sb.extend_from_slice(&(self.fragments.len() as u32).to_le_bytes());
        sb.extend_from_slice(&self.opts.compression.id().to_le_bytes());
        sb.extend_from_slice(&(self.opts.block_size.trailing_zeros() as u16).to_le_bytes());
        let flags = if xattr_id_table_start == INVALID {
            FLAG_NO_XATTRS
        } else {
            0
        };
        sb.extend_from_slice(&flags.to_le_bytes());
        sb.extend_from_slice(&(ids.list.len() as u16).to_le_bytes());
        sb.extend_from_slice(&4u16.to_le_bytes());
        sb.extend_from_slice(&0u16.to_le_bytes());
        sb.extend_from_slice(&root_ref.to_le_bytes());
        sb.extend_from_slice(&bytes_used.to_le_bytes());
        sb.extend_from_slice(&id_table_start.to_le_bytes());
        sb.extend_from_slice(&xattr_id_table_start.to_le_bytes());
        sb.extend_from_slice(&inode_table_start.to_le_bytes());
        sb.extend_from_slice(&directory_table_start.to_le_bytes());
        sb.extend_from_slice(&fragment_table_start.to_le_bytes());
        sb.extend_from_slice(&INVALID.to_le_bytes());
        debug_assert_eq!(sb.len(), 96);
        let end = self.base + bytes_used + pad;
        self.out.seek(SeekFrom::Start(self.base))?;
        self.out.write_all(&sb)?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Write `entries` as metadata blocks, then `header` and the index of those blocks (their
    /// positions in the image); returns where the header (or, without one, the index) starts.
    fn write_indexed_table(&mut self, entries: &[u8], header: &[u8]) -> io::Result<u64> {
        let mut table = MetaWriter::new();
        table.write(&mut self.codec, entries)?;
        let (data, starts) = table.finish(&mut self.codec)?;
        let table_start = self.pos;
        self.out.write_all(&data)?;
        self.pos += data.len() as u64;
        let index_start = self.pos;
        self.out.write_all(header)?;
        for s in &starts {
            self.out.write_all(&(table_start + s).to_le_bytes())?;
        }
        self.pos += header.len() as u64 + 8 * starts.len() as u64;
        Ok(index_start)
    }
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl<W: Write + Seek> Sink for SquashfsSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut tree = std::mem::replace(&mut self.tree, Tree::new(0));
        let r = tree.add(e, || self.write_file(e, data));
        self.tree = tree;
        r
    }
}

/// The uid/gid table: ids in the order first used.
#[derive(Default)]
struct Ids {
    list: Vec<u32>,
    index: HashMap<u32, u16>,
}

impl Ids {
    fn get(&mut self, id: u64, what: &str) -> io::Result<u16> {
        let id = u32::try_from(id)
            .map_err(|_| other(format!("{what} {id} does not fit squashfs's 32 bits")))?;
        if let Some(&i) = self.index.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.list.len())
            .map_err(|_| other("more than 65536 distinct uids and gids".into()))?;
        self.list.push(id);
        self.index.insert(id, i);
        Ok(i)
    }
}

/// The xattr key/value table and the id table pointing into it, one entry per distinct set.
#[derive(Default)]
struct Xattrs {
    kv: MetaWriterOpt,
    ids: Vec<u8>,
    sets: HashMap<Vec<(String, Vec<u8>)>, u32>,
}

/// A [`MetaWriter`] created on first use.
struct MetaWriterOpt(MetaWriter);

impl Default for MetaWriterOpt {
    fn default() -> Self {
        MetaWriterOpt(MetaWriter::new())
    }
}

impl MetaWriterOpt {
    fn finish(self, codec: &mut Codec) -> io::Result<(Vec<u8>, Vec<u64>)> {
        self.0.finish(codec)
    }
}

impl Xattrs {
    /// The xattr id of `set` (sorted), written on first use.
    #[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
    fn get(&mut self, codec: &mut Codec, set: &[(String, Vec<u8>)]) -> io::Result<u32> {
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        let mut sorted = set.to_vec();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        if let Some(&i) = self.sets.get(&sorted) {
            return Ok(i);
        }
        let r = self.kv.0.reference();
        let mut bytes = Vec::new();
        for (name, value) in &sorted {
            let (kind, rest) = if let Some(r) = name.strip_prefix("user.") {
                (0u16, r)
            } else if let Some(r) = name.strip_prefix("trusted.") {
                (1, r)
            } else if let Some(r) = name.strip_prefix("security.") {
                (2, r)
            } else {
                return Err(other(format!(
                    "extended attribute {name}: squashfs stores only user., trusted. and \
                     security. attributes"
                )));
            };
            let vlen = u32::try_from(value.len())
                .map_err(|_| other(format!("extended attribute {name}: value too large")))?;
            bytes.extend_from_slice(&kind.to_le_bytes());
            bytes.extend_from_slice(&(rest.len() as u16).to_le_bytes());
            bytes.extend_from_slice(rest.as_bytes());
            bytes.extend_from_slice(&vlen.to_le_bytes());
            bytes.extend_from_slice(value);
        }
        self.kv.0.write(codec, &bytes)?;
        let id = (self.ids.len() / 16) as u32;
        self.ids.extend_from_slice(&r.to_le_bytes());
        self.ids
            .extend_from_slice(&(sorted.len() as u32).to_le_bytes());
        self.ids
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.sets.insert(sorted, id);
        Ok(id)
    }
}

struct DirInfo {
    start: u64,
    offset: u16,
    size: u64,
    parent: u32,
}

/// The basic squashfs type of a node (as directory entries record it).
fn basic_type<D>(kind: &NodeKind<D>) -> u16 {
    match kind {
        NodeKind::Dir(_) => T_DIR,
        NodeKind::File(_) => T_FILE,
        NodeKind::Symlink(_) => T_SYMLINK,
        NodeKind::Block(..) => T_BLOCK,
        NodeKind::Char(..) => T_CHAR,
        NodeKind::Fifo => T_FIFO,
    }
}

/// Linux's encoding of a device number in 32 bits.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[allow(clippy::too_many_arguments)]
#[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
fn write_inode(
    table: &mut MetaWriter,
    codec: &mut Codec,
    meta: &Meta,
    kind: &NodeKind<FileData>,
    ino: u32,
    nlink: u32,
    ids: &mut Ids,
    xattrs: &mut Xattrs,
    written: &[(u64, u32)],
    dir: Option<DirInfo>,
) -> io::Result<u64> {
    let xattr = xattrs.get(codec, &meta.xattrs)?;
    let mut t = basic_type(kind);
    let mut b = Vec::with_capacity(64);
    let reference = table.reference();
    let push32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    match kind {
        NodeKind::Dir(_) => {
            let d = dir.ok_or_else(|| other("a directory without its listing".into()))?;
            let start = u32::try_from(d.start)
                .map_err(|_| other("the directory table exceeds 4 GiB".into()))?;
            let size = u32::try_from(d.size)
                .map_err(|_| other("a directory listing exceeds 4 GiB".into()))?;
            if xattr == NO_XATTR && size <= 0xffff {
                push32(&mut b, start);
                push32(&mut b, nlink);
                b.extend_from_slice(&(size as u16).to_le_bytes());
                b.extend_from_slice(&d.offset.to_le_bytes());
                push32(&mut b, d.parent);
            } else {
                t += EXTENDED;
                push32(&mut b, nlink);
                push32(&mut b, size);
                push32(&mut b, start);
                push32(&mut b, d.parent);
                b.extend_from_slice(&0u16.to_le_bytes());
                b.extend_from_slice(&d.offset.to_le_bytes());
                push32(&mut b, xattr);
            }
        }
        NodeKind::File(f) => {
            let (frag, off) = f.fragment.unwrap_or((INVALID_FRAG, 0));
            let blocks = usize::try_from(f.first)
                .ok()
                .and_then(|first| written.get(first..first + usize::try_from(f.count).ok()?))
                .ok_or_else(|| io::Error::other("a file's blocks were not written"))?;
            let start = blocks.first().map_or(0, |b| b.0);
            match (u32::try_from(start), u32::try_from(f.size)) {
                (Ok(start), Ok(size)) if nlink == 1 && xattr == NO_XATTR => {
                    push32(&mut b, start);
                    push32(&mut b, frag);
                    push32(&mut b, off);
                    push32(&mut b, size);
                }
                _ => {
                    t += EXTENDED;
                    b.extend_from_slice(&start.to_le_bytes());
                    b.extend_from_slice(&f.size.to_le_bytes());
                    b.extend_from_slice(&f.sparse.to_le_bytes());
                    push32(&mut b, nlink);
                    push32(&mut b, frag);
                    push32(&mut b, off);
                    push32(&mut b, xattr);
                }
            }
            for &(_, field) in blocks {
                push32(&mut b, field);
            }
        }
        NodeKind::Symlink(target) => {
            push32(&mut b, nlink);
            push32(&mut b, target.len() as u32);
            b.extend_from_slice(target.as_bytes());
            if xattr != NO_XATTR {
                t += EXTENDED;
                push32(&mut b, xattr);
            }
        }
        NodeKind::Char(major, minor) | NodeKind::Block(major, minor) => {
            push32(&mut b, nlink);
            push32(&mut b, encode_dev(*major, *minor));
            if xattr != NO_XATTR {
                t += EXTENDED;
                push32(&mut b, xattr);
            }
        }
        NodeKind::Fifo => {
            push32(&mut b, nlink);
            if xattr != NO_XATTR {
                t += EXTENDED;
                push32(&mut b, xattr);
            }
        }
    }
    let mut header = Vec::with_capacity(16 + b.len());
    header.extend_from_slice(&t.to_le_bytes());
    header.extend_from_slice(&(meta.perm as u16).to_le_bytes());
    header.extend_from_slice(&ids.get(meta.uid, "uid")?.to_le_bytes());
    header.extend_from_slice(&ids.get(meta.gid, "gid")?.to_le_bytes());
    header.extend_from_slice(&clamp32(meta.mtime).to_le_bytes());
    header.extend_from_slice(&ino.to_le_bytes());
    header.extend_from_slice(&b);
    table.write(codec, &header)?;
    Ok(reference)
}

/// A directory's listing: runs of at most 256 entries whose inodes share a metadata block
/// and lie within ±32767 inode numbers of the run's first.
#[allow(clippy::cast_possible_truncation)] // sizes are bounded by the block and metadata sizes, names by NAME_MAX, counts checked
fn write_listing(
    out: &mut Vec<u8>,
    children: &std::collections::BTreeMap<String, usize>,
    tree: &Tree<FileData>,
    refs: &[Option<u64>],
    ino: &[u32],
) {
    let mut run: Vec<(&str, usize, u64)> = Vec::new();
    let flush = |out: &mut Vec<u8>, run: &mut Vec<(&str, usize, u64)>| {
        if let Some(&(_, first, r)) = run.first() {
            let base = ino[first];
            out.extend_from_slice(&(run.len() as u32 - 1).to_le_bytes());
            out.extend_from_slice(&((r >> 16) as u32).to_le_bytes());
            out.extend_from_slice(&base.to_le_bytes());
            for &(name, n, r) in run.iter() {
                out.extend_from_slice(&((r & 0xffff) as u16).to_le_bytes());
                let delta = i64::from(ino[n]) - i64::from(base);
                out.extend_from_slice(&(delta as i16).to_le_bytes());
                out.extend_from_slice(&basic_type(&tree.nodes[n].kind).to_le_bytes());
                out.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
        }
        run.clear();
    };
    for (name, &c) in children {
        let r = refs[c].unwrap_or(0);
        if let Some(&(_, first, fr)) = run.first() {
            let delta = i64::from(ino[c]) - i64::from(ino[first]);
            if run.len() == 256 || fr >> 16 != r >> 16 || !(-32767..=32767).contains(&delta) {
                flush(out, &mut run);
            }
        }
        run.push((name, c, r));
    }
    flush(out, &mut run);
}

#[cfg(test)]
mod tests;
