//! Capturing the package databases of one image while its entries stream by.

use crate::parse::{self, OsRelease, Package};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest database or os-release file captured; a larger one is noted and skipped.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// The most bytes captured from one image, all files together.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// The most `status.d/` files captured from one image.
const MAX_STATUS_D: usize = 10_000;

const DPKG_STATUS: &str = "var/lib/dpkg/status";
const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d/";
const APK_INSTALLED: &str = "lib/apk/db/installed";
const ETC_OS_RELEASE: &str = "etc/os-release";
const USR_OS_RELEASE: &str = "usr/lib/os-release";

/// The files of one image's file system that say what it holds, gathered from its flattened
/// entries (so whiteouts are already applied): paths are relative to the image's root.
#[derive(Debug, Default)]
pub struct Capture {
    files: BTreeMap<String, Vec<u8>>,
    bytes: u64,
    notes: Vec<String>,
}

impl Capture {
    /// Whether the regular file at `path` (relative to the image's root, no leading `/`) is
    /// one the capture wants.
    pub fn wants(path: &str) -> bool {
        match path {
            DPKG_STATUS | APK_INSTALLED | ETC_OS_RELEASE | USR_OS_RELEASE => true,
            _ => path.strip_prefix(DPKG_STATUS_D).is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums")
            }),
        }
    }

    /// Whether a file of `size` bytes at `path` would be kept: the capture notes why not when
    /// it is too large, and the caller then need not read it.
    pub fn accepts(&mut self, path: &str, size: u64) -> bool {
        let status_d = self
            .files
            .keys()
            .filter(|k| k.starts_with(DPKG_STATUS_D))
            .count();
        let why = if size > MAX_FILE_BYTES {
            Some(format!("more than {} MiB", MAX_FILE_BYTES >> 20))
        } else if self.bytes.saturating_add(size) > MAX_IMAGE_BYTES {
            Some(format!(
                "the image's package files pass {} MiB",
                MAX_IMAGE_BYTES >> 20
            ))
        } else if path.starts_with(DPKG_STATUS_D) && status_d >= MAX_STATUS_D {
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

    /// Keep the content of the file at `path` (one [`Capture::accepts`] accepted).
    pub fn add(&mut self, path: &str, data: Vec<u8>) {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        if let Some(old) = self.files.insert(path.to_string(), data) {
            self.bytes = self.bytes.saturating_sub(old.len() as u64);
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
        }
        packages.sort();
        packages.dedup();
        Findings {
            os,
            packages,
            notes: self.notes,
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
    pub const VERSION: u32 = 1;

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
