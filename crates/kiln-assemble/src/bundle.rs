//! `kiln image unpack`: an image as an OCI runtime bundle (`rootfs/` and `config.json`) that
//! runc, or kiln-runtime, can run. The config is the one `kiln build` writes for a container
//! (LinuxKit's defaults, the image's `org.mobyproject.config` label, its entrypoint, command,
//! environment and working directory), with the root made writable.

use crate::{AssembleError, oci_config};
use kiln_fs::Flattener;
use kiln_oci::{ImageLayers, Reference, Store};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Unpack `name` for `arch` into `dir` (which must not exist or be empty).
pub fn unpack_bundle(
    store: &Store,
    name: &Reference,
    arch: &str,
    dir: &Path,
) -> Result<(), AssembleError> {
    let bundle_err = |message: String| AssembleError::Bundle {
        dir: dir.to_path_buf(),
        message,
    };
    let image = store.resolve(name, arch)?;
    let not_empty = fs::read_dir(dir).map(|mut d| d.next().is_some());
    if matches!(not_empty, Ok(true)) {
        return Err(bundle_err(
            "the directory is not empty: give a new or empty directory".into(),
        ));
    }
    let rootfs = dir.join("rootfs");
    // The container's `/` and its configuration are the same whatever the umask: a 0700 root
    // would lock out every user but root in the container.
    fs::create_dir_all(&rootfs)
        .and_then(|()| fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)))
        .map_err(|e| bundle_err(format!("cannot create {}: {e}", rootfs.display())))?;
    Flattener::new(&ImageLayers::new(store, &image)).run(&mut |entry, data| {
        kiln_fs::unpack::write_entry(&rootfs, entry, data).map_err(AssembleError::from)
    })?;
    let exec = image.config.config.clone().unwrap_or_default();
    let label = exec
        .labels
        .as_ref()
        .and_then(|l| l.get(kiln_manifest::CONFIG_LABEL))
        .map(|text| kiln_manifest::parse_label(&image.reference, text))
        .transpose()
        .map_err(AssembleError::Manifest)?
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
    let b = oci_config::bundle(&yaml, &label, &exec, &HashMap::new(), arch)
        .map_err(|(field, msg)| bundle_err(format!("{field}: {msg}")))?;
    let path = dir.join("config.json");
    fs::write(&path, oci_config::to_go_json(&b.config))
        .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o644)))
        .map_err(|e| bundle_err(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

/// Write the root filesystem of `name` for `arch` to `out` as a tar stream (its layers
/// flattened; `kiln cache export --format filesystem`, as LinuxKit's). Returns `out`.
pub fn export_filesystem<W: std::io::Write>(
    store: &Store,
    name: &Reference,
    arch: &str,
    out: W,
) -> Result<W, AssembleError> {
    use kiln_fs::Sink as _;
    let image = store.resolve(name, arch)?;
    let mut tar = kiln_format::TarSink::new(out);
    Flattener::new(&ImageLayers::new(store, &image))
        .run(&mut |entry, data| tar.add(entry, data).map_err(AssembleError::Output))?;
    tar.finish().map_err(AssembleError::Output)
}
