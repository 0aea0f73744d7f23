//! A [`Sink`] that writes a newc ("070701") cpio archive, the format the Linux kernel unpacks as
//! an initramfs.
//!
//! Hard links become symlinks to the absolute target: in newc a hard link must be announced by
//! the link count of the file it links to, which a streaming writer cannot know in advance.

use kiln_assemble::{Entry, Kind, Sink};
use std::io::{self, Read, Write};

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFIFO: u32 = 0o010_000;

/// Writes entries as a newc cpio archive.
pub struct CpioSink<W: Write> {
    out: W,
    ino: u32,
    offset: u64,
}

impl<W: Write> CpioSink<W> {
    /// A cpio writer on `w`.
    pub fn new(out: W) -> Self {
        CpioSink {
            out,
            ino: 0,
            offset: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.offset % 4)) % 4;
        if pad > 0 {
            self.out
                .write_all(&[0u8; 3][..usize::try_from(pad).unwrap_or(0)])?;
            self.offset += pad;
        }
        Ok(())
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        e: &Entry,
        size: u64,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::other(format!(
                "{name}: {size} bytes is too large for a cpio archive (4 GiB at most)"
            ))
        })?;
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        self.ino += 1;
        let namesize = name.len() + 1;
        let h = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            clamp(e.uid),
            clamp(e.gid),
            if mode & S_IFDIR == S_IFDIR && mode & S_IFREG == 0 {
                2
            } else {
                1
            },
            clamp(e.mtime),
            size32,
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.offset += (h.len() + namesize) as u64;
        self.pad()
    }

    /// Write the trailer and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let e = Entry::file("TRAILER!!!", 0, 0, 0);
        self.header("TRAILER!!!", 0, &e, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Sink for CpioSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let perm = e.mode & 0o7777;
        match &e.kind {
            Kind::File => {
                self.header(&e.path, S_IFREG | perm, e, e.size, (0, 0))?;
                let copied = io::copy(&mut data.take(e.size), &mut self.out)?;
                if copied != e.size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: expected {} bytes, got {copied}", e.path, e.size),
                    ));
                }
                self.offset += copied;
                self.pad()
            }
            Kind::Dir => self.header(&e.path, S_IFDIR | perm, e, 0, (0, 0)),
            Kind::Symlink(t) => self.link(e, t.as_bytes()),
            Kind::Hardlink(t) => self.link(e, format!("/{t}").as_bytes()),
            Kind::Char { major, minor } => {
                self.header(&e.path, S_IFCHR | perm, e, 0, (*major, *minor))
            }
            Kind::Block { major, minor } => {
                self.header(&e.path, S_IFBLK | perm, e, 0, (*major, *minor))
            }
            Kind::Fifo => self.header(&e.path, S_IFIFO | perm, e, 0, (0, 0)),
        }
    }
}

impl<W: Write> CpioSink<W> {
    fn link(&mut self, e: &Entry, target: &[u8]) -> io::Result<()> {
        self.header(&e.path, S_IFLNK | 0o777, e, target.len() as u64, (0, 0))?;
        self.out.write_all(target)?;
        self.offset += target.len() as u64;
        self.pad()
    }
}
