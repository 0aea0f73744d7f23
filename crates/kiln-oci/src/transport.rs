//! Bounded HTTP for the registry client: every response a registry sends is read with a cap on
//! its size, an overall deadline and a minimum transfer rate, so a hostile or broken registry
//! costs bounded memory, disk and time.
//!
//! This module owns the requests to one repository of one registry ([`Session`]): sending them
//! with the credentials the registry asks for (anonymous, a bearer token from the registry's
//! token service for pulling or pushing, or HTTP basic), reading bodies through a [`Pace`],
//! sending request bodies ([`Payload`]: a manifest, or a blob streamed from a file) at a
//! minimum rate within a deadline that grows with their size, and telling transient failures
//! (network errors, 5xx, 429, stalls) from final ones (a wrong size or digest, a refusal).
//! It also holds the parsers of what registries send besides manifests: `WWW-Authenticate`
//! challenges, token responses and error bodies. It does not decide what to fetch: that is
//! [`crate::registry`].

use crate::digest::Digest;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Largest token response kiln reads (Docker Hub's are a few kilobytes).
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// Largest error body kiln reads (only for its message).
const MAX_ERROR_BODY: u64 = 16 << 10;
/// Bytes of a request body kiln hands to the connection at a time.
const SEND_CHUNK: usize = 64 << 10;
/// Most bytes of a request body the connection may still hold once kiln has handed it the
/// last one (a kernel send buffer, 4 MiB at most by Linux's defaults, and the HTTP client's):
/// the registry is given the time to receive them at the minimum rate before it must answer.
const SEND_BUFFERS: u64 = 8 << 20;

/// How long a registry may take and how slowly it may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Overall deadline of one request, from sending it to the last byte of its body.
    pub request_timeout: Duration,
    /// The window of the minimum transfer rate; also the longest wait for a connection and for
    /// the response headers.
    pub stall_window: Duration,
    /// Bytes that must arrive in every window of a body (0: no minimum rate).
    pub min_bytes_per_window: u64,
}

impl Default for TransferLimits {
    /// One hour per request, and at least 16 KiB in every 30 seconds.
    fn default() -> Self {
        TransferLimits {
            request_timeout: Duration::from_secs(3600),
            stall_window: Duration::from_secs(30),
            min_bytes_per_window: 16 << 10,
        }
    }
}

impl TransferLimits {
    /// Parse a minimum rate written `BYTES/SECONDS` (for example `16384/30`): at least BYTES
    /// must arrive in every window of SECONDS.
    pub fn parse_min_rate(s: &str) -> Option<(u64, Duration)> {
        let (bytes, secs) = s.split_once('/')?;
        Some((bytes.trim().parse().ok()?, parse_seconds(secs)?))
    }
}

/// Parse a positive number of seconds (decimals allowed), as `30` or `0.5`.
pub fn parse_seconds(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    if v > 0.0 {
        Duration::try_from_secs_f64(v).ok()
    } else {
        None
    }
}

/// Why a request to a registry failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The connection failed or broke (transient).
    #[error("{url}: {message}")]
    Network {
        /// The URL asked for.
        url: String,
        /// The transport's message.
        message: String,
    },
    /// No response headers arrived in time (transient).
    #[error("{url}: no response within {}; the registry is not answering", secs(*after))]
    NoResponse {
        /// The URL asked for.
        url: String,
        /// How long kiln waited.
        after: Duration,
    },
    /// The body arrived more slowly than the minimum rate (transient).
    #[error(
        "{url}: the transfer stalled: {got} bytes in {}, fewer than the {min} required; the registry is too slow or not sending",
        secs(*window)
    )]
    Stalled {
        /// The URL asked for.
        url: String,
        /// Bytes received in the last window.
        got: u64,
        /// The window.
        window: Duration,
        /// Bytes required per window.
        min: u64,
    },
    /// The registry took a request body more slowly than the minimum rate (transient).
    #[error(
        "{url}: the upload stalled: the registry took {took} bytes in {}, fewer than the {min} required; the registry is too slow or not reading",
        secs(*window)
    )]
    UploadStalled {
        /// The URL sent to.
        url: String,
        /// Bytes the registry took in the last window.
        took: u64,
        /// The window.
        window: Duration,
        /// Bytes required per window.
        min: u64,
    },
    /// The request did not finish before its deadline.
    #[error("{url}: the request did not finish within {}", secs(*after))]
    Deadline {
        /// The URL asked for.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The registry answered with an error status (transient for 5xx and 429).
    #[error("{url}: the registry answered {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message, if it gave one.
        message: Option<String>,
    },
    /// A body is larger than kiln accepts for its kind.
    #[error("{what} is larger than the {limit} bytes kiln accepts{}", announced.map(|a| format!(" (the registry announces {a} bytes)")).unwrap_or_default())]
    TooLarge {
        /// What was being fetched.
        what: String,
        /// The limit.
        limit: u64,
        /// The size announced (by a descriptor or Content-Length), if any.
        announced: Option<u64>,
    },
    /// A body's size differs from the size its descriptor gives.
    #[error(
        "{what}: {got}, where its descriptor gives {expected} bytes; the registry or the manifest is wrong"
    )]
    SizeMismatch {
        /// What was being fetched.
        what: String,
        /// The size the descriptor gives.
        expected: u64,
        /// What arrived, as a phrase ("the registry sent 10 bytes").
        got: String,
    },
    /// Content did not hash to its digest.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the registry sent other content"
    )]
    DigestMismatch {
        /// What was being fetched.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Authentication failed.
    #[error("{0}")]
    Auth(String),
    /// A response that makes no sense (a bad header, JSON, manifest).
    #[error("{what}: {why}")]
    Invalid {
        /// What was being read.
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// Writing to the store failed.
    #[error("{0}")]
    Store(String),
}

impl TransferError {
    /// Whether trying again may succeed: network errors, stalls, 5xx and 429. A wrong size or
    /// digest, a refusal or a missed overall deadline is final.
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Network { .. }
            | TransferError::NoResponse { .. }
            | TransferError::Stalled { .. }
            | TransferError::UploadStalled { .. } => true,
            TransferError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A duration as seconds, to a tenth ("1s", "2.5s").
fn secs(d: Duration) -> String {
    let tenths = (d.as_millis() + 50) / 100;
    if tenths.is_multiple_of(10) {
        format!("{}s", tenths / 10)
    } else {
        format!("{}.{}s", tenths / 10, tenths % 10)
    }
}

/// Most JSON values (numbers, strings, arrays, objects...) kiln accepts in one manifest,
/// index or config: parsing is then bounded in memory, whatever the document holds.
pub const MAX_JSON_VALUES: u64 = 200_000;

/// Check that `data` is one JSON document of at most `max` values (and at most serde_json's
/// nesting depth), without building it: parsing it afterwards costs bounded memory.
pub fn check_json_size(data: &[u8], max: u64) -> Result<(), String> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;

    #[derive(Clone, Copy)]
    struct Count<'a>(&'a Cell<u64>, u64);
    impl Count<'_> {
        fn tick<E: serde::de::Error>(self) -> Result<(), E> {
            let left = self.0.get();
            if left == 0 {
                return Err(E::custom(format!(
                    "it holds more than {} JSON values, more than kiln accepts",
                    self.1
                )));
            }
            self.0.set(left - 1);
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
            self.tick()
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
            self.tick()
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
            self.tick()
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
            self.tick()
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
            self.tick()
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.tick()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.tick()?;
            while seq.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.tick()?;
            while map.next_key::<IgnoredAny>()?.is_some() {
                self.tick()?;
                map.next_value_seed(self)?;
            }
            Ok(())
        }
    }
    let left = Cell::new(max);
    let mut de = serde_json::Deserializer::from_slice(data);
    Count(&left, max)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| e.to_string())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

fn network(url: &str, e: reqwest::Error) -> TransferError {
    TransferError::Network {
        url: url.to_string(),
        message: error_chain(&e.without_url()),
    }
}

/// Paces one request: fails it when its deadline passes or when fewer than the minimum bytes
/// arrive in a window. A window is time spent waiting for the registry: time kiln spends
/// writing what arrived does not count against the registry.
pub struct Pace {
    url: String,
    limits: TransferLimits,
    deadline: Instant,
    waited: Duration,
    got: u64,
}

impl Pace {
    /// Start pacing a request to `url` now.
    pub fn new(url: &str, limits: TransferLimits) -> Self {
        Self::with_timeout(url, limits, limits.request_timeout)
    }

    /// Start pacing a request to `url` now, with a deadline `timeout` from now.
    fn with_timeout(url: &str, limits: TransferLimits, timeout: Duration) -> Self {
        Pace {
            url: url.to_string(),
            limits,
            deadline: after(timeout),
            waited: Duration::ZERO,
            got: 0,
        }
    }

    /// Start pacing a request to `url` that sends a body of `len` bytes: its deadline is the
    /// request timeout plus the time `len` bytes take at the minimum rate.
    fn for_upload(url: &str, limits: TransferLimits, len: u64) -> Self {
        Self::with_timeout(
            url,
            limits,
            limits
                .request_timeout
                .saturating_add(at_min_rate(&limits, len)),
        )
    }

    /// Wait for the response to a request whose body of `len` bytes is being sent, `progress`
    /// counting the bytes the connection has taken: fails when the connection takes fewer than
    /// the minimum bytes in a window, when no response comes within one window (plus the time
    /// the bytes the connection may still hold take at the minimum rate) after it took the
    /// last byte, and at the deadline.
    async fn sending<F: Future>(
        &mut self,
        fut: F,
        progress: &Progress,
        len: u64,
    ) -> Result<F::Output, TransferError> {
        let window = self.limits.stall_window;
        let min = self.limits.min_bytes_per_window;
        let answer_by = |done: Instant| {
            // Without a minimum rate, bytes the connection still holds may take any time.
            if min == 0 && len > 0 {
                return self.deadline;
            }
            let drain = at_min_rate(&self.limits, len.min(SEND_BUFFERS));
            done.checked_add(window.saturating_add(drain))
                .map_or(self.deadline, |t| t.min(self.deadline))
        };
        let mut fut = std::pin::pin!(fut);
        let mut sent_before = 0u64;
        loop {
            let now = Instant::now();
            let mut wake = now
                .checked_add(window)
                .map_or(self.deadline, |t| t.min(self.deadline));
            if let Some(done) = progress.done() {
                wake = wake.min(answer_by(done));
            }
            let out = tokio::time::timeout_at(wake, &mut fut).await;
            let now = Instant::now();
            match out {
                Ok(v) => return Ok(v),
                Err(_) if now >= self.deadline => return Err(self.deadline_error()),
                Err(_) => {}
            }
            if let Some(done) = progress.done() {
                if now >= answer_by(done) {
                    return Err(TransferError::NoResponse {
                        url: self.url.clone(),
                        after: now - done,
                    });
                }
                continue;
            }
            let sent = progress.sent();
            let took = sent.saturating_sub(sent_before);
            if took < min {
                return Err(TransferError::UploadStalled {
                    url: self.url.clone(),
                    took,
                    window,
                    min,
                });
            }
            sent_before = sent;
        }
    }

    fn deadline_error(&self) -> TransferError {
        TransferError::Deadline {
            url: self.url.clone(),
            after: self.limits.request_timeout,
        }
    }

    /// Wait for the response headers: at most one window, and not past the deadline.
    pub async fn headers<F: Future>(&mut self, fut: F) -> Result<F::Output, TransferError> {
        let wake = (Instant::now() + self.limits.stall_window).min(self.deadline);
        match tokio::time::timeout_at(wake, fut).await {
            Ok(v) => Ok(v),
            Err(_) if Instant::now() >= self.deadline => Err(self.deadline_error()),
            Err(_) => Err(TransferError::NoResponse {
                url: self.url.clone(),
                after: self.limits.stall_window,
            }),
        }
    }

    /// At the end of a window: fail if too little arrived, else start the next one.
    fn end_window(&mut self) -> Result<(), TransferError> {
        if self.got < self.limits.min_bytes_per_window {
            return Err(TransferError::Stalled {
                url: self.url.clone(),
                got: self.got,
                window: self.limits.stall_window,
                min: self.limits.min_bytes_per_window,
            });
        }
        self.waited = Duration::ZERO;
        self.got = 0;
        Ok(())
    }

    /// Wait for the next piece of a body, failing on a stall or at the deadline.
    pub async fn body<F: Future>(&mut self, fut: F) -> Result<F::Output, TransferError> {
        let mut fut = std::pin::pin!(fut);
        loop {
            if self.waited >= self.limits.stall_window {
                self.end_window()?;
            }
            let start = Instant::now();
            let wake = (start + (self.limits.stall_window - self.waited)).min(self.deadline);
            let out = tokio::time::timeout_at(wake, &mut fut).await;
            let now = Instant::now();
            self.waited += now - start;
            match out {
                Ok(v) => return Ok(v),
                Err(_) if now >= self.deadline => return Err(self.deadline_error()),
                Err(_) => self.waited = self.waited.max(self.limits.stall_window),
            }
        }
    }

    /// Count `n` bytes received.
    pub fn record(&mut self, n: usize) {
        self.got = self.got.saturating_add(n as u64);
    }
}

/// The instant `d` from now, or a century from now when that is later (no overflow).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(100 * 365 * 86400)))
        .unwrap_or(now)
}

/// How long `len` bytes take at the minimum rate of `limits` (zero without a minimum rate).
fn at_min_rate(limits: &TransferLimits, len: u64) -> Duration {
    if limits.min_bytes_per_window == 0 {
        return Duration::ZERO;
    }
    let windows = len as f64 / limits.min_bytes_per_window as f64;
    Duration::try_from_secs_f64(limits.stall_window.as_secs_f64() * windows)
        .unwrap_or(Duration::MAX)
}

/// How much of a request body the connection has taken, and when it took the last byte.
#[derive(Debug, Default)]
struct Progress {
    sent: AtomicU64,
    done: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    /// Bytes the connection has taken.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// When the connection took the last byte of the body, if it has.
    fn done(&self) -> Option<Instant> {
        self.done.lock().ok().and_then(|d| *d)
    }

    fn record(&self, n: u64, finished: bool) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        if finished && let Ok(mut d) = self.done.lock() {
            d.get_or_insert_with(Instant::now);
        }
    }
}

/// A request body's chunks.
type PayloadStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;

/// The body of a request, made afresh each time the request is sent (again after an
/// authentication challenge, or by a retry).
#[derive(Debug, Clone)]
pub enum Payload {
    /// No body.
    Empty,
    /// Bytes in memory (a manifest).
    Bytes(Bytes),
    /// The first `len` bytes of the file at `path` (a blob of the store), read as the
    /// connection takes them.
    File {
        /// The file.
        path: PathBuf,
        /// Bytes to send.
        len: u64,
    },
}

impl Payload {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(b) => b.len() as u64,
            Payload::File { len, .. } => *len,
        }
    }

    /// Whether there is no body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body, counting what the connection takes in `progress`.
    fn body(&self, progress: Arc<Progress>) -> Result<reqwest::Body, TransferError> {
        Ok(reqwest::Body::wrap_stream(self.stream(progress)?))
    }

    /// The body as a stream of chunks, counting what is taken in `progress`.
    fn stream(&self, progress: Arc<Progress>) -> Result<PayloadStream, TransferError> {
        match self {
            Payload::Empty => Ok(Box::pin(futures_util::stream::empty())),
            Payload::Bytes(b) => {
                let stream = futures_util::stream::unfold(b.clone(), move |mut left| {
                    let progress = progress.clone();
                    async move {
                        if left.is_empty() {
                            return None;
                        }
                        let chunk = left.split_to(left.len().min(SEND_CHUNK));
                        progress.record(chunk.len() as u64, left.is_empty());
                        Some((Ok::<_, std::io::Error>(chunk), left))
                    }
                });
                Ok(Box::pin(stream))
            }
            Payload::File { path, len } => {
                let file = std::fs::File::open(path).map_err(|e| {
                    TransferError::Store(format!("cannot read {}: {e}", path.display()))
                })?;
                let file = tokio::fs::File::from_std(file);
                let path = path.clone();
                let stream =
                    futures_util::stream::try_unfold((file, *len), move |(mut file, left)| {
                        let (progress, path) = (progress.clone(), path.clone());
                        async move {
                            use tokio::io::AsyncReadExt as _;
                            if left == 0 {
                                return Ok(None);
                            }
                            let mut buf =
                                vec![
                                    0u8;
                                    usize::try_from(left).unwrap_or(SEND_CHUNK).min(SEND_CHUNK)
                                ];
                            let n = file.read(&mut buf).await.map_err(|e| {
                                std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                            })?;
                            if n == 0 {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    format!("{} ended {left} bytes early", path.display()),
                                ));
                            }
                            buf.truncate(n);
                            let left = left - n as u64;
                            progress.record(n as u64, left == 0);
                            Ok(Some((Bytes::from(buf), (file, left))))
                        }
                    });
                Ok(Box::pin(stream))
            }
        }
    }
}

/// The URL to PUT an upload's content to: the `Location` the upload's POST answered with
/// (absolute, or relative to `base`, the URL that answered), with the blob's `digest` added to
/// its query.
pub fn upload_url(base: &str, location: &str, digest: &Digest) -> Result<String, String> {
    let shown: String = location.chars().take(200).collect();
    let base = reqwest::Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    let mut url = base
        .join(location)
        .map_err(|e| format!("the upload location `{shown}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "the upload location `{shown}` is not an http or https URL"
        ));
    }
    url.set_fragment(None);
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    Ok(url.into())
}

/// A response body read through a [`Pace`].
pub struct Body<'a> {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send + 'a>>,
    pace: Pace,
    /// Bytes received so far.
    pub received: u64,
}

impl<'a> Body<'a> {
    /// Read `stream` (a body's chunks) under `pace`.
    pub fn new<S, E>(stream: S, pace: Pace) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'a,
        E: std::error::Error,
    {
        Body {
            stream: Box::pin(stream.map(|r| r.map_err(|e| error_chain(&e)))),
            pace,
            received: 0,
        }
    }

    /// The next chunk, or `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TransferError> {
        match self.pace.body(self.stream.next()).await? {
            None => Ok(None),
            Some(Ok(chunk)) => {
                self.pace.record(chunk.len());
                self.received = self.received.saturating_add(chunk.len() as u64);
                Ok(Some(chunk))
            }
            Some(Err(message)) => Err(TransferError::Network {
                url: self.pace.url.clone(),
                message,
            }),
        }
    }

    /// The whole body, failing as soon as it exceeds `limit` bytes (`what` names it).
    pub async fn read_capped(&mut self, limit: u64, what: &str) -> Result<Vec<u8>, TransferError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next().await? {
            if self.received > limit {
                return Err(TransferError::TooLarge {
                    what: what.to_string(),
                    limit,
                    announced: None,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// A registry's authentication challenge (one of a `WWW-Authenticate` header's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercase (`bearer`, `basic`).
    pub scheme: String,
    /// Its parameters, names lowercase (`realm`, `service`, `scope`).
    pub params: BTreeMap<String, String>,
}

fn skip_from(b: &[u8], j: &mut usize) {
    while *j < b.len() && (b[*j] == b' ' || b[*j] == b'\t') {
        *j += 1;
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse a `WWW-Authenticate` header value into its challenges (RFC 7235), as
/// `Bearer realm="https://auth.example/token",service="registry.example"`. Values that do not
/// follow the grammar end the parse; what was read before is kept.
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip = |i: &mut usize, set: &[u8]| {
        while *i < b.len() && set.contains(&b[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        (*i > start).then(|| value[start..*i].to_string())
    };
    loop {
        skip(&mut i, b" \t,");
        if i >= b.len() {
            break;
        }
        let Some(word) = token(&mut i) else { break };
        let after_word = i;
        skip(&mut i, b" \t");
        let is_param = !out.is_empty()
            && i < b.len()
            && b[i] == b'='
            && b.get(i + 1).is_none_or(|c| *c != b'=');
        if !is_param {
            // A new challenge: the scheme, maybe followed by a token68 (unused, skipped).
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            i = after_word;
            skip(&mut i, b" \t");
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b"-._~+/".contains(&b[i])) {
                i += 1;
            }
            let mut j = i;
            while j < b.len() && b[j] == b'=' {
                j += 1;
            }
            let padded = j > i;
            skip_from(b, &mut j);
            let ends = j >= b.len() || b[j] == b',';
            i = if i > start && ends && (padded || b.get(i).is_none_or(|c| *c != b'=')) {
                j
            } else {
                start
            };
            continue;
        }
        i += 1;
        skip(&mut i, b" \t");
        let v = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut s = Vec::new();
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        s.push(b[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    c => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                break;
            }
            String::from_utf8_lossy(&s).into_owned()
        } else {
            token(&mut i).unwrap_or_default()
        };
        if let Some(c) = out.last_mut() {
            c.params.insert(word.to_ascii_lowercase(), v);
        }
        skip(&mut i, b" \t");
        if i < b.len() && b[i] != b',' {
            break;
        }
    }
    out
}

/// The token of a token service's JSON response (`token`, else `access_token`).
pub fn parse_token_response(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the token response is not valid: {e}"))?;
    let token = r
        .token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))
        .ok_or("the token response holds no token")?;
    if token.len() > 64 << 10 || !token.bytes().all(|c| c.is_ascii_graphic()) {
        return Err("the token response holds a token that is not printable ASCII".into());
    }
    Ok(token)
}

/// The message of a registry's error body (`{"errors":[{"code":..,"message":..}]}`), if any.
pub fn parse_error_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = e
        .errors
        .iter()
        .take(4)
        .map(|e| {
            let s = match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{} ({})", e.message, e.code),
                (true, _) => e.message.clone(),
                (false, true) => e.code.clone(),
            };
            s.chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Check PEM text of certificate authorities before a registry is asked anything: the number
/// of certificates, or why it is unusable (no CERTIFICATE block at all — reqwest would skip text
/// or a key without a word — or a block that is no certificate).
pub fn check_ca_certificates(pem: &[u8]) -> Result<usize, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("not PEM certificates: {}", error_chain(&e)))?;
    if certs.is_empty() {
        return Err(
            "no PEM certificate in it (give a certificate authority's certificate, a \
                    -----BEGIN CERTIFICATE----- block)"
                .into(),
        );
    }
    let count = certs.len();
    certs
        .into_iter()
        .fold(reqwest::Client::builder(), |b, c| b.add_root_certificate(c))
        .build()
        .map_err(|e| {
            format!(
                "a PEM CERTIFICATE block that is no certificate: {}",
                error_chain(&e)
            )
        })?;
    Ok(count)
}

/// Credentials for HTTP basic authentication and token requests.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or identity token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// What a session does in its repository, and so the scope it asks a token service for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Read manifests and blobs (`repository:NAME:pull`).
    #[default]
    Pull,
    /// Read and write them (`repository:NAME:pull,push`).
    Push,
}

impl Access {
    /// The actions of the token scope.
    fn actions(self) -> &'static str {
        match self {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        }
    }
}

/// Requests to one repository of one registry, authenticated as the registry asks.
pub struct Session {
    http: reqwest::Client,
    base: String,
    origin: reqwest::Url,
    repository: String,
    access: Access,
    credentials: Option<Credentials>,
    authorization: tokio::sync::Mutex<Option<String>>,
    limits: TransferLimits,
}

/// A response whose body is still to be read.
pub struct Response {
    /// The URL that answered.
    pub url: String,
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// Content-Length, when the registry gave one.
    pub content_length: Option<u64>,
    /// The body.
    pub body: Body<'static>,
}

impl Response {
    /// The error this response stands for when it is not the one expected: its status and the
    /// registry's message, read from at most 16 KiB of its body under the request's deadline
    /// and minimum rate (a body that does not arrive is no loss: the status stays).
    pub async fn into_error(self) -> TransferError {
        let mut body = self.body;
        let message = match body.read_capped(MAX_ERROR_BODY, "error body").await {
            Ok(b) => parse_error_body(&b),
            Err(_) => None,
        };
        TransferError::Status {
            url: self.url,
            status: self.status,
            message,
        }
    }
}

impl Session {
    /// Requests to `repository` at `host`, over plain HTTP when `http`, for pulling (see
    /// [`Session::with_access`]).
    pub fn new(
        host: &str,
        http: bool,
        repository: &str,
        credentials: Option<Credentials>,
        limits: TransferLimits,
        ca_certs: &[Vec<u8>],
    ) -> Result<Session, TransferError> {
        let mut builder = reqwest::Client::builder();
        for pem in ca_certs {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| TransferError::Invalid {
                    what: "a certificate file".into(),
                    why: format!("not PEM certificates: {}", error_chain(&e)),
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .connect_timeout(limits.stall_window)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| TransferError::Network {
                url: host.to_string(),
                message: error_chain(&e),
            })?;
        let host = if host == "docker.io" || host == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let base = format!(
            "{}://{host}/v2/{repository}",
            if http { "http" } else { "https" }
        );
        let origin = reqwest::Url::parse(&base).map_err(|e| TransferError::Invalid {
            what: format!("registry {host}"),
            why: format!("`{base}` is not a URL: {e}"),
        })?;
        Ok(Session {
            http: client,
            base,
            origin,
            repository: repository.to_string(),
            access: Access::Pull,
            credentials,
            authorization: tokio::sync::Mutex::new(None),
            limits,
        })
    }

    /// The same session, asking the token service for `access` to the repository.
    pub fn with_access(mut self, access: Access) -> Session {
        self.access = access;
        self
    }

    /// The URL of `kind` (`manifests` or `blobs`) `reference` in the repository.
    pub fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/{kind}/{reference}", self.base)
    }

    /// Whether `url` is at the registry itself (same scheme, host and port): only there are
    /// credentials sent.
    fn is_ours(&self, url: &str) -> bool {
        reqwest::Url::parse(url).is_ok_and(|u| {
            u.scheme() == self.origin.scheme()
                && u.host_str() == self.origin.host_str()
                && u.port_or_known_default() == self.origin.port_or_known_default()
        })
    }

    async fn send(
        &self,
        method: &reqwest::Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, reqwest::header::HeaderValue)],
        payload: &Payload,
        authorization: Option<&str>,
    ) -> Result<Response, TransferError> {
        let len = payload.len();
        let mut pace = Pace::for_upload(url, self.limits, len);
        let mut req = self.http.request(method.clone(), url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let sent = if *method == reqwest::Method::GET || *method == reqwest::Method::HEAD {
            pace.headers(req.send()).await?
        } else {
            let progress = Arc::new(Progress::default());
            if len == 0 {
                progress.record(0, true);
            }
            let req = req
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(payload.body(progress.clone())?);
            pace.sending(req.send(), &progress, len).await?
        };
        let resp = sent.map_err(|e| network(url, e))?;
        Ok(Response {
            url: resp.url().to_string(),
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            content_length: resp.content_length(),
            body: Body::new(resp.bytes_stream(), pace),
        })
    }

    /// Send `method` to `url` with `headers` and `payload` (a body of `len` bytes is given
    /// the request timeout plus the time it takes at the minimum rate, and must leave at the
    /// minimum rate), authenticating when the registry asks to (once). Credentials go only to
    /// the registry itself, not to a URL elsewhere (such as an upload location on another
    /// host). Any status but a 401 after authenticating is the caller's to judge.
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, reqwest::header::HeaderValue)],
        payload: &Payload,
    ) -> Result<Response, TransferError> {
        let ours = self.is_ours(url);
        let current = if ours {
            self.authorization.lock().await.clone()
        } else {
            None
        };
        let mut resp = self
            .send(&method, url, headers, payload, current.as_deref())
            .await?;
        if resp.status == 401 && ours {
            let challenges: Vec<Challenge> = resp
                .headers
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_www_authenticate)
                .collect();
            drop(resp);
            let auth = self.authenticate(&challenges).await?;
            *self.authorization.lock().await = Some(auth.clone());
            resp = self
                .send(&method, url, headers, payload, Some(&auth))
                .await?;
            if resp.status == 401 {
                return Err(TransferError::Auth(format!(
                    "{url}: the registry refused the credentials{}",
                    self.credentials
                        .as_ref()
                        .map(|c| format!(" of {}", c.username))
                        .unwrap_or_else(|| "; log in with `docker login` or add credentials to ~/.docker/config.json".into())
                )));
            }
        }
        Ok(resp)
    }

    /// GET `url`, authenticating when the registry asks to (once); a response other than 200
    /// is an error carrying the registry's message.
    pub async fn get(&self, url: &str, accept: &[&str]) -> Result<Response, TransferError> {
        let mut headers = Vec::new();
        if !accept.is_empty() {
            let value =
                reqwest::header::HeaderValue::from_str(&accept.join(", ")).map_err(|e| {
                    TransferError::Invalid {
                        what: format!("{url}: Accept"),
                        why: e.to_string(),
                    }
                })?;
            headers.push((reqwest::header::ACCEPT, value));
        }
        let resp = self
            .request(reqwest::Method::GET, url, &headers, &Payload::Empty)
            .await?;
        if resp.status != 200 {
            return Err(resp.into_error().await);
        }
        Ok(resp)
    }

    async fn authenticate(&self, challenges: &[Challenge]) -> Result<String, TransferError> {
        use base64::Engine as _;
        let basic = || {
            self.credentials.as_ref().map(|c| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{}:{}", c.username, c.password))
                )
            })
        };
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer
                .params
                .get("realm")
                .ok_or_else(|| TransferError::Invalid {
                    what: format!("{}: WWW-Authenticate", self.base),
                    why: "the bearer challenge names no realm".into(),
                })?;
            let mut url = reqwest::Url::parse(realm).map_err(|e| TransferError::Invalid {
                what: format!("{}: WWW-Authenticate", self.base),
                why: format!("realm `{realm}` is not a URL: {e}"),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(TransferError::Invalid {
                    what: format!("{}: WWW-Authenticate", self.base),
                    why: format!("realm `{realm}` is not an http or https URL"),
                });
            }
            {
                let mut q = url.query_pairs_mut();
                if let Some(service) = bearer.params.get("service") {
                    q.append_pair("service", service);
                }
                q.append_pair(
                    "scope",
                    &format!("repository:{}:{}", self.repository, self.access.actions()),
                );
            }
            let token_url = url.to_string();
            let mut last = None;
            for attempt in 1..=3u32 {
                match self.fetch_token(&token_url, basic().as_deref()).await {
                    Ok(t) => return Ok(format!("Bearer {t}")),
                    Err(e) if e.is_transient() && attempt < 3 => {
                        tracing::warn!("token request: attempt {attempt} failed: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            return Err(last.unwrap_or_else(|| TransferError::Auth("token request failed".into())));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return basic().ok_or_else(|| {
                TransferError::Auth(format!(
                    "{}: the registry asks for a user name and password; log in with `docker login` or add credentials to ~/.docker/config.json",
                    self.base
                ))
            });
        }
        if challenges.is_empty() {
            return Err(TransferError::Auth(format!(
                "{}: the registry answered 401 without saying how to authenticate (no WWW-Authenticate challenge)",
                self.base
            )));
        }
        Err(TransferError::Auth(format!(
            "{}: the registry asks for authentication kiln does not know ({}); kiln supports bearer tokens and basic authentication",
            self.base,
            challenges
                .iter()
                .map(|c| c.scheme.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    async fn fetch_token(&self, url: &str, basic: Option<&str>) -> Result<String, TransferError> {
        let accept = (
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let resp = self
            .send(
                &reqwest::Method::GET,
                url,
                &[accept],
                &Payload::Empty,
                basic,
            )
            .await?;
        if resp.status != 200 {
            let status = resp.into_error().await;
            if status.is_transient() {
                return Err(status);
            }
            return Err(TransferError::Auth(format!(
                "the token service refused: {status}; check the credentials for this registry"
            )));
        }
        if let Some(n) = resp.content_length.filter(|n| *n > MAX_TOKEN_RESPONSE) {
            return Err(TransferError::TooLarge {
                what: format!("token response of {url}"),
                limit: MAX_TOKEN_RESPONSE,
                announced: Some(n),
            });
        }
        let mut body = resp.body;
        let data = body
            .read_capped(MAX_TOKEN_RESPONSE, &format!("token response of {url}"))
            .await?;
        parse_token_response(&data).map_err(|why| TransferError::Invalid {
            what: url.to_string(),
            why,
        })
    }

    /// GET a JSON document (manifest or index) of at most `limit` bytes, checked against
    /// `digest` and `size` when they are known (else against the registry's
    /// Docker-Content-Digest header, if it sends one). The size is checked before reading
    /// (from `size` and Content-Length) and while reading.
    pub async fn get_json(
        &self,
        url: &str,
        accept: &[&str],
        limit: u64,
        digest: Option<&Digest>,
        size: Option<u64>,
        what: &str,
    ) -> Result<(Vec<u8>, Digest), TransferError> {
        if let Some(size) = size.filter(|s| *s > limit) {
            return Err(TransferError::TooLarge {
                what: what.into(),
                limit,
                announced: Some(size),
            });
        }
        let mut resp = self.get(url, accept).await?;
        if let Some(n) = resp.content_length {
            check_announced(n, limit, size, what)?;
        }
        let cap = size.unwrap_or(limit);
        let data = match resp.body.read_capped(cap, what).await {
            Err(TransferError::TooLarge { .. }) if size.is_some() => {
                return Err(TransferError::SizeMismatch {
                    what: what.into(),
                    expected: cap,
                    got: format!("the registry sent more than {cap} bytes"),
                });
            }
            other => other?,
        };
        if let Some(size) = size
            && data.len() as u64 != size
        {
            return Err(TransferError::SizeMismatch {
                what: what.into(),
                expected: size,
                got: format!("the registry sent {} bytes", data.len()),
            });
        }
        let actual = Digest::of(&data);
        let header = resp
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(expected) = digest.or(header.as_ref()) {
            check_digest(expected, &actual, what)?;
        }
        Ok((data, actual))
    }
}

/// Check a Content-Length against a limit and the descriptor's size, before reading.
pub fn check_announced(
    announced: u64,
    limit: u64,
    expected: Option<u64>,
    what: &str,
) -> Result<(), TransferError> {
    if let Some(size) = expected
        && announced != size
    {
        return Err(TransferError::SizeMismatch {
            what: what.into(),
            expected: size,
            got: format!("the registry announces {announced} bytes (Content-Length)"),
        });
    }
    if announced > limit {
        return Err(TransferError::TooLarge {
            what: what.into(),
            limit,
            announced: Some(announced),
        });
    }
    Ok(())
}

/// Fail with `DigestMismatch` unless `actual` is `expected`.
pub fn check_digest(expected: &Digest, actual: &Digest, what: &str) -> Result<(), TransferError> {
    if expected == actual {
        Ok(())
    } else {
        Err(TransferError::DigestMismatch {
            what: what.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(window_ms: u64, min: u64, deadline_ms: u64) -> TransferLimits {
        TransferLimits {
            request_timeout: Duration::from_millis(deadline_ms),
            stall_window: Duration::from_millis(window_ms),
            min_bytes_per_window: min,
        }
    }

    /// A body that yields `chunk` every `every`, forever.
    fn endless(
        chunk: &'static [u8],
        every: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok(Bytes::from_static(chunk)), ()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_stalls_within_a_window() {
        let start = Instant::now();
        let mut body = Body::new(
            endless(b"x", Duration::from_secs(1)),
            Pace::new("u", limits(5_000, 1024, 3_600_000)),
        );
        let err = body.read_capped(1 << 20, "m").await.expect_err("stall");
        assert!(
            matches!(err, TransferError::Stalled { got: 4..=5, .. }),
            "{err}"
        );
        assert!(err.is_transient());
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_above_the_rate_passes_until_the_deadline() {
        let start = Instant::now();
        let mut body = Body::new(
            endless(&[0u8; 4096], Duration::from_millis(100)),
            Pace::new("u", limits(1_000, 1024, 10_000)),
        );
        let err = body.read_capped(u64::MAX, "m").await.expect_err("deadline");
        assert!(matches!(err, TransferError::Deadline { .. }), "{err}");
        assert!(!err.is_transient());
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }

    /// A body sent at `chunk` every `every` from now on, buffered until read (as a socket's).
    fn sent_at_a_rate(
        chunk: &'static [u8],
        every: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::unfold(Instant::now(), move |next| async move {
            let next = next + every;
            tokio::time::sleep_until(next).await;
            Some((Ok(Bytes::from_static(chunk)), next))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_a_slow_registry() {
        let mut body = Body::new(
            sent_at_a_rate(&[0u8; 100], Duration::from_millis(100)),
            Pace::new("u", limits(1_000, 1024, 3_600_000)),
        );
        // 100 bytes per 100 ms of waiting is 1000 bytes a window: too slow when waited on.
        let mut pace_check = Body::new(
            endless(&[0u8; 100], Duration::from_millis(100)),
            Pace::new("u", limits(1_000, 1024, 3_600_000)),
        );
        assert!(matches!(
            pace_check.read_capped(u64::MAX, "m").await,
            Err(TransferError::Stalled { .. })
        ));
        // The same body read by a reader that takes 10 s per chunk: the registry is not blamed.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert!(body.next().await.expect("no stall").is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_gives_no_response() {
        let mut pace = Pace::new("u", limits(2_000, 1, 60_000));
        let err = pace
            .headers(std::future::pending::<()>())
            .await
            .expect_err("silent");
        assert!(matches!(err, TransferError::NoResponse { .. }), "{err}");
        let mut pace = Pace::new("u", limits(2_000, 1, 60_000));
        let err = pace
            .body(std::future::pending::<()>())
            .await
            .expect_err("silent");
        assert!(
            matches!(err, TransferError::Stalled { got: 0, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_the_cap() {
        let stream = futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[b' '; 65536]))
        });
        let mut body = Body::new(stream, Pace::new("u", TransferLimits::default()));
        let err = body
            .read_capped(1 << 20, "manifest of x")
            .await
            .expect_err("cap");
        assert!(
            matches!(err, TransferError::TooLarge { limit: 1048576, .. }),
            "{err}"
        );
        assert!(body.received <= (1 << 20) + 65536);
    }

    #[test]
    fn upload_locations_resolve() {
        let d = Digest::of(b"blob");
        let q = format!("digest={}", d.to_string().replace(':', "%3A"));
        let base = "http://127.0.0.1:5000/v2/a/b/blobs/uploads/";
        // Relative to the registry's root, without and with a query.
        assert_eq!(
            upload_url(base, "/v2/a/b/blobs/uploads/u-1", &d),
            Ok(format!(
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u-1?{q}"
            ))
        );
        assert_eq!(
            upload_url(base, "/v2/a/b/blobs/uploads/u-1?_state=x%2By&n=1", &d),
            Ok(format!(
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u-1?_state=x%2By&n=1&{q}"
            ))
        );
        // Relative to the URL that answered.
        assert_eq!(
            upload_url(base, "u-2?s=1", &d),
            Ok(format!(
                "http://127.0.0.1:5000/v2/a/b/blobs/uploads/u-2?s=1&{q}"
            ))
        );
        // Absolute, elsewhere, without and with a query; a fragment is dropped.
        assert_eq!(
            upload_url(base, "https://storage.example/up/9", &d),
            Ok(format!("https://storage.example/up/9?{q}"))
        );
        assert_eq!(
            upload_url(base, "https://storage.example:8443/up/9?sig=a%3Db#frag", &d),
            Ok(format!("https://storage.example:8443/up/9?sig=a%3Db&{q}"))
        );
        // What is not an http(s) URL is refused, naming it.
        let err = upload_url(base, "file:///etc/passwd", &d).expect_err("file");
        assert!(
            err.contains("`file:///etc/passwd` is not an http or https URL"),
            "{err}"
        );
        assert!(upload_url(base, "http://", &d).is_err());
        assert!(upload_url("not a url", "/x", &d).is_err());
    }

    #[test]
    fn push_sessions_ask_for_push() {
        assert_eq!(Access::default().actions(), "pull");
        assert_eq!(Access::Push.actions(), "pull,push");
        let s = Session::new(
            "127.0.0.1:5000",
            true,
            "a/b",
            None,
            TransferLimits::default(),
            &[],
        )
        .expect("session");
        assert!(s.is_ours("http://127.0.0.1:5000/v2/a/b/blobs/uploads/x"));
        assert!(!s.is_ours("https://127.0.0.1:5000/v2/a/b/blobs/uploads/x"));
        assert!(!s.is_ours("http://127.0.0.1:5001/v2/"));
        assert!(!s.is_ours("http://storage.example/v2/"));
        let s = Session::new(
            "registry.example",
            false,
            "a",
            None,
            TransferLimits::default(),
            &[],
        )
        .expect("session");
        assert!(s.is_ours("https://registry.example:443/v2/a/blobs/x"));
    }

    /// A request body of `len` bytes of which the connection takes `taken` and then nothing;
    /// `progress` as `sending` sees it.
    fn taken(len: u64, taken: u64) -> Progress {
        let p = Progress::default();
        p.record(taken, taken == len);
        p
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_stops_reading_an_upload_stalls_it() {
        let start = Instant::now();
        let progress = taken(10 << 20, 1 << 20);
        let mut pace = Pace::for_upload("u", limits(1_000, 1024, 20_000), 10 << 20);
        let err = pace
            .sending(std::future::pending::<()>(), &progress, 10 << 20)
            .await
            .expect_err("stall");
        // The first window saw a megabyte leave, the second nothing.
        assert!(
            matches!(
                err,
                TransferError::UploadStalled {
                    took: 0,
                    min: 1024,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_transient());
        assert!(err.to_string().contains("not reading"), "{err}");
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_silent_after_an_upload_gives_no_response() {
        // 4 KiB sent: one window, and the 4 KiB the buffers may hold at 1 KiB a second.
        let start = Instant::now();
        let progress = taken(4096, 4096);
        let mut pace = Pace::for_upload("u", limits(1_000, 1024, 20_000), 4096);
        let err = pace
            .sending(std::future::pending::<()>(), &progress, 4096)
            .await
            .expect_err("silent");
        assert!(matches!(err, TransferError::NoResponse { .. }), "{err}");
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // A large body: the buffers' allowance is capped, the deadline holds.
        let start = Instant::now();
        let len = 1u64 << 30;
        let progress = taken(len, len);
        let mut pace = Pace::for_upload("u", limits(1_000, 1 << 20, 20_000), len);
        let err = pace
            .sending(std::future::pending::<()>(), &progress, len)
            .await
            .expect_err("silent");
        assert!(matches!(err, TransferError::NoResponse { .. }), "{err}");
        assert_eq!(Instant::now() - start, Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_has_a_deadline_by_its_size() {
        // 20 s of request timeout and 200 KiB at 1 KiB a second, sent just above the rate.
        let start = Instant::now();
        let len = 200 << 10;
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                p.record(120, false);
            }
        });
        let mut pace = Pace::for_upload("u", limits(1_000, 1024, 20_000), len);
        let err = pace
            .sending(std::future::pending::<()>(), &progress, len)
            .await
            .expect_err("deadline");
        feeder.abort();
        assert!(matches!(err, TransferError::Deadline { .. }), "{err}");
        assert!(!err.is_transient());
        assert_eq!(Instant::now() - start, Duration::from_secs(220));
        // Without a minimum rate only the request timeout counts.
        assert_eq!(
            at_min_rate(&limits(1_000, 0, 20_000), u64::MAX),
            Duration::ZERO
        );
        assert_eq!(
            at_min_rate(&limits(30_000, 16 << 10, 20_000), 1 << 30),
            Duration::from_secs(30 * 65536)
        );
    }

    #[tokio::test]
    async fn payloads_stream_what_they_hold() {
        async fn collect(mut s: PayloadStream) -> Result<Vec<u8>, std::io::Error> {
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                assert!(chunk.len() <= SEND_CHUNK);
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        }
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        for payload in [
            Payload::Bytes(Bytes::from(data.clone())),
            Payload::File {
                path: path.clone(),
                len: data.len() as u64,
            },
        ] {
            let progress = Arc::new(Progress::default());
            let got = collect(payload.stream(progress.clone()).expect("body"))
                .await
                .expect("read");
            assert_eq!(got, data);
            assert_eq!(progress.sent(), data.len() as u64);
            assert!(progress.done().is_some());
        }
        // A file shorter than said fails, naming it.
        let payload = Payload::File {
            path: path.clone(),
            len: data.len() as u64 + 1,
        };
        let err = collect(payload.stream(Arc::new(Progress::default())).expect("body"))
            .await
            .expect_err("short");
        assert!(err.to_string().contains("ended 1 bytes early"), "{err}");
        let missing = Payload::File {
            path: dir.path().join("nothing"),
            len: 1,
        };
        assert!(matches!(
            missing.stream(Arc::new(Progress::default())),
            Err(TransferError::Store(_))
        ));
    }

    #[test]
    fn challenges_parse() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/alpine:pull");
        let c = parse_www_authenticate(
            r#"Basic realm="Registry Realm", Bearer realm=x , service="a\"b""#,
        );
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["basic", "bearer"]
        );
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(c[1].params["realm"], "x");
        assert_eq!(c[1].params["service"], "a\"b");
        let c = parse_www_authenticate("Negotiate abc==, Basic");
        assert_eq!(
            c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(),
            ["negotiate", "basic"]
        );
        assert!(parse_www_authenticate("").is_empty());
        assert_eq!(
            parse_www_authenticate(r#"Bearer realm="unterminated"#)[0]
                .params
                .len(),
            0
        );
    }

    #[test]
    fn json_size_is_counted_without_building() {
        assert_eq!(check_json_size(br#"{"a":[1,2,{"b":null}]}"#, 8), Ok(()));
        assert!(check_json_size(br#"{"a":[1,2,{"b":null}]}"#, 7).is_err());
        assert!(check_json_size(b"{} {}", 10).is_err(), "trailing data");
        assert!(check_json_size(b"{", 10).is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            check_json_size(deep.as_bytes(), u64::MAX).is_err(),
            "nesting"
        );
    }

    #[test]
    fn tokens_parse() {
        assert_eq!(
            parse_token_response(br#"{"token":"abc"}"#),
            Ok("abc".into())
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"def","expires_in":300}"#),
            Ok("def".into())
        );
        assert!(parse_token_response(br#"{}"#).is_err());
        assert!(parse_token_response(br#"{"token":"a\nb"}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn error_bodies_parse() {
        assert_eq!(
            parse_error_body(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            )
            .as_deref(),
            Some("manifest unknown (MANIFEST_UNKNOWN)")
        );
        assert_eq!(parse_error_body(b"not json"), None);
    }

    #[test]
    fn transient_or_final() {
        let status = |status| TransferError::Status {
            url: "u".into(),
            status,
            message: None,
        };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(404).is_transient() && !status(403).is_transient());
        let d = Digest::of(b"a");
        assert!(
            !check_digest(&d, &Digest::of(b"b"), "x")
                .expect_err("mismatch")
                .is_transient()
        );
        assert!(
            !check_announced(10, 100, Some(5), "x")
                .expect_err("size")
                .is_transient()
        );
        assert!(check_announced(200, 100, None, "x").is_err());
        assert!(check_announced(5, 100, Some(5), "x").is_ok());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            TransferLimits::parse_min_rate("1024/2.5"),
            Some((1024, Duration::from_millis(2500)))
        );
        assert_eq!(TransferLimits::parse_min_rate("1024"), None);
        assert_eq!(TransferLimits::parse_min_rate("x/1"), None);
        assert_eq!(parse_seconds("0"), None);
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("inf"), None);
        assert_eq!(parse_seconds("30"), Some(Duration::from_secs(30)));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}", b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_www_authenticate(&s);
            let _ = parse_token_response(&b);
            let _ = parse_error_body(&b);
            let _ = parse_token_response(s.as_bytes());
            let _ = TransferLimits::parse_min_rate(&s);
            let _ = check_json_size(&b, 50);
            let _ = check_json_size(s.as_bytes(), 50);
        }

        #[test]
        fn quoted_params_round_trip(realm in "[ -~]{0,60}", service in "[a-z0-9.-]{1,30}") {
            let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
            let header = format!("Bearer realm=\"{quoted}\",service={service}");
            let c = parse_www_authenticate(&header);
            proptest::prop_assert_eq!(c.len(), 1);
            proptest::prop_assert_eq!(&c[0].params["realm"], &realm);
            proptest::prop_assert_eq!(&c[0].params["service"], &service);
        }
    }
}
