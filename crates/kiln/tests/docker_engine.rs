//! `kiln build --docker`: an image that exists only in a private Docker engine (Debian's
//! docker.io, started by the test) is taken from the engine's store through its API socket.
//! `kiln pkg build --docker`: the packages built are loaded into that engine through its API.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image the test puts into the engine: a name no registry holds.
const IMAGE: &str = "kiln-test-only-in-docker/marker:1";

/// A private dockerd, stopped and its directory removed when dropped (even when the test fails).
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Dockerd {
    fn start() -> Dockerd {
        // Short paths: a unix socket's path is at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kiln-dockerd.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let host = format!("unix://{}", d.join("docker.sock").display());
        let log = std::fs::File::create(d.join("dockerd.log")).expect("dockerd.log");
        let child = Command::new("dockerd")
            .arg("-H")
            .arg(&host)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--bridge=none", "--iptables=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian's docker.io; scripts/install-deps.sh installs it)");
        let mut engine = Dockerd { child, dir, host };
        engine.wait_ready();
        engine
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Poll `docker version` until the engine answers (or dockerd has exited: fail with its log).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("dockerd exited ({status}):\n{}", self.log());
            }
            let ok = self
                .docker()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "dockerd did not answer within 120 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn docker(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", &self.host);
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop the containerd it started; SIGKILL if it does not exit.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A root file system tarball holding only `/marker.txt` with `marker`.
fn rootfs_tar(path: &Path, marker: &[u8]) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(marker.len() as u64);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "marker.txt", marker).expect("tar");
    std::fs::write(path, b.into_inner().expect("tar")).expect("write rootfs tar");
}

fn kiln_build(cache: &Path, dir: &Path, manifest: &Path, docker: Option<&str>) -> Output {
    let mut cmd = kiln();
    cmd.args(["--progress", "plain", "build", "-f", "tar", "--name", "sys"])
        .arg("--cache")
        .arg(cache)
        .arg("--dir")
        .arg(dir)
        .env_remove("DOCKER_HOST");
    if let Some(host) = docker {
        cmd.arg("--docker").env("DOCKER_HOST", host);
    }
    cmd.arg(manifest).output().expect("spawn kiln")
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The content of /marker.txt in the tar build in `dir`.
fn marker_of(dir: &Path) -> Option<String> {
    let data = std::fs::read(dir.join("sys.tar")).expect("sys.tar");
    let (_, contents) = listing(&data);
    contents
        .get("marker.txt")
        .map(|c| String::from_utf8_lossy(c).into_owned())
}

#[test]
fn build_takes_an_image_only_the_docker_engine_has() {
    if !is_root() {
        return;
    }
    let engine = Dockerd::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let marker = |n: u32| {
        format!(
            "only in the docker engine {} {n} {:?}\n",
            std::process::id(),
            std::time::SystemTime::now()
        )
    };
    let put_in_engine = |marker: &str| {
        let rootfs = tmp.path().join("rootfs.tar");
        rootfs_tar(&rootfs, marker.as_bytes());
        run_ok(engine.docker().arg("import").arg(&rootfs).arg(IMAGE));
    };
    let took = "took docker.io/kiln-test-only-in-docker/marker:1 from the Docker engine";
    let first = marker(1);
    put_in_engine(&first);
    let manifest = tmp.path().join("docker.yml");
    std::fs::write(&manifest, format!("init:\n  - {IMAGE}\n")).expect("manifest");

    // Without --docker the image is nowhere kiln looks: the error names it.
    let out = kiln_build(
        &tmp.path().join("cache-plain"),
        &tmp.path().join("plain"),
        &manifest,
        None,
    );
    let text = output_text(&out);
    assert!(!out.status.success(), "built without the engine:\n{text}");
    assert!(
        text.contains("docker.io/kiln-test-only-in-docker/marker:1"),
        "the error does not name the image:\n{text}"
    );

    // With --docker, from an empty store: the image comes from the engine.
    let cache = tmp.path().join("cache");
    let out_dir = tmp.path().join("out");
    let out = kiln_build(&cache, &out_dir, &manifest, Some(&engine.host));
    let text = output_text(&out);
    assert!(out.status.success(), "kiln build --docker failed:\n{text}");
    assert!(
        text.contains(took),
        "no progress line for the import:\n{text}"
    );
    assert_eq!(marker_of(&out_dir).as_deref(), Some(first.as_str()));
    // The store now holds the image under the manifest's name: a build without the engine
    // finds it, and one with the engine finds the same image there and copies nothing.
    let again = tmp.path().join("again");
    let out = kiln_build(&cache, &again, &manifest, None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(marker_of(&again).as_deref(), Some(first.as_str()));
    let out = kiln_build(&cache, &again, &manifest, Some(&engine.host));
    let text = output_text(&out);
    assert!(out.status.success() && !text.contains(took), "{text}");
    assert_store_consistent(&cache);

    // The engine is looked in before the store: a new image of the same name replaces the one
    // the store holds.
    let second = marker(2);
    put_in_engine(&second);
    let newer = tmp.path().join("newer");
    let out = kiln_build(&cache, &newer, &manifest, Some(&engine.host));
    let text = output_text(&out);
    assert!(out.status.success() && text.contains(took), "{text}");
    assert_eq!(marker_of(&newer).as_deref(), Some(second.as_str()));
    assert_store_consistent(&cache);

    // An engine that is not there is an error naming its socket, not a silent pull.
    let gone: PathBuf = tmp.path().join("no-engine.sock");
    let out = kiln_build(
        &tmp.path().join("cache-gone"),
        &tmp.path().join("gone"),
        &manifest,
        Some(&format!("unix://{}", gone.display())),
    );
    let text = output_text(&out);
    assert!(!out.status.success(), "built with no engine:\n{text}");
    assert!(text.contains(&gone.display().to_string()), "{text}");
    // Other schemes are refused clearly.
    let out = kiln_build(
        &tmp.path().join("cache-tcp"),
        &tmp.path().join("tcp"),
        &manifest,
        Some("tcp://127.0.0.1:2375"),
    );
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("only unix sockets"),
        "{text}"
    );
    drop(engine);
}

/// The content of `/file` in the image `name` of the engine, read from its `docker save` export
/// (each layer a tar inside the tar).
fn file_in_engine_image(engine: &Dockerd, name: &str, file: &str) -> Option<Vec<u8>> {
    let out = engine
        .docker()
        .args(["save", name])
        .output()
        .expect("spawn docker save");
    assert!(
        out.status.success(),
        "docker save {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = None;
    let mut outer = tar::Archive::new(&out.stdout[..]);
    for entry in outer.entries().expect("docker save tar") {
        let mut entry = entry.expect("docker save entry");
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read entry");
        // Layers are tars (docker save writes them uncompressed); other members are not.
        let mut layer = tar::Archive::new(&data[..]);
        let Ok(members) = layer.entries() else {
            continue;
        };
        for member in members.flatten() {
            let mut member = member;
            let path = member.path().map(|p| p.to_string_lossy().into_owned());
            if path.is_ok_and(|p| p.trim_start_matches("./") == file) {
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut member, &mut content).expect("read file");
                found = Some(content);
            }
        }
    }
    found
}

#[test]
fn pkg_build_docker_loads_the_built_image_into_the_engine() {
    if !is_root() {
        return;
    }
    let engine = Dockerd::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let pkg = tmp.path().join("hello");
    std::fs::create_dir(&pkg).expect("package dir");
    std::fs::write(pkg.join("build.yml"), "image: hello\norg: kiln-test\n").expect("build.yml");
    std::fs::write(
        pkg.join("Dockerfile"),
        "FROM scratch\nCOPY greeting /greeting\n",
    )
    .expect("Dockerfile");
    let greeting = format!(
        "hello from kiln pkg build --docker {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(pkg.join("greeting"), &greeting).expect("greeting");
    let name = run_ok(kiln().args(["pkg", "show-tag"]).arg(&pkg))
        .trim()
        .to_string();
    assert!(
        name.starts_with("kiln-test/hello:"),
        "show-tag gave {name:?}"
    );
    let cache = tmp.path().join("cache");
    let pkg_build = |host: &str| {
        kiln()
            .args(["pkg", "build", "--docker", "--cache"])
            .arg(&cache)
            .arg(&pkg)
            .env("DOCKER_HOST", host)
            .output()
            .expect("spawn kiln")
    };
    let in_engine = || {
        engine
            .docker()
            .args(["image", "inspect", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(!in_engine(), "{name} is in the engine before the build");

    let out = pkg_build(&engine.host);
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "kiln pkg build --docker failed:\n{text}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        name,
        "pkg build printed:\n{text}"
    );
    assert!(in_engine(), "{name} is not in the engine:\n{text}");
    assert_eq!(
        file_in_engine_image(&engine, &name, "greeting").as_deref(),
        Some(greeting.as_bytes())
    );
    // kiln keeps the image in its store too.
    let listed = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(
        listed.contains(&name),
        "the store does not list {name}:\n{listed}"
    );
    assert_store_consistent(&cache);

    // Already in the store, nothing is built, and the image is loaded again.
    run_ok(engine.docker().args(["image", "rm", &name]));
    assert!(!in_engine(), "docker image rm {name} left it");
    let out = pkg_build(&engine.host);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        in_engine(),
        "{name} was not loaded again:\n{}",
        output_text(&out)
    );

    // An engine that is not there is an error naming its socket.
    let gone = tmp.path().join("no-engine.sock");
    let out = pkg_build(&format!("unix://{}", gone.display()));
    let text = output_text(&out);
    assert!(!out.status.success(), "loaded into no engine:\n{text}");
    assert!(text.contains(&gone.display().to_string()), "{text}");
    drop(engine);
}
