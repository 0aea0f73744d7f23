//! kiln-build builds OCI images from Dockerfiles without a daemon: it parses the Dockerfile,
//! plans the stages the target needs, runs each step on an overlay of the stage's layers (RUN in
//! a container of kiln-runtime), turns each step's changes into a layer, reuses unchanged steps
//! from its cache, and writes the image into the kiln store. `pkg build` (LinuxKit's package
//! format: a directory with `build.yml` and a Dockerfile) sits on top.
//!
//! ```text
//! Dockerfile -> dockerfile::parse -> plan::plan (stages, waves)
//!   -> builder::build: per stage, per step: overlay (lowers = unpacked layers) -> action
//!      -> diff::write_layer (upper dir -> tar+gzip blob) -> workspace cache
//!   -> image::write (config + manifest) -> store tag
//! ```

mod builder;
pub mod bundle;
pub mod context;
pub mod diff;
pub mod dockerfile;
mod error;
pub mod fsops;
pub mod image;
pub mod import;
mod overlay;
pub mod pkg;
pub mod plan;
pub mod shell_lex;
mod steps;
mod unpack;
mod workspace;

pub use builder::{BuildOptions, Built, Progress, build, platform_args};
pub use diff::LayerCompression;
pub use error::BuildError;
pub use import::{ImportOptions, import};
pub use unpack::unpack;
pub use workspace::clear_build_cache;
