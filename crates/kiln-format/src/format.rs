//! The output formats kiln writes, as one typed list, and the interface every format's writer
//! implements.

use crate::formats;
use crate::kernel_initrd::Compression;
use kiln_fs::Sink;
use std::io;
use std::path::{Path, PathBuf};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `NAME-kernel`, `NAME-initrd.img` and `NAME-cmdline`, for qemu, iPXE and other loaders
    /// that are handed a kernel.
    KernelInitrd,
    /// `NAME.tar`: the root filesystem as a tar archive.
    Tar,
    /// `NAME-initrd.tar`: a tar holding `kernel`, `initrd.img` and `cmdline`.
    TarKernelInitrd,
    /// `NAME-docker.tar`: the root filesystem laid out for `docker import`.
    Docker,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 4] = [
        Format::KernelInitrd,
        Format::Tar,
        Format::TarKernelInitrd,
        Format::Docker,
    ];

    /// The format's name on the command line and in manifests (LinuxKit's names).
    pub fn name(self) -> &'static str {
        match self {
            Format::KernelInitrd => "kernel+initrd",
            Format::Tar => "tar",
            Format::TarKernelInitrd => "tar-kernel-initrd",
            Format::Docker => "docker",
        }
    }

    /// One line saying what the format writes.
    pub fn description(self) -> &'static str {
        match self {
            Format::KernelInitrd => "NAME-kernel, NAME-initrd.img and NAME-cmdline",
            Format::Tar => "NAME.tar, the root filesystem as a tar archive",
            Format::TarKernelInitrd => "NAME-initrd.tar holding kernel, initrd.img and cmdline",
            Format::Docker => "NAME-docker.tar, the root filesystem for `docker import`",
        }
    }

    /// Whether assembly lays the root filesystem out for a container engine (LinuxKit's
    /// `docker` format) rather than for booting.
    pub fn container_layout(self) -> bool {
        self == Format::Docker
    }

    /// A writer of this format for `target`. Nothing appears under the output names before
    /// [`FormatWriter::finish`] succeeds.
    pub fn writer(self, target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
        match self {
            Format::KernelInitrd => formats::kernel_initrd::writer(target),
            Format::Tar => formats::tar::writer(target, ".tar", true),
            Format::Docker => formats::tar::writer(target, "-docker.tar", false),
            Format::TarKernelInitrd => formats::tar_kernel_initrd::writer(target),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| FormatError::Unknown(s.to_string()))
    }
}

/// Where and how the outputs are written.
#[derive(Debug, Clone)]
pub struct Target {
    /// The directory outputs go to.
    pub dir: PathBuf,
    /// The base name of the outputs (`NAME` in [`Format::description`]).
    pub name: String,
    /// The tar format's output file instead of `DIR/NAME.tar` (`-` for standard output).
    pub tar_output: Option<PathBuf>,
    /// The initrd's compression.
    pub compression: Compression,
    /// The modification time of members the writers add themselves (SOURCE_DATE_EPOCH).
    pub mtime: u64,
    /// Where initrd segments are cached between builds (none: no cache); see
    /// [`crate::segment_cache_dir`].
    pub segment_cache: Option<PathBuf>,
}

impl Target {
    /// Outputs named `NAME...` in `dir`.
    pub fn new(
        dir: impl Into<PathBuf>,
        name: impl Into<String>,
        compression: Compression,
        mtime: u64,
    ) -> Self {
        Target {
            dir: dir.into(),
            name: name.into(),
            tar_output: None,
            compression,
            mtime,
            segment_cache: None,
        }
    }

    /// How the initrd formats write their initrd.
    pub fn initrd_options(&self) -> crate::InitrdOptions {
        crate::InitrdOptions {
            cache: self.segment_cache.clone(),
            ..crate::InitrdOptions::new(self.compression)
        }
    }

    /// The output `NAME{suffix}` in the output directory.
    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.name))
    }
}

/// A format's writer: a [`Sink`] for the root filesystem, finished into its output files.
pub trait FormatWriter: Sink {
    /// Complete the outputs and move them into place; returns their paths (none for standard
    /// output).
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError>;
}

/// An output that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// No such format.
    #[error("unknown output format `{0}`; kiln writes: {names}", names = Format::ALL.map(Format::name).join(", "))]
    Unknown(String),
    /// Writing an output failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Shorthand: an I/O error while writing `path`.
pub(crate) fn write_err(path: &Path) -> impl FnOnce(io::Error) -> FormatError + '_ {
    move |source| FormatError::Write {
        path: path.to_path_buf(),
        source,
    }
}
