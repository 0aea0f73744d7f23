//! `kiln serve` and `kiln metadata create`.
//!
//! A kernel+initrd system (kiln-init, an onboot container printing a marker, another powering
//! off) is served by `kiln serve`: curl fetches its files byte for byte, HEAD gives their
//! length, a missing file is 404, paths leaving the directory (`..`, a symbolic link out) are
//! refused, and NAME.ipxe is the generated script. Then qemu boots it from the network with its
//! built-in iPXE ROM (`-boot n`, user networking's DHCP handing out the script's URL), and the
//! guest prints the marker and powers off.
//!
//! `kiln metadata create` writes an ISO image whose /config and /user-data hold the data,
//! labelled cidata, as isoinfo (genisoimage) reads it.

mod common;

use common::*;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kiln serve --port 127.0.0.1:PORT --directory DIR`, returned once it has said it listens.
fn start_server(dir: &Path, port: u16) -> KillOnDrop {
    let mut child = kiln()
        .args(["-v", "serve", "--port"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--directory")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kiln serve");
    let stderr = child.stderr.take().expect("stderr");
    let server = KillOnDrop(child);
    let mut lines = BufReader::new(stderr).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("kiln serve said nothing"));
    assert!(
        first.contains(&format!("http://127.0.0.1:{port}/")),
        "kiln serve: {first}"
    );
    // The request log keeps being read, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("kiln serve: {line}");
        }
    });
    server
}

/// `curl ARGS URL`: (HTTP status, body).
fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("spawn curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("status code");
    (status, std::fs::read(&body).unwrap_or_default())
}

/// The marker the onboot container prints.
const MARKER: &str = "booted over the network by ipxe";

#[test]
fn serve_files_and_boot_qemu_with_ipxe() {
    let cache = shared_store();
    build_init();
    let refs = build_packages(&cache, &["kernel", "init", "busybox"]);
    let (kernel, init, busybox) = (&refs[0], &refs[1], &refs[2]);
    let outer = tempfile::tempdir().expect("tempdir");
    let served = outer.path().join("served");
    std::fs::create_dir(&served).expect("mkdir");
    build_manifest(
        &cache,
        &format!(
            r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {init}
onboot:
  - name: marker
    image: {busybox}
    command: ["/bin/echo", "{MARKER}"]
  - name: poweroff
    image: {busybox}
    command: ["/sbin/poweroff", "-f"]
    pid: host
    capabilities: [CAP_SYS_BOOT]
"#
        ),
        &served,
        "netboot",
    );
    std::fs::write(outer.path().join("secret"), b"outside").expect("write");
    std::os::unix::fs::symlink("../secret", served.join("escape")).expect("symlink");

    let port = free_port();
    let _server = start_server(&served, port);
    let base = format!("http://127.0.0.1:{port}");

    // Every file byte for byte; HEAD gives the length without the body.
    for name in ["netboot-kernel", "netboot-initrd.img", "netboot-cmdline"] {
        let want = std::fs::read(served.join(name)).expect("built file");
        let (status, got) = curl(&[], &format!("{base}/{name}"));
        assert_eq!(status, 200, "{name}");
        assert!(
            got == want,
            "{name}: {} bytes served, {} on disk",
            got.len(),
            want.len()
        );
        let (status, headers) = curl(&["-I"], &format!("{base}/{name}"));
        let headers = String::from_utf8_lossy(&headers).to_ascii_lowercase();
        assert_eq!(status, 200, "HEAD {name}");
        assert!(
            headers.contains(&format!("content-length: {}\r\n", want.len())),
            "HEAD {name}:\n{headers}"
        );
    }
    assert_eq!(curl(&[], &format!("{base}/missing")).0, 404);
    assert_eq!(curl(&[], &format!("{base}/")).0, 404, "no listings");
    assert_eq!(
        curl(&["-X", "POST"], &format!("{base}/netboot-cmdline")).0,
        405
    );
    // `..` however spelled, and a link leading out of the directory, are refused.
    for path in ["/../secret", "/%2e%2e/secret", "/x/../../secret"] {
        let (status, body) = curl(&["--path-as-is"], &format!("{base}{path}"));
        assert_eq!(status, 400, "{path}");
        assert!(
            !body.starts_with(b"outside"),
            "{path} served the file outside"
        );
    }
    let (status, body) = curl(&[], &format!("{base}/escape"));
    assert_eq!(status, 403, "a link out of the directory");
    assert!(!body.starts_with(b"outside"));

    // The generated script: LinuxKit's form, the URL the request was sent to.
    let (status, script) = curl(&[], &format!("{base}/netboot.ipxe"));
    assert_eq!(status, 200);
    let script = String::from_utf8(script).expect("text");
    assert_eq!(
        script,
        format!(
            "#!ipxe\n\ndhcp\nset base-url {base}\nset kernel-params console=ttyS0 quiet\n\
             kernel ${{base-url}}/netboot-kernel ${{kernel-params}}\n\
             initrd ${{base-url}}/netboot-initrd.img\nboot\n"
        )
    );
    assert_eq!(curl(&[], &format!("{base}/nothing.ipxe")).0, 404);

    // qemu's iPXE ROM gets the script's URL from user networking's DHCP (10.0.2.2 is the host).
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-M", "pc", "-accel", "tcg", "-m", "512", "-nodefaults"])
        .args([
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-boot",
            "n",
        ])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,bootfile=http://10.0.2.2:{port}/netboot.ipxe"
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu-system-x86_64 (package qemu-system-x86, with ipxe-qemu)");
    let stdout = qemu.stdout.take().expect("stdout");
    let mut qemu = KillOnDrop(qemu);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = started + Duration::from_secs(300);
    let mut console = String::new();
    let mut marker_at = None;
    // The console closes when qemu exits (the guest powered off), or the deadline passes.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if marker_at.is_none() && line.contains(MARKER) {
                    marker_at = Some(started.elapsed());
                }
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("no power-off within 300 s; console:\n{console}")
            }
        }
    }
    let status = qemu.0.wait().expect("wait qemu");
    let mut stderr = String::new();
    if let Some(mut e) = qemu.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let marker_at =
        marker_at.unwrap_or_else(|| panic!("no marker; qemu {status:?} {stderr}\n{console}"));
    assert!(status.success(), "qemu {status:?} {stderr}\n{console}");
    assert!(
        console.contains(&format!("marker: {MARKER}")) && !console.contains("Kernel panic"),
        "{console}"
    );
    eprintln!(
        "iPXE boot: marker after {:.1} s, power-off after {:.1} s",
        marker_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn metadata_create_writes_a_user_data_iso() {
    let dir = tempfile::tempdir().expect("tempdir");
    let isoinfo = |iso: &Path, args: &[&str]| {
        run_ok(
            Command::new("isoinfo")
                .args(["-R", "-i"])
                .arg(iso)
                .args(args),
        )
    };

    let iso = dir.path().join("meta.iso");
    let data = r#"{"hostname": {"content": "kiln-host"}}"#;
    run_ok(kiln().args(["metadata", "create"]).arg(&iso).arg(data));
    let listing = isoinfo(&iso, &["-l"]);
    assert!(
        listing.contains(" config") && listing.contains(" user-data"),
        "{listing}"
    );
    for file in ["/config", "/user-data"] {
        assert_eq!(isoinfo(&iso, &["-x", file]), data, "{file}");
    }
    let description = isoinfo(&iso, &["-d"]);
    assert!(description.contains("Volume id: cidata"), "{description}");

    // From a file, replacing the image.
    let source = dir.path().join("data.json");
    std::fs::write(&source, b"from a file\n").expect("write");
    run_ok(
        kiln()
            .args(["metadata", "create"])
            .arg(&iso)
            .arg("--data-file")
            .arg(&source),
    );
    assert_eq!(isoinfo(&iso, &["-x", "/config"]), "from a file\n");

    // No data, or both: refused, the image untouched.
    let before = std::fs::read(&iso).expect("iso");
    for extra in [vec![], vec!["x", "--data-file", "y"]] {
        let out = kiln()
            .args(["metadata", "create"])
            .arg(&iso)
            .args(&extra)
            .output()
            .expect("spawn kiln");
        assert!(!out.status.success(), "{extra:?} accepted");
    }
    assert!(std::fs::read(&iso).expect("iso") == before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "meta.iso" && n != "data.json")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
