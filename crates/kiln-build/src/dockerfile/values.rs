//! Typed flag values and their checks: file modes, checksums, platforms, RUN networks and
//! HEALTHCHECK durations and retries, each parsed the way BuildKit parses it.

use crate::shell_lex::expand;
use std::time::Duration;

/// A flag value parsed from its text. The error says what is accepted.
pub trait FlagValue: Sized + Clone {
    /// Parse the (expanded) text of the value.
    fn parse(text: &str) -> Result<Self, String>;
}

/// A flag value that BuildKit expands with the build's variables. Without a `$` it cannot
/// depend on them: it is expanded and checked when the Dockerfile is parsed. Otherwise it is
/// checked once expanded, at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred<T> {
    /// The value, checked at parse time.
    Known(T),
    /// The raw text, which names variables.
    Expand(String),
}

impl<T: FlagValue> Deferred<T> {
    /// Check `raw` now if it names no variable.
    pub(crate) fn new(raw: &str, escape: char) -> Result<Self, String> {
        if raw.contains('$') {
            return Ok(Deferred::Expand(raw.to_string()));
        }
        let word = expand(raw, &[], escape).map_err(|e| e.0)?;
        T::parse(&word).map(Deferred::Known)
    }

    /// The value: as checked at parse time, or the raw text expanded by `expand` and checked.
    /// The error starts with the raw text: `$MODE: it expands to "x"; use ...`.
    pub fn resolve(
        &self,
        expand: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<T, String> {
        match self {
            Deferred::Known(v) => Ok(v.clone()),
            Deferred::Expand(raw) => {
                let word = expand(raw).map_err(|m| format!("{raw}: {m}"))?;
                T::parse(&word).map_err(|m| format!("{raw}: it expands to {word:?}; {m}"))
            }
        }
    }

    /// As [`Deferred::resolve`], but a value that expands to nothing (`--chmod=$UNSET`) is no
    /// value at all, as BuildKit treats a flag that expands to the empty string as not given.
    pub fn resolve_unless_empty(
        &self,
        expand: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<Option<T>, String> {
        match self {
            Deferred::Known(v) => Ok(Some(v.clone())),
            Deferred::Expand(raw) => {
                let word = expand(raw).map_err(|m| format!("{raw}: {m}"))?;
                if word.is_empty() {
                    return Ok(None);
                }
                T::parse(&word)
                    .map(Some)
                    .map_err(|m| format!("{raw}: it expands to {word:?}; {m}"))
            }
        }
    }
}

/// A file mode for `--chmod`: octal, at most 7777.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl FlagValue for Mode {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || "use an octal mode from 0 to 7777, such as 755".to_string();
        if text.is_empty() || !text.chars().all(|c| ('0'..='7').contains(&c)) {
            return Err(bad());
        }
        u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Mode)
            .ok_or_else(bad)
    }
}

/// An expected content digest for `ADD --checksum`. kiln verifies sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum(pub String);

impl Checksum {
    /// The lower-case hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl FlagValue for Checksum {
    fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("sha256", hex))
                if hex.len() == 64
                    && hex
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
            {
                Ok(Checksum(hex.to_string()))
            }
            Some(("sha384" | "sha512", _)) => {
                Err("kiln verifies sha256 checksums only: use sha256:<64 hex digits>".into())
            }
            _ => Err("use sha256: and 64 lower-case hex digits".into()),
        }
    }
}

/// A `--platform` of FROM. kiln builds Linux images, so only the architecture varies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The architecture in Go's naming (`amd64`, `arm64`); `None` for the target's own.
    pub arch: Option<String>,
    /// The variant (`v7`, `v8`), if given.
    pub variant: Option<String>,
}

/// Architectures in Go's naming, after `normalize_arch`.
const ARCHES: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips64le", "ppc64le", "riscv64", "s390x",
];

impl FlagValue for Platform {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || "use linux/ARCH[/VARIANT], such as linux/amd64 or linux/arm64".to_string();
        let lower = text.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.len() > 3
            || parts.iter().any(|p| {
                p.is_empty()
                    || !p
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            })
        {
            return Err(bad());
        }
        let arch = |a: &str| {
            let a = match kiln_oci::spec::normalize_arch(a) {
                "i386" => "386",
                other => other,
            };
            ARCHES
                .contains(&a)
                .then(|| a.to_string())
                .ok_or_else(|| format!("unknown architecture {a:?}; {}", bad()))
        };
        match parts.as_slice() {
            ["linux"] => Ok(Platform {
                arch: None,
                variant: None,
            }),
            [one] => arch(one).map(|a| Platform {
                arch: Some(a),
                variant: None,
            }),
            ["linux", a, rest @ ..] => Ok(Platform {
                arch: Some(arch(a)?),
                variant: rest.first().map(|v| v.to_string()),
            }),
            [os, ..] => Err(format!("kiln builds linux images, not {os}; {}", bad())),
            [] => Err(bad()),
        }
    }
}

/// The network of a RUN step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunNetwork {
    /// The build's default (`--network` of the build).
    #[default]
    Default,
    /// No network: only a loopback interface.
    None,
    /// The host's network.
    Host,
}

impl FlagValue for RunNetwork {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "default" => Ok(RunNetwork::Default),
            "none" => Ok(RunNetwork::None),
            "host" => Ok(RunNetwork::Host),
            _ => Err("use default, none or host".into()),
        }
    }
}

/// How a RUN step is confined (`--security`, as BuildKit's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunSecurity {
    /// Docker's default sandbox (capabilities, seccomp, masked paths, no_new_privs).
    #[default]
    Sandbox,
    /// All of root's capabilities, no seccomp filter, nothing masked: only when the build
    /// allows it (`--allow security.insecure`, as BuildKit's entitlement).
    Insecure,
}

impl FlagValue for RunSecurity {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "sandbox" => Ok(RunSecurity::Sandbox),
            "insecure" => Ok(RunSecurity::Insecure),
            _ => Err("use sandbox or insecure".into()),
        }
    }
}

/// The ports an EXPOSE word names (`80`, `53/udp`, `8000-8002`), each as `PORT/PROTO`.
pub(crate) fn ports(spec: &str) -> Result<Vec<String>, String> {
    let bad = || "use PORT[/tcp|/udp|/sctp] or FIRST-LAST[/PROTO], such as 80/tcp".to_string();
    let (range, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let port = |s: &str| {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u16>().map_err(|_| bad())
    };
    let (first, last) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(range)?, port(range)?),
    };
    if first > last {
        return Err(bad());
    }
    Ok((first..=last).map(|p| format!("{p}/{proto}")).collect())
}

/// A HEALTHCHECK duration: Go's syntax (`30s`, `1m30s`, `1.5h`, `500ms`), 0 or at least 1ms.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = || "use a number and a unit (ns, us, ms, s, m, h), such as 30s or 1m30s".to_string();
    let (negative, mut s) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    const MAX: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let int = &s[..int_len];
        s = &s[int_len..];
        let mut frac = "";
        if let Some(rest) = s.strip_prefix('.') {
            let len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac = &rest[..len];
            s = &rest[len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit: u128 = match &s[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        s = &s[unit_len..];
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let digits = &frac[..frac.len().min(18)];
        let part: u128 = if digits.is_empty() {
            0
        } else {
            let n: u128 = digits.parse().map_err(|_| bad())?;
            n * unit / 10u128.pow(u32::try_from(digits.len()).unwrap_or(18))
        };
        total = whole
            .checked_mul(unit)
            .and_then(|w| w.checked_add(part))
            .and_then(|p| p.checked_add(total))
            .filter(|t| *t <= MAX)
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Ok(Duration::ZERO);
    }
    if negative || total < 1_000_000 {
        return Err("use 0 or a duration of at least 1ms".into());
    }
    Ok(Duration::from_nanos(
        u64::try_from(total).map_err(|_| bad())?,
    ))
}

/// HEALTHCHECK retries: a whole number that fits in 32 bits, not negative.
pub(crate) fn retries(text: &str) -> Result<u32, String> {
    let n: i32 = text
        .parse()
        .map_err(|_| "use a whole number of retries, such as 3".to_string())?;
    u32::try_from(n).map_err(|_| "retries cannot be negative".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(Mode::parse("755"), Ok(Mode(0o755)));
        assert_eq!(Mode::parse("0600"), Ok(Mode(0o600)));
        assert_eq!(Mode::parse("7777"), Ok(Mode(0o7777)));
        for bad in ["", "8", "+755", "10000", "u+x", "0o755", "-1"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums() {
        let hex = "a".repeat(64);
        assert_eq!(
            Checksum::parse(&format!("sha256:{hex}")),
            Ok(Checksum(hex.clone()))
        );
        assert!(Checksum::parse(&hex).is_err());
        assert!(Checksum::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Checksum::parse("sha256:abc").is_err());
        let e = Checksum::parse(&format!("sha512:{}", "a".repeat(128))).expect_err("sha512");
        assert!(e.contains("sha256 checksums only"), "{e}");
    }

    #[test]
    fn platforms() {
        let p = |s: &str| Platform::parse(s).map(|p| (p.arch, p.variant));
        assert_eq!(p("linux/amd64"), Ok((Some("amd64".into()), None)));
        assert_eq!(
            p("linux/arm/v7"),
            Ok((Some("arm".into()), Some("v7".into())))
        );
        assert_eq!(p("Linux/X86_64"), Ok((Some("amd64".into()), None)));
        assert_eq!(p("linux"), Ok((None, None)));
        assert_eq!(p("arm64"), Ok((Some("arm64".into()), None)));
        assert!(p("windows/amd64").expect_err("os").contains("linux images"));
        assert!(
            p("linux/vax")
                .expect_err("arch")
                .contains("unknown architecture")
        );
        for bad in ["", "linux/", "linux/amd64/v1/x", "a b"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deferred_values() {
        let d = Deferred::<Mode>::new("755", '\\').expect("literal");
        assert_eq!(d, Deferred::Known(Mode(0o755)));
        assert!(Deferred::<Mode>::new("75x", '\\').is_err());
        let d = Deferred::<Mode>::new("${M}", '\\').expect("later");
        assert_eq!(d, Deferred::Expand("${M}".into()));
        assert_eq!(d.resolve(|_| Ok("640".into())), Ok(Mode(0o640)));
        assert_eq!(
            d.resolve(|_| Ok("x".into())),
            Err("${M}: it expands to \"x\"; use an octal mode from 0 to 7777, such as 755".into())
        );
        // A value that expands to nothing is no value, as in BuildKit.
        assert_eq!(d.resolve_unless_empty(|_| Ok(String::new())), Ok(None));
        assert_eq!(
            d.resolve_unless_empty(|_| Ok("750".into())),
            Ok(Some(Mode(0o750)))
        );
        assert!(d.resolve_unless_empty(|_| Ok("9".into())).is_err());
    }

    #[test]
    fn durations_follow_go() {
        let ns = |s: &str| duration(s).map(|d| d.as_nanos());
        assert_eq!(ns("30s"), Ok(30_000_000_000));
        assert_eq!(ns("1m30s"), Ok(90_000_000_000));
        assert_eq!(ns("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(ns(".5s"), Ok(500_000_000));
        assert_eq!(ns("1ms"), Ok(1_000_000));
        assert_eq!(ns("2\u{b5}s1ms"), Ok(1_002_000));
        assert_eq!(ns("0"), Ok(0));
        assert_eq!(ns("0s"), Ok(0));
        assert_eq!(ns("+5s"), Ok(5_000_000_000));
        for bad in [
            "",
            "30",
            "s",
            "1x",
            ".s",
            "1.2.3s",
            "-5s",
            "500us",
            "9999999999h",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exposed_ports() {
        assert_eq!(ports("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(ports("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(ports("8000-8001/tcp").map(|p| p.len()), Ok(2));
        for bad in ["", "x", "80/foo", "+80", "70000", "9-8", "1-"] {
            assert!(ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_counts() {
        assert_eq!(retries("3"), Ok(3));
        assert_eq!(retries("+3"), Ok(3));
        assert!(retries("-1").expect_err("negative").contains("negative"));
        assert!(retries("x").is_err());
        assert!(retries("4294967296").is_err());
    }
}
