//! The image policy of `kiln build`: `--policy`, `--print-policy`. The rules are kiln-trust's
//! ([`kiln_trust::policy`]); this module finds the policy file, checks every image of the
//! resolved manifest against it and reports.

use anyhow::Context as _;
use kiln_manifest::ManifestSet;
use kiln_oci::registry::RegistryOptions;
use kiln_oci::{Digest, Reference, Store};
use kiln_trust::keys::PublicKey;
use kiln_trust::policy::file::default_locations;
use kiln_trust::policy::{Policy, Refusal};
use kiln_trust::signature::{Source, verify_image};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The policy flags of `kiln build`.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    /// The image policy every image of the manifest must satisfy: containers-policy.json's rules
    /// (JSON, or YAML when named .yml/.yaml); see docs/policy.md [default:
    /// $XDG_CONFIG_HOME/kiln/policy.json, else /etc/kiln/policy.json, when one exists]
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print, for each image of the manifest, its digest and the policy rule that applies to
    /// it, and stop
    #[arg(long)]
    print_policy: bool,
}

/// What a build uses: the images of its resolved manifest, the boot loader image when it
/// writes boot media, and the firmware image when it writes an rpi3 card.
pub struct Checked<'a> {
    /// The resolved manifest.
    pub set: &'a ManifestSet,
    /// The `--bootloader` image (its name in the store), when one is used.
    pub bootloader: Option<&'a Reference>,
    /// The `--firmware` image (its name in the store), when one is used.
    pub firmware: Option<&'a Reference>,
}

/// One image of the manifest, resolved: where the manifest names it, its name, and the digests
/// its name resolved to in the store (the digest the name points at, then the platform
/// manifest's when that is another: a signature of either is accepted).
struct Resolved {
    locations: Vec<String>,
    reference: Reference,
    digests: Vec<Digest>,
}

/// Check every image of the resolved manifest against the policy. `Ok(true)` when the build
/// is to stop there (`--print-policy`). Signatures are looked for in the store, then in the
/// image's registry (reached with `registry`, the options the pulls used), where those found
/// are kept in the store for offline builds.
pub fn enforce(
    store: &Store,
    checked: &Checked<'_>,
    policy: &Policy,
    args: &PolicyArgs,
    registry: &RegistryOptions,
) -> anyhow::Result<bool> {
    if !args.print_policy && policy.accepts_anything() {
        return Ok(false);
    }
    let images = resolve(store, checked, &registry.arch)?;
    if args.print_policy {
        print!("{}", listing(policy, &images));
        return Ok(true);
    }
    let mut keys: HashMap<PathBuf, Result<PublicKey, String>> = HashMap::new();
    let mut refused: Vec<(&Resolved, Vec<Refusal>)> = Vec::new();
    for image in &images {
        let mut verify = |paths: &[PathBuf]| -> Result<String, String> {
            let mut loaded = Vec::new();
            for p in paths {
                let key = keys
                    .entry(p.clone())
                    .or_insert_with(|| PublicKey::load(p).map_err(|e| e.to_string()));
                match key {
                    Ok(k) => loaded.push(k.clone()),
                    Err(e) => {
                        return Err(format!("cannot use the public key {}: {e}", p.display()));
                    }
                }
            }
            let mut first_error = None;
            for digest in &image.digests {
                match verify_image(
                    store,
                    &image.reference,
                    digest,
                    &loaded,
                    Source::StoreThenRegistry(registry),
                ) {
                    Ok(v) => return Ok(format!("{} ({})", v.key.display(), v.tag)),
                    Err(e) => {
                        first_error.get_or_insert(e.to_string());
                    }
                }
            }
            Err(first_error.unwrap_or_else(|| "no digest to verify".into()))
        };
        let (refusals, accepted) = policy.evaluate(&image.reference, &image.digests, &mut verify);
        for a in accepted {
            tracing::info!("{}: signature by {a} verified", image.reference);
        }
        if !refusals.is_empty() {
            refused.push((image, refusals));
        }
    }
    if refused.is_empty() {
        return Ok(false);
    }
    let mut msg = format!(
        "the image policy refuses {} of the build's {} images",
        refused.len(),
        images.len()
    );
    for (image, refusals) in &refused {
        let _ = write!(
            msg,
            "\n\n{} ({})\n  named at {}",
            image.reference,
            image
                .digests
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            image.locations.join(", ")
        );
        for r in refusals {
            let _ = write!(
                msg,
                "\n  rule: {} requires {} ({})\n  why: {}\n  help: {}",
                r.scope, r.requirement, r.origin, r.reason, r.help
            );
        }
    }
    anyhow::bail!(msg)
}

/// The policy: `--policy`, else the first default location that exists, else the built-in one;
/// with the manifest's `trust:` sections.
/// Read the policy (`--policy`, else the default locations) and the manifest's `trust:`
/// sections: before any image is pulled or built, so that a malformed policy stops the build
/// at once.
pub fn load(args: &PolicyArgs, set: &ManifestSet) -> anyhow::Result<Policy> {
    let file = match &args.policy {
        Some(p) => Some(p.clone()),
        None => default_locations().into_iter().find(|p| p.exists()),
    };
    let mut policy = match &file {
        Some(p) => Policy::from_file(p)?,
        None => Policy::built_in(),
    };
    policy.add_manifest_trust(set)?;
    Ok(policy)
}

/// Every image of the manifest with the digests its name resolves to in the store, each name
/// once, with every place the manifest names it.
fn resolve(store: &Store, checked: &Checked<'_>, arch: &str) -> anyhow::Result<Vec<Resolved>> {
    let set = checked.set;
    let mut named: Vec<(String, Reference)> = Vec::new();
    for (name, key) in set.manifest.image_references() {
        let location = locate(set, &key);
        let reference: Reference = name
            .parse()
            .with_context(|| format!("{location}: the image {name}"))?;
        named.push((location, reference));
    }
    if let Some(r) = checked.bootloader {
        named.push(("--bootloader".to_string(), r.clone()));
    }
    if let Some(r) = checked.firmware {
        named.push(("--firmware".to_string(), r.clone()));
    }
    let mut out: Vec<Resolved> = Vec::new();
    for (location, reference) in named {
        if let Some(seen) = out.iter_mut().find(|r| r.reference == reference) {
            seen.locations.push(location);
            continue;
        }
        let descriptor = store
            .lookup(&reference)?
            .with_context(|| format!("{location}: the store has no image {reference}"))?;
        let top: Digest = descriptor
            .digest
            .parse()
            .with_context(|| format!("the store's digest of {reference}"))?;
        let platform = store.resolve(&reference, arch)?.digest;
        let mut digests = vec![top];
        if !digests.contains(&platform) {
            digests.push(platform);
        }
        out.push(Resolved {
            locations: vec![location],
            reference,
            digests,
        });
    }
    Ok(out)
}

/// `file:line:column key` of an image reference the manifest names at `key` (`kernel.image`,
/// `init[0]`, `services[2].image`).
fn locate(set: &ManifestSet, key: &str) -> String {
    let (head, field) = match key.split_once('.') {
        Some((h, f)) => (h, f),
        None => (key, ""),
    };
    let (section, index) = match head.split_once('[') {
        Some((s, i)) => (s, i.trim_end_matches(']').parse().unwrap_or(0)),
        None => (head, 0),
    };
    let d = set.diagnostic(section, index, field, String::new());
    match (d.line, d.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c} {key}", d.file),
        _ => format!("{} {key}", d.file),
    }
}

/// What `--print-policy` prints: the policy's source, then for each image its digest, the rule
/// that applies and the manifest's `trust:` entries that cover it.
fn listing(policy: &Policy, images: &[Resolved]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy: {}",
        match &policy.file {
            Some(f) => f.display().to_string(),
            None => "none (no policy file: every image is accepted unless the manifest's trust section says otherwise)".into(),
        }
    );
    for image in images {
        let (rule, trust) = policy.rules_for(&image.reference, &image.digests);
        let _ = writeln!(out, "\n{}", image.reference);
        let _ = writeln!(out, "  named at  {}", image.locations.join(", "));
        let _ = writeln!(
            out,
            "  digest    {}",
            image
                .digests
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" (platform ")
                + if image.digests.len() > 1 { ")" } else { "" }
        );
        let _ = writeln!(out, "  scope     {} ({})", rule.scope, rule.origin);
        let _ = writeln!(out, "  requires  {}", rule.requirements_text());
        for t in trust {
            let _ = writeln!(
                out,
                "  trust     {} ({}) requires {}",
                t.scope,
                t.origin,
                t.requirement_text()
            );
        }
    }
    out
}
