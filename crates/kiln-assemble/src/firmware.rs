//! The Raspberry Pi firmware of kiln's rpi3-firmware package (`pkg/rpi3-firmware`), read from
//! its image in the store for the rpi3 format.

use crate::AssembleError;
use kiln_format::{Arch, Firmware};
use kiln_fs::layers::Flattener;
use kiln_fs::{Kind, Sink};
use kiln_oci::{ImageLayers, Reference, Store};
use std::io::{self, Read};

/// The directory of the image whose files go on the SD card (LinuxKit's mkimage-rpi3 image keeps
/// them there too).
pub const FIRMWARE_DIR: &str = "boot/";

/// No firmware file is larger than this, and all of them together no larger than four times
/// this: the firmware is a few megabytes, and anything else is not kiln's firmware image.
const FILE_MAX: u64 = 16 << 20;

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
    let mut files = Collector {
        image: name.to_string(),
        found: Firmware::default(),
        total: 0,
    };
    Flattener::new(&ImageLayers::new(store, &image))
        .run(&mut |entry, data| files.add(entry, data).map_err(AssembleError::Output))?;
    if files.found.files.is_empty() {
        return Err(AssembleError::Output(io::Error::other(format!(
            "image {name} has no files under /{FIRMWARE_DIR}: it is not kiln's Raspberry Pi \
             firmware image; build it with `kiln --arch arm64 pkg build pkg/rpi3-firmware`"
        ))));
    }
    Ok(files.found)
}

struct Collector {
    image: String,
    found: Firmware,
    total: u64,
}

impl Sink for Collector {
    fn add(&mut self, entry: &kiln_fs::Entry, data: &mut dyn Read) -> io::Result<()> {
        let Some(rel) = entry.path.strip_prefix(FIRMWARE_DIR) else {
            return Ok(());
        };
        if entry.kind != Kind::File {
            return Ok(());
        }
        self.total += entry.size;
        if entry.size > FILE_MAX || self.total > 4 * FILE_MAX {
            return Err(io::Error::other(format!(
                "image {}: /{} makes the firmware files larger than kiln reads ({} MiB)",
                self.image,
                entry.path,
                FILE_MAX >> 20
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        data.take(entry.size).read_to_end(&mut buf)?;
        self.found.files.insert(rel.to_string(), buf);
        Ok(())
    }
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

    #[test]
    fn only_regular_files_under_boot_are_taken_and_sizes_are_bounded() {
        let mut c = Collector {
            image: "kiln/rpi3-firmware:x".into(),
            found: Firmware::default(),
            total: 0,
        };
        c.add(
            &kiln_fs::Entry::file("boot/start.elf", 0o644, 3, 0),
            &mut &b"elf"[..],
        )
        .expect("file");
        c.add(
            &kiln_fs::Entry::file("VERSIONS", 0o644, 2, 0),
            &mut &b"v\n"[..],
        )
        .expect("outside");
        c.add(
            &kiln_fs::Entry::dir("boot/overlays", 0o755, 0),
            &mut io::empty(),
        )
        .expect("dir");
        assert_eq!(c.found.files.keys().collect::<Vec<_>>(), ["start.elf"]);
        let err = c
            .add(
                &kiln_fs::Entry::file("boot/huge", 0o644, FILE_MAX + 1, 0),
                &mut io::empty(),
            )
            .expect_err("too large");
        assert!(err.to_string().contains("larger than kiln reads"), "{err}");
    }
}
