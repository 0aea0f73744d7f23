//! Keys and image signatures against a real registry (Debian's docker-registry on 127.0.0.1):
//! `kiln key generate`, `kiln sign` and `kiln verify`, online and offline, and the failures a
//! verification must name. Python's `cryptography` checks independently that a signature
//! taken from the registry verifies over its payload with the public key, that the payload is
//! cosign's simple-signing document, and that the encrypted private key opens with the
//! password (scrypt from hashlib, XSalsa20 written out in the check, Poly1305 from
//! `cryptography`).
//!
//! In CI (CI=true) a missing docker-registry, curl or Python checker fails the test; elsewhere
//! it is skipped.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "correct horse";

fn prerequisites() -> bool {
    tools_present(&["docker-registry", "curl"])
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn kiln")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kiln` with the store `cache` and the password in the environment.
fn kiln_in(cache: &Path) -> Command {
    let mut cmd = kiln();
    cmd.arg("--cache")
        .arg(cache)
        .env("COSIGN_PASSWORD", PASSWORD);
    cmd
}

/// Generate a key pair under `dir` as `PREFIX.key` and `PREFIX.pub`.
fn generate(dir: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let p = dir.join(prefix);
    let out = run(kiln()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(&p)
        .env("COSIGN_PASSWORD", PASSWORD));
    assert!(out.status.success(), "{}", text(&out));
    (
        dir.join(format!("{prefix}.key")),
        dir.join(format!("{prefix}.pub")),
    )
}

/// Import a one-layer image holding `marker` into `cache` and push it to the registry as
/// `remote`; returns its manifest digest.
fn push_image(cache: &Path, tmp: &Path, marker: &str, remote: &str) -> String {
    let layer = raw_layer(&[Member::File("etc/marker", marker.as_bytes())]);
    let local = format!("kiln-test/{marker}:1");
    let archive = tmp.join(format!("{marker}.tar"));
    std::fs::write(&archive, oci_archive(&local, &[layer])).expect("archive");
    run_ok(kiln_in(cache).args(["cache", "import"]).arg(&archive));
    run_ok(kiln_in(cache).args(["cache", "tag", &local, remote]));
    run_ok(kiln_in(cache).args(["cache", "push", remote]));
    digest_of(cache, remote)
}

/// GET a manifest or blob of the registry with curl (an independent client).
fn curl_get(url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(url)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    out.stdout
}

fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

#[test]
fn key_generate_writes_cosign_files_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (key, public) = generate(tmp.path(), "cosign");
    let key_text = std::fs::read_to_string(&key).expect("key");
    assert!(
        key_text.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
            && key_text
                .trim_end()
                .ends_with("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key_text}"
    );
    let pub_text = std::fs::read_to_string(&public).expect("pub");
    assert!(
        pub_text.starts_with("-----BEGIN PUBLIC KEY-----\n"),
        "{pub_text}"
    );

    // An existing key is not replaced without --force.
    let out = run(kiln()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(tmp.path().join("cosign"))
        .env("COSIGN_PASSWORD", PASSWORD));
    assert!(!out.status.success());
    assert!(text(&out).contains("cosign.key exists"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&key).expect("key"), key_text);
    let out = run(kiln()
        .args(["key", "generate", "--force", "--output-key-prefix"])
        .arg(tmp.path().join("cosign"))
        .env("COSIGN_PASSWORD", ""));
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(std::fs::read_to_string(&key).expect("key"), key_text);

    // No password and no terminal: a clear error, nothing written.
    let out = run(kiln()
        .args(["key", "generate", "--output-key-prefix"])
        .arg(tmp.path().join("other"))
        .env_remove("COSIGN_PASSWORD"));
    assert!(!out.status.success());
    assert!(text(&out).contains("set COSIGN_PASSWORD"), "{}", text(&out));
    assert!(!tmp.path().join("other.key").exists());
}

#[test]
fn sign_push_verify_online_offline_and_failures() {
    if !prerequisites() {
        return;
    }
    let reg = start_registry_in(tempfile::tempdir().expect("tmp"), "");
    let tmp = tempfile::tempdir().expect("tmp");
    let (key, public) = generate(tmp.path(), "cosign");
    let (other_key, other_pub) = generate(tmp.path(), "other");
    let signer_cache = tmp.path().join("signer");
    let repo = format!("{}/kiln-test/signed", reg.addr);
    let image = format!("{repo}:1");
    let digest = push_image(&signer_cache, tmp.path(), "signed", &image);

    // Sign: the signature goes to the store and the registry.
    let out = run(kiln_in(&signer_cache)
        .args(["sign", &image, "--key"])
        .arg(&key));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&digest) && said.contains("signature pushed to"),
        "{said}"
    );
    let sig_url = format!(
        "http://{}/v2/kiln-test/signed/manifests/{}",
        reg.addr,
        sig_tag(&digest)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&curl_get(&sig_url)).expect("json");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );

    // Signing again with the same key adds nothing.
    let out = run(kiln_in(&signer_cache)
        .args(["sign", &image, "--key"])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out));
    let again: serde_json::Value = serde_json::from_slice(&curl_get(&sig_url)).expect("json");
    assert_eq!(again, manifest, "an identical signature was added again");

    // A fresh store verifies online, and then offline from what it kept.
    let verifier = tmp.path().join("verifier");
    let out = run(kiln_in(&verifier)
        .args(["verify", &image, "--key"])
        .arg(&public));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&digest) && said.contains("cosign.pub") && said.contains("fetched"),
        "{said}"
    );
    let by_digest = format!("{repo}@{digest}");
    let out = run(kiln_in(&verifier)
        .args(["verify", &by_digest, "--offline", "--key"])
        .arg(&public));
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("from kiln's store"), "{said}");

    // Offline from a store that never fetched the signature: a clear failure.
    let never = tmp.path().join("never");
    let out = run(kiln_in(&never)
        .args(["verify", &by_digest, "--offline", "--key"])
        .arg(&public));
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("holds no signature") && said.contains(&digest) && said.contains("offline"),
        "{said}"
    );

    // The wrong key (before the second signature exists).
    let out = run(kiln_in(&verifier)
        .args(["verify", &image, "--key"])
        .arg(&other_pub));
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("none by") && said.contains("other.pub") && said.contains(&digest),
        "{said}"
    );

    // A second key's signature made offline, then pushed with the next `kiln sign`: the
    // registry's artifact holds both, and the verifier fetches the new one.
    let out = run(kiln_in(&signer_cache)
        .args(["sign", &image, "--no-push", "--key"])
        .arg(&other_key));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(kiln_in(&signer_cache)
        .args(["sign", &image, "--key"])
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out));
    let both: serde_json::Value = serde_json::from_slice(&curl_get(&sig_url)).expect("json");
    assert_eq!(both["layers"].as_array().map(Vec::len), Some(2), "{both}");
    assert_eq!(
        both["layers"][0], manifest["layers"][0],
        "the first signature stays first"
    );
    let out = run(kiln_in(&verifier)
        .args(["verify", &image, "--key"])
        .arg(&other_pub));
    assert!(out.status.success(), "{}", text(&out));

    // An unsigned image.
    let unsigned = format!("{}/kiln-test/unsigned:1", reg.addr);
    let unsigned_digest = push_image(&signer_cache, tmp.path(), "unsigned", &unsigned);
    let out = run(kiln_in(&verifier)
        .args(["verify", &unsigned, "--key"])
        .arg(&public));
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("is not signed")
            && said.contains(&unsigned_digest)
            && said.contains("kiln sign"),
        "{said}"
    );

    // A signature copied to another image's .sig tag names both digests.
    let copy = format!("{repo}:2");
    let copy_digest = push_image(&signer_cache, tmp.path(), "copied", &copy);
    assert_ne!(copy_digest, digest);
    let sig_bytes = curl_get(&sig_url);
    let sig_file = tmp.path().join("sig.json");
    std::fs::write(&sig_file, &sig_bytes).expect("sig");
    let put = Command::new("curl")
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
        ])
        .arg(format!("@{}", sig_file.display()))
        .arg(format!(
            "http://{}/v2/kiln-test/signed/manifests/{}",
            reg.addr,
            sig_tag(&copy_digest)
        ))
        .output()
        .expect("curl");
    assert!(put.status.success(), "{}", text(&put));
    let out = run(kiln_in(&verifier)
        .args(["verify", &copy, "--key"])
        .arg(&public));
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("copied from another digest")
            && said.contains(&digest)
            && said.contains(&copy_digest),
        "{said}"
    );
    assert_store_consistent(&verifier);
}

/// Salsa20, HSalsa20 and the NaCl secretbox opened with them and `cryptography`'s Poly1305:
/// an implementation independent of kiln's.
const PY_SECRETBOX: &str = r#"
import base64, hashlib, json, struct, sys
from cryptography.hazmat.primitives import poly1305, serialization

M = 0xffffffff
def rotl(v, c): return ((v << c) & M) | (v >> (32 - c))
def qr(x, a, b, c, d):
    x[b] ^= rotl((x[a] + x[d]) & M, 7); x[c] ^= rotl((x[b] + x[a]) & M, 9)
    x[d] ^= rotl((x[c] + x[b]) & M, 13); x[a] ^= rotl((x[d] + x[c]) & M, 18)
def rounds(x):
    for _ in range(10):
        qr(x, 0, 4, 8, 12); qr(x, 5, 9, 13, 1); qr(x, 10, 14, 2, 6); qr(x, 15, 3, 7, 11)
        qr(x, 0, 1, 2, 3); qr(x, 5, 6, 7, 4); qr(x, 10, 11, 8, 9); qr(x, 15, 12, 13, 14)
SIGMA = struct.unpack('<4I', b'expand 32-byte k')
def state(key, n4):
    k = struct.unpack('<8I', key)
    return [SIGMA[0], *k[:4], SIGMA[1], *n4, SIGMA[2], *k[4:], SIGMA[3]]
def hsalsa20(key, n16):
    x = state(key, struct.unpack('<4I', n16)); rounds(x)
    return struct.pack('<8I', x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])
def salsa20_stream(key, n8, length):
    out = b''; ctr = 0
    while len(out) < length:
        s = state(key, [*struct.unpack('<2I', n8), ctr & M, ctr >> 32]); x = list(s); rounds(x)
        out += struct.pack('<16I', *[(x[i] + s[i]) & M for i in range(16)]); ctr += 1
    return out[:length]
def secretbox_open(box, nonce, key):
    sub = hsalsa20(key, nonce[:16])
    tag, ct = box[:16], box[16:]
    stream = salsa20_stream(sub, nonce[16:], 32 + len(ct))
    poly1305.Poly1305.verify_tag(stream[:32], ct, tag)
    return bytes(a ^ b for a, b in zip(ct, stream[32:]))

def open_key(pem_text, password):
    lines = pem_text.strip().splitlines()
    assert lines[0] in ('-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----', '-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----'), lines[0]
    doc = json.loads(base64.b64decode(''.join(lines[1:-1])))
    assert doc['kdf']['name'] == 'scrypt' and doc['cipher']['name'] == 'nacl/secretbox', doc
    p = doc['kdf']['params']
    k = hashlib.scrypt(password, salt=base64.b64decode(doc['kdf']['salt']), n=p['N'], r=p['r'], p=p['p'], maxmem=256 << 20, dklen=32)
    der = secretbox_open(base64.b64decode(doc['ciphertext']), base64.b64decode(doc['cipher']['nonce']), k)
    return serialization.load_der_private_key(der, None)

key = open_key(open(sys.argv[1]).read(), sys.argv[2].encode())
public = serialization.load_pem_public_key(open(sys.argv[3], 'rb').read())
raw = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
assert raw(key.public_key()) == raw(public), 'the private key is not the public key\'s'
try:
    open_key(open(sys.argv[1]).read(), b'wrong')
    raise SystemExit('a wrong password opened the key')
except Exception as e:
    if isinstance(e, SystemExit): raise
# A key cosign wrote (empty password) opens the same way.
cosign = open(sys.argv[4]).read()
assert open_key(cosign, b'').curve.name == 'secp256r1'
print('secretbox ok')
"#;

/// A key `cosign generate-key-pair` wrote with an empty password.
const COSIGN_KEY_EMPTY_PASSWORD: &str = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJFY3pJR3Z0bnpFcCsxaEpudERnbGI1UnoxN3gwQVMy
YklvWGRNcDQrU1NJPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJtSVVKbG1OMzNINExvZ0dhaG5MamdmK3R4SmJwci93MCJ9LCJj
aXBoZXJ0ZXh0IjoiM3FtS2FidXRuYm1WT1IvTkZGM2NDaUErTXp1WWQ5L0VERDVI
MVlUSGhQVzZsSzAvdjVqdDZCQzlsME12NGV5am9qZkl0d3B6a2JJOXQrZGx5VXZ3
VUgvMWZjbkFZT2dEdXRLQzkvSkNiOE02SVY2VHpVaDF5c0ZFWDFzeG9xb1FzeUpL
bjM0UVlldFNlaVdDaGtmUHUyZXByQjFEV0pwekdzTGZIakxNVTkzOEdmNk1xM1A0
N0ZSd2syZzY1cFZnSGMwVWV1L1N1OUs0Zmc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
";

/// Verify the signature, its payload's structure and the key file with Python.
const PY_SIGNATURE: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
manifest = json.load(open(sys.argv[1]))
payload = open(sys.argv[2], 'rb').read()
public = serialization.load_pem_public_key(open(sys.argv[3], 'rb').read())
digest, reference = sys.argv[4], sys.argv[5]
assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == 'secp256r1'
assert manifest['mediaType'] == 'application/vnd.oci.image.manifest.v1+json', manifest
layer = manifest['layers'][0]
assert layer['mediaType'] == 'application/vnd.dev.cosign.simplesigning.v1+json', layer
assert set(layer['annotations']) == {'dev.cosignproject.cosign/signature'}, layer
signature = base64.b64decode(layer['annotations']['dev.cosignproject.cosign/signature'])
public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
try:
    public.verify(signature, payload + b' ', ec.ECDSA(hashes.SHA256()))
    raise SystemExit('a changed payload verified')
except Exception as e:
    if isinstance(e, SystemExit): raise
doc = json.loads(payload)
expected = {'critical': {'identity': {'docker-reference': reference}, 'image': {'docker-manifest-digest': digest}, 'type': 'cosign container image signature'}, 'optional': None}
assert doc == expected, doc
assert list(doc) == ['critical', 'optional'] and list(doc['critical']) == ['identity', 'image', 'type'], doc
assert payload == json.dumps(expected, separators=(',', ':')).encode(), payload
print('signature ok')
"#;

#[test]
fn python_checks_signature_payload_and_key_file() {
    if !prerequisites() {
        return;
    }
    let Some(python) = checker_python() else {
        return;
    };
    let reg = start_registry_in(tempfile::tempdir().expect("tmp"), "");
    let tmp = tempfile::tempdir().expect("tmp");
    let (key, public) = generate(tmp.path(), "cosign");
    let cache = tmp.path().join("cache");
    let image = format!("{}/kiln-test/checked:1", reg.addr);
    let digest = push_image(&cache, tmp.path(), "checked", &image);
    run_ok(kiln_in(&cache).args(["sign", &image, "--key"]).arg(&key));

    // The signature and payload as the registry serves them, fetched with curl.
    let base = format!("http://{}/v2/kiln-test/checked", reg.addr);
    let manifest = curl_get(&format!("{base}/manifests/{}", sig_tag(&digest)));
    let m: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    let layer = m["layers"][0]["digest"].as_str().expect("layer digest");
    let payload = curl_get(&format!("{base}/blobs/{layer}"));
    assert_eq!(sha(&payload), layer, "the registry served another payload");
    let (mf, pf) = (tmp.path().join("sig.json"), tmp.path().join("payload.json"));
    std::fs::write(&mf, &manifest).expect("manifest");
    std::fs::write(&pf, &payload).expect("payload");
    let reference = format!("{}/kiln-test/checked", reg.addr);
    let said = run_ok(
        Command::new(&python)
            .args(["-c", PY_SIGNATURE])
            .args([&mf, &pf, &public])
            .args([&digest, &reference]),
    );
    assert!(said.contains("signature ok"), "{said}");

    let cosign_key = tmp.path().join("cosign-written.key");
    std::fs::write(&cosign_key, COSIGN_KEY_EMPTY_PASSWORD).expect("key");
    let said = run_ok(
        Command::new(&python)
            .args(["-c", PY_SECRETBOX])
            .arg(&key)
            .arg(PASSWORD)
            .arg(&public)
            .arg(&cosign_key),
    );
    assert!(said.contains("secretbox ok"), "{said}");
}
