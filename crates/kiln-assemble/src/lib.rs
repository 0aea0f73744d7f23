//! Assembly: a manifest and the images it names become one stream of file system entries, the
//! root filesystem of the system, laid out as LinuxKit lays it out (see [`assemble`]).
//!
//! This crate owns the entry stream ([`Entry`], [`Sink`]), layer flattening (whiteouts, opaque
//! directories, hostile paths: [`layers`]), the OCI `config.json` and `runtime.json` of each
//! container ([`oci_config`]) and the image metadata file. It does not fetch images (that is
//! `kiln-oci`) and does not know output formats (that is `kiln-format`): it writes to a
//! [`Sink`].
//!
//! ```no_run
//! use kiln_assemble::{Collect, Options, assemble};
//! let set = kiln_manifest::ManifestSet::load(&["linuxkit.yml"])?;
//! let store = kiln_oci::Store::open(kiln_oci::Store::default_root())?;
//! let mut listing = Collect::default();
//! assemble(&set, &store, &Options::default(), &mut listing)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod build;
mod entry;
mod error;
pub mod layers;
pub mod metadata;
pub mod oci_config;

pub use build::{Options, RESOLV_SYMLINK, assemble, image_references};
pub use entry::{Collect, Entry, Kind, Sink};
pub use error::AssembleError;
