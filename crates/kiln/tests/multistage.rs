//! The multi-stage example (examples/hello-c: a C program compiled in a build-essential stage,
//! copied into an empty one) builds with kiln, unpacks as an OCI bundle and runs under Debian's
//! runc; rebuilding with nothing changed reuses every step, and so does a forced `pkg build`.

mod common;

use common::{kiln, repo_root, run_ok, shared_store};
use std::process::Command;

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn multistage_example_runs_under_runc() {
    let cache = shared_store();
    let example = repo_root().join("examples/hello-c");
    let build = || {
        let mut c = kiln();
        c.args(["image", "build", "-t", "kiln/hello-c", "--cache"])
            .arg(&cache)
            .arg(&example);
        c
    };
    stderr_of(&mut build());
    let again = stderr_of(&mut build());
    assert!(
        again.contains("(0 steps run, 5 cached)"),
        "the rebuild ran steps again:\n{again}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    run_ok(
        kiln()
            .args(["image", "unpack", "kiln/hello-c", "--cache"])
            .arg(&cache)
            .arg(&bundle),
    );
    let id = format!("kiln-test-{}", std::process::id());
    let out = run_ok(
        Command::new("runc")
            .arg("run")
            .arg("-b")
            .arg(&bundle)
            .arg(&id),
    );
    assert_eq!(out.trim(), "Hello from a kiln multi-stage build!");
}

#[test]
fn forced_package_rebuild_reuses_every_step() {
    let cache = shared_store();
    let pkg = repo_root().join("pkg/busybox");
    let mut first = kiln();
    first
        .args(["pkg", "build", "--cache"])
        .arg(&cache)
        .arg(&pkg);
    stderr_of(&mut first);
    let mut again = kiln();
    again
        .args(["pkg", "build", "--force", "--cache"])
        .arg(&cache)
        .arg(&pkg);
    let out = stderr_of(&mut again);
    assert!(out.contains("(0 steps run, 3 cached)"), "{out}");
    let tag = run_ok(kiln().args(["pkg", "show-tag"]).arg(&pkg));
    assert!(tag.trim().starts_with("kiln/busybox:"), "{tag}");
}
