//! From a manifest to output files: assembly feeding each requested format's writer.

use crate::{AssembleError, Options, assemble};
use kiln_format::{Format, Target};
use kiln_manifest::ManifestSet;
use kiln_oci::Store;
use std::io::Write as _;
use std::path::PathBuf;

/// Assemble `set` from `store` and write it in every format of `formats` to `target`: one
/// assembly pass feeds every format (two when `docker`, which lays the root out for a container
/// engine, is among them). Returns the files written. Each output appears only once complete.
///
/// With `opts.sbom`, the SBOM goes into the root filesystem of every output and beside them
/// ([`sbom_beside`]), the last of the files returned.
pub fn write_outputs(
    set: &ManifestSet,
    store: &Store,
    opts: &Options,
    formats: &[Format],
    target: &Target,
) -> Result<Vec<PathBuf>, AssembleError> {
    let mut written = Vec::new();
    let mut sbom = None;
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
        let doc = assemble(set, store, &opts, &mut *writer)?;
        written.extend(writer.finish()?);
        // Both passes list the same images: the same document.
        sbom = sbom.or(doc);
    }
    if let (Some(doc), Some(settings)) = (sbom, &opts.sbom)
        && let Some(path) = sbom_beside(settings.format, formats, target)
    {
        let mut out = kiln_format::AtomicOutput::create(&path).map_err(AssembleError::Output)?;
        out.write_all(&doc).map_err(AssembleError::Output)?;
        written.push(out.commit().map_err(AssembleError::Output)?);
    }
    Ok(written)
}

/// Where the SBOM goes beside the outputs: `DIR/NAME-sbom.spdx.json` (`.cdx.json` for
/// CycloneDX); when the only output is a tar given with `-o FILE`, beside it as
/// `FILE-STEM-sbom.spdx.json`; none when that tar goes to standard output.
pub fn sbom_beside(
    format: kiln_sbom::Format,
    formats: &[Format],
    target: &Target,
) -> Option<PathBuf> {
    let name = |stem: &str| format!("{stem}-sbom.{}", format.suffix());
    match &target.tar_output {
        Some(tar) if formats.iter().all(|f| *f == Format::Tar) => {
            if tar.as_os_str() == "-" {
                return None;
            }
            let stem = tar.file_stem()?.to_string_lossy().to_string();
            Some(tar.with_file_name(name(&stem)))
        }
        _ => Some(target.dir.join(name(&target.name))),
    }
}
