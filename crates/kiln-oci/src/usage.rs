//! What the named images of a store hold and how much space the store takes: the listings of
//! `kiln cache ls` and `kiln cache du`.
//!
//! For each name of the store's `index.json` the walk goes index → manifests → config and
//! layers, and counts every distinct blob once, with the size of its file in `blobs/sha256`
//! (checked against the size its descriptor announces). A blob that is missing, unreadable or of
//! the wrong size is reported as a [`Problem`] of the image, never as an error of the listing: a
//! listing must work on a store another process is cleaning. The manifest of an index entry that
//! is absent is a platform the store does not hold (a pull keeps only the platform it needs),
//! listed in [`ImageUsage::absent_platforms`].
//!
//! This module only reads; it knows nothing of the build cache or the initrd segments except as
//! directories the caller asks it to measure ([`disk_usage`]).

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::store::{Store, StoreError, media_type_of};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// How deep indexes may nest inside indexes before the walk stops.
const MAX_DEPTH: usize = 4;

/// One named image of the store, as `kiln cache ls` lists it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUsage {
    /// The name (`org.opencontainers.image.ref.name` of the store's index).
    pub name: String,
    /// Digest of the manifest or index the name points to.
    pub digest: String,
    /// Media type of that manifest or index.
    pub media_type: String,
    /// Size of that manifest or index, as its descriptor says.
    pub size: u64,
    /// Bytes of every distinct blob the image references and the store holds (index,
    /// manifests, configs, layers), each counted once.
    pub total_size: u64,
    /// Number of those blobs.
    pub blobs: usize,
    /// Bytes of those blobs no other name references.
    pub unique_size: u64,
    /// Bytes of those blobs another name references too.
    pub shared_size: u64,
    /// The `created` time of the config, as written there (RFC 3339); for an index, the latest
    /// of its platforms'.
    pub created: Option<String>,
    /// `created` in seconds since the Unix epoch, when it parses.
    pub created_unix: Option<i64>,
    /// The platforms the store holds, as `os/architecture[/variant]`.
    pub platforms: Vec<String>,
    /// Platforms an index lists whose manifest the store does not hold.
    pub absent_platforms: Vec<String>,
    /// Whether every name of the store pointing to this image pins a digest (`NAME@sha256:…`,
    /// as a kiln manifest names its images): no plain tag refers to it.
    pub pinned_only: bool,
    /// Blobs that are missing, unreadable or not the size their descriptor says.
    pub problems: Vec<Problem>,
    /// The digests of the blobs counted in `total_size`, with their sizes.
    #[serde(skip)]
    pub blob_sizes: BTreeMap<Digest, u64>,
}

/// Something wrong with one blob an image references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The blob's digest, as the descriptor wrote it.
    pub digest: String,
    /// What is wrong.
    #[serde(flatten)]
    pub kind: ProblemKind,
}

/// What is wrong with a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The store does not hold it.
    Missing,
    /// Its file is not the size its descriptor announces.
    #[serde(rename_all = "camelCase")]
    SizeMismatch {
        /// The size the descriptor announces.
        descriptor_size: u64,
        /// The size of the file.
        file_size: u64,
    },
    /// It could not be read or parsed, or its digest is malformed.
    Unreadable {
        /// Why.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ProblemKind::Missing => write!(f, "blob {} is missing", self.digest),
            ProblemKind::SizeMismatch {
                descriptor_size,
                file_size,
            } => write!(
                f,
                "blob {} is {file_size} bytes, its descriptor says {descriptor_size}",
                self.digest
            ),
            ProblemKind::Unreadable { detail } => {
                write!(f, "blob {} cannot be read: {detail}", self.digest)
            }
        }
    }
}

/// A number of files and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Files.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// The space one directory of the store takes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Area {
    /// What it holds ("layer indexes", "build cache", ...).
    pub name: String,
    /// The directory.
    pub path: PathBuf,
    /// Its regular files (each hard-linked file once) and their bytes; 0 when it does not exist.
    #[serde(flatten)]
    pub count: Count,
    /// Entries that could not be read (and were not counted).
    pub unreadable: u64,
}

/// The space the whole store takes, as `kiln cache du` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    /// Every named image.
    pub images: Vec<ImageUsage>,
    /// Every file of `blobs/sha256`.
    pub blobs: Count,
    /// The blobs no name reaches (what `kiln cache clean` removes).
    pub unreferenced: Count,
    /// The other directories: layer indexes, partial downloads, and those the caller named.
    pub areas: Vec<Area>,
    /// `blobs` plus every area, in bytes.
    pub total: u64,
}

/// Every named image of `store`, in the order of its index, with sizes, creation time and
/// platforms.
pub fn list_images(store: &Store) -> Result<Vec<ImageUsage>, StoreError> {
    let entries = store.list()?;
    let mut images: Vec<ImageUsage> = entries
        .iter()
        .map(|e| walk_image(store, &e.name, &e.descriptor))
        .collect();
    // Which names pin a digest, by the digest they point to.
    let mut plain_tagged: HashSet<&str> = HashSet::new();
    for e in &entries {
        if !pins_digest(&e.name) {
            plain_tagged.insert(e.descriptor.digest.as_str());
        }
    }
    let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
    for img in &images {
        for d in img.blob_sizes.keys() {
            *users.entry(d).or_default() += 1;
        }
    }
    let mut split = Vec::with_capacity(images.len());
    for img in &images {
        let (mut unique, mut shared) = (0, 0);
        for (d, size) in &img.blob_sizes {
            if users.get(d).copied().unwrap_or(0) > 1 {
                shared += size;
            } else {
                unique += size;
            }
        }
        split.push((unique, shared, !plain_tagged.contains(img.digest.as_str())));
    }
    for (img, (unique, shared, pinned_only)) in images.iter_mut().zip(split) {
        img.unique_size = unique;
        img.shared_size = shared;
        img.pinned_only = pinned_only;
    }
    Ok(images)
}

/// The space `store` takes: its images (as [`list_images`]), its blobs, the blobs no name
/// reaches, its layer indexes and partial downloads, and the directories in `areas` (name,
/// path), which may lie anywhere.
pub fn disk_usage(store: &Store, areas: &[(&str, PathBuf)]) -> Result<DiskUsage, StoreError> {
    let images = list_images(store)?;
    let live = store.reachable()?;
    let dir = store.root().join("blobs/sha256");
    let mut blobs = Count::default();
    let mut unreferenced = Count::default();
    let read = fs::read_dir(&dir).map_err(|source| StoreError::Io {
        path: dir.clone(),
        source,
    })?;
    for e in read.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        blobs.files += 1;
        blobs.bytes += meta.len();
        let name = e.file_name();
        let reached = format!("sha256:{}", name.to_string_lossy())
            .parse::<Digest>()
            .is_ok_and(|d| live.contains(&d));
        if !reached {
            unreferenced.files += 1;
            unreferenced.bytes += meta.len();
        }
    }
    let mut measured = vec![
        measure("layer indexes", store.root().join("layer-index")),
        measure("partial downloads", store.root().join("tmp")),
    ];
    measured.extend(areas.iter().map(|(n, p)| measure(n, p.clone())));
    let total = blobs.bytes + measured.iter().map(|a| a.count.bytes).sum::<u64>();
    Ok(DiskUsage {
        images,
        blobs,
        unreferenced,
        areas: measured,
        total,
    })
}

/// The regular files under `path` and their bytes, each hard-linked file once, symbolic links
/// not followed. Entries that vanish meanwhile (a build removing its scratch space) are skipped.
fn measure(name: &str, path: PathBuf) -> Area {
    let mut area = Area {
        name: name.into(),
        path,
        count: Count::default(),
        unreadable: 0,
    };
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut todo = vec![area.path.clone()];
    while let Some(dir) = todo.pop() {
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                area.unreadable += 1;
                continue;
            }
        };
        for e in read {
            let Ok(e) = e else {
                area.unreadable += 1;
                continue;
            };
            let meta = match fs::symlink_metadata(e.path()) {
                Ok(m) => m,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => {
                    area.unreadable += 1;
                    continue;
                }
            };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() && (meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())))
            {
                area.count.files += 1;
                area.count.bytes += meta.len();
            }
        }
    }
    area
}

/// Whether a store name pins a digest (`NAME@sha256:…`).
fn pins_digest(name: &str) -> bool {
    name.parse::<Reference>()
        .map(|r| r.digest.is_some())
        .unwrap_or_else(|_| name.contains('@'))
}

/// What the walk of one image gathers.
#[derive(Default)]
struct Walk {
    blobs: BTreeMap<Digest, u64>,
    problems: Vec<Problem>,
    platforms: Vec<String>,
    absent: Vec<String>,
    /// The latest creation time seen: (seconds, as written).
    created: Option<(Option<i64>, String)>,
    /// Manifests and indexes already walked, with the platform their config gave: each is
    /// walked once, however often (or however circularly) indexes list it.
    walked: BTreeMap<Digest, Option<String>>,
}

/// The config fields a listing shows.
#[derive(serde::Deserialize)]
struct ConfigProbe {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// What a manifest blob turned out to be.
enum Found {
    /// The blob is absent from the store.
    Absent,
    /// Present (its platform from its config, if it is a manifest whose config could be read).
    Present(Option<String>),
}

fn walk_image(store: &Store, name: &str, desc: &Descriptor) -> ImageUsage {
    let mut w = Walk::default();
    if let Found::Absent = walk_manifest(store, desc, &mut w, 0) {
        w.problems.push(Problem {
            digest: desc.digest.clone(),
            kind: ProblemKind::Missing,
        });
    }
    let (created_unix, created) = match w.created {
        Some((s, c)) => (s, Some(c)),
        None => (None, None),
    };
    ImageUsage {
        name: name.into(),
        digest: desc.digest.clone(),
        media_type: desc.media_type.clone(),
        size: desc.size,
        total_size: w.blobs.values().sum(),
        blobs: w.blobs.len(),
        unique_size: 0,
        shared_size: 0,
        created,
        created_unix,
        platforms: w.platforms,
        absent_platforms: w.absent,
        pinned_only: false,
        problems: w.problems,
        blob_sizes: w.blobs,
    }
}

/// Count the blob `desc` names: its file's size, checked against the descriptor. Returns the
/// digest when the blob is present.
fn count_blob(
    store: &Store,
    desc: &Descriptor,
    w: &mut Walk,
    report_missing: bool,
) -> Option<Digest> {
    let problem = |kind| Problem {
        digest: desc.digest.clone(),
        kind,
    };
    let digest: Digest = match desc.digest.parse() {
        Ok(d) => d,
        Err(e) => {
            w.problems.push(problem(ProblemKind::Unreadable {
                detail: e.to_string(),
            }));
            return None;
        }
    };
    let path = store.blob_path(&digest);
    let size = match fs::metadata(&path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            w.problems.push(problem(ProblemKind::Unreadable {
                detail: format!("{} is not a regular file", path.display()),
            }));
            return None;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if report_missing {
                w.problems.push(problem(ProblemKind::Missing));
            }
            return None;
        }
        Err(e) => {
            w.problems.push(problem(ProblemKind::Unreadable {
                detail: format!("{}: {e}", path.display()),
            }));
            return None;
        }
    };
    if size != desc.size {
        w.problems.push(problem(ProblemKind::SizeMismatch {
            descriptor_size: desc.size,
            file_size: size,
        }));
    }
    w.blobs.insert(digest.clone(), size);
    Some(digest)
}

/// Walk a manifest or index blob and everything below it.
fn walk_manifest(store: &Store, desc: &Descriptor, w: &mut Walk, depth: usize) -> Found {
    let Some(digest) = count_blob(store, desc, w, false) else {
        // A malformed digest is already reported; a missing blob is the caller's to judge.
        return if desc.digest.parse::<Digest>().is_ok() {
            Found::Absent
        } else {
            Found::Present(None)
        };
    };
    if let Some(platform) = w.walked.get(&digest) {
        return Found::Present(platform.clone());
    }
    w.walked.insert(digest.clone(), None);
    let unreadable = |w: &mut Walk, detail: String| {
        w.problems.push(Problem {
            digest: desc.digest.clone(),
            kind: ProblemKind::Unreadable { detail },
        });
        Found::Present(None)
    };
    let data = match store.read_json_blob(&digest, &desc.digest) {
        Ok(d) => d,
        Err(e) => return unreadable(w, e.to_string()),
    };
    if spec::is_index(&media_type_of(&data)) {
        if depth >= MAX_DEPTH {
            return unreadable(w, format!("indexes nest more than {MAX_DEPTH} deep"));
        }
        let index: Index = match serde_json::from_slice(&data) {
            Ok(i) => i,
            Err(e) => return unreadable(w, format!("not a valid index: {e}")),
        };
        for child in &index.manifests {
            let listed = child
                .platform
                .as_ref()
                .map(|p| platform_string(&p.os, &p.architecture, p.variant.as_deref()));
            match walk_manifest(store, child, w, depth + 1) {
                Found::Absent => {
                    let p = listed.unwrap_or_else(|| child.digest.clone());
                    if !is_attestation(&p) {
                        w.absent.push(p);
                    }
                }
                Found::Present(from_config) => {
                    if let Some(p) = listed.or(from_config)
                        && !is_attestation(&p)
                        && !w.platforms.contains(&p)
                    {
                        w.platforms.push(p);
                    }
                }
            }
        }
        return Found::Present(None);
    }
    let manifest: Manifest = match serde_json::from_slice(&data) {
        Ok(m) => m,
        Err(e) => return unreadable(w, format!("not a valid manifest: {e}")),
    };
    for layer in &manifest.layers {
        count_blob(store, layer, w, true);
    }
    let Some(config) = count_blob(store, &manifest.config, w, true) else {
        return Found::Present(None);
    };
    let probe = store
        .read_json_blob(&config, &manifest.config.digest)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            serde_json::from_slice::<ConfigProbe>(&d)
                .map_err(|e| format!("not a valid config: {e}"))
        });
    let probe = match probe {
        Ok(p) => p,
        Err(detail) => {
            w.problems.push(Problem {
                digest: manifest.config.digest.clone(),
                kind: ProblemKind::Unreadable { detail },
            });
            return Found::Present(None);
        }
    };
    // Go's zero time is what cosign and kiln write into signature and attestation configs: no
    // creation time at all, rather than one two thousand years ago.
    if let Some(c) = probe
        .created
        .filter(|c| !c.starts_with("0001-01-01T00:00:00"))
    {
        let secs = parse_rfc3339(&c);
        let later = match &w.created {
            None => true,
            Some((prev, _)) => secs > *prev,
        };
        if later {
            w.created = Some((secs, c));
        }
    }
    let platform = (!probe.os.is_empty() || !probe.architecture.is_empty())
        .then(|| platform_string(&probe.os, &probe.architecture, probe.variant.as_deref()));
    if depth == 0
        && let Some(p) = &platform
    {
        w.platforms.push(p.clone());
    }
    w.walked.insert(digest, platform.clone());
    Found::Present(platform)
}

/// `os/architecture[/variant]`.
fn platform_string(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// The `unknown/unknown` entries BuildKit adds to an index for attestations: not a platform.
fn is_attestation(platform: &str) -> bool {
    platform == "unknown/unknown"
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-05-01T12:00:00Z`,
/// `2024-05-01T14:00:00.123+02:00`), or `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'+' { o } else { -o }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset)
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A size for people: `512 B`, `1.5 KiB`, `72.3 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// How long before `now` the time `then` was, both in seconds since the Unix epoch, for people:
/// `just now`, `5 minutes ago`, `3 days ago`, `2 years ago`.
pub fn relative_time(then: i64, now: i64) -> String {
    let ago = now.saturating_sub(then);
    if ago < 0 {
        return "in the future".into();
    }
    let steps: [(i64, &str); 7] = [
        (365 * 86400, "year"),
        (30 * 86400, "month"),
        (7 * 86400, "week"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    if ago == 0 {
        return "just now".into();
    }
    for (secs, unit) in steps {
        let n = ago / secs;
        if n >= 1 {
            let s = if n == 1 { "" } else { "s" };
            return format!("{n} {unit}{s} ago");
        }
    }
    "just now".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &Store, data: &[u8]) -> Descriptor {
        let d = Digest::of(data);
        store
            .put_bytes(data, Some(&d), "test blob")
            .expect("put blob");
        Descriptor::new("application/octet-stream", d, data.len() as u64)
    }

    fn put_json(store: &Store, v: serde_json::Value) -> Descriptor {
        put(store, &serde_json::to_vec(&v).expect("json"))
    }

    /// A manifest with one config (`arch`, `created`) and the given layers; returns the
    /// manifest's descriptor and the config's.
    fn manifest(
        store: &Store,
        arch: &str,
        created: &str,
        layers: &[&Descriptor],
    ) -> (Descriptor, Descriptor) {
        let config = put_json(
            store,
            json!({"architecture": arch, "os": "linux", "created": created,
                   "rootfs": {"type": "layers", "diff_ids": []}}),
        );
        let mut m = put_json(
            store,
            json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
                   "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": config.digest, "size": config.size},
                   "layers": layers.iter().map(|l| json!({"mediaType": spec::MEDIA_OCI_LAYER, "digest": l.digest, "size": l.size})).collect::<Vec<_>>()}),
        );
        m.media_type = spec::MEDIA_OCI_MANIFEST.into();
        (m, config)
    }

    fn file_size(store: &Store, d: &Descriptor) -> u64 {
        let digest: Digest = d.digest.parse().expect("digest");
        fs::metadata(store.blob_path(&digest)).expect("blob").len()
    }

    #[test]
    fn an_index_with_two_platforms_counts_shared_blobs_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let shared = put(&store, b"a layer both platforms and the other image use");
        let only_arm = put(
            &store,
            b"a layer of arm64 alone, a little longer than the other",
        );
        let (amd, amd_config) = manifest(&store, "amd64", "2024-01-02T03:04:05Z", &[&shared]);
        let (arm, arm_config) = manifest(
            &store,
            "arm64",
            "2024-03-01T00:00:00Z",
            &[&shared, &only_arm],
        );
        let mut entries = Vec::new();
        for (m, arch, variant) in [(&amd, "amd64", None), (&arm, "arm64", Some("v8"))] {
            entries.push(json!({"mediaType": m.media_type, "digest": m.digest, "size": m.size,
                                "platform": {"os": "linux", "architecture": arch, "variant": variant}}));
        }
        // A platform the index lists but the store does not hold.
        entries.push(json!({"mediaType": spec::MEDIA_OCI_MANIFEST, "digest": Digest::of(b"absent").to_string(), "size": 6,
                            "platform": {"os": "linux", "architecture": "riscv64"}}));
        let mut index = put_json(
            &store,
            json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_INDEX, "manifests": entries}),
        );
        index.media_type = spec::MEDIA_OCI_INDEX.into();
        store
            .tag(&"multi:1".parse().expect("ref"), index.clone())
            .expect("tag");
        let (single, _) = manifest(&store, "amd64", "2023-12-31T23:00:00+01:00", &[&shared]);
        store
            .tag(&"single:1".parse().expect("ref"), single.clone())
            .expect("tag");
        // A blob no name references.
        let stray = put(&store, b"unreferenced");

        let images = list_images(&store).expect("list");
        assert_eq!(images.len(), 2);
        let multi = images
            .iter()
            .find(|i| i.name.contains("multi"))
            .expect("multi");
        let one = images
            .iter()
            .find(|i| i.name.contains("single"))
            .expect("single");

        // index + 2 manifests + 2 configs + 2 layers, the shared layer once.
        assert_eq!(multi.blobs, 7);
        let expected: u64 = [
            &index,
            &amd,
            &arm,
            &amd_config,
            &arm_config,
            &shared,
            &only_arm,
        ]
        .iter()
        .map(|d| file_size(&store, d))
        .sum();
        assert_eq!(multi.total_size, expected);
        assert_eq!(
            multi.platforms,
            vec!["linux/amd64".to_string(), "linux/arm64/v8".to_string()]
        );
        assert_eq!(multi.absent_platforms, vec!["linux/riscv64".to_string()]);
        assert_eq!(multi.created.as_deref(), Some("2024-03-01T00:00:00Z"));
        assert_eq!(multi.created_unix, Some(1_709_251_200));
        assert!(multi.problems.is_empty(), "{:?}", multi.problems);

        assert_eq!(one.platforms, vec!["linux/amd64".to_string()]);
        assert_eq!(one.created_unix, Some(1_704_060_000));
        assert_eq!(one.blobs, 3);
        // The shared layer is the only blob both images reference.
        let shared_size = file_size(&store, &shared);
        assert_eq!(one.shared_size, shared_size);
        assert_eq!(multi.shared_size, shared_size);
        assert_eq!(one.unique_size + one.shared_size, one.total_size);
        assert_eq!(multi.unique_size, multi.total_size - shared_size);
        assert!(!one.pinned_only);

        let du = disk_usage(&store, &[]).expect("du");
        let stray_size = file_size(&store, &stray);
        assert_eq!(
            du.unreferenced,
            Count {
                files: 1,
                bytes: stray_size
            }
        );
        assert_eq!(
            du.blobs.bytes,
            multi.total_size + one.total_size - shared_size + stray_size
        );
        assert_eq!(du.total, du.blobs.bytes);
    }

    #[test]
    fn missing_and_mismatched_blobs_are_reported() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let layer = put(&store, b"layer");
        let (mut m, _) = manifest(&store, "amd64", "not a time", &[&layer]);
        // The manifest's descriptor lies about its size.
        m.size += 1;
        store
            .tag(
                &"x@sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .parse()
                    .expect("ref"),
                m.clone(),
            )
            .expect("tag");
        let layer_digest: Digest = layer.digest.parse().expect("digest");
        fs::remove_file(store.blob_path(&layer_digest)).expect("remove layer");

        let images = list_images(&store).expect("list");
        let img = &images[0];
        assert!(img.pinned_only);
        assert_eq!(img.created.as_deref(), Some("not a time"));
        assert_eq!(img.created_unix, None);
        assert_eq!(img.blobs, 2, "manifest and config");
        assert!(img.problems.contains(&Problem {
            digest: layer.digest.clone(),
            kind: ProblemKind::Missing
        }));
        assert!(img.problems.contains(&Problem {
            digest: m.digest.clone(),
            kind: ProblemKind::SizeMismatch {
                descriptor_size: m.size,
                file_size: m.size - 1
            }
        }));
    }

    #[test]
    fn the_zero_time_of_signatures_is_no_creation_time() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let layer = put(&store, b"payload");
        let (m, _) = manifest(&store, "", "0001-01-01T00:00:00Z", &[&layer]);
        store
            .tag(&"x:sha256-00.sig".parse().expect("ref"), m)
            .expect("tag");
        let images = list_images(&store).expect("list");
        assert_eq!(images[0].created, None);
        assert_eq!(images[0].created_unix, None);
    }

    #[test]
    fn a_manifest_listed_many_times_is_walked_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let layer = put(&store, b"layer");
        let (m, _) = manifest(&store, "amd64", "2024-01-02T03:04:05Z", &[&layer]);
        let entry = json!({"mediaType": m.media_type, "digest": m.digest, "size": m.size});
        let inner = put_json(
            &store,
            json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_INDEX,
                   "manifests": vec![entry; 1000]}),
        );
        let inner_entry =
            json!({"mediaType": spec::MEDIA_OCI_INDEX, "digest": inner.digest, "size": inner.size});
        let mut outer = put_json(
            &store,
            json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_INDEX,
                   "manifests": vec![inner_entry; 1000]}),
        );
        outer.media_type = spec::MEDIA_OCI_INDEX.into();
        store
            .tag(&"loop:1".parse().expect("ref"), outer)
            .expect("tag");
        let images = list_images(&store).expect("list");
        assert_eq!(images[0].blobs, 5, "2 indexes, manifest, config, layer");
        assert_eq!(images[0].platforms, vec!["linux/amd64".to_string()]);
        assert!(images[0].problems.is_empty(), "{:?}", images[0].problems);
    }

    #[test]
    fn a_name_whose_manifest_is_gone_is_listed_with_a_problem() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = Store::open(tmp.path()).expect("store");
        let d = Descriptor::new(spec::MEDIA_OCI_MANIFEST, Digest::of(b"gone"), 4);
        store
            .tag(&"gone:1".parse().expect("ref"), d.clone())
            .expect("tag");
        let images = list_images(&store).expect("list");
        assert_eq!(images[0].total_size, 0);
        assert_eq!(
            images[0].problems,
            vec![Problem {
                digest: d.digest,
                kind: ProblemKind::Missing
            }]
        );
    }

    #[test]
    fn areas_count_files_once_and_skip_absent_directories() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("area");
        fs::create_dir_all(dir.join("sub")).expect("mkdir");
        fs::write(dir.join("a"), b"12345").expect("write");
        fs::hard_link(dir.join("a"), dir.join("sub/b")).expect("link");
        fs::write(dir.join("sub/c"), b"123").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("l")).expect("symlink");
        let a = measure("x", dir);
        assert_eq!(a.count, Count { files: 2, bytes: 8 });
        let absent = measure("y", tmp.path().join("absent"));
        assert_eq!(absent.count, Count::default());
        assert_eq!(absent.unreadable, 0);
    }

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123456789Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T14:00:00+02:00"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:00:00",
            "2024-02-29T12:00:00.Z",
            "2024-02-29T12:00:00Zjunk",
            "２０２４-02-29T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_and_ages_read_as_people_expect() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(72 << 20), "72.0 MiB");
        assert_eq!(relative_time(100, 100), "just now");
        assert_eq!(relative_time(100, 160), "1 minute ago");
        assert_eq!(relative_time(0, 3 * 86400 + 5), "3 days ago");
        assert_eq!(relative_time(0, 2 * 365 * 86400), "2 years ago");
        assert_eq!(relative_time(200, 100), "in the future");
    }
}
