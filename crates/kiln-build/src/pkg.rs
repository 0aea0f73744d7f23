//! `kiln pkg build`: LinuxKit's package format. A package is a directory with a `build.yml`
//! (image, org, tag, dockerfile, arches, network, disable-cache, config, buildArgs,
//! extra-sources) and a Dockerfile. Its tag is LinuxKit's (the git tree hash, see
//! [`crate::pkg_tag`]) or kiln's content hash of the directory (and its extra sources), with
//! `-dirty` appended while git reports uncommitted changes in it. `config`
//! becomes the image's `org.mobyproject.config` label. A build argument written
//! `@lkt:pkg:PATH` is replaced by the image name of the package at PATH.

use crate::builder::build;
use crate::context::hash_files;
use crate::error::{BuildError, io_err};
use crate::events::Event;
use crate::options::{BuildOptions, Built};
use crate::pkg_tag::{HashSource, TagOptions, git_hash, render_template};
use kiln_oci::{Reference, Store};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The label LinuxKit reads a package's runtime settings from.
pub const CONFIG_LABEL: &str = "org.mobyproject.config";

/// A package's `build.yml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuildYml {
    /// Image name (without org and tag).
    pub image: String,
    /// Organisation (the image name's namespace); `linuxkit` by default.
    #[serde(default)]
    pub org: Option<String>,
    /// A fixed tag instead of the content hash (`{{.Hash}}` stands for the hash).
    #[serde(default)]
    pub tag: Option<String>,
    /// The Dockerfile, relative to the package (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Architectures the package builds for.
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    /// Whether RUN steps may use the network.
    #[serde(default)]
    pub network: Option<bool>,
    /// Build without the step cache.
    #[serde(default)]
    pub disable_cache: Option<bool>,
    /// Runtime settings, stored as the `org.mobyproject.config` label.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Build arguments, `NAME=VALUE`.
    #[serde(default, rename = "buildArgs")]
    pub build_args: Option<Vec<String>>,
    /// Extra directories hashed into the tag, `SRC:DST` (relative to the package).
    #[serde(default)]
    pub extra_sources: Option<Vec<String>>,
    /// Accepted for compatibility; unused.
    #[serde(default)]
    pub gitrepo: Option<String>,
    /// Accepted for compatibility; kiln verifies digests, not signatures.
    #[serde(default)]
    pub disable_content_trust: Option<bool>,
}

/// A package directory and what its build.yml says.
#[derive(Debug, Clone)]
pub struct Package {
    /// The directory.
    pub dir: PathBuf,
    /// Its build.yml.
    pub spec: BuildYml,
    /// The content tag.
    pub tag: String,
    /// The time of the last commit of the package's directory, when its tag is a git hash of
    /// committed files (not `-dirty-`): its images' default SOURCE_DATE_EPOCH.
    pub committed: Option<u64>,
}

impl Package {
    /// Read the package in `dir` (its `build.yml`), its tag computed as `tags` say.
    pub fn load(dir: &Path, tags: &TagOptions) -> Result<Package, BuildError> {
        Package::load_from(dir, "build.yml", tags)
    }

    /// Read the package in `dir` described by the file `build_yml` (LinuxKit's `--build-yml`).
    pub fn load_from(
        dir: &Path,
        build_yml: &str,
        tags: &TagOptions,
    ) -> Result<Package, BuildError> {
        let file = dir.join(build_yml);
        let text = fs::read_to_string(&file).map_err(io_err(&file))?;
        let spec: BuildYml = serde_norway::from_str(&text).map_err(|e| BuildError::Package {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if spec.image.is_empty() || spec.image.contains([':', '/', '@']) {
            return Err(BuildError::Package {
                file,
                message: format!(
                    "image {:?}: give a bare name; org and tag are separate keys",
                    spec.image
                ),
            });
        }
        if let Some(cfg) = &spec.config {
            let text = serde_json::to_string(cfg).unwrap_or_default();
            kiln_manifest::parse_label(&spec.image, &text).map_err(|d| BuildError::Package {
                file: file.clone(),
                message: format!("config: {d}"),
            })?;
        }
        let mut committed = None;
        let hash = match (&tags.hash, tags.source) {
            (Some(h), _) => h.clone(),
            (None, HashSource::Content) => content_tag(dir, &spec, 0)?,
            (None, HashSource::Git) => {
                let extra: Vec<PathBuf> = extra_source_dirs(dir, &spec).collect();
                let untracked = |p: &Path| {
                    hash_files(p, &|p| p.file_name().is_some_and(|n| n == ".git"))
                        .map_err(io_err(p))
                };
                match git_hash(dir, &extra, tags, &untracked)? {
                    Some(h) => {
                        if !h.contains("-dirty-") {
                            committed = crate::pkg_tag::commit_time(dir)?;
                        }
                        h
                    }
                    None => content_tag(dir, &spec, 0)?,
                }
            }
        };
        let template = tags
            .template
            .as_deref()
            .or(spec.tag.as_deref())
            .unwrap_or("{{.Hash}}");
        let tag = render_template(template, &hash).map_err(|message| BuildError::Package {
            file: file.clone(),
            message,
        })?;
        Ok(Package {
            dir: dir.to_path_buf(),
            spec,
            tag,
            committed,
        })
    }

    /// The image name: `org/image:tag`.
    pub fn reference(&self, org: Option<&str>) -> String {
        let org = org.or(self.spec.org.as_deref()).unwrap_or("linuxkit");
        format!("{org}/{}:{}", self.spec.image, self.tag)
    }

    /// The `org.mobyproject.config` label value, if the package has a config.
    pub fn label(&self) -> Option<String> {
        let cfg = self.spec.config.as_ref()?;
        let text = serde_json::to_string(cfg).ok()?;
        let image = kiln_manifest::parse_label(&self.spec.image, &text).ok()?;
        let mut v = serde_json::to_value(&image).ok()?;
        if let Some(m) = v.as_object_mut() {
            m.retain(|k, v| !(matches!(k.as_str(), "name" | "image") && v.as_str() == Some("")));
        }
        serde_json::to_string(&v).ok()
    }
}

/// The content hash of a package: its files (and extra sources), 40 hex digits, `-dirty` when
/// git reports uncommitted changes there.
fn content_tag(dir: &Path, spec: &BuildYml, depth: usize) -> Result<String, BuildError> {
    let mut h = Sha256::new();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(extra_source_dirs(dir, spec));
    for d in &dirs {
        let sum =
            hash_files(d, &|p| p.file_name().is_some_and(|n| n == ".git")).map_err(io_err(d))?;
        h.update(sum.as_bytes());
    }
    // A package built FROM another changes when that one does.
    for arg in spec.build_args.iter().flatten() {
        if let Some(path) = arg
            .split_once('=')
            .and_then(|(_, v)| v.strip_prefix("@lkt:pkg:"))
        {
            if depth > 32 {
                return Err(BuildError::Package {
                    file: dir.join("build.yml"),
                    message: "packages depend on each other in a cycle".into(),
                });
            }
            let dep = dir.join(path);
            let file = dep.join("build.yml");
            let text = fs::read_to_string(&file).map_err(io_err(&file))?;
            let dep_spec: BuildYml =
                serde_norway::from_str(&text).map_err(|e| BuildError::Package {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            h.update(content_tag(&dep, &dep_spec, depth + 1)?.as_bytes());
        }
    }
    let mut tag = hex::encode(h.finalize())[..40].to_string();
    for d in &dirs {
        if git_dirty(d)? {
            tag.push_str("-dirty");
            break;
        }
    }
    Ok(tag)
}

/// The directories of a package's `extra-sources` (`SRC:DST`, SRC relative to the package).
fn extra_source_dirs<'a>(dir: &'a Path, spec: &'a BuildYml) -> impl Iterator<Item = PathBuf> + 'a {
    spec.extra_sources.iter().flatten().map(move |src| {
        let s = src.split_once(':').map_or(src.as_str(), |(s, _)| s);
        dir.join(s)
    })
}

/// Whether git reports uncommitted changes in `dir`: false outside a work tree or without
/// git, an error when git refuses to look (a repository another user owns), since the tag
/// would then depend on who builds.
fn git_dirty(dir: &Path) -> Result<bool, BuildError> {
    // An extra source may be a file: asked about from its directory.
    let (cwd, pathspec) = match (dir.is_file(), dir.parent(), dir.file_name()) {
        (true, Some(parent), Some(name)) => (parent, name.to_os_string()),
        _ => (dir, ".".into()),
    };
    let out = match crate::pkg_tag::git_command(cwd)
        .args(["status", "--porcelain", "--untracked-files=all", "--"])
        .arg(pathspec)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(dir)(e)),
    };
    if out.status.success() {
        return Ok(!out.stdout.is_empty());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if crate::pkg_tag::not_a_repository(&stderr) {
        return Ok(false);
    }
    Err(BuildError::Package {
        file: dir.join("build.yml"),
        message: format!(
            "git cannot tell whether the package has uncommitted changes: {}",
            stderr.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    })
}

/// Options for building packages.
#[derive(Clone)]
pub struct PkgOptions {
    /// Base build options (registry, arch, progress, ...); context, Dockerfile and tags are set
    /// per package.
    pub base: BuildOptions,
    /// Override every package's org.
    pub org: Option<String>,
    /// Build even when the image is already in the store.
    pub force: bool,
    /// How package tags are computed.
    pub tags: TagOptions,
    /// The name of the file describing a package (`build.yml`; LinuxKit's `--build-yml`).
    pub build_yml: String,
    /// Pull a package's image from its registry when the store lacks it, and build only
    /// what the registry does not have either.
    pub pull: bool,
    /// Whether RUN steps may use the network, overriding build.yml's `network`.
    pub network: Option<bool>,
    /// Build without the step cache, overriding build.yml's `disable-cache`.
    pub disable_cache: Option<bool>,
    /// The Dockerfile, relative to the package directory, overriding build.yml's.
    pub dockerfile: Option<PathBuf>,
    /// Build arguments added to (and replacing those of the same name in) build.yml's.
    pub build_args: Vec<(String, String)>,
    /// The architectures to build (Go's names). `None`: each package's `arches` from its
    /// build.yml, or `base.arch` when it lists none.
    pub platforms: Option<Vec<String>>,
    /// Architectures not to build (LinuxKit's `--skip-platforms`).
    pub skip_platforms: Vec<String>,
}

impl PkgOptions {
    /// Options with LinuxKit's defaults around the base build options.
    pub fn new(base: BuildOptions) -> PkgOptions {
        PkgOptions {
            base,
            org: None,
            force: false,
            tags: TagOptions::default(),
            build_yml: "build.yml".into(),
            pull: false,
            network: None,
            disable_cache: None,
            dockerfile: None,
            build_args: Vec::new(),
            platforms: None,
            skip_platforms: Vec::new(),
        }
    }

    /// The architectures to build `pkg` for, checked against the ones it lists.
    fn arches_of(&self, pkg: &Package) -> Result<Vec<String>, BuildError> {
        let norm = |a: &String| kiln_oci::spec::normalize_arch(a).to_string();
        let listed: Option<Vec<String>> = pkg
            .spec
            .arches
            .as_ref()
            .map(|v| v.iter().map(norm).collect());
        let wanted: Vec<String> = match (&self.platforms, &listed) {
            (Some(p), _) => p.iter().map(norm).collect(),
            (None, Some(l)) => l.clone(),
            (None, None) => vec![norm(&self.base.arch)],
        };
        let skipped: Vec<String> = self.skip_platforms.iter().map(norm).collect();
        let mut arches = Vec::new();
        for arch in wanted {
            if skipped.contains(&arch) || arches.contains(&arch) {
                continue;
            }
            if let Some(l) = &listed
                && !l.contains(&arch)
            {
                return Err(BuildError::Package {
                    file: pkg.dir.join("build.yml"),
                    message: format!("the package builds for {} only, not {arch}", l.join(", ")),
                });
            }
            arches.push(arch);
        }
        Ok(arches)
    }
}

/// What happened to one package.
#[derive(Debug, Clone)]
pub struct PkgResult {
    /// The package directory.
    pub dir: PathBuf,
    /// The image name.
    pub reference: String,
    /// The build, or `None` when the image was already in the store.
    pub built: Option<Built>,
    /// What the build read, for its provenance (`None` when it was not built).
    pub inputs: Option<PkgInputs>,
}

/// What a package's build read, for its provenance.
#[derive(Debug, Clone)]
pub struct PkgInputs {
    /// The package's description file (`build.yml`) and its SHA-256, hex.
    pub build_yml: (String, String),
    /// The Dockerfile, relative to the package, and its SHA-256, hex.
    pub dockerfile: (String, String),
    /// The digest of the build context's files (names, types, modes, contents; as the
    /// content tag reads them), hex.
    pub context: String,
    /// The build arguments the build was given, in order.
    pub build_args: Vec<(String, String)>,
    /// The architecture built for.
    pub arch: String,
    /// Whether RUN steps had the network.
    pub network: bool,
}

/// The SHA-256 of the file `path`, hex.
fn file_sha256(path: &Path) -> Result<String, BuildError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex::encode(h.finalize()))
}

/// Build the packages in `dirs`, a package named by `@lkt:pkg:` in another's build arguments
/// first.
pub fn build_packages(
    store: &Store,
    dirs: &[PathBuf],
    opts: &PkgOptions,
) -> Result<Vec<PkgResult>, BuildError> {
    let mut order: Vec<(PathBuf, Package)> = Vec::new();
    for d in dirs {
        visit(d, opts, &mut order, &mut Vec::new())?;
    }
    let mut results = Vec::new();
    let mut refs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (canonical, pkg) in order {
        let dir = pkg.dir.clone();
        let reference = pkg.reference(opts.org.as_deref());
        let r: Reference = reference.parse().map_err(|e| BuildError::Package {
            file: dir.join("build.yml"),
            message: format!("image name {reference:?}: {e}"),
        })?;
        refs.insert(canonical, reference.clone());
        for arch in opts.arches_of(&pkg)? {
            results.push(build_for_arch(
                store, opts, &pkg, &reference, &r, &refs, &arch,
            )?);
        }
    }
    Ok(results)
}

/// Whether [`build_packages`] of `dirs` would run a Dockerfile: some package, or one it names
/// by `@lkt:pkg:`, is not in the store for an architecture it is built for (or `force` is set).
/// A registry may still have it (`--pull`): that is not asked here.
pub fn any_unbuilt(store: &Store, dirs: &[PathBuf], opts: &PkgOptions) -> Result<bool, BuildError> {
    if opts.force {
        return Ok(true);
    }
    let mut order: Vec<(PathBuf, Package)> = Vec::new();
    for d in dirs {
        visit(d, opts, &mut order, &mut Vec::new())?;
    }
    for (_, pkg) in &order {
        let Ok(r) = pkg.reference(opts.org.as_deref()).parse::<Reference>() else {
            return Ok(true);
        };
        for arch in opts.arches_of(pkg)? {
            if store.resolve(&r, &arch).is_err() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Build package `pkg`, named `reference` (`r`), for `arch`, unless the store (or, with
/// `--pull`, its registry) has it; the name keeps the other platforms it has. `refs`: the
/// names of the packages built before, for `@lkt:pkg:` build arguments.
fn build_for_arch(
    store: &Store,
    opts: &PkgOptions,
    pkg: &Package,
    reference: &str,
    r: &Reference,
    refs: &BTreeMap<PathBuf, String>,
    arch: &str,
) -> Result<PkgResult, BuildError> {
    let dir = pkg.dir.clone();
    let reference = reference.to_string();
    let arch = arch.to_string();
    let found = if opts.force {
        None
    } else {
        store
            .resolve(r, &arch)
            .ok()
            .map(|img| img.digest.to_string())
            .or_else(|| pulled(store, r, opts, &arch))
    };
    if let Some(digest) = found {
        report(
            opts,
            Event::PackageBuilt {
                dir: dir.clone(),
                reference: reference.clone(),
                digest,
                built: false,
                steps_run: 0,
                steps_cached: 0,
            },
        );
        return Ok(PkgResult {
            dir,
            reference,
            built: None,
            inputs: None,
        });
    }
    let mut b = opts.base.clone();
    // Without SOURCE_DATE_EPOCH, a committed package is dated by its last commit, so that
    // its image (created time, file times clamped to it) is the same on every machine.
    if b.source_date_epoch.is_none() {
        b.source_date_epoch = pkg.committed;
    }
    // extra-sources SRC:DST are copied into the build context at DST, as LinuxKit does.
    let staged = stage_context(&dir, pkg.spec.extra_sources.as_deref().unwrap_or(&[]))?;
    b.context = staged
        .as_ref()
        .map_or_else(|| dir.clone(), |t| t.path().to_path_buf());
    let dockerfile = match &opts.dockerfile {
        Some(d) => d.clone(),
        None => PathBuf::from(pkg.spec.dockerfile.as_deref().unwrap_or("Dockerfile")),
    };
    if dockerfile.is_absolute()
        || dockerfile
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(BuildError::Package {
            file: dir.join(&opts.build_yml),
            message: format!(
                "dockerfile {}: give a path inside the package directory",
                dockerfile.display()
            ),
        });
    }
    b.dockerfile = b.context.join(&dockerfile);
    // Named below, keeping the platforms the name has.
    b.tags = Vec::new();
    b.arch = arch.clone();
    b.registry.arch = arch.clone();
    b.no_cache |= opts
        .disable_cache
        .unwrap_or(pkg.spec.disable_cache.unwrap_or(false));
    b.network = if opts.network.unwrap_or(pkg.spec.network.unwrap_or(false)) {
        kiln_runtime::Network::Host
    } else {
        kiln_runtime::Network::None
    };
    for arg in pkg.spec.build_args.iter().flatten() {
        let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
        let v = match v.strip_prefix("@lkt:pkg:") {
            Some(path) => {
                let p = fs::canonicalize(dir.join(path)).map_err(io_err(dir.join(path)))?;
                refs.get(&p).cloned().ok_or_else(|| BuildError::Package {
                    file: dir.join("build.yml"),
                    message: format!("buildArgs {k}: package {path} was not built"),
                })?
            }
            None => v.to_string(),
        };
        b.build_args.push((k.to_string(), v));
    }
    for (k, v) in &opts.build_args {
        b.build_args.retain(|(name, _)| name != k);
        b.build_args.push((k.clone(), v.clone()));
    }
    if let Some(label) = pkg.label() {
        b.labels.insert(CONFIG_LABEL.into(), label);
    }
    b.labels
        .insert("org.opencontainers.image.revision".into(), pkg.tag.clone());
    let build_yml = dir.join(&opts.build_yml);
    let inputs = PkgInputs {
        build_yml: (opts.build_yml.clone(), file_sha256(&build_yml)?),
        dockerfile: (
            dockerfile.to_string_lossy().into_owned(),
            file_sha256(&b.dockerfile)?,
        ),
        context: hash_files(&b.context, &|p| p.file_name().is_some_and(|n| n == ".git"))
            .map_err(io_err(&b.context))?,
        build_args: b.build_args.clone(),
        arch: arch.clone(),
        network: b.network == kiln_runtime::Network::Host,
    };
    let built = build(store, &b)?;
    store.tag_platform(r, built.descriptor.clone(), &arch)?;
    report(
        opts,
        Event::PackageBuilt {
            dir: dir.clone(),
            reference: reference.clone(),
            digest: built.manifest.to_string(),
            built: true,
            steps_run: built.executed,
            steps_cached: built.cached,
        },
    );
    Ok(PkgResult {
        dir,
        reference,
        built: Some(built),
        inputs: Some(inputs),
    })
}

/// With `opts.pull`, the digest of `r` after pulling it from its registry, or `None` when it
/// cannot be pulled (it is then built).
fn pulled(store: &Store, r: &Reference, opts: &PkgOptions, arch: &str) -> Option<String> {
    if !opts.pull {
        return None;
    }
    let mut registry = opts.base.registry.clone();
    registry.arch = arch.to_string();
    match kiln_oci::registry::pull(store, r, &registry) {
        Ok(p) => Some(p.digest.to_string()),
        Err(e) => {
            tracing::info!("{r} is not pulled, it is built: {e}");
            None
        }
    }
}

/// Hand `event` to the build options' progress callback.
fn report(opts: &PkgOptions, event: Event) {
    if let Some(p) = &opts.base.progress {
        p(&event);
    }
}

/// A temporary build context: the package directory plus its extra sources, or `None` when the
/// package has none (the directory itself is the context).
fn stage_context(dir: &Path, extra: &[String]) -> Result<Option<tempfile::TempDir>, BuildError> {
    if extra.is_empty() {
        return Ok(None);
    }
    let tmp = tempfile::Builder::new()
        .prefix("kiln-pkg")
        .tempdir()
        .map_err(io_err(dir))?;
    let attrs = crate::fsops::Attrs {
        keep_owner: true,
        ..Default::default()
    };
    let none = |_: &Path| false;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        crate::fsops::copy_tree(
            &entry.path(),
            &tmp.path().join(entry.file_name()),
            attrs,
            &none,
        )?;
    }
    for spec in extra {
        let (src, dst) = spec.split_once(':').ok_or_else(|| BuildError::Package {
            file: dir.join("build.yml"),
            message: format!("extra-sources {spec:?}: write SRC:DST"),
        })?;
        let dst = crate::context::clean(dst);
        if dst.is_empty() {
            return Err(BuildError::Package {
                file: dir.join("build.yml"),
                message: format!("extra-sources {spec:?}: DST must name a path inside the context"),
            });
        }
        let target = tmp.path().join(&dst);
        if let Some(parent) = target.parent() {
            create_dirs(tmp.path(), parent)?;
        }
        crate::fsops::copy_tree(&dir.join(src), &target, attrs, &none)?;
    }
    Ok(Some(tmp))
}

/// Create the missing directories from `root` down to `dir` as 0755, whatever the umask: COPY
/// takes them into the image with their modes.
fn create_dirs(root: &Path, dir: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut p = root.to_path_buf();
    for c in dir.strip_prefix(root).unwrap_or(dir).components() {
        p.push(c);
        if !p.is_dir() {
            fs::create_dir(&p).map_err(io_err(&p))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// Depth-first: the packages `dir` depends on (through `@lkt:pkg:`), then `dir`, each loaded
/// once and paired with its canonical directory.
fn visit(
    dir: &Path,
    opts: &PkgOptions,
    order: &mut Vec<(PathBuf, Package)>,
    stack: &mut Vec<PathBuf>,
) -> Result<(), BuildError> {
    let canonical = fs::canonicalize(dir).map_err(io_err(dir))?;
    if order.iter().any(|(c, _)| *c == canonical) {
        return Ok(());
    }
    if stack.contains(&canonical) {
        return Err(BuildError::Package {
            file: dir.join("build.yml"),
            message: "packages depend on each other in a cycle".into(),
        });
    }
    stack.push(canonical.clone());
    let pkg = Package::load_from(dir, &opts.build_yml, &opts.tags)?;
    for arg in pkg.spec.build_args.iter().flatten() {
        if let Some(path) = arg
            .split_once('=')
            .and_then(|(_, v)| v.strip_prefix("@lkt:pkg:"))
        {
            visit(&dir.join(path), opts, order, stack)?;
        }
    }
    stack.pop();
    order.push((canonical, pkg));
    Ok(())
}
