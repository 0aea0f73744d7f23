//! Debian copyright files (`/usr/share/doc/PACKAGE/copyright`), as kiln build's SBOM reads them
//! from images: the parser must never panic, a package's license must be the file's licenses
//! combined, and the documents made of it must stay valid: every SPDX `licenseDeclared` a
//! strict SPDX expression whose `LicenseRef-`s the document defines, every CycloneDX
//! `expression` made of SPDX identifiers only.
#![no_main]

use kiln_sbom::debian_copyright::{MAX_LICENSES, licenses, package_license};
use kiln_sbom::{Capture, Format, Sbom};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] =
    b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n";

fn check(data: &[u8]) {
    let all = licenses(data);
    assert!(all.len() <= MAX_LICENSES);
    assert!(all.iter().all(|l| !l.is_empty()));
    let license = package_license(data);
    assert_eq!(license.is_some(), !all.is_empty());

    let mut capture = Capture::default();
    capture.add("etc/os-release", b"ID=debian\nVERSION_ID=12\n".to_vec());
    capture.add("usr/share/doc/p/copyright", data.to_vec());
    capture.add(
        "var/lib/dpkg/status",
        b"Package: p\nStatus: install ok installed\nVersion: 1\n".to_vec(),
    );
    let findings = capture.finish();
    assert_eq!(findings.packages[0].license, license);
    let mut sbom = Sbom::new("fuzz");
    let digest = format!("sha256:{}", "0".repeat(64));
    sbom.add("docker.io/x/p:1", &digest, "init[0]", findings, Vec::new());

    let spdx: serde_json::Value =
        serde_json::from_slice(&kiln_sbom::render(&sbom, Format::Spdx, 0)).expect("SPDX JSON");
    let defined: Vec<&str> = spdx["hasExtractedLicensingInfos"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["licenseId"].as_str()).collect())
        .unwrap_or_default();
    for p in spdx["packages"].as_array().expect("packages") {
        let declared = p["licenseDeclared"].as_str().expect("licenseDeclared");
        if declared == "NOASSERTION" {
            continue;
        }
        let expr = spdx::Expression::parse(declared).expect("a strict SPDX expression");
        for req in expr.requirements() {
            if let spdx::LicenseItem::Other(other) = &req.req.license {
                let id = format!("LicenseRef-{}", other.lic_ref);
                assert!(other.doc_ref.is_none() && defined.contains(&id.as_str()));
            }
        }
    }

    let cdx: serde_json::Value =
        serde_json::from_slice(&kiln_sbom::render(&sbom, Format::CycloneDx, 0)).expect("JSON");
    for c in cdx["components"].as_array().expect("components") {
        if let Some(e) = c["licenses"][0]["expression"].as_str() {
            let expr = spdx::Expression::parse(e).expect("a strict SPDX expression");
            assert!(expr.requirements().all(|r| r.req.license.id().is_some()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // And as the body of a file in the format, which random input seldom starts with.
    let mut file = HEADER.to_vec();
    file.extend_from_slice(data);
    check(&file);
});
