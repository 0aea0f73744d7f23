//! `@pkg:PATH` image references in manifests (a kiln extension): the image of the package in
//! directory PATH (relative to the first manifest's directory), built first when the store
//! lacks it. Content tags change with every edit, so manifests that name packages this way
//! never go stale.

use crate::ImageOpts;
use anyhow::Context as _;
use kiln_build::pkg::{Package, PkgOptions, build_packages};
use kiln_manifest::Manifest;
use std::path::{Path, PathBuf};

const PREFIX: &str = "@pkg:";

/// Every image string of the manifest, mutably.
fn image_refs(m: &mut Manifest) -> Vec<&mut String> {
    let mut refs = vec![&mut m.kernel.image];
    refs.extend(m.init.iter_mut());
    refs.extend(m.onboot.iter_mut().map(|i| &mut i.image));
    refs.extend(m.services.iter_mut().map(|i| &mut i.image));
    refs.extend(m.onshutdown.iter_mut().map(|i| &mut i.image));
    refs.extend(m.volumes.iter_mut().map(|v| &mut v.image));
    refs
}

/// Replace `@pkg:` references with image names and build the packages the store lacks.
pub fn resolve(m: &mut Manifest, base: &Path, images: &ImageOpts) -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for r in image_refs(m) {
        let Some(path) = r.strip_prefix(PREFIX) else {
            continue;
        };
        let dir = base.join(path);
        let pkg = Package::load(&dir).with_context(|| format!("image {r}"))?;
        *r = pkg.reference(None);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    if dirs.is_empty() {
        return Ok(());
    }
    let store = images.store()?;
    let mut base_opts = kiln_build::BuildOptions::new(".", "Dockerfile");
    base_opts.arch = kiln_oci::spec::normalize_arch(&images.arch).to_string();
    base_opts.registry = crate::cache::registry_options(images)?;
    base_opts.progress = Some(std::sync::Arc::new(|line: &str| eprintln!("{line}")));
    let opts = PkgOptions {
        base: base_opts,
        org: None,
        force: false,
    };
    for r in build_packages(&store, &dirs, &opts)? {
        if r.built.is_some() {
            eprintln!("built package {}", r.reference);
        }
    }
    Ok(())
}
