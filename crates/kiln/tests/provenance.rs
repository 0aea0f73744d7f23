//! SLSA provenance: `kiln pkg build --push --sign --key` attaches signed provenance to the
//! image in a real registry (cosign's `.att` tag), `kiln verify --provenance` checks it (and
//! refuses a tampered one, another key's, and one naming another digest); `kiln build` writes
//! NAME.provenance.json naming its outputs with their true digests, the same bytes every time.

mod common;
use common::*;
use kiln_oci::{Digest, Reference, Store};
use kiln_trust::provenance::attach;
use std::path::Path;
use std::process::{Command, Output};

const PASSWORD: &str = "provenance-test";

fn kiln_with(cache: &Path) -> Command {
    let mut cmd = kiln();
    cmd.env("COSIGN_PASSWORD", PASSWORD)
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("--cache")
        .arg(cache);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn kiln")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn generate_key(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let prefix = dir.join(name);
    run_ok(
        kiln()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(["key", "generate", "--output-key-prefix"])
            .arg(&prefix),
    );
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// A package built FROM a small image in the store: `FROM base`, `COPY`.
fn package(dir: &Path, base: &str) -> std::path::PathBuf {
    let pkg = dir.join("hello");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(pkg.join("build.yml"), "image: hello\n").expect("build.yml");
    std::fs::write(
        pkg.join("Dockerfile"),
        format!("FROM {base}\nARG GREETING=hi\nCOPY hello.txt /hello.txt\n"),
    )
    .expect("Dockerfile");
    std::fs::write(pkg.join("hello.txt"), "hello\n").expect("file");
    pkg
}

#[test]
fn pkg_build_push_sign_then_verify_provenance() {
    if !tools_present(&["docker-registry"]) || !is_root() {
        return;
    }
    let reg = start_registry_in(tempfile::tempdir().expect("tmp"), "");
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let base_layer = raw_layer(&[Member::Dir("etc/"), Member::File("etc/base", b"base\n")]);
    let archive = tmp.path().join("base.tar");
    std::fs::write(&archive, oci_archive("kiln-test/base:1", &[base_layer])).expect("archive");
    run_ok(kiln_with(&cache).args(["cache", "import"]).arg(&archive));
    let base_digest = digest_of(&cache, "docker.io/kiln-test/base:1");

    let (key, public) = generate_key(tmp.path(), "signer");
    let (other_key, other_public) = generate_key(tmp.path(), "other");
    let pkg = package(tmp.path(), "kiln-test/base:1");
    let org = format!("{}/kiln-test", reg.addr);
    let out = run_ok(
        kiln_with(&cache)
            .args([
                "pkg",
                "build",
                "--content-hash",
                "--push",
                "--sign",
                "--key",
            ])
            .arg(&key)
            .args(["--org", &org, "--build-arg-file"])
            .arg({
                let f = tmp.path().join("args");
                std::fs::write(&f, "GREETING=hello\n").expect("args");
                f
            })
            .arg(&pkg),
    );
    let image = out.trim().to_string();
    assert!(image.starts_with(&org), "{out}");
    let digest = digest_of(&cache, &image);

    // The registry holds the attestation where cosign puts it.
    let repo = "kiln-test/hello";
    let att_tag = format!("sha256-{}.att", digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/{repo}/manifests/{att_tag}", reg.addr))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .map(|b| serde_json::from_slice(&b).expect("json"))
        .expect("the .att manifest is in the registry");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["annotations"]["predicateType"],
        "https://slsa.dev/provenance/v1"
    );

    // Signature and provenance verify from a fresh store (both fetched from the registry).
    let fresh = tmp.path().join("fresh");
    run_ok(
        kiln_with(&fresh)
            .args(["verify", &image, "--key"])
            .arg(&public),
    );
    let verified = run_ok(
        kiln_with(&fresh)
            .args(["verify", &image, "--provenance", "--key"])
            .arg(&public),
    );
    assert!(verified.contains("verified provenance of"), "{verified}");
    assert!(verified.contains("builder: "), "{verified}");
    assert!(
        verified.contains(&format!("kiln-test/base:1 {base_digest}")),
        "the base image is a resolved dependency: {verified}"
    );
    // Offline, from what the fresh store now holds.
    let pinned = format!("{}@{digest}", Reference::name(&image.parse().expect("ref")));
    run_ok(
        kiln_with(&fresh)
            .args(["verify", &pinned, "--provenance", "--offline", "--key"])
            .arg(&public),
    );

    // The statement itself: subject, parameters, dependencies.
    let store = Store::open(&fresh).expect("store");
    let r: Reference = image.parse().expect("ref");
    let d: Digest = digest.parse().expect("digest");
    let atts = attach::read(&store, &r, &d).expect("read");
    assert_eq!(atts.len(), 1);
    let statement: serde_json::Value =
        serde_json::from_slice(&atts[0].envelope.payload().expect("payload")).expect("json");
    assert_eq!(statement["subject"][0]["name"], r.name());
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .expect("hex")
        ),
        digest
    );
    let ext = &statement["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(ext["buildArgs"]["GREETING"], "hello", "{ext}");
    assert_eq!(ext["dockerfile"]["name"], "Dockerfile");
    assert_eq!(
        ext["dockerfile"]["digest"]["sha256"],
        sha(&std::fs::read(pkg.join("Dockerfile")).expect("read")).trim_start_matches("sha256:")
    );

    // Provenance signed by another key than the one given: refused, naming the image (the
    // image itself carries that key's signature too, so that only the provenance fails).
    run_ok(
        kiln_with(&fresh)
            .args(["sign", &pinned, "--no-push", "--key"])
            .arg(&other_key),
    );
    let out = output(
        kiln_with(&fresh)
            .args(["verify", &pinned, "--provenance", "--offline", "--key"])
            .arg(&other_public),
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("does not verify") && msg.contains(&r.name()),
        "{msg}"
    );

    // A tampered envelope (payload changed, signature kept), in the registry: refused.
    let mut tampered = atts[0].clone();
    let payload = String::from_utf8(tampered.envelope.payload().expect("payload")).expect("utf-8");
    let changed = payload.replace("\"GREETING\":\"hello\"", "\"GREETING\":\"evil\"");
    assert_ne!(payload, changed);
    tampered.envelope.payload =
        kiln_trust::dsse::Envelope::unsigned("", changed.as_bytes()).payload;
    attach::write(&store, &r, &d, &[tampered]).expect("write");
    let registry = kiln_oci::registry::RegistryOptions::default();
    attach::push(&store, &r, &d, &registry).expect("push the tampered attestation");
    let fresher = tmp.path().join("fresher");
    let out = output(
        kiln_with(&fresher)
            .args(["verify", &image, "--provenance", "--key"])
            .arg(&public),
    );
    assert!(!out.status.success(), "a tampered envelope verified");
    let msg = text(&out);
    assert!(
        msg.contains("does not verify") && msg.contains(&r.name()),
        "{msg}"
    );

    // Signed by the right key but for another digest: refused, naming both.
    let signer = kiln_trust::keys::PrivateKey::load(&key, PASSWORD.as_bytes()).expect("key");
    let mut wrong: serde_json::Value = serde_json::from_str(&payload).expect("json");
    wrong["subject"][0]["digest"]["sha256"] = serde_json::Value::String("0".repeat(64));
    let env = kiln_trust::dsse::Envelope::sign(
        kiln_trust::dsse::IN_TOTO_PAYLOAD_TYPE,
        &serde_json::to_vec(&wrong).expect("json"),
        &signer,
    )
    .expect("sign");
    attach::attach(&store, &r, &d, env, "https://slsa.dev/provenance/v1").expect("attach");
    let out = output(
        kiln_with(&fresh)
            .args(["verify", &pinned, "--provenance", "--offline", "--key"])
            .arg(&public),
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(&"0".repeat(64)) && msg.contains(&digest),
        "{msg}"
    );

    // A signed image without provenance: a clear error naming it.
    run_ok(
        kiln_with(&cache)
            .args(["sign", "docker.io/kiln-test/base:1", "--no-push", "--key"])
            .arg(&key),
    );
    let out = output(
        kiln_with(&cache)
            .args([
                "verify",
                "docker.io/kiln-test/base:1",
                "--provenance",
                "--offline",
                "--key",
            ])
            .arg(&public),
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("kiln-test/base") && msg.contains("no provenance"),
        "{msg}"
    );
}

#[test]
fn build_provenance_names_outputs_and_is_deterministic() {
    let Some(conf) = conformance_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let case = conf.join("01-minimal");
    let mut bytes = Vec::new();
    for out in ["a", "b"] {
        let dir = tmp.path().join(out);
        run_ok(
            kiln_with(&cache)
                .current_dir(&case)
                .args([
                    "build",
                    "--format",
                    "kernel+initrd,tar",
                    "--name",
                    "sys",
                    "--dir",
                ])
                .arg(&dir)
                .arg("manifest.yml"),
        );
        let path = dir.join("sys.provenance.json");
        let data = std::fs::read(&path).expect("sys.provenance.json is written");
        let envelope: serde_json::Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
        assert_eq!(envelope["signatures"], serde_json::json!([]));
        let payload = kiln_trust::dsse::Envelope::from_json(&data)
            .expect("envelope")
            .payload()
            .expect("base64");
        let statement: serde_json::Value = serde_json::from_slice(&payload).expect("statement");
        assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
        let subjects = statement["subject"].as_array().expect("subjects");
        let names: Vec<&str> = subjects
            .iter()
            .map(|s| s["name"].as_str().expect("name"))
            .collect();
        for f in ["sys-cmdline", "sys-initrd.img", "sys-kernel", "sys.tar"] {
            assert!(names.contains(&f), "{f} is not a subject: {statement}");
        }
        assert!(!names.contains(&"sys.provenance.json"));
        for s in subjects {
            let name = s["name"].as_str().expect("name");
            let file = std::fs::read(dir.join(name)).expect(name);
            assert_eq!(
                format!("sha256:{}", s["digest"]["sha256"].as_str().expect("hex")),
                sha(&file),
                "{name}"
            );
        }
        let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .expect("deps");
        assert!(
            deps.iter().any(|d| d["name"] == "manifest:manifest.yml"),
            "{statement}"
        );
        assert!(
            deps.iter().any(|d| d["uri"].is_string()),
            "the images are dependencies: {statement}"
        );
        assert!(
            statement["predicate"]["runDetails"]
                .get("metadata")
                .is_none(),
            "no time without SOURCE_DATE_EPOCH"
        );
        bytes.push(data);
    }
    assert_eq!(bytes[0], bytes[1], "two builds gave different provenance");

    // Signed with --key: the envelope verifies with the public key.
    let (key, public) = generate_key(tmp.path(), "signer");
    let dir = tmp.path().join("signed");
    run_ok(
        kiln_with(&cache)
            .current_dir(&case)
            .args(["build", "--format", "tar", "--name", "sys", "--key"])
            .arg(&key)
            .arg("--dir")
            .arg(&dir)
            .arg("manifest.yml"),
    );
    let envelope = kiln_trust::dsse::Envelope::from_json(
        &std::fs::read(dir.join("sys.provenance.json")).expect("read"),
    )
    .expect("envelope");
    let public = kiln_trust::keys::PublicKey::load(&public).expect("public key");
    envelope
        .verify(&public)
        .expect("the signed provenance verifies");

    // --no-provenance writes none.
    let dir = tmp.path().join("none");
    run_ok(
        kiln_with(&cache)
            .current_dir(&case)
            .args([
                "build",
                "--format",
                "tar",
                "--name",
                "sys",
                "--no-provenance",
                "--dir",
            ])
            .arg(&dir)
            .arg("manifest.yml"),
    );
    assert!(!dir.join("sys.provenance.json").exists());
}
