//! kiln against a registry served over TLS with a certificate from a throwaway certificate
//! authority: `--cert-file CA.pem` is what makes kiln trust it (LinuxKit's global flag).
//!
//! The CA and the server certificate are made with the `openssl` command; the registry is
//! Debian's docker-registry (distribution v2.8) on 127.0.0.1 and a free port. kiln speaks plain
//! HTTP to `localhost` and `127.*` registries named in image references, so the test names the
//! registry `0.0.0.0:PORT` there: Linux delivers a connection to 0.0.0.0 to the local host, and
//! kiln takes that name for a remote registry, spoken to over https. A mirror's `https://` URL
//! is https even on 127.0.0.1. The server certificate names 0.0.0.0, 127.0.0.1 and localhost.
//!
//! In CI (CI=true) a missing docker-registry or openssl fails the test; elsewhere it is skipped.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn prerequisites() -> bool {
    tools_present(&["docker-registry", "openssl"])
}

/// Run `openssl` with `args` in `dir`, panicking with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority `NAME.pem` (key `NAME.key`) in `dir`: P-256, valid for two days.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=kiln test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A server certificate `server.pem` (key `server.key`) in `dir`, signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,IP:0.0.0.0,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    (dir.join("server.pem"), dir.join("server.key"))
}

/// docker-registry serving TLS on 127.0.0.1; `host` is the name kiln reaches it by.
struct TlsRegistry {
    reg: Registry,
    host: String,
    /// The certificate authority that signed the registry's certificate.
    ca: PathBuf,
}

fn start_registry() -> TlsRegistry {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = make_ca(dir.path(), "ca");
    let (cert, key) = make_server_cert(dir.path(), "ca");
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    );
    let reg = start_registry_in(dir, &tls);
    let port = reg.addr.rsplit_once(':').expect("port").1;
    TlsRegistry {
        host: format!("0.0.0.0:{port}"),
        ca,
        reg,
    }
}

/// `kiln [--cert-file F]... cache ARGS --cache CACHE`.
fn cache_cmd(cache: &Path, cert_files: &[&Path], args: &[&str]) -> Command {
    let mut cmd = kiln();
    for f in cert_files {
        cmd.arg("--cert-file").arg(f);
    }
    cmd.arg("cache").args(args).arg("--cache").arg(cache);
    cmd
}

fn failed(mut cmd: Command) -> String {
    let out: Output = cmd.output().expect("spawn kiln");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{stderr}");
    stderr
}

#[test]
fn push_and_pull_trust_the_cert_file_ca() {
    if !prerequisites() || conformance_dir().is_none() {
        return;
    }
    let reg = start_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = fixture_store(tmp.path());
    let remote = format!("{}/kiln-test/svc:1", reg.host);
    let want = digest_of(&cache, "docker.io/kiln-test/svc:1");
    let ca: &Path = &reg.ca;

    // Trusting the throwaway CA: kiln pushes, and a fresh store pulls the same digest back.
    run_ok(&mut cache_cmd(
        &cache,
        &[],
        &["tag", "kiln-test/svc:1", &remote],
    ));
    run_ok(&mut cache_cmd(&cache, &[ca], &["push", &remote]));
    let fresh = tmp.path().join("fresh");
    run_ok(&mut cache_cmd(&fresh, &[ca], &["pull", &remote]));
    assert_eq!(digest_of(&fresh, &remote), want);

    // The same through an https mirror for docker.io, the CA among several --cert-file flags.
    let other_ca = make_ca(tmp.path(), "other");
    let mirrored = tmp.path().join("mirrored");
    let mut pull = cache_cmd(&mirrored, &[&other_ca, ca], &["pull", "kiln-test/svc:1"]);
    let port = reg.host.rsplit_once(':').expect("port").1;
    pull.arg("--mirror")
        .arg(format!("docker.io=https://127.0.0.1:{port}"));
    run_ok(&mut pull);
    assert_eq!(digest_of(&mirrored, "docker.io/kiln-test/svc:1"), want);

    // Without the flag, or with another CA only, the registry's certificate is not trusted.
    for (certs, what) in [
        (Vec::new(), "no --cert-file"),
        (vec![other_ca.as_path()], "another CA"),
    ] {
        let store = tmp.path().join(format!("untrusted-{}", certs.len()));
        let stderr = failed(cache_cmd(&store, &certs, &["pull", &remote]));
        let last = stderr.lines().last().unwrap_or_default().to_lowercase();
        assert!(
            last.contains("certificate") && last.contains(&reg.host),
            "with {what} the pull should fail on the registry's certificate:\n{stderr}"
        );
    }
}

#[test]
fn cert_file_that_is_not_a_pem_certificate_is_refused() {
    if !prerequisites() {
        return;
    }
    let reg = start_registry();
    let tmp = tempfile::tempdir().expect("tmp");
    let remote = format!("{}/kiln-test/svc:1", reg.host);
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "this is no certificate\n").expect("write");
    // Valid PEM, but a private key: no certificate in it.
    let key = reg.reg.dir.path().join("server.key");
    let armoured = tmp.path().join("armoured.pem");
    std::fs::write(
        &armoured,
        "-----BEGIN CERTIFICATE-----\nbm90IERFUg==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    for (file, what) in [
        (&garbage, "text"),
        (&key, "a private key"),
        (&armoured, "PEM armour around bytes that are no certificate"),
    ] {
        let stderr = failed(cache_cmd(
            &tmp.path().join("store"),
            &[file.as_path(), &reg.ca],
            &["pull", &remote],
        ));
        assert!(
            stderr.contains(&file.display().to_string())
                && stderr.contains("PEM")
                && !stderr.contains("UnknownIssuer"),
            "--cert-file with {what} should be refused, naming the file and PEM:\n{stderr}"
        );
    }
}
