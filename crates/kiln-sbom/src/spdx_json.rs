//! SPDX 2.3 JSON.

use crate::document::{Sbom, declared, ecosystem_name, id_part, short_hash, uuid_of};
use crate::parse::Package;
use serde::Serialize;
use std::collections::BTreeMap;

const NOASSERTION: &str = "NOASSERTION";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<SpdxPackage>,
    relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    license_concluded: &'static str,
    license_declared: String,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtractedLicense {
    license_id: String,
    extracted_text: String,
    name: String,
}

fn package(
    spdx_id: String,
    name: String,
    version: Option<String>,
    purl: Option<String>,
) -> SpdxPackage {
    SpdxPackage {
        spdx_id,
        name,
        version_info: version.filter(|v| !v.is_empty()),
        download_location: NOASSERTION,
        files_analyzed: false,
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.into(),
        copyright_text: NOASSERTION,
        source_info: None,
        comment: None,
        external_refs: purl
            .into_iter()
            .map(|p| ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p,
            })
            .collect(),
        primary_package_purpose: None,
    }
}

fn contains(from: &str, to: &str) -> Relationship {
    Relationship {
        spdx_element_id: from.to_string(),
        relationship_type: "CONTAINS",
        related_spdx_element: to.to_string(),
    }
}

/// The package's declared license as SPDX wants it: a valid expression, each `LicenseRef-` it
/// uses defined in the document with the text it stands for (see [`declared`]).
fn declared_license(p: &Package, extracted: &mut BTreeMap<String, ExtractedLicense>) -> String {
    let Some(found) = declared(p) else {
        return NOASSERTION.into();
    };
    for (id, text) in found.refs {
        extracted
            .entry(id.clone())
            .or_insert_with(|| ExtractedLicense {
                license_id: id,
                extracted_text: text.clone(),
                name: text,
            });
    }
    found.expression
}

/// The SPDX 2.3 JSON document of `sbom`, created at `created` (`YYYY-MM-DDTHH:MM:SSZ`) by
/// `tool` (`kiln-VERSION`).
pub fn render(sbom: &Sbom, created: String, tool: &str) -> Vec<u8> {
    let table = sbom.table();
    let uuid = uuid_of(&sbom.content_hash("spdx-2.3"));
    let mut extracted = BTreeMap::new();
    let system_id = "SPDXRef-System".to_string();
    let mut system = package(system_id.clone(), sbom.name.clone(), None, None);
    system.primary_package_purpose = Some("OPERATING-SYSTEM");
    system.comment = Some("the system kiln built from the images below".into());
    let mut packages = vec![system];
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: system_id.clone(),
    }];

    let os_ids: BTreeMap<&String, String> = table
        .systems
        .keys()
        .map(|k| (k, format!("SPDXRef-OS-{}-{}", id_part(k), short_hash(k))))
        .collect();
    let package_ids: BTreeMap<&String, String> = table
        .packages
        .iter()
        .map(|(k, e)| {
            let readable = format!("{}-{}", e.package.name, e.package.version);
            (
                k,
                format!("SPDXRef-Package-{}-{}", id_part(&readable), short_hash(k)),
            )
        })
        .collect();

    for (i, (image, (os, keys))) in sbom.images.iter().zip(&table.per_image).enumerate() {
        let id = format!("SPDXRef-Image-{i}");
        let mut p = package(
            id.clone(),
            image.reference.clone(),
            Some(image.digest.clone()),
            Some(crate::purl::of_image(&image.reference, &image.digest)),
        );
        p.primary_package_purpose = Some("CONTAINER");
        let mut comment = format!("used at {}", image.locations.join(", "));
        for note in &image.findings.notes {
            comment.push_str("; ");
            comment.push_str(note);
        }
        p.comment = Some(comment);
        packages.push(p);
        relationships.push(contains(&system_id, &id));
        if let Some(os_id) = os.as_ref().and_then(|k| os_ids.get(k)) {
            relationships.push(contains(&id, os_id));
        }
        for k in keys {
            if let Some(pid) = package_ids.get(k) {
                relationships.push(contains(&id, pid));
            }
        }
    }
    for (k, os) in &table.systems {
        let Some(id) = os_ids.get(k) else { continue };
        let mut p = package(id.clone(), os.id.clone(), os.version_id.clone(), None);
        p.primary_package_purpose = Some("OPERATING-SYSTEM");
        p.comment = os.pretty_name.as_ref().map(|n| format!("os-release: {n}"));
        packages.push(p);
    }
    for (k, e) in &table.packages {
        let Some(id) = package_ids.get(k) else {
            continue;
        };
        let pkg = &e.package;
        let mut p = package(
            id.clone(),
            pkg.name.clone(),
            Some(pkg.version.clone()),
            pkg.purl.clone(),
        );
        p.license_declared = declared_license(pkg, &mut extracted);
        p.source_info = pkg
            .source
            .as_ref()
            .map(|s| format!("built from the source package {s}"));
        p.comment = Some(if e.attached_only {
            format!(
                "from the {} of {}",
                ecosystem_name(pkg.ecosystem),
                e.attached_by.join(", ")
            )
        } else {
            format!("from the {}", ecosystem_name(pkg.ecosystem))
        });
        packages.push(p);
    }
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: sbom.name.clone(),
        document_namespace: format!(
            "https://spdx.org/spdxdocs/kiln-{}-{uuid}",
            crate::purl::encode(&sbom.name)
        ),
        creation_info: CreationInfo {
            created,
            creators: vec![format!("Tool: {tool}")],
        },
        packages,
        relationships,
        has_extracted_licensing_infos: extracted.into_values().collect(),
    };
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}
