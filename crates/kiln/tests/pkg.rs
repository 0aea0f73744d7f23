//! `kiln pkg build` with LinuxKit's build.yml: extra sources, a package built FROM another in
//! the same call (`@lkt:pkg:`), the config label, content tags that follow their inputs, and
//! located errors.

mod common;

use common::*;
use kiln_oci::{Reference, Store};
use std::fs;
use std::path::Path;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

#[test]
fn packages_depend_on_each_other_and_carry_their_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(&root.join("shared-src/lib.txt"), "shared source\n");
    write(
        &root.join("a/build.yml"),
        "image: a\norg: kiln-test\nextra-sources:\n  - ../shared-src:src\nconfig:\n  binds:\n    - /etc/resolv.conf:/etc/resolv.conf\n  capabilities:\n    - CAP_NET_ADMIN\n",
    );
    write(&root.join("a/a.txt"), "a\n");
    write(
        &root.join("a/Dockerfile"),
        "FROM scratch\nCOPY src/ /src/\nCOPY a.txt /\n",
    );
    write(
        &root.join("b/build.yml"),
        "image: b\norg: kiln-test\nbuildArgs:\n  - BASE=@lkt:pkg:../a\n",
    );
    write(&root.join("b/b.txt"), "b\n");
    write(
        &root.join("b/Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nCOPY b.txt /\n",
    );
    let cache = root.join("cache");
    let out = run_ok(
        kiln()
            .args(["pkg", "build", "--cache"])
            .arg(&cache)
            .arg(root.join("b")),
    );
    let refs: Vec<&str> = out.lines().collect();
    assert_eq!(refs.len(), 2, "{out}");
    assert!(
        refs[0].starts_with("kiln-test/a:") && refs[1].starts_with("kiln-test/b:"),
        "{out}"
    );
    let bundle = root.join("bundle");
    run_ok(
        kiln()
            .args(["image", "unpack", refs[1], "--cache"])
            .arg(&cache)
            .arg(&bundle),
    );
    for (file, text) in [
        ("src/lib.txt", "shared source\n"),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
    ] {
        assert_eq!(
            fs::read_to_string(bundle.join("rootfs").join(file)).expect(file),
            text
        );
    }
    let store = Store::open(&cache).expect("store");
    let a: Reference = refs[0].parse().expect("ref");
    let image = store.resolve(&a, "amd64").expect("a");
    let label =
        image.config.config.expect("config").labels.expect("labels")["org.mobyproject.config"]
            .clone();
    let v: serde_json::Value = serde_json::from_str(&label).expect("label json");
    assert_eq!(
        v["binds"][0], "/etc/resolv.conf:/etc/resolv.conf",
        "{label}"
    );
    assert_eq!(v["capabilities"][0], "CAP_NET_ADMIN", "{label}");
    // The bundle's config.json applies the label: the capability is granted.
    let config = fs::read_to_string(bundle.join("config.json")).expect("config.json");
    assert!(config.contains("CAP_NET_ADMIN"), "{config}");

    // Changing a (even only its extra source) changes both tags.
    let tag = |p: &str| {
        run_ok(kiln().args(["pkg", "show-tag"]).arg(root.join(p)))
            .trim()
            .to_string()
    };
    let (a1, b1) = (tag("a"), tag("b"));
    assert_eq!((a1.as_str(), b1.as_str()), (refs[0], refs[1]));
    write(&root.join("shared-src/lib.txt"), "changed\n");
    assert_ne!(tag("a"), a1);
    assert_ne!(tag("b"), b1);
}

#[test]
fn build_yml_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("p/build.yml"), "image: p\nnetwrok: true\n");
    write(&dir.path().join("p/Dockerfile"), "FROM scratch\n");
    let out = kiln()
        .args(["pkg", "show-tag"])
        .arg(dir.path().join("p"))
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("build.yml") && err.contains("netwrok"),
        "{err}"
    );
    write(
        &dir.path().join("p/build.yml"),
        "image: p\nconfig:\n  capabilties: [CAP_SYS_ADMIN]\n",
    );
    let out = kiln()
        .args(["pkg", "show-tag"])
        .arg(dir.path().join("p"))
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("capabilties"),
        "{err}"
    );
}
