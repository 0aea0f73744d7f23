//! `kiln pkg build|push|show-tag`: LinuxKit's package commands, with its flags.

use crate::image::{CompressionArg, Entitlement, base_options};
use crate::images;
use crate::progress::{Event, emit};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use kiln_build::pkg::{Package, PkgOptions, build_packages};
use kiln_build::pkg_tag::{HashSource, TagOptions};
use kiln_oci::Reference;
use std::path::PathBuf;

/// `kiln pkg`: the flags every package command shares (LinuxKit's), then the command.
#[derive(Args, Debug)]
pub struct PkgArgs {
    #[command(flatten)]
    common: PkgCommon,
    #[command(subcommand)]
    command: PkgCommand,
}

/// LinuxKit's `pkg` flags. Booleans also take `=true` or `=false`, as LinuxKit's do.
#[derive(Args, Debug)]
struct PkgCommon {
    /// Build without the step cache (overrides build.yml's disable-cache)
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    disable_cache: Option<bool>,
    /// Build with the step cache (overrides build.yml's disable-cache)
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    enable_cache: Option<bool>,
    /// RUN steps get no network (overrides build.yml's network)
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    nonetwork: Option<bool>,
    /// RUN steps get the host's network (overrides build.yml's network)
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    network: Option<bool>,
    /// The images' org (namespace), overriding build.yml's [default: LINUXKIT_PKG_ORG, else
    /// build.yml's org, else linuxkit]
    #[arg(long, global = true)]
    org: Option<String>,
    /// The name of the file that describes a package
    #[arg(long, global = true, default_value = "build.yml")]
    build_yml: String,
    /// A fixed hash instead of the git tree hash
    #[arg(long, global = true)]
    hash: Option<String>,
    /// The tag, a template in which {{.Hash}} stands for the hash (overrides build.yml's tag)
    #[arg(long, global = true)]
    tag: Option<String>,
    /// The git commit whose tree is hashed (only HEAD can be dirty)
    #[arg(long, global = true, default_value = "HEAD")]
    hash_commit: String,
    /// A parent directory of the package whose tree hash is the package's
    #[arg(long, global = true)]
    hash_path: Option<PathBuf>,
    /// Treat every package as having uncommitted changes
    #[arg(long, global = true)]
    force_dirty: bool,
    /// Org $USER and hash `dev`, for local development
    #[arg(long, global = true)]
    dev: bool,
    /// Tag packages with kiln's hash of their files (names, modes, contents, and the packages
    /// they build on) instead of the git tree hash; outside a git work tree it is always used
    #[arg(long, global = true)]
    content_hash: bool,
    /// Registry credentials REGISTRY=USER:PASSWORD or REGISTRY=TOKEN; comma-separated or
    /// repeated (the Docker config file's are used otherwise)
    #[arg(long, global = true, value_delimiter = ',')]
    registry_creds: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PkgCommand {
    /// Build packages (directories with build.yml and a Dockerfile)
    Build(PkgBuildArgs),
    /// Build packages and push them (LinuxKit's older spelling of `pkg build --push`)
    Push(PkgBuildArgs),
    /// Print a package's image name with its tag
    ShowTag {
        /// Package directories
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Print the full name, as docker.io/linuxkit/init:TAG
        #[arg(long)]
        canonical: bool,
    },
}

#[derive(Args, Debug)]
struct PkgBuildArgs {
    /// Package directories
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Build even if the image is already in the store
    #[arg(long)]
    force: bool,
    /// Pull a package's image from its registry when the store lacks it; build only what
    /// neither has
    #[arg(long)]
    pull: bool,
    /// Push the images to their registry after building
    #[arg(long)]
    push: bool,
    /// With --push: also push each image as ORG/IMAGE:RELEASE (not for dirty packages)
    #[arg(long)]
    release: Option<String>,
    /// With --push: push what the store has without building
    #[arg(long)]
    nobuild: bool,
    /// Do not use the step cache
    #[arg(long, alias = "ignore-cached")]
    no_cache: bool,
    /// The Dockerfile, relative to the package directory (overrides build.yml's)
    #[arg(long)]
    dockerfile: Option<PathBuf>,
    /// File of build arguments, one NAME=VALUE a line, added to build.yml's; repeatable
    #[arg(long = "build-arg-file", value_name = "PATH")]
    build_arg_files: Vec<PathBuf>,
    /// Platforms to build, as linux/ARCH, comma-separated [default: --arch when given, else
    /// the `arches` of each package's build.yml, else this machine's]
    #[arg(long, value_delimiter = ',')]
    platforms: Vec<String>,
    /// Platforms not to build, as linux/ARCH, comma-separated
    #[arg(long, value_delimiter = ',', conflicts_with = "platforms")]
    skip_platforms: Vec<String>,
    /// Print what would be built and stop
    #[arg(long)]
    dry_run: bool,
    /// Layer compression
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// Grant an entitlement (as BuildKit's): security.insecure lets `RUN
    /// --security=insecure` steps run unsandboxed
    #[arg(long = "allow", value_enum)]
    allow: Vec<Entitlement>,
    /// Sign the images (cosign-compatible signatures, kept in the store and pushed with
    /// --push) and their provenance with --key
    #[arg(long, requires = "key")]
    sign: bool,
    /// The private key (cosign's format; its password from COSIGN_PASSWORD or the terminal)
    /// that signs the provenance, and with --sign the images
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --push: push a multi-platform index too (kiln pushes what it built; accepted)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    manifest: Option<bool>,
    /// Also load the built images into the Docker engine DOCKER_HOST names (its API socket;
    /// default /var/run/docker.sock), as LinuxKit stores them there; kiln keeps them in its
    /// store too
    #[arg(long)]
    docker: bool,
    /// LinuxKit's SBOM scanner image (kiln writes no SBOM yet; accepted and ignored)
    #[arg(long, value_name = "IMAGE")]
    sbom_scanner: Option<String>,
    /// An SSH agent for RUN --mount=type=ssh (kiln does not forward agents; refused when given)
    #[arg(long)]
    ssh: Vec<String>,
    /// A secret RUN steps may mount (`RUN --mount=type=secret,id=ID`), as id=ID,src=PATH or
    /// id=ID,env=VAR; repeatable
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    secrets: Vec<String>,
    #[command(flatten)]
    registry_cache: crate::image::RegistryCacheArgs,
    #[command(flatten)]
    builder: BuilderFlags,
}

/// LinuxKit's flags for its BuildKit builder container. kiln builds in-process and has no
/// builder: they are accepted and ignored.
#[derive(Args, Debug)]
struct BuilderFlags {
    /// LinuxKit's builder contexts (no builder in kiln: ignored)
    #[arg(long, hide = true)]
    builders: Option<String>,
    /// LinuxKit's builder container name (ignored)
    #[arg(long, hide = true)]
    builder_name: Option<String>,
    /// LinuxKit's builder image (ignored)
    #[arg(long, hide = true)]
    builder_image: Option<String>,
    /// LinuxKit's builder configuration file (ignored)
    #[arg(long, hide = true)]
    builder_config: Option<String>,
    /// Restart LinuxKit's builder (ignored)
    #[arg(long, hide = true)]
    builder_restart: bool,
    /// Pull the Dockerfiles' FROM images into the store first (kiln pulls them as it builds)
    #[arg(long, hide = true)]
    precache_images: bool,
}

impl BuilderFlags {
    fn given(&self) -> bool {
        self.builders.is_some()
            || self.builder_name.is_some()
            || self.builder_image.is_some()
            || self.builder_config.is_some()
            || self.builder_restart
            || self.precache_images
    }
}

/// Whether `pkg build` (or `pkg push`) runs Dockerfile steps.
pub fn runs_build_steps(a: &PkgArgs) -> bool {
    matches!(a.command, PkgCommand::Build(_) | PkgCommand::Push(_))
}

/// Two LinuxKit flags that say the opposite of each other (`--network` and `--nonetwork`).
fn either(
    yes: Option<bool>,
    no: Option<bool>,
    names: (&str, &str),
) -> anyhow::Result<Option<bool>> {
    match (yes, no) {
        (Some(_), Some(_)) => bail!(
            "--{} and --{} contradict each other: give one",
            names.0,
            names.1
        ),
        (Some(y), None) => Ok(Some(y)),
        (None, Some(n)) => Ok(Some(!n)),
        (None, None) => Ok(None),
    }
}

impl PkgCommon {
    fn tag_options(&self) -> TagOptions {
        TagOptions {
            source: if self.content_hash {
                HashSource::Content
            } else {
                HashSource::Git
            },
            hash: self
                .hash
                .clone()
                .or_else(|| self.dev.then(|| "dev".to_string())),
            commit: self.hash_commit.clone(),
            hash_path: self.hash_path.clone(),
            force_dirty: self.force_dirty,
            template: self.tag.clone(),
        }
    }

    /// The org: the flag, else LINUXKIT_PKG_ORG, else $USER with --dev.
    fn org(&self) -> anyhow::Result<Option<String>> {
        if let Some(o) = &self.org {
            return Ok(Some(o.clone()));
        }
        if self.dev {
            let user = std::env::var("USER").context("--dev uses $USER as the org: set USER")?;
            return Ok(Some(user));
        }
        Ok(std::env::var("LINUXKIT_PKG_ORG")
            .ok()
            .filter(|o| !o.is_empty()))
    }

    fn options(&self) -> anyhow::Result<PkgOptions> {
        let mut opts = PkgOptions::new(base_options(images())?);
        opts.org = self.org()?;
        opts.tags = self.tag_options();
        opts.build_yml = self.build_yml.clone();
        opts.network = either(self.network, self.nonetwork, ("network", "nonetwork"))?;
        opts.disable_cache = either(
            self.disable_cache,
            self.enable_cache,
            ("disable-cache", "enable-cache"),
        )?;
        for cred in &self.registry_creds {
            let (registry, secret) = cred.split_once('=').with_context(|| {
                format!("--registry-creds {cred:?}: write REGISTRY=USER:PASSWORD or REGISTRY=TOKEN")
            })?;
            let Some((username, password)) = secret.split_once(':') else {
                bail!(
                    "--registry-creds {registry}=...: kiln takes USER:PASSWORD; for a token, \
                     give it as the password of any user name the registry accepts"
                );
            };
            opts.base.registry.credentials.push((
                registry_host(registry),
                kiln_oci::transport::Credentials {
                    username: username.into(),
                    password: password.into(),
                },
            ));
        }
        Ok(opts)
    }
}

/// The host of a registry given as a URL (`https://index.docker.io/v1/`) or a host.
fn registry_host(registry: &str) -> String {
    let host = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.into(),
    }
}

/// Build arguments from LinuxKit's `--build-arg-file`s: one NAME=VALUE a line (blank lines
/// skipped).
fn read_build_arg_files(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut args = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--build-arg-file {}: cannot read it", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            if v.starts_with("@lkt:") {
                bail!(
                    "{}:{}: {k}: `@lkt:` values are read from build.yml's buildArgs only; \
                     move the line there",
                    f.display(),
                    n + 1
                );
            }
            args.push((k.to_string(), v.to_string()));
        }
    }
    Ok(args)
}

/// The architectures to build, when the command line names them: `--platforms`, else an
/// explicit `--arch`; `None` leaves each package's `arches` (or this machine's) in force.
fn platforms(a: &PkgBuildArgs) -> Option<Vec<String>> {
    let arch_of =
        |p: &str| kiln_oci::spec::normalize_arch(p.rsplit('/').next().unwrap_or(p)).to_string();
    if !a.platforms.is_empty() {
        return Some(a.platforms.iter().map(|p| arch_of(p)).collect());
    }
    images()
        .arch_given()
        .then(|| vec![arch_of(images().arch())])
}

pub fn run(args: PkgArgs) -> anyhow::Result<()> {
    let common = &args.common;
    match args.command {
        PkgCommand::ShowTag { dirs, canonical } => {
            let opts = common.options()?;
            for d in dirs {
                let p = Package::load_from(&d, &opts.build_yml, &opts.tags)?;
                let name = p.reference(opts.org.as_deref());
                if canonical {
                    let r: Reference =
                        name.parse().with_context(|| format!("image name {name}"))?;
                    println!("{r}");
                } else {
                    println!("{name}");
                }
            }
            Ok(())
        }
        PkgCommand::Build(b) => build(common, b, false),
        PkgCommand::Push(b) => {
            eprintln!("note: `pkg push` is `pkg build --push`");
            build(common, b, true)
        }
    }
}

fn build(common: &PkgCommon, a: PkgBuildArgs, push: bool) -> anyhow::Result<()> {
    crate::rootless::run_as_root_of_a_user_namespace()?;
    let push = push || a.push;
    // --docker: the engine is named (DOCKER_HOST checked) before anything is built.
    let engine = a
        .docker
        .then(kiln_oci::docker_engine::DockerEngine::from_env)
        .transpose()?;
    if !a.ssh.is_empty() {
        bail!(
            "--ssh: kiln does not forward SSH agents into RUN steps; fetch with a secret or in the context instead"
        );
    }
    if a.builder.given() {
        tracing::info!("kiln builds without a builder container: the --builder* flags are ignored");
    }
    if a.sbom_scanner.is_some() {
        tracing::info!("kiln writes no SBOM yet: --sbom-scanner is ignored");
    }
    if (a.release.is_some() || a.nobuild) && !push {
        bail!("--release and --nobuild go with --push");
    }
    let store = images().store()?;
    let mut opts = common.options()?;
    opts.platforms = platforms(&a);
    opts.skip_platforms = a
        .skip_platforms
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .collect();
    opts.base.no_cache = a.no_cache;
    opts.base.compression = a.compression.into();
    opts.base.allow_insecure = a.allow.contains(&Entitlement::SecurityInsecure);
    crate::image::add_secrets(&mut opts.base, &a.secrets)?;
    a.registry_cache.add_to(&mut opts.base)?;
    opts.force = a.force;
    opts.pull = a.pull;
    opts.dockerfile = a.dockerfile.clone();
    opts.build_args = read_build_arg_files(&a.build_arg_files)?;
    let key = if a.dry_run {
        None
    } else {
        a.key
            .as_deref()
            .map(|k| {
                crate::trust::load_signing_key(k).with_context(|| format!("--key {}", k.display()))
            })
            .transpose()?
    };
    let signer = key.as_ref().map(|k| k as &dyn kiln_trust::Signer);
    if a.dry_run || a.nobuild {
        for d in &a.dirs {
            let p = Package::load_from(d, &opts.build_yml, &opts.tags)?;
            let name = p.reference(opts.org.as_deref());
            if a.dry_run {
                println!("would build {name}");
            } else {
                if let Some(signer) = signer {
                    crate::provenance::sign_stored(&store, &name, signer)?;
                }
                push_one(
                    &store,
                    &opts.base.registry,
                    &name,
                    a.release.as_deref(),
                    &p.tag,
                )?;
                push_trust(
                    &store,
                    &opts.base.registry,
                    &name,
                    a.sign.then_some(signer).flatten(),
                )?;
                println!("{name}");
            }
        }
        return Ok(());
    }
    let results = build_packages(&store, &a.dirs, &opts)?;
    if results.is_empty() && !a.dirs.is_empty() {
        eprintln!("skipping every package: --skip-platforms leaves no platform to build");
    }
    crate::provenance::record_packages(&store, &results, signer, opts.base.source_date_epoch)?;
    if let Some(engine) = &engine {
        load_into_engine(engine, &store, &results)?;
    }
    // A package built for several platforms has one result each, and one name.
    let mut seen = std::collections::BTreeSet::new();
    for r in results.iter().filter(|r| seen.insert(r.reference.clone())) {
        if push {
            let tag = r.reference.rsplit_once(':').map_or("", |(_, t)| t);
            push_one(
                &store,
                &opts.base.registry,
                &r.reference,
                a.release.as_deref(),
                tag,
            )?;
            push_trust(
                &store,
                &opts.base.registry,
                &r.reference,
                a.sign.then_some(signer).flatten(),
            )?;
        } else if let Some(signer) = signer.filter(|_| a.sign) {
            sign_one(&store, &r.reference, signer)?;
        }
        println!("{}", r.reference);
    }
    Ok(())
}

/// `pkg build --docker`: load the images of `results` from the store into `engine`.
fn load_into_engine(
    engine: &kiln_oci::docker_engine::DockerEngine,
    store: &kiln_oci::Store,
    results: &[kiln_build::pkg::PkgResult],
) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let refs = results
        .iter()
        .filter(|r| seen.insert(r.reference.clone()))
        .map(|r| {
            r.reference
                .parse::<Reference>()
                .with_context(|| format!("image name {}", r.reference))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if refs.is_empty() {
        return Ok(());
    }
    let loaded = engine.load(store, &refs)?;
    tracing::info!(
        "loaded {} into the Docker engine at {} ({} bytes sent)",
        loaded.names.join(", "),
        engine.socket().display(),
        loaded.bytes
    );
    Ok(())
}

/// Sign the image `name` of the store with `key`; the signature is kept in the store.
fn sign_one(
    store: &kiln_oci::Store,
    name: &str,
    key: &dyn kiln_trust::Signer,
) -> anyhow::Result<(Reference, kiln_oci::Digest)> {
    let reference: Reference = name.parse()?;
    let desc = store
        .lookup(&reference)?
        .with_context(|| format!("{name} is not in the store: build it first"))?;
    let digest: kiln_oci::Digest = desc.digest.parse()?;
    kiln_trust::signature::sign_image(store, &reference, &digest, key)
        .with_context(|| format!("signing {}@{digest}", reference.name()))?;
    tracing::info!("signed {}@{digest}", reference.name());
    Ok((reference, digest))
}

/// After `name` was pushed: with `sign`, sign it and push the signature; push its provenance
/// when the store holds a signed one.
fn push_trust(
    store: &kiln_oci::Store,
    ropts: &kiln_oci::registry::RegistryOptions,
    name: &str,
    sign: Option<&dyn kiln_trust::Signer>,
) -> anyhow::Result<()> {
    if let Some(key) = sign {
        let (reference, digest) = sign_one(store, name, key)?;
        kiln_trust::signature::push_signatures(store, &reference, &digest, ropts)
            .with_context(|| format!("pushing the signature of {}@{digest}", reference.name()))?;
    }
    crate::provenance::push(store, name, ropts)?;
    Ok(())
}

/// Push `name` from the store with `ropts` (the build's, `--registry-creds` included), and as
/// ORG/IMAGE:RELEASE too with `release`.
fn push_one(
    store: &kiln_oci::Store,
    ropts: &kiln_oci::registry::RegistryOptions,
    name: &str,
    release: Option<&str>,
    tag: &str,
) -> anyhow::Result<()> {
    let reference: Reference = name.parse()?;
    if store.lookup(&reference)?.is_none() {
        bail!("{name} is not in the store: build it first (without --nobuild)");
    }
    kiln_oci::registry::push(store, &reference, ropts)
        .with_context(|| format!("pushing {name}"))?;
    emit(&Event::ImagePushed {
        reference: name.to_string(),
    });
    if let Some(release) = release {
        if tag.contains("-dirty") {
            bail!("--release {release}: {name} has uncommitted changes; commit them first");
        }
        let (repo, _) = name.rsplit_once(':').unwrap_or((name, ""));
        let released: Reference = format!("{repo}:{release}")
            .parse()
            .with_context(|| format!("--release {release}"))?;
        let desc = store
            .lookup(&reference)?
            .with_context(|| format!("{name} is not in the store"))?;
        store.tag(&released, desc)?;
        kiln_oci::registry::push(store, &released, ropts)
            .with_context(|| format!("pushing {released}"))?;
        emit(&Event::ImagePushed {
            reference: released.to_string(),
        });
    }
    Ok(())
}
