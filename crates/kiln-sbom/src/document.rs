//! The SBOM of one build, independent of its format: the images and what they hold.

use crate::capture::Findings;
use crate::parse::{Ecosystem, OsRelease, Package};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

/// One image of the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// Its reference, normalised (`docker.io/kiln/redis:TAG`).
    pub reference: String,
    /// The digest of its platform manifest.
    pub digest: String,
    /// Where the manifest uses it: `kernel`, `init[0]`, `services[1]`, ...
    pub locations: Vec<String>,
    /// What its package databases and os-release say.
    pub findings: Findings,
    /// The packages of the SBOMs its publisher attached.
    pub attached: Vec<Package>,
}

/// The SBOM of a build: its images, in the order the manifest first uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sbom {
    /// The build's name (the outputs' base name).
    pub name: String,
    /// The images.
    pub images: Vec<ImageRecord>,
}

/// A package of the document: found in one or more images.
pub(crate) struct Entry {
    pub package: Package,
    /// Whether it came only from attached SBOMs.
    pub attached_only: bool,
    /// The images it was attached by (their references), when it was.
    pub attached_by: Vec<String>,
}

/// The packages of all images, deduplicated, with each image's package keys.
pub(crate) struct Table {
    /// Packages by key.
    pub packages: BTreeMap<String, Entry>,
    /// Operating systems by key.
    pub systems: BTreeMap<String, OsRelease>,
    /// Per image (same order as [`Sbom::images`]): its OS key and package keys.
    pub per_image: Vec<(Option<String>, Vec<String>)>,
}

/// The key two records of the same package share.
fn key(p: &Package) -> String {
    match &p.purl {
        Some(purl) => crate::purl::identity(purl),
        None => format!(
            "{:?}/{}@{}/{}",
            p.ecosystem,
            p.name,
            p.version,
            p.arch.as_deref().unwrap_or("")
        ),
    }
}

fn os_key(os: &OsRelease) -> String {
    format!("os/{}@{}", os.id, os.version_id.as_deref().unwrap_or(""))
}

impl Sbom {
    /// An SBOM of the build `name`, with no images yet.
    pub fn new(name: impl Into<String>) -> Self {
        Sbom {
            name: name.into(),
            images: Vec::new(),
        }
    }

    /// Record that the image `reference` (manifest `digest`) is used at `location`, holding
    /// `findings` and the `attached` packages. An image used at several locations is listed once.
    pub fn add(
        &mut self,
        reference: &str,
        digest: &str,
        location: &str,
        findings: Findings,
        attached: Vec<Package>,
    ) {
        if let Some(known) = self
            .images
            .iter_mut()
            .find(|i| i.reference == reference && i.digest == digest)
        {
            if !known.locations.iter().any(|l| l == location) {
                known.locations.push(location.to_string());
            }
            return;
        }
        self.images.push(ImageRecord {
            reference: reference.to_string(),
            digest: digest.to_string(),
            locations: vec![location.to_string()],
            findings,
            attached,
        });
    }

    /// The packages of all images, deduplicated by purl (without qualifiers) or by name,
    /// version and architecture.
    pub(crate) fn table(&self) -> Table {
        let mut packages: BTreeMap<String, Entry> = BTreeMap::new();
        let mut systems = BTreeMap::new();
        let mut per_image = Vec::new();
        for image in &self.images {
            let os = image.findings.os.as_ref().map(|os| {
                let k = os_key(os);
                systems.entry(k.clone()).or_insert_with(|| os.clone());
                k
            });
            let mut keys = Vec::new();
            for p in &image.findings.packages {
                let k = key(p);
                match packages.get_mut(&k) {
                    Some(e) if e.attached_only => {
                        // Found in a database: that record wins, keeping an attached license.
                        let license = e.package.license.take();
                        e.package = p.clone();
                        e.package.license = p.license.clone().or(license);
                        e.attached_only = false;
                    }
                    Some(_) => {}
                    None => {
                        packages.insert(
                            k.clone(),
                            Entry {
                                package: p.clone(),
                                attached_only: false,
                                attached_by: Vec::new(),
                            },
                        );
                    }
                }
                keys.push(k);
            }
            for p in &image.attached {
                let k = key(p);
                let e = packages.entry(k.clone()).or_insert_with(|| Entry {
                    package: p.clone(),
                    attached_only: true,
                    attached_by: Vec::new(),
                });
                if e.package.license.is_none() {
                    e.package.license = p.license.clone();
                }
                if !e.attached_by.contains(&image.reference) {
                    e.attached_by.push(image.reference.clone());
                }
                keys.push(k);
            }
            keys.sort();
            keys.dedup();
            per_image.push((os, keys));
        }
        Table {
            packages,
            systems,
            per_image,
        }
    }

    /// A hash of everything the document says but its creation time: the source of its
    /// namespace (SPDX) or serial number (CycloneDX), so that the same build gives the same
    /// document.
    pub(crate) fn content_hash(&self, format: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"kiln sbom\n");
        h.update(format.as_bytes());
        h.update(b"\n");
        h.update(serde_json::to_vec(self).unwrap_or_default());
        h.finalize().into()
    }
}

/// A UUID (version 5 layout, RFC 9562) made of the first 16 bytes of `hash`.
pub(crate) fn uuid_of(hash: &[u8; 32]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    kiln_fs::time::rfc3339(secs)
}

/// `s` with every character outside `[A-Za-z0-9.-]` replaced by `-`, at most 48 characters:
/// the readable part of an SPDX identifier.
pub(crate) fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect()
}

/// A short hash of `s`, to keep identifiers unique.
pub(crate) fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..6])
}

/// The license `raw` as a valid SPDX expression (canonicalised: `GPL-2.0+` becomes
/// `GPL-2.0-or-later`, `/` becomes `OR`), or `None` when it is not one.
pub(crate) fn spdx_expression(raw: &str) -> Option<String> {
    let canonical = match spdx::Expression::canonicalize(raw) {
        Ok(Some(c)) => c,
        Ok(None) => raw.to_string(),
        Err(_) => return None,
    };
    spdx::Expression::parse(&canonical).ok()?;
    Some(canonical)
}

/// A package's license as the documents write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declared {
    /// A valid SPDX expression.
    pub expression: String,
    /// The `LicenseRef-`s the expression uses, each with the text it stands for: an SPDX
    /// document defines them, and an expression with none is made of SPDX identifiers only.
    pub refs: Vec<(String, String)>,
}

/// The license of `p` as the documents write it, `None` when it has none:
///
/// - a valid SPDX expression as it is (canonicalised, see [`spdx_expression`]; not for dpkg
///   packages, whose Debian names the copyright parser already mapped where exact and which
///   must not be guessed further, as canonicalising `GPL` to `GPL-2.0-only` would);
/// - else the expression with each license that is not an SPDX identifier replaced by a
///   `LicenseRef-` of its own (`GPL-2.0-or-later AND public-domain` becomes
///   `GPL-2.0-or-later AND LicenseRef-public-domain-HASH`): licenses are the words between
///   `AND`, `OR`, `WITH` and parentheses, and the words after `WITH` must be an SPDX
///   exception;
/// - else one `LicenseRef-` for the whole text.
pub(crate) fn declared(p: &Package) -> Option<Declared> {
    let raw = p.license.as_deref()?;
    if p.ecosystem != Ecosystem::Deb
        && let Some(found) = spdx_expression(raw).and_then(|e| by_terms(&e))
    {
        return Some(found);
    }
    if let Some(found) = by_terms(raw) {
        return Some(found);
    }
    let id = license_ref(raw);
    Some(Declared {
        expression: id.clone(),
        refs: vec![(id, raw.to_string())],
    })
}

/// The `LicenseRef-` of a license known by the name `text` alone.
fn license_ref(text: &str) -> String {
    format!("LicenseRef-{}-{}", id_part(text), short_hash(text))
}

/// `raw` with every license that is no SPDX identifier made a `LicenseRef-`, when the result
/// is a valid SPDX expression.
fn by_terms(raw: &str) -> Option<Declared> {
    let spaced = raw.replace('(', " ( ").replace(')', " ) ");
    let mut out: Vec<String> = Vec::new();
    let mut refs: Vec<(String, String)> = Vec::new();
    let mut term: Vec<&str> = Vec::new();
    let mut exception = false;
    let mut flush = |term: &mut Vec<&str>, exception: bool, out: &mut Vec<String>| {
        if term.is_empty() {
            return Some(());
        }
        let text = term.join(" ");
        term.clear();
        if exception {
            // SPDX 2.3 knows no references to exceptions outside its list.
            let id = spdx::exception_id(&text)?;
            (id.name == text && !id.is_deprecated()).then_some(())?;
            out.push(text);
        } else if is_license_id(&text) {
            out.push(text);
        } else {
            let id = if is_license_ref(&text) {
                text.clone()
            } else {
                license_ref(&text)
            };
            if !refs.iter().any(|(known, _)| *known == id) {
                refs.push((id.clone(), text));
            }
            out.push(id);
        }
        Some(())
    };
    for word in spaced.split_whitespace() {
        if matches!(word, "AND" | "OR" | "WITH" | "(" | ")") {
            flush(&mut term, exception, &mut out)?;
            exception = word == "WITH";
            out.push(word.to_string());
        } else {
            term.push(word);
        }
    }
    flush(&mut term, exception, &mut out)?;
    let expression = out.join(" ").replace("( ", "(").replace(" )", ")");
    spdx::Expression::parse(&expression).ok()?;
    Some(Declared { expression, refs })
}

/// Whether `word` is a current SPDX license identifier. Not with SPDX's `+` (any later
/// version): valid syntax, but the official SPDX tools know no such license (`MPL-2.0+`).
fn is_license_id(word: &str) -> bool {
    !word.ends_with('+')
        && spdx::license_id(word).is_some_and(|id| id.name == word && !id.is_deprecated())
}

/// Whether `word` is a `LicenseRef-` the document can define itself.
fn is_license_ref(word: &str) -> bool {
    word.strip_prefix("LicenseRef-").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    })
}

/// The ecosystem's name, as comments say it.
pub(crate) fn ecosystem_name(e: Ecosystem) -> &'static str {
    match e {
        Ecosystem::Deb => "dpkg database",
        Ecosystem::Apk => "apk database",
        Ecosystem::Attached => "attached SBOM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_uuids() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let u = uuid_of(&[0xff; 32]);
        assert_eq!(u, "ffffffff-ffff-5fff-bfff-ffffffffffff");
    }

    #[test]
    fn licenses() {
        assert_eq!(spdx_expression("MIT").as_deref(), Some("MIT"));
        assert_eq!(
            spdx_expression("GPL-2.0-or-later AND MIT").as_deref(),
            Some("GPL-2.0-or-later AND MIT")
        );
        assert_eq!(spdx_expression("custom:weird license"), None);
    }

    fn package(ecosystem: Ecosystem, license: &str) -> Package {
        Package {
            ecosystem,
            name: "p".into(),
            version: "1".into(),
            arch: None,
            source: None,
            license: Some(license.into()),
            purl: None,
        }
    }

    fn declared_as(ecosystem: Ecosystem, license: &str) -> Declared {
        declared(&package(ecosystem, license)).expect("a license")
    }

    #[test]
    fn spdx_expressions_are_kept_and_others_made_references() {
        // SPDX identifiers only: no references.
        let d = declared_as(
            Ecosystem::Deb,
            "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND MIT",
        );
        assert_eq!(
            d.expression,
            "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND MIT"
        );
        assert!(d.refs.is_empty());
        let d = declared_as(Ecosystem::Deb, "GPL-2.0-or-later WITH Font-exception-2.0");
        assert!(d.refs.is_empty(), "{d:?}");

        // Each license of no SPDX identifier is a reference of its own.
        let d = declared_as(
            Ecosystem::Deb,
            "BSD-3-Clause AND public-domain AND GPL-2+ with OpenSSL exception AND (MIT OR public-domain)",
        );
        let pd = license_ref("public-domain");
        let ssl = license_ref("GPL-2+ with OpenSSL exception");
        assert!(pd.starts_with("LicenseRef-public-domain-"), "{pd}");
        assert_eq!(
            d.expression,
            format!("BSD-3-Clause AND {pd} AND {ssl} AND (MIT OR {pd})")
        );
        assert_eq!(
            d.refs,
            [
                (pd, "public-domain".to_string()),
                (ssl, "GPL-2+ with OpenSSL exception".to_string())
            ]
        );
        assert!(spdx::Expression::parse(&d.expression).is_ok());

        // A reference already is one; an exception outside SPDX's list, or broken grouping,
        // make the whole text one reference.
        let d = declared_as(Ecosystem::Apk, "MIT OR LicenseRef-mine");
        assert_eq!(d.expression, "MIT OR LicenseRef-mine");
        assert_eq!(
            d.refs,
            [("LicenseRef-mine".into(), "LicenseRef-mine".into())]
        );
        for whole in [
            "GPL-2.0-only WITH OpenSSL-exception",
            "(MIT",
            "MIT AND",
            "a b",
        ] {
            let d = declared_as(Ecosystem::Deb, whole);
            assert_eq!(d.expression, license_ref(whole));
            assert_eq!(d.refs, [(license_ref(whole), whole.to_string())]);
        }
    }

    #[test]
    fn debian_names_are_not_guessed_but_other_databases_are_canonicalised() {
        // apk's `GPL-2.0+` and `gpl` are canonicalised as before...
        assert_eq!(
            declared_as(Ecosystem::Apk, "GPL-2.0+ OR mit").expression,
            "GPL-2.0-or-later OR MIT"
        );
        // ... Debian's unversioned GPL is no GPL-2.0-only.
        let d = declared_as(Ecosystem::Deb, "GPL AND MIT");
        assert_eq!(d.expression, format!("{} AND MIT", license_ref("GPL")));
        let d = declared_as(Ecosystem::Deb, "GPL-2.0+");
        assert_eq!(d.expression, license_ref("GPL-2.0+"));
        // `+` on other licenses is SPDX syntax the official tools refuse.
        let d = declared_as(Ecosystem::Apk, "MPL-2.0+ AND MIT");
        assert_eq!(d.expression, format!("{} AND MIT", license_ref("MPL-2.0+")));
        assert_eq!(
            declared(&Package {
                license: None,
                ..package(Ecosystem::Deb, "")
            }),
            None
        );
    }
}
