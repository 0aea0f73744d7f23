//! Registry and store JSON (indexes, manifests, configs): never a panic.
#![no_main]
use kiln_oci::spec::{ImageConfig, Index, Manifest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_oci::media_type_of(data);
    let _ = serde_json::from_slice::<Index>(data);
    let _ = serde_json::from_slice::<Manifest>(data);
    let _ = serde_json::from_slice::<ImageConfig>(data);
    if let Ok(index) = serde_json::from_slice::<Index>(data) {
        let _ = kiln_oci::select_platform(&index, "amd64");
    }
    let _ = kiln_build::image::ImageConfig::from_json(data).map(|c| (c.env(), c.diff_ids()));
});
