use super::*;
use crate::squashfs::testutil::{check_tree, have, mount_check, run, sample};
use std::process::Command;

fn build(stream: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut sink = ErofsSink::new(io::Cursor::new(Vec::new()), 1_700_000_000).expect("new");
    for (e, d) in stream {
        sink.add(e, &mut &d[..]).expect("add");
    }
    sink.finish().expect("finish").into_inner()
}

#[test]
fn fsck_erofs_extracts_what_was_written_and_two_builds_are_identical() {
    if !have("fsck.erofs") {
        return;
    }
    let stream = sample();
    let image = build(&stream);
    assert_eq!(image, build(&stream), "two builds differ");
    assert_eq!(image.len() % 4096, 0);
    assert_eq!(&image[1024..1028], &MAGIC.to_le_bytes());
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("root.erofs");
    std::fs::write(&path, &image).expect("write");
    let out = tmp.path().join("out");
    run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", out.display()))
        .arg(&path));
    check_tree(&out, &stream, false);
    mount_check(&path, "erofs", &tmp.path().join("mnt"), &stream);
}

#[test]
fn the_uuid_follows_the_content() {
    let a = build(&[(Entry::file("a", 0o644, 1, 0), b"a".to_vec())]);
    let b = build(&[(Entry::file("a", 0o644, 1, 0), b"b".to_vec())]);
    assert_ne!(a[1024 + 48..1024 + 64], b[1024 + 48..1024 + 64]);
    assert_ne!(a[1024 + 48..1024 + 64], [0u8; 16]);
}

#[test]
fn a_short_read_is_an_error_naming_the_file() {
    let mut sink = ErofsSink::new(io::Cursor::new(Vec::new()), 0).expect("new");
    let err = sink
        .add(&Entry::file("a/b", 0o644, 5000, 0), &mut &b"abc"[..])
        .expect_err("short");
    assert!(err.to_string().contains("a/b"), "{err}");
}

/// `scripts/bench-rootfs.sh` runs this: writes `KILN_BENCH_TREE` (a directory) as an erofs
/// image at `KILN_BENCH_OUT`.
#[test]
#[ignore = "a benchmark, run by scripts/bench-rootfs.sh"]
fn bench_tree() {
    let tree = std::env::var("KILN_BENCH_TREE").expect("KILN_BENCH_TREE");
    let out = std::env::var("KILN_BENCH_OUT").expect("KILN_BENCH_OUT");
    let start = std::time::Instant::now();
    let file = std::fs::File::create(&out).expect("create");
    let mut sink =
        ErofsSink::new(io::BufWriter::with_capacity(1 << 20, file), 1_700_000_000).expect("new");
    let (entries, bytes) =
        crate::squashfs::testutil::feed_tree(std::path::Path::new(&tree), &mut sink).expect("feed");
    sink.finish().expect("finish");
    println!(
        "kiln erofs: {entries} entries, {bytes} bytes in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
