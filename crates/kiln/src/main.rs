//! The `kiln` command: argument parsing, progress and output. The work is done by the library
//! crates (kiln-manifest, kiln-oci, kiln-assemble, kiln-format, kiln-build, kiln-runtime, kiln-vm).

mod build;
mod cache;
mod image;
mod packages;
mod progress;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options shared by the commands that use images.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageOpts {
    /// Image store directory
    #[arg(long, env = "KILN_CACHE", global = true)]
    cache: Option<PathBuf>,
    /// Architecture of the images to use
    #[arg(long, default_value = std::env::consts::ARCH, global = true)]
    arch: String,
    /// Registry mirror, as REGISTRY=URL (for example docker.io=http://127.0.0.1:5000); repeatable
    #[arg(long = "mirror", global = true)]
    mirrors: Vec<String>,
    /// Registry reached over plain HTTP (localhost and 127.0.0.1 always are); repeatable
    #[arg(long = "insecure-registry", global = true)]
    insecure: Vec<String>,
}

impl ImageOpts {
    fn store(&self) -> anyhow::Result<kiln_oci::Store> {
        let root = self
            .cache
            .clone()
            .unwrap_or_else(kiln_oci::Store::default_root);
        Ok(kiln_oci::Store::open(&root)?)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build minimal, immutable Linux systems from OCI images, without a Docker daemon"
)]
struct Cli {
    /// More output (-v: info, -vv: debug)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from one or more manifests (merged in order)
    Build(build::BuildArgs),
    /// Manage the image store
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Build and import images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Build LinuxKit-format packages (build.yml and a Dockerfile)
    #[command(subcommand)]
    Pkg(image::PkgCommand),
    /// Boot a built system
    #[command(subcommand)]
    Run(run::RunCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Image(cmd) => image::run_image(cmd),
        Command::Pkg(cmd) => image::run_pkg(cmd),
        Command::Run(cmd) => match run::run(cmd) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
