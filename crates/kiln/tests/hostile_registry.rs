//! `kiln cache pull` and `kiln cache push` against a hostile registry: a small HTTP server in
//! this file, on 127.0.0.1 and a port of its own, that sends an endless manifest, an endless
//! blob, nothing at all, one byte a second, an oversized config, wrong sizes and digests, and
//! errors; and to a push, no answer to the upload, an endless error body, or reads the upload
//! at a trickle.
//!
//! Each failing pull must fail in bounded time with an error naming the image and what was
//! wrong, peak memory under 64 MB (measured by GNU time), the store's disk use bounded by the
//! descriptors, and no name tagged; each failing push in bounded time and memory, naming the
//! image and what was wrong. Short deadlines come from `KILN_REGISTRY_TIMEOUT` and
//! `KILN_REGISTRY_MIN_RATE`, so the suite stays fast.

mod common;
use common::*;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most a failing pull may take: the deadlines below allow about 10 s.
const BOUND: Duration = Duration::from_secs(120);
/// Peak memory a pull may use, in KiB.
const MAX_RSS_KB: u64 = 64 * 1024;
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One request the server received (its body, if any, is still to be read from the
/// connection).
struct Request {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
}

impl Request {
    fn content_length(&self) -> usize {
        self.headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

type Handler = dyn Fn(&Request, &mut TcpStream, usize) + Send + Sync;

/// The hostile registry: every request is answered by the handler, given how many times its
/// path was asked for before.
struct Server {
    addr: String,
    hits: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Server {
    fn start(handler: impl Fn(&Request, &mut TcpStream, usize) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let hits: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let counts = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (handler, counts) = (handler.clone(), counts.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&conn) else {
                        return;
                    };
                    let n = {
                        let mut c = counts.lock().expect("lock");
                        let n = c.entry(req.path.clone()).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    handler(&req, &mut conn, n);
                });
            }
        });
        Server { addr, hits }
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// The request line and headers (read a byte at a time, so that the body stays unread).
fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let mut c = conn.try_clone().ok()?;
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || c.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let mut r = BufReader::new(head.as_slice());
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let method = line.split_whitespace().next()?.to_string();
    let target = line.split_whitespace().nth(1)?.to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

/// A whole response, then the connection is closed.
fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// A 200 whose body never ends (no Content-Length): `prefix`, then spaces until the client
/// hangs up.
fn endless(conn: &mut TcpStream, content_type: &str, prefix: &[u8]) {
    endless_status(conn, 200, content_type, prefix)
}

/// The same with another status.
fn endless_status(conn: &mut TcpStream, status: u16, content_type: &str, prefix: &[u8]) {
    let head =
        format!("HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n");
    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(prefix).is_err() {
        return;
    }
    let chunk = vec![b' '; 64 << 10];
    while conn.write_all(&chunk).is_ok() {}
}

/// Read until the client hangs up, answering nothing.
fn silent(conn: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// Headers announcing `body`, then the body at one byte a second.
fn trickle(conn: &mut TcpStream, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    for b in body {
        if conn.write_all(&[*b]).is_err() {
            return;
        }
        // Pacing the trickle, not synchronisation.
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn descriptor(media: &str, digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media, "digest": digest, "size": size})
}

/// A small valid image: config, one layer, and its manifest (with the descriptors' sizes and
/// digests given, so tests can lie).
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Image {
    fn new() -> Image {
        Image::with_layer_of(64 * 1024)
    }

    /// An image whose layer is `size` bytes (a multiple of 8) of noise.
    fn with_layer_of(size: usize) -> Image {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let layer = (0..size / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        Image {
            config: br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
            layer,
        }
    }

    fn manifest_with(&self, config: (&str, u64), layer: (&str, u64)) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config.0, config.1),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer.0, layer.1)],
        }))
        .expect("json")
    }

    fn manifest(&self) -> Vec<u8> {
        self.manifest_with(
            (&sha(&self.config), self.config.len() as u64),
            (&sha(&self.layer), self.layer.len() as u64),
        )
    }

    /// Answer `req` as an honest registry would (the repository is `hostile/x`, tag `1`).
    fn serve(&self, manifest: &[u8], req: &Request, conn: &mut TcpStream) {
        let blob = |d: &str| format!("/v2/hostile/x/blobs/{d}");
        if req.path == "/v2/hostile/x/manifests/1"
            || req.path == format!("/v2/hostile/x/manifests/{}", sha(manifest))
        {
            respond(conn, 200, &[("Content-Type", MANIFEST)], manifest);
        } else if req.path == blob(&sha(&self.config)) {
            respond(conn, 200, &[], &self.config);
        } else if req.path == blob(&sha(&self.layer)) {
            respond(conn, 200, &[], &self.layer);
        } else {
            respond(
                conn,
                404,
                &[("Content-Type", "application/json")],
                br#"{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}"#,
            );
        }
    }
}

/// What a `kiln cache pull` or `push` did.
struct Pull {
    ok: bool,
    stderr: String,
    rss_kb: u64,
    elapsed: Duration,
}

fn pull_with(cache: &Path, image: &str, docker_config: &Path) -> Pull {
    cache_with("pull", cache, image, docker_config)
}

/// `kiln cache VERB image`, with short deadlines, under GNU time.
fn cache_with(verb: &str, cache: &Path, image: &str, docker_config: &Path) -> Pull {
    let rss = tempfile::NamedTempFile::new().expect("tmp");
    let start = Instant::now();
    let child = Command::new("/usr/bin/time")
        .arg("-o")
        .arg(rss.path())
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["cache", verb, image, "--cache"])
        .arg(cache)
        .env("KILN_REGISTRY_TIMEOUT", "20")
        .env("KILN_REGISTRY_MIN_RATE", "1024/1")
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/time kiln (package `time`)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(BOUND) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // kiln is the child of GNU time: kill it, then time.
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for p in children
                .split_whitespace()
                .chain([pid.to_string().as_str()])
            {
                let _ = Command::new("kill").arg("-9").arg(p).status();
            }
            panic!("kiln cache {verb} {image} did not finish within {BOUND:?}");
        }
    };
    let elapsed = start.elapsed();
    let rss_kb = std::fs::read_to_string(rss.path())
        .expect("time output")
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .expect("GNU time printed the peak memory");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "{verb} {image}: {elapsed:?}, peak {rss_kb} KiB: {}",
        stderr.trim()
    );
    Pull {
        ok: out.status.success(),
        stderr,
        rss_kb,
        elapsed,
    }
}

/// Bytes under `dir`.
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(m) = e.metadata() else { continue };
        total += if m.is_dir() {
            disk_use(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// A pull of `hostile/x:1` from `server` that must fail, mentioning every one of `expect`, in
/// bounded time and memory, with no more than `max_disk` bytes of blobs in the store and
/// nothing named.
fn assert_refused(server: &Server, expect: &[&str], max_disk: u64) -> Pull {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(!p.ok, "the pull of {image} succeeded");
    let msg = p.stderr.to_lowercase();
    assert!(
        msg.contains(&image),
        "the error does not name {image}: {}",
        p.stderr
    );
    for e in expect {
        assert!(
            msg.contains(&e.to_lowercase()),
            "the error does not say `{e}`: {}",
            p.stderr
        );
    }
    assert!(
        p.rss_kb < MAX_RSS_KB,
        "the pull of {image} peaked at {} KiB",
        p.rss_kb
    );
    let blobs = disk_use(&cache.join("blobs"));
    assert!(
        blobs <= max_disk,
        "the store holds {blobs} bytes of blobs, more than {max_disk}"
    );
    let partial = disk_use(&cache.join("tmp"));
    assert_eq!(partial, 0, "partial downloads left in {}", cache.display());
    let ls = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(
        !ls.contains("hostile/x"),
        "a failed pull named the image: {ls}"
    );
    p
}

#[test]
fn an_endless_manifest_is_cut_at_the_cap() {
    let server = Server::start(|req, conn, _| {
        if req.path.contains("/manifests/") {
            endless(conn, MANIFEST, br#"{"schemaVersion":2,"layers":["#);
        } else {
            respond(conn, 404, &[], b"");
        }
    });
    let p = assert_refused(&server, &["manifest is larger than the 8388608 bytes"], 0);
    assert_eq!(
        server.hits("/v2/hostile/x/manifests/1"),
        1,
        "a cut manifest was retried"
    );
    assert!(p.elapsed < BOUND);

    // One that announces its size is refused before it is read.
    let server = Server::start(|_, conn, _| {
        let _ = conn.write_all(
            format!("HTTP/1.1 200 OK\r\nContent-Type: {MANIFEST}\r\nContent-Length: 100000000000\r\n\r\n{{")
                .as_bytes(),
        );
        silent(conn);
    });
    assert_refused(
        &server,
        &[
            "larger than the 8388608 bytes",
            "announces 100000000000 bytes",
        ],
        0,
    );
}

#[test]
fn an_endless_blob_is_cut_at_its_descriptor_size() {
    let img = Arc::new(Image::new());
    let layer_path = format!("/v2/hostile/x/blobs/{}", sha(&img.layer));
    let i = img.clone();
    let lp = layer_path.clone();
    let server = Server::start(move |req, conn, _| {
        if req.path == lp {
            endless(conn, "application/octet-stream", &i.layer);
        } else {
            i.serve(&i.manifest(), req, conn);
        }
    });
    let size = img.layer.len() as u64;
    assert_refused(
        &server,
        &[
            &format!("layer {}", sha(&img.layer)),
            &format!(
                "the registry sent more than {size} bytes, where its descriptor gives {size} bytes"
            ),
        ],
        size + img.config.len() as u64,
    );
    assert_eq!(server.hits(&layer_path), 1, "an oversized blob was retried");
}

#[test]
fn a_silent_registry_times_out() {
    let server = Server::start(|_, conn, _| silent(conn));
    let p = assert_refused(&server, &["no response within"], 0);
    // Four attempts of a one-second window, and the back-off between them.
    assert_eq!(server.hits("/v2/hostile/x/manifests/1"), 4);
    assert!(p.elapsed >= Duration::from_secs(4), "{:?}", p.elapsed);
}

#[test]
fn a_trickling_registry_stalls() {
    let img = Image::new();
    let manifest = img.manifest();
    let server = Server::start(move |_, conn, _| trickle(conn, MANIFEST, &manifest));
    assert_refused(
        &server,
        &["the transfer stalled", "fewer than the 1024 required"],
        0,
    );
    assert_eq!(server.hits("/v2/hostile/x/manifests/1"), 4);
}

#[test]
fn an_oversized_config_is_refused() {
    // The manifest says so: refused before asking for it.
    let img = Arc::new(Image::new());
    let big = 9u64 << 20;
    let config_digest = sha(&img.config);
    let i = img.clone();
    let server = Server::start(move |req, conn, _| {
        let m = i.manifest_with(
            (&sha(&i.config), big),
            (&sha(&i.layer), i.layer.len() as u64),
        );
        if req.path.contains("/blobs/sha256") && req.path.ends_with(&sha(&i.config)[7..]) {
            endless(conn, "application/json", b"{");
        } else {
            i.serve(&m, req, conn);
        }
    });
    assert_refused(
        &server,
        &[
            &format!("config {config_digest} is larger than the 8388608 bytes"),
            "announces 9437184 bytes",
        ],
        img.layer.len() as u64,
    );
    assert_eq!(
        server.hits(&format!("/v2/hostile/x/blobs/{config_digest}")),
        0,
        "an oversized config was fetched"
    );

    // The manifest says it is small and the registry sends megabytes: cut at the size given.
    let i = img.clone();
    let server = Server::start(move |req, conn, _| {
        if req.path.ends_with(&sha(&i.config)) {
            endless(conn, "application/json", &i.config);
        } else {
            i.serve(&i.manifest(), req, conn);
        }
    });
    let size = img.config.len();
    assert_refused(
        &server,
        &[&format!(
            "config {config_digest}: the registry sent more than {size} bytes, where its descriptor gives {size} bytes"
        )],
        (size + img.layer.len()) as u64,
    );
}

#[test]
fn wrong_digests_and_sizes_are_final() {
    // A layer of the right size and the wrong content: one request, no retry.
    let img = Arc::new(Image::new());
    let layer_path = format!("/v2/hostile/x/blobs/{}", sha(&img.layer));
    let (i, lp) = (img.clone(), layer_path.clone());
    let server = Server::start(move |req, conn, _| {
        if req.path == lp {
            let mut wrong = i.layer.clone();
            wrong[100] ^= 1;
            respond(conn, 200, &[], &wrong);
        } else {
            i.serve(&i.manifest(), req, conn);
        }
    });
    assert_refused(
        &server,
        &["digest mismatch", &sha(&img.layer)],
        (img.layer.len() + img.config.len()) as u64,
    );
    assert_eq!(server.hits(&layer_path), 1, "a digest mismatch was retried");

    // A layer shorter than its descriptor says.
    let (i, lp) = (img.clone(), layer_path.clone());
    let server = Server::start(move |req, conn, _| {
        if req.path == lp {
            respond(conn, 200, &[], &i.layer[..1000]);
        } else {
            i.serve(&i.manifest(), req, conn);
        }
    });
    assert_refused(
        &server,
        &[&format!(
            "the registry announces 1000 bytes (content-length), where its descriptor gives {} bytes",
            img.layer.len()
        )],
        (img.layer.len() + img.config.len()) as u64,
    );
    assert_eq!(server.hits(&layer_path), 1, "a short blob was retried");

    // An index whose entry gives the wrong size for the platform's manifest.
    let i = img.clone();
    let server = Server::start(move |req, conn, _| {
        let m = i.manifest();
        let mut entry = descriptor(MANIFEST, &sha(&m), m.len() as u64 - 1);
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": go_arch()});
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": INDEX, "manifests": [entry]
        }))
        .expect("json");
        if req.path == "/v2/hostile/x/manifests/1" {
            respond(conn, 200, &[("Content-Type", INDEX)], &index);
        } else {
            i.serve(&m, req, conn);
        }
    });
    let m = img.manifest();
    assert_refused(
        &server,
        &[&format!(
            "manifest {} for linux/{}: the registry announces {} bytes (content-length), where its descriptor gives {} bytes",
            sha(&m),
            go_arch(),
            m.len(),
            m.len() - 1
        )],
        (img.layer.len() + img.config.len()) as u64,
    );
}

/// The architecture kiln pulls for by default, in Go's naming.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn errors_of_the_server_are_retried_and_the_pull_completes() {
    let img = Arc::new(Image::new());
    let layer_path = format!("/v2/hostile/x/blobs/{}", sha(&img.layer));
    let (i, lp) = (img.clone(), layer_path.clone());
    let server = Server::start(move |req, conn, n| {
        if req.path == lp && n < 2 {
            respond(conn, if n == 0 { 503 } else { 429 }, &[], b"busy");
        } else {
            i.serve(&i.manifest(), req, conn);
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(server.hits(&layer_path), 3);
    let ls = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(ls.contains(&image), "{ls}");
}

/// A registry that wants a bearer token from its token service, which wants the user's
/// password; `token` answers the token request.
fn token_registry(
    img: Arc<Image>,
    token: impl Fn(&mut TcpStream) + Send + Sync + 'static,
) -> Server {
    Server::start(move |req, conn, _| {
        let host = req.headers.get("host").cloned().unwrap_or_default();
        if req.path == "/token" {
            let basic = format!("Basic {}", base64_of("kiln:secret"));
            if req.headers.get("authorization") == Some(&basic)
                && req.query.contains("scope=repository%3Ahostile%2Fx%3Apull")
            {
                token(conn);
            } else {
                respond(conn, 401, &[], b"{}");
            }
        } else if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0ken") {
            let challenge = format!("Bearer realm=\"http://{host}/token\",service=\"hostile\"");
            respond(conn, 401, &[("WWW-Authenticate", &challenge)], b"");
        } else {
            img.serve(&img.manifest(), req, conn);
        }
    })
}

fn base64_of(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in s.as_bytes().chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                char::from(A[((n >> shift) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

fn docker_config(dir: &Path, addr: &str) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(
            &serde_json::json!({"auths": {addr: {"auth": base64_of("kiln:secret")}}}),
        )
        .expect("json"),
    )
    .expect("write config.json");
}

#[test]
fn token_authentication_works_and_is_bounded() {
    let img = Arc::new(Image::new());
    let server = token_registry(img.clone(), |conn| {
        respond(
            conn,
            200,
            &[("Content-Type", "application/json")],
            br#"{"token":"t0ken","expires_in":300}"#,
        )
    });
    let tmp = tempfile::tempdir().expect("tmp");
    docker_config(tmp.path(), &server.addr);
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(p.ok, "{}", p.stderr);
    let ls = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(ls.contains(&image), "{ls}");

    // Without the password the token service refuses, and the error says what to do.
    let other = tempfile::tempdir().expect("tmp");
    let p = pull_with(&other.path().join("cache"), &image, other.path());
    assert!(!p.ok);
    assert!(p.stderr.contains("token service refused"), "{}", p.stderr);

    // An endless token response is cut.
    let server = token_registry(img, |conn| {
        endless(conn, "application/json", b"{\"token\":\"")
    });
    let tmp = tempfile::tempdir().expect("tmp");
    docker_config(tmp.path(), &server.addr);
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(!p.ok);
    assert!(
        p.stderr.contains("larger than the 1048576 bytes"),
        "{}",
        p.stderr
    );
    assert!(p.rss_kb < MAX_RSS_KB, "peak {} KiB", p.rss_kb);
}

#[test]
fn documents_that_would_blow_up_in_memory_are_refused() {
    // A manifest of 6 MB listing 150,000 empty layers.
    let mut m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":["#.to_vec();
    for i in 0..150_000 {
        if i > 0 {
            m.push(b',');
        }
        m.extend_from_slice(br#"{"mediaType":"","digest":"","size":0}"#);
    }
    m.extend_from_slice(b"]}");
    let server =
        Server::start(move |_, conn, _| respond(conn, 200, &[("Content-Type", MANIFEST)], &m));
    assert_refused(&server, &["more than 200000 json values"], 0);

    // A config of 7 MB holding 2.3 million empty strings, honestly described.
    let img = Arc::new(Image::new());
    let mut config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["#.to_vec();
    for i in 0..2_300_000 {
        config.extend_from_slice(if i > 0 { br#","""# } else { br#""""# });
    }
    config.extend_from_slice(b"]}}");
    let config = Arc::new(config);
    let (i, c) = (img.clone(), config.clone());
    let server = Server::start(move |req, conn, _| {
        let m = i.manifest_with(
            (&sha(&c), c.len() as u64),
            (&sha(&i.layer), i.layer.len() as u64),
        );
        if req.path.ends_with(&sha(&c)) {
            respond(conn, 200, &[], &c);
        } else {
            i.serve(&m, req, conn);
        }
    });
    assert_refused(
        &server,
        &[&format!(
            "config {}: it holds more than 200000 json values",
            sha(&config)
        )],
        (config.len() + img.layer.len()) as u64,
    );
}

#[test]
fn basic_authentication_works() {
    let img = Arc::new(Image::new());
    let i = img.clone();
    let server = Server::start(move |req, conn, _| {
        let basic = format!("Basic {}", base64_of("kiln:secret"));
        if req.headers.get("authorization") == Some(&basic) {
            i.serve(&i.manifest(), req, conn);
        } else {
            respond(
                conn,
                401,
                &[("WWW-Authenticate", "Basic realm=\"hostile\"")],
                b"",
            );
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    docker_config(tmp.path(), &server.addr);
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(p.ok, "{}", p.stderr);
    let ls = run_ok(kiln().args(["cache", "ls", "--cache"]).arg(&cache));
    assert!(ls.contains(&image), "{ls}");

    // Without credentials the error says how to give them.
    let other = tempfile::tempdir().expect("tmp");
    let p = pull_with(&other.path().join("cache"), &image, other.path());
    assert!(!p.ok);
    assert!(p.stderr.contains("docker login"), "{}", p.stderr);
}

/// Read the `len` bytes of a request's body.
fn read_body(conn: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let _ = conn.take(len as u64).read_to_end(&mut body);
    body
}

const UPLOADS: &str = "/v2/hostile/x/blobs/uploads/";

/// A registry that serves `img` to a pull and answers a push's requests (HEAD, POST, PUT)
/// with `push`.
fn push_registry(
    img: Arc<Image>,
    push: impl Fn(&Request, &mut TcpStream, usize) + Send + Sync + 'static,
) -> Server {
    Server::start(move |req, conn, n| {
        if req.method == "GET" {
            img.serve(&img.manifest(), req, conn);
        } else {
            push(req, conn, n);
        }
    })
}

/// Answer an upload's POST with a location relative to the registry's root, with a query.
fn upload_started(conn: &mut TcpStream, n: usize) {
    let location = format!("{UPLOADS}u{n}?_state=s%2B{n}");
    respond(conn, 202, &[("Location", &location)], b"");
}

/// A store holding `hostile/x:1` of `server`, pulled from it; the store's directory and image.
fn pulled(server: &Server) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let image = format!("{}/hostile/x:1", server.addr);
    let p = pull_with(&cache, &image, tmp.path());
    assert!(p.ok, "{}", p.stderr);
    (tmp, cache, image)
}

/// A push of `hostile/x:1` to `server` that must fail, mentioning every one of `expect`, in
/// bounded time and memory.
fn assert_push_refused(server: &Server, expect: &[&str]) -> Pull {
    let (tmp, cache, image) = pulled(server);
    let p = cache_with("push", &cache, &image, tmp.path());
    assert!(!p.ok, "the push of {image} succeeded");
    for e in [image.as_str(), "push blob"].iter().chain(expect) {
        assert!(
            p.stderr.to_lowercase().contains(&e.to_lowercase()),
            "the error does not say `{e}`: {}",
            p.stderr
        );
    }
    assert!(
        p.rss_kb < MAX_RSS_KB,
        "the push of {image} peaked at {} KiB",
        p.rss_kb
    );
    assert!(p.elapsed < BOUND);
    p
}

#[test]
fn a_push_through_tokens_uploads_what_the_store_holds() {
    // A registry that wants a token, gives an upload location relative to the URL it answered
    // from, and checks each upload against the digest in its query.
    let img = Arc::new(Image::new());
    let scopes: Arc<Mutex<Vec<String>>> = Arc::default();
    let received: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let (i, sc, rx) = (img.clone(), scopes.clone(), received.clone());
    let server = Server::start(move |req, conn, n| {
        let host = req.headers.get("host").cloned().unwrap_or_default();
        if req.path == "/token" {
            sc.lock().expect("lock").push(req.query.clone());
            respond(conn, 200, &[], br#"{"token":"t0ken"}"#);
            return;
        }
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0ken") {
            let challenge = format!("Bearer realm=\"http://{host}/token\",service=\"hostile\"");
            respond(conn, 401, &[("WWW-Authenticate", &challenge)], b"");
            return;
        }
        let body = read_body(conn, req.content_length());
        match req.method.as_str() {
            "GET" => i.serve(&i.manifest(), req, conn),
            "HEAD" => respond(conn, 404, &[], b""),
            "POST" if req.path == UPLOADS => respond(
                conn,
                202,
                &[("Location", &format!("u{n}?_state=s%2B{n}"))],
                b"",
            ),
            "PUT" if req.path.starts_with(UPLOADS) => {
                let digest = req
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("digest="))
                    .unwrap_or_default()
                    .replace("%3A", ":");
                let typed = req.headers.get("content-type").map(String::as_str)
                    == Some("application/octet-stream");
                // The location's query is kept: `u7` was given with `_state=s%2B7`.
                let state = format!("_state=s%2B{}&", &req.path[UPLOADS.len() + 1..]);
                if req.query.starts_with(&state) && typed && sha(&body) == digest {
                    rx.lock().expect("lock").insert(digest, body);
                    respond(conn, 201, &[], b"");
                } else {
                    respond(conn, 400, &[], br#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
                }
            }
            "PUT"
                if req.path == "/v2/hostile/x/manifests/1"
                    && req.headers.get("content-type").map(String::as_str) == Some(MANIFEST) =>
            {
                rx.lock().expect("lock").insert("manifest".into(), body);
                respond(conn, 201, &[], b"");
            }
            _ => respond(conn, 404, &[], b""),
        }
    });
    let (tmp, cache, image) = pulled(&server);
    let p = cache_with("push", &cache, &image, tmp.path());
    assert!(p.ok, "{}", p.stderr);
    let got = received.lock().expect("lock");
    assert_eq!(got.get(&sha(&img.config)), Some(&img.config));
    assert_eq!(got.get(&sha(&img.layer)), Some(&img.layer));
    assert_eq!(got.get("manifest"), Some(&img.manifest()));
    assert!(
        scopes
            .lock()
            .expect("lock")
            .iter()
            .any(|q| q.contains("scope=repository%3Ahostile%2Fx%3Apull%2Cpush")),
        "no token was asked for with the push scope: {:?}",
        scopes.lock().expect("lock")
    );
}

#[test]
fn a_push_to_a_silent_registry_times_out() {
    let img = Arc::new(Image::new());
    let server = push_registry(img, |req, conn, _| match req.method.as_str() {
        "HEAD" => respond(conn, 404, &[], b""),
        _ => silent(conn),
    });
    let p = assert_push_refused(&server, &["no response within 1s"]);
    // Four attempts of a one-second window, and the back-off between them.
    assert_eq!(server.hits(UPLOADS), 4);
    assert!(p.elapsed >= Duration::from_secs(4), "{:?}", p.elapsed);
}

#[test]
fn an_endless_error_body_to_an_upload_is_cut() {
    let img = Arc::new(Image::new());
    // Each upload's query and body.
    type Puts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let puts: Puts = Arc::default();
    let seen = puts.clone();
    let server = push_registry(img.clone(), move |req, conn, n| match req.method.as_str() {
        "HEAD" => respond(conn, 404, &[], b""),
        "POST" => upload_started(conn, n),
        "PUT" => {
            let body = read_body(conn, req.content_length());
            seen.lock().expect("lock").push((req.query.clone(), body));
            endless_status(conn, 500, "application/json", br#"{"errors":[{"code":"#);
        }
        _ => respond(conn, 404, &[], b""),
    });
    assert_push_refused(&server, &["the registry answered 500"]);
    // Retried, each time with a fresh upload that carried the whole blob.
    assert_eq!(server.hits(UPLOADS), 4);
    let puts = puts.lock().expect("lock");
    assert_eq!(puts.len(), 4);
    let config = sha(&img.config);
    for (n, (query, body)) in puts.iter().enumerate() {
        assert_eq!(
            query,
            &format!("_state=s%2B{n}&digest={}", config.replace(':', "%3A"))
        );
        assert_eq!(body, &img.config);
    }

    // A refusal is final: one upload, and the registry's message.
    let server = push_registry(img, |req, conn, n| match req.method.as_str() {
        "HEAD" => respond(conn, 404, &[], b""),
        "POST" => upload_started(conn, n),
        _ => {
            read_body(conn, req.content_length());
            respond(
                conn,
                400,
                &[("Content-Type", "application/json")],
                br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#,
            );
        }
    });
    assert_push_refused(
        &server,
        &["answered 400: provided digest did not match uploaded content (DIGEST_INVALID)"],
    );
    assert_eq!(server.hits(UPLOADS), 1, "a refused upload was retried");
}

#[test]
fn a_registry_reading_an_upload_at_a_trickle_stalls_it() {
    // A layer larger than what the connection's buffers hold, read at 100 bytes a second.
    let img = Arc::new(Image::with_layer_of(16 << 20));
    let config = format!("/v2/hostile/x/blobs/{}", sha(&img.config));
    let server = push_registry(img, move |req, conn, n| match req.method.as_str() {
        "HEAD" if req.path == config => respond(conn, 200, &[], b""),
        "HEAD" => respond(conn, 404, &[], b""),
        "POST" => upload_started(conn, n),
        _ => {
            let mut buf = [0u8; 100];
            for _ in 0..BOUND.as_secs() {
                if conn.read(&mut buf).map_or(true, |n| n == 0) {
                    return;
                }
                // Pacing the trickle, not synchronisation.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    assert_push_refused(
        &server,
        &[
            "the upload stalled",
            "fewer than the 1024 required",
            "too slow or not reading",
        ],
    );
    assert_eq!(server.hits(UPLOADS), 4);
}
