//! kiln against LinuxKit's own outputs: for every case of ../shared/conformance/linuxkit,
//! `kiln build --format tar` from the fixture images must give LinuxKit's file system listing and
//! the same config.json and runtime.json (as JSON values), and every error case must be rejected
//! with a message naming the file, line, column and key.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Where kiln deliberately differs from LinuxKit, by case: paths LinuxKit has that kiln does not.
///
/// 07-whiteouts: LinuxKit (through go-containerregistry) ignores opaque-directory markers
/// (`.wh..wh..opq`), so files of lower layers survive in a directory the upper layer made
/// opaque. kiln applies the OCI image spec: `opt/d` holds only what the upper layer put there.
const DELIBERATE: &[(&str, &[&str])] = &[(
    "07-whiteouts",
    &[
        "opt/d/x",
        "opt/d/y",
        "containers/onboot/000-layered/lower/opt/d/x",
        "containers/onboot/000-layered/lower/opt/d/y",
    ],
)];

fn cases(conf: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(conf)
        .expect("conformance dir")
        .flatten()
        .filter(|e| e.path().join("expected/listing.tsv").is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn manifests(case: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(case)
        .expect("case")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    // manifest.yml first, then the others in name order.
    files.sort_by_key(|p| (p.file_name().is_none_or(|n| n != "manifest.yml"), p.clone()));
    files
}

#[test]
fn linuxkit_conformance() {
    let Some(conf) = conformance_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let mut failures = Vec::new();
    for case in cases(&conf) {
        let dir = conf.join(&case);
        let out = tmp.path().join(format!("{case}.tar"));
        let mut cmd = kiln();
        // The goldens were made with `linuxkit build --no-sbom`.
        cmd.current_dir(&dir)
            .args(["build", "--no-sbom", "--format", "tar", "-o"])
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .args(manifests(&dir));
        run_ok(&mut cmd);
        let (got, contents) = listing(&std::fs::read(&out).expect("output"));
        let skip: &[&str] = DELIBERATE
            .iter()
            .find(|(c, _)| *c == case)
            .map_or(&[], |(_, s)| s);
        let expected: BTreeMap<String, String> =
            std::fs::read_to_string(dir.join("expected/listing.tsv"))
                .expect("listing")
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    (
                        l.split('\t').next().unwrap_or("").to_string(),
                        l.to_string(),
                    )
                })
                .filter(|(p, _)| !skip.contains(&p.as_str()))
                .collect();
        for (path, line) in &expected {
            match got.get(path) {
                None => failures.push(format!("{case}: missing {line}")),
                Some(g) if g != line && !(path.ends_with(".json")) => failures.push(format!(
                    "{case}: expected {line}\n{:>width$}got      {g}",
                    "",
                    width = case.len() + 2
                )),
                _ => {}
            }
        }
        for (path, line) in &got {
            if !expected.contains_key(path) {
                failures.push(format!("{case}: unexpected {line}"));
            }
        }
        // Generated files: JSON compared as values, the rest byte for byte.
        let files_dir = dir.join("expected/files");
        let mut stack = vec![files_dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("files").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&files_dir)
                    .expect("rel")
                    .to_string_lossy()
                    .to_string();
                let want = std::fs::read(&p).expect("expected file");
                let Some(have) = contents.get(&rel) else {
                    failures.push(format!("{case}: {rel} not produced"));
                    continue;
                };
                if rel.ends_with(".json") {
                    let a: serde_json::Value =
                        serde_json::from_slice(&want).expect("expected json");
                    let b: serde_json::Value = serde_json::from_slice(have).expect("kiln json");
                    if a != b {
                        failures.push(format!(
                            "{case}: {rel} differs\n  LinuxKit: {a}\n  kiln:     {b}"
                        ));
                    }
                } else if &want != have {
                    failures.push(format!(
                        "{case}: {rel} differs\n  LinuxKit: {:?}\n  kiln:     {:?}",
                        String::from_utf8_lossy(&want),
                        String::from_utf8_lossy(have)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn linuxkit_error_cases_are_rejected_with_location() {
    let Some(conf) = conformance_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let dir = conf.join("10-errors");
    // (file, the key the message must name)
    let cases = [
        ("bad-yaml.yml", "line"),
        ("duplicate-name.yml", "services[1].name"),
        ("files-conflict.yml", "files[0].source"),
        ("missing-image.yml", "services[0]"),
        ("readonly-volume-written.yml", "services[0].binds[1]"),
        ("unknown-key.yml", "onboot[0].capabilties"),
        ("unknown-uid-name.yml", "services[0].uid"),
        ("wrong-type.yml", "services[0].readonly"),
    ];
    let mut failures = Vec::new();
    for (file, key) in cases {
        let out = kiln()
            .current_dir(&dir)
            .args(["build", "--format", "tar", "-o"])
            .arg(tmp.path().join("x.tar"))
            .arg("--cache")
            .arg(&cache)
            .arg(file)
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let located = err.contains(&format!("{file}:"))
            && err.split(&format!("{file}:")).nth(1).is_some_and(|rest| {
                rest.split(':')
                    .next()
                    .is_some_and(|l| l.parse::<u32>().is_ok())
            });
        if out.status.success() || !located || !err.contains(key) {
            failures.push(format!(
                "{file}: status {:?}, expected file:line:column and `{key}`, got:\n{err}",
                out.status.code()
            ));
        }
        assert!(
            !tmp.path().join("x.tar").exists(),
            "{file}: a failed build left an output file"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
