//! Images for kiln: the store, registries and archives.
//!
//! This crate owns the content-addressed image store (an OCI image layout on disk, see
//! [`Store`]), image references ([`Reference`]), digests, the OCI image format types
//! ([`spec`]), import and export of image archives (OCI layout and `docker save` tars, see
//! [`archive`]), the registry client ([`registry`]) and the import of images from a running
//! Docker engine through its API socket ([`docker_engine`]). It knows nothing of manifests or
//! of what a root filesystem looks like: that is `kiln-assemble`.
//!
//! ```no_run
//! use kiln_oci::{Reference, Store};
//! let store = Store::open(Store::default_root())?;
//! let image = store.resolve(&"linuxkit/init:v1".parse::<Reference>()?, "amd64")?;
//! println!("{} has {} layers", image.reference, image.manifest.layers.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod archive;
pub mod attestation;
mod digest;
pub mod docker_engine;
mod reference;
pub mod registry;
pub mod spec;
mod store;
pub mod transport;
pub mod usage;

pub use digest::{Digest, DigestError, HashingWriter};
pub use reference::{DEFAULT_REGISTRY, Reference, ReferenceError};
pub use store::{
    BlobWriter, Entry, GcStats, Image, ImageLayers, MAX_JSON_BLOB, Store, StoreError, WriteGuard,
    decompress, media_type_of, select_platform,
};
