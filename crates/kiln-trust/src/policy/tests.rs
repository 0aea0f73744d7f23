use super::file::{Syntax, parse_scope};
use super::*;
use kiln_manifest::ManifestSet;
use std::path::Path;

fn policy(json: &str) -> Policy {
    Policy::parse("p.json", json, Path::new("/etc/kiln"), Syntax::Json).expect("valid policy")
}

fn error(text: &str, syntax: Syntax) -> String {
    match Policy::parse("p.json", text, Path::new("/etc/kiln"), syntax) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn r(s: &str) -> Reference {
    s.parse().expect("reference")
}

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn d(s: &str) -> Digest {
    s.parse().expect("digest")
}

/// The scope of the rule that applies to `image` (resolved to D1).
fn scope_for(p: &Policy, image: &str) -> String {
    p.rules_for(&r(image), &[d(D1)]).0.scope.to_string()
}

#[test]
fn most_specific_scope_wins() {
    let p = policy(&format!(
        r#"{{
  "default": [{{"type": "reject"}}],
  "transports": {{
    "docker": {{
      "": [{{"type": "insecureAcceptAnything"}}],
      "*.example.com": [{{"type": "reject"}}],
      "registry.example.com": [{{"type": "signedBy", "keyPath": "a.pub"}}],
      "registry.example.com/team": [{{"type": "signedBy", "keyPath": "b.pub"}}],
      "registry.example.com/team/tool": [{{"type": "signedBy", "keyPaths": ["c.pub", "/k/d.pub"]}}],
      "registry.example.com/team/tool:1": [{{"type": "insecureAcceptAnything"}}],
      "registry.example.com/team/tool@{D1}": [{{"type": "reject"}}],
      "docker.io/library/alpine": [{{"type": "sigstoreSigned", "keyPath": "e.pub"}}]
    }}
  }}
}}"#
    ));
    assert_eq!(p.rules.len(), 8);
    assert_eq!(scope_for(&p, "other.org/x"), "every image");
    assert_eq!(scope_for(&p, "mirror.example.com/x"), "*.example.com");
    assert_eq!(
        scope_for(&p, "registry.example.com/x:1"),
        "registry.example.com"
    );
    assert_eq!(
        scope_for(&p, "registry.example.com/team/x"),
        "registry.example.com/team"
    );
    // Whole path components only.
    assert_eq!(
        scope_for(&p, "registry.example.com/teamwork/x"),
        "registry.example.com"
    );
    assert_eq!(
        scope_for(&p, "registry.example.com/team/tool/sub:2"),
        "registry.example.com/team/tool"
    );
    // The digest the name resolved to beats the tag.
    assert_eq!(
        scope_for(&p, "registry.example.com/team/tool:1"),
        format!("registry.example.com/team/tool@{D1}")
    );
    let (rule, _) = p.rules_for(&r("registry.example.com/team/tool:1"), &[d(D2)]);
    assert_eq!(rule.scope.to_string(), "registry.example.com/team/tool:1");
    // No tag is :latest.
    let (rule, _) = p.rules_for(&r("registry.example.com/team/tool"), &[d(D2)]);
    assert_eq!(rule.scope.to_string(), "registry.example.com/team/tool");
    assert_eq!(
        rule.requirements,
        [Requirement::SignedBy(vec![
            PathBuf::from("/etc/kiln/c.pub"),
            PathBuf::from("/k/d.pub")
        ])]
    );
    // Short names are normalised as Docker does before matching.
    let (rule, _) = p.rules_for(&r("alpine:3"), &[d(D2)]);
    assert_eq!(rule.scope.to_string(), "docker.io/library/alpine");
    assert_eq!(rule.requirements_text(), "signedBy /etc/kiln/e.pub");
    assert!(
        rule.origin.to_string().starts_with("p.json:12:"),
        "{}",
        rule.origin
    );
    assert!(
        rule.origin
            .field
            .contains(r#"["docker.io/library/alpine"]"#),
        "{}",
        rule.origin.field
    );
}

#[test]
fn default_applies_when_no_scope_covers() {
    let p = policy(
        r#"{"default": [{"type": "reject"}], "transports": {"docker": {"localhost:5000": [{"type": "insecureAcceptAnything"}]}}}"#,
    );
    let (rule, _) = p.rules_for(&r("docker.io/library/alpine"), &[]);
    assert_eq!(rule.scope, Scope::Default);
    assert_eq!(rule.requirements, [Requirement::Reject]);
    let (rule, _) = p.rules_for(&r("localhost:5000/a"), &[]);
    assert_eq!(rule.scope, Scope::Registry("localhost:5000".into()));
    assert!(!p.accepts_anything());
    assert!(Policy::built_in().accepts_anything());
}

#[test]
fn yaml_policies_read_the_same() {
    let p = Policy::parse(
        "p.yml",
        "default:\n  - type: reject\ntransports:\n  docker:\n    docker.io/linuxkit:\n      - type: signedBy\n        keyPath: lk.pub\n",
        Path::new("conf"),
        Syntax::Yaml,
    )
    .expect("valid");
    let (rule, _) = p.rules_for(&r("linuxkit/init:v1"), &[]);
    assert_eq!(
        rule.requirements,
        [Requirement::SignedBy(vec![PathBuf::from("conf/lk.pub")])]
    );
    assert_eq!(rule.origin.line, Some(5));
}

#[test]
fn malformed_policies_name_file_and_field() {
    let cases: &[(&str, &str)] = &[
        // No default: never an implicit accept.
        (
            r#"{"transports": {}}"#,
            "p.json:1:2: the policy has no `default`",
        ),
        (
            r#"{"default": [{"type": "reject"}], "defualt": 1}"#,
            "p.json:1:35: defualt: unknown key `defualt`",
        ),
        (
            r#"{"default": []}"#,
            "p.json:1:13: default: the list of requirements is empty",
        ),
        (
            r#"{"default": [{"type": "insecureAcceptAnythin"}]}"#,
            "default[0].type: unknown requirement type `insecureAcceptAnythin`",
        ),
        (
            r#"{"default": [{"type": "reject", "keyPath": "x"}]}"#,
            "default[0].keyPath: unknown key `keyPath`",
        ),
        (
            r#"{"default": [{"type": "signedBy"}]}"#,
            "default[0]: signedBy names no key",
        ),
        (
            r#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "k.gpg"}]}"#,
            "default[0].keyType: kiln does not verify signatures with \"GPGKeys\" keys",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyPath": "k.pub", "signedIdentity": {"type": "matchRepository"}}]}"#,
            "default[0].signedIdentity: `signedIdentity` is not supported",
        ),
        (
            r#"{"default": [{"type": "sigstoreSigned", "keyData": "AAAA"}]}"#,
            "default[0].keyData: `keyData` is not supported",
        ),
        (
            r#"{"default": [{"type": "signedBy", "keyPaths": []}]}"#,
            "default[0].keyPaths: expected a non-empty list of key files",
        ),
        (
            r#"{"default": [{"type": "signedBy", "keyPath": 3}]}"#,
            "default[0].keyPath: expected the path of a public key file, found 3",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"dokcer": {}}}"#,
            "transports.dokcer: unknown transport `dokcer`",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"linuxkit/kernel": [{"type": "reject"}]}}}"#,
            "`linuxkit/kernel` is not fully qualified",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"Registry.Example.com": [{"type": "reject"}]}}}"#,
            "is not a valid scope",
        ),
        (
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"r.example.com/a": "reject"}}}"#,
            r#"transports.docker["r.example.com/a"]: expected a list of requirements, found a string"#,
        ),
        (
            r#"{"default": [{"type": "reject"}"#,
            "p.json:1:31: not valid JSON",
        ),
        (
            r#"[]"#,
            "expected a mapping with `default` and `transports`",
        ),
    ];
    for (text, expected) in cases {
        let e = error(text, Syntax::Json);
        assert!(
            e.contains(expected),
            "{text}\n  gave: {e}\n  expected: {expected}"
        );
        assert!(e.starts_with("p.json"), "{e}");
    }
    let e = error(
        "default:\n  - type: reject\n  - tipe: reject\n",
        Syntax::Yaml,
    );
    assert!(
        e.starts_with("p.json:3:5: default[1]: the requirement has no `type`"),
        "{e}"
    );
}

#[test]
fn scopes_parse() {
    assert_eq!(parse_scope(""), Ok(Scope::AnyImage));
    assert_eq!(
        parse_scope("localhost:5000"),
        Ok(Scope::Registry("localhost:5000".into()))
    );
    assert_eq!(
        parse_scope("*.example.com"),
        Ok(Scope::Wildcard(".example.com".into()))
    );
    assert_eq!(
        parse_scope("docker.io/library/alpine:3"),
        Ok(Scope::Tag {
            repository: "docker.io/library/alpine".into(),
            tag: "3".into()
        })
    );
    for bad in [
        "alpine",
        "library/alpine:3",
        "*.",
        "*.a/b",
        "r.io/A",
        "r.io/a@sha256:12",
        "host:port",
    ] {
        assert!(parse_scope(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn evaluation_reports_every_failed_requirement() {
    let p = policy(
        r#"{"default": [{"type": "reject"}], "transports": {"docker": {
            "r.io/signed": [{"type": "signedBy", "keyPath": "good.pub"}],
            "r.io/both": [{"type": "signedBy", "keyPath": "good.pub"}, {"type": "signedBy", "keyPath": "other.pub"}],
            "r.io/open": [{"type": "insecureAcceptAnything"}]}}}"#,
    );
    let mut verify = |keys: &[PathBuf]| -> Result<PathBuf, String> {
        if keys.iter().any(|k| k.ends_with("good.pub")) {
            Ok(keys[0].clone())
        } else {
            Err("no signature by this key".into())
        }
    };
    let (refused, ok) = p.evaluate(&r("r.io/signed:1"), &[d(D1)], &mut verify);
    assert!(refused.is_empty() && ok.len() == 1);
    let (refused, _) = p.evaluate(&r("r.io/both:1"), &[d(D1)], &mut verify);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].requirement, "signedBy /etc/kiln/other.pub");
    assert!(
        refused[0]
            .help
            .contains("kiln sign r.io/both:1 --key /etc/kiln/other.key"),
        "{}",
        refused[0].help
    );
    let (refused, _) = p.evaluate(&r("r.io/elsewhere:1"), &[d(D1)], &mut verify);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].scope, "default");
    assert_eq!(refused[0].requirement, "reject");
    let (refused, ok) = p.evaluate(&r("r.io/open:1"), &[d(D1)], &mut verify);
    assert!(refused.is_empty() && ok.is_empty());
}

fn manifest(text: &str) -> ManifestSet {
    let mut set = ManifestSet::default();
    set.add("dir/m.yml", text).expect("manifest");
    set.validate().expect("valid");
    set
}

#[test]
fn manifest_trust_tightens_only() {
    let set =
        manifest("trust:\n  org:\n    - linuxkit\n  image:\n    - r.io/tool\n  keys: [k/m.pub]\n");
    let mut p = policy(
        r#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"r.io": [{"type": "reject"}]}}}"#,
    );
    p.add_manifest_trust(&set).expect("trust");
    assert_eq!(p.trust.len(), 2);
    assert_eq!(
        p.trust[1].scope,
        Scope::Repository("docker.io/linuxkit".into())
    );
    assert_eq!(p.trust[1].keys, Some(vec![PathBuf::from("dir/k/m.pub")]));
    assert_eq!(
        p.trust[0].origin.to_string(),
        "dir/m.yml:5:7 trust.image[0]"
    );
    let mut verify = |keys: &[PathBuf]| -> Result<(), String> {
        Err(format!("no signature by {}", keys[0].display()))
    };
    // The manifest requires a signature the policy alone would not.
    let (refused, _) = p.evaluate(&r("linuxkit/init:v1"), &[d(D1)], &mut verify);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].reason.contains("dir/k/m.pub"),
        "{:?}",
        refused[0]
    );
    // And the policy's reject still holds: both are reported.
    let (refused, _) = p.evaluate(&r("r.io/tool:1"), &[d(D1)], &mut verify);
    assert_eq!(refused.len(), 2, "{refused:?}");
    // Images trust does not name are the policy's alone.
    let (refused, _) = p.evaluate(&r("alpine"), &[d(D1)], &mut verify);
    assert!(refused.is_empty());
}

#[test]
fn manifest_trust_without_keys_takes_the_policys() {
    let set = manifest("trust:\n  image: [r.io/a, r.io/b]\n");
    let mut p = policy(
        r#"{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"r.io/a": [{"type": "signedBy", "keyPath": "a.pub"}]}}}"#,
    );
    p.add_manifest_trust(&set).expect("trust");
    let mut verify = |_: &[PathBuf]| -> Result<(), String> { Ok(()) };
    let (refused, _) = p.evaluate(&r("r.io/a:1"), &[d(D1)], &mut verify);
    assert!(refused.is_empty(), "{refused:?}");
    // The policy would accept r.io/b unsigned, which trust forbids.
    let (refused, _) = p.evaluate(&r("r.io/b:1"), &[d(D1)], &mut verify);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].reason.contains("gives no key"),
        "{:?}",
        refused[0]
    );
    assert!(refused[0].help.contains("add `keys:`"), "{:?}", refused[0]);
}

#[test]
fn bad_trust_entries_are_located_in_the_manifest() {
    let set = manifest("init: [x]\ntrust:\n  org:\n    - ok\n    - Bad/x\n");
    let e = Policy::built_in()
        .add_manifest_trust(&set)
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("dir/m.yml:5:7: trust.org[1]: `Bad/x` is not an organisation"),
        "{e}"
    );
    let mut set = ManifestSet::default();
    set.add(
        "https://example.com/m.yml",
        "trust:\n  image: [a]\n  keys: [k.pub]\n",
    )
    .expect("manifest");
    let e = Policy::built_in()
        .add_manifest_trust(&set)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("trust.keys[0]: `k.pub` is relative to a manifest read from a URL"),
        "{e}"
    );
}
