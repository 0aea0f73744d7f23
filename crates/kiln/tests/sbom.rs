//! The SBOM of `kiln build`: on by default, in the root filesystem of every output and beside
//! the outputs, deterministic, valid for the official checkers (pyspdxtools for SPDX 2.3,
//! cyclonedx-python-lib's strict validator for CycloneDX 1.6), listing the Debian packages of
//! examples/redis-os.yml's images (and the licenses of Debian packages' copyright files, on
//! debian:bookworm's) and merging the SBOM a publisher attached to an image, from an imported
//! OCI layout and from a registry.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `kiln build ARGS... --cache CACHE --dir DIR MANIFEST`, with SOURCE_DATE_EPOCH as given.
fn build(cache: &Path, manifest: &Path, dir: &Path, args: &[&str], epoch: Option<&str>) -> String {
    let mut cmd = kiln();
    cmd.arg("build")
        .args(args)
        .arg("--cache")
        .arg(cache)
        .arg("--dir")
        .arg(dir)
        .arg(manifest)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e);
    }
    run_ok(&mut cmd)
}

/// The file at `path` in the tar at `tar`.
fn tar_member(tar: &Path, path: &str) -> Option<Vec<u8>> {
    let (_, contents) = listing(&std::fs::read(tar).expect("tar"));
    contents.get(path).cloned()
}

/// The file at `path` in the gzip-compressed cpio initrd at `initrd`.
fn initrd_member(initrd: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat '{}' | cpio -i --quiet --to-stdout '{path}'",
            initrd.display()
        ))
        .output()
        .expect("zcat | cpio");
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// pyspdxtools (spdx-tools from PyPI) accepts the SPDX document at `doc`.
fn assert_spdx_valid(python: &Path, doc: &Path) {
    let tool = python.with_file_name("pyspdxtools");
    let out = Command::new(&tool)
        .arg("-i")
        .arg(doc)
        .output()
        .expect("pyspdxtools");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.to_lowercase().contains("invalid"),
        "pyspdxtools refuses {}:\n{text}",
        doc.display()
    );
}

/// cyclonedx-python-lib's strict JSON validator accepts the document at `doc` as CycloneDX 1.6.
fn assert_cyclonedx_valid(python: &Path, doc: &Path) {
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
        if errors:\n    print(errors)\n    sys.exit(1)\n\
        print('valid')\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(doc)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "CycloneDX 1.6 validation of {} failed:\n{}{}",
        doc.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(data: &[u8]) -> serde_json::Value {
    serde_json::from_slice(data).expect("SBOM is JSON")
}

/// The purls of the SPDX document's packages.
fn spdx_purls(doc: &serde_json::Value) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["referenceType"] == "purl")
        .filter_map(|r| r["referenceLocator"].as_str().map(String::from))
        .collect()
}

/// The SPDXID of the package named `name`.
fn spdx_id(doc: &serde_json::Value, name: &str) -> String {
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"))["SPDXID"]
        .as_str()
        .expect("SPDXID")
        .to_string()
}

/// Whether `from` CONTAINS `to` in the SPDX document.
fn contains(doc: &serde_json::Value, from: &str, to: &str) -> bool {
    doc["relationships"]
        .as_array()
        .expect("relationships")
        .iter()
        .any(|r| {
            r["spdxElementId"] == from
                && r["relationshipType"] == "CONTAINS"
                && r["relatedSpdxElement"] == to
        })
}

#[test]
fn redis_os_sbom_lists_its_debian_packages_everywhere_and_deterministically() {
    let Some(python) = checker_python() else {
        return;
    };
    let cache = shared_store();
    build_init();
    let manifest = repo_root().join("examples/redis-os.yml");
    let tmp = tempfile::tempdir().expect("tmp");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let formats = ["-f", "tar,kernel+initrd", "--name", "redis-os"];
    let printed = build(&cache, &manifest, &one, &formats, None);
    build(&cache, &manifest, &two, &formats, None);

    // Beside the outputs, and named among the outputs kiln prints.
    let beside = one.join("redis-os-sbom.spdx.json");
    assert!(printed.lines().any(|l| Path::new(l) == beside), "{printed}");
    let doc_bytes = std::fs::read(&beside).expect("SBOM beside the outputs");
    assert_spdx_valid(&python, &beside);

    // In the root filesystem of every output, where LinuxKit puts its own: the same bytes.
    assert_eq!(
        tar_member(&one.join("redis-os.tar"), "sbom.spdx.json").as_deref(),
        Some(doc_bytes.as_slice()),
        "the tar's sbom.spdx.json differs from the one beside it"
    );
    assert_eq!(
        initrd_member(&one.join("redis-os-initrd.img"), "sbom.spdx.json"),
        doc_bytes,
        "the initrd's sbom.spdx.json differs from the one beside it"
    );

    // Deterministic: a second build gives the same bytes; the time is SOURCE_DATE_EPOCH's.
    assert_eq!(
        std::fs::read(two.join("redis-os-sbom.spdx.json")).expect("second SBOM"),
        doc_bytes,
        "two builds gave different SBOMs"
    );
    let doc = json(&doc_bytes);
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    let dated = tmp.path().join("dated");
    build(
        &cache,
        &manifest,
        &dated,
        &["-f", "kernel+initrd", "--name", "redis-os"],
        Some("1700000000"),
    );
    let dated_doc = json(&std::fs::read(dated.join("redis-os-sbom.spdx.json")).expect("dated"));
    assert_eq!(dated_doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        dated_doc["documentNamespace"], doc["documentNamespace"],
        "the namespace follows the content, not the time"
    );

    // Every image by reference and digest; the Debian packages of the redis image in it.
    let images: Vec<&serde_json::Value> = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .collect();
    for pkg in [
        "kernel", "init", "sysctl", "dhcp", "format", "mount", "getty", "redis",
    ] {
        assert!(
            images.iter().any(|i| i["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("docker.io/kiln/{pkg}:")))
                && i["versionInfo"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("sha256:"))),
            "image kiln/{pkg} not listed by reference and digest"
        );
    }
    let purls = spdx_purls(&doc);
    let redis_server = purls
        .iter()
        .find(|p| p.starts_with("pkg:deb/debian/redis-server@"))
        .unwrap_or_else(|| panic!("no redis-server in {purls:#?}"));
    assert!(
        redis_server.contains("arch=amd64") && redis_server.contains("distro=debian-12"),
        "{redis_server}"
    );
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:deb/debian/libc6@")),
        "{purls:#?}"
    );
    let redis_image = images
        .iter()
        .find(|i| {
            i["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("docker.io/kiln/redis:"))
        })
        .expect("redis image");
    let image_id = redis_image["SPDXID"].as_str().expect("id");
    assert!(
        contains(&doc, image_id, &spdx_id(&doc, "redis-server")),
        "the redis image does not CONTAIN redis-server"
    );

    // Licenses come from each package's Debian copyright file, which pkg/redis carries beside
    // each dpkg record: redis-server's says BSD-3-clause (with BSD-2-clause and MIT parts).
    assert_eq!(
        declared(&doc, "redis-server"),
        "BSD-3-Clause AND BSD-2-Clause AND MIT"
    );
    assert_eq!(
        declared(&doc, "libssl3"),
        "Apache-2.0 AND (Artistic-1.0-Perl OR GPL-1.0-or-later)"
    );
    // glibc's copyright file is not in the machine-readable format.
    assert_eq!(declared(&doc, "libc6"), "NOASSERTION");
}

/// The licenseDeclared of the package named `name`.
fn declared(doc: &serde_json::Value, name: &str) -> String {
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no package {name}"))["licenseDeclared"]
        .as_str()
        .expect("licenseDeclared")
        .to_string()
}

/// The extracted licensing info the SPDX document defines for `id`.
fn extracted(doc: &serde_json::Value, id: &str) -> serde_json::Value {
    doc["hasExtractedLicensingInfos"]
        .as_array()
        .expect("hasExtractedLicensingInfos")
        .iter()
        .find(|l| l["licenseId"] == id)
        .unwrap_or_else(|| panic!("{id} is not defined"))
        .clone()
}

#[test]
fn debian_packages_carry_the_licenses_of_their_copyright_files() {
    let Some(python) = checker_python() else {
        return;
    };
    // debian:bookworm (debootstrap's minbase) keeps /usr/share/doc: ~90 real copyright files,
    // most of them in the machine-readable format.
    let cache = shared_store();
    let tmp = tempfile::tempdir().expect("tmp");
    let manifest = tmp.path().join("debian.yml");
    std::fs::write(
        &manifest,
        "onboot:\n  - name: base\n    image: debian:bookworm\n",
    )
    .expect("manifest");
    let spdx_dir = tmp.path().join("spdx");
    build(
        &cache,
        &manifest,
        &spdx_dir,
        &["-f", "tar", "--name", "deb"],
        None,
    );
    let spdx_path = spdx_dir.join("deb-sbom.spdx.json");
    assert_spdx_valid(&python, &spdx_path);
    let doc = json(&std::fs::read(&spdx_path).expect("SBOM"));

    // Exact SPDX identifiers where Debian's names have them.
    assert_eq!(declared(&doc, "zlib1g"), "Zlib");
    assert_eq!(
        declared(&doc, "libzstd1"),
        "(BSD-3-Clause OR GPL-2.0-only) AND Zlib AND MIT"
    );
    assert_eq!(
        declared(&doc, "libcap2"),
        "(BSD-3-Clause OR GPL-2.0-only) AND (BSD-3-Clause OR GPL-2.0-or-later)"
    );
    // A name with none is a LicenseRef of its own, defined with Debian's name.
    let tzdata = declared(&doc, "tzdata");
    assert!(tzdata.starts_with("LicenseRef-public-domain-"), "{tzdata}");
    assert_eq!(extracted(&doc, &tzdata)["extractedText"], "public-domain");
    // Not in the machine-readable format: no license.
    assert_eq!(declared(&doc, "libc6"), "NOASSERTION");
    let licensed = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .is_some_and(|l| l.starts_with("pkg:deb/"))
        })
        .filter(|p| p["licenseDeclared"] != "NOASSERTION")
        .count();
    eprintln!("{licensed} Debian packages with a license");
    assert!(licensed >= 50, "{licensed} Debian packages with a license");

    // CycloneDX: SPDX identifiers as an expression, anything else as a name.
    let cdx_dir = tmp.path().join("cdx");
    build(
        &cache,
        &manifest,
        &cdx_dir,
        &["-f", "tar", "--name", "deb", "--sbom-format", "cyclonedx"],
        None,
    );
    let cdx_path = cdx_dir.join("deb-sbom.cdx.json");
    assert_cyclonedx_valid(&python, &cdx_path);
    let cdx = json(&std::fs::read(&cdx_path).expect("cdx"));
    let licenses = |name: &str| {
        cdx["components"]
            .as_array()
            .expect("components")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no component {name}"))["licenses"]
            .clone()
    };
    assert_eq!(
        licenses("zlib1g"),
        serde_json::json!([{"expression": "Zlib"}])
    );
    assert_eq!(
        licenses("tzdata"),
        serde_json::json!([{"license": {"name": "public-domain"}}])
    );
    assert_eq!(licenses("libc6"), serde_json::Value::Null);
}

#[test]
fn cyclonedx_validates_and_no_sbom_writes_none() {
    let Some(python) = checker_python() else {
        return;
    };
    let cache = shared_store();
    build_init();
    let manifest = repo_root().join("examples/redis-os.yml");
    let tmp = tempfile::tempdir().expect("tmp");

    let cdx = tmp.path().join("cdx");
    build(
        &cache,
        &manifest,
        &cdx,
        &["-f", "tar", "--name", "sys", "--sbom-format", "cyclonedx"],
        None,
    );
    let beside = cdx.join("sys-sbom.cdx.json");
    assert_cyclonedx_valid(&python, &beside);
    let bytes = std::fs::read(&beside).expect("cdx");
    assert_eq!(
        tar_member(&cdx.join("sys.tar"), "sbom.cdx.json").as_deref(),
        Some(bytes.as_slice())
    );
    let doc = json(&bytes);
    assert!(
        doc["serialNumber"]
            .as_str()
            .is_some_and(|s| s.starts_with("urn:uuid:")),
        "{}",
        doc["serialNumber"]
    );
    let components = doc["components"].as_array().expect("components");
    assert!(
        components.iter().any(|c| c["name"] == "redis-server"
            && c["purl"]
                .as_str()
                .is_some_and(|p| p.starts_with("pkg:deb/debian/redis-server@"))),
        "no redis-server component"
    );

    // --sbom-output moves it in the root filesystem.
    let moved = tmp.path().join("moved");
    build(
        &cache,
        &manifest,
        &moved,
        &[
            "-f",
            "tar",
            "--name",
            "sys",
            "--sbom-output",
            "etc/sbom.json",
        ],
        None,
    );
    let tar = moved.join("sys.tar");
    assert!(tar_member(&tar, "etc/sbom.json").is_some());
    assert!(tar_member(&tar, "sbom.spdx.json").is_none());

    // --no-sbom: none in the root filesystem, none beside.
    let none = tmp.path().join("none");
    let printed = build(
        &cache,
        &manifest,
        &none,
        &["-f", "tar", "--name", "sys", "--no-sbom"],
        None,
    );
    assert!(tar_member(&none.join("sys.tar"), "sbom.spdx.json").is_none());
    let beside: Vec<PathBuf> = std::fs::read_dir(&none)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("sbom"))
        .collect();
    assert!(beside.is_empty(), "--no-sbom wrote {beside:?}");
    assert!(!printed.contains("sbom"), "{printed}");
}

/// An Alpine-like image: os-release and an apk database (one package with a license that is no
/// SPDX expression), and a dpkg status a later layer deletes (a whiteout); its index carries
/// BuildKit's attestation manifest with an SPDX statement naming musl again and an npm package.
fn attested_layout(name: &str) -> Vec<u8> {
    let lower = raw_layer(&[
        Member::Dir("etc/"),
        Member::File("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n"),
        Member::Dir("lib/"),
        Member::Dir("lib/apk/"),
        Member::Dir("lib/apk/db/"),
        Member::File(
            "lib/apk/db/installed",
            b"P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\n\nP:oddity\nV:1-r0\nA:x86_64\nL:Custom Terms v2\n\n",
        ),
        Member::Dir("var/"),
        Member::Dir("var/lib/"),
        Member::Dir("var/lib/dpkg/"),
        Member::File(
            "var/lib/dpkg/status",
            b"Package: ghost\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n",
        ),
    ]);
    let upper = raw_layer(&[Member::File("var/lib/dpkg/.wh.status", b"")]);
    let layers = [lower, upper];
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()}})).expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": l.len()})).collect::<Vec<_>>(),
    })).expect("json");
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "pkg:docker/kiln-test/attested@1", "digest": {"sha256": &sha(&manifest)[7..]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "packages": [
            {"name": "musl", "SPDXID": "SPDXRef-a", "versionInfo": "1.2.4_git20230717-r4", "licenseDeclared": "MIT",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1"}]},
            {"name": "left-pad", "SPDXID": "SPDXRef-b", "versionInfo": "1.3.0", "licenseConcluded": "WTFPL",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": "pkg:npm/left-pad@1.3.0"}]}]}
    })).expect("json");
    let att_config = br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let attestation = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&att_config), "size": att_config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": sha(&statement), "size": statement.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}],
    })).expect("json");
    let image_index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&attestation), "size": attestation.len(), "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": sha(&manifest)}}]})).expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(&image_index), "size": image_index.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}]})).expect("json");
    let blobs: Vec<&[u8]> = vec![
        &layers[0],
        &layers[1],
        &config,
        &manifest,
        &statement,
        &att_config,
        &attestation,
        &image_index,
    ];
    layout_tar(&blobs, &index)
}

/// The SBOM of a system of the attested image lists its apk packages (not the deleted dpkg
/// one) and merges the attached ones, musl once.
fn check_attested(python: &Path, doc_path: &Path) {
    assert_spdx_valid(python, doc_path);
    let doc = json(&std::fs::read(doc_path).expect("sbom"));
    let purls = spdx_purls(&doc);
    let names: BTreeSet<&str> = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        !names.contains("ghost"),
        "a deleted dpkg status was read: {names:?}"
    );
    for want in [
        "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1",
        "pkg:npm/left-pad@1.3.0",
    ] {
        assert!(purls.contains(want), "{want} missing from {purls:#?}");
    }
    let musl = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["name"] == "musl")
        .count();
    assert_eq!(musl, 1, "musl, found and attached, is listed once");
    let image = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .expect("image")["SPDXID"]
        .as_str()
        .expect("id")
        .to_string();
    for p in ["musl", "busybox", "oddity", "left-pad"] {
        assert!(
            contains(&doc, &image, &spdx_id(&doc, p)),
            "image CONTAINS {p}"
        );
    }
    let licensed = |name: &str| {
        doc["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == name)
            .expect("package")["licenseDeclared"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(licensed("busybox"), "GPL-2.0-only");
    assert_eq!(licensed("left-pad"), "WTFPL");
    assert!(licensed("oddity").starts_with("LicenseRef-"));
}

#[test]
fn a_publishers_attached_sbom_is_merged_from_the_store_and_from_a_registry() {
    let Some(python) = checker_python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = tmp.path().join("attested.tar");
    std::fs::write(&layout, attested_layout("kiln-test/attested:1")).expect("layout");

    // Imported into the store.
    let cache = tmp.path().join("cache");
    run_ok(
        kiln()
            .args(["cache", "import"])
            .arg(&layout)
            .arg("--cache")
            .arg(&cache),
    );
    let manifest = tmp.path().join("attested.yml");
    std::fs::write(
        &manifest,
        "onboot:\n  - name: attested\n    image: kiln-test/attested:1\n",
    )
    .expect("manifest");
    let out = tmp.path().join("out");
    build(
        &cache,
        &manifest,
        &out,
        &["-f", "tar", "--name", "sys"],
        None,
    );
    check_attested(&python, &out.join("sys-sbom.spdx.json"));

    // Pushed to a registry by skopeo (every manifest of the index, digests kept as BuildKit
    // pushes them: the attestation names the platform manifest's digest), pulled by kiln.
    if !tools_present(&["docker-registry", "skopeo"]) {
        return;
    }
    let registry = start_registry_in(tempfile::tempdir().expect("registry dir"), "");
    let remote = format!("{}/kiln-test/attested:1", registry.addr);
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci-archive:{}", layout.display()))
            .arg(format!("docker://{remote}")),
    );
    let fresh = tmp.path().join("fresh");
    let pulled = tmp.path().join("pulled.yml");
    std::fs::write(
        &pulled,
        format!("onboot:\n  - name: attested\n    image: {remote}\n"),
    )
    .expect("manifest");
    let out = tmp.path().join("out-pulled");
    build(&fresh, &pulled, &out, &["-f", "tar", "--name", "sys"], None);
    check_attested(&python, &out.join("sys-sbom.spdx.json"));
}
