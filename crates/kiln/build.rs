//! Records the git commit kiln is built from (for `kiln version`) and the tags of the bootloader
//! and rpi3-firmware packages of that commit (the default `--bootloader` and `--firmware`
//! images), when it is built in a git work tree; nothing otherwise.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(commit) = git(&["rev-parse", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=KILN_GIT_COMMIT={commit}");
    // The tag `kiln pkg build pkg/bootloader` gives the package of this commit: its tree hash.
    if let Some(tree) = git(&["rev-parse", "HEAD:pkg/bootloader"]) {
        println!("cargo:rustc-env=KILN_BOOTLOADER_TAG={tree}");
    }
    if let Some(tree) = git(&["rev-parse", "HEAD:pkg/rpi3-firmware"]) {
        println!("cargo:rustc-env=KILN_RPI3_FIRMWARE_TAG={tree}");
    }
    // Rebuilt when HEAD moves: HEAD itself, the branch it names, and packed refs.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/packed-refs");
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{branch}");
        }
    }
}
