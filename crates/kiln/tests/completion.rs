//! `kiln completion`: the completion scripts are accepted by their shells and know the
//! subcommands; the manual pages cover every subcommand and render with `man -l` without a
//! warning.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The subcommands (at every depth) every completion script and the pages must know.
const SUBCOMMANDS: &[&str] = &[
    "build",
    "cache",
    "image",
    "pkg",
    "run",
    "completion",
    "ls",
    "unpack",
    "show-tag",
    "qemu",
];

/// Run `kiln ARGS`, which must succeed.
fn kiln(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run kiln");
    assert!(
        out.status.success(),
        "kiln {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The completion script for `shell`, checked to be non-empty and to name every subcommand.
fn script(shell: &str) -> String {
    let out = kiln(&["completion", shell]);
    let text = String::from_utf8(out.stdout).expect("the script is UTF-8");
    assert!(
        text.lines().count() > 20,
        "{shell} script too short:\n{text}"
    );
    for sub in SUBCOMMANDS {
        assert!(text.contains(sub), "the {shell} script lacks `{sub}`");
    }
    text
}

/// Whether `program` is on PATH.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `SHELL -n FILE` (parse only) must accept `text`.
fn parses(shell: &str, text: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("kiln.completion");
    std::fs::write(&file, text).expect("write the script");
    let out = Command::new(shell)
        .arg("-n")
        .arg(&file)
        .output()
        .expect("run the shell");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{shell} -n refuses the script ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bash_accepts_the_bash_script() {
    parses("bash", &script("bash"));
}

#[test]
fn bash_rejects_a_broken_script() {
    // The check above can fail: a truncated script (an unclosed function) is refused.
    let text = script("bash");
    let cut = text.find("\n}").expect("the script defines a function");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken");
    std::fs::write(&file, &text[..cut]).expect("write");
    let status = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .expect("run bash");
    assert!(!status.success(), "bash -n accepted a truncated script");
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let text = script(shell);
        if installed(shell) {
            parses(shell, &text);
        } else {
            eprintln!("{shell} is not installed: its script is not parsed");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["completion", "tcsh"])
        .output()
        .expect("run kiln");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_pages_cover_the_subcommands_and_render() {
    assert!(
        installed("man"),
        "`man` is needed (package man-db, installed by scripts/install-deps.sh)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mandir = dir.path().join("man1");
    kiln(&["completion", "--man", mandir.to_str().expect("UTF-8 path")]);
    let mut pages: Vec<String> = std::fs::read_dir(&mandir)
        .expect("read the man directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "kiln.1",
        "kiln-build.1",
        "kiln-cache-ls.1",
        "kiln-image-build.1",
        "kiln-pkg-build.1",
        "kiln-run-qemu.1",
        "kiln-completion.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.starts_with("kiln-help")),
        "a page for `help`: {pages:?}"
    );
    for page in &pages {
        render(&mandir.join(page), page);
    }
}

#[test]
#[should_panic(expected = "warns")]
fn a_page_with_an_undefined_macro_is_caught() {
    // The check above can fail: a page calling an undefined macro warns.
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("kiln-broken.1");
    std::fs::write(
        &page,
        ".TH kiln-broken 1 2026-01-01\n.SH NAME\nkiln-broken \\- a broken page\n\
         .SH SYNOPSIS\nkiln broken\n.XX undefined\n",
    )
    .expect("write the page");
    render(&page, "kiln-broken.1");
}

/// `man --warnings=w -l PAGE` renders the page without a warning; its NAME section names the command.
fn render(path: &Path, page: &str) {
    // Every groff warning (-ww), not only the default ones.
    let out = Command::new("man")
        .args(["--warnings=w", "-l"])
        .arg(path)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .env_remove("MANPAGER")
        .env_remove("PAGER")
        .stdin(Stdio::null())
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {page}: {}: {err}", out.status);
    assert!(err.trim().is_empty(), "man -l {page} warns: {err}");
    let name = page.trim_end_matches(".1");
    assert!(
        text.contains("NAME") && text.contains(name) && text.contains("SYNOPSIS"),
        "man -l {page} rendered:\n{text}"
    );
    // The page's date is set: `.TH` did not shift the source into the date's place.
    assert!(
        text.lines()
            .last()
            .is_some_and(|footer| footer.split_whitespace().any(is_date)),
        "man -l {page}: footer without a date:\n{text}"
    );
    assert!(
        text.lines().all(|l| l.chars().count() <= 80),
        "man -l {page}: lines wider than MANWIDTH:\n{text}"
    );
}

/// Whether `word` is a YYYY-MM-DD date.
fn is_date(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}
