//! The `kiln` command: argument parsing, progress and output. The work is done by the library
//! crates (kiln-manifest, kiln-oci, kiln-assemble, kiln-format, kiln-build, kiln-runtime, kiln-vm).

mod build;
mod cache;
mod completion;
mod image;
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
    /// How progress is shown on standard error: live lines on a terminal (tty), text lines
    /// (plain), or one JSON object per line (docs/progress.md)
    #[arg(long, value_enum, default_value_t = progress::Mode::Auto, global = true)]
    progress: progress::Mode,
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
    /// Print a shell completion script (bash, zsh, fish) or write the manual pages
    Completion(completion::CompletionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::set_mode(cli.progress, cli.verbose > 0);
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(progress::mode() != progress::Mode::Json)
        .with_target(false)
        .init();
    // Before any thread starts (the signal watcher's included): a namespace is per thread.
    if runs_build_steps(&cli.command) {
        enter_private_mount_namespace();
    }
    if !matches!(cli.command, Command::Run(_)) {
        clean_up_on_signals();
    }
    let result = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Image(cmd) => image::run_image(cmd),
        Command::Pkg(cmd) => image::run_pkg(cmd),
        Command::Completion(args) => completion::run(args),
        Command::Run(cmd) => {
            return match run::run(cmd) {
                Ok(code) => code,
                Err(e) => {
                    report(&e);
                    ExitCode::from(EXIT_RUN_FAILED)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Whether the command may run Dockerfile RUN steps, on overlays it mounts.
fn runs_build_steps(command: &Command) -> bool {
    matches!(
        command,
        Command::Build(_)
            | Command::Image(image::ImageCommand::Build(_))
            | Command::Pkg(image::PkgCommand::Build { .. })
    )
}

/// Mount a build's overlays in a mount namespace of this process's own, so that they are
/// never seen on the host and disappear with the process, even after `kill -9`. The outputs
/// are plain files, and mounts the host makes meanwhile still appear. Without the right to
/// (not root), mounts are made on the host as before.
fn enter_private_mount_namespace() {
    match kiln_runtime::private_mount_namespace() {
        Ok(true) => tracing::debug!("build mounts are private to this process"),
        Ok(false) => {
            tracing::debug!("no private mount namespace (not root): mounts are the host's")
        }
        Err(e) => tracing::warn!(
            "{e}: build mounts are made on the host and stay there if kiln is killed"
        ),
    }
}

/// On SIGINT, SIGTERM or SIGHUP, remove the partial outputs this process is writing and its
/// build scratch directories, and exit as the signal would have (128 + its number). (`kiln run`
/// leaves signals to the guest.)
fn clean_up_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        tracing::warn!("cannot watch for signals: an interrupted build may leave partial outputs");
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = kiln_format::remove_own_partials();
            let scratch = kiln_build::remove_own_scratch();
            tracing::info!(
                "interrupted: removed {removed} partial outputs and {scratch} scratch directories"
            );
            std::process::exit(128 + signal);
        }
    });
}

/// The exit code of `kiln run` when kiln itself fails (as `docker run`'s 125), so that it
/// cannot be mistaken for the guest's or container's own status.
const EXIT_RUN_FAILED: u8 = 125;

/// Print an error and its causes, each once: a cause whose text the message before it
/// already includes is not repeated.
/// In json progress mode, one `{"event":"error","message":...}` object holds it all.
fn report(e: &anyhow::Error) {
    let mut text = format!("error: {e}");
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if cause.is_empty() || shown.contains(&cause) {
            continue;
        }
        text.push_str(&format!("\n  caused by: {cause}"));
        shown.push_str(&cause);
    }
    progress::error(&text);
}
