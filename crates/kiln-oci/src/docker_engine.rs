//! Images from a running Docker engine (`kiln build --docker`), as LinuxKit's `build --docker`
//! takes them: through the engine's HTTP API on its unix socket, never through its files.
//!
//! [`DockerEngine::inspect`] asks whether the engine has an image (`GET /images/{name}/json`);
//! [`DockerEngine::import`] streams the image out of the engine (`GET /images/{name}/get`, what
//! `docker save` writes) into the [`Store`] through [`archive::import_reader`]: the tar is never
//! held in memory, and its blobs are hashed as they are stored. Everything the engine sends is
//! treated as untrusted input: JSON responses and error messages are bounded in size, and a
//! stalled engine times out.
//!
//! [`DockerEngine::load`] goes the other way (`kiln pkg build --docker`): images of the store are
//! written as a `docker save` tar by [`archive::export`] on a thread of their own and streamed
//! as the body of `POST /images/load`; the engine's JSON-stream reply is checked for an error
//! and for the names it loaded.

use crate::archive::{self, ArchiveError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket of the engine when `DOCKER_HOST` is unset or empty.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The largest JSON response (image inspection) read from the engine.
pub const MAX_JSON_RESPONSE: usize = 8 << 20;

/// The largest error message read from the engine.
const MAX_ERROR_RESPONSE: usize = 64 << 10;

/// How long a request may wait for the engine's response headers (and an inspection for its
/// whole body).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an image export may go without sending a byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors talking to a Docker engine.
#[derive(Debug, thiserror::Error)]
pub enum DockerEngineError {
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error(
        "DOCKER_HOST={host}: only unix sockets (unix:///path/to/docker.sock) are supported; set it to one, or unset it to use {DEFAULT_SOCKET}"
    )]
    UnsupportedHost {
        /// The value of `DOCKER_HOST`.
        host: String,
    },
    /// Connecting to the engine's socket failed.
    #[error(
        "docker engine at {socket}: cannot connect: {source} (is dockerd running? set DOCKER_HOST=unix:///path to its socket)"
    )]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange with the engine failed.
    #[error("docker engine at {socket}: {operation} {image}: {message}")]
    Http {
        /// The socket.
        socket: PathBuf,
        /// What was asked (`inspect`, `export`).
        operation: &'static str,
        /// The image.
        image: String,
        /// What went wrong.
        message: String,
    },
    /// The engine answered with an error status.
    #[error("docker engine at {socket}: {operation} {image}: HTTP {status}: {message}")]
    Status {
        /// The socket.
        socket: PathBuf,
        /// What was asked.
        operation: &'static str,
        /// The image.
        image: String,
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The engine's answer is not what its API promises.
    #[error("docker engine at {socket}: {operation} {image}: bad response: {why}")]
    BadResponse {
        /// The socket.
        socket: PathBuf,
        /// What was asked.
        operation: &'static str,
        /// The image.
        image: String,
        /// What is wrong.
        why: String,
    },
    /// The engine took too long.
    #[error(
        "docker engine at {socket}: {operation} {image}: no answer for {} s",
        .after.as_secs()
    )]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// What was asked.
        operation: &'static str,
        /// The image.
        image: String,
        /// How long kiln waited.
        after: Duration,
    },
    /// The image the engine exported could not be imported.
    #[error("docker engine at {socket}: importing {image}: {source}")]
    Import {
        /// The socket.
        socket: PathBuf,
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<ArchiveError>,
    },
    /// The engine exported an archive that does not hold the image asked for.
    #[error(
        "docker engine at {socket}: the export of {image} holds {found:?}, not the image asked for"
    )]
    WrongImage {
        /// The socket.
        socket: PathBuf,
        /// The image asked for.
        image: String,
        /// The names the archive held.
        found: Vec<String>,
    },
    /// A reference pinned by digest: `docker save` does not keep the registry manifest that
    /// digest names, so the engine's copy cannot be checked against it.
    #[error(
        "{image}: an image pinned by digest cannot be taken from a Docker engine (its export does not keep the manifest the digest names); pull it instead"
    )]
    PinnedByDigest {
        /// The image.
        image: String,
    },
    /// The images to load could not be written from the store.
    #[error("docker engine at {socket}: load {image}: exporting from the store: {source}")]
    Export {
        /// The socket.
        socket: PathBuf,
        /// The images.
        image: String,
        /// Why.
        #[source]
        source: Box<ArchiveError>,
    },
    /// The engine refused the images it was sent (an error in its reply stream).
    #[error("docker engine at {socket}: load {image}: the engine refused it: {message}")]
    Rejected {
        /// The socket.
        socket: PathBuf,
        /// The images.
        image: String,
        /// The engine's message.
        message: String,
    },
    /// The store names a multi-platform index: `docker load` takes one image per name.
    #[error(
        "{image}: the store holds it for several platforms ({count} images); the Docker engine takes one per name: rebuild it for one platform (kiln pkg build --force) and load that"
    )]
    MultiPlatform {
        /// The image.
        image: String,
        /// How many platform images the store holds for it.
        count: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The I/O runtime could not be started.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// What the engine says of an image (`GET /images/{name}/json`, the fields kiln uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EngineImage {
    /// The engine's image ID (the digest of its config).
    pub id: String,
    /// The image's architecture (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// The image's operating system.
    #[serde(default)]
    pub os: String,
    /// The size of its layers, as the engine counts it.
    #[serde(default)]
    pub size: u64,
}

/// What [`DockerEngine::import`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The digest of the image manifest the reference now points to in the store.
    pub digest: Digest,
    /// The bytes the engine sent (the `docker save` tar).
    pub bytes: u64,
}

/// What [`DockerEngine::load`] sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The names the engine reports it loaded, as it spells them (`linuxkit/init:v1`).
    pub names: Vec<String>,
    /// The bytes sent (the `docker save` tar).
    pub bytes: u64,
}

/// A Docker engine reached through its API socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEngine {
    socket: PathBuf,
}

impl DockerEngine {
    /// The engine `DOCKER_HOST` names, or the one at [`DEFAULT_SOCKET`] when it is unset.
    /// Nothing is contacted yet.
    pub fn from_env() -> Result<Self, DockerEngineError> {
        match std::env::var("DOCKER_HOST") {
            Ok(v) => Self::from_docker_host(Some(&v)),
            Err(std::env::VarError::NotPresent) => Self::from_docker_host(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(DockerEngineError::UnsupportedHost {
                host: v.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The engine a `DOCKER_HOST` value names (`None` or empty: [`DEFAULT_SOCKET`]). Only
    /// `unix://PATH` is supported.
    pub fn from_docker_host(host: Option<&str>) -> Result<Self, DockerEngineError> {
        let host = host.map(str::trim).unwrap_or("");
        if host.is_empty() {
            return Ok(Self::at(DEFAULT_SOCKET));
        }
        match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(Self::at(path)),
            _ => Err(DockerEngineError::UnsupportedHost {
                host: host.to_string(),
            }),
        }
    }

    /// The engine listening on the unix socket at `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Self {
        DockerEngine {
            socket: socket.into(),
        }
    }

    /// The engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the engine knows of image `r`, or `None` when it lacks it.
    pub fn inspect(&self, r: &Reference) -> Result<Option<EngineImage>, DockerEngineError> {
        let image = r.canonical().to_string();
        runtime()?.block_on(async {
            let path = format!("/images/{}/json", encode_path(&image));
            let resp = self.get(&path, "inspect", &image).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let resp = self.check_status(resp, "inspect", &image).await?;
            let body = tokio::time::timeout(
                RESPONSE_TIMEOUT,
                Limited::new(resp.into_body(), MAX_JSON_RESPONSE).collect(),
            )
            .await
            .map_err(|_| self.timeout("inspect", &image, RESPONSE_TIMEOUT))?
            .map_err(|e| self.http("inspect", &image, e.to_string()))?
            .to_bytes();
            serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| DockerEngineError::BadResponse {
                    socket: self.socket.clone(),
                    operation: "inspect",
                    image: image.clone(),
                    why: e.to_string(),
                })
        })
    }

    /// Whether the engine has image `r`.
    pub fn has_image(&self, r: &Reference) -> Result<bool, DockerEngineError> {
        Ok(self.inspect(r)?.is_some())
    }

    /// Copy image `r` from the engine into `store`, streaming the engine's export into
    /// [`archive::import_reader`]; afterwards `store.resolve(r, arch)` finds it. References
    /// pinned by digest are refused ([`DockerEngineError::PinnedByDigest`]).
    pub fn import(&self, store: &Store, r: &Reference) -> Result<Imported, DockerEngineError> {
        let image = r.canonical().to_string();
        if r.digest.is_some() {
            return Err(DockerEngineError::PinnedByDigest { image });
        }
        let rt = runtime()?;
        let resp = rt.block_on(async {
            let path = format!("/images/{}/get", encode_path(&image));
            let resp = self.get(&path, "export", &image).await?;
            self.check_status(resp, "export", &image).await
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let label = format!("docker engine at {}: {image}", self.socket.display());
        let (names, bytes) = std::thread::scope(|s| {
            // The response body is pumped by the runtime on a thread of its own while this one
            // imports: the channel's bound is all of the tar ever in memory.
            let pump = s.spawn(|| rt.block_on(pump(resp.into_body(), tx)));
            let mut reader = ChannelReader {
                rx,
                current: Bytes::new(),
                bytes: 0,
            };
            let result = archive::import_reader(store, &mut reader, &label, Some(r));
            // Dropping the receiver stops the pump if the import ended early.
            let bytes = reader.bytes;
            drop(reader);
            let _ = pump.join();
            result.map(|names| (names, bytes))
        })
        .map_err(|source| DockerEngineError::Import {
            socket: self.socket.clone(),
            image: image.clone(),
            source: Box::new(source),
        })?;
        // The engine names Docker Hub images in their short form (`linuxkit/init:v1`), which
        // normalises to the reference asked for; any other single name is tagged as `r` too.
        let desc = match store.lookup(r)? {
            Some(d) if names.contains(&image) => d,
            _ => {
                let [only] = names.as_slice() else {
                    return Err(self.wrong_image(&image, names));
                };
                let imported: Reference = only.parse().map_err(StoreError::from)?;
                let Some(d) = store.lookup(&imported)? else {
                    return Err(self.wrong_image(&image, names));
                };
                let _guard = store.write_guard()?;
                store.tag(r, d.clone())?;
                d
            }
        };
        let digest: Digest = desc.digest.parse().map_err(StoreError::from)?;
        Ok(Imported { digest, bytes })
    }

    /// Load images `refs` of `store` into the engine (`POST /images/load`, what `docker load`
    /// does), each under its name. The `docker save` tar is written by [`archive::export`] on
    /// a thread of its own and streamed as the request body: a bounded channel is all of it
    /// ever in memory. Fails when the engine reports an error, or does not report loading
    /// every name asked for.
    pub fn load(&self, store: &Store, refs: &[Reference]) -> Result<Loaded, DockerEngineError> {
        let image = refs
            .iter()
            .map(|r| r.canonical().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        for r in refs {
            single_platform(store, r)?;
        }
        let rt = runtime()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (exchange, exported) = std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let mut out = io::BufWriter::with_capacity(
                    256 << 10,
                    ChannelWriter {
                        tx: tx.clone(),
                        bytes: 0,
                        closed: false,
                    },
                );
                let result = archive::export(store, refs, archive::ArchiveFormat::Docker, &mut out)
                    .and_then(|()| {
                        out.flush().map_err(|source| ArchiveError::Io {
                            archive: "export".into(),
                            source,
                        })
                    });
                // What is still buffered after a failure is dropped, not sent.
                let (inner, _) = out.into_parts();
                let (bytes, closed) = (inner.bytes, inner.closed);
                drop(inner);
                if result.is_err() && !closed {
                    // The body ends in an error: the engine must not load a truncated tar.
                    let _ = tx.blocking_send(Err(io::Error::other("the export failed")));
                }
                (result.map(|()| bytes), closed)
            });
            let body = http_body_util::StreamBody::new(ChannelStream {
                rx,
                sent: sent.clone(),
            });
            let exchange = rt.block_on(self.post_load(body, &sent, &image));
            // Dropping the runtime drops the connection and with it the body's receiver: a
            // writer still blocked on the channel stops.
            drop(rt);
            let exported = writer.join();
            (exchange, exported)
        });
        let bytes = match exported {
            Ok((Ok(bytes), _)) => bytes,
            Ok((Err(source), closed)) => {
                // The connection ended first: the exchange says why.
                if closed && let Err(e) = exchange {
                    return Err(e);
                }
                return Err(DockerEngineError::Export {
                    socket: self.socket.clone(),
                    image,
                    source: Box::new(source),
                });
            }
            Err(_) => return Err(self.http("load", &image, "the export thread panicked".into())),
        };
        let reply = exchange?;
        let names = parse_load_reply(&reply).map_err(|e| match e {
            LoadReplyError::Engine(message) => DockerEngineError::Rejected {
                socket: self.socket.clone(),
                image: image.clone(),
                message,
            },
            LoadReplyError::Malformed(why) => DockerEngineError::BadResponse {
                socket: self.socket.clone(),
                operation: "load",
                image: image.clone(),
                why,
            },
        })?;
        for r in refs {
            let want = r.canonical();
            let found = names
                .iter()
                .any(|n| n.parse::<Reference>().is_ok_and(|n| n.canonical() == want));
            if !found {
                return Err(DockerEngineError::BadResponse {
                    socket: self.socket.clone(),
                    operation: "load",
                    image: image.clone(),
                    why: format!(
                        "the engine did not report loading {want} (it reported {names:?})"
                    ),
                });
            }
        }
        Ok(Loaded { names, bytes })
    }

    /// Send `POST /images/load` with `body` and collect the engine's reply. The engine may
    /// answer only once it has the whole tar: waiting is bounded by [`IDLE_TIMEOUT`] without
    /// progress (bytes sent or received), not by the size of the upload.
    async fn post_load<B>(
        &self,
        body: B,
        sent: &std::sync::atomic::AtomicU64,
        image: &str,
    ) -> Result<Vec<u8>, DockerEngineError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let operation = "load";
        let mut sender = tokio::time::timeout(RESPONSE_TIMEOUT, self.open(operation, image))
            .await
            .map_err(|_| self.timeout(operation, image, RESPONSE_TIMEOUT))??;
        let req = Request::post("/images/load?quiet=1")
            .header(hyper::header::HOST, "docker")
            .header(hyper::header::USER_AGENT, "kiln")
            .header(hyper::header::CONTENT_TYPE, "application/x-tar")
            .body(body)
            .map_err(|e| self.http(operation, image, e.to_string()))?;
        let response = sender.send_request(req);
        tokio::pin!(response);
        let mut seen = 0;
        let resp = loop {
            tokio::select! {
                r = &mut response => break r,
                () = tokio::time::sleep(IDLE_TIMEOUT) => {
                    let now = sent.load(std::sync::atomic::Ordering::Relaxed);
                    if now == seen {
                        return Err(self.timeout(operation, image, IDLE_TIMEOUT));
                    }
                    seen = now;
                }
            }
        }
        .map_err(|e| self.http(operation, image, e.to_string()))?;
        let mut body = self.check_status(resp, operation, image).await?.into_body();
        let mut reply = Vec::new();
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| self.timeout(operation, image, IDLE_TIMEOUT))?;
            match frame {
                None => break,
                Some(Err(e)) => return Err(self.http(operation, image, e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if reply.len() + data.len() > MAX_JSON_RESPONSE {
                            return Err(DockerEngineError::BadResponse {
                                socket: self.socket.clone(),
                                operation,
                                image: image.to_string(),
                                why: format!("the reply exceeds {MAX_JSON_RESPONSE} bytes"),
                            });
                        }
                        reply.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(reply)
    }

    /// Send `GET path` and wait for the response headers.
    /// A connection to the engine's socket, its HTTP/1 exchange driven on a task of its own.
    async fn open<B>(
        &self,
        operation: &'static str,
        image: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<B>, DockerEngineError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| DockerEngineError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http(operation, image, e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("docker engine connection: {e}");
            }
        });
        Ok(sender)
    }

    async fn get(
        &self,
        path: &str,
        operation: &'static str,
        image: &str,
    ) -> Result<Response<Incoming>, DockerEngineError> {
        let exchange = async {
            let mut sender = self.open(operation, image).await?;
            let req = Request::get(path)
                .header(hyper::header::HOST, "docker")
                .header(hyper::header::USER_AGENT, "kiln")
                .body(Empty::<Bytes>::new())
                .map_err(|e| self.http(operation, image, e.to_string()))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| self.http(operation, image, e.to_string()))
        };
        tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
            .await
            .map_err(|_| self.timeout(operation, image, RESPONSE_TIMEOUT))?
    }

    /// `resp` if its status is 200; otherwise the engine's error message as an error.
    async fn check_status(
        &self,
        resp: Response<Incoming>,
        operation: &'static str,
        image: &str,
    ) -> Result<Response<Incoming>, DockerEngineError> {
        let status = resp.status();
        if status == StatusCode::OK {
            return Ok(resp);
        }
        let body = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            Limited::new(resp.into_body(), MAX_ERROR_RESPONSE).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        Err(DockerEngineError::Status {
            socket: self.socket.clone(),
            operation,
            image: image.to_string(),
            status: status.as_u16(),
            message: error_message(&body),
        })
    }

    fn http(&self, operation: &'static str, image: &str, message: String) -> DockerEngineError {
        DockerEngineError::Http {
            socket: self.socket.clone(),
            operation,
            image: image.to_string(),
            message,
        }
    }

    fn timeout(&self, operation: &'static str, image: &str, after: Duration) -> DockerEngineError {
        DockerEngineError::Timeout {
            socket: self.socket.clone(),
            operation,
            image: image.to_string(),
            after,
        }
    }

    fn wrong_image(&self, image: &str, found: Vec<String>) -> DockerEngineError {
        DockerEngineError::WrongImage {
            socket: self.socket.clone(),
            image: image.to_string(),
            found,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, DockerEngineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(DockerEngineError::Runtime)
}

/// Forward the frames of `body` to `tx` until the body ends, fails, stalls for
/// [`IDLE_TIMEOUT`] or the receiver goes away.
async fn pump(mut body: Incoming, tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>) {
    loop {
        let frame = tokio::select! {
            _ = tx.closed() => return,
            f = tokio::time::timeout(IDLE_TIMEOUT, body.frame()) => f,
        };
        let chunk = match frame {
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the engine sent nothing for {} s", IDLE_TIMEOUT.as_secs()),
            )),
            Ok(None) => return,
            Ok(Some(Err(e))) => Err(io::Error::other(e)),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => Ok(data),
                // Trailers and empty frames carry nothing of the tar.
                _ => continue,
            },
        };
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// A [`Read`] of the chunks a channel delivers (an error chunk is the read's error; the end of
/// the channel is the end of the stream).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    bytes: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Refuse `r` when the store names a multi-platform index for it: its `docker save` export
/// would hold several images under one name, and the engine would keep only the last.
fn single_platform(store: &Store, r: &Reference) -> Result<(), DockerEngineError> {
    let image = r.canonical().to_string();
    let desc = store
        .lookup(r)?
        .ok_or_else(|| StoreError::NotFound(image.clone()))?;
    if !crate::spec::is_index(&desc.media_type) {
        return Ok(());
    }
    let digest: Digest = desc.digest.parse().map_err(StoreError::from)?;
    let data = store.read_json_blob(&digest, &image)?;
    let index: crate::spec::Index =
        serde_json::from_slice(&data).map_err(|source| StoreError::Json {
            what: format!("index of {image}"),
            source,
        })?;
    let count = index
        .manifests
        .iter()
        .filter(|m| m.digest.parse::<Digest>().is_ok_and(|d| store.has_blob(&d)))
        .count();
    if count > 1 {
        return Err(DockerEngineError::MultiPlatform { image, count });
    }
    Ok(())
}

/// A [`io::Write`] sending what is written as chunks over a channel (blocking while it is full).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    bytes: u64,
    /// Whether the receiver went away (the connection ended) before everything was written.
    closed: bool,
}

impl io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                self.closed = true;
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the engine connection closed before the image was sent",
                )
            })?;
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The request body of a load: the chunks of a channel as data frames, counting the bytes
/// handed to the connection.
struct ChannelStream {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl futures_util::Stream for ChannelStream {
    type Item = io::Result<hyper::body::Frame<Bytes>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|chunk| {
            chunk.map(|c| {
                c.map(|data| {
                    self.sent
                        .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    hyper::body::Frame::data(data)
                })
            })
        })
    }
}

/// Why a load reply is not a success.
#[derive(Debug, PartialEq, Eq)]
enum LoadReplyError {
    /// The engine reported an error (`errorDetail` / `error`).
    Engine(String),
    /// The reply is not a stream of JSON messages.
    Malformed(String),
}

/// The names a `POST /images/load` reply (a stream of JSON messages) reports loaded (`Loaded
/// image: NAME`, or the ID for `Loaded image ID: ID`), or the error it reports.
fn parse_load_reply(body: &[u8]) -> Result<Vec<String>, LoadReplyError> {
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(default)]
        stream: Option<String>,
        #[serde(default, rename = "errorDetail")]
        error_detail: Option<Detail>,
        #[serde(default)]
        error: Option<String>,
    }
    let mut names = Vec::new();
    for msg in serde_json::Deserializer::from_slice(body).into_iter::<Message>() {
        let msg = msg.map_err(|e| {
            LoadReplyError::Malformed(format!(
                "{e}: {}",
                error_message(&body[..body.len().min(512)])
            ))
        })?;
        let detail = msg.error_detail.map(|d| d.message).unwrap_or_default();
        if let Some(error) = msg.error.or((!detail.is_empty()).then_some(detail.clone())) {
            let text = if detail.is_empty() { error } else { detail };
            return Err(LoadReplyError::Engine(error_message(text.as_bytes())));
        }
        for line in msg.stream.as_deref().unwrap_or("").lines() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("Loaded image: ")
                .or_else(|| line.strip_prefix("Loaded image ID: "))
            {
                names.push(name.trim().to_string());
            }
        }
    }
    Ok(names)
}

/// The engine's error message from an error body (`{"message": "..."}`), else the body's text.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EngineError {
        message: String,
    }
    let text = match serde_json::from_slice::<EngineError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect();
    if text.is_empty() {
        "the engine gave no message".into()
    } else {
        text
    }
}

/// `s` with every byte outside `[A-Za-z0-9._~/:@-]` percent-encoded, for a URL path.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._~/:@-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_names_a_unix_socket_or_defaults() {
        let at = |h: Option<&str>| DockerEngine::from_docker_host(h).map(|e| e.socket.clone());
        assert_eq!(at(None).expect("default"), Path::new(DEFAULT_SOCKET));
        assert_eq!(at(Some("")).expect("empty"), Path::new(DEFAULT_SOCKET));
        assert_eq!(
            at(Some("unix:///run/user/1000/docker.sock")).expect("unix"),
            Path::new("/run/user/1000/docker.sock")
        );
        assert_eq!(
            at(Some("unix://relative/docker.sock")).expect("relative"),
            Path::new("relative/docker.sock")
        );
    }

    #[test]
    fn other_docker_hosts_are_refused_clearly() {
        for host in [
            "tcp://127.0.0.1:2375",
            "ssh://user@host",
            "npipe:////./pipe/docker_engine",
            "fd://",
            "unix://",
            "/var/run/docker.sock",
        ] {
            let e = DockerEngine::from_docker_host(Some(host)).expect_err(host);
            let msg = e.to_string();
            assert!(
                msg.contains(host) && msg.contains("only unix sockets"),
                "{host}: {msg}"
            );
        }
    }

    #[test]
    fn error_messages_and_paths_are_tamed() {
        assert_eq!(
            error_message(br#"{"message":"No such image: a/b:c"}"#),
            "No such image: a/b:c"
        );
        assert_eq!(error_message(b"plain\ntext"), "plain text");
        assert_eq!(error_message(b""), "the engine gave no message");
        assert_eq!(error_message(&[b'x'; 5000]).len(), 1024);
        assert_eq!(
            encode_path("docker.io/linuxkit/init:v1"),
            "docker.io/linuxkit/init:v1"
        );
        assert_eq!(encode_path("a?b#c d/x"), "a%3Fb%23c%20d/x");
    }

    #[test]
    fn an_absent_engine_is_a_connect_error_naming_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let engine = DockerEngine::at(&socket);
        let r: Reference = "kiln-test/none:1".parse().expect("reference");
        let e = engine.inspect(&r).expect_err("no engine");
        assert!(matches!(e, DockerEngineError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
    }

    #[test]
    fn load_replies_give_the_names_loaded_or_the_error() {
        let ok = br#"{"stream":"Loaded image: kiln-test/hello:abc\n"}
{"stream":"Loaded image ID: sha256:0123\n"}
"#;
        assert_eq!(
            parse_load_reply(ok),
            Ok(vec!["kiln-test/hello:abc".into(), "sha256:0123".into()])
        );
        // Progress messages carry no names; an empty reply loads nothing.
        let progress = br#"{"status":"Loading layer","progressDetail":{"current":1,"total":2},"id":"x"}{"stream":"Loaded image: a/b:c\n"}"#;
        assert_eq!(parse_load_reply(progress), Ok(vec!["a/b:c".into()]));
        assert_eq!(parse_load_reply(b""), Ok(vec![]));
        let failed = br#"{"stream":"Loaded image: a/b:c\n"}
{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}
"#;
        assert_eq!(
            parse_load_reply(failed),
            Err(LoadReplyError::Engine("unexpected EOF".into()))
        );
        assert_eq!(
            parse_load_reply(br#"{"error":"no space\nleft"}"#),
            Err(LoadReplyError::Engine("no space left".into()))
        );
        assert_eq!(
            parse_load_reply(br#"{"errorDetail":{"message":"detail only"}}"#),
            Err(LoadReplyError::Engine("detail only".into()))
        );
        assert!(matches!(
            parse_load_reply(b"<html>proxy error</html>"),
            Err(LoadReplyError::Malformed(m)) if m.contains("proxy error")
        ));
    }

    #[test]
    fn loading_into_an_absent_engine_names_the_socket_and_stops_the_export() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let socket = dir.path().join("docker.sock");
        let engine = DockerEngine::at(&socket);
        let r: Reference = "kiln-test/none:1".parse().expect("reference");
        // Not in the store: nothing is sent, and the error names the image.
        let e = engine
            .load(&store, std::slice::from_ref(&r))
            .expect_err("not in the store");
        assert!(e.to_string().contains("docker.io/kiln-test/none:1"), "{e}");
        // In the store, but no engine: the export thread stops when the connection fails.
        store_image(&store, &r);
        let e = engine
            .load(&store, std::slice::from_ref(&r))
            .expect_err("no engine");
        assert!(matches!(e, DockerEngineError::Connect { .. }), "{e}");
        assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
    }

    /// Tag a small image (config, no layers) as `r` in `store`.
    fn store_image(store: &Store, r: &Reference) {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = store.put_bytes(config, None, "config").expect("config");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::spec::MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": crate::spec::MEDIA_OCI_CONFIG,
                "digest": config_digest.to_string(),
                "size": config.len(),
            },
            "layers": [],
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest");
        let digest = store
            .put_bytes(&manifest, None, "manifest")
            .expect("manifest");
        let desc = crate::spec::Descriptor::new(
            crate::spec::MEDIA_OCI_MANIFEST,
            &digest,
            manifest.len() as u64,
        );
        store.tag(r, desc).expect("tag");
    }

    /// A one-request engine on `socket`: reads the request with its chunked body, answers 200
    /// with `reply`, and hands back the request's bytes.
    fn fake_engine(socket: &Path, reply: &'static str) -> std::thread::JoinHandle<Vec<u8>> {
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind");
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 64 << 10];
            while !request.ends_with(b"\r\n0\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read request");
                assert!(n > 0, "the request ended before its body did");
                request.extend_from_slice(&buf[..n]);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                reply.len()
            );
            conn.write_all(response.as_bytes()).expect("write response");
            request
        })
    }

    #[test]
    fn load_streams_a_docker_save_tar_and_checks_the_reply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let r: Reference = "kiln-test/hello:1".parse().expect("reference");
        store_image(&store, &r);
        let load = |name: &str, reply: &'static str| {
            let socket = dir.path().join(name);
            let engine = fake_engine(&socket, reply);
            let result = DockerEngine::at(&socket).load(&store, std::slice::from_ref(&r));
            (result, engine.join().expect("fake engine"))
        };

        let (loaded, request) = load(
            "ok.sock",
            "{\"stream\":\"Loaded image: kiln-test/hello:1\\n\"}\r\n",
        );
        let loaded = loaded.expect("load");
        assert_eq!(loaded.names, ["kiln-test/hello:1"]);
        let head = String::from_utf8_lossy(&request[..request.len().min(512)]).into_owned();
        assert!(
            head.starts_with("POST /images/load?quiet=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("content-type: application/x-tar"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        let text = String::from_utf8_lossy(&request);
        assert!(
            text.contains("manifest.json") && text.contains("docker.io/kiln-test/hello:1"),
            "the body is not a docker save tar of the image"
        );
        assert!(loaded.bytes > 1024 && request.len() as u64 > loaded.bytes);

        let (failed, _) = load(
            "error.sock",
            "{\"errorDetail\":{\"message\":\"open /var/lib/docker/tmp: no space left on device\"},\"error\":\"no space\"}\n",
        );
        let e = failed.expect_err("the engine reported an error");
        assert!(matches!(e, DockerEngineError::Rejected { .. }), "{e}");
        assert!(e.to_string().contains("no space left on device"), "{e}");
        assert!(e.to_string().contains("docker.io/kiln-test/hello:1"), "{e}");

        let (other, _) = load(
            "other.sock",
            "{\"stream\":\"Loaded image: kiln-test/other:1\\n\"}\n",
        );
        let e = other.expect_err("another name was loaded");
        assert!(matches!(e, DockerEngineError::BadResponse { .. }), "{e}");
        assert!(e.to_string().contains("kiln-test/other:1"), "{e}");
    }

    #[test]
    fn images_pinned_by_digest_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("store");
        let r: Reference = format!("a/b@sha256:{}", "0".repeat(64))
            .parse()
            .expect("reference");
        let e = DockerEngine::at(dir.path().join("none.sock"))
            .import(&store, &r)
            .expect_err("pinned");
        assert!(matches!(e, DockerEngineError::PinnedByDigest { .. }), "{e}");
    }
}
