//! The boot loader files of kiln's bootloader package (`pkg/bootloader`), read from its image in
//! the store for the boot media formats.

use crate::AssembleError;
use crate::image_files::files_under;
use kiln_format::{Arch, Bootloader};
use kiln_oci::{Reference, Store};
use std::io;

/// The directory of the image that holds the files.
pub const BOOTLOADER_DIR: &str = "boot-files/";

/// The files under [`BOOTLOADER_DIR`] in the image `name` for `arch` (an OCI architecture,
/// `amd64` or `arm64`), by their path below it; the boot media are written for `arch`.
pub fn bootloader(
    store: &Store,
    name: &Reference,
    arch: &str,
) -> Result<Bootloader, AssembleError> {
    let machine = Arch::from_oci(arch).ok_or_else(|| {
        AssembleError::Output(io::Error::other(format!(
            "kiln writes boot media (ISOs, disks, UKIs) for amd64 and arm64, not {arch}: build \
             kernel+initrd or tar for {arch}"
        )))
    })?;
    let image = store.resolve(name, arch)?;
    let found = Bootloader {
        arch: machine,
        files: files_under(
            store,
            &name.to_string(),
            &image,
            BOOTLOADER_DIR,
            "the boot loader files",
        )?,
    };
    if found.files.is_empty() {
        return Err(AssembleError::Output(io::Error::other(format!(
            "image {name} has no files under /{BOOTLOADER_DIR}: it is not kiln's bootloader \
             image; build it with `kiln pkg build pkg/bootloader`"
        ))));
    }
    Ok(found)
}
