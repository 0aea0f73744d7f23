//! Policy files: containers-policy.json's shape, in JSON or YAML.
//!
//! ```json
//! {
//!   "default": [{"type": "reject"}],
//!   "transports": {
//!     "docker": {
//!       "registry.example.com": [{"type": "signedBy", "keyPath": "keys/release.pub"}],
//!       "docker.io/library/busybox:1.36": [{"type": "insecureAcceptAnything"}]
//!     }
//!   }
//! }
//! ```
//!
//! `default` is required. Scopes are fully qualified (`docker.io/linuxkit`, not `linuxkit`).
//! Requirements are `reject`, `insecureAcceptAnything` and `signedBy` with cosign public keys
//! (`keyPath`, or `keyPaths` for several, any of which may have signed); containers'
//! `sigstoreSigned` is accepted as another name for `signedBy`. Relative key paths are relative
//! to the policy file's directory. Other transports than `docker` are accepted and ignored (kiln
//! names every image as the docker transport does). Anything kiln does not check — GPG keys,
//! keyless (Fulcio) signatures, `signedIdentity` — is an error rather than a silently weaker
//! policy, and so is any unknown key.

use super::{Origin, Policy, PolicyError, Requirement, Rule, Scope};
use kiln_manifest::Diagnostic;
use kiln_manifest::locate::Locations;
use kiln_oci::{Digest, Reference};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The largest policy file kiln reads.
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// How a policy file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// JSON (containers-policy.json).
    Json,
    /// YAML, the same structure.
    Yaml,
}

impl Syntax {
    /// YAML for `.yml` and `.yaml` files, JSON otherwise.
    pub fn of(path: &Path) -> Syntax {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => Syntax::Yaml,
            _ => Syntax::Json,
        }
    }
}

/// Where kiln looks for a policy file when `--policy` is not given, in order:
/// `$XDG_CONFIG_HOME/kiln/policy.json` (`~/.config/kiln/policy.json`), then
/// `/etc/kiln/policy.json`. The first that exists is used.
pub fn default_locations() -> Vec<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    config
        .map(|c| c.join("kiln/policy.json"))
        .into_iter()
        .chain([PathBuf::from("/etc/kiln/policy.json")])
        .collect()
}

impl Policy {
    /// Read the policy file at `path` (YAML when it ends in `.yml` or `.yaml`, else JSON).
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let read = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_POLICY_BYTES + 1),
            &mut text,
        )
        .map_err(read)?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(read(std::io::Error::other(format!(
                "it is larger than {MAX_POLICY_BYTES} bytes, which no policy needs"
            ))));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let mut policy = Policy::parse(&path.display().to_string(), &text, base, Syntax::of(path))?;
        policy.file = Some(path.to_path_buf());
        Ok(policy)
    }

    /// Parse a policy named `name` (in messages), with relative key paths taken from `base`.
    pub fn parse(
        name: &str,
        text: &str,
        base: &Path,
        syntax: Syntax,
    ) -> Result<Policy, PolicyError> {
        let value: Value = match syntax {
            Syntax::Json => serde_json::from_str(text).map_err(|e| Diagnostic {
                file: name.into(),
                line: Some(e.line()),
                column: Some(e.column()),
                path: String::new(),
                message: format!("not valid JSON: {e}"),
                help: Some(
                    "a policy file is containers-policy.json's JSON (YAML when it is named .yml or .yaml)"
                        .into(),
                ),
            })?,
            Syntax::Yaml => serde_norway::from_str(text).map_err(|e| Diagnostic {
                file: name.into(),
                line: e.location().map(|l| l.line()),
                column: e.location().map(|l| l.column()),
                path: String::new(),
                message: format!("not valid YAML: {e}"),
                help: None,
            })?,
        };
        let cx = Cx {
            name,
            locations: Locations::index(text),
            base,
        };
        cx.policy(&value)
    }
}

/// What a walk over a policy document needs: its name, where its values are, the directory
/// relative key paths start from.
struct Cx<'a> {
    name: &'a str,
    locations: Locations,
    base: &'a Path,
}

/// A field of the document: how [`Locations`] names it and how messages show it.
#[derive(Clone)]
struct Field {
    locate: String,
    shown: String,
}

impl Field {
    fn root() -> Field {
        Field {
            locate: String::new(),
            shown: String::new(),
        }
    }

    fn key(&self, key: &str) -> Field {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        Field {
            locate: if self.locate.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", self.locate)
            },
            shown: match (self.shown.is_empty(), plain) {
                (true, true) => key.to_string(),
                (false, true) => format!("{}.{key}", self.shown),
                (_, false) => format!("{}[{key:?}]", self.shown),
            },
        }
    }

    fn index(&self, i: usize) -> Field {
        Field {
            locate: format!("{}[{i}]", self.locate),
            shown: format!("{}[{i}]", self.shown),
        }
    }
}

const REQUIREMENT_TYPES: &str = "`reject`, `insecureAcceptAnything` or `signedBy`";

impl Cx<'_> {
    fn origin(&self, field: &Field) -> Origin {
        let pos = self
            .locations
            .key(&field.locate)
            .or_else(|| self.locations.find(&field.locate));
        Origin {
            file: self.name.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            field: field.shown.clone(),
        }
    }

    fn error(&self, field: &Field, message: String, help: impl Into<String>) -> PolicyError {
        // Point at the key when the field is a key that is wrong in itself.
        let pos = self.locations.find(&field.locate);
        Diagnostic {
            file: self.name.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: field.shown.clone(),
            message,
            help: Some(help.into()),
        }
        .into()
    }

    fn unknown_key(&self, field: &Field, key: &str, valid: &[&str]) -> PolicyError {
        let f = field.key(key);
        let pos = self
            .locations
            .key(&f.locate)
            .or_else(|| self.locations.find(&f.locate));
        Diagnostic {
            file: self.name.to_string(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: f.shown,
            message: format!("unknown key `{}`", key.escape_debug()),
            help: Some(format!(
                "valid keys here: {}",
                valid
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        .into()
    }

    fn object<'v>(
        &self,
        v: &'v Value,
        field: &Field,
        what: &str,
    ) -> Result<&'v serde_json::Map<String, Value>, PolicyError> {
        v.as_object().ok_or_else(|| {
            self.error(
                field,
                format!("expected {what}, found {}", kind(v)),
                format!("write {what} here"),
            )
        })
    }

    fn policy(&self, v: &Value) -> Result<Policy, PolicyError> {
        let root = Field::root();
        let top = self.object(v, &root, "a mapping with `default` and `transports`")?;
        for k in top.keys() {
            if k != "default" && k != "transports" {
                return Err(self.unknown_key(&root, k, &["default", "transports"]));
            }
        }
        let default_field = root.key("default");
        let default = match top.get("default") {
            Some(d) => Rule {
                scope: Scope::Default,
                requirements: self.requirements(d, &default_field)?,
                origin: self.origin(&default_field),
            },
            None => {
                return Err(self.error(
                    &root,
                    "the policy has no `default`".into(),
                    "say what applies to images no scope names: add \"default\": [{\"type\": \"reject\"}] (or insecureAcceptAnything, or signedBy keys)",
                ));
            }
        };
        let mut rules = Vec::new();
        if let Some(t) = top.get("transports") {
            let tf = root.key("transports");
            for (transport, scopes) in self.object(t, &tf, "a mapping of transports")? {
                let field = tf.key(transport);
                if transport != "docker" {
                    if !OTHER_TRANSPORTS.contains(&transport.as_str()) {
                        return Err(self.error(
                            &field,
                            format!("unknown transport `{}`", transport.escape_debug()),
                            "kiln uses the rules of `docker`; containers' other transports are accepted and ignored",
                        ));
                    }
                    // Still well-formed, or a typo there would pass unnoticed.
                    self.object(scopes, &field, "a mapping of scopes to requirements")?;
                    continue;
                }
                for (scope, reqs) in
                    self.object(scopes, &field, "a mapping of scopes to requirements")?
                {
                    let f = field.key(scope);
                    rules.push(Rule {
                        scope: self.scope(scope, &f)?,
                        requirements: self.requirements(reqs, &f)?,
                        origin: self.origin(&f),
                    });
                }
            }
        }
        Ok(Policy {
            file: None,
            default,
            rules,
            trust: Vec::new(),
        })
    }

    fn scope(&self, s: &str, field: &Field) -> Result<Scope, PolicyError> {
        parse_scope(s).map_err(|(message, help)| self.error(field, message, help))
    }

    fn requirements(&self, v: &Value, field: &Field) -> Result<Vec<Requirement>, PolicyError> {
        let list: Vec<(Field, &Value)> = match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, r)| (field.index(i), r))
                .collect(),
            Value::Object(_) => vec![(field.clone(), v)],
            _ => {
                return Err(self.error(
                    field,
                    format!("expected a list of requirements, found {}", kind(v)),
                    format!("write a list such as [{{\"type\": \"reject\"}}]; a requirement is {REQUIREMENT_TYPES}"),
                ));
            }
        };
        if list.is_empty() {
            return Err(self.error(
                field,
                "the list of requirements is empty".into(),
                format!("give at least one requirement: {REQUIREMENT_TYPES}"),
            ));
        }
        list.into_iter()
            .map(|(f, r)| self.requirement(r, &f))
            .collect()
    }

    fn requirement(&self, v: &Value, field: &Field) -> Result<Requirement, PolicyError> {
        let obj = self.object(v, field, "a requirement such as {\"type\": \"reject\"}")?;
        let tf = field.key("type");
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(other) => {
                return Err(self.error(
                    &tf,
                    format!("expected a string, found {}", kind(other)),
                    format!("`type` is {REQUIREMENT_TYPES}"),
                ));
            }
            None => {
                return Err(self.error(
                    field,
                    "the requirement has no `type`".into(),
                    format!("add \"type\": {REQUIREMENT_TYPES}"),
                ));
            }
        };
        let only = |valid: &[&str]| -> Result<(), PolicyError> {
            match obj.keys().find(|k| !valid.contains(&k.as_str())) {
                Some(k) => Err(self.unknown_key(field, k, valid)),
                None => Ok(()),
            }
        };
        match ty {
            "reject" => {
                only(&["type"])?;
                Ok(Requirement::Reject)
            }
            "insecureAcceptAnything" => {
                only(&["type"])?;
                Ok(Requirement::InsecureAcceptAnything)
            }
            "signedBy" | "sigstoreSigned" => {
                self.unsupported(obj, field)?;
                only(&["type", "keyType", "keyPath", "keyPaths"])?;
                Ok(Requirement::SignedBy(self.keys(obj, field)?))
            }
            other => Err(self.error(
                &tf,
                format!("unknown requirement type `{}`", other.escape_debug()),
                format!("a requirement is {REQUIREMENT_TYPES} (containers' `sigstoreSigned` is another name for signedBy)"),
            )),
        }
    }

    /// The fields of containers' signedBy and sigstoreSigned that kiln does not check: an error
    /// each, never a rule that silently checks less than it says.
    fn unsupported(
        &self,
        obj: &serde_json::Map<String, Value>,
        field: &Field,
    ) -> Result<(), PolicyError> {
        if let Some(kt) = obj.get("keyType")
            && kt.as_str() != Some("cosign")
        {
            return Err(self.error(
                &field.key("keyType"),
                format!("kiln does not verify signatures with {} keys", value_text(kt)),
                "kiln verifies cosign signatures with PEM public keys: remove `keyType` (or write \"cosign\") and give cosign public keys in `keyPath`",
            ));
        }
        for (key, why) in [
            ("keyData", "give the key in a file: `keyPath`"),
            (
                "signedIdentity",
                "kiln checks that the signature names the image's digest, and takes no identity rules: remove `signedIdentity`",
            ),
            (
                "fulcio",
                "kiln verifies key-based signatures only, not keyless (Fulcio) ones: give cosign public keys in `keyPath`",
            ),
            (
                "rekorPublicKeyPath",
                "kiln does not check transparency-log entries: remove it",
            ),
            (
                "rekorPublicKeyData",
                "kiln does not check transparency-log entries: remove it",
            ),
        ] {
            if obj.contains_key(key) {
                return Err(self.error(&field.key(key), format!("`{key}` is not supported"), why));
            }
        }
        Ok(())
    }

    fn keys(
        &self,
        obj: &serde_json::Map<String, Value>,
        field: &Field,
    ) -> Result<Vec<PathBuf>, PolicyError> {
        let mut out = Vec::new();
        let mut path = |v: &Value, f: Field| -> Result<(), PolicyError> {
            match v.as_str() {
                Some(s) if !s.is_empty() && !s.contains('\0') => {
                    out.push(self.base.join(s));
                    Ok(())
                }
                _ => Err(self.error(
                    &f,
                    format!(
                        "expected the path of a public key file, found {}",
                        value_text(v)
                    ),
                    "give the path of a cosign public key (PEM), relative to the policy file",
                )),
            }
        };
        match (obj.get("keyPath"), obj.get("keyPaths")) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    &field.key("keyPaths"),
                    "both `keyPath` and `keyPaths` are given".into(),
                    "give one key in `keyPath` or several in `keyPaths`",
                ));
            }
            (Some(p), None) => path(p, field.key("keyPath"))?,
            (None, Some(Value::Array(ps))) if !ps.is_empty() => {
                let f = field.key("keyPaths");
                for (i, p) in ps.iter().enumerate() {
                    path(p, f.index(i))?;
                }
            }
            (None, Some(other)) => {
                return Err(self.error(
                    &field.key("keyPaths"),
                    format!(
                        "expected a non-empty list of key files, found {}",
                        value_text(other)
                    ),
                    "give the paths of cosign public keys, any of which may have signed the image",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    field,
                    "signedBy names no key".into(),
                    "give the cosign public key the images must be signed with: \"keyPath\": \"FILE.pub\"",
                ));
            }
        }
        Ok(out)
    }
}

/// containers-policy.json's transports besides `docker`, accepted and ignored.
const OTHER_TRANSPORTS: &[&str] = &[
    "atomic",
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "sif",
    "tarball",
];

/// Whether the first component of a name is a registry host (as Docker decides).
fn is_host(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s == "localhost"
}

/// Parse a scope of the docker transport: `""`, `host[:port]`, `*.domain`, `host/path`,
/// `host/path:tag` or `host/path@sha256:…`, fully qualified. The error is a message and a help.
pub fn parse_scope(s: &str) -> Result<Scope, (String, String)> {
    let bad = |why: &str| {
        (
            format!("`{}` is not a valid scope: {why}", s.escape_debug()),
            "a scope is a registry (`registry.example.com`, `*.example.com`), a repository or namespace (`docker.io/linuxkit`), or an image (`docker.io/library/alpine:3.19`, `registry.example.com/tool@sha256:…`), fully qualified; \"\" is every image".to_string(),
        )
    };
    if s.is_empty() {
        return Ok(Scope::AnyImage);
    }
    if let Some(suffix) = s.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains(['/', '*', ':', '@']) || !host_ok(suffix) {
            return Err(bad("a wildcard names a domain, as `*.example.com`"));
        }
        return Ok(Scope::Wildcard(format!(".{suffix}")));
    }
    let Some((first, _)) = s.split_once('/') else {
        if !is_host(s) {
            return Err((
                format!("`{}` is not fully qualified", s.escape_debug()),
                "a scope without `/` is a registry (`registry.example.com`, `localhost:5000`); an image is named with its registry, as `docker.io/library/alpine`".into(),
            ));
        }
        if s.contains('@') || !host_ok(s) {
            return Err(bad("a registry is a host name with an optional port"));
        }
        return Ok(Scope::Registry(s.to_string()));
    };
    let r: Reference = s
        .parse()
        .map_err(|e: kiln_oci::ReferenceError| bad(e.why))?;
    if !is_host(first) || r.registry != first {
        return Err((
            format!("`{}` is not fully qualified", s.escape_debug()),
            format!("scopes name the registry: write `{r}`"),
        ));
    }
    if r.digest
        .as_deref()
        .is_some_and(|d| d.parse::<Digest>().is_err())
    {
        return Err(bad("the digest is not sha256: and 64 hex digits"));
    }
    Ok(Scope::of_reference(&r))
}

fn host_ok(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn value_text(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}
