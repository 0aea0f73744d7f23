//! Keys: cosign's encrypted private keys and PEM public keys.

use std::path::Path;

/// A key could not be made, read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A signature did not verify.
    #[error("the signature does not verify with this key")]
    BadSignature,
    /// Not written yet.
    #[error("{0}: not written yet")]
    Todo(String),
}

/// A public key (ECDSA P-256), as cosign writes it: a PEM `PUBLIC KEY`.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The file it was read from (for messages).
    pub path: std::path::PathBuf,
}

impl PublicKey {
    /// Read a PEM public key.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        Err(KeyError::Todo(path.display().to_string()))
    }
}
