//! Turning a step's upper directory into a layer: a tar of everything in it, in sorted order,
//! with overlayfs whiteouts (0/0 character devices) written as `.wh.NAME` and opaque directories
//! as `.wh..wh..opq`. The tar is hashed (the diff id) and gzipped into the store as it is
//! written.

use crate::error::{BuildError, io_err};
use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_fs::unpack::opaque_xattr;
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, HashingWriter, Store};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// A layer written to the store.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The compressed blob.
    pub descriptor: Descriptor,
}

/// Whether `upper` holds no changes at all.
pub fn is_empty(upper: &Path) -> Result<bool, BuildError> {
    Ok(fs::read_dir(upper).map_err(io_err(upper))?.next().is_none())
}

/// Tidy a step's upper directory before it becomes a layer: drop overlayfs' bookkeeping
/// attributes, and remove directories that overlayfs only copied up (empty, and with the same
/// mode, owner and times as below), as BuildKit's differ leaves them out too.
pub fn prune_copied_up(upper: &Path, lowers: &[std::path::PathBuf]) -> Result<(), BuildError> {
    let walk = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .contents_first(true);
    for item in walk {
        let item = item.map_err(|e| io_err(upper)(e.into()))?;
        let path = item.path();
        if let Ok(names) = xattr::list(path) {
            for name in names {
                let n = name.to_string_lossy();
                // trusted.* as root, user.* in a user namespace (`userxattr`).
                let overlay = n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.");
                if overlay && n != opaque_xattr() {
                    let _ = xattr::remove(path, &name);
                }
            }
        }
        if !item.file_type().is_dir()
            || xattr::get(path, opaque_xattr()).ok().flatten().is_some()
            || fs::read_dir(path).map_err(io_err(path))?.next().is_some()
        {
            continue;
        }
        let Ok(rel) = path.strip_prefix(upper) else {
            continue;
        };
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let below = lowers
            .iter()
            .rev()
            .find_map(|l| fs::symlink_metadata(l.join(rel)).ok());
        if let Some(b) = below
            && b.is_dir()
            && (b.mode(), b.uid(), b.gid(), b.mtime(), b.mtime_nsec())
                == (
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                )
        {
            fs::remove_dir(path).map_err(io_err(path))?;
        }
    }
    Ok(())
}

/// Write the changes in `upper` as a layer into `store`. Modification times later than
/// `clamp_mtime` (SOURCE_DATE_EPOCH) are clamped to it.
pub fn write_layer(
    store: &Store,
    upper: &Path,
    clamp_mtime: Option<u64>,
    how: LayerCompression,
) -> Result<Layer, BuildError> {
    write(store, upper, clamp_mtime, true, how)
}

/// Write a plain directory tree (a root filesystem, no whiteouts) as a layer into `store`.
pub fn write_tree(
    store: &Store,
    dir: &Path,
    clamp_mtime: Option<u64>,
    how: LayerCompression,
) -> Result<Layer, BuildError> {
    write(store, dir, clamp_mtime, false, how)
}

fn write(
    store: &Store,
    upper: &Path,
    clamp_mtime: Option<u64>,
    overlay_format: bool,
    how: LayerCompression,
) -> Result<Layer, BuildError> {
    let gz = Compressor::start(store.blob_writer()?, how);
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    tar.mode(tar::HeaderMode::Complete);
    tar.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    let walk = walkdir::WalkDir::new(upper)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false);
    for item in walk {
        let item = item.map_err(|e| io_err(upper)(e.into()))?;
        let path = item.path();
        let rel = path
            .strip_prefix(upper)
            .map_err(|e| io_err(path)(io::Error::other(e)))?
            .to_string_lossy()
            .to_string();
        let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
        let ft = meta.file_type();
        let mut header = tar::Header::new_gnu();
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mode(meta.mode() & 0o7777);
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        header.set_mtime(clamp_mtime.map_or(mtime, |c| mtime.min(c)));
        header.set_size(0);
        let w = |e: io::Error| io_err(path)(e);
        if overlay_format && ft.is_char_device() && meta.rdev() == 0 {
            let (dir, base) = rel
                .rsplit_once('/')
                .map_or(("", rel.as_str()), |(d, b)| (d, b));
            let name = if dir.is_empty() {
                format!(".wh.{base}")
            } else {
                format!("{dir}/.wh.{base}")
            };
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, name, io::empty()).map_err(w)?;
            continue;
        }
        write_xattrs(&mut tar, path).map_err(w)?;
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, format!("{rel}/"), io::empty())
                .map_err(w)?;
            if overlay_format
                && xattr::get(path, opaque_xattr()).ok().flatten().as_deref() == Some(b"y")
            {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_mtime(header.mtime().unwrap_or(0));
                h.set_size(0);
                tar.append_data(&mut h, format!("{rel}/.wh..wh..opq"), io::empty())
                    .map_err(w)?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err(path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, &rel, target).map_err(w)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = links.get(&key) {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, &rel, first).map_err(w)?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let f = fs::File::open(path).map_err(io_err(path))?;
            tar.append_data(&mut header, &rel, f).map_err(w)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            header.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let rdev = meta.rdev();
            header
                .set_device_major(u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(0))
                .map_err(w)?;
            header
                .set_device_minor(u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(0))
                .map_err(w)?;
            tar.append_data(&mut header, &rel, io::empty()).map_err(w)?;
        } else if ft.is_fifo() {
            header.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut header, &rel, io::empty()).map_err(w)?;
        }
        // Sockets are not carried in layers.
    }
    let hashing = tar.into_inner().map_err(io_err(upper))?;
    let (gz, diff_id, _) = hashing.finish();
    let blob = gz.finish().map_err(io_err(upper))?;
    let (digest, size) = blob.commit(None, "layer")?;
    Ok(Layer {
        diff_id,
        descriptor: Descriptor::new(how.media_type(), digest, size),
    })
}

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    /// gzip (fast level): readable by every Docker, containerd and registry.
    #[default]
    Gzip,
    /// zstd (level 3, two threads): several times faster and smaller; needs Docker 23+,
    /// containerd 1.5+ or another zstd-aware consumer.
    Zstd,
    /// Uncompressed tar: the fastest to write and to unpack, the largest to store and push.
    None,
}

impl LayerCompression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => kiln_oci::spec::MEDIA_OCI_LAYER_GZIP,
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            LayerCompression::None => kiln_oci::spec::MEDIA_OCI_LAYER,
        }
    }
}

/// A writer that compresses on a second thread: the tar stream is produced and hashed on the caller's
/// thread while the previous megabytes are being compressed.
pub(crate) struct Compressor {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    handle: Option<std::thread::JoinHandle<io::Result<kiln_oci::BlobWriter>>>,
}

const CHUNK: usize = 1 << 20;

impl Compressor {
    /// Start compressing into `blob`.
    pub(crate) fn start(blob: kiln_oci::BlobWriter, how: LayerCompression) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let handle = std::thread::spawn(move || {
            let mut blob = match how {
                LayerCompression::Gzip => {
                    let mut gz = GzEncoder::new(blob, Compression::fast());
                    for chunk in rx {
                        gz.write_all(&chunk)?;
                    }
                    gz.finish()?
                }
                LayerCompression::Zstd => {
                    let mut z = zstd::stream::write::Encoder::new(blob, 3)?;
                    z.multithread(2)?;
                    for chunk in rx {
                        z.write_all(&chunk)?;
                    }
                    z.finish()?
                }
                LayerCompression::None => {
                    let mut blob = blob;
                    for chunk in rx {
                        blob.write_all(&chunk)?;
                    }
                    blob
                }
            };
            blob.flush()?;
            Ok(blob)
        });
        Compressor {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            handle: Some(handle),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) if tx.send(chunk).is_ok() => Ok(()),
            _ => Err(self.join_error()),
        }
    }

    fn join_error(&mut self) -> io::Error {
        self.tx = None;
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the compression thread stopped"),
        }
    }

    /// Flush, wait for the compressor and hand back the blob writer.
    pub(crate) fn finish(mut self) -> io::Result<kiln_oci::BlobWriter> {
        self.send()?;
        self.tx = None;
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the compression thread panicked")),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Carry `security.*` and `user.*` attributes as PAX records, as BuildKit does.
fn write_xattrs<W: Write>(tar: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let Ok(names) = xattr::list(path) else {
        return Ok(());
    };
    let mut records = Vec::new();
    for name in names {
        let name = name.to_string_lossy().to_string();
        // user.overlay.*: overlayfs' own, in a user namespace.
        if !(name.starts_with("security.") || name.starts_with("user."))
            || name.starts_with("user.overlay.")
        {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(path, &name) {
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    records.sort();
    tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}
