//! `@pkg:PATH` image references in manifests (a kiln extension): the image of the package in
//! directory PATH (relative to the first manifest's directory), built first when the store
//! lacks it. Content tags change with every edit, so manifests that name packages this way
//! never go stale.

use crate::ImageOpts;
use anyhow::Context as _;
use kiln_build::pkg::{PkgOptions, build_packages};
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
        if let Some(path) = r.strip_prefix(PREFIX) {
            let dir = base.join(path);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    if dirs.is_empty() {
        return Ok(());
    }
    let opts = PkgOptions {
        base: crate::image::base_options(images)?,
        org: None,
        force: false,
    };
    let built = build_packages(&images.store()?, &dirs, &opts)?;
    for r in &built {
        if r.built.is_some() {
            eprintln!("built package {}", r.reference);
        }
    }
    for r in image_refs(m) {
        if let Some(path) = r.strip_prefix(PREFIX) {
            let dir = base.join(path);
            // The same package may have been reached by another path (a dependency's `..`).
            let same = |a: &Path| a == dir || same_dir(a, &dir);
            let found = built.iter().find(|b| same(&b.dir));
            *r = found
                .map(|b| b.reference.clone())
                .with_context(|| format!("image {r}: package {} was not built", dir.display()))?;
        }
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}
