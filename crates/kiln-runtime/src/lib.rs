//! kiln-runtime runs a process as a container: in new or joined namespaces, on a prepared root
//! filesystem with its mounts, after `pivot_root`, limited by capabilities, rlimits,
//! no_new_privs, a seccomp filter ([`seccomp`]), masked and read-only paths, sysctls and a
//! cgroup v2 (or a process limit: [`process_limit`]), as the requested user.
//! `kiln image build` runs `RUN` steps with it; kiln-init and `kiln run bundle` run OCI bundles
//! with it ([`bundle`]), carrying out runtime.json's host mounts, interfaces and namespace
//! bindings.
//!
//! All three go through one [`lifecycle`]: create (host mounts, cgroup, mount points), start
//! (plain or gated), wait, and clean up on every path. It does not own image unpacking or the
//! overlay a build step runs on (kiln-build), nor supervision and restarts (kiln-init).
//!
//! Written on nix/libc rather than youki's libcontainer: it must be a small part of the static
//! PID 1 in the guest, and it needs exactly the OCI subset LinuxKit's configs use.
//!
//! The process is started with `std::process::Command` and a pre-exec hook (`hook`) that
//! unshares the namespaces and forks once more, so that the command is PID 1 of its PID
//! namespace; the intermediate process only waits and passes on the exit status. With
//! [`Options::die_with_parent`] it also dies with its parent, taking the container, its PID
//! namespace and its cgroup along. [`private_mount_namespace`] keeps what a whole process (a
//! build) mounts off the host. [`userns`] starts a program (kiln itself, for a rootless
//! build) in a user namespace mapped from the user's subordinate ids, where this runtime runs
//! containers too. All `unsafe` code is in the private `sys` module.
//!
//! ```no_run
//! use kiln_runtime::lifecycle::{Created, Options};
//! use std::process::Stdio;
//!
//! // What `kiln run bundle --prepare DIR` does.
//! let created = Created::from_bundle("bundle".as_ref(), Options { host_mounts: true, ..Options::default() })?;
//! let exit = created.run(Stdio::inherit(), Stdio::inherit())?;
//! println!("the container exited with {exit}");
//! # Ok::<(), kiln_runtime::RuntimeError>(())
//! ```
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bundle;
pub mod cgroup;
mod container;
mod error;
mod failure;
mod hook;
mod host_mounts;
pub mod lifecycle;
mod mount_namespace;
mod netdev;
mod prepare;
mod rootfs;
pub mod seccomp;
pub mod security;
mod spawn;
mod sys;
pub mod userns;

pub use cgroup::{Cgroup, Hierarchy, ProcessLimit, process_limit};
pub use container::{Container, Device, Mount, Namespace, Network, NsKind, STANDARD_MOUNTPOINTS};
pub use error::RuntimeError;
pub use hook::loopback_up;
pub use host_mounts::mount_host;
pub use lifecycle::{Created, Exit, Options, Running};
pub use mount_namespace::private_mount_namespace;
pub use netdev::{Interface, bind_namespaces, setup_interfaces};
pub use security::{Capabilities, Rlimit};
pub use sys::{set_thread_nice, signal_child_on_parent_death};
