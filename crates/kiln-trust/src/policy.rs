//! The image policy `kiln build` enforces: which images a build may use, modelled on
//! containers-policy.json.
//!
//! A policy is a default rule and rules by scope — a registry, a repository or namespace
//! (`registry/path`, matched by path components), or one image (`repository:tag` or
//! `repository@digest`) — the most specific scope that covers an image wins. A rule holds one
//! or more requirements, all of which must hold: `reject`, `insecureAcceptAnything`, or
//! `signedBy` cosign public keys (a signature by any one of them, naming the image's digest).
//! The rules come from a policy file ([`Policy::from_file`], see [`file`]) or are built in
//! ([`Policy::built_in`], accepting anything when the user has written no policy).
//!
//! A manifest's `trust:` sections add requirements of their own ([`Policy::add_manifest_trust`]):
//! every image an `image:` or `org:` entry covers must be signed, by the section's `keys` or,
//! without them, by the keys of the policy's `signedBy` rule for it. The manifest can only
//! tighten the policy, never loosen it.
//!
//! Evaluating a rule is [`Policy::evaluate`]; checking signatures is [`crate::signature`]'s.

pub mod file;
mod manifest;

use kiln_manifest::Diagnostic;
use kiln_oci::{Digest, Reference};
use std::fmt;
use std::path::PathBuf;

/// A policy could not be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy file or a manifest's `trust:` section is malformed: the diagnostic names the
    /// file, position, field and what to do.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl From<Diagnostic> for PolicyError {
    fn from(d: Diagnostic) -> Self {
        PolicyError::Invalid(Box::new(d))
    }
}

/// Where a rule was written: a file (a policy file or a manifest), the position and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file; `built-in` for the rule kiln uses when there is no policy file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field, such as `transports.docker["registry.example.com"]` or `trust.image[0]`.
    pub field: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        if !self.field.is_empty() {
            write!(f, " {}", self.field)?;
        }
        Ok(())
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every image no other scope covers (the policy's `default`).
    Default,
    /// Every image (the docker transport's `""` scope, more specific than `default` only).
    AnyImage,
    /// Every image of registries whose host ends with this suffix (`*.example.com`).
    Wildcard(String),
    /// Every image of one registry (`host[:port]`).
    Registry(String),
    /// Every image of a repository or namespace: `registry/path`, matched by whole path
    /// components (`reg/team` covers `reg/team/tool`, not `reg/teamwork`).
    Repository(String),
    /// One image by tag: `registry/path:tag` (a reference without tag is `:latest`).
    Tag {
        /// `registry/path`.
        repository: String,
        /// The tag.
        tag: String,
    },
    /// One image by digest: `registry/path@sha256:…`; matches the digest the manifest pins or
    /// the digest the image's name resolved to.
    Digest {
        /// `registry/path`.
        repository: String,
        /// The digest.
        digest: String,
    },
}

impl Scope {
    /// The scope an image name gives: its repository, or one image by tag or by digest.
    pub fn of_reference(r: &Reference) -> Scope {
        match (&r.tag, &r.digest) {
            (_, Some(digest)) => Scope::Digest {
                repository: r.name(),
                digest: digest.clone(),
            },
            (Some(tag), None) => Scope::Tag {
                repository: r.name(),
                tag: tag.clone(),
            },
            (None, None) => Scope::Repository(r.name()),
        }
    }

    /// Whether the scope covers `image`, whose name resolved to `digests` (the digest its name
    /// points at, then the platform manifest's if different).
    pub fn covers(&self, image: &Reference, digests: &[Digest]) -> bool {
        let name = image.name();
        match self {
            Scope::Default | Scope::AnyImage => true,
            Scope::Wildcard(suffix) => image.registry.ends_with(suffix.as_str()),
            Scope::Registry(host) => image.registry == *host,
            Scope::Repository(prefix) => {
                name == *prefix
                    || name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            Scope::Tag { repository, tag } => {
                name == *repository && image.canonical().tag.as_deref() == Some(tag.as_str())
            }
            Scope::Digest { repository, digest } => {
                name == *repository
                    && (image.digest.as_deref() == Some(digest.as_str())
                        || digests.iter().any(|d| d.to_string() == *digest))
            }
        }
    }

    /// How specific the scope is: the most specific scope that covers an image wins.
    fn specificity(&self) -> (u8, usize) {
        match self {
            Scope::Default => (0, 0),
            Scope::AnyImage => (1, 0),
            Scope::Wildcard(s) => (2, s.len()),
            Scope::Registry(_) => (3, 0),
            Scope::Repository(p) => (4, p.split('/').count()),
            Scope::Tag { .. } => (5, 0),
            Scope::Digest { .. } => (6, 0),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Default => write!(f, "default"),
            Scope::AnyImage => write!(f, "every image"),
            Scope::Wildcard(s) => write!(f, "*{s}"),
            Scope::Registry(h) => write!(f, "{h}"),
            Scope::Repository(p) => write!(f, "{p}"),
            Scope::Tag { repository, tag } => write!(f, "{repository}:{tag}"),
            Scope::Digest { repository, digest } => write!(f, "{repository}@{digest}"),
        }
    }
}

/// What a rule demands of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The image may not be used.
    Reject,
    /// The image may be used, signed or not.
    InsecureAcceptAnything,
    /// The image must carry a signature, by one of these cosign public keys, naming its digest.
    SignedBy(Vec<PathBuf>),
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Reject => write!(f, "reject"),
            Requirement::InsecureAcceptAnything => write!(f, "insecureAcceptAnything"),
            Requirement::SignedBy(keys) => {
                write!(f, "signedBy ")?;
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        write!(f, " or ")?;
                    }
                    write!(f, "{}", k.display())?;
                }
                Ok(())
            }
        }
    }
}

/// A rule of the policy: a scope, its requirements (all must hold) and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it applies to.
    pub scope: Scope,
    /// What it demands; never empty.
    pub requirements: Vec<Requirement>,
    /// Where it was written.
    pub origin: Origin,
}

impl Rule {
    /// The requirements, joined with `and`.
    pub fn requirements_text(&self) -> String {
        self.requirements
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// An entry of a manifest's `trust:` section: the images it covers must be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRule {
    /// The images it covers.
    pub scope: Scope,
    /// The keys (one of which must have signed the image), or `None`: the keys of the policy's
    /// `signedBy` rule for the image.
    pub keys: Option<Vec<PathBuf>>,
    /// Where it was written (`trust.image[0]`, `trust.org[1]` of a manifest).
    pub origin: Origin,
}

impl TrustRule {
    /// What it demands, for listings.
    pub fn requirement_text(&self) -> String {
        match &self.keys {
            Some(keys) => Requirement::SignedBy(keys.clone()).to_string(),
            None => "signed (by the keys of the policy's signedBy rule)".into(),
        }
    }
}

/// Why the policy refuses an image.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The rule's scope (or the trust entry's).
    pub scope: String,
    /// Where the rule was written.
    pub origin: Origin,
    /// The requirement that does not hold.
    pub requirement: String,
    /// What is wrong (the signature check's error, say).
    pub reason: String,
    /// What to do.
    pub help: String,
}

/// The image policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The policy file, or `None` for the built-in policy.
    pub file: Option<PathBuf>,
    /// The default rule.
    pub default: Rule,
    /// The rules by scope, in the order written.
    pub rules: Vec<Rule>,
    /// The manifest's `trust:` entries.
    pub trust: Vec<TrustRule>,
}

impl Policy {
    /// The policy when the user has written none: every image is accepted (unless a manifest's
    /// `trust:` section says otherwise).
    pub fn built_in() -> Policy {
        Policy {
            file: None,
            default: Rule {
                scope: Scope::Default,
                requirements: vec![Requirement::InsecureAcceptAnything],
                origin: Origin {
                    file: "built-in".into(),
                    line: None,
                    column: None,
                    field: "no policy file".into(),
                },
            },
            rules: Vec::new(),
            trust: Vec::new(),
        }
    }

    /// Whether nothing is checked: the built-in policy (or a file's) accepting anything
    /// everywhere, and no `trust:` entry.
    pub fn accepts_anything(&self) -> bool {
        self.trust.is_empty()
            && std::iter::once(&self.default)
                .chain(&self.rules)
                .all(|r| r.requirements == [Requirement::InsecureAcceptAnything])
    }

    /// The rules `image` is subject to: the policy's rule with the most specific scope that
    /// covers it, and every manifest `trust:` entry that covers it. `digests` are what its name
    /// resolved to (the digest the name points at, then the platform manifest's if different).
    pub fn rules_for<'a>(
        &'a self,
        image: &Reference,
        digests: &[Digest],
    ) -> (&'a Rule, Vec<&'a TrustRule>) {
        let mut best = &self.default;
        for rule in &self.rules {
            if rule.scope.covers(image, digests)
                && rule.scope.specificity() > best.scope.specificity()
            {
                best = rule;
            }
        }
        let trust = self
            .trust
            .iter()
            .filter(|t| t.scope.covers(image, digests))
            .collect();
        (best, trust)
    }

    /// Check `image` against its rules. `verify(keys)` checks that the image carries a
    /// signature by one of `keys` naming its digest (its error says what was found instead).
    /// Returns every requirement that does not hold (empty: the image may be used) and what
    /// `verify` returned for the signatures that verified.
    pub fn evaluate<T>(
        &self,
        image: &Reference,
        digests: &[Digest],
        verify: &mut dyn FnMut(&[PathBuf]) -> Result<T, String>,
    ) -> (Vec<Refusal>, Vec<T>) {
        let (rule, trust) = self.rules_for(image, digests);
        let mut refusals = Vec::new();
        let mut accepted = Vec::new();
        let policy_file = rule.origin.file.clone();
        for req in &rule.requirements {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => refusals.push(Refusal {
                    scope: rule.scope.to_string(),
                    origin: rule.origin.clone(),
                    requirement: req.to_string(),
                    reason: "the policy rejects it".into(),
                    help: format!(
                        "use another image, or change the rule in {policy_file} if this one is to be allowed"
                    ),
                }),
                Requirement::SignedBy(keys) => match verify(keys) {
                    Ok(v) => accepted.push(v),
                    Err(reason) => refusals.push(Refusal {
                        scope: rule.scope.to_string(),
                        origin: rule.origin.clone(),
                        requirement: req.to_string(),
                        reason,
                        help: sign_help(image, keys, &policy_file),
                    }),
                },
            }
        }
        let policy_signs = rule
            .requirements
            .iter()
            .any(|r| matches!(r, Requirement::SignedBy(_)));
        for t in trust {
            match &t.keys {
                Some(keys) => match verify(keys) {
                    Ok(v) => accepted.push(v),
                    Err(reason) => refusals.push(Refusal {
                        scope: t.scope.to_string(),
                        origin: t.origin.clone(),
                        requirement: t.requirement_text(),
                        reason,
                        help: sign_help(image, keys, &t.origin.file),
                    }),
                },
                // The policy rule's signedBy was checked above.
                None if policy_signs => {}
                None => refusals.push(Refusal {
                    scope: t.scope.to_string(),
                    origin: t.origin.clone(),
                    requirement: t.requirement_text(),
                    reason: format!(
                        "the manifest requires a signature, but gives no key, and the policy's rule for it ({} at {}) is {}, not signedBy",
                        rule.scope,
                        rule.origin,
                        rule.requirements_text()
                    ),
                    help: format!(
                        "add `keys:` (public key files) to the trust section of {}, or a signedBy rule for the image to the policy file",
                        t.origin.file
                    ),
                }),
            }
        }
        (refusals, accepted)
    }
}

fn sign_help(image: &Reference, keys: &[PathBuf], rule_file: &str) -> String {
    let key = keys
        .first()
        .map(|k| {
            let s = k.display().to_string();
            s.strip_suffix(".pub").unwrap_or(&s).to_string() + ".key"
        })
        .unwrap_or_else(|| "KEY".into());
    format!(
        "sign it with `kiln sign {image} --key {key}` (the private key of {}), or change the rule in {rule_file}",
        keys.iter()
            .map(|k| k.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

#[cfg(test)]
mod tests;
