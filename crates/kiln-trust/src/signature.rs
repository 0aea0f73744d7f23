//! Image signatures as cosign stores key-based ones: the simple-signing payload naming the
//! manifest digest, in an artifact tagged `sha256-<digest>.sig` beside the image, in the
//! registry and in kiln's store.
//!
//! The artifact is an OCI image manifest whose layers are payloads of media type
//! [`SIMPLE_SIGNING_MEDIA_TYPE`], each with the base64 of a DER ECDSA P-256 signature over the
//! payload's bytes in the annotation [`SIGNATURE_ANNOTATION`]. A new signature is appended as
//! another layer; an identical one is not repeated. In kiln's store the artifact is named
//! `REGISTRY/REPOSITORY:sha256-<hex>.sig`, as in the registry, so that verification works
//! offline once the signatures were fetched (or made) there.
//!
//! What comes from a registry is hostile: the signature manifest is read capped at
//! [`MAX_JSON_BLOB`], at most [`MAX_SIGNATURES`] layers of at most [`MAX_PAYLOAD`] bytes each
//! are fetched, every blob is checked against its digest, and a payload is parsed only after
//! its signature verified.

use crate::keys::{KeyError, PublicKey};
use crate::{Signer, Verifier as _};
use base64::Engine as _;
use kiln_oci::registry::{self, RegistryError, RegistryOptions};
use kiln_oci::spec::{self, Descriptor, Manifest};
use kiln_oci::{Digest, MAX_JSON_BLOB, Reference, Store, StoreError};
use std::collections::BTreeMap;

/// The media type of a signature layer: a simple-signing payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 of the DER signature over the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign image signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// Most signature layers kiln reads from one signature artifact.
pub const MAX_SIGNATURES: usize = 256;
/// Largest payload kiln reads.
pub const MAX_PAYLOAD: u64 = 64 << 10;
/// Longest base64 signature annotation kiln decodes (a DER P-256 signature takes 96).
const MAX_SIGNATURE_TEXT: usize = 1024;

/// An image's signatures could not be found, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The image has no signature.
    #[error(
        "{image}@{digest} is not signed: the registry has no {tag}; sign it with `kiln sign {image} --key cosign.key`"
    )]
    NotSigned {
        /// The image.
        image: String,
        /// Its manifest digest.
        digest: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// Offline, and kiln's store holds no signature of the image.
    #[error(
        "{image}@{digest}: kiln's store holds no signature ({tag}) and verification is offline; verify once online (`kiln verify {image} --key KEY.pub`) to keep its signatures in the store, or sign it with `kiln sign {image} --key cosign.key`"
    )]
    NotInStore {
        /// The image.
        image: String,
        /// Its manifest digest.
        digest: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// Signatures exist, but none by the keys given.
    #[error(
        "{image}@{digest}: {count} signature(s) in {tag}, none by {keys}; sign it with that key (`kiln sign {image} --key ...`) or trust the key that signed it"
    )]
    OtherKeys {
        /// The image.
        image: String,
        /// Its manifest digest.
        digest: String,
        /// The signature tag.
        tag: String,
        /// How many signatures were checked.
        count: usize,
        /// The keys tried (files and ids).
        keys: String,
    },
    /// A signature by the key names another image's digest: it was copied from another image.
    #[error(
        "{image}@{digest}: the signature by {key} in {tag} is for another image, {named} (a signature copied from another digest); sign {digest} itself with `kiln sign`"
    )]
    WrongDigest {
        /// The image.
        image: String,
        /// Its manifest digest.
        digest: String,
        /// The signature tag.
        tag: String,
        /// The key whose signature it is.
        key: String,
        /// The digest the payload names.
        named: String,
    },
    /// A signature by the key is over a payload that is not a simple-signing document.
    #[error(
        "{image}@{digest}: the signature by {key} in {tag} is over a payload that is not a cosign simple-signing document: {why}; sign the image again with `kiln sign`"
    )]
    InvalidPayload {
        /// The image.
        image: String,
        /// Its manifest digest.
        digest: String,
        /// The signature tag.
        tag: String,
        /// The key whose signature it is.
        key: String,
        /// What is wrong with the payload.
        why: String,
    },
    /// A signature artifact (from a registry or the store) is malformed or too large.
    #[error("{what}: {why}")]
    Invalid {
        /// The artifact.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
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
    /// The key's identifier (hex SHA-256 of its DER encoding).
    pub key_id: String,
    /// The digest the payload names (the image's).
    pub digest: Digest,
    /// The repository the payload names (`critical.identity.docker-reference`).
    pub docker_reference: String,
    /// Where the signature was found: false for kiln's store, true when just fetched.
    pub fetched: bool,
}

/// The tag of `digest`'s signature artifact: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// The signature artifact of `image` at `digest`: `REGISTRY/REPOSITORY:sha256-<hex>.sig`.
pub fn signature_reference(image: &Reference, digest: &Digest) -> Reference {
    Reference {
        registry: image.registry.clone(),
        repository: image.repository.clone(),
        tag: Some(signature_tag(digest)),
        digest: None,
    }
}

/// The repository a payload names, as cosign writes it (Docker Hub as `index.docker.io`).
pub fn docker_reference(image: &Reference) -> String {
    let registry = if image.registry == kiln_oci::DEFAULT_REGISTRY {
        "index.docker.io"
    } else {
        image.registry.as_str()
    };
    format!("{registry}/{}", image.repository)
}

/// The simple-signing payload cosign signs for `image` at `digest`, byte for byte.
pub fn payload(image: &Reference, digest: &Digest) -> Vec<u8> {
    let doc = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference(image)},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// A parsed simple-signing payload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimpleSigning {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub digest: Digest,
    /// `optional` (annotations), when it is an object.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parse a simple-signing payload: an object with `critical` (`identity.docker-reference`, a
/// string; `image.docker-manifest-digest`, a sha256 digest; `type`, cosign's) and `optional`
/// (an object or null). Unknown fields are tolerated, as cosign does.
pub fn parse_payload(data: &[u8]) -> Result<SimpleSigning, String> {
    if data.len() as u64 > MAX_PAYLOAD {
        return Err(format!(
            "it is {} bytes, more than the {MAX_PAYLOAD} kiln reads",
            data.len()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let critical = v
        .get("critical")
        .and_then(|c| c.as_object())
        .ok_or("it has no `critical` object")?;
    let kind = critical
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or("`critical.type` is missing or not a string")?;
    if kind != SIGNATURE_TYPE {
        return Err(format!(
            "`critical.type` is `{}`, not `{SIGNATURE_TYPE}`",
            kind.chars().take(80).collect::<String>()
        ));
    }
    let docker_reference = critical
        .get("identity")
        .and_then(|i| i.get("docker-reference"))
        .and_then(|r| r.as_str())
        .ok_or("`critical.identity.docker-reference` is missing or not a string")?
        .to_string();
    let digest_text = critical
        .get("image")
        .and_then(|i| i.get("docker-manifest-digest"))
        .and_then(|d| d.as_str())
        .ok_or("`critical.image.docker-manifest-digest` is missing or not a string")?;
    let digest = digest_text.parse::<Digest>().map_err(|_| {
        format!(
            "`critical.image.docker-manifest-digest` is `{}`, not sha256: and 64 hex digits",
            digest_text.chars().take(80).collect::<String>()
        )
    })?;
    let optional = match v.get("optional") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err("`optional` is neither an object nor null".into()),
    };
    Ok(SimpleSigning {
        docker_reference,
        digest,
        optional,
    })
}

/// What [`sign_image`] did.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature artifact (`REGISTRY/REPOSITORY:sha256-<hex>.sig`).
    pub reference: Reference,
    /// The digest signed.
    pub digest: Digest,
    /// The signing key's identifier.
    pub key_id: String,
    /// False when the store held this very signature already.
    pub added: bool,
}

fn invalid(what: impl Into<String>, why: impl Into<String>) -> SignatureError {
    SignatureError::Invalid {
        what: what.into(),
        why: why.into(),
    }
}

/// The signature layers the store holds under `sig` (none when it holds no such name).
fn stored_layers(store: &Store, sig: &Reference) -> Result<Vec<Descriptor>, SignatureError> {
    let Some(desc) = store.lookup(sig)? else {
        return Ok(Vec::new());
    };
    let digest: Digest = desc.digest.parse().map_err(StoreError::from)?;
    let data = store.read_json_blob(&digest, &sig.to_string())?;
    Ok(check_signature_manifest(&data, &format!("{sig} in kiln's store"))?.layers)
}

/// Check a signature manifest: an image manifest with at most [`MAX_SIGNATURES`] layers of
/// at most [`MAX_PAYLOAD`] bytes and valid digests.
fn check_signature_manifest(data: &[u8], what: &str) -> Result<Manifest, SignatureError> {
    let media = kiln_oci::media_type_of(data);
    if media != spec::MEDIA_OCI_MANIFEST && media != spec::MEDIA_DOCKER_MANIFEST {
        return Err(invalid(
            what,
            format!(
                "media type `{}` is not an image manifest",
                media.chars().take(100).collect::<String>()
            ),
        ));
    }
    let m: Manifest = serde_json::from_slice(data)
        .map_err(|e| invalid(what, format!("not a valid image manifest: {e}")))?;
    if m.layers.len() > MAX_SIGNATURES {
        return Err(invalid(
            what,
            format!(
                "{} layers, more than the {MAX_SIGNATURES} signatures kiln reads",
                m.layers.len()
            ),
        ));
    }
    for d in std::iter::once(&m.config).chain(&m.layers) {
        d.digest
            .parse::<Digest>()
            .map_err(|e| invalid(what, e.to_string()))?;
    }
    if m.config.size > MAX_JSON_BLOB {
        return Err(invalid(
            what,
            format!(
                "its config is {} bytes, more than kiln reads",
                m.config.size
            ),
        ));
    }
    if let Some(l) = m.layers.iter().find(|l| l.size > MAX_PAYLOAD) {
        return Err(invalid(
            what,
            format!(
                "layer {} is {} bytes, more than the {MAX_PAYLOAD} a signature payload may take",
                l.digest, l.size
            ),
        ));
    }
    Ok(m)
}

fn same_signature(a: &Descriptor, b: &Descriptor) -> bool {
    a.digest == b.digest
        && a.media_type == b.media_type
        && a.annotations.get(SIGNATURE_ANNOTATION) == b.annotations.get(SIGNATURE_ANNOTATION)
}

/// `existing` followed by the layers of `new` it does not hold yet; and how many were added.
fn merge(mut existing: Vec<Descriptor>, new: &[Descriptor]) -> (Vec<Descriptor>, usize) {
    let mut added = 0;
    for d in new {
        if !existing.iter().any(|e| same_signature(e, d)) {
            existing.push(d.clone());
            added += 1;
        }
    }
    (existing, added)
}

/// Write a signature manifest holding `layers` (blobs in the store) and name it `sig`.
fn write_signatures(
    store: &Store,
    sig: &Reference,
    layers: Vec<Descriptor>,
) -> Result<Digest, SignatureError> {
    let what = sig.to_string();
    let config = serde_json::json!({
        "architecture": "",
        "os": "",
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
        "config": {},
    });
    let config = serde_json::to_vec(&config).map_err(|e| invalid(&what, e.to_string()))?;
    let config_digest = store.put_bytes(&config, None, &format!("config of {what}"))?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::MEDIA_OCI_MANIFEST.into()),
        config: Descriptor::new(spec::MEDIA_OCI_CONFIG, &config_digest, config.len() as u64),
        layers,
        annotations: BTreeMap::new(),
    };
    let data = serde_json::to_vec(&manifest).map_err(|e| invalid(&what, e.to_string()))?;
    let digest = store.put_bytes(&data, None, &format!("manifest of {what}"))?;
    store.tag(
        sig,
        Descriptor::new(spec::MEDIA_OCI_MANIFEST, &digest, data.len() as u64),
    )?;
    Ok(digest)
}

/// Sign `image` at `digest` with `key` and keep the signature in the store under the image's
/// `sha256-<hex>.sig` tag (appended to the signatures the store holds there; an identical one
/// is not repeated). Nothing is pushed: see [`push_signatures`].
pub fn sign_image(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    key: &dyn Signer,
) -> Result<Signed, SignatureError> {
    let sig = signature_reference(image, digest);
    let body = payload(image, digest);
    let signature = key.sign(&body)?;
    let _guard = store.write_guard()?;
    let payload_digest = store.put_bytes(&body, None, &format!("payload of {sig}"))?;
    let mut layer = Descriptor::new(
        SIMPLE_SIGNING_MEDIA_TYPE,
        &payload_digest,
        body.len() as u64,
    );
    layer.annotations.insert(
        SIGNATURE_ANNOTATION.into(),
        base64::engine::general_purpose::STANDARD.encode(&signature),
    );
    let (layers, added) = merge(stored_layers(store, &sig)?, &[layer]);
    if added > 0 {
        write_signatures(store, &sig, layers)?;
    }
    Ok(Signed {
        reference: sig,
        digest: digest.clone(),
        key_id: key.key_id(),
        added: added > 0,
    })
}

/// What [`fetch_signatures`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The digest of the registry's signature manifest, `None` when it has none.
    pub remote: Option<Digest>,
    /// Signatures the store did not hold before.
    pub added: usize,
    /// Signatures the store holds that the registry lacks.
    pub local_only: usize,
}

/// Fetch the registry's signatures of `image` at `digest` into the store, merged with those
/// the store holds (the registry's first).
pub fn fetch_signatures(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    opts: &RegistryOptions,
) -> Result<Fetched, SignatureError> {
    let sig = signature_reference(image, digest);
    let Some((data, remote_digest)) = registry::remote_manifest(&sig, opts)? else {
        let local_only = stored_layers(store, &sig)?.len();
        return Ok(Fetched {
            remote: None,
            added: 0,
            local_only,
        });
    };
    let what = format!("{sig} from {}", image.registry);
    let m = check_signature_manifest(&data, &what)?;
    let _guard = store.write_guard()?;
    let stored = stored_layers(store, &sig)?;
    let (_, added) = merge(stored.clone(), &m.layers);
    let (merged, local_only) = merge(m.layers.clone(), &stored);
    if added == 0 {
        return Ok(Fetched {
            remote: Some(remote_digest),
            added,
            local_only,
        });
    }
    registry::fetch_blobs(store, &sig, &m.layers, opts)?;
    if local_only == 0 {
        // The registry's artifact as it is, so that the store and the registry agree.
        registry::fetch_blobs(store, &sig, std::slice::from_ref(&m.config), opts)?;
        store.put_bytes(&data, Some(&remote_digest), &what)?;
        store.tag(
            &sig,
            Descriptor::new(
                kiln_oci::media_type_of(&data),
                &remote_digest,
                data.len() as u64,
            ),
        )?;
    } else {
        write_signatures(store, &sig, merged)?;
    }
    Ok(Fetched {
        remote: Some(remote_digest),
        added,
        local_only,
    })
}

/// What [`push_signatures`] did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The signature artifact.
    pub reference: Reference,
    /// False when the registry held every signature the store has already.
    pub pushed: bool,
    /// Signatures in the artifact now.
    pub signatures: usize,
}

/// Push the store's signatures of `image` at `digest` to the image's registry, merged with
/// those the registry holds already (which the store keeps too).
pub fn push_signatures(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    opts: &RegistryOptions,
) -> Result<Pushed, SignatureError> {
    let sig = signature_reference(image, digest);
    let fetched = fetch_signatures(store, image, digest, opts)?;
    let signatures = stored_layers(store, &sig)?.len();
    if signatures == 0 {
        return Err(SignatureError::NotInStore {
            image: image.to_string(),
            digest: digest.to_string(),
            tag: signature_tag(digest),
        });
    }
    let needed = fetched.remote.is_none() || fetched.local_only > 0;
    if needed {
        registry::push(store, &sig, opts)?;
    }
    Ok(Pushed {
        reference: sig,
        pushed: needed,
        signatures,
    })
}

/// What the signatures in the store say about `digest`, for the keys given.
enum Finding {
    Verified(Verified),
    Failed(SignatureError),
}

fn evaluate(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    keys: &[PublicKey],
    fetched: bool,
) -> Result<Option<Finding>, SignatureError> {
    let sig = signature_reference(image, digest);
    let tag = signature_tag(digest);
    let layers = stored_layers(store, &sig)?;
    if layers.is_empty() {
        return Ok(None);
    }
    let image_name = image.name();
    let mut wrong: Option<SignatureError> = None;
    let mut bad_payload: Option<SignatureError> = None;
    for layer in &layers {
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let Some(text) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        if text.len() > MAX_SIGNATURE_TEXT {
            continue;
        }
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(text) else {
            continue;
        };
        let layer_digest: Digest = layer.digest.parse().map_err(StoreError::from)?;
        if !store.has_blob(&layer_digest) {
            return Err(SignatureError::Store(StoreError::MissingBlob {
                image: sig.to_string(),
                digest: layer.digest.clone(),
            }));
        }
        let body = store.read_json_blob(&layer_digest, &format!("payload of {sig}"))?;
        if body.len() as u64 > MAX_PAYLOAD || Digest::of(&body) != layer_digest {
            return Err(invalid(
                format!("payload {} of {sig} in kiln's store", layer.digest),
                "it does not match its digest or is too large; remove the name with `kiln cache rm` and fetch it again",
            ));
        }
        let Some(key) = keys.iter().find(|k| k.verify(&body, &signature).is_ok()) else {
            continue;
        };
        let key_name = format!("{} ({})", key.path.display(), short_id(&key.id()));
        match parse_payload(&body) {
            Err(why) => {
                bad_payload.get_or_insert(SignatureError::InvalidPayload {
                    image: image_name.clone(),
                    digest: digest.to_string(),
                    tag: tag.clone(),
                    key: key_name,
                    why,
                });
            }
            Ok(p) if p.digest != *digest => {
                wrong.get_or_insert(SignatureError::WrongDigest {
                    image: image_name.clone(),
                    digest: digest.to_string(),
                    tag: tag.clone(),
                    key: key_name,
                    named: p.digest.to_string(),
                });
            }
            Ok(p) => {
                return Ok(Some(Finding::Verified(Verified {
                    key: key.path.clone(),
                    tag,
                    key_id: key.id(),
                    digest: p.digest,
                    docker_reference: p.docker_reference,
                    fetched,
                })));
            }
        }
    }
    let failure = wrong.or(bad_payload).unwrap_or_else(|| {
        let keys = keys
            .iter()
            .map(|k| format!("{} ({})", k.path.display(), short_id(&k.id())))
            .collect::<Vec<_>>()
            .join(", ");
        SignatureError::OtherKeys {
            image: image_name.clone(),
            digest: digest.to_string(),
            tag: tag.clone(),
            count: layers.len(),
            keys: if keys.is_empty() {
                "any key (none given)".into()
            } else {
                keys
            },
        }
    });
    Ok(Some(Finding::Failed(failure)))
}

fn short_id(id: &str) -> String {
    format!("key {}", id.get(..12).unwrap_or(id))
}

/// Check that `image` (a repository, with or without tag) at `digest` carries a signature by
/// one of `keys` whose payload names `digest`. The error says what was found instead: no
/// signature, signatures by other keys only, or a signature naming another digest.
///
/// The store is looked at first; with [`Source::StoreThenRegistry`], when it holds no
/// signature that verifies, the registry's are fetched into the store and checked. The
/// payload's `docker-reference` is reported, not checked (as cosign does by default).
pub fn verify_image(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    keys: &[PublicKey],
    source: Source<'_>,
) -> Result<Verified, SignatureError> {
    let local = evaluate(store, image, digest, keys, false)?;
    if let Some(Finding::Verified(v)) = local {
        return Ok(v);
    }
    let Source::StoreThenRegistry(opts) = source else {
        return Err(match local {
            Some(Finding::Failed(e)) => e,
            _ => SignatureError::NotInStore {
                image: image.name(),
                digest: digest.to_string(),
                tag: signature_tag(digest),
            },
        });
    };
    let fetched = fetch_signatures(store, image, digest, opts)?;
    if fetched.remote.is_none() && local.is_none() {
        return Err(SignatureError::NotSigned {
            image: image.name(),
            digest: digest.to_string(),
            tag: signature_tag(digest),
        });
    }
    match evaluate(store, image, digest, keys, fetched.added > 0)? {
        Some(Finding::Verified(v)) => Ok(v),
        Some(Finding::Failed(e)) => Err(e),
        None => Err(SignatureError::NotSigned {
            image: image.name(),
            digest: digest.to_string(),
            tag: signature_tag(digest),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn payload_is_cosigns_byte_for_byte() {
        let image: Reference = "127.0.0.1:5000/kiln-test/svc:1".parse().expect("ref");
        let d: Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .parse()
            .expect("digest");
        assert_eq!(
            String::from_utf8(payload(&image, &d)).expect("utf8"),
            r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/kiln-test/svc"},"image":{"docker-manifest-digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"type":"cosign container image signature"},"optional":null}"#
        );
        let hub: Reference = "alpine".parse().expect("ref");
        assert_eq!(docker_reference(&hub), "index.docker.io/library/alpine");
        let parsed = parse_payload(&payload(&image, &d)).expect("parse");
        assert_eq!(parsed.digest, d);
        assert_eq!(parsed.docker_reference, "127.0.0.1:5000/kiln-test/svc");
        assert_eq!(
            signature_reference(&image, &d).to_string(),
            format!("127.0.0.1:5000/kiln-test/svc:sha256-{}.sig", d.hex())
        );
    }

    #[test]
    fn payload_parser_refuses_what_is_not_simple_signing() {
        for (bad, why) in [
            (&b"[]"[..], "no `critical`"),
            (b"{\"critical\":{}}", "`critical.type`"),
            (
                b"{\"critical\":{\"type\":\"x\",\"identity\":{\"docker-reference\":\"a\"},\"image\":{\"docker-manifest-digest\":\"sha256:00\"}}}",
                "not `cosign container image signature`",
            ),
            (
                b"{\"critical\":{\"type\":\"cosign container image signature\",\"identity\":{\"docker-reference\":\"a\"},\"image\":{\"docker-manifest-digest\":\"sha256:00\"}}}",
                "not sha256: and 64 hex digits",
            ),
            (
                b"{\"critical\":{\"type\":\"cosign container image signature\",\"identity\":{},\"image\":{}}}",
                "docker-reference",
            ),
            (b"not json", "not JSON"),
        ] {
            let err = parse_payload(bad).expect_err("refused");
            assert!(err.contains(why), "{err} lacks {why}");
        }
    }

    proptest::proptest! {
        #[test]
        fn payload_parser_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_payload(&data);
        }

        #[test]
        fn payload_parser_survives_mutated_payloads(pos in 0usize..250, byte in proptest::num::u8::ANY) {
            let image: Reference = "example.com/a/b".parse().expect("ref");
            let mut p = payload(&image, &digest(1));
            let at = pos % p.len();
            p[at] = byte;
            if let Ok(parsed) = parse_payload(&p) {
                proptest::prop_assert_eq!(parsed.docker_reference.is_empty(), false);
            }
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        (dir, store)
    }

    #[test]
    fn sign_then_verify_offline_and_the_failures() {
        let (_dir, store) = store();
        let image: Reference = "example.com/app/svc:1".parse().expect("ref");
        let (a, b) = (digest(1), digest(2));
        let key = PrivateKey::generate();
        let mut public = key.public_key();
        public.path = "cosign.pub".into();
        let other = PrivateKey::generate();

        // Nothing in the store, offline.
        let err = verify_image(
            &store,
            &image,
            &a,
            std::slice::from_ref(&public),
            Source::Store,
        )
        .expect_err("unsigned");
        assert!(matches!(err, SignatureError::NotInStore { .. }), "{err}");

        let signed = sign_image(&store, &image, &a, &key).expect("sign");
        assert!(signed.added);
        assert!(
            !sign_image(&store, &image, &a, &key).expect("again").added,
            "no duplicate"
        );
        let v = verify_image(
            &store,
            &image,
            &a,
            std::slice::from_ref(&public),
            Source::Store,
        )
        .expect("verifies");
        assert_eq!((v.digest, v.tag.clone()), (a.clone(), signature_tag(&a)));

        // Another key only.
        let mut other_pub = other.public_key();
        other_pub.path = "other.pub".into();
        let err = verify_image(
            &store,
            &image,
            &a,
            std::slice::from_ref(&other_pub),
            Source::Store,
        )
        .expect_err("other key");
        assert!(
            matches!(err, SignatureError::OtherKeys { count: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("none by other.pub"), "{err}");

        // A signature copied to another digest's tag.
        let layers = stored_layers(&store, &signature_reference(&image, &a)).expect("layers");
        write_signatures(&store, &signature_reference(&image, &b), layers).expect("copy");
        let err = verify_image(
            &store,
            &image,
            &b,
            std::slice::from_ref(&public),
            Source::Store,
        )
        .expect_err("copied");
        let text = err.to_string();
        assert!(matches!(err, SignatureError::WrongDigest { .. }), "{err}");
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );

        // A second signer is appended.
        sign_image(&store, &image, &a, &other).expect("second");
        let layers = stored_layers(&store, &signature_reference(&image, &a)).expect("layers");
        assert_eq!(layers.len(), 2);
        verify_image(&store, &image, &a, &[other_pub], Source::Store).expect("second key");
    }

    #[test]
    fn a_signed_payload_that_is_not_simple_signing_is_named() {
        let (_dir, store) = store();
        let image: Reference = "example.com/app/svc:1".parse().expect("ref");
        let a = digest(1);
        let key = PrivateKey::generate();
        let body = br#"{"critical":{"type":"something else"}}"#;
        let sig = key.sign(body).expect("sign");
        let pd = store.put_bytes(body, None, "payload").expect("put");
        let mut layer = Descriptor::new(SIMPLE_SIGNING_MEDIA_TYPE, &pd, body.len() as u64);
        layer.annotations.insert(
            SIGNATURE_ANNOTATION.into(),
            base64::engine::general_purpose::STANDARD.encode(sig),
        );
        write_signatures(&store, &signature_reference(&image, &a), vec![layer]).expect("write");
        let err = verify_image(&store, &image, &a, &[key.public_key()], Source::Store)
            .expect_err("bad payload");
        assert!(
            matches!(err, SignatureError::InvalidPayload { .. }),
            "{err}"
        );
    }

    #[test]
    fn hostile_signature_manifests_are_refused() {
        let layer = |size: u64| serde_json::json!({"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": digest(0).to_string(), "size": size});
        let manifest = |layers: Vec<serde_json::Value>| {
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
                "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": digest(9).to_string(), "size": 2},
                "layers": layers}))
            .expect("json")
        };
        assert!(check_signature_manifest(&manifest(vec![layer(10)]), "m").is_ok());
        let err = check_signature_manifest(&manifest(vec![layer(MAX_PAYLOAD + 1)]), "m")
            .expect_err("large");
        assert!(err.to_string().contains("more than the"), "{err}");
        let many = vec![layer(1); MAX_SIGNATURES + 1];
        assert!(check_signature_manifest(&manifest(many), "m").is_err());
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(check_signature_manifest(index, "m").is_err());
        assert!(check_signature_manifest(b"\xff", "m").is_err());
    }
}
