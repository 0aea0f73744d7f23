//! The SBOM flags of `kiln build`.

use anyhow::Context as _;

/// The SBOM flags of `kiln build`.
#[derive(clap::Args, Debug)]
pub struct SbomArgs {
    /// Write no SBOM (by default one goes into the root filesystem and beside the outputs)
    #[arg(long)]
    no_sbom: bool,
    /// The SBOM's path in the root filesystem [default: sbom.spdx.json, sbom.cdx.json for
    /// CycloneDX]
    #[arg(long, value_name = "PATH")]
    sbom_output: Option<String>,
    /// The SBOM's format: SPDX 2.3 JSON or CycloneDX 1.6 JSON
    #[arg(long, value_name = "FORMAT", default_value = "spdx",
          value_parser = clap::builder::PossibleValuesParser::new(kiln_sbom::Format::NAMES))]
    sbom_format: String,
    /// Date the SBOM with the current time instead of SOURCE_DATE_EPOCH (the build is then
    /// no longer reproducible)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_name = "BOOL")]
    sbom_current_time: Option<bool>,
}

impl SbomArgs {
    /// Refuse contradicting flags (before any work is done).
    pub fn check(&self) -> anyhow::Result<()> {
        if self.no_sbom && self.sbom_output.is_some() {
            anyhow::bail!("--no-sbom and --sbom-output contradict each other: give one");
        }
        Ok(())
    }

    /// What assembly needs to write the SBOM of the build `name` (`None` with --no-sbom):
    /// dated SOURCE_DATE_EPOCH (`epoch`, 0 without one) unless --sbom-current-time, with the
    /// findings of images kept in the store at `store_root`.
    pub fn settings(
        &self,
        name: &str,
        epoch: Option<u64>,
        store_root: &std::path::Path,
    ) -> anyhow::Result<Option<kiln_sbom::Settings>> {
        if self.no_sbom {
            return Ok(None);
        }
        let format: kiln_sbom::Format = self
            .sbom_format
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        let created = if self.sbom_current_time == Some(true) {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_secs()
        } else {
            epoch.unwrap_or(0)
        };
        Ok(Some(kiln_sbom::Settings {
            format,
            path: self
                .sbom_output
                .clone()
                .unwrap_or_else(|| format.default_path()),
            created,
            name: name.to_string(),
            cache_dir: Some(kiln_sbom::findings_dir(store_root)),
        }))
    }
}
