//! Image archives: import and export of OCI image-layout tars and `docker save` tars.
//!
//! Import streams the archive once: every blob is hashed while it is copied into the store and
//! must match the digest its path names; only the small JSON files are held in memory.

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::Path;

/// Errors of archive import and export.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the archive failed.
    #[error("{archive}: {source}")]
    Io {
        /// The archive.
        archive: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The archive is not an image archive kiln understands.
    #[error("{archive}: {why}")]
    Format {
        /// The archive.
        archive: String,
        /// What is wrong.
        why: String,
    },
}

/// Archive formats kiln writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar.
    Oci,
    /// What `docker save` writes (manifest.json; also carries the OCI layout files, as Docker 25+ does).
    Docker,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn clean_member(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// Import every image of the archive at `path` (OCI layout or `docker save`); returns the names
/// imported. `name` names the images of an OCI layout whose entries carry only a tag or no name.
pub fn import(
    store: &Store,
    path: &Path,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let archive = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
        archive: archive.clone(),
        source,
    })?;
    let reader =
        crate::store::decompress(io::BufReader::new(file)).map_err(|source| ArchiveError::Io {
            archive: archive.clone(),
            source,
        })?;
    import_reader(store, reader, &archive, name)
}

/// As [`import`], from any reader of an (uncompressed) tar.
pub fn import_reader(
    store: &Store,
    reader: impl Read,
    archive: &str,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let _guard = store.write_guard()?;
    let io_err = |source| ArchiveError::Io {
        archive: archive.into(),
        source,
    };
    let fmt_err = |why: String| ArchiveError::Format {
        archive: archive.into(),
        why,
    };
    let mut tar = tar::Archive::new(reader);
    let mut json_files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Other members stored as blobs by content (docker save's <id>/layer.tar and <id>.json).
    let mut by_path: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    for entry in tar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = clean_member(&entry.path().map_err(io_err)?.to_string_lossy());
        if matches!(
            member.as_str(),
            "index.json" | "manifest.json" | "oci-layout" | "repositories"
        ) {
            let mut buf = Vec::new();
            (&mut entry)
                .take(crate::MAX_JSON_BLOB)
                .read_to_end(&mut buf)
                .map_err(io_err)?;
            json_files.insert(member, buf);
        } else if let Some(hex) = member.strip_prefix("blobs/sha256/") {
            let expected: Digest = format!("sha256:{hex}")
                .parse()
                .map_err(|_| fmt_err(format!("{member}: not a sha256 blob name")))?;
            let got =
                store.put_reader(&mut entry, Some(&expected), &format!("{archive}: {member}"))?;
            by_path.insert(member, got);
        } else if member.ends_with(".tar") || member.ends_with(".json") {
            let got = store.put_reader(&mut entry, None, &format!("{archive}: {member}"))?;
            by_path.insert(member, got);
        }
    }
    if let Some(index) = json_files
        .get("index.json")
        .filter(|_| !json_files.contains_key("manifest.json"))
    {
        let index: Index =
            serde_json::from_slice(index).map_err(|e| fmt_err(format!("index.json: {e}")))?;
        return import_layout(store, &index, archive, name);
    }
    if let Some(manifest) = json_files.get("manifest.json") {
        let entries: Vec<DockerSaveEntry> =
            serde_json::from_slice(manifest).map_err(|e| fmt_err(format!("manifest.json: {e}")))?;
        return import_docker_save(store, &entries, &by_path, archive);
    }
    Err(fmt_err("neither index.json (OCI layout) nor manifest.json (docker save) found: not an image archive".into()))
}

fn import_layout(
    store: &Store,
    index: &Index,
    archive: &str,
    name: Option<&Reference>,
) -> Result<Vec<String>, ArchiveError> {
    let mut names = Vec::new();
    for desc in &index.manifests {
        let full = desc.annotations.get(spec::ANNOTATION_CONTAINERD_NAME);
        let refname = desc.annotations.get(spec::ANNOTATION_REF_NAME);
        let reference: Reference = match (full, refname, name) {
            (Some(n), _, _) => n.parse().map_err(StoreError::from)?,
            (None, Some(n), _) if n.contains('/') => n.parse().map_err(StoreError::from)?,
            (None, Some(tag), Some(base)) => format!("{}:{tag}", base.name())
                .parse()
                .map_err(StoreError::from)?,
            (None, None, Some(base)) => base.clone(),
            _ => {
                return Err(ArchiveError::Format {
                    archive: archive.into(),
                    why: format!(
                        "image {} has no full name in the archive; give one with --name",
                        desc.digest
                    ),
                });
            }
        };
        let mut clean = desc.clone();
        clean.annotations.clear();
        // Resolving checks that every blob the image needs arrived (for an index: those present).
        let digest: Digest = desc.digest.parse().map_err(StoreError::from)?;
        if !store.has_blob(&digest) {
            return Err(StoreError::MissingBlob {
                image: reference.to_string(),
                digest: digest.to_string(),
            }
            .into());
        }
        if !spec::is_index(&desc.media_type) {
            store.complete_image(&reference.to_string(), &clean)?;
        }
        store.tag(&reference, clean)?;
        names.push(reference.canonical().to_string());
    }
    Ok(names)
}

fn import_docker_save(
    store: &Store,
    entries: &[DockerSaveEntry],
    by_path: &BTreeMap<String, (Digest, u64)>,
    archive: &str,
) -> Result<Vec<String>, ArchiveError> {
    let find = |p: &str| -> Result<(Digest, u64), ArchiveError> {
        by_path
            .get(&clean_member(p))
            .cloned()
            .ok_or_else(|| ArchiveError::Format {
                archive: archive.into(),
                why: format!("manifest.json names {p}, which the archive lacks"),
            })
    };
    let mut names = Vec::new();
    for e in entries {
        let (config, config_size) = find(&e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = find(l)?;
            // docker save writes uncompressed layers; keep whatever compression they have.
            let mut head = [0u8; 4];
            let n = store.open_blob(&d)?.read(&mut head).unwrap_or(0);
            let media = if head[..n].starts_with(&[0x1f, 0x8b]) {
                spec::MEDIA_OCI_LAYER_GZIP
            } else {
                spec::MEDIA_OCI_LAYER
            };
            layers.push(Descriptor::new(media, &d, size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(spec::MEDIA_OCI_MANIFEST.into()),
            config: Descriptor::new(spec::MEDIA_OCI_CONFIG, config, config_size),
            layers,
            annotations: Default::default(),
        };
        let data = serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Format {
            archive: archive.into(),
            why: e.to_string(),
        })?;
        let md = store.put_bytes(&data, None, "manifest")?;
        let desc = Descriptor::new(spec::MEDIA_OCI_MANIFEST, md, data.len() as u64);
        for tag in e.repo_tags.iter().flatten() {
            let r: Reference = tag.parse().map_err(StoreError::from)?;
            store.tag(&r, desc.clone())?;
            names.push(r.canonical().to_string());
        }
    }
    Ok(names)
}

/// Write the named images to `out` as a tar in `format`. Deterministic: same images, same bytes.
pub fn export(
    store: &Store,
    names: &[Reference],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        archive: "export".into(),
        source,
    };
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut index = Index::default();
    let mut docker_entries = Vec::new();
    for name in names {
        let desc = store
            .lookup(name)?
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let digest: Digest = desc.digest.parse().map_err(StoreError::from)?;
        blobs.insert(digest.clone());
        let data = store.read_json_blob(&digest, &name.to_string())?;
        let mut manifests = Vec::new();
        if spec::is_index(&desc.media_type) {
            let idx: Index = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                what: name.to_string(),
                source,
            })?;
            for m in idx.manifests {
                let d: Digest = m.digest.parse().map_err(StoreError::from)?;
                if store.has_blob(&d) {
                    manifests.push(d);
                }
            }
        } else {
            manifests.push(digest.clone());
        }
        for m in &manifests {
            blobs.insert(m.clone());
            let man: Manifest = serde_json::from_slice(
                &store.read_json_blob(m, &name.to_string())?,
            )
            .map_err(|source| StoreError::Json {
                what: name.to_string(),
                source,
            })?;
            blobs.insert(man.config.digest.parse().map_err(StoreError::from)?);
            for l in &man.layers {
                blobs.insert(l.digest.parse().map_err(StoreError::from)?);
            }
            docker_entries.push(serde_json::json!({
                "Config": format!("blobs/sha256/{}", man.config.digest.trim_start_matches("sha256:")),
                "RepoTags": [name.canonical().to_string()],
                "Layers": man.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.trim_start_matches("sha256:"))).collect::<Vec<_>>(),
            }));
        }
        let mut entry = desc.clone();
        entry.annotations.insert(
            spec::ANNOTATION_REF_NAME.into(),
            name.canonical().to_string(),
        );
        entry.annotations.insert(
            spec::ANNOTATION_CONTAINERD_NAME.into(),
            name.canonical().to_string(),
        );
        index.manifests.push(entry);
    }
    let mut tar = tar::Builder::new(out);
    let add =
        |tar: &mut tar::Builder<_>, path: &str, size: u64, data: &mut dyn Read| -> io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, data)
        };
    let dir_header = |path: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_size(0);
        (h, path.to_string())
    };
    for d in ["blobs/", "blobs/sha256/"] {
        let (mut h, p) = dir_header(d);
        tar.append_data(&mut h, p, io::empty()).map_err(io_err)?;
    }
    for d in &blobs {
        let f = store.open_blob(d)?;
        let size = f.metadata().map_err(io_err)?.len();
        add(
            &mut tar,
            &format!("blobs/sha256/{}", d.hex()),
            size,
            &mut io::BufReader::new(f),
        )
        .map_err(io_err)?;
    }
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )
    .map_err(io_err)?;
    let index_json = serde_json::to_vec(&index).map_err(|e| io_err(e.into()))?;
    add(
        &mut tar,
        "index.json",
        index_json.len() as u64,
        &mut &index_json[..],
    )
    .map_err(io_err)?;
    if format == ArchiveFormat::Docker {
        let mj = serde_json::to_vec(&docker_entries).map_err(|e| io_err(e.into()))?;
        add(&mut tar, "manifest.json", mj.len() as u64, &mut &mj[..]).map_err(io_err)?;
    }
    tar.into_inner().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(())
}
