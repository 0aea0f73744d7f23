//! The step cache shared through a registry (`--cache-to REF`, `--cache-from REF`).
//!
//! A cache ref names an OCI image index whose `artifactType` is [`ARTIFACT_TYPE`]. Each child
//! is an OCI manifest (same `artifactType`, config of media type [`ARTIFACT_TYPE`]) that one
//! build exported: its first blobs are the entries ([`ENTRY_MEDIA_TYPE`], one per step, each
//! annotated with the step's key under [`ANNOTATION_KEY`]), then the layers those entries
//! name. An entry is the JSON `{"key": KEY, "layer": null | {"diffId": ..., "descriptor": ...}}`;
//! the key is the local step cache's key (the chain key of `Engine::fs_step`), so a hit is the
//! same step with the same inputs.
//!
//! Exporting merges: the children the ref already holds are kept (up to [`MAX_MANIFESTS`],
//! oldest dropped first; those whose keys the new child covers are dropped), so builds of other
//! Dockerfiles sharing one ref keep their entries.
//!
//! Importing is lazy: the first step that misses the local cache reads each `--cache-from`
//! index and the manifests it lists (each bounded by the registry client's JSON cap, counts by
//! [`MAX_MANIFESTS`] and [`MAX_ENTRIES`]). A step's entry blob is fetched (checked against its
//! digest and size), parsed, and must carry the key asked for; its layer blob is fetched and
//! checked the same way and its uncompressed content against the entry's diff id. Anything that
//! does not match is refused with a warning naming the ref and the entry, and the step runs as
//! on a miss. An accepted entry becomes a local cache entry: the step is reported cached.

use crate::diff::Layer;
use crate::error::BuildError;
use crate::workspace::{CachedLayer, CachedStep, Workspace};
use kiln_oci::registry::{self, RegistryError, RegistryOptions};
use kiln_oci::spec::{self, Descriptor};
use kiln_oci::{Digest, Reference};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

/// The `artifactType` of a cache ref's index and manifests, and the media type of a manifest's
/// config.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.build-cache.v1+json";
/// The media type of one cache entry blob.
pub const ENTRY_MEDIA_TYPE: &str = "application/vnd.kiln.build-cache.entry.v1+json";
/// The annotation of an entry's descriptor that holds the step's key.
pub const ANNOTATION_KEY: &str = "dev.kiln.build-cache.key";
/// Most manifests (exports) one cache ref's index keeps.
pub const MAX_MANIFESTS: usize = 64;
/// Most entries one manifest may list.
pub const MAX_ENTRIES: usize = 4096;
/// Most bytes one entry blob may have.
pub const MAX_ENTRY_BYTES: u64 = 64 << 10;
/// Most bytes one cached layer blob may have.
pub const MAX_LAYER_BYTES: u64 = 64 << 30;

/// The media types a cached layer may have.
const LAYER_TYPES: [&str; 5] = [
    spec::MEDIA_OCI_LAYER,
    spec::MEDIA_OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// One `--cache-to` or `--cache-from` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRef {
    /// The registry ref.
    pub reference: Reference,
    /// BuildKit's `ignore-error=true`: an export that fails is reported and the build still
    /// succeeds. Without it (BuildKit's default) a failed export fails the build. Imports never
    /// fail a build: an unreadable `--cache-from` ref is reported and not used.
    pub ignore_error: bool,
}

/// Parse a `--cache-to`/`--cache-from` value: a plain image reference, or BuildKit's
/// `type=registry,ref=REF` with `ignore-error=` (`mode=`, `oci-mediatypes=`,
/// `image-manifest=` and the compression keys are accepted and ignored: kiln exports every
/// step the build used, in its own layout).
pub fn parse_cache_ref(flag: &str, value: &str) -> Result<CacheRef, String> {
    let mut ignore_error = false;
    let raw = if value.contains('=') {
        let mut reference = None;
        for field in value.split(',') {
            let Some((k, v)) = field.split_once('=') else {
                return Err(format!(
                    "{flag} {value}: {field:?} is not KEY=VALUE; write type=registry,ref=REF or a plain REF"
                ));
            };
            match k.trim() {
                "type" if v == "registry" => {}
                "type" => {
                    return Err(format!(
                        "{flag} {value}: type={v} is not supported; kiln shares its cache through a registry: type=registry,ref=REF"
                    ));
                }
                "ref" => reference = Some(v.to_string()),
                "ignore-error" => {
                    ignore_error = parse_bool(v).ok_or_else(|| {
                        format!("{flag} {value}: ignore-error={v} is not true or false")
                    })?;
                }
                "mode" | "oci-mediatypes" | "image-manifest" | "compression"
                | "compression-level" | "force-compression" => {}
                other => {
                    return Err(format!(
                        "{flag} {value}: unknown key {other:?}; write type=registry,ref=REF"
                    ));
                }
            }
        }
        reference.ok_or_else(|| format!("{flag} {value}: no ref=; write type=registry,ref=REF"))?
    } else {
        value.to_string()
    };
    let r = raw
        .parse::<Reference>()
        .map_err(|e| format!("{flag} {value}: {e}"))?;
    if flag == "--cache-to" && r.digest.is_some() {
        return Err(format!(
            "{flag} {value}: an export needs a tag to update, not a digest; write REPOSITORY:TAG"
        ));
    }
    Ok(CacheRef {
        reference: r,
        ignore_error,
    })
}

/// A boolean as BuildKit's options take it (Go's `strconv.ParseBool`).
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One entry blob: a step's key and the layer it produced (`None` when it changed nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// The step's key (64 lowercase hex digits).
    pub key: String,
    /// The layer.
    pub layer: Option<EntryLayer>,
}

/// The layer of an [`Entry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryLayer {
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// The blob.
    pub descriptor: Descriptor,
}

/// A checked layer: diff id and blob.
pub type CheckedLayer = (Digest, Descriptor);

fn is_key(k: &str) -> bool {
    k.len() == 64
        && k.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_blob(d: &Descriptor, max: u64, what: &str) -> Result<Digest, String> {
    let digest: Digest = d
        .digest
        .parse()
        .map_err(|e| format!("{what}: bad digest {:?}: {e}", d.digest))?;
    if d.size > max {
        return Err(format!(
            "{what}: {} bytes, more than the {max} kiln accepts",
            d.size
        ));
    }
    Ok(digest)
}

/// Parse an entry blob fetched for `key` (its digest already checked): it must name `key`, and
/// its layer a well-formed diff id and blob of a layer media type within [`MAX_LAYER_BYTES`].
pub fn parse_entry(data: &[u8], key: &str) -> Result<Option<CheckedLayer>, String> {
    if data.len() as u64 > MAX_ENTRY_BYTES {
        return Err(format!(
            "the entry has {} bytes, more than the {MAX_ENTRY_BYTES} kiln accepts",
            data.len()
        ));
    }
    let e: Entry =
        serde_json::from_slice(data).map_err(|e| format!("the entry is not valid: {e}"))?;
    if e.key != key {
        return Err(format!(
            "the entry is for step {:?}, not {key}",
            e.key.chars().take(80).collect::<String>()
        ));
    }
    let Some(l) = e.layer else {
        return Ok(None);
    };
    let diff_id: Digest = l
        .diff_id
        .parse()
        .map_err(|e| format!("bad diff id {:?}: {e}", l.diff_id))?;
    if !LAYER_TYPES.contains(&l.descriptor.media_type.as_str()) {
        return Err(format!(
            "the layer's media type {:?} is not a layer's",
            l.descriptor.media_type
        ));
    }
    check_blob(&l.descriptor, MAX_LAYER_BYTES, "the layer")?;
    // Only what names the blob: annotations from the registry do not reach the image.
    let d = l.descriptor;
    Ok(Some((
        diff_id,
        Descriptor::new(d.media_type, d.digest, d.size),
    )))
}

/// What a cache ref holds at its top.
#[derive(Debug, Clone, PartialEq)]
pub enum Top {
    /// An index of exports: the manifests' descriptors, oldest first.
    Index(Vec<Descriptor>),
    /// A single export's manifest.
    Manifest(ManifestEntries),
}

/// The entries of one exported manifest: key and entry blob, in the manifest's order.
pub type ManifestEntries = Vec<(String, Descriptor)>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTop {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    manifests: Option<Vec<Descriptor>>,
    layers: Option<Vec<Descriptor>>,
}

/// Parse the manifest or index a cache ref names (already bounded in size by the registry
/// client). Refuses what is not a kiln build cache, and more than [`MAX_MANIFESTS`]
/// manifests or [`MAX_ENTRIES`] entries.
pub fn parse_top(data: &[u8]) -> Result<Top, String> {
    kiln_oci::transport::check_json_size(data, kiln_oci::transport::MAX_JSON_VALUES)?;
    let raw: RawTop = serde_json::from_slice(data).map_err(|e| format!("not valid JSON: {e}"))?;
    if let Some(ms) = raw.manifests {
        if raw.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            return Err(not_a_cache(raw.artifact_type.as_deref()));
        }
        if ms.len() > MAX_MANIFESTS {
            return Err(format!(
                "it lists {} manifests, more than the {MAX_MANIFESTS} kiln accepts",
                ms.len()
            ));
        }
        for m in &ms {
            if m.media_type != spec::MEDIA_OCI_MANIFEST {
                return Err(format!(
                    "it lists a {:?}, not an OCI manifest",
                    m.media_type
                ));
            }
            check_blob(m, kiln_oci::MAX_JSON_BLOB, "a manifest")?;
        }
        return Ok(Top::Index(ms));
    }
    if raw
        .media_type
        .as_deref()
        .is_some_and(|m| m != spec::MEDIA_OCI_MANIFEST)
    {
        return Err(format!("it is a {:?}", raw.media_type.unwrap_or_default()));
    }
    let config_type = raw.config.as_ref().map(|c| c.media_type.as_str());
    if config_type != Some(ARTIFACT_TYPE) {
        return Err(not_a_cache(raw.artifact_type.as_deref().or(config_type)));
    }
    let layers = raw.layers.unwrap_or_default();
    let mut entries = Vec::new();
    for d in layers {
        if d.media_type != ENTRY_MEDIA_TYPE {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            return Err(format!(
                "it lists more than the {MAX_ENTRIES} entries kiln accepts"
            ));
        }
        let key = d
            .annotations
            .get(ANNOTATION_KEY)
            .cloned()
            .unwrap_or_default();
        if !is_key(&key) {
            return Err(format!(
                "entry {} has no step key ({ANNOTATION_KEY})",
                d.digest.chars().take(80).collect::<String>()
            ));
        }
        check_blob(&d, MAX_ENTRY_BYTES, &format!("entry {key}"))?;
        entries.push((key, d));
    }
    Ok(Top::Manifest(entries))
}

fn not_a_cache(kind: Option<&str>) -> String {
    format!(
        "it is not a kiln build cache (artifact type {:?}, not {ARTIFACT_TYPE:?})",
        kind.unwrap_or("none").chars().take(100).collect::<String>()
    )
}

/// A candidate entry for a key: the ref it came from and the entry blob.
#[derive(Debug, Clone)]
struct Candidate {
    from: usize,
    entry: Descriptor,
}

/// The remote caches of one build: where entries are imported from and exported to, what was
/// read, and the entries the build used.
pub(crate) struct RemoteCache {
    from: Vec<Reference>,
    to: Vec<CacheRef>,
    registry: RegistryOptions,
    /// The imported entries by key, read on the first miss.
    imported: Mutex<Option<HashMap<String, Vec<Candidate>>>>,
    /// The entries the build used or created, by key.
    used: Mutex<BTreeMap<String, Option<CachedLayer>>>,
}

impl RemoteCache {
    /// The remote caches `cache_from` and `cache_to`, reached with `registry`.
    pub(crate) fn new(
        cache_from: &[Reference],
        cache_to: &[CacheRef],
        registry: &RegistryOptions,
    ) -> RemoteCache {
        RemoteCache {
            from: cache_from.to_vec(),
            to: cache_to.to_vec(),
            registry: registry.clone(),
            imported: Mutex::new(None),
            used: Mutex::new(BTreeMap::new()),
        }
    }

    /// Note that the build used (or created) the entry `key`, for `--cache-to`.
    pub(crate) fn record(&self, key: &str, layer: Option<CachedLayer>) {
        if self.to.is_empty() {
            return;
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.to_string(), layer);
        }
    }

    /// Look `key` up in the imported caches. A hit's blobs are fetched and verified into the
    /// store and it becomes a local cache entry; a refused entry is reported and skipped.
    pub(crate) fn lookup(&self, ws: &Workspace, key: &str) -> Option<CachedStep> {
        if self.from.is_empty() {
            return None;
        }
        let candidates = {
            let mut imported = self.imported.lock().ok()?;
            let map = imported.get_or_insert_with(|| self.import());
            map.get(key).cloned().unwrap_or_default()
        };
        for c in candidates {
            let r = &self.from[c.from];
            match self.fetch(ws, r, key, &c.entry) {
                Ok(layer) => {
                    let stored = layer.map(|(diff_id, descriptor)| Layer {
                        diff_id,
                        descriptor,
                    });
                    let step = stored.as_ref();
                    if let Err(e) = ws.cache_put(key, step) {
                        tracing::warn!("cannot record the step from {r} in the local cache: {e}");
                    }
                    tracing::info!("step {key} from the build cache {r}");
                    return ws.cache_get(key);
                }
                Err(why) => {
                    tracing::warn!(
                        "build cache {r}: entry {} for step {key} refused: {why}; the step runs instead",
                        c.entry.digest
                    );
                }
            }
        }
        None
    }

    /// Fetch and check the entry `entry` of `r` for `key`, and its layer (`None` for a step
    /// that changed nothing).
    fn fetch(
        &self,
        ws: &Workspace,
        r: &Reference,
        key: &str,
        entry: &Descriptor,
    ) -> Result<Option<CheckedLayer>, String> {
        let store = &ws.store;
        registry::fetch_blobs(store, r, std::slice::from_ref(entry), &self.registry)
            .map_err(|e| e.to_string())?;
        let d = check_blob(entry, MAX_ENTRY_BYTES, "the entry")?;
        let data = store
            .read_json_blob(&d, &format!("entry {} of {r}", entry.digest))
            .map_err(|e| e.to_string())?;
        let Some((diff_id, layer)) = parse_entry(&data, key)? else {
            return Ok(None);
        };
        registry::fetch_blobs(store, r, std::slice::from_ref(&layer), &self.registry)
            .map_err(|e| format!("its layer {}: {e}", layer.digest))?;
        check_diff_id(store, &layer, &diff_id)?;
        Ok(Some((diff_id, layer)))
    }

    /// Read every `--cache-from` ref: the index and the manifests it lists. A ref that cannot
    /// be read is reported and skipped.
    fn import(&self) -> HashMap<String, Vec<Candidate>> {
        let mut map: HashMap<String, Vec<Candidate>> = HashMap::new();
        for (i, r) in self.from.iter().enumerate() {
            match read_ref(r, &self.registry) {
                Ok(manifests) => {
                    let n: usize = manifests.iter().map(Vec::len).sum();
                    tracing::info!("build cache {r}: {n} entries");
                    // Newest export first.
                    for m in manifests.into_iter().rev() {
                        for (key, entry) in m {
                            map.entry(key)
                                .or_default()
                                .push(Candidate { from: i, entry });
                        }
                    }
                }
                Err(why) => tracing::warn!("build cache {r} not used: {why}"),
            }
        }
        map
    }

    /// Export the entries the build used to every `--cache-to` ref; a failed export fails the
    /// build unless its ref says `ignore-error=true`.
    pub(crate) fn export(&self, ws: &Workspace) -> Result<(), BuildError> {
        if self.to.is_empty() {
            return Ok(());
        }
        let used = self
            .used
            .lock()
            .map_err(|_| crate::engine::poisoned())?
            .clone();
        for to in &self.to {
            match export_to(ws, &to.reference, &used, &self.registry) {
                Err(e) if to.ignore_error => {
                    tracing::warn!("{e} (ignored: ignore-error=true)");
                }
                result => result?,
            }
        }
        Ok(())
    }
}

/// Check that the layer blob `layer` of the store uncompresses to content of digest `diff_id`.
fn check_diff_id(
    store: &kiln_oci::Store,
    layer: &Descriptor,
    diff_id: &Digest,
) -> Result<(), String> {
    let mut reader = store.open_layer(layer).map_err(|e| e.to_string())?;
    let mut hashed = kiln_oci::HashingWriter::new(std::io::sink());
    std::io::copy(&mut reader, &mut hashed)
        .map_err(|e| format!("its layer {}: {e}", layer.digest))?;
    let (_, actual, _) = hashed.finish();
    if actual != *diff_id {
        return Err(format!(
            "its layer {} unpacks to {actual}, not the diff id {diff_id} it claims",
            layer.digest
        ));
    }
    Ok(())
}

/// The manifest `child` of the cache index `r`, parsed; `None` when the registry lacks it.
fn read_child(
    r: &Reference,
    child: &Descriptor,
    opts: &RegistryOptions,
) -> Result<Option<Top>, String> {
    let mut pinned = r.clone();
    pinned.digest = Some(child.digest.clone());
    let Some((data, _)) = registry::remote_manifest(&pinned, opts).map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    parse_top(&data).map(Some)
}

/// The exports `r` holds (oldest first), each as its entries; none when it does not exist.
fn read_ref(r: &Reference, opts: &RegistryOptions) -> Result<Vec<ManifestEntries>, String> {
    let Some((data, _)) = registry::remote_manifest(r, opts).map_err(|e| e.to_string())? else {
        tracing::info!("build cache {r} does not exist yet");
        return Ok(Vec::new());
    };
    let children = match parse_top(&data)? {
        Top::Manifest(m) => return Ok(vec![m]),
        Top::Index(children) => children,
    };
    let mut out = Vec::new();
    for child in children {
        match read_child(r, &child, opts).map_err(|e| format!("manifest {}: {e}", child.digest))? {
            Some(Top::Manifest(m)) => out.push(m),
            Some(Top::Index(_)) => {
                return Err(format!(
                    "manifest {}: an index inside an index",
                    child.digest
                ));
            }
            None => tracing::warn!("build cache {r}: manifest {} is missing", child.digest),
        }
    }
    Ok(out)
}

fn export_error(r: &Reference, message: String) -> BuildError {
    BuildError::Registry(RegistryError::Remote {
        registry: r.registry.clone(),
        operation: "export the build cache to",
        image: r.to_string(),
        message,
    })
}

/// Write one export of `used` into the store, merge it into what `r` holds, and push.
fn export_to(
    ws: &Workspace,
    r: &Reference,
    used: &BTreeMap<String, Option<CachedLayer>>,
    opts: &RegistryOptions,
) -> Result<(), BuildError> {
    let store = &ws.store;
    let mut entries = Vec::new();
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, layer) in used.iter().take(MAX_ENTRIES) {
        let entry = Entry {
            key: key.clone(),
            layer: layer.as_ref().map(|l| EntryLayer {
                diff_id: l.diff_id.clone(),
                descriptor: l.descriptor.clone(),
            }),
        };
        if let Some(l) = &layer {
            let Ok(d) = l.descriptor.digest.parse::<Digest>() else {
                continue;
            };
            if !store.has_blob(&d) {
                continue;
            }
            if seen.insert(l.descriptor.digest.clone()) {
                layers.push(Descriptor::new(
                    l.descriptor.media_type.clone(),
                    &l.descriptor.digest,
                    l.descriptor.size,
                ));
            }
        }
        let data = serde_json::to_vec(&entry).map_err(|e| export_error(r, e.to_string()))?;
        let digest = store.put_bytes(&data, None, "build cache entry")?;
        let mut d = Descriptor::new(ENTRY_MEDIA_TYPE, &digest, data.len() as u64);
        d.annotations.insert(ANNOTATION_KEY.into(), key.clone());
        entries.push(d);
    }
    if entries.is_empty() {
        tracing::info!("build cache {r}: the build used no step to export");
        return Ok(());
    }
    let keys: BTreeSet<&String> = used.keys().collect();
    let config = br#"{"kiln":"build-cache","version":1}"#;
    let config_digest = store.put_bytes(config, None, "build cache config")?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": spec::MEDIA_OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": Descriptor::new(ARTIFACT_TYPE, &config_digest, config.len() as u64),
        "layers": entries.iter().chain(layers.iter()).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| export_error(r, e.to_string()))?;
    let manifest_digest = store.put_bytes(&manifest, None, "build cache manifest")?;
    let mut new_child = Descriptor::new(
        spec::MEDIA_OCI_MANIFEST,
        &manifest_digest,
        manifest.len() as u64,
    );
    new_child.annotations.insert(
        "org.opencontainers.artifact.type".into(),
        ARTIFACT_TYPE.into(),
    );

    // What the ref holds already: keep the exports this one does not cover.
    let mut children = Vec::new();
    if let Some((data, _)) = registry::remote_manifest(r, opts)? {
        let top = parse_top(&data).map_err(|why| {
            export_error(
                r,
                format!("{r} holds something kiln will not overwrite: {why}; choose another ref"),
            )
        })?;
        if let Top::Index(old) = top {
            for child in old {
                if child.digest == new_child.digest {
                    continue;
                }
                let covered = match read_child(r, &child, opts) {
                    Ok(Some(Top::Manifest(m))) => m.iter().all(|(k, _)| keys.contains(k)),
                    _ => true,
                };
                if !covered {
                    children.push(child);
                }
            }
        }
    }
    children.push(new_child);
    let drop = children.len().saturating_sub(MAX_MANIFESTS);
    children.drain(..drop);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": spec::MEDIA_OCI_INDEX,
        "artifactType": ARTIFACT_TYPE,
        "manifests": children,
    });
    let index = serde_json::to_vec(&index).map_err(|e| export_error(r, e.to_string()))?;
    let index_digest = store.put_bytes(&index, None, "build cache index")?;
    // The registry client pushes named images: name the index for the push only, then give
    // the name back what it named before.
    let name = r.canonical();
    let before = store.lookup(&name)?;
    store.tag(
        &name,
        Descriptor::new(spec::MEDIA_OCI_INDEX, &index_digest, index.len() as u64),
    )?;
    let pushed = registry::push(store, &name, opts);
    match before {
        Some(d) => store.tag(&name, d)?,
        None => {
            store.untag(&name)?;
        }
    }
    pushed?;
    tracing::info!(
        "build cache {r}: exported {} entries ({} layers)",
        entries.len(),
        layers.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SHA: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn entry_desc(key: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": ENTRY_MEDIA_TYPE, "digest": SHA, "size": 10,
            "annotations": {ANNOTATION_KEY: key},
        })
    }

    #[test]
    fn cache_refs() {
        for v in [
            "127.0.0.1:5000/cache:main",
            "type=registry,ref=127.0.0.1:5000/cache:main",
            "type=registry,ref=127.0.0.1:5000/cache:main,mode=max",
        ] {
            let r = parse_cache_ref("--cache-to", v).expect(v);
            assert_eq!(r.reference.to_string(), "127.0.0.1:5000/cache:main");
            assert!(!r.ignore_error, "{v}");
        }
        for (v, ignore) in [("true", true), ("1", true), ("False", false)] {
            let value = format!("type=registry,ref=127.0.0.1:5000/cache:main,ignore-error={v}");
            let r = parse_cache_ref("--cache-to", &value).expect(v);
            assert_eq!(r.ignore_error, ignore, "{v}");
        }
        for (bad, says) in [
            ("type=local,dest=x", "type=local is not supported"),
            ("type=registry", "no ref="),
            ("type=registry,ref=x,colour=red", "unknown key"),
            ("type=registry,refx", "is not KEY=VALUE"),
            (
                "type=registry,ref=x,ignore-error=yes",
                "ignore-error=yes is not true or false",
            ),
            ("UPPER/Case", "--cache-from"),
        ] {
            let e = parse_cache_ref("--cache-from", bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let pinned = format!("127.0.0.1:5000/cache@{SHA}");
        assert!(parse_cache_ref("--cache-from", &pinned).is_ok());
        let e = parse_cache_ref("--cache-to", &pinned).expect_err("a digest");
        assert!(e.contains("needs a tag"), "{e}");
    }

    #[test]
    fn entries_round_trip() {
        let layer = Descriptor::new(spec::MEDIA_OCI_LAYER_GZIP, SHA, 5);
        let e = Entry {
            key: KEY.into(),
            layer: Some(EntryLayer {
                diff_id: SHA.into(),
                descriptor: layer.clone(),
            }),
        };
        let data = serde_json::to_vec(&e).expect("json");
        let (d, l) = parse_entry(&data, KEY).expect("parse").expect("layer");
        assert_eq!((d.to_string(), l), (SHA.to_string(), layer));
        let none = serde_json::to_vec(&Entry {
            key: KEY.into(),
            layer: None,
        })
        .expect("json");
        assert_eq!(parse_entry(&none, KEY), Ok(None));
        // Another step's entry is refused.
        let e = parse_entry(&data, &KEY.replace('0', "f")).expect_err("other key");
        assert!(e.contains("is for step"), "{e}");
        // A layer of a media type that is not a layer's.
        let bad = String::from_utf8(data)
            .expect("utf8")
            .replace(spec::MEDIA_OCI_LAYER_GZIP, "text/plain");
        assert!(parse_entry(bad.as_bytes(), KEY).is_err());
    }

    #[test]
    fn tops() {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": ARTIFACT_TYPE, "digest": SHA, "size": 2},
            "layers": [entry_desc(KEY), {"mediaType": spec::MEDIA_OCI_LAYER_GZIP, "digest": SHA, "size": 3}],
        });
        let Ok(Top::Manifest(entries)) = parse_top(m.to_string().as_bytes()) else {
            panic!("a manifest");
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, KEY);
        let i = serde_json::json!({
            "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_INDEX,
            "artifactType": ARTIFACT_TYPE,
            "manifests": [{"mediaType": spec::MEDIA_OCI_MANIFEST, "digest": SHA, "size": 100}],
        });
        assert!(matches!(parse_top(i.to_string().as_bytes()), Ok(Top::Index(v)) if v.len() == 1));
        // An image is not a cache.
        let img = serde_json::json!({
            "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": SHA, "size": 2},
            "layers": [],
        });
        let e = parse_top(img.to_string().as_bytes()).expect_err("image");
        assert!(e.contains("not a kiln build cache"), "{e}");
        // An entry without its key, and too many manifests.
        let mut nokey = m.clone();
        nokey["layers"][0]["annotations"] = serde_json::json!({});
        assert!(parse_top(nokey.to_string().as_bytes()).is_err());
        let mut many = i.clone();
        many["manifests"] =
            serde_json::Value::Array(vec![i["manifests"][0].clone(); MAX_MANIFESTS + 1]);
        let e = parse_top(many.to_string().as_bytes()).expect_err("many");
        assert!(e.contains("more than"), "{e}");
        let mut big = m.clone();
        big["layers"][0]["size"] = serde_json::json!(MAX_ENTRY_BYTES + 1);
        assert!(parse_top(big.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_layer_must_unpack_to_its_diff_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = kiln_oci::Store::open(dir.path()).expect("store");
        let tar = b"not really a tar, but uncompressed bytes all the same";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, tar).expect("gzip");
        let blob = gz.finish().expect("gzip");
        let digest = store.put_bytes(&blob, None, "layer").expect("put");
        let layer = Descriptor::new(spec::MEDIA_OCI_LAYER_GZIP, &digest, blob.len() as u64);
        check_diff_id(&store, &layer, &Digest::of(tar)).expect("its own diff id");
        let e = check_diff_id(&store, &layer, &Digest::of(b"other")).expect_err("another");
        assert!(e.contains("not the diff id"), "{e}");
        assert!(e.contains(&digest.to_string()), "{e}");
    }

    proptest! {
        #[test]
        fn parse_top_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_top(&data);
        }

        #[test]
        fn parse_entry_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_entry(&data, KEY);
        }

        #[test]
        fn mutated_entries_are_parsed_or_refused(
            key in "[0-9a-f]{64}",
            size in any::<u64>(),
            media in "[a-z./+0-9]{0,40}",
            diff in "[a-z0-9:]{0,80}",
        ) {
            let text = serde_json::json!({
                "key": key,
                "layer": {"diffId": diff, "descriptor": {"mediaType": media, "digest": SHA, "size": size}},
            }).to_string();
            match parse_entry(text.as_bytes(), &key) {
                Ok(Some((_, l))) => {
                    prop_assert!(l.size <= MAX_LAYER_BYTES);
                    prop_assert!(LAYER_TYPES.contains(&l.media_type.as_str()));
                }
                Ok(None) => prop_assert!(false, "a layer was given"),
                Err(_) => {}
            }
        }

        #[test]
        fn manifests_with_any_entries_stay_bounded(
            keys in proptest::collection::vec("[0-9a-fA-Z]{0,70}", 0..20),
            sizes in proptest::collection::vec(any::<u64>(), 20),
        ) {
            let layers: Vec<serde_json::Value> = keys.iter().zip(&sizes).map(|(k, s)| {
                let mut d = entry_desc(k);
                d["size"] = serde_json::json!(s);
                d
            }).collect();
            let m = serde_json::json!({
                "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
                "config": {"mediaType": ARTIFACT_TYPE, "digest": SHA, "size": 2},
                "layers": layers,
            });
            if let Ok(Top::Manifest(entries)) = parse_top(m.to_string().as_bytes()) {
                for (k, d) in entries {
                    prop_assert!(is_key(&k));
                    prop_assert!(d.size <= MAX_ENTRY_BYTES);
                }
            }
        }
    }
}
