//! examples/redis-os.yml, the DockerCon 2017 demo: the system gets its address by DHCP, Redis
//! runs as a service with its data on an ext4 disk, and the published port reaches it from
//! this machine: `redis-cli -p PORT ping` answers PONG and a SET value comes back from GET.
//! `kiln run stop` then presses the ACPI power button and the guest shuts down cleanly.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (redis-tools) is installed by scripts/install-deps.sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Kills the detached qemu when the test ends, passed or not.
struct Vm(String);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
    }
}

#[test]
fn redis_os_answers_on_the_published_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_example(dir.path(), "redis-os");
    let port = free_port();
    let state = dir.path().join("state");
    let disk = format!("{},size=128M", dir.path().join("data.img").display());
    run_ok(
        kiln()
            .args(["run", "qemu", "--accel", "tcg", "--disk", &disk, "-p"])
            .arg(format!("{port}:6379"))
            .args(["--detached", "--state"])
            .arg(&state)
            .arg(&system),
    );
    let _vm = Vm(std::fs::read_to_string(state.join("pid"))
        .expect("pid")
        .trim()
        .to_string());
    let console =
        |state: &Path| std::fs::read_to_string(state.join("console.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut pong = String::new();
    while Instant::now() < deadline {
        pong = redis_cli(port, &["ping"]);
        if pong == "PONG" {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = console(&state);
    assert_eq!(pong, "PONG", "no PONG on port {port}; console:\n{log}");
    assert!(
        log.contains("dhcp: eth0: 10.0.2.15/24 via 10.0.2.2"),
        "{log}"
    );
    assert!(
        log.contains("mount: mounting /dev/vda (ext4) on /var/lib"),
        "{log}"
    );
    assert_eq!(redis_cli(port, &["set", "kiln", "as-an-os"]), "OK");
    assert_eq!(redis_cli(port, &["get", "kiln"]), "as-an-os");

    run_ok(kiln().args(["run", "stop", "--timeout", "120"]).arg(&state));
    let log = console(&state);
    assert!(log.contains("kiln-init: power button pressed"), "{log}");
    assert!(log.contains("kiln-init: shutting down"), "{log}");
}
