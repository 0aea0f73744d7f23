//! The README's main command, `bash scripts/quickstart.sh`, run as a script would run it (no
//! terminal): it builds examples/minimal.yml, boots it, sees the greeting and powers off, in
//! under 200 lines of output. What RUN steps print (pages of apt output) is not among them but
//! in the step logs under the store's build/logs/.
//!
//! The store is a fresh one holding the kernel and getty packages (taken from the shared test
//! store, where they are built once), so quickstart imports the base image and builds the busybox
//! package (a RUN apt-get step), init and dhcp; the kiln under test is used instead of a release
//! build (`KILN`).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.expect("read_dir entry").path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn quickstart_builds_and_boots_minimal_quietly() {
    if !is_root() {
        eprintln!(
            "skipping: quickstart builds packages and installs manual pages, which needs root"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let shared = shared_store();
    // `kiln pkg build` names what it built or found, dependencies (busybox) included.
    let names: Vec<String> = build_packages(&shared, &["kernel", "getty"])
        .into_iter()
        .filter(|n| n.starts_with("kiln/kernel:") || n.starts_with("kiln/getty:"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let archive = dir.path().join("seed.tar");
    run_ok(
        kiln()
            .args(["cache", "export", "--cache"])
            .arg(&shared)
            .arg("--output")
            .arg(&archive)
            .args(&names),
    );
    run_ok(
        kiln()
            .args(["cache", "import", "--cache"])
            .arg(&store)
            .arg(&archive),
    );

    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["1200", "bash", "-c", "exec bash scripts/quickstart.sh 2>&1"])
        .current_dir(repo_root())
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_CACHE", &store)
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("spawn bash scripts/quickstart.sh");
    let seconds = started.elapsed().as_secs_f64();
    let output = String::from_utf8_lossy(&out.stdout);
    let lines = output.lines().count();
    eprintln!("{output}\nquickstart: {lines} lines of output in {seconds:.1} s");
    assert!(out.status.success(), "exit {:?}:\n{output}", out.status);
    assert!(lines < 200, "{lines} lines of output:\n{output}");
    assert!(
        output.contains("built-in shell"),
        "no shell banner:\n{output}"
    );
    assert!(
        output.contains("kiln says 42 from kiln"),
        "no greeting from the guest:\n{output}"
    );

    // The busybox package was built here: its RUN step's apt output is in a log, not shown.
    let logs = files_under(&store.join("build").join("logs"));
    assert!(
        !logs.is_empty(),
        "no RUN step logs under {}",
        store.display()
    );
    let texts: Vec<String> = logs
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).expect("read log")).into_owned())
        .collect();
    assert!(
        texts.iter().any(|t| !t.is_empty()),
        "every RUN step log is empty: {logs:?}"
    );
    let apt = "Setting up busybox-static";
    assert!(
        texts.iter().any(|t| t.contains(apt)),
        "no log holds the busybox package's apt-get output ({apt:?}): {logs:?}"
    );
    assert!(
        !output.contains(apt),
        "RUN output is shown instead of only logged:\n{output}"
    );
}
