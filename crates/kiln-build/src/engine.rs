//! The engine shared by the stages of one build: the workspace and store, the options, the plan,
//! the finished stages, and the machinery steps use — resolving images, read-only views of
//! layers, and running a file system step through the step cache.

use crate::context::Context;
use crate::diff::{self, Layer};
use crate::dockerfile::Instruction;
use crate::error::BuildError;
use crate::events::Event;
use crate::image::ImageConfig;
use crate::options::BuildOptions;
use crate::overlay::Overlay;
use crate::plan::Plan;
use crate::shell_lex::expand;
use crate::state::{State, chain};
use crate::workspace::Workspace;
use kiln_oci::registry;
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, Reference};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An image resolved for a build: manifest digest, layers (diff id, blob) and config.
pub(crate) type ResolvedImage = (Digest, Vec<(Digest, Descriptor)>, ImageConfig);

/// The engine shared by the stages of one build.
pub(crate) struct Engine {
    pub(crate) ws: Workspace,
    pub(crate) opts: BuildOptions,
    /// The Dockerfile's name, for messages.
    pub(crate) file: String,
    /// The Dockerfile's escape character.
    pub(crate) escape: char,
    pub(crate) plan: Plan,
    pub(crate) context: Context,
    /// The global scope: platform ARGs, then the ARGs before the first FROM.
    pub(crate) global_vars: Vec<(String, String)>,
    /// Finished stages, by index.
    pub(crate) done: Mutex<HashMap<usize, State>>,
    pub(crate) executed: AtomicUsize,
    pub(crate) cached: AtomicUsize,
    /// The steps (stage index, line) whose result came from the step cache.
    pub(crate) cache_hits: Mutex<HashSet<(usize, usize)>>,
    /// This build's directory of RUN step logs.
    pub(crate) logs: PathBuf,
    /// The images read, by name as written: the manifest digest used.
    pub(crate) images: Mutex<std::collections::BTreeMap<String, Digest>>,
    /// The registry caches of `--cache-from` and `--cache-to`.
    pub(crate) remote: crate::remote_cache::RemoteCache,
}

/// The error of a build thread that failed without saying why.
pub(crate) fn poisoned() -> BuildError {
    BuildError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other("a build thread failed"),
    }
}

/// The first line of `text`, at most 100 characters, for progress lines.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(100)
        .collect()
}

impl Engine {
    /// An error about the instruction at `line`.
    pub(crate) fn err(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Dockerfile {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    /// Report `event` to the build's progress callback.
    pub(crate) fn progress(&self, event: Event) {
        if let Some(p) = &self.opts.progress {
            p(&event);
        }
    }

    /// The name of stage `i` in events and log names: its own, else `stage-N`.
    pub(crate) fn stage_label(&self, i: usize) -> String {
        self.plan.stages[i]
            .name()
            .map_or_else(|| format!("stage-{i}"), str::to_string)
    }

    /// The log file of the RUN step at `line` of stage `i`.
    pub(crate) fn log_path(&self, i: usize, line: usize) -> PathBuf {
        self.logs
            .join(crate::events::log_name(&self.stage_label(i), line))
    }

    /// `word` expanded with the stage's variables; errors name `line`.
    pub(crate) fn expand(&self, st: &State, line: usize, word: &str) -> Result<String, BuildError> {
        expand(word, &st.vars(), self.escape).map_err(|e| self.err(line, e.0))
    }

    /// The finished state of an earlier stage.
    pub(crate) fn stage_state(&self, i: usize) -> Result<State, BuildError> {
        self.done
            .lock()
            .map_err(|_| poisoned())?
            .get(&i)
            .cloned()
            .ok_or_else(poisoned)
    }

    /// An image by reference: from the store, else pulled. Returns the manifest digest, the
    /// layers (diff id and blob) and the config. Errors name `line`.
    pub(crate) fn image(
        &self,
        line: usize,
        name: &str,
        arch: &str,
    ) -> Result<ResolvedImage, BuildError> {
        let r: Reference = name
            .parse()
            .map_err(|e| self.err(line, format!("invalid image name {name:?}: {e}")))?;
        let store = &self.ws.store;
        let img = match store.resolve(&r, arch) {
            Ok(img) => img,
            Err(in_store) => {
                let mut ropts = self.opts.registry.clone();
                ropts.arch = arch.to_string();
                // The store may hold the name for other platforms only: say so.
                let held = match &in_store {
                    kiln_oci::StoreError::NoPlatform { .. } => format!(" ({in_store})"),
                    _ => String::new(),
                };
                let pulled = registry::pull(store, &r, &ropts).map_err(|e| {
                    self.err(
                        line,
                        format!("image {r} for linux/{arch} is not in the store{held} and could not be pulled: {e}; import it with `kiln image import` (--arch {arch}) or `kiln cache import`"),
                    )
                })?;
                self.progress(Event::ImagePulled {
                    reference: r.to_string(),
                    digest: pulled.digest.to_string(),
                    bytes: pulled.bytes,
                });
                store.resolve(&r, arch)?
            }
        };
        let config_digest: Digest = img
            .manifest
            .config
            .digest
            .parse()
            .map_err(kiln_oci::StoreError::from)?;
        let raw = store.read_json_blob(&config_digest, &format!("config of {r}"))?;
        let config = ImageConfig::from_json(&raw)
            .map_err(|e| self.err(line, format!("config of {r}: {e}")))?;
        let diff_ids = config.diff_ids();
        if diff_ids.len() != img.manifest.layers.len() {
            return Err(self.err(
                line,
                format!(
                    "image {r} lists {} layers but {} diff ids",
                    img.manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (d, l) in diff_ids.iter().zip(&img.manifest.layers) {
            let d: Digest = d
                .parse()
                .map_err(|_| self.err(line, format!("image {r}: bad diff id {d:?}")))?;
            layers.push((d, l.clone()));
        }
        if let Ok(mut images) = self.images.lock() {
            images.insert(name.to_string(), img.digest.clone());
        }
        Ok((img.digest, layers, config))
    }

    /// The unpacked directories of `layers`, bottom first.
    pub(crate) fn lowers(
        &self,
        layers: &[(Digest, Descriptor)],
    ) -> Result<Vec<PathBuf>, BuildError> {
        layers
            .iter()
            .map(|(d, blob)| self.ws.layer_dir(d, blob))
            .collect()
    }

    /// A read-only view of `layers`.
    pub(crate) fn view(&self, layers: &[(Digest, Descriptor)]) -> Result<Overlay, BuildError> {
        let lowers = self.lowers(layers)?;
        Overlay::readonly(&self.ws.scratch(), &lowers)
    }

    /// Run a step that changes the file system: look it up in the cache under the chain key
    /// extended by `material`, else mount the stage writable, call `action` on the merged root
    /// and turn the changes into a layer.
    pub(crate) fn fs_step(
        &self,
        st: &mut State,
        ins: &Instruction,
        material: &str,
        history: &str,
        action: &mut dyn FnMut(&Path) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        // The layer's bytes depend on its file times (clamped to SOURCE_DATE_EPOCH) and its
        // compression too: a result made under other settings is not this step's.
        let key = chain(
            &st.key,
            &format!(
                "{material}\nlayer epoch {:?} compression {:?}",
                self.opts.source_date_epoch, self.opts.compression
            ),
        );
        if !self.opts.no_cache
            && let Some(hit) = self
                .ws
                .cache_get(&key)
                .or_else(|| self.remote.lookup(&self.ws, &key))
        {
            self.remote.record(&key, hit.layer.clone());
            self.cached.fetch_add(1, Ordering::Relaxed);
            self.cache_hits
                .lock()
                .map_err(|_| poisoned())?
                .insert((st.stage, ins.line));
            let layer = match hit.layer {
                Some(l) => Some((
                    l.diff_id.parse().map_err(kiln_oci::StoreError::from)?,
                    l.descriptor,
                )),
                None => None,
            };
            st.config.add_history(history, layer.is_none());
            if let Some(l) = layer {
                st.layers.push(l);
            }
            st.key = key;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let lowers = self.lowers(&st.layers)?;
        let overlay = Overlay::writable(&self.ws.scratch(), &lowers)?;
        let mounted = std::time::Instant::now();
        action(&overlay.merged)?;
        let acted = std::time::Instant::now();
        let (upper, _scratch) = overlay.finish()?;
        diff::prune_copied_up(&upper, &lowers)?;
        let pruned = std::time::Instant::now();
        let layer: Option<Layer> = if diff::is_empty(&upper)? {
            None
        } else {
            let layer = diff::write_layer(
                &self.ws.store,
                &upper,
                self.opts.source_date_epoch,
                self.opts.compression,
            )?;
            self.ws.adopt(&upper, &self.ws.layer_path(&layer.diff_id))?;
            Some(layer)
        };
        tracing::info!(
            "line {}: layers ready in {:.2?}, step {:.2?}, prune {:.2?}, layer {:.2?}",
            ins.line,
            mounted - started,
            acted - mounted,
            pruned - acted,
            pruned.elapsed()
        );
        self.ws.cache_put(&key, layer.as_ref())?;
        self.remote.record(
            &key,
            layer.as_ref().map(crate::workspace::CachedLayer::from),
        );
        self.executed.fetch_add(1, Ordering::Relaxed);
        st.config.add_history(history, layer.is_none());
        if let Some(l) = layer {
            st.layers.push((l.diff_id, l.descriptor));
        }
        st.key = key;
        Ok(())
    }
}
