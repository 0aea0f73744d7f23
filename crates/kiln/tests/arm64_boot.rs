//! One manifest, two machines: examples/hello.yml, the manifest the x86_64 tests boot, built
//! with `--arch arm64` (every package built for arm64 on this x86_64 machine) boots under
//! qemu-system-aarch64 (`-M virt`, TCG) to its greeting and powers off cleanly, as
//! kernel+initrd (no firmware: the power-off is PSCI's) and as a UEFI disk, ISO and UKI (EDK
//! II's arm64 firmware). A system that stays up is shut down by qemu's power button, which
//! `virt` without firmware delivers as a gpio-keys KEY_POWER event.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `kiln --arch arm64 build -f FORMATS --name NAME MANIFEST` into `dir`.
fn build_arm64(cache: &Path, dir: &Path, formats: &str, name: &str, manifest: &Path) {
    run_ok(
        kiln()
            .args(["--arch", "arm64", "build", "-f", formats, "--name", name])
            .arg("--cache")
            .arg(cache)
            .arg("--dir")
            .arg(dir)
            .arg(manifest),
    );
}

/// `kiln --arch arm64 run qemu --accel tcg EXTRA... SYSTEM`, bounded to 300 s; asserts qemu
/// exited 0 (the guest powered itself off) and returns the console.
fn boot(system: &Path, extra: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["--arch", "arm64", "run", "qemu", "--accel", "tcg"])
        .args(["--networking", "none", "--mem", "1024"])
        .args(extra)
        .arg(system)
        .output()
        .expect("spawn kiln run qemu");
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}:\n{console}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    console
}

fn assert_greets_and_powers_off(what: &str, console: &str) {
    assert!(
        console.contains("hello: Hello from kiln, running Linux") && console.contains("arm64"),
        "{what}: no greeting from an arm64 kernel:\n{console}"
    );
    assert!(
        console.contains("kiln-init: shutting down") && console.contains("reboot: Power down"),
        "{what}: no clean power-off:\n{console}"
    );
}

/// The shared store with everything examples/hello.yml and the boot media need for arm64.
fn arm64_store() -> std::path::PathBuf {
    let cache = shared_store_arm64();
    build_init();
    // The bootloader package lists amd64 and arm64: both are built.
    build_packages(&cache, &["bootloader"]);
    cache
}

#[test]
fn hello_boots_on_arm64_from_the_same_manifest() {
    if !is_root() || !tools_present(&["qemu-system-aarch64", "aarch64-linux-gnu-gcc", "file"]) {
        return;
    }
    let cache = arm64_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = repo_root().join("examples/hello.yml");
    build_arm64(
        &cache,
        dir.path(),
        "kernel+initrd,raw-efi,iso-efi,uki",
        "hello",
        &hello,
    );
    let kernel = run_ok(
        Command::new("file")
            .arg("-b")
            .arg(dir.path().join("hello-kernel")),
    );
    assert!(kernel.contains("ARM64"), "the kernel: {kernel}");

    let direct = boot(&dir.path().join("hello"), &[]);
    assert_greets_and_powers_off("kernel+initrd", &direct);
    let uefi = boot(&dir.path().join("hello-efi.img"), &[]);
    assert!(
        uefi.contains("BdsDxe"),
        "not booted by UEFI firmware:\n{uefi}"
    );
    assert_greets_and_powers_off("raw-efi under UEFI", &uefi);
    for (file, what) in [("hello-efi.iso", "iso-efi"), ("hello.efi", "uki")] {
        let console = boot(&dir.path().join(file), &[]);
        assert_greets_and_powers_off(what, &console);
    }
}

#[test]
fn the_power_button_shuts_an_arm64_system_down() {
    if !is_root() || !tools_present(&["qemu-system-aarch64", "aarch64-linux-gnu-gcc"]) {
        return;
    }
    let cache = arm64_store();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("up.yml");
    std::fs::write(
        &manifest,
        format!(
            "kernel:\n  image: {kernel}\n  cmdline: \"console=ttyS0\"\ninit:\n  - {init}\n\
             services:\n  - name: waiter\n    image: {busybox}\n    \
             command: [\"/bin/sh\", \"-c\", \"echo up and waiting; exec sleep 3600\"]\n",
            kernel = pkg_ref("kernel"),
            init = pkg_ref("init"),
            busybox = pkg_ref("busybox"),
        ),
    )
    .expect("manifest");
    build_arm64(&cache, dir.path(), "kernel+initrd", "up", &manifest);
    let state = dir.path().join("state");
    run_ok(
        kiln()
            .args(["--arch", "arm64", "run", "qemu", "--accel", "tcg"])
            .args([
                "--networking",
                "none",
                "--mem",
                "1024",
                "--detached",
                "--state",
            ])
            .arg(&state)
            .arg(dir.path().join("up")),
    );
    let console = || std::fs::read_to_string(state.join("console.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(180);
    // The button is watched once the modules of the devices present are loaded.
    let ready =
        |c: &str| c.contains("up and waiting") && c.contains("modules for the devices present");
    while !ready(&console()) {
        if Instant::now() > deadline {
            let _ = kiln()
                .args(["run", "stop", "--timeout", "5"])
                .arg(&state)
                .status();
            panic!("the service did not start:\n{}", console());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    run_ok(kiln().args(["run", "stop", "--timeout", "120"]).arg(&state));
    let log = console();
    assert!(log.contains("kiln-init: power button pressed"), "{log}");
    assert!(
        log.contains("kiln-init: shutting down") && log.contains("reboot: Power down"),
        "{log}"
    );
}
