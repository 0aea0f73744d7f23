//! A RUN step of `kiln image build` is confined as Docker confines a container by default, as
//! root on this machine: it cannot create a block device, write a host sysctl, remount /sys
//! read-write or load a kernel module, and its effective capabilities are Docker's default set.
//! Each probe prints a line the test reads from the build's output (RUN output goes to stderr
//! with -v).
//! A fork bomb in a step stops at the step's process limit, and a `kill -9` of kiln during a
//! step leaves none of the step's processes, mounts or cgroup behind.

mod common;

use common::{kiln, shared_store};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Docker's default capability set as /proc/self/status shows it.
const DOCKER_CAP_EFF: &str = "00000000a80425fb";

/// finit_module(2) on this architecture.
#[cfg(target_arch = "x86_64")]
const FINIT_MODULE: u32 = 313;
#[cfg(target_arch = "aarch64")]
const FINIT_MODULE: u32 = 273;

/// Build a one-step Dockerfile FROM the Debian base image and return the build's output.
fn build(run: &str) -> String {
    let (ok, text) = try_build(&format!("RUN {run}"), &[]);
    assert!(ok, "the build failed:\n{text}");
    text
}

/// `kiln image build --no-cache -t TAG` in the shared store, with RUN output shown on stderr
/// (`-v --progress plain`), where the probes read it; the context is still to add.
fn image_build(tag: &str) -> Command {
    let mut cmd = kiln();
    cmd.args([
        "-v",
        "--progress",
        "plain",
        "image",
        "build",
        "--no-cache",
        "-t",
        tag,
    ])
    .arg("--cache")
    .arg(shared_store());
    cmd
}

/// Build a Dockerfile FROM the Debian base image with `step`, passing `args` to `kiln image
/// build`; returns whether it succeeded, and its output.
fn try_build(step: &str, args: &[&str]) -> (bool, String) {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM debian:bookworm\n{step}\n"),
    )
    .expect("Dockerfile");
    let out = image_build("kiln-test/sandbox")
        .args(args)
        .arg(context.path())
        .output()
        .expect("spawn kiln image build");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn an_insecure_run_step_needs_the_builds_permission_and_is_named() {
    let step = "RUN --security=insecure echo cap_eff=$(sed -n 's/^CapEff:\\t*//p' /proc/self/status); \
                echo seccomp=$(sed -n 's/^Seccomp:\\t*//p' /proc/self/status)";
    let (ok, text) = try_build(step, &[]);
    assert!(!ok, "an insecure step ran without --allow:\n{text}");
    assert!(
        text.contains("Dockerfile:2") && text.contains("--allow security.insecure"),
        "{text}"
    );
    assert!(!text.contains("cap_eff="), "the step ran:\n{text}");

    let (ok, text) = try_build(step, &["--allow", "security.insecure"]);
    assert!(ok, "the build failed:\n{text}");
    assert!(text.contains("RUN --security=insecure"), "{text}");
    assert!(text.contains("no sandbox"), "{text}");
    // All of root's capabilities (more than Docker's set), and no seccomp filter.
    let caps = u64::from_str_radix(probe(&text, "cap_eff"), 16).expect("CapEff in hex");
    let docker = u64::from_str_radix(DOCKER_CAP_EFF, 16).expect("hex");
    assert_eq!(caps & docker, docker, "{text}");
    assert_ne!(caps, docker, "{text}");
    assert_eq!(probe(&text, "seccomp"), "0", "{text}");
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

/// A running `kiln image build` of `dockerfile`, killed (SIGKILL) when dropped.
struct Build {
    child: Child,
    _context: tempfile::TempDir,
}

impl Drop for Build {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start building `dockerfile` in the shared store, with `env` added to kiln's environment and
/// stderr (where RUN output goes with -v) piped.
fn start_build(dockerfile: &str, env: &[(&str, &str)]) -> Build {
    let context = tempfile::tempdir().expect("tempdir");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    let child = image_build("kiln-test/sandbox-limits")
        .arg(context.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln image build");
    Build {
        child,
        _context: context,
    }
}

/// The lines of the build's stderr, each with the time it was read, as they come.
fn lines(build: &mut Build) -> mpsc::Receiver<(Instant, String)> {
    let stderr = build.child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Poll `check` every 20 ms until it gives a value or `limit` has passed.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of the processes running now.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes whose environment or command line holds `marker`.
fn with_marker(marker: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            ["environ", "cmdline"].iter().any(|file| {
                std::fs::read(format!("/proc/{pid}/{file}"))
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
            })
        })
        .collect()
}

/// The parent of `pid`, from /proc/PID/status.
fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether `ancestor` is among the ancestors of `pid`.
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        match parent(p) {
            Some(a) if a == ancestor => return true,
            Some(a) if a > 1 => p = a,
            _ => return false,
        }
    }
    false
}

/// The mount points under `dir` in the mount namespace of `pid` ("self" for this process).
fn mounts_under(pid: &str, dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The directory of the pids cgroup (cgroup v1 pids hierarchy, or v2) process `pid` is in.
fn pids_cgroup(pid: u32) -> Option<PathBuf> {
    let list = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    list.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            Some(Path::new("/sys/fs/cgroup/pids").join(path))
        } else if controllers.is_empty()
            && std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            Some(Path::new("/sys/fs/cgroup").join(path))
        } else {
            None
        }
    })
}

/// The pids cgroup of the RUN step kiln `kiln_pid` is running (`kiln/run-PID-N`, cgroup v1 or
/// v2).
fn step_cgroup(kiln_pid: u32) -> Option<PathBuf> {
    let prefix = format!("run-{kiln_pid}-");
    ["/sys/fs/cgroup/pids/kiln", "/sys/fs/cgroup/kiln"]
        .iter()
        .filter_map(|base| std::fs::read_dir(base).ok())
        .flat_map(|entries| entries.flatten())
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// A number from a cgroup file: the whole file, or the value after `key ` in it.
fn cgroup_value(dir: &Path, file: &str, key: Option<&str>) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    match key {
        None => text.trim().parse().ok(),
        Some(key) => text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok()),
    }
}

#[test]
fn a_fork_bomb_in_a_run_step_stops_at_the_process_limit() {
    let limit = kiln_build::DEFAULT_PIDS_LIMIT;
    // The step (bash, PID 1 of its namespace) starts the bomb (dash) in the background and
    // waits, with builtins only (its forks may fail), for SIGUSR1 from the test (at most
    // 120 s); then it exits, and with it (the kernel sees to it) every process of its
    // namespace.
    let script = "trap 'echo bomb=stopping' USR1; sleep 120 & hold=$!; \
         sh -c 'b(){ b|b& }; b' 2>/dev/null & \
         echo bomb=started; wait $hold; echo bomb=done";
    let dockerfile = format!("FROM debian:bookworm\nSHELL [\"/bin/bash\", \"-c\"]\nRUN {script}\n");
    let mut build = start_build(&dockerfile, &[]);
    let kiln_pid = build.child.id();
    let rx = lines(&mut build);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut out = String::new();
    let next_line = |out: &mut String| -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, line)) => {
                out.push_str(&line);
                out.push('\n');
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the build did not end within 300 s:\n{out}")
            }
        }
    };
    while next_line(&mut out).is_some_and(|l| l.trim() != "bomb=started") {}
    assert!(
        out.contains("bomb=started"),
        "the step did not start:\n{out}"
    );
    let cgroup = step_cgroup(kiln_pid).expect("the step has no pids cgroup");
    assert_eq!(cgroup_value(&cgroup, "pids.max", None), Some(limit));
    // The bomb reaches the limit: the kernel refuses its forks.
    let mut highest = 0;
    let refused = poll(Duration::from_secs(120), || {
        let current = cgroup_value(&cgroup, "pids.current", None)?;
        highest = highest.max(current);
        let refused = cgroup_value(&cgroup, "pids.events", Some("max"))?;
        (refused > 0 && current + 64 >= limit).then_some(refused)
    });
    assert!(
        refused.is_some(),
        "the bomb did not reach the limit (at most {highest} processes)"
    );
    // Meanwhile the host starts a process.
    let started = Instant::now();
    let status = std::process::Command::new("true")
        .status()
        .expect("the host cannot start a process");
    assert!(status.success());
    eprintln!(
        "the host started `true` in {:?} while the step had {highest} processes and {} \
         forks were refused",
        started.elapsed(),
        refused.unwrap_or_default()
    );
    assert!(
        highest <= limit,
        "{highest} processes, over the limit {limit}"
    );
    if let Some(peak) = cgroup_value(&cgroup, "pids.peak", None) {
        assert!(peak <= limit, "{peak} processes, over the limit {limit}");
    }
    // Tell the step's PID 1 (the process whose innermost pid is 1) to end the bomb.
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("cgroup.procs");
    let init = procs
        .lines()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|p| p.split_whitespace().last())
                    == Some("1")
            })
        })
        .expect("the step's PID 1")
        .to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-USR1", &init])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let signalled_at = Instant::now();
    while next_line(&mut out).is_some() {}
    let status = build.child.wait().expect("wait");
    eprintln!(
        "the build ended {:?} after the step was told to stop",
        signalled_at.elapsed()
    );
    assert!(status.success(), "the build failed:\n{out}");
    assert!(out.contains("bomb=done"), "{out}");
    assert!(!cgroup.exists(), "{} was left", cgroup.display());
}

#[test]
fn kill_9_of_kiln_during_a_run_step_leaves_no_process_mount_or_cgroup() {
    let marker = format!("kiln-kill-test-{}", std::process::id());
    let dockerfile = format!("FROM debian:bookworm\nRUN KILN_TEST_MARKER={marker} sleep 1000\n");
    // kiln's own marker, which the runtime's process it forks shares.
    let mut build = start_build(&dockerfile, &[("KILN_TEST_OWNER", marker.as_str())]);
    let _lines = lines(&mut build);
    let kiln_pid = build.child.id();
    // The step's `sleep 1000`: it carries the marker in its environment (kiln's processes
    // carry it too, the step's shell in its command) and descends from kiln.
    let sleep = poll(Duration::from_secs(120), || {
        with_marker(&format!("KILN_TEST_MARKER={marker}"))
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
    })
    .expect("the step's sleep did not start within 120 s");
    assert!(descends_from(sleep, kiln_pid), "{sleep} is not kiln's");
    let owned = with_marker(&marker);
    assert!(
        owned.len() >= 3,
        "kiln, its runtime process and the step: {owned:?}"
    );
    // The build's overlay, seen in kiln's mount namespace and not on the host.
    let work = shared_store().join("build").join("tmp");
    let overlays = mounts_under(&kiln_pid.to_string(), &work);
    assert!(!overlays.is_empty(), "no overlay under {}", work.display());
    // The build's own scratch directory: tmp/NAME/...
    let rel = Path::new(&overlays[0])
        .strip_prefix(&work)
        .expect("under the work area")
        .components()
        .next()
        .expect("scratch name")
        .as_os_str()
        .to_owned();
    let scratch = work.join(rel);
    assert!(
        mounts_under("self", &scratch).is_empty(),
        "the build's mounts are on the host: {:?}",
        mounts_under("self", &scratch)
    );
    let cgroup = pids_cgroup(sleep).expect("the step's pids cgroup");
    assert!(
        cgroup.to_string_lossy().contains("/kiln/run-") && cgroup.is_dir(),
        "{}",
        cgroup.display()
    );

    build.child.kill().expect("kill -9 kiln");
    build.child.wait().expect("reap kiln");

    let left = poll(Duration::from_secs(20), || {
        with_marker(&marker).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "processes of the step remain: {:?}",
        with_marker(&marker)
    );
    // No mount namespace holds the build's mounts any more.
    let holders = || {
        pids()
            .into_iter()
            .filter(|pid| !mounts_under(&pid.to_string(), &scratch).is_empty())
            .collect::<Vec<_>>()
    };
    assert!(
        poll(Duration::from_secs(20), || holders()
            .is_empty()
            .then_some(()))
        .is_some(),
        "processes still see mounts under {}: {:?}",
        scratch.display(),
        holders()
    );
    assert!(
        mounts_under("self", &work)
            .iter()
            .all(|m| !m.starts_with(&*scratch.to_string_lossy()))
    );
    assert!(
        poll(Duration::from_secs(20), || (!cgroup.exists()).then_some(())).is_some(),
        "the step's cgroup {} remains",
        cgroup.display()
    );
}
