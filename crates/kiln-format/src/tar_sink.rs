//! A [`Sink`] that writes a tar archive (GNU long names, PAX for extended attributes and for
//! the origin of every entry).
//!
//! Each entry whose [`Origin`] is known carries it as PAX records, as LinuxKit writes them:
//! [`PAX_SOURCE`] (the image reference, or `linuxkit.files` ...) and [`PAX_LOCATION`] (`kernel`,
//! `init[0]`, `services[2]` ...), then kiln's own [`PAX_DIGEST`] (the image's manifest digest)
//! and [`PAX_SEGMENT`] (the digest of the key that determines the entry), then the extended
//! attributes. A later build reads them back to reuse the entries (`--input-tar`).

use kiln_fs::{Entry, Kind, Origin, Sink};
use std::io::{self, Read, Write};

/// PAX record naming the source of an entry (an image reference), as LinuxKit writes it.
pub const PAX_SOURCE: &str = "LINUXKIT.source";
/// PAX record naming where in the manifest an entry comes from, as LinuxKit writes it.
pub const PAX_LOCATION: &str = "LINUXKIT.location";
/// kiln's PAX record: the manifest digest of the image an entry comes from.
pub const PAX_DIGEST: &str = "kiln.digest";
/// kiln's PAX record: the digest of the segment key that determines the entry completely.
pub const PAX_SEGMENT: &str = "kiln.segment";
/// The prefix of PAX records holding extended attributes.
pub const PAX_XATTR: &str = "SCHILY.xattr.";

/// Writes entries as a tar archive.
pub struct TarSink<W: Write> {
    builder: tar::Builder<W>,
    origin: Option<Origin>,
}

impl<W: Write> TarSink<W> {
    /// A tar writer on `w`.
    pub fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Complete);
        TarSink {
            builder,
            origin: None,
        }
    }

    /// Write the end-of-archive marker and return the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        self.origin = origin.cloned();
        Ok(())
    }

    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let mut records: Vec<(String, &[u8])> = Vec::new();
        if let Some(o) = &self.origin {
            records.push((PAX_SOURCE.into(), o.source.as_bytes()));
            records.push((PAX_LOCATION.into(), o.location.as_bytes()));
            if let Some(d) = &o.digest {
                records.push((PAX_DIGEST.into(), d.as_bytes()));
            }
            if let Some(s) = &o.segment {
                records.push((PAX_SEGMENT.into(), s.as_bytes()));
            }
        }
        records.extend(
            e.xattrs
                .iter()
                .map(|(k, v)| (format!("{PAX_XATTR}{k}"), v.as_slice())),
        );
        if !records.is_empty() {
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(0);
        let path = if e.kind == Kind::Dir {
            format!("{}/", e.path)
        } else {
            e.path.clone()
        };
        match &e.kind {
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                self.builder.append_data(&mut h, &path, data.take(e.size))
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                self.builder.append_data(&mut h, &path, io::empty())
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                h.set_entry_type(if matches!(e.kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                self.builder.append_link(&mut h, &path, t)
            }
            Kind::Char { major, minor } | Kind::Block { major, minor } => {
                h.set_entry_type(if matches!(e.kind, Kind::Char { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                self.builder.append_data(&mut h, &path, io::empty())
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                self.builder.append_data(&mut h, &path, io::empty())
            }
        }
    }
}
