//! `kiln cache`: the image store.

use crate::{ImageOpts, images};
use anyhow::{Context, bail};
use kiln_oci::Reference;
use kiln_oci::archive::{self, ArchiveFormat};
use kiln_oci::registry::{self, RegistryOptions, TransferLimits};
use kiln_oci::usage::{self, ImageUsage};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List the images in the store: name, digest, platforms, age and size
    Ls {
        /// Print JSON (every field, see docs/store.md)
        #[arg(long)]
        json: bool,
    },
    /// Show the space the store takes: per image (unique and shared), unreferenced blobs,
    /// layer indexes, the build cache, initrd segments and SBOM findings
    Du {
        /// Print JSON (every field, see docs/store.md)
        #[arg(long)]
        json: bool,
    },
    /// Remove image names (their blobs go at the next `clean`)
    Rm {
        /// Images to remove
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove only images their registry holds with the same digest (LinuxKit's flag)
        #[arg(long)]
        published_only: bool,
    },
    /// Remove blobs no image uses, abandoned partial downloads and initrd segments unused for a
    /// week
    Clean {
        /// Also drop the build cache (cached steps and unpacked layers of `kiln image build`)
        /// and every cached initrd segment and SBOM finding
        #[arg(long)]
        build_cache: bool,
        /// First remove the names of images their registry holds with the same digest, then
        /// clean (LinuxKit's flag: what was published can be pulled again)
        #[arg(long)]
        published_only: bool,
    },
    /// Import an OCI-layout or `docker save` tar (optionally compressed; `-` for standard
    /// input)
    Import {
        /// The archive
        file: PathBuf,
        /// Name for images the archive does not name fully
        #[arg(long)]
        name: Option<String>,
    },
    /// Export images as an OCI-layout or `docker save` tar, or one image's root filesystem
    Export {
        /// Images to export
        #[arg(required = true)]
        images: Vec<String>,
        /// Output file (`-` for standard output)
        #[arg(short = 'o', long, alias = "outfile", required = true)]
        output: PathBuf,
        /// Archive format
        #[arg(long, value_enum, default_value_t = ArchiveArg::Oci)]
        format: ArchiveArg,
        /// Platform to export (filesystem and docker formats), as linux/ARCH [default: --arch]
        #[arg(long)]
        platform: Option<String>,
        /// Name the exported image this way instead (one image only; oci and docker formats)
        #[arg(long)]
        name: Option<String>,
    },
    /// Give an image of the store another name
    Tag {
        /// The existing image
        source: String,
        /// The new name
        target: String,
    },
    /// Pull images from their registries into the store
    ///
    /// Every request must finish within KILN_REGISTRY_TIMEOUT seconds (default 3600), and a
    /// registry must send at least KILN_REGISTRY_MIN_RATE (BYTES/SECONDS, default 16384/30):
    /// a registry that sends less, or does not answer within the window, is given up on.
    Pull {
        /// Images to pull
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Push images from the store to the registries they name
    ///
    /// The limits of `kiln cache pull` apply: KILN_REGISTRY_MIN_RATE is the least a registry
    /// must take of an upload in every window, and an upload's deadline grows with its size
    /// at that rate on top of KILN_REGISTRY_TIMEOUT.
    Push {
        /// Images to push
        #[arg(required = true)]
        images: Vec<String>,
        /// Push the image under this name instead (one image only)
        #[arg(long)]
        remote_name: Option<String>,
        /// Also push each platform of an index under TAG-ARCH (LinuxKit's arch tags)
        #[arg(long)]
        with_arch_tags: bool,
        /// Push even when the registry has the name already (kiln always replaces it)
        #[arg(long)]
        r#override: bool,
    },
}

/// `--format` of `kiln cache export`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveArg {
    /// An OCI image layout
    Oci,
    /// `docker save`'s layout, for `docker load`
    Docker,
    /// The image's root filesystem as a plain tar (its layers flattened)
    Filesystem,
}

/// How long `kiln cache clean` keeps an initrd segment no build has used.
const SEGMENT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

pub fn registry_options(o: &ImageOpts) -> anyhow::Result<RegistryOptions> {
    let mut mirrors = Vec::new();
    // The environment's first, so that flags given later take precedence (as in LinuxKit).
    let env = crate::compat::flavour().env_mirrors();
    for m in env.iter().chain(&o.mirrors) {
        let (registry, url) = registry::parse_mirror(m).with_context(|| {
            format!(
                "--mirror {m}: write REGISTRY=URL, as docker.io=http://127.0.0.1:5000, or a \
                 URL for every registry"
            )
        })?;
        mirrors.retain(|(r, _)| *r != registry);
        mirrors.push((registry, url));
    }
    let mut ca_certs = Vec::new();
    for f in &o.cert_files {
        let pem = std::fs::read(f)
            .with_context(|| format!("--cert-file {}: cannot read it", f.display()))?;
        kiln_oci::transport::check_ca_certificates(&pem)
            .map_err(|why| anyhow::anyhow!("--cert-file {}: {why}", f.display()))?;
        ca_certs.push(pem);
    }
    Ok(RegistryOptions {
        mirrors,
        ca_certs,
        credentials: Vec::new(),
        insecure: o.insecure.clone(),
        arch: o.arch().to_string(),
        parallel: 4,
        progress: crate::progress::pull_bars(),
        limits: transfer_limits()?,
    })
}

/// Registry deadlines from the environment: `KILN_REGISTRY_TIMEOUT=SECONDS` (the overall
/// deadline of one request) and `KILN_REGISTRY_MIN_RATE=BYTES/SECONDS` (at least BYTES in
/// every window of SECONDS, which is also the longest wait for a connection or a response).
fn transfer_limits() -> anyhow::Result<TransferLimits> {
    let mut limits = TransferLimits::default();
    if let Some(v) = std::env::var_os("KILN_REGISTRY_TIMEOUT") {
        let v = v.to_string_lossy();
        limits.request_timeout = registry::parse_seconds(&v).with_context(|| {
            format!("KILN_REGISTRY_TIMEOUT={v}: write a number of seconds, as 3600")
        })?;
    }
    if let Some(v) = std::env::var_os("KILN_REGISTRY_MIN_RATE") {
        let v = v.to_string_lossy();
        let (bytes, window) = TransferLimits::parse_min_rate(&v).with_context(|| {
            format!("KILN_REGISTRY_MIN_RATE={v}: write BYTES/SECONDS, as 16384/30")
        })?;
        limits.min_bytes_per_window = bytes;
        limits.stall_window = window;
    }
    Ok(limits)
}

/// Say on standard error what is wrong with the blobs of listed images.
fn warn_problems(images: &[ImageUsage]) {
    for img in images {
        for p in &img.problems {
            eprintln!("warning: {}: {p}; pull or import the image again", img.name);
        }
    }
}

/// Rows under a header, each column as wide as its widest cell, the last one unpadded.
fn print_table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, header.to_vec())?;
    for row in rows {
        line(out, row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// A listing piped into `head` stops early: not an error.
fn closed_pipe_is_fine(r: std::io::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r.context("writing to standard output")?),
    }
}

/// The first 12 hex digits of a digest, as `docker image ls` shows an image id.
fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn print_ls(out: &mut dyn Write, images: &[ImageUsage]) -> std::io::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            let created = match (i.created_unix, &i.created) {
                (Some(t), _) => usage::relative_time(t, now),
                (None, Some(c)) => c.clone(),
                (None, None) => "-".into(),
            };
            let platforms = if i.platforms.is_empty() {
                "-".into()
            } else {
                i.platforms.join(",")
            };
            vec![
                i.name.clone(),
                short_digest(&i.digest),
                platforms,
                created,
                usage::human_size(i.total_size),
            ]
        })
        .collect();
    print_table(
        out,
        &["NAME", "DIGEST", "PLATFORMS", "CREATED", "SIZE"],
        &rows,
    )
}

fn print_du(out: &mut dyn Write, du: &usage::DiskUsage) -> std::io::Result<()> {
    let mut rows: Vec<Vec<String>> = du
        .images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                usage::human_size(i.unique_size),
                usage::human_size(i.shared_size),
                usage::human_size(i.total_size),
            ]
        })
        .collect();
    print_table(out, &["IMAGE", "UNIQUE", "SHARED", "SIZE"], &rows)?;
    writeln!(out)?;
    rows = vec![
        vec![
            "blobs".into(),
            du.blobs.files.to_string(),
            usage::human_size(du.blobs.bytes),
        ],
        vec![
            "  of which no name references".into(),
            du.unreferenced.files.to_string(),
            usage::human_size(du.unreferenced.bytes),
        ],
    ];
    for a in &du.areas {
        let mut name = a.name.clone();
        if a.unreadable > 0 {
            name.push_str(&format!(" ({} entries unreadable)", a.unreadable));
        }
        rows.push(vec![
            name,
            a.count.files.to_string(),
            usage::human_size(a.count.bytes),
        ]);
    }
    rows.push(vec![
        "total".into(),
        String::new(),
        usage::human_size(du.total),
    ]);
    print_table(out, &["AREA", "FILES", "SIZE"], &rows)
}

fn parse(refs: &[String]) -> anyhow::Result<Vec<Reference>> {
    refs.iter()
        .map(|r| r.parse::<Reference>().map_err(Into::into))
        .collect()
}

pub fn run(cmd: CacheCommand) -> anyhow::Result<()> {
    let store = images().store()?;
    match cmd {
        CacheCommand::Ls { json } => {
            let list = usage::list_images(&store)?;
            warn_problems(&list);
            let mut out = std::io::stdout().lock();
            let printed = if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)
            } else {
                print_ls(&mut out, &list)
            };
            closed_pipe_is_fine(printed)?;
        }
        CacheCommand::Du { json } => {
            let areas = [
                ("build cache", kiln_build::build_cache_dir(&store)),
                (
                    "initrd segments",
                    kiln_format::segment_cache_dir(store.root()),
                ),
                ("SBOM findings", kiln_sbom::findings_dir(store.root())),
            ];
            let du = usage::disk_usage(&store, &areas)?;
            warn_problems(&du.images);
            let mut out = std::io::stdout().lock();
            let printed = if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&du)?)
            } else {
                print_du(&mut out, &du)
            };
            closed_pipe_is_fine(printed)?;
        }
        CacheCommand::Rm {
            images: names,
            published_only,
        } => {
            let ropts = registry_options(images())?;
            for r in parse(&names)? {
                if published_only && !published(&store, &ropts, &r)? {
                    println!("kept {r}: its registry does not hold this digest");
                    continue;
                }
                if !store.untag(&r)? {
                    bail!("image {r} is not in the store");
                }
                println!("removed {r}");
            }
        }
        CacheCommand::Clean {
            build_cache,
            published_only,
        } => {
            // A rootless build's cache holds files of the user's subordinate ids: as that user,
            // removing it takes the same user namespace the build ran in.
            if build_cache {
                crate::rootless::run_as_root_of_a_user_namespace()?;
            }
            if published_only {
                let ropts = registry_options(images())?;
                for entry in store.list()? {
                    let r: Reference = entry.name.parse()?;
                    if published(&store, &ropts, &r)? {
                        store.untag(&r)?;
                        println!("removed {r}: its registry holds it");
                    }
                }
            }
            if build_cache {
                let bytes = kiln_build::clear_build_cache(&store)?;
                println!("removed the build cache, {bytes} bytes");
                // What the SBOM read from images' package databases: derived, read again
                // from the layers when missing.
                let findings = kiln_sbom::findings_dir(store.root());
                match std::fs::remove_dir_all(&findings) {
                    Ok(()) => println!("removed the SBOM findings"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", findings.display()));
                    }
                }
            } else {
                let dirs = kiln_build::remove_stale_scratch(&store);
                println!("removed {dirs} scratch directories of killed builds");
            }
            // Initrd segments: all of them with the build cache, else those unused for a week.
            let segments = kiln_format::segment_cache_dir(store.root());
            let max_age = (!build_cache).then_some(SEGMENT_MAX_AGE);
            let removed = kiln_format::clean_segment_cache(&segments, max_age)
                .with_context(|| format!("cleaning {}", segments.display()))?;
            println!(
                "removed {} initrd segments, {} bytes",
                removed.files, removed.bytes
            );
            let stats = store.gc()?;
            println!("removed {} blobs, {} bytes", stats.blobs, stats.bytes);
        }
        CacheCommand::Import { file, name } => {
            let name = name.map(|n| n.parse::<Reference>()).transpose()?;
            let imported = if file.as_os_str() == "-" {
                let stdin = std::io::BufReader::new(std::io::stdin());
                let reader = kiln_oci::decompress(stdin)
                    .context("reading an archive from standard input")?;
                archive::import_reader(&store, reader, "standard input", name.as_ref())?
            } else {
                archive::import(&store, &file, name.as_ref())?
            };
            for n in imported {
                println!("{n}");
            }
        }
        CacheCommand::Export {
            images: names,
            output,
            format,
            platform,
            name,
        } => export(&store, &names, &output, format, platform, name)?,
        CacheCommand::Tag { source, target } => {
            let (src, dst): (Reference, Reference) = (source.parse()?, target.parse()?);
            tag(&store, &src, &dst)?;
        }
        CacheCommand::Pull { images: names } => {
            let ropts = registry_options(images())?;
            for r in parse(&names)? {
                let pulled = registry::pull(&store, &r, &ropts)?;
                println!("{}\t{}", r.canonical(), pulled.digest);
            }
        }
        CacheCommand::Push {
            images: names,
            remote_name,
            with_arch_tags,
            r#override: _,
        } => {
            let ropts = registry_options(images())?;
            let refs = parse(&names)?;
            if remote_name.is_some() && refs.len() != 1 {
                bail!("--remote-name names one image: give one image to push");
            }
            for r in refs {
                let remote = match &remote_name {
                    Some(n) => {
                        let remote: Reference =
                            n.parse().with_context(|| format!("--remote-name {n}"))?;
                        tag(&store, &r, &remote)?;
                        remote
                    }
                    None => r,
                };
                let d = registry::push(&store, &remote, &ropts)?;
                println!("{}\t{d}", remote.canonical());
                if with_arch_tags {
                    for (arch_ref, d) in push_arch_tags(&store, &remote, &ropts)? {
                        println!("{}\t{d}", arch_ref.canonical());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Give the image `src` names the other name `dst` too.
fn tag(store: &kiln_oci::Store, src: &Reference, dst: &Reference) -> anyhow::Result<()> {
    let desc = store
        .lookup(src)?
        .with_context(|| format!("image {src} is not in the store"))?;
    store.tag(dst, desc)?;
    Ok(())
}

/// Whether the registry of `r` holds it with the digest the store has.
fn published(
    store: &kiln_oci::Store,
    ropts: &RegistryOptions,
    r: &Reference,
) -> anyhow::Result<bool> {
    let local = store
        .lookup(r)?
        .with_context(|| format!("image {r} is not in the store"))?;
    let remote = registry::remote_digest(r, ropts)
        .with_context(|| format!("asking the registry of {r} for it"))?;
    Ok(remote.is_some_and(|d| d.to_string() == local.digest))
}

/// Push every platform of the index `r` names as `TAG-ARCH` (LinuxKit's arch tags). An image
/// that is not an index has no platforms to tag.
fn push_arch_tags(
    store: &kiln_oci::Store,
    r: &Reference,
    ropts: &RegistryOptions,
) -> anyhow::Result<Vec<(Reference, kiln_oci::Digest)>> {
    let name = r.canonical().to_string();
    let platforms = usage::list_images(store)?
        .into_iter()
        .find(|i| i.name == name && i.media_type.contains("index"))
        .map(|i| i.platforms)
        .unwrap_or_default();
    let mut pushed = Vec::new();
    for platform in platforms {
        let arch = platform.rsplit('/').next().unwrap_or(&platform).to_string();
        let image = store.resolve(r, &arch)?;
        let tag = r.canonical().tag.unwrap_or_else(|| "latest".into());
        let tagged: Reference = format!("{}:{tag}-{arch}", r.name())
            .parse()
            .with_context(|| format!("an arch tag for {r}"))?;
        let size = std::fs::metadata(store.blob_path(&image.digest))
            .with_context(|| format!("the manifest of {r} for {arch}"))?
            .len();
        let descriptor = kiln_oci::spec::Descriptor {
            media_type: image
                .manifest
                .media_type
                .clone()
                .unwrap_or_else(|| kiln_oci::spec::MEDIA_OCI_MANIFEST.into()),
            digest: image.digest.to_string(),
            size,
            platform: None,
            annotations: Default::default(),
        };
        store.tag(&tagged, descriptor)?;
        pushed.push((tagged.clone(), registry::push(store, &tagged, ropts)?));
    }
    Ok(pushed)
}

fn export(
    store: &kiln_oci::Store,
    names: &[String],
    output: &std::path::Path,
    format: ArchiveArg,
    platform: Option<String>,
    name: Option<String>,
) -> anyhow::Result<()> {
    let mut refs = parse(names)?;
    let arch = match &platform {
        Some(p) => p.rsplit('/').next().unwrap_or(p).to_string(),
        None => images().arch().to_string(),
    };
    if let Some(n) = &name {
        if refs.len() != 1 {
            bail!("--name names one image: give one image to export");
        }
        let renamed: Reference = n.parse().with_context(|| format!("--name {n}"))?;
        tag(store, &refs[0], &renamed)?;
        refs = vec![renamed];
    }
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        match format {
            ArchiveArg::Oci => archive::export(store, &refs, ArchiveFormat::Oci, out)?,
            ArchiveArg::Docker => archive::export(store, &refs, ArchiveFormat::Docker, out)?,
            ArchiveArg::Filesystem => {
                let [r] = refs.as_slice() else {
                    bail!("--format filesystem exports one image: give one");
                };
                kiln_assemble::export_filesystem(store, r, &arch, out)
                    .with_context(|| format!("exporting the root filesystem of {r}"))?;
            }
        }
        Ok(())
    };
    if output.as_os_str() == "-" {
        write(&mut std::io::stdout().lock())?;
    } else {
        let mut out = kiln_format::AtomicOutput::create(output)?;
        write(&mut out)?;
        out.flush()?;
        out.commit()?;
    }
    Ok(())
}
