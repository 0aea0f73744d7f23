//! Crafted, hostile layers: nothing may land outside the root. kiln refuses layers that try
//! (with an error naming the image, the layer and the path) and keeps the ones that only look
//! dangerous inside the root; the output of an accepted build, extracted by GNU tar, writes
//! nothing outside its directory.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

struct Case<'a> {
    name: &'a str,
    layers: Vec<Vec<Member<'a>>>,
    /// `Some(fragment)`: must be refused with this in the message. `None`: accepted.
    refused: Option<&'a str>,
}

fn cases() -> Vec<Case<'static>> {
    use Member::*;
    vec![
        Case {
            name: "dotdot",
            layers: vec![vec![File("../escape", b"x")]],
            refused: Some("climbs out of the root"),
        },
        Case {
            name: "nested-dotdot",
            layers: vec![vec![Dir("a/"), File("a/../../escape", b"x")]],
            refused: Some("climbs out of the root"),
        },
        Case {
            name: "symlink-then-write",
            layers: vec![vec![Symlink("link", "/")], vec![File("link/escape", b"x")]],
            refused: Some("beneath the symlink `link`"),
        },
        Case {
            name: "relative-symlink-same-layer",
            layers: vec![vec![Symlink("up", "../../.."), File("up/escape", b"x")]],
            refused: Some("beneath the symlink `up`"),
        },
        Case {
            name: "hardlink-dotdot",
            layers: vec![vec![Hardlink("shadow", "../../etc/shadow")]],
            refused: Some("outside the image"),
        },
        Case {
            name: "hardlink-absolute-missing",
            layers: vec![vec![Hardlink("shadow", "/etc/shadow")]],
            refused: Some("not a file of the image"),
        },
        Case {
            name: "file-where-dir-was",
            layers: vec![vec![File("a", b"x")], vec![File("a/b", b"y")]],
            refused: Some("parent `a` is not a directory"),
        },
        Case {
            name: "whiteout-dotdot",
            layers: vec![vec![File("../.wh.etc", b"")]],
            refused: Some("climbs out of the root"),
        },
        Case {
            name: "opaque-dotdot",
            layers: vec![vec![File("x/../../.wh..wh..opq", b"")]],
            refused: Some("climbs out of the root"),
        },
        Case {
            name: "symlink-chain",
            layers: vec![
                vec![Symlink("a", "b"), Symlink("b", "/")],
                vec![File("a/escape", b"x")],
            ],
            refused: Some("beneath the symlink `a`"),
        },
        // Accepted: dangerous-looking but inside the root.
        Case {
            name: "absolute-path",
            layers: vec![vec![File("/etc/absolute", b"inside")]],
            refused: None,
        },
        Case {
            name: "dir-replaces-symlink",
            layers: vec![
                vec![Symlink("d", "/tmp")],
                vec![Dir("d/"), File("d/x", b"inside")],
            ],
            refused: None,
        },
        Case {
            name: "dangling-outside-symlink",
            layers: vec![vec![Symlink("etc/passwd-link", "../../../../etc/passwd")]],
            refused: None,
        },
        Case {
            name: "hardlink-inside",
            layers: vec![vec![File("bin/a", b"tool"), Hardlink("bin/b", "./bin/a")]],
            refused: None,
        },
    ]
}

fn extract_and_check(tar_path: &Path, tmp: &Path) {
    let sandbox = tmp.join("sandbox");
    let root = sandbox.join("root");
    std::fs::create_dir_all(&root).expect("root");
    let out = Command::new("tar")
        .arg("-xf")
        .arg(tar_path)
        .arg("-C")
        .arg(&root)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "GNU tar failed on kiln's output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outside: Vec<_> = std::fs::read_dir(&sandbox)
        .expect("sandbox")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "root")
        .collect();
    assert!(outside.is_empty(), "written outside the root: {outside:?}");
    std::fs::remove_dir_all(&sandbox).expect("clean");
}

#[test]
fn hostile_layers_write_nothing_outside_the_root() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.iter().filter(|c| c.refused.is_some()).count() >= 10);
    for case in all {
        let name = format!("docker.io/hostile/{}:1", case.name);
        let layers: Vec<Vec<u8>> = case.layers.iter().map(|l| raw_layer(l)).collect();
        let archive = tmp.path().join(format!("{}.tar", case.name));
        std::fs::write(&archive, oci_archive(&name, &layers)).expect("archive");
        run_ok(
            kiln()
                .args(["cache", "import"])
                .arg(&archive)
                .arg("--cache")
                .arg(&cache),
        );
        // Both as an init image (merged at /) and as a service (under containers/services/).
        let manifest = tmp.path().join(format!("{}.yml", case.name));
        std::fs::write(
            &manifest,
            format!("init:\n  - {name}\nservices:\n  - name: svc\n    image: {name}\n"),
        )
        .expect("manifest");
        let out = tmp.path().join(format!("{}.out.tar", case.name));
        let result = kiln()
            .args(["build", "--format", "tar", "-o"])
            .arg(&out)
            .arg("--cache")
            .arg(&cache)
            .arg(&manifest)
            .output()
            .expect("kiln");
        let stderr = String::from_utf8_lossy(&result.stderr);
        match case.refused {
            Some(fragment) => {
                if result.status.success()
                    || !stderr.contains(fragment)
                    || !stderr.contains(&name)
                    || !stderr.contains("layer sha256:")
                {
                    failures.push(format!("{}: expected refusal naming image, layer and `{fragment}`, got {:?}: {stderr}", case.name, result.status.code()));
                }
                if out.exists() {
                    failures.push(format!(
                        "{}: refused build left {}",
                        case.name,
                        out.display()
                    ));
                }
            }
            None => {
                if !result.status.success() {
                    failures.push(format!("{}: should be accepted: {stderr}", case.name));
                    continue;
                }
                let (list, _) = listing(&std::fs::read(&out).expect("out"));
                for path in list.keys() {
                    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
                        failures.push(format!("{}: output path {path} escapes", case.name));
                    }
                }
                extract_and_check(&out, tmp.path());
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
