//! The kiln manifest: LinuxKit's YAML format and kiln's additions.
//!
//! This crate owns the schema ([`Manifest`], [`Image`], [`File`], ...), parsing with errors that
//! name the file, line, column and key, the merging of several files, the validation that needs
//! the whole merged manifest (unique names, named ids), and the parsing of the
//! `org.mobyproject.config` image label. It does not touch images or the file system beyond
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
mod load;
pub mod locate;
mod schema;

pub use error::{Diagnostic, ManifestError};
pub use load::{CONTAINER_SECTIONS, ManifestSet, parse_document, parse_label};
pub use schema::*;

/// Render the merged manifest as YAML, as `kiln build --dry-run` prints it.
pub fn to_yaml(m: &Manifest) -> String {
    serde_norway::to_string(m).unwrap_or_else(|e| format!("# cannot render manifest: {e}\n"))
}
