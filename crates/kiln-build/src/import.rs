//! `kiln image import`: an image of one layer from a root filesystem directory or tarball (what
//! `docker import` does), so that a `debootstrap` tree becomes a base image.

use crate::diff::{self, Layer};
use crate::error::{BuildError, io_err};
use crate::image::{self, ImageConfig};
use kiln_oci::spec::Descriptor;
use kiln_oci::{Digest, HashingWriter, Reference, Store};
use std::fs;
use std::io::{self, BufReader};
use std::path::Path;

/// Options for an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Architecture recorded in the config (Go naming).
    pub arch: String,
    /// Environment (`KEY=value`) for the config; PATH is added when missing.
    pub env: Vec<String>,
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// SOURCE_DATE_EPOCH: creation time, and a cap on file times for directory imports.
    pub source_date_epoch: Option<u64>,
    /// How the layer is compressed.
    pub compression: crate::diff::LayerCompression,
}

/// Import `source` (a directory, or a tar that may be gzip/zstd compressed) as `name`.
pub fn import(
    store: &Store,
    source: &Path,
    name: &Reference,
    opts: &ImportOptions,
) -> Result<(Digest, Descriptor), BuildError> {
    let _guard = store.write_guard()?;
    let meta = fs::metadata(source).map_err(io_err(source))?;
    let layer = if meta.is_dir() {
        diff::write_tree(store, source, opts.source_date_epoch, opts.compression)?
    } else {
        let f = fs::File::open(source).map_err(io_err(source))?;
        let mut reader =
            kiln_oci::decompress(BufReader::with_capacity(1 << 20, f)).map_err(io_err(source))?;
        check_tar(source)?;
        let mut w = HashingWriter::new(diff::Compressor::start(
            store.blob_writer()?,
            opts.compression,
        ));
        io::copy(&mut reader, &mut w).map_err(io_err(source))?;
        let (gz, diff_id, _) = w.finish();
        let blob = gz.finish().map_err(io_err(source))?;
        let (digest, size) = blob.commit(None, "imported layer")?;
        Layer {
            diff_id,
            descriptor: Descriptor::new(opts.compression.media_type(), digest, size),
        }
    };
    let mut config = ImageConfig::scratch(&opts.arch);
    let mut env: Vec<String> = opts.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={}", image::DEFAULT_PATH));
    }
    config.set("Env", serde_json::json!(env));
    if let Some(cmd) = &opts.cmd {
        config.set("Cmd", serde_json::json!(cmd));
    }
    let from = source
        .file_name()
        .map_or_else(|| "-".into(), |n| n.to_string_lossy().to_string());
    config.add_history(&format!("Imported from {from}"), false);
    let layers = vec![(layer.diff_id, layer.descriptor)];
    config.finish(&layers, &image::timestamp(opts.source_date_epoch));
    let (digest, desc) = image::write(store, &config, &layers)?;
    // Another platform the name has stays: importing an arm64 tree under the name of an amd64
    // image makes the name a multi-platform index.
    store.tag_platform(name, desc.clone(), &opts.arch)?;
    Ok((digest, desc))
}

/// Refuse a file that is not a tar archive, before anything is stored.
fn check_tar(source: &Path) -> Result<(), BuildError> {
    let f = fs::File::open(source).map_err(io_err(source))?;
    let reader = kiln_oci::decompress(BufReader::new(f)).map_err(io_err(source))?;
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(io_err(source))?;
    match entries.next() {
        Some(Ok(_)) => Ok(()),
        _ => Err(io_err(source)(io::Error::other(
            "not a tar archive (plain, gzip or zstd): give a root filesystem directory or tarball",
        ))),
    }
}
