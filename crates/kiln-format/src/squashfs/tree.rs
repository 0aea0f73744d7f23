//! The in-memory directory tree the read-only image writers (squashfs, erofs) build from the
//! entry stream: metadata only, file data lives in the image or a spill file, referred to by a
//! writer-specific handle `D`.
//!
//! Semantics follow what extracting the stream as a tar archive gives: a later entry for a path
//! replaces the earlier one (a directory over a directory only updates its metadata and keeps its
//! children), missing parent directories are created (mode 0755, the sink's time), and a hard
//! link shares the inode its target has at the time the link arrives.

use kiln_fs::{Entry, Kind};
use std::collections::BTreeMap;
use std::io;

/// The longest file name both formats store (erofs: 255 bytes; squashfs allows 256).
pub(crate) const NAME_MAX: usize = 255;

/// The metadata every inode carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Permission bits (with setuid, setgid, sticky).
    pub(crate) perm: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

/// What a node is.
#[derive(Debug)]
pub(crate) enum NodeKind<D> {
    /// A directory: names (sorted bytewise) to node indices.
    Dir(BTreeMap<String, usize>),
    /// A regular file whose data the writer refers to by `D`.
    File(D),
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One inode.
#[derive(Debug)]
pub(crate) struct Node<D> {
    pub(crate) meta: Meta,
    pub(crate) kind: NodeKind<D>,
}

/// The tree; node 0 is the root directory.
#[derive(Debug)]
pub(crate) struct Tree<D> {
    pub(crate) nodes: Vec<Node<D>>,
    default_mtime: u64,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The components of `path`, rejecting `..` and over-long names.
fn components(path: &str) -> io::Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(invalid(format!(
                    "{path}: `..` in an entry path; paths must stay inside the root"
                )));
            }
            c if c.len() > NAME_MAX => {
                return Err(invalid(format!(
                    "{path}: a name of {} bytes; the image formats store {NAME_MAX} at most",
                    c.len()
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

impl<D> Tree<D> {
    /// An empty tree whose root (and implicitly created directories) are root-owned, mode 0755,
    /// at `mtime`.
    pub(crate) fn new(mtime: u64) -> Self {
        Tree {
            nodes: vec![Node {
                meta: Meta {
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime,
                    xattrs: Vec::new(),
                },
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
            default_mtime: mtime,
        }
    }

    /// The node `path` names, if any.
    fn lookup(&self, parts: &[&str]) -> Option<usize> {
        let mut cur = 0;
        for p in parts {
            match &self.nodes[cur].kind {
                NodeKind::Dir(children) => cur = *children.get(*p)?,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// The directory that holds `parts`' last component, created if missing.
    fn parent_of(&mut self, path: &str, parts: &[&str]) -> io::Result<usize> {
        let mut cur = 0;
        for p in &parts[..parts.len().saturating_sub(1)] {
            let next = match &self.nodes[cur].kind {
                NodeKind::Dir(children) => children.get(*p).copied(),
                _ => {
                    return Err(invalid(format!(
                        "{path}: a parent is not a directory; the stream must create directories \
                         before their children"
                    )));
                }
            };
            cur = match next {
                Some(n) => n,
                None => {
                    let n = self.push(Node {
                        meta: Meta {
                            perm: 0o755,
                            uid: 0,
                            gid: 0,
                            mtime: self.default_mtime,
                            xattrs: Vec::new(),
                        },
                        kind: NodeKind::Dir(BTreeMap::new()),
                    });
                    self.bind(cur, p, n);
                    n
                }
            };
        }
        if !matches!(self.nodes[cur].kind, NodeKind::Dir(_)) {
            return Err(invalid(format!(
                "{path}: the parent is not a directory; the stream must create directories \
                 before their children"
            )));
        }
        Ok(cur)
    }

    fn push(&mut self, node: Node<D>) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn bind(&mut self, dir: usize, name: &str, node: usize) {
        if let NodeKind::Dir(children) = &mut self.nodes[dir].kind {
            children.insert(name.to_string(), node);
        }
    }

    /// Add `e`; `file` makes the data handle of a regular file (called only for
    /// [`Kind::File`], after the path was checked).
    pub(crate) fn add(
        &mut self,
        e: &Entry,
        file: impl FnOnce() -> io::Result<D>,
    ) -> io::Result<()> {
        let parts = components(&e.path)?;
        let meta = Meta {
            perm: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            xattrs: e.xattrs.clone(),
        };
        if parts.is_empty() {
            return match e.kind {
                Kind::Dir => {
                    self.nodes[0].meta = meta;
                    Ok(())
                }
                _ => Err(invalid(format!(
                    "{:?}: the root must be a directory, not {:?}",
                    e.path, e.kind
                ))),
            };
        }
        let parent = self.parent_of(&e.path, &parts)?;
        let name = parts[parts.len() - 1];
        let existing = self.lookup(&parts);
        let kind = match &e.kind {
            Kind::Dir => {
                if let Some(n) = existing
                    && matches!(self.nodes[n].kind, NodeKind::Dir(_))
                {
                    self.nodes[n].meta = meta;
                    return Ok(());
                }
                NodeKind::Dir(BTreeMap::new())
            }
            Kind::Hardlink(target) => {
                let tparts = components(target)?;
                let t = self.lookup(&tparts).ok_or_else(|| {
                    invalid(format!(
                        "{}: a hard link to {target}, which is not in the stream before it",
                        e.path
                    ))
                })?;
                if matches!(self.nodes[t].kind, NodeKind::Dir(_)) {
                    return Err(invalid(format!(
                        "{}: a hard link to the directory {target}; directories cannot be \
                         hard-linked",
                        e.path
                    )));
                }
                self.bind(parent, name, t);
                return Ok(());
            }
            Kind::File => NodeKind::File(file()?),
            Kind::Symlink(t) => {
                if t.is_empty() || t.len() > 4095 {
                    return Err(invalid(format!(
                        "{}: a symlink target of {} bytes; it must have 1 to 4095",
                        e.path,
                        t.len()
                    )));
                }
                NodeKind::Symlink(t.clone())
            }
            Kind::Char { major, minor } => NodeKind::Char(*major, *minor),
            Kind::Block { major, minor } => NodeKind::Block(*major, *minor),
            Kind::Fifo => NodeKind::Fifo,
        };
        let n = self.push(Node { meta, kind });
        self.bind(parent, name, n);
        Ok(())
    }

    /// The reachable nodes in depth-first order (a directory before its children, children in
    /// name order), each once: the order inode numbers are given in.
    pub(crate) fn order(&self) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        let mut out = Vec::new();
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(n) = stack.pop() {
            out.push(n);
            if let NodeKind::Dir(children) = &self.nodes[n].kind {
                for &c in children.values().rev() {
                    if !seen[c] {
                        seen[c] = true;
                        stack.push(c);
                    }
                }
            }
        }
        out
    }

    /// The link count of every node: directory entries naming it, plus `.` and the `..` of
    /// each subdirectory for directories.
    pub(crate) fn nlinks(&self, order: &[usize]) -> Vec<u32> {
        let mut links = vec![0u32; self.nodes.len()];
        links[0] = 2;
        for &n in order {
            if let NodeKind::Dir(children) = &self.nodes[n].kind {
                for &c in children.values() {
                    if matches!(self.nodes[c].kind, NodeKind::Dir(_)) {
                        links[c] = links[c].saturating_add(2);
                        links[n] = links[n].saturating_add(1);
                    } else {
                        links[c] = links[c].saturating_add(1);
                    }
                }
            }
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_entry_wins_and_dirs_keep_children() {
        let mut t: Tree<u32> = Tree::new(5);
        t.add(&Entry::dir("a", 0o700, 1), || Ok(0)).expect("dir");
        t.add(&Entry::file("a/f", 0o644, 0, 1), || Ok(1))
            .expect("file");
        t.add(&Entry::file("a/f", 0o600, 0, 1), || Ok(2))
            .expect("file again");
        t.add(&Entry::dir("a", 0o755, 2), || Ok(0))
            .expect("dir again");
        t.add(&Entry::file("x/y/z", 0o644, 0, 1), || Ok(3))
            .expect("implicit parents");
        let a = t.lookup(&["a"]).expect("a");
        assert_eq!(t.nodes[a].meta.perm, 0o755);
        let f = t.lookup(&["a", "f"]).expect("a/f");
        assert!(matches!(t.nodes[f].kind, NodeKind::File(2)));
        let order = t.order();
        assert_eq!(order.len(), 6, "root a a/f x x/y x/y/z");
        let links = t.nlinks(&order);
        assert_eq!(links[0], 4);
        assert!(t.add(&Entry::file("../e", 0o644, 0, 1), || Ok(4)).is_err());
        assert!(t.add(&Entry::file("a/f/g", 0o644, 0, 1), || Ok(4)).is_err());
    }
}
