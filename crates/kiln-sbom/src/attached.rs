//! SBOMs an image's publisher attached to it: BuildKit (and `linuxkit pkg build`) store an SPDX
//! document as an in-toto statement, a layer of an attestation manifest in the image's index.

use crate::parse::{Ecosystem, MAX_PACKAGES, MAX_VALUE, Package};
use serde::Deserialize;

/// The media type of an attestation layer.
pub const MEDIA_IN_TOTO: &str = "application/vnd.in-toto+json";
/// The layer annotation naming the predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The predicate type of an SPDX document.
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// An attached SBOM kiln cannot read.
#[derive(Debug, thiserror::Error)]
pub enum AttachedError {
    /// Not an in-toto statement with an SPDX document.
    #[error("not an in-toto statement holding an SPDX document: {0}")]
    Json(#[from] serde_json::Error),
    /// A statement of another predicate type.
    #[error("its predicate type is `{0}`, not {PREDICATE_SPDX}")]
    PredicateType(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    predicate_type: String,
    predicate: SpdxIn,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpdxIn {
    packages: Vec<PackageIn>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PackageIn {
    name: String,
    version_info: String,
    license_declared: String,
    license_concluded: String,
    external_refs: Vec<RefIn>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RefIn {
    reference_type: String,
    reference_locator: String,
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_VALUE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim().to_string()
}

/// The packages of an attached SBOM (the bytes of an in-toto statement whose predicate is an
/// SPDX document): those with a name and a version or a purl.
pub fn packages(statement: &[u8]) -> Result<Vec<Package>, AttachedError> {
    let s: Statement = serde_json::from_slice(statement)?;
    if s.predicate_type != PREDICATE_SPDX {
        return Err(AttachedError::PredicateType(cut(&s.predicate_type)));
    }
    let mut out = Vec::new();
    for p in s.predicate.packages.into_iter().take(MAX_PACKAGES) {
        let purl = p
            .external_refs
            .iter()
            .find(|r| r.reference_type == "purl" && r.reference_locator.starts_with("pkg:"))
            .map(|r| cut(&r.reference_locator));
        let name = cut(&p.name);
        let version = cut(&p.version_info);
        if name.is_empty() || (version.is_empty() && purl.is_none()) {
            continue;
        }
        let license = [&p.license_declared, &p.license_concluded]
            .into_iter()
            .map(|l| cut(l))
            .find(|l| !l.is_empty() && l != "NOASSERTION" && l != "NONE");
        out.push(Package {
            ecosystem: Ecosystem::Attached,
            name,
            version,
            arch: None,
            source: None,
            license,
            purl,
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_buildkit_statements() {
        let s = br#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":{"spdxVersion":"SPDX-2.3","packages":[
            {"name":"musl","versionInfo":"1.2.4-r2","licenseDeclared":"MIT","licenseConcluded":"NOASSERTION","externalRefs":[{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"}]},
            {"name":"/src","versionInfo":""}]}}"#;
        let p = packages(s).expect("statement");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            p[0].purl.as_deref(),
            Some("pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64")
        );
        assert!(packages(br#"{"predicateType":"x","predicate":{}}"#).is_err());
        assert!(packages(b"[]").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = packages(&data);
        }

        #[test]
        fn never_panics_on_shaped_json(name in "\\PC{0,8}", version in "\\PC{0,8}", locator in "\\PC{0,12}") {
            let doc = serde_json::json!({"predicateType": PREDICATE_SPDX, "predicate": {"packages": [
                {"name": name, "versionInfo": version, "externalRefs": [{"referenceType": "purl", "referenceLocator": locator}]}]}});
            let bytes = serde_json::to_vec(&doc).expect("json");
            let p = packages(&bytes).expect("parses");
            prop_assert!(p.len() <= 1);
        }
    }
}
