//! `kiln completion`: shell completion scripts and manual pages, both generated from the
//! command-line definition itself, so that they never fall out of step with it.

use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Print a shell's completion script, or write the manual pages.
#[derive(clap::Args, Debug)]
#[command(
    group(clap::ArgGroup::new("what").required(true).args(["shell", "man"])),
    after_help = "Install: kiln completion bash > /usr/share/bash-completion/completions/kiln\n\
                  \x20        kiln completion --man /usr/local/share/man/man1"
)]
pub struct CompletionArgs {
    /// The shell whose completion script to print on standard output
    #[arg(value_enum)]
    shell: Option<Shell>,
    /// Write the manual pages into DIR instead (kiln.1 and one page per subcommand, such as
    /// kiln-image-build.1), creating it if needed
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
}

/// The shells kiln writes completion scripts for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    /// bash (with the bash-completion package)
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Run `kiln completion`.
pub fn run(args: CompletionArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.man {
        let written = write_man_pages(dir)?;
        tracing::info!("wrote {written} manual pages to {}", dir.display());
        return Ok(());
    }
    if let Some(shell) = args.shell {
        let mut script = Vec::new();
        let mut cmd = crate::Cli::command();
        clap_complete::generate(
            clap_complete::Shell::from(shell),
            &mut cmd,
            "kiln",
            &mut script,
        );
        let mut out = std::io::stdout().lock();
        out.write_all(&script)
            .and_then(|()| out.flush())
            .context("cannot write the completion script to standard output")?;
    }
    Ok(())
}

/// Write kiln.1 and a page for every subcommand, at every depth (kiln-image-build.1, ...),
/// into `dir`; returns how many pages were written.
fn write_man_pages(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the manual page directory {}", dir.display()))?;
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let date = page_date()?;
    let mut written = 0;
    write_pages(cmd, dir, &date, &mut written)?;
    Ok(written)
}

/// Write the page of `cmd` and of its visible subcommands.
fn write_pages(
    cmd: clap::Command,
    dir: &Path,
    date: &str,
    written: &mut usize,
) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, date, written)?;
    }
    // The date must not be empty: `.TH` would lose that argument and shift the ones after it.
    let man = clap_mangen::Man::new(cmd).date(date).manual("kiln Manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render the manual page {}", path.display()))?;
    write_file(&path, &page)?;
    *written += 1;
    Ok(())
}

/// The date the pages carry, as YYYY-MM-DD: `SOURCE_DATE_EPOCH`'s when it is set (so that
/// the pages are reproducible, as kiln's other outputs are), otherwise today's (UTC).
fn page_date() -> anyhow::Result<String> {
    let time = kiln_build::image::timestamp(crate::image::epoch()?);
    Ok(time[..10].to_string())
}

/// Write `bytes` to `path` under a temporary name, then rename it into place, so that a reader
/// (`man`, `mandb`) never sees half a page.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Readable by everyone, as installed manual pages are (a temporary file is 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot make {} readable", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
