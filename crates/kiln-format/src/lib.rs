//! Output formats: writers that turn kiln's entry stream into files.
//!
//! This crate owns the archive writers ([`TarSink`], [`CpioSink`]), compression, the
//! kernel+initrd split ([`KernelInitrd`]) and atomic output files ([`AtomicOutput`]): an output
//! appears under its name only once it is complete. It does not assemble anything; it consumes a
//! [`kiln_assemble::Sink`] stream.

mod cpio;
mod kernel_initrd;
mod tar_sink;

pub use cpio::CpioSink;
pub use kernel_initrd::{Compression, KernelInitrd};
pub use tar_sink::TarSink;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file written under a temporary name and renamed into place by [`AtomicOutput::commit`];
/// dropped uncommitted, it leaves nothing behind.
pub struct AtomicOutput {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicOutput {
    /// Start writing `dest`.
    pub fn create(dest: &Path) -> io::Result<Self> {
        let dir = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-")
            .suffix(".partial")
            .tempfile_in(dir)?;
        Ok(AtomicOutput {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Flush, fsync and rename into place.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        self.tmp.flush()?;
        self.tmp.as_file().sync_all()?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        std::fs::set_permissions(self.tmp.path(), mode)?;
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        Ok(self.dest)
    }
}

impl Write for AtomicOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}
