//! Reusing the entries of an earlier tar build (`--input-tar`), as LinuxKit does.
//!
//! Every entry of a tar build carries its origin as PAX records: the image reference it comes
//! from and its location in the manifest (`init[0]`, `services[2]`, ...); kiln adds the
//! image's manifest digest and the digest of the segment key (layers, prefix, layout version,
//! SOURCE_DATE_EPOCH), which determines the entries completely. When assembly reaches an
//! image's segment, the earlier tar is searched, forward only, for the entries of the same
//! location:
//!
//! - entries kiln wrote (they carry `kiln.digest`) are reused when their reference, manifest
//!   digest and segment digest are all unchanged: they are then exactly what extracting the
//!   image would give, so the output equals a build from scratch, byte for byte;
//! - entries LinuxKit wrote (no kiln records) are reused, as LinuxKit reuses them, when their
//!   reference is unchanged; the files under the image's directory are taken, kiln writes the
//!   rest (the directories leading there, config.json, runtime.json) itself.
//!
//! Anything else is built from the store as usual. The references come from the records, not
//! from a metadata file in the tar: unlike LinuxKit, no `files` entry with `metadata` is
//! needed. The earlier tar is read once, from start to end, one entry at a time: locations
//! come in the same order in every build (kernel, init, volumes, onboot, onshutdown, services,
//! files). Kernel files are not reused (the kernel image is read for its kernel anyway).

use crate::AssembleError;
use kiln_format::{TarEntry, TarReader};
use kiln_fs::Origin;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// The earlier tar, read forward.
pub(crate) struct InputTar {
    path: PathBuf,
    reader: TarReader<BufReader<File>>,
    peeked: Option<TarEntry>,
}

/// What the earlier tar holds for a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Entries kiln wrote, with the same segment: copy them as they are.
    Kiln,
    /// Entries LinuxKit wrote from the same reference: copy those under the prefix.
    LinuxKit,
    /// Nothing reusable: build from the store.
    Nothing,
}

/// Where a location comes in a build: section, then index. `None` for locations no image
/// has (LinuxKit's package database, `linuxkit.*` additions).
fn order(location: &str) -> Option<(u8, u64)> {
    if location == "kernel" {
        return Some((0, 0));
    }
    let (section, rest) = location.split_once('[')?;
    let index: u64 = rest.strip_suffix(']')?.parse().ok()?;
    let rank = match section {
        "init" => 1,
        // LinuxKit writes `volume[N]` and looks for `volumes[N]`: both name the volume.
        "volumes" | "volume" => 2,
        "onboot" => 3,
        "onshutdown" => 4,
        "services" => 5,
        "files" => 6,
        _ => return None,
    };
    Some((rank, index))
}

impl InputTar {
    /// Open `path`. It is read as assembly goes; an output written to the same path replaces
    /// it only once complete, so reading it to the end is safe.
    pub(crate) fn open(path: &Path) -> Result<Self, AssembleError> {
        let file = File::open(path).map_err(|source| AssembleError::InputTar {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(InputTar {
            path: path.to_path_buf(),
            reader: TarReader::new(BufReader::with_capacity(1 << 20, file)),
            peeked: None,
        })
    }

    fn error(&self, source: io::Error) -> AssembleError {
        AssembleError::InputTar {
            path: self.path.clone(),
            source,
        }
    }

    fn peek(&mut self) -> Result<Option<&TarEntry>, AssembleError> {
        if self.peeked.is_none() {
            self.peeked = self.reader.next_entry().map_err(|e| self.error(e))?;
        }
        Ok(self.peeked.as_ref())
    }

    /// Consume the peeked entry; its data is read next.
    fn take(&mut self) -> Option<TarEntry> {
        self.peeked.take()
    }

    /// Skip to the entries of `want`'s location and say what they offer for the segment
    /// `want` describes (its `segment` set). Entries of earlier locations are skipped; the
    /// first entry of a later location stays for later segments.
    pub(crate) fn find(&mut self, want: &Origin) -> Result<Found, AssembleError> {
        let Some(target) = order(&want.location) else {
            return Ok(Found::Nothing);
        };
        loop {
            let Some(t) = self.peek()? else {
                return Ok(Found::Nothing);
            };
            let Some(o) = &t.origin else {
                self.take();
                continue;
            };
            match order(&o.location) {
                None => {
                    self.take();
                    continue;
                }
                Some(k) if k < target => {
                    self.take();
                    continue;
                }
                Some(k) if k > target => return Ok(Found::Nothing),
                Some(_) => {}
            }
            if o.digest.is_some() || o.segment.is_some() {
                // kiln's entries: those outside the segment (a volume's directories, a
                // container's config) are written anew.
                if o.segment.is_none() {
                    self.take();
                    continue;
                }
                let same =
                    o.segment == want.segment && o.source == want.source && o.digest == want.digest;
                return Ok(if same { Found::Kiln } else { Found::Nothing });
            }
            if o.source.starts_with("linuxkit.") {
                self.take();
                continue;
            }
            return Ok(if o.source == want.source {
                Found::LinuxKit
            } else {
                Found::Nothing
            });
        }
    }

    /// After [`InputTar::find`] answered `found`, hand the entries to reuse to `add`, with
    /// their data: kiln's entries of the segment, or LinuxKit's entries of the location
    /// strictly under `prefix` (all of them for an empty prefix).
    pub(crate) fn copy(
        &mut self,
        want: &Origin,
        found: &Found,
        prefix: &str,
        add: &mut dyn FnMut(kiln_fs::Entry, &mut dyn Read) -> Result<(), AssembleError>,
    ) -> Result<u64, AssembleError> {
        let target = order(&want.location);
        let mut copied = 0;
        while let Some(t) = self.peek()? {
            let Some(o) = &t.origin else {
                break;
            };
            if order(&o.location) != target {
                break;
            }
            let take = match found {
                Found::Kiln if o.segment == want.segment => true,
                Found::Kiln | Found::Nothing => break,
                Found::LinuxKit => {
                    o.source == want.source
                        && t.entry.path.starts_with(prefix)
                        && t.entry.path.len() > prefix.len()
                }
            };
            let Some(t) = self.take() else {
                break;
            };
            if !take {
                continue;
            }
            let mut data = Tracked {
                inner: self.reader.data(),
                failed: false,
            };
            match add(t.entry, &mut data) {
                Ok(()) => copied += 1,
                Err(AssembleError::Output(e)) if data.failed => return Err(self.error(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(copied)
    }
}

/// A reader that remembers whether it failed, to tell read errors (of the earlier tar) from
/// write errors (of the output) once both went through a sink.
struct Tracked<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn locations_come_in_build_order() {
        let seq = [
            "kernel",
            "init[0]",
            "init[1]",
            "volume[0]",
            "volumes[1]",
            "onboot[0]",
            "onshutdown[3]",
            "services[0]",
            "services[10]",
            "files[0]",
        ];
        let keys: Vec<_> = seq.iter().map(|l| order(l).expect(l)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(order("volume[2]"), order("volumes[2]"));
        for other in ["init", "linuxkit.files", "services[x]", "boot[0]", ""] {
            assert_eq!(order(other), None, "{other}");
        }
    }
}
