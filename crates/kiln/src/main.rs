//! The `kiln` command: argument parsing, progress and output. The work is done by the library
//! crates (kiln-manifest, kiln-oci, kiln-assemble, kiln-format, kiln-build, kiln-runtime, kiln-vm).

mod build;
mod cache;
mod compat;
mod completion;
mod image;
#[cfg(test)]
mod linuxkit_command_lines;
mod pkg;
mod policy;
mod progress;
mod provenance;
mod rootless;
mod run;
mod sbom;
mod serve;
mod trust;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

/// Options of every command that uses images (LinuxKit's global flags among them).
#[derive(clap::Args, Debug, Clone)]
pub struct ImageOpts {
    /// Image store directory [default: KILN_CACHE or ~/.cache/kiln; run as `linuxkit`,
    /// LINUXKIT_CACHE or ~/.linuxkit/cache]
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Architecture of the images to use and of the systems and packages to build (amd64,
    /// arm64) [default: this machine's]
    #[arg(long, global = true)]
    arch: Option<String>,
    /// Registry mirror, as REGISTRY=URL (for example docker.io=http://127.0.0.1:5000), or a
    /// URL for every registry no other mirror names; repeatable. Also read from KILN_MIRROR
    /// (LINUXKIT_MIRROR run as `linuxkit`), space- or comma-separated
    #[arg(long = "mirror", global = true)]
    mirrors: Vec<String>,
    /// Registry reached over plain HTTP (localhost and 127.0.0.1 always are); repeatable
    #[arg(long = "insecure-registry", global = true)]
    insecure: Vec<String>,
    /// PEM file of certificate authorities to trust for registries, besides the system's;
    /// repeatable
    #[arg(long = "cert-file", global = true, value_name = "PATH")]
    cert_files: Vec<PathBuf>,
}

impl ImageOpts {
    /// The architecture to use: `--arch`, else this machine's.
    pub fn arch(&self) -> &str {
        self.arch.as_deref().unwrap_or(std::env::consts::ARCH)
    }

    /// Whether `--arch` was given.
    pub fn arch_given(&self) -> bool {
        self.arch.is_some()
    }

    fn store(&self) -> anyhow::Result<kiln_oci::Store> {
        let root = self
            .cache
            .clone()
            .unwrap_or_else(|| compat::flavour().default_store());
        Ok(kiln_oci::Store::open(&root)?)
    }
}

static IMAGES: OnceLock<ImageOpts> = OnceLock::new();

/// The image options of this run (the root command's global flags).
pub fn images() -> &'static ImageOpts {
    IMAGES.get_or_init(|| ImageOpts {
        cache: None,
        arch: None,
        mirrors: Vec::new(),
        insecure: Vec::new(),
        cert_files: Vec::new(),
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build minimal, immutable Linux systems from OCI images, without a Docker daemon"
)]
struct Cli {
    /// More output (-v: info, -vv: debug, -vvv: trace; LinuxKit's `-v N` also works)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log level as LinuxKit numbers it: 0 errors only, 1 info, 2 debug, 3 trace (what
    /// `-v N` becomes)
    #[arg(long, global = true, hide = true, value_parser = clap::value_parser!(u8).range(0..=3))]
    verbosity: Option<u8>,
    /// Errors only
    #[arg(short, long, global = true)]
    quiet: bool,
    /// How progress is shown on standard error: live lines on a terminal (tty), text lines
    /// (plain), or one JSON object per line (docs/progress.md)
    #[arg(long, value_enum, default_value_t = progress::Mode::Auto, global = true)]
    progress: progress::Mode,
    #[command(flatten)]
    images: ImageOpts,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The log level: `-q`, LinuxKit's `-v N`, or kiln's `-v` count (warnings by default).
    fn log_level(&self) -> anyhow::Result<&'static str> {
        if self.quiet && (self.verbose > 0 || self.verbosity.is_some_and(|v| v > 0)) {
            anyhow::bail!("-q and -v contradict each other: give one");
        }
        let level = match (self.quiet, self.verbosity) {
            (true, _) | (false, Some(0)) => "error",
            (false, Some(1)) => "info",
            (false, Some(2)) => "debug",
            (false, Some(_)) => "trace",
            (false, None) => match self.verbose {
                0 => "warn",
                1 => "info",
                2 => "debug",
                _ => "trace",
            },
        };
        Ok(level)
    }
}

/// Parse the command line: LinuxKit's forms rewritten (see `compat`), the program's name
/// deciding the flavour.
fn parse_command_line() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flavour = compat::Flavour::from_argv0(args.first().map_or("kiln".as_ref(), |a| a));
    compat::set_flavour(flavour);
    let command = Cli::command().name(flavour.name()).bin_name(flavour.name());
    let args = match compat::normalize(args, &compat::Flags::of(&command)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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
    Pkg(Box<pkg::PkgArgs>),
    /// Boot a built system
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Print a shell completion script (bash, zsh, fish) or write the manual pages
    Completion(completion::CompletionArgs),
    /// Print kiln's version and the commit it was built from
    Version(VersionArgs),
    /// Serve a directory over HTTP, for network (iPXE) boots: NAME.ipxe boots NAME-kernel and
    /// NAME-initrd.img
    Serve(serve::ServeArgs),
    /// Make user-data (metadata) ISO images
    #[command(subcommand)]
    Metadata(serve::MetadataCommand),
    /// Make and manage signing keys (cosign's formats)
    #[command(subcommand)]
    Key(trust::KeyCommand),
    /// Sign an image (a cosign-compatible signature, kept in the store and pushed)
    Sign(trust::SignArgs),
    /// Verify an image's signature (and its provenance)
    Verify(trust::VerifyArgs),
}

/// `kiln version` (LinuxKit's flags).
#[derive(clap::Args, Debug)]
struct VersionArgs {
    /// Print the version number only
    #[arg(long)]
    short: bool,
    /// Print the commit only
    #[arg(long)]
    commit: bool,
}

/// The commit kiln was built from, when it was built in a git work tree.
const COMMIT: Option<&str> = option_env!("KILN_GIT_COMMIT");

fn print_version(a: &VersionArgs) {
    let version = env!("CARGO_PKG_VERSION");
    if a.short {
        println!("{version}");
    } else if a.commit {
        println!("{}", COMMIT.unwrap_or(""));
    } else {
        println!("{} version {version}", compat::flavour().name());
        if let Some(commit) = COMMIT {
            println!("commit: {commit}");
        }
    }
}

fn main() -> ExitCode {
    let cli = parse_command_line();
    let level = match cli.log_level() {
        Ok(level) => level,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    progress::set_mode(cli.progress, !matches!(level, "warn" | "error"));
    if cli.quiet {
        progress::set_quiet();
    }
    let _ = IMAGES.set(cli.images.clone());
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
        Command::Pkg(args) => pkg::run(*args),
        Command::Completion(args) => completion::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Metadata(cmd) => serve::run_metadata(cmd),
        Command::Key(cmd) => trust::run_key(cmd),
        Command::Sign(args) => trust::run_sign(args),
        Command::Verify(args) => trust::run_verify(args),
        Command::Version(args) => {
            print_version(&args);
            Ok(())
        }
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
        Command::Build(_) | Command::Image(image::ImageCommand::Build(_))
    ) || matches!(command, Command::Pkg(p) if pkg::runs_build_steps(p))
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
