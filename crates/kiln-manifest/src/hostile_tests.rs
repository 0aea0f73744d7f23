//! Manifests and labels written to exhaust or confuse kiln: each is refused with an error that
//! names the file and line, and none takes long. The inputs are large enough that quadratic
//! behaviour would make these tests obviously slow (seconds to minutes); they assert no times.

use crate::limits::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_LABEL_BYTES, MAX_VALUES};
use crate::paths::{Conflict, check_file_path, check_name, find_conflict};
use crate::{ManifestSet, parse_document, parse_label};

fn load(text: &str) -> Result<ManifestSet, String> {
    let mut set = ManifestSet::default();
    set.add("m.yml", text).map_err(|e| e.to_string())?;
    set.validate().map_err(|e| e.to_string())?;
    Ok(set)
}

fn refused(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted: {}", text.chars().take(200).collect::<String>()),
        Err(e) => e,
    }
}

fn assert_starts(e: &str, prefix: &str) {
    assert!(e.starts_with(prefix), "expected `{prefix}...`, got: {e}");
}

const BASE: &str = "kernel:\n  image: k\ninit: [i]\n";

// ---- nesting, size and value count ----

#[test]
fn flow_nesting_50000_deep_is_refused_where_it_passes_the_limit() {
    let n = 50_000;
    for text in [
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        format!("{}{}", "{a: ".repeat(n), "}".repeat(n)),
        format!("a: {}", "[".repeat(n)),
    ] {
        let e = refused(&text);
        assert!(
            e.starts_with("m.yml:1:") && e.contains("nests deeper than the limit of 32 levels"),
            "{e}"
        );
    }
}

#[test]
fn block_nesting_is_refused() {
    let dashes = format!("services:\n{}x\n", "- ".repeat(50_000));
    let e = refused(&dashes);
    assert_starts(&e, "m.yml:2:");
    assert!(e.contains("nests deeper"), "{e}");
    let mut keys = String::new();
    for i in 0..200 {
        keys.push_str(&" ".repeat(i));
        keys.push_str("a:\n");
    }
    let e = refused(&keys);
    assert_starts(&e, &format!("m.yml:{}:", MAX_DEPTH + 1));
}

#[test]
fn nesting_at_the_limit_is_accepted_by_the_limit() {
    // 32 levels pass the limit (and then fail as a manifest for what they are).
    let text = format!(
        "kernel:\n  image: {}x{}\n",
        "[".repeat(MAX_DEPTH - 2),
        "]".repeat(MAX_DEPTH - 2)
    );
    let e = refused(&text);
    assert!(!e.contains("nests deeper"), "{e}");
}

#[test]
fn nesting_hidden_behind_a_syntax_error_is_still_refused() {
    // A tab where YAML forbids one stops the streaming check; the bracket count still applies.
    let text = format!("a:\n\t- x\nb: {}", "[".repeat(50_000));
    let e = refused(&text);
    assert!(
        e.starts_with("m.yml:3:") && e.contains("nests deeper"),
        "{e}"
    );
}

#[test]
fn oversized_document_is_refused_with_its_line() {
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = format!(
        "{BASE}{}",
        line.repeat(MAX_DOCUMENT_BYTES / line.len() + 10)
    );
    let e = refused(&text);
    let expected_line = 3 + (MAX_DOCUMENT_BYTES - BASE.len()) / line.len() + 1;
    assert_starts(
        &e,
        &format!("m.yml:{expected_line}: this manifest is larger than the limit of 1 MiB"),
    );
}

#[test]
fn too_many_values_are_refused() {
    let text = format!("init: [{}]\n", "a,".repeat(MAX_VALUES + 10));
    assert!(text.len() < MAX_DOCUMENT_BYTES);
    let e = refused(&text);
    assert!(
        e.starts_with("m.yml:1:") && e.contains("more than the limit of 100000 values"),
        "{e}"
    );
}

#[test]
fn endless_manifest_file_is_read_only_up_to_the_limit() {
    let e = ManifestSet::load(&["/dev/zero"]).expect_err("refused");
    let e = e.to_string();
    assert!(e.starts_with("/dev/zero:1: this manifest is larger"), "{e}");
}

#[test]
fn deep_label_of_200_kb_is_refused_quickly() {
    let n = 100_000;
    let text = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let e = parse_label("img:1", &text)
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("label org.mobyproject.config of img:1:1:") && e.contains("nests deeper"),
        "{e}"
    );
}

#[test]
fn wide_labels_of_200_kb_parse() {
    let binds: Vec<String> = (0..13_000).map(|i| format!("\"/a{i}:/b{i}\"")).collect();
    let text = format!("{{\"binds\": [{}]}}", binds.join(","));
    assert!(text.len() > 200_000 && text.len() < MAX_LABEL_BYTES);
    let img = parse_label("img", &text).expect("parses");
    assert_eq!(img.binds.map(|b| b.len()), Some(13_000));
    let sysctl: Vec<String> = (0..13_000)
        .map(|i| format!("\"net.k{i}\": \"1\""))
        .collect();
    let text = format!("{{\"sysctl\": {{{}}}}}", sysctl.join(","));
    assert!(text.len() > 200_000);
    assert!(parse_label("img", &text).is_ok());
}

#[test]
fn oversized_label_is_refused() {
    let text = format!("{{\"cwd\": \"{}\"}}", "x".repeat(MAX_LABEL_BYTES));
    let e = parse_label("img", &text).expect_err("refused").to_string();
    assert!(
        e.starts_with(
            "label org.mobyproject.config of img:1: this label is larger than the limit of 256 KiB"
        ),
        "{e}"
    );
}

#[test]
fn long_unknown_key_is_reported_short() {
    let key = "k".repeat(200_000);
    let e = parse_label("img", &format!("{{\"{key}\": 1}}"))
        .expect_err("refused")
        .to_string();
    assert!(e.len() < 1_000, "{} bytes", e.len());
    assert!(e.contains("unknown key `kkkk"), "{e}");
    let e = parse_document("m.yml", &format!("{key}: 1\n"))
        .expect_err("refused")
        .to_string();
    assert!(e.starts_with("m.yml:1:1:") && e.len() < 1_000, "{e}");
}

// ---- names ----

#[test]
fn service_named_to_climb_is_refused() {
    let e = refused(&format!(
        "{BASE}services:\n  - name: ../../etc\n    image: x\n"
    ));
    assert_starts(
        &e,
        "m.yml:5:11: services[0].name: container name `../../etc` contains `/`",
    );
    for (name, what) in [
        ("..", "directory reference"),
        ("'.'", "directory reference"),
        ("\"a\\0b\"", "NUL"),
        ("\"a\\nb\"", "control character"),
    ] {
        let e = refused(&format!("{BASE}onboot:\n  - name: {name}\n    image: x\n"));
        assert_starts(&e, "m.yml:5:11: onboot[0].name: container name");
        assert!(e.contains(what), "{e}");
    }
    let long = "n".repeat(300);
    let e = refused(&format!(
        "{BASE}onshutdown:\n  - name: {long}\n    image: x\n"
    ));
    assert_starts(
        &e,
        "m.yml:5:11: onshutdown[0].name: container name is 300 bytes",
    );
}

#[test]
fn names_of_the_linuxkit_examples_pass() {
    for name in [
        "getty",
        "dhcpcd",
        "rngd1",
        "trim-after-delete",
        "wg0",
        "write-and-rotate-logs",
    ] {
        assert!(check_name(name).is_ok(), "{name}");
    }
}

// ---- file paths ----

fn file(path: &str, rest: &str) -> String {
    format!("{BASE}files:\n  - path: {path}\n    {rest}\n")
}

#[test]
fn file_paths_that_are_not_files_in_the_image_are_refused() {
    for (path, what) in [
        ("\"etc/a\\0b\"", "contains a NUL byte"),
        ("'.'", "names the root of the image"),
        ("/", "names the root of the image"),
        ("''", "file path is empty"),
        ("../etc/passwd", "contains `..`"),
        ("etc/../../x", "contains `..`"),
        ("//etc/x", "empty component"),
        ("etc/./x", "`.` component"),
        ("etc/x/", "ends in `/`"),
    ] {
        let e = refused(&file(path, "contents: x"));
        assert_starts(&e, "m.yml:5:11: files[0].path: ");
        assert!(e.contains(what), "{path}: {e}");
    }
}

#[test]
fn absolute_file_paths_are_inside_the_image() {
    let set = load(&file("/etc/motd", "contents: hi")).expect("valid");
    assert_eq!(set.manifest.files[0].image_path(), "etc/motd");
    let set = load(&file("var/lib/docker/", "directory: true")).expect("valid");
    assert_eq!(set.manifest.files[0].image_path(), "var/lib/docker");
}

#[test]
fn symlink_target_with_nul_is_refused() {
    let e = refused(&file("etc/l", "symlink: \"a\\0b\""));
    assert_starts(&e, "m.yml:6:14: files[0].symlink: symlink target");
}

#[test]
fn source_path_with_nul_is_refused() {
    let e = refused(&file("etc/l", "source: \"a\\0b\""));
    assert_starts(&e, "m.yml:6:13: files[0].source: source path");
}

#[test]
fn file_beneath_a_file_is_refused_naming_both() {
    let text = format!(
        "{BASE}files:\n  - path: etc/x\n    contents: a\n  - path: etc/x/y\n    contents: b\n"
    );
    let e = refused(&text);
    assert_starts(
        &e,
        "m.yml:7:11: files[1].path: file path `etc/x/y` lies beneath `etc/x`, which is a file",
    );
    assert!(e.contains("m.yml:5:11"), "{e}");
    // In the other order too, and beneath a symlink.
    let text = format!(
        "{BASE}files:\n  - path: etc/x/y\n    contents: b\n  - path: /etc/x\n    symlink: /tmp\n"
    );
    let e = refused(&text);
    assert_starts(
        &e,
        "m.yml:7:11: files[1].path: file path `etc/x/y` lies beneath `etc/x`, which is a symlink",
    );
}

#[test]
fn duplicate_file_paths_are_refused() {
    let text = format!(
        "{BASE}files:\n  - path: etc/x\n    contents: a\n  - path: /etc/x\n    contents: b\n"
    );
    let e = refused(&text);
    assert_starts(&e, "m.yml:7:11: files[1].path: duplicate file path `etc/x`");
    assert!(e.contains("first used at m.yml:5:11"), "{e}");
}

#[test]
fn many_files_are_checked_in_linear_time() {
    // 12,000 entries in ever deeper directories: quadratic checking would take minutes.
    let mut text = format!("{BASE}files:\n");
    let mut path = String::from("d");
    for i in 0..12_000 {
        text.push_str(&format!("  - path: {path}/f{i}\n    contents: x\n"));
        if i % 1_000 == 0 {
            path.push_str("/d");
        }
    }
    text.push_str("  - path: d/f0\n    contents: dup\n");
    let e = refused(&text);
    assert!(e.contains("duplicate file path `d/f0`"), "{e}");
}

// ---- properties ----

fn brute_force_conflict(entries: &[(String, bool)]) -> bool {
    entries.iter().enumerate().any(|(i, (a, a_dir))| {
        entries.iter().enumerate().any(|(j, (b, _))| {
            (i < j && a == b) || (i != j && !a_dir && b.starts_with(&format!("{a}/")))
        })
    })
}

proptest::proptest! {
    #[test]
    fn accepted_paths_are_plain_relative_paths(path in "[/a.\\x00b]{0,12}", dir: bool) {
        if let Ok(rel) = check_file_path(&path, dir) {
            proptest::prop_assert!(!rel.is_empty());
            proptest::prop_assert!(!rel.starts_with('/') && !rel.ends_with('/'));
            proptest::prop_assert!(!rel.contains('\0'));
            for c in rel.split('/') {
                proptest::prop_assert!(!c.is_empty() && c != "." && c != "..", "{rel}");
            }
            let f = crate::File { path: path.clone(), directory: dir, ..Default::default() };
            proptest::prop_assert_eq!(f.image_path(), rel);
        }
    }

    #[test]
    fn accepted_names_are_one_path_component(name in "[a./\\x00\\n-]{1,6}") {
        if check_name(&name).is_ok() {
            let mut parts = std::path::Path::new(&name).components();
            proptest::prop_assert_eq!(
                parts.next(),
                Some(std::path::Component::Normal(std::ffi::OsStr::new(&name)))
            );
            proptest::prop_assert!(parts.next().is_none());
        }
    }

    #[test]
    fn conflicts_are_found_exactly(
        entries in proptest::collection::vec(("(a|b)(/(a|b)){0,3}", proptest::bool::ANY), 0..8)
    ) {
        let found = find_conflict(entries.iter().map(|(p, d)| (p.as_str(), *d)));
        proptest::prop_assert_eq!(found.is_some(), brute_force_conflict(&entries));
        match found {
            Some(Conflict::Duplicate { first, later }) => {
                proptest::prop_assert!(first < later);
                proptest::prop_assert_eq!(&entries[first].0, &entries[later].0);
            }
            Some(Conflict::Beneath { parent, child }) => {
                proptest::prop_assert!(!entries[parent].1);
                let prefix = format!("{}/", entries[parent].0);
                proptest::prop_assert!(entries[child].0.starts_with(&prefix));
            }
            None => {}
        }
    }

    #[test]
    fn nested_brackets_never_panic(s in "[\\[\\]{}a:, \n\"'#-]{0,400}") {
        let _ = parse_document("fuzz.yml", &s);
        let _ = parse_label("img", &s);
    }
}
