//! Attestations attached to an image as cosign attaches them (its `.att` tag scheme, for
//! registries without the OCI referrers API): an image manifest tagged `sha256-<hex>.att` in
//! the image's repository, one layer per attestation, each a DSSE envelope of media type
//! `application/vnd.dsse.envelope.v1+json` with the annotation `predicateType`. The same
//! artifact is kept in kiln's store under that name, so that it can be verified offline and
//! pushed later.

use crate::dsse::{DsseError, ENVELOPE_MEDIA_TYPE, Envelope};
use kiln_oci::registry::{RegistryError, RegistryOptions};
use kiln_oci::spec::{Descriptor, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST, Manifest};
use kiln_oci::{Digest, Reference, Store, StoreError};
use std::collections::BTreeMap;

/// The layer annotation naming an attestation's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// cosign's signature annotation; empty on attestation layers (the signature is inside the
/// envelope).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Most attestation layers read from one artifact.
const MAX_LAYERS: usize = 64;

/// Attestations could not be stored, read, pushed or fetched.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The artifact is not what cosign writes.
    #[error("{reference}: {message}")]
    Invalid {
        /// The `.att` reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// A layer is not a DSSE envelope.
    #[error("{reference}: layer {layer}: {source}")]
    Envelope {
        /// The `.att` reference.
        reference: String,
        /// The layer's digest.
        layer: String,
        /// Why.
        #[source]
        source: DsseError,
    },
}

/// One attestation: its predicate type (from the layer annotation) and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The layer's `predicateType` annotation (empty when absent).
    pub predicate_type: String,
    /// The envelope.
    pub envelope: Envelope,
}

/// The tag of the attestations of the manifest `digest`: `sha256-<hex>.att`.
pub fn tag(digest: &Digest) -> String {
    format!("sha256-{}.att", digest.hex())
}

/// The reference of the attestations of `image` (its repository) at `digest`.
pub fn reference(image: &Reference, digest: &Digest) -> Reference {
    Reference {
        registry: image.registry.clone(),
        repository: image.repository.clone(),
        tag: Some(tag(digest)),
        digest: None,
    }
}

/// The attestations the store holds for `image` at `digest` (none when it holds no `.att`).
pub fn read(
    store: &Store,
    image: &Reference,
    digest: &Digest,
) -> Result<Vec<Attestation>, AttachError> {
    let r = reference(image, digest);
    let Some(desc) = store.lookup(&r)? else {
        return Ok(Vec::new());
    };
    let invalid = |message: String| AttachError::Invalid {
        reference: r.to_string(),
        message,
    };
    let d: Digest = desc.digest.parse().map_err(StoreError::from)?;
    let data = store.read_json_blob(&d, &r.to_string())?;
    let manifest = parse_manifest(&data).map_err(invalid)?;
    let mut out = Vec::new();
    for layer in &manifest.layers {
        if layer.media_type != ENVELOPE_MEDIA_TYPE {
            continue;
        }
        let ld: Digest = layer.digest.parse().map_err(StoreError::from)?;
        let blob = store.read_json_blob(&ld, &format!("{r} layer {}", layer.digest))?;
        let envelope = Envelope::from_json(&blob).map_err(|source| AttachError::Envelope {
            reference: r.to_string(),
            layer: layer.digest.clone(),
            source,
        })?;
        out.push(Attestation {
            predicate_type: layer
                .annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            envelope,
        });
    }
    Ok(out)
}

/// Store `attestations` as the `.att` artifact of `image` at `digest`, replacing what the
/// store had under that name. The artifact's bytes depend only on the attestations.
pub fn write(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    attestations: &[Attestation],
) -> Result<Descriptor, AttachError> {
    let r = reference(image, digest);
    let _guard = store.write_guard()?;
    let mut layers = Vec::new();
    for a in attestations {
        let bytes = a.envelope.to_json();
        let d = store.put_bytes(&bytes, None, &format!("attestation of {image}"))?;
        let mut desc = Descriptor::new(ENVELOPE_MEDIA_TYPE, &d, bytes.len() as u64);
        desc.annotations = BTreeMap::from([
            (COSIGN_SIGNATURE_ANNOTATION.to_string(), String::new()),
            (
                PREDICATE_TYPE_ANNOTATION.to_string(),
                a.predicate_type.clone(),
            ),
        ]);
        layers.push(desc);
    }
    // The config cosign's artifacts carry: an empty image whose layers are the attestations.
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = serde_json::json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = store.put_bytes(&config, None, &format!("{r} config"))?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_MANIFEST.into()),
        config: Descriptor::new(MEDIA_OCI_CONFIG, &config_digest, config.len() as u64),
        layers,
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let md = store.put_bytes(&bytes, None, &format!("{r} manifest"))?;
    let desc = Descriptor::new(MEDIA_OCI_MANIFEST, &md, bytes.len() as u64);
    store.tag(&r, desc.clone())?;
    Ok(desc)
}

/// Attach `envelope` (of `predicate_type`) to `image` at `digest` in the store: it replaces
/// an attestation of the same predicate type, others are kept.
pub fn attach(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    envelope: Envelope,
    predicate_type: &str,
) -> Result<Descriptor, AttachError> {
    let mut all = read(store, image, digest).unwrap_or_default();
    all.retain(|a| a.predicate_type != predicate_type);
    all.push(Attestation {
        predicate_type: predicate_type.into(),
        envelope,
    });
    write(store, image, digest, &all)
}

/// Push the store's `.att` artifact of `image` at `digest` to the image's registry.
pub fn push(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    opts: &RegistryOptions,
) -> Result<Digest, AttachError> {
    Ok(kiln_oci::registry::push(
        store,
        &reference(image, digest),
        opts,
    )?)
}

/// An attestation artifact's manifest, of at most [`MAX_LAYERS`] layers; the error says why
/// it is not one.
fn parse_manifest(data: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest =
        serde_json::from_slice(data).map_err(|e| format!("not an image manifest: {e}"))?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(format!(
            "{} layers, more than the {MAX_LAYERS} kiln reads",
            manifest.layers.len()
        ));
    }
    Ok(manifest)
}

/// Fetch the `.att` artifact of `image` at `digest` from its registry into the store (it
/// replaces what the store held under that name); `false` when the registry has none.
pub fn fetch(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    opts: &RegistryOptions,
) -> Result<bool, AttachError> {
    let r = reference(image, digest);
    let Some((data, remote)) = kiln_oci::registry::remote_manifest(&r, opts)? else {
        return Ok(false);
    };
    let invalid = |message: String| AttachError::Invalid {
        reference: format!("{r} in {}", image.registry),
        message,
    };
    let media = kiln_oci::media_type_of(&data);
    if media != MEDIA_OCI_MANIFEST && media != kiln_oci::spec::MEDIA_DOCKER_MANIFEST {
        return Err(invalid(format!(
            "media type `{media}` is not an image manifest"
        )));
    }
    let manifest = parse_manifest(&data).map_err(invalid)?;
    if let Some(big) = manifest
        .layers
        .iter()
        .find(|l| l.size > crate::dsse::MAX_ENVELOPE as u64)
    {
        return Err(invalid(format!(
            "layer {} has {} bytes, more than the {} kiln reads",
            big.digest,
            big.size,
            crate::dsse::MAX_ENVELOPE
        )));
    }
    let _guard = store.write_guard()?;
    let mut blobs = manifest.layers.clone();
    blobs.push(manifest.config.clone());
    kiln_oci::registry::fetch_blobs(store, &r, &blobs, opts)?;
    store.put_bytes(&data, Some(&remote), &r.to_string())?;
    store.tag(&r, Descriptor::new(media, &remote, data.len() as u64))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsse::IN_TOTO_PAYLOAD_TYPE;

    #[test]
    fn write_read_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let image: Reference = "127.0.0.1:5000/kiln/hello:1".parse().expect("ref");
        let digest = Digest::of(b"manifest");
        assert!(read(&store, &image, &digest).expect("read").is_empty());
        let slsa = Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, b"{\"v\":1}");
        let spdx = Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, b"{\"spdx\":1}");
        attach(
            &store,
            &image,
            &digest,
            spdx.clone(),
            "https://spdx.dev/Document",
        )
        .expect("a");
        let first = attach(
            &store,
            &image,
            &digest,
            slsa,
            "https://slsa.dev/provenance/v1",
        )
        .expect("attach");
        let slsa2 = Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, b"{\"v\":2}");
        attach(
            &store,
            &image,
            &digest,
            slsa2.clone(),
            "https://slsa.dev/provenance/v1",
        )
        .expect("attach");
        let got = read(&store, &image, &digest).expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].envelope, spdx);
        assert_eq!(got[1].envelope, slsa2);
        assert_eq!(got[1].predicate_type, "https://slsa.dev/provenance/v1");
        let tagged = store
            .lookup(&reference(&image, &digest))
            .expect("lookup")
            .expect("tagged");
        assert_ne!(tagged.digest, first.digest);
        assert_eq!(
            reference(&image, &digest).to_string(),
            format!("127.0.0.1:5000/kiln/hello:sha256-{}.att", digest.hex())
        );
        // The artifact is an image manifest with cosign's annotations.
        let d: Digest = tagged.digest.parse().expect("digest");
        let m: serde_json::Value =
            serde_json::from_slice(&store.read_json_blob(&d, "m").expect("blob")).expect("json");
        assert_eq!(m["mediaType"], MEDIA_OCI_MANIFEST);
        assert_eq!(m["layers"][1]["mediaType"], ENVELOPE_MEDIA_TYPE);
        assert_eq!(
            m["layers"][1]["annotations"][COSIGN_SIGNATURE_ANNOTATION],
            ""
        );
    }

    #[test]
    fn the_same_attestations_give_the_same_artifact() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let image: Reference = "kiln/hello:1".parse().expect("ref");
        let digest = Digest::of(b"m");
        let env = Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, b"{}");
        let da = attach(
            &Store::open(a.path()).expect("store"),
            &image,
            &digest,
            env.clone(),
            "t",
        )
        .expect("a");
        let db = attach(
            &Store::open(b.path()).expect("store"),
            &image,
            &digest,
            env,
            "t",
        )
        .expect("b");
        assert_eq!(da, db);
    }
}
