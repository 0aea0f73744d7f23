//! `kiln build` as LinuxKit's command lines use it: `--o FILE` (tar by default), the old
//! single-dash flags, a manifest on standard input, the outputs named after the last manifest,
//! LinuxKit's formats kiln does not write yet refused with a message (and the boot media
//! without kiln's bootloader package), `--size`, and
//! `--decompress-kernel` on a real Debian kernel.

mod common;

use common::*;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

fn kiln_in(dir: &Path, cache: &Path) -> Command {
    let mut cmd = kiln();
    cmd.current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--cache")
        .arg(cache);
    cmd
}

fn fails_saying(cmd: &mut Command, words: &[&str]) {
    let out = cmd.output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded");
    for w in words {
        assert!(err.contains(w), "{cmd:?}: no `{w}` in:\n{err}");
    }
}

#[test]
fn linuxkit_build_command_lines() {
    let conf = conformance_dir().expect("the conformance corpus beside the repository");
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let case = conf.join("01-minimal");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");

    // The reference: kiln's own spelling.
    run_ok(
        kiln_in(&case, &cache)
            .args(["build", "-f", "tar", "--name", "ref", "--dir"])
            .arg(&out)
            .arg("manifest.yml"),
    );
    let reference = std::fs::read(out.join("ref.tar")).expect("ref.tar");

    // `--o FILE` without a format: a tar, as LinuxKit.
    let o = out.join("o.tar");
    run_ok(
        kiln_in(&case, &cache)
            .args(["build", "--o"])
            .arg(&o)
            .arg("manifest.yml"),
    );
    assert_eq!(std::fs::read(&o).expect("o.tar"), reference);

    // The single-dash flags of LinuxKit's older releases.
    run_ok(
        kiln_in(&case, &cache)
            .args(["build", "-format", "tar", "-name", "old", "-dir"])
            .arg(&out)
            .arg("manifest.yml"),
    );
    assert_eq!(
        std::fs::read(out.join("old.tar")).expect("old.tar"),
        reference
    );

    // A manifest on standard input: the outputs are named `moby`.
    let mut child = kiln_in(&case, &cache)
        .args(["build", "--format", "tar", "--dir"])
        .arg(&out)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let manifest = std::fs::read(case.join("manifest.yml")).expect("manifest");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&manifest)
        .expect("write");
    assert!(child.wait().expect("wait").success());
    assert_eq!(
        std::fs::read(out.join("moby.tar")).expect("moby.tar"),
        reference
    );

    // Several manifests: named after the last.
    let multi = conf.join("06-multi-file");
    run_ok(
        kiln_in(&multi, &cache)
            .args(["build", "-f", "tar", "--dir"])
            .arg(&out)
            .args(["base.yml", "overlay.yml"]),
    );
    assert!(out.join("overlay.tar").is_file());

    // An arm64 format for this amd64 system, `--size`, contradicting flags.
    fails_saying(
        kiln_in(&case, &cache).args(["build", "--format", "rpi3,tar", "manifest.yml"]),
        &["format rpi3 is for arm64", "--arch arm64"],
    );
    // A boot media format without the bootloader package in the store: said, nothing written.
    let none = tmp.path().join("none");
    fails_saying(
        kiln_in(&case, &cache)
            .args(["build", "--format", "iso-bios,tar", "--dir"])
            .arg(&none)
            .arg("manifest.yml"),
        &["kiln/bootloader", "kiln pkg build pkg/bootloader"],
    );
    assert!(!none.join("manifest.tar").exists() && !none.join("manifest.iso").exists());
    fails_saying(
        kiln_in(&case, &cache).args(["build", "--size", "12X", "manifest.yml"]),
        &["--size", "1024M"],
    );
    fails_saying(
        kiln_in(&case, &cache).args(["build", "--pull", "--input-tar", "x.tar", "manifest.yml"]),
        &["--input-tar", "--pull"],
    );
    fails_saying(
        kiln_in(&case, &cache).args(["-q", "-v", "2", "build", "manifest.yml"]),
        &["-q and -v"],
    );
}

#[test]
fn decompress_kernel_writes_the_plain_kernel() {
    let cache = shared_store();
    let tmp = tempfile::tempdir().expect("tmp");
    let manifest = format!(
        "kernel:\n  image: {}\n  cmdline: console=ttyS0\n",
        pkg_ref("kernel")
    );
    let path = tmp.path().join("k.yml");
    std::fs::write(&path, manifest).expect("manifest");
    for (name, flags) in [("bz", &[][..]), ("plain", &["--decompress-kernel"][..])] {
        run_ok(
            kiln_in(tmp.path(), &cache)
                .args(["build", "-f", "kernel+initrd", "--name", name])
                .args(flags)
                .arg(&path),
        );
    }
    let bz = std::fs::read(tmp.path().join("bz-kernel")).expect("bz-kernel");
    let plain = std::fs::read(tmp.path().join("plain-kernel")).expect("plain-kernel");
    assert_eq!(
        &bz[0x202..0x206],
        b"HdrS",
        "the package's kernel is a bzImage"
    );
    assert_eq!(
        &plain[..4],
        b"\x7fELF",
        "--decompress-kernel gives the ELF vmlinux"
    );
    assert!(
        plain.len() > 2 * bz.len(),
        "{} vs {}",
        plain.len(),
        bz.len()
    );
    // An independent reader agrees: `file` sees an x86-64 ELF executable.
    let file = run_ok(
        Command::new("file")
            .arg("-b")
            .arg(tmp.path().join("plain-kernel")),
    );
    assert!(
        file.contains("ELF 64-bit") && file.contains("x86-64"),
        "{file}"
    );
}
