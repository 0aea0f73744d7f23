//! The content-addressed image store: an OCI image layout on disk.
//!
//! ```text
//! ROOT/oci-layout          {"imageLayoutVersion": "1.0.0"}
//! ROOT/index.json          one entry per named image, name in org.opencontainers.image.ref.name
//! ROOT/blobs/sha256/HEX    manifests, indexes, configs, layers
//! ROOT/tmp/                blobs being written (removed by `gc`)
//! ROOT/layer-index/HEX     a layer's index (kiln_fs::layer_index), kept by the first flattening
//! ```
//!
//! Every blob is hashed while it is written to `tmp/`, checked against the digest it should have,
//! fsynced and renamed into place, so a blob path always holds exactly its content. The index is
//! rewritten the same way under an exclusive lock. Writers hold a shared lock on `gc.lock` while
//! they add blobs that no index entry references yet; `gc` takes it exclusively.

use crate::digest::{Digest, HashingWriter};
use crate::reference::Reference;
use crate::spec::{self, Descriptor, ImageConfig, Index, Manifest};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Where layer indexes live, under the store's root: one file per layer, named by the hex of
/// the layer blob's digest.
const LAYER_INDEX_DIR: &str = "layer-index";

/// Largest JSON blob (manifest, index, config) kiln reads into memory.
pub const MAX_JSON_BLOB: u64 = 8 << 20;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Content did not hash to the digest it was announced with.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the source is corrupt or was changed, fetch it again"
    )]
    DigestMismatch {
        /// What was being stored.
        what: String,
        /// The announced digest.
        expected: String,
        /// The digest of the content received.
        actual: String,
    },
    /// The image is not in the store.
    #[error("image {0} is not in the store; run `kiln cache pull {0}` or `kiln cache import FILE`")]
    NotFound(String),
    /// A blob the image needs is missing.
    #[error("blob {digest} of {image} is missing from the store; pull the image again")]
    MissingBlob {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
    },
    /// The image has no manifest for the platform asked for.
    #[error("image {image} has no linux/{arch} variant (it has: {available})")]
    NoPlatform {
        /// The image.
        image: String,
        /// The architecture asked for.
        arch: String,
        /// The platforms it has.
        available: String,
    },
    /// A JSON blob could not be parsed.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which blob.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A blob is larger than kiln accepts for its kind.
    #[error("{what} is {size} bytes, more than the {limit} kiln accepts")]
    TooLarge {
        /// Which blob.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An invalid reference or digest.
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    /// An invalid digest.
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An image resolved for one platform: its manifest and config.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it was resolved from, normalised.
    pub reference: String,
    /// Digest of the platform manifest.
    pub digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// The parsed config.
    pub config: ImageConfig,
}

/// The layers of an image in a store, for flattening with [`kiln_fs::Flattener`].
pub struct ImageLayers<'a> {
    store: &'a Store,
    image: &'a Image,
}

impl<'a> ImageLayers<'a> {
    /// The layers of `image`, read from `store`.
    pub fn new(store: &'a Store, image: &'a Image) -> Self {
        ImageLayers { store, image }
    }
}

impl kiln_fs::Layers for ImageLayers<'_> {
    fn image(&self) -> &str {
        &self.image.reference
    }
    fn count(&self) -> usize {
        self.image.manifest.layers.len()
    }
    fn digest(&self, index: usize) -> String {
        self.image
            .manifest
            .layers
            .get(index)
            .map(|l| l.digest.clone())
            .unwrap_or_default()
    }
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let layer = self
            .image
            .manifest
            .layers
            .get(index)
            .ok_or_else(|| std::io::Error::other(format!("the image has no layer {index}")))?;
        self.store.open_layer(layer).map_err(std::io::Error::other)
    }
    fn load_index(&self, index: usize) -> Option<Vec<u8>> {
        let path = self.store.layer_index_path(&self.digest(index))?;
        let f = File::open(path).ok()?;
        let mut data = Vec::new();
        let max = kiln_fs::layer_index::MAX_INDEX_BYTES as u64;
        f.take(max + 1).read_to_end(&mut data).ok()?;
        (data.len() as u64 <= max).then_some(data)
    }
    fn save_index(&self, index: usize, data: &[u8]) {
        let Some(path) = self.store.layer_index_path(&self.digest(index)) else {
            return;
        };
        // Written to a temporary name and renamed, but not synced: a file a crash leaves
        // damaged fails the index's checksum and is ignored, and the layer read instead.
        let dir = self.store.root.join(LAYER_INDEX_DIR);
        let saved = fs::create_dir_all(&dir)
            .and_then(|()| tempfile::NamedTempFile::new_in(&dir))
            .and_then(|mut tmp| {
                tmp.write_all(data)?;
                tmp.persist(&path).map_err(|e| e.error)
            });
        if let Err(e) = saved {
            tracing::debug!("not keeping the index of layer {}: {e}", self.digest(index));
        }
    }
}

/// An entry of the store's index: a name and what it points to.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The image name.
    pub name: String,
    /// The manifest or index it names.
    pub descriptor: Descriptor,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcStats {
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// An open store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Held while blobs are being added; keeps `gc` from removing them before they are named.
pub struct WriteGuard {
    _file: File,
}

impl Store {
    /// The default location: `$KILN_CACHE`, else `kiln` under the user's cache directory.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("KILN_CACHE") {
            return PathBuf::from(p);
        }
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("kiln")
    }

    /// Open the store at `root`, creating it if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        for d in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let store = Store { root };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.root.join("index.json");
        if !index.exists() {
            let _lock = store.lock("index.lock", true)?;
            if !index.exists() {
                store.write_index(&Index::default())?;
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<File, StoreError> {
        let path = self.root.join(name);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(io_err(&path))?;
        Ok(f)
    }

    /// Take the lock `gc` takes: no build, pull or import runs while it is held.
    pub fn exclusive_guard(&self) -> Result<WriteGuard, StoreError> {
        Ok(WriteGuard {
            _file: self.lock("gc.lock", true)?,
        })
    }

    /// Take the shared write lock (see the module docs).
    pub fn write_guard(&self) -> Result<WriteGuard, StoreError> {
        Ok(WriteGuard {
            _file: self.lock("gc.lock", false)?,
        })
    }

    /// Where the index of the layer with digest `digest` is kept (`None` for a malformed digest).
    fn layer_index_path(&self, digest: &str) -> Option<PathBuf> {
        let d: Digest = digest.parse().ok()?;
        Some(self.root.join(LAYER_INDEX_DIR).join(d.hex()))
    }

    /// Where the blob `d` lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Start writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .suffix(".partial")
            .tempfile_in(self.root.join("tmp"))
            .map_err(io_err(&self.root.join("tmp")))?;
        let file = tmp.reopen().map_err(io_err(tmp.path()))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            writer: HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Store `data`, checking it against `expected` when given.
    pub fn put_bytes(
        &self,
        data: &[u8],
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<Digest, StoreError> {
        let actual = Digest::of(data);
        verify(expected, &actual, what)?;
        if !self.has_blob(&actual) {
            let mut w = self.blob_writer()?;
            w.write_all(data).map_err(io_err(&self.root))?;
            w.commit(Some(&actual), what)?;
        }
        Ok(actual)
    }

    /// Store everything `reader` yields, checking it against `expected` when given.
    pub fn put_reader(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Digest, u64), StoreError> {
        let mut w = self.blob_writer()?;
        io::copy(reader, &mut w).map_err(io_err(&self.root))?;
        w.commit(expected, what)
    }

    /// Open a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(io_err(&p))
    }

    /// Read a JSON blob (bounded by [`MAX_JSON_BLOB`]).
    pub fn read_json_blob(&self, d: &Digest, what: &str) -> Result<Vec<u8>, StoreError> {
        let f = self.open_blob(d)?;
        let size = f.metadata().map_err(io_err(&self.blob_path(d)))?.len();
        if size > MAX_JSON_BLOB {
            return Err(StoreError::TooLarge {
                what: what.into(),
                size,
                limit: MAX_JSON_BLOB,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.take(MAX_JSON_BLOB)
            .read_to_end(&mut buf)
            .map_err(io_err(&self.blob_path(d)))?;
        Ok(buf)
    }

    fn parse_blob<T: serde::de::DeserializeOwned>(
        &self,
        d: &Digest,
        what: &str,
    ) -> Result<T, StoreError> {
        parse_json(&self.read_json_blob(d, what)?, what)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
        tmp.write_all(data).map_err(io_err(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(path).map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            source: e.error,
        })?;
        sync_dir(dir);
        Ok(())
    }

    /// The index as it is on disk.
    pub fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("index.json");
        let data = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            what: path.display().to_string(),
            source,
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            what: "index".into(),
            source,
        })?;
        self.write_atomic(&self.root.join("index.json"), &data)
    }

    /// Name `descriptor` as `name` (replacing what the name pointed to before).
    pub fn tag(&self, name: &Reference, mut descriptor: Descriptor) -> Result<(), StoreError> {
        let name = name.canonical().to_string();
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(spec::ANNOTATION_REF_NAME) != Some(&name));
        descriptor
            .annotations
            .insert(spec::ANNOTATION_REF_NAME.into(), name);
        index.manifests.push(descriptor);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(spec::ANNOTATION_REF_NAME)
                .cmp(&b.annotations.get(spec::ANNOTATION_REF_NAME))
        });
        self.write_index(&index)
    }

    /// Name the manifest `manifest` (of linux/`arch`) as `name`, keeping the other platforms
    /// the name already has: when it points to an image of another architecture, or to an
    /// index, it then points to an index of all of them (sorted by architecture, so that the
    /// same platforms give the same index). The manifest of the same architecture is replaced.
    pub fn tag_platform(
        &self,
        name: &Reference,
        manifest: Descriptor,
        arch: &str,
    ) -> Result<Descriptor, StoreError> {
        let arch = spec::normalize_arch(arch).to_string();
        let mut entries = self.platform_entries(name)?;
        entries.retain(|(a, _)| *a != arch);
        if entries.is_empty() {
            self.tag(name, manifest.clone())?;
            return Ok(manifest);
        }
        let mut manifest = manifest;
        manifest.annotations.clear();
        entries.push((arch, manifest));
        let desc = self.put_platform_index(&name.to_string(), entries)?;
        self.tag(name, desc.clone())?;
        Ok(desc)
    }

    /// An index of `entries` (architecture, manifest), written to the store; its descriptor.
    pub fn put_platform_index(
        &self,
        image: &str,
        mut entries: Vec<(String, Descriptor)>,
    ) -> Result<Descriptor, StoreError> {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let index = Index {
            manifests: entries
                .into_iter()
                .map(|(arch, mut d)| {
                    d.platform = Some(spec::Platform {
                        architecture: arch,
                        os: "linux".into(),
                        variant: None,
                    });
                    d
                })
                .collect(),
            ..Index::default()
        };
        let data = serde_json::to_vec(&index).map_err(|source| StoreError::Json {
            what: format!("index of {image}"),
            source,
        })?;
        let digest = self.put_bytes(&data, None, &format!("index of {image}"))?;
        Ok(Descriptor::new(
            spec::MEDIA_OCI_INDEX,
            digest,
            data.len() as u64,
        ))
    }

    /// The platforms `name` has now, each with its manifest: the entries of its index, or its
    /// one manifest with the architecture its config names; none when it is not in the store.
    fn platform_entries(&self, name: &Reference) -> Result<Vec<(String, Descriptor)>, StoreError> {
        let Some(mut desc) = self.lookup(name)? else {
            return Ok(Vec::new());
        };
        desc.annotations.clear();
        let digest: Digest = desc.digest.parse()?;
        let image = name.to_string();
        let data = self.read_json_blob(&digest, &image)?;
        if let Some(index) = index_of(&data, &image)? {
            return Ok(index
                .manifests
                .into_iter()
                .filter_map(|d| {
                    let p = d.platform.as_ref()?;
                    let arch = spec::normalize_arch(&p.architecture).to_string();
                    (p.os == "linux").then_some((arch, d))
                })
                .collect());
        }
        let manifest: Manifest = parse_json(&data, &format!("manifest of {image}"))?;
        let config_digest: Digest = manifest.config.digest.parse()?;
        let config: ImageConfig = self.parse_blob(&config_digest, &format!("config of {image}"))?;
        Ok(vec![(
            spec::normalize_arch(&config.architecture).to_string(),
            desc,
        )])
    }

    /// Remove the name; returns whether it existed. Blobs stay until `gc`.
    pub fn untag(&self, name: &Reference) -> Result<bool, StoreError> {
        let name = name.canonical().to_string();
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        index
            .manifests
            .retain(|d| d.annotations.get(spec::ANNOTATION_REF_NAME) != Some(&name));
        let removed = index.manifests.len() != before;
        if removed {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// All named images.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .read_index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                Some(Entry {
                    name: d.annotations.get(spec::ANNOTATION_REF_NAME)?.clone(),
                    descriptor: d,
                })
            })
            .collect())
    }

    /// What `name` points to, if anything.
    pub fn lookup(&self, name: &Reference) -> Result<Option<Descriptor>, StoreError> {
        let key = name.canonical().to_string();
        if let Some(e) = self.list()?.into_iter().find(|e| e.name == key) {
            return Ok(Some(e.descriptor));
        }
        // A reference by digest alone resolves to any manifest blob with that digest.
        if let (Some(d), None) = (&name.digest, &name.tag) {
            let digest: Digest = d.parse()?;
            if self.has_blob(&digest) {
                let data = self.read_json_blob(&digest, d)?;
                return Ok(Some(Descriptor::new(
                    media_type_of(&data),
                    d,
                    data.len() as u64,
                )));
            }
        }
        Ok(None)
    }

    /// Resolve `name` to the image for `linux/arch`.
    pub fn resolve(&self, name: &Reference, arch: &str) -> Result<Image, StoreError> {
        let desc = self
            .lookup(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        self.resolve_descriptor(&name.to_string(), &desc, arch)
    }

    /// Resolve a manifest or index descriptor to the image for `linux/arch`.
    pub fn resolve_descriptor(
        &self,
        image: &str,
        desc: &Descriptor,
        arch: &str,
    ) -> Result<Image, StoreError> {
        self.resolve_for(image, desc, Some(arch))
    }

    /// The image a manifest descriptor names, whatever its architecture, once its config and
    /// layers are checked to be in the store.
    pub fn complete_image(&self, image: &str, desc: &Descriptor) -> Result<Image, StoreError> {
        self.resolve_for(image, desc, None)
    }

    /// [`Self::resolve_descriptor`]; with `arch` `None` a manifest of any architecture is
    /// taken (and an index gives this machine's platform).
    fn resolve_for(
        &self,
        image: &str,
        desc: &Descriptor,
        arch: Option<&str>,
    ) -> Result<Image, StoreError> {
        // An empty architecture asks for none in particular.
        let arch = arch.filter(|a| !a.is_empty()).map(spec::normalize_arch);
        let mut digest: Digest = desc.digest.parse()?;
        let missing = |d: &Digest| StoreError::MissingBlob {
            image: image.into(),
            digest: d.to_string(),
        };
        if !self.has_blob(&digest) {
            return Err(missing(&digest));
        }
        let data = self.read_json_blob(&digest, image)?;
        if let Some(index) = index_of(&data, image)? {
            let arch = arch.unwrap_or(std::env::consts::ARCH);
            let chosen = select_platform(&index, arch).ok_or_else(|| StoreError::NoPlatform {
                image: image.into(),
                arch: arch.into(),
                available: platforms(&index),
            })?;
            digest = chosen.digest.parse()?;
            if !self.has_blob(&digest) {
                return Err(StoreError::NotFound(format!("{image} (linux/{arch})")));
            }
        }
        let manifest: Manifest = self.parse_blob(&digest, &format!("manifest of {image}"))?;
        let config_digest: Digest = manifest.config.digest.parse()?;
        if !self.has_blob(&config_digest) {
            return Err(missing(&config_digest));
        }
        let config: ImageConfig = self.parse_blob(&config_digest, &format!("config of {image}"))?;
        // A single-platform image of another architecture is not silently used: an arm64 build
        // must not run on the amd64 base image that happens to carry the name.
        if let Some(arch) = arch
            && !config.architecture.is_empty()
            && spec::normalize_arch(&config.architecture) != arch
        {
            return Err(StoreError::NoPlatform {
                image: image.into(),
                arch: arch.into(),
                available: format!("linux/{}", config.architecture),
            });
        }
        for layer in &manifest.layers {
            let d: Digest = layer.digest.parse()?;
            if !self.has_blob(&d) {
                return Err(missing(&d));
            }
        }
        Ok(Image {
            reference: image.into(),
            digest,
            manifest,
            config,
        })
    }

    /// A layer blob, decompressed (gzip, zstd or none, detected from its first bytes).
    pub fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn Read + Send>, StoreError> {
        let d: Digest = layer.digest.parse()?;
        let f = self.open_blob(&d)?;
        decompress(BufReader::with_capacity(1 << 20, f)).map_err(io_err(&self.blob_path(&d)))
    }

    /// Every blob reachable from a named image.
    pub fn reachable(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let mut live = BTreeSet::new();
        let mut todo: Vec<Digest> = Vec::new();
        for e in self.list()? {
            todo.push(e.descriptor.digest.parse()?);
        }
        while let Some(d) = todo.pop() {
            if !live.insert(d.clone()) || !self.has_blob(&d) {
                continue;
            }
            let Ok(data) = self.read_json_blob(&d, "blob") else {
                continue;
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&data) else {
                continue;
            };
            let children = ["manifests", "layers"]
                .iter()
                .filter_map(|k| value.get(k)?.as_array())
                .flatten()
                .chain(value.get("config"));
            for c in children {
                if let Some(Ok(cd)) = c
                    .get("digest")
                    .and_then(|v| v.as_str())
                    .map(str::parse::<Digest>)
                {
                    todo.push(cd);
                }
            }
        }
        Ok(live)
    }

    /// Remove blobs no name reaches, the indexes of layers no longer present, and abandoned
    /// temporary files.
    pub fn gc(&self) -> Result<GcStats, StoreError> {
        let _exclusive = self.lock("gc.lock", true)?;
        let live = self.reachable()?;
        let mut stats = GcStats::default();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let keep = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| live.contains(&d));
            if !keep {
                stats.bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
                stats.blobs += 1;
            }
        }
        let indexes = self.root.join(LAYER_INDEX_DIR);
        for e in fs::read_dir(&indexes).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let layer = format!("sha256:{name}").parse::<Digest>();
            if !layer.is_ok_and(|d| live.contains(&d)) {
                let _ = fs::remove_file(e.path());
            }
        }
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        Ok(stats)
    }
}

/// A JSON document read from the store, parsed; errors name it as `what`.
fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(data).map_err(|source| StoreError::Json {
        what: what.into(),
        source,
    })
}

/// The index `data` is, parsed, or `None` when it is a manifest (`image` names it in errors).
fn index_of(data: &[u8], image: &str) -> Result<Option<Index>, StoreError> {
    if !spec::is_index(&media_type_of(data)) {
        return Ok(None);
    }
    parse_json(data, &format!("index of {image}")).map(Some)
}

/// Pick the manifest for linux/`arch` from an index.
pub fn select_platform<'a>(index: &'a Index, arch: &str) -> Option<&'a Descriptor> {
    let arch = spec::normalize_arch(arch);
    index.manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && spec::normalize_arch(&p.architecture) == arch)
    })
}

fn platforms(index: &Index) -> String {
    let v: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .map(|p| {
            format!(
                "{}/{}{}",
                p.os,
                p.architecture,
                p.variant
                    .as_ref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The media type a JSON manifest or index declares, or guessed from its shape.
pub fn media_type_of(data: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(data) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => spec::MEDIA_OCI_INDEX.into(),
        _ => spec::MEDIA_OCI_MANIFEST.into(),
    }
}

/// Wrap `r` in the decompressor its magic bytes call for: gzip, zstd, xz or bzip2 (what `docker
/// import` and `ADD` take), else none.
pub fn decompress<R: BufRead + Send + 'static>(mut r: R) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)))
    } else if head.starts_with(b"BZh") {
        Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// Fail with `DigestMismatch` when `expected` is given and differs from `actual`.
fn verify(expected: Option<&Digest>, actual: &Digest, what: &str) -> Result<(), StoreError> {
    match expected {
        Some(e) if e != actual => Err(StoreError::DigestMismatch {
            what: what.into(),
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A blob being written: hashed as it goes, verified and moved into place by `commit`.
pub struct BlobWriter {
    store: Store,
    tmp: tempfile::NamedTempFile,
    writer: HashingWriter<io::BufWriter<File>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl BlobWriter {
    /// Verify against `expected` (if given), fsync and move into place. On mismatch the
    /// temporary file is removed and nothing is stored.
    pub fn commit(
        self,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Digest, u64), StoreError> {
        let (buf, digest, size) = self.writer.finish();
        let tmp_path = self.tmp.path().to_path_buf();
        let file = buf.into_inner().map_err(|e| StoreError::Io {
            path: tmp_path.clone(),
            source: e.into_error(),
        })?;
        verify(expected, &digest, what)?;
        let dest = self.store.blob_path(&digest);
        if !dest.exists() {
            file.sync_all().map_err(io_err(&tmp_path))?;
            self.tmp.persist(&dest).map_err(|e| StoreError::Io {
                path: dest.clone(),
                source: e.error,
            })?;
            if let Some(parent) = dest.parent() {
                sync_dir(parent);
            }
        }
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    #[test]
    fn decompress_knows_gzip_zstd_xz_and_bzip2() {
        let data = b"a tar, say".repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data).expect("gzip");
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 1)
            .read_to_end(&mut xz)
            .expect("xz");
        let mut bz = Vec::new();
        bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::fast())
            .read_to_end(&mut bz)
            .expect("bzip2");
        let zst = zstd::encode_all(&data[..], 1).expect("zstd");
        for packed in [gz.finish().expect("gzip"), xz, bz, zst, data.clone()] {
            let mut out = Vec::new();
            decompress(std::io::Cursor::new(packed))
                .expect("sniff")
                .read_to_end(&mut out)
                .expect("read");
            assert_eq!(out, data);
        }
    }

    use super::*;

    #[test]
    fn blobs_are_verified_and_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.put_bytes(b"hello", None, "test").expect("put");
        assert_eq!(fs::read(store.blob_path(&d)).expect("read"), b"hello");
        let wrong = Digest::of(b"other");
        let err = store
            .put_reader(&mut &b"hello!"[..], Some(&wrong), "layer x")
            .expect_err("mismatch");
        assert!(
            err.to_string().contains("digest mismatch for layer x"),
            "{err}"
        );
        assert!(!store.has_blob(&wrong));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0,
            "temporary file left behind"
        );
    }

    #[test]
    fn tag_lookup_untag_gc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let cfg = store
            .put_bytes(br#"{"architecture":"amd64","os":"linux"}"#, None, "config")
            .expect("cfg");
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": cfg.to_string(), "size": 37}, "layers": []});
        let data = serde_json::to_vec(&manifest).expect("json");
        let md = store.put_bytes(&data, None, "manifest").expect("manifest");
        let orphan = store.put_bytes(b"orphan", None, "orphan").expect("orphan");
        let r: Reference = "example.com/a/b".parse().expect("ref");
        let desc = Descriptor::new(spec::MEDIA_OCI_MANIFEST, &md, data.len() as u64);
        store.tag(&r, desc).expect("tag");
        let img = store.resolve(&r, "x86_64").expect("resolve");
        assert_eq!(img.config.architecture, "amd64");
        let stats = store.gc().expect("gc");
        assert_eq!(stats.blobs, 1);
        assert!(!store.has_blob(&orphan) && store.has_blob(&md) && store.has_blob(&cfg));
        assert!(store.untag(&r).expect("untag"));
        assert!(matches!(
            store.resolve(&r, "amd64"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn layer_indexes_are_kept_and_collected() {
        use kiln_fs::{Collect, Flattener, Sink};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hello"[..])
            .expect("append");
        let layer = b.into_inner().expect("tar");
        let ld = store.put_bytes(&layer, None, "layer").expect("layer");
        let cfg = store
            .put_bytes(br#"{"architecture":"amd64","os":"linux"}"#, None, "config")
            .expect("cfg");
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": cfg.to_string(), "size": 37},
            "layers": [{"mediaType": spec::MEDIA_OCI_LAYER, "digest": ld.to_string(), "size": layer.len()}]});
        let data = serde_json::to_vec(&manifest).expect("json");
        let md = store.put_bytes(&data, None, "manifest").expect("manifest");
        let r: Reference = "example.com/layered".parse().expect("ref");
        store
            .tag(
                &r,
                Descriptor::new(spec::MEDIA_OCI_MANIFEST, &md, data.len() as u64),
            )
            .expect("tag");
        let img = store.resolve(&r, "amd64").expect("resolve");
        let flatten = || {
            let mut out = Collect::default();
            Flattener::new(&ImageLayers::new(&store, &img))
                .run::<kiln_fs::LayerError>(&mut |e, d| {
                    out.add(e, d).map_err(|source| kiln_fs::LayerError::Read {
                        image: "test".into(),
                        layer: "test".into(),
                        source,
                    })
                })
                .expect("flatten");
            out.entries
        };
        let first = flatten();
        let index = dir.path().join(LAYER_INDEX_DIR).join(ld.hex());
        let saved = fs::read(&index).expect("index kept");
        assert!(saved.starts_with(kiln_fs::layer_index::MAGIC));
        let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&index).expect("index"));
        let before = inode();
        assert_eq!(flatten(), first, "flattened from the kept index");
        assert_eq!(
            inode(),
            before,
            "the kept index was used, not written again"
        );
        fs::write(dir.path().join(LAYER_INDEX_DIR).join(".tmpXYZ"), b"x").expect("tmp");
        store.gc().expect("gc");
        assert!(index.exists(), "a live layer keeps its index");
        assert!(store.untag(&r).expect("untag"));
        store.gc().expect("gc");
        let left = fs::read_dir(dir.path().join(LAYER_INDEX_DIR))
            .expect("dir")
            .count();
        assert_eq!(
            left, 0,
            "indexes of removed layers and stray files collected"
        );
    }
}
