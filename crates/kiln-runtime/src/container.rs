//! What a container is: the process, its root file system and mounts, namespaces, identity and
//! limits ([`Container`]), filled by the builder for a RUN step or from a bundle's config.json.
//! Also the mount points a container's mounts need in its root, made before it starts and
//! removable afterwards without a trace.

use crate::cgroup::Cgroup;
use crate::error::{RuntimeError, errno};
use crate::seccomp::Program;
use crate::security::{Capabilities, Rlimit};
use nix::sched::CloneFlags;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the container reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only a loopback interface.
    None,
}

/// A mount made inside the container before the process starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind `source` (a host path) at `target`.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path in the container.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A tmpfs at `target`.
    Tmpfs {
        /// Path in the container.
        target: String,
    },
    /// A mount as an OCI runtime config describes it.
    Oci {
        /// Source (a host path for binds, a name otherwise).
        source: String,
        /// Path in the container.
        target: String,
        /// File system type (empty for binds).
        fstype: String,
        /// Options: flags (`ro`, `nosuid`, `rbind`, `rprivate`, ...) and data (`mode=755`).
        options: Vec<String>,
    },
}

/// A namespace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    /// Process ids.
    Pid,
    /// Network.
    Net,
    /// Mounts.
    Mount,
    /// System V IPC.
    Ipc,
    /// Host name.
    Uts,
    /// Control groups.
    Cgroup,
}

impl NsKind {
    pub(crate) fn flag(self) -> CloneFlags {
        match self {
            NsKind::Pid => CloneFlags::CLONE_NEWPID,
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Mount => CloneFlags::CLONE_NEWNS,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
            NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        }
    }
}

/// A namespace to create (no path) or join (the path of an existing one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Which kind.
    pub kind: NsKind,
    /// Join this one instead of creating one.
    pub path: Option<PathBuf>,
}

/// A process to run in a container.
#[derive(Debug, Clone)]
pub struct Container {
    /// The root filesystem (a directory the caller prepared, for example an overlay mount).
    pub rootfs: PathBuf,
    /// The command and its arguments; the command is looked up in the container's PATH.
    pub args: Vec<String>,
    /// The environment, as `KEY=value`.
    pub env: Vec<String>,
    /// Working directory in the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Host name (the container gets its own UTS namespace either way).
    pub hostname: String,
    /// Networking.
    pub network: Network,
    /// Extra mounts, made after /proc, /dev and /sys.
    pub mounts: Vec<Mount>,
    /// Mount /proc, /dev (with the usual devices) and /sys before `mounts` (builds do; OCI
    /// bundles list their own).
    pub standard_mounts: bool,
    /// The namespaces to create or join; `None`: new mount, PID, UTS and IPC namespaces, and a
    /// new network namespace when `network` is `None`.
    pub namespaces: Option<Vec<Namespace>>,
    /// Make the root file system read-only.
    pub readonly_root: bool,
    /// Capability sets; `None` leaves the caller's (full root for the builder).
    pub capabilities: Option<Capabilities>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
    /// A seccomp filter installed just before the exec (after `no_new_privs`), or, without
    /// `no_new_privileges`, before the change of user and capabilities (it then needs
    /// CAP_SYS_ADMIN, which the hook still has there).
    pub seccomp: Option<Arc<Program>>,
    /// The OOM killer's score adjustment (-1000..1000).
    pub oom_score_adj: Option<i32>,
    /// Kernel parameters set in the container's namespaces (`net.ipv4.ip_forward` = `1`).
    pub sysctls: Vec<(String, String)>,
    /// Paths hidden from the container (an empty read-only tmpfs over directories, /dev/null
    /// over files).
    pub masked_paths: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// Device nodes created in the container's /dev.
    pub devices: Vec<Device>,
    /// The cgroup to run in, with its limits.
    pub cgroup: Option<Cgroup>,
    /// Propagation of the root mount (`shared`, `slave`, `private`; default `rprivate`).
    pub rootfs_propagation: Option<String>,
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its path in the container (`/dev/fuse`).
    pub path: String,
    /// `c` (or `u`), `b` or `p`.
    pub kind: char,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Mount points /proc, /dev and /sys need in the root filesystem.
pub const STANDARD_MOUNTPOINTS: &[&str] = &["proc", "dev", "sys"];

impl Container {
    /// A container running `args` on `rootfs` as root, with builder defaults.
    pub fn new(rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Container {
            rootfs: rootfs.into(),
            args,
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "kiln".into(),
            network: Network::Host,
            mounts: Vec::new(),
            standard_mounts: true,
            namespaces: None,
            readonly_root: false,
            capabilities: None,
            rlimits: Vec::new(),
            no_new_privileges: false,
            seccomp: None,
            oom_score_adj: None,
            sysctls: Vec::new(),
            masked_paths: Vec::new(),
            readonly_paths: Vec::new(),
            devices: Vec::new(),
            cgroup: None,
            rootfs_propagation: None,
        }
    }

    /// The namespaces to create (as clone flags) and the paths of those to join.
    pub(crate) fn namespace_plan(&self) -> (CloneFlags, Vec<(PathBuf, CloneFlags)>) {
        let mut joins = Vec::new();
        let mut create = CloneFlags::CLONE_NEWNS;
        match &self.namespaces {
            None => {
                create |=
                    CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
                if self.network == Network::None {
                    create |= CloneFlags::CLONE_NEWNET;
                }
            }
            Some(list) => {
                for ns in list {
                    match &ns.path {
                        Some(path) => joins.push((path.clone(), ns.kind.flag())),
                        None => create |= ns.kind.flag(),
                    }
                }
            }
        }
        (create, joins)
    }

    /// The command line, for messages.
    pub(crate) fn command_line(&self) -> String {
        self.args.join(" ")
    }

    /// Create what the mounts need in the root filesystem (mount points for /proc, /dev, /sys
    /// and each extra mount), recording in `made` what was created, so that it can be removed
    /// again (it is not part of what the process did). What was made before a failure is in
    /// `made` too.
    pub(crate) fn make_mountpoints(&self, made: &mut MountPoints) -> Result<(), RuntimeError> {
        let mut want: Vec<(PathBuf, bool)> = Vec::new();
        if self.standard_mounts {
            want.extend(
                STANDARD_MOUNTPOINTS
                    .iter()
                    .map(|d| (in_root(&self.rootfs, d), true)),
            );
        }
        for m in &self.mounts {
            match m {
                Mount::Bind { source, target, .. } => {
                    want.push((in_root(&self.rootfs, target), source.is_dir()));
                }
                Mount::Tmpfs { target } => want.push((in_root(&self.rootfs, target), true)),
                Mount::Oci {
                    source,
                    target,
                    fstype,
                    ..
                } => {
                    let file = fstype.is_empty() && Path::new(source).is_file();
                    want.push((in_root(&self.rootfs, target), !file));
                }
            }
        }
        for (path, dir) in want {
            if fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            let mut missing = Vec::new();
            let mut p = path.parent();
            while let Some(parent) = p {
                if parent == self.rootfs || fs::symlink_metadata(parent).is_ok() {
                    break;
                }
                missing.push(parent.to_path_buf());
                p = parent.parent();
            }
            let prep = |source| RuntimeError::Prepare {
                path: path.clone(),
                source,
            };
            // Another container on the same root may create them at the same time.
            for d in missing.iter().rev() {
                made.note_parent(d);
                match fs::create_dir(d) {
                    Ok(()) => made.paths.push(d.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(prep(e)),
                }
            }
            made.note_parent(&path);
            let created = if dir {
                fs::create_dir(&path)
            } else {
                fs::File::create_new(&path).map(drop)
            };
            match created {
                Ok(()) => made.paths.push(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(prep(e)),
            }
        }
        Ok(())
    }
}

/// The path `target` (absolute in the container) on the host.
pub(crate) fn in_root(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Mount points made in a root file system, and the times of the directories that held them
/// before, so that removing them leaves the root as it was (a build step's layer must not
/// change because of them).
#[derive(Debug, Default)]
pub(crate) struct MountPoints {
    /// What was created, in order.
    pub(crate) paths: Vec<PathBuf>,
    /// Directories that got a new entry, with their access and modification times before.
    parents: Vec<(PathBuf, nix::sys::time::TimeSpec, nix::sys::time::TimeSpec)>,
}

impl MountPoints {
    /// Remember the times of the directory holding `path`, before the first entry is made in it.
    fn note_parent(&mut self, path: &Path) {
        let Some(parent) = path.parent() else { return };
        if self.parents.iter().any(|(p, _, _)| p == parent) {
            return;
        }
        if let Ok(m) = fs::metadata(parent) {
            self.parents.push((
                parent.to_path_buf(),
                nix::sys::time::TimeSpec::new(m.atime(), m.atime_nsec()),
                nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec()),
            ));
        }
    }

    /// Remove what was created (the last made first) and restore the directories' times. Returns
    /// a description of what could not be removed.
    pub(crate) fn remove(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for p in self.paths.drain(..).rev() {
            let removed = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir(&p),
                Ok(_) => fs::remove_file(&p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                problems.push(format!("mount point {}: {e}", p.display()));
            }
        }
        for (dir, atime, mtime) in self.parents.drain(..).rev() {
            let _ = nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &dir,
                &atime,
                &mtime,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(errno);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_created_and_removed_without_a_trace() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("proc")).expect("mkdir");
        let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            dir.path(),
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
        let mut c = Container::new(dir.path(), vec!["true".into()]);
        c.mounts.push(Mount::Bind {
            source: PathBuf::from("/etc/hostname"),
            target: "/etc/hostname".into(),
            readonly: true,
        });
        let mut made = MountPoints::default();
        c.make_mountpoints(&mut made).expect("prepare");
        let names: Vec<_> = made
            .paths
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("inside").to_path_buf())
            .collect();
        assert_eq!(
            names,
            ["dev", "sys", "etc", "etc/hostname"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert!(dir.path().join("etc/hostname").is_file());
        assert!(made.remove().is_empty());
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["proc"]);
        let m = fs::metadata(dir.path()).expect("metadata");
        assert_eq!(m.mtime(), 1_000_000, "the root's time was not restored");
    }
}
