//! A manifest's `trust:` sections as requirements: `image:` entries cover repositories (or one
//! image by tag or digest), `org:` entries organisations (Docker Hub namespaces,
//! `registry/namespace`, or whole registries), and `keys:` (kiln's extension) are public key
//! files relative to the manifest that holds them.

use super::{Origin, Policy, PolicyError, Scope, TrustRule};
use kiln_manifest::{ManifestSet, TrustSection};
use kiln_oci::{DEFAULT_REGISTRY, Reference};
use std::path::{Path, PathBuf};

impl Policy {
    /// Add the `trust:` sections of `set` to the policy. An entry that names no valid image or
    /// organisation, or a relative key path in a manifest read from a URL, is an error located
    /// in the manifest.
    pub fn add_manifest_trust(&mut self, set: &ManifestSet) -> Result<(), PolicyError> {
        for section in set.trust_sections() {
            let keys = keys_of(set, &section)?;
            let t = section.trust;
            let entries = t
                .image
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, e)| ("image", i, image_scope(e)))
                .chain(
                    t.org
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, e)| ("org", i, org_scope(e))),
                );
            for (key, i, scope) in entries {
                let field = format!("{key}[{i}]");
                let d = set.trust_diagnostic(section.index, &field, String::new());
                let scope = scope.map_err(|(message, help)| {
                    let mut d = set.trust_diagnostic(section.index, &field, message);
                    d.help = Some(help);
                    PolicyError::from(d)
                })?;
                self.trust.push(TrustRule {
                    scope,
                    keys: keys.clone(),
                    origin: Origin {
                        file: d.file,
                        line: d.line,
                        column: d.column,
                        field: d.path,
                    },
                });
            }
        }
        Ok(())
    }
}

/// The section's keys, resolved against its manifest's directory.
fn keys_of(set: &ManifestSet, s: &TrustSection<'_>) -> Result<Option<Vec<PathBuf>>, PolicyError> {
    let Some(keys) = &s.trust.keys else {
        return Ok(None);
    };
    let remote = s.file.contains("://");
    let base = if s.file == "standard input" || remote {
        Path::new("")
    } else {
        Path::new(s.file).parent().unwrap_or(Path::new(""))
    };
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let p = Path::new(k);
        if remote && p.is_relative() {
            let mut d = set.trust_diagnostic(
                s.index,
                &format!("keys[{i}]"),
                format!("`{k}` is relative to a manifest read from a URL"),
            );
            d.help =
                Some("give the key's absolute path, or the key in a policy file (--policy)".into());
            return Err(d.into());
        }
        out.push(base.join(p));
    }
    Ok(Some(out))
}

type ScopeResult = Result<Scope, (String, String)>;

/// An `image:` entry, normalised as Docker does (`linuxkit/kernel` is
/// `docker.io/linuxkit/kernel`): a repository, or an image by tag or digest.
fn image_scope(entry: &str) -> ScopeResult {
    let r: Reference = entry.parse().map_err(|e: kiln_oci::ReferenceError| {
        (
            format!("`{entry}` is not an image name: {}", e.why),
            "give a repository (`linuxkit/kernel`, `registry.example.com/tool`) or an image by tag or digest".to_string(),
        )
    })?;
    Ok(Scope::of_reference(&r))
}

/// An `org:` entry: `linuxkit` is Docker Hub's `docker.io/linuxkit`, `registry.example.com/team`
/// a namespace of another registry, `registry.example.com` a whole registry.
fn org_scope(entry: &str) -> ScopeResult {
    let bad = |why: &str| {
        (
            format!("`{entry}` is not an organisation: {why}"),
            "give a Docker Hub organisation (`linuxkit`), a namespace of a registry (`registry.example.com/team`) or a registry (`registry.example.com`)".to_string(),
        )
    };
    if entry.contains(['@']) {
        return Err(bad("it names an image by digest; put it in `image:`"));
    }
    let first = entry.split('/').next().unwrap_or(entry);
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    if is_host && !entry.contains('/') {
        let host_ok = first
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(c));
        return if host_ok {
            Ok(Scope::Registry(entry.to_string()))
        } else {
            Err(bad("a registry is a host name with an optional port"))
        };
    }
    let qualified = if is_host {
        entry.to_string()
    } else {
        format!("{DEFAULT_REGISTRY}/{entry}")
    };
    let r: Reference = qualified
        .parse()
        .map_err(|e: kiln_oci::ReferenceError| bad(e.why))?;
    if r.tag.is_some() {
        return Err(bad("it has a tag; put an image in `image:`"));
    }
    Ok(Scope::Repository(r.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_scopes() {
        assert_eq!(
            image_scope("linuxkit/kernel"),
            Ok(Scope::Repository("docker.io/linuxkit/kernel".into()))
        );
        assert_eq!(
            image_scope("alpine:3.19"),
            Ok(Scope::Tag {
                repository: "docker.io/library/alpine".into(),
                tag: "3.19".into()
            })
        );
        assert!(image_scope("Bad Name").is_err());
        assert_eq!(
            org_scope("linuxkit"),
            Ok(Scope::Repository("docker.io/linuxkit".into()))
        );
        assert_eq!(
            org_scope("registry.example.com/team"),
            Ok(Scope::Repository("registry.example.com/team".into()))
        );
        assert_eq!(
            org_scope("127.0.0.1:5000"),
            Ok(Scope::Registry("127.0.0.1:5000".into()))
        );
        assert!(org_scope("linuxkit/tool:1").is_err());
        assert!(org_scope("linuxkit@sha256:1").is_err());
        assert!(org_scope("UPPER").is_err());
    }
}
