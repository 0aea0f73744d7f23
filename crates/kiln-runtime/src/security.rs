//! What limits a container's process: capability sets, resource limits and `no_new_privs`.
//! Names are parsed before the fork; the `apply_*` functions run in the pre-exec hook and only
//! make system calls.

use crate::error::{RuntimeError, errno};
use crate::sys;
use std::io;

/// The five capability sets as bit masks (bit N is capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The bounding set: every capability the process can ever gain.
    pub bounding: u64,
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
    /// Ambient (kept across exec by non-root users).
    pub ambient: u64,
}

/// A capability name (`CAP_NET_ADMIN`, case-insensitive, `CAP_` optional) as its bit.
pub fn capability_bit(name: &str) -> Result<u64, RuntimeError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    let cap: caps::Capability = full
        .parse()
        .map_err(|_| RuntimeError::Config(format!("unknown capability {name:?}")))?;
    Ok(1u64 << cap.index())
}

/// A list of capability names as a mask.
pub fn capability_mask<S: AsRef<str>>(names: &[S]) -> Result<u64, RuntimeError> {
    names
        .iter()
        .try_fold(0, |mask, n| Ok(mask | capability_bit(n.as_ref())?))
}

/// The highest capability the running kernel knows.
pub fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The resource (`libc::RLIMIT_*`).
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// An OCI rlimit type (`RLIMIT_NOFILE`) as the resource number.
pub fn rlimit_resource(name: &str) -> Result<u32, RuntimeError> {
    let r = match name.to_ascii_uppercase().trim_start_matches("RLIMIT_") {
        "CPU" => libc::RLIMIT_CPU,
        "FSIZE" => libc::RLIMIT_FSIZE,
        "DATA" => libc::RLIMIT_DATA,
        "STACK" => libc::RLIMIT_STACK,
        "CORE" => libc::RLIMIT_CORE,
        "RSS" => libc::RLIMIT_RSS,
        "NPROC" => libc::RLIMIT_NPROC,
        "NOFILE" => libc::RLIMIT_NOFILE,
        "MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "AS" => libc::RLIMIT_AS,
        "LOCKS" => libc::RLIMIT_LOCKS,
        "SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "NICE" => libc::RLIMIT_NICE,
        "RTPRIO" => libc::RLIMIT_RTPRIO,
        "RTTIME" => libc::RLIMIT_RTTIME,
        _ => return Err(RuntimeError::Config(format!("unknown rlimit {name:?}"))),
    };
    Ok(r as u32)
}

/// Set the resource limits.
pub(crate) fn apply_rlimits(limits: &[Rlimit]) -> io::Result<()> {
    for l in limits {
        sys::set_rlimit(l.resource, l.soft, l.hard)?;
    }
    Ok(())
}

/// Drop everything outside the bounding set, and keep the permitted set across the coming
/// change of user.
pub(crate) fn apply_bounding(caps: &Capabilities, last: u32) -> io::Result<()> {
    for cap in 0..=last.min(63) {
        if caps.bounding & (1 << cap) == 0 {
            sys::drop_bounding(cap)?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(errno)
}

/// Set the effective, permitted and inheritable sets, then raise the ambient ones (after the
/// change of user).
pub(crate) fn apply_sets(caps: &Capabilities, last: u32) -> io::Result<()> {
    sys::capset(caps.effective, caps.permitted, caps.inheritable)?;
    sys::clear_ambient()?;
    // The kernel raises only what is permitted and inheritable; like runc, the rest of the
    // ambient set is left out rather than failing the start.
    let ambient = caps.ambient & caps.permitted & caps.inheritable;
    for cap in 0..=last.min(63) {
        if ambient & (1 << cap) != 0 {
            sys::raise_ambient(cap)?;
        }
    }
    Ok(())
}

/// Forbid gaining privileges through exec (setuid files, file capabilities).
pub(crate) fn apply_no_new_privs() -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(errno)
}

/// The capabilities Docker gives a container (and BuildKit a RUN step) by default.
pub const DOCKER_DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names() {
        assert_eq!(capability_bit("CAP_CHOWN").expect("valid"), 1);
        assert_eq!(capability_bit("net_admin").expect("valid"), 1 << 12);
        assert_eq!(
            capability_mask(&["CAP_KILL", "CAP_SYS_ADMIN"]).expect("valid"),
            (1 << 5) | (1 << 21)
        );
        let err = capability_bit("CAP_FLY")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("CAP_FLY"), "{err}");
    }

    #[test]
    // The constants are u32 with glibc and c_int with musl.
    #[allow(clippy::unnecessary_cast)]
    fn rlimit_names() {
        assert_eq!(
            rlimit_resource("RLIMIT_NOFILE").expect("valid"),
            libc::RLIMIT_NOFILE as u32
        );
        assert_eq!(
            rlimit_resource("nproc").expect("valid"),
            libc::RLIMIT_NPROC as u32
        );
        assert!(rlimit_resource("RLIMIT_BOGUS").is_err());
    }
}
