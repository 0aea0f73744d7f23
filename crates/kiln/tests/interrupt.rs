//! Interrupted builds leave nothing behind: SIGINT or SIGTERM remove the partial output and
//! exit with 128 + the signal; what a `kill -9` leaves is removed by the next build in that
//! directory, while a concurrent build's partial output is left alone.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A manifest whose tar output is large (a 512 MiB sparse file read as a `files` source), so
/// that the build is still writing when the test interrupts it.
fn slow_manifest(dir: &Path) -> PathBuf {
    let big = dir.join("big.bin");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(512 << 20).expect("sparse file");
    let manifest = dir.join("slow.yml");
    std::fs::write(
        &manifest,
        "kernel:\n  image: kiln-test/kernel:6.6.0\n  cmdline: console=ttyS0\ninit:\n  - kiln-test/init:1\nfiles:\n  - path: big.bin\n    source: big.bin\n",
    )
    .expect("manifest");
    manifest
}

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default()
}

fn start_build(cache: &Path, manifest: &Path, out: &Path) -> Child {
    kiln()
        .args(["build", "-f", "tar", "--cache"])
        .arg(cache)
        .arg("--dir")
        .arg(out)
        .arg(manifest)
        .current_dir(manifest.parent().expect("the manifest's directory"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln")
}

/// Wait until the build has a partial output in `out`.
fn wait_for_partial(child: &mut Child, out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while partials(out).is_empty() {
        if child.try_wait().expect("wait").is_some() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).expect("stderr");
            }
            panic!("the build ended before it wrote anything:\n{stderr}");
        }
        assert!(Instant::now() < deadline, "no partial output appeared");
        std::thread::yield_now();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn interrupted_builds_leave_no_partial_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = fixture_store(dir.path());
    let manifest = slow_manifest(dir.path());
    let out = dir.path().join("out");

    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut build = start_build(&cache, &manifest, &out);
        wait_for_partial(&mut build, &out);
        signal(&build, sig);
        let status = build.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "kill {sig}");
        assert_eq!(partials(&out), Vec::<String>::new(), "after kill {sig}");
        assert!(!out.join("slow.tar").exists());
    }

    // kill -9 cannot be caught: the partial output stays until the next build there, which
    // removes it but leaves the partial output of a build still running.
    let mut killed = start_build(&cache, &manifest, &out);
    wait_for_partial(&mut killed, &out);
    signal(&killed, "-KILL");
    killed.wait().expect("wait");
    let left = partials(&out);
    assert_eq!(left.len(), 1, "{left:?}");

    let mut running = start_build(&cache, &manifest, &out);
    let deadline = Instant::now() + Duration::from_secs(60);
    while partials(&out).contains(&left[0]) || partials(&out).is_empty() {
        assert!(Instant::now() < deadline, "the second build wrote nothing");
        std::thread::yield_now();
    }
    let now = partials(&out);
    assert!(
        !now.contains(&left[0]),
        "the dead build's partial output stayed: {now:?}"
    );
    assert_eq!(now.len(), 1, "{now:?}");
    // A build of another output in the same directory while `running` writes: it must not
    // touch `running`'s partial output.
    let mut small = kiln();
    small
        .args(["build", "-f", "tar", "--cache"])
        .arg(&cache)
        .arg("--dir")
        .arg(&out)
        .arg("--name")
        .arg("tiny")
        .arg(
            conformance_dir()
                .expect("corpus")
                .join("01-minimal/manifest.yml"),
        );
    run_ok(&mut small);
    assert!(
        partials(&out).contains(&now[0]) || running.try_wait().expect("wait").is_some(),
        "a concurrent build removed a running build's partial output"
    );
    let status = running.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    assert!(out.join("slow.tar").is_file());
    assert_eq!(partials(&out), Vec::<String>::new());
}
