//! A [`Container`] turned into what the pre-exec hook needs ([`Prepared`]): C strings, open
//! namespace files, mount flags, device numbers. Configuration errors surface here, in the
//! parent, before anything is started.

use crate::container::{Container, Mount, in_root};
use crate::error::RuntimeError;
use crate::hook::{ParentDeath, Pipes, Prepared};
use crate::rootfs::{PreparedMount, mount_options};
use crate::security;
use nix::mount::MsFlags;
use nix::unistd::{Gid, Uid};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Device nodes bound from the host into the container's /dev.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

pub(crate) fn cstr(s: impl AsRef<[u8]>) -> Result<CString, RuntimeError> {
    CString::new(s.as_ref())
        .map_err(|_| RuntimeError::Nul(String::from_utf8_lossy(s.as_ref()).into()))
}

impl Container {
    /// Everything the hook needs; `cgroup_procs` is the open `cgroup.procs` of the container's
    /// cgroup, created beforehand; `parent_death` ties the runtime's process to its parent.
    pub(crate) fn prepare(
        &self,
        pipes: Pipes,
        cgroup_procs: Option<fs::File>,
        parent_death: Option<ParentDeath>,
    ) -> Result<Prepared, RuntimeError> {
        let root = &self.rootfs;
        let p = |rel: &str| cstr(in_root(root, rel).as_os_str().as_bytes());
        let unified_cgroups = nix::sys::statfs::statfs(crate::cgroup::DEFAULT_ROOT)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        let mut mounts = Vec::new();
        for m in &self.mounts {
            mounts.push(prepare_mount(m, root, unified_cgroups)?);
        }
        let (unshare, join_paths) = self.namespace_plan();
        let mut joins = Vec::new();
        for (path, flag) in join_paths {
            let f = fs::File::open(&path).map_err(|source| RuntimeError::Prepare {
                path: path.clone(),
                source,
            })?;
            joins.push((f, flag));
        }
        let mut host_devices = Vec::new();
        for d in DEVICES {
            host_devices.push((cstr(format!("/dev/{d}"))?, p(&format!("dev/{d}"))?));
        }
        let mut devices = Vec::new();
        for d in &self.devices {
            let kind = match d.kind {
                'c' | 'u' => libc::S_IFCHR,
                'b' => libc::S_IFBLK,
                'p' => libc::S_IFIFO,
                other => {
                    return Err(RuntimeError::Config(format!(
                        "device {}: unknown type {other:?} (c, u, b or p)",
                        d.path
                    )));
                }
            };
            let number = |n: u64, what: &str| {
                u32::try_from(n).map_err(|_| {
                    RuntimeError::Config(format!(
                        "device {}: {what} number {n} is too large",
                        d.path
                    ))
                })
            };
            devices.push((
                p(&d.path)?,
                kind | (d.mode & 0o7777),
                libc::makedev(number(d.major, "major")?, number(d.minor, "minor")?),
                Uid::from_raw(d.uid),
                Gid::from_raw(d.gid),
            ));
        }
        let mut sysctls = Vec::new();
        for (key, value) in &self.sysctls {
            if key.contains("..") || key.starts_with('/') {
                return Err(RuntimeError::Config(format!(
                    "sysctl {key:?}: not a parameter name"
                )));
            }
            sysctls.push((
                cstr(format!("/proc/sys/{}", key.replace('.', "/")))?,
                cstr(value)?,
            ));
        }
        let root_propagation = match self.rootfs_propagation.as_deref() {
            None | Some("" | "rprivate") => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            Some(other) => {
                let (_, propagation, _) = mount_options(&[other.to_string()]);
                if propagation.is_empty() {
                    return Err(RuntimeError::Config(format!(
                        "rootfsPropagation {other:?}: expected shared, slave or private (r-)"
                    )));
                }
                propagation
            }
        };
        let mut dev_links = Vec::new();
        for (target, link) in [
            ("pts/ptmx", "dev/ptmx"),
            ("/proc/self/fd", "dev/fd"),
            ("/proc/self/fd/0", "dev/stdin"),
            ("/proc/self/fd/1", "dev/stdout"),
            ("/proc/self/fd/2", "dev/stderr"),
        ] {
            dev_links.push((cstr(target)?, p(link)?));
        }
        Ok(Prepared {
            rootfs: cstr(root.as_os_str().as_bytes())?,
            proc_dir: p("proc")?,
            sys_dir: p("sys")?,
            dev_dir: p("dev")?,
            pts_dir: p("dev/pts")?,
            shm_dir: p("dev/shm")?,
            host_devices,
            fresh_dev: !self.standard_mounts && self.mounts.iter().any(mounts_fresh_dev),
            devices,
            masked_paths: self
                .masked_paths
                .iter()
                .map(|m| p(m))
                .collect::<Result<_, _>>()?,
            readonly_paths: self
                .readonly_paths
                .iter()
                .map(|m| p(m))
                .collect::<Result<_, _>>()?,
            root_propagation,
            sysctls,
            rlimits: self.rlimits.clone(),
            capabilities: self.capabilities,
            last_capability: security::last_capability(),
            no_new_privileges: self.no_new_privileges,
            seccomp: self.seccomp.clone(),
            oom_score_adj: self
                .oom_score_adj
                .map(|v| cstr(v.to_string()))
                .transpose()?,
            cgroup_procs,
            parent_death,
            pipes,
            dev_links,
            mounts,
            standard_mounts: self.standard_mounts,
            readonly_root: self.readonly_root,
            joins,
            unshare,
            hostname: cstr(&self.hostname)?,
            cwd: cstr(if self.cwd.is_empty() { "/" } else { &self.cwd })?,
            uid: Uid::from_raw(self.uid),
            gid: Gid::from_raw(self.gid),
            groups: self
                .additional_gids
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect(),
        })
    }
}

/// Whether the mount puts a fresh file system (not a bind) on /dev.
fn mounts_fresh_dev(m: &Mount) -> bool {
    matches!(m, Mount::Oci { target, fstype, options, .. }
        if target.trim_end_matches('/') == "/dev"
            && !fstype.is_empty()
            && fstype != "bind"
            && !options.iter().any(|o| o == "bind" || o == "rbind"))
}

fn prepare_mount(
    m: &Mount,
    root: &Path,
    unified_cgroups: bool,
) -> Result<PreparedMount, RuntimeError> {
    let target = |t: &str| cstr(in_root(root, t).as_os_str().as_bytes());
    Ok(match m {
        Mount::Bind {
            source,
            target: t,
            readonly,
        } => PreparedMount {
            source: Some(cstr(source.as_os_str().as_bytes())?),
            target: target(t)?,
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
            readonly_bind: *readonly,
            propagation: MsFlags::empty(),
            optional: false,
            file_target: source.is_file(),
        },
        Mount::Tmpfs { target: t } => PreparedMount {
            source: Some(cstr("tmpfs")?),
            target: target(t)?,
            fstype: Some(cstr("tmpfs")?),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: None,
            readonly_bind: false,
            propagation: MsFlags::empty(),
            optional: false,
            file_target: false,
        },
        Mount::Oci {
            source,
            target: t,
            fstype,
            options,
        } => {
            // A cgroup v1 mount where the host has only the unified hierarchy.
            let fstype = if fstype == "cgroup" && unified_cgroups {
                "cgroup2"
            } else {
                fstype.as_str()
            };
            let (mut flags, propagation, data) = mount_options(options);
            let bind = flags.contains(MsFlags::MS_BIND) || fstype == "bind";
            if fstype == "bind" {
                flags |= MsFlags::MS_BIND;
            }
            let readonly_bind = bind && flags.contains(MsFlags::MS_RDONLY);
            let data = data.join(",");
            PreparedMount {
                source: (!source.is_empty()).then(|| cstr(source)).transpose()?,
                target: target(t)?,
                fstype: (!bind && !fstype.is_empty())
                    .then(|| cstr(fstype))
                    .transpose()?,
                flags,
                data: (!data.is_empty() && !bind)
                    .then(|| cstr(&data))
                    .transpose()?,
                readonly_bind,
                propagation,
                optional: matches!(fstype, "cgroup" | "cgroup2" | "mqueue"),
                file_target: bind && Path::new(source).is_file(),
            }
        }
    })
}
