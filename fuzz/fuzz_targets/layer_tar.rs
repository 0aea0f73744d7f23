//! Layer tars unpacked for builds: never a panic, and nothing written outside the target.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let _ = kiln_build::unpack(data, &root, "sha256:fuzz");
    let outside = std::fs::read_dir(outer.path())
        .expect("read_dir")
        .filter(|e| e.as_ref().map(|e| e.file_name() != "root").unwrap_or(true))
        .count();
    assert_eq!(outside, 0, "a layer wrote outside its root");
});
