//! Capturing the package databases of one image while its entries stream by, and the Debian
//! copyright files that give its dpkg packages their licenses.

use crate::parse::{self, Ecosystem, OsRelease, Package};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest database or os-release file captured; a larger one is noted and skipped.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// The most bytes captured from one image, all databases and os-release files together.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// The largest Debian copyright file read; a larger one is skipped (and counted in a note).
pub const MAX_COPYRIGHT_FILE_BYTES: u64 = 256 << 10;
/// The most bytes of Debian copyright files read from one image, on a budget of their own:
/// `usr/share/doc/` comes before `var/lib/dpkg/` in an image's entries, and the copyright
/// files must never crowd out the database.
pub const MAX_COPYRIGHT_IMAGE_BYTES: u64 = 16 << 20;
/// The most `status.d/` files captured from one image.
const MAX_STATUS_D: usize = 10_000;

const DPKG_STATUS: &str = "var/lib/dpkg/status";
const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d/";
const APK_INSTALLED: &str = "lib/apk/db/installed";
const ETC_OS_RELEASE: &str = "etc/os-release";
const USR_OS_RELEASE: &str = "usr/lib/os-release";
const DOC_DIR: &str = "usr/share/doc/";
const COPYRIGHT: &str = "/copyright";

/// The package whose copyright file is at `path` (`usr/share/doc/NAME/copyright`), if it is one.
fn copyright_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix(DOC_DIR)?.strip_suffix(COPYRIGHT)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The most symbolic links between doc directories followed for one package.
const MAX_LINK_HOPS: usize = 8;
/// The most doc-directory links kept for one image.
const MAX_DOC_LINKS: usize = 100_000;

/// The package whose doc directory is at `path` (`usr/share/doc/NAME`), if it is one.
fn doc_dir_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix(DOC_DIR)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The files of one image's file system that say what it holds, gathered from its flattened
/// entries (so whiteouts are already applied): paths are relative to the image's root.
#[derive(Debug, Default)]
pub struct Capture {
    files: BTreeMap<String, Vec<u8>>,
    bytes: u64,
    status_d: usize,
    notes: Vec<String>,
    /// The license of each package whose copyright file was read (`None`: it names none, or is
    /// not in the machine-readable format), by package name.
    licenses: BTreeMap<String, Option<String>>,
    copyright_bytes: u64,
    /// Copyright files not read, by reason: how many and the first one.
    skipped: BTreeMap<String, (usize, String)>,
    /// Doc directories that are symbolic links to another package's (Debian does this for the
    /// binary packages of one source package): the package name to the one it shares with.
    doc_links: BTreeMap<String, String>,
}

impl Capture {
    /// Whether the regular file at `path` (relative to the image's root, no leading `/`) is
    /// one the capture wants.
    pub fn wants(path: &str) -> bool {
        match path {
            DPKG_STATUS | APK_INSTALLED | ETC_OS_RELEASE | USR_OS_RELEASE => true,
            _ => {
                path.strip_prefix(DPKG_STATUS_D).is_some_and(|name| {
                    !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums")
                }) || copyright_of(path).is_some()
            }
        }
    }

    /// Whether a file of `size` bytes at `path` would be kept: the capture notes why not when
    /// it is too large, and the caller then need not read it.
    pub fn accepts(&mut self, path: &str, size: u64) -> bool {
        if copyright_of(path).is_some() {
            return self.accepts_copyright(path, size);
        }
        let why = if size > MAX_FILE_BYTES {
            Some(format!("more than {} MiB", MAX_FILE_BYTES >> 20))
        } else if self.bytes.saturating_add(size) > MAX_IMAGE_BYTES {
            Some(format!(
                "the image's package files pass {} MiB",
                MAX_IMAGE_BYTES >> 20
            ))
        } else if path.starts_with(DPKG_STATUS_D) && self.status_d >= MAX_STATUS_D {
            Some(format!("more than {MAX_STATUS_D} files in status.d"))
        } else {
            None
        };
        match why {
            Some(why) => {
                self.notes
                    .push(format!("/{path} ({size} bytes) not read: {why}"));
                false
            }
            None => true,
        }
    }

    /// [`Capture::accepts`] for a copyright file: within its own limits, and counted (not
    /// noted one by one) when not.
    fn accepts_copyright(&mut self, path: &str, size: u64) -> bool {
        let why = if size > MAX_COPYRIGHT_FILE_BYTES {
            format!("more than {} KiB each", MAX_COPYRIGHT_FILE_BYTES >> 10)
        } else if self.copyright_bytes.saturating_add(size) > MAX_COPYRIGHT_IMAGE_BYTES {
            format!(
                "the image's copyright files pass {} MiB",
                MAX_COPYRIGHT_IMAGE_BYTES >> 20
            )
        } else {
            return true;
        };
        let entry = self.skipped.entry(why).or_insert((0, path.to_string()));
        entry.0 += 1;
        false
    }

    /// Note the symbolic link at `path` to `target`, when it is a package's doc directory
    /// linked to another package's (`usr/share/doc/cpp-12 -> gcc-12-base`): the package then
    /// has the license of the other's copyright file.
    pub fn add_link(&mut self, path: &str, target: &str) {
        let Some(name) = doc_dir_of(path) else {
            return;
        };
        let target = target.trim_end_matches('/');
        let other = target
            .strip_prefix("/usr/share/doc/")
            .or_else(|| target.strip_prefix("../doc/"))
            .unwrap_or(target);
        if other.is_empty() || other.contains('/') || other == "." || other == ".." {
            return;
        }
        if self.doc_links.len() < MAX_DOC_LINKS || self.doc_links.contains_key(name) {
            self.doc_links.insert(name.to_string(), other.to_string());
        }
    }

    /// The license of the copyright file in `name`'s doc directory, through the links between
    /// doc directories.
    fn license_of(&self, name: &str) -> Option<String> {
        let mut name = name;
        for _ in 0..=MAX_LINK_HOPS {
            if let Some(license) = self.licenses.get(name) {
                return license.clone();
            }
            name = self.doc_links.get(name)?;
        }
        None
    }

    /// Keep the content of the file at `path` (one [`Capture::accepts`] accepted).
    pub fn add(&mut self, path: &str, data: Vec<u8>) {
        if let Some(name) = copyright_of(path) {
            // Read at once: only the licenses are kept.
            self.copyright_bytes = self.copyright_bytes.saturating_add(data.len() as u64);
            self.licenses.insert(
                name.to_string(),
                crate::debian_copyright::package_license(&data),
            );
            return;
        }
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        match self.files.insert(path.to_string(), data) {
            Some(old) => self.bytes = self.bytes.saturating_sub(old.len() as u64),
            None if path.starts_with(DPKG_STATUS_D) => self.status_d += 1,
            None => {}
        }
    }

    /// What the captured files say.
    pub fn finish(self) -> Findings {
        let os = self
            .files
            .get(ETC_OS_RELEASE)
            .or_else(|| self.files.get(USR_OS_RELEASE))
            .and_then(|d| parse::os_release(d));
        let mut packages = Vec::new();
        for (path, data) in &self.files {
            if path == DPKG_STATUS || path.starts_with(DPKG_STATUS_D) {
                packages.extend(parse::dpkg_status(data));
            } else if path == APK_INSTALLED {
                packages.extend(parse::apk_installed(data));
            }
        }
        for p in &mut packages {
            p.purl = crate::purl::of(p, os.as_ref());
            if p.ecosystem == Ecosystem::Deb && p.license.is_none() {
                // `libc6:amd64` has the doc directory of `libc6`.
                let name = p.name.split(':').next().unwrap_or_default();
                p.license = self.license_of(name);
            }
        }
        packages.sort();
        packages.dedup();
        let mut notes = self.notes;
        for (why, (count, first)) in self.skipped {
            notes.push(match count {
                1 => format!("/{first} not read: {why}"),
                n => format!(
                    "/{first} and {} more copyright files not read: {why}",
                    n - 1
                ),
            });
        }
        Findings {
            os,
            packages,
            notes,
        }
    }
}

/// What one image holds, as its package databases and os-release say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Findings {
    /// Its distribution.
    pub os: Option<OsRelease>,
    /// Its installed packages, sorted, with purls.
    pub packages: Vec<Package>,
    /// Files not read, and why.
    pub notes: Vec<String>,
}

impl Findings {
    /// The version of the findings format and of the parsers: part of any cache key.
    pub const VERSION: u32 = 3;

    /// The findings as bytes to cache.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Findings cached by [`Findings::to_bytes`]; `None` when `data` is not such.
    pub fn from_bytes(data: &[u8]) -> Option<Findings> {
        serde_json::from_slice(data).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_the_databases_only() {
        assert!(Capture::wants("var/lib/dpkg/status"));
        assert!(Capture::wants("var/lib/dpkg/status.d/libc6"));
        assert!(!Capture::wants("var/lib/dpkg/status.d/libc6.md5sums"));
        assert!(!Capture::wants("var/lib/dpkg/status.d/"));
        assert!(!Capture::wants("var/lib/dpkg/status-old"));
        assert!(Capture::wants("lib/apk/db/installed"));
        assert!(Capture::wants("usr/lib/os-release"));
        assert!(!Capture::wants("etc/passwd"));
    }

    #[test]
    fn wants_copyright_files_at_their_depth_only() {
        assert!(Capture::wants("usr/share/doc/libc6/copyright"));
        assert!(Capture::wants("usr/share/doc/libstdc++6/copyright"));
        assert!(!Capture::wants("usr/share/doc//copyright"));
        assert!(!Capture::wants("usr/share/doc/copyright"));
        assert!(!Capture::wants("usr/share/doc/a/b/copyright"));
        assert!(!Capture::wants("usr/share/doc/libc6/copyright.gz"));
        assert!(!Capture::wants("usr/share/doc/libc6/changelog.gz"));
        assert!(!Capture::wants("usr/local/share/doc/libc6/copyright"));
    }

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2024 Someone\nLicense: GPL-2+ or Expat\n\nFiles: doc/*\nCopyright: none\nLicense: public-domain\n";

    #[test]
    fn dpkg_packages_take_the_licenses_of_their_copyright_files() {
        let mut c = Capture::default();
        // Entries arrive in path order: the documentation first.
        for (path, data) in [
            (
                "usr/share/doc/libc6/copyright",
                "This is the Debian prepackaged version of the GNU C Library.\n",
            ),
            ("usr/share/doc/multi/copyright", DEP5),
            ("usr/share/doc/tool/copyright", DEP5),
            (
                "var/lib/dpkg/status",
                "Package: libc6\nStatus: install ok installed\nVersion: 2.36\nArchitecture: amd64\n\nPackage: tool\nStatus: install ok installed\nVersion: 1\n\nPackage: nodoc\nStatus: install ok installed\nVersion: 1\n",
            ),
            (
                "var/lib/dpkg/status.d/multi:amd64",
                "Package: multi:amd64\nVersion: 3\n",
            ),
        ] {
            assert!(
                Capture::wants(path) && c.accepts(path, data.len() as u64),
                "{path}"
            );
            c.add(path, data.as_bytes().to_vec());
        }
        let f = c.finish();
        let license = |name: &str| license_of(&f, name);
        let expected = Some(DEP5_LICENSE.to_string());
        assert_eq!(license("tool"), expected);
        assert_eq!(license("multi:amd64"), expected);
        assert_eq!(license("libc6"), None, "not in the machine-readable format");
        assert_eq!(license("nodoc"), None);
        assert!(f.notes.is_empty(), "{:?}", f.notes);
    }

    /// The license of [`DEP5`].
    const DEP5_LICENSE: &str = "(GPL-2.0-or-later OR MIT) AND public-domain";

    /// The license the findings give the package `name` (which must be listed).
    fn license_of(f: &Findings, name: &str) -> Option<String> {
        f.packages
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .license
            .clone()
    }

    #[test]
    fn doc_directories_linked_to_another_package_share_its_license() {
        let mut c = Capture::default();
        c.add_link("usr/share/doc/cpp-12", "gcc-12-base");
        c.add_link("usr/share/doc/g++-12", "/usr/share/doc/gcc-12-base/");
        c.add_link("usr/share/doc/g++", "cpp-12");
        c.add_link("usr/share/doc/loop-a", "loop-b");
        c.add_link("usr/share/doc/loop-b", "loop-a");
        c.add_link("usr/share/doc/away", "../../../etc");
        c.add_link("usr/share/doc/sub/dir", "gcc-12-base");
        c.add(
            "usr/share/doc/gcc-12-base/copyright",
            DEP5.as_bytes().to_vec(),
        );
        let mut status = String::new();
        for p in ["cpp-12", "g++-12", "g++", "loop-a", "away", "dir"] {
            status.push_str(&format!(
                "Package: {p}\nStatus: install ok installed\nVersion: 1\n\n"
            ));
        }
        c.add("var/lib/dpkg/status", status.into_bytes());
        let f = c.finish();
        let license = |name: &str| license_of(&f, name);
        let expected = Some(DEP5_LICENSE.to_string());
        assert_eq!(license("cpp-12"), expected);
        assert_eq!(license("g++-12"), expected);
        assert_eq!(license("g++"), expected, "a link to a link");
        assert_eq!(license("loop-a"), None, "a cycle ends");
        assert_eq!(license("away"), None, "a link out of the doc directory");
        assert_eq!(license("dir"), None, "not a package's doc directory");
    }

    #[test]
    fn copyright_files_have_budgets_of_their_own() {
        let mut c = Capture::default();
        // Too large a file: skipped, the database still read.
        assert!(!c.accepts("usr/share/doc/big/copyright", MAX_COPYRIGHT_FILE_BYTES + 1));
        assert!(c.accepts("usr/share/doc/fits/copyright", MAX_COPYRIGHT_FILE_BYTES));
        // Copyright files up to their image budget...
        let each = MAX_COPYRIGHT_FILE_BYTES;
        let fit = MAX_COPYRIGHT_IMAGE_BYTES / each;
        for i in 0..fit {
            let path = format!("usr/share/doc/p{i}/copyright");
            assert!(c.accepts(&path, each), "{path}");
            c.add(&path, vec![b'x'; usize::try_from(each).expect("small")]);
        }
        // ... then none, thousands of them noted in one line.
        for i in 0..5000 {
            assert!(!c.accepts(&format!("usr/share/doc/q{i}/copyright"), 10));
        }
        // They took nothing from the databases' budget.
        assert!(c.accepts("var/lib/dpkg/status", MAX_FILE_BYTES));
        c.add("var/lib/dpkg/status", b"Package: p0\nVersion: 1\n".to_vec());
        let f = c.finish();
        assert_eq!(f.packages.len(), 1);
        assert_eq!(
            f.notes,
            [
                "/usr/share/doc/big/copyright not read: more than 256 KiB each",
                "/usr/share/doc/q0/copyright and 4999 more copyright files not read: the image's copyright files pass 16 MiB",
            ]
        );
    }

    #[test]
    fn status_d_files_are_counted_once() {
        let mut c = Capture::default();
        c.add(
            "var/lib/dpkg/status.d/a",
            b"Package: a\nVersion: 1\n".to_vec(),
        );
        c.add(
            "var/lib/dpkg/status.d/a",
            b"Package: a\nVersion: 2\n".to_vec(),
        );
        c.add("var/lib/dpkg/status", b"".to_vec());
        assert_eq!(c.status_d, 1);
    }

    #[test]
    fn etc_os_release_wins_and_purls_name_it() {
        let mut c = Capture::default();
        c.add("usr/lib/os-release", b"ID=other\n".to_vec());
        c.add("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n".to_vec());
        c.add(
            "var/lib/dpkg/status.d/tzdata",
            b"Package: tzdata\nVersion: 2024a\nArchitecture: all\n".to_vec(),
        );
        let f = c.finish();
        assert_eq!(f.os.as_ref().map(|o| o.id.as_str()), Some("debian"));
        assert_eq!(
            f.packages[0].purl.as_deref(),
            Some("pkg:deb/debian/tzdata@2024a?arch=all&distro=debian-12")
        );
        assert_eq!(Findings::from_bytes(&f.to_bytes()), Some(f));
    }

    #[test]
    fn oversized_files_are_noted_not_read() {
        let mut c = Capture::default();
        assert!(!c.accepts("var/lib/dpkg/status", MAX_FILE_BYTES + 1));
        assert!(c.accepts("var/lib/dpkg/status", 10));
        let f = c.finish();
        assert_eq!(f.notes.len(), 1, "{:?}", f.notes);
    }
}
