//! Keys: cosign's encrypted private keys and PEM public keys.

/// A key could not be made, read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A signature did not verify.
    #[error("the signature does not verify with this key")]
    BadSignature,
}
