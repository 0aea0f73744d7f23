//! kiln-build builds OCI images from Dockerfiles without a daemon: it parses the Dockerfile,
//! plans the stages the target needs, runs each step on an overlay of the stage's layers (RUN in
//! a container of kiln-runtime), turns each step's changes into a layer, reuses unchanged steps
//! from its cache, and writes the image into the kiln store. `pkg build` (LinuxKit's package
//! format: a directory with `build.yml` and a Dockerfile) sits on top, and so does making a
//! manifest's images available ([`resolve::resolve_images`]: `@pkg:` builds and pulls).
//!
//! ```text
//! Dockerfile -> dockerfile::parse -> plan::plan (stages, waves)
//!   -> builder::build: per stage, per step: steps::apply on the typed instruction, on an
//!      overlay (lowers = unpacked layers) -> action
//!      -> diff::write_layer (upper dir -> tar+gzip blob) -> workspace cache
//!   -> image::write (config + manifest) -> store tag
//! ```

mod binfmt;
mod builder;
pub mod context;
pub mod diff;
pub mod dockerfile;
mod engine;
mod error;
mod events;
pub mod fsops;
pub mod image;
pub mod import;
mod options;
mod overlay;
pub mod pkg;
pub mod pkg_tag;
pub mod plan;
pub mod remote_cache;
pub mod resolve;
mod scratch;
pub mod shell_lex;
mod state;
mod steps;
mod vars;
mod workspace;

pub use builder::build;
pub use diff::LayerCompression;
pub use error::BuildError;
pub use events::{Event, KEEP_LOGS, LOG_DIR, TAIL_LINES, tail};
pub use import::{ImportOptions, import};
pub use kiln_fs::unpack::unpack;
pub use options::{BuildOptions, Built, DEFAULT_PIDS_LIMIT, Progress, RunOutput, SecretSource};
pub use scratch::remove_own as remove_own_scratch;
pub use vars::platform_args;
pub use workspace::{build_cache_dir, clear_build_cache, remove_stale_scratch};
