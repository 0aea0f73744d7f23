//! `kiln cache`: the image store.

use crate::ImageOpts;
use anyhow::{Context, bail};
use kiln_oci::archive::{self, ArchiveFormat};
use kiln_oci::registry::{self, RegistryOptions};
use kiln_oci::{Reference, Store};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List the images in the store
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        images: ImageOpts,
    },
    /// Remove image names (their blobs go at the next `clean`)
    Rm {
        /// Images to remove
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        opts: ImageOpts,
    },
    /// Remove blobs no image uses and abandoned partial downloads
    Clean {
        /// Also drop the build cache (cached steps and unpacked layers of `kiln image build`)
        #[arg(long)]
        build_cache: bool,
        #[command(flatten)]
        images: ImageOpts,
    },
    /// Import an OCI-layout or `docker save` tar (optionally compressed)
    Import {
        /// The archive
        file: PathBuf,
        /// Name for images the archive does not name fully
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        images: ImageOpts,
    },
    /// Export images as an OCI-layout or `docker save` tar
    Export {
        /// Images to export
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file (`-` for standard output)
        #[arg(short = 'o', long, required = true)]
        output: PathBuf,
        /// Archive format: oci or docker
        #[arg(long, default_value = "oci")]
        format: String,
        #[command(flatten)]
        opts: ImageOpts,
    },
    /// Give an image of the store another name
    Tag {
        /// The existing image
        source: String,
        /// The new name
        target: String,
        #[command(flatten)]
        opts: ImageOpts,
    },
    /// Pull images from their registries into the store
    Pull {
        /// Images to pull
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        opts: ImageOpts,
    },
    /// Push images from the store to the registries they name
    Push {
        /// Images to push
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        opts: ImageOpts,
    },
}

pub fn registry_options(o: &ImageOpts) -> anyhow::Result<RegistryOptions> {
    let mut mirrors = Vec::new();
    for m in &o.mirrors {
        mirrors.push(registry::parse_mirror(m).with_context(|| {
            format!("--mirror {m}: write REGISTRY=URL, as docker.io=http://127.0.0.1:5000")
        })?);
    }
    Ok(RegistryOptions {
        mirrors,
        insecure: o.insecure.clone(),
        arch: o.arch.clone(),
        parallel: 4,
        progress: crate::progress::pull_bars(),
    })
}

fn parse(refs: &[String]) -> anyhow::Result<Vec<Reference>> {
    refs.iter()
        .map(|r| r.parse::<Reference>().map_err(Into::into))
        .collect()
}

/// Make sure every image of the manifest is in the store, pulling what is missing (or all, with
/// `always`).
pub fn ensure_images(
    store: &Store,
    o: &ImageOpts,
    set: &kiln_manifest::ManifestSet,
    always: bool,
) -> anyhow::Result<()> {
    let ropts = registry_options(o)?;
    let mut done = std::collections::HashSet::new();
    for (reference, location) in kiln_assemble::image_references(set) {
        let r: Reference = reference
            .parse()
            .with_context(|| format!("{location}: `{reference}`"))?;
        if !done.insert(r.to_string()) {
            continue;
        }
        let present = !always && store.resolve(&r, &o.arch).is_ok();
        if !present {
            tracing::info!("pulling {r}");
            registry::pull(store, &r, &ropts).with_context(|| {
                format!("{location}: image {r} is not in the store and could not be pulled")
            })?;
        }
    }
    Ok(())
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<()> {
    match cmd {
        CacheCommand::Ls { json, images } => {
            let store = images.store()?;
            let entries = store.list()?;
            if json {
                let v: Vec<_> = entries.iter().map(|e| serde_json::json!({"name": e.name, "digest": e.descriptor.digest, "mediaType": e.descriptor.media_type, "size": e.descriptor.size})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in entries {
                    println!("{}\t{}", e.name, e.descriptor.digest);
                }
            }
        }
        CacheCommand::Rm { images, opts } => {
            let store = opts.store()?;
            for r in parse(&images)? {
                if !store.untag(&r)? {
                    bail!("image {r} is not in the store");
                }
            }
        }
        CacheCommand::Clean {
            build_cache,
            images,
        } => {
            let store = images.store()?;
            if build_cache {
                let bytes = kiln_build::clear_build_cache(&store)?;
                println!("removed the build cache, {bytes} bytes");
            }
            let stats = store.gc()?;
            println!("removed {} blobs, {} bytes", stats.blobs, stats.bytes);
        }
        CacheCommand::Import { file, name, images } => {
            let store = images.store()?;
            let name = name.map(|n| n.parse::<Reference>()).transpose()?;
            for n in archive::import(&store, &file, name.as_ref())? {
                println!("{n}");
            }
        }
        CacheCommand::Export {
            images,
            output,
            format,
            opts,
        } => {
            let store = opts.store()?;
            let format = match format.as_str() {
                "oci" => ArchiveFormat::Oci,
                "docker" => ArchiveFormat::Docker,
                f => bail!("unknown archive format `{f}`: use oci or docker"),
            };
            let refs = parse(&images)?;
            if output.as_os_str() == "-" {
                archive::export(&store, &refs, format, std::io::stdout().lock())?;
            } else {
                let mut out = kiln_format::AtomicOutput::create(&output)?;
                archive::export(&store, &refs, format, &mut out)?;
                out.flush()?;
                out.commit()?;
            }
        }
        CacheCommand::Tag {
            source,
            target,
            opts,
        } => {
            let store = opts.store()?;
            let (src, dst): (Reference, Reference) = (source.parse()?, target.parse()?);
            let desc = store
                .lookup(&src)?
                .with_context(|| format!("image {src} is not in the store"))?;
            store.tag(&dst, desc)?;
        }
        CacheCommand::Pull { images, opts } => {
            let store = opts.store()?;
            let ropts = registry_options(&opts)?;
            for r in parse(&images)? {
                let d = registry::pull(&store, &r, &ropts)?;
                println!("{}\t{d}", r.canonical());
            }
        }
        CacheCommand::Push { images, opts } => {
            let store = opts.store()?;
            let ropts = registry_options(&opts)?;
            for r in parse(&images)? {
                let d = registry::push(&store, &r, &ropts)?;
                println!("{}\t{d}", r.canonical());
            }
        }
    }
    Ok(())
}
