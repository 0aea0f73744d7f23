//! Provenance of `kiln build` and `kiln pkg build`: SLSA v1 statements in DSSE envelopes
//! (docs/provenance.md).
//!
//! `kiln build` writes NAME.provenance.json beside its outputs; `kiln pkg build` attaches the
//! statement to the image in the store (cosign's `sha256-<hex>.att` tag) and pushes it with
//! the image when it is signed. `kiln verify --provenance` checks it.

use anyhow::{Context as _, bail};
use kiln_build::pkg::PkgResult;
use kiln_format::{Format, Target};
use kiln_manifest::ManifestSet;
use kiln_oci::registry::RegistryOptions;
use kiln_oci::{Digest, Reference, Store};
use kiln_trust::Signer;
use kiln_trust::keys::PublicKey;
use kiln_trust::provenance::attach::{self, Attestation};
use kiln_trust::provenance::{
    self, Builder, FileDigest, ImageBuild, ImageInput, PkgBuild, SLSA_PREDICATE_TYPE, Statement,
};
use kiln_trust::signature::Source;
use sha2::Digest as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The provenance flags of `kiln build`.
#[derive(clap::Args, Debug)]
pub struct ProvenanceArgs {
    /// Write no provenance (NAME.provenance.json beside the outputs)
    #[arg(long)]
    no_provenance: bool,
    /// Sign the provenance with this private key (cosign's format; its password from
    /// COSIGN_PASSWORD or the terminal); without it the envelope is unsigned
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl ProvenanceArgs {
    /// Keep the provenance of the packages a `kiln build` built for its `@pkg:` images in the
    /// store (nothing with `--no-provenance`).
    pub fn record_packages(
        &self,
        store: &Store,
        results: &[PkgResult],
        epoch: Option<u64>,
    ) -> anyhow::Result<()> {
        if self.no_provenance {
            return Ok(());
        }
        record_packages(store, results, None, epoch)
    }

    /// The `--key` to sign the provenance with, read (and its password asked for) before the
    /// build starts rather than after its outputs are written.
    pub fn signing_key(&self) -> anyhow::Result<Option<kiln_trust::keys::PrivateKey>> {
        match &self.key {
            Some(k) if !self.no_provenance => Ok(Some(
                crate::trust::load_signing_key(k)
                    .with_context(|| format!("--key {}", k.display()))?,
            )),
            _ => Ok(None),
        }
    }
}

/// What `kiln build` built its outputs from.
pub struct BuildRecord<'a> {
    /// The manifest files as given.
    pub files: &'a [PathBuf],
    /// The resolved manifest.
    pub set: &'a ManifestSet,
    /// The store the images are in.
    pub store: &'a Store,
    /// The formats written.
    pub formats: &'a [Format],
    /// The outputs' directory and name.
    pub target: &'a Target,
    /// The architecture.
    pub arch: &'a str,
    /// SOURCE_DATE_EPOCH.
    pub epoch: Option<u64>,
}

/// The builder: this kiln.
fn builder() -> Builder {
    Builder::kiln(env!("CARGO_PKG_VERSION"))
}

/// The SHA-256 of a file, hex.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// The output files' digests, hashed in parallel (they were just written: the page cache
/// holds them).
fn output_digests(outputs: &[PathBuf]) -> anyhow::Result<Vec<FileDigest>> {
    let files: Vec<&PathBuf> = outputs
        .iter()
        .filter(|p| p.as_os_str() != "-" && p.is_file())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|p| s.spawn(move || file_sha256(p)))
            .collect();
        files
            .iter()
            .zip(handles)
            .map(|(p, h)| {
                let sha256 = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("hashing {} failed", p.display()))??;
                Ok(FileDigest {
                    name: p
                        .file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
                    sha256,
                })
            })
            .collect()
    })
}

/// The images of the resolved manifest with the digests of the manifests used.
fn manifest_images(set: &ManifestSet, store: &Store, arch: &str) -> Vec<ImageInput> {
    let mut out = Vec::new();
    for (name, _) in set.manifest.image_references() {
        let Ok(r) = name.parse::<Reference>() else {
            continue;
        };
        match store.resolve(&r, arch) {
            Ok(img) => out.push(ImageInput {
                reference: name.to_string(),
                digest: img.digest,
            }),
            Err(e) => tracing::debug!("provenance: {name} is not resolved in the store: {e}"),
        }
    }
    out
}

/// Write `data` to `path` atomically, readable by all (as the outputs are).
fn write_file(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Record the provenance of a `kiln build` whose outputs are `outputs`: NAME.provenance.json
/// beside them (a DSSE envelope, signed with `--key`). Returns its path, `None` with
/// `--no-provenance` or when nothing was written to a file.
pub fn record_build(
    args: &ProvenanceArgs,
    key: Option<&kiln_trust::keys::PrivateKey>,
    rec: &BuildRecord<'_>,
    outputs: &[PathBuf],
) -> anyhow::Result<Option<PathBuf>> {
    if args.no_provenance {
        return Ok(None);
    }
    let files = output_digests(outputs)?;
    let Some(first) = outputs.iter().find(|p| p.as_os_str() != "-" && p.is_file()) else {
        return Ok(None);
    };
    let mut manifests = Vec::new();
    for f in rec.files {
        let name = f.to_string_lossy();
        if name == "-" || name.starts_with("http://") || name.starts_with("https://") {
            continue;
        }
        manifests.push(FileDigest {
            name: provenance::recorded_path(f),
            sha256: file_sha256(f)?,
        });
    }
    let resolved = kiln_manifest::to_yaml(&rec.set.manifest);
    let build = ImageBuild {
        name: rec.target.name.clone(),
        formats: rec.formats.iter().map(|f| f.name().to_string()).collect(),
        arch: kiln_oci::spec::normalize_arch(rec.arch).to_string(),
        manifests,
        images: manifest_images(rec.set, rec.store, rec.arch),
        outputs: files,
    };
    let mut statement = provenance::build_statement(&build, builder(), rec.epoch);
    statement
        .predicate
        .build_definition
        .resolved_dependencies
        .push(provenance::ResourceDescriptor::named(
            "manifest:resolved",
            hex::encode(sha2::Sha256::digest(resolved.as_bytes())),
        ));
    let envelope = statement.envelope(key.map(|k| k as &dyn Signer))?;
    let dir = first.parent().unwrap_or(Path::new(""));
    let path = dir.join(format!("{}.provenance.json", rec.target.name));
    write_file(&path, &envelope.to_json_pretty())?;
    Ok(Some(path))
}

/// The provenance statement of one package `kiln pkg build` built, `None` for a package it
/// found in the store.
fn pkg_statement(
    store: &Store,
    result: &PkgResult,
    epoch: Option<u64>,
) -> anyhow::Result<Option<(Reference, Digest, Statement)>> {
    let (Some(built), Some(inputs)) = (&result.built, &result.inputs) else {
        return Ok(None);
    };
    let r: Reference = result
        .reference
        .parse()
        .with_context(|| format!("image name {}", result.reference))?;
    // The digest the image's name points to (what is pushed and signed).
    let digest: Digest = match store.lookup(&r)? {
        Some(d) => d.digest.parse()?,
        None => built.manifest.clone(),
    };
    let build = PkgBuild {
        image: r.name(),
        tag: r.tag.clone().unwrap_or_default(),
        digest: digest.clone(),
        package: provenance::recorded_path(&result.dir),
        build_yml: FileDigest {
            name: inputs.build_yml.0.clone(),
            sha256: inputs.build_yml.1.clone(),
        },
        dockerfile: FileDigest {
            name: inputs.dockerfile.0.clone(),
            sha256: inputs.dockerfile.1.clone(),
        },
        context_sha256: inputs.context.clone(),
        build_args: inputs.build_args.clone(),
        platform: format!("linux/{}", kiln_oci::spec::normalize_arch(&inputs.arch)),
        network: inputs.network,
        images: built
            .images
            .iter()
            .map(|(reference, digest)| ImageInput {
                reference: reference.clone(),
                digest: digest.clone(),
            })
            .collect(),
    };
    Ok(Some((
        r,
        digest.clone(),
        provenance::pkg_statement(&build, builder(), epoch),
    )))
}

/// Attach the provenance of each package `kiln pkg build` built to its image in the store,
/// signed by `key` when given. A package found in the store keeps the provenance it has; with
/// `key`, an unsigned one is signed now.
pub fn record_packages(
    store: &Store,
    results: &[PkgResult],
    key: Option<&dyn Signer>,
    epoch: Option<u64>,
) -> anyhow::Result<()> {
    for result in results {
        if let Some((r, digest, statement)) = pkg_statement(store, result, epoch)? {
            let envelope = statement.envelope(key)?;
            attach::attach(store, &r, &digest, envelope, SLSA_PREDICATE_TYPE)
                .with_context(|| format!("storing the provenance of {r}"))?;
            tracing::info!("provenance of {}@{digest} kept in kiln's store", r.name());
        } else if let Some(key) = key {
            sign_stored(store, &result.reference, key)?;
        }
    }
    Ok(())
}

/// Sign the provenance the store holds for `name` (when it holds one) with `key`.
pub fn sign_stored(store: &Store, name: &str, key: &dyn Signer) -> anyhow::Result<()> {
    let r: Reference = name.parse().with_context(|| format!("image name {name}"))?;
    let Some(desc) = store.lookup(&r)? else {
        return Ok(());
    };
    let digest: Digest = desc.digest.parse()?;
    let mut all = attach::read(store, &r, &digest)?;
    let mut changed = false;
    for a in all
        .iter_mut()
        .filter(|a| a.predicate_type == SLSA_PREDICATE_TYPE)
    {
        if !a
            .envelope
            .signatures
            .iter()
            .any(|s| s.keyid == key.key_id())
        {
            a.envelope.add_signature(key)?;
            changed = true;
        }
    }
    if changed {
        attach::write(store, &r, &digest, &all)?;
    }
    Ok(())
}

/// Push the provenance the store holds for `name` to its registry, merged with the
/// attestations of other kinds the registry holds there. Unsigned provenance stays in the
/// store (cosign refuses to attach unsigned envelopes): `Ok(false)`.
pub fn push(store: &Store, name: &str, opts: &RegistryOptions) -> anyhow::Result<bool> {
    let r: Reference = name.parse().with_context(|| format!("image name {name}"))?;
    let Some(desc) = store.lookup(&r)? else {
        return Ok(false);
    };
    let digest: Digest = desc.digest.parse()?;
    let local: Vec<Attestation> = attach::read(store, &r, &digest)?
        .into_iter()
        .filter(|a| a.predicate_type != SLSA_PREDICATE_TYPE || !a.envelope.signatures.is_empty())
        .collect();
    if !local
        .iter()
        .any(|a| a.predicate_type == SLSA_PREDICATE_TYPE)
    {
        if !attach::read(store, &r, &digest)?.is_empty() {
            tracing::info!(
                "the provenance of {}@{digest} is unsigned: kept in kiln's store, not pushed \
                 (give --key to sign it)",
                r.name()
            );
        }
        return Ok(false);
    }
    let ctx = || format!("pushing the provenance of {}@{digest}", r.name());
    let mut merged = Vec::new();
    if attach::fetch(store, &r, &digest, opts).with_context(ctx)? {
        merged.extend(
            attach::read(store, &r, &digest)
                .with_context(ctx)?
                .into_iter()
                .filter(|a| !local.iter().any(|l| l.predicate_type == a.predicate_type)),
        );
    }
    merged.extend(local);
    attach::write(store, &r, &digest, &merged).with_context(ctx)?;
    attach::push(store, &r, &digest, opts).with_context(ctx)?;
    tracing::info!(
        "provenance of {}@{digest} pushed as {}",
        r.name(),
        attach::reference(&r, &digest)
    );
    Ok(true)
}

/// `kiln verify IMAGE --key K.pub --provenance`: find the SLSA provenance attached to `image`
/// at `digest` (kiln's store first; with [`Source::StoreThenRegistry`] then its registry),
/// check that one of `keys` signed it and that it names `digest`, and print its builder and
/// resolved dependencies.
pub fn verify_image(
    store: &Store,
    image: &Reference,
    digest: &Digest,
    keys: &[PublicKey],
    source: Source<'_>,
) -> anyhow::Result<()> {
    let shown = format!("{}@{digest}", image.name());
    let mut failures: Vec<String> = Vec::new();
    let mut found = false;
    let mut check = |atts: Vec<Attestation>, failures: &mut Vec<String>| {
        for a in atts
            .iter()
            .filter(|a| a.predicate_type == SLSA_PREDICATE_TYPE || a.predicate_type.is_empty())
        {
            found = true;
            for key in keys {
                match provenance::verify(&a.envelope, key, digest) {
                    Ok(s) => return Some((s, key.clone())),
                    Err(e) => failures.push(format!("{}: {e}", key.path.display())),
                }
            }
        }
        None
    };
    let mut verified = check(
        attach::read(store, image, digest)
            .with_context(|| format!("reading the provenance of {shown} in kiln's store"))?,
        &mut failures,
    );
    let mut fetched = false;
    if verified.is_none()
        && let Source::StoreThenRegistry(opts) = source
    {
        fetched = attach::fetch(store, image, digest, opts).with_context(|| {
            format!("fetching the provenance of {shown} from {}", image.registry)
        })?;
        if fetched {
            failures.clear();
            verified = check(attach::read(store, image, digest)?, &mut failures);
        }
    }
    let tag = attach::tag(digest);
    let Some((statement, key)) = verified else {
        if !found {
            let place = match source {
                Source::Store => "kiln's store",
                Source::StoreThenRegistry(_) => "kiln's store or its registry",
            };
            bail!(
                "{shown} has no provenance: no SLSA attestation tagged {tag} in {place}; build it \
                 with `kiln pkg build --key KEY --push`"
            );
        }
        failures.sort();
        failures.dedup();
        bail!(
            "the provenance of {shown} does not verify: {}",
            failures.join("; ")
        );
    };
    let run = &statement.predicate.run_details;
    let def = &statement.predicate.build_definition;
    println!(
        "verified provenance of {shown}: signed by {} (key {}); attestation {}:{tag} {}",
        key.path.display(),
        &key.id()[..key.id().len().min(12)],
        image.name(),
        if fetched {
            "fetched from the registry"
        } else {
            "from kiln's store"
        }
    );
    println!("builder: {}", run.builder.id);
    println!("build type: {}", def.build_type);
    println!("resolved dependencies:");
    for d in &def.resolved_dependencies {
        println!("  {} {}", d.label(), d.sha256().unwrap_or_default());
    }
    Ok(())
}
