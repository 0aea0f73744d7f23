//! The build engine: runs a Dockerfile's stages (independent stages in parallel), each step on
//! an overlay of the stage's layers, turns each step's changes into a layer, reuses unchanged
//! steps from the step cache, and writes the target stage as an OCI image into the store.

use crate::context::Context;
use crate::diff::{self, Layer};
use crate::dockerfile::{self, Args, Dockerfile, Instruction};
use crate::error::{BuildError, io_err};
use crate::image::{self, ImageConfig};
use crate::overlay::Overlay;
use crate::plan::{self, Base, Plan};
use crate::shell_lex::{expand, lookup, split_words};
use crate::steps;
use crate::workspace::Workspace;
use kiln_oci::registry::{self, RegistryOptions};
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, Reference, Store};
use kiln_runtime::Network;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// An image resolved for a build: manifest digest, layers (diff id, blob) and config.
pub(crate) type ResolvedImage = (Digest, Vec<(Digest, Descriptor)>, ImageConfig);

/// Where progress lines go.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// What to build and how.
#[derive(Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The stage to build (the last one if unset).
    pub target: Option<String>,
    /// `--build-arg NAME=VALUE` values.
    pub build_args: Vec<(String, String)>,
    /// Target architecture, in Go's naming (amd64, arm64).
    pub arch: String,
    /// Ignore the step cache.
    pub no_cache: bool,
    /// Labels added to the image (after the Dockerfile's own).
    pub labels: BTreeMap<String, String>,
    /// Names to give the image in the store.
    pub tags: Vec<Reference>,
    /// How to reach registries for base images.
    pub registry: RegistryOptions,
    /// Networking for RUN steps that do not say (`--network`).
    pub network: Network,
    /// SOURCE_DATE_EPOCH: the image creation time, and a cap on file times in new layers.
    pub source_date_epoch: Option<u64>,
    /// Where progress lines go.
    pub progress: Option<Progress>,
    /// How new layers are compressed.
    pub compression: crate::diff::LayerCompression,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("context", &self.context)
            .field("dockerfile", &self.dockerfile)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl BuildOptions {
    /// Options for building `dockerfile` in `context` for the host's architecture.
    pub fn new(context: impl Into<PathBuf>, dockerfile: impl Into<PathBuf>) -> Self {
        BuildOptions {
            context: context.into(),
            dockerfile: dockerfile.into(),
            target: None,
            build_args: Vec::new(),
            arch: kiln_oci::spec::normalize_arch("").to_string(),
            no_cache: false,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            registry: RegistryOptions::default(),
            network: Network::Host,
            source_date_epoch: None,
            progress: None,
            compression: crate::diff::LayerCompression::default(),
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// Digest of the image manifest.
    pub manifest: Digest,
    /// Its descriptor (as tagged in the store).
    pub descriptor: Descriptor,
    /// The image config.
    pub config: ImageConfig,
    /// Steps that changed the file system and were executed.
    pub executed: usize,
    /// Steps that changed the file system and came from the cache.
    pub cached: usize,
}

/// The state of a stage while it is built.
#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) layers: Vec<(Digest, Descriptor)>,
    pub(crate) config: ImageConfig,
    /// The chain key: every step so far and its inputs.
    pub(crate) key: String,
    /// ARGs in scope, with their values.
    pub(crate) args: Vec<(String, String)>,
    /// Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD).
    pub(crate) cmd_set: bool,
}

impl State {
    /// Variables for expansion: ARGs, overridden by ENV.
    pub(crate) fn vars(&self) -> Vec<(String, String)> {
        let mut v = self.args.clone();
        v.extend(self.config.env());
        v
    }
}

/// The engine shared by the stages of one build.
pub(crate) struct Engine {
    pub(crate) ws: Workspace,
    pub(crate) opts: BuildOptions,
    pub(crate) file: String,
    pub(crate) df: Dockerfile,
    pub(crate) plan: Plan,
    pub(crate) context: Context,
    pub(crate) global_vars: Vec<(String, String)>,
    pub(crate) done: Mutex<HashMap<usize, State>>,
    pub(crate) executed: AtomicUsize,
    pub(crate) cached: AtomicUsize,
}

/// Build the image `opts` describes into `store`.
pub fn build(store: &Store, opts: &BuildOptions) -> Result<Built, BuildError> {
    let file = opts
        .dockerfile
        .file_name()
        .map_or_else(|| "Dockerfile".into(), |f| f.to_string_lossy().to_string());
    let text = std::fs::read_to_string(&opts.dockerfile).map_err(io_err(&opts.dockerfile))?;
    let df = dockerfile::parse(&file, &text)?;
    let context = Context::open(&opts.context).map_err(|m| BuildError::Dockerfile {
        file: opts.context.join(".dockerignore").display().to_string(),
        line: 0,
        message: m,
    })?;
    // Global scope: the predefined platform ARGs, then the ARGs before the first FROM.
    let mut global_vars = platform_args(&opts.arch);
    let pre = dockerfile::Dockerfile {
        escape: df.escape,
        instructions: df
            .instructions
            .iter()
            .take_while(|i| i.keyword == "ARG")
            .cloned()
            .collect(),
    };
    for ins in &pre.instructions {
        for (name, value) in arg_values(&file, ins, df.escape, &global_vars, &opts.build_args, &[])?
        {
            global_vars.push((name, value));
        }
    }
    let plan = plan::plan(&file, &df, opts.target.as_deref(), &global_vars)?;
    let _guard = store.write_guard()?;
    let engine = Engine {
        ws: Workspace::open(store)?,
        opts: opts.clone(),
        file,
        df,
        plan,
        context,
        global_vars,
        done: Mutex::new(HashMap::new()),
        executed: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
    };
    for wave in engine.plan.waves.clone() {
        let results: Vec<Result<(usize, State), BuildError>> = std::thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&i| {
                    let e = &engine;
                    s.spawn(move || e.build_stage(i).map(|st| (i, st)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BuildError::Io {
                            path: PathBuf::new(),
                            source: std::io::Error::other("a build thread panicked"),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            let (i, st) = r?;
            engine.done.lock().map_err(|_| poisoned())?.insert(i, st);
        }
    }
    let target = engine
        .done
        .lock()
        .map_err(|_| poisoned())?
        .remove(&engine.plan.target)
        .ok_or_else(poisoned)?;
    let mut config = target.config;
    for (k, v) in &opts.labels {
        config.set_label(k, v);
    }
    let created = image::timestamp(opts.source_date_epoch);
    config.finish(&target.layers, &created);
    let (manifest, descriptor) = image::write(store, &config, &target.layers)?;
    for tag in &opts.tags {
        store.tag(tag, descriptor.clone())?;
    }
    Ok(Built {
        manifest,
        descriptor,
        config,
        executed: engine.executed.load(Ordering::Relaxed),
        cached: engine.cached.load(Ordering::Relaxed),
    })
}

fn poisoned() -> BuildError {
    BuildError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other("a build thread failed"),
    }
}

/// The predefined platform ARGs for building `arch` on this machine.
pub fn platform_args(arch: &str) -> Vec<(String, String)> {
    let host = kiln_oci::spec::normalize_arch("").to_string();
    let arch = kiln_oci::spec::normalize_arch(arch).to_string();
    vec![
        ("TARGETPLATFORM".into(), format!("linux/{arch}")),
        ("TARGETOS".into(), "linux".into()),
        ("TARGETARCH".into(), arch),
        ("TARGETVARIANT".into(), String::new()),
        ("BUILDPLATFORM".into(), format!("linux/{host}")),
        ("BUILDOS".into(), "linux".into()),
        ("BUILDARCH".into(), host),
        ("BUILDVARIANT".into(), String::new()),
    ]
}

/// The names and values an `ARG` instruction declares. A value comes from `--build-arg`, else
/// the default in the instruction, else the global ARG of that name.
pub(crate) fn arg_values(
    file: &str,
    ins: &Instruction,
    escape: char,
    vars: &[(String, String)],
    build_args: &[(String, String)],
    globals: &[(String, String)],
) -> Result<Vec<(String, String)>, BuildError> {
    let Args::Shell(text) = &ins.args else {
        return Err(dockerfile_err(file, ins, "ARG takes NAME[=default]".into()));
    };
    let mut out = Vec::new();
    for word in split_words(text, escape) {
        let (name, default) = match word.split_once('=') {
            Some((n, d)) => (n.to_string(), Some(d.to_string())),
            None => (word.clone(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(dockerfile_err(
                file,
                ins,
                format!("invalid ARG name {name:?}"),
            ));
        }
        let value = if let Some(v) = lookup(build_args, &name) {
            v.to_string()
        } else if let Some(d) = default {
            expand(&d, vars, escape).map_err(|e| dockerfile_err(file, ins, e.0))?
        } else {
            lookup(globals, &name).unwrap_or("").to_string()
        };
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) fn dockerfile_err(file: &str, ins: &Instruction, message: String) -> BuildError {
    BuildError::Dockerfile {
        file: file.to_string(),
        line: ins.line,
        message,
    }
}

pub(crate) fn chain(key: &str, material: &str) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(material.as_bytes());
    hex::encode(h.finalize())
}

impl Engine {
    pub(crate) fn err(&self, ins: &Instruction, message: impl Into<String>) -> BuildError {
        dockerfile_err(&self.file, ins, message.into())
    }

    pub(crate) fn progress(&self, line: &str) {
        if let Some(p) = &self.opts.progress {
            p(line);
        }
    }

    pub(crate) fn expand(
        &self,
        st: &State,
        ins: &Instruction,
        word: &str,
    ) -> Result<String, BuildError> {
        expand(word, &st.vars(), self.df.escape).map_err(|e| self.err(ins, e.0))
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

    fn stage_label(&self, i: usize) -> String {
        let s = &self.plan.stages[i];
        s.name.clone().unwrap_or_else(|| format!("stage-{i}"))
    }

    fn build_stage(&self, i: usize) -> Result<State, BuildError> {
        let stage = self.plan.stages[i].clone();
        let from = &stage.from;
        let base = plan::base_of(&self.plan.stages, &stage, self.df.escape, &self.global_vars)
            .map_err(|m| self.err(from, m))?;
        let arch = match from.flag("platform").and_then(|f| f.value.clone()) {
            Some(p) => {
                let p = expand(&p, &self.global_vars, self.df.escape)
                    .map_err(|e| self.err(from, e.0))?;
                p.split('/').nth(1).unwrap_or(&p).to_string()
            }
            None => self.opts.arch.clone(),
        };
        let label = self.stage_label(i);
        let mut st = match &base {
            Base::Scratch => State {
                layers: Vec::new(),
                config: ImageConfig::scratch(&arch),
                key: chain("", "scratch"),
                args: Vec::new(),
                cmd_set: false,
            },
            Base::Stage(j) => {
                let mut s = self.stage_state(*j)?;
                s.args.clear();
                s.cmd_set = false;
                s
            }
            Base::Image(name) => {
                self.progress(&format!("[{label}] FROM {name}"));
                let (digest, layers, config) = self.image(from, name, &arch)?;
                State {
                    layers,
                    config,
                    key: chain("", &format!("image {digest}")),
                    args: Vec::new(),
                    cmd_set: false,
                }
            }
        };
        for ins in &stage.body {
            self.progress(&format!(
                "[{label}] {} {}",
                ins.keyword,
                one_line(&ins.text)
            ));
            steps::dispatch(self, &mut st, ins)?;
        }
        Ok(st)
    }

    /// An image by reference: from the store, else pulled. Returns the manifest digest, the
    /// layers (diff id and blob) and the config.
    pub(crate) fn image(
        &self,
        ins: &Instruction,
        name: &str,
        arch: &str,
    ) -> Result<ResolvedImage, BuildError> {
        let r: Reference = name
            .parse()
            .map_err(|e| self.err(ins, format!("invalid image name {name:?}: {e}")))?;
        let store = &self.ws.store;
        let img = match store.resolve(&r, arch) {
            Ok(img) => img,
            Err(_) => {
                let mut ropts = self.opts.registry.clone();
                ropts.arch = arch.to_string();
                registry::pull(store, &r, &ropts).map_err(|e| {
                    self.err(
                        ins,
                        format!("image {r} is not in the store and could not be pulled: {e}; import it with `kiln image import` or `kiln cache import`"),
                    )
                })?;
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
            .map_err(|e| self.err(ins, format!("config of {r}: {e}")))?;
        let diff_ids = config.diff_ids();
        if diff_ids.len() != img.manifest.layers.len() {
            return Err(self.err(
                ins,
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
                .map_err(|_| self.err(ins, format!("image {r}: bad diff id {d:?}")))?;
            layers.push((d, l.clone()));
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
        let key = chain(&st.key, material);
        if !self.opts.no_cache
            && let Some(hit) = self.ws.cache_get(&key)
        {
            self.cached.fetch_add(1, Ordering::Relaxed);
            self.progress(&format!("  CACHED {}", one_line(&ins.text)));
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
        self.executed.fetch_add(1, Ordering::Relaxed);
        st.config.add_history(history, layer.is_none());
        if let Some(l) = layer {
            st.layers.push((l.diff_id, l.descriptor));
        }
        st.key = key;
        Ok(())
    }
}

fn one_line(text: &str) -> String {
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    line
}
