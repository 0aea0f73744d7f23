//! What a registry sends the client: manifests and indexes (checked and followed by
//! `next_step`), WWW-Authenticate challenges, token responses, error bodies, the JSON size
//! check every manifest and config passes, and the Location an upload continues at (which must
//! resolve to an http or https URL carrying the digest, or be refused). Never a panic.
#![no_main]
use kiln_oci::registry::{TransferLimits, next_step};
use kiln_oci::Digest;
use kiln_oci::transport::{
    check_json_size, parse_error_body, parse_token_response, parse_www_authenticate, upload_url,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for arch in ["amd64", "arm64"] {
        let _ = next_step(data, "manifest", arch, true);
        let _ = next_step(data, "manifest", arch, false);
    }
    let _ = check_json_size(data, 1000);
    let _ = parse_token_response(data);
    let _ = parse_error_body(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for c in parse_www_authenticate(text) {
            assert!(
                !c.scheme.is_empty(),
                "a challenge without a scheme from {text:?}"
            );
        }
        let _ = TransferLimits::parse_min_rate(text);
        let digest = Digest::of(b"blob");
        if let Ok(url) = upload_url("http://127.0.0.1:5000/v2/r/blobs/uploads/", text, &digest) {
            assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{text:?} resolved to {url}"
            );
            assert!(url.contains(digest.hex()), "{text:?} lost the digest: {url}");
        }
    }
});
