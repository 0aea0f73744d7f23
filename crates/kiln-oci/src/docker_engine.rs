//! Images from a running Docker engine (`kiln build --docker`), as LinuxKit's `build --docker`
//! takes them: through the engine's HTTP API on its unix socket, never through its files.
//!
//! [`DockerEngine::inspect`] asks whether the engine has an image (`GET /images/{name}/json`);
//! [`DockerEngine::import`] streams the image out of the engine (`GET /images/{name}/get`, what
//! `docker save` writes) into the [`Store`] through [`archive::import_reader`]: the tar is never
//! held in memory, and its blobs are hashed as they are stored. Everything the engine sends is
//! treated as untrusted input: JSON responses and error messages are bounded in size, and a
//! stalled engine times out.

use crate::archive::{self, ArchiveError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::{Store, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::{self, Read};
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

    /// Send `GET path` and wait for the response headers.
    async fn get(
        &self,
        path: &str,
        operation: &'static str,
        image: &str,
    ) -> Result<Response<Incoming>, DockerEngineError> {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|source| DockerEngineError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.http(operation, image, e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("docker engine connection: {e}");
                }
            });
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
