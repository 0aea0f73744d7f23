//! Which step of starting a container failed. The pre-exec hook can hand back only an errno;
//! before returning one it writes the step (and the index of the mount, device or path) to a
//! pipe, and the parent turns that into an error that says what was being done. The hook's last
//! record, just before the exec, is [`Step::Exec`]: a start that fails after it failed to
//! execute the program.

use crate::container::{Container, Mount};
use crate::error::RuntimeError;
use std::io;
use std::os::fd::OwnedFd;

/// A step of the pre-exec hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Signals = 1,
    Cgroup,
    OomScore,
    JoinNamespace,
    Unshare,
    Fork,
    ParentDeath,
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
    Seccomp,
    Exec,
}

const STEPS: &[Step] = &[
    Step::Signals,
    Step::Cgroup,
    Step::OomScore,
    Step::JoinNamespace,
    Step::Unshare,
    Step::Fork,
    Step::ParentDeath,
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
    Step::Seccomp,
    Step::Exec,
];

/// Record the failing step on `report` (called in the hook: a single write, no allocation).
pub(crate) fn record(report: &OwnedFd, step: Step, index: usize) {
    let i = u16::try_from(index).unwrap_or(u16::MAX).to_le_bytes();
    let bytes = [step as u8, i[0], i[1]];
    // Nothing to do if it fails: the start then fails without naming the step.
    let _ = nix::unistd::write(report, &bytes);
}

/// Read the recorded step, if any (the write end must be closed in this process).
pub(crate) fn read(report: &OwnedFd) -> Option<(Step, usize)> {
    let mut bytes = [0u8; 3];
    if nix::unistd::read(report, &mut bytes).ok()? != 3 {
        return None;
    }
    let step = *STEPS.iter().find(|s| **s as u8 == bytes[0])?;
    Some((step, usize::from(u16::from_le_bytes([bytes[1], bytes[2]]))))
}

/// Say what the step was doing, naming the mount, device, path, sysctl or id involved.
pub(crate) fn describe(c: &Container, step: Step, index: usize) -> String {
    let or = |v: Option<String>| v.unwrap_or_else(|| format!("#{index}"));
    match step {
        Step::Signals => "unblocking signals".into(),
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
        Step::Fork => "forking the container's first process".into(),
        Step::ParentDeath => "tying the container to the process that waits for it".into(),
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
        Step::Seccomp => format!(
            "installing the seccomp filter ({} instructions)",
            c.seccomp.as_ref().map_or(0, |s| s.filter().len())
        ),
        Step::Exec => format!(
            "executing {:?}",
            c.args.first().cloned().unwrap_or_default()
        ),
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

/// The error for a failed start: the step when one was recorded, an exec failure when the hook
/// got to the end, a failure to fork or set up stdio otherwise.
pub(crate) fn start_error(c: &Container, report: &OwnedFd, source: io::Error) -> RuntimeError {
    let command = c.command_line();
    match read(report) {
        Some((Step::Exec, _)) => RuntimeError::Exec { command, source },
        Some((step @ (Step::Uid | Step::Gid | Step::Groups), i))
            if source.raw_os_error() == Some(libc::EINVAL)
                && crate::userns::in_user_namespace() =>
        {
            RuntimeError::Start {
                command,
                step: format!(
                    "{}, an id this rootless build's user namespace does not map (it maps the \
                     user and the subordinate ranges in /etc/subuid and /etc/subgid: give the \
                     user a larger range)",
                    describe(c, step, i)
                ),
                source,
            }
        }
        Some((step, i)) => RuntimeError::Start {
            command,
            step: describe(c, step, i),
            source,
        },
        None => RuntimeError::Spawn { command, source },
    }
}
