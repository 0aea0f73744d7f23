//! Package URLs (<https://github.com/package-url/purl-spec>) of the packages kiln finds.

use crate::parse::{Ecosystem, OsRelease, Package};

/// Percent-encode a purl component: everything but ASCII letters, digits and `.-_~`.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The purl of a package found in an image's database, the distribution named by the image's
/// os-release (`debian` for dpkg, `alpine` for apk when there is none):
/// `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12&upstream=SOURCE`. Qualifiers are
/// sorted by key, as the specification asks.
pub fn of(package: &Package, os: Option<&OsRelease>) -> Option<String> {
    let (kind, default_ns) = match package.ecosystem {
        Ecosystem::Deb => ("deb", "debian"),
        Ecosystem::Apk => ("apk", "alpine"),
        Ecosystem::Attached => return package.purl.clone(),
    };
    let namespace = os
        .map(|o| o.id.to_ascii_lowercase())
        .filter(|id| id != "linux")
        .unwrap_or_else(|| default_ns.to_string());
    let mut qualifiers: Vec<(&str, String)> = Vec::new();
    if let Some(a) = &package.arch {
        qualifiers.push(("arch", encode(a)));
    }
    if let Some(o) = os
        && let Some(v) = &o.version_id
    {
        qualifiers.push(("distro", encode(&format!("{namespace}-{v}"))));
    }
    if let Some(s) = &package.source {
        qualifiers.push(("upstream", encode(s)));
    }
    let mut purl = format!(
        "pkg:{kind}/{}/{}",
        encode(&namespace),
        encode(&package.name)
    );
    if !package.version.is_empty() {
        purl.push('@');
        purl.push_str(&encode(&package.version));
    }
    for (i, (k, v)) in qualifiers.iter().enumerate() {
        purl.push(if i == 0 { '?' } else { '&' });
        purl.push_str(k);
        purl.push('=');
        purl.push_str(v);
    }
    Some(purl)
}

/// The purl of an image: `pkg:oci/NAME@DIGEST?repository_url=REPOSITORY&tag=TAG`.
pub fn of_image(reference: &str, digest: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let (repository, tag) = match without_digest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (without_digest, None),
    };
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let mut purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        encode(&name.to_ascii_lowercase()),
        encode(digest),
        encode(repository)
    );
    if let Some(t) = tag {
        purl.push_str("&tag=");
        purl.push_str(&encode(t));
    }
    purl
}

/// The purl without its qualifiers and subpath, percent-decoded: what two purls of the same
/// package share even when the tools that wrote them chose different qualifiers or encodings.
pub fn identity(purl: &str) -> String {
    let end = purl.find(['?', '#']).unwrap_or(purl.len());
    let bytes = &purl.as_bytes()[..end];
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_purl_names_the_distribution() {
        let p = Package {
            ecosystem: Ecosystem::Deb,
            name: "redis-server".into(),
            version: "5:7.0.15-1~deb12u1".into(),
            arch: Some("amd64".into()),
            source: Some("redis".into()),
            license: None,
            purl: None,
        };
        let os = OsRelease {
            id: "debian".into(),
            version_id: Some("12".into()),
            ..OsRelease::default()
        };
        assert_eq!(
            of(&p, Some(&os)).as_deref(),
            Some(
                "pkg:deb/debian/redis-server@5%3A7.0.15-1~deb12u1?arch=amd64&distro=debian-12&upstream=redis"
            )
        );
        assert_eq!(
            identity(&of(&p, None).unwrap_or_default()),
            "pkg:deb/debian/redis-server@5:7.0.15-1~deb12u1"
        );
        assert_eq!(identity("pkg:x/a@1%2B2%"), "pkg:x/a@1+2%");
    }

    #[test]
    fn image_purl() {
        assert_eq!(
            of_image("docker.io/kiln/redis:abc", "sha256:00"),
            "pkg:oci/redis@sha256%3A00?repository_url=docker.io%2Fkiln%2Fredis&tag=abc"
        );
        assert_eq!(
            of_image("localhost:5000/x", "sha256:00"),
            "pkg:oci/x@sha256%3A00?repository_url=localhost%3A5000%2Fx"
        );
    }
}
