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
    #[error("{file}:{line}: RUN {command}: exited with {status}; its output is in {}{}", .log.display(), last_lines(.tail))]
    RunFailed {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The command.
        command: String,
        /// The exit status.
        status: String,
        /// The log file holding the step's output.
        log: PathBuf,
        /// The last lines of that output.
        tail: Box<str>,
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
    /// A manifest names an image reference that does not parse.
    #[error("{location}: image `{reference}`")]
    ImageReference {
        /// The manifest key (`onboot[0].image`).
        location: String,
        /// The reference as written.
        reference: String,
        /// Why it does not parse.
        #[source]
        source: kiln_oci::ReferenceError,
    },
    /// An image the manifest names is not in the store and the pull failed.
    #[error("{location}: image {reference} is not in the store and could not be pulled")]
    Pull {
        /// The manifest key (`onboot[0].image`).
        location: String,
        /// The image.
        reference: String,
        /// Why the pull failed.
        #[source]
        source: Box<kiln_oci::registry::RegistryError>,
    },
    /// Asking the Docker engine for an image, or taking it from there, failed (`--docker`).
    #[error("{location}: image {reference}: the Docker engine could not supply it")]
    Docker {
        /// The manifest key (`onboot[0].image`).
        location: String,
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: Box<kiln_oci::docker_engine::DockerEngineError>,
    },
    /// A `@pkg:` reference whose package was not among those built.
    #[error("image {reference}: package {dir} was not built")]
    PackageNotBuilt {
        /// The reference as written.
        reference: String,
        /// The package directory.
        dir: PathBuf,
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

impl From<kiln_fs::UnpackError> for BuildError {
    fn from(e: kiln_fs::UnpackError) -> Self {
        match e {
            kiln_fs::UnpackError::Refused {
                layer,
                path,
                message,
            } => BuildError::Layer {
                layer,
                path,
                message,
            },
            kiln_fs::UnpackError::Io { path, source } => BuildError::Io { path, source },
        }
    }
}

/// Shorthand to wrap an I/O error with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { path, source }
}

/// The last lines of a failed step's output, indented, for its error message.
fn last_lines(tail: &str) -> String {
    if tail.trim().is_empty() {
        return String::new();
    }
    let lines: Vec<String> = tail.lines().map(|l| format!("  | {l}")).collect();
    format!(", which ends with:\n{}", lines.join("\n"))
}
