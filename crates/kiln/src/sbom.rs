//! The SBOM flags of `kiln build`.

/// The SBOM flags of `kiln build`.
#[derive(clap::Args, Debug)]
pub struct SbomArgs {
    /// Write no SBOM (kiln writes none yet: LinuxKit's flag, accepted)
    #[arg(long)]
    no_sbom: bool,
    /// The SBOM's path in the root filesystem (LinuxKit's; kiln writes no SBOM yet)
    #[arg(long, value_name = "PATH", hide = true)]
    sbom_output: Option<String>,
    /// Use the current time in the SBOM (LinuxKit's; kiln writes no SBOM yet)
    #[arg(long, hide = true)]
    sbom_current_time: bool,
}

impl SbomArgs {
    /// Warn about flags that do nothing yet.
    pub fn check(&self) {
        if self.sbom_output.is_some() || self.sbom_current_time {
            tracing::info!(
                "kiln writes no SBOM yet: --sbom-output and --sbom-current-time do nothing"
            );
        }
        let _ = self.no_sbom;
    }
}
