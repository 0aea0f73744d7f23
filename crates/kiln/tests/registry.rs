//! kiln against a real registry (Debian's docker-registry, distribution v2.8) started on
//! 127.0.0.1 and a free port, with skopeo as the independent peer.
//!
//! In CI (CI=true) a missing docker-registry or skopeo fails the test; elsewhere it is skipped.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn prerequisites() -> bool {
    tools_present(&["docker-registry", "skopeo"])
}

fn start_registry() -> Registry {
    start_registry_in(tempfile::tempdir().expect("tmp"), "")
}

fn cache_args(cmd: &mut Command, cache: &Path) {
    cmd.arg("--cache").arg(cache);
}

/// Name the store's image `local` as `remote` and push it there with kiln.
fn push_as(cache: &Path, local: &str, remote: &str) {
    let mut tag = kiln();
    tag.args(["cache", "tag", local, remote]);
    cache_args(&mut tag, cache);
    run_ok(&mut tag);
    let mut push = kiln();
    push.args(["cache", "push", remote]);
    cache_args(&mut push, cache);
    run_ok(&mut push);
}

#[test]
fn push_pull_and_skopeo_interop() {
    if !prerequisites() || conformance_dir().is_none() {
        return;
    }
    let reg = start_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let remote = format!("{}/kiln-test/svc:1", reg.addr);

    // kiln pushes; a fresh kiln store pulls the same digest back.
    push_as(&cache, "kiln-test/svc:1", &remote);
    let fresh = tmp.path().join("fresh");
    let mut pull = kiln();
    pull.args(["cache", "pull", &remote]);
    cache_args(&mut pull, &fresh);
    run_ok(&mut pull);
    assert_eq!(
        digest_of(&fresh, &remote),
        digest_of(&cache, "docker.io/kiln-test/svc:1")
    );

    // skopeo reads what kiln pushed.
    let layout = tmp.path().join("skopeo-layout");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{remote}"))
            .arg(format!("oci:{}:svc", layout.display())),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(
        index["manifests"][0]["digest"].as_str(),
        Some(digest_of(&cache, "docker.io/kiln-test/svc:1").as_str()),
        "skopeo saw another manifest"
    );

    // skopeo pushes; kiln pulls it and can use it.
    let conf = conformance_dir().expect("corpus");
    let other = format!("{}/elsewhere/plain:2", reg.addr);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!(
                "oci-archive:{}",
                conf.join("images/plain.tar").display()
            ))
            .arg(format!("docker://{other}")),
    );
    let mut pull = kiln();
    pull.args(["cache", "pull", &other]);
    cache_args(&mut pull, &fresh);
    run_ok(&mut pull);
    assert_eq!(
        digest_of(&fresh, &other),
        digest_of(&cache, "docker.io/kiln-test/plain:1")
    );
}

#[test]
fn cold_build_through_a_mirror() {
    if !prerequisites() || conformance_dir().is_none() {
        return;
    }
    let reg = start_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    for img in ["kernel:6.6.0", "init:1", "runtime:1", "plain:1", "svc:1"] {
        let remote = format!("{}/kiln-test/{img}", reg.addr);
        push_as(&cache, &format!("kiln-test/{img}"), &remote);
    }
    // An empty store, and the manifest names docker.io images: the mirror serves them.
    let cold = tmp.path().join("cold");
    let dir = conformance_dir().expect("corpus").join("01-minimal");
    let out_cold = tmp.path().join("cold.tar");
    let mut build = kiln();
    build
        .current_dir(&dir)
        .args(["build", "--progress", "json", "--format", "tar", "-o"])
        .arg(&out_cold)
        .arg("--mirror")
        .arg(format!("docker.io=http://{}", reg.addr))
        .arg("manifest.yml");
    cache_args(&mut build, &cold);
    let out = build.output().expect("kiln build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Each pull is reported with the bytes it downloaded: together no more than the blobs the
    // cold store now holds, and something for each image.
    let pulled: Vec<u64> = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON event"))
        .filter(|e| e["event"] == "image_pulled")
        .map(|e| e["bytes"].as_u64().expect("bytes"))
        .collect();
    assert!(!pulled.is_empty(), "no image_pulled event:\n{stderr}");
    assert!(pulled.iter().all(|b| *b > 0), "{pulled:?}");
    let stored: u64 = std::fs::read_dir(cold.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.metadata().expect("blob").len())
        .sum();
    assert!(
        pulled.iter().sum::<u64>() <= stored,
        "{pulled:?} > {stored}"
    );
    let out_warm = tmp.path().join("warm.tar");
    let mut build = kiln();
    build
        .current_dir(&dir)
        .args(["build", "--format", "tar", "-o"])
        .arg(&out_warm)
        .arg("manifest.yml");
    cache_args(&mut build, &cache);
    run_ok(&mut build);
    assert_eq!(
        std::fs::read(&out_cold).expect("cold"),
        std::fs::read(&out_warm).expect("warm"),
        "a build from the registry differs from one from the imported images"
    );
}

#[test]
fn kill_during_pull_leaves_a_sound_store() {
    if !prerequisites() {
        return;
    }
    let reg = start_registry();
    let dir = tempfile::tempdir().expect("tempdir");
    // A 96 MB incompressible layer, so the pull is still running when it is killed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..96 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let archive = dir.path().join("big.tar");
    std::fs::write(
        &archive,
        oci_archive(
            "kiln-test/big:1",
            &[raw_layer(&[
                Member::File("big", &big),
                Member::File("marker", b"whole\n"),
            ])],
        ),
    )
    .expect("write");
    let source = dir.path().join("source");
    let mut import = kiln();
    import.args(["cache", "import"]).arg(&archive);
    cache_args(&mut import, &source);
    run_ok(&mut import);
    let remote = format!("{}/kiln-test/big:1", reg.addr);
    push_as(&source, "kiln-test/big:1", &remote);

    let cold = dir.path().join("cold");
    let mut pull = kiln();
    pull.args(["cache", "pull", &remote]);
    cache_args(&mut pull, &cold);
    let mut child = pull
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill it once part of the layer has arrived.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial = std::fs::read_dir(cold.join("tmp"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
            })
            .unwrap_or(false);
        if partial {
            break;
        }
        assert!(Instant::now() < deadline, "the pull never started writing");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the pull finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert_store_consistent(&cold);
    let mut ls = kiln();
    ls.args(["cache", "ls"]);
    cache_args(&mut ls, &cold);
    assert!(
        !run_ok(&mut ls).contains("big"),
        "a half-pulled image is named in the store"
    );
    // Pulling again completes, and the image is whole.
    let mut again = kiln();
    again.args(["cache", "pull", &remote]);
    cache_args(&mut again, &cold);
    run_ok(&mut again);
    assert_store_consistent(&cold);
    let bundle = dir.path().join("bundle");
    let mut unpack = kiln();
    unpack.args(["image", "unpack", &remote]).arg(&bundle);
    cache_args(&mut unpack, &cold);
    run_ok(&mut unpack);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/big")).expect("big").len(),
        big.len()
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/marker")).expect("marker"),
        "whole\n"
    );
}

#[test]
fn pkg_build_pushes_to_a_registry() {
    if !prerequisites() {
        return;
    }
    let reg = start_registry();
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = dir.path().join("p");
    std::fs::create_dir(&pkg).expect("mkdir");
    std::fs::write(pkg.join("build.yml"), "image: pushed\n").expect("write");
    std::fs::write(pkg.join("hello.txt"), "pushed by kiln pkg build\n").expect("write");
    std::fs::write(pkg.join("Dockerfile"), "FROM scratch\nCOPY hello.txt /\n").expect("write");
    let cache = dir.path().join("cache");
    let org = format!("{}/kiln-test", reg.addr);
    let mut build = kiln();
    build
        .args(["pkg", "build", "--push", "--org", &org])
        .arg(&pkg);
    cache_args(&mut build, &cache);
    let name = run_ok(&mut build).trim().to_string();
    assert!(name.starts_with(&format!("{org}/pushed:")), "{name}");
    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}")),
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo json");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{inspect}");
}

/// LinuxKit's cache verbs: `push --remote-name`, `rm --published-only` and `clean
/// --published-only` (asking the registry), `export --format filesystem --outfile -`, `import -`,
/// and a bare `--mirror URL` for every registry.
#[test]
fn linuxkit_cache_verbs() {
    if !prerequisites() {
        return;
    }
    let reg = start_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let mirror = format!("http://{}", reg.addr);
    let lk = |args: &[&str]| {
        let mut cmd = kiln();
        cmd.arg("--mirror").arg(&mirror).args(args);
        cache_args(&mut cmd, &cache);
        cmd
    };
    // Pushed under another name: the registry has kiln-test/plain:1 as published/plain:1.
    run_ok(&mut lk(&[
        "cache",
        "push",
        "kiln-test/plain:1",
        "--remote-name",
        "published/plain:1",
    ]));
    let out = run_ok(&mut lk(&["cache", "push", "kiln-test/svc:1"]));
    assert!(out.contains("kiln-test/svc:1"), "{out}");
    assert_eq!(
        digest_of(&cache, "docker.io/published/plain:1"),
        digest_of(&cache, "docker.io/kiln-test/plain:1")
    );
    // rm --published-only removes what the registry holds with the same digest, keeps the rest.
    let out = run_ok(&mut lk(&[
        "cache",
        "rm",
        "--published-only",
        "published/plain:1",
        "kiln-test/data:1",
    ]));
    assert!(out.contains("removed docker.io/published/plain:1"), "{out}");
    assert!(out.contains("kept docker.io/kiln-test/data:1"), "{out}");
    let listed = run_ok(&mut lk(&["cache", "ls"]));
    assert!(!listed.contains("published/plain") && listed.contains("kiln-test/data:1"));
    // clean --published-only: kiln-test/svc:1 was pushed, the others were not.
    run_ok(&mut lk(&["cache", "clean", "--published-only"]));
    let listed = run_ok(&mut lk(&["cache", "ls"]));
    assert!(!listed.contains("kiln-test/svc:1"), "{listed}");
    assert!(listed.contains("kiln-test/plain:1") && listed.contains("kiln-test/data:1"));

    // export --format filesystem to standard output: the image's flattened root as a tar.
    let fs_tar = run_bytes(&mut lk(&[
        "cache",
        "export",
        "--format",
        "filesystem",
        "--outfile",
        "-",
        "kiln-test/plain:1",
    ]));
    let (files, _) = listing(&fs_tar);
    assert!(!files.is_empty(), "an empty filesystem export");
    // export as OCI to standard output, import from standard input into another store.
    let oci = run_bytes(&mut lk(&[
        "cache",
        "export",
        "--outfile",
        "-",
        "kiln-test/data:1",
    ]));
    let other = tmp.path().join("other");
    let mut import = kiln();
    import.args(["cache", "import", "-"]);
    cache_args(&mut import, &other);
    let mut child = import
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &oci).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        digest_of(&other, "docker.io/kiln-test/data:1"),
        digest_of(&cache, "docker.io/kiln-test/data:1")
    );
}

fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
