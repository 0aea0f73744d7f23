//! What a container is: the process, its root file system and mounts, namespaces, identity and
//! limits ([`Container`]), filled by the builder for a RUN step or from a bundle's config.json.
//! Also the mount points a container's mounts need in its root, made before it starts and
//! removable afterwards without a trace.

use crate::cgroup::Cgroup;
use crate::error::{RuntimeError, errno};
use crate::rootfs::resolve::{self, Kind};
use crate::seccomp::Program;
use crate::security::{Capabilities, Rlimit};
use nix::fcntl::{AtFlags, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::{fstat, fstatat, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::ffi::{CStr, CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
    ///
    /// Each path is resolved inside the root ([`resolve`]): a symbolic link in the image is
    /// followed as if the root were `/`, so nothing is created outside it; one that leads to
    /// nothing inside the root is an error naming the mount point.
    pub(crate) fn make_mountpoints(&self, made: &mut MountPoints) -> Result<(), RuntimeError> {
        let mut want: Vec<(&str, Kind)> = Vec::new();
        if self.standard_mounts {
            want.extend(STANDARD_MOUNTPOINTS.iter().map(|d| (*d, Kind::Dir)));
        }
        let kind = |dir: bool| if dir { Kind::Dir } else { Kind::File(0o644) };
        for m in &self.mounts {
            match m {
                Mount::Bind { source, target, .. } => {
                    want.push((target, kind(source.is_dir())));
                }
                Mount::Tmpfs { target } => want.push((target, Kind::Dir)),
                Mount::Oci {
                    source,
                    target,
                    fstype,
                    options,
                } => {
                    // A bind of a file needs a file to mount on (as the hook sees it).
                    let bind = fstype.is_empty()
                        || fstype == "bind"
                        || options.iter().any(|o| o == "bind" || o == "rbind");
                    let file = bind && Path::new(source).is_file();
                    want.push((target, kind(!file)));
                }
            }
        }
        let root = nix::fcntl::open(
            &self.rootfs,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| RuntimeError::Prepare {
            path: self.rootfs.clone(),
            source: errno(e),
        })?;
        for (target, kind) in want {
            let mut record = Recorder {
                made,
                root: &self.rootfs,
                failed: None,
            };
            let r = resolve::create(root.as_fd(), target.as_bytes(), kind, &mut record);
            let failed = record.failed.take();
            let path = in_root(&self.rootfs, target);
            match (r, failed) {
                (_, Some(source)) => return Err(RuntimeError::Prepare { path, source }),
                (Ok(()), None) => {}
                (Err(e), None) => {
                    let source = if e.kind() == io::ErrorKind::NotFound {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "mount point {target}: a symbolic link on the way leads to \
                                 nothing inside the container's root (links are resolved \
                                 inside it: make the link lead to a directory of the root, \
                                 or mount elsewhere): {e}"
                            ),
                        )
                    } else {
                        io::Error::new(e.kind(), format!("mount point {target}: {e}"))
                    };
                    return Err(RuntimeError::Prepare { path, source });
                }
            }
        }
        Ok(())
    }
}

/// Records in [`MountPoints`] what [`resolve::create`] makes.
struct Recorder<'a> {
    made: &'a mut MountPoints,
    root: &'a Path,
    /// The first failure to keep track of a directory (then its entries could not be removed).
    failed: Option<io::Error>,
}

impl resolve::Record for Recorder<'_> {
    fn creating(&mut self, dir: BorrowedFd<'_>) {
        if let Err(e) = self.made.note_dir(dir) {
            self.failed.get_or_insert(e);
        }
    }

    fn created(&mut self, dir: BorrowedFd<'_>, name: &CStr) {
        match self.made.dir(dir) {
            Ok(dir) => {
                let shown = fd_path(&dir)
                    .unwrap_or_else(|| self.root.to_path_buf())
                    .join(OsStr::from_bytes(name.to_bytes()));
                self.made.paths.push(Made {
                    dir,
                    name: name.to_owned(),
                    shown,
                });
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }
}

/// Where `dir` is on the host, for messages.
fn fd_path(dir: &OwnedFd) -> Option<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()
}

/// The path `target` (absolute in the container) on the host.
pub(crate) fn in_root(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

/// Mount points made in a root file system, and the times of the directories that held them
/// before, so that removing them leaves the root as it was (a build step's layer must not
/// change because of them). Each is kept as an open descriptor of the directory that holds it
/// and its name there: removing it never resolves a path again, so what the container did to
/// its root meanwhile (a directory replaced by a link) cannot lead the removal elsewhere.
#[derive(Debug, Default)]
pub(crate) struct MountPoints {
    /// What was created, in order.
    pub(crate) paths: Vec<Made>,
    /// Directories that got a new entry (open for reading), with their access and
    /// modification times before.
    parents: Vec<Parent>,
}

/// One entry made in the root.
#[derive(Debug)]
pub(crate) struct Made {
    /// The directory holding it.
    dir: Arc<OwnedFd>,
    /// Its name there.
    name: CString,
    /// Its path on the host when it was made, for messages.
    pub(crate) shown: PathBuf,
}

/// A directory that got a new entry.
#[derive(Debug)]
struct Parent {
    dir: Arc<OwnedFd>,
    id: (u64, u64),
    atime: TimeSpec,
    mtime: TimeSpec,
}

impl MountPoints {
    /// The directory `dir` (an `O_PATH` descriptor) opened for reading, shared with a noted one.
    fn dir(&mut self, dir: BorrowedFd<'_>) -> io::Result<Arc<OwnedFd>> {
        let st = fstat(dir).map_err(errno)?;
        let id = (st.st_dev, st.st_ino);
        if let Some(p) = self.parents.iter().find(|p| p.id == id) {
            return Ok(p.dir.clone());
        }
        let fd = nix::fcntl::openat(
            dir,
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Arc::new(fd))
    }

    /// Remember the times of the directory `dir`, before the first entry is made in it.
    fn note_dir(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
        let st = fstat(dir).map_err(errno)?;
        let id = (st.st_dev, st.st_ino);
        if self.parents.iter().any(|p| p.id == id) {
            return Ok(());
        }
        let fd = self.dir(dir)?;
        self.parents.push(Parent {
            dir: fd,
            id,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        });
        Ok(())
    }

    /// Remove what was created (the last made first) and restore the directories' times. Returns
    /// a description of what could not be removed.
    pub(crate) fn remove(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for m in self.paths.drain(..).rev() {
            let removed = match fstatat(
                m.dir.as_fd(),
                m.name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => {
                    let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                    let how = if dir {
                        UnlinkatFlags::RemoveDir
                    } else {
                        UnlinkatFlags::NoRemoveDir
                    };
                    match unlinkat(m.dir.as_fd(), m.name.as_c_str(), how) {
                        // The process put files in a directory made for a mount point deeper
                        // down: they are its work, and the directory stays with them (as
                        // BuildKit's mount stub cleaner keeps it).
                        Err(nix::Error::ENOTEMPTY) if dir => Ok(()),
                        r => r.map_err(errno),
                    }
                }
                Err(nix::Error::ENOENT) => Ok(()),
                Err(e) => Err(errno(e)),
            };
            if let Err(e) = removed {
                problems.push(format!("mount point {}: {e}", m.shown.display()));
            }
        }
        for p in self.parents.drain(..).rev() {
            let _ = futimens(p.dir.as_fd(), &p.atime, &p.mtime);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn directories_the_process_filled_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Container::new(dir.path(), vec!["true".into()]);
        c.standard_mounts = false;
        c.mounts.push(Mount::Tmpfs {
            target: "/new/deeper/t".into(),
        });
        let mut made = MountPoints::default();
        c.make_mountpoints(&mut made).expect("prepare");
        fs::write(dir.path().join("new/file"), "work").expect("write");
        assert!(made.remove().is_empty());
        assert!(dir.path().join("new/file").is_file());
        assert!(!dir.path().join("new/deeper").exists());
    }

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
        let real = dir.path().canonicalize().expect("canonicalize");
        let names: Vec<_> = made
            .paths
            .iter()
            .map(|p| p.shown.strip_prefix(&real).expect("inside").to_path_buf())
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

    #[test]
    fn mountpoints_through_links_are_made_inside_the_root_and_removed_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(&root).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("etc")).expect("link");
        std::os::unix::fs::symlink("../../outside", root.join("up")).expect("link");
        let mut c = Container::new(&root, vec!["true".into()]);
        c.standard_mounts = false;
        for target in ["/etc/x", "/up/y"] {
            c.mounts = vec![Mount::Tmpfs {
                target: target.into(),
            }];
            let mut made = MountPoints::default();
            let e = c.make_mountpoints(&mut made).expect_err("dangling inside");
            let message = e.to_string();
            assert!(
                message.contains(&format!("mount point {target}: a symbolic link")),
                "{message}"
            );
            assert!(made.paths.is_empty());
        }
        assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
        // The link's target exists inside the root: the mount point is made there.
        let inside = root.join(outside.strip_prefix("/").expect("absolute"));
        fs::create_dir_all(&inside).expect("mkdir");
        c.mounts = vec![Mount::Tmpfs {
            target: "/etc/x".into(),
        }];
        let mut made = MountPoints::default();
        c.make_mountpoints(&mut made).expect("prepare");
        assert!(inside.join("x").is_dir());
        assert_eq!(fs::read_dir(&outside).expect("outside").count(), 0);
        // The container swaps the directory for a link out of the root: the removal stays
        // with the directory it made the mount point in.
        fs::rename(&inside, root.join("moved")).expect("rename");
        std::os::unix::fs::symlink(&outside, &inside).expect("link");
        fs::create_dir(outside.join("x")).expect("mkdir");
        assert!(made.remove().is_empty());
        assert!(!root.join("moved/x").exists());
        assert!(
            outside.join("x").is_dir(),
            "the removal followed the link out"
        );
    }
}
