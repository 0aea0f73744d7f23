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
    /// A layer refused as hostile.
    #[error("image {image}, layer {layer}: refusing entry `{path}`: {why}")]
    HostileLayer {
        /// The image.
        image: String,
        /// The layer digest.
        layer: String,
        /// The entry path as it is in the layer.
        path: String,
        /// Why.
        why: String,
    },
    /// A layer could not be read.
    #[error("image {image}, layer {layer}: {source}")]
    Layer {
        /// The image.
        image: String,
        /// The layer digest.
        layer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

impl From<kiln_manifest::Diagnostic> for AssembleError {
    fn from(d: kiln_manifest::Diagnostic) -> Self {
        AssembleError::Manifest(Box::new(d))
    }
}
