//! `kiln build` under an image policy (docs/policy.md), against a real registry (Debian's
//! docker-registry on 127.0.0.1) with images signed by `kiln sign`: signed images pass,
//! unsigned ones, ones signed by another key and ones carrying a signature copied from another
//! digest are refused with the image named; signatures fetched once verify offline; `reject`,
//! `insecureAcceptAnything`, the manifest's `trust:` section and `--print-policy`.
//!
//! In CI (CI=true) a missing docker-registry or curl fails the test; elsewhere it is skipped.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PASSWORD: &str = "policy-test";

/// A registry with small images in it, two key pairs, and a store and config directory of
/// the test's own.
struct Setup {
    reg: Registry,
    tmp: tempfile::TempDir,
    /// `REG/t`.
    repo: String,
}

impl Setup {
    fn new() -> Option<Setup> {
        if !tools_present(&["docker-registry", "curl"]) {
            return None;
        }
        let reg = start_registry_in(tempfile::tempdir().expect("tmp"), "");
        let tmp = tempfile::tempdir().expect("tmp");
        let repo = format!("{}/t", reg.addr);
        let s = Setup { reg, tmp, repo };
        std::fs::create_dir_all(s.path("config")).expect("config dir");
        for key in ["a", "b"] {
            run_ok(
                kiln()
                    .args(["key", "generate", "--output-key-prefix"])
                    .arg(s.path(key))
                    .env("COSIGN_PASSWORD", PASSWORD),
            );
        }
        Some(s)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Make a one-file image `REG/t/NAME`, push it from the publisher's store.
    fn push(&self, name: &str) -> String {
        let full = format!("{}/{name}", self.repo);
        let layer = raw_layer(&[Member::File("hello", full.as_bytes())]);
        let archive = self.path(&format!("{}.tar", name.replace([':', '/'], "-")));
        std::fs::write(&archive, oci_archive(&full, &[layer])).expect("archive");
        let publisher = self.path("publisher");
        run_ok(
            kiln()
                .args(["cache", "import"])
                .arg(&archive)
                .arg("--cache")
                .arg(&publisher),
        );
        run_ok(
            kiln()
                .args(["cache", "push", &full, "--cache"])
                .arg(&publisher),
        );
        full
    }

    /// `kiln sign IMAGE --key KEY.key`, from the publisher's store, pushed to the registry.
    fn sign(&self, image: &str, key: &str) {
        run_ok(
            kiln()
                .args(["sign", image, "--key"])
                .arg(self.path(&format!("{key}.key")))
                .arg("--cache")
                .arg(self.path("publisher"))
                .env("COSIGN_PASSWORD", PASSWORD),
        );
    }

    /// The digest the publisher's store names `image` with.
    fn digest(&self, image: &str) -> String {
        digest_of(&self.path("publisher"), image)
    }

    /// Copy the signature artifact of `from`'s digest to the tag of `to`'s digest (in
    /// repository `repo` of the registry), as an attacker replaying a signature would.
    fn copy_signature(&self, repo: &str, from: &str, to: &str) {
        let tag = |d: &str| d.replace(':', "-") + ".sig";
        let url = |t: &str| format!("http://{}/v2/t/{repo}/manifests/{t}", self.reg.addr);
        let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
        let manifest = self.path("sig-manifest.json");
        run_ok(
            Command::new("curl")
                .args(["-fsS", "-H", accept, "-o"])
                .arg(&manifest)
                .arg(url(&tag(from))),
        );
        run_ok(
            Command::new("curl")
                .args([
                    "-fsS",
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json",
                    "--data-binary",
                ])
                .arg(format!("@{}", manifest.display()))
                .arg(url(&tag(to))),
        );
    }

    /// Write `text` to the test directory as `name`.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `kiln build -f tar` of `manifest` with the store `store`, `$XDG_CONFIG_HOME` in the test
    /// directory and `extra` arguments.
    fn build(&self, store: &str, manifest: &Path, extra: &[&str]) -> Output {
        kiln()
            .args(["build", "--format", "tar", "-o"])
            .arg(self.path("out.tar"))
            .arg("--cache")
            .arg(self.path(store))
            .args(extra)
            .arg(manifest)
            .env("XDG_CONFIG_HOME", self.path("config"))
            .output()
            .expect("kiln build")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A manifest whose `init` holds `images`.
fn init_manifest(images: &[&str]) -> String {
    let mut m = String::from("init:\n");
    for i in images {
        m.push_str(&format!("  - {i}\n"));
    }
    m
}

#[test]
fn signed_by_policy_accepts_signed_images_and_refuses_the_rest() {
    let Some(s) = Setup::new() else { return };
    let signed = s.push("app:1");
    let unsigned = s.push("unsigned:1");
    let other_key = s.push("other:1");
    let replayed = s.push("app:2");
    s.sign(&signed, "a");
    s.sign(&other_key, "b");
    // app:2 carries app:1's signature, copied to app:2's signature tag.
    s.copy_signature("app", &s.digest(&signed), &s.digest(&replayed));
    let policy = s.write(
        "policy.json",
        &format!(
            r#"{{"default": [{{"type": "reject"}}],
 "transports": {{"docker": {{"{}": [{{"type": "signedBy", "keyPath": "a.pub"}}]}}}}}}"#,
            s.repo
        ),
    );
    let policy_arg = policy.to_str().expect("utf-8");

    // A fresh store: the image and its signature come from the registry.
    let good = s.write("good.yml", &init_manifest(&[&signed]));
    let out = s.build("store", &good, &["--policy", policy_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.path("out.tar").is_file());

    // Every refused image is reported, with the rule and what to do.
    let bad = s.write(
        "bad.yml",
        &format!(
            "init:\n  - {signed}\nonboot:\n  - name: unsigned\n    image: {unsigned}\nservices:\n  - name: other\n    image: {other_key}\n  - name: replayed\n    image: {replayed}\n"
        ),
    );
    let out = s.build("store", &bad, &["--policy", policy_arg]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "an unsigned image was accepted:\n{err}"
    );
    assert!(err.contains("refuses 3 of the build's 4 images"), "{err}");
    for (image, at) in [
        (&unsigned, "bad.yml:5:12 onboot[0].image"),
        (&other_key, "bad.yml:8:12 services[0].image"),
        (&replayed, "bad.yml:10:12 services[1].image"),
    ] {
        assert!(
            err.contains(&format!("\n{image} (sha256:")),
            "{image} not named:\n{err}"
        );
        assert!(err.contains(at), "{at} not named:\n{err}");
    }
    assert!(!err.contains(&format!("\n{signed} (")), "{err}");
    assert!(
        err.contains(&format!("rule: {} requires signedBy", s.repo)),
        "{err}"
    );
    assert!(err.contains(policy_arg), "{err}");
    assert!(err.contains("help: sign it with `kiln sign"), "{err}");
    // What was found instead is said, for each.
    let section = |image: &str| {
        let start = err.find(&format!("\n{image} (")).expect("named");
        let rest = &err[start + 1..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    assert!(
        section(&unsigned).contains("not signed"),
        "{}",
        section(&unsigned)
    );
    assert!(
        section(&other_key).contains("none by"),
        "{}",
        section(&other_key)
    );
    let replayed_why = section(&replayed);
    assert!(
        replayed_why.contains(&s.digest(&signed)),
        "the replayed signature's digest is not named:\n{replayed_why}"
    );

    // Offline: the registry is gone, the store holds the image and its signature.
    drop(s.reg);
    let out = kiln()
        .args(["build", "--format", "tar", "-o"])
        .arg(s.tmp.path().join("offline.tar"))
        .arg("--cache")
        .arg(s.tmp.path().join("store"))
        .args(["--policy", policy_arg])
        .arg(&good)
        .env("XDG_CONFIG_HOME", s.tmp.path().join("config"))
        .output()
        .expect("kiln build");
    assert!(out.status.success(), "offline: {}", stderr(&out));
}

#[test]
fn reject_accept_anything_default_location_and_malformed_policies() {
    let Some(s) = Setup::new() else { return };
    let open = s.push("open:1");
    let closed = s.push("closed:1");
    // The default location, $XDG_CONFIG_HOME/kiln/policy.json, in YAML-free JSON.
    std::fs::create_dir_all(s.path("config/kiln")).expect("dir");
    let default_policy = s.path("config/kiln/policy.json");
    std::fs::write(
        &default_policy,
        format!(
            r#"{{"default": [{{"type": "reject"}}], "transports": {{"docker": {{"{open}": [{{"type": "insecureAcceptAnything"}}]}}}}}}"#
        ),
    )
    .expect("policy");
    let m = s.write("open.yml", &init_manifest(&[&open]));
    let out = s.build("store", &m, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = s.write("closed.yml", &init_manifest(&[&open, &closed]));
    let out = s.build("store", &m, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("\n{closed} (sha256:")), "{err}");
    assert!(err.contains("rule: default requires reject"), "{err}");
    assert!(err.contains(&default_policy.display().to_string()), "{err}");

    // --policy overrides the default location; YAML when named .yml.
    let yaml = s.write("p.yml", "default:\n  - type: insecureAcceptAnything\n");
    let out = s.build("store", &m, &["--policy", yaml.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A malformed policy is an error naming file and field, never an implicit accept.
    for (text, expected) in [
        (
            r#"{"default": [{"type": "insecureAcceptAnythin"}]}"#,
            "bad.json:1:23: default[0].type: unknown requirement type",
        ),
        (r#"{"transports": {}}"#, "the policy has no `default`"),
    ] {
        let bad = s.write("bad.json", text);
        let out = s.build("store", &m, &["--policy", bad.to_str().expect("utf-8")]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{text} accepted");
        assert!(err.contains(expected), "{err}");
    }
    let out = s.build(
        "store",
        &m,
        &["--policy", s.path("missing.json").to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read the policy file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn manifest_trust_requires_signatures() {
    let Some(s) = Setup::new() else { return };
    let signed = s.push("lib/signed:1");
    let unsigned = s.push("lib/unsigned:1");
    let elsewhere = s.push("free:1");
    s.sign(&signed, "a");
    // No policy file: the manifest alone asks for signatures, by its own keys (relative to
    // the manifest).
    std::fs::create_dir_all(s.path("m/keys")).expect("dir");
    std::fs::copy(s.path("a.pub"), s.path("m/keys/a.pub")).expect("key");
    let trust = format!(
        "trust:\n  org:\n    - {}/lib\n  keys: [keys/a.pub]\n",
        s.repo
    );
    let m = s.path("m/ok.yml");
    std::fs::write(&m, init_manifest(&[&signed, &elsewhere]) + &trust).expect("manifest");
    let out = s.build("store", &m, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let m = s.path("m/bad.yml");
    std::fs::write(&m, init_manifest(&[&signed, &unsigned]) + &trust).expect("manifest");
    let out = s.build("store", &m, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("\n{unsigned} (sha256:")), "{err}");
    assert!(err.contains("bad.yml:6:7 trust.org[0]"), "{err}");

    // `image:` without keys takes the policy's signedBy rule; a policy accepting the image
    // unsigned does not satisfy it.
    let m = s.path("m/image.yml");
    std::fs::write(
        &m,
        init_manifest(&[&signed, &elsewhere]) + &format!("trust:\n  image:\n    - {elsewhere}\n"),
    )
    .expect("manifest");
    let open = s.write(
        "open.json",
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    );
    let out = s.build("store", &m, &["--policy", open.to_str().expect("utf-8")]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("\n{elsewhere} (sha256:")), "{err}");
    assert!(err.contains("gives no key"), "{err}");

    // An unknown key in trust: is located.
    let m = s.path("m/typo.yml");
    std::fs::write(
        &m,
        init_manifest(&[&signed]) + "trust:\n  image: [x]\n  key: [k]\n",
    )
    .expect("manifest");
    let out = s.build("store", &m, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("typo.yml:5:3: trust.key: unknown key `key`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn print_policy_shows_the_rule_of_each_image_and_stops() {
    let Some(s) = Setup::new() else { return };
    let signed = s.push("app:1");
    let open = s.push("open:1");
    let policy = s.write(
        "policy.json",
        &format!(
            r#"{{"default": [{{"type": "reject"}}],
 "transports": {{"docker": {{
  "{}": [{{"type": "signedBy", "keyPath": "a.pub"}}],
  "{open}": [{{"type": "insecureAcceptAnything"}}]}}}}}}"#,
            s.repo
        ),
    );
    let m = s.write(
        "m.yml",
        &(init_manifest(&[&signed, &open]) + "trust:\n  image:\n    - " + &signed + "\n"),
    );
    let _ = std::fs::remove_file(s.path("out.tar"));
    let out = s.build(
        "store",
        &m,
        &[
            "--print-policy",
            "--policy",
            policy.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!s.path("out.tar").exists(), "--print-policy built");
    let block = |image: &str| {
        let start = text
            .find(&format!("\n{image}\n"))
            .unwrap_or_else(|| panic!("{image} missing:\n{text}"));
        let rest = &text[start + 1..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    let b = block(&signed);
    assert!(
        b.contains(&format!(
            "digest    {}",
            digest_of(&s.path("store"), &signed)
        )),
        "{b}"
    );
    assert!(b.contains(&format!("scope     {} (", s.repo)), "{b}");
    assert!(b.contains("policy.json:3:3"), "{b}");
    assert!(
        b.contains(&format!("requires  signedBy {}", s.path("a.pub").display())),
        "{b}"
    );
    assert!(
        b.contains("trust     ") && b.contains("m.yml:6:7 trust.image[0]"),
        "{b}"
    );
    assert!(
        b.contains("named at  ") && b.contains("m.yml:2:5 init[0]"),
        "{b}"
    );
    let b = block(&open);
    assert!(b.contains(&format!("scope     {open} (")), "{b}");
    assert!(b.contains("requires  insecureAcceptAnything"), "{b}");
    assert!(
        text.starts_with(&format!("policy: {}", policy.display())),
        "{text}"
    );
}

/// The boot loader image of boot media is checked like the manifest's images: a build of an
/// ISO with an unsigned `--bootloader` under a signedBy policy stops, naming it, before it
/// reads anything from it; `--print-policy` lists it.
#[test]
fn boot_loader_image_of_boot_media_is_checked_too() {
    let Some(s) = Setup::new() else { return };
    let signed = s.push("app:1");
    s.sign(&signed, "a");
    let loader = s.push("loader:1");
    let policy = s.write(
        "policy.json",
        &format!(
            r#"{{"default": [{{"type": "reject"}}],
 "transports": {{"docker": {{"{}": [{{"type": "signedBy", "keyPath": "a.pub"}}]}}}}}}"#,
            s.repo
        ),
    );
    let m = s.write("boot.yml", &init_manifest(&[&signed]));
    let iso = |extra: &[&str]| {
        kiln()
            .args(["build", "--format", "iso-bios", "--dir"])
            .arg(s.path("iso-out"))
            .arg("--cache")
            .arg(s.path("store"))
            .args(["--bootloader", &loader, "--policy"])
            .arg(&policy)
            .args(extra)
            .arg(&m)
            .output()
            .expect("kiln build")
    };
    let listed = iso(&["--print-policy"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains(&format!("\n{loader}\n")), "{text}");
    assert!(text.contains("named at  --bootloader"), "{text}");
    let refused = iso(&[]);
    assert!(
        !refused.status.success(),
        "an unsigned boot loader image was used"
    );
    let err = stderr(&refused);
    assert!(
        err.contains(&loader) && err.contains("--bootloader"),
        "{err}"
    );
    assert!(err.contains("refuses 1 of the build's 2 images"), "{err}");
    assert!(
        !s.path("iso-out").exists()
            || std::fs::read_dir(s.path("iso-out"))
                .expect("dir")
                .next()
                .is_none()
    );
}
