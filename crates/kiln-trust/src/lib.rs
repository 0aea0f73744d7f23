//! Trust for kiln: what makes an image something a build may use, and a build something its
//! users can check.
//!
//! This crate owns cosign-compatible keys ([`keys`]), image signatures stored as cosign stores
//! key-based signatures ([`signature`]: the simple-signing payload in an artifact tagged
//! `sha256-<digest>.sig`, in the registry and in kiln's store), the policy `kiln build`
//! enforces ([`policy`]), DSSE envelopes ([`dsse`]) and SLSA v1 provenance ([`provenance`]).
//! It knows nothing of how a root filesystem is assembled; SBOMs are `kiln-sbom`'s.

pub mod dsse;
pub mod keys;
pub mod policy;
pub mod provenance;
pub mod signature;

/// Something that signs bytes: ECDSA P-256 over SHA-256 with a DER-encoded signature, as
/// cosign's key-based signatures.
pub trait Signer {
    /// The signature of `data`.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, keys::KeyError>;
    /// An identifier of the key (the hex SHA-256 of its public key's DER encoding).
    fn key_id(&self) -> String;
}

/// Something that checks signatures made by a [`Signer`].
pub trait Verifier {
    /// Whether `signature` is a signature of `data` by this key.
    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), keys::KeyError>;
    /// An identifier of the key, as [`Signer::key_id`] gives it.
    fn key_id(&self) -> String;
}
