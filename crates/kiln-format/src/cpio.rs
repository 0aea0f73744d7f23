//! A [`Sink`] that writes a newc ("070701") cpio archive, the format the Linux kernel unpacks as
//! an initramfs, and the newc encoding the initrd writer shares.
//!
//! Hard links become symlinks to the absolute target: in newc a hard link must be announced by
//! the link count of the file it links to, which a streaming writer cannot know in advance. So
//! every file has one link, and inode numbers only need to be distinct within what one writer
//! writes (the kernel looks inode numbers up for files with several links only).

use kiln_fs::{Entry, Kind, Sink};
use std::io::{self, Read, Write};

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFIFO: u32 = 0o010_000;

/// The name of the record that ends an archive.
pub(crate) const TRAILER: &str = "TRAILER!!!";

/// Zero bytes that pad a record part of `len` bytes to a multiple of four.
pub(crate) fn padding(len: u64) -> &'static [u8] {
    let pad = (4 - (len % 4)) % 4;
    &[0u8; 3][..usize::try_from(pad).unwrap_or(0)]
}

/// The body that follows an entry's header.
pub(crate) enum Body {
    /// `n` bytes of file data, read from the entry's data.
    Data(u64),
    /// A symlink's target.
    Inline(Vec<u8>),
    /// Nothing.
    Empty,
}

impl Body {
    /// The body's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Body::Data(n) => *n,
            Body::Inline(v) => v.len() as u64,
            Body::Empty => 0,
        }
    }
}

/// How `e` is written: its file type and permission bits, its device numbers and its body.
pub(crate) fn record(e: &Entry) -> (u32, (u32, u32), Body) {
    let perm = e.mode & 0o7777;
    match &e.kind {
        Kind::File => (S_IFREG | perm, (0, 0), Body::Data(e.size)),
        Kind::Dir => (S_IFDIR | perm, (0, 0), Body::Empty),
        Kind::Symlink(t) => (S_IFLNK | 0o777, (0, 0), Body::Inline(t.as_bytes().to_vec())),
        Kind::Hardlink(t) => (
            S_IFLNK | 0o777,
            (0, 0),
            Body::Inline(format!("/{t}").into_bytes()),
        ),
        Kind::Char { major, minor } => (S_IFCHR | perm, (*major, *minor), Body::Empty),
        Kind::Block { major, minor } => (S_IFBLK | perm, (*major, *minor), Body::Empty),
        Kind::Fifo => (S_IFIFO | perm, (0, 0), Body::Empty),
    }
}

/// Write the header of an entry named `name` (the header, the name and the padding after it):
/// `out` must be at a multiple of four bytes from the archive's start, and is again after the
/// header. Returns the bytes written.
pub(crate) fn write_header(
    out: &mut dyn Write,
    ino: u32,
    name: &str,
    mode: u32,
    e: &Entry,
    size: u64,
    rdev: (u32, u32),
) -> io::Result<u64> {
    let size32 = u32::try_from(size).map_err(|_| {
        io::Error::other(format!(
            "{name}: {size} bytes is too large for a cpio archive (4 GiB at most)"
        ))
    })?;
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let namesize = name.len() + 1;
    let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
    let h = format!(
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        ino,
        mode,
        clamp(e.uid),
        clamp(e.gid),
        nlink,
        clamp(e.mtime),
        size32,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize,
        0
    );
    let len = (h.len() + namesize) as u64;
    let pad = padding(len);
    out.write_all(h.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(pad)?;
    Ok(len + pad.len() as u64)
}

/// Write the archive's trailer. Returns the bytes written.
pub(crate) fn write_trailer(out: &mut dyn Write) -> io::Result<u64> {
    let e = Entry::file(TRAILER, 0, 0, 0);
    write_header(out, 0, TRAILER, 0, &e, 0, (0, 0))
}

/// Write one entry (header, body and padding) with inode number `ino`. Returns the bytes
/// written.
pub(crate) fn write_entry(
    out: &mut dyn Write,
    ino: u32,
    e: &Entry,
    data: &mut dyn Read,
) -> io::Result<u64> {
    let (mode, rdev, body) = record(e);
    let size = body.len();
    let mut written = write_header(out, ino, &e.path, mode, e, size, rdev)?;
    match body {
        Body::Data(n) => {
            let copied = io::copy(&mut data.take(n), out)?;
            if copied != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: expected {n} bytes, got {copied}", e.path),
                ));
            }
        }
        Body::Inline(v) => out.write_all(&v)?,
        Body::Empty => {}
    }
    let pad = padding(size);
    out.write_all(pad)?;
    written += size + pad.len() as u64;
    Ok(written)
}

/// Writes entries as one uncompressed newc cpio archive.
pub struct CpioSink<W: Write> {
    out: W,
    ino: u32,
}

impl<W: Write> CpioSink<W> {
    /// A cpio writer on `w`.
    pub fn new(out: W) -> Self {
        CpioSink { out, ino: 0 }
    }

    /// Write the trailer and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        write_trailer(&mut self.out)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Sink for CpioSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.ino += 1;
        write_entry(&mut self.out, self.ino, e, data).map(|_| ())
    }
}

/// One entry as [`parse`] reads it back.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) name: String,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: u32,
    pub(crate) rdev: (u32, u32),
    pub(crate) body: Vec<u8>,
}

/// A reader of newc archives, for tests: every entry of `data` (which may hold several
/// archives one after the other), without trailers and inode numbers; also the number of
/// trailers seen.
#[cfg(test)]
pub(crate) fn parse(mut data: &[u8]) -> (Vec<Parsed>, usize) {
    let mut out = Vec::new();
    let mut trailers = 0;
    let mut offset = 0usize;
    while !data.is_empty() {
        if data[0] == 0 {
            data = &data[1..];
            offset += 1;
            continue;
        }
        assert_eq!(
            offset % 4,
            0,
            "a header at offset {offset}, not a multiple of 4"
        );
        assert_eq!(&data[..6], b"070701", "no newc magic at offset {offset}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&data[6 + 8 * i..14 + 8 * i]).expect("hex");
            u32::from_str_radix(s, 16).expect("hex")
        };
        let size = field(6) as usize;
        let namesize = field(11) as usize;
        let name = String::from_utf8(data[110..110 + namesize - 1].to_vec()).expect("name");
        let body_start = (110 + namesize).div_ceil(4) * 4;
        let entry = Parsed {
            name,
            mode: field(1),
            uid: field(2),
            gid: field(3),
            mtime: field(5),
            rdev: (field(9), field(10)),
            body: data[body_start..body_start + size].to_vec(),
        };
        let next = (body_start + size).div_ceil(4) * 4;
        data = &data[next..];
        offset += next;
        if entry.name == TRAILER {
            trailers += 1;
        } else {
            out.push(entry);
        }
    }
    (out, trailers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_padded_and_parsed_back() {
        let mut sink = CpioSink::new(Vec::new());
        sink.add(&Entry::dir("a", 0o755, 7), &mut io::empty())
            .expect("dir");
        sink.add(&Entry::file("a/b", 0o644, 5, 7), &mut &b"hello"[..])
            .expect("file");
        sink.add(&Entry::symlink("a/c", "b", 0o777, 7), &mut io::empty())
            .expect("symlink");
        let bytes = sink.finish().expect("finish");
        assert_eq!(bytes.len() % 4, 0);
        let (entries, trailers) = parse(&bytes);
        assert_eq!(trailers, 1);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "a/b", "a/c"]);
        assert_eq!(entries[1].body, b"hello");
        assert_eq!(entries[2].body, b"b");
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
    }
}
