//! `build --input-tar`: a tar build reuses the files of an earlier tar build for the images
//! whose reference, digest and position are unchanged, and the output equals a build from
//! scratch, byte for byte.

mod common;
use common::Member::{Dir, File};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Import an image named `name` with one layer holding `files` (path, content).
fn image(tmp: &Path, cache: &Path, name: &str, files: &[(&str, &str)]) -> String {
    let mut members = vec![Dir("etc/"), Dir("usr/"), Dir("usr/share/")];
    members.extend(files.iter().map(|(p, c)| File(p, c.as_bytes())));
    let layer = raw_layer(&members);
    let archive = tmp.join(format!("{}.oci.tar", name.replace(['/', ':'], "_")));
    std::fs::write(&archive, oci_archive(name, std::slice::from_ref(&layer))).expect("archive");
    run_ok(
        kiln()
            .args(["cache", "import"])
            .arg(&archive)
            .arg("--cache")
            .arg(cache),
    );
    sha(&layer)
}

fn manifest(tmp: &Path, name: &str, web: &str) -> PathBuf {
    let text = format!(
        "init:\n  - docker.io/local/base:1\n\
         volumes:\n  - name: data\n    image: docker.io/local/vol:1\n\
         onboot:\n  - name: one\n    image: docker.io/local/one:1\n\
         services:\n  - name: web\n    image: {web}\n    binds:\n      - data:/data\n\
         \x20 - name: db\n    image: docker.io/local/db:1\n\
         files:\n  - path: etc/linuxkit.yml\n    metadata: yaml\n\
         \x20 - path: etc/motd\n    contents: \"hello\\n\"\n"
    );
    let path = tmp.join(name);
    std::fs::write(&path, text).expect("manifest");
    path
}

fn build(cache: &Path, manifest: &Path, out: &Path, input: Option<&Path>) -> Output {
    let mut cmd = kiln();
    cmd.args(["build", "--format", "tar", "-o"])
        .arg(out)
        .arg("--cache")
        .arg(cache)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(input) = input {
        cmd.arg("--input-tar").arg(input);
    }
    cmd.arg(manifest).output().expect("kiln")
}

fn build_ok(cache: &Path, manifest: &Path, out: &Path, input: Option<&Path>) -> Vec<u8> {
    let o = build(cache, manifest, out, input);
    assert!(
        o.status.success(),
        "build of {} failed: {}",
        manifest.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).expect("output")
}

/// The origin records (source, location) of the entry at `path` in a tar.
fn records(tar_bytes: &[u8], path: &str) -> Vec<(String, String)> {
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            != path
        {
            continue;
        }
        return e
            .pax_extensions()
            .expect("pax")
            .map(|x| {
                x.flatten()
                    .map(|r| {
                        let v = String::from_utf8_lossy(r.value_bytes()).to_string();
                        (r.key().expect("key").to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
    }
    panic!("no `{path}` in the tar");
}

#[test]
fn a_second_build_reuses_unchanged_images_and_equals_a_build_from_scratch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let cache = t.join("cache");
    let unchanged = [
        ("docker.io/local/base:1", "etc/base"),
        ("docker.io/local/vol:1", "usr/share/vol"),
        ("docker.io/local/one:1", "etc/one"),
        ("docker.io/local/db:1", "etc/db"),
    ]
    .map(|(name, file)| image(t, &cache, name, &[(file, "unchanged\n")]));
    image(
        t,
        &cache,
        "docker.io/local/web:1",
        &[("etc/web", "web one\n")],
    );
    image(
        t,
        &cache,
        "docker.io/local/web:2",
        &[("etc/web", "web two, longer\n")],
    );

    let m1 = manifest(t, "first.yml", "docker.io/local/web:1");
    let m2 = manifest(t, "second.yml", "docker.io/local/web:2");
    let first = build_ok(&cache, &m1, &t.join("first.tar"), None);
    let scratch = build_ok(&cache, &m2, &t.join("scratch.tar"), None);
    assert_ne!(first, scratch);

    // Every entry names its origin, as LinuxKit's tars do, and kiln adds the image's digest.
    let r = records(&first, "containers/services/db/lower/etc/db");
    let get = |r: &[(String, String)], k: &str| {
        r.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {r:?}"))
    };
    assert_eq!(get(&r, "LINUXKIT.source"), "docker.io/local/db:1");
    assert_eq!(get(&r, "LINUXKIT.location"), "services[1]");
    assert!(get(&r, "kiln.digest").starts_with("sha256:"));
    let r = records(&first, "etc/base");
    assert_eq!(get(&r, "LINUXKIT.location"), "init[0]");
    let r = records(&first, "etc/motd");
    assert_eq!(get(&r, "LINUXKIT.source"), "linuxkit.files");
    assert_eq!(get(&r, "LINUXKIT.location"), "files[1]");

    // Spoil the layers of the unchanged images in the store (the store checks that layers
    // are present, and verifies their digests as it reads them): a build from the store
    // cannot make these images any more, only the earlier tar holds their files.
    for layer in &unchanged {
        let blob = cache
            .join("blobs/sha256")
            .join(layer.trim_start_matches("sha256:"));
        let mut spoiled = std::fs::read(&blob).expect("layer");
        spoiled.fill(0x5a);
        std::fs::remove_file(&blob).expect("remove layer");
        std::fs::write(&blob, spoiled).expect("spoil layer");
    }
    let reused = build_ok(
        &cache,
        &m2,
        &t.join("reused.tar"),
        Some(&t.join("first.tar")),
    );
    assert!(
        reused == scratch,
        "the build reusing first.tar differs from the build from scratch"
    );

    // The output may replace the input tar.
    let same = t.join("same.tar");
    std::fs::copy(t.join("first.tar"), &same).expect("copy");
    let replaced = build_ok(&cache, &m2, &same, Some(&same));
    assert!(replaced == scratch, "building over the input tar differs");
    // And once more from the tar it wrote itself: everything is reused.
    let again = build_ok(&cache, &m2, &same, Some(&same));
    assert!(again == scratch, "a build reusing every image differs");
    // Last (a failed read of a spoiled blob may take it out of the store): the layers were
    // indeed unusable.
    let without = build(&cache, &m2, &t.join("nope.tar"), None);
    assert!(
        !without.status.success(),
        "a build from the store succeeded with spoiled layers"
    );
}

/// The five images of the manifest in `t`'s store, the manifest, and its tar build:
/// (store, manifest, tar bytes).
fn first_build(t: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let cache = t.join("cache");
    for (name, file, text) in [
        ("docker.io/local/base:1", "etc/base", "base\n"),
        ("docker.io/local/vol:1", "usr/share/vol", "v\n"),
        ("docker.io/local/one:1", "etc/one", "one\n"),
        ("docker.io/local/db:1", "etc/db", "db\n"),
        ("docker.io/local/web:1", "etc/web", "web one\n"),
    ] {
        image(t, &cache, name, &[(file, text)]);
    }
    let m = manifest(t, "m.yml", "docker.io/local/web:1");
    let first = build_ok(&cache, &m, &t.join("first.tar"), None);
    (cache, m, first)
}

#[test]
fn a_moved_tag_is_not_reused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let (cache, m, first) = first_build(t);
    // The same tag now names other content: the earlier files are stale.
    image(
        t,
        &cache,
        "docker.io/local/db:1",
        &[("etc/db", "db, new\n")],
    );
    let scratch = build_ok(&cache, &m, &t.join("scratch.tar"), None);
    assert_ne!(first, scratch);
    let reused = build_ok(
        &cache,
        &m,
        &t.join("reused.tar"),
        Some(&t.join("first.tar")),
    );
    assert!(reused == scratch, "stale files of a moved tag were reused");
    let (_, contents) = listing(&reused);
    assert_eq!(
        contents["containers/services/db/lower/etc/db"],
        b"db, new\n"
    );
}

#[test]
fn a_damaged_input_tar_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path();
    let (cache, m, first) = first_build(t);
    let cut = t.join("cut.tar");
    std::fs::write(&cut, &first[..first.len() / 2]).expect("cut");
    let out = t.join("out.tar");
    let o = build(&cache, &m, &out, Some(&cut));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a truncated input tar was accepted");
    assert!(
        stderr.contains("cut.tar")
            && stderr.contains("--input-tar")
            && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed build left its output");
    let o = build(&cache, &m, &out, Some(&t.join("absent.tar")));
    assert!(!o.status.success(), "an absent input tar was accepted");
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent.tar"));
}
