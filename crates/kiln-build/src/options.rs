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
    /// Secrets RUN steps may mount (`--secret id=ID,src=PATH`), by id. Their values are read
    /// when a step mounts them and never enter a layer, the image config or the step cache.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Registry refs whose exported step-cache entries a step that misses the local cache may
    /// use (`--cache-from`), in order; see [`crate::remote_cache`].
    pub cache_from: Vec<Reference>,
    /// Registry refs the step-cache entries this build used or created are exported to
    /// (`--cache-to`), merged with what they hold.
    pub cache_to: Vec<crate::remote_cache::CacheRef>,
}

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// The value of one of kiln's environment variables.
    Env(String),
}

impl SecretSource {
    /// Parse a `--secret` value as BuildKit's clients do: `id=ID,src=PATH` (or `source=`),
    /// `id=ID,env=VAR`, optionally with `type=file` or `type=env` (then the variable defaults
    /// to the id). Returns the id and the source; errors name the field.
    pub fn parse(spec: &str) -> Result<(String, SecretSource), String> {
        let (mut id, mut src, mut env, mut ty) = (None, None, None, None);
        for field in spec.split(',') {
            let Some((k, v)) = field.split_once('=') else {
                return Err(format!(
                    "--secret {spec}: {field:?} is not KEY=VALUE; write id=ID,src=PATH or id=ID,env=VAR"
                ));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => ty = Some(v.to_string()),
                other => {
                    return Err(format!(
                        "--secret {spec}: unknown key {other:?}; keys are id, src, env and type"
                    ));
                }
            }
        }
        let id = id.filter(|i| !i.is_empty()).ok_or_else(|| {
            format!("--secret {spec}: no id; write id=ID,src=PATH or id=ID,env=VAR")
        })?;
        let source = match (ty.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(format!("--secret {spec}: give src= or env=, not both"));
            }
            (None | Some("file"), Some(p), None) => SecretSource::File(PathBuf::from(p)),
            (None | Some("env"), None, Some(v)) => SecretSource::Env(v),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (Some("file"), None, None) => SecretSource::File(PathBuf::from(&id)),
            (Some(t @ ("file" | "env")), _, _) => {
                return Err(format!(
                    "--secret {spec}: type={t} does not go with the source given"
                ));
            }
            (Some(t), _, _) => {
                return Err(format!(
                    "--secret {spec}: type={t}: use type=file or type=env"
                ));
            }
            (None, None, None) => {
                return Err(format!(
                    "--secret {spec}: no source; add src=PATH or env=VAR"
                ));
            }
        };
        Ok((id, source))
    }

    /// The secret's value.
    pub(crate) fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SecretSource::File(p) => {
                std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))
            }
            SecretSource::Env(v) => std::env::var_os(v)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| format!("the environment variable {v} is not set")),
        }
    }
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
            secrets: BTreeMap::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
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
    /// The images the build read (FROM, COPY --from, RUN --mount from): each name as
    /// written, with the digest of the manifest used, sorted by name.
    pub images: Vec<(String, Digest)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources() {
        assert_eq!(
            SecretSource::parse("id=tok,src=/tmp/t").expect("file"),
            ("tok".into(), SecretSource::File("/tmp/t".into()))
        );
        assert_eq!(
            SecretSource::parse("type=env,id=TOKEN").expect("env"),
            ("TOKEN".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            SecretSource::parse("id=a,env=B").expect("env"),
            ("a".into(), SecretSource::Env("B".into()))
        );
        for (bad, says) in [
            ("src=/x", "no id"),
            ("id=a", "no source"),
            ("id=a,src=x,env=y", "not both"),
            ("id=a,path=x", "unknown key \"path\""),
            ("id=a,type=ssh,src=x", "type=ssh"),
            ("id=a,srcx", "is not KEY=VALUE"),
        ] {
            let e = SecretSource::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
