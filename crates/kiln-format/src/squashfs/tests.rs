use super::testutil::{bytes, check_tree, have, mount_check, run, sample};
use super::*;
use std::process::Command;

fn build(stream: &[(Entry, Vec<u8>)], opts: SquashfsOptions) -> Vec<u8> {
    let mut sink =
        SquashfsSink::new(io::Cursor::new(Vec::new()), 1_700_000_000, opts).expect("new");
    for (e, d) in stream {
        sink.add(e, &mut &d[..]).expect("add");
    }
    sink.finish().expect("finish").into_inner()
}

#[test]
fn unsquashfs_extracts_what_was_written_and_two_builds_are_identical() {
    if !have("unsquashfs") {
        return;
    }
    let stream = sample();
    let tmp = tempfile::tempdir().expect("tmp");
    for (name, comp) in [
        ("zstd", SquashfsCompression::Zstd(9)),
        ("xz", SquashfsCompression::Xz(6)),
        ("gzip", SquashfsCompression::Gzip(6)),
    ] {
        let opts = SquashfsOptions {
            compression: comp,
            ..SquashfsOptions::default()
        };
        let image = build(&stream, opts);
        assert_eq!(image, build(&stream, opts), "{name}: two builds differ");
        assert_eq!(image.len() % 4096, 0);
        let path = tmp.path().join(format!("{name}.img"));
        std::fs::write(&path, &image).expect("write");
        let listing = run(Command::new("unsquashfs").arg("-lln").arg(&path));
        assert!(
            listing.contains("squashfs-root/usr/lib/rel -> deep/5000"),
            "{listing}"
        );
        let stat = run(Command::new("unsquashfs").arg("-s").arg(&path));
        assert!(stat.contains(&format!("Compression {name}")), "{stat}");
        let out = tmp.path().join(name);
        run(Command::new("unsquashfs")
            .arg("-no-progress")
            .arg("-d")
            .arg(&out)
            .arg(&path));
        check_tree(&out, &stream, true);
        if name == "zstd" {
            mount_check(&path, "squashfs", &tmp.path().join("mnt"), &stream);
        }
    }
}

#[test]
fn the_image_does_not_depend_on_the_thread_count() {
    let stream = sample();
    let one = build(
        &stream,
        SquashfsOptions {
            threads: 1,
            ..SquashfsOptions::default()
        },
    );
    let three = build(
        &stream,
        SquashfsOptions {
            threads: 3,
            ..SquashfsOptions::default()
        },
    );
    assert!(one == three, "1 and 3 threads give different images");
}

#[test]
fn a_short_read_is_an_error_naming_the_file() {
    let mut sink =
        SquashfsSink::new(io::Cursor::new(Vec::new()), 0, SquashfsOptions::default()).expect("new");
    let err = sink
        .add(&Entry::file("a/b", 0o644, 10, 0), &mut &b"abc"[..])
        .expect_err("short");
    assert!(err.to_string().contains("a/b"), "{err}");
}

#[test]
fn holes_and_fragments_are_used() {
    let stream = vec![
        (Entry::file("zeros", 0o644, 4 << 20, 0), vec![0u8; 4 << 20]),
        (Entry::file("small", 0o644, 100, 0), bytes(100, 9)),
    ];
    let image = build(&stream, SquashfsOptions::default());
    assert!(
        image.len() <= 8192,
        "{} bytes for a hole and 100 bytes",
        image.len()
    );
}

/// `scripts/bench-rootfs.sh` runs this: writes `KILN_BENCH_TREE` (a directory) as a squashfs
/// image at `KILN_BENCH_OUT`, compressed as `KILN_BENCH_COMP` (`zstd:LEVEL`, `xz`, `gzip`).
#[test]
#[ignore = "a benchmark, run by scripts/bench-rootfs.sh"]
fn bench_tree() {
    let tree = std::env::var("KILN_BENCH_TREE").expect("KILN_BENCH_TREE");
    let out = std::env::var("KILN_BENCH_OUT").expect("KILN_BENCH_OUT");
    let comp = std::env::var("KILN_BENCH_COMP").unwrap_or_else(|_| "zstd:9".into());
    let compression = match comp.split_once(':') {
        Some(("zstd", l)) => SquashfsCompression::Zstd(l.parse().expect("level")),
        None if comp == "xz" => SquashfsCompression::Xz(6),
        None if comp == "gzip" => SquashfsCompression::Gzip(9),
        _ => panic!("KILN_BENCH_COMP={comp}: use zstd:LEVEL, xz or gzip"),
    };
    let start = std::time::Instant::now();
    let file = std::fs::File::create(&out).expect("create");
    let mut sink = SquashfsSink::new(
        io::BufWriter::with_capacity(1 << 20, file),
        1_700_000_000,
        SquashfsOptions {
            compression,
            ..SquashfsOptions::default()
        },
    )
    .expect("new");
    let (entries, bytes) =
        super::testutil::feed_tree(std::path::Path::new(&tree), &mut sink).expect("feed");
    sink.finish().expect("finish");
    println!(
        "kiln squashfs ({comp}): {entries} entries, {bytes} bytes in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
