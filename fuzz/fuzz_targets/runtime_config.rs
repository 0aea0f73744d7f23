//! An OCI bundle's config.json and runtime.json, as kiln-init and `kiln run bundle` read them:
//! kiln-spec's typed parsing and validation must return a configuration or an error, never
//! panic; what parses must serialize (as LinuxKit writes it) to text that parses to the same
//! configuration; and kiln-runtime's conversion to a container must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let half = data.len() / 2;
    let (config, runtime) = data.split_at(half);
    if let Ok(text) = std::str::from_utf8(config) {
        let file = Path::new("config.json");
        if let Ok(spec) = kiln_spec::parse_config(text, file) {
            let _ = spec.validate();
            let written = String::from_utf8(kiln_spec::to_go_json(&spec)).expect("utf-8");
            let again = kiln_spec::parse_config(&written, file).expect("round trip");
            assert_eq!(again, spec);
        }
    }
    if let Ok(text) = std::str::from_utf8(runtime) {
        let file = Path::new("runtime.json");
        if let Ok(rt) = kiln_spec::parse_runtime(text, file) {
            let _ = rt.validate();
            let written = String::from_utf8(kiln_spec::to_go_json(&rt)).expect("utf-8");
            let again = kiln_spec::parse_runtime(&written, file).expect("round trip");
            assert_eq!(again, rt);
        }
    }
    let Ok(dir) = tempfile::tempdir() else { return };
    let _ = std::fs::write(dir.path().join("config.json"), config);
    let _ = std::fs::write(dir.path().join("runtime.json"), runtime);
    let _ = kiln_runtime::bundle::load(dir.path());
    let _ = kiln_runtime::bundle::host_setup(dir.path());
});
