//! examples/minimal.yml (kiln-init and a getty service, named with `@pkg:` references that
//! `kiln build` resolves and builds) boots under qemu to a shell prompt on the serial console;
//! the test types into it. The shell sends nothing between its prompt and what is typed (no
//! terminal queries such as `ESC [ 6 n`), and it has a terminal size although a serial line
//! reports none.

mod common;

use common::*;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn wait_for(output: &Arc<Mutex<String>>, needle: &str, after: usize, secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        {
            let text = output.lock().expect("lock");
            if let Some(i) = text[after.min(text.len())..].find(needle) {
                return after + i + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the console:\n{text}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Between `prompt` (the offset just past a prompt on the console) and the echo of the command
/// typed there, which starts with `typed`, the console shows no escape sequence.
fn assert_typed_after_prompt(output: &Arc<Mutex<String>>, prompt: usize, typed: &str) {
    let text = output.lock().expect("lock");
    let after = &text[prompt..];
    let echo = after
        .find(typed)
        .unwrap_or_else(|| panic!("{typed:?} is not echoed after the prompt:\n{text}"));
    assert!(
        !after[..echo].contains('\x1b'),
        "the shell wrote {:?} between its prompt and the command typed:\n{text}",
        &after[..echo]
    );
}

#[test]
fn minimal_example_boots_to_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = build_example(dir.path(), "minimal");
    let mut child = kiln()
        .args(["run", "qemu", "--accel", "tcg"])
        .arg(&system)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln run qemu");
    let output = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let sink = Arc::clone(&output);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let at = wait_for(&output, "built-in shell", 0, 240);
    let prompt = wait_for(&output, "# ", at, 30);
    stdin
        .write_all(b"echo kiln-$((6*7)) $(hostname); stty size\n")
        .expect("type");
    let at = wait_for(&output, "kiln-42 kiln", prompt, 30);
    assert_typed_after_prompt(&output, prompt, "echo kiln-");
    // A serial line reports no size: the console's profile gives it the default one.
    let at = wait_for(&output, "24 80", at, 30);
    let next_prompt = wait_for(&output, "# ", at, 30);
    // DHCP ran onboot, and the in-guest CLI reaches kiln-init.
    stdin
        .write_all(b"ip -4 addr show eth0; /run/kiln/kiln-ctl list; /run/kiln/kiln-ctl logs dhcp\n")
        .expect("type");
    let at = wait_for(&output, "inet 10.0.2.15/24", next_prompt, 30);
    assert_typed_after_prompt(&output, next_prompt, "ip -4 addr");
    let at = wait_for(&output, "running (pid", at, 30);
    wait_for(&output, "lease of 10.0.2.15 obtained", at, 30);
    stdin.write_all(b"poweroff -f\n").expect("type");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the guest did not power off");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
