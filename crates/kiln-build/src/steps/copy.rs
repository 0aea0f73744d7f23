//! COPY and ADD: sources from the build context, an earlier stage or an image (COPY --from),
//! heredocs, URLs and local archives (ADD), copied into the stage with their owners and modes
//! (`--chown`, `--chmod`), keyed in the step cache by the content of the sources.

use crate::context::{expand_sources, hash_tree};
use crate::dockerfile::{Add, Checksum, Copy, Files, Instruction, Source, is_url};
use crate::engine::Engine;
use crate::error::{BuildError, io_err};
use crate::fsops::{self, Attrs};
use crate::overlay::Overlay;
use crate::plan::{CopyFrom, copy_from};
use crate::shell_lex::{expand, expand_heredoc};
use crate::state::State;
use sha2::{Digest as _, Sha256};
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
    let mut attrs = Attrs::default();
    if let Some(mode) = &files.chmod {
        let mode = mode
            .resolve(|raw| expand(raw, &st.vars(), e.escape).map_err(|x| x.0))
            .map_err(|m| e.err(ins.line, format!("{keyword} --chmod={m}")))?;
        attrs.mode = Some(mode.0);
    }
    let chown = match &files.chown {
        Some(c) => Some(e.expand(st, ins.line, c)?),
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
    let count = sources.len() + urls.len() + heredocs.len();
    let dest_is_dir = dest.ends_with('/') || count > 1;
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
    let file = e.file.clone();
    let line = ins.line;
    e.fs_step(st, ins, &material, &history, &mut |root| {
        let mut attrs = attrs;
        if let Some(c) = &chown {
            let (u, g, _) = fsops::lookup_user(root, c).map_err(|m| BuildError::Dockerfile {
                file: file.clone(),
                line,
                message: format!("--chown={c}: {m}"),
            })?;
            attrs.owner = Some((u, g));
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
                let d = dest_dir(root)?;
                extract_archive(&src, &d, attrs, &e.ws.scratch())?;
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

/// Where a single file goes: into `dest` when it is (or must be) a directory, else at `dest`.
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
    let (parent, name) = dest
        .trim_end_matches('/')
        .rsplit_once('/')
        .unwrap_or(("", dest));
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

/// ADD's archive extraction: unpacked safely into scratch space, then copied into `dest` with
/// the archive's owners (or `--chown`).
fn extract_archive(
    src: &Path,
    dest: &Path,
    attrs: Attrs,
    scratch: &Path,
) -> Result<(), BuildError> {
    let f = fs::File::open(src).map_err(io_err(src))?;
    let reader = kiln_oci::decompress(std::io::BufReader::new(f)).map_err(io_err(src))?;
    let tmp = tempfile::Builder::new()
        .prefix("x")
        .tempdir_in(scratch)
        .map_err(io_err(scratch))?;
    kiln_fs::unpack::unpack(reader, tmp.path(), &src.display().to_string())?;
    let mut children: Vec<_> = fs::read_dir(tmp.path())
        .map_err(io_err(tmp.path()))?
        .collect::<Result<_, _>>()
        .map_err(io_err(tmp.path()))?;
    children.sort_by_key(|c| c.file_name());
    for c in children {
        fsops::copy_tree(
            &c.path(),
            &dest.join(c.file_name()),
            Attrs {
                keep_owner: true,
                ..attrs
            },
            &|_| false,
        )?;
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
