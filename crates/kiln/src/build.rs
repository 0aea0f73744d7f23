//! `kiln build`.

use crate::ImageOpts;
use anyhow::{Context, bail};
use kiln_assemble::{Options, Sink, assemble};
use kiln_format::{AtomicOutput, Compression, KernelInitrd, TarSink};
use kiln_manifest::ManifestSet;
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMATS: [&str; 4] = ["kernel+initrd", "tar", "tar-kernel-initrd", "docker"];

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Manifest files, merged in order
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output formats (comma-separated or repeated): kernel+initrd, tar, tar-kernel-initrd, docker
    #[arg(
        long,
        short = 'f',
        value_delimiter = ',',
        default_value = "kernel+initrd"
    )]
    format: Vec<String>,
    /// Base name of the outputs (default: the first manifest's name)
    #[arg(long)]
    name: Option<String>,
    /// Directory for the outputs
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Output file for the tar format (`-` for standard output)
    #[arg(short = 'o')]
    output: Option<PathBuf>,
    /// Initrd compression: gzip, zstd or none
    #[arg(long, default_value = "gzip")]
    compress: Compression,
    /// Print the merged manifest and stop
    #[arg(long)]
    dry_run: bool,
    /// Pull every image even if the store has it
    #[arg(long)]
    pull: bool,
    #[command(flatten)]
    images: ImageOpts,
}

fn source_date_epoch() -> anyhow::Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let mut set = ManifestSet::load(&args.files)?;
    let base = args.files[0]
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if !args.dry_run {
        crate::packages::resolve(&mut set.manifest, &base, &args.images)?;
    }
    if args.dry_run {
        print!("{}", kiln_manifest::to_yaml(&set.manifest));
        return Ok(());
    }
    for f in &args.format {
        if !FORMATS.contains(&f.as_str()) {
            bail!(
                "unknown output format `{f}`; kiln writes: {}",
                FORMATS.join(", ")
            );
        }
    }
    let store = args.images.store()?;
    crate::cache::ensure_images(&store, &args.images, &set, args.pull)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.files[0]
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "kiln".into()),
    };
    let opts = Options {
        arch: args.images.arch.clone(),
        source_date_epoch: source_date_epoch()?,
        base_dir: PathBuf::from("."),
        dockerfile: false,
    };
    for format in &args.format {
        let out = |suffix: &str| args.dir.join(format!("{name}{suffix}"));
        match format.as_str() {
            "kernel+initrd" => {
                let (k, i, cmdline) = kernel_initrd(
                    &set,
                    &store,
                    &opts,
                    &out("-kernel"),
                    &out("-initrd.img"),
                    args.compress,
                )?;
                let mut c = AtomicOutput::create(&out("-cmdline"))?;
                c.write_all(cmdline.as_bytes())?;
                k.commit()?;
                i.commit()?;
                c.commit()?;
                println!(
                    "{}\n{}\n{}",
                    out("-kernel").display(),
                    out("-initrd.img").display(),
                    out("-cmdline").display()
                );
            }
            "tar" | "docker" => {
                let opts = Options {
                    dockerfile: format == "docker",
                    ..opts.clone()
                };
                let dest = match (&args.output, format.as_str()) {
                    (Some(o), "tar") => o.clone(),
                    (_, "docker") => out("-docker.tar"),
                    _ => out(".tar"),
                };
                if dest == Path::new("-") {
                    let stdout = std::io::stdout().lock();
                    let mut sink = TarSink::new(std::io::BufWriter::new(stdout));
                    assemble(&set, &store, &opts, &mut sink)?;
                    sink.finish()?.flush()?;
                } else {
                    let mut sink = TarSink::new(std::io::BufWriter::with_capacity(
                        1 << 20,
                        AtomicOutput::create(&dest)?,
                    ));
                    assemble(&set, &store, &opts, &mut sink)?;
                    sink.finish()?
                        .into_inner()
                        .map_err(|e| e.into_error())?
                        .commit()?;
                    println!("{}", dest.display());
                }
            }
            "tar-kernel-initrd" => {
                let tmp = tempfile::tempdir_in(&args.dir).with_context(|| {
                    format!(
                        "cannot create a temporary directory in {}",
                        args.dir.display()
                    )
                })?;
                let (k, i, cmdline) = kernel_initrd(
                    &set,
                    &store,
                    &opts,
                    &tmp.path().join("kernel"),
                    &tmp.path().join("initrd.img"),
                    args.compress,
                )?;
                let (k, i) = (k.commit()?, i.commit()?);
                let dest = out("-initrd.tar");
                let mut tar = tar::Builder::new(AtomicOutput::create(&dest)?);
                for (member, path) in [("kernel", &k), ("initrd.img", &i)] {
                    let mut f = std::fs::File::open(path)?;
                    let mut h = tar::Header::new_gnu();
                    h.set_size(f.metadata()?.len());
                    h.set_mode(0o644);
                    h.set_mtime(opts.source_date_epoch.unwrap_or(0));
                    tar.append_data(&mut h, member, &mut f)?;
                }
                let mut h = tar::Header::new_gnu();
                h.set_size(cmdline.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(opts.source_date_epoch.unwrap_or(0));
                tar.append_data(&mut h, "cmdline", cmdline.as_bytes())?;
                tar.into_inner()?.commit()?;
                println!("{}", dest.display());
            }
            _ => unreachable!("formats are checked above"),
        }
    }
    Ok(())
}

fn kernel_initrd(
    set: &ManifestSet,
    store: &kiln_oci::Store,
    opts: &Options,
    kernel: &Path,
    initrd: &Path,
    compress: Compression,
) -> anyhow::Result<(AtomicOutput, AtomicOutput, String)> {
    let mut split = KernelInitrd::new(
        AtomicOutput::create(kernel)?,
        AtomicOutput::create(initrd)?,
        compress,
    );
    assemble(set, store, opts, &mut split as &mut dyn Sink)?;
    Ok(split.finish()?)
}
