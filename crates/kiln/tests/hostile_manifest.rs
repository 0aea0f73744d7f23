//! Manifests from elsewhere cannot exhaust or confuse kiln: a `files` source that is a device, a
//! FIFO, a directory or too large, YAML nested 50,000 deep or larger than the limit, a service
//! named to climb out of /containers, file paths with NUL, `.`, `..`, a file beneath a file or
//! the same path twice, and an image label nested 100,000 deep. For each, the real `kiln build`
//! fails in every output format, within a bounded time, with an error naming where the problem
//! is, and leaves no output behind.

mod common;
use common::*;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every format `kiln build --help` lists.
const FORMATS: [&str; 4] = ["kernel+initrd", "tar", "tar-kernel-initrd", "docker"];

/// A manifest that starts real output (a kernel, init images, containers) before its files.
const BASE: &str = "kernel:
  image: kiln-test/kernel:6.6.0
  cmdline: \"console=ttyS0\"
init:
  - kiln-test/init:1
onboot:
  - name: tool
    image: kiln-test/plain:1
services:
  - name: svc
    image: kiln-test/svc:1
";

struct Case {
    name: &'static str,
    /// The manifest text.
    manifest: String,
    /// The error names this location (after the manifest's path); empty when the problem is
    /// not in the manifest (`says` names its place).
    location: String,
    /// And says this.
    says: &'static str,
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` is not in the manifest"))
}

fn with_files(files: &str) -> String {
    format!("{BASE}files:\n  - path: etc/motd\n    contents: hi\n{files}")
}

/// A manifest whose files section names `source` (YAML text) for etc/data.
fn source_case(name: &'static str, source: &str, says: &'static str) -> Case {
    let manifest = with_files(&format!("  - path: etc/data\n    source: {source}\n"));
    let line = line_of(&manifest, "source:");
    Case {
        name,
        location: format!("{line}:13: files[1].source"),
        manifest,
        says,
    }
}

/// A manifest with one more files entry, `entry` (YAML lines), refused at its line holding
/// `at`, key `key`.
fn files_case(name: &'static str, entry: &str, at: &str, key: &str, says: &'static str) -> Case {
    let manifest = with_files(entry);
    let line = line_of(&manifest, at);
    Case {
        name,
        location: format!("{line}:11: {key}"),
        manifest,
        says,
    }
}

fn cases(case_dir: &Path) -> Vec<Case> {
    let deep = format!("{BASE}files:\n  - path: {}\n", "[".repeat(50_000));
    let deep_line = line_of(&deep, "[[[");
    let padding = "# padding padding padding padding padding padding padding padding\n";
    let big = format!("{BASE}{}", padding.repeat((1 << 20) / padding.len() + 1));
    let big_line = 1 + big.as_bytes()[..1 << 20]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    let climbing = format!("{BASE}  - name: ../../etc\n    image: kiln-test/svc:1\n");
    let climbing_line = line_of(&climbing, "../../etc");
    let labelled = format!(
        "{BASE}  - name: deep-label\n    image: kiln-test/hostile-label:1\n{}",
        "files:\n  - path: etc/motd\n    contents: hi\n"
    );
    vec![
        source_case(
            "source-dev-zero",
            "/dev/zero",
            "source `/dev/zero` is a character device, not a regular file",
        ),
        source_case(
            "source-fifo",
            "fifo",
            "is a named pipe (FIFO), not a regular file",
        ),
        source_case(
            "source-directory",
            &case_dir.display().to_string(),
            "is a directory, not a regular file",
        ),
        source_case(
            "source-too-large",
            "huge",
            "more than the limit of 1024 MiB",
        ),
        Case {
            name: "nested-50000-deep",
            location: format!("{deep_line}:{}", 11 + 32),
            manifest: deep,
            says: "nests deeper than the limit of 32 levels",
        },
        Case {
            name: "larger-than-1-mib",
            location: format!("{big_line}"),
            manifest: big,
            says: "larger than the limit of 1 MiB",
        },
        Case {
            name: "service-named-to-climb",
            location: format!("{climbing_line}:11: services[1].name"),
            manifest: climbing,
            says: "container name `../../etc` contains `/`",
        },
        files_case(
            "path-with-nul",
            "  - path: \"etc/a\\0b\"\n    contents: x\n",
            "etc/a\\0b",
            "files[1].path",
            "contains a NUL byte",
        ),
        files_case(
            "path-dot",
            "  - path: .\n    contents: x\n",
            "path: .",
            "files[1].path",
            "names the root of the image",
        ),
        files_case(
            "path-empty",
            "  - path: ''\n    contents: x\n",
            "path: ''",
            "files[1].path",
            "file path is empty",
        ),
        files_case(
            "path-climbing",
            "  - path: /../../etc/passwd\n    contents: x\n",
            "/../../etc/passwd",
            "files[1].path",
            "contains `..`",
        ),
        files_case(
            "file-beneath-a-file",
            "  - path: etc/motd/evil\n    contents: x\n",
            "etc/motd/evil",
            "files[1].path",
            "lies beneath `etc/motd`, which is a file",
        ),
        files_case(
            "duplicate-path",
            "  - path: /etc/motd\n    contents: again\n",
            "/etc/motd",
            "files[1].path",
            "duplicate file path `etc/motd`",
        ),
        Case {
            name: "label-nested-100000-deep",
            location: String::new(),
            manifest: labelled,
            // Located in the label, at line 1, column 33.
            says: "label org.mobyproject.config of docker.io/kiln-test/hostile-label:1:1:33: this label nests deeper than the limit of 32 levels",
        },
    ]
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI-layout tar of an image `name` with one empty layer and `label` as its
/// org.mobyproject.config label.
fn labelled_image(name: &str, label: &str) -> Vec<u8> {
    let layer = tar::Builder::new(Vec::new()).into_inner().expect("tar");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"], "Labels": {"org.mobyproject.config": label}},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}}))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len()}]}))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}]}))
    .expect("json");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).expect("append");
    };
    for blob in [&layer, &config, &manifest] {
        add(format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
    }
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    b.into_inner().expect("tar")
}

/// `kiln build -f FORMAT` of `manifest` in `dir`, bounded to 120 s and 8 GiB of address space
/// (a FIFO that blocks, quadratic parsing or reading /dev/zero shows as a failure, not as a
/// hung or swamped machine); returns (success, stderr).
fn build(cache: &Path, dir: &Path, manifest: &Path, format: &str, out: &Path) -> (bool, String) {
    let output = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 8388608 && exec timeout --kill-after=5 120 \"$@\"",
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(dir)
        .args(["build", "--name", "sys", "-f", format, "--cache"])
        .arg(cache)
        .arg("--dir")
        .arg(out)
        .arg(manifest)
        .output()
        .expect("spawn sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn hostile_manifests_fail_located_in_every_format() {
    if conformance_dir().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let n = 100_000;
    let label = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let archive = tmp.path().join("hostile-label.tar");
    std::fs::write(
        &archive,
        labelled_image("kiln-test/hostile-label:1", &label),
    )
    .expect("write");
    run_ok(
        kiln()
            .args(["cache", "import"])
            .arg(&archive)
            .arg("--cache")
            .arg(&cache),
    );
    let case_dir = tmp.path().join("cases");
    std::fs::create_dir(&case_dir).expect("mkdir");
    nix::unistd::mkfifo(
        &case_dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    // Sparse: 1 GiB and one byte that take no disk space.
    std::fs::File::create(case_dir.join("huge"))
        .and_then(|f| f.set_len((1 << 30) + 1))
        .expect("huge");

    let mut failures = Vec::new();
    for case in cases(&case_dir) {
        let manifest = case_dir.join(format!("{}.yml", case.name));
        std::fs::write(&manifest, &case.manifest).expect("write manifest");
        for format in FORMATS {
            let out = tmp.path().join("out").join(case.name).join(format);
            std::fs::create_dir_all(&out).expect("mkdir out");
            let (ok, stderr) = build(&cache, &case_dir, &manifest, format, &out);
            let expected = if case.location.is_empty() {
                case.says.to_string()
            } else {
                format!("{}:{}", manifest.display(), case.location)
            };
            let problem = if ok {
                Some("the build succeeded".to_string())
            } else if !stderr.contains(&expected) || !stderr.contains(case.says) {
                Some(format!("expected `{expected}` and `{}`", case.says))
            } else if stderr.len() > 4_000 {
                Some(format!("the error is {} bytes long", stderr.len()))
            } else if !leftovers(&out).is_empty() {
                Some(format!("left behind {:?}", leftovers(&out)))
            } else {
                None
            };
            if let Some(problem) = problem {
                let shown: String = stderr.chars().take(1_000).collect();
                failures.push(format!(
                    "{} ({format}): {problem}; stderr:\n{shown}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn regular_sources_are_streamed_into_the_image() {
    if conformance_dir().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tmp.path().join("data.bin"), &data).expect("write");
    // A symlink to a regular file is followed, as LinuxKit does.
    std::os::unix::fs::symlink("data.bin", tmp.path().join("link")).expect("symlink");
    let manifest = tmp.path().join("ok.yml");
    std::fs::write(
        &manifest,
        with_files(
            "  - path: /var/lib/app/\n    directory: true\n  - path: var/lib/app/data\n    source: link\n",
        ),
    )
    .expect("write");
    let out = tmp.path().join("out");
    let (ok, stderr) = build(&cache, tmp.path(), &manifest, "tar", &out);
    assert!(ok, "{stderr}");
    let (listing, contents) = listing(&std::fs::read(out.join("sys.tar")).expect("tar"));
    assert!(listing.contains_key("var/lib/app"), "{listing:?}");
    assert_eq!(contents.get("var/lib/app/data"), Some(&data));
}
