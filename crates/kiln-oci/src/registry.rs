//! The registry client: pull and push over the OCI distribution API.
//!
//! Transport, token and basic authentication come from `oci-client`; this module decides what to
//! fetch, verifies every manifest and blob against its digest as it streams into the store,
//! fetches layers in parallel, retries with backoff, maps registries to mirrors, and reads
//! credentials from the Docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`). Plain HTTP is used for localhost, 127.0.0.0/8, ::1 and registries
//! marked insecure.

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{self, Descriptor, Index, Manifest};
use crate::store::{Store, StoreError, media_type_of, select_platform};
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use std::io::{Read, Write};
use std::time::Duration;

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
}

/// Parse `REGISTRY=URL` mirror flags.
pub fn parse_mirror(s: &str) -> Option<(String, String)> {
    let (reg, url) = s.split_once('=')?;
    Some((reg.to_string(), url.to_string()))
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
    if let Some((_, url)) = opts.mirrors.iter().find(|(reg, _)| *reg == r.registry) {
        let http = url.starts_with("http://");
        let host = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let http = http || opts.insecure.contains(&host) || is_loopback(&host);
        return Target { host, http };
    }
    let host = r.registry.clone();
    let http = opts.insecure.contains(&host) || is_loopback(&host);
    Target { host, http }
}

fn client(t: &Target) -> oci_client::Client {
    let protocol = if t.http {
        ClientProtocol::HttpsExcept(vec![t.host.clone()])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        ..Default::default()
    })
}

fn client_ref(t: &Target, r: &Reference, digest: Option<&str>) -> oci_client::Reference {
    match digest.or(r.digest.as_deref()) {
        Some(d) => {
            oci_client::Reference::with_digest(t.host.clone(), r.repository.clone(), d.to_string())
        }
        None => oci_client::Reference::with_tag(
            t.host.clone(),
            r.repository.clone(),
            r.tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

/// Credentials for `host` from the Docker config file, else anonymous.
pub fn credentials(host: &str) -> RegistryAuth {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")));
    let Some(Ok(text)) = dir.map(|d| std::fs::read_to_string(d.join("config.json"))) else {
        return RegistryAuth::Anonymous;
    };
    let Ok(cfg) = serde_json::from_str::<serde_json::Value>(&text) else {
        return RegistryAuth::Anonymous;
    };
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
            return RegistryAuth::Basic(u.into(), p.into());
        }
        if let Some(auth) = entry.get("auth").and_then(|v| v.as_str()) {
            use base64::Engine as _;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth)
                && let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':')
            {
                return RegistryAuth::Basic(u.into(), p.into());
            }
        }
    }
    RegistryAuth::Anonymous
}

const ACCEPT: [&str; 4] = [
    spec::MEDIA_OCI_MANIFEST,
    spec::MEDIA_OCI_INDEX,
    spec::MEDIA_DOCKER_MANIFEST,
    spec::MEDIA_DOCKER_LIST,
];

async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut delay = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e)
                if attempt >= 4
                    || e.contains("MANIFEST_UNKNOWN")
                    || e.contains("NAME_UNKNOWN")
                    || e.contains("not found")
                    || e.contains("digest mismatch") =>
            {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!("{what}: attempt {attempt} failed: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, RegistryError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

/// Pull `r` into the store for `opts.arch`; returns the digest its name now points to.
pub fn pull(store: &Store, r: &Reference, opts: &RegistryOptions) -> Result<Digest, RegistryError> {
    runtime()?.block_on(pull_async(store, r, opts))
}

async fn pull_async(
    store: &Store,
    r: &Reference,
    opts: &RegistryOptions,
) -> Result<Digest, RegistryError> {
    let _guard = store.write_guard()?;
    let t = target(r, opts);
    let c = client(&t);
    let auth = credentials(&t.host);
    let remote = |operation, message: String| RegistryError::Remote {
        registry: t.host.clone(),
        operation,
        image: r.to_string(),
        message,
    };
    let fetch_manifest = |digest: Option<String>| {
        let (c, auth) = (&c, &auth);
        let cref = client_ref(&t, r, digest.as_deref());
        async move {
            retry(&format!("manifest of {r}"), || async {
                c.pull_manifest_raw(&cref, auth, &ACCEPT)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        }
    };
    let (data, _) = fetch_manifest(None)
        .await
        .map_err(|e| remote("pull manifest", e))?;
    let top = store.put_bytes(
        &data,
        r.digest
            .as_ref()
            .map(|d| d.parse())
            .transpose()
            .map_err(StoreError::from)?
            .as_ref(),
        &format!("manifest of {r}"),
    )?;
    let top_media = media_type_of(&data);
    let mut manifest_bytes = data.to_vec();
    if spec::is_index(&top_media) {
        let index: Index = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            what: format!("index of {r}"),
            source,
        })?;
        let chosen = select_platform(&index, &opts.arch)
            .ok_or_else(|| {
                remote(
                    "select platform",
                    format!(
                        "no linux/{} image in the index",
                        spec::normalize_arch(&opts.arch)
                    ),
                )
            })?
            .clone();
        let expected: Digest = chosen.digest.parse().map_err(StoreError::from)?;
        let (m, _) = fetch_manifest(Some(chosen.digest.clone()))
            .await
            .map_err(|e| remote("pull manifest", e))?;
        store.put_bytes(&m, Some(&expected), &format!("manifest of {r}"))?;
        manifest_bytes = m.to_vec();
    }
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
            what: format!("manifest of {r}"),
            source,
        })?;
    let mut blobs = vec![manifest.config.clone()];
    blobs.extend(manifest.layers.iter().cloned());
    let parallel = opts.parallel.max(1);
    futures_util::stream::iter(blobs.into_iter().map(|b| {
        let (c, auth, t, p) = (&c, &auth, &t, opts.progress.as_ref());
        async move { fetch_blob(store, c, auth, t, r, &b, p).await }
    }))
    .buffer_unordered(parallel)
    .try_collect::<Vec<()>>()
    .await?;
    let desc = Descriptor::new(top_media, &top, data.len() as u64);
    store.tag(r, desc)?;
    store.resolve(r, &opts.arch)?;
    Ok(top)
}

async fn fetch_blob(
    store: &Store,
    c: &oci_client::Client,
    auth: &RegistryAuth,
    t: &Target,
    r: &Reference,
    b: &Descriptor,
    progress: Option<&PullProgress>,
) -> Result<(), RegistryError> {
    let expected: Digest = b.digest.parse().map_err(StoreError::from)?;
    if store.has_blob(&expected) {
        return Ok(());
    }
    // Authenticate once per client (the token is cached) before streaming.
    let cref = client_ref(t, r, None);
    let _ = c
        .auth(&cref, auth, oci_client::RegistryOperation::Pull)
        .await;
    let what = format!("blob {} of {r}", b.digest);
    retry(&what, || async {
        let mut stream = c
            .pull_blob_stream(&cref, b.digest.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let mut w = store.blob_writer().map_err(|e| e.to_string())?;
        let mut done = 0u64;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            w.write_all(&chunk).map_err(|e| e.to_string())?;
            done += chunk.len() as u64;
            if let Some(p) = progress {
                (p.0)(&r.to_string(), &b.digest, done, b.size);
            }
        }
        w.commit(Some(&expected), &what)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|message| RegistryError::Remote {
        registry: t.host.clone(),
        operation: "pull blob",
        image: r.to_string(),
        message,
    })
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
    let c = client(&t);
    let auth = credentials(&t.host);
    let remote = |operation, message: String| RegistryError::Remote {
        registry: t.host.clone(),
        operation,
        image: r.to_string(),
        message,
    };
    let cref = client_ref(&t, r, None);
    c.auth(&cref, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| remote("authenticate", e.to_string()))?;
    let top: Digest = desc.digest.parse().map_err(StoreError::from)?;
    let mut manifests = vec![(top.clone(), desc.media_type.clone())];
    if spec::is_index(&desc.media_type) {
        let index: Index = serde_json::from_slice(&store.read_json_blob(&top, &r.to_string())?)
            .map_err(|source| StoreError::Json {
                what: r.to_string(),
                source,
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
        let data = store.read_json_blob(&digest, &r.to_string())?;
        if !spec::is_index(&media) {
            let m: Manifest = serde_json::from_slice(&data).map_err(|source| StoreError::Json {
                what: r.to_string(),
                source,
            })?;
            for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                push_blob(store, &c, &cref, b)
                    .await
                    .map_err(|e| remote("push blob", e))?;
            }
        }
        let is_top = digest == top;
        let mref = if is_top {
            cref.clone()
        } else {
            client_ref(&t, r, Some(&digest.to_string()))
        };
        let ct = http::HeaderValue::from_str(&media)
            .map_err(|e| remote("push manifest", e.to_string()))?;
        retry("push manifest", || async {
            c.push_manifest_raw(&mref, data.clone(), ct.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| remote("push manifest", e))?;
    }
    Ok(top)
}

async fn push_blob(
    store: &Store,
    c: &oci_client::Client,
    cref: &oci_client::Reference,
    b: &Descriptor,
) -> Result<(), String> {
    if c.blob_exists(cref, &b.digest).await.unwrap_or(false) {
        return Ok(());
    }
    let digest: Digest = b
        .digest
        .parse()
        .map_err(|e: crate::DigestError| e.to_string())?;
    retry(&format!("push {}", b.digest), || async {
        let file = store.open_blob(&digest).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let stream = futures_util::stream::try_unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            let n = f.read(&mut buf).map_err(|e| {
                oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
            })?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        });
        c.push_blob_stream(cref, stream, &b.digest, Some(size))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
