//! The registry client: pull and push over the OCI distribution API.
//!
//! Pulls go through [`crate::transport`]: every response is read with a size cap (manifests,
//! indexes and configs at [`MAX_JSON_BLOB`], blobs at their descriptor's size), an overall
//! deadline and a minimum transfer rate ([`TransferLimits`]), and only transient failures are
//! retried. A pull writes the blobs, then the manifests, and names the image last, so a failed
//! pull names nothing. This module decides what to fetch, verifies every manifest and blob
//! against its digest and size as it streams into the store, fetches layers in parallel, maps
//! registries to mirrors, and reads credentials from the Docker config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
//!
//! Pushes go through the same transport, with a token scope of `pull,push`: each blob the
//! registry does not have (HEAD) is uploaded with a POST and one PUT streamed from the store,
//! given the request timeout plus the time its size takes at the minimum rate, and stopped
//! when the registry takes it more slowly than that rate; then the manifests (an index's
//! after its children). Error bodies are read capped; only transient failures are retried,
//! each with a fresh upload.
//! Plain HTTP is used for localhost, 127.0.0.0/8, ::1 and registries marked insecure.

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::store::{MAX_JSON_BLOB, Store, StoreError, media_type_of, select_platform};
use crate::transport::{
    Access, Credentials, MAX_JSON_VALUES, Payload, Session, TransferError, check_json_size,
    upload_url,
};
use futures_util::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use std::io::Write;
use std::time::Duration;

pub use crate::transport::{TransferLimits, parse_seconds};

/// Most layers kiln accepts in one image (overlay file systems stop far below this).
pub const MAX_LAYERS: usize = 1024;

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry failed or refused.
    #[error("{registry}: {operation} {image}: {message}")]
    Remote {
        /// Registry host.
        registry: String,
        /// What kiln was doing.
        operation: &'static str,
        /// The image.
        image: String,
        /// The registry's or transport's message.
        message: String,
    },
    /// The runtime could not start.
    #[error("cannot start the network runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl RegistryError {
    /// The registry at `host` failed or refused `operation` on `image`.
    fn remote(host: &str, image: &str, operation: &'static str, e: &TransferError) -> Self {
        RegistryError::Remote {
            registry: host.to_string(),
            operation,
            image: image.to_string(),
            message: e.to_string(),
        }
    }
}

/// A progress callback: image, blob digest, bytes so far, blob size.
pub type ProgressFn = dyn Fn(&str, &str, u64, u64) + Send + Sync;

/// Called as blobs download.
#[derive(Clone)]
pub struct PullProgress(pub std::sync::Arc<ProgressFn>);

impl std::fmt::Debug for PullProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullProgress")
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `(registry, mirror URL)` pairs: images of `registry` are fetched from the mirror.
    pub mirrors: Vec<(String, String)>,
    /// Registries reached over plain HTTP besides the loopback ones.
    pub insecure: Vec<String>,
    /// Architecture to pull for.
    pub arch: String,
    /// Parallel layer downloads.
    pub parallel: usize,
    /// Download progress, for a progress display.
    pub progress: Option<PullProgress>,
    /// Deadlines and the minimum transfer rate of every request of a pull.
    pub limits: TransferLimits,
    /// PEM certificates of authorities trusted for registries besides the system's.
    pub ca_certs: Vec<Vec<u8>>,
    /// `(registry host, credentials)` pairs used before the Docker config file's.
    pub credentials: Vec<(String, Credentials)>,
}

impl RegistryOptions {
    /// A session for `r`'s repository at the registry `t` (with its credentials, limits and
    /// certificate authorities).
    fn session(&self, t: &Target, r: &Reference) -> Result<Session, TransferError> {
        Session::new(
            &t.host,
            t.http,
            &r.repository,
            self.credentials_for(&t.host),
            self.limits,
            &self.ca_certs,
        )
    }

    /// The credentials for `host`: given ones first, else the Docker config file's.
    fn credentials_for(&self, host: &str) -> Option<Credentials> {
        self.credentials
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, c)| c.clone())
            .or_else(|| docker_credentials(host))
    }
}

/// The registry key of a mirror that serves every registry no other mirror names.
pub const ANY_REGISTRY: &str = "*";

/// Parse a mirror flag: `REGISTRY=URL`, or a bare `http://` or `https://` URL for every
/// registry no other mirror names (LinuxKit's form).
pub fn parse_mirror(s: &str) -> Option<(String, String)> {
    match s.split_once('=') {
        Some((reg, url)) if !reg.contains('/') || reg.ends_with('/') => {
            Some((reg.trim_end_matches('/').to_string(), url.to_string()))
        }
        _ if s.starts_with("http://") || s.starts_with("https://") => {
            Some((ANY_REGISTRY.to_string(), s.to_string()))
        }
        _ => None,
    }
}

struct Target {
    host: String,
    http: bool,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

fn target(r: &Reference, opts: &RegistryOptions) -> Target {
    let mirror = opts
        .mirrors
        .iter()
        .find(|(reg, _)| *reg == r.registry)
        .or_else(|| opts.mirrors.iter().find(|(reg, _)| reg == ANY_REGISTRY));
    if let Some((_, url)) = mirror {
        let http = url.starts_with("http://");
        let host = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        // A mirror's scheme decides; without one, loopback and insecure hosts get plain HTTP.
        let https = url.starts_with("https://");
        let http = http || (!https && (opts.insecure.contains(&host) || is_loopback(&host)));
        return Target { host, http };
    }
    let host = r.registry.clone();
    let http = opts.insecure.contains(&host) || is_loopback(&host);
    Target { host, http }
}

/// Credentials for `host` from the Docker config file, if it has any.
pub fn docker_credentials(host: &str) -> Option<Credentials> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let cfg = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    let keys: Vec<String> = if host == "docker.io" || host == "index.docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    };
    for k in keys {
        let Some(entry) = cfg.get("auths").and_then(|a| a.get(&k)) else {
            continue;
        };
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|v| v.as_str()),
            entry.get("password").and_then(|v| v.as_str()),
        ) {
            return Some(Credentials {
                username: u.into(),
                password: p.into(),
            });
        }
        if let Some(auth) = entry.get("auth").and_then(|v| v.as_str()) {
            use base64::Engine as _;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
            {
                return Some(Credentials {
                    username: u.into(),
                    password: p.into(),
                });
            }
        }
    }
    None
}

const ACCEPT: [&str; 4] = [
    spec::MEDIA_OCI_MANIFEST,
    spec::MEDIA_OCI_INDEX,
    spec::MEDIA_DOCKER_MANIFEST,
    spec::MEDIA_DOCKER_LIST,
];

/// Attempts of a request that fails transiently.
const ATTEMPTS: u32 = 4;

/// Run `f` until it succeeds, fails for good, or has failed [`ATTEMPTS`] times; only
/// transient failures (network errors, stalls, 5xx, 429) are tried again.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, TransferError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransferError>>,
{
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && e.is_transient() => {
                tracing::warn!("{what}: attempt {attempt} failed: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

/// What a manifest or index received from a registry asks kiln to fetch next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// An index: the manifest it lists for the platform.
    Manifest(Descriptor),
    /// An image manifest: its config and layers.
    Blobs {
        /// The config blob (at most [`MAX_JSON_BLOB`] bytes).
        config: Descriptor,
        /// The layers, bottom first (at most [`MAX_LAYERS`]).
        layers: Vec<Descriptor>,
    },
}

fn invalid(what: &str, why: impl Into<String>) -> TransferError {
    TransferError::Invalid {
        what: what.into(),
        why: why.into(),
    }
}

fn check_descriptor(d: &Descriptor, what: &str) -> Result<(), TransferError> {
    d.digest
        .parse::<Digest>()
        .map(|_| ())
        .map_err(|e| invalid(what, e.to_string()))
}

/// Check a manifest or index `data` received for `what` and say what to fetch next for
/// linux/`arch`: the platform's manifest, or the blobs. Refuses a config or platform manifest
/// larger than [`MAX_JSON_BLOB`], more than [`MAX_LAYERS`] layers, invalid digests, and media
/// types kiln cannot read. `index_allowed` is false for the manifest an index pointed to.
pub fn next_step(
    data: &[u8],
    what: &str,
    arch: &str,
    index_allowed: bool,
) -> Result<NextStep, TransferError> {
    check_json_size(data, MAX_JSON_VALUES).map_err(|why| invalid(what, why))?;
    let media = media_type_of(data);
    if spec::is_index(&media) {
        if !index_allowed {
            return Err(invalid(what, "it is an index inside an index"));
        }
        let index: Index = serde_json::from_slice(data)
            .map_err(|e| invalid(what, format!("not a valid index: {e}")))?;
        let arch = spec::normalize_arch(arch);
        let chosen = select_platform(&index, arch).ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .take(20)
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            invalid(
                what,
                format!(
                    "no linux/{arch} image in the index (it has: {})",
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                ),
            )
        })?;
        let entry = format!("manifest {} for linux/{arch}", chosen.digest);
        check_descriptor(chosen, &entry)?;
        if spec::is_index(&chosen.media_type) {
            return Err(invalid(&entry, "it is an index inside an index"));
        }
        if chosen.size > MAX_JSON_BLOB {
            return Err(TransferError::TooLarge {
                what: entry,
                limit: MAX_JSON_BLOB,
                announced: Some(chosen.size),
            });
        }
        return Ok(NextStep::Manifest(chosen.clone()));
    }
    if media != spec::MEDIA_OCI_MANIFEST && media != spec::MEDIA_DOCKER_MANIFEST {
        return Err(invalid(
            what,
            format!("media type `{media}` is not an OCI or Docker v2 image manifest or index"),
        ));
    }
    let m: Manifest = serde_json::from_slice(data)
        .map_err(|e| invalid(what, format!("not a valid image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(invalid(
            what,
            format!("schemaVersion is {}, kiln reads 2", m.schema_version),
        ));
    }
    let config_what = format!("config {}", m.config.digest);
    check_descriptor(&m.config, &config_what)?;
    if m.config.size > MAX_JSON_BLOB {
        return Err(TransferError::TooLarge {
            what: config_what,
            limit: MAX_JSON_BLOB,
            announced: Some(m.config.size),
        });
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(invalid(
            what,
            format!(
                "it lists {} layers, more than the {MAX_LAYERS} kiln accepts",
                m.layers.len()
            ),
        ));
    }
    for l in &m.layers {
        check_descriptor(l, &format!("layer {}", l.digest))?;
    }
    Ok(NextStep::Blobs {
        config: m.config,
        layers: m.layers,
    })
}

/// Pull `r` into the store for `opts.arch`; returns the digest its name now points to.
///
/// Blobs are written first, then the manifests, and the name last: a pull that fails names
/// nothing (blobs it wrote stay unnamed until `gc`; partial files are removed, or by `gc`
/// when the process was killed).
pub fn pull(store: &Store, r: &Reference, opts: &RegistryOptions) -> Result<Pulled, RegistryError> {
    runtime()?.block_on(pull_async(store, r, opts))
}

/// The digest of the manifest or index the registry holds under `r`'s name, or `None` when it
/// holds no such name (or `r`'s repository).
pub fn remote_digest(
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Option<Digest>, RegistryError> {
    Ok(remote_manifest(r, opts)?.map(|(_, digest)| digest))
}

/// The digest `r` pins (`name@sha256:…`), if any.
fn pinned_digest(r: &Reference) -> Result<Option<Digest>, StoreError> {
    Ok(r.digest.as_deref().map(str::parse).transpose()?)
}

/// The manifest or index the registry holds under `r`'s name (at most [`MAX_JSON_BLOB`] bytes,
/// checked against `r`'s digest when it has one) and its digest, or `None` when it holds no
/// such name (or `r`'s repository). Nothing is stored.
pub fn remote_manifest(
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Option<(Vec<u8>, Digest)>, RegistryError> {
    let expected: Option<Digest> = pinned_digest(r)?;
    let t = target(r, opts);
    let image = r.to_string();
    let remote = |e: TransferError| RegistryError::remote(&t.host, &image, "look up", &e);
    let session = opts.session(&t, r).map_err(remote)?;
    let url = session.url("manifests", &r.target());
    let looked_up = runtime()?.block_on(async {
        retry(&format!("manifest of {r}"), || {
            session.get_json(
                &url,
                &ACCEPT,
                MAX_JSON_BLOB,
                expected.as_ref(),
                None,
                "manifest",
            )
        })
        .await
    });
    match looked_up {
        Ok((data, digest)) => Ok(Some((data, digest))),
        Err(TransferError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(remote(e)),
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The digest of the manifest or index the name now points to.
    pub digest: Digest,
    /// The bytes of config and layer blobs downloaded (blobs the store held are not counted).
    pub bytes: u64,
}

async fn pull_async(
    store: &Store,
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Pulled, RegistryError> {
    let _guard = store.write_guard()?;
    let t = target(r, opts);
    let image = r.to_string();
    let remote =
        |operation, e: TransferError| RegistryError::remote(&t.host, &image, operation, &e);
    let session = opts.session(&t, r).map_err(|e| remote("connect", e))?;
    let session = &session;

    // The manifest (or index) the reference names.
    let top_digest: Option<Digest> = pinned_digest(r)?;
    let url = session.url("manifests", &r.target());
    let (top, top_actual) = retry(&format!("manifest of {r}"), || {
        session.get_json(
            &url,
            &ACCEPT,
            MAX_JSON_BLOB,
            top_digest.as_ref(),
            None,
            "manifest",
        )
    })
    .await
    .map_err(|e| remote("pull manifest", e))?;
    let top_media = media_type_of(&top);

    // For an index, the platform's manifest.
    let mut platform: Option<(Vec<u8>, Digest)> = None;
    let step = match next_step(&top, "manifest", &opts.arch, true)
        .map_err(|e| remote("pull manifest", e))?
    {
        NextStep::Manifest(chosen) => {
            let expected: Digest = chosen.digest.parse().map_err(StoreError::from)?;
            let what = format!(
                "manifest {} for linux/{}",
                chosen.digest,
                spec::normalize_arch(&opts.arch)
            );
            let url = session.url("manifests", &chosen.digest);
            let (data, digest) = retry(&format!("{what} of {r}"), || {
                session.get_json(
                    &url,
                    &ACCEPT,
                    MAX_JSON_BLOB,
                    Some(&expected),
                    Some(chosen.size),
                    &what,
                )
            })
            .await
            .map_err(|e| remote("pull manifest", e))?;
            let step = next_step(&data, &what, &opts.arch, false)
                .map_err(|e| remote("pull manifest", e))?;
            platform = Some((data, digest));
            step
        }
        step => step,
    };
    let NextStep::Blobs { config, layers } = step else {
        return Err(remote(
            "pull manifest",
            invalid("manifest", "it is an index inside an index"),
        ));
    };

    // The blobs: config and layers, in parallel.
    let config_digest: Digest = config.digest.parse().map_err(StoreError::from)?;
    let blobs = std::iter::once((config, "config")).chain(layers.into_iter().map(|l| (l, "layer")));
    let parallel = opts.parallel.max(1);
    let fetched = futures_util::stream::iter(blobs.map(|(b, kind)| {
        let (p, image) = (opts.progress.as_ref(), image.as_str());
        async move {
            let what = format!("{kind} {}", b.digest);
            fetch_blob(store, session, image, &b, &what, p)
                .await
                .map_err(|e| remote("pull blob", e))
        }
    }))
    .buffer_unordered(parallel)
    .try_collect::<Vec<u64>>()
    .await?;
    let bytes = fetched.iter().sum();

    // The config must parse in bounded memory wherever it is read later.
    let config_what = format!("config {}", config_digest);
    let config_data = store.read_json_blob(&config_digest, &format!("{config_what} of {r}"))?;
    check_json_size(&config_data, MAX_JSON_VALUES)
        .map_err(|why| remote("pull blob", invalid(&config_what, why)))?;
    drop(config_data);

    // The publisher's SBOM attached to the chosen manifest, if any: best effort.
    if let Some((_, chosen)) = &platform
        && let Err(e) = fetch_attached_sboms(store, session, &image, &top, chosen).await
    {
        tracing::warn!("{image}: cannot fetch the SBOM attached to it: {e}; building without it");
    }

    // Then the manifests, then the name.
    if let Some((data, digest)) = &platform {
        store.put_bytes(data, Some(digest), &format!("manifest of {r}"))?;
    }
    let top_stored = store.put_bytes(&top, Some(&top_actual), &format!("manifest of {r}"))?;
    let desc = Descriptor::new(top_media, &top_stored, top.len() as u64);
    store.resolve_descriptor(&image, &desc, &opts.arch)?;
    store.tag(r, desc)?;
    Ok(Pulled {
        digest: top_stored,
        bytes,
    })
}

/// Fetch the attestation manifest an index holds for its platform manifest `chosen`, and its
/// SPDX statement layers, into the store (see [`crate::attestation`]).
async fn fetch_attached_sboms(
    store: &Store,
    session: &Session,
    image: &str,
    top: &[u8],
    chosen: &Digest,
) -> Result<(), TransferError> {
    use crate::attestation::{attestation_for, spdx_layers};
    let Ok(index) = serde_json::from_slice::<Index>(top) else {
        return Ok(());
    };
    let Some(att) = attestation_for(&index, &chosen.to_string()) else {
        return Ok(());
    };
    let expected: Digest = att
        .digest
        .parse()
        .map_err(|e: crate::DigestError| invalid("attestation manifest", e.to_string()))?;
    let what = format!("attestation manifest {}", att.digest);
    let url = session.url("manifests", &att.digest);
    let (data, digest) = retry(&format!("{what} of {image}"), || {
        session.get_json(
            &url,
            &ACCEPT,
            MAX_JSON_BLOB,
            Some(&expected),
            Some(att.size),
            &what,
        )
    })
    .await?;
    let manifest: Manifest =
        serde_json::from_slice(&data).map_err(|e| invalid(&what, e.to_string()))?;
    for layer in spdx_layers(&manifest) {
        let what = format!("SBOM {}", layer.digest);
        fetch_blob(store, session, image, layer, &what, None).await?;
    }
    store
        .put_bytes(&data, Some(&digest), &what)
        .map_err(store_error)?;
    Ok(())
}

fn store_error(e: StoreError) -> TransferError {
    match e {
        StoreError::DigestMismatch {
            what,
            expected,
            actual,
        } => TransferError::DigestMismatch {
            what,
            expected,
            actual,
        },
        other => TransferError::Store(other.to_string()),
    }
}

/// Fetch one blob into the store, stopped at its descriptor's size and verified.
async fn fetch_blob(
    store: &Store,
    session: &Session,
    image: &str,
    b: &Descriptor,
    what: &str,
    progress: Option<&PullProgress>,
) -> Result<u64, TransferError> {
    let expected: Digest = b
        .digest
        .parse()
        .map_err(|e: crate::DigestError| invalid(what, e.to_string()))?;
    if store.has_blob(&expected) {
        let path = store.blob_path(&expected);
        let size = std::fs::metadata(&path)
            .map_err(|e| TransferError::Store(format!("{}: {e}", path.display())))?
            .len();
        if size != b.size {
            return Err(TransferError::SizeMismatch {
                what: what.into(),
                expected: b.size,
                got: format!("the store holds {size} bytes for it"),
            });
        }
        return Ok(0);
    }
    let url = session.url("blobs", &b.digest);
    retry(&format!("{what} of {image}"), || async {
        let mut resp = session.get(&url, &[]).await?;
        if let Some(n) = resp.content_length {
            crate::transport::check_announced(n, u64::MAX, Some(b.size), what)?;
        }
        let mut w = store.blob_writer().map_err(store_error)?;
        while let Some(chunk) = resp.body.next().await? {
            if resp.body.received > b.size {
                return Err(TransferError::SizeMismatch {
                    what: what.into(),
                    expected: b.size,
                    got: format!("the registry sent more than {} bytes", b.size),
                });
            }
            w.write_all(&chunk)
                .map_err(|e| TransferError::Store(format!("{}: {e}", store.root().display())))?;
            if let Some(p) = progress {
                (p.0)(image, &b.digest, resp.body.received, b.size);
            }
        }
        if resp.body.received != b.size {
            return Err(TransferError::SizeMismatch {
                what: what.into(),
                expected: b.size,
                got: format!("the registry sent {} bytes", resp.body.received),
            });
        }
        w.commit(Some(&expected), what)
            .map(|_| b.size)
            .map_err(store_error)
    })
    .await
}

/// Fetch `blobs` of `r`'s repository into the store (in parallel), each stopped at its
/// descriptor's size and verified against its digest; blobs the store holds are not fetched
/// again. Returns the bytes downloaded. The caller names what references them (holding
/// [`Store::write_guard`] meanwhile).
pub fn fetch_blobs(
    store: &Store,
    r: &Reference,
    blobs: &[Descriptor],
    opts: &RegistryOptions,
) -> Result<u64, RegistryError> {
    let t = target(r, opts);
    let image = r.to_string();
    let remote =
        |operation, e: TransferError| RegistryError::remote(&t.host, &image, operation, &e);
    let session = opts.session(&t, r).map_err(|e| remote("connect", e))?;
    let session = &session;
    let fetched = runtime()?.block_on(
        futures_util::stream::iter(blobs.iter().map(|b| {
            let image = image.as_str();
            let remote = &remote;
            async move {
                let what = format!("blob {}", b.digest);
                fetch_blob(store, session, image, b, &what, None)
                    .await
                    .map_err(|e| remote("pull blob", e))
            }
        }))
        .buffer_unordered(opts.parallel.max(1))
        .try_collect::<Vec<u64>>(),
    )?;
    Ok(fetched.iter().sum())
}

/// Push the store's image `r` to the registry it names.
pub fn push(store: &Store, r: &Reference, opts: &RegistryOptions) -> Result<Digest, RegistryError> {
    runtime()?.block_on(push_async(store, r, opts))
}

async fn push_async(
    store: &Store,
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Digest, RegistryError> {
    let desc = store
        .lookup(r)?
        .ok_or_else(|| StoreError::NotFound(r.to_string()))?;
    let t = target(r, opts);
    let image = r.to_string();
    let remote = |operation, e: TransferError| RegistryError::Remote {
        registry: t.host.clone(),
        operation: if matches!(e, TransferError::Auth(_)) {
            "authenticate"
        } else {
            operation
        },
        image: image.clone(),
        message: e.to_string(),
    };
    let session = opts
        .session(&t, r)
        .map_err(|e| remote("connect", e))?
        .with_access(Access::Push);
    let top: Digest = desc.digest.parse().map_err(StoreError::from)?;
    let mut manifests = vec![(top.clone(), desc.media_type.clone())];
    if spec::is_index(&desc.media_type) {
        let index: Index =
            serde_json::from_slice(&store.read_json_blob(&top, &image)?).map_err(|source| {
                StoreError::Json {
                    what: image.clone(),
                    source,
                }
            })?;
        manifests = index
            .manifests
            .iter()
            .filter_map(|m| Some((m.digest.parse::<Digest>().ok()?, m.media_type.clone())))
            .filter(|(d, _)| store.has_blob(d))
            .chain(manifests)
            .collect();
    }
    for (digest, media) in manifests {
        let data = store.read_json_blob(&digest, &image)?;
        if !spec::is_index(&media) {
            let m: Manifest = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                what: image.clone(),
                source,
            })?;
            for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                push_blob(store, &session, &image, b)
                    .await
                    .map_err(|e| remote("push blob", e))?;
            }
        }
        // The image's own manifest under its tag (or digest), an index's children by digest.
        let reference = if digest == top {
            r.target()
        } else {
            digest.to_string()
        };
        let what = format!("manifest {digest}");
        let content_type = HeaderValue::from_str(&media).map_err(|_| {
            remote(
                "push manifest",
                invalid(
                    &what,
                    format!("media type `{media}` is not a valid header value"),
                ),
            )
        })?;
        let url = session.url("manifests", &reference);
        let payload = Payload::Bytes(data.into());
        retry(&format!("{what} of {image}"), || async {
            let resp = session
                .request(
                    Method::PUT,
                    &url,
                    &[(CONTENT_TYPE, content_type.clone())],
                    &payload,
                )
                .await?;
            expect_success(resp).await
        })
        .await
        .map_err(|e| remote("push manifest", e))?;
    }
    Ok(top)
}

/// Accept a 2xx response (without reading its body), or fail with its status and message.
async fn expect_success(resp: crate::transport::Response) -> Result<(), TransferError> {
    if (200..300).contains(&resp.status) {
        Ok(())
    } else {
        Err(resp.into_error().await)
    }
}

/// Upload one blob of the store unless the registry has it: HEAD, then POST for an upload
/// location and PUT the blob there, streamed from the store. Each attempt starts afresh.
async fn push_blob(
    store: &Store,
    session: &Session,
    image: &str,
    b: &Descriptor,
) -> Result<(), TransferError> {
    let what = format!("blob {}", b.digest);
    let digest: Digest = b
        .digest
        .parse()
        .map_err(|e: crate::DigestError| invalid(&what, e.to_string()))?;
    let path = store.blob_path(&digest);
    let size = std::fs::metadata(&path)
        .map_err(|e| TransferError::Store(format!("{}: {e}", path.display())))?
        .len();
    if size != b.size {
        return Err(TransferError::SizeMismatch {
            what,
            expected: b.size,
            got: format!("the store holds {size} bytes for it"),
        });
    }
    let blob_url = session.url("blobs", &b.digest);
    let uploads = session.url("blobs", "uploads/");
    let payload = Payload::File { path, len: size };
    let octets = HeaderValue::from_static("application/octet-stream");
    retry(&format!("push {what} of {image}"), || async {
        let head = session
            .request(Method::HEAD, &blob_url, &[], &Payload::Empty)
            .await?;
        match head.status {
            200 => return Ok(()),
            s if s >= 500 || s == 429 => return Err(head.into_error().await),
            // 404, or a refusal the upload will explain.
            _ => drop(head),
        }
        let started = session
            .request(Method::POST, &uploads, &[], &Payload::Empty)
            .await?;
        if !(200..300).contains(&started.status) {
            return Err(started.into_error().await);
        }
        let location = started
            .headers
            .get(LOCATION)
            .ok_or_else(|| {
                invalid(
                    &format!("{}: upload of {what}", started.url),
                    format!(
                        "the registry answered {} without a Location header",
                        started.status
                    ),
                )
            })?
            .to_str()
            .map_err(|_| {
                invalid(
                    &format!("{}: upload of {what}", started.url),
                    "the Location header is not ASCII",
                )
            })?
            .to_string();
        let put = upload_url(&started.url, &location, &digest)
            .map_err(|why| invalid(&format!("{}: upload of {what}", started.url), why))?;
        drop(started);
        let done = session
            .request(
                Method::PUT,
                &put,
                &[(CONTENT_TYPE, octets.clone())],
                &payload,
            )
            .await?;
        expect_success(done).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(media: &str, data: &[u8]) -> serde_json::Value {
        serde_json::json!({"mediaType": media, "digest": Digest::of(data).to_string(), "size": data.len()})
    }

    fn manifest(config_size: u64, layers: usize) -> Vec<u8> {
        let layer = desc(spec::MEDIA_OCI_LAYER, b"layer");
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_MANIFEST,
            "config": {"mediaType": spec::MEDIA_OCI_CONFIG, "digest": Digest::of(b"c").to_string(), "size": config_size},
            "layers": vec![layer; layers],
        }))
        .expect("json")
    }

    #[test]
    fn next_step_follows_an_index_to_the_platform() {
        let m = manifest(10, 1);
        let mut entry = desc(spec::MEDIA_OCI_MANIFEST, &m);
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": spec::MEDIA_OCI_INDEX, "manifests": [entry]
        }))
        .expect("json");
        match next_step(&index, "index", "aarch64", true) {
            Ok(NextStep::Manifest(d)) => assert_eq!(d.digest, Digest::of(&m).to_string()),
            other => panic!("{other:?}"),
        }
        let err = next_step(&index, "index", "amd64", true).expect_err("no amd64");
        assert!(
            err.to_string()
                .contains("no linux/amd64 image in the index (it has: linux/arm64)"),
            "{err}"
        );
        assert!(
            next_step(&index, "m", "arm64", false).is_err(),
            "an index inside an index"
        );
        match next_step(&m, "manifest", "amd64", false) {
            Ok(NextStep::Blobs { config, layers }) => {
                assert_eq!((config.size, layers.len()), (10, 1))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn next_step_refuses_before_fetching() {
        let err = next_step(&manifest(MAX_JSON_BLOB + 1, 1), "manifest", "amd64", true)
            .expect_err("config too large");
        assert!(
            matches!(err, TransferError::TooLarge { .. }) && !err.is_transient(),
            "{err}"
        );
        assert!(err.to_string().starts_with("config sha256:"), "{err}");
        let err = next_step(&manifest(1, MAX_LAYERS + 1), "manifest", "amd64", true)
            .expect_err("too many layers");
        assert!(
            err.to_string().contains("more than the 1024 kiln accepts"),
            "{err}"
        );
        let schema1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(next_step(schema1, "manifest", "amd64", true).is_err());
        let mut bad = manifest(1, 1);
        let text = String::from_utf8(bad.clone())
            .expect("utf8")
            .replace("\"size\":1,", "\"size\":1,\"x\":[[[[]]]],");
        bad = text.into_bytes();
        assert!(next_step(&bad, "manifest", "amd64", true).is_ok());
        let wide = format!("[{}0]", "0,".repeat(200_000));
        let err =
            next_step(wide.as_bytes(), "manifest", "amd64", true).expect_err("too many values");
        assert!(
            err.to_string().contains("more than 200000 JSON values"),
            "{err}"
        );
    }

    proptest::proptest! {
        #[test]
        fn next_step_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = next_step(&data, "m", "amd64", true);
        }

        #[test]
        fn next_step_accepts_what_it_should(config in 0u64..=MAX_JSON_BLOB, layers in 0usize..40) {
            let step = next_step(&manifest(config, layers), "m", "amd64", true);
            let ok = matches!(step, Ok(NextStep::Blobs { config: ref c, layers: ref l }) if c.size == config && l.len() == layers);
            proptest::prop_assert!(ok);
        }
    }

    #[test]
    fn loopback_is_plain_http() {
        assert!(
            is_loopback("localhost:5000")
                && is_loopback("127.0.0.1:41234")
                && is_loopback("localhost")
        );
        assert!(!is_loopback("registry.example.com") && !is_loopback("10.0.0.1:5000"));
        let r: Reference = "kiln-test/svc:1".parse().expect("ref");
        let opts = RegistryOptions {
            mirrors: vec![("docker.io".into(), "http://127.0.0.1:5000".into())],
            ..Default::default()
        };
        let t = target(&r, &opts);
        assert_eq!((t.host.as_str(), t.http), ("127.0.0.1:5000", true));
        // A mirror's https scheme holds even for a loopback host; a bare URL serves everything.
        let opts = RegistryOptions {
            mirrors: vec![parse_mirror("https://127.0.0.1:5000/").expect("mirror")],
            ..Default::default()
        };
        let t = target(&r, &opts);
        assert_eq!((t.host.as_str(), t.http), ("127.0.0.1:5000", false));
        assert_eq!(
            parse_mirror("docker.io/=http://m"),
            Some(("docker.io".into(), "http://m".into()))
        );
        assert_eq!(parse_mirror("127.0.0.1:5000"), None);
    }
}
