//! Manifests through merging and validation: never a panic, and what validation accepts keeps
//! the promises every output format relies on (container names are one path component, file
//! paths are plain relative paths, no path twice, nothing beneath a file). The input is split
//! at NUL bytes into several documents, merged in order as `kiln build a.yml b.yml` does.
#![no_main]
use std::collections::HashMap;
use std::path::{Component, Path};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut set = kiln_manifest::ManifestSet::default();
    for (i, doc) in text.split('\0').take(4).enumerate() {
        let _ = kiln_manifest::locate::Locations::index(doc);
        if set.add(&format!("m{i}.yml"), doc).is_err() {
            return;
        }
    }
    if set.validate().is_err() {
        return;
    }
    let m = &set.manifest;
    for section in kiln_manifest::CONTAINER_SECTIONS {
        for img in m.containers(section) {
            let mut parts = Path::new(&img.name).components();
            assert!(
                matches!(parts.next(), Some(Component::Normal(n)) if n == img.name.as_str())
                    && parts.next().is_none(),
                "accepted container name {:?}",
                img.name
            );
        }
    }
    let mut kinds: HashMap<&str, bool> = HashMap::new();
    for f in &m.files {
        let p = f.image_path();
        assert!(
            !p.is_empty()
                && !p.contains('\0')
                && p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "accepted file path {:?}",
            f.path
        );
        assert!(kinds.insert(p, f.directory).is_none(), "accepted {p:?} twice");
    }
    for p in kinds.keys() {
        for (cut, _) in p.match_indices('/') {
            assert_ne!(
                kinds.get(&p[..cut]),
                Some(&false),
                "accepted {p:?} beneath a file"
            );
        }
    }
});
