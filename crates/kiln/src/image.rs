//! `kiln image build|import|unpack`, and what the commands that run Dockerfiles share.

use crate::cache::registry_options;
use crate::progress::{Event, emit};
use crate::{ImageOpts, images};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_build::{BuildOptions, ImportOptions, LayerCompression};
use kiln_oci::Reference;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an image from a Dockerfile, without a daemon
    Build(BuildArgs),
    /// Make an image from a root filesystem directory or tarball (like `docker import`)
    Import {
        /// Directory or tar archive (plain, gzip or zstd)
        source: PathBuf,
        /// Name for the image
        name: String,
        /// Environment variable for the image config, KEY=VALUE; repeatable
        #[arg(long = "env")]
        env: Vec<String>,
        /// Default command, as a JSON array or a shell string
        #[arg(long)]
        cmd: Option<String>,
        /// Layer compression
        #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
        compression: CompressionArg,
    },
    /// Unpack an image as an OCI runtime bundle (rootfs/ and config.json) for runc or kiln
    Unpack(UnpackArgs),
}

#[derive(Args, Debug)]
pub struct UnpackArgs {
    /// The image
    image: String,
    /// Bundle directory to create (rootfs/ and config.json)
    dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context directory
    context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/dockerfile)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name for the image; repeatable
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The stage to build
    #[arg(long)]
    target: Option<String>,
    /// Build argument NAME=VALUE; repeatable
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Label NAME=VALUE added to the image; repeatable
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Do not use the step cache
    #[arg(long)]
    no_cache: bool,
    /// Networking for RUN steps
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    network: NetworkArg,
    /// Platform to build for, as linux/ARCH (default: --arch)
    #[arg(long)]
    platform: Option<String>,
    /// Write the image digest to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Layer compression
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    compression: CompressionArg,
    /// Grant an entitlement (as BuildKit's): security.insecure lets `RUN --security=insecure`
    /// steps run unsandboxed
    #[arg(long = "allow", value_enum)]
    allow: Vec<Entitlement>,
    /// A secret RUN steps may mount (`RUN --mount=type=secret,id=ID`), as id=ID,src=PATH or
    /// id=ID,env=VAR; repeatable. Never stored in the image or the build cache
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    secrets: Vec<String>,
    #[command(flatten)]
    registry_cache: RegistryCacheArgs,
}

/// `--cache-to` and `--cache-from`, of `image build` and `pkg build`.
#[derive(Args, Debug)]
pub struct RegistryCacheArgs {
    /// Export the step-cache entries of the build to this registry ref (REF or
    /// type=registry,ref=REF[,ignore-error=true]), merged with what it holds; repeatable
    #[arg(long = "cache-to", value_name = "REF")]
    cache_to: Vec<String>,
    /// Use the step-cache entries exported to this registry ref (REF or
    /// type=registry,ref=REF) for steps the local cache misses; repeatable
    #[arg(long = "cache-from", value_name = "REF")]
    cache_from: Vec<String>,
}

impl RegistryCacheArgs {
    /// Add the `--cache-from` and `--cache-to` values to `opts`.
    pub(crate) fn add_to(&self, opts: &mut BuildOptions) -> anyhow::Result<()> {
        use kiln_build::remote_cache::parse_cache_ref;
        for f in &self.cache_from {
            opts.cache_from.push(
                parse_cache_ref("--cache-from", f)
                    .map_err(anyhow::Error::msg)?
                    .reference,
            );
        }
        for t in &self.cache_to {
            opts.cache_to
                .push(parse_cache_ref("--cache-to", t).map_err(anyhow::Error::msg)?);
        }
        Ok(())
    }
}

/// Add the `--secret` values `specs` to `opts`.
pub(crate) fn add_secrets(opts: &mut BuildOptions, specs: &[String]) -> anyhow::Result<()> {
    for s in specs {
        let (id, source) = kiln_build::SecretSource::parse(s).map_err(anyhow::Error::msg)?;
        opts.secrets.insert(id, source);
    }
    Ok(())
}

/// `--network` of `kiln image build`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum NetworkArg {
    /// The host's network (BuildKit's default for RUN steps)
    #[value(alias = "default")]
    Host,
    /// No network: only a loopback interface
    None,
}

/// `--allow` of the commands that run Dockerfiles (BuildKit's entitlements).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entitlement {
    /// `RUN --security=insecure` steps run with all of root's capabilities and no sandbox
    #[value(name = "security.insecure")]
    SecurityInsecure,
}

/// `--compression` of the commands that write layers.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum CompressionArg {
    /// gzip: every consumer reads it
    Gzip,
    /// zstd: faster and smaller; Docker 23+
    Zstd,
    /// Uncompressed layers
    None,
}

impl From<CompressionArg> for LayerCompression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::Gzip => LayerCompression::Gzip,
            CompressionArg::Zstd => LayerCompression::Zstd,
            CompressionArg::None => LayerCompression::None,
        }
    }
}

fn pair(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{what} {s:?}: write NAME=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// SOURCE_DATE_EPOCH, when set: the time of everything kiln generates.
pub(crate) fn epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v}: not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// The Dockerfile of a build given no `-f`: CONTEXT/Dockerfile, or BuildKit's fallback
/// CONTEXT/dockerfile when only that exists.
fn default_dockerfile(context: &std::path::Path) -> PathBuf {
    let upper = context.join("Dockerfile");
    let lower = context.join("dockerfile");
    if !upper.exists() && lower.is_file() {
        lower
    } else {
        upper
    }
}

pub(crate) fn base_options(images: &ImageOpts) -> anyhow::Result<BuildOptions> {
    let mut b = BuildOptions::new(".", "Dockerfile");
    b.arch = kiln_oci::spec::normalize_arch(images.arch()).to_string();
    b.registry = registry_options(images)?;
    b.source_date_epoch = epoch()?;
    b.progress = Some(crate::progress::reporter());
    // RUN steps' output is in their logs; plain progress with -v also shows it as it comes,
    // tty progress its last line.
    b.echo_run_output = crate::progress::echo_run_output();
    b.run_output = crate::progress::run_output();
    Ok(b)
}

pub fn run_image(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Build(a) => {
            crate::rootless::run_as_root_of_a_user_namespace()?;
            let store = images().store()?;
            let mut b = base_options(images())?;
            b.dockerfile = a
                .file
                .clone()
                .unwrap_or_else(|| default_dockerfile(&a.context));
            b.context = a.context.clone();
            b.target = a.target.clone();
            b.no_cache = a.no_cache;
            b.compression = a.compression.into();
            b.allow_insecure = a.allow.contains(&Entitlement::SecurityInsecure);
            if let Some(p) = &a.platform {
                b.arch = p.rsplit('/').next().unwrap_or(p).to_string();
            }
            b.network = match a.network {
                NetworkArg::Host => kiln_runtime::Network::Host,
                NetworkArg::None => kiln_runtime::Network::None,
            };
            for s in &a.build_args {
                b.build_args.push(pair(s, "--build-arg")?);
            }
            add_secrets(&mut b, &a.secrets)?;
            a.registry_cache.add_to(&mut b)?;
            for s in &a.labels {
                let (k, v) = pair(s, "--label")?;
                b.labels.insert(k, v);
            }
            for t in &a.tags {
                b.tags.push(
                    t.parse::<Reference>()
                        .with_context(|| format!("--tag {t}"))?,
                );
            }
            let built = kiln_build::build(&store, &b)?;
            emit(&Event::ImageBuilt {
                digest: built.manifest.to_string(),
                steps_run: built.executed,
                steps_cached: built.cached,
            });
            if let Some(f) = &a.iidfile {
                std::fs::write(f, built.manifest.to_string())
                    .with_context(|| format!("writing {}", f.display()))?;
            }
            println!("{}", built.manifest);
        }
        ImageCommand::Unpack(u) => {
            let store = images().store()?;
            let r: Reference = u
                .image
                .parse()
                .with_context(|| format!("image name {}", u.image))?;
            kiln_assemble::unpack_bundle(&store, &r, images().arch(), &u.dir)
                .with_context(|| format!("unpacking {r} into {}", u.dir.display()))?;
            eprintln!("unpacked {r} into {}", u.dir.display());
        }
        ImageCommand::Import {
            source,
            name,
            env,
            cmd,
            compression,
        } => {
            let store = images().store()?;
            let r: Reference = name.parse().with_context(|| format!("image name {name}"))?;
            let cmd = match cmd {
                Some(c) if c.trim_start().starts_with('[') => Some(
                    serde_json::from_str::<Vec<String>>(&c)
                        .with_context(|| format!("--cmd {c}: not a JSON array of strings"))?,
                ),
                Some(c) => Some(vec!["/bin/sh".into(), "-c".into(), c]),
                None => None,
            };
            let opts = ImportOptions {
                arch: kiln_oci::spec::normalize_arch(images().arch()).to_string(),
                env,
                cmd,
                source_date_epoch: epoch()?,
                compression: compression.into(),
            };
            let (digest, _) = kiln_build::import(&store, &source, &r, &opts)
                .with_context(|| format!("importing {}", source.display()))?;
            println!("{r}\t{digest}");
        }
    }
    Ok(())
}
