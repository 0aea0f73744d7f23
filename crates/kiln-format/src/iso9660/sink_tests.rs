use super::*;
use crate::squashfs::testutil::{check_tree, expected, have, run, sample, with_mount};
use kiln_fs::{Entry, Kind as EntryKind, Sink};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// A target of `n` short components after one of 300 bytes (split across `SL` entries), `.`
/// and `..`.
fn long_target(n: usize) -> String {
    let mut t = format!("../{}/./x", "c".repeat(300));
    for i in 0..n {
        t.push_str(&format!("/d{i:03}"));
    }
    t
}

/// The shared sample (without extended attributes, which ISO 9660 does not store) plus
/// symbolic links with long targets, a root link and a file owned by 1000:1000. `very_long`
/// adds a target of 2811 bytes, whose entries take two chained continuation areas (isoinfo
/// and libisofs refuse targets over about 1 KiB; Linux reads up to 4095 bytes).
fn stream(very_long: bool) -> Vec<(Entry, Vec<u8>)> {
    let mut v: Vec<(Entry, Vec<u8>)> = sample()
        .into_iter()
        .map(|(mut e, d)| {
            e.xattrs.clear();
            (e, d)
        })
        .collect();
    let short_long = format!("/usr/lib/{}", "l".repeat(120)) + &"/abc".repeat(40);
    assert!(short_long.len() > 255);
    let mut links = vec![
        ("etc/long", short_long),
        ("etc/longer", long_target(140)),
        ("etc/root", "/".to_string()),
        ("etc/dots", "./a/../b/".to_string()),
    ];
    if very_long {
        assert!(long_target(500).len() > 2048);
        links.push(("etc/longest", long_target(500)));
    }
    for (path, target) in links {
        v.push((
            Entry::symlink(path, target, 0o777, 1_600_000_020),
            Vec::new(),
        ));
    }
    let mut e = Entry::file("home/user/own", 0o640, 3, 1_600_000_021);
    e.uid = 1000;
    e.gid = 1000;
    v.push((e, b"me\n".to_vec()));
    v
}

fn build(stream: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut sink =
        IsoSink::new(io::Cursor::new(Vec::new()), "KILN_ROOT", 1_700_000_000).expect("new");
    for (e, d) in stream {
        sink.add(e, &mut &d[..]).expect("add");
    }
    sink.finish().expect("finish").into_inner()
}

#[test]
fn two_builds_are_identical_and_isoinfo_lists_the_names() {
    let s = stream(false);
    let image = build(&s);
    assert_eq!(image, build(&s), "two builds differ");
    assert_eq!(image.len() % 2048, 0);
    if !have("isoinfo") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("root.iso");
    std::fs::write(&path, &image).expect("write");
    let listing = run(Command::new("isoinfo")
        .arg("-R")
        .arg("-l")
        .arg("-i")
        .arg(&path));
    for name in [
        " hostname",
        " setuid",
        " 300k",
        " f0599",
        " rel -> deep/5000",
        " abs -> /usr/lib/big",
        " null",
        " fifo",
    ] {
        assert!(listing.contains(name), "{name:?} missing in:\n{listing}");
    }
    assert!(
        listing.contains("Directory listing of /usr/lib/deep/"),
        "{listing}"
    );
}

#[test]
fn linux_mounts_the_image_with_every_attribute() {
    let s = stream(true);
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("root.iso");
    std::fs::write(&path, build(&s)).expect("write");
    let mnt = tmp.path().join("mnt");
    with_mount(&path, "iso9660", &mnt, || check_mounted(&mnt, &s));
}

/// Besides what [`check_tree`] compares: the setuid/setgid/sticky bits, modification
/// times, link counts.
fn check_mounted(root: &Path, s: &[(Entry, Vec<u8>)]) {
    check_tree(root, s, false);
    for (path, (e, _)) in expected(s) {
        let m = std::fs::symlink_metadata(root.join(&path)).expect("lstat");
        if !matches!(e.kind, EntryKind::Symlink(_)) {
            assert_eq!(m.mode() & 0o7777, e.mode, "{path}: mode");
        }
        if path != "usr" {
            // `usr` is given twice: its last entry's time is the one compared below.
            assert_eq!(m.mtime() as u64, e.mtime, "{path}: mtime");
        }
    }
    let usr = std::fs::metadata(root.join("usr")).expect("usr");
    assert_eq!(usr.mtime(), 1_600_000_010, "usr: the last entry's time");
    assert_eq!(usr.nlink(), 4, "usr: . .. lib share");
    let hard = std::fs::metadata(root.join("usr/lib/hard")).expect("hard");
    assert_eq!(hard.nlink(), 2, "usr/lib/hard: two names");
    let root_m = std::fs::metadata(root).expect("root");
    assert_eq!(root_m.mode() & 0o7777, 0o755);
    eprintln!("checked the image mounted as iso9660 by the kernel");
}

#[test]
fn hard_links_share_one_copy_of_the_data() {
    let data = crate::squashfs::testutil::bytes(1 << 20, 9);
    let mk = |link: bool| {
        let mut s = vec![(Entry::file("a", 0o644, data.len() as u64, 1), data.clone())];
        if link {
            s.push((
                Entry::new("b", EntryKind::Hardlink("a".into()), 0o644, 1),
                Vec::new(),
            ));
        }
        build(&s)
    };
    assert_eq!(mk(true).len(), mk(false).len(), "the link adds no data");
}

#[test]
fn files_of_4_gib_are_refused_naming_the_path() {
    let mut sink = IsoSink::new(io::sink(), "KILN_ROOT", 0).expect("new");
    let err = sink
        .add(
            &Entry::file("var/huge.img", 0o644, 1 << 32, 0),
            &mut io::empty(),
        )
        .expect_err("4 GiB");
    assert!(err.to_string().contains("var/huge.img"), "{err}");
    let mut e = Entry::file("x", 0o644, 0, 0);
    e.uid = 1 << 32;
    assert!(sink.add(&e, &mut io::empty()).is_err(), "uid over 32 bits");
    assert!(IsoSink::new(io::sink(), "é", 0).is_err(), "volume id");
}

#[test]
fn symlink_targets_round_trip_through_sl_components() {
    for target in ["/", "a", "/usr/lib", "../x/./y", "a//b/", &long_target(500)] {
        let mut got = String::new();
        let entries = records::sl(target);
        let last = entries.len() - 1;
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(usize::from(e[2]), e.len(), "entry length");
            assert!(e.len() <= 255);
            assert_eq!(e[4] & 1, u8::from(i != last), "entry continue flag");
            let mut body = &e[5..];
            let mut root = false;
            while !body.is_empty() {
                let (flags, len) = (body[0], usize::from(body[1]));
                match flags & !1 {
                    0 => got.push_str(std::str::from_utf8(&body[2..2 + len]).unwrap()),
                    2 => got.push('.'),
                    4 => got.push_str(".."),
                    8 => {
                        got.push('/');
                        root = true;
                    }
                    f => panic!("flag {f}"),
                }
                body = &body[2 + len..];
                // As Linux: a `/` after each component that is neither ROOT nor continued,
                // except at the very end.
                let more = !body.is_empty() || i != last;
                if !root && flags & 1 == 0 && more {
                    got.push('/');
                }
                root = false;
            }
        }
        assert_eq!(got, target);
    }
}
