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
    let date = page_date();
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
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    let (y, m, d) = civil_from_days(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
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

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2000-02-29 (a leap day of a century divisible by 400) and the day after.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        // 2100 is no leap year.
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
