//! Image signatures as cosign stores key-based ones: the simple-signing payload naming the
//! manifest digest, in an artifact tagged `sha256-<digest>.sig` beside the image, in the
//! registry and in kiln's store.

use crate::keys::PublicKey;
use kiln_oci::registry::RegistryOptions;
use kiln_oci::{Digest, Reference, Store};

/// An image's signatures could not be found, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not written yet.
    #[error("{0}: not written yet")]
    Todo(String),
}

/// Where [`verify_image`] looks for signatures.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// kiln's store only (offline).
    Store,
    /// The store, then the image's registry (what is found there is kept in the store).
    StoreThenRegistry(&'a RegistryOptions),
}

/// A signature that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The key that made it (its file, as given).
    pub key: std::path::PathBuf,
    /// The signature artifact's tag (`sha256-<hex>.sig`).
    pub tag: String,
}

/// Check that `image` (a repository, with or without tag) at `digest` carries a signature by
/// one of `keys` whose payload names `digest`. The error says what was found instead: no
/// signature, signatures by other keys only, or a signature naming another digest.
pub fn verify_image(
    _store: &Store,
    image: &Reference,
    _digest: &Digest,
    _keys: &[PublicKey],
    _source: Source<'_>,
) -> Result<Verified, SignatureError> {
    Err(SignatureError::Todo(image.to_string()))
}
