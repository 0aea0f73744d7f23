//! The build context: a directory, filtered by `.dockerignore`, and the expansion of COPY/ADD
//! source patterns against it (or against another stage's root filesystem).
//!
//! `.dockerignore` follows Docker's rules: one pattern per line, `#` comments, `**` for any
//! number of directories, `!` to re-include, the last matching pattern wins, and a pattern that
//! matches a directory excludes everything beneath it.

use globset::{Glob, GlobBuilder, GlobMatcher};
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Compiled `.dockerignore` patterns.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
    /// The `!` patterns as written (cleaned), to know which excluded directories to enter.
    exceptions: Vec<String>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| format!("bad pattern {pattern:?}: {e}"))
}

impl Ignore {
    /// Parse `.dockerignore` text. Errors name the line.
    pub fn parse(text: &str) -> Result<Ignore, String> {
        Ignore::parse_named(text, ".dockerignore")
    }

    /// Parse the text of the ignore file `name` (`.dockerignore`, `Dockerfile.dockerignore`).
    /// Errors name the file and line.
    pub fn parse_named(text: &str, name: &str) -> Result<Ignore, String> {
        let mut rules = Vec::new();
        let mut exceptions = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                continue;
            }
            let m = glob(&cleaned).map_err(|e| format!("{name}:{}: {e}", n + 1))?;
            rules.push((m, include));
            if include {
                exceptions.push(cleaned);
            }
        }
        Ok(Ignore { rules, exceptions })
    }

    /// Whether the context-relative path `rel` is excluded.
    pub fn excludes(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (m, include) in &self.rules {
            // A pattern matches the path itself or any of its parent directories.
            let mut hit = m.is_match(rel);
            let mut p = rel;
            while !hit && let Some((parent, _)) = p.rsplit_once('/') {
                hit = m.is_match(parent);
                p = parent;
            }
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

impl Ignore {
    /// Whether the directory `rel` and everything beneath it is excluded: it is excluded and no
    /// `!` pattern can re-include something inside it.
    pub fn prunes(&self, rel: &str) -> bool {
        let prefix = format!("{rel}/");
        self.excludes(rel)
            && !self.exceptions.iter().any(|e| {
                e.starts_with(&prefix)
                    || e.split('/')
                        .next()
                        .is_some_and(|first| first.contains(['*', '?', '[']))
            })
    }

    /// Whether the path `rel` (a directory when `dir`) is left out of the context.
    pub fn skips(&self, rel: &str, dir: bool) -> bool {
        if dir {
            self.prunes(rel)
        } else {
            self.excludes(rel)
        }
    }
}

/// Clean a path lexically: no leading `/`, no `.` components, `..` resolved (never above the
/// start).
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A build context directory.
#[derive(Debug, Clone)]
pub struct Context {
    /// The directory.
    pub root: PathBuf,
    /// Its `.dockerignore`.
    pub ignore: Ignore,
}

impl Context {
    /// Open the context at `root` for the Dockerfile `dockerfile`, with BuildKit's choice of
    /// ignore file: `<Dockerfile name>.dockerignore` beside the Dockerfile when it exists, else
    /// the context's `.dockerignore`. (A lowercase `dockerfile` found as the fallback for
    /// `Dockerfile` also takes `Dockerfile.dockerignore`, as BuildKit looks for that name.)
    pub fn open(root: &Path, dockerfile: &Path) -> Result<Context, String> {
        let path = ignore_file(root, dockerfile);
        let ignore = match fs::read_to_string(&path) {
            Ok(text) => {
                let name = path
                    .file_name()
                    .map_or_else(|| ".dockerignore".into(), |n| n.to_string_lossy());
                Ignore::parse_named(&text, &name)?
            }
            Err(_) => Ignore::default(),
        };
        Ok(Context {
            root: root.to_path_buf(),
            ignore,
        })
    }
}

/// The ignore file that applies to a build of `dockerfile` with the context `root` (it may not
/// exist): `<name>.dockerignore` beside the Dockerfile wins over `root/.dockerignore`.
pub fn ignore_file(root: &Path, dockerfile: &Path) -> PathBuf {
    if let Some(name) = dockerfile.file_name() {
        let mut names = vec![format!("{}.dockerignore", name.to_string_lossy())];
        if name == "dockerfile" {
            names.insert(0, "Dockerfile.dockerignore".into());
        }
        for n in names {
            let p = dockerfile.with_file_name(n);
            if p.is_file() {
                return p;
            }
        }
    }
    root.join(".dockerignore")
}

fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths (relative to `root`) that the source `pattern` names, sorted. `ignore` hides
/// excluded paths. Symlinks in the pattern's directories are followed, never out of `root`.
///
/// As in BuildKit, a path without wildcards must exist, while a wildcard may match nothing (the
/// source then copies nothing); the directories before the first wildcard must exist.
pub fn expand_sources(
    root: &Path,
    pattern: &str,
    ignore: Option<&Ignore>,
) -> Result<Vec<String>, String> {
    let cleaned = clean(pattern);
    let excluded = |rel: &str| ignore.is_some_and(|i| !rel.is_empty() && i.excludes(rel));
    if !has_wildcards(&cleaned) {
        let path = crate::fsops::resolve_in_root(root, &cleaned, true);
        if fs::symlink_metadata(&path).is_err() || excluded(&cleaned) {
            return Err(format!("{pattern:?} not found in the build context"));
        }
        return Ok(vec![cleaned]);
    }
    // The directories before the first wildcard, and the pattern below them.
    let parts: Vec<&str> = cleaned.split('/').collect();
    let first = parts.iter().position(|p| has_wildcards(p)).unwrap_or(0);
    let prefix = parts[..first].join("/");
    let rest = parts[first..].join("/");
    let base = crate::fsops::resolve_in_root(root, &prefix, true);
    if fs::metadata(&base).is_err() {
        return Err(format!(
            "{pattern:?}: the directory {prefix:?} is not in the build context"
        ));
    }
    let matcher = glob(&rest)?;
    let depth = parts.len() - first;
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(&base)
        .min_depth(1)
        .max_depth(depth)
        .sort_by_file_name();
    for entry in walk.into_iter().filter_map(Result::ok) {
        let Ok(rel) = entry.path().strip_prefix(&base) else {
            continue;
        };
        let rel = rel.to_string_lossy().to_string();
        if rel.split('/').count() != depth || !matcher.is_match(&rel) {
            continue;
        }
        let full = if prefix.is_empty() {
            rel
        } else {
            format!("{prefix}/{rel}")
        };
        if !excluded(&full) {
            found.push(full);
        }
    }
    Ok(found)
}

/// A digest of the files under `path` (names, types, modes, owners, sizes, contents, link
/// targets; not modification times), skipping what `skip` says: the cache key of a COPY source.
pub fn hash_tree(path: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<String> {
    hash_tree_with(path, skip, true)
}

/// As [`hash_tree`] without owners: what a package's files give its image when the build
/// context is copied (owned by root), so that the tag does not depend on which user checked
/// the files out or built them.
pub fn hash_files(path: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<String> {
    hash_tree_with(path, skip, false)
}

fn hash_tree_with(
    path: &Path,
    skip: &dyn Fn(&Path) -> bool,
    owners: bool,
) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let walk = walkdir::WalkDir::new(path)
        .sort_by_file_name()
        .follow_links(false);
    let mut it = walk.into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.map_err(std::io::Error::other)?;
        if entry.depth() > 0 && skip(entry.path()) {
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let meta = entry.path().symlink_metadata()?;
        let rel = entry.path().strip_prefix(path).unwrap_or(entry.path());
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        if owners {
            h.update(format!("{:o} {} {}\0", meta.mode(), meta.uid(), meta.gid()));
        } else {
            h.update(format!("{:o}\0", meta.mode()));
        }
        if meta.file_type().is_symlink() {
            h.update(fs::read_link(entry.path())?.to_string_lossy().as_bytes());
        } else if meta.is_file() {
            h.update(meta.len().to_le_bytes());
            let mut f = fs::File::open(entry.path())?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update([0xff]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# comment\n*.log\nbuild/\n!build/keep.txt\n**/*.tmp\n/secret\n")
            .expect("parse");
        assert!(i.excludes("a.log"));
        assert!(!i.excludes("dir/a.log"));
        assert!(i.excludes("build/out.o"));
        assert!(!i.excludes("build/keep.txt"));
        assert!(!i.prunes("build"), "an exception lies beneath");
        assert!(i.prunes("secret"));
        assert!(i.excludes("x/y/z.tmp"));
        assert!(i.excludes("secret"));
        assert!(i.excludes("secret/inner"));
        assert!(!i.excludes("src/main.c"));
    }

    #[test]
    fn ignore_file_beside_the_dockerfile_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = dir.path();
        fs::create_dir(ctx.join("sub")).expect("mkdir");
        fs::write(ctx.join(".dockerignore"), "a\n").expect("write");
        let df = ctx.join("Dockerfile");
        assert_eq!(ignore_file(ctx, &df), ctx.join(".dockerignore"));
        let c = Context::open(ctx, &df).expect("open");
        assert!(c.ignore.excludes("a") && !c.ignore.excludes("b"));
        fs::write(ctx.join("Dockerfile.dockerignore"), "b\n").expect("write");
        let c = Context::open(ctx, &df).expect("open");
        assert!(!c.ignore.excludes("a") && c.ignore.excludes("b"));
        // Beside a Dockerfile elsewhere, named after it.
        let other = ctx.join("sub/Other");
        assert_eq!(ignore_file(ctx, &other), ctx.join(".dockerignore"));
        fs::write(ctx.join("sub/Other.dockerignore"), "[\n").expect("write");
        let e = Context::open(ctx, &other).expect_err("bad pattern");
        assert!(e.starts_with("Other.dockerignore:1: "), "{e}");
        // The lowercase fallback takes Dockerfile.dockerignore, as BuildKit.
        assert_eq!(
            ignore_file(ctx, &ctx.join("dockerfile")),
            ctx.join("Dockerfile.dockerignore")
        );
    }

    #[test]
    fn sources_expand_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["b.txt", "a.txt", "c.md", "sub/d.txt"] {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, f).expect("write");
        }
        let ignore = Ignore::parse("b.txt").expect("parse");
        assert_eq!(
            expand_sources(dir.path(), "*.txt", Some(&ignore)).expect("glob"),
            vec!["a.txt"]
        );
        assert_eq!(
            expand_sources(dir.path(), "./sub/../*.md", None).expect("glob"),
            vec!["c.md"]
        );
        assert!(expand_sources(dir.path(), "b.txt", Some(&ignore)).is_err());
        assert!(expand_sources(dir.path(), "none.txt", None).is_err());
        // A wildcard may match nothing, but the directory before it must exist.
        assert_eq!(
            expand_sources(dir.path(), "*.none", None).expect("empty"),
            Vec::<String>::new()
        );
        assert_eq!(
            expand_sources(dir.path(), "b.*", Some(&ignore)).expect("ignored"),
            Vec::<String>::new()
        );
        assert!(expand_sources(dir.path(), "nodir/*.txt", None).is_err());
        // Directories before the wildcard are followed through symlinks.
        std::os::unix::fs::symlink("sub", dir.path().join("link")).expect("link");
        assert_eq!(
            expand_sources(dir.path(), "link/*.txt", None).expect("through link"),
            vec!["link/d.txt"]
        );
    }
}
