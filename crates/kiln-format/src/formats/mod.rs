//! One module per output format, each providing the [`crate::FormatWriter`] of
//! [`crate::Format`]'s variant.

pub(crate) mod boot_media;
pub(crate) mod kernel_initrd;
pub(crate) mod packager;
pub(crate) mod root_split;
pub(crate) mod rpi3;
pub(crate) mod tar;
pub(crate) mod tar_kernel_initrd;
