//! SLSA v1 provenance as in-toto statements: what `kiln build` and `kiln pkg build` record
//! about a build (the builder, the exact inputs, the outputs' digests), in DSSE envelopes
//! ([`crate::dsse`]), attached to images as cosign attaches attestations ([`attach`]).
//!
//! Statements are deterministic: the same inputs give the same bytes. They carry no
//! invocation id and no wall-clock time; the build's times are `SOURCE_DATE_EPOCH` when it is
//! set and absent otherwise. Paths are recorded as given when relative, by file name when
//! absolute, so that where a tree is checked out does not change them.

pub mod attach;

use crate::dsse::{DsseError, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::{Signer, Verifier};
use kiln_oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The `_type` of in-toto statements v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// The predicate type of SLSA provenance v1.
pub const SLSA_PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// kiln's URI (the project's repository): the namespace of its build types and builder id,
/// which docs/provenance.md describes.
pub const KILN_URI: &str = "https://example.invalid/kiln";

/// The build type of `kiln pkg build` (a package directory built into an image).
pub fn pkg_build_type() -> String {
    format!("{KILN_URI}/provenance/pkg-build/v1")
}

/// The build type of `kiln build` (manifests assembled into output files).
pub fn image_build_type() -> String {
    format!("{KILN_URI}/provenance/build/v1")
}

/// Provenance could not be made, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// The envelope failed.
    #[error(transparent)]
    Dsse(#[from] DsseError),
    /// The payload is not an in-toto statement.
    #[error("the attestation's payload is not an in-toto statement: {0}")]
    Json(#[from] serde_json::Error),
    /// The statement is of another kind.
    #[error("the statement is {found:?}, not {expected:?}")]
    Kind {
        /// What was expected.
        expected: String,
        /// What the statement says.
        found: String,
    },
    /// No subject of the statement has the digest.
    #[error("the provenance names {found}, not {expected}: it was made for another image")]
    Subject {
        /// The digest looked for.
        expected: String,
        /// The subjects' digests.
        found: String,
    },
}

/// An in-toto resource descriptor: a subject or a resolved dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    /// A name (an output file's, an image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A URI (an image reference, a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Digests by algorithm (`sha256` → hex).
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    /// A resource named `name` with SHA-256 `hex`.
    pub fn named(name: impl Into<String>, hex: impl Into<String>) -> ResourceDescriptor {
        ResourceDescriptor {
            name: Some(name.into()),
            uri: None,
            digest: sha256(hex),
        }
    }

    /// A resource at `uri` with SHA-256 `hex`.
    pub fn at(uri: impl Into<String>, hex: impl Into<String>) -> ResourceDescriptor {
        ResourceDescriptor {
            name: None,
            uri: Some(uri.into()),
            digest: sha256(hex),
        }
    }

    /// Its SHA-256, as `sha256:HEX`, if it has one.
    pub fn sha256(&self) -> Option<String> {
        self.digest.get("sha256").map(|h| format!("sha256:{h}"))
    }

    /// Its name, else its URI, else `-`.
    pub fn label(&self) -> &str {
        self.name.as_deref().or(self.uri.as_deref()).unwrap_or("-")
    }
}

fn sha256(hex: impl Into<String>) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), hex.into())])
}

/// An in-toto statement v1 with a SLSA provenance v1 predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// What was built.
    pub subject: Vec<ResourceDescriptor>,
    /// [`SLSA_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// How it was built.
    pub predicate: Provenance,
}

/// SLSA provenance v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The inputs.
    pub build_definition: BuildDefinition,
    /// The builder.
    pub run_details: RunDetails,
}

/// What a build was asked to do, and what it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    /// [`pkg_build_type`] or [`image_build_type`].
    pub build_type: String,
    /// The parameters the user chose.
    pub external_parameters: serde_json::Value,
    /// The parameters kiln chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_parameters: Option<serde_json::Value>,
    /// Every input by digest: images, Dockerfile, context, manifests.
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// Who built it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDetails {
    /// The builder.
    pub builder: Builder,
    /// When (from `SOURCE_DATE_EPOCH`; absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BuildMetadata>,
}

/// The builder: kiln, with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    /// `<kiln's URI>/cli@v<version>`.
    pub id: String,
    /// `{"kiln": "<version>"}`.
    #[serde(default)]
    pub version: BTreeMap<String, String>,
}

impl Builder {
    /// kiln of `version` (the CLI's package version).
    pub fn kiln(version: &str) -> Builder {
        Builder {
            id: format!("{KILN_URI}/cli@v{version}"),
            version: BTreeMap::from([("kiln".to_string(), version.to_string())]),
        }
    }
}

/// The build's times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
}

impl BuildMetadata {
    /// Both times `SOURCE_DATE_EPOCH` (a build that honours it claims no other time); `None`
    /// without it.
    pub fn from_epoch(epoch: Option<u64>) -> Option<BuildMetadata> {
        let t = rfc3339(epoch?);
        Some(BuildMetadata {
            started_on: Some(t.clone()),
            finished_on: Some(t),
        })
    }
}

/// `secs` since the Unix epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    kiln_fs::time::rfc3339(secs)
}

/// A path as provenance records it: as given when relative, its file name when absolute
/// (where a tree is checked out is not an input of the build).
pub fn recorded_path(p: &Path) -> String {
    if p.is_absolute() {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
    } else {
        p.display().to_string()
    }
}

/// A file read by a build, by name and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Its name as recorded ([`recorded_path`]).
    pub name: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// An image a build read: its name as written and the digest of the manifest used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// The name as the Dockerfile or manifest gives it.
    pub reference: String,
    /// The manifest used (for the build's platform).
    pub digest: Digest,
}

fn image_dependencies(images: &[ImageInput]) -> Vec<ResourceDescriptor> {
    let mut deps: Vec<ResourceDescriptor> = images
        .iter()
        .map(|i| ResourceDescriptor::at(i.reference.clone(), i.digest.hex()))
        .collect();
    deps.sort_by(|a, b| (&a.uri, &a.digest).cmp(&(&b.uri, &b.digest)));
    deps.dedup();
    deps
}

/// What `kiln pkg build` built one package from.
#[derive(Debug, Clone)]
pub struct PkgBuild {
    /// The image: `registry/repository` (no tag).
    pub image: String,
    /// Its tag.
    pub tag: String,
    /// The digest of its manifest.
    pub digest: Digest,
    /// The package directory ([`recorded_path`]).
    pub package: String,
    /// The package's build.yml.
    pub build_yml: FileDigest,
    /// The Dockerfile.
    pub dockerfile: FileDigest,
    /// The SHA-256 of the build context (names, kinds, executable bits and contents).
    pub context_sha256: String,
    /// The build arguments, in the order given.
    pub build_args: Vec<(String, String)>,
    /// The platform, `linux/ARCH`.
    pub platform: String,
    /// Whether RUN steps had the network.
    pub network: bool,
    /// The images it read (FROM, COPY --from, RUN --mount from).
    pub images: Vec<ImageInput>,
}

/// What `kiln build` built its outputs from.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    /// The outputs' name (`--name`).
    pub name: String,
    /// The formats written.
    pub formats: Vec<String>,
    /// The architecture.
    pub arch: String,
    /// The manifest files, in the order given (merged in that order).
    pub manifests: Vec<FileDigest>,
    /// The images of the resolved manifest.
    pub images: Vec<ImageInput>,
    /// The output files: name and SHA-256.
    pub outputs: Vec<FileDigest>,
}

/// The provenance of one package build.
pub fn pkg_statement(b: &PkgBuild, builder: Builder, epoch: Option<u64>) -> Statement {
    let build_args: serde_json::Map<String, serde_json::Value> = b
        .build_args
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let external = serde_json::json!({
        "package": b.package,
        "buildYml": {"name": b.build_yml.name, "digest": {"sha256": b.build_yml.sha256}},
        "dockerfile": {"name": b.dockerfile.name, "digest": {"sha256": b.dockerfile.sha256}},
        "buildArgs": build_args,
        "platforms": [b.platform],
        "tag": b.tag,
        "network": b.network,
    });
    let mut deps = vec![
        ResourceDescriptor::named(
            format!("dockerfile:{}", b.dockerfile.name),
            b.dockerfile.sha256.clone(),
        ),
        ResourceDescriptor::named("context", b.context_sha256.clone()),
    ];
    deps.extend(image_dependencies(&b.images));
    slsa_statement(
        vec![ResourceDescriptor::named(b.image.clone(), b.digest.hex())],
        pkg_build_type(),
        external,
        deps,
        builder,
        epoch,
    )
}

/// The provenance of one `kiln build`.
pub fn build_statement(b: &ImageBuild, builder: Builder, epoch: Option<u64>) -> Statement {
    let manifests: Vec<serde_json::Value> = b
        .manifests
        .iter()
        .map(|m| serde_json::json!({"name": m.name, "digest": {"sha256": m.sha256}}))
        .collect();
    let external = serde_json::json!({
        "name": b.name,
        "formats": b.formats,
        "arch": b.arch,
        "manifests": manifests,
    });
    let mut deps: Vec<ResourceDescriptor> = b
        .manifests
        .iter()
        .map(|m| ResourceDescriptor::named(format!("manifest:{}", m.name), m.sha256.clone()))
        .collect();
    deps.extend(image_dependencies(&b.images));
    let mut subject: Vec<ResourceDescriptor> = b
        .outputs
        .iter()
        .map(|o| ResourceDescriptor::named(o.name.clone(), o.sha256.clone()))
        .collect();
    subject.sort_by(|a, b| a.name.cmp(&b.name));
    slsa_statement(subject, image_build_type(), external, deps, builder, epoch)
}

/// An in-toto statement of SLSA v1 provenance: `subject` built as `build_type` with
/// `external` parameters from `deps` by `builder`, dated by `epoch`.
fn slsa_statement(
    subject: Vec<ResourceDescriptor>,
    build_type: String,
    external: serde_json::Value,
    deps: Vec<ResourceDescriptor>,
    builder: Builder,
    epoch: Option<u64>,
) -> Statement {
    Statement {
        kind: STATEMENT_TYPE.into(),
        subject,
        predicate_type: SLSA_PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type,
                external_parameters: external,
                internal_parameters: None,
                resolved_dependencies: deps,
            },
            run_details: RunDetails {
                builder,
                metadata: BuildMetadata::from_epoch(epoch),
            },
        },
    }
}

impl Statement {
    /// The statement's JSON: compact, fields in a fixed order, the same bytes for the same
    /// statement.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An envelope of the statement: signed by `signer` when given, else unsigned.
    pub fn envelope(&self, signer: Option<&dyn Signer>) -> Result<Envelope, DsseError> {
        match signer {
            Some(s) => Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &self.to_json(), s),
            None => Ok(Envelope::unsigned(IN_TOTO_PAYLOAD_TYPE, &self.to_json())),
        }
    }

    /// Read a statement from an envelope's payload, checking it is SLSA v1 provenance.
    pub fn from_payload(payload: &[u8]) -> Result<Statement, ProvenanceError> {
        // The kind first, so that another predicate reads as such, not as a parse error.
        let head: serde_json::Value = serde_json::from_slice(payload)?;
        let field = |k: &str| {
            head.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        if field("_type") != STATEMENT_TYPE {
            return Err(ProvenanceError::Kind {
                expected: STATEMENT_TYPE.into(),
                found: field("_type"),
            });
        }
        if field("predicateType") != SLSA_PREDICATE_TYPE {
            return Err(ProvenanceError::Kind {
                expected: SLSA_PREDICATE_TYPE.into(),
                found: field("predicateType"),
            });
        }
        Ok(serde_json::from_value(head)?)
    }

    /// Fail unless a subject has the digest `digest`.
    pub fn expect_subject(&self, digest: &Digest) -> Result<(), ProvenanceError> {
        if self
            .subject
            .iter()
            .any(|s| s.digest.get("sha256").map(String::as_str) == Some(digest.hex()))
        {
            return Ok(());
        }
        let found: Vec<String> = self.subject.iter().filter_map(|s| s.sha256()).collect();
        Err(ProvenanceError::Subject {
            expected: digest.to_string(),
            found: if found.is_empty() {
                "no digest".into()
            } else {
                found.join(", ")
            },
        })
    }
}

/// Verify `envelope` with `key` and check it is SLSA provenance of `digest`.
pub fn verify(
    envelope: &Envelope,
    key: &dyn Verifier,
    digest: &Digest,
) -> Result<Statement, ProvenanceError> {
    envelope.expect_type(IN_TOTO_PAYLOAD_TYPE)?;
    let payload = envelope.verify(key)?;
    let statement = Statement::from_payload(&payload)?;
    statement.expect_subject(digest)?;
    Ok(statement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsse::tests::TestKey;

    fn digest(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn pkg() -> PkgBuild {
        PkgBuild {
            image: "127.0.0.1:5000/kiln/hello".into(),
            tag: "abc".into(),
            digest: digest("image"),
            package: "pkg/hello".into(),
            build_yml: FileDigest {
                name: "build.yml".into(),
                sha256: digest("yml").hex().into(),
            },
            dockerfile: FileDigest {
                name: "Dockerfile".into(),
                sha256: digest("df").hex().into(),
            },
            context_sha256: digest("ctx").hex().into(),
            build_args: vec![("B".into(), "2".into()), ("A".into(), "1".into())],
            platform: "linux/amd64".into(),
            network: false,
            images: vec![
                ImageInput {
                    reference: "debian:bookworm".into(),
                    digest: digest("debian"),
                },
                ImageInput {
                    reference: "alpine".into(),
                    digest: digest("alpine"),
                },
                ImageInput {
                    reference: "alpine".into(),
                    digest: digest("alpine"),
                },
            ],
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn recorded_paths_do_not_name_the_checkout() {
        assert_eq!(recorded_path(Path::new("pkg/init")), "pkg/init");
        assert_eq!(
            recorded_path(Path::new("/home/u/src/kiln/pkg/init")),
            "init"
        );
    }

    #[test]
    fn pkg_statement_shape() {
        let s = pkg_statement(&pkg(), Builder::kiln("1.2.3"), Some(0));
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).expect("json");
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["predicateType"], SLSA_PREDICATE_TYPE);
        assert_eq!(v["subject"][0]["name"], "127.0.0.1:5000/kiln/hello");
        assert_eq!(v["subject"][0]["digest"]["sha256"], digest("image").hex());
        let def = &v["predicate"]["buildDefinition"];
        assert_eq!(def["buildType"], pkg_build_type());
        assert_eq!(def["externalParameters"]["buildArgs"]["B"], "2");
        assert_eq!(def["externalParameters"]["platforms"][0], "linux/amd64");
        assert_eq!(def["externalParameters"]["tag"], "abc");
        let deps = def["resolvedDependencies"].as_array().expect("deps");
        // Dockerfile, context, and each image once, sorted.
        assert_eq!(deps.len(), 4, "{deps:?}");
        assert_eq!(deps[2]["uri"], "alpine");
        assert_eq!(deps[3]["uri"], "debian:bookworm");
        let run = &v["predicate"]["runDetails"];
        assert_eq!(run["builder"]["version"]["kiln"], "1.2.3");
        assert!(
            run["builder"]["id"]
                .as_str()
                .expect("id")
                .ends_with("/cli@v1.2.3")
        );
        assert_eq!(run["metadata"]["startedOn"], "1970-01-01T00:00:00Z");
        // No epoch: no times at all.
        let s = pkg_statement(&pkg(), Builder::kiln("1.2.3"), None);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).expect("json");
        assert!(v["predicate"]["runDetails"].get("metadata").is_none());
    }

    #[test]
    fn statements_are_deterministic_and_round_trip() {
        let a = pkg_statement(&pkg(), Builder::kiln("1"), Some(5)).to_json();
        let b = pkg_statement(&pkg(), Builder::kiln("1"), Some(5)).to_json();
        assert_eq!(a, b);
        let back = Statement::from_payload(&a).expect("parse");
        assert_eq!(back.to_json(), a);
    }

    #[test]
    fn build_statement_names_outputs() {
        let b = ImageBuild {
            name: "redis-os".into(),
            formats: vec!["kernel+initrd".into()],
            arch: "amd64".into(),
            manifests: vec![FileDigest {
                name: "examples/redis-os.yml".into(),
                sha256: digest("m").hex().into(),
            }],
            images: vec![],
            outputs: vec![
                FileDigest {
                    name: "redis-os-kernel".into(),
                    sha256: digest("k").hex().into(),
                },
                FileDigest {
                    name: "redis-os-initrd.img".into(),
                    sha256: digest("i").hex().into(),
                },
            ],
        };
        let s = build_statement(&b, Builder::kiln("1"), None);
        assert_eq!(s.subject[0].label(), "redis-os-initrd.img");
        assert_eq!(s.subject[1].label(), "redis-os-kernel");
        assert!(s.expect_subject(&digest("k")).is_ok());
        assert!(matches!(
            s.expect_subject(&digest("other")),
            Err(ProvenanceError::Subject { .. })
        ));
        assert_eq!(
            s.predicate.build_definition.resolved_dependencies[0].label(),
            "manifest:examples/redis-os.yml"
        );
    }

    #[test]
    fn verify_checks_key_subject_and_kind() {
        let key = TestKey::new(1);
        let s = pkg_statement(&pkg(), Builder::kiln("1"), None);
        let env = s.envelope(Some(&key)).expect("sign");
        let got = verify(&env, &key.public(), &digest("image")).expect("verifies");
        assert_eq!(got, s);
        assert!(matches!(
            verify(&env, &key.public(), &digest("another image")),
            Err(ProvenanceError::Subject { .. })
        ));
        assert!(matches!(
            verify(&env, &TestKey::new(9).public(), &digest("image")),
            Err(ProvenanceError::Dsse(DsseError::BadSignature { .. }))
        ));
        let unsigned = s.envelope(None).expect("envelope");
        assert!(matches!(
            verify(&unsigned, &key.public(), &digest("image")),
            Err(ProvenanceError::Dsse(DsseError::Unsigned))
        ));
        let other = Envelope::sign(
            IN_TOTO_PAYLOAD_TYPE,
            br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":{}}"#,
            &key,
        )
        .expect("sign");
        assert!(matches!(
            verify(&other, &key.public(), &digest("image")),
            Err(ProvenanceError::Kind { .. })
        ));
    }
}
