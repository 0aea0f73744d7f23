//! Keys: cosign's encrypted private keys and PEM public keys (ECDSA P-256).
//!
//! A private key file is what `cosign generate-key-pair` writes: a PEM block labelled
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`) whose body is
//! a JSON document
//!
//! ```text
//! {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<base64>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<base64>"},"ciphertext":"<base64>"}
//! ```
//!
//! The key of the secretbox (XSalsa20-Poly1305) is scrypt of the password and the salt; the
//! plaintext is the PKCS#8 DER encoding of the private key. A public key file is a PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo). Both move between kiln and cosign unchanged.

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::der::pem::{self, LineEnding};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rand_core::RngCore as _;
use sha2::Digest as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The PEM label cosign writes on private keys.
pub const PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The PEM label older cosign releases wrote on private keys (still read).
pub const OLD_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// The PEM label of public keys.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// scrypt's cost parameter N as cosign writes it.
const SCRYPT_N: u64 = 65536;
/// scrypt's block size r as cosign writes it.
const SCRYPT_R: u32 = 8;
/// scrypt's parallelism p as cosign writes it.
const SCRYPT_P: u32 = 1;
/// The most memory (128·r·N bytes) the scrypt parameters of a key file may ask for.
const SCRYPT_MAX_MEMORY: u64 = 256 << 20;
/// The most work (N·r·p) the scrypt parameters of a key file may ask for.
const SCRYPT_MAX_WORK: u64 = 1 << 22;
/// Largest key file kiln reads.
const MAX_KEY_FILE: u64 = 64 << 10;

/// A key could not be made, read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A signature did not verify.
    #[error("the signature does not verify with this key")]
    BadSignature,
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file is not what it should be.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The password does not open the private key.
    #[error(
        "{path}: the password does not decrypt this key (COSIGN_PASSWORD, or the one typed, is not the key's)"
    )]
    WrongPassword {
        /// The file.
        path: PathBuf,
    },
    /// A key file exists and was not to be replaced.
    #[error("{path} exists; remove it, choose another --output-key-prefix, or give --force")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

fn invalid(path: &Path, why: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read as _;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_KEY_FILE {
        return Err(invalid(
            path,
            format!("more than {MAX_KEY_FILE} bytes: not a key file"),
        ));
    }
    Ok(data)
}

/// The hex SHA-256 of a public key's DER (SubjectPublicKeyInfo) encoding.
fn key_id_of(key: &VerifyingKey) -> String {
    match key.to_public_key_der() {
        Ok(der) => hex::encode(sha2::Sha256::digest(der.as_bytes())),
        Err(_) => String::new(),
    }
}

/// A public key (ECDSA P-256), as cosign writes it: a PEM `PUBLIC KEY`.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The file it was read from (for messages).
    pub path: std::path::PathBuf,
    key: VerifyingKey,
}

impl PublicKey {
    /// Read a PEM public key.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let data = read_capped(path)?;
        PublicKey::from_pem(&data, path)
    }

    /// Parse a PEM public key; `path` names it in messages.
    pub fn from_pem(data: &[u8], path: &Path) -> Result<PublicKey, KeyError> {
        let text = std::str::from_utf8(data)
            .map_err(|_| invalid(path, "not a PEM file (it is not text)"))?;
        let (label, der) = pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| invalid(path, format!("not a PEM public key: {e}")))?;
        if label == PRIVATE_KEY_LABEL || label == OLD_PRIVATE_KEY_LABEL {
            return Err(invalid(
                path,
                "this is a private key; give the public key (cosign.pub)",
            ));
        }
        if label != PUBLIC_KEY_LABEL {
            return Err(invalid(
                path,
                format!("a PEM `{label}`, not a `{PUBLIC_KEY_LABEL}`"),
            ));
        }
        let key = VerifyingKey::from_public_key_der(&der).map_err(|e| {
            invalid(
                path,
                format!("not an ECDSA P-256 public key (the only kind cosign generates): {e}"),
            )
        })?;
        Ok(PublicKey {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The key as a PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| invalid(&self.path, e.to_string()))
    }

    /// The hex SHA-256 of the key's DER encoding.
    pub fn id(&self) -> String {
        key_id_of(&self.key)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl crate::Verifier for PublicKey {
    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let sig = Signature::from_der(signature).map_err(|_| KeyError::BadSignature)?;
        self.key
            .verify(data, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    fn key_id(&self) -> String {
        self.id()
    }
}

/// A private key (ECDSA P-256) that signs as cosign's key-based signatures do.
pub struct PrivateKey {
    /// The file it was read from or written to (for messages), if any.
    pub path: PathBuf,
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("path", &self.path)
            .field("id", &key_id_of(self.key.verifying_key()))
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

const KDF_SCRYPT: &str = "scrypt";
const CIPHER_SECRETBOX: &str = "nacl/secretbox";

/// The secretbox key for `password` under `params` and `salt`; refuses parameters that would
/// take unreasonable memory or time.
fn derive_key(
    password: &[u8],
    params: &ScryptParams,
    salt: &[u8],
    path: &Path,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let n = params.n;
    if n < 2 || !n.is_power_of_two() {
        return Err(invalid(
            path,
            format!("scrypt N is {n}, not a power of two"),
        ));
    }
    let (r, p) = (u64::from(params.r), u64::from(params.p));
    if r == 0 || p == 0 {
        return Err(invalid(path, "scrypt r and p must be positive"));
    }
    let memory = n.saturating_mul(r).saturating_mul(128);
    let work = n.saturating_mul(r).saturating_mul(p);
    if memory > SCRYPT_MAX_MEMORY || work > SCRYPT_MAX_WORK {
        return Err(invalid(
            path,
            format!(
                "scrypt parameters N={n} r={r} p={p} ask for more than kiln spends on a key \
                 (cosign writes N={SCRYPT_N} r={SCRYPT_R} p={SCRYPT_P})"
            ),
        ));
    }
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| invalid(path, "scrypt N"))?;
    let scrypt_params = scrypt::Params::new(log_n, params.r, params.p, 32)
        .map_err(|e| invalid(path, format!("scrypt parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &scrypt_params, out.as_mut())
        .map_err(|e| invalid(path, format!("scrypt: {e}")))?;
    Ok(out)
}

fn b64(s: &str, what: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| invalid(path, format!("{what} is not base64: {e}")))
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> PrivateKey {
        PrivateKey {
            path: PathBuf::new(),
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// Read and decrypt a private key file with `password`.
    pub fn load(path: &Path, password: &[u8]) -> Result<PrivateKey, KeyError> {
        let data = Zeroizing::new(read_capped(path)?);
        PrivateKey::from_encrypted_pem(&data, password, path)
    }

    /// Decrypt an encrypted private key PEM (either label); `path` names it in messages.
    pub fn from_encrypted_pem(
        data: &[u8],
        password: &[u8],
        path: &Path,
    ) -> Result<PrivateKey, KeyError> {
        let text = std::str::from_utf8(data)
            .map_err(|_| invalid(path, "not a PEM file (it is not text)"))?;
        let (label, body) = pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| invalid(path, format!("not a PEM private key: {e}")))?;
        if label == PUBLIC_KEY_LABEL {
            return Err(invalid(
                path,
                "this is a public key; give the private key (cosign.key)",
            ));
        }
        if label != PRIVATE_KEY_LABEL && label != OLD_PRIVATE_KEY_LABEL {
            return Err(invalid(
                path,
                format!(
                    "a PEM `{label}`, not a cosign private key (`{PRIVATE_KEY_LABEL}`); \
                     make one with `kiln key generate` or `cosign generate-key-pair`"
                ),
            ));
        }
        let doc: EncryptedKey = serde_json::from_slice(&body)
            .map_err(|e| invalid(path, format!("the encrypted key is not valid JSON: {e}")))?;
        if doc.kdf.name != KDF_SCRYPT {
            return Err(invalid(
                path,
                format!("key derivation `{}`, kiln reads scrypt", doc.kdf.name),
            ));
        }
        if doc.cipher.name != CIPHER_SECRETBOX {
            return Err(invalid(
                path,
                format!("cipher `{}`, kiln reads nacl/secretbox", doc.cipher.name),
            ));
        }
        let salt = b64(&doc.kdf.salt, "the salt", path)?;
        let nonce = b64(&doc.cipher.nonce, "the nonce", path)?;
        let ciphertext = b64(&doc.ciphertext, "the ciphertext", path)?;
        if nonce.len() != 24 {
            return Err(invalid(
                path,
                format!("the nonce is {} bytes, not 24", nonce.len()),
            ));
        }
        let key = derive_key(password, &doc.kdf.params, &salt, path)?;
        use crypto_secretbox::aead::{Aead as _, KeyInit as _};
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.as_ref().into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
                .map_err(|_| KeyError::WrongPassword {
                    path: path.to_path_buf(),
                })?,
        );
        let key = SigningKey::from_pkcs8_der(&plain).map_err(|e| {
            invalid(
                path,
                format!(
                    "the decrypted key is not an ECDSA P-256 key (the only kind cosign \
                     generates): {e}"
                ),
            )
        })?;
        Ok(PrivateKey {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The key encrypted with `password`, as the PEM cosign writes (scrypt N=65536, r=8, p=1).
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| invalid(&self.path, e.to_string()))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        rand_core::OsRng.fill_bytes(&mut salt);
        rand_core::OsRng.fill_bytes(&mut nonce);
        let params = ScryptParams {
            n: SCRYPT_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
        };
        let key = derive_key(password, &params, &salt, &self.path)?;
        use crypto_secretbox::aead::{Aead as _, KeyInit as _};
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.as_ref().into());
        let ciphertext = cipher
            .encrypt(nonce.as_slice().into(), der.as_bytes())
            .map_err(|_| invalid(&self.path, "encryption failed"))?;
        let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let doc = EncryptedKey {
            kdf: Kdf {
                name: KDF_SCRYPT.into(),
                params,
                salt: b64(&salt),
            },
            cipher: Cipher {
                name: CIPHER_SECRETBOX.into(),
                nonce: b64(&nonce),
            },
            ciphertext: b64(&ciphertext),
        };
        let json = serde_json::to_vec(&doc).map_err(|e| invalid(&self.path, e.to_string()))?;
        pem::encode_string(PRIVATE_KEY_LABEL, LineEnding::LF, &json)
            .map_err(|e| invalid(&self.path, e.to_string()))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            path: self.path.with_extension("pub"),
            key: *self.key.verifying_key(),
        }
    }
}

impl crate::Signer for PrivateKey {
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        let sig: Signature = self
            .key
            .try_sign(data)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let der: DerSignature = sig.to_der();
        Ok(der.as_bytes().to_vec())
    }

    fn key_id(&self) -> String {
        key_id_of(self.key.verifying_key())
    }
}

/// The files `kiln key generate` wrote.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// `PREFIX.key`: the encrypted private key.
    pub private: PathBuf,
    /// `PREFIX.pub`: the public key.
    pub public: PathBuf,
    /// The key's identifier (hex SHA-256 of the public key's DER encoding).
    pub id: String,
}

/// Generate a key pair and write `PREFIX.key` (encrypted with `password`, mode 0600) and
/// `PREFIX.pub`. Existing files are replaced only with `force`; otherwise nothing is written
/// when either exists.
pub fn generate_key_pair(
    prefix: &Path,
    password: &[u8],
    force: bool,
) -> Result<KeyFiles, KeyError> {
    let with_ext = |ext: &str| {
        let mut s = prefix.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (private, public) = (with_ext(".key"), with_ext(".pub"));
    if !force {
        for p in [&private, &public] {
            if p.symlink_metadata().is_ok() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
    }
    let mut key = PrivateKey::generate();
    key.path = private.clone();
    let private_pem = Zeroizing::new(key.to_encrypted_pem(password)?);
    let pub_key = key.public_key();
    let public_pem = pub_key.to_pem()?;
    write_file(&private, private_pem.as_bytes(), 0o600, force)?;
    write_file(&public, public_pem.as_bytes(), 0o644, force)?;
    Ok(KeyFiles {
        private,
        public,
        id: pub_key.id(),
    })
}

/// Write `data` to `path` through a temporary file in the same directory, with `mode`;
/// without `replace`, fail rather than replace a file that appeared meanwhile.
fn write_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if replace {
        tmp.persist(path).map_err(|e| io(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e.error)
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Signer as _, Verifier as _};

    /// A key `cosign generate-key-pair` wrote with an empty password.
    const COSIGN_KEY_EMPTY_PASSWORD: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJFY3pJR3Z0bnpFcCsxaEpudERnbGI1UnoxN3gwQVMy
YklvWGRNcDQrU1NJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJtSVVKbG1OMzNINExvZ0dhaG5MamdmK3R4SmJwci93MCJ9LCJj
aXBoZXJ0ZXh0IjoiM3FtS2FidXRuYm1WT1IvTkZGM2NDaUErTXp1WWQ5L0VERDVI
MVlUSGhQVzZsSzAvdjVqdDZCQzlsME12NGV5am9qZkl0d3B6a2JJOXQrZGx5VXZ3
VUgvMWZjbkFZT2dEdXRLQzkvSkNiOE02SVY2VHpVaDF5c0ZFWDFzeG9xb1FzeUpL
bjM0UVlldFNlaVdDaGtmUHUyZXByQjFEV0pwekdzTGZIakxNVTkzOEdmNk1xM1A0
N0ZSd2syZzY1cFZnSGMwVWV1L1N1OUs0Zmc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";

    #[test]
    fn reads_a_key_cosign_wrote() {
        let p = Path::new("cosign.key");
        let key = PrivateKey::from_encrypted_pem(COSIGN_KEY_EMPTY_PASSWORD.as_bytes(), b"", p)
            .expect("cosign's key decrypts with the empty password");
        let sig = key.sign(b"payload").expect("sign");
        key.public_key().verify(b"payload", &sig).expect("verify");
        let err = PrivateKey::from_encrypted_pem(COSIGN_KEY_EMPTY_PASSWORD.as_bytes(), b"x", p)
            .expect_err("wrong password");
        assert!(matches!(err, KeyError::WrongPassword { .. }), "{err}");
        // The older label is read too.
        let old = COSIGN_KEY_EMPTY_PASSWORD.replace(PRIVATE_KEY_LABEL, OLD_PRIVATE_KEY_LABEL);
        PrivateKey::from_encrypted_pem(old.as_bytes(), b"", p).expect("old label");
    }

    #[test]
    fn generate_write_read_sign_verify() {
        let dir = tempfile::tempdir().expect("tmp");
        let prefix = dir.path().join("cosign");
        let files = generate_key_pair(&prefix, b"secret", false).expect("generate");
        assert_eq!(files.private, dir.path().join("cosign.key"));
        let text = std::fs::read_to_string(&files.private).expect("read");
        assert!(text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64), "64-column PEM");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files.private)
            .expect("meta")
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        let key = PrivateKey::load(&files.private, b"secret").expect("load");
        let public = PublicKey::load(&files.public).expect("public");
        assert_eq!(public.id(), files.id);
        assert_eq!(key.key_id(), files.id);
        let sig = key.sign(b"data").expect("sign");
        public.verify(b"data", &sig).expect("verifies");
        assert!(matches!(
            public.verify(b"other", &sig),
            Err(KeyError::BadSignature)
        ));
        assert!(matches!(
            public.verify(b"data", b"\x30\x02junk"),
            Err(KeyError::BadSignature)
        ));
        // No overwriting without force; force replaces both.
        let err = generate_key_pair(&prefix, b"secret", false).expect_err("exists");
        assert!(err.to_string().contains("cosign.key exists"), "{err}");
        let again = generate_key_pair(&prefix, b"", true).expect("force");
        assert_ne!(again.id, files.id);
        PrivateKey::load(&files.private, b"").expect("empty password");
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        let p = Path::new("k");
        let public = PrivateKey::generate().public_key().to_pem().expect("pem");
        let err = PrivateKey::from_encrypted_pem(public.as_bytes(), b"", p).expect_err("public");
        assert!(err.to_string().contains("this is a public key"), "{err}");
        let err = PublicKey::from_pem(COSIGN_KEY_EMPTY_PASSWORD.as_bytes(), p).expect_err("priv");
        assert!(err.to_string().contains("this is a private key"), "{err}");
        assert!(PublicKey::from_pem(b"\xff\xfe", p).is_err());
        assert!(PublicKey::from_pem(b"hello", p).is_err());
        // Hostile scrypt parameters are refused before any work.
        let json = r#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"ciphertext":"AA=="}"#;
        let pem =
            pem::encode_string(PRIVATE_KEY_LABEL, LineEnding::LF, json.as_bytes()).expect("pem");
        let err = PrivateKey::from_encrypted_pem(pem.as_bytes(), b"", p).expect_err("huge N");
        assert!(err.to_string().contains("ask for more"), "{err}");
    }
}
