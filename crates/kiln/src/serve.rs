//! `kiln serve`: a directory over HTTP for network (iPXE) boots, and `kiln metadata create`:
//! a user-data ISO. The work is kiln-vm's.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, [ADDR]:PORT or PORT (no address: every interface)
    #[arg(long, default_value = kiln_vm::serve::DEFAULT_LISTEN, value_name = "[ADDR]:PORT")]
    port: String,
    /// Directory to serve
    #[arg(long, default_value = ".", value_name = "DIR")]
    directory: PathBuf,
    /// URL the generated NAME.ipxe scripts load NAME-kernel and NAME-initrd.img from
    /// (default: http:// and the Host the request was sent to)
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
}

/// Serve until interrupted.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let server = kiln_vm::Server::bind(&kiln_vm::ServeOptions {
        listen: a.port.clone(),
        directory: a.directory.clone(),
        base_url: a.base_url.clone(),
    })?;
    let addr = server.local_addr()?;
    eprintln!(
        "serving {} on http://{addr}/ (NAME.ipxe boots NAME-kernel and NAME-initrd.img; -v logs requests; interrupt to stop)",
        a.directory.display()
    );
    server.run()?;
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum MetadataCommand {
    /// Write DATA (or --data-file) into an ISO image as /config and /user-data, labelled
    /// cidata: the CD-ROM `kiln run qemu --data` attaches, read by pkg/metadata and cloud-init
    Create(MetadataCreateArgs),
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["data", "data_file"]))]
pub struct MetadataCreateArgs {
    /// The ISO image to write (replaced if it exists)
    iso: PathBuf,
    /// The metadata, as a string
    data: Option<String>,
    /// Read the metadata from this file instead
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
}

/// Run a `kiln metadata` command.
pub fn run_metadata(cmd: MetadataCommand) -> anyhow::Result<()> {
    let MetadataCommand::Create(a) = cmd;
    let data = match (a.data, &a.data_file) {
        (Some(d), _) => d.into_bytes(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("reading --data-file {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give the metadata as an argument or with --data-file"),
    };
    kiln_vm::write_user_data_iso(&data, &a.iso)
        .with_context(|| format!("writing the metadata image {}", a.iso.display()))?;
    Ok(())
}
