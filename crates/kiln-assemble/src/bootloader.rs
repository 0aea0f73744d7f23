//! The boot loader files of kiln's bootloader package (`pkg/bootloader`), read from its image in
//! the store for the boot media formats.

use crate::AssembleError;
use kiln_format::{Arch, Bootloader};
use kiln_fs::layers::Flattener;
use kiln_fs::{Kind, Sink};
use kiln_oci::{ImageLayers, Reference, Store};
use std::io::{self, Read};

/// The directory of the image that holds the files.
pub const BOOTLOADER_DIR: &str = "boot-files/";

/// No boot loader file is larger than this, and all of them together no larger than four
/// times this: the image is small, and anything else is not kiln's bootloader image.
const FILE_MAX: u64 = 16 << 20;

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
    let mut files = Collector {
        image: name.to_string(),
        found: Bootloader {
            arch: machine,
            ..Bootloader::default()
        },
        total: 0,
    };
    Flattener::new(&ImageLayers::new(store, &image))
        .run(&mut |entry, data| files.add(entry, data).map_err(AssembleError::Output))?;
    if files.found.files.is_empty() {
        return Err(AssembleError::Output(io::Error::other(format!(
            "image {name} has no files under /{BOOTLOADER_DIR}: it is not kiln's bootloader \
             image; build it with `kiln pkg build pkg/bootloader`"
        ))));
    }
    Ok(files.found)
}

struct Collector {
    image: String,
    found: Bootloader,
    total: u64,
}

impl Sink for Collector {
    fn add(&mut self, entry: &kiln_fs::Entry, data: &mut dyn Read) -> io::Result<()> {
        let Some(rel) = entry.path.strip_prefix(BOOTLOADER_DIR) else {
            return Ok(());
        };
        if entry.kind != Kind::File {
            return Ok(());
        }
        self.total += entry.size;
        if entry.size > FILE_MAX || self.total > 4 * FILE_MAX {
            return Err(io::Error::other(format!(
                "image {}: /{} makes the boot loader files larger than kiln reads ({} MiB)",
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
