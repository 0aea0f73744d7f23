//! The Dockerfile suite: every case under tests/dockerfile/cases is built by `kiln image build`
//! on the Debian base, and the result (files that differ from the base, deleted paths, the
//! config's execution fields) must equal `expected.json`, which BuildKit produced
//! (tests/dockerfile/regen.sh; a few cases that Debian's BuildKit cannot build are written by
//! hand and say so in their build.json). The reduction mirrors tests/dockerfile/listing.py.
//! Cases `NN-*` are kiln's own; cases `bNNN-*` are ported from buildah's tests/bud and name their
//! origin (and what was adapted) in build.json. A case that BuildKit refuses says so in
//! build.json (`expect_failure`) and kiln must refuse it too. The test prints PASS/FAIL per case
//! and the pass count before it asserts; `KILN_DOCKERFILE_CASES=prefix,...` runs some cases only.

mod common;

use common::{kiln, shared_store};
use kiln_oci::{Reference, Store};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
];

/// One path of a flattened file system: type, mode, uid, gid, size, content digest or target.
type Node = (char, u32, u64, u64, u64, String);

/// Lexically cleaned archive path, as kiln and listing.py clean it.
fn norm(p: &str) -> String {
    kiln_build::context::clean(p)
}

/// Remove `path` and everything under it (a range of the sorted map, not a scan of it).
fn remove_tree(fs: &mut BTreeMap<String, Node>, path: &str) {
    fs.remove(path);
    let prefix = format!("{path}/");
    let under: Vec<String> = fs
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        fs.remove(&k);
    }
}

/// The file system of `image`'s layers from the `skip`th on, applied over `fs`.
fn flatten_onto(
    store: &Store,
    image: &kiln_oci::Image,
    skip: usize,
    mut fs: BTreeMap<String, Node>,
) -> BTreeMap<String, Node> {
    for layer in image.manifest.layers.iter().skip(skip) {
        let mut members = Vec::new();
        let mut ar = tar::Archive::new(store.open_layer(layer).expect("layer"));
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = norm(&String::from_utf8_lossy(&e.path_bytes()));
            let h = e.header().clone();
            let link = e
                .link_name()
                .expect("link")
                .map(|l| l.to_string_lossy().to_string())
                .unwrap_or_default();
            let mut data = Vec::new();
            if h.entry_type().is_file() {
                e.read_to_end(&mut data).expect("read");
            }
            members.push((path, h, link, data));
        }
        for (path, _, _, _) in &members {
            let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
            if base == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                fs.retain(|k, _| !(dir.is_empty() || k.starts_with(&prefix)));
            } else if let Some(hidden) = base.strip_prefix(".wh.") {
                let p = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                remove_tree(&mut fs, &p);
            }
        }
        for (path, h, link, data) in members {
            let base = path.rsplit('/').next().unwrap_or(&path);
            if path.is_empty() || base.starts_with(".wh.") {
                continue;
            }
            let mode = h.mode().expect("mode") & 0o7777;
            let (uid, gid) = (h.uid().expect("uid"), h.gid().expect("gid"));
            let dev = || {
                format!(
                    "{},{}",
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0)
                )
            };
            let (kind, size, hash) = match h.entry_type() {
                tar::EntryType::Directory => ('d', 0, "-".to_string()),
                tar::EntryType::Symlink => ('l', 0, link),
                tar::EntryType::Link => match fs.get(&norm(&link)) {
                    Some(t) => ('f', t.4, t.5.clone()),
                    None => ('f', 0, "?".into()),
                },
                tar::EntryType::Char => ('c', 0, dev()),
                tar::EntryType::Block => ('b', 0, dev()),
                tar::EntryType::Fifo => ('p', 0, "-".into()),
                t if t.is_file() => ('f', data.len() as u64, hex::encode(Sha256::digest(&data))),
                _ => continue,
            };
            if kind != 'd' {
                remove_tree(&mut fs, &path);
            }
            fs.insert(path, (kind, mode, uid, gid, size, hash));
        }
    }
    fs
}

fn diff_ids(store: &Store, image: &kiln_oci::Image) -> Vec<String> {
    let d: kiln_oci::Digest = image.manifest.config.digest.parse().expect("digest");
    let raw = store.read_json_blob(&d, "config").expect("config");
    let v: Value = serde_json::from_slice(&raw).expect("json");
    v["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn reduce(store: &Store, name: &str) -> Value {
    let arch = kiln_oci::spec::normalize_arch("");
    let r: Reference = name.parse().expect("ref");
    let img = store.resolve(&r, arch).expect("built image");
    let base_ref: Reference = "debian:bookworm".parse().expect("ref");
    let base = store.resolve(&base_ref, arch).expect("base");
    let (ids, base_ids) = (diff_ids(store, &img), diff_ids(store, &base));
    // The base's file system, flattened once per run: every case starts from it.
    static BASE: std::sync::OnceLock<(Vec<String>, BTreeMap<String, Node>)> =
        std::sync::OnceLock::new();
    let (_, base_flat) = BASE.get_or_init(|| {
        (
            base_ids.clone(),
            flatten_onto(store, &base, 0, BTreeMap::new()),
        )
    });
    let (base_fs, fs) = if ids.starts_with(&base_ids) {
        let fs = flatten_onto(store, &img, base_ids.len(), base_flat.clone());
        (base_flat.clone(), fs)
    } else {
        (
            BTreeMap::new(),
            flatten_onto(store, &img, 0, BTreeMap::new()),
        )
    };
    let mut paths: Vec<&String> = fs.keys().chain(base_fs.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut lines = Vec::new();
    for p in paths {
        match (fs.get(p), base_fs.get(p)) {
            (None, _) => lines.push(format!("{p}\tdeleted")),
            (Some(now), before) => {
                let same = before.is_some_and(|b| {
                    if now.0 == 'd' && b.0 == 'd' {
                        (now.1, now.2, now.3) == (b.1, b.2, b.3)
                    } else {
                        now == b
                    }
                });
                if !same {
                    lines.push(format!(
                        "{p}\t{}\t{:04o}\t{}\t{}\t{}\t{}",
                        now.0, now.1, now.2, now.3, now.4, now.5
                    ));
                }
            }
        }
    }
    let d: kiln_oci::Digest = img.manifest.config.digest.parse().expect("digest");
    let cfg: Value =
        serde_json::from_slice(&store.read_json_blob(&d, "config").expect("config")).expect("json");
    let mut config = serde_json::Map::new();
    for k in CONFIG_FIELDS {
        let v = &cfg["config"][k];
        let empty = v.is_null()
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_str().is_some_and(str::is_empty)
            || (*k == "WorkingDir" && v.as_str() == Some("/"));
        if !empty {
            config.insert((*k).to_string(), v.clone());
        }
    }
    json!({"files": lines, "config": config})
}

/// What build.json asks of a case: `build_args` (a null value passes `--build-arg NAME` alone),
/// `target`, `dockerfile` (a file of the case other than `Dockerfile`, given with `-f`), `secrets`
/// (id -> file of the case, given as `--secret id=ID,src=FILE`) and `expect_failure` (the reason
/// BuildKit refuses the build too: kiln must fail and there is no expected.json).
fn build_command(case: &Path, tag: &str, cache: &Path, spec: &Value) -> std::process::Command {
    let mut cmd = kiln();
    cmd.args(["image", "build", "-t", tag, "--cache"])
        .arg(cache);
    if let Some(args) = spec["build_args"].as_object() {
        for (k, v) in args {
            cmd.arg("--build-arg");
            match v.as_str() {
                Some(v) => cmd.arg(format!("{k}={v}")),
                None => cmd.arg(k),
            };
        }
    }
    if let Some(t) = spec["target"].as_str() {
        cmd.args(["--target", t]);
    }
    if let Some(f) = spec["dockerfile"].as_str() {
        cmd.arg("-f").arg(case.join(f));
    }
    if let Some(secrets) = spec["secrets"].as_object() {
        for (id, src) in secrets {
            let src = case.join(src.as_str().expect("secret source is a file name"));
            cmd.arg("--secret")
                .arg(format!("id={id},src={}", src.display()));
        }
    }
    cmd.arg(case);
    cmd
}

/// How one case ended, for the summary.
enum Outcome {
    Pass,
    Fail(String),
}

#[test]
fn dockerfile_cases_match_buildkit() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfile/cases");
    let cache = shared_store();
    let store = Store::open(&cache).expect("store");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .expect("cases")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Dockerfile").is_file() || p.join("build.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    // KILN_DOCKERFILE_CASES=a,b limits the run to cases whose names start with one of these.
    if let Ok(only) = std::env::var("KILN_DOCKERFILE_CASES") {
        let only: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
        cases.retain(|c| {
            let n = c.file_name().map(|n| n.to_string_lossy().to_string());
            n.is_some_and(|n| only.iter().any(|o| n.starts_with(o)))
        });
    }
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let tag = format!("kiln-case/{name}");
        let spec: Value = match std::fs::read_to_string(case.join("build.json")) {
            Ok(text) => serde_json::from_str(&text).expect("build.json"),
            Err(_) => Value::Null,
        };
        let started = std::time::Instant::now();
        let out = build_command(case, &tag, &cache, &spec)
            .output()
            .expect("spawn kiln");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let outcome = if let Some(why) = spec["expect_failure"].as_str() {
            if out.status.success() {
                Outcome::Fail(format!(
                    "{name}: kiln built it, BuildKit refuses it ({why})"
                ))
            } else {
                Outcome::Pass
            }
        } else if !out.status.success() {
            Outcome::Fail(format!("{name}: build failed:\n{stderr}"))
        } else {
            let got = reduce(&store, &tag);
            match std::fs::read_to_string(case.join("expected.json")) {
                Err(e) => Outcome::Fail(format!(
                    "{name}: no expected.json ({e}): run tests/dockerfile/regen.sh {name}"
                )),
                Ok(text) => {
                    let want: Value = serde_json::from_str(&text).expect("expected json");
                    if got == want {
                        Outcome::Pass
                    } else {
                        Outcome::Fail(format!(
                            "{name}: differs from BuildKit\n  kiln:     {got}\n  expected: {want}"
                        ))
                    }
                }
            }
        };
        eprintln!(
            "{} {name} ({:.1} s)",
            if matches!(outcome, Outcome::Pass) {
                "PASS"
            } else {
                "FAIL"
            },
            started.elapsed().as_secs_f64()
        );
        outcomes.push((name, outcome));
    }
    let passed = |prefix: Option<char>| {
        let sel: Vec<&(String, Outcome)> = outcomes
            .iter()
            .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
            .collect();
        let ok = sel
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Pass))
            .count();
        (ok, sel.len())
    };
    let (ok, all) = passed(None);
    let (bok, ball) = passed(Some('b'));
    eprintln!("dockerfile corpus: {ok} of {all} cases pass ({bok} of {ball} ported from buildah)");
    let failures: Vec<&String> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Fail(f) => Some(f),
            Outcome::Pass => None,
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all,
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
