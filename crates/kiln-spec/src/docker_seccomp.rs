//! Docker's seccomp profiles, as data: Docker's default profile ([`DEFAULT_PROFILE`]) and the
//! resolution Docker applies to a profile in its own format before it writes config.json
//! ([`resolve`]): the architectures from `archMap`, and each rule kept or dropped by its
//! `includes` and `excludes` conditions on the container's bounding capabilities, the
//! architecture and the kernel's version. The result is the runtime-spec `linux.seccomp`
//! section ([`Seccomp`]) `docker run` puts into a container's config.json.
//!
//! Pure data and computation: nothing here reads the running system. kiln-assemble resolves
//! the profile for the target of a build (a manifest's `seccomp: docker-default`), and
//! kiln-runtime for the host it runs `RUN` steps on, then compiles it to BPF.

use crate::{Invalid, Seccomp, SeccompArg, Syscall};
use serde::Deserialize;

/// Docker's default seccomp profile, in Docker's profile format (with `archMap` and rules
/// included or excluded by capability, architecture and kernel version). Taken unchanged from
/// moby's `profiles/seccomp/default.json` (module github.com/moby/profiles/seccomp v0.2.3, as
/// vendored by Docker v29.7.2), Apache-2.0 licensed, like kiln; see docker_seccomp/README.md.
pub const DEFAULT_PROFILE: &str = include_str!("docker_seccomp/docker-default.json");

/// Go architecture names (`GOARCH`, the `architecture` of an OCI image platform) with the name
/// Docker's profile conditions use for them (libseccomp's) and the runtime-spec architecture
/// `archMap` is keyed by, as moby's `goToNative` and `nativeToSeccomp` tables give them.
const ARCHES: [(&str, &str, &str); 16] = [
    ("386", "x86", "SCMP_ARCH_X86"),
    ("amd64", "amd64", "SCMP_ARCH_X86_64"),
    ("arm", "arm", "SCMP_ARCH_ARM"),
    ("arm64", "arm64", "SCMP_ARCH_AARCH64"),
    ("loong64", "loong64", "SCMP_ARCH_LOONGARCH64"),
    ("mips64", "mips64", "SCMP_ARCH_MIPS64"),
    ("mips64p32", "mips64n32", "SCMP_ARCH_MIPS64N32"),
    ("mips64le", "mipsel64", "SCMP_ARCH_MIPSEL64"),
    ("mips64p32le", "mips3l64n32", "SCMP_ARCH_MIPSEL64N32"),
    ("mipsle", "mipsel", "SCMP_ARCH_MIPSEL"),
    ("ppc", "ppc", "SCMP_ARCH_PPC"),
    ("ppc64", "ppc64", "SCMP_ARCH_PPC64"),
    ("ppc64le", "ppc64le", "SCMP_ARCH_PPC64LE"),
    ("riscv64", "riscv64", "SCMP_ARCH_RISCV64"),
    ("s390", "s390", "SCMP_ARCH_S390"),
    ("s390x", "s390x", "SCMP_ARCH_S390X"),
];

/// The architecture names Docker's resolution knows (Go's names: `amd64`, `arm64`, ...).
pub fn architectures() -> impl Iterator<Item = &'static str> {
    ARCHES.iter().map(|(go, _, _)| *go)
}

/// The runtime-spec name (`SCMP_ARCH_X86_64`) of a Go architecture name (`amd64`).
pub fn scmp_arch(goarch: &str) -> Option<&'static str> {
    ARCHES
        .iter()
        .find(|(go, _, _)| *go == goarch)
        .map(|(_, _, scmp)| *scmp)
}

/// A kernel version as Docker's profile conditions compare it: `6.1` of `6.1.0-18-amd64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// The first number (`6`).
    pub major: u32,
    /// The second number (`1`).
    pub minor: u32,
}

impl KernelVersion {
    /// The first two numbers of a kernel release (`6.1.0-18-amd64`, `4.8`, `3.12-rc5`).
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(KernelVersion {
            major,
            minor: minor.parse().ok()?,
        })
    }
}

/// A profile in Docker's format that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not JSON of the expected shape.
    #[error("seccomp profile, line {line} column {column}: {message}")]
    Syntax {
        /// Line (from 1).
        line: usize,
        /// Column (from 1).
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A field holds a value Docker's resolution refuses.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The target architecture is not one Docker's resolution knows.
    #[error(
        "Docker's seccomp profiles cannot be resolved for architecture {arch:?}: use one of {}",
        architectures().collect::<Vec<_>>().join(", ")
    )]
    Architecture {
        /// The architecture asked for.
        arch: String,
    },
}

/// Docker's default profile ([`DEFAULT_PROFILE`]) resolved as [`resolve`] does.
pub fn default_profile<S: AsRef<str>>(
    caps: &[S],
    goarch: &str,
    kernel: KernelVersion,
) -> Result<Seccomp, ProfileError> {
    resolve(DEFAULT_PROFILE, caps, goarch, kernel)
}

/// A profile in Docker's format.
#[derive(Deserialize)]
struct Profile {
    #[serde(default, rename = "defaultAction")]
    default_action: String,
    #[serde(default, rename = "defaultErrnoRet")]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default, rename = "archMap")]
    arch_map: Option<Vec<ArchEntry>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default, rename = "listenerPath")]
    listener_path: Option<String>,
    #[serde(default, rename = "listenerMetadata")]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Deserialize)]
struct ArchEntry {
    architecture: String,
    #[serde(default, rename = "subArchitectures")]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    action: String,
    #[serde(default, rename = "errnoRet")]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<SeccompArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default, rename = "minKernel")]
    min_kernel: Option<String>,
}

/// Resolve a profile in Docker's format (`text`, JSON) as Docker does for a container with
/// bounding set `caps` (names such as `CAP_SYS_ADMIN`) on architecture `goarch` (Go's name:
/// `amd64`, `arm64`, ...) and kernel `kernel`: `archMap` gives the architectures, and each rule
/// is kept or dropped by its `includes` and `excludes` (architecture, capabilities, minimum
/// kernel). The result is a runtime-spec `linux.seccomp`. Unlike Docker, a profile without a
/// default action is an error rather than no filter.
pub fn resolve<S: AsRef<str>>(
    text: &str,
    caps: &[S],
    goarch: &str,
    kernel: KernelVersion,
) -> Result<Seccomp, ProfileError> {
    let Some(&(_, arch, scmp)) = ARCHES.iter().find(|(go, _, _)| *go == goarch) else {
        return Err(ProfileError::Architecture {
            arch: goarch.to_string(),
        });
    };
    let profile: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Syntax {
        line: e.line(),
        column: e.column(),
        message: crate::strip_position(&e.to_string()),
    })?;
    if profile.default_action.is_empty() {
        return Err(invalid(
            "defaultAction",
            &profile.default_action,
            "is missing: give the action for system calls no rule names",
        ));
    }
    let has_cap = |c: &String| caps.iter().any(|have| have.as_ref() == c);
    let mut architectures = profile.architectures.unwrap_or_default();
    if let Some(map) = profile.arch_map.filter(|m| !m.is_empty()) {
        if !architectures.is_empty() {
            return Err(invalid(
                "archMap",
                &architectures,
                "both architectures and archMap are given: use one of them",
            ));
        }
        if let Some(entry) = map.into_iter().find(|a| a.architecture == scmp) {
            architectures.push(entry.architecture);
            architectures.extend(entry.sub_architectures.unwrap_or_default());
        }
    }
    let mut syscalls = Vec::new();
    for (i, call) in profile.syscalls.unwrap_or_default().into_iter().enumerate() {
        let field = |name: &str| format!("syscalls[{i}].{name}");
        let mut names = call.names.unwrap_or_default();
        if let Some(name) = call.name.filter(|n| !n.is_empty()) {
            if !names.is_empty() {
                return Err(invalid(
                    &field("name"),
                    &name,
                    "both name and names are given: use names",
                ));
            }
            names.push(name);
        }
        if let Some(ex) = &call.excludes
            && (ex.arches.iter().flatten().any(|a| a == arch)
                || ex.caps.iter().flatten().any(has_cap)
                || min_kernel(ex, kernel, &field("excludes.minKernel"))? == Some(true))
        {
            continue;
        }
        if let Some(inc) = &call.includes {
            let arches = inc.arches.as_deref().unwrap_or_default();
            if (!arches.is_empty() && !arches.iter().any(|a| a == arch))
                || !inc.caps.iter().flatten().all(has_cap)
                || min_kernel(inc, kernel, &field("includes.minKernel"))? == Some(false)
            {
                continue;
            }
        }
        syscalls.push(Syscall {
            names,
            action: call.action,
            errno_ret: call.errno_ret,
            args: call.args.unwrap_or_default(),
        });
    }
    Ok(Seccomp {
        default_action: profile.default_action,
        default_errno_ret: profile.default_errno_ret,
        architectures,
        flags: profile.flags.unwrap_or_default(),
        listener_path: profile.listener_path.unwrap_or_default(),
        listener_metadata: profile.listener_metadata.unwrap_or_default(),
        syscalls,
    })
}

fn invalid(field: &str, value: &impl serde::Serialize, message: &str) -> ProfileError {
    ProfileError::Invalid(Invalid::new(field, value, message))
}

/// Whether `kernel` is at least a filter's `minKernel` (`None` without one).
fn min_kernel(
    filter: &Filter,
    kernel: KernelVersion,
    field: &str,
) -> Result<Option<bool>, ProfileError> {
    let Some(min) = filter.min_kernel.as_deref().filter(|m| !m.is_empty()) else {
        return Ok(None);
    };
    let version = min
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .map(|(major, minor)| KernelVersion { major, minor })
        .ok_or_else(|| invalid(field, &min, "expected a kernel version such as \"4.8\""))?;
    Ok(Some(kernel >= version))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: KernelVersion = KernelVersion { major: 6, minor: 1 };

    fn rules_for<'a>(spec: &'a Seccomp, name: &str) -> Vec<&'a Syscall> {
        spec.syscalls
            .iter()
            .filter(|s| s.names.iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn the_default_profile_is_resolved_by_architecture() {
        let none: [&str; 0] = [];
        let amd64 = default_profile(&none, "amd64", KERNEL).expect("resolves");
        assert_eq!(amd64.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(amd64.default_errno_ret, Some(1));
        assert_eq!(
            amd64.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert_eq!(rules_for(&amd64, "arch_prctl").len(), 1);
        assert!(rules_for(&amd64, "riscv_flush_icache").is_empty());
        let riscv = default_profile(&none, "riscv64", KERNEL).expect("resolves");
        assert_eq!(riscv.architectures, ["SCMP_ARCH_RISCV64"]);
        assert_eq!(rules_for(&riscv, "riscv_flush_icache").len(), 1);
        assert!(rules_for(&riscv, "arch_prctl").is_empty());
        // 32-bit ARM has no archMap entry: Docker leaves the architectures to the runtime.
        let arm = default_profile(&none, "arm", KERNEL).expect("resolves");
        assert!(arm.architectures.is_empty());
        assert_eq!(rules_for(&arm, "arm_fadvise64_64").len(), 1);
        let e = default_profile(&none, "x86_64", KERNEL).expect_err("Go's names only");
        assert!(e.to_string().contains("\"x86_64\""), "{e}");
        assert!(e.to_string().contains("amd64, arm"), "{e}");
    }

    #[test]
    fn the_default_profile_is_resolved_by_capabilities_and_kernel() {
        let none: [&str; 0] = [];
        let bare = default_profile(&none, "amd64", KERNEL).expect("resolves");
        for call in ["mount", "unshare", "setns", "reboot", "chroot", "bpf"] {
            assert!(rules_for(&bare, call).is_empty(), "{call}");
        }
        let clone = rules_for(&bare, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args[0].op, "SCMP_CMP_MASKED_EQ");
        assert_eq!(rules_for(&bare, "clone3")[0].errno_ret, Some(38));
        let admin = default_profile(&["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"], "arm64", KERNEL)
            .expect("resolves");
        assert_eq!(admin.architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        for call in ["mount", "unshare", "setns", "chroot"] {
            assert_eq!(rules_for(&admin, call).len(), 1, "{call}");
        }
        assert!(
            rules_for(&admin, "clone")
                .iter()
                .all(|r| r.args.is_empty() && r.action == "SCMP_ACT_ALLOW")
        );
        // minKernel: ptrace is allowed from 4.8 on.
        let old = default_profile(&none, "amd64", KernelVersion { major: 4, minor: 4 })
            .expect("resolves");
        assert!(rules_for(&old, "ptrace").is_empty());
        assert_eq!(rules_for(&bare, "ptrace").len(), 1);
    }

    #[test]
    fn the_resolved_profile_is_a_valid_config_section() {
        let spec = default_profile(&["CAP_NET_ADMIN"], "amd64", KERNEL).expect("resolves");
        let text = String::from_utf8(crate::to_go_json(&spec)).expect("utf-8");
        let back: Seccomp = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, spec);
        assert!(
            !text.contains("includes") && !text.contains("archMap"),
            "{text}"
        );
    }

    #[test]
    fn docker_format_errors() {
        let amd64 = |text: &str| resolve(text, &["CAP_CHOWN"], "amd64", KERNEL);
        let e = amd64(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#,
        )
        .expect_err("both");
        assert!(e.to_string().contains("archMap"), "{e}");
        let e = amd64(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .expect_err("both");
        assert!(e.to_string().contains("syscalls[0].name"), "{e}");
        let e = amd64(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]}"#,
        )
        .expect_err("version");
        assert!(
            e.to_string()
                .contains("syscalls[0].includes.minKernel = \"four\""),
            "{e}"
        );
        let e = amd64("{\"syscalls\": 3}").expect_err("not a list");
        assert!(matches!(e, ProfileError::Syntax { line: 1, .. }), "{e}");
        let e = amd64("{}").expect_err("no default");
        assert!(e.to_string().starts_with("defaultAction"), "{e}");
        let spec = amd64(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .expect("the old single name is accepted");
        assert_eq!(spec.syscalls[0].names, ["read"]);
    }

    #[test]
    fn kernel_versions() {
        let v = |major, minor| Some(KernelVersion { major, minor });
        assert_eq!(KernelVersion::parse("6.1.0-18-amd64"), v(6, 1));
        assert_eq!(KernelVersion::parse("3.12-rc5"), v(3, 12));
        assert_eq!(KernelVersion::parse("4.8"), v(4, 8));
        assert_eq!(KernelVersion::parse("5.10.0+"), v(5, 10));
        assert_eq!(KernelVersion::parse("six"), None);
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("6.x"), None);
    }
}
