//! [`IsoSink`]: a whole root file system from the entry stream as an ISO 9660 image with
//! Rock Ridge, for Linux to mount as its root.

use super::{Attr, FileSource, IsoBuilder, Kind, Node, SharedFile};
use crate::squashfs::tree::{Meta, NodeKind, Tree};
use kiln_fs::{Entry, Sink};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::Arc;

/// A [`Sink`] that writes the entry stream as an ISO 9660 image with Rock Ridge: every
/// path with its type, permission bits (with setuid, setgid, sticky), owner, group, link
/// count and modification time (`PX`, `TF`), symbolic link targets (`SL`), device numbers
/// (`PN`), fifos; hard-linked paths share one copy of the data.
///
/// The stream is read as extracting it as a tar archive would: a later entry for a path
/// replaces the earlier one, a directory given again keeps its children, missing parent
/// directories are created (root-owned, 0755, at the sink's `mtime`). File contents are
/// spilled to one anonymous temporary file as they arrive, so memory holds only the tree's
/// metadata; [`IsoSink::finish`] writes the image sequentially, copying the contents from
/// there. Names are sorted, every time comes from an entry or from `mtime`: the same stream
/// gives the same bytes.
///
/// Not stored: extended attributes (Linux's ISO 9660 driver reads none), files of 4 GiB or
/// more (refused: they need multi-extent files).
///
/// ```no_run
/// use kiln_format::iso9660::IsoSink;
/// use kiln_fs::{Entry, Sink};
/// let out = std::fs::File::create("root.iso")?;
/// let mut iso = IsoSink::new(out, "KILN_ROOT", 1_700_000_000)?;
/// iso.add(&Entry::file("etc/hostname", 0o644, 5, 1_700_000_000), &mut &b"kiln\n"[..])?;
/// let _file = iso.finish()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IsoSink<W: Write> {
    out: W,
    volume_id: String,
    mtime: u64,
    tree: Tree<(u64, u64)>,
    spill: BufWriter<File>,
    spill_len: u64,
    /// Entries whose extended attributes were dropped.
    dropped_xattrs: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<W: Write> IsoSink<W> {
    /// A sink writing to `out` an image with volume identifier `volume_id` (at most 32
    /// printable ASCII characters) built at `mtime` (seconds since the epoch, as
    /// `SOURCE_DATE_EPOCH`): the time of the volume and of directories the stream does not
    /// name.
    pub fn new(out: W, volume_id: &str, mtime: u64) -> io::Result<Self> {
        // Checks the volume id now rather than at the end.
        IsoBuilder::new(volume_id, mtime).map_err(io::Error::other)?;
        Ok(IsoSink {
            out,
            volume_id: volume_id.to_string(),
            mtime,
            tree: Tree::new(mtime),
            spill: BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?),
            spill_len: 0,
            dropped_xattrs: 0,
        })
    }

    /// Write the image; returns the output, after the image's last byte.
    pub fn finish(mut self) -> io::Result<W> {
        let spill = self.spill.into_inner().map_err(|e| e.into_error())?;
        let spill = SharedFile(Arc::new(spill));
        if self.dropped_xattrs > 0 {
            tracing::warn!(
                entries = self.dropped_xattrs,
                "ISO 9660 stores no extended attributes: those of {} entries are left out",
                self.dropped_xattrs
            );
        }
        let b = build(&self.tree, &self.volume_id, self.mtime, &spill)?;
        b.write(&mut self.out).map_err(io::Error::other)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn spill_file(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<(u64, u64)> {
        let offset = self.spill_len;
        let got = io::copy(&mut data.take(e.size), &mut self.spill)?;
        if got != e.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: the data ended after {got} of its {} bytes",
                    e.path, e.size
                ),
            ));
        }
        self.spill_len += got;
        Ok((offset, got))
    }
}

impl<W: Write> Sink for IsoSink<W> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if matches!(e.kind, kiln_fs::Kind::File) && e.size > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "{}: a file of {} bytes; ISO 9660 images hold files below 4 GiB \
                 (use a squashfs or erofs root for larger files)",
                e.path, e.size
            )));
        }
        for (what, id) in [("uid", e.uid), ("gid", e.gid)] {
            if u32::try_from(id).is_err() {
                return Err(invalid(format!(
                    "{}: {what} {id} does not fit Rock Ridge's 32 bits",
                    e.path
                )));
            }
        }
        if !e.xattrs.is_empty() {
            self.dropped_xattrs += 1;
        }
        let mut tree = std::mem::replace(&mut self.tree, Tree::new(0));
        let r = tree.add(e, || self.spill_file(e, data));
        self.tree = tree;
        r
    }
}

/// The builder holding `tree`, file contents in `spill`.
#[allow(clippy::cast_possible_truncation)] // ids are checked when added, sizes below 4 GiB
fn build(
    tree: &Tree<(u64, u64)>,
    volume_id: &str,
    mtime: u64,
    spill: &SharedFile,
) -> io::Result<IsoBuilder> {
    let mut b = IsoBuilder::new(volume_id, mtime).map_err(io::Error::other)?;
    let order = tree.order();
    let links = tree.nlinks(&order);
    let attr = |t: usize| {
        let Meta {
            perm,
            uid,
            gid,
            mtime,
            ..
        } = tree.nodes[t].meta;
        Attr {
            perm,
            uid: uid as u32,
            gid: gid as u32,
            mtime,
            nlink: links[t],
        }
    };
    b.nodes[0].attr = Some(attr(0));
    // Breadth first, as the image's directories are laid out: the first name of a file
    // (in that order) holds its data, later names link to it.
    let mut first: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([(0usize, 0usize)]);
    while let Some((t, node)) = queue.pop_front() {
        let NodeKind::Dir(children) = &tree.nodes[t].kind else {
            continue;
        };
        for (name, &c) in children {
            let id = b.nodes.len();
            let path = if b.nodes[node].path.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", b.nodes[node].path)
            };
            let kind = match &tree.nodes[c].kind {
                NodeKind::Dir(_) => {
                    queue.push_back((c, id));
                    Kind::Dir(BTreeMap::new())
                }
                NodeKind::File((offset, len)) => match first.get(&c) {
                    Some(&primary) => Kind::Link(primary),
                    None => {
                        first.insert(c, id);
                        Kind::File(FileSource::Range {
                            file: spill.clone(),
                            offset: *offset,
                            len: *len,
                        })
                    }
                },
                NodeKind::Symlink(target) => Kind::Symlink(target.clone()),
                NodeKind::Char(major, minor) => Kind::Device {
                    block: false,
                    major: *major,
                    minor: *minor,
                },
                NodeKind::Block(major, minor) => Kind::Device {
                    block: true,
                    major: *major,
                    minor: *minor,
                },
                NodeKind::Fifo => Kind::Fifo,
            };
            if let Kind::Dir(children) = &mut b.nodes[node].kind {
                children.insert(name.clone(), id);
            }
            b.nodes.push(Node {
                name: name.clone(),
                path,
                parent: node,
                kind,
                attr: Some(attr(c)),
            });
        }
    }
    Ok(b)
}
