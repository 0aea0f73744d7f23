//! The rules for names and paths that end up in the root filesystem, checked once, at parse
//! time, so that every output format writes only what passed them.
//!
//! - A container name is one safe path component: it becomes the directory
//!   `containers/services/NAME` (or `containers/onboot/NNN-NAME`).
//! - A `files[].path` is a relative path inside the image, optionally written with one leading
//!   `/` (as LinuxKit strips one) and, for directories, one trailing `/`; it has no empty, `.`
//!   or `..` component.
//! - No two `files` entries have the same path, and no entry lies beneath an entry that is not
//!   a directory.

use crate::limits::{MAX_COMPONENT_BYTES, MAX_NAME_BYTES, MAX_PATH_BYTES};
use crate::schema::File;

/// A rule broken: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: String,
}

fn refuse(message: String, help: impl Into<String>) -> Refusal {
    Refusal {
        message,
        help: help.into(),
    }
}

/// Check a container name: one path component, no NUL or control character, at most
/// [`MAX_NAME_BYTES`] bytes. (Emptiness is reported as a missing key by validation.)
pub fn check_name(name: &str) -> Result<(), Refusal> {
    const HELP: &str = "a container name becomes a directory name under /containers: use letters, digits, `-`, `_` and `.`, such as `getty` or `dhcpcd-eth0`";
    if name == "." || name == ".." {
        return Err(refuse(
            format!("container name `{name}` is not a name but a directory reference"),
            HELP,
        ));
    }
    if name.contains('/') {
        return Err(refuse(
            format!("container name `{}` contains `/`", name.escape_debug()),
            HELP,
        ));
    }
    if name.contains('\0') {
        return Err(refuse(
            format!(
                "container name `{}` contains a NUL byte",
                name.escape_debug()
            ),
            HELP,
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(refuse(
            format!(
                "container name `{}` contains a control character",
                name.escape_debug()
            ),
            HELP,
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(
            format!(
                "container name is {} bytes long, more than the limit of {MAX_NAME_BYTES}",
                name.len()
            ),
            HELP,
        ));
    }
    Ok(())
}

/// Check a `files[].path` and return it as it is written into the image: relative, without
/// the optional leading and trailing `/`. `directory` says whether the entry is a directory
/// (only directories may end in `/`).
pub fn check_file_path(path: &str, directory: bool) -> Result<&str, Refusal> {
    const HELP: &str =
        "write the path inside the image without `.`, `..` or `//`, such as `etc/motd`";
    if path.contains('\0') {
        return Err(refuse(
            format!("file path `{}` contains a NUL byte", path.escape_debug()),
            "a path cannot contain NUL; remove it",
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(refuse(
            format!(
                "file path is {} bytes long, more than the limit of {MAX_PATH_BYTES}",
                path.len()
            ),
            "shorten the path",
        ));
    }
    let rel = path.strip_prefix('/').unwrap_or(path);
    let rel = match rel.strip_suffix('/') {
        Some(r) if directory => r,
        Some(_) => {
            return Err(refuse(
                format!("file path `{path}` ends in `/` but the entry is not a directory"),
                "remove the trailing `/`, or make the entry a directory with `directory: true`",
            ));
        }
        None => rel,
    };
    if rel.is_empty() || rel == "." {
        return Err(refuse(
            format!("file path `{path}` names the root of the image, not a file in it"),
            "give the path of the file in the image, such as `etc/motd`",
        ));
    }
    for component in rel.split('/') {
        match component {
            "" => {
                return Err(refuse(
                    format!("file path `{path}` contains an empty component (`//`)"),
                    HELP,
                ));
            }
            "." => {
                return Err(refuse(
                    format!("file path `{path}` contains a `.` component"),
                    HELP,
                ));
            }
            ".." => {
                return Err(refuse(
                    format!("file path `{path}` contains `..`"),
                    "paths are inside the image; remove `..`",
                ));
            }
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(refuse(
                    format!(
                        "file path `{path}` has a component of {} bytes, more than the limit of {MAX_COMPONENT_BYTES}",
                        c.len()
                    ),
                    "shorten the file name",
                ));
            }
            _ => {}
        }
    }
    Ok(rel)
}

/// Check a symlink target: no NUL, at most [`MAX_PATH_BYTES`] bytes. Targets may be absolute or
/// climb with `..`: they are resolved inside the running system, not when the image is written.
pub fn check_symlink_target(target: &str) -> Result<(), Refusal> {
    if target.contains('\0') {
        return Err(refuse(
            format!(
                "symlink target `{}` contains a NUL byte",
                target.escape_debug()
            ),
            "a path cannot contain NUL; remove it",
        ));
    }
    if target.len() > MAX_PATH_BYTES {
        return Err(refuse(
            format!(
                "symlink target is {} bytes long, more than the limit of {MAX_PATH_BYTES}",
                target.len()
            ),
            "shorten the target",
        ));
    }
    Ok(())
}

impl File {
    /// The path as it is written into the image: relative, without the optional leading and
    /// trailing `/`. Valid for manifests that passed validation.
    pub fn image_path(&self) -> &str {
        let rel = self.path.strip_prefix('/').unwrap_or(&self.path);
        if self.directory {
            rel.strip_suffix('/').unwrap_or(rel)
        } else {
            rel
        }
    }
}

/// How two `files` entries conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Entry `later` has the same path as entry `first`.
    Duplicate { first: usize, later: usize },
    /// Entry `child` lies beneath entry `parent`, which is not a directory.
    Beneath { parent: usize, child: usize },
}

/// Find the first conflict among `files` entries, given as (path as written into the image,
/// is a directory), in manifest order. Linear in the total number of path components.
pub(crate) fn find_conflict<'a>(
    entries: impl IntoIterator<Item = (&'a str, bool)>,
) -> Option<Conflict> {
    use std::collections::HashMap;
    // Every path an entry names, with the entry and whether it is a directory.
    let mut named: HashMap<&str, (usize, bool)> = HashMap::new();
    // Every directory an entry implies (its ancestors), with the first entry that implied it.
    let mut implied: HashMap<&str, usize> = HashMap::new();
    for (i, (path, dir)) in entries.into_iter().enumerate() {
        if let Some(&(first, _)) = named.get(path) {
            return Some(Conflict::Duplicate { first, later: i });
        }
        if !dir && let Some(&child) = implied.get(path) {
            return Some(Conflict::Beneath { parent: i, child });
        }
        for (cut, _) in path.match_indices('/') {
            let ancestor = &path[..cut];
            if let Some(&(parent, false)) = named.get(ancestor) {
                return Some(Conflict::Beneath { parent, child: i });
            }
            implied.entry(ancestor).or_insert(i);
        }
        named.insert(path, (i, dir));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["getty", "dhcpcd-eth0", "a.b", "x_1", "...", "-rf"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [".", "..", "../../etc", "a/b", "/", "a\0b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"n".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name(&"n".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn file_paths() {
        assert_eq!(check_file_path("/etc/motd", false), Ok("etc/motd"));
        assert_eq!(check_file_path("etc/motd", false), Ok("etc/motd"));
        assert_eq!(
            check_file_path("var/lib/docker/", true),
            Ok("var/lib/docker")
        );
        assert_eq!(check_file_path("a..b/.x", false), Ok("a..b/.x"));
        for (bad, dir) in [
            ("", false),
            ("/", true),
            (".", false),
            ("./", true),
            ("//etc/x", false),
            ("etc//x", false),
            ("etc/./x", false),
            ("./etc", false),
            ("../etc/passwd", false),
            ("etc/../../x", false),
            ("etc/x/", false),
            ("etc/x//", true),
            ("etc/\0x", false),
        ] {
            assert!(check_file_path(bad, dir).is_err(), "{bad:?}");
        }
        let long = format!("{}/x", "a".repeat(MAX_COMPONENT_BYTES + 1));
        assert!(check_file_path(&long, false).is_err());
    }

    #[test]
    fn conflicts() {
        assert_eq!(find_conflict([("etc/x", false), ("etc/y", false)]), None);
        assert_eq!(
            find_conflict([("etc", true), ("etc/x", false), ("etc/y/z", true)]),
            None
        );
        assert_eq!(
            find_conflict([("etc/x", false), ("etc/y", false), ("etc/x", false)]),
            Some(Conflict::Duplicate { first: 0, later: 2 })
        );
        assert_eq!(
            find_conflict([("etc/x", false), ("etc/x/y", false)]),
            Some(Conflict::Beneath {
                parent: 0,
                child: 1
            })
        );
        assert_eq!(
            find_conflict([("etc/x/y/z", false), ("etc/x", false)]),
            Some(Conflict::Beneath {
                parent: 1,
                child: 0
            })
        );
        // A directory may come after the files inside it.
        assert_eq!(find_conflict([("etc/x/y", false), ("etc/x", true)]), None);
    }
}
