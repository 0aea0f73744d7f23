//! `kiln build`.

use crate::ImageOpts;
use crate::progress;
use anyhow::Context as _;
use clap::builder::TypedValueParser as _;
use kiln_assemble::{Options, write_outputs};
use kiln_build::pkg::PkgOptions;
use kiln_build::resolve::{ResolveOptions, resolve_images};
use kiln_format::{Compression, Format, Target};
use kiln_manifest::ManifestSet;
use std::path::{Path, PathBuf};

fn format_names() -> Vec<clap::builder::PossibleValue> {
    Format::ALL
        .iter()
        .map(|f| clap::builder::PossibleValue::new(f.name()).help(f.description()))
        .collect()
}

fn compression_names() -> Vec<clap::builder::PossibleValue> {
    Compression::ALL
        .iter()
        .map(|c| {
            clap::builder::PossibleValue::new(c.name())
                .aliases(c.alias())
                .help(c.description())
        })
        .collect()
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Manifest files, merged in order
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Output formats (comma-separated or repeated)
    #[arg(
        long,
        short = 'f',
        value_delimiter = ',',
        default_value = "kernel+initrd",
        value_parser = clap::builder::PossibleValuesParser::new(format_names())
            .try_map(|s| s.parse::<Format>()),
    )]
    format: Vec<Format>,
    /// Base name of the outputs (default: the first manifest's name)
    #[arg(long)]
    name: Option<String>,
    /// Directory for the outputs
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Output file for the tar format (`-` for standard output)
    #[arg(short = 'o')]
    output: Option<PathBuf>,
    /// Initrd compression (one the kernel was built to read)
    #[arg(
        long,
        default_value = "gzip",
        value_parser = clap::builder::PossibleValuesParser::new(compression_names())
            .try_map(|s| s.parse::<Compression>()),
    )]
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

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let mut set = ManifestSet::load(&args.files)?;
    if args.dry_run {
        print!("{}", kiln_manifest::to_yaml(&set.manifest));
        return Ok(());
    }
    let store = args.images.store()?;
    let packages = PkgOptions {
        base: crate::image::base_options(&args.images)?,
        org: None,
        force: false,
    };
    let base_dir = args.files[0].parent().unwrap_or(Path::new(""));
    let resolve = ResolveOptions {
        packages: &packages,
        base_dir,
        pull_always: args.pull,
    };
    // Packages built (or found) and images pulled are reported as they happen.
    resolve_images(&store, &mut set.manifest, &resolve)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args.files[0]
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "kiln".into()),
    };
    let epoch = crate::image::epoch()?;
    let opts = Options {
        arch: args.images.arch.clone(),
        source_date_epoch: epoch,
        base_dir: PathBuf::from("."),
        dockerfile: false,
    };
    let target = Target {
        tar_output: args.output.clone(),
        segment_cache: Some(kiln_format::segment_cache_dir(store.root())),
        ..Target::new(&args.dir, name, args.compress, epoch.unwrap_or(0))
    };
    for path in write_outputs(&set, &store, &opts, &args.format, &target)? {
        if progress::mode() == progress::Mode::Json {
            written(&path)?;
        }
        println!("{}", path.display());
    }
    Ok(())
}

/// Report an output file with its size and digest (json progress only: hashing costs a read
/// of the file). Standard output (`-o -`) is not a file and is not reported.
fn written(path: &Path) -> anyhow::Result<()> {
    use sha2::Digest as _;
    if path.as_os_str() == "-" || !path.is_file() {
        return Ok(());
    }
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("reading {}", path.display()))?;
    progress::emit(&progress::Event::OutputWritten {
        path: path.to_path_buf(),
        bytes,
        sha256: hex::encode(hasher.finalize()),
    });
    Ok(())
}
