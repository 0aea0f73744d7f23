//! Making every image a manifest names available in the store before assembly: `@pkg:DIR`
//! references (a kiln extension: the image of the package in DIR, relative to the first
//! manifest's directory) are built when the store lacks them and replaced by their image
//! names, and images the store lacks are pulled. With a Docker engine given, the engine's image
//! store is looked in first, before kiln's store and the registry, as LinuxKit's
//! `build --docker` does.

use crate::error::BuildError;
use crate::events::Event;
use crate::pkg::{PkgOptions, PkgResult, build_packages};
use kiln_manifest::Manifest;
use kiln_oci::docker_engine::DockerEngine;
use kiln_oci::registry;
use kiln_oci::spec::normalize_arch;
use kiln_oci::{Reference, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The prefix of package references in manifests.
pub const PKG_PREFIX: &str = "@pkg:";

/// How [`resolve_images`] finds images.
#[derive(Clone, Copy)]
pub struct ResolveOptions<'a> {
    /// Package builds (and, through `packages.base.registry`, pulls).
    pub packages: &'a PkgOptions,
    /// The directory `@pkg:` paths are relative to.
    pub base_dir: &'a Path,
    /// Pull every image, even those the store has.
    pub pull_always: bool,
    /// A Docker engine asked first for every image, before the store and the registry (as
    /// LinuxKit's `build --docker` does): when it has the image for the build's architecture,
    /// that image is used, copied into the store through the engine's API unless the store
    /// already holds the same one (same config digest, the engine's image ID).
    pub docker: Option<&'a DockerEngine>,
}

/// Build the `@pkg:` packages `manifest` names and put their image names in its place, then
/// pull every image the store lacks. Returns what happened to each package.
pub fn resolve_images(
    store: &Store,
    manifest: &mut Manifest,
    opts: &ResolveOptions<'_>,
) -> Result<Vec<PkgResult>, BuildError> {
    let packages = build_referenced_packages(store, manifest, opts)?;
    pull_missing(store, manifest, opts)?;
    Ok(packages)
}

fn build_referenced_packages(
    store: &Store,
    manifest: &mut Manifest,
    opts: &ResolveOptions<'_>,
) -> Result<Vec<PkgResult>, BuildError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (r, _) in manifest.image_references() {
        if let Some(path) = r.strip_prefix(PKG_PREFIX) {
            let dir = opts.base_dir.join(path);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    let built = build_packages(store, &dirs, opts.packages)?;
    for r in manifest.image_references_mut() {
        if let Some(path) = r.strip_prefix(PKG_PREFIX) {
            let dir = opts.base_dir.join(path);
            // The same package may have been reached by another path (a dependency's `..`).
            let found = built
                .iter()
                .find(|b| b.dir == dir || same_dir(&b.dir, &dir));
            *r = match found {
                Some(b) => b.reference.clone(),
                None => {
                    return Err(BuildError::PackageNotBuilt {
                        reference: r.clone(),
                        dir,
                    });
                }
            };
        }
    }
    Ok(built)
}

fn pull_missing(
    store: &Store,
    manifest: &Manifest,
    opts: &ResolveOptions<'_>,
) -> Result<(), BuildError> {
    let ropts = &opts.packages.base.registry;
    let mut done = HashSet::new();
    for (reference, location) in manifest.image_references() {
        let r: Reference = reference
            .parse()
            .map_err(|source| BuildError::ImageReference {
                location: location.clone(),
                reference: reference.to_string(),
                source,
            })?;
        if !done.insert(r.to_string()) {
            continue;
        }
        let stored = store.resolve(&r, &ropts.arch).ok();
        if let Some(engine) = opts.docker
            && from_docker(store, engine, &r, stored.as_ref(), &location, opts)?
        {
            continue;
        }
        if !opts.pull_always && stored.is_some() {
            continue;
        }
        tracing::info!("pulling {r}");
        let pulled = registry::pull(store, &r, ropts).map_err(|source| BuildError::Pull {
            location,
            reference: r.to_string(),
            source: Box::new(source),
        })?;
        if let Some(p) = &opts.packages.base.progress {
            p(&Event::ImagePulled {
                reference: r.to_string(),
                digest: pulled.digest.to_string(),
                bytes: pulled.bytes,
            });
        }
    }
    Ok(())
}

/// Take `r` from the Docker engine when it has the image for the build's architecture (copying
/// it into the store unless `stored`, the store's image of that name, is the same image); false
/// when it has not (or `r` is pinned by digest, which the engine's export cannot honour).
fn from_docker(
    store: &Store,
    engine: &DockerEngine,
    r: &Reference,
    stored: Option<&kiln_oci::Image>,
    location: &str,
    opts: &ResolveOptions<'_>,
) -> Result<bool, BuildError> {
    let arch = &opts.packages.base.registry.arch;
    let err = |source| BuildError::Docker {
        location: location.to_string(),
        reference: r.to_string(),
        source: Box::new(source),
    };
    if r.digest.is_some() {
        tracing::info!(
            "{r} is pinned by digest: pulling it rather than taking it from the Docker engine"
        );
        return Ok(false);
    }
    let Some(found) = engine.inspect(r).map_err(err)? else {
        tracing::info!(
            "the Docker engine at {} lacks {r}",
            engine.socket().display()
        );
        return Ok(false);
    };
    let arch = normalize_arch(arch);
    if normalize_arch(&found.architecture) != arch || found.os != "linux" {
        tracing::info!(
            "the Docker engine's {r} is for {}/{}, not linux/{arch}",
            found.os,
            found.architecture
        );
        return Ok(false);
    }
    if stored.is_some_and(|s| s.manifest.config.digest == found.id) {
        tracing::info!("the store holds the Docker engine's {r} already");
        return Ok(true);
    }
    tracing::info!(
        "taking {r} from the Docker engine at {}",
        engine.socket().display()
    );
    let imported = engine.import(store, r).map_err(err)?;
    if let Some(p) = &opts.packages.base.progress {
        p(&Event::ImageFromDocker {
            reference: r.to_string(),
            digest: imported.digest.to_string(),
            bytes: imported.bytes,
        });
    }
    Ok(true)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

/// Make one image that is not in a manifest available, as [`resolve_images`] does for those in
/// a manifest: `@pkg:DIR` (relative to [`ResolveOptions::base_dir`]) is built when the store
/// lacks it; another reference is pulled when the store lacks it. `location` names where the
/// reference comes from (a flag) in errors. Returns the image's name in the store.
pub fn resolve_image(
    store: &Store,
    reference: &str,
    location: &str,
    opts: &ResolveOptions<'_>,
) -> Result<Reference, BuildError> {
    let name = match reference.strip_prefix(PKG_PREFIX) {
        Some(path) => {
            let dir = opts.base_dir.join(path);
            let built = build_packages(store, std::slice::from_ref(&dir), opts.packages)?;
            built
                .into_iter()
                .find(|b| b.dir == dir || same_dir(&b.dir, &dir))
                .map(|b| b.reference)
                .ok_or_else(|| BuildError::PackageNotBuilt {
                    reference: reference.to_string(),
                    dir,
                })?
        }
        None => reference.to_string(),
    };
    let r: Reference = name.parse().map_err(|source| BuildError::ImageReference {
        location: location.to_string(),
        reference: name.clone(),
        source,
    })?;
    let ropts = &opts.packages.base.registry;
    if opts.pull_always || store.resolve(&r, &ropts.arch).is_err() {
        tracing::info!("pulling {r}");
        registry::pull(store, &r, ropts).map_err(|source| BuildError::Pull {
            location: location.to_string(),
            reference: r.to_string(),
            source: Box::new(source),
        })?;
    }
    Ok(r)
}
