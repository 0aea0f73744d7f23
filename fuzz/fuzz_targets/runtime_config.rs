//! An OCI bundle's config.json and runtime.json, as kiln-init and `kiln run bundle` read them:
//! parsing (capabilities, rlimits, devices, cgroup resources, interfaces, bindNS) must return
//! a container or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let half = data.len() / 2;
    let _ = std::fs::write(dir.path().join("config.json"), &data[..half]);
    let _ = std::fs::write(dir.path().join("runtime.json"), &data[half..]);
    let _ = kiln_runtime::bundle::load(dir.path());
    let _ = kiln_runtime::bundle::host_setup(dir.path());
});
