//! LinuxKit's package tags: in a git repository, `kiln pkg show-tag` and `kiln pkg build` give
//! what `linuxkit pkg show-tag` gives, the git tree hash of the package directory
//! (`git rev-parse HEAD:DIR`), with `-dirty-` and seven hex digits of a hash of the files'
//! contents while it has uncommitted changes; `--hash`, `--tag` templates, `--hash-commit`,
//! `--hash-path`, `--force-dirty` and `--dev` as LinuxKit has them; kiln's content hash with
//! `--content-hash`. Run as `linuxkit` (a link to kiln), LINUXKIT_CACHE is the store.

mod common;

use common::{kiln, run_ok};
use sha2::Digest as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// A repository with LinuxKit-layout packages pkg/hello and pkg/world, committed twice.
fn repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    for p in ["hello", "world"] {
        write(
            &repo.join(format!("pkg/{p}/build.yml")),
            &format!("image: {p}\n"),
        );
        write(
            &repo.join(format!("pkg/{p}/Dockerfile")),
            "FROM scratch\nCOPY greeting /greeting\n",
        );
        write(&repo.join(format!("pkg/{p}/greeting")), &format!("{p}\n"));
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    write(&repo.join("pkg/hello/greeting"), "hello again\n");
    git(&repo, &["commit", "-q", "-am", "two"]);
    (dir, repo)
}

fn show_tag(repo: &Path, args: &[&str]) -> String {
    run_ok(
        kiln()
            .current_dir(repo)
            .args(["pkg", "show-tag"])
            .args(args),
    )
    .trim()
    .to_string()
}

/// LinuxKit's dirty suffix, computed here from git's own listing: SHA-256 over the contents
/// of the tracked, then the untracked (not ignored), regular files of the directory.
fn dirty_suffix(dir: &Path) -> String {
    let mut h = sha2::Sha256::new();
    let tracked = git(dir, &["ls-files"]);
    let untracked = git(dir, &["ls-files", "--exclude-standard", "--others"]);
    for name in tracked.lines().chain(untracked.lines()) {
        if let Ok(bytes) = fs::read(dir.join(name)) {
            h.update(bytes);
        }
    }
    format!("-dirty-{}", &hex::encode(h.finalize())[..7])
}

#[test]
fn show_tag_is_the_git_tree_hash_then_the_dirty_form() {
    let (_dir, repo) = repo();
    let tree = git(&repo, &["rev-parse", "HEAD:pkg/hello"]);
    assert_eq!(
        show_tag(&repo, &["pkg/hello"]),
        format!("linuxkit/hello:{tree}")
    );
    // Several packages, one line each; --canonical names the registry.
    let world = git(&repo, &["rev-parse", "HEAD:pkg/world"]);
    assert_eq!(
        show_tag(&repo, &["pkg/hello", "pkg/world"]),
        format!("linuxkit/hello:{tree}\nlinuxkit/world:{world}")
    );
    assert_eq!(
        show_tag(&repo, &["--canonical", "pkg/hello"]),
        format!("docker.io/linuxkit/hello:{tree}")
    );
    // The repository's top directory is hashed as the commit's tree.
    write(&repo.join("build.yml"), "image: top\n");
    git(&repo, &["add", "build.yml"]);
    git(&repo, &["commit", "-q", "-m", "top"]);
    let root_tree = git(&repo, &["show", "-s", "--format=%T", "HEAD"]);
    assert_eq!(show_tag(&repo, &["."]), format!("linuxkit/top:{root_tree}"));

    // A changed file: dirty, with LinuxKit's suffix.
    let hello = repo.join("pkg/hello");
    write(&hello.join("greeting"), "changed\n");
    let dirty = format!("linuxkit/hello:{tree}{}", dirty_suffix(&hello));
    assert_eq!(show_tag(&repo, &["pkg/hello"]), dirty);
    // The other package is still clean.
    assert_eq!(
        show_tag(&repo, &["pkg/world"]),
        format!("linuxkit/world:{world}")
    );
    // An untracked file makes it dirty too, and counts in the suffix; an ignored one does not.
    git(&repo, &["checkout", "-q", "--", "pkg/hello"]);
    write(&hello.join("notes.txt"), "new\n");
    assert_eq!(
        show_tag(&repo, &["pkg/hello"]),
        format!("linuxkit/hello:{tree}{}", dirty_suffix(&hello))
    );
    write(&repo.join(".gitignore"), "notes.txt\n");
    git(&repo, &["add", ".gitignore"]);
    git(&repo, &["commit", "-q", "-m", "ignore"]);
    assert_eq!(
        show_tag(&repo, &["pkg/hello"]),
        format!("linuxkit/hello:{tree}")
    );
}

#[test]
fn tag_flags_as_linuxkit_has_them() {
    let (_dir, repo) = repo();
    let tree = git(&repo, &["rev-parse", "HEAD:pkg/hello"]);
    let previous = git(&repo, &["rev-parse", "HEAD~1:pkg/hello"]);
    assert_ne!(tree, previous);
    let cases: &[(&[&str], String)] = &[
        (&["--hash", "abc"], "linuxkit/hello:abc".into()),
        (
            &["--tag", "v1-{{.Hash}}"],
            format!("linuxkit/hello:v1-{tree}"),
        ),
        (&["--tag", "fixed"], "linuxkit/hello:fixed".into()),
        (
            &["--hash", "h", "--tag", "{{ .Hash }}-dbg"],
            "linuxkit/hello:h-dbg".into(),
        ),
        (
            &["--hash-commit", "HEAD~1"],
            format!("linuxkit/hello:{previous}"),
        ),
        (&["--org", "wombat"], format!("wombat/hello:{tree}")),
        (
            &["--force-dirty"],
            format!(
                "linuxkit/hello:{tree}{}",
                dirty_suffix(&repo.join("pkg/hello"))
            ),
        ),
    ];
    for (flags, want) in cases {
        let mut args = flags.to_vec();
        args.push("pkg/hello");
        assert_eq!(&show_tag(&repo, &args), want, "{flags:?}");
    }
    // --hash-path: the tree hash of a parent directory.
    let pkg_tree = git(&repo, &["rev-parse", "HEAD:pkg"]);
    assert_eq!(
        show_tag(&repo, &["--hash-path", "pkg", "pkg/hello"]),
        format!("linuxkit/hello:{pkg_tree}")
    );
    let out = kiln()
        .current_dir(&repo)
        .args(["pkg", "show-tag", "--hash-path", "pkg/world", "pkg/hello"])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a parent"));
    // --dev: org $USER and hash `dev`.
    let dev = run_ok(kiln().current_dir(&repo).env("USER", "alice").args([
        "pkg",
        "show-tag",
        "--dev",
        "pkg/hello",
    ]));
    assert_eq!(dev.trim(), "alice/hello:dev");
    // LINUXKIT_PKG_ORG, and the flag before it.
    let env_org = run_ok(
        kiln()
            .current_dir(&repo)
            .env("LINUXKIT_PKG_ORG", "envorg")
            .args(["pkg", "show-tag", "pkg/hello"]),
    );
    assert_eq!(env_org.trim(), format!("envorg/hello:{tree}"));
    // A template with another field is refused, naming it.
    let out = kiln()
        .current_dir(&repo)
        .args(["pkg", "show-tag", "--tag", "{{.Version}}", "pkg/hello"])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(".Version"));
    // kiln's own content hash: 40 hex digits that are not the tree hash, and the same
    // whether or not the directory is in git.
    let content = show_tag(&repo, &["--content-hash", "pkg/hello"]);
    let hash = content.rsplit_once(':').expect("tag").1;
    assert!(hash.len() == 40 && hash != tree, "{content}");
    let copy = repo.parent().expect("parent").join("copy");
    fs::create_dir_all(&copy).expect("mkdir");
    for f in ["build.yml", "Dockerfile", "greeting"] {
        fs::copy(repo.join("pkg/hello").join(f), copy.join(f)).expect("copy");
    }
    let copy_arg = copy.to_string_lossy().to_string();
    assert_eq!(show_tag(&repo, &["--content-hash", &copy_arg]), content);
    // Outside a git work tree, the content hash is the tag whatever the flag.
    assert_eq!(show_tag(&repo, &[&copy_arg]), content);
}

#[test]
fn pkg_build_tags_the_image_as_show_tag_says() {
    let (dir, repo) = repo();
    let store = dir.path().join("store");
    let want = show_tag(&repo, &["pkg/hello"]);
    let built = run_ok(
        kiln()
            .current_dir(&repo)
            .args(["pkg", "build", "--cache"])
            .arg(&store)
            .arg("pkg/hello"),
    );
    assert_eq!(built.trim(), want);
    let listed = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&store));
    assert!(listed.contains(&format!("docker.io/{want}")), "{listed}");

    // Run as `linuxkit`: LINUXKIT_CACHE is the store, and a dirty package builds under its
    // dirty tag.
    let link = dir.path().join("bin/linuxkit");
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), &link).expect("symlink");
    write(&repo.join("pkg/world/greeting"), "changed world\n");
    let lk_store = dir.path().join("linuxkit-cache");
    let dirty = format!(
        "linuxkit/world:{}{}",
        git(&repo, &["rev-parse", "HEAD:pkg/world"]),
        dirty_suffix(&repo.join("pkg/world"))
    );
    let out = run_ok(
        Command::new(&link)
            .current_dir(&repo)
            .env("LINUXKIT_CACHE", &lk_store)
            .env_remove("KILN_CACHE")
            .args(["pkg", "build", "pkg/world"]),
    );
    assert_eq!(out.trim(), dirty);
    assert!(
        lk_store.join("index.json").is_file(),
        "LINUXKIT_CACHE was not the store"
    );
    let version = run_ok(Command::new(&link).arg("version"));
    assert!(version.starts_with("linuxkit version "), "{version}");
}

/// An extra source git tracks adds its tree hash, as in LinuxKit (the tag is then a SHA-1 of
/// both hashes); one it does not track (a build output LinuxKit would refuse) adds a hash of
/// its content, so the tag follows it.
#[test]
fn extra_sources_in_and_out_of_git() {
    let (_dir, repo) = repo();
    write(
        &repo.join("pkg/hello/build.yml"),
        "image: hello\nextra-sources:\n  - ../world:world\n",
    );
    git(&repo, &["commit", "-q", "-am", "extra"]);
    let (hello, world) = (
        git(&repo, &["rev-parse", "HEAD:pkg/hello"]),
        git(&repo, &["rev-parse", "HEAD:pkg/world"]),
    );
    let mixed = {
        use sha1sum::sha1_hex;
        sha1_hex(format!("{hello}{world}").as_bytes())
    };
    assert_eq!(
        show_tag(&repo, &["pkg/hello"]),
        format!("linuxkit/hello:{mixed}")
    );

    write(&repo.join(".gitignore"), "/out\n");
    write(&repo.join("out/tool"), "v1\n");
    write(
        &repo.join("pkg/hello/build.yml"),
        "image: hello\nextra-sources:\n  - ../../out/tool:tool\n",
    );
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "untracked extra"]);
    let first = show_tag(&repo, &["pkg/hello"]);
    write(&repo.join("out/tool"), "v2\n");
    let second = show_tag(&repo, &["pkg/hello"]);
    assert_ne!(first, second);
    assert!(!second.contains("dirty"), "{second}");
}

/// SHA-1, by the `sha1sum` tool (an independent implementation).
mod sha1sum {
    pub fn sha1_hex(data: &[u8]) -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sha1sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha1sum");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data)
            .expect("write");
        let out = child.wait_with_output().expect("sha1sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("hash")
            .to_string()
    }
}
