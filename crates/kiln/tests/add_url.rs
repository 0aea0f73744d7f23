//! ADD of an http URL, served by a real HTTP server on 127.0.0.1: the file lands with mode 0600
//! (as Docker does), `--checksum` is verified, and a wrong checksum fails the build naming the
//! Dockerfile line.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn add_url_with_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let www = dir.path().join("www");
    std::fs::create_dir(&www).expect("mkdir");
    std::fs::write(www.join("payload.txt"), "fetched over http\n").expect("write");
    let port = free_port();
    let _server = Server(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sum = "sha256:63c6b0ea2e0ba4f9a3b4ef1b5c6aa0de24a8d8a43a18d0a4ebc0b4c0a2c6e9a1";
    let real = {
        use sha2::{Digest as _, Sha256};
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(b"fetched over http\n"))
        )
    };
    let cache = dir.path().join("cache");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    let url = format!("http://127.0.0.1:{port}/payload.txt");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD --checksum={real} {url} /fetched/\n"),
    )
    .expect("write");
    run_ok(
        kiln()
            .args(["image", "build", "-t", "kiln-test/add-url", "--cache"])
            .arg(&cache)
            .arg(&ctx),
    );
    let bundle = dir.path().join("bundle");
    run_ok(
        kiln()
            .args(["image", "unpack", "kiln-test/add-url", "--cache"])
            .arg(&cache)
            .arg(&bundle),
    );
    let file = bundle.join("rootfs/fetched/payload.txt");
    assert_eq!(
        std::fs::read_to_string(&file).expect("fetched"),
        "fetched over http\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o7777,
        0o600
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\n\nADD --checksum={sum} {url} /fetched/\n"),
    )
    .expect("write");
    let out = kiln()
        .args(["image", "build", "--cache"])
        .arg(&cache)
        .arg(&ctx)
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong checksum was accepted");
    assert!(
        err.contains("Dockerfile:3") && err.contains("checksum mismatch"),
        "{err}"
    );
}
