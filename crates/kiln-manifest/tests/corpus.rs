//! Every manifest of LinuxKit's own examples and projects parses, and the three LinuxKit rejects
//! are rejected with a located message.

use kiln_manifest::ManifestSet;
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/linuxkit");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} is absent", dir.display());
        None
    }
}

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "pkg") {
                continue; // package build.yml files, not manifests
            }
            manifests(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(p);
        }
    }
}

/// The three the conformance README names, plus one YAML file that is a list of container entries
/// rather than a manifest (LinuxKit's yaml.v3 cannot unmarshal a sequence into its config either).
const REJECTED: [&str; 4] = [
    "examples/static-ip.yml",
    "projects/clear-containers/clear-containers.yml",
    "projects/compose/docker-compose.yml",
    "projects/miragesdk/yaml/dhcp-client.yml",
];

#[test]
fn linuxkit_corpus() {
    let Some(dir) = corpus() else { return };
    let mut files = Vec::new();
    manifests(&dir, &mut files);
    files.sort();
    assert!(files.len() > 40, "corpus too small: {}", files.len());
    let mut accepted = 0;
    let mut failures = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&dir)
            .unwrap_or(f)
            .to_string_lossy()
            .to_string();
        let result = ManifestSet::load(&[f]);
        if REJECTED.contains(&rel.as_str()) {
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{rel} must be rejected"))
                .to_string();
            // file:line:column at least, for each of the three.
            let loc = e.strip_prefix(&f.display().to_string()).unwrap_or("");
            assert!(loc.starts_with(':'), "{rel}: error not located: {e}");
            eprintln!("rejected as expected: {e}");
        } else {
            match result {
                Ok(_) => accepted += 1,
                Err(e) => failures.push(format!("{rel}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "manifests that must parse:\n{}",
        failures.join("\n")
    );
    eprintln!("{accepted} manifests accepted, {} rejected", REJECTED.len());
}
