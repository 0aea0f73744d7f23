//! Rootless builds: `kiln image build` run by an unprivileged user (made here, with subordinate
//! uid and gid ranges) builds in a user namespace and gives the image a root build gives: the
//! same digest, and the same files with the same modes, owners and contents, among them the
//! owners `COPY --chown`, `RUN chown` and `USER` give; `kiln build` of a manifest naming an
//! `@pkg:` package builds it rootless too. A user without subordinate ids is told what to add. (The test itself runs as root: it makes the users.)

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

/// The user that builds rootless.
const USER: &str = "kiln-rootless";
/// A user without subordinate ids.
const USER_WITHOUT_RANGE: &str = "kiln-norange";
/// How many subordinate ids the rootless user gets.
const RANGE: u64 = 65536;

/// /etc/subuid and /etc/subgid are changed by one test at a time.
static ID_FILES: Mutex<()> = Mutex::new(());

/// The uid and gid of `name`, made first when missing (without subordinate ids: they are
/// given here). Safe to run again.
fn ensure_user(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin"])
            .args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name])
            .output()
            .expect("useradd");
        // Another test run may have made it meanwhile.
        assert!(
            out.status.success() || id("-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (
        id("-u").expect("the user's uid"),
        id("-g").expect("the user's gid"),
    )
}

/// Give `name` a subordinate range in `file` (/etc/subuid or /etc/subgid) unless it has one:
/// `RANGE` ids after every range listed there.
fn ensure_range(file: &str, name: &str) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if text.lines().any(|l| l.split(':').next() == Some(name)) {
        return;
    }
    let end = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(':').skip(1);
            let first: u64 = parts.next()?.trim().parse().ok()?;
            let count: u64 = parts.next()?.trim().parse().ok()?;
            Some(first + count)
        })
        .max()
        .unwrap_or(0)
        .max(100_000);
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{name}:{end}:{RANGE}\n"));
    std::fs::write(file, text).unwrap_or_else(|e| panic!("writing {file}: {e}"));
}

/// Remove `name`'s lines from `file`.
fn remove_ranges(file: &str, name: &str) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let kept: String = text
        .lines()
        .filter(|l| l.split(':').next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept != text {
        std::fs::write(file, kept).unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }
}

/// `program ARGS` as the user `ids` (uid, gid; its groups), with only PATH, HOME and
/// SOURCE_DATE_EPOCH from the environment.
fn as_user(ids: (u32, u32), home: &Path, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", ids.0))
        .arg(format!("--regid={}", ids.1))
        .args(["--init-groups", "--"])
        .arg(program);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", home)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    cmd
}

/// Every file of a tree: its path, type and mode, owner, and content digest (or link target).
fn walk(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(p) = pending.pop() {
        let m = std::fs::symlink_metadata(&p).expect("metadata");
        let rel = p.strip_prefix(root).expect("inside").display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).expect("link").display())
        } else if m.is_file() {
            sha(&std::fs::read(&p).expect("read"))
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!("{:o} {}:{} {what}", m.mode(), m.uid(), m.gid()),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                pending.push(e.expect("entry").path());
            }
        }
    }
    out
}

/// A multi-stage Dockerfile whose files get owners every way a Dockerfile gives them:
/// `COPY --chown` from the context and from a stage, `RUN chown`, `USER`, a file made by
/// another user in the base image's terms, and a directory replaced (an opaque directory).
const DOCKERFILE: &str = "\
ARG BUSYBOX
FROM ${BUSYBOX} AS build
RUN echo 'app:x:2000:3000::/home/app:/bin/sh' >> /etc/passwd \\
 && mkdir -p /out/sub && echo built > /out/sub/file && chown -R 1000:1000 /out \\
 && chmod 0750 /out/sub && ln -s sub/file /out/link
FROM ${BUSYBOX}
COPY --chown=2000:3000 files/ /data/
COPY --from=build --chown=42:43 /out /copied
COPY --from=build /out /kept
COPY --from=build /etc/passwd /etc/passwd
RUN chown 7:8 /data/a && chmod 0640 /data/a && mkdir -p /opaque/dir \\
 && echo old > /opaque/dir/old && echo $(id -u):$(id -g) > /root-ids
RUN rm -rf /opaque/dir && mkdir /opaque/dir && echo new > /opaque/dir/new \\
 && mkdir -p /home && mkdir -m 0700 /home/app && chown app /home/app
USER app
RUN echo made by $(id -u):$(id -g) > /home/app/mine && mkdir /home/app/sub
USER 65534:65534
RUN id > /tmp/whoami
";

/// The image of `store`, unpacked (as root) into `dir`; its root file system.
fn unpacked(kiln_bin: &Path, store: &Path, dir: &Path) -> PathBuf {
    run_ok(
        Command::new(kiln_bin)
            .args(["-q", "image", "unpack", "--cache"])
            .arg(store)
            .arg("kiln-test/rootless")
            .arg(dir),
    );
    dir.join("rootfs")
}

/// The manifest digest `kiln image build` printed.
fn digest(out: &str) -> String {
    out.lines().last().unwrap_or_default().trim().to_string()
}

#[test]
fn a_rootless_build_gives_the_image_a_root_build_gives() {
    if !is_root() || !tools_present(&["useradd", "setpriv", "newuidmap", "newgidmap"]) {
        return;
    }
    let ids = {
        let _files = ID_FILES.lock().unwrap_or_else(|e| e.into_inner());
        let ids = ensure_user(USER);
        ensure_range("/etc/subuid", USER);
        ensure_range("/etc/subgid", USER);
        ids
    };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rootless");
    let _ = std::fs::remove_dir_all(&root);
    let ctx = root.join("ctx");
    std::fs::create_dir_all(ctx.join("files")).expect("mkdir");
    std::fs::write(ctx.join("files/a"), "a\n").expect("write");
    std::fs::write(ctx.join("files/b"), "b\n").expect("write");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
    // A copy of kiln that the user may run, whatever the permissions of the target directory.
    let kiln_bin = root.join("kiln");
    std::fs::copy(kiln().get_program(), &kiln_bin).expect("copy kiln");
    let archive = root.join("busybox.tar");
    let busybox = busybox_archive(&archive);
    // The user's own directory: its home and its store.
    let own = root.join("user");
    let home = own.join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", ids.0, ids.1))
            .arg(&own),
    );
    let build_args = |store: &Path| -> Vec<String> {
        [
            "-q",
            "image",
            "build",
            "-t",
            "kiln-test/rootless",
            "--build-arg",
            &format!("BUSYBOX={busybox}"),
            "--cache",
            store.to_str().expect("utf-8 path"),
            ctx.to_str().expect("utf-8 path"),
        ]
        .map(str::to_string)
        .to_vec()
    };

    // As root, in a store of its own.
    let root_store = root.join("root-store");
    run_ok(
        Command::new(&kiln_bin)
            .args(["cache", "import", "--cache"])
            .arg(&root_store)
            .arg(&archive),
    );
    let started = Instant::now();
    let root_out = run_ok(
        Command::new(&kiln_bin)
            .args(build_args(&root_store))
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let root_time = started.elapsed();

    // As the user, in the user's store: the base image imported by the user.
    let user_store = own.join("store");
    run_ok(
        as_user(ids, &home, &kiln_bin)
            .args(["cache", "import", "--cache"])
            .arg(&user_store)
            .arg(&archive),
    );
    let started = Instant::now();
    let user_out = run_ok(as_user(ids, &home, &kiln_bin).args(build_args(&user_store)));
    let rootless_time = started.elapsed();
    eprintln!(
        "build of the test Dockerfile: as root {root_time:.2?}, rootless {rootless_time:.2?}"
    );

    // The store is the user's: nothing in it belongs to root.
    let foreign: Vec<PathBuf> = walkdir(&user_store)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == 0))
        .collect();
    assert!(
        foreign.is_empty(),
        "root's files in the user's store: {foreign:?}"
    );

    let (root_digest, user_digest) = (digest(&root_out), digest(&user_out));
    assert!(root_digest.starts_with("sha256:"), "{root_out}");
    let root_files = walk(&unpacked(&kiln_bin, &root_store, &root.join("root-image")));
    let user_files = walk(&unpacked(&kiln_bin, &user_store, &root.join("user-image")));
    let differ: Vec<String> = root_files
        .keys()
        .chain(user_files.keys())
        .filter(|k| root_files.get(*k) != user_files.get(*k))
        .map(|k| {
            format!(
                "{k}: root {:?}, rootless {:?}",
                root_files.get(k),
                user_files.get(k)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "the images differ:\n{}",
        differ.join("\n")
    );
    assert_eq!(root_digest, user_digest, "same files, another image");

    // The owners the Dockerfile gave.
    let owner = |rel: &str| {
        user_files
            .get(rel)
            .unwrap_or_else(|| panic!("no {rel} in the image"))
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(owner("data/a"), "100640 7:8");
    assert_eq!(owner("data/b"), "100644 2000:3000");
    assert_eq!(owner("copied/sub"), "40750 42:43");
    assert_eq!(owner("copied/sub/file"), "100644 42:43");
    assert_eq!(owner("kept/sub"), "40750 1000:1000");
    assert_eq!(owner("home/app"), "40700 2000:0");
    assert_eq!(owner("home/app/mine"), "100644 2000:3000");
    assert!(!user_files.contains_key("opaque/dir/old"), "{user_files:?}");
    assert!(user_files.contains_key("opaque/dir/new"), "{user_files:?}");
    let image = root.join("user-image/rootfs");
    let read = |rel: &str| std::fs::read_to_string(image.join(rel)).expect("read");
    assert_eq!(read("root-ids"), "0:0\n");
    assert_eq!(read("home/app/mine"), "made by 2000:3000\n");
    assert!(
        read("tmp/whoami").starts_with("uid=65534"),
        "{}",
        read("tmp/whoami")
    );

    // `kiln build` of a manifest naming an `@pkg:` package builds it rootless too, and writes
    // outputs the user owns.
    let pkg = own.join("pkg/marker");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(pkg.join("build.yml"), "org: kiln-test\nimage: marker\n").expect("build.yml");
    std::fs::write(
        pkg.join("Dockerfile"),
        format!("FROM {busybox}\nRUN echo built by $(id -u) > /marker\n"),
    )
    .expect("Dockerfile");
    std::fs::write(own.join("system.yml"), "init:\n  - \"@pkg:pkg/marker\"\n").expect("manifest");
    run_ok(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", ids.0, ids.1))
            .arg(&own),
    );
    let system = own.join("system.tar");
    run_ok(
        as_user(ids, &home, &kiln_bin)
            // The package is in no git repository of the user's (the one above belongs to
            // another user, which git refuses to read): its tag is its content hash.
            .env("GIT_CEILING_DIRECTORIES", &root)
            .args(["-q", "build", "-f", "tar", "-o"])
            .arg(&system)
            .arg("--cache")
            .arg(&user_store)
            .arg(own.join("system.yml")),
    );
    assert_eq!(
        std::fs::metadata(&system).expect("system.tar").uid(),
        ids.0,
        "the output is not the user's"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&system).expect("open"));
    let marker = archive
        .entries()
        .expect("entries")
        .flatten()
        .find(|e| e.path().is_ok_and(|p| p == Path::new("marker")))
        .map(|mut e| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).expect("read");
            text
        });
    assert_eq!(
        marker.as_deref(),
        Some("built by 0\n"),
        "the package's file"
    );

    let _ = std::fs::remove_dir_all(&root);
}

/// The paths under `dir`, `dir` included.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
        out.push(p);
    }
    out
}

#[test]
fn a_user_without_subordinate_ids_is_told_what_to_add() {
    if !is_root() || !tools_present(&["useradd", "setpriv"]) {
        return;
    }
    let ids = {
        let _files = ID_FILES.lock().unwrap_or_else(|e| e.into_inner());
        let ids = ensure_user(USER_WITHOUT_RANGE);
        remove_ranges("/etc/subuid", USER_WITHOUT_RANGE);
        remove_ranges("/etc/subgid", USER_WITHOUT_RANGE);
        ids
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").expect("write");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    run_ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(dir.path()));
    let kiln_bin = dir.path().join("kiln");
    std::fs::copy(kiln().get_program(), &kiln_bin).expect("copy kiln");
    for args in [
        vec!["image", "build", "--cache"],
        vec!["pkg", "build", "--cache"],
    ] {
        let out = as_user(ids, &home, &kiln_bin)
            .args(&args)
            .arg(dir.path().join("store"))
            .arg(&ctx)
            .output()
            .expect("spawn kiln");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} built without subordinate ids"
        );
        for expected in [
            format!("user {USER_WITHOUT_RANGE} (uid {})", ids.0),
            "no subordinate uid range in /etc/subuid".to_string(),
            "usermod --add-subuids".to_string(),
        ] {
            assert!(
                stderr.contains(&expected),
                "{args:?}: no {expected:?} in:\n{stderr}"
            );
        }
    }
    // Refused before anything was made.
    assert!(!dir.path().join("store").exists());
}
