//! Attestations BuildKit (and `linuxkit pkg build`) attach to an image: an extra manifest in
//! the image's index, annotated `vnd.docker.reference.type: attestation-manifest` and
//! `vnd.docker.reference.digest: <the platform manifest it describes>`, whose layers are
//! in-toto statements (`application/vnd.in-toto+json`) annotated with their predicate type.
//! kiln keeps those whose predicate is an SPDX document (the publisher's SBOM).

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{Descriptor, Index, Manifest};
use crate::store::{Store, StoreError, media_type_of};

/// The annotation naming what kind of reference an index entry is.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The annotation naming the manifest an attestation describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The reference type of an attestation manifest.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The media type of an in-toto statement layer.
pub const MEDIA_IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation naming a statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The predicate type of an SPDX document.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";
/// The largest SBOM statement kiln reads.
pub const MAX_STATEMENT: u64 = 64 << 20;

/// The attestation manifest `index` holds for the platform manifest `manifest`, if any.
pub fn attestation_for<'a>(index: &'a Index, manifest: &str) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|d| {
        d.annotations
            .get(ANNOTATION_REFERENCE_TYPE)
            .map(String::as_str)
            == Some(ATTESTATION_MANIFEST)
            && d.annotations
                .get(ANNOTATION_REFERENCE_DIGEST)
                .map(String::as_str)
                == Some(manifest)
    })
}

/// The layers of an attestation manifest that are SPDX statements.
pub fn spdx_layers(manifest: &Manifest) -> impl Iterator<Item = &Descriptor> {
    manifest.layers.iter().filter(|l| {
        l.media_type == MEDIA_IN_TOTO
            && l.annotations
                .get(ANNOTATION_PREDICATE_TYPE)
                .map(String::as_str)
                == Some(PREDICATE_SPDX)
            && l.size <= MAX_STATEMENT
    })
}

impl Store {
    /// The SPDX statements (in-toto JSON, each at most [`MAX_STATEMENT`] bytes) attached to the
    /// platform manifest `manifest` of the image `name` points to, as far as the store holds
    /// them: none when `name` names a manifest rather than an index, or the index has no
    /// attestation for it, or its blobs were not fetched.
    pub fn attached_sboms(
        &self,
        name: &Reference,
        manifest: &Digest,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let Some(top) = self.lookup(name)? else {
            return Ok(Vec::new());
        };
        let top_digest: Digest = top.digest.parse()?;
        if !self.has_blob(&top_digest) {
            return Ok(Vec::new());
        }
        let data = self.read_json_blob(&top_digest, &format!("index of {name}"))?;
        if !crate::spec::is_index(&media_type_of(&data)) {
            return Ok(Vec::new());
        }
        let Ok(index) = serde_json::from_slice::<Index>(&data) else {
            return Ok(Vec::new());
        };
        let Some(att) = attestation_for(&index, &manifest.to_string()) else {
            return Ok(Vec::new());
        };
        let att_digest: Digest = att.digest.parse()?;
        if !self.has_blob(&att_digest) {
            return Ok(Vec::new());
        }
        let data = self.read_json_blob(&att_digest, &format!("attestation of {name}"))?;
        let att: Manifest = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            what: format!("attestation manifest {att_digest} of {name}"),
            source,
        })?;
        let mut out = Vec::new();
        for layer in spdx_layers(&att) {
            let d: Digest = layer.digest.parse()?;
            if !self.has_blob(&d) {
                continue;
            }
            let mut buf = Vec::new();
            use std::io::Read as _;
            self.open_blob(&d)?
                .take(MAX_STATEMENT)
                .read_to_end(&mut buf)
                .map_err(|source| StoreError::Io {
                    path: self.blob_path(&d),
                    source,
                })?;
            out.push(buf);
        }
        Ok(out)
    }
}
