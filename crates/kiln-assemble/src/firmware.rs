//! The Raspberry Pi firmware of kiln's rpi3-firmware package (`pkg/rpi3-firmware`), read from
//! its image in the store for the rpi3 format.

use crate::AssembleError;
use crate::image_files::files_under;
use kiln_format::{Arch, Firmware};
use kiln_oci::{Reference, Store};
use std::io;

/// The directory of the image whose files go on the SD card (LinuxKit's mkimage-rpi3 image keeps
/// them there too).
pub const FIRMWARE_DIR: &str = "boot/";

/// Whether kiln writes the rpi3 format for systems of `arch` (an OCI architecture): arm64 only,
/// the Raspberry Pi 3 in 64-bit mode.
pub fn check_rpi3_arch(arch: &str) -> Result<(), AssembleError> {
    if Arch::from_oci(arch) == Some(Arch::Arm64) {
        return Ok(());
    }
    Err(AssembleError::Output(io::Error::other(format!(
        "format rpi3 is for arm64 systems (a Raspberry Pi 3 runs in 64-bit mode), and this \
         build is for {arch}: build with `kiln --arch arm64 build -f rpi3`"
    ))))
}

/// The files under [`FIRMWARE_DIR`] in the image `name` for `arch` (arm64), by their path
/// below it.
pub fn firmware(store: &Store, name: &Reference, arch: &str) -> Result<Firmware, AssembleError> {
    check_rpi3_arch(arch)?;
    let image = store.resolve(name, arch)?;
    let found = Firmware {
        files: files_under(
            store,
            &name.to_string(),
            &image,
            FIRMWARE_DIR,
            "the firmware files",
        )?,
    };
    if found.files.is_empty() {
        return Err(AssembleError::Output(io::Error::other(format!(
            "image {name} has no files under /{FIRMWARE_DIR}: it is not kiln's Raspberry Pi \
             firmware image; build it with `kiln --arch arm64 pkg build pkg/rpi3-firmware`"
        ))));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpi3_is_for_arm64_only() {
        for arch in ["arm64", "aarch64"] {
            assert!(check_rpi3_arch(arch).is_ok(), "{arch}");
        }
        let err = check_rpi3_arch("amd64").expect_err("amd64");
        assert!(
            err.to_string().contains("kiln --arch arm64 build -f rpi3"),
            "{err}"
        );
        assert!(check_rpi3_arch("x86_64").is_err());
    }
}
