//! `kiln run qemu`: the hello system (pkg/kernel, pkg/busybox, examples/hello-init) boots with
//! its console on stdout and the run ends with the guest's power-off, attached and detached.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn hello_system(dir: &Path) -> std::path::PathBuf {
    let cache = shared_store();
    let refs = build_packages(&cache, &["kernel", "busybox"]);
    run_ok(
        kiln()
            .args(["image", "build", "-t", "kiln/hello-init", "--build-arg"])
            .arg(format!("BUSYBOX={}", refs[1]))
            .arg("--cache")
            .arg(&cache)
            .arg(repo_root().join("examples/hello-init")),
    );
    let manifest = dir.join("hello.yml");
    std::fs::write(
        &manifest,
        format!(
            "kernel:\n  image: {}\n  cmdline: \"console=ttyS0\"\ninit:\n  - kiln/hello-init\n",
            refs[0]
        ),
    )
    .expect("manifest");
    build_system(&cache, &manifest, dir, "hello")
}

#[test]
fn run_qemu_attached_and_detached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = hello_system(dir.path());
    let (status, console) = run_system(&name, &["--mem", "512", "--networking", "none"]);
    assert!(status.success(), "exit {status:?}\n{console}");
    assert!(console.contains("Hello from kiln: kernel"), "{console}");

    let state = dir.path().join("state");
    let port = free_port();
    let pid = run_ok(
        kiln()
            .args(["run", "qemu", "--accel", "tcg", "--mem", "512", "--disk"])
            .arg(format!(
                "{},size=64M",
                dir.path().join("data.qcow2").display()
            ))
            .arg("-p")
            .arg(format!("{port}:80"))
            .args(["--detached", "--state"])
            .arg(&state)
            .arg(&name),
    );
    assert!(pid.trim().parse::<u32>().is_ok(), "{pid}");
    assert!(
        dir.path().join("data.qcow2").is_file(),
        "the disk was not created"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let log = std::fs::read_to_string(state.join("console.log")).unwrap_or_default();
        let alive = Path::new(&format!("/proc/{}", pid.trim())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .unwrap_or_default()
                .contains(") Z ");
        if log.contains("Hello from kiln") && !alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "detached guest did not greet and power off:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let args = std::fs::read_to_string(state.join("cmdline")).expect("cmdline");
    assert!(
        args.contains(&format!("hostfwd=tcp::{port}-:80")) && args.contains("virtio-blk-pci"),
        "{args}"
    );
}
