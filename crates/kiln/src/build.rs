//! `kiln build`.

use crate::images;
use crate::progress;
use anyhow::Context as _;
use clap::builder::TypedValueParser as _;
use kiln_assemble::{Options, write_outputs};
use kiln_build::pkg::PkgOptions;
use kiln_build::resolve::{ResolveOptions, resolve_images};
use kiln_format::{Compression, Format, Target};
use kiln_manifest::ManifestSet;
use std::path::{Path, PathBuf};

/// LinuxKit's formats kiln does not write yet: accepted by the parser, refused with a message
/// when a build asks for them.
const NOT_YET: &[&str] = &[];

/// An output format as `--format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatArg {
    /// A format kiln writes.
    Kiln(Format),
    /// One of LinuxKit's that kiln does not write yet.
    NotYet(&'static str),
}

fn format_names() -> Vec<clap::builder::PossibleValue> {
    Format::ALL
        .iter()
        .map(|f| clap::builder::PossibleValue::new(f.name()).help(f.description()))
        .chain(
            NOT_YET
                .iter()
                .map(|n| clap::builder::PossibleValue::new(*n).hide(true)),
        )
        .collect()
}

fn parse_format(s: String) -> Result<FormatArg, kiln_format::FormatError> {
    match NOT_YET.iter().find(|n| **n == s) {
        Some(n) => Ok(FormatArg::NotYet(n)),
        None => s.parse::<Format>().map(FormatArg::Kiln),
    }
}

/// The formats to write: those asked for, else `tar` with `-o` and `kernel+initrd` without
/// (as LinuxKit); a format kiln does not write yet is an error saying so.
fn formats(args: &BuildArgs) -> anyhow::Result<Vec<Format>> {
    if args.format.is_empty() {
        return Ok(vec![if args.output.is_some() {
            Format::Tar
        } else {
            Format::KernelInitrd
        }]);
    }
    let not_yet: Vec<&str> = args
        .format
        .iter()
        .filter_map(|f| match f {
            FormatArg::NotYet(n) => Some(*n),
            FormatArg::Kiln(_) => None,
        })
        .collect();
    if !not_yet.is_empty() {
        anyhow::bail!(
            "kiln does not write {} yet; it writes {}",
            not_yet.join(", "),
            Format::ALL.map(Format::name).join(", ")
        );
    }
    Ok(args
        .format
        .iter()
        .filter_map(|f| match f {
            FormatArg::Kiln(f) => Some(*f),
            FormatArg::NotYet(_) => None,
        })
        .collect())
}

/// LinuxKit's `--size` (for fixed-size disk images): a number of megabytes with an `M`
/// suffix, gigabytes with `G` or none.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.strip_suffix(['M', 'm']) {
        Some(d) => (d, 1),
        None => (s.strip_suffix(['G', 'g']).unwrap_or(s), 1024),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|mb| *mb > 0)
        .ok_or_else(|| format!("`{s}`: write a size as 1024M or 1G"))
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
    /// Output formats, comma-separated or repeated [default: kernel+initrd; tar with -o]
    #[arg(
        long,
        short = 'f',
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(format_names())
            .try_map(parse_format),
    )]
    format: Vec<FormatArg>,
    /// Base name of the outputs (default: the last manifest's name; `moby` for standard input)
    #[arg(long)]
    name: Option<String>,
    /// Directory for the outputs
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Output file for the tar format (`-` for standard output); LinuxKit spells it `--o`
    #[arg(short = 'o', long = "o", alias = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Size of disk images, as 1024M or 1G
    #[arg(long, default_value = "1024M", value_parser = parse_size)]
    size: u64,
    /// The image of boot loader files the ISO, disk and UKI formats take them from (kiln's
    /// pkg/bootloader package; `@pkg:DIR` builds it) [default: kiln/bootloader at the tag of
    /// this kiln's pkg/bootloader]
    #[arg(long, value_name = "IMAGE", env = "KILN_BOOTLOADER")]
    bootloader: Option<String>,
    /// The Raspberry Pi firmware image the rpi3 format takes it from (kiln's
    /// pkg/rpi3-firmware package; `@pkg:DIR` builds it) [default: kiln/rpi3-firmware at the tag
    /// of this kiln's pkg/rpi3-firmware]
    #[arg(long, value_name = "IMAGE", env = "KILN_FIRMWARE")]
    firmware: Option<String>,
    /// Where the disk formats put the root filesystem: in the initrd, in RAM (ram, as LinuxKit),
    /// or in a read-only squashfs or erofs partition that kiln-init mounts, for systems larger
    /// than the machine's memory (a kiln extension; the disk formats)
    #[arg(long, default_value = "ram", value_name = "ram|squashfs|erofs")]
    root: kiln_format::RootFs,
    /// Decompress the kernel (a gzip, or a bzImage's gzip, xz or zstd payload) to the plain image
    /// some loaders want
    #[arg(long)]
    decompress_kernel: bool,
    #[command(flatten)]
    sbom: crate::sbom::SbomArgs,
    #[command(flatten)]
    policy: crate::policy::PolicyArgs,
    #[command(flatten)]
    provenance: crate::provenance::ProvenanceArgs,
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
    /// Reuse the files of a previous tar build (-f tar) for the images it already holds, as LinuxKit does
    #[arg(long, value_name = "PATH")]
    input_tar: Option<PathBuf>,
    /// Take images from the Docker engine at DOCKER_HOST (or /var/run/docker.sock) before
    /// pulling them; through its API, never its files
    #[arg(long)]
    docker: bool,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let formats = formats(&args)?;
    if formats.contains(&Format::Rpi3) {
        kiln_assemble::check_rpi3_arch(images().arch())?;
    }
    if args.input_tar.is_some() && args.pull {
        anyhow::bail!("--input-tar and --pull contradict each other: give one");
    }
    args.sbom.check()?;
    let mut set = load_manifests(&args.files)?;
    if args.dry_run {
        print!("{}", kiln_manifest::to_yaml(&set.manifest));
        return Ok(());
    }
    let store = images().store()?;
    let mut packages = PkgOptions::new(crate::image::base_options(images())?);
    // `@pkg:` packages are built for the system's architecture only.
    packages.platforms = Some(vec![packages.base.arch.clone()]);
    // `@pkg:` paths are relative to the first manifest read from a file.
    let base_dir = args
        .files
        .iter()
        .find(|f| f.as_os_str() != "-" && !is_url(f))
        .and_then(|f| f.parent())
        .unwrap_or(Path::new(""));
    if !kiln_runtime::userns::is_root() {
        enter_user_namespace_to_build_packages(&args, &set.manifest, &store, &packages, base_dir)?;
    }
    let policy = crate::policy::load(&args.policy, &set)?;
    let provenance_key = args.provenance.signing_key()?;
    let docker = if args.docker {
        Some(kiln_oci::docker_engine::DockerEngine::from_env()?)
    } else {
        None
    };
    let resolve = ResolveOptions {
        packages: &packages,
        base_dir,
        pull_always: args.pull,
        docker: docker.as_ref(),
    };
    // Packages built (or found) and images pulled are reported as they happen.
    let packages_built = resolve_images(&store, &mut set.manifest, &resolve)?;
    // `@pkg:` packages built on the way carry their provenance in the store, as `kiln pkg
    // build` leaves it (unsigned: `kiln pkg build --sign` signs it).
    args.provenance
        .record_packages(&store, &packages_built, crate::image::epoch()?)?;
    let bootloader_image = if formats.iter().any(|f| f.is_boot_media()) {
        let reference = args.bootloader.clone().unwrap_or_else(default_bootloader);
        let image =
            kiln_build::resolve::resolve_image(&store, &reference, "--bootloader", &resolve)
                .with_context(|| {
                    format!(
                        "the boot loader image {reference}: build it with `kiln pkg build \
                     pkg/bootloader` or give --bootloader IMAGE"
                    )
                })?;
        Some(image)
    } else {
        None
    };
    let firmware_image = if formats.contains(&Format::Rpi3) {
        let reference = args.firmware.clone().unwrap_or_else(default_firmware);
        let image = kiln_build::resolve::resolve_image(&store, &reference, "--firmware", &resolve)
            .with_context(|| {
                format!(
                    "the Raspberry Pi firmware image {reference}: build it with `kiln --arch \
                     arm64 pkg build pkg/rpi3-firmware` or give --firmware IMAGE"
                )
            })?;
        Some(image)
    } else {
        None
    };
    let checked = crate::policy::Checked {
        set: &set,
        bootloader: bootloader_image.as_ref(),
        firmware: firmware_image.as_ref(),
    };
    if crate::policy::enforce(
        &store,
        &checked,
        &policy,
        &args.policy,
        &packages.base.registry,
    )? {
        return Ok(());
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&args.files),
    };
    let epoch = crate::image::epoch()?;
    let opts = Options {
        arch: images().arch().to_string(),
        source_date_epoch: epoch,
        base_dir: PathBuf::from("."),
        dockerfile: false,
        input_tar: args.input_tar.clone(),
        decompress_kernel: args.decompress_kernel,
        // The system is not named after its outputs or manifest files: the same manifest gives
        // the same root filesystem whatever --name, -o or the file it was read from.
        sbom: args.sbom.settings("system", epoch, store.root())?,
    };
    let bootloader = match &bootloader_image {
        Some(image) => Some(std::sync::Arc::new(kiln_assemble::bootloader(
            &store,
            image,
            images().arch(),
        )?)),
        None => None,
    };
    let firmware = match &firmware_image {
        Some(image) => Some(std::sync::Arc::new(kiln_assemble::firmware(
            &store,
            image,
            images().arch(),
        )?)),
        None => None,
    };
    let target = Target {
        tar_output: args.output.clone(),
        segment_cache: Some(kiln_format::segment_cache_dir(store.root())),
        disk_size: args.size << 20,
        bootloader,
        firmware,
        root: args.root,
        ..Target::new(&args.dir, name, args.compress, epoch.unwrap_or(0))
    };
    let mut outputs = write_outputs(&set, &store, &opts, &formats, &target)?;
    let record = crate::provenance::BuildRecord {
        files: &args.files,
        set: &set,
        store: &store,
        formats: &formats,
        target: &target,
        arch: images().arch(),
        epoch,
    };
    let provenance = crate::provenance::record_build(
        &args.provenance,
        provenance_key.as_ref(),
        &record,
        &outputs,
    )?;
    outputs.extend(provenance);
    for path in &outputs {
        if progress::mode() == progress::Mode::Json {
            written(path)?;
        }
        println!("{}", path.display());
    }
    Ok(())
}

/// The boot loader image when `--bootloader` is not given: kiln's package of this version.
fn default_bootloader() -> String {
    format!(
        "kiln/bootloader:{}",
        option_env!("KILN_BOOTLOADER_TAG").unwrap_or("latest")
    )
}

/// The firmware image when `--firmware` is not given: kiln's package of this version.
fn default_firmware() -> String {
    format!(
        "kiln/rpi3-firmware:{}",
        option_env!("KILN_RPI3_FIRMWARE_TAG").unwrap_or("latest")
    )
}

/// The outputs' name when `--name` is not given: the last manifest's file name without its
/// extension, as LinuxKit's; `moby` when it is standard input.
fn default_name(files: &[PathBuf]) -> String {
    match files.last() {
        Some(f) if f.as_os_str() == "-" => "moby".into(),
        Some(f) if is_url(f) => f
            .to_string_lossy()
            .rsplit('/')
            .next()
            .and_then(|n| n.split('.').next())
            .filter(|n| !n.is_empty())
            .unwrap_or("moby")
            .to_string(),
        Some(f) => f
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "kiln".into()),
        None => "kiln".into(),
    }
}

/// When `@pkg:` packages (in the manifests, `--bootloader` or `--firmware`) are not in the store
/// yet, their Dockerfiles must run: a build that is not root goes on in a user namespace, as
/// `kiln pkg build` does. That runs this command again, which reads its manifests again: one
/// from standard input is gone by then, so that is refused. Packages the store has already
/// need no namespace.
fn enter_user_namespace_to_build_packages(
    args: &BuildArgs,
    manifest: &kiln_manifest::Manifest,
    store: &kiln_oci::Store,
    packages: &PkgOptions,
    base_dir: &Path,
) -> anyhow::Result<()> {
    let named = manifest.image_references();
    let dirs: Vec<PathBuf> = named
        .iter()
        .map(|(r, _)| *r)
        .chain(args.bootloader.as_deref())
        .chain(args.firmware.as_deref())
        .filter_map(|r| r.strip_prefix(kiln_build::resolve::PKG_PREFIX))
        .map(|path| base_dir.join(path))
        .collect();
    if dirs.is_empty() || !kiln_build::pkg::any_unbuilt(store, &dirs, packages)? {
        return Ok(());
    }
    if args.files.iter().any(|f| f.as_os_str() == "-") {
        anyhow::bail!(
            "the manifest on standard input names `@pkg:` packages the store does not have: a \
             build that is not root builds them in a user namespace, after reading its \
             manifests again; give the manifest as a file, or build the packages first with \
             `kiln pkg build`"
        );
    }
    crate::rootless::run_as_root_of_a_user_namespace()
}

fn is_url(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.starts_with("http://") || s.starts_with("https://")
}

/// Read the manifests: files, `-` for standard input, or http(s) URLs (as LinuxKit), each
/// bounded as kiln-manifest bounds files.
fn load_manifests(files: &[PathBuf]) -> anyhow::Result<ManifestSet> {
    if files.iter().all(|f| f.as_os_str() != "-" && !is_url(f)) {
        return Ok(ManifestSet::load(files)?);
    }
    let mut set = ManifestSet::default();
    for f in files {
        if f.as_os_str() == "-" {
            set.add_reader("standard input", std::io::stdin())?;
        } else if is_url(f) {
            let url = f.to_string_lossy().to_string();
            let resp = reqwest::blocking::get(&url)
                .and_then(|r| r.error_for_status())
                .with_context(|| format!("fetching the manifest {url}"))?;
            set.add_reader(&url, resp)?;
        } else {
            let file =
                std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
            set.add_reader(&f.display().to_string(), file)?;
        }
    }
    set.validate()?;
    Ok(set)
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
