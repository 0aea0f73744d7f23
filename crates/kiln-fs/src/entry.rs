//! The entry stream: the interface between assembly and the output writers.
//!
//! Assembly produces the root filesystem as a sequence of [`Entry`] values, each followed by its
//! data; a [`Sink`] (a tar writer, a cpio writer, ...) consumes them one at a time. Parents always
//! come before their children. Nothing is buffered: data flows from the layer blob to the output.

use std::io::{self, Read};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file; its data follows.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
    /// A hard link to an earlier entry (a path relative to the root).
    Hardlink(String),
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One file system entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the root, without leading or trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits (including setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Size of the data that follows (regular files only).
    pub size: u64,
    /// Extended attributes (such as `security.capability`).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A root-owned entry of `kind` with no data and no extended attributes.
    pub fn new(path: impl Into<String>, kind: Kind, mode: u32, mtime: u64) -> Self {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            xattrs: Vec::new(),
        }
    }

    /// A directory entry.
    pub fn dir(path: impl Into<String>, mode: u32, mtime: u64) -> Self {
        Entry::new(path, Kind::Dir, mode, mtime)
    }

    /// A regular file entry of `size` bytes.
    pub fn file(path: impl Into<String>, mode: u32, size: u64, mtime: u64) -> Self {
        Entry {
            size,
            ..Entry::new(path, Kind::File, mode, mtime)
        }
    }

    /// A symlink entry.
    pub fn symlink(
        path: impl Into<String>,
        target: impl Into<String>,
        mode: u32,
        mtime: u64,
    ) -> Self {
        Entry::new(path, Kind::Symlink(target.into()), mode, mtime)
    }

    /// This entry (its kind, mode, size and data) under another path, root-owned, at `mtime`,
    /// without extended attributes.
    pub fn moved_to(&self, path: impl Into<String>, mtime: u64) -> Self {
        Entry {
            size: self.size,
            ..Entry::new(path, self.kind.clone(), self.mode, mtime)
        }
    }
}

/// What a sink does with a segment announced by [`Sink::begin_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// Send the segment's entries as usual.
    Emit,
    /// The sink already has the segment's output (it cached it): the producer skips the
    /// segment's entries and goes on with [`Sink::end_segment`].
    Reuse,
}

/// Where the entries that follow come from, for outputs that record it (the tar format writes
/// it as PAX records on every entry, as LinuxKit does, so that a later build can reuse them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The image reference the entries come from (normalised, as `docker.io/library/alpine:3.19`),
    /// or a name for generated entries (`linuxkit.files`, `linuxkit.volumes`).
    pub source: String,
    /// Where in the manifest: `kernel`, `init[0]`, `volumes[1]`, `onboot[2]`, `services[0]`,
    /// `files[3]`, ...
    pub location: String,
    /// The digest of the image's manifest, when the entries come from an image.
    pub digest: Option<String>,
    /// The digest of the key of the segment the entries belong to, when they form a segment
    /// whose key determines them completely (see [`Sink::begin_segment`]).
    pub segment: Option<String>,
}

/// Consumes the entry stream.
///
/// A producer may group entries into segments: [`Sink::begin_segment`], the segment's entries,
/// [`Sink::end_segment`]. A segment's key determines its entries completely (two segments with
/// equal keys consist of the same entries with the same data, in the same order), so a sink
/// that caches its output per segment may answer [`Segment::Reuse`]. Segments do not nest.
/// Sinks that do not cache ignore segments.
pub trait Sink {
    /// Add one entry; `data` yields exactly `entry.size` bytes for regular files.
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()>;

    /// The entries up to the next [`Sink::end_segment`] form a segment identified by `key`.
    /// On [`Segment::Reuse`] the producer sends none of them.
    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        let _ = key;
        Ok(Segment::Emit)
    }

    /// The segment begun last is complete (or was skipped).
    fn end_segment(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The entries added from now on come from `origin` (none: unknown). Sinks that do not
    /// record origins ignore it.
    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        let _ = origin;
        Ok(())
    }
}

/// Implements [`Sink`] for a type by handing every call to one of its fields, itself a sink:
/// `kiln_fs::forward_sink!(Writer => inner);` (a tuple struct names its field `0`).
#[macro_export]
macro_rules! forward_sink {
    ($ty:ty => $field:tt) => {
        impl $crate::Sink for $ty {
            fn add(
                &mut self,
                entry: &$crate::Entry,
                data: &mut dyn ::std::io::Read,
            ) -> ::std::io::Result<()> {
                $crate::Sink::add(&mut self.$field, entry, data)
            }
            fn begin_segment(&mut self, key: &str) -> ::std::io::Result<$crate::Segment> {
                $crate::Sink::begin_segment(&mut self.$field, key)
            }
            fn end_segment(&mut self) -> ::std::io::Result<()> {
                $crate::Sink::end_segment(&mut self.$field)
            }
            fn set_origin(&mut self, origin: Option<&$crate::Origin>) -> ::std::io::Result<()> {
                $crate::Sink::set_origin(&mut self.$field, origin)
            }
        }
    };
}

impl<S: Sink + ?Sized> Sink for &mut S {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        (**self).add(entry, data)
    }
    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        (**self).begin_segment(key)
    }
    fn end_segment(&mut self) -> io::Result<()> {
        (**self).end_segment()
    }
    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        (**self).set_origin(origin)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        (**self).add(entry, data)
    }
    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        (**self).begin_segment(key)
    }
    fn end_segment(&mut self) -> io::Result<()> {
        (**self).end_segment()
    }
    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        (**self).set_origin(origin)
    }
}

/// A sink that records entries and the sha256-free content, for tests and listings.
#[derive(Debug, Default)]
pub struct Collect {
    /// Every entry with its data, in order.
    pub entries: Vec<(Entry, Vec<u8>)>,
}

impl Sink for Collect {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut buf = Vec::new();
        data.take(entry.size).read_to_end(&mut buf)?;
        self.entries.push((entry.clone(), buf));
        Ok(())
    }
}
