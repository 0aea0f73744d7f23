//! Which step of starting a container failed. The pre-exec hook can hand back only an errno;
//! before returning one it writes the step (and the index of the mount, device or path) to a
//! pipe, and the parent turns that into an error that says what was being done.

use crate::{Container, Mount};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A step of the pre-exec hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Cgroup = 1,
    OomScore,
    JoinNamespace,
    Unshare,
    Gate,
    Sysctl,
    RootBind,
    StandardMounts,
    Mount,
    Device,
    ReadonlyPath,
    MaskedPath,
    ReadonlyRoot,
    PivotRoot,
    Hostname,
    Rlimit,
    Bounding,
    NoNewPrivs,
    Groups,
    Gid,
    Uid,
    Capabilities,
    Cwd,
}

const STEPS: &[Step] = &[
    Step::Cgroup,
    Step::OomScore,
    Step::JoinNamespace,
    Step::Unshare,
    Step::Gate,
    Step::Sysctl,
    Step::RootBind,
    Step::StandardMounts,
    Step::Mount,
    Step::Device,
    Step::ReadonlyPath,
    Step::MaskedPath,
    Step::ReadonlyRoot,
    Step::PivotRoot,
    Step::Hostname,
    Step::Rlimit,
    Step::Bounding,
    Step::NoNewPrivs,
    Step::Groups,
    Step::Gid,
    Step::Uid,
    Step::Capabilities,
    Step::Cwd,
];

/// Record the failing step on `report` (called in the hook: a single write, no allocation).
pub(crate) fn record(report: &OwnedFd, step: Step, index: usize) {
    let i = u16::try_from(index).unwrap_or(u16::MAX).to_le_bytes();
    let bytes = [step as u8, i[0], i[1]];
    // SAFETY: write(2) from a stack buffer to an open descriptor.
    unsafe { libc::write(report.as_raw_fd(), bytes.as_ptr().cast(), 3) };
}

/// Read the recorded step, if any (the write end must be closed in this process).
pub(crate) fn read(report: &OwnedFd) -> Option<(Step, usize)> {
    let mut bytes = [0u8; 3];
    // SAFETY: read(2) into a stack buffer from an open descriptor.
    let n = unsafe { libc::read(report.as_raw_fd(), bytes.as_mut_ptr().cast(), 3) };
    if n != 3 {
        return None;
    }
    let step = *STEPS.iter().find(|s| **s as u8 == bytes[0])?;
    Some((step, usize::from(u16::from_le_bytes([bytes[1], bytes[2]]))))
}

/// Say what the step was doing, naming the mount, device, path, sysctl or id involved.
pub(crate) fn describe(c: &Container, step: Step, index: usize) -> String {
    let or = |v: Option<String>| v.unwrap_or_else(|| format!("#{index}"));
    match step {
        Step::Cgroup => format!(
            "joining cgroup {}",
            c.cgroup
                .as_ref()
                .map(|g| g.dir().display().to_string())
                .unwrap_or_default()
        ),
        Step::OomScore => format!("setting oomScoreAdj {}", c.oom_score_adj.unwrap_or(0)),
        Step::JoinNamespace => {
            let joined: Vec<_> = c
                .namespaces
                .iter()
                .flatten()
                .filter_map(|n| n.path.as_ref())
                .collect();
            format!(
                "joining namespace {}",
                or(joined.get(index).map(|p| p.display().to_string()))
            )
        }
        Step::Unshare => "creating namespaces".into(),
        Step::Gate => "waiting for the host set-up (interfaces, bindNS)".into(),
        Step::Sysctl => format!(
            "setting sysctl {}",
            or(c.sysctls.get(index).map(|(k, v)| format!("{k}={v}")))
        ),
        Step::RootBind => format!("binding the root file system {}", c.rootfs.display()),
        Step::StandardMounts => "mounting /proc, /dev and /sys".into(),
        Step::Mount => format!("mounting {}", or(c.mounts.get(index).map(describe_mount))),
        Step::Device => format!(
            "creating device {}",
            or(c.devices.get(index).map(|d| d.path.clone()))
        ),
        Step::ReadonlyPath => format!(
            "making {} read-only",
            or(c.readonly_paths.get(index).cloned())
        ),
        Step::MaskedPath => format!("masking {}", or(c.masked_paths.get(index).cloned())),
        Step::ReadonlyRoot => "making the root file system read-only".into(),
        Step::PivotRoot => format!("switching to the root {}", c.rootfs.display()),
        Step::Hostname => format!("setting the host name {:?}", c.hostname),
        Step::Rlimit => format!("setting rlimit #{index}"),
        Step::Bounding => "dropping capabilities from the bounding set".into(),
        Step::NoNewPrivs => "setting no_new_privs".into(),
        Step::Groups => format!("setting supplementary groups {:?}", c.additional_gids),
        Step::Gid => format!("setting group id {}", c.gid),
        Step::Uid => format!("setting user id {}", c.uid),
        Step::Capabilities => "setting the capability sets".into(),
        Step::Cwd => format!("changing to the working directory {}", c.cwd),
    }
}

fn describe_mount(m: &Mount) -> String {
    match m {
        Mount::Bind { source, target, .. } => format!("{} on {target}", source.display()),
        Mount::Tmpfs { target } => format!("tmpfs on {target}"),
        Mount::Oci {
            source,
            target,
            fstype,
            ..
        } => format!(
            "{source} ({}) on {target}",
            if fstype.is_empty() { "bind" } else { fstype }
        ),
    }
}

/// The error for a failed start: the step when one was recorded.
pub(crate) fn start_error(
    c: &Container,
    report: Option<&OwnedFd>,
    source: io::Error,
) -> crate::RuntimeError {
    let step = report.and_then(read).map(|(s, i)| describe(c, s, i));
    crate::RuntimeError::Start {
        command: c.args.join(" "),
        step: step.unwrap_or_else(|| "starting it".into()),
        source,
    }
}
