//! Helpers shared by kiln's integration tests.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kiln binary under test: this build's, or the one KILN_TEST_BIN names (to run a suite
/// against another kiln, an older one say, and compare).
pub fn kiln() -> Command {
    match std::env::var_os("KILN_TEST_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_kiln")),
    }
}

/// ../shared/conformance/linuxkit, or None (with a message) when it is absent.
pub fn conformance_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/linuxkit");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipping: {} is absent", d.display());
        None
    }
}

/// Run a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store with every fixture image imported.
pub fn fixture_store(dir: &Path) -> PathBuf {
    let cache = dir.join("cache");
    let conf = conformance_dir().expect("conformance corpus");
    let mut images: Vec<PathBuf> = std::fs::read_dir(conf.join("images"))
        .expect("images")
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    for img in images {
        run_ok(
            kiln()
                .arg("cache")
                .arg("import")
                .arg(&img)
                .arg("--cache")
                .arg(&cache),
        );
    }
    cache
}

/// The file system a tar describes, one line per path as in the conformance listings, the last
/// entry for a path winning (as when extracting); also the content of every regular file.
pub fn listing(tar_bytes: &[u8]) -> (BTreeMap<String, String>, BTreeMap<String, Vec<u8>>) {
    let mut lines = BTreeMap::new();
    let mut contents = BTreeMap::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        let h = e.header().clone();
        let mode = format!("{:04o}", h.mode().expect("mode") & 0o7777);
        let (uid, gid) = (h.uid().expect("uid"), h.gid().expect("gid"));
        let link = e
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_default();
        let (kind, size, tail) = match h.entry_type() {
            tar::EntryType::Directory => ("dir", 0, String::new()),
            tar::EntryType::Symlink => ("symlink", 0, link),
            tar::EntryType::Link => ("hardlink", 0, link),
            tar::EntryType::Char => ("char", 0, String::new()),
            tar::EntryType::Block => ("block", 0, String::new()),
            tar::EntryType::Fifo => ("fifo", 0, String::new()),
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("data");
                let hash = hex::encode(Sha256::digest(&data));
                let size = data.len();
                contents.insert(path.clone(), data);
                ("file", size, hash)
            }
        };
        lines.insert(
            path.clone(),
            format!("{path}\t{kind}\t{mode}\t{uid}\t{gid}\t{size}\t{tail}"),
        );
    }
    (lines, contents)
}

/// One member of a crafted layer: raw path (written verbatim, even `..`), kind and data.
pub enum Member<'a> {
    /// A regular file.
    File(&'a str, &'a [u8]),
    /// A directory.
    Dir(&'a str),
    /// A symlink to a target.
    Symlink(&'a str, &'a str),
    /// A hard link to a target.
    Hardlink(&'a str, &'a str),
}

/// A layer tar whose member names are written raw, bypassing the tar crate's path checks.
pub fn raw_layer(members: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_old();
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match m {
            Member::File(n, d) => (n, tar::EntryType::Regular, d, None),
            Member::Dir(n) => (n, tar::EntryType::Directory, b"", None),
            Member::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t)),
            Member::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t)),
        };
        let raw = h.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            raw.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// The OCI digest (`sha256:HEX`) of `data`.
pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An OCI-layout tar holding one image named `name` with the given (uncompressed) layers.
pub fn oci_archive(name: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})).expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": l.len()})).collect::<Vec<_>>(),
    })).expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}]})).expect("json");
    let blobs: Vec<&[u8]> = layers
        .iter()
        .map(Vec::as_slice)
        .chain([config.as_slice(), manifest.as_slice()])
        .collect();
    layout_tar(&blobs, &index)
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A store shared by the tests of this build (under the target directory), holding the Debian
/// base image as `debian:bookworm` (from scripts/base-image.sh). Packages built into it by one
/// test are reused by the next; kiln's store is safe for concurrent use.
pub fn shared_store() -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-store");
    let probe = kiln()
        .args(["cache", "ls", "--cache"])
        .arg(&cache)
        .output()
        .expect("spawn kiln");
    if !String::from_utf8_lossy(&probe.stdout).contains("debian:bookworm") {
        let out = run_ok(Command::new("bash").arg(repo_root().join("scripts/base-image.sh")));
        run_ok(
            kiln()
                .args(["image", "import"])
                .arg(out.trim())
                .arg("debian:bookworm")
                .arg("--cache")
                .arg(&cache),
        );
    }
    cache
}

/// Build the packages under pkg/ named in `names` into `cache`; returns their image names.
pub fn build_packages(cache: &Path, names: &[&str]) -> Vec<String> {
    let mut cmd = kiln();
    cmd.args(["pkg", "build", "--cache"]).arg(cache);
    for n in names {
        cmd.arg(repo_root().join("pkg").join(n));
    }
    run_ok(&mut cmd).lines().map(str::to_string).collect()
}

/// `kiln build -f kernel+initrd --name NAME --dir DIR MANIFEST` with the store at `cache`;
/// returns DIR/NAME, what `kiln run qemu` takes.
pub fn build_system(cache: &Path, manifest: &Path, dir: &Path, name: &str) -> PathBuf {
    run_ok(
        kiln()
            .args(["build", "-f", "kernel+initrd", "--name", name, "--cache"])
            .arg(cache)
            .arg("--dir")
            .arg(dir)
            .arg(manifest),
    );
    dir.join(name)
}

/// A manifest image reference to the package pkg/NAME, as `"@pkg:/abs/path"` (quoted YAML).
pub fn pkg_ref(name: &str) -> String {
    format!("\"@pkg:{}\"", repo_root().join("pkg").join(name).display())
}

/// A manifest of a test system: `kernel`, `init`, and two onboot containers of `busybox`: one
/// running `marker` (a YAML flow sequence, the command, in the host's PID namespace), then one
/// powering the machine off.
pub fn marker_system(kernel: &str, init: &str, busybox: &str, marker: &str) -> String {
    format!(
        r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0"
init:
  - {init}
onboot:
  - name: marker
    image: {busybox}
    command: {marker}
    pid: host
  - name: poweroff
    image: {busybox}
    command: ["/sbin/poweroff", "-f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#
    )
}

/// Write `manifest` (YAML text) as DIR/NAME.yml and build it; returns the system's NAME prefix.
pub fn build_manifest(cache: &Path, manifest: &str, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yml"));
    std::fs::write(&path, manifest).expect("manifest");
    build_system(cache, &path, dir, name)
}

/// Build examples/NAME.yml (with kiln-init and the packages it names) into DIR; returns the
/// system's NAME prefix.
pub fn build_example(dir: &Path, name: &str) -> PathBuf {
    let cache = shared_store();
    build_init();
    let manifest = repo_root().join("examples").join(format!("{name}.yml"));
    build_system(&cache, &manifest, dir, name)
}

/// Boot a system that powers itself off; asserts it did and returns the console output.
pub fn boot_ok(system: &Path, extra: &[&str]) -> String {
    let (status, console) = run_system(system, extra);
    assert!(status.success(), "exit {status:?}:\n{console}");
    console
}

/// `kiln run qemu --accel tcg EXTRA... SYSTEM`, bounded to 240 s; returns the exit status and
/// the console output.
pub fn run_system(system: &Path, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new("timeout")
        .arg("240")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "qemu", "--accel", "tcg"])
        .args(extra)
        .arg(system)
        .output()
        .expect("spawn kiln run qemu");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Build kiln-init (scripts/build-init.sh), which pkg/init takes as an extra source.
pub fn build_init() {
    run_ok(Command::new("bash").arg(repo_root().join("scripts/build-init.sh")));
}

/// An OCI-layout tar holding one multi-platform image named `name`: an index with one manifest
/// per `(architecture, layer)`.
pub fn oci_index_archive(name: &str, platforms: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut entries = Vec::new();
    for (arch, layer) in platforms {
        let config = serde_json::to_vec(&serde_json::json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}})).expect("json");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": layer.len()}],
        })).expect("json");
        entries.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(), "platform": {"architecture": arch, "os": "linux"}}));
        blobs.extend([layer.clone(), config, manifest]);
    }
    let image_index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries})).expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(&image_index), "size": image_index.len(),
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}}]})).expect("json");
    blobs.push(image_index);
    let blobs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    layout_tar(&blobs, &index)
}

/// An OCI image layout as a tar: the blobs, `oci-layout` and `index.json`.
pub fn layout_tar(blobs: &[&[u8]], index: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, data).expect("append");
    };
    for blob in blobs {
        add(format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
    }
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), index);
    b.into_inner().expect("tar")
}

/// Every blob in the store at `cache` holds what its name says.
pub fn assert_store_consistent(cache: &Path) {
    for e in std::fs::read_dir(cache.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
    {
        let data = std::fs::read(e.path()).expect("read blob");
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            e.file_name().to_string_lossy(),
            "blob {} does not hold what its name says",
            e.path().display()
        );
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice), for a server the
/// test starts or a port it publishes.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The busybox package (built into the shared store) unpacked as a bundle root under the
/// target directory's `name`, with `mount_points` created in it. Returns the root.
pub fn unpacked_busybox(name: &str, mount_points: &[&str]) -> PathBuf {
    let cache = shared_store();
    let built = build_packages(&cache, &["busybox"]);
    let image = built.last().expect("busybox image name").trim().to_string();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    run_ok(
        kiln()
            .args(["image", "unpack", "--cache"])
            .arg(&cache)
            .arg(&image)
            .arg(&dir),
    );
    let root = dir.join("rootfs");
    for d in mount_points {
        std::fs::create_dir_all(root.join(d)).expect("mount point");
    }
    root
}

/// Whether the test runs as root; otherwise a skip, which fails under CI (set `CI`): tests of
/// containers, mounts and RUN steps need root.
pub fn is_root() -> bool {
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "this test runs containers: run it as root"
        );
        eprintln!("skipping: not root");
    }
    root
}

/// Whether every tool is on PATH. With CI=true a missing one fails the test; elsewhere the
/// test is skipped with a message (false).
pub fn tools_present(tools: &[&str]) -> bool {
    let have = |tool: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI needs {missing:?}: run scripts/install-deps.sh");
    }
    eprintln!("skipping: {missing:?} not installed (scripts/install-deps.sh installs them)");
    false
}

/// The Python of the independent checkers from PyPI (cryptography, spdx-tools,
/// cyclonedx-python-lib) that scripts/install-deps.sh puts in a virtual environment:
/// KILN_TEST_PYTHON, else `$XDG_CACHE_HOME/kiln/python` (`~/.cache/kiln/python`). `None`, with
/// the reason printed, when it is missing outside CI; in CI a missing one fails the test.
#[allow(dead_code)]
pub fn checker_python() -> Option<PathBuf> {
    let python = match std::env::var_os("KILN_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_default()
            .join("kiln/python/bin/python3"),
    };
    let ok = Command::new(&python)
        .args(["-c", "import cryptography, spdx_tools, cyclonedx"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI needs the Python checkers at {}: run scripts/install-deps.sh",
            python.display()
        );
    }
    eprintln!(
        "skipping: no Python checkers at {} (scripts/install-deps.sh installs them)",
        python.display()
    );
    None
}

/// Debian's docker-registry (distribution v2.8) on 127.0.0.1, killed when dropped.
pub struct Registry {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its directory: configuration, storage, and what the caller put there (certificates).
    pub dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start docker-registry in `dir` on a free port; `http_extra` (indented YAML) is added to its
/// `http:` section, as a `tls:` block. Returns once it accepts connections.
pub fn start_registry_in(dir: tempfile::TempDir, http_extra: &str) -> Registry {
    use std::time::{Duration, Instant};
    let addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let mut reg = Registry { child, addr, dir };
    // Ready when it accepts connections (bounded wait, polling).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&reg.addr).is_err() {
        if let Ok(Some(status)) = reg.child.try_wait() {
            panic!(
                "docker-registry exited ({status}) before listening on {}",
                reg.addr
            );
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start on {}",
            reg.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

/// The digest the store at `cache` names `name` with (`kiln cache ls --json`).
pub fn digest_of(cache: &Path, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        kiln().args(["cache", "ls", "--json", "--cache"]).arg(cache),
    ))
    .expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v}"))["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// The shared store with the Debian base image for arm64 as well: `debian:bookworm` then names
/// both platforms (the arm64 tree is made by `scripts/base-image.sh arm64`, through qemu-user).
pub fn shared_store_arm64() -> PathBuf {
    static ARM64: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let cache = shared_store();
    let _one_at_a_time = ARM64.lock().unwrap_or_else(|e| e.into_inner());
    let listing = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    let has_arm64 = listing
        .lines()
        .any(|l| l.contains("debian:bookworm") && l.contains("linux/arm64"));
    if !has_arm64 {
        let out = run_ok(
            Command::new("bash")
                .arg(repo_root().join("scripts/base-image.sh"))
                .arg("arm64"),
        );
        run_ok(
            kiln()
                .args(["--arch", "arm64", "image", "import"])
                .arg(out.trim())
                .arg("debian:bookworm")
                .arg("--cache")
                .arg(&cache),
        );
    }
    cache
}

/// The busybox package built into the shared store, exported (`kiln cache export`) to
/// `archive` for tests that give it to stores of their own; returns its name.
pub fn busybox_archive(archive: &Path) -> String {
    let cache = shared_store();
    let busybox = build_packages(&cache, &["busybox"])
        .last()
        .expect("the busybox image")
        .trim()
        .to_string();
    run_ok(
        kiln()
            .args(["cache", "export", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(archive)
            .arg(&busybox),
    );
    busybox
}
