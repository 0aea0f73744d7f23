//! What a build is asked to do ([`BuildOptions`]) and what it produced ([`Built`]).

use crate::diff::LayerCompression;
use crate::image::ImageConfig;
use crate::vars::host_arch;
use kiln_oci::registry::RegistryOptions;
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, Reference};
use kiln_runtime::Network;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::events::Progress;

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
    /// Where the build's [`Event`](crate::Event)s go.
    pub progress: Option<Progress>,
    /// Copy each RUN step's output to kiln's standard error as it runs (it is kept in the
    /// step's log file either way). On by default.
    pub echo_run_output: bool,
    /// Also hand each RUN step's output, as it comes, to this function (with the step's
    /// stage name and line): a renderer showing the last line of a running step uses it.
    pub run_output: Option<RunOutput>,
    /// How new layers are compressed.
    pub compression: LayerCompression,
    /// Let `RUN --security=insecure` steps run without the sandbox (BuildKit's
    /// `security.insecure` entitlement); without it such a step is an error.
    pub allow_insecure: bool,
    /// The most processes a RUN step may have at once ([`DEFAULT_PIDS_LIMIT`] unless set): the
    /// `pids.max` of the step's cgroup, or its RLIMIT_NPROC where the host has no writable pids
    /// controller (see `kiln_runtime::process_limit`).
    pub pids_limit: u64,
}

/// Where RUN steps' output goes as it comes ([`BuildOptions::run_output`]): called with the
/// stage's name (as in [`Event`](crate::Event)s), the step's line and a chunk of output (not
/// split at line ends).
pub type RunOutput = std::sync::Arc<dyn Fn(&str, usize, &[u8]) + Send + Sync>;

/// The process limit of a RUN step unless set (as podman's default `pids_limit`).
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;

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
            arch: host_arch().to_string(),
            no_cache: false,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            registry: RegistryOptions::default(),
            network: Network::Host,
            source_date_epoch: None,
            progress: None,
            echo_run_output: true,
            run_output: None,
            compression: LayerCompression::default(),
            allow_insecure: false,
            pids_limit: DEFAULT_PIDS_LIMIT,
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
