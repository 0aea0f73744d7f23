//! The kiln manifest: LinuxKit's YAML format and kiln's additions.
//!
//! This crate owns the schema ([`Manifest`], [`Image`], [`File`], ...), parsing with errors that
//! name the file, line, column and key, the merging of several files, the validation that needs
//! the whole merged manifest (unique names, named ids), and the parsing of the
//! `org.mobyproject.config` image label. Input from elsewhere is bounded before it is parsed
//! ([`limits`]), and the names and paths that end up in the root filesystem are checked once,
//! here, for every output format ([`paths`]). It does not touch images or the file system beyond
//! reading the manifest files: resolving images and merging labels into OCI configs is
//! `kiln-assemble`'s job.
//!
//! ```
//! use kiln_manifest::ManifestSet;
//! let mut set = ManifestSet::default();
//! set.add("m.yml", "kernel:\n  image: linuxkit/kernel:6.6\ninit: [linuxkit/init:v1]\n").unwrap();
//! set.validate().unwrap();
//! assert_eq!(set.manifest.init.len(), 1);
//! ```

mod error;
#[cfg(test)]
mod hostile_tests;
mod images;
pub mod limits;
mod load;
pub mod locate;
pub mod paths;
mod schema;

pub use error::{Diagnostic, ManifestError};
pub use load::{CONTAINER_SECTIONS, ManifestSet, TrustSection, parse_document, parse_label};
pub use schema::*;

/// The image label holding an image's default container settings (LinuxKit's convention),
/// parsed by [`parse_label`].
pub const CONFIG_LABEL: &str = "org.mobyproject.config";

/// Render the merged manifest as YAML, as `kiln build --dry-run` prints it.
pub fn to_yaml(m: &Manifest) -> String {
    serde_norway::to_string(m).unwrap_or_else(|e| format!("# cannot render manifest: {e}\n"))
}
