//! The initrd writer: the entry stream as a newc cpio archive cut into independently
//! compressed members (concatenated, as the kernel unpacks them), compressed on every core,
//! with segments cached by key.
//!
//! The archive is cut at entry boundaries into chunks of about [`Limits::chunk`] bytes; each
//! chunk is one gzip member or zstd frame, compressed by a pool of threads and written in
//! order. Where a chunk ends depends only on the entries, so the bytes do not depend on the
//! number of threads. Decompressed and concatenated, the members form one newc archive with
//! one trailer at its end: `zcat initrd.img | cpio -t` lists everything, and the kernel
//! accepts it (every member ends at an entry boundary, as its unpacker requires).
//!
//! A producer may announce segments ([`Sink::begin_segment`]): a segment starts a new chunk
//! and its compressed bytes are stored in the cache directory under a name derived from its
//! key, the compression and this format's version. When a later build announces the same key,
//! the stored bytes are checked against their digest and copied instead of the entries being
//! sent and compressed again. A cache entry that fails the check is removed and rebuilt.
//!
//! A cache entry is the compressed bytes followed by their SHA-256 and [`MAGIC`]; it is
//! written under a temporary name, synced and renamed, so two builds may share a cache.

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

/// The version of the cached segment format; part of every cache key. Change it whenever the
/// bytes written for the same entries change (encoding, chunking, compression parameters).
const VERSION: &str = "kiln initrd segment 1";
/// The last bytes of a cache entry.
const MAGIC: &[u8; 8] = b"KILNSEG1";
/// The zstd level.
const ZSTD_LEVEL: i32 = 9;
/// Where a store keeps its initrd segments (see [`segment_cache_dir`]).
const CACHE_DIR: &str = "initrd-segments";
/// Temporary files in the cache directory start with this.
const TMP_PREFIX: &str = ".tmp-";

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
    /// Compression threads; 0 for as many as the process may run on at once.
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
    /// An entry whose body is larger is compressed on its own, streamed (it is never held in
    /// memory); a chunk ends before an entry that would make it longer.
    pub(crate) stream_above: u64,
}

impl Limits {
    fn for_compression(c: Compression) -> Self {
        // zstd gains from larger frames (its window is larger than deflate's 32 KiB).
        let chunk = match c {
            Compression::Zstd => 4 << 20,
            Compression::Gzip | Compression::None => 1 << 20,
        };
        Limits {
            chunk,
            stream_above: 2 * chunk as u64,
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

/// Writes the entry stream as concatenated compressed newc members (see the module docs).
pub struct InitrdWriter<W: Write> {
    out: Output<W>,
    compression: Compression,
    limits: Limits,
    pool: Option<Pool>,
    /// The zstd context of the calling thread (one thread, or streamed entries).
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// The inode number of the last entry; restarts at every segment boundary, so that a
    /// segment's bytes do not depend on what came before it.
    ino: u32,
    next_seq: u64,
    next_out: u64,
    done: BTreeMap<u64, Vec<u8>>,
    inflight: usize,
    max_inflight: usize,
    cache: Option<PathBuf>,
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
            (_, 0) => std::thread::available_parallelism().map_or(1, usize::from),
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
            zstd: None,
            buf: Vec::with_capacity(limits.chunk + (64 << 10)),
            ino: 0,
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            inflight: 0,
            max_inflight: threads + 1,
            cache: options.cache.clone(),
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

    /// Hand the chunk being filled to the compressors.
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.limits.chunk + (64 << 10)),
        );
        if self.pool.is_none() {
            let c = compress(self.compression, raw, &mut self.zstd)?;
            return self.out.write_all(&c);
        }
        while self.inflight >= self.max_inflight {
            self.receive()?;
        }
        if let Some(pool) = &self.pool {
            pool.submit(self.next_seq, raw)?;
        }
        self.next_seq += 1;
        self.inflight += 1;
        Ok(())
    }

    /// Wait for one compressed chunk and write out every chunk that is next in order.
    fn receive(&mut self) -> io::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let (seq, chunk) = pool.receive()?;
        self.done.insert(seq, chunk?);
        while let Some(c) = self.done.remove(&self.next_out) {
            self.out.write_all(&c)?;
            self.next_out += 1;
            self.inflight -= 1;
        }
        Ok(())
    }

    /// Wait until every chunk handed out is written.
    fn drain(&mut self) -> io::Result<()> {
        while self.inflight > 0 {
            self.receive()?;
        }
        Ok(())
    }

    /// An entry too large for a chunk: compressed as a member of its own, streamed, on this
    /// thread, after everything before it is written.
    fn stream_entry(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.flush_chunk()?;
        self.drain()?;
        self.ino = self.ino.wrapping_add(1);
        let ino = self.ino;
        let out = BufWriter::with_capacity(256 << 10, &mut self.out);
        match self.compression {
            Compression::Gzip => {
                let mut enc = gzip_builder().write(out, flate2::Compression::default());
                cpio::write_entry(&mut enc, ino, e, data)?;
                enc.finish()?.flush()
            }
            Compression::Zstd => {
                let (mode, rdev, body) = cpio::record(e);
                let mut header = Vec::new();
                cpio::write_header(&mut header, ino, &e.path, mode, e, body.len(), rdev)?;
                let total =
                    header.len() as u64 + body.len() + cpio::padding(body.len()).len() as u64;
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                enc.include_checksum(true)?;
                enc.set_pledged_src_size(Some(total))?;
                cpio::write_entry(&mut enc, ino, e, data)?;
                enc.finish()?.flush()
            }
            Compression::None => {
                let mut out = out;
                cpio::write_entry(&mut out, ino, e, data)?;
                out.flush()
            }
        }
    }

    /// The cache entry of the segment `key`.
    fn cache_path(&self, dir: &Path, key: &str) -> PathBuf {
        let mut h = Sha256::new();
        for part in [
            VERSION,
            self.compression.name(),
            &self.limits.chunk.to_string(),
            &self.limits.stream_above.to_string(),
            key,
        ] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        dir.join(hex::encode(h.finalize()))
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
            return self.stream_entry(e, data);
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
        let path = self.cache_path(&dir, key);
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
}

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
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.hash.update(buf);
        self.tmp.write_all(buf)
    }

    fn commit(mut self) -> io::Result<()> {
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

fn gzip_builder() -> flate2::GzBuilder {
    flate2::GzBuilder::new().mtime(0)
}

/// One chunk compressed as one member.
fn compress(
    c: Compression,
    raw: Vec<u8>,
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
) -> io::Result<Vec<u8>> {
    let mut out = match c {
        Compression::None => return Ok(raw),
        Compression::Gzip => {
            let mut enc = gzip_builder().write(
                Vec::with_capacity(raw.len() / 2 + 64),
                flate2::Compression::default(),
            );
            enc.write_all(&raw)?;
            enc.finish()?
        }
        Compression::Zstd => {
            let ctx = match zstd {
                Some(ctx) => ctx,
                None => {
                    let mut ctx = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
                    ctx.include_checksum(true)?;
                    zstd.insert(ctx)
                }
            };
            ctx.compress(&raw)?
        }
    };
    out.shrink_to_fit();
    Ok(out)
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// Compression threads: chunks in, compressed chunks out (in any order, numbered).
struct Pool {
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(c: Compression, threads: usize) -> io::Result<Self> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
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

    fn submit(&self, seq: u64, raw: Vec<u8>) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send((seq, raw)).ok())
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

fn worker(c: Compression, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    let mut zstd = None;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, raw)) = job else {
            return;
        };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compress(c, raw, &mut zstd)))
                .unwrap_or_else(|_| Err(io::Error::other("an initrd compression thread failed")));
        if done.send((seq, result)).is_err() {
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
        let big = bytes(seed, 20_000);
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
        let mut w = InitrdWriter::with_limits(Vec::new(), options, LIMITS).expect("writer");
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
            Compression::None => raw = data.to_vec(),
        }
        raw
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
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
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

    #[test]
    fn cpio_lists_every_member() {
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            assert!(std::env::var_os("CI").is_none(), "CI needs cpio");
            eprintln!("skipping: cpio is not installed");
            return;
        };
        let plan = plan(false);
        let (out, _) = write(&plan, &options(Compression::Gzip, 2, None));
        let raw = decompress(Compression::Gzip, &out);
        let mut stdin = child.stdin.take().expect("stdin");
        let feeder = std::thread::spawn(move || stdin.write_all(&raw));
        let listed = child.wait_with_output().expect("cpio");
        feeder.join().expect("feeder").expect("write");
        assert!(listed.status.success());
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let want: Vec<String> = parse(&one_archive(&plan))
            .0
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, want);
    }

    #[test]
    fn bytes_do_not_depend_on_the_number_of_threads() {
        let plan = plan(false);
        for c in [Compression::Gzip, Compression::Zstd] {
            let (one, _) = write(&plan, &options(c, 1, None));
            for threads in [2, 5] {
                let (many, _) = write(&plan, &options(c, threads, None));
                assert!(one == many, "{c:?}: {threads} threads differ from one");
            }
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
