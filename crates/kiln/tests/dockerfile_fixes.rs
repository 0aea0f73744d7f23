//! Which Dockerfile and which ignore file `kiln image build` takes, as BuildKit chooses them:
//! `<Dockerfile>.dockerignore` beside a Dockerfile given with `-f` wins over the context's
//! `.dockerignore`, and a context without `Dockerfile` falls back to a lowercase `dockerfile`.
//! The expected results are what Docker 20.10's BuildKit gives for the same contexts.

mod common;

use common::{kiln, run_ok, shared_store};
use std::fs;
use std::path::{Path, PathBuf};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write");
    }
}

/// Build `context` (with `-f file` when given) as `tag`, unpack it and return its root.
fn build_and_unpack(
    cache: &Path,
    context: &Path,
    file: Option<&Path>,
    tag: &str,
    out: &Path,
) -> PathBuf {
    let mut cmd = kiln();
    cmd.args(["image", "build", "-t", tag, "--cache"])
        .arg(cache);
    if let Some(f) = file {
        cmd.arg("-f").arg(f);
    }
    run_ok(cmd.arg(context));
    let bundle = out.join(tag.replace([':', '/'], "-"));
    run_ok(
        kiln()
            .args(["image", "unpack", tag])
            .arg(&bundle)
            .arg("--cache")
            .arg(cache),
    );
    bundle.join("rootfs")
}

/// The names under `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn dockerignore_beside_a_dockerfile_given_with_f() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    let copy_all = "FROM debian:bookworm\nCOPY . /ctx/\n";
    write(
        &ctx,
        &[
            ("a.txt", "a\n"),
            ("b.txt", "b\n"),
            ("c.txt", "c\n"),
            (".dockerignore", "a.txt\n"),
            ("sub/Other", copy_all),
            ("sub/Other.dockerignore", "c.txt\n"),
            ("sub/Plain", copy_all),
        ],
    );
    // sub/Other.dockerignore replaces the context's .dockerignore.
    let root = build_and_unpack(
        &cache,
        &ctx,
        Some(&ctx.join("sub/Other")),
        "kiln-fixes/ignore-beside:latest",
        dir.path(),
    );
    assert_eq!(
        names(&root.join("ctx")),
        [".dockerignore", "a.txt", "b.txt", "sub"]
    );
    assert_eq!(
        names(&root.join("ctx/sub")),
        ["Other", "Other.dockerignore", "Plain"]
    );
    // Without one beside it, the context's .dockerignore applies.
    let root = build_and_unpack(
        &cache,
        &ctx,
        Some(&ctx.join("sub/Plain")),
        "kiln-fixes/ignore-context:latest",
        dir.path(),
    );
    assert_eq!(
        names(&root.join("ctx")),
        [".dockerignore", "b.txt", "c.txt", "sub"]
    );
}

#[test]
fn lowercase_dockerfile_is_the_fallback() {
    let cache = shared_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    write(
        &ctx,
        &[
            ("a.txt", "a\n"),
            ("dockerfile", "FROM debian:bookworm\nCOPY a.txt /lower/\n"),
        ],
    );
    let root = build_and_unpack(
        &cache,
        &ctx,
        None,
        "kiln-fixes/lowercase:latest",
        dir.path(),
    );
    assert!(
        root.join("lower/a.txt").is_file(),
        "dockerfile was not used"
    );
    // With both, Dockerfile wins.
    write(
        &ctx,
        &[("Dockerfile", "FROM debian:bookworm\nCOPY a.txt /upper/\n")],
    );
    let root = build_and_unpack(&cache, &ctx, None, "kiln-fixes/both:latest", dir.path());
    assert!(
        root.join("upper/a.txt").is_file(),
        "Dockerfile was not used"
    );
    assert!(!root.join("lower").exists(), "dockerfile was used");
}
