//! CycloneDX 1.6 JSON.

use crate::document::{Sbom, declared, ecosystem_name, short_hash, uuid_of};
use crate::parse::Package;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    timestamp: String,
    tools: Tools,
    component: Component,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
#[serde(untagged)]
enum License {
    Expression { expression: String },
    Named { license: Named },
}

#[derive(Serialize)]
struct Named {
    name: String,
}

#[derive(Serialize)]
struct Property {
    name: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

fn component(kind: &'static str, bom_ref: String, name: String) -> Component {
    Component {
        kind,
        bom_ref,
        name,
        version: None,
        description: None,
        hashes: Vec::new(),
        licenses: Vec::new(),
        purl: None,
        properties: Vec::new(),
    }
}

/// The package's license: an SPDX expression when it is made of SPDX identifiers only, else
/// (CycloneDX has no definitions of `LicenseRef-`s) a license named by the package's text.
fn licenses(p: &Package) -> Vec<License> {
    match (declared(p), &p.license) {
        (Some(found), _) if found.refs.is_empty() => vec![License::Expression {
            expression: found.expression,
        }],
        (Some(_), Some(raw)) => vec![License::Named {
            license: Named { name: raw.clone() },
        }],
        _ => Vec::new(),
    }
}

/// The CycloneDX 1.6 JSON document of `sbom`, created at `created` by `tool` (`kiln`) of
/// `version`.
pub fn render(sbom: &Sbom, created: String, tool: &str, version: &str) -> Vec<u8> {
    let table = sbom.table();
    let uuid = uuid_of(&sbom.content_hash("cyclonedx-1.6"));
    let system_ref = "system".to_string();
    let mut system = component("operating-system", system_ref.clone(), sbom.name.clone());
    system.description = Some("the system kiln built from the images below".into());
    let mut tool_component = component("application", "tool".into(), tool.into());
    tool_component.version = Some(version.into());

    let os_refs: BTreeMap<&String, String> = table
        .systems
        .keys()
        .map(|k| (k, format!("os-{}", short_hash(k))))
        .collect();
    let package_refs: BTreeMap<&String, String> = table
        .packages
        .iter()
        .map(|(k, e)| {
            (
                k,
                e.package
                    .purl
                    .clone()
                    .unwrap_or_else(|| format!("package-{}", short_hash(k))),
            )
        })
        .collect();

    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    let mut image_refs = Vec::new();
    for (i, (image, (os, keys))) in sbom.images.iter().zip(&table.per_image).enumerate() {
        let bom_ref = format!("image-{i}");
        let mut c = component("container", bom_ref.clone(), image.reference.clone());
        c.version = Some(image.digest.clone());
        c.purl = Some(crate::purl::of_image(&image.reference, &image.digest));
        if let Some(hex) = image.digest.strip_prefix("sha256:") {
            c.hashes.push(Hash {
                alg: "SHA-256",
                content: hex.to_string(),
            });
        }
        for l in &image.locations {
            c.properties.push(Property {
                name: "kiln:location",
                value: l.clone(),
            });
        }
        for n in &image.findings.notes {
            c.properties.push(Property {
                name: "kiln:note",
                value: n.clone(),
            });
        }
        components.push(c);
        let mut depends_on: Vec<String> = os
            .as_ref()
            .and_then(|k| os_refs.get(k))
            .cloned()
            .into_iter()
            .collect();
        depends_on.extend(keys.iter().filter_map(|k| package_refs.get(k)).cloned());
        depends_on.dedup();
        dependencies.push(Dependency {
            reference: bom_ref.clone(),
            depends_on,
        });
        image_refs.push(bom_ref);
    }
    for (k, os) in &table.systems {
        let Some(r) = os_refs.get(k) else { continue };
        let mut c = component("operating-system", r.clone(), os.id.clone());
        c.version = os.version_id.clone();
        c.description = os.pretty_name.clone();
        components.push(c);
        dependencies.push(Dependency {
            reference: r.clone(),
            depends_on: Vec::new(),
        });
    }
    for (k, e) in &table.packages {
        let Some(r) = package_refs.get(k) else {
            continue;
        };
        let p = &e.package;
        let mut c = component("library", r.clone(), p.name.clone());
        c.version = Some(p.version.clone()).filter(|v| !v.is_empty());
        c.purl = p.purl.clone();
        c.licenses = licenses(p);
        c.properties.push(Property {
            name: "kiln:found-in",
            value: ecosystem_name(p.ecosystem).into(),
        });
        if let Some(s) = &p.source {
            c.properties.push(Property {
                name: "kiln:source-package",
                value: s.clone(),
            });
        }
        components.push(c);
        dependencies.push(Dependency {
            reference: r.clone(),
            depends_on: Vec::new(),
        });
    }
    dependencies.insert(
        0,
        Dependency {
            reference: system_ref,
            depends_on: image_refs,
        },
    );
    let bom = Bom {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: format!("urn:uuid:{uuid}"),
        version: 1,
        metadata: Metadata {
            timestamp: created,
            tools: Tools {
                components: vec![tool_component],
            },
            component: system,
        },
        components,
        dependencies,
    };
    let mut out = serde_json::to_vec_pretty(&bom).unwrap_or_default();
    out.push(b'\n');
    out
}
