//! Interrupted builds leave nothing behind: SIGINT or SIGTERM remove the partial output and
//! exit with 128 + the signal (the files a root image build makes first too); what a `kill -9` leaves is removed by the next build in that
//! directory, while a concurrent build's partial output is left alone. An image build
//! interrupted during a RUN step ends the step and removes its scratch space; after a `kill -9`
//! the step ends too, and `kiln cache clean` removes the scratch space left behind.

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
    start_build_of("tar", cache, manifest, out)
}

fn start_build_of(format: &str, cache: &Path, manifest: &Path, out: &Path) -> Child {
    kiln()
        .args(["build", "-f", format, "--cache"])
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
    let output = running.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.join("slow.tar").is_file());
    assert_eq!(partials(&out), Vec::<String>::new());
}

/// The files a root image build makes before its outputs (the captured kernel and initrd, the
/// image) are partial files too: SIGINT removes them.
#[test]
fn an_interrupted_root_image_build_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = fixture_store(dir.path());
    let manifest = slow_manifest(dir.path());
    let out = dir.path().join("out");
    let mut build = start_build_of("kernel+squashfs", &cache, &manifest, &out);
    wait_for_partial(&mut build, &out);
    signal(&build, "-INT");
    let status = build.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let left: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, Vec::<String>::new(), "left behind");
}

/// A store of the test's own holding busybox as `kiln-test/busybox`, so that `kiln cache
/// clean` there touches no other test's store.
fn busybox_store(dir: &Path, name: &str) -> PathBuf {
    let root = unpacked_busybox(name, &[]);
    let cache = dir.join("store");
    run_ok(
        kiln()
            .args(["image", "import"])
            .arg(&root)
            .arg("kiln-test/busybox")
            .arg("--cache")
            .arg(&cache),
    );
    cache
}

/// Start `kiln image build` of a Dockerfile whose RUN step sleeps, marked by `marker`.
fn start_sleeping_step(dir: &Path, cache: &Path, marker: &str) -> Child {
    let context = dir.join("context");
    std::fs::create_dir_all(&context).expect("context");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM kiln-test/busybox\nRUN sleep 1000; echo {marker}\n"),
    )
    .expect("Dockerfile");
    let log = std::fs::File::create(dir.join("build.log")).expect("log");
    kiln()
        .args(["image", "build", "--cache"])
        .arg(cache)
        .arg(&context)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn kiln")
}

/// The processes whose command line holds `marker`.
fn marked_processes(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(name);
        }
    }
    found
}

/// The build scratch directories in `cache`.
fn scratch_dirs(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("build/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// The mounts of this process's namespace under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).expect("canonical path");
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(&dir))
        })
        .map(str::to_string)
        .collect()
}

/// Wait until the RUN step marked `marker` runs.
fn wait_for_step(build: &mut Child, dir: &Path, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while marked_processes(marker).is_empty() {
        if build.try_wait().expect("wait").is_some() {
            let log = std::fs::read_to_string(dir.join("build.log")).unwrap_or_default();
            panic!("the build ended before its RUN step ran:\n{log}");
        }
        assert!(Instant::now() < deadline, "the RUN step did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until no process of the step is left.
fn assert_step_ends(marker: &str, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marked_processes(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the RUN step outlived kiln ({after}): {:?}",
            marked_processes(marker)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_during_a_run_step_ends_it_and_removes_its_scratch() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = busybox_store(dir.path(), "interrupt-term-busybox");
    let marker = format!("kiln-term-{}", std::process::id());
    let mut build = start_sleeping_step(dir.path(), &cache, &marker);
    wait_for_step(&mut build, dir.path(), &marker);
    assert_eq!(scratch_dirs(&cache).len(), 1);
    signal(&build, "-TERM");
    let status = build.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    assert_step_ends(&marker, "SIGTERM");
    assert_eq!(scratch_dirs(&cache), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&cache), Vec::<String>::new());
}

#[test]
fn kill_9_during_a_run_step_ends_it_and_cache_clean_removes_its_scratch() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = busybox_store(dir.path(), "interrupt-kill-busybox");
    let marker = format!("kiln-kill-{}", std::process::id());
    let mut build = start_sleeping_step(dir.path(), &cache, &marker);
    wait_for_step(&mut build, dir.path(), &marker);
    signal(&build, "-KILL");
    build.wait().expect("wait");
    assert_step_ends(&marker, "kill -9");
    assert_eq!(mounts_under(&cache), Vec::<String>::new());
    // Nothing ran kiln's clean-up: the scratch directory stays, its lock free.
    let left = scratch_dirs(&cache);
    assert_eq!(left.len(), 1, "{left:?}");
    let out = run_ok(kiln().args(["cache", "clean", "--cache"]).arg(&cache));
    assert!(
        out.contains("removed 1 scratch directories of killed builds"),
        "{out}"
    );
    assert_eq!(scratch_dirs(&cache), Vec::<PathBuf>::new());
    // The image the store held is still there.
    let names = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(names.contains("kiln-test/busybox"), "{names}");
}
