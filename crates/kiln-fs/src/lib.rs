//! The root filesystem as a stream of entries, and applying image layers.
//!
//! This crate is the seam between the stages of kiln: assembly produces [`Entry`] values with
//! their data and hands them to a [`Sink`]; the output writers of `kiln-format` are sinks. It also
//! owns what every stage needs to apply OCI layers safely: flattening an image's layers into one
//! stream with whiteouts and opaque directories applied ([`layers::Flattener`], over any
//! [`layers::Layers`] source), normalising archive paths so that none can climb out of the root
//! ([`layers::normalize`]), and unpacking layers or entries into a directory ([`unpack`]). A
//! layer's index (its headers, which flattening reads before the entries) can be kept by the
//! source of layers, so that a layer is read once ([`layer_index`]). Files that mark the work of a
//! live writer are created already locked ([`locked`]). [`Tee`] feeds one stream to several
//! sinks, and [`time`] turns seconds since the epoch into the dates formats write.
//!
//! It knows nothing of registries, stores, manifests or output formats.
//!
//! ```
//! use kiln_fs::{Collect, Entry, Sink};
//! let mut sink = Collect::default();
//! sink.add(&Entry::file("etc/motd", 0o644, 5, 0), &mut &b"hello"[..])?;
//! assert_eq!(sink.entries[0].1, b"hello");
//! # Ok::<(), std::io::Error>(())
//! ```

mod entry;
pub mod layer_index;
pub mod layers;
pub mod locked;
mod tee;
pub mod time;
pub mod unpack;

#[cfg(test)]
mod flatten_tests;

pub use entry::{Collect, Entry, Kind, Origin, Segment, Sink};
pub use layers::{Flattener, LayerError, Layers, normalize};
pub use tee::Tee;
pub use unpack::UnpackError;
