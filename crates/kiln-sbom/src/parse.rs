//! Parsers of the package databases and os-release files found in images: Debian's
//! `/var/lib/dpkg/status` (and the one-package files of `status.d/`), Alpine's
//! `/lib/apk/db/installed`, and os-release.
//!
//! The input comes from images and is untrusted: the parsers never panic, take at most
//! [`MAX_PACKAGES`] packages from one file and keep at most [`MAX_VALUE`] bytes of a value.
//! The capture bounds the size of the files themselves ([`crate::MAX_FILE_BYTES`]).

use serde::{Deserialize, Serialize};

/// The most packages taken from one database file.
pub const MAX_PACKAGES: usize = 100_000;
/// The most bytes kept of one field's value (longer values are cut at a character boundary).
pub const MAX_VALUE: usize = 1024;

/// Which package database a package was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// dpkg (Debian, Ubuntu, ...): purl type `deb`.
    Deb,
    /// apk (Alpine): purl type `apk`.
    Apk,
    /// Named by an SBOM the image's publisher attached.
    Attached,
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Package {
    /// Where it was found.
    pub ecosystem: Ecosystem,
    /// Its name.
    pub name: String,
    /// Its version, as the database writes it (empty when unknown).
    pub version: String,
    /// Its architecture (`amd64`, `x86_64`, `all`, ...), when known.
    pub arch: Option<String>,
    /// The source package it was built from, when the database names one other than itself.
    pub source: Option<String>,
    /// Its license as the package states it: apk's `L:`, an attached SBOM's declared license,
    /// or (dpkg's database has none) the licenses of its Debian copyright file
    /// (`/usr/share/doc/NAME/copyright`, in copyright-format 1.0), combined with `AND`, names
    /// with an exact SPDX identifier mapped to it and the others kept as Debian writes them
    /// (see [`crate::debian_copyright`]).
    pub license: Option<String>,
    /// Its package URL: set for attached packages that carry one, derived from the
    /// os-release of the image for the others (see [`crate::purl`]).
    pub purl: Option<String>,
}

/// What os-release says about the distribution of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OsRelease {
    /// `ID` (`debian`, `alpine`, ...); `linux` when absent, as the specification says.
    pub id: String,
    /// `VERSION_ID` (`12`, `3.19.1`), when given.
    pub version_id: Option<String>,
    /// `NAME`, when given.
    pub name: Option<String>,
    /// `PRETTY_NAME`, when given.
    pub pretty_name: Option<String>,
    /// `VERSION_CODENAME`, when given.
    pub codename: Option<String>,
}

/// `value` cut to at most [`MAX_VALUE`] bytes, at a character boundary.
pub(crate) fn bounded(value: &str) -> String {
    if value.len() <= MAX_VALUE {
        return value.to_string();
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(bounded)
}

/// The packages of a dpkg status file (or a `status.d/` file): each paragraph with a
/// `Package` and a `Version`, and a `Status` whose last word is `installed` (paragraphs without
/// `Status`, as in `status.d/`, count as installed).
pub fn dpkg_status(data: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(data);
    let mut packages = Vec::new();
    for paragraph in paragraphs(&text) {
        if packages.len() >= MAX_PACKAGES {
            break;
        }
        let field = |key: &str| -> Option<&str> {
            paragraph
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| *v)
        };
        let installed =
            field("Status").is_none_or(|s| s.split_whitespace().last() == Some("installed"));
        let (Some(name), Some(version)) =
            (non_empty(field("Package")), non_empty(field("Version")))
        else {
            continue;
        };
        if !installed {
            continue;
        }
        // `Source: NAME` or `Source: NAME (VERSION)`.
        let source = non_empty(field("Source").and_then(|s| s.split_whitespace().next()))
            .filter(|s| *s != name);
        packages.push(Package {
            ecosystem: Ecosystem::Deb,
            name,
            version,
            arch: non_empty(field("Architecture")),
            source,
            license: None,
            purl: None,
        });
    }
    packages
}

/// The paragraphs of a deb822 file: `Key: value` fields, continuation lines (starting with a
/// space or tab) ignored, paragraphs separated by blank lines.
pub(crate) fn paragraphs(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut all = Vec::new();
    let mut current: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
                if all.len() >= MAX_PACKAGES {
                    return all;
                }
            }
            continue;
        }
        if line.starts_with([' ', '\t']) || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            current.push((k.trim(), v.trim()));
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// The packages of Alpine's `lib/apk/db/installed`: blocks of `K:value` lines separated by
/// blank lines; `P` the name, `V` the version, `A` the architecture, `L` the license, `o` the
/// origin (source) package.
pub fn apk_installed(data: &[u8]) -> Vec<Package> {
    let text = String::from_utf8_lossy(data);
    let mut packages = Vec::new();
    let mut block: Vec<(char, &str)> = Vec::new();
    let flush = |block: &mut Vec<(char, &str)>, packages: &mut Vec<Package>| {
        let field = |key: char| block.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        if packages.len() < MAX_PACKAGES
            && let (Some(name), Some(version)) = (non_empty(field('P')), non_empty(field('V')))
        {
            let source = non_empty(field('o')).filter(|s| *s != name);
            packages.push(Package {
                ecosystem: Ecosystem::Apk,
                name,
                version,
                arch: non_empty(field('A')),
                source,
                license: non_empty(field('L')),
                purl: None,
            });
        }
        block.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut block, &mut packages);
            continue;
        }
        let mut chars = line.chars();
        if let (Some(key), Some(':')) = (chars.next(), chars.next()) {
            block.push((key, chars.as_str()));
        }
    }
    flush(&mut block, &mut packages);
    packages
}

/// An os-release file: `KEY=VALUE` lines, values optionally in single or double quotes with
/// backslash escapes, `#` comments. `None` when it names nothing at all.
pub fn os_release(data: &[u8]) -> Option<OsRelease> {
    let text = String::from_utf8_lossy(data);
    let mut os = OsRelease::default();
    let mut any = false;
    for line in text.lines().take(4096) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(raw.trim());
        let value = non_empty(Some(&value));
        match key.trim() {
            "ID" => os.id = value.unwrap_or_default(),
            "VERSION_ID" => os.version_id = value,
            "NAME" => os.name = value,
            "PRETTY_NAME" => os.pretty_name = value,
            "VERSION_CODENAME" => os.codename = value,
            _ => continue,
        }
        any = true;
    }
    if !any {
        return None;
    }
    if os.id.is_empty() {
        os.id = "linux".into();
    }
    Some(os)
}

fn unquote(raw: &str) -> String {
    let quote = match raw.chars().next() {
        Some(q @ ('"' | '\'')) => q,
        _ => return raw.to_string(),
    };
    let mut out = String::new();
    let mut chars = raw[1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            c if c == quote => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nMulti-Arch: same\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n long text: with a colon\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: redis-server\nStatus: install ok installed\nArchitecture: amd64\nSource: redis (5:7.0.15-1~deb12u1)\nVersion: 5:7.0.15-1~deb12u1\n";

    #[test]
    fn dpkg_takes_installed_packages_with_their_source() {
        let p = dpkg_status(STATUS.as_bytes());
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].version, "2.36-9+deb12u4");
        assert_eq!(p[0].arch.as_deref(), Some("amd64"));
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[1].name, "redis-server");
        assert_eq!(p[1].source.as_deref(), Some("redis"));
        assert_eq!(p[1].version, "5:7.0.15-1~deb12u1");
    }

    #[test]
    fn a_status_d_file_without_status_counts_as_installed() {
        let p = dpkg_status(b"Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].source, None);
        assert!(dpkg_status(b"d41d8cd98f00b204e9800998ecf8427e  usr/bin/x\n").is_empty());
    }

    #[test]
    fn apk_takes_name_version_arch_license_origin() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nL:MIT\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\n\nP:busybox-binsh\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\n";
        let p = apk_installed(db.as_bytes());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "musl");
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert_eq!(p[0].source, None);
        assert_eq!(p[1].source.as_deref(), Some("busybox"));
    }

    #[test]
    fn os_release_unquotes() {
        let os = os_release(
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian GNU/Linux'\nVERSION_ID=\"12\"\nID=debian\n# c\n",
        )
        .expect("os");
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id.as_deref(), Some("12"));
        assert_eq!(os.name.as_deref(), Some("Debian GNU/Linux"));
        assert_eq!(
            os.pretty_name.as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_release(b"VERSION_ID=3\n").expect("os").id, "linux");
        assert_eq!(os_release(b"garbage\n"), None);
    }

    #[test]
    fn values_are_bounded() {
        let long = "é".repeat(MAX_VALUE);
        let p = dpkg_status(format!("Package: {long}\nVersion: 1\n").as_bytes());
        assert!(p[0].name.len() <= MAX_VALUE);
    }

    proptest! {
        #[test]
        fn dpkg_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for p in dpkg_status(&data) {
                prop_assert!(!p.name.is_empty() && !p.version.is_empty());
                prop_assert!(p.name.len() <= MAX_VALUE);
            }
        }

        #[test]
        fn dpkg_never_panics_on_field_soup(lines in proptest::collection::vec(
            "(Package|Version|Status|Source|Architecture|X)?:? ?[a-z0-9 ~+:.()-]{0,12}", 0..64)) {
            let _ = dpkg_status(lines.join("\n").as_bytes());
        }

        #[test]
        fn apk_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for p in apk_installed(&data) {
                prop_assert!(!p.name.is_empty() && !p.version.is_empty());
            }
        }

        #[test]
        fn apk_never_panics_on_field_soup(lines in proptest::collection::vec(
            "[PVALoé]?:?[a-z0-9 ._-]{0,12}", 0..64)) {
            let _ = apk_installed(lines.join("\n").as_bytes());
        }

        #[test]
        fn os_release_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Some(os) = os_release(&data) {
                prop_assert!(!os.id.is_empty());
            }
        }

        #[test]
        fn os_release_never_panics_on_quotes(lines in proptest::collection::vec(
            "(ID|VERSION_ID|NAME)=[\"'\\\\a-z0-9é ]{0,12}", 0..16)) {
            let _ = os_release(lines.join("\n").as_bytes());
        }
    }
}
