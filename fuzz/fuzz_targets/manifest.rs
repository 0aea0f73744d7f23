//! LinuxKit manifests and image labels: never a panic, whatever the YAML.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_manifest::parse_document("fuzz.yml", text);
        let _ = kiln_manifest::parse_label("fuzz", text);
    }
});
