//! For unit tests: whether an independent checker (fsck.vfat, sgdisk, qemu-img, xorriso, ...)
//! is installed. In CI a missing checker fails the test; elsewhere the test skips, saying why.

/// Whether `name` is on PATH; panics in CI when it is not.
pub(crate) fn tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {name}: run scripts/install-deps.sh"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}
