//! Output formats: bit-for-bit reproducible, atomic, and readable by independent tools.

mod common;
use common::*;
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn build(dir: &Path, cache: &Path, out: &Path, format: &str, epoch: Option<&str>, manifest: &str) {
    let mut cmd = kiln();
    cmd.current_dir(dir)
        .args(["build", "--format", format, "--name", "sys", "--dir"])
        .arg(out)
        .arg("--cache")
        .arg(cache)
        .arg(manifest);
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    run_ok(&mut cmd);
}

#[test]
fn builds_are_reproducible() {
    let Some(conf) = conformance_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let case = conf.join("01-minimal");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        build(
            &case,
            &cache,
            out,
            "kernel+initrd,tar,tar-kernel-initrd",
            None,
            "manifest.yml",
        );
    }
    for f in [
        "sys-kernel",
        "sys-initrd.img",
        "sys-cmdline",
        "sys.tar",
        "sys-initrd.tar",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).expect(f),
            std::fs::read(b.join(f)).expect(f),
        );
        assert!(!x.is_empty(), "{f} is empty");
        assert_eq!(x, y, "{f} differs between two builds");
    }
    // SOURCE_DATE_EPOCH: no entry is newer.
    let c = tmp.path().join("c");
    build(&case, &cache, &c, "tar", Some("86400"), "manifest.yml");
    let data = std::fs::read(c.join("sys.tar")).expect("tar");
    let mut ar = tar::Archive::new(&data[..]);
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        assert!(e.header().mtime().expect("mtime") <= 86400);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&a)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn kernel_initrd_is_a_valid_newc_cpio() {
    let Some(conf) = conformance_dir() else {
        return;
    };
    if Command::new("cpio").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err_and(|_| true)
                || std::env::var("CI").as_deref() != Ok("true"),
            "CI needs cpio"
        );
        eprintln!("skipping: cpio not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    for (case, compress) in [
        ("01-minimal", "gzip"),
        ("09-ucode", "zstd"),
        ("03-security", "none"),
    ] {
        let out = tmp.path().join(case);
        let mut cmd = kiln();
        cmd.current_dir(conf.join(case))
            .args([
                "build",
                "--format",
                "kernel+initrd",
                "--compress",
                compress,
                "--name",
                "sys",
                "--dir",
            ])
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .arg("manifest.yml");
        run_ok(&mut cmd);
        let initrd = std::fs::read(out.join("sys-initrd.img")).expect("initrd");
        // The microcode cpio comes first, uncompressed, as the kernel expects.
        let (ucode_len, rest) = if case == "09-ucode" {
            let ucode = 16;
            (ucode, &initrd[ucode..])
        } else {
            (0, &initrd[..])
        };
        let mut raw = Vec::new();
        match compress {
            "gzip" => {
                flate2::read::MultiGzDecoder::new(rest)
                    .read_to_end(&mut raw)
                    .expect("gunzip");
            }
            "zstd" => {
                let dec = Command::new("zstd")
                    .args(["-d", "-c"])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn();
                let Ok(mut child) = dec else {
                    eprintln!("skipping zstd check: zstd not installed");
                    continue;
                };
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(rest)
                    .expect("write");
                raw = child.wait_with_output().expect("zstd").stdout;
            }
            _ => raw = rest.to_vec(),
        }
        let mut cpio = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cpio");
        {
            use std::io::Write;
            cpio.stdin
                .take()
                .expect("stdin")
                .write_all(&raw)
                .expect("write");
        }
        let listed = cpio.wait_with_output().expect("cpio");
        assert!(
            listed.status.success(),
            "{case}: cpio -t failed: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let names = String::from_utf8_lossy(&listed.stdout);
        for want in [
            "init",
            "bin/busybox",
            "etc/hosts",
            "lib/modules/6.6.0-kiln/modules.dep",
        ] {
            assert!(
                names.lines().any(|l| l == want),
                "{case}: {want} missing from the initrd:\n{names}"
            );
        }
        assert!(
            !names.lines().any(|l| l == "boot/kernel"),
            "{case}: the kernel belongs beside the initrd, not in it"
        );
        let kernel = std::fs::read(out.join("sys-kernel")).expect("kernel");
        assert!(
            kernel.len() == 1284 || kernel.len() == 898,
            "{case}: kernel has {} bytes",
            kernel.len()
        );
        let _ = ucode_len;
    }
}
