//! The initrd writer: the entry stream as a newc cpio archive cut into independently
//! compressed members (concatenated, as the kernel unpacks them), compressed on every core,
//! with segments cached by key.
//!
//! The archive is cut at entry boundaries into chunks of about [`Limits::chunk`] bytes; each
//! chunk is one gzip member (libdeflate), zstd frame or lz4 stream (the kernel's legacy lz4
//! format: its magic number, then blocks), compressed by a pool of threads and written in
//! order. An entry too large for a chunk is one gzip member whose deflate stream is cut into
//! blocks compressed in parallel, each primed with the 32 KiB before it (as pigz does; zlib, as
//! libdeflate cannot be primed), with zstd a frame of its own compressed as it is read, and
//! with lz4 cut into chunks compressed in parallel like any other (the kernel's lz4 unpacker
//! hands the blocks of every lz4 stream to one cpio parser, so a block may end inside an
//! entry). Where chunks and blocks end depends only on the entries, and no compressor state
//! is carried from one job to the next, so the bytes do not depend on the number of threads.
//! Decompressed and concatenated, the members form one newc archive with one trailer at its
//! end: `zcat initrd.img | cpio -t` (or `lz4 -dc`, `zstd -dc`) lists everything, and the
//! kernel accepts it (every gzip member and zstd frame ends at an entry boundary, as its
//! unpacker requires). Memory is bounded: at most one chunk per thread, plus one (but for
//! zstd), is in flight.
//!
//! A producer may announce segments ([`Sink::begin_segment`]): a segment starts a new chunk
//! and its compressed bytes are stored in the cache directory under a name derived from its
//! key, the compression, the chunk sizes, this format's [`VERSION`] and what the compression
//! libraries make of a sample ([`fingerprint`]). When a later build announces the same key,
//! the stored bytes are checked against their digest and copied instead of the entries being
//! sent and compressed again. A cache entry that fails the check is removed and rebuilt.
//!
//! A cache entry is the compressed bytes followed by their SHA-256 and [`MAGIC`]; it is
//! written under a temporary name, synced (in the background while it is written, and at its
//! end) and renamed, so two builds may share a cache.

use crate::cpio;
use crate::kernel_initrd::Compression;
use kiln_fs::{Entry, Segment, Sink};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The version of the cached segment format; part of every cache key. Change it whenever
/// kiln writes other bytes for the same entries (encoding, chunking, compression parameters).
const VERSION: &str = "kiln initrd segment 2";
/// The last bytes of a cache entry.
const MAGIC: &[u8; 8] = b"KILNSEG1";
/// The gzip level. libdeflate at 5 writes smaller members than zlib at its default 6 (2-3%
/// on a Debian root filesystem), 1.6 times as fast; zlib at 5 for the blocks of large entries
/// is 13% faster than at 6 and as small.
const GZIP_LEVEL: i32 = 5;
/// The zstd level.
const ZSTD_LEVEL: i32 = 9;
/// The zstd level's hash and chain tables, smaller than its defaults (2^21 and 2^20 entries)
/// so that each compression thread needs 2 MiB for them instead of 12: 2% larger output.
const ZSTD_TABLE_LOG: u32 = 18;
/// The zstd window of a chunk's frame: its size ([`Limits::for_compression`]). A chunk is
/// compressed in one call, which needs no window buffer.
const ZSTD_WINDOW_LOG: u32 = 21;
/// The window and tables of a large entry's frame, compressed as it is read while every
/// compression thread keeps its context: smaller, so that this third context needs about
/// 3 MB less (for 0.2% more output).
const ZSTD_STREAM_WINDOW_LOG: u32 = 20;
const ZSTD_STREAM_TABLE_LOG: u32 = 16;
/// The number that starts the kernel's legacy lz4 format (lib/decompress_unlz4.c), written
/// little-endian. The kernel skips it wherever a block's length would be, so lz4 streams
/// concatenate.
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// The most a block of the legacy lz4 format may hold uncompressed: the kernel decompresses
/// every block into a buffer of this size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
/// At most this many compression threads by default: one producer (reading the layers)
/// keeps about this many busy, and each thread costs about 5 MB.
const MAX_THREADS: usize = 8;
/// Where a store keeps its initrd segments (see [`segment_cache_dir`]).
const CACHE_DIR: &str = "initrd-segments";
/// Temporary files in the cache directory start with this.
const TMP_PREFIX: &str = ".tmp-";

/// Apply kiln's zstd parameters with a window and tables of 2^`window` and 2^`tables`.
fn zstd_params(
    set: &mut dyn FnMut(zstd::zstd_safe::CParameter) -> io::Result<()>,
    window: u32,
    tables: u32,
) -> io::Result<()> {
    use zstd::zstd_safe::CParameter;
    set(CParameter::ChecksumFlag(true))?;
    set(CParameter::WindowLog(window))?;
    set(CParameter::HashLog(tables))?;
    set(CParameter::ChainLog(tables))
}

/// The segment cache directory of the store at `store_root`.
pub fn segment_cache_dir(store_root: &Path) -> PathBuf {
    store_root.join(CACHE_DIR)
}

/// How the initrd is written.
#[derive(Debug, Clone)]
pub struct InitrdOptions {
    /// The compression of every member.
    pub compression: Compression,
    /// Where segments are cached (none: no cache).
    pub cache: Option<PathBuf>,
    /// Compression threads; 0 for as many as the process may run on at once (at most 8).
    pub threads: usize,
}

impl InitrdOptions {
    /// `compression`, no cache, every core.
    pub fn new(compression: Compression) -> Self {
        InitrdOptions {
            compression,
            cache: None,
            threads: 0,
        }
    }
}

/// Where the archive is cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A chunk ends after the entry that makes it this long.
    pub(crate) chunk: usize,
    /// An entry whose body is larger is never held in memory whole: with gzip it is cut into
    /// blocks of [`Limits::chunk`] bytes deflated in parallel into one member (as pigz does),
    /// with zstd it is a frame of its own, compressed as it is read, with lz4 it is cut into
    /// chunks compressed in parallel. A chunk ends before an entry that would make it longer.
    pub(crate) stream_above: u64,
}

impl Limits {
    fn for_compression(c: Compression) -> Self {
        match c {
            // zstd gains from larger frames (its window is larger than deflate's 32 KiB); 2 MiB
            // rather than 4 keeps two threads' buffers and contexts within 32 MB, for 5% more
            // output.
            Compression::Zstd => Limits {
                chunk: 2 << 20,
                stream_above: 2 << 20,
            },
            // lz4 refers back at most 64 KiB: larger chunks gain nothing.
            Compression::Gzip | Compression::Lz4 | Compression::None => Limits {
                chunk: 1 << 20,
                stream_above: 1 << 20,
            },
        }
    }
}

/// What a writer did with its segments.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InitrdStats {
    /// Segments copied from the cache.
    pub reused: usize,
    /// Segments compressed and stored in the cache.
    pub stored: usize,
    /// Cache entries found corrupt (removed and rebuilt).
    pub corrupt: usize,
}

enum State {
    /// Outside any segment.
    Loose,
    /// Inside a segment whose entries are being written.
    Emitting,
    /// Inside a segment copied from the cache: no entries may come.
    Reusing,
}

/// Which spare buffers: for chunks, or for compressed chunks.
const RAW: usize = 0;
const OUT: usize = 1;

/// Work for a compression thread.
enum Job {
    /// A chunk of whole entries, compressed as one member.
    Member(Vec<u8>),
    /// A block of one large entry: raw deflate primed with `dict` (the 32 KiB of the entry
    /// before the block), ending byte-aligned (a sync flush) or, for the last block, with the
    /// end of the deflate stream.
    Deflate {
        raw: Vec<u8>,
        dict: Vec<u8>,
        last: bool,
    },
}

/// Writes the entry stream as concatenated compressed newc members (see the module docs).
pub struct InitrdWriter<W: Write> {
    out: Output<W>,
    compression: Compression,
    limits: Limits,
    pool: Option<Pool>,
    /// The compressor of the calling thread (one thread, or streamed entries).
    local: Compressor,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// Emptied buffers: for chunks, and for compressed chunks (kept apart: a compressed
    /// chunk touches fewer pages).
    spare: [Vec<Vec<u8>>; 2],
    /// The inode number of the last entry; restarts at every segment boundary, so that a
    /// segment's bytes do not depend on what came before it.
    ino: u32,
    /// The next job's number, and the number of the next job to write out.
    next_seq: u64,
    next_out: u64,
    /// Jobs done (or literal bytes) waiting for the jobs before them.
    done: BTreeMap<u64, Vec<u8>>,
    /// Jobs numbered but not written out yet; at most `max_inflight`.
    inflight: usize,
    max_inflight: usize,
    cache: Option<PathBuf>,
    /// What the compressors make of a sample (see [`fingerprint`]); computed when first needed.
    fingerprint: String,
    state: State,
    stats: InitrdStats,
}

impl<W: Write> InitrdWriter<W> {
    /// A writer on `w`.
    pub fn new(w: W, options: &InitrdOptions) -> io::Result<Self> {
        Self::with_limits(w, options, Limits::for_compression(options.compression))
    }

    pub(crate) fn with_limits(w: W, options: &InitrdOptions, limits: Limits) -> io::Result<Self> {
        let threads = match (options.compression, options.threads) {
            (Compression::None, _) => 1,
            (_, 0) => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
            (_, n) => n,
        };
        let pool = if threads > 1 {
            Some(Pool::start(options.compression, threads)?)
        } else {
            None
        };
        tracing::debug!(
            "initrd: {} compression, {threads} threads, {} byte chunks",
            options.compression.name(),
            limits.chunk
        );
        Ok(InitrdWriter {
            out: Output { w, recording: None },
            compression: options.compression,
            limits,
            pool,
            local: Compressor::new(options.compression),
            buf: Vec::with_capacity(usize::try_from(limits.stream_above).unwrap_or(0) + (64 << 10)),
            spare: [Vec::new(), Vec::new()],
            ino: 0,
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            inflight: 0,
            // One job waiting for a thread, except with zstd, whose chunks are the largest.
            max_inflight: match options.compression {
                Compression::Zstd => threads,
                _ => threads + 1,
            },
            cache: options.cache.clone(),
            fingerprint: String::new(),
            state: State::Loose,
            stats: InitrdStats::default(),
        })
    }

    /// What happened to the segments so far.
    pub fn stats(&self) -> InitrdStats {
        self.stats
    }

    /// Write the trailer, wait for every chunk and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !matches!(self.state, State::Loose) {
            return Err(io::Error::other(
                "the initrd ended inside a segment (end_segment was not called)",
            ));
        }
        cpio::write_trailer(&mut self.buf)?;
        self.flush_chunk()?;
        self.drain()?;
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
        tracing::debug!(
            "initrd: {} segments reused, {} stored, {} corrupt cache entries rebuilt",
            self.stats.reused,
            self.stats.stored,
            self.stats.corrupt
        );
        self.out.w.flush()?;
        Ok(self.out.w)
    }

    /// An empty buffer for a chunk (`RAW`) or a compressed chunk (`OUT`). Buffers are made
    /// large enough for the longest chunk and kept, never grown or freed: freeing large
    /// buffers makes glibc serve later ones from its heaps, which then stay resident. Pages a
    /// buffer never uses are never touched.
    fn buffer(&mut self, kind: usize) -> Vec<u8> {
        let longest = usize::try_from(self.limits.stream_above).unwrap_or(usize::MAX);
        self.spare[kind]
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(longest.saturating_add(64 << 10)))
    }

    /// Keep `buf` for reuse as `kind` (a bounded number of them; not the small ones that
    /// held literal bytes).
    fn recycle(&mut self, kind: usize, mut buf: Vec<u8>) {
        let pool = &mut self.spare[kind];
        if pool.len() < self.max_inflight && buf.capacity() >= self.limits.chunk {
            buf.clear();
            pool.push(buf);
        }
    }

    /// Hand the chunk being filled to the compressors.
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let fresh = self.buffer(RAW);
        let raw = std::mem::replace(&mut self.buf, fresh);
        self.submit(Job::Member(raw))
    }

    /// Number `job` and compress it, here or on a compression thread.
    fn submit(&mut self, job: Job) -> io::Result<()> {
        while self.inflight >= self.max_inflight {
            self.receive()?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight += 1;
        let out = self.buffer(OUT);
        if let Some(pool) = &self.pool {
            return pool.submit(seq, job, out);
        }
        let (result, raw) = self.local.run(job, out);
        self.recycle(RAW, raw);
        self.done.insert(seq, result?);
        self.write_ready()
    }

    /// Bytes that need no compression, in their place in the sequence.
    fn literal(&mut self, bytes: &[u8]) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.inflight += 1;
        self.done.insert(seq, bytes.to_vec());
        self.write_ready()
    }

    /// Write out every finished job that is next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(c) = self.done.remove(&self.next_out) {
            self.out.write_all(&c)?;
            self.next_out += 1;
            self.inflight -= 1;
            self.recycle(OUT, c);
        }
        Ok(())
    }

    /// Wait for one compressed job, then write out what is ready.
    fn receive(&mut self) -> io::Result<()> {
        let Some(pool) = &self.pool else {
            return self.write_ready();
        };
        let (seq, result, raw) = pool.receive()?;
        self.recycle(RAW, raw);
        self.done.insert(seq, result?);
        self.write_ready()
    }

    /// Wait until every job handed out is written.
    fn drain(&mut self) -> io::Result<()> {
        while self.inflight > 0 {
            self.receive()?;
        }
        Ok(())
    }

    /// An entry too large for a chunk (see [`Limits::stream_above`]).
    fn large_entry(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.flush_chunk()?;
        self.ino = self.ino.wrapping_add(1);
        let ino = self.ino;
        match self.compression {
            Compression::Gzip => {
                let mut blocks = Blocks {
                    writer: self,
                    block: Vec::new(),
                    dict: Vec::new(),
                    crc: flate2::Crc::new(),
                };
                blocks.block = blocks.writer.buffer(RAW);
                blocks.writer.literal(&GZIP_HEADER)?;
                cpio::write_entry(&mut blocks, ino, e, data)?;
                blocks.finish()
            }
            Compression::Zstd => {
                self.drain()?;
                let (mode, rdev, body) = cpio::record(e);
                let mut header = Vec::new();
                cpio::write_header(&mut header, ino, &e.path, mode, e, body.len(), rdev)?;
                let total =
                    header.len() as u64 + body.len() + cpio::padding(body.len()).len() as u64;
                let out = BufWriter::with_capacity(256 << 10, &mut self.out);
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                zstd_params(
                    &mut |p| enc.set_parameter(p),
                    ZSTD_STREAM_WINDOW_LOG,
                    ZSTD_STREAM_TABLE_LOG,
                )?;
                enc.set_pledged_src_size(Some(total))?;
                cpio::write_entry(&mut enc, ino, e, data)?;
                enc.finish()?.flush()
            }
            Compression::Lz4 => {
                let mut pieces = Pieces {
                    writer: self,
                    piece: Vec::new(),
                };
                pieces.piece = pieces.writer.buffer(RAW);
                cpio::write_entry(&mut pieces, ino, e, data)?;
                pieces.finish()
            }
            Compression::None => {
                self.drain()?;
                let mut out = BufWriter::with_capacity(256 << 10, &mut self.out);
                cpio::write_entry(&mut out, ino, e, data)?;
                out.flush()
            }
        }
    }

    /// The cache entry of the segment `key`.
    fn cache_path(&mut self, dir: &Path, key: &str) -> io::Result<PathBuf> {
        if self.fingerprint.is_empty() {
            self.fingerprint = fingerprint(self.compression)?;
        }
        let mut h = Sha256::new();
        for part in [
            VERSION,
            &self.fingerprint,
            self.compression.name(),
            &self.limits.chunk.to_string(),
            &self.limits.stream_above.to_string(),
            key,
        ] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        Ok(dir.join(hex::encode(h.finalize())))
    }
}

/// The gzip member header kiln writes: no name, no time, unknown operating system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// deflate's window: how much of the data before a block it may refer to.
const DEFLATE_WINDOW: usize = 32 << 10;

/// One large entry written as one gzip member whose deflate stream is cut into blocks of
/// [`Limits::chunk`] bytes, compressed in parallel.
struct Blocks<'a, W: Write> {
    writer: &'a mut InitrdWriter<W>,
    block: Vec<u8>,
    dict: Vec<u8>,
    crc: flate2::Crc,
}

impl<W: Write> Blocks<'_, W> {
    fn send(&mut self, last: bool) -> io::Result<()> {
        let next = self.writer.buffer(RAW);
        let raw = std::mem::replace(&mut self.block, next);
        let tail = raw.len().saturating_sub(DEFLATE_WINDOW);
        let dict = std::mem::replace(&mut self.dict, raw[tail..].to_vec());
        self.writer.submit(Job::Deflate { raw, dict, last })
    }

    fn finish(mut self) -> io::Result<()> {
        self.send(true)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        let block = std::mem::take(&mut self.block);
        self.writer.recycle(RAW, block);
        self.writer.literal(&trailer)
    }
}

impl<W: Write> Write for Blocks<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.writer.limits.chunk.saturating_sub(self.block.len());
        if room == 0 {
            self.send(false)?;
            return self.write(buf);
        }
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One large entry cut into chunks of [`Limits::chunk`] bytes, each compressed on its own as
/// any chunk is (lz4, whose blocks need not end at entry boundaries).
struct Pieces<'a, W: Write> {
    writer: &'a mut InitrdWriter<W>,
    piece: Vec<u8>,
}

impl<W: Write> Pieces<'_, W> {
    fn send(&mut self) -> io::Result<()> {
        let next = self.writer.buffer(RAW);
        let raw = std::mem::replace(&mut self.piece, next);
        self.writer.submit(Job::Member(raw))
    }

    fn finish(mut self) -> io::Result<()> {
        let last = std::mem::take(&mut self.piece);
        if last.is_empty() {
            self.writer.recycle(RAW, last);
            return Ok(());
        }
        self.writer.submit(Job::Member(last))
    }
}

impl<W: Write> Write for Pieces<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.writer.limits.chunk.saturating_sub(self.piece.len());
        if room == 0 {
            self.send()?;
            return self.write(buf);
        }
        let n = room.min(buf.len());
        self.piece.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Sink for InitrdWriter<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if matches!(self.state, State::Reusing) {
            return Err(io::Error::other(format!(
                "{}: an entry was sent inside a segment taken from the cache",
                e.path
            )));
        }
        let body = cpio::record(e).2.len();
        if body > self.limits.stream_above {
            return self.large_entry(e, data);
        }
        if !self.buf.is_empty() && self.buf.len() as u64 + body > self.limits.stream_above {
            self.flush_chunk()?;
        }
        self.ino = self.ino.wrapping_add(1);
        cpio::write_entry(&mut self.buf, self.ino, e, data)?;
        if self.buf.len() >= self.limits.chunk {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        if !matches!(self.state, State::Loose) {
            return Err(io::Error::other(
                "an initrd segment was begun inside another one",
            ));
        }
        self.flush_chunk()?;
        self.drain()?;
        self.ino = 0;
        self.state = State::Emitting;
        let Some(dir) = self.cache.clone() else {
            return Ok(Segment::Emit);
        };
        let path = self.cache_path(&dir, key)?;
        let label = key.lines().next().unwrap_or_default();
        match open_verified(&path) {
            Cached::Valid(file, len) => {
                copy_exactly(file, len, &mut self.out)
                    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                self.state = State::Reusing;
                self.stats.reused += 1;
                tracing::debug!("initrd segment reused ({label}): {len} bytes");
                return Ok(Segment::Reuse);
            }
            Cached::Corrupt(why) => {
                self.stats.corrupt += 1;
                tracing::warn!(
                    "initrd segment cache entry {} is corrupt ({why}): removed, rebuilding it",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
            }
            Cached::Missing => {}
        }
        match Recording::start(&dir, path) {
            Ok(r) => self.out.recording = Some(r),
            Err(e) => tracing::warn!(
                "cannot write to the initrd segment cache {}: {e}",
                dir.display()
            ),
        }
        tracing::debug!("initrd segment compressed ({label})");
        Ok(Segment::Emit)
    }

    fn end_segment(&mut self) -> io::Result<()> {
        match self.state {
            State::Loose => {
                return Err(io::Error::other(
                    "an initrd segment was ended that was not begun",
                ));
            }
            State::Reusing => {}
            State::Emitting => {
                self.flush_chunk()?;
                self.drain()?;
                if let Some(r) = self.out.recording.take() {
                    match r.commit() {
                        Ok(()) => self.stats.stored += 1,
                        Err(e) => tracing::warn!("cannot store an initrd segment: {e}"),
                    }
                }
            }
        }
        self.state = State::Loose;
        self.ino = 0;
        Ok(())
    }
}

/// The output, and the cache entry being recorded alongside it.
struct Output<W: Write> {
    w: W,
    recording: Option<Recording>,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write_all(buf)?;
        if let Some(r) = &mut self.recording
            && let Err(e) = r.write(buf)
        {
            tracing::warn!("cannot write to the initrd segment cache: {e}");
            self.recording = None;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A cache entry being written.
struct Recording {
    tmp: tempfile::NamedTempFile,
    hash: Sha256,
    dest: PathBuf,
    /// Bytes written since the last background sync started.
    unsynced: u64,
    /// A background `fdatasync`: the data goes to disk while compression goes on, so that
    /// the final sync has little left to wait for.
    syncing: Option<JoinHandle<io::Result<()>>>,
}

/// Sync a cache entry in the background after this many bytes.
const SYNC_EVERY: u64 = 8 << 20;

impl Recording {
    fn start(dir: &Path, dest: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)?;
        Ok(Recording {
            tmp,
            hash: Sha256::new(),
            dest,
            unsynced: 0,
            syncing: None,
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hash.update(buf);
        self.tmp.write_all(buf)?;
        self.unsynced += buf.len() as u64;
        if self.unsynced >= SYNC_EVERY && self.syncing.as_ref().is_none_or(|s| s.is_finished()) {
            self.wait_sync()?;
            let file = self.tmp.as_file().try_clone()?;
            self.syncing = Some(std::thread::spawn(move || file.sync_data()));
            self.unsynced = 0;
        }
        Ok(())
    }

    fn wait_sync(&mut self) -> io::Result<()> {
        match self.syncing.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("a sync thread failed")),
            None => Ok(()),
        }
    }

    fn commit(mut self) -> io::Result<()> {
        self.wait_sync()?;
        let digest = self.hash.finalize();
        self.tmp.write_all(&digest)?;
        self.tmp.write_all(MAGIC)?;
        self.tmp.as_file().sync_all()?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(self.tmp.path(), mode)?;
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        Ok(())
    }
}

enum Cached {
    Valid(File, u64),
    Corrupt(String),
    Missing,
}

/// The cache entry at `path` with its payload's length, once its digest is checked.
fn open_verified(path: &Path) -> Cached {
    let check = || -> io::Result<Result<(File, u64), String>> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let footer = (Sha256::output_size() + MAGIC.len()) as u64;
        if len < footer {
            return Ok(Err(format!("{len} bytes, shorter than its footer")));
        }
        let payload = len - footer;
        let mut hash = Sha256::new();
        let mut rest = payload;
        let mut buf = vec![0u8; 256 << 10];
        while rest > 0 {
            let want = usize::try_from(rest.min(buf.len() as u64)).unwrap_or(buf.len());
            f.read_exact(&mut buf[..want])?;
            hash.update(&buf[..want]);
            rest -= want as u64;
        }
        let mut tail = [0u8; 40];
        f.read_exact(&mut tail)?;
        if &tail[32..] != MAGIC {
            return Ok(Err("no segment footer".into()));
        }
        if tail[..32] != hash.finalize()[..] {
            return Ok(Err("its digest does not match".into()));
        }
        f.seek(SeekFrom::Start(0))?;
        // Recently used: `kiln cache clean` removes entries by age.
        let _ = f.set_modified(SystemTime::now());
        Ok(Ok((f, payload)))
    };
    match check() {
        Ok(Ok((f, len))) => Cached::Valid(f, len),
        Ok(Err(why)) => Cached::Corrupt(why),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Cached::Missing,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Cached::Corrupt(e.to_string()),
        Err(e) => {
            tracing::warn!("cannot read initrd segment {}: {e}", path.display());
            Cached::Missing
        }
    }
}

fn copy_exactly(mut from: File, len: u64, to: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    let mut rest = len;
    while rest > 0 {
        let want = usize::try_from(rest.min(buf.len() as u64)).unwrap_or(buf.len());
        from.read_exact(&mut buf[..want])?;
        to.write_all(&buf[..want])?;
        rest -= want as u64;
    }
    Ok(())
}

/// A thread's compression state, reused from job to job.
struct Compressor {
    compression: Compression,
    /// Whole gzip members (libdeflate: faster than zlib, and smaller at the same level).
    libdeflate: Option<libdeflater::Compressor>,
    scratch: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// lz4's hash table (lz4_flex: pure Rust; there is no high-compression mode).
    lz4: Option<Box<lz4_flex::block::CompressTable>>,
}

impl Compressor {
    fn new(compression: Compression) -> Self {
        Compressor {
            compression,
            libdeflate: None,
            scratch: Vec::new(),
            zstd: None,
            lz4: None,
        }
    }

    /// Do `job` into `out`; gives back the job's input for reuse.
    fn run(&mut self, job: Job, mut out: Vec<u8>) -> (io::Result<Vec<u8>>, Vec<u8>) {
        out.clear();
        match job {
            Job::Member(raw) => {
                let r = self.member(&raw, &mut out).map(|()| out);
                (r, raw)
            }
            Job::Deflate { raw, dict, last } => {
                let flush = if last {
                    flate2::FlushCompress::Finish
                } else {
                    flate2::FlushCompress::Sync
                };
                let r = Self::deflate(&raw, &dict, flush, &mut out).map(|()| out);
                (r, raw)
            }
        }
    }

    fn member(&mut self, raw: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self.compression {
            Compression::None => out.extend_from_slice(raw),
            Compression::Gzip => {
                let c = match &mut self.libdeflate {
                    Some(c) => c,
                    None => {
                        let level = libdeflater::CompressionLvl::new(GZIP_LEVEL)
                            .map_err(|e| io::Error::other(format!("gzip level: {e:?}")))?;
                        self.libdeflate.insert(libdeflater::Compressor::new(level))
                    }
                };
                // libdeflate writes to initialised memory: a scratch buffer of this thread,
                // so that only the compressed bytes are touched in `out`.
                let bound = c.gzip_compress_bound(raw.len());
                if self.scratch.len() < bound {
                    self.scratch.resize(bound, 0);
                }
                let n = c
                    .gzip_compress(raw, &mut self.scratch)
                    .map_err(|e| io::Error::other(format!("gzip: {e}")))?;
                out.extend_from_slice(&self.scratch[..n]);
            }
            Compression::Zstd => {
                let ctx = match &mut self.zstd {
                    Some(ctx) => ctx,
                    None => {
                        let mut ctx = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                        zstd_params(
                            &mut |p| ctx.set_parameter(p),
                            ZSTD_WINDOW_LOG,
                            ZSTD_TABLE_LOG,
                        )?;
                        self.zstd.insert(ctx)
                    }
                };
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                ctx.compress_to_buffer(raw, out)?;
            }
            Compression::Lz4 => self.lz4_stream(raw, out)?,
        }
        Ok(())
    }

    /// `raw` in the kernel's legacy lz4 format: the magic number, then for every 8 MiB (at
    /// most) the compressed length (32 bits, little-endian) and an lz4 block, each block
    /// compressed on its own. Nothing at all for no bytes.
    fn lz4_stream(&mut self, raw: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let table = self
            .lz4
            .get_or_insert_with(|| Box::new(lz4_flex::block::CompressTable::large()));
        out.extend_from_slice(&LZ4_LEGACY_MAGIC.to_le_bytes());
        for block in raw.chunks(LZ4_LEGACY_BLOCK) {
            // As for gzip: compressed into this thread's scratch buffer, so that only the
            // compressed bytes are touched in `out`.
            let bound = lz4_flex::block::get_maximum_output_size(block.len());
            if self.scratch.len() < bound {
                self.scratch.resize(bound, 0);
            }
            let n = lz4_flex::block::compress_into_with_table(block, &mut self.scratch, table)
                .map_err(|e| io::Error::other(format!("lz4: {e}")))?;
            let len = u32::try_from(n)
                .map_err(|_| io::Error::other(format!("lz4 block of {n} bytes")))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&self.scratch[..n]);
        }
        Ok(())
    }

    /// Raw deflate of `raw` (after `dict`) appended to `out`, ending with `flush`, by zlib
    /// (libdeflate cannot prime a block with the data before it).
    fn deflate(
        raw: &[u8],
        dict: &[u8],
        flush: flate2::FlushCompress,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        // A new deflate state for every block: zlib-rs's reset leaves state behind that changes
        // the output, and the output must not depend on what a thread compressed before.
        let level = flate2::Compression::new(GZIP_LEVEL.unsigned_abs());
        let c = &mut flate2::Compress::new(level, false);
        if !dict.is_empty() {
            c.set_dictionary(dict).map_err(io::Error::other)?;
        }
        // One call with room for the worst case: zlib-rs's output depends on where calls
        // are cut when the output space runs out, and that must never depend on which buffer
        // a thread happened to get.
        let bound = raw.len() + raw.len() / 256 + 4096;
        out.reserve(bound);
        let start = c.total_in();
        let status = c.compress_vec(raw, out, flush).map_err(io::Error::other)?;
        let consumed = c.total_in() - start;
        let done = match status {
            flate2::Status::StreamEnd => true,
            _ => flush == flate2::FlushCompress::Sync && out.len() < out.capacity(),
        };
        if !done || consumed != raw.len() as u64 {
            return Err(io::Error::other(format!(
                "deflate of {} bytes did not fit in {bound} bytes",
                raw.len()
            )));
        }
        Ok(())
    }
}

/// What the compressors of `c` make of a fixed sample, as hex: part of every cache key, so
/// that a compression library that writes other bytes (another version) never mixes its
/// segments with those of the one that wrote the cache.
fn fingerprint(c: Compression) -> io::Result<String> {
    let mut x: u32 = 1;
    let sample: Vec<u8> = (0..64 << 10)
        .map(|i: u32| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            match i % 512 {
                0..200 => b"kiln initrd sample text, "[(i % 25) as usize],
                _ => (x >> 24) as u8 & 0x3f,
            }
        })
        .collect();
    let mut comp = Compressor::new(c);
    let mut h = Sha256::new();
    h.update(comp.run(Job::Member(sample.clone()), Vec::new()).0?);
    if c == Compression::Gzip {
        let dict = sample[..DEFLATE_WINDOW].to_vec();
        let job = Job::Deflate {
            raw: sample,
            dict,
            last: false,
        };
        h.update(comp.run(job, Vec::new()).0?);
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

type Done = (u64, io::Result<Vec<u8>>, Vec<u8>);

/// Compression threads: numbered jobs in, results out in any order.
struct Pool {
    jobs: Option<Sender<(u64, Job, Vec<u8>)>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(c: Compression, threads: usize) -> io::Result<Self> {
        let (jobs, job_rx) = std::sync::mpsc::channel();
        let (done_tx, results) = std::sync::mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("initrd-{i}"))
                    .spawn(move || worker(c, &job_rx, &done_tx))?,
            );
        }
        Ok(Pool {
            jobs: Some(jobs),
            results,
            workers,
        })
    }

    fn submit(&self, seq: u64, job: Job, out: Vec<u8>) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send((seq, job, out)).ok())
            .ok_or_else(|| io::Error::other("the initrd compression threads stopped"))
    }

    fn receive(&self) -> io::Result<Done> {
        self.results
            .recv()
            .map_err(|_| io::Error::other("the initrd compression threads stopped"))
    }

    fn stop(mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(c: Compression, jobs: &Mutex<Receiver<(u64, Job, Vec<u8>)>>, done: &Sender<Done>) {
    let mut compressor = Compressor::new(c);
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, job, out)) = job else {
            return;
        };
        let (result, raw) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compressor.run(job, out)))
                .unwrap_or_else(|_| {
                    (
                        Err(io::Error::other("an initrd compression thread failed")),
                        Vec::new(),
                    )
                });
        if done.send((seq, result, raw)).is_err() {
            return;
        }
    }
}

/// What [`clean_segment_cache`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    /// Files removed.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Remove the segment cache entries of `dir` not used for `max_age` (every entry with `None`),
/// and temporary files abandoned more than a day ago.
pub fn clean_segment_cache(dir: &Path, max_age: Option<Duration>) -> io::Result<CleanStats> {
    let mut stats = CleanStats::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(stats),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    for e in entries {
        let e = e?;
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        let tmp = e.file_name().to_string_lossy().starts_with(TMP_PREFIX);
        let remove = if tmp {
            age > Duration::from_secs(24 * 3600)
        } else {
            max_age.is_none_or(|max| age > max)
        };
        if remove {
            match std::fs::remove_file(e.path()) {
                Ok(()) => {
                    stats.files += 1;
                    stats.bytes += meta.len();
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpioSink;
    use crate::cpio::parse;
    use kiln_fs::Kind;

    type Entries = Vec<(Entry, Vec<u8>)>;

    /// Entries outside segments, or a segment with its key.
    enum Part {
        Loose(Entries),
        Segment(String, Entries),
    }

    const LIMITS: Limits = Limits {
        chunk: 4096,
        stream_above: 8192,
    };

    /// Deterministic, poorly compressible bytes.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                if i % 3 == 0 { b'a' } else { (x >> 56) as u8 }
            })
            .collect()
    }

    fn tree(prefix: &str, seed: u64) -> Entries {
        let mut v = vec![(Entry::dir(prefix, 0o755, 1), Vec::new())];
        for i in 0..40u64 {
            let len = usize::try_from((seed * 31 + i * 977) % 3000).unwrap_or(0);
            let data = bytes(seed + i, len);
            v.push((
                Entry::file(format!("{prefix}/f{i}"), 0o644, data.len() as u64, 2),
                data,
            ));
        }
        let big = words(seed, 20_000);
        v.push((
            Entry::file(format!("{prefix}/big"), 0o600, big.len() as u64, 3),
            big,
        ));
        v.push((
            Entry::symlink(format!("{prefix}/link"), "f1", 0o777, 4),
            Vec::new(),
        ));
        v.push((
            Entry::new(
                format!("{prefix}/hard"),
                Kind::Hardlink(format!("{prefix}/f2")),
                0o644,
                4,
            ),
            Vec::new(),
        ));
        v.push((
            Entry::new(
                format!("{prefix}/null"),
                Kind::Char { major: 1, minor: 3 },
                0o666,
                5,
            ),
            Vec::new(),
        ));
        v.push((
            Entry::new(format!("{prefix}/fifo"), Kind::Fifo, 0o600, 5),
            Vec::new(),
        ));
        v
    }

    fn plan(changed: bool) -> Vec<Part> {
        let b = if changed { 99 } else { 2 };
        vec![
            Part::Loose(vec![(Entry::dir("boot", 0o755, 0), Vec::new())]),
            Part::Segment("a".into(), tree("lib", 1)),
            Part::Segment(format!("b {b}"), tree("containers/b", b)),
            Part::Loose(vec![(
                Entry::file("containers/b/config.json", 0o644, 2, 0),
                b"{}".to_vec(),
            )]),
            Part::Segment("c".into(), tree("containers/c", 3)),
            Part::Loose(tree("etc", 4)),
        ]
    }

    fn write(plan: &[Part], options: &InitrdOptions) -> (Vec<u8>, InitrdStats) {
        write_with(plan, options, LIMITS)
    }

    fn write_with(
        plan: &[Part],
        options: &InitrdOptions,
        limits: Limits,
    ) -> (Vec<u8>, InitrdStats) {
        let mut w = InitrdWriter::with_limits(Vec::new(), options, limits).expect("writer");
        for part in plan {
            match part {
                Part::Loose(entries) => {
                    for (e, d) in entries {
                        w.add(e, &mut &d[..]).expect("add");
                    }
                }
                Part::Segment(key, entries) => {
                    if w.begin_segment(key).expect("begin") == Segment::Emit {
                        for (e, d) in entries {
                            w.add(e, &mut &d[..]).expect("add");
                        }
                    }
                    w.end_segment().expect("end");
                }
            }
        }
        let stats = w.stats();
        (w.finish().expect("finish"), stats)
    }

    fn one_archive(plan: &[Part]) -> Vec<u8> {
        let mut sink = CpioSink::new(Vec::new());
        for part in plan {
            let (Part::Loose(entries) | Part::Segment(_, entries)) = part;
            for (e, d) in entries {
                sink.add(e, &mut &d[..]).expect("add");
            }
        }
        sink.finish().expect("finish")
    }

    fn options(compression: Compression, threads: usize, cache: Option<&Path>) -> InitrdOptions {
        InitrdOptions {
            compression,
            cache: cache.map(Path::to_path_buf),
            threads,
        }
    }

    fn decompress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        match c {
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(data)
                    .read_to_end(&mut raw)
                    .expect("gunzip");
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(data)
                    .expect("zstd")
                    .read_to_end(&mut raw)
                    .expect("unzstd");
            }
            Compression::Lz4 => raw = unlz4(data).expect("unlz4"),
            Compression::None => raw = data.to_vec(),
        }
        raw
    }

    /// The legacy lz4 format read as the kernel's unlz4 reads an initrd (lib/decompress_unlz4.c):
    /// the magic number first; then, until the input ends, a magic number (skipped) or the
    /// length of a block and the block, decompressed into at most 8 MiB. Unlike the kernel it
    /// also refuses trailing bytes and empty blocks. Returns the bytes and the number of blocks.
    fn unlz4_blocks(mut data: &[u8]) -> Result<(Vec<u8>, usize), String> {
        fn word(data: &[u8]) -> Option<u32> {
            Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))
        }
        if word(data) != Some(LZ4_LEGACY_MAGIC) {
            return Err("no lz4 magic number at the start".into());
        }
        let mut raw = Vec::new();
        let mut blocks = 0;
        let mut window = vec![0u8; LZ4_LEGACY_BLOCK];
        data = &data[4..];
        while !data.is_empty() {
            let len = word(data).ok_or(format!("{} bytes at the end", data.len()))?;
            data = &data[4..];
            if len == LZ4_LEGACY_MAGIC {
                continue;
            }
            let len = len as usize;
            if len == 0 || len > data.len() {
                return Err(format!("a block of {len} bytes, {} left", data.len()));
            }
            let n = lz4_flex::block::decompress_into(&data[..len], &mut window)
                .map_err(|e| format!("block {blocks}: {e}"))?;
            raw.extend_from_slice(&window[..n]);
            data = &data[len..];
            blocks += 1;
        }
        Ok((raw, blocks))
    }

    fn unlz4(data: &[u8]) -> Result<Vec<u8>, String> {
        unlz4_blocks(data).map(|(raw, _)| raw)
    }

    /// Each gzip member decompressed on its own.
    fn gzip_members(mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut members = Vec::new();
        while !data.is_empty() {
            let mut d = flate2::bufread::GzDecoder::new(data);
            let mut raw = Vec::new();
            d.read_to_end(&mut raw).expect("member");
            data = d.into_inner();
            members.push(raw);
        }
        members
    }

    #[test]
    fn members_unpack_to_the_same_tree_as_one_archive() {
        let plan = plan(false);
        let (want, _) = parse(&one_archive(&plan));
        for c in Compression::ALL {
            for threads in [1, 3] {
                let (out, _) = write(&plan, &options(c, threads, None));
                let (got, trailers) = parse(&decompress(c, &out));
                assert_eq!(got, want, "{c:?}, {threads} threads");
                assert_eq!(trailers, 1, "{c:?}: one trailer, at the end");
            }
        }
        // The kernel requires every compressed member to end at an entry boundary.
        let (out, _) = write(&plan, &options(Compression::Gzip, 2, None));
        let members = gzip_members(&out);
        assert!(members.len() > 8, "{} members", members.len());
        let mut all = Vec::new();
        for m in &members {
            assert_eq!(m.len() % 4, 0);
            all.extend(parse(m).0);
        }
        assert_eq!(all, want);
    }

    /// `program args` with `input` on its standard input; None when it cannot be run.
    fn pipe(program: &str, args: &[&str], input: Vec<u8>) -> Option<std::process::Output> {
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().ok()?;
        feeder.join().ok()?.ok()?;
        Some(out)
    }

    #[test]
    fn gzip_and_cpio_list_every_member() {
        // Independent tools: gzip decompresses the members (large entries included), cpio
        // lists the one archive they form.
        let plan = plan(false);
        let (out, _) = write(&plan, &options(Compression::Gzip, 2, None));
        let Some(names) = tool_listing(&plan, out, "gzip") else {
            return;
        };
        let want: Vec<String> = parse(&one_archive(&plan))
            .0
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, want);
    }

    /// What `cpio -t` lists of what `TOOL -dc` makes of `out`, once the decompressed bytes were
    /// checked to be the plan's one archive; `None` (the test skipped) when a tool is missing
    /// outside CI.
    fn tool_listing(plan: &[Part], out: Vec<u8>, tool: &str) -> Option<Vec<String>> {
        let missing = |t: &str| {
            assert!(std::env::var_os("CI").is_none(), "CI needs {t}");
            eprintln!("skipping: {t} is not installed");
        };
        let Some(raw) = pipe(tool, &["-dc"], out) else {
            missing(tool);
            return None;
        };
        assert!(raw.status.success(), "{tool} -dc failed");
        assert_eq!(parse(&raw.stdout).0, parse(&one_archive(plan)).0);
        let Some(listed) = pipe("cpio", &["-t", "--quiet"], raw.stdout) else {
            missing("cpio");
            return None;
        };
        assert!(listed.status.success(), "cpio -t failed");
        Some(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_threads() {
        let plan = plan(false);
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4] {
            let (one, _) = write(&plan, &options(c, 1, None));
            for threads in [2, 5] {
                let (many, _) = write(&plan, &options(c, threads, None));
                assert!(one == many, "{c:?}: {threads} threads differ from one");
            }
        }
    }

    #[test]
    fn lz4_and_cpio_list_every_member() {
        // An independent reader of the legacy format: the lz4 tool decompresses the
        // concatenated streams (a repeated magic number starts the next one), cpio lists the
        // one archive they form.
        let plan = plan(false);
        let (out, _) = write(&plan, &options(Compression::Lz4, 2, None));
        assert!(out.starts_with(&LZ4_LEGACY_MAGIC.to_le_bytes()));
        let Some(names) = tool_listing(&plan, out, "lz4") else {
            return;
        };
        assert_eq!(names.len(), parse(&one_archive(&plan)).0.len());
    }

    #[test]
    fn lz4_blocks_hold_at_most_what_the_kernel_unpacks() {
        // A chunk larger than 8 MiB (not with kiln's limits, but with these) is cut into
        // blocks of at most 8 MiB; a large entry is cut into chunks of its own, in parallel.
        let limits = Limits {
            chunk: 12 << 20,
            stream_above: 12 << 20,
        };
        let big = words(7, 11 << 20);
        let plan = [Part::Loose(vec![
            (Entry::dir("d", 0o755, 0), Vec::new()),
            (Entry::file("d/big", 0o644, big.len() as u64, 0), big),
        ])];
        let (out, _) = write_with(&plan, &options(Compression::Lz4, 2, None), limits);
        let (raw, blocks) = unlz4_blocks(&out).expect("unlz4");
        assert_eq!(blocks, 2, "11 MiB in blocks of at most 8 MiB");
        assert_eq!(parse(&raw).0, parse(&one_archive(&plan)).0);

        // With the test limits, `big` (20,000 bytes) spans several chunks of 4096 bytes: its
        // blocks end inside the entry, and every one is a stream of its own.
        let plan = [Part::Segment("a".into(), tree("lib", 1))];
        let (out, _) = write(&plan, &options(Compression::Lz4, 3, None));
        let (raw, blocks) = unlz4_blocks(&out).expect("unlz4");
        let streams = out
            .windows(4)
            .filter(|w| *w == LZ4_LEGACY_MAGIC.to_le_bytes())
            .count();
        assert!(
            blocks > 8 && streams >= blocks,
            "{blocks} blocks, {streams} streams"
        );
        assert_eq!(parse(&raw).0, parse(&one_archive(&plan)).0);
    }

    #[test]
    fn unlz4_refuses_what_the_kernel_would() {
        let (out, _) = write(&plan(false), &options(Compression::Lz4, 1, None));
        assert!(unlz4(&out).is_ok());
        assert!(unlz4(&out[4..]).is_err(), "no magic number");
        assert!(unlz4(&out[..out.len() - 1]).is_err(), "cut short");
        let mut bad = out.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unlz4(&bad).is_err(), "a block longer than the input");
    }

    /// Text-like bytes: numbered words, some binary.
    fn words(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let n = (x >> 33) % 900;
            v.extend(format!("w{n}{} ", if n.is_multiple_of(7) { "\n" } else { "" }).as_bytes());
            if (x >> 20).is_multiple_of(11) {
                v.extend(&x.to_le_bytes()[5..]);
            }
        }
        v.truncate(len);
        v
    }

    #[test]
    fn blocks_do_not_depend_on_the_buffer_they_are_written_to() {
        // zlib-rs cuts its output differently when the output space runs out mid-block.
        let raw = words(1, 1 << 20);
        for last in [false, true] {
            let mut outputs = Vec::new();
            for capacity in [0, 1000, 600_000, 4 << 20] {
                let mut c = Compressor::new(Compression::Gzip);
                let job = Job::Deflate {
                    raw: raw.clone(),
                    dict: raw[..DEFLATE_WINDOW].to_vec(),
                    last,
                };
                outputs.push(c.run(job, Vec::with_capacity(capacity)).0.expect("deflate"));
            }
            assert!(outputs.windows(2).all(|w| w[0] == w[1]), "last: {last}");
        }
    }

    #[test]
    fn unchanged_segments_are_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("segments");
        let c = Compression::Gzip;
        let (first, stats) = write(&plan(false), &options(c, 2, Some(&cache)));
        assert_eq!((stats.stored, stats.reused), (3, 0));
        let (no_cache, _) = write(&plan(false), &options(c, 2, None));
        assert!(first == no_cache, "the cache changed the output");
        let (again, stats) = write(&plan(false), &options(c, 1, Some(&cache)));
        assert_eq!((stats.stored, stats.reused), (0, 3));
        assert!(again == first, "a reused build differs");
        // One segment changed: only it is compressed again.
        let (changed, stats) = write(&plan(true), &options(c, 2, Some(&cache)));
        assert_eq!((stats.stored, stats.reused), (1, 2));
        let (fresh, _) = write(&plan(true), &options(c, 2, None));
        assert!(changed == fresh, "a partly reused build differs");
        let files = std::fs::read_dir(&cache).expect("cache").count();
        assert_eq!(files, 4, "no temporary files are left");
        // Another compression never takes these segments.
        let (lz4, stats) = write(&plan(false), &options(Compression::Lz4, 2, Some(&cache)));
        assert_eq!((stats.stored, stats.reused), (3, 0));
        let (again, stats) = write(&plan(false), &options(Compression::Lz4, 1, Some(&cache)));
        assert_eq!((stats.stored, stats.reused), (0, 3));
        assert!(again == lz4, "a reused lz4 build differs");
    }

    #[test]
    fn corrupt_cache_entries_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = dir.path().join("segments");
        let c = Compression::Zstd;
        let (first, _) = write(&plan(false), &options(c, 2, Some(&cache)));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cache)
            .expect("cache")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        // One byte flipped in one entry, another entry truncated.
        let mut data = std::fs::read(&files[0]).expect("read");
        let mid = data.len() / 2;
        data[mid] ^= 0x40;
        std::fs::write(&files[0], &data).expect("write");
        let data = std::fs::read(&files[1]).expect("read");
        std::fs::write(&files[1], &data[..data.len() - 41]).expect("write");
        let (second, stats) = write(&plan(false), &options(c, 2, Some(&cache)));
        assert_eq!((stats.corrupt, stats.stored, stats.reused), (2, 2, 1));
        assert!(second == first, "a corrupt cache entry reached the output");
        let (_, stats) = write(&plan(false), &options(c, 2, Some(&cache)));
        assert_eq!((stats.corrupt, stats.reused), (0, 3));
    }

    #[test]
    fn misuse_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let opts = options(Compression::Gzip, 1, Some(dir.path()));
        let mut w = InitrdWriter::with_limits(Vec::new(), &opts, LIMITS).expect("writer");
        assert!(w.end_segment().is_err());
        w.begin_segment("k").expect("begin");
        assert!(w.begin_segment("k2").is_err());
        w.end_segment().expect("end");
        assert_eq!(w.begin_segment("k").expect("begin"), Segment::Reuse);
        let e = Entry::file("x", 0o644, 1, 0);
        assert!(w.add(&e, &mut &b"x"[..]).is_err());
        w.end_segment().expect("end");
        w.begin_segment("other").expect("begin");
        assert!(w.finish().is_err());
    }

    #[test]
    fn cleaning_removes_old_and_abandoned_entries() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
        for (name, aged) in [
            ("a", true),
            ("b", false),
            (".tmp-x", true),
            (".tmp-y", false),
        ] {
            let f = File::create(dir.path().join(name)).expect("create");
            f.set_len(10).expect("len");
            if aged {
                f.set_modified(old).expect("mtime");
            }
        }
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        let stats = clean_segment_cache(dir.path(), week).expect("clean");
        assert_eq!(
            stats,
            CleanStats {
                files: 2,
                bytes: 20
            }
        );
        let stats = clean_segment_cache(dir.path(), None).expect("clean");
        assert_eq!(stats.files, 1, "the young temporary file stays");
        assert!(dir.path().join(".tmp-y").exists());
        let missing = dir.path().join("missing");
        assert_eq!(clean_segment_cache(&missing, None).expect("clean").files, 0);
    }
}
