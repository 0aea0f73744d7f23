//! `kiln cache ls` and `kiln cache du` checked against the store they list: two images that
//! share a layer, one of them with two platforms, imported into a fresh store.

mod common;

use common::{Member, kiln, layout_tar, oci_index_archive, raw_layer, run_ok, sha};
use std::collections::BTreeSet;
use std::path::Path;

/// An OCI-layout tar of one linux/arm64/v8 image named `name`, created at `created`, with the
/// given layers.
fn archive_with_created(name: &str, created: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm64", "variant": "v8", "os": "linux", "created": created,
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()}}))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": l.len()})).collect::<Vec<_>>(),
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": name}}]}))
    .expect("json");
    let blobs: Vec<&[u8]> = layers
        .iter()
        .copied()
        .chain([config.as_slice(), manifest.as_slice()])
        .collect();
    layout_tar(&blobs, &index)
}

/// The size of the file of blob `digest` in the store.
fn blob_size(cache: &Path, digest: &str) -> u64 {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::metadata(cache.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        .len()
}

/// Every blob an image references, read from the store's files (not from kiln's listing).
fn blobs_of(cache: &Path, digest: &str, out: &mut BTreeSet<String>) {
    out.insert(digest.to_string());
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = std::fs::read(cache.join("blobs/sha256").join(hex)).expect("blob");
    let v: serde_json::Value = serde_json::from_slice(&data).expect("json blob");
    if let Some(children) = v["manifests"].as_array() {
        for c in children {
            blobs_of(cache, c["digest"].as_str().expect("digest"), out);
        }
    } else {
        out.insert(v["config"]["digest"].as_str().expect("config").to_string());
        for l in v["layers"].as_array().expect("layers") {
            out.insert(l["digest"].as_str().expect("layer").to_string());
        }
    }
}

/// The bytes of the regular files under `dir` (0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| {
            let m = std::fs::symlink_metadata(e.path()).expect("stat");
            if m.is_dir() {
                dir_bytes(&e.path())
            } else if m.is_file() {
                m.len()
            } else {
                0
            }
        })
        .sum()
}

fn json_of(args: &[&str], cache: &Path) -> serde_json::Value {
    let out = run_ok(kiln().args(args).arg("--cache").arg(cache));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"))
}

#[test]
fn listings_add_up_to_the_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let shared = raw_layer(&[Member::File("shared.txt", b"in both images\n")]);
    let amd = raw_layer(&[Member::File("amd.txt", b"amd64 only\n")]);
    let arm = raw_layer(&[Member::File("arm.txt", b"the arm64 layer of the index\n")]);
    let own = raw_layer(&[Member::File("own.txt", &[7u8; 3000])]);

    let multi = tmp.path().join("multi.tar");
    std::fs::write(
        &multi,
        oci_index_archive(
            "kiln-test/listing-multi:1",
            &[("amd64", amd.clone()), ("arm64", arm.clone())],
        ),
    )
    .expect("write");
    // The single image shares the index's arm64 layer.
    let single = tmp.path().join("single.tar");
    std::fs::write(
        &single,
        archive_with_created(
            "kiln-test/listing-single:2",
            "2021-06-01T10:00:00Z",
            &[&arm, &shared, &own],
        ),
    )
    .expect("write");
    for a in [&multi, &single] {
        run_ok(
            kiln()
                .args(["cache", "import"])
                .arg(a)
                .arg("--cache")
                .arg(&cache),
        );
    }
    // A blob no name references.
    let stray = b"a stray blob";
    std::fs::write(
        cache.join("blobs/sha256").join(&sha(stray)[7..]),
        stray.as_slice(),
    )
    .expect("write stray");

    let ls = json_of(&["cache", "ls", "--json"], &cache);
    let ls = ls.as_array().expect("array");
    assert_eq!(ls.len(), 2, "{ls:?}");
    let find = |part: &str| {
        ls.iter()
            .find(|i| i["name"].as_str().is_some_and(|n| n.contains(part)))
            .unwrap_or_else(|| panic!("{part} not listed: {ls:?}"))
    };
    let (m, s) = (find("listing-multi"), find("listing-single"));

    let mut blob_sets = Vec::new();
    for img in [m, s] {
        let digest = img["digest"].as_str().expect("digest");
        let mut blobs = BTreeSet::new();
        blobs_of(&cache, digest, &mut blobs);
        let expected: u64 = blobs.iter().map(|b| blob_size(&cache, b)).sum();
        assert_eq!(img["totalSize"], expected, "{img}");
        assert_eq!(img["blobs"], blobs.len(), "{img}");
        // The compatible keys still describe the named manifest or index.
        assert_eq!(img["size"], blob_size(&cache, digest), "{img}");
        assert!(img["mediaType"].as_str().is_some(), "{img}");
        assert_eq!(img["problems"], serde_json::json!([]), "{img}");
        assert_eq!(img["pinnedOnly"], false, "{img}");
        blob_sets.push(blobs);
    }
    assert_eq!(m["blobs"], 7, "index, 2 manifests, 2 configs, 2 layers");
    assert_eq!(
        m["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{m}"
    );
    assert_eq!(
        m["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(m["created"], serde_json::Value::Null);
    assert_eq!(s["platforms"], serde_json::json!(["linux/arm64/v8"]));
    assert_eq!(s["created"], "2021-06-01T10:00:00Z");
    assert_eq!(s["createdUnix"], 1_622_541_600);

    // Shared and unique bytes: the arm64 layer is the one blob both reference.
    let both: Vec<&String> = blob_sets[0].intersection(&blob_sets[1]).collect();
    assert_eq!(both, vec![&sha(&arm)]);
    let arm_size = blob_size(&cache, &sha(&arm));
    for img in [m, s] {
        assert_eq!(img["sharedSize"], arm_size, "{img}");
        assert_eq!(
            img["uniqueSize"].as_u64().expect("unique") + arm_size,
            img["totalSize"].as_u64().expect("total"),
            "{img}"
        );
    }

    // du: the blobs, what no name references, the other areas, and a total that adds up.
    let du = json_of(&["cache", "du", "--json"], &cache);
    let all_blobs = dir_bytes(&cache.join("blobs/sha256"));
    assert_eq!(du["blobs"]["bytes"], all_blobs, "{du}");
    assert_eq!(
        du["unreferenced"],
        serde_json::json!({"files": 1, "bytes": stray.len()}),
        "{du}"
    );
    let areas = du["areas"].as_array().expect("areas");
    let names: Vec<&str> = areas
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "layer indexes",
            "partial downloads",
            "build cache",
            "initrd segments",
            "SBOM findings"
        ]
    );
    let mut others = 0;
    for a in areas {
        let path = Path::new(a["path"].as_str().expect("path"));
        assert!(path.starts_with(&cache), "{a}");
        assert_eq!(a["bytes"], dir_bytes(path), "{a}");
        others += dir_bytes(path);
    }
    assert_eq!(du["total"], all_blobs + others, "{du}");
    assert_eq!(du["images"].as_array().expect("images").len(), 2);

    // The table people read.
    let table = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "DIGEST", "PLATFORMS", "CREATED", "SIZE"]);
    let row = lines
        .find(|l| l.contains("listing-single"))
        .unwrap_or_else(|| panic!("no row for the single image:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    let digest = s["digest"].as_str().expect("digest");
    assert_eq!(cells[0], "docker.io/kiln-test/listing-single:2", "{row}");
    assert_eq!(cells[1], &digest[7..19], "{row}");
    assert_eq!(cells[2], "linux/arm64/v8", "{row}");
    // "N years ago" (the clock may be anywhere after 2021), then the size.
    assert_eq!(&cells[4..6], ["years", "ago"], "{row}");
    let total = s["totalSize"].as_u64().expect("total");
    assert!(total > 1024, "{total}");
    let kib = format!("{:.1}", total as f64 / 1024.0);
    assert_eq!(&cells[6..], [kib.as_str(), "KiB"], "{row}");

    let du_table = run_ok(kiln().args(["cache", "du", "--cache"]).arg(&cache));
    assert!(
        du_table.lines().any(|l| l.starts_with("total")),
        "{du_table}"
    );
    assert!(
        du_table.lines().next().is_some_and(|l| l
            .split_whitespace()
            .eq(["IMAGE", "UNIQUE", "SHARED", "SIZE"])),
        "{du_table}"
    );
}
