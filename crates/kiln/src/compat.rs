//! LinuxKit's command lines. Run through a link named `linuxkit`, kiln takes LinuxKit's
//! defaults (its store directory and environment variables); under either name, argument forms
//! LinuxKit accepts and clap does not are rewritten before parsing:
//!
//! - `-v N`, `-vN`, `-v=N`, `--verbose N`: LinuxKit's numbered log level (kiln's `-v`, `-vv`
//!   count as before);
//! - single-dash long flags (`-format tar`, `-name x`), as LinuxKit's older releases took them
//!   (its current parser reads `-format` as `-f ormat`);
//! - `run [FLAGS] PREFIX` without a backend, which LinuxKit runs under qemu on Linux.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The name kiln was run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `kiln`.
    Kiln,
    /// `linuxkit`: LinuxKit's store directory and environment variables.
    Linuxkit,
}

static FLAVOUR: OnceLock<Flavour> = OnceLock::new();

impl Flavour {
    /// The flavour of a program invoked as `argv0`.
    pub fn from_argv0(argv0: &OsStr) -> Flavour {
        let name = std::path::Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name == "linuxkit" || name.starts_with("linuxkit-") || name == "linuxkit.exe" {
            Flavour::Linuxkit
        } else {
            Flavour::Kiln
        }
    }

    /// The command's name in help and messages.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Kiln => "kiln",
            Flavour::Linuxkit => "linuxkit",
        }
    }

    /// The store directory when `--cache` is not given: `KILN_CACHE` or `~/.cache/kiln`;
    /// as `linuxkit`, `LINUXKIT_CACHE` or `~/.linuxkit/cache` (LinuxKit's cache is an OCI
    /// image layout, as kiln's store is).
    pub fn default_store(self) -> PathBuf {
        match self {
            Flavour::Kiln => kiln_oci::Store::default_root(),
            Flavour::Linuxkit => match std::env::var_os("LINUXKIT_CACHE") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => dirs::home_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join(".linuxkit/cache"),
            },
        }
    }

    /// Registry mirrors from the environment (`LINUXKIT_MIRROR` as `linuxkit`, `KILN_MIRROR`
    /// as `kiln`): space- or comma-separated, each as `--mirror` takes it.
    pub fn env_mirrors(self) -> Vec<String> {
        let var = match self {
            Flavour::Kiln => "KILN_MIRROR",
            Flavour::Linuxkit => "LINUXKIT_MIRROR",
        };
        std::env::var(var)
            .unwrap_or_default()
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Remember the flavour for the rest of the run.
pub fn set_flavour(f: Flavour) {
    let _ = FLAVOUR.set(f);
}

/// The flavour kiln runs as.
pub fn flavour() -> Flavour {
    FLAVOUR.get().copied().unwrap_or(Flavour::Kiln)
}

/// LinuxKit's `run` backends other than qemu: kiln has no equivalent.
const OTHER_BACKENDS: &[&str] = &[
    "aws",
    "azure",
    "gcp",
    "hyperkit",
    "hyperv",
    "openstack",
    "equinixmetal",
    "packet",
    "scaleway",
    "vbox",
    "vcenter",
    "virtualization",
    "vmware",
];

/// Rewrite LinuxKit's argument forms (see the module doc) into kiln's, knowing the command's
/// `flags`. An error is a command line kiln cannot run, said in full.
pub fn normalize(args: Vec<OsString>, flags: &Flags) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len() + 1);
    let mut iter = args.into_iter().peekable();
    if let Some(argv0) = iter.next() {
        out.push(argv0);
    }
    let mut rest_is_positional = false;
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str().filter(|_| !rest_is_positional) else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_is_positional = true;
            out.push(arg);
            continue;
        }
        // The numbered log level.
        let level = match s {
            "-v" | "--verbose" => iter
                .peek()
                .and_then(|n| n.to_str())
                .filter(|n| is_level(n))
                .map(str::to_string),
            _ => s
                .strip_prefix("--verbose=")
                .or_else(|| s.strip_prefix("-v="))
                .or_else(|| s.strip_prefix("-v"))
                .filter(|n| is_level(n))
                .map(str::to_string),
        };
        if let Some(level) = level {
            if matches!(s, "-v" | "--verbose") {
                iter.next();
            }
            out.push(format!("--verbosity={level}").into());
            continue;
        }
        // Single-dash long flags.
        if let Some(body) = s.strip_prefix('-')
            && !body.starts_with('-')
            && body.len() > 1
        {
            let name = body.split_once('=').map_or(body, |(n, _)| n);
            if flags.long.iter().any(|f| f == name) {
                out.push(format!("-{s}").into());
                continue;
            }
        }
        out.push(arg);
    }
    default_run_backend(&mut out, &flags.root_with_values)?;
    Ok(out)
}

fn is_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `run PREFIX` and `run --flags PREFIX` mean `run qemu ...`; another LinuxKit backend is an
/// error.
fn default_run_backend(
    args: &mut Vec<OsString>,
    root_with_values: &[String],
) -> Result<(), String> {
    let mut i = 1;
    while i < args.len() {
        let Some(s) = args[i].to_str() else {
            return Ok(());
        };
        if s == "--" {
            return Ok(());
        }
        if s.starts_with('-') {
            i += if root_with_values.iter().any(|f| f == s) {
                2
            } else {
                1
            };
            continue;
        }
        if s != "run" {
            return Ok(());
        }
        let next = args.get(i + 1).and_then(|a| a.to_str()).unwrap_or("");
        if OTHER_BACKENDS.contains(&next) {
            return Err(format!(
                "`run {next}`: kiln boots systems under qemu only (`{} run qemu`); build a \
                 format the platform takes and use its own tools to start it",
                flavour().name()
            ));
        }
        if !matches!(
            next,
            "qemu" | "bundle" | "stop" | "help" | "-h" | "--help" | ""
        ) {
            args.insert(i + 1, "qemu".into());
        }
        return Ok(());
    }
    Ok(())
}

/// What the rewriting needs to know of the command, read from its definition.
pub struct Flags {
    /// The long flag names of the command and its subcommands (and their aliases).
    pub long: Vec<String>,
    /// The root command's flags that take a value as the next argument (`--cache`), to find
    /// the subcommand behind them.
    pub root_with_values: Vec<String>,
}

impl Flags {
    /// The flags of `cmd`.
    pub fn of(cmd: &clap::Command) -> Flags {
        let mut long = Vec::new();
        collect(cmd, &mut long);
        long.sort();
        long.dedup();
        let root_with_values = cmd
            .get_arguments()
            .filter(|a| a.get_action().takes_values())
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        Flags {
            long,
            root_with_values,
        }
    }
}

/// The long names (and aliases) of `cmd`'s flags and its subcommands'.
fn collect(cmd: &clap::Command, names: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            names.push(l.to_string());
        }
        for alias in a.get_all_aliases().into_iter().flatten() {
            names.push(alias.to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        collect(sub, names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        let flags = Flags {
            long: ["format", "name", "dir", "mem", "o", "verbose"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            root_with_values: vec!["--cache".into()],
        };
        let args = std::iter::once("kiln")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        normalize(args, &flags)
            .expect("normalize")
            .into_iter()
            .skip(1)
            .map(|a| a.to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn flags_come_from_the_command() {
        use clap::CommandFactory as _;
        let flags = Flags::of(&crate::Cli::command());
        for f in [
            "--cache",
            "--mirror",
            "--cert-file",
            "--arch",
            "--progress",
            "--verbosity",
        ] {
            assert!(flags.root_with_values.iter().any(|x| x == f), "{f}");
        }
        assert!(!flags.root_with_values.iter().any(|x| x == "--quiet"));
        assert!(flags.long.iter().any(|x| x == "input-tar"));
    }

    #[test]
    fn numbered_verbosity() {
        assert_eq!(norm(&["-v", "2", "build"]), ["--verbosity=2", "build"]);
        assert_eq!(norm(&["-v2", "build"]), ["--verbosity=2", "build"]);
        assert_eq!(norm(&["--verbose=0", "build"]), ["--verbosity=0", "build"]);
        assert_eq!(norm(&["-vv", "build"]), ["-vv", "build"]);
        assert_eq!(norm(&["-v", "build"]), ["-v", "build"]);
    }

    #[test]
    fn single_dash_long_flags() {
        assert_eq!(
            norm(&["build", "-format", "tar", "-name=x", "a.yml"]),
            ["build", "--format", "tar", "--name=x", "a.yml"]
        );
        assert_eq!(norm(&["build", "-f", "tar"]), ["build", "-f", "tar"]);
        assert_eq!(
            norm(&["build", "--", "-format"]),
            ["build", "--", "-format"]
        );
    }

    #[test]
    fn run_without_backend_is_qemu() {
        assert_eq!(norm(&["run", "hello"]), ["run", "qemu", "hello"]);
        assert_eq!(
            norm(&["--cache", "x", "run", "-mem", "512", "hello"]),
            ["--cache", "x", "run", "qemu", "--mem", "512", "hello"]
        );
        assert_eq!(norm(&["run", "qemu", "hello"]), ["run", "qemu", "hello"]);
        assert_eq!(norm(&["run", "stop", "dir"]), ["run", "stop", "dir"]);
        let args = ["kiln", "run", "hyperkit", "x"]
            .map(OsString::from)
            .to_vec();
        let none = Flags {
            long: Vec::new(),
            root_with_values: Vec::new(),
        };
        assert!(normalize(args, &none).is_err());
    }

    #[test]
    fn flavour_from_program_name() {
        assert_eq!(
            Flavour::from_argv0(OsStr::new("/usr/bin/linuxkit")),
            Flavour::Linuxkit
        );
        assert_eq!(Flavour::from_argv0(OsStr::new("kiln")), Flavour::Kiln);
    }
}
