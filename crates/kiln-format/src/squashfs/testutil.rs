//! A sample entry stream and a checker of an extracted tree, shared by the squashfs and erofs
//! tests.

use kiln_fs::{Entry, Kind};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

/// Deterministic bytes: compressible runs mixed with pseudo-random noise.
#[allow(clippy::cast_possible_truncation)] // test data
pub(crate) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let b = (x >> 33) as u8;
        if b < 96 {
            let run = usize::from(b % 40) + 1;
            out.extend(std::iter::repeat_n(
                b'a' + (b % 26),
                run.min(len - out.len()),
            ));
        } else {
            out.push(b);
        }
    }
    out
}

fn file(path: &str, mode: u32, data: Vec<u8>) -> (Entry, Vec<u8>) {
    (
        Entry::file(path, mode, data.len() as u64, 1_600_000_000),
        data,
    )
}

/// The stream: nested directories, empty and small files, files over one block and of a few
/// MB, a hole, symlinks, a hard link, devices, a fifo, owners, a setuid file, an extended
/// attribute, a path given twice and a directory given twice, names in unsorted order.
pub(crate) fn sample() -> Vec<(Entry, Vec<u8>)> {
    let mut v = vec![
        (Entry::dir("", 0o755, 1_600_000_000), Vec::new()),
        (Entry::dir("usr", 0o755, 1_600_000_001), Vec::new()),
        (Entry::dir("usr/lib", 0o755, 1_600_000_002), Vec::new()),
        (Entry::dir("usr/lib/deep", 0o750, 1_600_000_003), Vec::new()),
        (Entry::dir("etc", 0o755, 1_600_000_004), Vec::new()),
        file("etc/zzz", 0o644, b"last\n".to_vec()),
        file("etc/empty", 0o600, Vec::new()),
        file("etc/hostname", 0o644, b"first\n".to_vec()),
        file("etc/hostname", 0o640, b"kiln\n".to_vec()),
        file("usr/lib/deep/5000", 0o644, bytes(5000, 1)),
        file("usr/lib/deep/4096", 0o644, bytes(4096, 2)),
        file("usr/lib/deep/300k", 0o755, bytes(300_000, 3)),
        file("usr/lib/big", 0o644, bytes(3 * 1024 * 1024 + 17, 4)),
        file("usr/lib/zeros", 0o644, vec![0; 512 * 1024 + 5]),
        (
            Entry::symlink("usr/lib/rel", "deep/5000", 0o777, 1_600_000_005),
            Vec::new(),
        ),
        (
            Entry::symlink("etc/abs", "/usr/lib/big", 0o777, 1_600_000_006),
            Vec::new(),
        ),
        (
            Entry::new(
                "usr/lib/hard",
                Kind::Hardlink("usr/lib/deep/300k".into()),
                0o755,
                1_600_000_000,
            ),
            Vec::new(),
        ),
        (
            Entry::new(
                "null",
                Kind::Char { major: 1, minor: 3 },
                0o666,
                1_600_000_007,
            ),
            Vec::new(),
        ),
        (
            Entry::new(
                "loop9",
                Kind::Block {
                    major: 7,
                    minor: 300,
                },
                0o660,
                1_600_000_008,
            ),
            Vec::new(),
        ),
        (
            Entry::new("fifo", Kind::Fifo, 0o644, 1_600_000_009),
            Vec::new(),
        ),
        (Entry::dir("usr", 0o711, 1_600_000_010), Vec::new()),
    ];
    let (mut owned, data) = file("home/user/setuid", 0o4755, b"#!/bin/sh\n".to_vec());
    owned.uid = 1000;
    owned.gid = 1001;
    v.insert(3, (Entry::dir("home", 0o755, 1_600_000_000), Vec::new()));
    v.insert(4, {
        let mut d = Entry::dir("home/user", 0o700, 1_600_000_000);
        d.uid = 1000;
        d.gid = 1001;
        (d, Vec::new())
    });
    v.insert(5, (owned, data));
    let (mut cap, data) = file("usr/lib/ping", 0o755, b"ping".to_vec());
    cap.xattrs.push((
        "security.capability".into(),
        vec![
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ));
    cap.xattrs.push(("user.note".into(), b"kiln".to_vec()));
    v.push((cap, data));
    // Many entries in one directory, to cross metadata blocks.
    v.push((Entry::dir("usr/share", 0o755, 1_600_000_011), Vec::new()));
    for i in (0..600).rev() {
        v.push(file(
            &format!("usr/share/f{i:04}"),
            0o644,
            bytes(i % 50, i as u64),
        ));
    }
    v
}

/// What the tree should hold: path -> (entry, data), the last entry of each path winning;
/// hard links resolved to their target's entry.
pub(crate) fn expected(stream: &[(Entry, Vec<u8>)]) -> BTreeMap<String, (Entry, Vec<u8>)> {
    let mut m: BTreeMap<String, (Entry, Vec<u8>)> = BTreeMap::new();
    for (e, d) in stream {
        if e.path.is_empty() {
            continue;
        }
        match &e.kind {
            Kind::Hardlink(t) => {
                let target = m.get(t).cloned().expect("hard link target");
                m.insert(e.path.clone(), target);
            }
            _ => {
                m.insert(e.path.clone(), (e.clone(), d.clone()));
            }
        }
    }
    m
}

/// Whether `tool` runs; without it, a test skips (printing why) unless `CI` is set, where
/// it fails.
pub(crate) fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--help")
        .output()
        .map(|_| true)
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is needed by this test (install squashfs-tools / erofs-utils)"
        );
        eprintln!("skipped: {tool} is not installed");
    }
    ok
}

/// Whether we run as root (needed to extract device nodes and owners).
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Compare the tree extracted at `root` with `stream`: the same paths, types, permission
/// bits, owners, contents, link targets, device numbers; hard-linked paths share an inode.
/// `exact` also compares modification times, the setuid/setgid bits and hard links
/// (fsck.erofs 1.5 extracts hard links as copies and loses setuid/setgid by changing the
/// owner after the mode).
pub(crate) fn check_tree(root: &Path, stream: &[(Entry, Vec<u8>)], exact: bool) {
    let want = expected(stream);
    let mut found = Vec::new();
    walk(root, root, &mut found);
    let want_paths: Vec<&String> = want.keys().collect();
    let found_paths: Vec<&String> = found.iter().collect();
    assert_eq!(found_paths, want_paths, "the extracted paths");
    for (path, (e, data)) in &want {
        let p = root.join(path);
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        match &e.kind {
            Kind::File => {
                assert!(ft.is_file(), "{path} is a file");
                let got = std::fs::read(&p).expect("read");
                assert!(got == *data, "{path}: contents differ");
            }
            Kind::Dir => assert!(ft.is_dir(), "{path} is a directory"),
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{path} is a symlink");
                let got = std::fs::read_link(&p).expect("readlink");
                assert_eq!(got.to_str(), Some(t.as_str()), "{path}: target");
            }
            Kind::Char { major, minor } | Kind::Block { major, minor } => {
                assert!(ft.is_char_device() || ft.is_block_device(), "{path} device");
                assert_eq!(
                    matches!(e.kind, Kind::Char { .. }),
                    ft.is_char_device(),
                    "{path}: char or block"
                );
                let rdev = m.rdev();
                let (ma, mi) = (
                    ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000),
                    (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00),
                );
                assert_eq!((ma, mi), (u64::from(*major), u64::from(*minor)), "{path}");
            }
            Kind::Fifo => assert!(ft.is_fifo(), "{path} is a fifo"),
            Kind::Hardlink(_) => unreachable!("resolved"),
        }
        if !ft.is_symlink() {
            let mask = if exact { 0o7777 } else { 0o1777 };
            assert_eq!(m.mode() & mask, e.mode & mask, "{path}: mode");
            if is_root() {
                assert_eq!(
                    (u64::from(m.uid()), u64::from(m.gid())),
                    (e.uid, e.gid),
                    "{path}"
                );
            }
        }
        if exact && ft.is_file() {
            assert_eq!(m.mtime() as u64, e.mtime, "{path}: mtime");
        }
    }
    if !exact {
        return;
    }
    let a = std::fs::metadata(root.join("usr/lib/hard")).expect("hard");
    let b = std::fs::metadata(root.join("usr/lib/deep/300k")).expect("300k");
    assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in names {
        let rel = p
            .strip_prefix(root)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        out.push(rel);
        if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
            walk(root, &p, out);
        }
    }
    out.sort();
}

/// Run `cmd`, failing with its output when it fails; returns stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mount `image` read-only as `fstype` on a loop device at `dir`, run `check` on it and
/// unmount; skips with a reason when mounting fails (no loop devices, not root, no kernel
/// support).
pub(crate) fn with_mount(image: &Path, fstype: &str, dir: &Path, check: impl FnOnce()) {
    if !is_root() {
        eprintln!("skipped the kernel mount: not root");
        return;
    }
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = Command::new("mount")
        .args(["-t", fstype, "-o", "loop,ro"])
        .arg(image)
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped the kernel mount: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped the kernel mount: {e}");
            return;
        }
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    let _ = Command::new("umount").arg(dir).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Mount `image` read-only as `fstype` on a loop device at `dir` and check it against
/// `stream`, including extended attributes (see [`with_mount`]).
pub(crate) fn mount_check(image: &Path, fstype: &str, dir: &Path, stream: &[(Entry, Vec<u8>)]) {
    with_mount(image, fstype, dir, || {
        check_tree(dir, stream, true);
        let dirm = std::fs::metadata(dir.join("usr")).expect("usr");
        assert_eq!(dirm.nlink(), 4, "usr: . .. lib share");
        let out = Command::new("getfattr")
            .args(["-d", "-m", "-", "-e", "hex"])
            .arg(dir.join("usr/lib/ping"))
            .output();
        eprintln!(
            "checked {} mounted as {fstype} by the kernel",
            image.display()
        );
        if let Ok(o) = out
            && o.status.success()
        {
            eprintln!("checked the extended attributes with getfattr");
            let s = String::from_utf8_lossy(&o.stdout);
            assert!(
                s.contains("security.capability=0x0100000200200000"),
                "capability: {s}"
            );
            assert!(s.contains("user.note=0x6b696c6e"), "user.note: {s}");
        }
    });
}

/// Feed the directory tree at `root` to `sink` (directories before their children, in
/// `read_dir` order; hard links as links to the first path seen), for benchmarks. Returns
/// the number of entries and of file bytes.
#[allow(clippy::cast_possible_truncation)] // device numbers are 32 bits
pub(crate) fn feed_tree(root: &Path, sink: &mut dyn kiln_fs::Sink) -> std::io::Result<(u64, u64)> {
    let mut links: std::collections::HashMap<(u64, u64), String> = Default::default();
    let mut stack = vec![String::new()];
    let (mut entries, mut bytes) = (0u64, 0u64);
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for d in std::fs::read_dir(&dir)? {
            let d = d?;
            let name = d.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = d.metadata()?;
            let ft = m.file_type();
            let mtime = m.mtime().max(0) as u64;
            let mut e = Entry::new(path.clone(), Kind::Fifo, m.mode() & 0o7777, mtime);
            e.uid = u64::from(m.uid());
            e.gid = u64::from(m.gid());
            let dev = || {
                let r = m.rdev();
                (
                    (((r >> 8) & 0xfff) | ((r >> 32) & 0xffff_f000)) as u32,
                    ((r & 0xff) | ((r >> 12) & 0xffff_ff00)) as u32,
                )
            };
            e.kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(d.path())?.to_string_lossy().into_owned())
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = links.get(&(m.dev(), m.ino())) {
                        Kind::Hardlink(first.clone())
                    } else {
                        links.insert((m.dev(), m.ino()), path.clone());
                        Kind::File
                    }
                } else {
                    Kind::File
                }
            } else if ft.is_char_device() {
                let (major, minor) = dev();
                Kind::Char { major, minor }
            } else if ft.is_block_device() {
                let (major, minor) = dev();
                Kind::Block { major, minor }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                continue;
            };
            entries += 1;
            if e.kind == Kind::File {
                e.size = m.len();
                bytes += e.size;
                let mut f = std::fs::File::open(d.path())?;
                sink.add(&e, &mut f)?;
            } else {
                sink.add(&e, &mut std::io::empty())?;
            }
            if e.kind == Kind::Dir {
                stack.push(path);
            }
        }
    }
    Ok((entries, bytes))
}
