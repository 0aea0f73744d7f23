//! Image references: `[registry/]repository[:tag][@digest]`, normalised as Docker does
//! (`alpine` is `docker.io/library/alpine`, `linuxkit/init` is `docker.io/linuxkit/init`).

use std::fmt;
use std::str::FromStr;

/// The registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port).
    pub registry: String,
    /// Repository path within the registry.
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest, if given.
    pub digest: Option<String>,
}

/// A reference that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference `{reference}`: {why}")]
pub struct ReferenceError {
    /// The input.
    pub reference: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| ReferenceError {
            reference: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > 1024 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains whitespace or is too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                d.parse::<crate::Digest>()
                    .map_err(|_| err("the digest is not sha256: and 64 hex digits"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(err(
                    "the tag may hold only letters, digits, `_`, `.` and `-`",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
            None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
                    && c.chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_alphanumeric())
            });
        if !repo_ok {
            return Err(err(
                "the repository must be lowercase letters, digits and `._-` separated by `/`",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl Reference {
    /// The reference with `:latest` added when it has neither tag nor digest: the key images are
    /// stored under.
    pub fn canonical(&self) -> Reference {
        let mut r = self.clone();
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".into());
        }
        r
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What a registry is asked for: the digest if there is one, else the tag.
    pub fn target(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>()
            .map(|r| r.to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine");
        assert_eq!(norm("kiln-test/svc:1"), "docker.io/kiln-test/svc:1");
        assert_eq!(norm("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
        assert_eq!(norm("127.0.0.1:5000/x"), "127.0.0.1:5000/x");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            norm(&format!("linuxkit/init:v1@{d}")),
            format!("docker.io/linuxkit/init:v1@{d}")
        );
        assert_eq!(
            "alpine"
                .parse::<Reference>()
                .map(|r| r.canonical().to_string())
                .ok()
                .as_deref(),
            Some("docker.io/library/alpine:latest")
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "x:",
            "x@sha256:1",
            "<image>",
            "a//b",
            "a:b/c:d:e",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Reference>();
        }
    }
}
