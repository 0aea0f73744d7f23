//! Errors of the image builder.

use std::path::PathBuf;

/// What can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is malformed, or one of its instructions cannot be carried out.
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line of the instruction.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },
    /// A `RUN` step exited with a non-zero status.
    #[error("{file}:{line}: RUN {command}: exited with {status}")]
    RunFailed {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The command.
        command: String,
        /// The exit status.
        status: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A layer cannot be unpacked safely.
    #[error("layer {layer}: {path}: {message}")]
    Layer {
        /// The layer's digest.
        layer: String,
        /// The offending entry.
        path: String,
        /// Why.
        message: String,
    },
    /// A `build.yml` is invalid.
    #[error("{file}: {message}")]
    Package {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] kiln_oci::StoreError),
    /// A registry operation failed.
    #[error(transparent)]
    Registry(#[from] kiln_oci::registry::RegistryError),
    /// The container runtime failed.
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::RuntimeError),
}

/// Shorthand to wrap an I/O error with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { path, source }
}
