//! The runtime's error type.

use std::io;
use std::path::PathBuf;

/// Errors from preparing, starting, waiting for or cleaning up after a container.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A path or argument holds a NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    /// The container's configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// A bundle's config.json or runtime.json is unreadable or invalid.
    #[error(transparent)]
    Spec(#[from] kiln_spec::SpecError),
    /// Creating or configuring the container's cgroup failed.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Setting up a network interface or a namespace binding failed.
    #[error("{what}: {source}")]
    Network {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Preparing the root filesystem failed.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The path being prepared.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A step of starting the container failed.
    #[error("starting {command:?} in the container, {step}: {source}")]
    Start {
        /// The command.
        command: String,
        /// What was being done.
        step: String,
        /// The error.
        source: io::Error,
    },
    /// The container was set up but its program could not be executed: not found
    /// (`source.kind()` is `NotFound`), not executable, or not a program.
    #[error("cannot execute {command:?} in the container: {source}")]
    Exec {
        /// The command.
        command: String,
        /// The error exec returned.
        source: io::Error,
    },
    /// The process could not be started, or waited for.
    #[error("starting {command:?} in the container: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// Entering a private mount namespace failed (see `private_mount_namespace`).
    #[error("entering a private mount namespace: {0}")]
    MountNamespace(#[source] io::Error),
    /// What was set up for the container could not all be removed after it ended.
    #[error("cleaning up after {command:?}: {problems}")]
    Cleanup {
        /// The command.
        command: String,
        /// What was left behind, and why.
        problems: String,
    },
}

impl RuntimeError {
    /// Whether the program was not found in the container (exit code 127 by shell convention);
    /// see [`RuntimeError::Exec`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A nix error as an `io::Error`.
pub(crate) fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
