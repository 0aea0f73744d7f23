//! `kiln key`, `kiln sign` and `kiln verify`.

/// `kiln key`.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {}

/// `kiln sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {}

/// `kiln verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {}

pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub fn run_sign(_args: SignArgs) -> anyhow::Result<()> {
    anyhow::bail!("kiln sign is not written yet")
}

pub fn run_verify(_args: VerifyArgs) -> anyhow::Result<()> {
    anyhow::bail!("kiln verify is not written yet")
}
