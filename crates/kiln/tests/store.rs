//! The image store under real conditions: `docker save` archives written by skopeo, a
//! multi-platform index resolved by `--arch`, and several kiln processes at once.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn unpacked_file(cache: &Path, image: &str, arch: &str, file: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("b");
    run_ok(
        kiln()
            .args(["image", "unpack", image, "--arch", arch, "--cache"])
            .arg(cache)
            .arg(&bundle),
    );
    std::fs::read_to_string(bundle.join("rootfs").join(file)).expect("file in the image")
}

#[test]
fn docker_save_archives_from_skopeo_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let oci = dir.path().join("oci.tar");
    std::fs::write(
        &oci,
        oci_archive(
            "kiln-test/saved:1",
            &[raw_layer(&[Member::File(
                "hello.txt",
                b"from a docker save archive\n",
            )])],
        ),
    )
    .expect("write");
    let saved = dir.path().join("saved.tar");
    run_ok(
        Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", oci.display()))
            .arg(format!(
                "docker-archive:{}:kiln-test/saved:1",
                saved.display()
            )),
    );
    let cache = dir.path().join("cache");
    run_ok(
        kiln()
            .args(["cache", "import", "--cache"])
            .arg(&cache)
            .arg(&saved),
    );
    assert_eq!(
        unpacked_file(&cache, "kiln-test/saved:1", "amd64", "hello.txt"),
        "from a docker save archive\n"
    );
    assert_store_consistent(&cache);
}

#[test]
fn multi_platform_index_resolves_by_arch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("multi.tar");
    std::fs::write(
        &archive,
        oci_index_archive(
            "kiln-test/multi:1",
            &[
                ("amd64", raw_layer(&[Member::File("arch", b"amd64\n")])),
                ("arm64", raw_layer(&[Member::File("arch", b"arm64\n")])),
            ],
        ),
    )
    .expect("write");
    let cache = dir.path().join("cache");
    run_ok(
        kiln()
            .args(["cache", "import", "--cache"])
            .arg(&cache)
            .arg(&archive),
    );
    for arch in ["amd64", "arm64", "aarch64", "x86_64"] {
        let want = if arch.contains("64") && (arch == "arm64" || arch == "aarch64") {
            "arm64\n"
        } else {
            "amd64\n"
        };
        assert_eq!(
            unpacked_file(&cache, "kiln-test/multi:1", arch, "arch"),
            want,
            "--arch {arch}"
        );
    }
    let out = kiln()
        .args([
            "image",
            "unpack",
            "kiln-test/multi:1",
            "--arch",
            "s390x",
            "--cache",
        ])
        .arg(&cache)
        .arg(dir.path().join("none"))
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("s390x"), "{err}");
    assert!(
        err.contains("amd64") && err.contains("arm64"),
        "lists what there is: {err}"
    );
}

#[test]
fn concurrent_processes_share_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    let mut archives = Vec::new();
    for i in 0..6 {
        let path = dir.path().join(format!("img{i}.tar"));
        let big: Vec<u8> = (0..2_000_000u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> (i + 3)).to_le_bytes()[0])
            .collect();
        let name = format!("kiln-test/c{i}:1");
        std::fs::write(
            &path,
            oci_archive(
                &name,
                &[raw_layer(&[
                    Member::File("data", &big),
                    Member::File("shared", b"same in every image\n"),
                ])],
            ),
        )
        .expect("write");
        archives.push((path, name));
    }
    // Six imports, two garbage collections and listings, all at once.
    let mut children = Vec::new();
    for (path, _) in &archives {
        children.push(
            kiln()
                .args(["cache", "import", "--cache"])
                .arg(&cache)
                .arg(path)
                .spawn()
                .expect("spawn"),
        );
    }
    for _ in 0..2 {
        children.push(
            kiln()
                .args(["cache", "clean", "--cache"])
                .arg(&cache)
                .spawn()
                .expect("spawn"),
        );
        children.push(
            kiln()
                .args(["cache", "ls", "--cache"])
                .arg(&cache)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        );
    }
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let listing = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    for (_, name) in &archives {
        assert!(
            listing.contains(name.as_str()),
            "{name} missing from\n{listing}"
        );
        assert_eq!(
            unpacked_file(&cache, name, "amd64", "shared"),
            "same in every image\n"
        );
    }
    assert_store_consistent(&cache);
}
