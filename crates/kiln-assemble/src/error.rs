//! Errors of assembly.

/// Errors of assembly.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The store failed (missing image, corrupt blob, ...).
    #[error(transparent)]
    Store(#[from] kiln_oci::StoreError),
    /// A manifest problem found while assembling, located in the manifest.
    #[error("{0}")]
    Manifest(Box<kiln_manifest::Diagnostic>),
    /// A layer refused as hostile or unreadable.
    #[error(transparent)]
    Layer(#[from] kiln_fs::LayerError),
    /// The kernel image lacks a file the manifest asks for.
    #[error(
        "kernel image {image} has no `{file}`; check kernel.binary / kernel.tar / kernel.ucode in the manifest"
    )]
    KernelFile {
        /// The image.
        image: String,
        /// The file.
        file: String,
    },
    /// `--decompress-kernel` cannot decompress the kernel.
    #[error(
        "image {image}: cannot decompress its kernel {file}: {why}; build without --decompress-kernel"
    )]
    KernelDecompress {
        /// The kernel image.
        image: String,
        /// The kernel file in it.
        file: String,
        /// Why.
        why: String,
    },
    /// A `files` source could not be read.
    #[error("{location}: cannot read source {path}: {source}")]
    Source {
        /// The manifest location.
        location: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing entries into a directory failed.
    #[error(transparent)]
    Unpack(#[from] kiln_fs::UnpackError),
    /// A runtime bundle could not be made.
    #[error("bundle {dir}: {message}")]
    Bundle {
        /// The bundle directory.
        dir: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// An output format's writer failed.
    #[error(transparent)]
    Format(#[from] kiln_format::FormatError),
    /// The earlier tar given to reuse (`--input-tar`) cannot be read.
    #[error(
        "cannot reuse the input tar {}: {source}; give a tar that an earlier `build -f tar` wrote, or build without --input-tar", path.display()
    )]
    InputTar {
        /// The tar.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SBOM's path in the root filesystem is not one.
    #[error(
        "the SBOM path `{path}` {why}; give a relative path inside the root filesystem, as sbom.spdx.json"
    )]
    SbomPath {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

impl From<kiln_manifest::Diagnostic> for AssembleError {
    fn from(d: kiln_manifest::Diagnostic) -> Self {
        AssembleError::Manifest(Box::new(d))
    }
}
