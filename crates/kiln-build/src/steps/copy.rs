//! COPY and ADD: sources from the build context, an earlier stage or an image (COPY --from),
//! heredocs, URLs and local archives (ADD), copied into the stage with their owners and modes
//! (`--chown`, `--chmod`), keyed in the step cache by the content of the sources.

use crate::context::{clean, expand_sources, hash_tree};
use crate::dockerfile::{Add, Checksum, Copy, Files, Instruction, Source, is_url};
use crate::engine::Engine;
use crate::error::{BuildError, io_err};
use crate::fsops::{self, Attrs};
use crate::overlay::Overlay;
use crate::plan::{CopyFrom, copy_from};
use crate::shell_lex::{expand, expand_heredoc};
use crate::state::State;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where COPY/ADD sources come from.
enum Origin {
    Context,
    Stage(usize),
    Image(String),
}

/// COPY, or ADD (URLs and archives) with the checksum of its URL.
enum Op {
    Copy,
    Add(Option<Checksum>),
}

/// COPY: from the context, or from the stage or image `--from` names.
pub(super) fn copy(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    copy: &Copy,
) -> Result<(), BuildError> {
    let origin = match &copy.from {
        None => Origin::Context,
        Some(from) => {
            match copy_from(&e.plan.stages, from, st.stage).map_err(|m| e.err(ins.line, m))? {
                CopyFrom::Stage(i) => Origin::Stage(i),
                CopyFrom::Image(name) => Origin::Image(name),
            }
        }
    };
    transfer(e, st, ins, &copy.files, origin, Op::Copy)
}

/// ADD: from the context, with URLs fetched (and checked against `--checksum`) and local
/// archives unpacked.
pub(super) fn add(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    add: &Add,
) -> Result<(), BuildError> {
    let checksum = match &add.checksum {
        None => None,
        Some(c) => Some(
            c.resolve(|raw| expand(raw, &st.vars(), e.escape).map_err(|x| x.0))
                .map_err(|m| e.err(ins.line, format!("ADD --checksum={m}")))?,
        ),
    };
    transfer(e, st, ins, &add.files, Origin::Context, Op::Add(checksum))
}

/// Copy `files` from `origin` into the stage.
fn transfer(
    e: &Engine,
    st: &mut State,
    ins: &Instruction,
    files: &Files,
    origin: Origin,
    op: Op,
) -> Result<(), BuildError> {
    let keyword = ins.keyword();
    let (is_add, checksum) = match op {
        Op::Copy => (false, None),
        Op::Add(checksum) => (true, checksum),
    };
    let mut dest = e.expand(st, ins.line, &files.dest)?;
    if !dest.starts_with('/') {
        let wd = st.config.get_str("WorkingDir");
        let trailing = dest.ends_with('/') || dest == "." || dest.is_empty();
        dest = format!("{}/{dest}", if wd.is_empty() { "" } else { wd });
        if trailing && !dest.ends_with('/') {
            dest.push('/');
        }
    }
    // A --chmod or --chown that expands to nothing is not given, as in BuildKit.
    let mut attrs = Attrs::default();
    if let Some(mode) = &files.chmod {
        let mode = mode
            .resolve_unless_empty(|raw| expand(raw, &st.vars(), e.escape).map_err(|x| x.0))
            .map_err(|m| e.err(ins.line, format!("{keyword} --chmod={m}")))?;
        attrs.mode = mode.map(|m| m.0);
    }
    let chown = match &files.chown {
        Some(c) => Some(e.expand(st, ins.line, c)?).filter(|c| !c.is_empty()),
        None => None,
    };
    // Heredoc sources (`COPY <<EOF /dest`) and the named sources.
    let mut heredocs = Vec::new();
    let mut patterns = Vec::new();
    for source in &files.sources {
        match source {
            Source::Heredoc(h) => {
                let content = if h.expand {
                    expand_heredoc(&h.content, &st.vars(), e.escape)
                        .map_err(|x| e.err(ins.line, x.0))?
                } else {
                    h.content.clone()
                };
                heredocs.push((h.name.clone(), content));
            }
            Source::Path(p) => patterns.push(e.expand(st, ins.line, p)?),
        }
    }
    // Resolve the source root and the key material.
    let (view, src_root, key_base, keep_owner): (Option<Overlay>, PathBuf, String, bool) =
        match &origin {
            Origin::Context => (None, e.context.root.clone(), "context".into(), false),
            Origin::Stage(i) => {
                let s = e.stage_state(*i)?;
                (
                    Some(e.view(&s.layers)?),
                    PathBuf::new(),
                    format!("stage {}", s.key),
                    true,
                )
            }
            Origin::Image(name) => {
                let (digest, layers, _) = e.image(ins.line, name, &e.opts.arch)?;
                (
                    Some(e.view(&layers)?),
                    PathBuf::new(),
                    format!("image {digest}"),
                    true,
                )
            }
        };
    let src_root = view.as_ref().map_or(src_root, |v| v.merged.clone());
    let ignore = matches!(origin, Origin::Context).then_some(&e.context.ignore);
    let mut urls = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for p in &patterns {
        if is_add && is_url(p) {
            urls.push(p.clone());
            continue;
        }
        let found = expand_sources(&src_root, p, ignore).map_err(|m| e.err(ins.line, m))?;
        sources.extend(found);
    }
    if checksum.is_some() && (urls.len() != 1 || !sources.is_empty()) {
        return Err(e.err(
            ins.line,
            format!(
                "ADD --checksum: the source {} is not an http:// or https:// URL",
                patterns.join(" ")
            ),
        ));
    }
    // As in BuildKit, only a trailing `/` (or an existing directory) makes the destination a
    // directory: several files copied to `/dst` each replace the one before.
    let dest_is_dir = dest.ends_with('/');
    let context_root = e.context.root.clone();
    let skip = |p: &Path| -> bool {
        ignore.is_some_and(|i| {
            p.strip_prefix(&context_root).is_ok_and(|rel| {
                let dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                i.skips(&rel.to_string_lossy(), dir)
            })
        })
    };
    let mut material = format!(
        "{keyword} chown={chown:?} chmod={:?} link={} {patterns:?} dest={dest} from={key_base}",
        attrs.mode, files.link
    );
    for s in &sources {
        let path = fsops::resolve_in_root(&src_root, s, true);
        let h = hash_tree(&path, &skip).map_err(io_err(&path))?;
        material.push_str(&format!(" {s}={h}"));
    }
    for (name, content) in &heredocs {
        material.push_str(&format!(
            " <<{name}={}",
            hex::encode(Sha256::digest(content.as_bytes()))
        ));
    }
    // URLs are fetched before the cache lookup: their content is part of the key.
    let downloads = tempfile::Builder::new()
        .prefix("add")
        .tempdir_in(e.ws.scratch())
        .map_err(io_err(e.ws.scratch()))?;
    let mut fetched = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        let path = downloads.path().join(n.to_string());
        let digest =
            download(url, &path).map_err(|m| e.err(ins.line, format!("ADD {url}: {m}")))?;
        if let Some(want) = &checksum
            && want.hex() != digest
        {
            return Err(e.err(
                ins.line,
                format!("ADD {url}: checksum mismatch: expected {want}, got sha256:{digest}"),
            ));
        }
        material.push_str(&format!(" {url}=sha256:{digest}"));
        let name = url
            .split(['?', '#'])
            .next()
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .unwrap_or("download")
            .to_string();
        fetched.push((path, name, 0o600));
    }
    for (i, (name, content)) in heredocs.iter().enumerate() {
        let path = downloads.path().join(format!("h{i}"));
        fs::write(&path, content).map_err(io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(io_err(&path))?;
        fetched.push((path, name.clone(), 0o644));
    }
    let history = format!("{keyword} {}", ins.text);
    e.fs_step(st, ins, &material, &history, &mut |root| {
        let mut attrs = attrs;
        if let Some(c) = &chown {
            attrs.owner = Some(chown_ids(root, c));
        }
        attrs.keep_owner = keep_owner;
        let dest_dir = |root: &Path| fsops::mkdir_all(root, &dest, attrs.owner);
        for s in &sources {
            let src = fsops::resolve_in_root(&src_root, s, true);
            let meta = fs::metadata(&src).map_err(io_err(&src))?;
            if meta.is_dir() {
                let d = dest_dir(root)?;
                let mut children: Vec<_> = fs::read_dir(&src)
                    .map_err(io_err(&src))?
                    .collect::<Result<_, _>>()
                    .map_err(io_err(&src))?;
                children.sort_by_key(|c| c.file_name());
                for c in children {
                    if skip(&c.path()) {
                        continue;
                    }
                    fsops::copy_tree(&c.path(), &d.join(c.file_name()), attrs, &skip)?;
                }
            } else if is_add && is_archive(&src) {
                dest_dir(root)?;
                extract_archive(&src, root, &dest, attrs, &e.ws.scratch())?;
            } else {
                let base = s.rsplit('/').next().unwrap_or(s);
                let target = file_target(root, &dest, dest_is_dir, base, attrs)?;
                fsops::copy_tree(&src, &target, attrs, &skip)?;
            }
        }
        for (path, name, mode) in &fetched {
            let target = file_target(root, &dest, dest_is_dir, name, attrs)?;
            let a = Attrs {
                mode: attrs.mode.or(Some(*mode)),
                keep_owner: false,
                ..attrs
            };
            fsops::copy_tree(path, &target, a, &|_| false)?;
        }
        Ok(())
    })?;
    drop(view);
    Ok(())
}

/// The owner `--chown=USER[:GROUP]` gives, looked up in the stage's /etc/passwd and
/// /etc/group as BuildKit's file operations do: a number (or `root`) is taken as it is, and a
/// number alone is both uid and gid; a user name gives its uid and primary gid, a group name its
/// gid; a name that is not found (an empty one too) leaves the id at 0, or the group at the
/// user's, without an error.
fn chown_ids(root: &Path, spec: &str) -> (u32, u32) {
    let number = |s: &str| {
        if s == "root" {
            Some(0)
        } else {
            s.parse::<u32>().ok()
        }
    };
    let read = |path: &str| {
        fs::read_to_string(fsops::resolve_in_root(root, path, true)).unwrap_or_default()
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, mut gid) = match number(user) {
        Some(n) => (n, n),
        None => read("/etc/passwd")
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .unwrap_or((0, 0)),
    };
    if let Some(g) = group {
        let found = match number(g) {
            Some(n) => Some(n),
            None => read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok()),
        };
        if let Some(n) = found {
            gid = n;
        }
    }
    (uid, gid)
}

/// Where a single file goes: into `dest` when it is (or must be) a directory, else at `dest`,
/// through a symlink there (BuildKit writes through it; a missing target's directories are
/// created).
fn file_target(
    root: &Path,
    dest: &str,
    dest_is_dir: bool,
    base: &str,
    attrs: Attrs,
) -> Result<PathBuf, BuildError> {
    let existing = fsops::resolve_in_root(root, dest, true);
    if dest_is_dir || existing.is_dir() {
        let d = fsops::mkdir_all(root, dest, attrs.owner)?;
        return Ok(d.join(base));
    }
    let through = existing.strip_prefix(root).map_or_else(
        |_| dest.to_string(),
        |rel| format!("/{}", rel.to_string_lossy()),
    );
    let (parent, name) = through
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", &through));
    let d = fsops::mkdir_all(
        root,
        if parent.is_empty() { "/" } else { parent },
        attrs.owner,
    )?;
    Ok(d.join(name))
}

/// Whether `path` is a tar archive, plain or compressed (gzip, bzip2, xz, zstd).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// ADD's archive extraction, as Docker's: unpacked safely into scratch space, then written
/// into `dest` (a path in the stage) with the archive's owners (or `--chown`). A directory
/// the archive names replaces what is not a directory (a symlink too) and takes the archive's
/// metadata; a directory it only implies (the parent of a member without an entry of its own)
/// goes through a symlink to a directory and leaves an existing directory as it is.
fn extract_archive(
    src: &Path,
    root: &Path,
    dest: &str,
    attrs: Attrs,
    scratch: &Path,
) -> Result<(), BuildError> {
    let named = archive_dirs(src)?;
    let f = fs::File::open(src).map_err(io_err(src))?;
    let reader = kiln_oci::decompress(std::io::BufReader::new(f)).map_err(io_err(src))?;
    let tmp = tempfile::Builder::new()
        .prefix("x")
        .tempdir_in(scratch)
        .map_err(io_err(scratch))?;
    kiln_fs::unpack::unpack(reader, tmp.path(), &src.display().to_string())?;
    let attrs = Attrs {
        keep_owner: true,
        ..attrs
    };
    merge_unpacked(
        tmp.path(),
        root,
        dest.trim_end_matches('/'),
        "",
        &named,
        attrs,
    )
}

/// The directories an archive has entries for, as cleaned relative paths.
fn archive_dirs(src: &Path) -> Result<HashSet<String>, BuildError> {
    let f = fs::File::open(src).map_err(io_err(src))?;
    let reader = kiln_oci::decompress(std::io::BufReader::new(f)).map_err(io_err(src))?;
    let mut archive = tar::Archive::new(reader);
    let mut dirs = HashSet::new();
    for member in archive.entries().map_err(io_err(src))? {
        let member = member.map_err(io_err(src))?;
        if member.header().entry_type() == tar::EntryType::Directory {
            dirs.insert(clean(&String::from_utf8_lossy(&member.path_bytes())));
        }
    }
    Ok(dirs)
}

/// Write the unpacked directory `from` (the archive's `rel`) into the stage's directory `dest`.
fn merge_unpacked(
    from: &Path,
    root: &Path,
    dest: &str,
    rel: &str,
    named: &HashSet<String>,
    attrs: Attrs,
) -> Result<(), BuildError> {
    let mut children: Vec<_> = fs::read_dir(from)
        .map_err(io_err(from))?
        .collect::<Result<_, _>>()
        .map_err(io_err(from))?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        let name = c.file_name().to_string_lossy().to_string();
        let c_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let c_dest = format!("{dest}/{name}");
        let is_dir = c.file_type().map_err(io_err(c.path()))?.is_dir();
        if is_dir && !named.contains(&c_rel) {
            fsops::mkdir_all(root, &c_dest, attrs.owner)?;
            merge_unpacked(&c.path(), root, &c_dest, &c_rel, named, attrs)?;
            continue;
        }
        let target = fsops::resolve_in_root(root, dest, true).join(&name);
        if is_dir {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                other => {
                    if other.is_ok() {
                        fsops::remove(&target)?;
                    }
                    fs::create_dir(&target).map_err(io_err(&target))?;
                }
            }
            merge_unpacked(&c.path(), root, &c_dest, &c_rel, named, attrs)?;
            fsops::copy_attrs(&c.path(), &target, attrs)?;
        } else {
            fsops::copy_tree(&c.path(), &target, attrs, &|_| false)?;
        }
    }
    Ok(())
}

/// Fetch `url` into `path`; returns the hex sha256 of the content.
fn download(url: &str, path: &Path) -> Result<String, String> {
    let mut resp = reqwest::blocking::get(url).map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut f = fs::File::create(path).map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n]).map_err(|e| e.to_string())?;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    /// A tar with `dirs` as directory entries and `files` as file entries, in that order.
    fn archive(dirs: &[&str], files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o750);
            h.set_uid(5);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(0);
            b.append_data(&mut h, d, std::io::empty()).expect("dir");
        }
        for (name, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, name, content.as_bytes())
                .expect("file");
        }
        b.into_inner().expect("tar")
    }

    fn is_link(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
    }

    #[test]
    fn chown_resolves_as_buildkit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir(root.join("etc")).expect("mkdir");
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("w");
        fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:\n",
        )
        .expect("w");
        assert_eq!(chown_ids(root, "app"), (1000, 1001));
        assert_eq!(chown_ids(root, "app:wheel"), (1000, 10));
        assert_eq!(chown_ids(root, "1000"), (1000, 1000));
        assert_eq!(chown_ids(root, "42:7"), (42, 7));
        assert_eq!(chown_ids(root, "root:wheel"), (0, 10));
        // Names that are not there (an empty one too) are root, or keep the user's group.
        assert_eq!(chown_ids(root, "nobody"), (0, 0));
        assert_eq!(chown_ids(root, ":"), (0, 0));
        assert_eq!(chown_ids(root, "app:nogroup"), (1000, 1001));
        assert_eq!(chown_ids(root, "5:"), (5, 5));
    }

    #[test]
    fn archives_keep_symlinked_directories_they_only_imply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, scratch) = (dir.path().join("root"), dir.path().join("scratch"));
        fs::create_dir_all(root.join("real")).expect("mkdir");
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        fs::create_dir(&scratch).expect("mkdir");
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o711)).expect("chmod");
        symlink("/real", root.join("link")).expect("link");
        symlink("/real", root.join("named")).expect("link");
        symlink("/opt/later", root.join("dangling")).expect("link");
        let tar = dir.path().join("a.tar");
        fs::write(
            &tar,
            archive(
                &["named/"],
                &[
                    ("link/inner/f.txt", "f"),
                    ("named/g.txt", "g"),
                    ("dangling/x.txt", "x"),
                    ("etc/conf", "c"),
                ],
            ),
        )
        .expect("write");
        extract_archive(&tar, &root, "/", Attrs::default(), &scratch).expect("extract");
        // Implied: through the symlink, which stays.
        assert!(is_link(&root.join("link")));
        assert_eq!(
            fs::read_to_string(root.join("real/inner/f.txt")).expect("f"),
            "f"
        );
        // Named: the archive's directory replaces the symlink.
        assert!(!is_link(&root.join("named")));
        let m = fs::metadata(root.join("named")).expect("named");
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o750, 5));
        assert!(root.join("named/g.txt").is_file());
        // A dangling symlink's target is created.
        assert!(is_link(&root.join("dangling")));
        assert!(root.join("opt/later/x.txt").is_file());
        // An existing directory the archive only implies keeps its metadata.
        let m = fs::metadata(root.join("etc")).expect("etc");
        assert_eq!(m.mode() & 0o7777, 0o711);
        assert!(root.join("etc/conf").is_file());
    }

    #[test]
    fn archives_unpack_into_a_symlinked_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, scratch) = (dir.path().join("root"), dir.path().join("scratch"));
        fs::create_dir_all(root.join("real3")).expect("mkdir");
        fs::create_dir(&scratch).expect("mkdir");
        symlink("real3", root.join("rel3")).expect("link");
        let tar = dir.path().join("b.tar");
        fs::write(
            &tar,
            archive(&["./", "./inner/"], &[("./inner/i.txt", "i")]),
        )
        .expect("w");
        fsops::mkdir_all(&root, "/rel3/", None).expect("dest");
        extract_archive(&tar, &root, "/rel3/", Attrs::default(), &scratch).expect("extract");
        assert!(is_link(&root.join("rel3")));
        assert!(root.join("real3/inner/i.txt").is_file());
    }
}
