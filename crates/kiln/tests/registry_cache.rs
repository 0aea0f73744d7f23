//! The step cache shared through a real registry (Debian's docker-registry on 127.0.0.1):
//! `kiln image build --cache-to REF` on one machine (an empty store of its own), `--cache-from
//! REF` on another, and entries tampered with in the registry's storage refused.
//!
//! In CI (CI=true) a missing docker-registry fails the test; elsewhere it is skipped. RUN steps
//! need root.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const EPOCH: &str = "1700000000";

/// Every JSON line of a `--progress json` build's stderr.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// `kiln image build --progress json` of `ctx` in `store` with `extra` flags; panics with the
/// output when it fails.
fn build(store: &Path, ctx: &Path, busybox: &str, extra: &[&str]) -> (String, Vec<Value>, String) {
    let out = kiln()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "image",
            "build",
            "--progress",
            "json",
            "-t",
            "kiln-test/cached",
        ])
        .arg("--build-arg")
        .arg(format!("BUSYBOX={busybox}"))
        .args(extra)
        .arg("--cache")
        .arg(store)
        .arg(ctx)
        .output()
        .expect("spawn kiln image build");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the build failed:\n{stderr}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        events(&out),
        stderr,
    )
}

/// The `step_finished` events of RUN steps, as (line, cached).
fn run_steps(ev: &[Value]) -> Vec<(u64, bool)> {
    let run_lines: Vec<u64> = ev
        .iter()
        .filter(|e| {
            e["event"] == "step_started"
                && e["instruction"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("RUN "))
        })
        .filter_map(|e| e["line"].as_u64())
        .collect();
    ev.iter()
        .filter(|e| e["event"] == "step_finished")
        .filter_map(|e| Some((e["line"].as_u64()?, e["cached"].as_bool()?)))
        .filter(|(l, _)| run_lines.contains(l))
        .collect()
}

fn image_built(ev: &[Value]) -> &Value {
    ev.iter()
        .find(|e| e["event"] == "image_built")
        .expect("an image_built event")
}

/// The layer digests of the image manifest `digest` in `store`.
fn layers_of(store: &Path, digest: &str) -> Vec<String> {
    let hex = digest.trim_start_matches("sha256:");
    let m: Value = serde_json::from_slice(
        &std::fs::read(store.join("blobs/sha256").join(hex)).expect("the image manifest"),
    )
    .expect("json");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// Where docker-registry keeps the blob `digest` under its storage directory `data`.
fn registry_blob(data: &Path, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// The blob files of the registry's storage that hold kiln cache entries, with their JSON.
fn entry_blobs(data: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let root = data.join("docker/registry/v2/blobs/sha256");
    for prefix in std::fs::read_dir(&root).expect("registry blobs").flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .expect("registry blobs")
            .flatten()
        {
            let p = blob.path().join("data");
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            if bytes.len() > 4096 {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                && v.get("key").is_some()
            {
                out.push((p, v));
            }
        }
    }
    out
}

/// The index the registry holds under `reference`, as skopeo (an independent client) reads it.
fn skopeo_raw(reference: &str) -> Value {
    let raw = run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    serde_json::from_str(&raw).expect("json")
}

/// An empty store holding only the busybox image (from `archive`).
fn machine(root: &Path, name: &str, archive: &Path) -> PathBuf {
    let store = root.join(name);
    run_ok(
        kiln()
            .args(["cache", "import", "--cache"])
            .arg(&store)
            .arg(archive),
    );
    store
}

#[test]
fn a_second_machine_reuses_steps_through_the_registry_and_refuses_tampered_entries() {
    if !is_root() || !tools_present(&["docker-registry", "skopeo"]) {
        return;
    }
    let reg = start_registry_in(tempfile::tempdir().expect("tmp"), "");
    let data = reg.dir.path().join("data");
    let cache_ref = format!("{}/kiln-test/build-cache:main", reg.addr);

    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("registry-cache");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("mkdir");
    let archive = root.join("busybox.tar");
    let busybox = busybox_archive(&archive);
    let ctx = root.join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BUSYBOX\nFROM ${BUSYBOX}\n\
         RUN echo one > /one\n\
         RUN echo two > /two && mkdir /made\n\
         ENV STEP=three\n\
         RUN echo $STEP > /made/three\n",
    )
    .expect("Dockerfile");
    let other = root.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::write(
        other.join("Dockerfile"),
        "ARG BUSYBOX\nFROM ${BUSYBOX}\nRUN echo other > /other\n",
    )
    .expect("Dockerfile");

    // Machine 1 builds and exports.
    let m1 = machine(&root, "m1", &archive);
    let (digest1, ev1, _) = build(&m1, &ctx, &busybox, &["--cache-to", &cache_ref]);
    assert_eq!(
        run_steps(&ev1),
        [(3, false), (4, false), (6, false)],
        "{ev1:#?}"
    );

    let index = skopeo_raw(&cache_ref);
    assert_eq!(
        index["artifactType"],
        "application/vnd.kiln.build-cache.v1+json"
    );
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );

    // Machine 2 imports (BuildKit's spelling): no RUN step runs, and the image is the same.
    let m2 = machine(&root, "m2", &archive);
    let from = format!("type=registry,ref={cache_ref}");
    // A ref that does not exist (yet) is no error.
    let missing = format!("{}/kiln-test/no-cache:here", reg.addr);
    let (digest2, ev2, stderr2) = build(
        &m2,
        &ctx,
        &busybox,
        &["--cache-from", &missing, "--cache-from", &from],
    );
    assert_eq!(
        run_steps(&ev2),
        [(3, true), (4, true), (6, true)],
        "{stderr2}"
    );
    assert_eq!(image_built(&ev2)["steps_run"], 0, "{stderr2}");
    assert_eq!(digest2, digest1, "{stderr2}");
    assert!(!stderr2.contains("refused"), "{stderr2}");
    // Machine 2 exports another Dockerfile's steps to the same ref: they merge.
    let (_, ev_other, _) = build(&m2, &other, &busybox, &["--cache-to", &cache_ref]);
    assert_eq!(run_steps(&ev_other), [(3, false)]);
    assert_eq!(
        entry_blobs(&data).len(),
        4,
        "three steps of one build, one of the other"
    );
    let index = skopeo_raw(&cache_ref);
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(2),
        "{index}"
    );

    // Tamper with the registry's storage: the entry of the first RUN step gets other bytes,
    // and so does the layer of the last one (same size: only its digest betrays it).
    let layers = layers_of(&m1, &digest1);
    let (first_layer, last_layer) = (
        layers[layers.len() - 3].clone(),
        layers[layers.len() - 1].clone(),
    );
    let entries = entry_blobs(&data);
    let (entry_path, _) = entries
        .iter()
        .find(|(_, v)| v["layer"]["descriptor"]["digest"] == first_layer.as_str())
        .expect("the first RUN step's entry in the registry");
    let mut entry = std::fs::read(entry_path).expect("entry");
    // A digit of the key (`{"key":"...`), to another character: still JSON, same size.
    entry[10] ^= 1;
    std::fs::write(entry_path, &entry).expect("tamper with the entry");
    let layer_path = registry_blob(&data, &last_layer);
    let mut bytes = std::fs::read(&layer_path).expect("the last layer in the registry");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer_path, &bytes).expect("tamper with the layer");

    // Machine 3 refuses both, says so, and runs those steps itself; the step between comes
    // from the cache, and the image is still the same.
    let m3 = machine(&root, "m3", &archive);
    let (digest3, ev3, stderr3) = build(&m3, &ctx, &busybox, &["--cache-from", &cache_ref]);
    assert_eq!(
        run_steps(&ev3),
        [(3, false), (4, true), (6, false)],
        "{stderr3}"
    );
    let refusals: Vec<&str> = stderr3.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(refusals.len(), 2, "{stderr3}");
    assert!(
        refusals.iter().all(|l| l.contains(&cache_ref)),
        "the refusals name the ref:\n{stderr3}"
    );
    assert!(
        refusals.iter().any(|l| l.contains(&last_layer)),
        "the refusal names the poisoned layer:\n{stderr3}"
    );
    assert_eq!(digest3, digest1, "{stderr3}");
    // What was refused did not enter machine 3's store.
    let poisoned: Vec<_> = std::fs::read_dir(m3.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .filter(|b| std::fs::read(b.path()).is_ok_and(|d| d == bytes))
        .collect();
    assert!(poisoned.is_empty(), "a poisoned blob entered the store");
    assert_store_consistent(&m3);

    // An export that cannot reach its registry fails the build, as in BuildKit, unless the ref
    // says ignore-error=true: then it is reported and the build succeeds.
    let nowhere = "127.0.0.1:9/kiln-test/build-cache:main";
    let out = kiln()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "image",
            "build",
            "-t",
            "kiln-test/cached",
            "--cache-to",
            nowhere,
        ])
        .arg("--build-arg")
        .arg(format!("BUSYBOX={busybox}"))
        .arg("--cache")
        .arg(&m3)
        .arg(&ctx)
        .output()
        .expect("spawn kiln image build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an unreachable --cache-to succeeded:\n{stderr}"
    );
    assert!(stderr.contains(nowhere), "the ref is not named:\n{stderr}");
    let ignoring = format!("type=registry,ref={nowhere},ignore-error=true");
    let (digest4, _, stderr4) = build(&m3, &ctx, &busybox, &["--cache-to", &ignoring]);
    assert_eq!(digest4, digest1, "{stderr4}");
    assert!(
        stderr4.contains("ignore-error=true") && stderr4.contains(nowhere),
        "the failed export is not reported:\n{stderr4}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
