//! Packages for two architectures on this x86_64 machine: the arm64 stage's RUN steps run
//! through qemu-user (binfmt_misc), and `kiln pkg build --push` of a package whose build.yml
//! lists `arches: [amd64, arm64]` pushes one index with both platforms, each platform's binaries
//! of its own architecture (as skopeo and `file` see them).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// A package for amd64 and arm64: a Debian stage that copies its `true` and records what
/// `uname -m` says (qemu-user's aarch64 for arm64), then a scratch image of the two files.
fn two_arch_package(dir: &Path) -> std::path::PathBuf {
    let pkg = dir.join("twoarch");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(
        pkg.join("build.yml"),
        "image: twoarch\norg: kiln-test\narches:\n  - amd64\n  - arm64\n",
    )
    .expect("write");
    std::fs::write(
        pkg.join("Dockerfile"),
        "FROM debian:bookworm AS build\n\
         RUN cp /bin/true /true && uname -m > /machine\n\
         FROM scratch\n\
         COPY --from=build /true /machine /\n",
    )
    .expect("write");
    pkg
}

/// The files of `name`'s image for linux/`arch` in the registry, unpacked into `dir` (through
/// skopeo, an independent client).
fn unpack_platform(name: &str, arch: &str, dir: &Path) {
    let copied = dir.join(format!("{arch}-copy"));
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--tls-verify=false", "--override-arch", arch])
            .arg(format!("docker://{name}"))
            .arg(format!("dir:{}", copied.display())),
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(copied.join("manifest.json")).expect("skopeo's manifest"),
    )
    .expect("json");
    let root = dir.join(arch);
    std::fs::create_dir_all(&root).expect("mkdir");
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        let blob = copied.join(digest.trim_start_matches("sha256:"));
        run_ok(
            Command::new("tar")
                .arg("-xzf")
                .arg(&blob)
                .arg("-C")
                .arg(&root),
        );
    }
}

#[test]
fn a_package_for_two_architectures_is_pushed_as_one_index() {
    if !is_root() || !tools_present(&["skopeo", "docker-registry", "file", "debootstrap"]) {
        return;
    }
    let cache = shared_store_arm64();
    let reg = start_registry_in(tempfile::tempdir().expect("tempdir"), "");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkg = two_arch_package(tmp.path());
    let org = format!("{}/kiln-test", reg.addr);
    let out = run_ok(
        kiln()
            .args([
                "pkg", "build", "--force", "--push", "--org", &org, "--cache",
            ])
            .arg(&cache)
            .arg(&pkg),
    );
    // One name, printed once, for both platforms.
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 1, "{out}");
    let name = names[0].trim();
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{name}")),
    );
    let index: serde_json::Value = serde_json::from_str(&raw).expect("json");
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {raw}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{raw}");
    for (arch, machine, file_says) in [
        ("amd64", "x86_64", "x86-64"),
        ("arm64", "aarch64", "ARM aarch64"),
    ] {
        unpack_platform(name, arch, tmp.path());
        let root = tmp.path().join(arch);
        let seen = std::fs::read_to_string(root.join("machine")).expect("the recorded machine");
        assert_eq!(seen.trim(), machine, "{arch}: uname -m in its RUN step");
        let file = run_ok(Command::new("file").arg("-b").arg(root.join("true")));
        assert!(file.contains(file_says), "{arch}: file says {file}");
    }
}

/// An arm64 build whose base image the store holds for amd64 only is refused with the
/// platforms it has, rather than built on the amd64 image.
#[test]
fn a_base_image_of_another_architecture_is_not_used() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    // A store whose only image is an amd64 one.
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).expect("mkdir");
    std::fs::write(tree.join("bin/hello"), "hello\n").expect("write");
    run_ok(
        kiln()
            .args(["--arch", "amd64", "image", "import"])
            .arg(&tree)
            .arg("kiln-test/only-amd64:1")
            .arg("--cache")
            .arg(&store),
    );
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln-test/only-amd64:1\nRUN true\n",
    )
    .expect("write");
    let out = kiln()
        .args([
            "image",
            "build",
            "--platform",
            "linux/arm64",
            "-t",
            "kiln-test/x",
            "--cache",
        ])
        .arg(&store)
        .arg(&ctx)
        .output()
        .expect("spawn kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an arm64 build used an amd64 image:\n{err}"
    );
    assert!(
        err.contains("linux/arm64") && err.contains("linux/amd64"),
        "the error names neither platform:\n{err}"
    );
}

/// Every package under pkg/ builds for arm64 on this machine, and its image is an arm64 one:
/// its config says so, and its programs are arm64 programs.
#[test]
fn every_package_builds_for_arm64() {
    if !is_root() || !tools_present(&["file", "debootstrap", "aarch64-linux-gnu-gcc"]) {
        return;
    }
    let cache = shared_store_arm64();
    build_init();
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(repo_root().join("pkg"))
        .expect("pkg/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("build.yml").is_file())
        .collect();
    dirs.sort();
    let out = run_ok(
        kiln()
            .args(["--arch", "arm64", "pkg", "build", "--cache"])
            .arg(&cache)
            .args(&dirs),
    );
    let names: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(names.len(), dirs.len(), "{out}");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Programs to look at in some of the images (the others hold data, scripts or firmware).
    let programs = [
        ("kiln/busybox:", "bin/busybox"),
        ("kiln/getty:", "bin/busybox"),
        ("kiln/init:", "init"),
        ("kiln/redis:", "usr/bin/redis-server"),
        ("kiln/format:", "sbin/mke2fs"),
    ];
    for name in &names {
        let dir = tmp.path().join(name.replace(['/', ':'], "_"));
        run_ok(
            kiln()
                .args(["--arch", "arm64", "image", "unpack", "--cache"])
                .arg(&cache)
                .arg(name)
                .arg(&dir),
        );
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("config.json")).expect("the bundle's config"),
        )
        .expect("json");
        assert!(config.is_object(), "{name}: {config}");
        if let Some((_, program)) = programs.iter().find(|(p, _)| name.starts_with(p)) {
            let file = run_ok(
                Command::new("file")
                    .arg("-b")
                    .arg(dir.join("rootfs").join(program)),
            );
            assert!(file.contains("ARM aarch64"), "{name}: {program}: {file}");
        }
    }
    // The kernel is an arm64 Image.
    let kernel = names
        .iter()
        .find(|n| n.starts_with("kiln/kernel:"))
        .expect("the kernel package");
    let dir = tmp.path().join("kernel");
    run_ok(
        kiln()
            .args(["--arch", "arm64", "image", "unpack", "--cache"])
            .arg(&cache)
            .arg(kernel)
            .arg(&dir),
    );
    let file = run_ok(
        Command::new("file")
            .arg("-b")
            .arg(dir.join("rootfs/kernel")),
    );
    assert!(file.contains("ARM64"), "the kernel: {file}");
}
