//! The builder's working area beside the image store (`build/` in the store directory):
//! unpacked layers that serve as overlay lower directories, the step cache, and scratch space
//! for overlay mounts.
//!
//! Each build works in its own locked scratch directory (see `scratch`); opening the working
//! area removes the scratch directories of builds that were killed.
//!
//! Unpacked layers are named by diff id and created atomically (unpacked into scratch space,
//! then renamed), so two builds can share them. A cache entry maps a step's key to the layer it
//! produced; an entry whose layer blob has left the store is a miss.

use crate::diff::Layer;
use crate::error::{BuildError, io_err};
use crate::scratch::{self, Scratch};
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, Store};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The builder's directories.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The image store.
    pub store: Store,
    root: PathBuf,
    scratch: Arc<Scratch>,
}

/// What the step cache remembers about one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedStep {
    /// The layer the step produced, or `None` when it changed nothing.
    pub layer: Option<CachedLayer>,
}

/// A layer in the step cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedLayer {
    /// Diff id.
    pub diff_id: String,
    /// The blob.
    pub descriptor: Descriptor,
}

impl From<&Layer> for CachedLayer {
    fn from(l: &Layer) -> CachedLayer {
        CachedLayer {
            diff_id: l.diff_id.to_string(),
            descriptor: l.descriptor.clone(),
        }
    }
}

/// The builder's working area of `store`: unpacked layers, the step cache, logs and scratch.
pub fn build_cache_dir(store: &Store) -> PathBuf {
    store.root().join("build")
}

/// Remove the scratch directories that killed builds left in `store`'s working area, leaving
/// those of running builds. Returns how many were removed.
pub fn remove_stale_scratch(store: &Store) -> usize {
    scratch::remove_stale(&build_cache_dir(store).join("tmp"))
}

/// Remove the build cache of `store` (cached steps, unpacked layers, scratch space) while no
/// build runs. Returns the bytes freed.
pub fn clear_build_cache(store: &Store) -> Result<u64, BuildError> {
    let _exclusive = store.exclusive_guard()?;
    let root = build_cache_dir(store);
    let mut bytes = 0;
    for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
        if e.file_type().is_file() {
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    // Stale overlay mounts of a killed build would keep files busy: detach them first.
    scratch::detach_overlays(&root.join("tmp"));
    match std::fs::remove_dir_all(&root) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&root)(e)),
    }
}

impl Workspace {
    /// The working area of `store`.
    pub fn open(store: &Store) -> Result<Workspace, BuildError> {
        let root = build_cache_dir(store);
        for d in ["layers", "cache", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let tmp = root.join("tmp");
        let removed = scratch::remove_stale(&tmp);
        if removed > 0 {
            tracing::info!("removed {removed} scratch directories of builds that were killed");
        }
        Ok(Workspace {
            store: store.clone(),
            scratch: Arc::new(Scratch::create(&tmp)?),
            root,
        })
    }

    /// This build's scratch space for overlay mounts and unpacking (on the same file system
    /// as the unpacked layers), removed when the last clone of the working area is dropped.
    pub fn scratch(&self) -> PathBuf {
        self.scratch.path().to_path_buf()
    }

    /// Where an unpacked layer lives once it has been unpacked.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    /// The unpacked directory of `layer`, unpacking its blob first if needed.
    pub fn layer_dir(&self, diff_id: &Digest, blob: &Descriptor) -> Result<PathBuf, BuildError> {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = tempfile::Builder::new()
            .prefix("unpack")
            .tempdir_in(self.scratch())
            .map_err(io_err(self.scratch()))?;
        let target = tmp.path().join("l");
        fs::create_dir(&target).map_err(io_err(&target))?;
        let reader = self.store.open_layer(blob)?;
        kiln_fs::unpack::unpack(reader, &target, &blob.digest)?;
        self.adopt(&target, &dest)?;
        Ok(dest)
    }

    /// Move a finished directory (an unpacked layer or a step's upper directory) into place as
    /// the unpacked form of its layer. If another build got there first, its copy is kept.
    pub fn adopt(&self, dir: &Path, dest: &Path) -> Result<(), BuildError> {
        match fs::rename(dir, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(dir);
                Ok(())
            }
            Err(e) => Err(io_err(dest)(e)),
        }
    }

    /// Look a step up in the cache.
    pub fn cache_get(&self, key: &str) -> Option<CachedStep> {
        let data = fs::read(self.root.join("cache").join(key)).ok()?;
        let step: CachedStep = serde_json::from_slice(&data).ok()?;
        if let Some(l) = &step.layer {
            let d: Digest = l.descriptor.digest.parse().ok()?;
            if !self.store.has_blob(&d) {
                return None;
            }
        }
        Some(step)
    }

    /// Remember a step.
    pub fn cache_put(&self, key: &str, layer: Option<&Layer>) -> Result<(), BuildError> {
        let step = CachedStep {
            layer: layer.map(CachedLayer::from),
        };
        let path = self.root.join("cache").join(key);
        let mut tmp =
            tempfile::NamedTempFile::new_in(self.root.join("cache")).map_err(io_err(&path))?;
        serde_json::to_writer(&mut tmp, &step).map_err(|e| io_err(&path)(e.into()))?;
        tmp.persist(&path).map_err(|e| io_err(&path)(e.error))?;
        Ok(())
    }
}
