//! `RUN --mount`, as BuildKit carries it out: bind mounts of the context, a stage or an image
//! (read-only, or writable with the writes thrown away), persistent cache directories shared
//! across builds, empty tmpfs mounts and build secrets. Nothing mounted enters the step's layer:
//! the runtime removes the mount points it made.
//!
//! The step cache key ([`Mounts::material`]) holds every mount's settings and the content of
//! bind sources, never the content of cache mounts nor the value of secrets: as in BuildKit,
//! changing only a secret's value or a cache directory does not rerun a step.
//!
//! Cache mounts live under the store's build directory (`build/mounts/`, dropped with the rest
//! of the build cache): one directory per id and seed, locked with a file lock per directory
//! (shared for `sharing=shared`, exclusive for `locked`, and a directory of its own for a
//! `private` step that finds the others in use). Secrets are written to a private tmpfs for the
//! time of the step and bound read-only, file by file, into the container.

use crate::context::{clean, hash_tree};
use crate::dockerfile::{MountType, RunMount, Sharing, parse_mount};
use crate::engine::Engine;
use crate::error::{BuildError, io_err};
use crate::fsops::{self, Attrs};
use crate::options::SecretSource;
use crate::overlay::Overlay;
use crate::plan::{CopyFrom, copy_from};
use crate::shell_lex::expand;
use crate::state::State;
use crate::workspace::build_cache_dir;
use kiln_runtime::Mount;
use sha2::{Digest as _, Sha256};
use std::cell::Cell;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _, lchown};
use std::path::{Path, PathBuf};

/// One mount of a step, resolved before the step cache is asked.
enum Planned {
    /// A file or directory bound into the step.
    Bind {
        target: String,
        /// Where it is on the host.
        source: PathBuf,
        readonly: bool,
        /// `.dockerignore` leaves something out of it: the step gets a filtered copy.
        filtered: bool,
    },
    /// A persistent cache directory.
    Cache {
        target: String,
        /// The directory's name under `build/mounts/`.
        key: String,
        sharing: Sharing,
        readonly: bool,
        /// Its content when it is created: a tree on the host (in a view of a stage or image).
        seed: Option<PathBuf>,
        /// Mode and owner of a new cache directory.
        mode: Option<u32>,
        owner: (u32, u32),
    },
    /// An empty tmpfs.
    Tmpfs { target: String, size: Option<u64> },
    /// A build secret (absent when optional and not given).
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        mode: u32,
        owner: (u32, u32),
        source: Option<SecretSource>,
    },
}

impl Planned {
    fn target(&self) -> &str {
        match self {
            Planned::Bind { target, .. }
            | Planned::Cache { target, .. }
            | Planned::Tmpfs { target, .. } => target,
            Planned::Secret { target, .. } => target.as_deref().unwrap_or(""),
        }
    }
}

/// The mounts of one RUN step, resolved: what they add to the step's cache key, and the views
/// of stages and images they bind from (kept mounted until the step is over).
pub(super) struct Mounts {
    planned: Vec<Planned>,
    _views: Vec<Overlay>,
    /// What the mounts add to the step's cache key: their settings and the content of bind
    /// sources; never a secret's value or a cache directory's content.
    pub(super) material: String,
}

/// The mounts of a running step, and what keeps them valid until it ends: cache locks,
/// writable copies, the secrets' tmpfs.
pub(super) struct Active {
    /// The runtime's mounts, parents before what is mounted inside them.
    pub(super) mounts: Vec<Mount>,
    /// `NAME=value` of secrets given as environment variables.
    pub(super) env: Vec<String>,
    _locks: Vec<fs::File>,
    _copies: Vec<tempfile::TempDir>,
    _secrets: Option<SecretFs>,
}

/// A tmpfs on the host holding the step's secrets, unmounted and removed on drop. The mount
/// point is named `m`, so that the scratch cleanup of a killed build detaches it too.
struct SecretFs {
    dir: tempfile::TempDir,
}

impl SecretFs {
    fn new(scratch: &Path) -> Result<SecretFs, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix("secrets")
            .tempdir_in(scratch)
            .map_err(io_err(scratch))?;
        let m = dir.path().join("m");
        fs::create_dir(&m).map_err(io_err(&m))?;
        nix::mount::mount(
            Some("tmpfs"),
            &m,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700,size=16m"),
        )
        .map_err(|e| io_err(&m)(std::io::Error::from(e)))?;
        Ok(SecretFs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("m")
    }
}

impl Drop for SecretFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An error about the `--mount` value `spec` of the RUN at `line`.
fn mount_err(e: &Engine, line: usize, spec: &str, message: impl std::fmt::Display) -> BuildError {
    e.err(line, format!("RUN --mount={spec}: {message}"))
}

/// Where a mount's target is: absolute, or relative to the working directory `cwd`.
fn target_path(target: &str, cwd: &str) -> Result<String, String> {
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{cwd}/{target}")
    };
    let cleaned = format!("/{}", clean(&joined));
    if cleaned == "/" {
        return Err(format!(
            "target={target}: a mount cannot cover the root; mount on a directory below it"
        ));
    }
    Ok(cleaned)
}

/// A digest of `text`, in hex.
fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Resolve the `--mount` values of a RUN step: expand them with the stage's variables, check
/// them, find bind sources and hash them, name cache directories and check that the secrets
/// are given.
pub(super) fn plan(
    e: &Engine,
    st: &State,
    line: usize,
    specs: &[String],
    cwd: &str,
) -> Result<Mounts, BuildError> {
    let vars = st.vars();
    let mut planned = Vec::new();
    let mut views = Vec::new();
    let mut material = String::new();
    for spec in specs {
        let expander = |v: &str| expand(v, &vars, e.escape).map_err(|x| x.0);
        let m: RunMount = parse_mount(spec, &expander).map_err(|m| mount_err(e, line, spec, m))?;
        let target = match &m.target {
            Some(t) if !t.is_empty() => {
                Some(target_path(t, cwd).map_err(|x| mount_err(e, line, spec, x))?)
            }
            _ => None,
        };
        match m.ty {
            MountType::Bind => {
                let target = target.unwrap_or_default();
                let (root, base, view) = origin(e, st, line, spec, m.from.as_deref())?;
                let src = m.source.as_deref().unwrap_or("");
                let rel = clean(src);
                let path = fsops::resolve_in_root(&root, &rel, true);
                if fs::symlink_metadata(&path).is_err() {
                    let place = match &m.from {
                        None => "the build context".to_string(),
                        Some(f) => f.clone(),
                    };
                    return Err(mount_err(
                        e,
                        line,
                        spec,
                        format!("source={src}: not found in {place}"),
                    ));
                }
                let skipped = Cell::new(false);
                let ignore = (m.from.is_none()).then_some(&e.context.ignore);
                let context_root = e.context.root.clone();
                let skip = |p: &Path| -> bool {
                    let skip = ignore.is_some_and(|i| {
                        p.strip_prefix(&context_root).is_ok_and(|rel| {
                            let dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                            i.skips(&rel.to_string_lossy(), dir)
                        })
                    });
                    if skip {
                        skipped.set(true);
                    }
                    skip
                };
                let hash = hash_tree(&path, &skip).map_err(io_err(&path))?;
                material.push_str(&format!(
                    " mount[type=bind target={target} ro={} from={base} source=/{rel} content={hash}]",
                    m.readonly
                ));
                planned.push(Planned::Bind {
                    target,
                    source: path,
                    readonly: m.readonly,
                    filtered: skipped.get(),
                });
                views.extend(view);
            }
            MountType::Cache => {
                let target = target.unwrap_or_default();
                // The id defaults to the target as written, cleaned (BuildKit's path.Clean).
                let id = m.id.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| {
                    let written = m.target.as_deref().unwrap_or_default();
                    let cleaned = clean(written);
                    if written.starts_with('/') {
                        format!("/{cleaned}")
                    } else {
                        cleaned
                    }
                });
                let sharing = m.sharing.unwrap_or(Sharing::Shared);
                let owner = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
                // The directory is named by its id and by what it starts from, as BuildKit
                // keys a cache directory by its id and its base.
                let (seed, seed_key) = if m.from.is_some() || m.source.is_some() {
                    let (root, base, view) = origin(e, st, line, spec, m.from.as_deref())?;
                    let rel = clean(m.source.as_deref().unwrap_or(""));
                    let path = fsops::resolve_in_root(&root, &rel, true);
                    if !path.is_dir() {
                        return Err(mount_err(
                            e,
                            line,
                            spec,
                            format!(
                                "source=/{rel}: no such directory in {}",
                                m.from.as_deref().unwrap_or("the build context")
                            ),
                        ));
                    }
                    views.extend(view);
                    (Some(path), format!("from={base} source=/{rel}"))
                } else {
                    (None, String::new())
                };
                let key = sha(&format!(
                    "{id}\0{seed_key} mode={:?} owner={owner:?}",
                    m.mode
                ));
                material.push_str(&format!(
                    " mount[type=cache target={target} id={id:?} sharing={sharing:?} ro={} {seed_key} mode={:?} owner={owner:?}]",
                    m.readonly, m.mode
                ));
                planned.push(Planned::Cache {
                    target,
                    key,
                    sharing,
                    readonly: m.readonly,
                    seed,
                    mode: m.mode,
                    owner,
                });
            }
            MountType::Tmpfs => {
                let target = target.unwrap_or_default();
                material.push_str(&format!(
                    " mount[type=tmpfs target={target} size={:?}]",
                    m.size
                ));
                planned.push(Planned::Tmpfs {
                    target,
                    size: m.size,
                });
            }
            MountType::Secret => {
                let id = match (m.id.clone().or(m.source.clone()), &target) {
                    (Some(id), _) => id,
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                    (None, None) => {
                        return Err(mount_err(e, line, spec, "a secret mount needs id=ID"));
                    }
                };
                let target = match (&m.env, target) {
                    (_, Some(t)) => Some(t),
                    (Some(_), None) => None,
                    (None, None) => {
                        let base = id.rsplit('/').next().unwrap_or(&id);
                        Some(format!("/run/secrets/{base}"))
                    }
                };
                let source = e.opts.secrets.get(&id).cloned();
                if source.is_none() && m.required {
                    return Err(mount_err(
                        e,
                        line,
                        spec,
                        format!(
                            "the secret {id:?} is required but was not given; pass --secret id={id},src=PATH (or env=VAR)"
                        ),
                    ));
                }
                let mode = m.mode.unwrap_or(0o400);
                let owner = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
                // The id only: the value never enters the key (BuildKit's behaviour).
                material.push_str(&format!(
                    " mount[type=secret id={id:?} target={target:?} env={:?} required={} mode={mode:o} owner={owner:?}]",
                    m.env, m.required
                ));
                planned.push(Planned::Secret {
                    id,
                    target,
                    env: m.env,
                    mode,
                    owner,
                    source,
                });
            }
            MountType::Ssh => {
                // Refused when the Dockerfile is read; kept here for exhaustiveness.
                return Err(mount_err(
                    e,
                    line,
                    spec,
                    "kiln forwards no SSH agent into RUN steps",
                ));
            }
        }
    }
    // Parents are mounted before what is mounted inside them.
    planned.sort_by_key(|p| p.target().split('/').filter(|c| !c.is_empty()).count());
    Ok(Mounts {
        planned,
        _views: views,
        material,
    })
}

/// The root a bind or cache mount takes its source from: the context, or a view of the stage
/// or image `from` names. Returns the root, its part of the key and the view to keep.
fn origin(
    e: &Engine,
    st: &State,
    line: usize,
    spec: &str,
    from: Option<&str>,
) -> Result<(PathBuf, String, Option<Overlay>), BuildError> {
    let Some(from) = from else {
        return Ok((e.context.root.clone(), "context".into(), None));
    };
    let found = copy_from(&e.plan.stages, from, st.stage)
        .map_err(|m| mount_err(e, line, spec, m.replacen("COPY --from=", "from=", 1)))?;
    let (layers, base) = match found {
        CopyFrom::Stage(i) => {
            let s = e.stage_state(i)?;
            (s.layers, format!("stage:{}", s.key))
        }
        CopyFrom::Image(name) => {
            let (digest, layers, _) = e.image(line, &name, &e.opts.arch)?;
            (layers, format!("image:{digest}"))
        }
    };
    let view = e.view(&layers)?;
    Ok((view.merged.clone(), base, Some(view)))
}

/// Open (creating) the lock file `path`.
fn lock_file(path: &Path) -> Result<fs::File, BuildError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))
}

impl Mounts {
    /// Get the mounts ready for the step: lock and create cache directories, copy what must
    /// be copied, write secrets to their tmpfs. What this returns keeps them valid until it
    /// is dropped, after the step.
    pub(super) fn activate(&self, e: &Engine, line: usize) -> Result<Active, BuildError> {
        let scratch = e.ws.scratch();
        let mut active = Active {
            mounts: Vec::new(),
            env: Vec::new(),
            _locks: Vec::new(),
            _copies: Vec::new(),
            _secrets: None,
        };
        // The sources this step may write in: its copies and cache directories.
        let mut owned: Vec<PathBuf> = Vec::new();
        for p in &self.planned {
            match p {
                Planned::Bind {
                    target,
                    source,
                    readonly,
                    filtered,
                } => {
                    let source = if *filtered || !*readonly {
                        // Writes are thrown away, and ignored files stay out: the step gets a
                        // copy of its own.
                        let tmp = tempfile::Builder::new()
                            .prefix("bind")
                            .tempdir_in(&scratch)
                            .map_err(io_err(&scratch))?;
                        let copy = tmp.path().join("c");
                        let ignore = &e.context.ignore;
                        let root = &e.context.root;
                        let skip = |p: &Path| -> bool {
                            *filtered
                                && p.strip_prefix(root).is_ok_and(|rel| {
                                    let dir = fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                                    ignore.skips(&rel.to_string_lossy(), dir)
                                })
                        };
                        let attrs = Attrs {
                            keep_owner: true,
                            ..Attrs::default()
                        };
                        fsops::copy_tree(source, &copy, attrs, &skip)?;
                        active._copies.push(tmp);
                        owned.push(copy.clone());
                        copy
                    } else {
                        source.clone()
                    };
                    active.mounts.push(Mount::Bind {
                        source,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                Planned::Cache {
                    target,
                    key,
                    sharing,
                    readonly,
                    seed,
                    mode,
                    owner,
                } => {
                    let base = build_cache_dir(&e.ws.store).join("mounts").join(key);
                    fs::create_dir_all(&base).map_err(io_err(&base))?;
                    let (n, lock) = match sharing {
                        Sharing::Shared | Sharing::Locked => {
                            let path = base.join("0.lock");
                            let lock = lock_file(&path)?;
                            if *sharing == Sharing::Shared {
                                lock.lock_shared().map_err(io_err(&path))?;
                            } else {
                                lock.lock().map_err(io_err(&path))?;
                            }
                            (0, lock)
                        }
                        Sharing::Private => {
                            let mut n = 0usize;
                            loop {
                                let path = base.join(format!("{n}.lock"));
                                let lock = lock_file(&path)?;
                                if lock.try_lock().is_ok() {
                                    break (n, lock);
                                }
                                n += 1;
                            }
                        }
                    };
                    let dir = base.join(n.to_string());
                    if !dir.is_dir() {
                        create_cache_dir(&base, &dir, seed.as_deref(), *mode, *owner)?;
                    }
                    active._locks.push(lock);
                    owned.push(dir.clone());
                    active.mounts.push(Mount::Bind {
                        source: dir,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                Planned::Tmpfs { target, size } => {
                    let mut options =
                        vec!["nosuid".to_string(), "nodev".into(), "mode=1777".into()];
                    if let Some(s) = size {
                        options.push(format!("size={s}"));
                    }
                    active.mounts.push(Mount::Oci {
                        source: "tmpfs".into(),
                        target: target.clone(),
                        fstype: "tmpfs".into(),
                        options,
                    });
                }
                Planned::Secret {
                    id,
                    target,
                    env,
                    mode,
                    owner,
                    source,
                } => {
                    let Some(source) = source else {
                        // An optional secret that was not given: nothing is mounted.
                        continue;
                    };
                    let value = source.read().map_err(|m| BuildError::Io {
                        path: PathBuf::from(format!("secret {id}")),
                        source: std::io::Error::other(m),
                    })?;
                    if let Some(name) = env {
                        let text = String::from_utf8(value.clone()).map_err(|_| BuildError::Io {
                            path: PathBuf::from(format!("secret {id}")),
                            source: std::io::Error::other(format!(
                                "env={name}: the secret is not UTF-8 text; mount it as a file instead"
                            )),
                        })?;
                        active.env.push(format!("{name}={text}"));
                    }
                    if let Some(target) = target {
                        if active._secrets.is_none() {
                            active._secrets = Some(SecretFs::new(&scratch)?);
                        }
                        let dir = active
                            ._secrets
                            .as_ref()
                            .map(SecretFs::path)
                            .unwrap_or_default();
                        let copy = dir.join(sha(&format!("{id}\0{target}")));
                        let mut f = fs::OpenOptions::new()
                            .create_new(true)
                            .write(true)
                            .mode(0o600)
                            .open(&copy)
                            .map_err(io_err(&copy))?;
                        f.write_all(&value).map_err(io_err(&copy))?;
                        drop(f);
                        lchown(&copy, Some(owner.0), Some(owner.1)).map_err(io_err(&copy))?;
                        fs::set_permissions(&copy, fs::Permissions::from_mode(*mode))
                            .map_err(io_err(&copy))?;
                        active.mounts.push(Mount::Bind {
                            source: copy,
                            target: target.clone(),
                            readonly: true,
                        });
                    }
                }
            }
        }
        nested_mountpoints(e, line, &active.mounts, &owned)?;
        Ok(active)
    }
}

/// Make the mount points of mounts that lie inside another mount (a cache directory inside a
/// writable bind, say): the runtime makes mount points in the root, where the outer mount
/// hides them. They are made in the outer mount's source when it can be written (a copy, a
/// cache directory); inside a read-only one the path must exist already.
fn nested_mountpoints(
    e: &Engine,
    line: usize,
    mounts: &[Mount],
    owned: &[PathBuf],
) -> Result<(), BuildError> {
    let target_of = |m: &Mount| match m {
        Mount::Bind { target, .. } | Mount::Tmpfs { target } | Mount::Oci { target, .. } => {
            target.clone()
        }
    };
    for (i, m) in mounts.iter().enumerate() {
        let target = target_of(m);
        // The innermost mount holding this one (mounts come parents first).
        let Some((outer, rel)) = mounts[..i].iter().rev().find_map(|o| {
            let t = target_of(o);
            target
                .strip_prefix(&format!("{}/", t.trim_end_matches('/')))
                .map(|rel| (o, rel.to_string()))
        }) else {
            continue;
        };
        let outer_target = target_of(outer);
        let Mount::Bind { source, .. } = outer else {
            return Err(e.err(
                line,
                format!(
                    "RUN --mount target={target} lies inside the tmpfs at {outer_target}, which starts empty; mount it elsewhere"
                ),
            ));
        };
        let path = source.join(&rel);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let file = matches!(m, Mount::Bind { source, .. } if source.is_file());
        // Only in what the build owns: never in the context or a stage.
        let made = if !owned.contains(source) {
            Err(std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem))
        } else if file {
            path.parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| fs::File::create(&path).map(drop))
        } else {
            fs::create_dir_all(&path)
        };
        if made.is_err() {
            return Err(e.err(
                line,
                format!(
                    "RUN --mount target={target} lies inside the read-only mount at {outer_target}, whose source has no {rel}; create it in the source, or make the outer mount rw"
                ),
            ));
        }
    }
    Ok(())
}

/// Create the cache directory `dir` under `base`: a copy of `seed`, or an empty directory with
/// `mode` (0755 unless given) and `owner`. Made aside and renamed into place, so that a step
/// that finds it finds it whole.
fn create_cache_dir(
    base: &Path,
    dir: &Path,
    seed: Option<&Path>,
    mode: Option<u32>,
    owner: (u32, u32),
) -> Result<(), BuildError> {
    let tmp = tempfile::Builder::new()
        .prefix("new")
        .tempdir_in(base)
        .map_err(io_err(base))?;
    let made = tmp.path().join("d");
    match seed {
        Some(src) => {
            let attrs = Attrs {
                keep_owner: true,
                ..Attrs::default()
            };
            fsops::copy_tree(src, &made, attrs, &|_| false)?;
            if mode.is_some() || owner != (0, 0) {
                lchown(&made, Some(owner.0), Some(owner.1)).map_err(io_err(&made))?;
            }
            if let Some(m) = mode {
                fs::set_permissions(&made, fs::Permissions::from_mode(m)).map_err(io_err(&made))?;
            }
        }
        None => {
            fs::create_dir(&made).map_err(io_err(&made))?;
            lchown(&made, Some(owner.0), Some(owner.1)).map_err(io_err(&made))?;
            fs::set_permissions(&made, fs::Permissions::from_mode(mode.unwrap_or(0o755)))
                .map_err(io_err(&made))?;
        }
    }
    match fs::rename(&made, dir) {
        Ok(()) => Ok(()),
        // Another step made it meanwhile: theirs is used.
        Err(_) if dir.is_dir() => Ok(()),
        Err(err) => Err(io_err(dir)(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_absolute_and_clean() {
        assert_eq!(target_path("/a/b/", "/").as_deref(), Ok("/a/b"));
        assert_eq!(target_path("out", "/src").as_deref(), Ok("/src/out"));
        assert_eq!(target_path("../x", "/src/a").as_deref(), Ok("/src/x"));
        assert!(target_path("/", "/").is_err());
        assert!(target_path(".", "/").is_err());
    }

    #[test]
    fn cache_directories_are_created_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("0");
        create_cache_dir(dir.path(), &target, None, Some(0o700), (0, 0)).expect("create");
        let meta = fs::metadata(&target).expect("made");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        let seed = dir.path().join("seed");
        fs::create_dir_all(seed.join("sub")).expect("mkdir");
        fs::write(seed.join("sub/f"), "x").expect("write");
        let seeded = dir.path().join("1");
        create_cache_dir(dir.path(), &seeded, Some(&seed), None, (0, 0)).expect("seed");
        assert_eq!(fs::read(seeded.join("sub/f")).expect("copied"), b"x");
        // Only the directories remain: no half-made one.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["0", "1", "seed"]);
    }
}
