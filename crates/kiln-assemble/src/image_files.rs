//! The files under one directory of an image in the store, read whole and bounded: what the
//! bootloader and rpi3-firmware packages hand the boot media and rpi3 writers.

use crate::AssembleError;
use kiln_fs::layers::Flattener;
use kiln_fs::{Kind, Sink};
use kiln_oci::{Image, ImageLayers, Store};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// No file is larger than this, and all of them together no larger than four times this: these
/// packages hold a few megabytes, and anything larger is not the package asked for.
const FILE_MAX: u64 = 16 << 20;

/// The regular files under `dir` (ending in `/`) in `image` (named `name`), by their path
/// below it. `what` names them in errors ("the boot loader files").
pub(crate) fn files_under(
    store: &Store,
    name: &str,
    image: &Image,
    dir: &str,
    what: &str,
) -> Result<BTreeMap<String, Vec<u8>>, AssembleError> {
    let mut collector = Collector {
        image: name.to_string(),
        dir: dir.to_string(),
        what: what.to_string(),
        files: BTreeMap::new(),
        total: 0,
    };
    Flattener::new(&ImageLayers::new(store, image))
        .run(&mut |entry, data| collector.add(entry, data).map_err(AssembleError::Output))?;
    Ok(collector.files)
}

struct Collector {
    image: String,
    dir: String,
    what: String,
    files: BTreeMap<String, Vec<u8>>,
    total: u64,
}

impl Sink for Collector {
    fn add(&mut self, entry: &kiln_fs::Entry, data: &mut dyn Read) -> io::Result<()> {
        let Some(rel) = entry.path.strip_prefix(self.dir.as_str()) else {
            return Ok(());
        };
        if entry.kind != Kind::File {
            return Ok(());
        }
        self.total += entry.size;
        if entry.size > FILE_MAX || self.total > 4 * FILE_MAX {
            return Err(io::Error::other(format!(
                "image {}: /{} makes {} larger than kiln reads ({} MiB)",
                self.image,
                entry.path,
                self.what,
                FILE_MAX >> 20
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        data.take(entry.size).read_to_end(&mut buf)?;
        self.files.insert(rel.to_string(), buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_directory_are_taken_and_sizes_are_bounded() {
        let mut c = Collector {
            image: "kiln/rpi3-firmware:x".into(),
            dir: "boot/".into(),
            what: "the firmware files".into(),
            files: BTreeMap::new(),
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
        assert_eq!(c.files.keys().collect::<Vec<_>>(), ["start.elf"]);
        let err = c
            .add(
                &kiln_fs::Entry::file("boot/huge", 0o644, FILE_MAX + 1, 0),
                &mut io::empty(),
            )
            .expect_err("too large");
        assert!(
            err.to_string()
                .contains("the firmware files larger than kiln reads"),
            "{err}"
        );
    }
}
