//! Flattening an image's layers into one entry stream, per the OCI image spec: whiteouts
//! (`.wh.NAME`) and opaque directories (`.wh..wh..opq`) hide what lower layers put there, upper
//! layers replace lower entries, and an upper non-directory hides a lower directory's contents.
//!
//! Two passes over the layers: the first reads headers only and builds the final tree (paths and
//! metadata, no data); the second streams the layers again and emits each entry that survives,
//! directories first at their first appearance with their final metadata, so that parents always
//! precede children. Memory grows with the number of paths, never with file sizes.
//!
//! The first pass needs each layer's headers, not its data: a source of layers that keeps the
//! index the first pass records for a layer ([`Layers::save_index`], see [`crate::layer_index`])
//! lets every later flattening of that layer skip reading it, so the layer is read once.
//!
//! Hostile layers are refused: a path that climbs out of the root with `..`, an entry beneath a
//! symlink (writing it would follow the link), an entry beneath a non-directory, a hard link to
//! a path that does not exist in the image. Absolute paths are taken relative to the root.

use crate::entry::{Entry, Kind};
use crate::layer_index::{Member, Recorder, Records, What};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;

/// The layers of one image, bottom first, as a store hands them out.
pub trait Layers {
    /// The image, as errors name it.
    fn image(&self) -> &str;
    /// How many layers there are.
    fn count(&self) -> usize;
    /// Layer `index`'s digest, as errors name it.
    fn digest(&self, index: usize) -> String;
    /// Layer `index` as an uncompressed tar stream.
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send + '_>>;

    /// The index of layer `index` that [`Layers::save_index`] kept for a layer with the same
    /// content, if this source keeps indexes (the default keeps none). Data that is not an
    /// intact index is ignored, and the layer read instead.
    fn load_index(&self, index: usize) -> Option<Vec<u8>> {
        let _ = index;
        None
    }

    /// Keep `data`, the index of layer `index` (at most
    /// [`MAX_INDEX_BYTES`](crate::layer_index::MAX_INDEX_BYTES)), for later flattenings of any
    /// image holding this layer. It depends on the layer's content alone. Best effort: a source
    /// that cannot keep it drops it (the default).
    fn save_index(&self, index: usize, data: &[u8]) {
        let _ = (index, data);
    }
}

/// A layer that could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A member refused as hostile.
    #[error("image {image}, layer {layer}: refusing entry `{path}`: {why}")]
    Hostile {
        /// The image.
        image: String,
        /// The layer digest (or the archive's name).
        layer: String,
        /// The entry path as it is in the layer.
        path: String,
        /// Why.
        why: String,
    },
    /// The layer could not be read.
    #[error("image {image}, layer {layer}: {source}")]
    Read {
        /// The image.
        image: String,
        /// The layer digest (or the archive's name).
        layer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
enum Node {
    /// A directory with its final metadata (`None` when only implied by its children).
    Dir(Option<Entry>),
    /// Anything else: which layer and which member of it provides the final version.
    Other {
        layer: usize,
        ordinal: usize,
        symlink: bool,
    },
}

/// Normalise a path from an archive: relative to the root, `.` and empty components removed,
/// `..` resolved lexically. `Ok(None)` is the root itself; `Err` a path that escapes the root.
pub fn normalize(raw: &str) -> Result<Option<String>, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("path `{raw}` climbs out of the root"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    })
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

pub(crate) fn base_of(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// The largest file a GNU sparse layer member may expand to: 1 GiB. Its holes become zeros in
/// every output, so a few bytes of layer could otherwise stand for terabytes.
pub const MAX_SPARSE_BYTES: u64 = 1 << 30;

/// The entry a tar member describes, or `None` for members that are not file system entries.
///
/// A GNU sparse member (type `S`, as `tar --sparse` writes in GNU format) is a regular file:
/// the tar reader expands its holes, and the entry's size is the file's real size, at most
/// [`MAX_SPARSE_BYTES`]. A sparse file in the PAX format (`GNU.sparse.*` records, as
/// `tar --sparse --format=posix` writes) is refused by name, as the reader would yield its
/// sparse map and data as the content.
pub fn entry_from_tar<R: Read>(
    member: &mut tar::Entry<'_, R>,
    path: String,
) -> Result<Option<Entry>, std::io::Error> {
    if let Some(exts) = member.pax_extensions()? {
        let mut sparse = false;
        let mut name = None;
        for ext in exts.flatten() {
            match ext.key() {
                Ok("GNU.sparse.name") => name = ext.value().ok().map(str::to_string),
                Ok(k) if k.starts_with("GNU.sparse.") => sparse = true,
                _ => {}
            }
        }
        if sparse || name.is_some() {
            let file = name
                .map(|n| format!(" (the file `{n}`)"))
                .unwrap_or_default();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "member `{path}`{file} is a sparse file in the PAX format (`GNU.sparse.*` records), which kiln does not read; rebuild the layer without `--sparse`, or with GNU tar's `--format=gnu`"
                ),
            ));
        }
    }
    let h = member.header();
    if h.entry_type() == tar::EntryType::GNUSparse && member.size() > MAX_SPARSE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "member `{path}` is a sparse file of {} bytes, more than the limit of {} MiB for a sparse file (its holes would be written as zeros); leave it out of the layer",
                member.size(),
                MAX_SPARSE_BYTES >> 20
            ),
        ));
    }
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            Kind::File
        }
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink(
            member
                .link_name()?
                .map(|l| l.to_string_lossy().to_string())
                .unwrap_or_default(),
        ),
        tar::EntryType::Link => Kind::Hardlink(
            member
                .link_name()?
                .map(|l| l.to_string_lossy().to_string())
                .unwrap_or_default(),
        ),
        tar::EntryType::Char => Kind::Char {
            major: h.device_major()?.unwrap_or(0),
            minor: h.device_minor()?.unwrap_or(0),
        },
        tar::EntryType::Block => Kind::Block {
            major: h.device_major()?.unwrap_or(0),
            minor: h.device_minor()?.unwrap_or(0),
        },
        tar::EntryType::Fifo => Kind::Fifo,
        _ => return Ok(None),
    };
    let size = if kind == Kind::File { member.size() } else { 0 };
    let mut xattrs = Vec::new();
    if let Some(exts) = member.pax_extensions()? {
        for ext in exts.flatten() {
            if let Ok(key) = ext.key()
                && let Some(name) = key.strip_prefix("SCHILY.xattr.")
            {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    let h = member.header();
    Ok(Some(Entry {
        path,
        kind,
        mode: h.mode()? & 0o7777,
        uid: h.uid()?,
        gid: h.gid()?,
        mtime: h.mtime().unwrap_or(0),
        size,
        xattrs,
    }))
}

/// Flattens one image.
pub struct Flattener<'a> {
    layers: &'a dyn Layers,
    tree: BTreeMap<String, Node>,
}

impl<'a> Flattener<'a> {
    /// Prepare to flatten the image whose layers are `layers`.
    pub fn new(layers: &'a dyn Layers) -> Self {
        Flattener {
            layers,
            tree: BTreeMap::new(),
        }
    }

    /// Layer `layer` of the image as a tar archive, decompressed.
    fn open_layer(
        &self,
        layer: usize,
    ) -> Result<tar::Archive<Box<dyn Read + Send + 'a>>, LayerError> {
        let reader = self.layers.open(layer).map_err(|e| self.io(layer, e))?;
        Ok(tar::Archive::new(reader))
    }

    fn hostile(&self, layer: usize, path: &str, why: String) -> LayerError {
        LayerError::Hostile {
            image: self.layers.image().to_string(),
            layer: self.layers.digest(layer),
            path: path.to_string(),
            why,
        }
    }

    fn io(&self, layer: usize, e: std::io::Error) -> LayerError {
        LayerError::Read {
            image: self.layers.image().to_string(),
            layer: self.layers.digest(layer),
            source: e,
        }
    }

    /// Remove `path` (if `with_self`) and everything beneath it that came from layers below `layer`.
    fn hide(&mut self, path: &str, layer: usize, with_self: bool) {
        let below = |n: &Node| match n {
            Node::Other { layer: l, .. } => *l < layer,
            Node::Dir(_) => true,
        };
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let doomed: Vec<String> = self
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| below(n))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.tree.remove(&k);
        }
        if with_self && self.tree.get(path).is_some_and(below) {
            self.tree.remove(path);
        }
    }

    /// The first pass over one layer: from its saved index if there is an intact one, else from
    /// its headers (recording the index for the next time).
    fn index_layer(&mut self, layer: usize) -> Result<(), LayerError> {
        if let Some(data) = self.layers.load_index(layer)
            && let Some(records) = Records::parse(&data)
        {
            for (ordinal, member) in records.enumerate() {
                let member = member.map_err(|_| {
                    self.io(
                        layer,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the index kept for this layer does not decode although its checksum matches; remove the kept index so that the layer is read again",
                        ),
                    )
                })?;
                self.add(layer, ordinal, member)?;
            }
            return Ok(());
        }
        let mut archive = self.open_layer(layer)?;
        let members = archive.entries().map_err(|e| self.io(layer, e))?;
        let mut recorder = Recorder::new();
        for (ordinal, member) in members.enumerate() {
            let mut member = member.map_err(|e| self.io(layer, e))?;
            let member = Member::read(&mut member);
            recorder.push(&member);
            self.add(layer, ordinal, member)?;
        }
        if let Some(data) = recorder.finish() {
            self.layers.save_index(layer, &data);
        }
        Ok(())
    }

    /// Apply member `ordinal` of `layer` to the tree.
    fn add(&mut self, layer: usize, ordinal: usize, member: Member) -> Result<(), LayerError> {
        let raw = member.raw;
        let path = match normalize(&raw) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(()),
            Err(why) => return Err(self.hostile(layer, &raw, why)),
        };
        let base = base_of(&path).to_string();
        let parent = parent_of(&path).unwrap_or("").to_string();
        if base == ".wh..wh..opq" {
            self.hide(&parent, layer, false);
            return Ok(());
        }
        if base.starts_with(".wh..wh.") {
            return Ok(());
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            let target = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}/{name}")
            };
            self.hide(&target, layer, true);
            return Ok(());
        }
        self.check_ancestors(layer, &path)?;
        let symlink = match member.what {
            What::Nothing => return Ok(()),
            What::Failed(e) => return Err(self.io(layer, e)),
            What::Dir(mut entry) => {
                entry.path = path.clone();
                if !matches!(self.tree.get(&path), Some(Node::Dir(_))) {
                    self.tree.remove(&path);
                }
                self.tree.insert(path, Node::Dir(Some(entry)));
                return Ok(());
            }
            What::Hardlink(target) => {
                let t = match normalize(&target) {
                    Ok(Some(t)) => t,
                    _ => {
                        return Err(self.hostile(
                            layer,
                            &path,
                            format!("hard link to `{target}`, outside the image"),
                        ));
                    }
                };
                if !matches!(self.tree.get(&t), Some(Node::Other { .. })) {
                    return Err(self.hostile(
                        layer,
                        &path,
                        format!("hard link to `{target}`, which is not a file of the image"),
                    ));
                }
                false
            }
            What::Symlink => true,
            What::Other => false,
        };
        // A non-directory replaces whatever was there, including a directory's contents.
        self.hide(&path, usize::MAX, false);
        self.tree.insert(
            path,
            Node::Other {
                layer,
                ordinal,
                symlink,
            },
        );
        Ok(())
    }

    fn check_ancestors(&mut self, layer: usize, path: &str) -> Result<(), LayerError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let ancestor = &path[..end + i];
            match self.tree.get(ancestor) {
                Some(Node::Dir(_)) => {}
                Some(Node::Other { symlink: true, .. }) => {
                    return Err(self.hostile(layer, path, format!("it lies beneath the symlink `{ancestor}`; applying it would write through the link")));
                }
                Some(Node::Other { .. }) => {
                    return Err(self.hostile(
                        layer,
                        path,
                        format!("its parent `{ancestor}` is not a directory"),
                    ));
                }
                None => {
                    self.tree.insert(ancestor.to_string(), Node::Dir(None));
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Emit the flattened image: `emit` is called for each surviving entry with its data.
    pub fn run<E: From<LayerError>>(
        mut self,
        emit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<(), E>,
    ) -> Result<(), E> {
        let layers = self.layers.count();
        for l in 0..layers {
            self.index_layer(l)?;
        }
        let mut emitted: HashSet<String> = HashSet::new();
        for layer in 0..layers {
            let mut archive = self.open_layer(layer)?;
            let members = archive.entries().map_err(|e| self.io(layer, e))?;
            for (ordinal, member) in members.enumerate() {
                let mut member = member.map_err(|e| self.io(layer, e))?;
                let raw = member.path_bytes();
                let Ok(Some(path)) = normalize(&String::from_utf8_lossy(&raw)) else {
                    continue;
                };
                match self.tree.get(&path) {
                    Some(Node::Dir(_)) => self.ensure_dir(&path, &mut emitted, emit)?,
                    Some(Node::Other {
                        layer: l,
                        ordinal: o,
                        ..
                    }) if *l == layer && *o == ordinal => {
                        if let Some(parent) = parent_of(&path) {
                            self.ensure_dir(parent, &mut emitted, emit)?;
                        }
                        let Some(mut entry) =
                            entry_from_tar(&mut member, path).map_err(|e| self.io(layer, e))?
                        else {
                            continue;
                        };
                        if let Kind::Hardlink(t) = &entry.kind {
                            entry.kind =
                                Kind::Hardlink(normalize(t).ok().flatten().unwrap_or_default());
                        }
                        emit(&entry, &mut member)?;
                    }
                    _ => {}
                }
            }
        }
        let dirs: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, n)| matches!(n, Node::Dir(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for d in dirs {
            self.ensure_dir(&d, &mut emitted, emit)?;
        }
        Ok(())
    }

    fn ensure_dir<E>(
        &self,
        path: &str,
        emitted: &mut HashSet<String>,
        emit: &mut dyn FnMut(&Entry, &mut dyn Read) -> Result<(), E>,
    ) -> Result<(), E> {
        if emitted.contains(path) {
            return Ok(());
        }
        if let Some(parent) = parent_of(path) {
            self.ensure_dir(parent, emitted, emit)?;
        }
        let entry = match self.tree.get(path) {
            Some(Node::Dir(Some(e))) => e.clone(),
            _ => Entry::dir(path, 0o755, 0),
        };
        emit(&entry, &mut std::io::empty())?;
        emitted.insert(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("./a//b/").ok().flatten().as_deref(), Some("a/b"));
        assert_eq!(
            normalize("/etc/passwd").ok().flatten().as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(normalize("a/../b").ok().flatten().as_deref(), Some("b"));
        assert_eq!(normalize("./").ok().flatten(), None);
        assert!(normalize("../x").is_err());
        assert!(normalize("a/../../x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn normalized_paths_stay_inside(s in "[a./]{0,30}") {
            if let Ok(Some(p)) = normalize(&s) {
                proptest::prop_assert!(!p.starts_with('/'));
                proptest::prop_assert!(p.split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
            }
        }
    }
}
