//! The Dockerfile suite: every case under tests/dockerfile/cases is built by `kiln image build`
//! on the Debian base, and the result (files that differ from the base, deleted paths, the
//! config's execution fields) must equal `expected.json`, which BuildKit produced
//! (tests/dockerfile/regen.sh; a few cases that Debian's BuildKit cannot build are written by
//! hand and say so in their build.json). The reduction mirrors tests/dockerfile/listing.py.

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

fn remove_tree(fs: &mut BTreeMap<String, Node>, path: &str) {
    let prefix = format!("{path}/");
    fs.retain(|k, _| k != path && !k.starts_with(&prefix));
}

fn flatten(store: &Store, image: &kiln_oci::Image) -> BTreeMap<String, Node> {
    let mut fs: BTreeMap<String, Node> = BTreeMap::new();
    for layer in &image.manifest.layers {
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
    let base_fs = if ids.starts_with(&base_ids) {
        flatten(store, &base)
    } else {
        BTreeMap::new()
    };
    let fs = flatten(store, &img);
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

#[test]
fn dockerfile_cases_match_buildkit() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfile/cases");
    let cache = shared_store();
    let store = Store::open(&cache).expect("store");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .expect("cases")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let tag = format!("kiln-case/{name}");
        let mut cmd = kiln();
        cmd.args(["image", "build", "-t", &tag, "--cache"])
            .arg(&cache)
            .arg(case);
        if let Ok(text) = std::fs::read_to_string(case.join("build.json")) {
            let b: Value = serde_json::from_str(&text).expect("build.json");
            if let Some(args) = b["build_args"].as_object() {
                for (k, v) in args {
                    cmd.arg("--build-arg")
                        .arg(format!("{k}={}", v.as_str().unwrap_or("")));
                }
            }
            if let Some(t) = b["target"].as_str() {
                cmd.args(["--target", t]);
            }
        }
        let out = cmd.output().expect("spawn kiln");
        if !out.status.success() {
            failures.push(format!(
                "{name}: build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let got = reduce(&store, &tag);
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(case.join("expected.json")).expect("expected.json"),
        )
        .expect("expected json");
        if got != want {
            failures.push(format!(
                "{name}: differs from BuildKit\n  kiln:     {got}\n  expected: {want}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
