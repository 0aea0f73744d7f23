//! `kiln serve`: a static HTTP server for network boots. It answers GET and HEAD for the
//! regular files under one directory, streamed with their length, and nothing else: no
//! listings, no uploads, no path that leaves the directory (a `..` component is refused, and
//! every path, symbolic links included, is resolved by the kernel beneath the directory's
//! descriptor with openat2(2) `RESOLVE_BENEATH`).
//!
//! For a system built with `kiln build -f kernel+initrd --name NAME`, a request for
//! `NAME.ipxe` that no file answers is answered with an iPXE script made on the fly from
//! `NAME-kernel`, `NAME-initrd.img` and `NAME-cmdline` ([`ipxe_script`]), its base URL taken
//! from the request's `Host` header unless one is configured. A machine (or a qemu guest with
//! its built-in iPXE ROM) told to chain-load `http://HOST:PORT/NAME.ipxe` boots the system.

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::fs::File;
use std::io::{self, Read as _};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The address LinuxKit's `serve` listens on by default: every interface, port 8080.
pub const DEFAULT_LISTEN: &str = ":8080";

/// The longest `NAME-cmdline` read into a generated script.
const MAX_CMDLINE: u64 = 64 * 1024;

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is malformed.
    #[error("--port {value}: {message}")]
    Listen {
        /// The value given.
        value: String,
        /// What is expected.
        message: String,
    },
    /// The address cannot be bound.
    #[error("listening on {addr}: {source} (is another server using the port?)")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The directory cannot be opened.
    #[error("{}: {source} (serve an existing directory)", path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The base URL is not an http(s) URL.
    #[error("--base-url {0}: write http://HOST[:PORT][/PATH]")]
    BaseUrl(String),
    /// The server failed.
    #[error("serving: {0}")]
    Io(#[from] io::Error),
}

/// What to serve and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `[ADDR]:PORT` or `PORT` (as LinuxKit's `--port`; no address means every interface).
    pub listen: String,
    /// The directory served.
    pub directory: PathBuf,
    /// The URL the generated iPXE scripts fetch the kernel and initrd from; by default
    /// `http://` and the request's `Host` header.
    pub base_url: Option<String>,
}

/// The addresses a `--port` value names, in the order to try: `PORT` and `:PORT` mean every
/// interface (IPv6 and IPv4 together, else IPv4 alone); `ADDR:PORT` and `[V6]:PORT` one
/// address (a host name is resolved).
pub fn listen_addresses(value: &str) -> Result<Vec<SocketAddr>, ServeError> {
    let bad = |message: &str| ServeError::Listen {
        value: value.to_string(),
        message: message.to_string(),
    };
    let port_only = value.strip_prefix(':').unwrap_or(value);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only
            .parse()
            .map_err(|_| bad("the port is a number up to 65535"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    if !value.contains(':') {
        return Err(bad(
            "write [ADDR]:PORT, for example :8080 or 127.0.0.1:8080",
        ));
    }
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| {
            bad(&format!(
                "{e}: write [ADDR]:PORT, for example 127.0.0.1:8080"
            ))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(bad("the address resolves to nothing"));
    }
    Ok(addrs)
}

/// A bound server, not yet answering.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    root: Root,
    base_url: Option<String>,
}

impl Server {
    /// Open the directory and bind the address (the first of [`listen_addresses`] that binds).
    pub fn bind(options: &ServeOptions) -> Result<Server, ServeError> {
        let root = Root::new(&options.directory).map_err(|source| ServeError::Directory {
            path: options.directory.clone(),
            source,
        })?;
        let base_url = match &options.base_url {
            None => None,
            Some(u) => {
                let trimmed = u.trim_end_matches('/');
                let valid = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
                    && trimmed.bytes().all(|b| b.is_ascii_graphic() && b != b'$');
                if !valid {
                    return Err(ServeError::BaseUrl(u.clone()));
                }
                Some(trimmed.to_string())
            }
        };
        let mut last = None;
        let mut listener = None;
        for addr in listen_addresses(&options.listen)? {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let listener = match (listener, last) {
            (Some(l), _) => l,
            (None, Some((addr, source))) => {
                return Err(ServeError::Bind {
                    addr: addr.to_string(),
                    source,
                });
            }
            (None, None) => {
                return Err(ServeError::Listen {
                    value: options.listen.clone(),
                    message: "no address to listen on".into(),
                });
            }
        };
        Ok(Server {
            listener,
            state: Arc::new(State { root, base_url }),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// Answer requests until the process is interrupted (or accepting fails).
    pub fn run(self) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> Result<(), ServeError> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, a connection reset before it was accepted: the next
                // connection may do better.
                Err(e) if is_transient(&e) => {
                    tracing::warn!("accepting a connection: {e}");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let local = stream.local_addr().ok();
            let state = self.state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, io::Error>(answer(&state, req, peer, local)) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // The timer bounds how long a client may take to send its headers (hyper's
                // default of 30 s), so that idle half-requests do not pile up.
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("connection from {peer}: {e}");
                }
            });
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ECONNABORTED | libc::ECONNRESET | libc::EINTR)
    )
}

type Body = BoxBody<Bytes, io::Error>;

/// Answer one request, and log it.
fn answer(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<Body> {
    let (response, length) = respond(state, &req, local);
    tracing::info!(
        "{peer} {} {} {} {}",
        req.method(),
        req.uri(),
        response.status().as_u16(),
        length.map_or_else(|| "-".to_string(), |n| n.to_string())
    );
    response
}

/// The response to `req` and the length of its body.
fn respond(
    state: &State,
    req: &Request<Incoming>,
    local: Option<SocketAddr>,
) -> (Response<Body>, Option<u64>) {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, HEAD"));
            return (r, None);
        }
    };
    let path = match request_path(req.uri().path()) {
        Ok(p) => p,
        Err(message) => return (text(StatusCode::BAD_REQUEST, message), None),
    };
    if path.as_os_str().is_empty() {
        return (
            text(StatusCode::NOT_FOUND, "no listings: name a file\n"),
            None,
        );
    }
    match state.root.open(&path) {
        Ok(file) => match file_response(file, &path, head) {
            Ok(r) => r,
            Err(e) => (status_for(&e), None),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match generated_script(state, req, &path, local) {
                Some(script) => {
                    let len = script.len() as u64;
                    let body = if head { String::new() } else { script };
                    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(never).boxed());
                    set_length(&mut r, len, "text/plain; charset=utf-8");
                    (r, Some(len))
                }
                None => (status_for(&e), None),
            }
        }
        Err(e) => (status_for(&e), None),
    }
}

/// A regular file's response: its length, and its content streamed unless `head`.
fn file_response(file: File, path: &Path, head: bool) -> io::Result<(Response<Body>, Option<u64>)> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    let len = meta.len();
    let body = if head {
        Full::new(Bytes::new()).map_err(never).boxed()
    } else {
        let stream = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(file),
            256 * 1024,
        );
        StreamBody::new(stream.map_ok(Frame::data)).boxed()
    };
    let mut r = Response::new(body);
    let kind = if path.extension().is_some_and(|e| e == "ipxe") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    set_length(&mut r, len, kind);
    Ok((r, Some(len)))
}

fn set_length(r: &mut Response<Body>, len: u64, kind: &'static str) {
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
}

fn never(n: std::convert::Infallible) -> io::Error {
    match n {}
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(message.as_bytes()))
            .map_err(never)
            .boxed(),
    );
    *r.status_mut() = status;
    set_length(&mut r, message.len() as u64, "text/plain; charset=utf-8");
    r
}

/// The response to a failed open: 404 for what does not exist (or is not a file), 403 for
/// what lies outside the directory or may not be read, 500 otherwise.
fn status_for(e: &io::Error) -> Response<Body> {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::EISDIR) => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
        Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => {
            text(StatusCode::FORBIDDEN, "forbidden\n")
        }
        _ if e.kind() == io::ErrorKind::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => {
            tracing::warn!("serving a file: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
        }
    }
}

/// The relative path a request's (percent-encoded) path names. Empty and `.` components are
/// dropped; `..`, NUL bytes and malformed escapes are refused.
fn request_path(raw: &str) -> Result<PathBuf, &'static str> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.contains(&0) {
        return Err("a NUL byte in the path\n");
    }
    let mut path = PathBuf::new();
    for part in decoded.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("a path with .. is refused\n"),
            name => path.push(std::ffi::OsStr::from_bytes(name)),
        }
    }
    Ok(path)
}

/// The iPXE script for `PREFIX.ipxe` when `PREFIX-kernel` and `PREFIX-initrd.img` are regular
/// files of the directory.
fn generated_script(
    state: &State,
    req: &Request<Incoming>,
    path: &Path,
    local: Option<SocketAddr>,
) -> Option<String> {
    let prefix = path.as_os_str().as_bytes().strip_suffix(b".ipxe")?;
    let with = |suffix: &str| {
        let mut p = prefix.to_vec();
        p.extend_from_slice(suffix.as_bytes());
        PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&p)))
    };
    for part in ["-kernel", "-initrd.img"] {
        let f = state.root.open(&with(part)).ok()?;
        if !f.metadata().ok()?.is_file() {
            return None;
        }
    }
    let mut cmdline = String::new();
    if let Ok(f) = state.root.open(&with("-cmdline")) {
        // A cmdline that cannot be read as text is left out rather than failing the boot.
        let _ = f.take(MAX_CMDLINE).read_to_string(&mut cmdline);
    }
    let base = match &state.base_url {
        Some(b) => b.clone(),
        None => format!("http://{}", host_of(req, local)?),
    };
    let name = std::str::from_utf8(prefix).ok()?;
    Some(ipxe_script(name, &base, &cmdline))
}

/// `HOST[:PORT]` of the request: its `Host` header when that is a plain host name or address,
/// else the address the connection came in on.
fn host_of(req: &Request<Incoming>, local: Option<SocketAddr>) -> Option<String> {
    let header = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        });
    match header {
        Some(h) => Some(h.to_string()),
        None => local.map(|a| a.to_string()),
    }
}

/// An iPXE script booting `NAME-kernel` with `NAME-initrd.img` from `base_url`, the kernel
/// command line `cmdline` (as `NAME-cmdline` holds it; lines are joined). The form is the
/// one LinuxKit writes for network boots (`#!ipxe`, `dhcp`, `set base-url`, `set
/// kernel-params`, `kernel`, `initrd`, `boot`), without the serial console settings LinuxKit
/// adds for one provider's machines.
pub fn ipxe_script(name: &str, base_url: &str, cmdline: &str) -> String {
    let cmdline = cmdline.split_whitespace().collect::<Vec<_>>().join(" ");
    let name: String = name
        .split('/')
        .map(|part| percent_encoding::utf8_percent_encode(part, URL_PATH_PART).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let base = base_url.trim_end_matches('/');
    format!(
        "#!ipxe\n\ndhcp\nset base-url {base}\nset kernel-params {cmdline}\n\
         kernel ${{base-url}}/{name}-kernel ${{kernel-params}}\n\
         initrd ${{base-url}}/{name}-initrd.img\nboot\n"
    )
}

/// What is escaped in a path component of a URL written into a script.
const URL_PATH_PART: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The served directory, held open: every path is opened beneath this descriptor.
#[derive(Debug)]
struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    fn new(path: &Path) -> io::Result<Root> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(Root {
            fd,
            path: path.canonicalize()?,
        })
    }

    /// Open `rel` for reading, following symbolic links only as long as they stay beneath the
    /// directory (EXDEV otherwise). A FIFO does not block the open.
    fn open(&self, rel: &Path) -> io::Result<File> {
        use nix::errno::Errno;
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        for _ in 0..16 {
            match nix::fcntl::openat2(&self.fd, rel, how) {
                Ok(fd) => return Ok(File::from(fd)),
                // A rename or mount raced the resolution: try again.
                Err(Errno::EAGAIN) => continue,
                Err(Errno::ENOSYS) => return self.open_checked(rel, flags),
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Without openat2 (before Linux 5.6): resolve the path, check it is beneath the
    /// directory, then open the resolved path without following a link in its last component.
    fn open_checked(&self, rel: &Path, flags: nix::fcntl::OFlag) -> io::Result<File> {
        use nix::fcntl::OFlag;
        let resolved = self.path.join(rel).canonicalize()?;
        if !resolved.starts_with(&self.path) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let fd = nix::fcntl::open(
            &resolved,
            flags | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(File::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        let all = listen_addresses(":8080").expect("port");
        assert_eq!(all.len(), 2);
        assert!(
            all.iter()
                .all(|a| a.port() == 8080 && a.ip().is_unspecified())
        );
        assert_eq!(listen_addresses("9000").expect("port")[0].port(), 9000);
        let one = listen_addresses("127.0.0.1:81").expect("addr");
        assert_eq!(one, vec![SocketAddr::from(([127, 0, 0, 1], 81))]);
        assert_eq!(listen_addresses("[::1]:82").expect("v6")[0].port(), 82);
        for bad in ["", "80000", ":x", "host", "1.2.3.4:port"] {
            assert!(listen_addresses(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_paths() {
        assert_eq!(request_path("/a/./b//c").expect("path"), Path::new("a/b/c"));
        assert_eq!(
            request_path("/sp%20ace").expect("path"),
            Path::new("sp ace")
        );
        assert_eq!(request_path("/").expect("root"), Path::new(""));
        for bad in ["/../etc/passwd", "/a/%2e%2e/b", "/a/..", "/%00"] {
            assert!(request_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn script_form() {
        let s = ipxe_script("sys", "http://10.0.2.2:8080/", "console=ttyS0\nquiet\n");
        assert_eq!(
            s,
            "#!ipxe\n\ndhcp\nset base-url http://10.0.2.2:8080\n\
             set kernel-params console=ttyS0 quiet\n\
             kernel ${base-url}/sys-kernel ${kernel-params}\n\
             initrd ${base-url}/sys-initrd.img\nboot\n"
        );
        let s = ipxe_script("boot/my sys", "http://h", "");
        assert!(s.contains("${base-url}/boot/my%20sys-kernel"), "{s}");
    }

    #[test]
    fn root_confines_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        let served = dir.path().join("served");
        std::fs::create_dir_all(served.join("sub")).expect("mkdir");
        std::fs::write(served.join("sub/file"), b"ok").expect("write");
        std::os::unix::fs::symlink("sub/file", served.join("inside")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), served.join("abs"))
            .expect("link");
        let outside_name = outside.path().file_name().expect("name");
        let rel = Path::new("../../..").join(outside_name).join("secret");
        std::os::unix::fs::symlink(rel, served.join("sub/rel")).expect("link");
        let root = Root::new(&served).expect("root");
        let mut text = String::new();
        root.open(Path::new("inside"))
            .expect("inside")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "ok");
        for escaping in ["abs", "sub/rel"] {
            let e = root.open(Path::new(escaping)).expect_err(escaping);
            assert_eq!(e.raw_os_error(), Some(libc::EXDEV), "{escaping}: {e}");
        }
        let e = root.open(Path::new("missing")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = root
            .open_checked(Path::new("abs"), nix::fcntl::OFlag::O_RDONLY)
            .expect_err("checked");
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    }
}
