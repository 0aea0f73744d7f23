//! SBOMs for kiln: the images of a build and the packages found in them, written as SPDX 2.3
//! or CycloneDX 1.6 JSON, deterministically.
