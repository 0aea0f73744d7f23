//! The initrd of `kiln build -f kernel+initrd`: compressed on every core with the same bytes
//! on one core, its segments cached in the store so that a rebuild compresses only what
//! changed, a corrupt cache entry rebuilt and never used, and `kiln cache clean` removing
//! segments.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

const MANIFEST: &str = "kernel:
  image: kiln-test/kernel:6.6.0
  cmdline: console=ttyS0
init:
  - kiln-test/init:1
onboot:
  - name: tool
    image: kiln-test/plain:1
services:
  - name: a
    image: kiln-test/svc:1
  - name: b
    image: kiln-test/svc:1
  - name: changing
    image: docker.io/kiln-test/changing:1
";

/// Segments of MANIFEST: kernel modules, init, plain, svc (once for a and b), changing.
const SEGMENTS: usize = 5;

struct Fixture {
    _tmp: tempfile::TempDir,
    cache: PathBuf,
    manifest: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        conformance_dir()?;
        let tmp = tempfile::tempdir().expect("tmp");
        let cache = fixture_store(tmp.path());
        let manifest = tmp.path().join("sys.yml");
        std::fs::write(&manifest, MANIFEST).expect("manifest");
        let out = tmp.path().join("out");
        let f = Fixture {
            cache,
            manifest,
            out,
            _tmp: tmp,
        };
        f.import_changing("1");
        Some(f)
    }

    /// (Re)import docker.io/kiln-test/changing:1 with `version` in /etc/version.
    fn import_changing(&self, version: &str) {
        let layer = raw_layer(&[
            Member::Dir("etc"),
            Member::File("etc/version", version.as_bytes()),
        ]);
        let archive = self.out.with_file_name(format!("changing-{version}.tar"));
        std::fs::write(
            &archive,
            oci_archive("docker.io/kiln-test/changing:1", &[layer]),
        )
        .expect("archive");
        run_ok(
            kiln()
                .args(["cache", "import"])
                .arg(&archive)
                .arg("--cache")
                .arg(&self.cache),
        );
    }

    fn segments(&self) -> PathBuf {
        self.cache.join("initrd-segments")
    }

    fn segment_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.segments())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Build, optionally under `taskset -c CPUS`; returns the initrd and kiln's debug log.
    fn build(&self, cpus: Option<&str>, format: &str) -> (Vec<u8>, String) {
        let kiln = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
        let mut cmd = match cpus {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.args(["-c", c]).arg(kiln);
                t
            }
            None => Command::new(kiln),
        };
        cmd.args(["build", "-f", format, "--name", "sys", "--cache"])
            .arg(&self.cache)
            .arg("--dir")
            .arg(&self.out)
            .arg(&self.manifest)
            .env("KILN_LOG", "debug");
        let out = cmd.output().expect("spawn kiln");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{cmd:?} failed:\n{log}");
        let file = if format == "kernel+initrd" {
            "sys-initrd.img"
        } else {
            "sys-initrd.tar"
        };
        (std::fs::read(self.out.join(file)).expect("initrd"), log)
    }

    fn clear_segments(&self) {
        if self.segments().exists() {
            std::fs::remove_dir_all(self.segments()).expect("remove segments");
        }
    }
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

fn have_taskset() -> bool {
    let ok = Command::new("taskset").arg("-V").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI needs taskset");
        eprintln!("skipping: taskset is not installed");
    }
    ok
}

#[test]
fn initrd_bytes_do_not_depend_on_cores_or_the_cache() {
    let Some(f) = Fixture::new() else { return };
    if !have_taskset() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cores >= 2 || std::env::var_os("CI").is_none(),
        "CI machines have two cores"
    );
    let (one, log) = f.build(Some("0"), "kernel+initrd");
    assert_eq!(count(&log, "1 threads"), 1, "{log}");
    assert_eq!(count(&log, "initrd segment compressed"), SEGMENTS, "{log}");
    if cores >= 2 {
        f.clear_segments();
        let (two, log) = f.build(Some("0,1"), "kernel+initrd");
        assert_eq!(count(&log, "2 threads"), 1, "{log}");
        assert!(one == two, "the initrd differs between one and two cores");
    }
    // From the cache: the same bytes, nothing compressed but the small loose parts.
    let (cached, log) = f.build(None, "kernel+initrd");
    assert_eq!(count(&log, "initrd segment reused"), SEGMENTS, "{log}");
    assert_eq!(count(&log, "initrd segment compressed"), 0, "{log}");
    assert!(one == cached, "the initrd from cached segments differs");
    // tar-kernel-initrd writes the same initrd.
    let (tar, _) = f.build(None, "tar-kernel-initrd");
    let mut ar = tar::Archive::new(&tar[..]);
    let mut found = false;
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_string_lossy() == "initrd.img" {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            assert!(data == one, "tar-kernel-initrd holds another initrd");
            found = true;
        }
    }
    assert!(found, "no initrd.img in sys-initrd.tar");
}

#[test]
fn a_changed_image_recompresses_only_its_segment() {
    let Some(f) = Fixture::new() else { return };
    let (first, _) = f.build(None, "kernel+initrd");
    let before: Vec<(PathBuf, u64)> = f
        .segment_files()
        .into_iter()
        .map(|p| {
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).expect("meta"));
            (p, ino)
        })
        .collect();
    assert_eq!(before.len(), SEGMENTS);
    f.import_changing("2");
    let (second, log) = f.build(None, "kernel+initrd");
    assert_eq!(count(&log, "initrd segment reused"), SEGMENTS - 1, "{log}");
    let compressed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("initrd segment compressed"))
        .collect();
    assert_eq!(compressed.len(), 1, "{log}");
    assert!(compressed[0].contains("kiln-test/changing:1"), "{log}");
    assert!(first != second, "the changed image is not in the initrd");
    // The unchanged entries are the very same files; one new entry was added.
    let after = f.segment_files();
    assert_eq!(after.len(), SEGMENTS + 1);
    for (p, ino) in &before {
        let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
        assert_eq!(*ino, now, "{} was rewritten", p.display());
    }
    // The same bytes as a build without a cache.
    f.clear_segments();
    let (fresh, _) = f.build(None, "kernel+initrd");
    assert!(
        second == fresh,
        "the partly cached initrd differs from a fresh one"
    );
}

#[test]
fn a_corrupt_segment_is_rebuilt_not_used() {
    let Some(f) = Fixture::new() else { return };
    let (first, _) = f.build(None, "kernel+initrd");
    for p in f.segment_files() {
        let mut data = std::fs::read(&p).expect("read");
        let i = data.len() / 3;
        data[i] ^= 1;
        std::fs::write(&p, data).expect("write");
    }
    let (second, log) = f.build(None, "kernel+initrd");
    assert_eq!(count(&log, "is corrupt"), SEGMENTS, "{log}");
    assert_eq!(count(&log, "initrd segment reused"), 0, "{log}");
    assert!(first == second, "a corrupt segment changed the initrd");
    let (_, log) = f.build(None, "kernel+initrd");
    assert_eq!(count(&log, "initrd segment reused"), SEGMENTS, "{log}");
}

#[test]
fn cache_clean_removes_segments() {
    let Some(f) = Fixture::new() else { return };
    f.build(None, "kernel+initrd");
    let clean = |extra: &[&str]| {
        run_ok(
            kiln()
                .args(["cache", "clean", "--cache"])
                .arg(&f.cache)
                .args(extra),
        )
    };
    // Recently used segments stay; --build-cache removes them all.
    let out = clean(&[]);
    assert!(out.contains("removed 0 initrd segments"), "{out}");
    assert_eq!(f.segment_files().len(), SEGMENTS);
    let out = clean(&["--build-cache"]);
    assert!(
        out.contains(&format!("removed {SEGMENTS} initrd segments")),
        "{out}"
    );
    assert!(f.segment_files().is_empty());
}
