//! The only module of kiln-runtime with `unsafe` code: thin wrappers over the system calls that
//! neither std nor nix offers safely, each with the reason it is sound. Everything else in the
//! crate calls these (or nix's safe wrappers) and is compiled with `unsafe_code` denied.
//!
//! Most of these run in the pre-exec hook, between `fork` and `exec` in a child of a process that
//! may have other threads. There only async-signal-safe work is allowed: no allocation, no locks.
//! Every wrapper here is a single system call on memory owned by the caller's stack frame or by
//! data prepared before the fork.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::hook::{self, Prepared};
use nix::unistd::ForkResult;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child `cmd` starts gets `signal` when the thread that started it ends (kiln, say, when
/// killed): a program kiln runs attached, such as qemu, does not run on unseen.
pub fn signal_child_on_parent_death(cmd: &mut Command, signal: libc::c_int) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is a single async-signal-safe system call on a number
    // copied into the closure; the hook touches nothing else in the forked child.
    unsafe {
        cmd.pre_exec(move || check(libc::prctl(libc::PR_SET_PDEATHSIG, signal)));
    }
}

/// Run the container's set-up ([`hook::enter`]) in the child `cmd` forks, before it execs.
pub(crate) fn install_hook(cmd: &mut Command, prepared: Prepared) {
    // SAFETY: `pre_exec` requires the closure to be safe to run in a forked child of a possibly
    // multi-threaded process: async-signal-safe only. `hook::enter` makes system calls on the
    // C strings, descriptors and numbers `Prepared` holds, converted before the fork; it does not
    // allocate, take locks or touch another thread's state (see the module docs of `hook`).
    unsafe {
        cmd.pre_exec(move || hook::enter(&prepared));
    }
}

/// Give every signal its default disposition: the runtime's intermediate process must die of
/// the signals that kill, whatever handlers the program that forked it installed, and the
/// container must not inherit ignored signals across its exec.
pub(crate) fn reset_signal_dispositions() {
    for signal in nix::sys::signal::Signal::iterator() {
        if matches!(
            signal,
            nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
        ) {
            continue;
        }
        // SAFETY: installing SIG_DFL sets no handler, so no Rust code can run in signal
        // context; signal(2) is async-signal-safe and takes only integers.
        unsafe {
            libc::signal(signal as libc::c_int, libc::SIG_DFL);
        }
    }
}

/// Fork in the pre-exec hook, so that the command becomes PID 1 of its new PID namespace.
pub(crate) fn fork_in_hook() -> io::Result<ForkResult> {
    // SAFETY: called only from the pre-exec hook, in a child that has a single thread (fork
    // copies only the calling thread). Both sides then only make async-signal-safe system calls:
    // the parent waits and `_exit`s, the child goes on with the hook and execs.
    unsafe { nix::unistd::fork() }.map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// End the intermediate process of the hook at once, without running exit handlers or
/// destructors that belong to the parent program.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: `_exit` takes a plain integer and never returns; skipping destructors and atexit
    // handlers is the point (they belong to the program that forked).
    unsafe { libc::_exit(code) }
}

/// Close every descriptor from 3 up.
pub(crate) fn close_from_3() {
    // SAFETY: close_range(2) only closes descriptors; this process (the hook's intermediate) owns
    // no Rust object that uses descriptors above 2 any more.
    unsafe {
        libc::close_range(3, libc::c_uint::MAX, 0);
    }
}

/// Set one resource limit (`resource` is a `libc::RLIMIT_*` value).
pub(crate) fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit(2) reads the rlimit on this stack frame; an unknown resource is EINVAL.
    check(unsafe { libc::setrlimit(resource as _, &value) })
}

/// Drop capability `cap` from the bounding set. A capability this kernel does not know is not
/// an error.
pub(crate) fn drop_bounding(cap: u32) -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Set this thread's effective, permitted and inheritable capability sets (bit N is
/// capability N).
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // The low and the high 32 bits: the truncation is the point.
    let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: with version 3, capset(2) reads one header and two data structs, which live on
    // this stack frame and have the kernel's layout (repr(C)).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(if rc < 0 { -1 } else { 0 })
}

/// Empty the ambient capability set.
pub(crate) fn clear_ambient() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
}

/// Raise capability `cap` in the ambient set.
pub(crate) fn raise_ambient(cap: u32) -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            libc::c_ulong::from(cap),
            0,
            0,
        )
    })
}

/// Set the flags of the interface `name` (at most 15 bytes) with SIOCSIFFLAGS on `socket`.
pub(crate) fn set_interface_flags(
    socket: &std::os::fd::OwnedFd,
    name: &[u8],
    flags: libc::c_short,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is a plain C struct (names and integers) for which all zero bytes are valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (slot, byte) in req.ifr_name.iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOCSIFFLAGS reads the ifreq on this stack frame (its name is NUL-terminated:
    // shorter than the field, the rest zero) through an open socket.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
}

/// Install `program` as this thread's seccomp filter (seccomp(2), `SECCOMP_SET_MODE_FILTER`).
/// The caller has set no_new_privs or holds CAP_SYS_ADMIN.
pub(crate) fn install_seccomp(program: &crate::seccomp::Program) -> io::Result<()> {
    let fprog = program.sock_fprog();
    // SAFETY: seccomp(2) reads the sock_fprog on this stack frame and the `len` instructions it
    // points to, which `program` owns (borrowed for the whole call); the kernel copies them.
    // Nothing is allocated. With SECCOMP_FILTER_FLAG_TSYNC a positive result is the id of a
    // thread that could not be synchronised: a failure too.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags(),
            &fprog,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else if rc > 0 {
        Err(io::Error::from_raw_os_error(libc::ESRCH))
    } else {
        Ok(())
    }
}

/// Set the calling thread's nice value (on Linux, `setpriority(PRIO_PROCESS, 0, ...)` acts on
/// the calling thread only; threads it starts inherit the value).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority(2) takes integers only and touches no memory of ours.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) })
}

/// Read the target of the symbolic link open as `link` (an `O_PATH | O_NOFOLLOW` descriptor)
/// into `buf`, without allocation: the target's length. A target that fills `buf` may have
/// been cut: ENAMETOOLONG.
pub(crate) fn read_link(link: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: readlinkat(2) with an empty path reads the link `link` refers to and writes at
    // most `buf.len()` bytes to `buf`, which is borrowed mutably for the call; the path is a
    // static NUL-terminated string. Nothing is allocated.
    let n = unsafe {
        libc::readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(n)
}

/// Make the child `cmd` starts enter a new user namespace before it executes the program: it
/// closes its copy of `go_write` (the parent's end of the gate), unshares the namespace,
/// writes its pid and the result (0, or the errno) to `ready` (4 + 4 bytes, native order),
/// then waits for a byte on `go` (the parent writes the maps meanwhile) and asks for SIGTERM
/// when the parent's thread ends (giving up if the parent is gone already). EOF on `go`
/// abandons the start.
pub(crate) fn enter_user_namespace_before_exec(
    cmd: &mut Command,
    ready: std::os::fd::OwnedFd,
    go: std::os::fd::OwnedFd,
    go_write: std::os::fd::RawFd,
) {
    let parent = nix::unistd::getpid();
    let hook = move || -> io::Result<()> {
        let _ = nix::unistd::close(go_write);
        let failed = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
            Ok(()) => 0,
            Err(e) => e as i32,
        };
        let mut message = [0u8; 8];
        message[..4].copy_from_slice(&nix::unistd::getpid().as_raw().to_ne_bytes());
        message[4..].copy_from_slice(&failed.to_ne_bytes());
        nix::unistd::write(&ready, &message).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&go, &mut byte) {
                Ok(1) => break,
                Err(nix::Error::EINTR) => continue,
                // The parent gave up (the maps could not be written).
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
            }
        }
        // After the unshare, which may clear it; a parent that died before it took effect is
        // not waited for.
        check(set_parent_death_sigterm())?;
        if nix::unistd::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: `pre_exec` requires the closure to be safe to run in a forked child of a possibly
    // multi-threaded process: async-signal-safe only. It makes single system calls (close,
    // unshare, getpid, write, read, prctl, getppid) on descriptors it owns and on arrays on its own
    // stack frame; an error is made from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// prctl(PR_SET_PDEATHSIG, SIGTERM) for [`enter_user_namespace_before_exec`].
fn set_parent_death_sigterm() -> libc::c_int {
    // SAFETY: prctl(2) with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) }
}
