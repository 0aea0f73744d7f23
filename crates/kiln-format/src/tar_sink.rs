//! A [`Sink`] that writes a tar archive (GNU long names, PAX for extended attributes).

use kiln_fs::{Entry, Kind, Sink};
use std::io::{self, Read, Write};

/// Writes entries as a tar archive.
pub struct TarSink<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarSink<W> {
    /// A tar writer on `w`.
    pub fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Complete);
        TarSink { builder }
    }

    /// Write the end-of-archive marker and return the writer.
    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}

impl<W: Write> Sink for TarSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if !e.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
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
