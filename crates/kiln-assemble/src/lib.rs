//! Assembly: a manifest and the images it names become one stream of file system entries, the
//! root filesystem of the system, laid out as LinuxKit lays it out (see [`assemble`]).
//!
//! This crate owns the layout of the root filesystem, the OCI `config.json` and `runtime.json`
//! of each container ([`oci_config`]), the image metadata file, and unpacking one image as a
//! runtime bundle ([`unpack_bundle`]). It does not fetch images (that is `kiln-oci`), does not
//! flatten layers itself (that is `kiln-fs`, which also defines the entry stream) and does not
//! know output formats (that is `kiln-format`): it writes to a [`kiln_fs::Sink`].
//!
//! ```no_run
//! use kiln_assemble::{Options, assemble};
//! use kiln_fs::Collect;
//! let set = kiln_manifest::ManifestSet::load(&["linuxkit.yml"])?;
//! let store = kiln_oci::Store::open(kiln_oci::Store::default_root())?;
//! let mut listing = Collect::default();
//! assemble(&set, &store, &Options::default(), &mut listing)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bootloader;
mod build;
mod bundle;
mod error;
mod firmware;
mod image_files;
mod input_tar;
pub mod metadata;
pub mod oci_config;
mod outputs;

pub use bootloader::{BOOTLOADER_DIR, bootloader};
pub use build::{Options, RESOLV_SYMLINK, assemble};
pub use bundle::{export_filesystem, unpack_bundle};
pub use error::AssembleError;
pub use firmware::{FIRMWARE_DIR, check_rpi3_arch, firmware};
pub use outputs::{sbom_beside, write_outputs};
