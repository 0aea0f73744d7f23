//! A package's tag. By default it is LinuxKit's: the git tree hash of the package directory at
//! a commit (`git rev-parse HEAD:DIR`), mixed with the tree hashes of its extra sources, with
//! `-dirty-` and seven hex digits of a hash of its files appended while the directory differs
//! from that commit; then put through the tag template (`{{.Hash}}` by default). The same
//! directory therefore gets the same tag from kiln and from `linuxkit pkg show-tag`. Outside a
//! git work tree (where LinuxKit would say `latest` for every package), and when asked, the tag
//! is kiln's own content hash of the files instead.

use crate::error::{BuildError, io_err};
use sha1::Digest as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where a package's hash comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashSource {
    /// LinuxKit's: the git tree hash (kiln's content hash outside a git work tree).
    #[default]
    Git,
    /// kiln's: a hash of the files' names, modes and contents (and of the packages named in
    /// `@lkt:pkg:` build arguments), whether or not the directory is in git.
    Content,
}

/// How package tags are computed: LinuxKit's `pkg` flags.
#[derive(Debug, Clone)]
pub struct TagOptions {
    /// Where the hash comes from.
    pub source: HashSource,
    /// A fixed hash instead of the computed one (`--hash`), whatever the source.
    pub hash: Option<String>,
    /// The commit whose tree is hashed (`--hash-commit`, `HEAD` by default). Only `HEAD` can
    /// be dirty.
    pub commit: String,
    /// A parent directory of the package to hash instead of the package itself
    /// (`--hash-path`).
    pub hash_path: Option<PathBuf>,
    /// Treat every package as having uncommitted changes (`--force-dirty`).
    pub force_dirty: bool,
    /// The tag template, overriding build.yml's `tag` (`--tag`).
    pub template: Option<String>,
}

impl Default for TagOptions {
    fn default() -> Self {
        TagOptions {
            source: HashSource::Git,
            hash: None,
            commit: "HEAD".into(),
            hash_path: None,
            force_dirty: false,
            template: None,
        }
    }
}

/// Render a tag template: `{{.Hash}}` (spaces inside the braces allowed, as in Go's
/// templates) stands for the hash; any other `{{...}}` action is an error. An empty result is
/// `latest`, as in LinuxKit.
pub fn render_template(template: &str, hash: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("tag template {template:?}: `{{{{` without `}}}}`"))?;
        let action = after[..end].trim_matches(|c: char| c == ' ' || c == '-');
        if action != ".Hash" {
            return Err(format!(
                "tag template {template:?}: unknown field {{{{{}}}}}; only {{{{.Hash}}}} is known",
                &after[..end]
            ));
        }
        out.push_str(hash);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if out.is_empty() {
        out.push_str("latest");
    }
    Ok(out)
}

/// LinuxKit's hash of the package in `dir` with `extra` source directories (`--hash` aside:
/// the caller applies it), or `None` when `dir` is not in a git work tree (or git is not
/// installed). An extra source git does not track is hashed by `untracked`.
pub fn git_hash(
    dir: &Path,
    extra: &[PathBuf],
    opts: &TagOptions,
    untracked: &dyn Fn(&Path) -> Result<String, BuildError>,
) -> Result<Option<String>, BuildError> {
    let pkg = absolute(dir)?;
    let Some(git) = Git::at(&pkg)? else {
        return Ok(None);
    };
    let hash_path = match &opts.hash_path {
        None => pkg.clone(),
        Some(p) => {
            let p = absolute(p)?;
            if !pkg.starts_with(&p) {
                return Err(git.error(format!(
                    "--hash-path {}: not a parent of the package directory",
                    p.display()
                )));
            }
            p
        }
    };
    let mut sources = String::new();
    for src in extra {
        let src = absolute(src)?;
        // A file is looked up from its directory.
        let dir = if src.is_file() {
            src.parent().unwrap_or(&src).to_path_buf()
        } else {
            src.clone()
        };
        let tracked = Git::at(&dir)?.and_then(|g| g.tree_hash(&src, &opts.commit).ok());
        match tracked {
            Some(h) => sources.push_str(&h),
            // Outside git, or not committed (a build output, say): LinuxKit refuses such a
            // source; kiln mixes in the hash of its content instead.
            None => sources.push_str(&untracked(&src)?),
        }
    }
    let dirty = opts.force_dirty || git.is_dirty(&hash_path, &opts.commit)?;
    let mut hash = git.tree_hash(&hash_path, &opts.commit)?;
    if !sources.is_empty() {
        hash.push_str(&sources);
        hash = hex::encode(sha1::Sha1::digest(hash.as_bytes()));
    }
    if dirty {
        let content = git.content_hash()?;
        hash.push_str("-dirty-");
        hash.push_str(&content[..7]);
    }
    Ok(Some(hash))
}

/// `git -C dir`, with messages in English whatever the locale (kiln reads them).
/// The time (seconds since the epoch) of the last commit that changed the package in `dir`, or
/// `None` when it is not in a git work tree. The default SOURCE_DATE_EPOCH of a package whose
/// files are committed: its image is then the same wherever and whenever it is built.
pub fn commit_time(dir: &Path) -> Result<Option<u64>, BuildError> {
    let pkg = absolute(dir)?;
    let Some(git) = Git::at(&pkg)? else {
        return Ok(None);
    };
    let path_arg = pkg.to_string_lossy();
    let out = git.stdout(&["log", "-1", "--format=%ct", "HEAD", "--", &path_arg])?;
    let out = out.trim();
    if out.is_empty() {
        return Ok(None);
    }
    out.parse()
        .map(Some)
        .map_err(|_| git.error(format!("unexpected git log output {out:?}")))
}

pub(crate) fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE");
    cmd
}

/// Whether git's error output says the directory is in no repository (rather than that git
/// refused to look at one, or failed).
pub(crate) fn not_a_repository(stderr: &str) -> bool {
    stderr.contains("not a git repository")
}

fn absolute(p: &Path) -> Result<PathBuf, BuildError> {
    std::path::absolute(p).map_err(io_err(p))
}

/// The git command, run in one directory.
struct Git {
    dir: PathBuf,
}

impl Git {
    /// `dir`'s work tree, if it is in one; `None` outside a work tree or without git. Git
    /// refusing to look (a repository another user owns that is not a `safe.directory`) is an
    /// error: hashing the files instead would give the package another tag for another user.
    fn at(dir: &Path) -> Result<Option<Git>, BuildError> {
        let git = Git {
            dir: dir.to_path_buf(),
        };
        let out = match git.run(&["rev-parse", "--is-inside-work-tree"]) {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(git.error(format!("running git: {e}"))),
        };
        if out.status.success() {
            return Ok((String::from_utf8_lossy(&out.stdout).trim() == "true").then_some(git));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if not_a_repository(&stderr) {
            return Ok(None);
        }
        Err(git.error(format!(
            "git cannot tell the package's tag: {}",
            stderr.split_whitespace().collect::<Vec<_>>().join(" ")
        )))
    }

    fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        git_command(&self.dir).args(args).output()
    }

    /// Standard output of a git command that must succeed.
    fn stdout(&self, args: &[&str]) -> Result<String, BuildError> {
        let out = self
            .run(args)
            .map_err(|e| self.error(format!("running git: {e}")))?;
        if !out.status.success() {
            return Err(self.error(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn error(&self, message: String) -> BuildError {
        BuildError::Package {
            file: self.dir.join("build.yml"),
            message,
        }
    }

    /// The tree hash of `path` at `commit`: the commit's root tree when `path` is the top of
    /// the work tree, else its entry in `git ls-tree`.
    fn tree_hash(&self, path: &Path, commit: &str) -> Result<String, BuildError> {
        let top = self.stdout(&["rev-parse", "--show-toplevel"])?;
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(Path::new(top.trim()), path) {
            return Ok(self
                .stdout(&["show", "--format=%T", "-s", commit])?
                .trim()
                .to_string());
        }
        let path_arg = path.to_string_lossy();
        let out = self.stdout(&["ls-tree", "--full-tree", commit, "--", &path_arg])?;
        if out.is_empty() {
            return Err(self.error(format!(
                "{} is not in git at {commit}: commit it, or give --hash",
                path.display()
            )));
        }
        // MODE TYPE HASH<TAB>PATH, one line.
        let hash = out
            .lines()
            .next()
            .and_then(|l| l.split('\t').next())
            .and_then(|meta| meta.split(' ').nth(2))
            .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error(format!("unexpected git ls-tree output {out:?}")))?;
        Ok(hash.to_string())
    }

    /// Whether `path` differs from `commit` (only `HEAD` can): changed or staged files, or
    /// untracked files git does not ignore.
    fn is_dirty(&self, path: &Path, commit: &str) -> Result<bool, BuildError> {
        if commit != "HEAD" {
            return Ok(false);
        }
        let path_arg = path.to_string_lossy();
        let diff = self
            .run(&[
                "diff",
                "--no-ext-diff",
                "--exit-code",
                "--quiet",
                commit,
                "--",
                &path_arg,
            ])
            .map_err(|e| self.error(format!("running git: {e}")))?;
        match diff.status.code() {
            Some(0) => {}
            Some(1) => return Ok(true),
            _ => {
                return Err(self.error(format!(
                    "git diff failed: {}",
                    String::from_utf8_lossy(&diff.stderr).trim()
                )));
            }
        }
        let untracked = self
            .run(&[
                "ls-files",
                "--exclude-standard",
                "--others",
                "--error-unmatch",
                "--",
                &path_arg,
            ])
            .map_err(|e| self.error(format!("running git: {e}")))?;
        Ok(untracked.status.success())
    }

    /// LinuxKit's hash of a dirty package: SHA-256 over the contents of its tracked and
    /// untracked (not ignored) regular files, in git's listing order.
    fn content_hash(&self) -> Result<String, BuildError> {
        let tracked = self.stdout(&["ls-files"])?;
        let untracked = self.stdout(&["ls-files", "--exclude-standard", "--others"])?;
        let mut hasher = sha2::Sha256::new();
        for name in tracked.lines().chain(untracked.lines()) {
            if name.is_empty() {
                continue;
            }
            let file = self.dir.join(name);
            // Deleted, unreadable, directory or symbolic link: not hashed, as in LinuxKit.
            match std::fs::symlink_metadata(&file) {
                Ok(m) if m.is_file() => {}
                _ => continue,
            }
            let Ok(mut f) = std::fs::File::open(&file) else {
                continue;
            };
            std::io::copy(&mut f, &mut hasher).map_err(io_err(&file))?;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(render_template("{{.Hash}}", "abc").expect("renders"), "abc");
        assert_eq!(
            render_template("v1-{{ .Hash }}-x", "abc").expect("renders"),
            "v1-abc-x"
        );
        assert_eq!(render_template("fixed", "abc").expect("renders"), "fixed");
        assert_eq!(render_template("", "abc").expect("renders"), "latest");
        assert_eq!(render_template("{{.Hash}}", "").expect("renders"), "latest");
        assert!(render_template("{{.Other}}", "abc").is_err());
        assert!(render_template("{{.Hash", "abc").is_err());
    }
}
