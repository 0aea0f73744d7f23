//! Helpers shared by kiln's integration tests.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kiln binary under test.
pub fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

/// ../shared/conformance/linuxkit, or None (with a message) when it is absent.
pub fn conformance_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/linuxkit");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipping: {} is absent", d.display());
        None
    }
}

/// Run a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store with every fixture image imported.
pub fn fixture_store(dir: &Path) -> PathBuf {
    let cache = dir.join("cache");
    let conf = conformance_dir().expect("conformance corpus");
    let mut images: Vec<PathBuf> = std::fs::read_dir(conf.join("images"))
        .expect("images")
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    for img in images {
        run_ok(
            kiln()
                .arg("cache")
                .arg("import")
                .arg(&img)
                .arg("--cache")
                .arg(&cache),
        );
    }
    cache
}

/// The file system a tar describes, one line per path as in the conformance listings, the last
/// entry for a path winning (as when extracting); also the content of every regular file.
pub fn listing(tar_bytes: &[u8]) -> (BTreeMap<String, String>, BTreeMap<String, Vec<u8>>) {
    let mut lines = BTreeMap::new();
    let mut contents = BTreeMap::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_string();
        let h = e.header().clone();
        let mode = format!("{:04o}", h.mode().expect("mode") & 0o7777);
        let (uid, gid) = (h.uid().expect("uid"), h.gid().expect("gid"));
        let link = e
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_default();
        let (kind, size, tail) = match h.entry_type() {
            tar::EntryType::Directory => ("dir", 0, String::new()),
            tar::EntryType::Symlink => ("symlink", 0, link),
            tar::EntryType::Link => ("hardlink", 0, link),
            tar::EntryType::Char => ("char", 0, String::new()),
            tar::EntryType::Block => ("block", 0, String::new()),
            tar::EntryType::Fifo => ("fifo", 0, String::new()),
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("data");
                let hash = hex::encode(Sha256::digest(&data));
                let size = data.len();
                contents.insert(path.clone(), data);
                ("file", size, hash)
            }
        };
        lines.insert(
            path.clone(),
            format!("{path}\t{kind}\t{mode}\t{uid}\t{gid}\t{size}\t{tail}"),
        );
    }
    (lines, contents)
}
