//! `kiln image unpack`: an image as an OCI runtime bundle (`rootfs/` and `config.json`) that
//! runc, or kiln-runtime, can run. The config is the one `kiln build` writes for a container
//! (LinuxKit's defaults, the image's `org.mobyproject.config` label, its entrypoint, command,
//! environment and working directory), with the root made writable.

use crate::error::{BuildError, io_err};
use kiln_assemble::layers::Flattener;
use kiln_assemble::{AssembleError, oci_config};
use kiln_oci::{Reference, Store};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// Unpack `name` for `arch` into `dir` (which must not exist or be empty).
pub fn unpack_bundle(
    store: &Store,
    name: &Reference,
    arch: &str,
    dir: &Path,
) -> Result<(), BuildError> {
    let image = store.resolve(name, arch)?;
    if dir.exists() && fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
        return Err(io_err(dir)(std::io::Error::other(
            "the bundle directory is not empty: give a new or empty directory",
        )));
    }
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err(&rootfs))?;
    let mut failure = None;
    Flattener::new(store, &image)
        .run(&mut |entry, data| {
            crate::unpack::write_entry(&rootfs, entry, data).map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                AssembleError::Output(std::io::Error::other(message))
            })
        })
        .map_err(|e| {
            failure
                .take()
                .unwrap_or_else(|| io_err(&rootfs)(std::io::Error::other(e.to_string())))
        })?;
    let exec = image.config.config.clone().unwrap_or_default();
    let label = exec
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::pkg::CONFIG_LABEL))
        .map(|text| kiln_manifest::parse_label(&image.reference, text))
        .transpose()
        .map_err(|d| io_err(dir)(std::io::Error::other(d.to_string())))?
        .unwrap_or_default();
    let yaml = kiln_manifest::Image {
        name: name
            .name()
            .rsplit('/')
            .next()
            .unwrap_or("container")
            .to_string(),
        image: name.to_string(),
        readonly: Some(false),
        ..Default::default()
    };
    let b = oci_config::bundle(&yaml, &label, &exec, &HashMap::new())
        .map_err(|(field, msg)| io_err(dir)(std::io::Error::other(format!("{field}: {msg}"))))?;
    let path = dir.join("config.json");
    fs::write(&path, oci_config::to_go_json(&b.config)).map_err(io_err(&path))?;
    Ok(())
}
