//! From a manifest to output files: assembly feeding each requested format's writer.

use crate::{AssembleError, Options, assemble};
use kiln_format::{Format, Target};
use kiln_manifest::ManifestSet;
use kiln_oci::Store;
use std::path::PathBuf;

/// Assemble `set` from `store` and write it in every format of `formats` to `target`, in
/// order. Returns the files written. Each output appears only once complete; a failure leaves
/// none of the failed format's files behind.
pub fn write_outputs(
    set: &ManifestSet,
    store: &Store,
    opts: &Options,
    formats: &[Format],
    target: &Target,
) -> Result<Vec<PathBuf>, AssembleError> {
    let mut written = Vec::new();
    for &format in formats {
        let opts = Options {
            dockerfile: format.container_layout(),
            ..opts.clone()
        };
        let mut writer = format.writer(target)?;
        assemble(set, store, &opts, &mut *writer)?;
        written.extend(writer.finish()?);
    }
    Ok(written)
}
