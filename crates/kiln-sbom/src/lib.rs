//! SBOMs for kiln: the images of a build and the packages found in them, written as SPDX 2.3
//! or CycloneDX 1.6 JSON, deterministically.
//!
//! This crate owns the parsers of the package databases (dpkg's `status` and `status.d/`,
//! apk's `installed`, os-release: [`parse`]) and of Debian's machine-readable copyright files,
//! which give dpkg's packages their licenses ([`debian_copyright`]), the capture of those files
//! from an image's entries ([`Capture`]), reading the SBOMs publishers attach to images
//! ([`attached`]), and the two document formats. It does not read images or layers
//! (kiln-assemble hands it the files as it streams each image, and kiln-oci the attached SBOMs)
//! and does not decide where documents are written.
//!
//! The documents are deterministic: their namespace (SPDX) and serial number (CycloneDX) are
//! derived from a hash of their content, and their creation time is given by the caller
//! (SOURCE_DATE_EPOCH).
//!
//! ```
//! use kiln_sbom::{Capture, Format, Sbom};
//! let mut capture = Capture::default();
//! capture.add("etc/os-release", b"ID=debian\nVERSION_ID=12\n".to_vec());
//! capture.add("var/lib/dpkg/status", b"Package: libc6\nVersion: 2.36\nStatus: install ok installed\n".to_vec());
//! let mut sbom = Sbom::new("demo");
//! sbom.add("docker.io/library/debian:12", "sha256:00", "init[0]", capture.finish(), Vec::new());
//! let json = kiln_sbom::render(&sbom, Format::Spdx, 0);
//! assert!(String::from_utf8_lossy(&json).contains("pkg:deb/debian/libc6@2.36?distro=debian-12"));
//! ```

pub mod attached;
mod capture;
mod cyclonedx;
pub mod debian_copyright;
mod document;
pub mod parse;
pub mod purl;
mod spdx_json;

pub use capture::{
    Capture, Findings, MAX_COPYRIGHT_FILE_BYTES, MAX_COPYRIGHT_IMAGE_BYTES, MAX_FILE_BYTES,
    MAX_IMAGE_BYTES,
};
pub use document::{ImageRecord, Sbom, rfc3339};

/// The document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// SPDX 2.3 JSON.
    #[default]
    Spdx,
    /// CycloneDX 1.6 JSON.
    CycloneDx,
}

impl Format {
    /// The names `--sbom-format` takes.
    pub const NAMES: [&'static str; 2] = ["spdx", "cyclonedx"];

    /// The file name suffix: `spdx.json` or `cdx.json`.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Spdx => "spdx.json",
            Format::CycloneDx => "cdx.json",
        }
    }

    /// The document's path in the root filesystem when none is given: `sbom.spdx.json`, where
    /// LinuxKit writes its own, or `sbom.cdx.json`.
    pub fn default_path(self) -> String {
        format!("sbom.{}", self.suffix())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spdx" | "spdx-json" => Ok(Format::Spdx),
            "cyclonedx" | "cyclonedx-json" | "cdx" => Ok(Format::CycloneDx),
            _ => Err(format!(
                "unknown SBOM format `{s}`; give one of {}",
                Format::NAMES.join(", ")
            )),
        }
    }
}

/// What a build's SBOM is and where assembly puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The document format.
    pub format: Format,
    /// Its path in the root filesystem, relative to the root (`sbom.spdx.json`).
    pub path: String,
    /// Its creation time, in seconds since the epoch (SOURCE_DATE_EPOCH, 0 without one, the
    /// current time with `--sbom-current-time`).
    pub created: u64,
    /// The build's name.
    pub name: String,
    /// Where the findings of images are kept between builds, for images whose entries a
    /// build does not stream because an output reuses them from its cache (none: no cache).
    pub cache_dir: Option<std::path::PathBuf>,
}

/// Where a store keeps the findings of images between builds (see [`Settings::cache_dir`]).
pub fn findings_dir(store_root: &std::path::Path) -> std::path::PathBuf {
    store_root.join("sbom-findings")
}

/// The document of `sbom` in `format`, created at `created` (seconds since the epoch).
pub fn render(sbom: &Sbom, format: Format, created: u64) -> Vec<u8> {
    let tool = "kiln";
    let version = env!("CARGO_PKG_VERSION");
    match format {
        Format::Spdx => spdx_json::render(sbom, rfc3339(created), &format!("{tool}-{version}")),
        Format::CycloneDx => cyclonedx::render(sbom, rfc3339(created), tool, version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Ecosystem, Package};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn sample() -> Sbom {
        let mut c = Capture::default();
        c.add("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n".to_vec());
        c.add(
            "lib/apk/db/installed",
            b"P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\n\nP:odd\nV:1\nL:custom license\n".to_vec(),
        );
        let mut sbom = Sbom::new("demo");
        let attached = vec![
            Package {
                ecosystem: Ecosystem::Attached,
                name: "musl".into(),
                version: "1.2.4-r2".into(),
                arch: None,
                source: None,
                license: Some("MIT".into()),
                purl: Some("pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64".into()),
            },
            Package {
                ecosystem: Ecosystem::Attached,
                name: "left-pad".into(),
                version: "1.3.0".into(),
                arch: None,
                source: None,
                license: None,
                purl: Some("pkg:npm/left-pad@1.3.0".into()),
            },
        ];
        sbom.add(
            "docker.io/x/a:1",
            "sha256:aa",
            "init[0]",
            c.finish(),
            attached,
        );
        sbom.add(
            "docker.io/x/a:1",
            "sha256:aa",
            "services[0]",
            Findings::default(),
            Vec::new(),
        );
        sbom
    }

    #[test]
    fn spdx_lists_images_packages_and_merges_attached_ones() {
        let doc: serde_json::Value =
            serde_json::from_slice(&render(&sample(), Format::Spdx, 0)).expect("json");
        let names: Vec<&str> = doc["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        // system, one image (used twice), the OS, musl once (attached and found), odd, left-pad.
        assert_eq!(
            names,
            [
                "demo",
                "docker.io/x/a:1",
                "alpine",
                "musl",
                "odd",
                "left-pad"
            ],
            "{doc:#}"
        );
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["extractedText"],
            "custom license"
        );
        let contains = doc["relationships"]
            .as_array()
            .expect("relationships")
            .iter()
            .filter(|r| r["relationshipType"] == "CONTAINS")
            .count();
        assert_eq!(contains, 1 + 1 + 3);
    }

    #[test]
    fn documents_are_deterministic_and_content_addressed() {
        let a = render(&sample(), Format::CycloneDx, 5);
        assert_eq!(a, render(&sample(), Format::CycloneDx, 5));
        let mut other = sample();
        other.name = "other".into();
        let serial = |d: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(d).expect("json")["serialNumber"]
                .as_str()
                .map(String::from)
        };
        assert_ne!(
            serial(&a),
            serial(&render(&other, Format::CycloneDx, 5)),
            "the serial number follows the content"
        );
        assert_eq!(serial(&a), serial(&render(&sample(), Format::CycloneDx, 9)));
    }

    /// An SBOM of one Debian image whose package `pkg` has the copyright file `copyright`, and
    /// `plain` one in the format with a license of SPDX identifiers only.
    fn debian(copyright: &[u8]) -> Sbom {
        let mut c = Capture::default();
        c.add("etc/os-release", b"ID=debian\nVERSION_ID=12\n".to_vec());
        c.add("usr/share/doc/pkg/copyright", copyright.to_vec());
        c.add(
            "usr/share/doc/plain/copyright",
            b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+ or Artistic, and Expat\n".to_vec(),
        );
        c.add(
            "var/lib/dpkg/status",
            b"Package: pkg\nStatus: install ok installed\nVersion: 1\n\nPackage: plain\nStatus: install ok installed\nVersion: 2\n".to_vec(),
        );
        let mut sbom = Sbom::new("demo");
        sbom.add(
            "docker.io/x/d:1",
            "sha256:dd",
            "init[0]",
            c.finish(),
            Vec::new(),
        );
        sbom
    }

    /// The SPDX document of `sbom` is valid as far as licenses go: every declared license a
    /// strict SPDX expression whose `LicenseRef-`s the document defines. Returns the declared
    /// licenses by package name.
    fn spdx_licenses(sbom: &Sbom) -> std::collections::BTreeMap<String, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(&render(sbom, Format::Spdx, 0)).expect("json");
        let defined: BTreeSet<&str> = doc["hasExtractedLicensingInfos"]
            .as_array()
            .map(|a| a.iter().filter_map(|l| l["licenseId"].as_str()).collect())
            .unwrap_or_default();
        for l in doc["hasExtractedLicensingInfos"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                !l["extractedText"].as_str().unwrap_or_default().is_empty(),
                "{l}"
            );
        }
        let mut out = std::collections::BTreeMap::new();
        for p in doc["packages"].as_array().expect("packages") {
            let declared = p["licenseDeclared"].as_str().expect("licenseDeclared");
            if declared != "NOASSERTION" {
                let e = spdx::Expression::parse(declared)
                    .unwrap_or_else(|err| panic!("{declared}: {err}"));
                for r in e.requirements() {
                    if let spdx::LicenseItem::Other(other) = &r.req.license {
                        assert!(other.doc_ref.is_none(), "{declared}");
                        let id = format!("LicenseRef-{}", other.lic_ref);
                        assert!(defined.contains(id.as_str()), "{id} undefined in {doc:#}");
                    }
                }
            }
            out.insert(
                p["name"].as_str().unwrap_or_default().to_string(),
                declared.to_string(),
            );
        }
        out
    }

    /// The CycloneDX licenses of `sbom`'s packages: an expression only of SPDX identifiers, or
    /// a name.
    fn cyclonedx_licenses(sbom: &Sbom) -> std::collections::BTreeMap<String, serde_json::Value> {
        let doc: serde_json::Value =
            serde_json::from_slice(&render(sbom, Format::CycloneDx, 0)).expect("json");
        let mut out = std::collections::BTreeMap::new();
        for c in doc["components"].as_array().expect("components") {
            let Some(licenses) = c.get("licenses") else {
                continue;
            };
            let licenses = licenses.as_array().expect("array");
            assert_eq!(licenses.len(), 1, "{c}");
            if let Some(e) = licenses[0]["expression"].as_str() {
                let parsed = spdx::Expression::parse(e).expect("expression");
                assert!(
                    parsed.requirements().all(|r| r.req.license.id().is_some()),
                    "{e}"
                );
            } else {
                assert!(licenses[0]["license"]["name"].is_string(), "{c}");
            }
            out.insert(
                c["name"].as_str().unwrap_or_default().to_string(),
                licenses[0].clone(),
            );
        }
        out
    }

    #[test]
    fn debian_licenses_reach_both_formats() {
        let sbom = debian(
            b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: BSD-3-clause\n\nFiles: doc/*\nLicense: public-domain\n Nobody owns these.\n",
        );
        let spdx = spdx_licenses(&sbom);
        assert_eq!(
            spdx["plain"],
            "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND MIT"
        );
        assert!(
            spdx["pkg"].starts_with("BSD-3-Clause AND LicenseRef-public-domain-"),
            "{}",
            spdx["pkg"]
        );
        let cdx = cyclonedx_licenses(&sbom);
        assert_eq!(
            cdx["plain"],
            serde_json::json!({"expression": "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND MIT"})
        );
        assert_eq!(
            cdx["pkg"],
            serde_json::json!({"license": {"name": "BSD-3-Clause AND public-domain"}})
        );
    }

    proptest! {
        #[test]
        fn any_copyright_file_gives_valid_documents(lines in proptest::collection::vec(
            "(License|Files)?:? ?(GPL-2\\+|Expat|or|and|with|exception|Font|,|\\(|\\)|AND|WITH|LicenseRef-x|é|[A-Za-z0-9.+:-]{0,8}| ){0,6}",
            0..24)) {
            let mut file = String::from(
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n",
            );
            file.push_str(&lines.join("\n"));
            let sbom = debian(file.as_bytes());
            spdx_licenses(&sbom);
            cyclonedx_licenses(&sbom);
        }
    }
}
