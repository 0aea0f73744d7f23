//! From a manifest to output files: assembly feeding each requested format's writer.

use crate::{AssembleError, Options, assemble};
use kiln_format::{Format, Target};
use kiln_manifest::ManifestSet;
use kiln_oci::Store;
use std::path::PathBuf;

/// Assemble `set` from `store` and write it in every format of `formats` to `target`: one
/// assembly pass feeds every format (two when `docker`, which lays the root out for a container
/// engine, is among them). Returns the files written. Each output appears only once complete.
pub fn write_outputs(
    set: &ManifestSet,
    store: &Store,
    opts: &Options,
    formats: &[Format],
    target: &Target,
) -> Result<Vec<PathBuf>, AssembleError> {
    let mut written = Vec::new();
    // One assembly pass per root layout: every booting format shares one, `docker` has its own.
    for container in [false, true] {
        let group: Vec<Format> = formats
            .iter()
            .copied()
            .filter(|f| f.container_layout() == container)
            .collect();
        if group.is_empty() {
            continue;
        }
        let opts = Options {
            dockerfile: container,
            ..opts.clone()
        };
        let mut writer = kiln_format::writer(&group, target)?;
        assemble(set, store, &opts, &mut *writer)?;
        written.extend(writer.finish()?);
    }
    Ok(written)
}
