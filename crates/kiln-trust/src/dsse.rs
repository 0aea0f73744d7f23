//! DSSE envelopes (in-toto's Dead Simple Signing Envelope): sign and verify a payload.
//!
//! A signature covers the pre-authentication encoding ([`pae`]) of the payload type and the
//! payload, never the envelope's JSON, so that what is signed cannot be reinterpreted. The
//! envelope is `{"payloadType", "payload" (standard base64), "signatures": [{"keyid", "sig"}]}`.
//! An envelope without signatures is valid JSON but never verifies.

use crate::{Signer, Verifier};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Serialize};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The media type of a DSSE envelope stored as a blob (cosign's attestation layers).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// The largest envelope read (a provenance statement is a few kilobytes).
pub const MAX_ENVELOPE: usize = 4 << 20;

/// An envelope could not be made, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum DsseError {
    /// The envelope is not JSON of the expected shape.
    #[error("not a DSSE envelope: {0}")]
    Json(#[from] serde_json::Error),
    /// The envelope is larger than [`MAX_ENVELOPE`].
    #[error("the envelope has {0} bytes, more than the {MAX_ENVELOPE} kiln reads")]
    TooLarge(usize),
    /// A base64 field does not decode.
    #[error("the envelope's {field} is not base64: {message}")]
    Base64 {
        /// `payload` or `signatures[N].sig`.
        field: String,
        /// The decoder's message.
        message: String,
    },
    /// The payload type is not the one expected.
    #[error("the envelope's payloadType is {found:?}, not {expected:?}")]
    PayloadType {
        /// What was expected.
        expected: String,
        /// What the envelope says.
        found: String,
    },
    /// The envelope carries no signature.
    #[error("the envelope is not signed (no signatures): sign it with a key")]
    Unsigned,
    /// None of the envelope's signatures verifies with the key.
    #[error("none of the envelope's {count} signature(s) verifies with key {key_id}")]
    BadSignature {
        /// How many signatures the envelope carries.
        count: usize,
        /// The key tried.
        key_id: String,
    },
    /// The signer failed.
    #[error("signing the envelope: {0}")]
    Sign(#[from] crate::keys::KeyError),
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The key's identifier (may be empty: it only helps pick a key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
    /// The signature of [`pae`]`(payloadType, payload)`, base64.
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// What the payload is ([`IN_TOTO_PAYLOAD_TYPE`] for in-toto statements).
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, standard base64.
    pub payload: String,
    /// The signatures (none for an unsigned envelope).
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// DSSE's pre-authentication encoding: `DSSEv1 LEN(type) type LEN(body) body`, lengths in
/// ASCII decimal, fields separated by one space.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Standard or URL-safe base64, padded or not (DSSE accepts both alphabets).
fn decode(field: &str, text: &str) -> Result<Vec<u8>, DsseError> {
    let trimmed = text.trim_end_matches('=');
    let padded = |s: &str| {
        let mut s = s.to_string();
        while !s.len().is_multiple_of(4) {
            s.push('=');
        }
        s
    };
    let p = padded(trimmed);
    STANDARD
        .decode(&p)
        .or_else(|_| URL_SAFE.decode(&p))
        .map_err(|e| DsseError::Base64 {
            field: field.into(),
            message: e.to_string(),
        })
}

impl Envelope {
    /// An envelope of `payload` without signatures.
    pub fn unsigned(payload_type: &str, payload: &[u8]) -> Envelope {
        Envelope {
            payload_type: payload_type.into(),
            payload: STANDARD.encode(payload),
            signatures: Vec::new(),
        }
    }

    /// An envelope of `payload` signed by `signer`.
    pub fn sign(
        payload_type: &str,
        payload: &[u8],
        signer: &dyn Signer,
    ) -> Result<Envelope, DsseError> {
        let mut env = Envelope::unsigned(payload_type, payload);
        env.add_signature(signer)?;
        Ok(env)
    }

    /// Add `signer`'s signature (replacing an earlier one with the same key id).
    pub fn add_signature(&mut self, signer: &dyn Signer) -> Result<(), DsseError> {
        let payload = self.payload()?;
        let sig = signer.sign(&pae(&self.payload_type, &payload))?;
        let keyid = signer.key_id();
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(Signature {
            keyid,
            sig: STANDARD.encode(sig),
        });
        Ok(())
    }

    /// The decoded payload (not verified: see [`Envelope::verify`]).
    pub fn payload(&self) -> Result<Vec<u8>, DsseError> {
        decode("payload", &self.payload)
    }

    /// Fail unless the payload type is `expected`.
    pub fn expect_type(&self, expected: &str) -> Result<(), DsseError> {
        if self.payload_type == expected {
            Ok(())
        } else {
            Err(DsseError::PayloadType {
                expected: expected.into(),
                found: self.payload_type.clone(),
            })
        }
    }

    /// The payload, if one of the signatures verifies with `verifier`.
    pub fn verify(&self, verifier: &dyn Verifier) -> Result<Vec<u8>, DsseError> {
        if self.signatures.is_empty() {
            return Err(DsseError::Unsigned);
        }
        let payload = self.payload()?;
        let message = pae(&self.payload_type, &payload);
        for (i, s) in self.signatures.iter().enumerate() {
            let sig = decode(&format!("signatures[{i}].sig"), &s.sig)?;
            if verifier.verify(&message, &sig).is_ok() {
                return Ok(payload);
            }
        }
        Err(DsseError::BadSignature {
            count: self.signatures.len(),
            key_id: verifier.key_id(),
        })
    }

    /// The envelope's JSON: compact, fields in DSSE's order, the same bytes for the same
    /// envelope.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising strings and vectors of strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The envelope's JSON, indented, with a final newline (for files people read).
    pub fn to_json_pretty(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Read an envelope (at most [`MAX_ENVELOPE`] bytes).
    pub fn from_json(data: &[u8]) -> Result<Envelope, DsseError> {
        if data.len() > MAX_ENVELOPE {
            return Err(DsseError::TooLarge(data.len()));
        }
        Ok(serde_json::from_slice(data)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::KeyError;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};

    /// A P-256 key for tests, from a fixed seed.
    pub(crate) struct TestKey(pub SigningKey);

    impl TestKey {
        pub(crate) fn new(seed: u8) -> TestKey {
            let mut bytes = [0u8; 32];
            bytes[31] = seed.max(1);
            bytes[0] = 0x42;
            TestKey(SigningKey::from_slice(&bytes).expect("a valid scalar"))
        }

        pub(crate) fn public(&self) -> TestPublic {
            TestPublic(*self.0.verifying_key())
        }
    }

    pub(crate) struct TestPublic(pub VerifyingKey);

    impl Signer for TestKey {
        fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
            let sig: DerSignature = self.0.sign(data);
            Ok(sig.as_bytes().to_vec())
        }
        fn key_id(&self) -> String {
            self.public().key_id()
        }
    }

    impl Verifier for TestPublic {
        fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), KeyError> {
            let sig = DerSignature::from_bytes(signature).map_err(|_| KeyError::BadSignature)?;
            self.0
                .verify(data, &sig)
                .map_err(|_| KeyError::BadSignature)
        }
        fn key_id(&self) -> String {
            let point = self.0.to_encoded_point(true);
            hex::encode(&point.as_bytes()[..8])
        }
    }

    #[test]
    fn pae_is_the_specs() {
        // The example of the DSSE specification (protocol.md).
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = TestKey::new(1);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", &key).expect("sign");
        assert_eq!(env.signatures.len(), 1);
        assert_eq!(env.signatures[0].keyid, key.key_id());
        let back = Envelope::from_json(&env.to_json()).expect("parse");
        assert_eq!(back, env);
        assert_eq!(back.verify(&key.public()).expect("verifies"), b"{\"a\":1}");
        // The JSON keeps DSSE's field order.
        let text = String::from_utf8(env.to_json()).expect("utf-8");
        assert!(text.starts_with("{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"eyJhIjoxfQ==\",\"signatures\":[{\"keyid\":"), "{text}");
    }

    #[test]
    fn tampering_and_other_keys_fail() {
        let key = TestKey::new(1);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}", &key).expect("sign");
        let mut changed = env.clone();
        changed.payload = STANDARD.encode(b"{\"a\":2}");
        assert!(matches!(
            changed.verify(&key.public()),
            Err(DsseError::BadSignature { count: 1, .. })
        ));
        let mut retyped = env.clone();
        retyped.payload_type = "text/plain".into();
        assert!(retyped.verify(&key.public()).is_err());
        assert!(matches!(
            env.verify(&TestKey::new(2).public()),
            Err(DsseError::BadSignature { .. })
        ));
        let unsigned = Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, b"{}");
        assert!(matches!(
            unsigned.verify(&key.public()),
            Err(DsseError::Unsigned)
        ));
        let mut garbled = env.clone();
        garbled.signatures[0].sig = "!!!".into();
        assert!(matches!(
            garbled.verify(&key.public()),
            Err(DsseError::Base64 { .. })
        ));
    }

    #[test]
    fn url_safe_and_unpadded_base64_decode() {
        let key = TestKey::new(3);
        let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"\xfb\xff payload?", &key).expect("sign");
        let mut url = env.clone();
        url.payload = URL_SAFE
            .encode(b"\xfb\xff payload?")
            .trim_end_matches('=')
            .into();
        url.signatures[0].sig = url.signatures[0]
            .sig
            .replace('+', "-")
            .replace('/', "_")
            .trim_end_matches('=')
            .into();
        assert_eq!(
            url.verify(&key.public()).expect("verifies"),
            b"\xfb\xff payload?"
        );
    }

    #[test]
    fn a_second_signature_by_the_same_key_replaces_the_first() {
        let key = TestKey::new(1);
        let mut env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"x", &key).expect("sign");
        env.add_signature(&key).expect("sign again");
        env.add_signature(&TestKey::new(2)).expect("another key");
        assert_eq!(env.signatures.len(), 2);
        assert!(env.verify(&TestKey::new(2).public()).is_ok());
    }

    #[test]
    fn hostile_envelopes_are_errors() {
        for bad in [
            &b"not json"[..],
            b"{}",
            b"{\"payloadType\":1,\"payload\":\"\"}",
            b"[]",
        ] {
            assert!(Envelope::from_json(bad).is_err());
        }
        let big = vec![b' '; MAX_ENVELOPE + 1];
        assert!(matches!(
            Envelope::from_json(&big),
            Err(DsseError::TooLarge(_))
        ));
    }
}
