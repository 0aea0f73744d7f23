//! Reproducible anywhere: examples/redis-os.yml, built in every output format kiln writes, gives
//! the same bytes in two differently configured environments. The first is root's, as CI runs
//! it: the shared store, umask 022, UTC, the C.UTF-8 locale, this machine's host name and every
//! core. The second differs in all of them: another TMPDIR and HOME, the unprivileged user
//! `nobody` (through `setpriv`) with its own store (the same images, imported from an archive),
//! umask 077, the time zone Pacific/Kiritimati (UTC+14), a Turkish locale, another host name (a
//! UTS namespace) and one core (`taskset -c 0`). Every file the builds write is compared, names
//! and bytes, so whatever kiln writes beside its outputs is covered too: the SBOMs (SPDX and
//! CycloneDX) and the provenance, signed with one key. Both builds leave SOURCE_DATE_EPOCH
//! unset (kiln's default), and the main build is made once more with it set.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages examples/redis-os.yml names, and the boot loader's.
const PACKAGES: &[&str] = &[
    "kernel",
    "init",
    "sysctl",
    "dhcp",
    "format",
    "mount",
    "getty",
    "redis",
    "bootloader",
];

/// One build: the outputs' name, `--root`, `--compress` and the formats. Together the builds
/// write every format (`Format::ALL`), every root and every initrd compression, in as few
/// builds as the formats allow: vhd and dynamic-vhd write the same file, and kernel+initrd,
/// kernel+squashfs, kernel+erofs and kernel+iso each write NAME-kernel and NAME-initrd.img.
struct Build {
    name: &'static str,
    root: &'static str,
    compress: &'static str,
    formats: &'static str,
    /// The SBOM's format.
    sbom: &'static str,
}

const BUILDS: &[Build] = &[
    Build {
        name: "redis-os",
        root: "ram",
        compress: "gzip",
        formats: "kernel+initrd,tar,tar-kernel-initrd,docker,uki,iso-bios,iso-efi,\
                  iso-efi-initrd,raw-bios,raw-efi,qcow2-bios,qcow2-efi,vhd,vmdk,gcp,aws",
        sbom: "spdx",
    },
    Build {
        name: "squashfs",
        root: "squashfs",
        compress: "zstd",
        formats: "kernel+squashfs,raw-efi,qcow2-efi,raw-bios",
        sbom: "cyclonedx",
    },
    Build {
        name: "erofs",
        root: "erofs",
        compress: "lz4",
        formats: "kernel+erofs,raw-efi",
        sbom: "spdx",
    },
    Build {
        name: "cd",
        root: "ram",
        compress: "none",
        formats: "kernel+iso,dynamic-vhd",
        sbom: "cyclonedx",
    },
];

/// The password of the key the provenance is signed with.
const KEY_PASSWORD: &str = "kiln-test";

/// The user of the second environment.
const NOBODY: u32 = 65534;

/// How an environment runs kiln.
struct Env {
    /// Its directory: home, tmp, out, and for the second the store.
    dir: PathBuf,
    /// The image store it builds from.
    store: PathBuf,
    /// The kiln binary both environments run: a copy taken once, readable by nobody.
    kiln: PathBuf,
    /// The second environment: umask 077, another time zone, locale, host name, one core.
    other: bool,
    /// Run as nobody (in the second environment).
    unprivileged: bool,
}

impl Env {
    /// `program ARGS` in this environment, with nothing of the test's environment but what is
    /// set here.
    fn command(&self, program: &std::ffi::OsStr, args: &[&str], epoch: Option<&str>) -> Command {
        let mut cmd = if self.other {
            // A UTS namespace with another host name; umask, one core, then nobody.
            let user = if self.unprivileged {
                "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --"
            } else {
                ""
            };
            let mut c = Command::new("unshare");
            c.args([
                "--uts",
                "sh",
                "-c",
                &format!(
                    "hostname kiln-elsewhere.example && umask 077 && exec taskset -c 0 {user} \"$@\""
                ),
                "sh",
            ]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", "umask 022 && exec \"$@\"", "sh"]);
            c
        };
        cmd.arg(program).args(args);
        cmd.env_clear();
        cmd.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", self.dir.join("home"))
            .env("TMPDIR", self.dir.join("tmp"));
        if self.other {
            cmd.env("TZ", "Pacific/Kiritimati")
                .env("LANG", "de_DE.ISO-8859-1")
                .env("LC_ALL", "tr_TR.UTF-8");
            if self.unprivileged {
                cmd.env("USER", "nobody").env("LOGNAME", "nobody");
            }
        } else {
            cmd.env("TZ", "UTC").env("LANG", "C.UTF-8");
        }
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        cmd.env("COSIGN_PASSWORD", KEY_PASSWORD);
        cmd
    }

    /// `kiln ARGS` in this environment.
    fn kiln(&self, args: &[&str], epoch: Option<&str>) -> Command {
        self.command(self.kiln.as_os_str(), args, epoch)
    }

    /// Build `b` into `out`; returns the wall time.
    fn build(&self, b: &Build, bootloader: &str, out: &Path, epoch: Option<&str>) -> f64 {
        let manifest = repo_root().join("examples/redis-os.yml");
        let manifest = manifest.to_str().expect("utf-8 path");
        let (store, out_dir) = (
            self.store.to_str().expect("utf-8 path"),
            out.to_str().expect("utf-8 path"),
        );
        // Each environment's copy of the signing key.
        let key = self.dir.join("signing.key");
        let key = key.to_str().expect("utf-8 path");
        let started = std::time::Instant::now();
        run_ok(&mut self.kiln(
            &[
                "build",
                "--name",
                b.name,
                "--size",
                "256M",
                "--root",
                b.root,
                "--compress",
                b.compress,
                "--sbom-format",
                b.sbom,
                "--key",
                key,
                "-f",
                b.formats,
                "--bootloader",
                bootloader,
                "--cache",
                store,
                "--dir",
                out_dir,
                manifest,
            ],
            epoch,
        ));
        started.elapsed().as_secs_f64()
    }
}

/// Every file under `dir`, by path relative to it (directories too, as `path/`).
fn files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).expect("read the output directory") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .to_string();
            if p.is_dir() {
                found.insert(format!("{rel}/"), p.clone());
                pending.push(p);
            } else {
                found.insert(rel, p);
            }
        }
    }
    found
}

/// The first offset at which two files differ.
fn first_difference(x: &[u8], y: &[u8]) -> usize {
    x.iter()
        .zip(y)
        .position(|(a, b)| a != b)
        .unwrap_or(x.len().min(y.len()))
}

/// The members of a tar: name, then a description of header and a digest of the data.
fn tar_members(data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut ar = tar::Archive::new(data);
    let mut out = Vec::new();
    for e in ar.entries().ok()? {
        let mut e = e.ok()?;
        let name = e.path().ok()?.to_string_lossy().to_string();
        let h = e.header().clone();
        let pax: Vec<String> = e
            .pax_extensions()
            .ok()
            .flatten()
            .map(|p| {
                p.flatten()
                    .map(|x| {
                        format!(
                            "{}={}",
                            x.key().unwrap_or("?"),
                            String::from_utf8_lossy(x.value_bytes())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut body = Vec::new();
        e.read_to_end(&mut body).ok()?;
        out.push((
            name,
            format!(
                "type {:?} mode {:o} uid {} gid {} mtime {} size {} user {:?} group {:?} \
                 pax {pax:?} data {}",
                h.entry_type(),
                h.mode().unwrap_or(0),
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
                h.mtime().unwrap_or(0),
                body.len(),
                h.username().ok().flatten(),
                h.groupname().ok().flatten(),
                sha(&body)
            ),
        ));
    }
    Some(out)
}

/// The members of newc cpio archives laid end to end (an uncompressed initrd).
fn cpio_members(mut data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let field = |h: &[u8], i: usize| -> Option<u64> {
        u64::from_str_radix(std::str::from_utf8(h.get(6 + 8 * i..14 + 8 * i)?).ok()?, 16).ok()
    };
    let pad = |n: usize| n.div_ceil(4) * 4;
    while data.len() >= 110 {
        if data.iter().take(4).all(|b| *b == 0) {
            data = &data[4..];
            continue;
        }
        if &data[..6] != b"070701" {
            return None;
        }
        let (mode, uid, gid, mtime, size, namesize) = (
            field(data, 1)?,
            field(data, 2)?,
            field(data, 3)?,
            field(data, 5)?,
            usize::try_from(field(data, 6)?).ok()?,
            usize::try_from(field(data, 11)?).ok()?,
        );
        let name_end = 110 + namesize;
        let name = String::from_utf8_lossy(data.get(110..name_end - 1)?).to_string();
        let body_start = pad(name_end);
        let body = data.get(body_start..body_start + size)?;
        out.push((
            name.clone(),
            format!(
                "mode {mode:o} uid {uid} gid {gid} mtime {mtime} size {size} ino {:?} \
                 nlink {:?} data {}",
                field(data, 0),
                field(data, 4),
                sha(body)
            ),
        ));
        data = &data[pad(body_start + size).min(data.len())..];
    }
    Some(out)
}

/// Where two archives first differ, when the file is a tar or (gzip-compressed or plain) cpio
/// or tar this test can read cheaply.
fn first_entry_difference(file: &str, x: &[u8], y: &[u8]) -> Option<String> {
    let gunzip = |d: &[u8]| {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(d)
            .read_to_end(&mut out)
            .ok()
            .map(|_| out)
    };
    let (x, y) = if x.starts_with(&[0x1f, 0x8b]) {
        (gunzip(x)?, gunzip(y)?)
    } else {
        (x.to_vec(), y.to_vec())
    };
    let (mx, my) = if x.starts_with(b"070701") {
        (cpio_members(&x)?, cpio_members(&y)?)
    } else if file.contains(".tar") {
        (tar_members(&x)?, tar_members(&y)?)
    } else {
        return None;
    };
    for (i, (a, b)) in mx.iter().zip(&my).enumerate() {
        if a != b {
            return Some(format!(
                "member {i}: {} [{}] vs {} [{}]",
                a.0, a.1, b.0, b.1
            ));
        }
    }
    (mx.len() != my.len()).then(|| format!("{} members vs {}", mx.len(), my.len()))
}

/// Compare every file two builds wrote; a description of each difference.
fn compare(first: &Path, second: &Path) -> Vec<String> {
    let (a, b) = (files(first), files(second));
    let mut problems = Vec::new();
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        problems.push(format!("{name}: only the first environment wrote it"));
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        problems.push(format!("{name}: only the second environment wrote it"));
    }
    for (name, pa) in &a {
        let Some(pb) = b.get(name) else { continue };
        if name.ends_with('/') {
            continue;
        }
        let (x, y) = (
            std::fs::read(pa).expect("read"),
            std::fs::read(pb).expect("read"),
        );
        if x != y {
            let at = first_difference(&x, &y);
            let entry = first_entry_difference(name, &x, &y)
                .map(|e| format!("; first differing entry: {e}"))
                .unwrap_or_default();
            problems.push(format!(
                "{name}: differs ({} vs {} bytes, first at byte {at}){entry}",
                x.len(),
                y.len()
            ));
        }
    }
    problems
}

/// `path` and everything under it belongs to nobody.
fn give_to_nobody(path: &Path) {
    run_ok(
        Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(path),
    );
}

#[test]
fn redis_os_is_byte_identical_in_two_environments() {
    if !is_root() || !tools_present(&["setpriv", "unshare", "taskset", "hostname", "git"]) {
        return;
    }
    let cache = shared_store();
    build_init();
    let images = build_packages(&cache, PACKAGES);
    let bootloader = images
        .iter()
        .find(|i| i.starts_with("kiln/bootloader:"))
        .expect("the bootloader package's image")
        .clone();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reproducible");
    let _ = std::fs::remove_dir_all(&root);
    let (a_dir, b_dir) = (root.join("a"), root.join("b"));
    for d in [&a_dir, &b_dir] {
        for sub in ["home", "tmp", "out", "out-epoch"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
    }
    // nobody trusts the checkout root owns (git refuses a repository another user owns), as
    // a CI user does with `git config --global --add safe.directory`.
    let top = repo_root().canonicalize().expect("repository root");
    std::fs::write(
        b_dir.join("home/.gitconfig"),
        format!("[safe]\n\tdirectory = {}\n", top.display()),
    )
    .expect("gitconfig");
    // One signing key for the provenance, a copy in each environment.
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    run_ok(
        kiln()
            .args(["key", "generate", "--output-key-prefix"])
            .arg(keys.join("k"))
            .env("COSIGN_PASSWORD", KEY_PASSWORD),
    );
    for d in [&a_dir, &b_dir] {
        std::fs::copy(keys.join("k.key"), d.join("signing.key")).expect("copy the key");
    }
    // The images, handed to nobody's own store through an archive.
    let archive = b_dir.join("images.tar");
    run_ok(
        kiln()
            .args(["cache", "export", "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(&archive)
            .args(&images),
    );
    give_to_nobody(&b_dir);
    let kiln_bin = root.join("kiln");
    std::fs::copy(kiln().get_program(), &kiln_bin).expect("copy kiln");
    let a = Env {
        dir: a_dir.clone(),
        store: cache.clone(),
        kiln: kiln_bin.clone(),
        other: false,
        unprivileged: false,
    };
    let b = Env {
        dir: b_dir.clone(),
        store: b_dir.join("store"),
        kiln: kiln_bin,
        other: true,
        unprivileged: true,
    };
    let archive = archive.to_str().expect("utf-8 path").to_string();
    let store = b.store.to_str().expect("utf-8 path").to_string();
    run_ok(&mut b.kiln(&["cache", "import", "--cache", &store, &archive], None));
    std::fs::remove_file(&archive).expect("remove the image archive");

    // The environments differ as promised.
    let probe =
        |env: &Env, script: &str| run_ok(&mut env.command("sh".as_ref(), &["-c", script], None));
    let facts = "echo $(id -u) $(umask) $(hostname) $(nproc) $TZ $HOME $TMPDIR";
    let (fa, fb) = (probe(&a, facts), probe(&b, facts));
    eprintln!("first environment:  {}", fa.trim());
    eprintln!("second environment: {}", fb.trim());
    let (fa, fb): (Vec<&str>, Vec<&str>) = (
        fa.split_whitespace().collect(),
        fb.split_whitespace().collect(),
    );
    for (i, what) in ["user", "umask", "host name"].iter().enumerate() {
        assert_ne!(fa[i], fb[i], "the environments have the same {what}");
    }
    if fa[3] == fb[3] {
        eprintln!("note: this machine has one core: the core count cannot differ");
    }

    // Each build's outputs are compared as soon as both environments wrote them, then removed:
    // twenty formats twice over would otherwise hold gigabytes at once.
    let mut problems = Vec::new();
    let mut times = Vec::new();
    let mut written = BTreeMap::new();
    let mut compare_and_clear = |label: &str, out: &str| {
        let (oa, ob) = (a_dir.join(out), b_dir.join(out));
        problems.extend(
            compare(&oa, &ob)
                .into_iter()
                .map(|p| format!("{label}: {p}")),
        );
        for (name, path) in files(&oa) {
            // Every provenance compared is a signed one.
            if name.ends_with(".provenance.json") {
                let provenance: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("the provenance"))
                        .expect("json");
                assert!(
                    provenance["signatures"]
                        .as_array()
                        .is_some_and(|s| !s.is_empty()),
                    "{name}: unsigned provenance: {provenance}"
                );
            }
            written.insert(format!("{out}/{name}"), ());
        }
        for dir in [&oa, &ob] {
            for e in std::fs::read_dir(dir).expect("read the output directory") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).expect("remove an output");
                } else {
                    std::fs::remove_file(&p).expect("remove an output");
                }
            }
        }
    };
    for build in BUILDS {
        let ta = a.build(build, &bootloader, &a_dir.join("out"), None);
        let tb = b.build(build, &bootloader, &b_dir.join("out"), None);
        times.push(format!("{} {ta:.1}s/{tb:.1}s", build.name));
        compare_and_clear("SOURCE_DATE_EPOCH unset", "out");
    }
    // The main build again with SOURCE_DATE_EPOCH.
    let ta = a.build(
        &BUILDS[0],
        &bootloader,
        &a_dir.join("out-epoch"),
        Some("1700000000"),
    );
    let tb = b.build(
        &BUILDS[0],
        &bootloader,
        &b_dir.join("out-epoch"),
        Some("1700000000"),
    );
    times.push(format!("{} (epoch) {ta:.1}s/{tb:.1}s", BUILDS[0].name));
    compare_and_clear("SOURCE_DATE_EPOCH=1700000000", "out-epoch");
    eprintln!(
        "build times (first/second environment): {}",
        times.join(", ")
    );
    eprintln!("{} files compared", written.len());
    // Both SBOM formats were written.
    for format in ["spdx", "cdx"] {
        assert!(
            written
                .keys()
                .any(|n| n.contains(&format!("sbom.{format}"))),
            "no {format} SBOM among {:?}",
            written.keys()
        );
    }
    // Every format was written (but rpi3, an arm64 format: tests/rpi3.rs builds it twice).
    for format in kiln_format::Format::ALL
        .into_iter()
        .filter(|f| *f != kiln_format::Format::Rpi3)
    {
        let build = BUILDS
            .iter()
            .find(|b| b.formats.split(',').any(|f| f == format.name()))
            .unwrap_or_else(|| panic!("no build writes {format}"));
        let file = format!("out/{}{}", build.name, format.suffix());
        assert!(
            written.contains_key(&file),
            "{format}: {file} was not written"
        );
    }
    assert!(
        problems.is_empty(),
        "the outputs differ between the environments:\n{}",
        problems.join("\n")
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Path → type, mode, owner, time and content digest of everything under `root`.
fn tree_listing(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(p) = pending.pop() {
        let m = std::fs::symlink_metadata(&p).expect("metadata");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        let content = if m.is_file() {
            sha(&std::fs::read(&p).expect("read"))
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p).expect("link").display().to_string()
        } else {
            String::new()
        };
        // The root directory is the unpacking's, not the image's.
        (!rel.is_empty()).then(|| {
            out.insert(
                rel,
                format!(
                    "mode {:o} uid {} gid {} mtime {} {content}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime()
                ),
            )
        });
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                pending.push(e.expect("entry").path());
            }
        }
    }
    out
}

/// An image built from a Dockerfile (a base image, COPY from the context, RUN steps that make
/// files and record what they see of the environment) has the same digest when built in two
/// environments that differ in TMPDIR, HOME, umask (077: RUN steps must not inherit it), time
/// zone, locale, host name and number of cores, each with its own store, SOURCE_DATE_EPOCH set.
/// (As root in both: RUN steps run containers.)
#[test]
fn an_image_build_is_byte_identical_in_two_environments() {
    if !is_root() || !tools_present(&["unshare", "taskset", "hostname"]) {
        return;
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reproducible-image");
    let _ = std::fs::remove_dir_all(&root);
    let ctx = root.join("ctx");
    std::fs::create_dir_all(ctx.join("files/sub")).expect("mkdir");
    std::fs::write(ctx.join("files/sub/data"), "data\n").expect("write");
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BUSYBOX\nFROM ${BUSYBOX}\nCOPY files/ /copied/\n\
         RUN mkdir -p /made/sub && echo made > /made/sub/file && ln -s sub/file /made/link \
         && : > /made/empty && hostname > /made/hostname \
         && echo \"${TZ-} ${LANG-} ${LC_ALL-} ${HOME-} $(id -u) $(umask)\" > /made/env\n",
    )
    .expect("Dockerfile");
    let archive = root.join("busybox.tar");
    let busybox = busybox_archive(&archive);
    let kiln_bin = root.join("kiln");
    std::fs::copy(kiln().get_program(), &kiln_bin).expect("copy kiln");
    let mut digests = Vec::new();
    for other in [false, true] {
        let dir = root.join(if other { "b" } else { "a" });
        for sub in ["home", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let env = Env {
            store: dir.join("store"),
            dir,
            kiln: kiln_bin.clone(),
            other,
            unprivileged: false,
        };
        let store = env.store.to_str().expect("utf-8 path");
        let archive = archive.to_str().expect("utf-8 path");
        run_ok(&mut env.kiln(&["cache", "import", "--cache", store, archive], None));
        run_ok(&mut env.kiln(
            &[
                "image",
                "build",
                "-t",
                "kiln-test/reproducible",
                "--build-arg",
                &format!("BUSYBOX={busybox}"),
                "--cache",
                store,
                ctx.to_str().expect("utf-8 path"),
            ],
            Some("1700000000"),
        ));
        let listing: serde_json::Value = serde_json::from_str(&run_ok(
            &mut env.kiln(&["cache", "ls", "--json", "--cache", store], None),
        ))
        .expect("json");
        let digest = listing
            .as_array()
            .expect("array")
            .iter()
            .find(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("kiln-test/reproducible"))
            })
            .unwrap_or_else(|| panic!("no kiln-test/reproducible in {listing}"))["digest"]
            .as_str()
            .expect("digest")
            .to_string();
        let unpacked = env.dir.join("unpacked");
        run_ok(&mut env.kiln(
            &[
                "image",
                "unpack",
                "--cache",
                store,
                "kiln-test/reproducible",
                unpacked.to_str().expect("utf-8 path"),
            ],
            None,
        ));
        digests.push((digest, tree_listing(&unpacked.join("rootfs"))));
    }
    let ((da, la), (db, lb)) = (&digests[0], &digests[1]);
    let env_line = std::fs::read_to_string(root.join("a/unpacked/rootfs/made/env"))
        .expect("the RUN step's record");
    eprintln!("the RUN step saw: {}", env_line.trim());
    let differing: Vec<String> = la
        .iter()
        .filter(|(p, v)| lb.get(*p) != Some(*v))
        .map(|(p, v)| format!("{p}: {v} vs {:?}", lb.get(p)))
        .chain(
            lb.keys()
                .filter(|p| !la.contains_key(*p))
                .map(|p| format!("{p}: only in the second")),
        )
        .collect();
    assert!(
        differing.is_empty() && da == db,
        "the image differs between the environments ({da} vs {db}):\n{}",
        differing.join("\n")
    );
    assert!(
        la.get("made/sub")
            .is_some_and(|v| v.starts_with("mode 40755")),
        "a RUN step's directory: {:?}",
        la.get("made/sub")
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A package in a repository another user owns, which git refuses to read for that user (not
/// a `safe.directory`), has no tag rather than another one: falling back to hashing the files
/// would give the same package a different tag, and every output a different image name.
#[test]
fn a_package_git_will_not_read_has_no_tag_rather_than_another() {
    if !is_root() || !tools_present(&["setpriv", "git"]) {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    give_to_nobody(home.path());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(kiln().get_program())
        .args(["pkg", "show-tag"])
        .arg(repo_root().join("pkg/busybox"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .output()
        .expect("spawn kiln");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a tag: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("safe.directory"), "{err}");
    // Trusted, it gets root's tag.
    std::fs::write(
        home.path().join(".gitconfig"),
        format!(
            "[safe]\n\tdirectory = {}\n",
            repo_root().canonicalize().expect("root").display()
        ),
    )
    .expect("gitconfig");
    let nobody = run_ok(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(kiln().get_program())
            .args(["pkg", "show-tag"])
            .arg(repo_root().join("pkg/busybox"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path()),
    );
    let root = run_ok(
        kiln()
            .args(["pkg", "show-tag"])
            .arg(repo_root().join("pkg/busybox")),
    );
    assert_eq!(nobody, root);
}
