//! A RUN step of `kiln image build` is confined as Docker confines a container by default, as
//! root on this machine: it cannot create a block device, write a host sysctl, remount /sys
//! read-write or load a kernel module, and its effective capabilities are Docker's default set.
//! Each probe prints a line the test reads from the build's output (RUN output goes to stderr).

mod common;

use common::{kiln, shared_store};
use std::path::Path;

/// Docker's default capability set as /proc/self/status shows it.
const DOCKER_CAP_EFF: &str = "00000000a80425fb";

/// finit_module(2) on this architecture.
#[cfg(target_arch = "x86_64")]
const FINIT_MODULE: u32 = 313;
#[cfg(target_arch = "aarch64")]
const FINIT_MODULE: u32 = 273;

/// Build a one-step Dockerfile FROM the Debian base image and return the build's output.
fn build(run: &str) -> String {
    let cache = shared_store();
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM debian:bookworm\nRUN {run}\n"),
    )
    .expect("Dockerfile");
    let out = kiln()
        .args([
            "image",
            "build",
            "--no-cache",
            "-t",
            "kiln-test/sandbox",
            "--cache",
        ])
        .arg(&cache)
        .arg(context.path())
        .output()
        .expect("spawn kiln image build");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the build failed:\n{text}");
    text
}

/// The value printed after `name=` by the step.
fn probe<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in:\n{out}"))
        .trim()
}

#[test]
fn a_run_step_has_dockers_default_capabilities_and_no_new_privileges() {
    let out = build(
        "echo cap_eff=$(sed -n 's/^CapEff:\\t*//p' /proc/self/status); \
         echo cap_bnd=$(sed -n 's/^CapBnd:\\t*//p' /proc/self/status); \
         echo nnp=$(sed -n 's/^NoNewPrivs:\\t*//p' /proc/self/status); \
         echo seccomp=$(sed -n 's/^Seccomp:\\t*//p' /proc/self/status); \
         echo pid=$$",
    );
    assert_eq!(probe(&out, "cap_eff"), DOCKER_CAP_EFF, "{out}");
    assert_eq!(probe(&out, "cap_bnd"), DOCKER_CAP_EFF, "{out}");
    assert_eq!(probe(&out, "nnp"), "1", "{out}");
    assert_eq!(probe(&out, "seccomp"), "2", "{out}");
    // The step is PID 1 of its own PID namespace.
    assert_eq!(probe(&out, "pid"), "1", "{out}");
}

#[test]
fn a_run_step_cannot_create_a_block_device_but_can_a_fifo() {
    let out = build(
        "if mknod /tmp/disk b 8 0 2>/tmp/err; then echo block=made; \
         else echo block=refused; cat /tmp/err; fi; \
         if mknod /tmp/fifo p; then echo fifo=made; else echo fifo=refused; fi",
    );
    assert_eq!(probe(&out, "block"), "refused", "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(probe(&out, "fifo"), "made", "{out}");
}

#[test]
fn a_run_step_cannot_write_a_host_sysctl() {
    let path = Path::new("/proc/sys/vm/overcommit_ratio");
    let before = std::fs::read_to_string(path).expect("read the host's value");
    let new = if before.trim() == "51" { "52" } else { "51" };
    let out = build(&format!(
        "if echo {new} > {p}; then echo sysctl=written; else echo sysctl=refused; fi",
        p = path.display()
    ));
    assert_eq!(probe(&out, "sysctl"), "refused", "{out}");
    assert_eq!(
        std::fs::read_to_string(path).expect("read the host's value"),
        before,
        "the host's value changed"
    );
}

#[test]
fn a_run_step_cannot_remount_sys_or_see_masked_paths() {
    let out = build(
        "if mount -o remount,rw /sys 2>/dev/null; then echo remount=done; \
         else echo remount=refused; fi; \
         if touch /sys/kiln-probe 2>/dev/null; then echo sys_write=done; \
         else echo sys_write=refused; fi; \
         echo kcore_size=$(stat -c %s /proc/kcore 2>/dev/null || echo absent); \
         echo firmware=$(ls /sys/firmware 2>/dev/null | wc -l); \
         if mount -t tmpfs none /mnt 2>/dev/null; then echo mount=done; \
         else echo mount=refused; fi",
    );
    assert_eq!(probe(&out, "remount"), "refused", "{out}");
    assert_eq!(probe(&out, "sys_write"), "refused", "{out}");
    assert_eq!(probe(&out, "mount"), "refused", "{out}");
    let kcore = probe(&out, "kcore_size");
    assert!(kcore == "0" || kcore == "absent", "{out}");
    assert_eq!(probe(&out, "firmware"), "0", "{out}");
}

#[test]
fn a_run_step_cannot_load_a_kernel_module() {
    // perl (in every Debian image) makes the raw call: finit_module(-1, "", 0) fails with
    // EBADF for a process allowed to load modules, EPERM for one that is not.
    let out = build(&format!(
        "perl -e 'my $s = \"\"; $r = syscall({FINIT_MODULE}, -1, $s, 0); \
         print \"finit_module=\", ($r == -1 ? $!+0 : \"ok\"), \"\\n\"'"
    ));
    assert_eq!(probe(&out, "finit_module"), libc_eperm(), "{out}");
}

fn libc_eperm() -> &'static str {
    "1"
}
