//! `kiln key`, `kiln sign` and `kiln verify`: cosign-compatible keys and image signatures
//! (docs/trust.md).

use anyhow::{Context, bail};
use kiln_oci::registry::{self, RegistryOptions};
use kiln_oci::{Digest, Reference, Store};
use kiln_trust::Signer as _;
use kiln_trust::keys::{self, PrivateKey, PublicKey};
use kiln_trust::signature::{self, Source};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

/// `kiln key`.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate a key pair as cosign does: PREFIX.key (ECDSA P-256, encrypted with a password
    /// from COSIGN_PASSWORD or typed at the terminal) and PREFIX.pub
    Generate {
        /// Write PREFIX.key and PREFIX.pub
        #[arg(long, value_name = "PREFIX", default_value = "cosign")]
        output_key_prefix: PathBuf,
        /// Replace existing key files
        #[arg(long)]
        force: bool,
    },
}

/// `kiln sign`.
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The image: a name in kiln's store (else in its registry), or REPOSITORY@DIGEST
    image: String,
    /// The private key (cosign's encrypted format; password from COSIGN_PASSWORD or typed)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Keep the signature in kiln's store only; push nothing (no network)
    #[arg(long, alias = "offline")]
    no_push: bool,
}

/// `kiln verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The image: a name in kiln's store (else in its registry), or REPOSITORY@DIGEST
    image: String,
    /// A public key (PEM, as cosign.pub); repeatable: a signature by any of them will do
    #[arg(long, value_name = "FILE", required = true)]
    key: Vec<PathBuf>,
    /// Look only in kiln's store (signatures fetched or made before); no network
    #[arg(long)]
    offline: bool,
    /// Also check the SLSA provenance attached to the image (signed by one of the keys and
    /// naming its digest)
    #[arg(long)]
    provenance: bool,
}

pub fn run_key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Generate {
            output_key_prefix,
            force,
        } => {
            let password = password(true, &format!("{}.key", output_key_prefix.display()))?;
            let files = keys::generate_key_pair(&output_key_prefix, password.as_bytes(), force)?;
            println!("private key written to {}", files.private.display());
            println!("public key written to {}", files.public.display());
            println!("key id {}", files.id);
            Ok(())
        }
    }
}

/// The password of a private key: COSIGN_PASSWORD when set (empty included, as cosign reads
/// it), else typed at the terminal (twice with `confirm`), else an error saying so.
pub fn password(confirm: bool, key: &str) -> anyhow::Result<String> {
    if let Some(p) = std::env::var_os("COSIGN_PASSWORD") {
        return p
            .into_string()
            .map_err(|_| anyhow::anyhow!("COSIGN_PASSWORD is not valid UTF-8"));
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        bail!(
            "{key}: a password is needed and there is no terminal to type it: set COSIGN_PASSWORD \
             (it may be empty)"
        );
    }
    let term = console::Term::stderr();
    term.write_str(&format!("password for {key}: "))?;
    let first = term.read_secure_line()?;
    if confirm {
        term.write_str("again: ")?;
        if term.read_secure_line()? != first {
            bail!("the passwords differ; nothing written");
        }
    }
    Ok(first)
}

/// Read and decrypt a private key for signing (the password as [`password`] finds it). `kiln
/// pkg build --sign` signs with it through [`kiln_trust::signature::sign_image`].
pub fn load_signing_key(path: &Path) -> anyhow::Result<PrivateKey> {
    if !path.exists() {
        bail!(
            "{}: no such key; make one with `kiln key generate` (or `cosign generate-key-pair`)",
            path.display()
        );
    }
    let password = password(false, &path.display().to_string())?;
    Ok(PrivateKey::load(path, password.as_bytes())?)
}

/// The manifest digest `image` names (an index's for a multi-platform image, as cosign signs
/// it): its own digest, else what kiln's store names so, else (with `opts`) what its registry
/// does. Also says where it was found.
pub fn resolve_digest(
    store: &Store,
    image: &Reference,
    opts: Option<&RegistryOptions>,
) -> anyhow::Result<(Digest, &'static str)> {
    if let Some(d) = &image.digest {
        return Ok((d.parse()?, "as named"));
    }
    if let Some(desc) = store.lookup(image)? {
        return Ok((desc.digest.parse()?, "kiln's store"));
    }
    let Some(opts) = opts else {
        bail!(
            "{image} is not in kiln's store: pull it (`kiln cache pull {image}`), or name it by \
             digest (REPOSITORY@sha256:...)"
        );
    };
    match registry::remote_digest(image, opts)? {
        Some(d) => Ok((d, "the registry")),
        None => bail!(
            "{image} is neither in kiln's store nor in its registry: build, pull or push it first"
        ),
    }
}

fn parse_image(s: &str) -> anyhow::Result<Reference> {
    s.parse::<Reference>()
        .with_context(|| format!("image `{s}`"))
}

pub fn run_sign(args: SignArgs) -> anyhow::Result<()> {
    let image = parse_image(&args.image)?;
    let store = crate::images().store()?;
    let opts = crate::cache::registry_options(crate::images())?;
    let (digest, found) = resolve_digest(&store, &image, (!args.no_push).then_some(&opts))?;
    let key = load_signing_key(&args.key)?;
    let signed = signature::sign_image(&store, &image, &digest, &key)
        .with_context(|| format!("signing {}@{digest}", image.name()))?;
    let id = key.key_id();
    println!(
        "signed {}@{digest} (from {found}) with {} (key {})",
        image.name(),
        args.key.display(),
        &id[..id.len().min(12)]
    );
    if !signed.added {
        println!("kiln's store held this signature already");
    }
    if args.no_push {
        println!("signature kept in kiln's store as {}", signed.reference);
        return Ok(());
    }
    if found == "kiln's store"
        && let Ok(Some(remote)) = registry::remote_digest(&image, &opts)
        && remote != digest
    {
        eprintln!(
            "warning: the registry's {image} is {remote}, not the {digest} of kiln's store that \
             was signed; push the image (`kiln cache push {image}`) or sign {}@{remote}",
            image.name()
        );
    }
    let pushed = signature::push_signatures(&store, &image, &digest, &opts)
        .with_context(|| format!("pushing the signature of {}@{digest}", image.name()))?;
    if pushed.pushed {
        println!(
            "signature pushed to {} ({} signature(s))",
            pushed.reference, pushed.signatures
        );
    } else {
        println!(
            "the registry holds this signature already at {}",
            pushed.reference
        );
    }
    Ok(())
}

pub fn run_verify(args: VerifyArgs) -> anyhow::Result<()> {
    let image = parse_image(&args.image)?;
    let store = crate::images().store()?;
    let opts = crate::cache::registry_options(crate::images())?;
    let keys = args
        .key
        .iter()
        .map(|k| PublicKey::load(k).with_context(|| format!("--key {}", k.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (digest, found) = resolve_digest(&store, &image, (!args.offline).then_some(&opts))?;
    let source = if args.offline {
        Source::Store
    } else {
        Source::StoreThenRegistry(&opts)
    };
    let v = signature::verify_image(&store, &image, &digest, &keys, source)?;
    println!(
        "verified {}@{digest} (digest from {found}): signed by {} (key {}) for {}; signature {}:{} {}",
        image.name(),
        v.key.display(),
        &v.key_id[..v.key_id.len().min(12)],
        v.docker_reference,
        image.name(),
        v.tag,
        if v.fetched {
            "fetched from the registry and kept in kiln's store"
        } else {
            "from kiln's store"
        }
    );
    if args.provenance {
        return crate::provenance::verify_image(&store, &image, &digest, &keys, source);
    }
    Ok(())
}
