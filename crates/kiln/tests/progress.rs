//! `--progress json`: every line kiln writes on standard error is one JSON object, the events
//! docs/progress.md documents come in order, and a RUN step's output is in the log file its
//! event names, not on standard error. A failing RUN step's error names its log and shows its
//! last lines. `kiln build` reports each output file with its size and real SHA-256. Plain
//! progress shows RUN output only with -v, keeping it in the logs either way.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The busybox package's image in the shared store (built there if missing).
fn busybox(cache: &Path) -> String {
    build_packages(cache, &["busybox"])
        .into_iter()
        .next()
        .expect("the busybox package's name")
}

/// Every line of `out`'s stderr as a JSON object with an `event` and a `time`.
fn events(out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"));
            assert!(v["event"].is_string(), "no event field: {line}");
            assert!(
                v["time"].as_f64().is_some_and(|t| t > 0.0),
                "no time: {line}"
            );
            v
        })
        .collect()
}

/// The names of `events`, in order.
fn names(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["event"].as_str()).collect()
}

/// The first event named `name` (with `line` when given).
fn find<'a>(events: &'a [Value], name: &str, line: Option<u64>) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name && line.is_none_or(|l| e["line"] == l))
        .unwrap_or_else(|| panic!("no {name} event (line {line:?}) in {events:#?}"))
}

/// `kiln image build --progress json --no-cache` of `dockerfile` in the shared store.
fn image_build(cache: &Path, dockerfile: &str) -> Output {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    kiln()
        .args(["image", "build", "--progress", "json", "--no-cache"])
        .args(["-t", "kiln-test/progress", "--cache"])
        .arg(cache)
        .arg(context.path())
        .output()
        .expect("spawn kiln image build")
}

fn log_of(event: &Value) -> PathBuf {
    PathBuf::from(
        event["log"]
            .as_str()
            .unwrap_or_else(|| panic!("no log in {event}")),
    )
}

#[test]
fn image_build_reports_json_events_and_keeps_run_output_in_logs() {
    let cache = shared_store();
    let base = busybox(&cache);
    // The output (out-42, err-43) differs from the instruction's text, which events carry.
    let out = image_build(
        &cache,
        &format!(
            "FROM {base}\nRUN echo out-$((6*7)); echo err-$((6*7+1)) >&2\nENV A=b\nCOPY --from={base} /bin/busybox /bb\n"
        ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the build failed:\n{stderr}");
    let ev = events(&out);
    assert_eq!(
        names(&ev),
        [
            "stage_started",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "image_built"
        ],
        "{stderr}"
    );
    assert_eq!(ev[0]["from"], base.as_str());
    assert_eq!(ev[0]["stage"], "stage-0");
    assert_eq!(ev[1]["line"], 2);
    assert!(
        ev[1]["instruction"]
            .as_str()
            .is_some_and(|i| i.starts_with("RUN echo out-")),
        "{}",
        ev[1]
    );
    let run = &ev[2];
    assert_eq!(run["line"], 2);
    assert_eq!(run["cached"], false);
    assert!(run["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{run}");
    let log = std::fs::read_to_string(log_of(run)).expect("the RUN step's log");
    assert!(log.contains("out-42") && log.contains("err-43"), "{log}");
    assert!(
        !stderr.contains("out-42") && !stderr.contains("err-43"),
        "RUN output on stderr:\n{stderr}"
    );
    // ENV and COPY steps have no log.
    assert!(ev[4].get("log").is_none() && ev[6].get("log").is_none());
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(ev[7]["digest"], digest.as_str());
    assert_eq!(ev[7]["steps_run"], 2);
}

#[test]
fn a_failing_run_step_names_its_log_and_shows_its_last_lines() {
    let cache = shared_store();
    let base = busybox(&cache);
    let out = image_build(
        &cache,
        &format!("FROM {base}\nRUN for i in $(seq 1 30); do echo line-$i; done; exit 3\n"),
    );
    assert!(!out.status.success(), "the build succeeded");
    let ev = events(&out);
    let failed = find(&ev, "step_failed", Some(2));
    let log = log_of(failed);
    let text = std::fs::read_to_string(&log).expect("the failed step's log");
    assert!(text.starts_with("line-1\n") && text.ends_with("line-30\n"));
    let error = find(&ev, "error", None)["message"]
        .as_str()
        .expect("error message")
        .to_string();
    assert!(error.contains(&log.display().to_string()), "{error}");
    assert!(error.contains("exited with"), "{error}");
    // The last 20 lines: 11 to 30.
    assert!(
        error.contains("line-11\n") && error.ends_with("line-30"),
        "{error}"
    );
    assert!(!error.contains("line-10\n"), "{error}");
    assert_eq!(failed["error"].as_str(), Some(error.as_str()));

    // Plain output shows the same error with the step's last lines; the step's output as it
    // runs only with -v.
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo plain-$((1+1)); exit 4\n"),
    )
    .expect("Dockerfile");
    for verbose in [false, true] {
        let out = plain_build(&cache, context.path(), verbose);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert_eq!(
            stderr.lines().any(|l| l == "plain-2"),
            verbose,
            "-v: {verbose}\n{stderr}"
        );
        assert!(
            stderr.contains("its output is in ") && stderr.contains("  | plain-2"),
            "{stderr}"
        );
    }
}

/// `kiln [-v] image build --progress plain --no-cache` of `context` in `cache`.
fn plain_build(cache: &Path, context: &Path, verbose: bool) -> Output {
    let mut cmd = kiln();
    if verbose {
        cmd.arg("-v");
    }
    cmd.args([
        "image",
        "build",
        "--progress",
        "plain",
        "--no-cache",
        "--cache",
    ])
    .arg(cache)
    .arg(context)
    .output()
    .expect("spawn kiln image build")
}

/// The RUN step logs of the store `cache` holding `marker`.
fn logs_holding(cache: &Path, marker: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let logs = cache.join("build/logs");
    for build in std::fs::read_dir(&logs)
        .expect("the store's build logs")
        .flatten()
    {
        for file in std::fs::read_dir(build.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            if text.contains(marker) {
                found.push(file.path());
            }
        }
    }
    found
}

#[test]
fn plain_progress_shows_run_output_only_with_v() {
    let cache = shared_store();
    let base = busybox(&cache);
    for verbose in [false, true] {
        // The marker as printed differs from the instruction's text, which plain output shows.
        let id = format!("{}-{verbose}", std::process::id());
        let marker = format!("plainmark-{id}-42");
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            context.path().join("Dockerfile"),
            format!("FROM {base}\nRUN echo plainmark-{id}-$((40+2))\n"),
        )
        .expect("Dockerfile");
        let out = plain_build(&cache, context.path(), verbose);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("[stage-0] RUN echo plainmark-"),
            "no step line:\n{stderr}"
        );
        assert_eq!(
            stderr.lines().any(|l| l == marker),
            verbose,
            "-v: {verbose}\n{stderr}"
        );
        let logs = logs_holding(&cache, &marker);
        assert_eq!(
            logs.len(),
            1,
            "-v: {verbose}: logs holding {marker}: {logs:?}"
        );
        assert!(
            logs[0].ends_with("stage-0-line2.log"),
            "{}",
            logs[0].display()
        );
    }
}

/// A package directory whose RUN step prints `pkgout-42` and writes a file.
fn package(root: &Path, base: &str) -> PathBuf {
    let dir = root.join("progress-pkg");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("build.yml"), "image: progress\norg: kiln-test\n").expect("build.yml");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nRUN echo pkgout-$((40+2)); echo made > /made.txt\n"),
    )
    .expect("Dockerfile");
    dir
}

#[test]
fn pkg_build_reports_json_events() {
    let cache = shared_store();
    let base = busybox(&cache);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = package(tmp.path(), &base);
    let out = kiln()
        .args([
            "pkg",
            "build",
            "--progress",
            "json",
            "--force",
            "--no-cache",
        ])
        .arg("--cache")
        .arg(&cache)
        .arg(&dir)
        .output()
        .expect("spawn kiln pkg build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ev = events(&out);
    assert_eq!(
        names(&ev),
        [
            "stage_started",
            "step_started",
            "step_finished",
            "package_built"
        ],
        "{stderr}"
    );
    let log = std::fs::read_to_string(log_of(&ev[2])).expect("log");
    assert!(log.contains("pkgout-42"), "{log}");
    assert!(!stderr.contains("pkgout-42"), "{stderr}");
    let built = &ev[3];
    let reference = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(built["reference"], reference.as_str());
    assert_eq!(built["built"], true);
    assert_eq!(built["steps_run"], 1);
    assert!(
        built["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{built}"
    );
}

#[test]
fn kiln_build_reports_outputs_with_their_digests() {
    let cache = shared_store();
    let base = busybox(&cache);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = package(tmp.path(), &base);
    let manifest = tmp.path().join("sys.yml");
    std::fs::write(
        &manifest,
        format!("init:\n  - \"@pkg:{}\"\n", dir.display()),
    )
    .expect("manifest");
    let out_dir = tmp.path().join("out");
    let out = kiln()
        .args(["build", "--progress", "json", "-f", "tar", "--name", "sys"])
        .arg("--dir")
        .arg(&out_dir)
        .arg("--cache")
        .arg(&cache)
        .arg(&manifest)
        .output()
        .expect("spawn kiln build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ev = events(&out);
    let names = names(&ev);
    let package = names
        .iter()
        .position(|n| *n == "package_built")
        .unwrap_or_else(|| panic!("no package_built: {stderr}"));
    let written = find(&ev, "output_written", None);
    assert!(names.iter().position(|n| *n == "output_written") > Some(package));
    let path = out_dir.join("sys.tar");
    assert_eq!(written["path"], path.display().to_string().as_str());
    let data = std::fs::read(&path).expect("sys.tar");
    assert_eq!(written["bytes"], data.len() as u64);
    assert_eq!(
        written["sha256"],
        hex::encode(Sha256::digest(&data)).as_str()
    );
}

/// `script` (util-linux) runs a command under a pseudo-terminal; None (with a message) when it
/// is missing, which fails in CI.
fn script() -> Option<&'static str> {
    let found = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "`script` (util-linux) is missing"
        );
        eprintln!("skipping: `script` (util-linux) is missing");
        return None;
    }
    Some("script")
}

#[test]
fn on_a_terminal_the_default_is_live_lines_redrawn_in_place() {
    let Some(script) = script() else { return };
    let cache = shared_store();
    let base = busybox(&cache);
    let id = std::process::id();
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {base}\nRUN echo ttymark-{id}-$((40+2))\n"),
    )
    .expect("Dockerfile");
    // No --progress: standard error is a terminal, so tty.
    let command = format!(
        "'{}' image build --no-cache --cache '{}' '{}'",
        env!("CARGO_BIN_EXE_kiln"),
        cache.display(),
        context.path().display()
    );
    let out = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("spawn script");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{text}");
    // The running step's line is drawn, then erased (cursor up, clear) when it finishes.
    assert!(
        text.contains(&format!("[stage-0] RUN echo ttymark-{id}-$((40+2)) 0.")),
        "no live line:\n{text:?}"
    );
    assert!(
        text.contains("\x1b[1A\r\x1b[J"),
        "nothing redrawn:\n{text:?}"
    );
    // The output shows, if at all, as the live line's last output line, never as its own line.
    let marker = format!("ttymark-{id}-42");
    assert!(
        !text.lines().any(|l| l.trim_end() == marker),
        "RUN output printed:\n{text:?}"
    );
    assert_eq!(logs_holding(&cache, &marker).len(), 1);
    // The finished step is printed once as a normal line in place of its live line, with its
    // time, and nothing is drawn below it any more.
    let built = text
        .find("built sha256:")
        .unwrap_or_else(|| panic!("no image built:\n{text:?}"));
    let finished = text[..built].trim_end_matches('\n');
    let finished = finished.rsplit('\n').next().unwrap_or(finished);
    let instruction = format!("[stage-0] RUN echo ttymark-{id}-$((40+2)) ");
    let time = finished
        .strip_prefix("\x1b[1A\r\x1b[J")
        .and_then(|l| l.strip_prefix(&instruction))
        .unwrap_or_else(|| panic!("no finished line before {built}:\n{text:?}"));
    assert!(
        time.strip_suffix('s')
            .is_some_and(|t| t.parse::<f64>().is_ok()),
        "{finished:?}"
    );
}
