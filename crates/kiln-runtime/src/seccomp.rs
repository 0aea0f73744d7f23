//! Seccomp: compiles a container's `linux.seccomp` section (OCI runtime-spec), or Docker's default
//! profile resolved for the container's capabilities, into the classic BPF program that
//! seccomp(2) installs.
//!
//! Everything is computed before the fork ([`compile`], [`docker_default`]); the result, a
//! [`Program`], holds the instructions ready for the kernel, so that installing it in the child
//! is one system call on memory that already exists (see [`Program`] for the exact calls). This
//! module has no `unsafe` code and does not install anything itself.
//!
//! Semantics, as runc and libseccomp give them:
//!
//! - the actions `SCMP_ACT_KILL` (= `SCMP_ACT_KILL_THREAD`), `SCMP_ACT_KILL_PROCESS`,
//!   `SCMP_ACT_TRAP`, `SCMP_ACT_ERRNO`, `SCMP_ACT_TRACE`, `SCMP_ACT_LOG` and `SCMP_ACT_ALLOW`;
//!   `errnoRet` (and `defaultErrnoRet`) is the errno of `SCMP_ACT_ERRNO` or the message of
//!   `SCMP_ACT_TRACE`, EPERM when absent. `SCMP_ACT_NOTIFY` and `listenerPath` are refused: kiln
//!   runs no seccomp agent;
//! - argument conditions compare the whole 64-bit argument (`SCMP_CMP_MASKED_EQ`: `value` is the
//!   mask, `valueTwo` the expected result); the conditions of a rule must all hold, except that a
//!   rule with two conditions on the same argument is split into one rule per condition (runc's
//!   behaviour, so that `personality` can list several allowed values);
//! - when several rules of a system call match, the most restrictive action wins (the kernel's
//!   order: kill process, kill thread, trap, errno, trace, log, allow), then the first written;
//! - a system call name that exists on other architectures but not on the target one (`open` on
//!   aarch64, `s390_runtime_instr` anywhere but s390) is skipped, as runc and Docker skip it; a
//!   name no architecture knows is an error;
//! - a system call numbered above every call the rules name gets ENOSYS rather than the default
//!   action, when the default action denies (runc's stub): a C library newer than the profile
//!   then falls back to an older call instead of failing with EPERM;
//! - the filter covers the native 64-bit system call ABI of its architecture (x86_64 or
//!   aarch64). A call through another ABI (i386 `int 0x80` or x32 on x86_64, AArch32 on aarch64)
//!   kills the process, whatever `architectures` lists: its rules are not compiled, so it is
//!   refused as libseccomp refuses an architecture its filter lacks. Other architecture names are
//!   checked and otherwise ignored, since a process of the native architecture cannot use them.
//!
//! Docker's default profile ([`DOCKER_DEFAULT_PROFILE`]) is Docker's own data, kept and resolved
//! in kiln-spec ([`kiln_spec::docker_seccomp`], which kiln-assemble uses too); here it is
//! resolved ([`docker_profile`]) for the container's bounding capabilities, this architecture
//! and the running kernel's version.

use kiln_spec::docker_seccomp::{self, ProfileError};
use kiln_spec::{Invalid, Seccomp, SeccompArg, Syscall};
use std::fmt;

mod syscalls;

pub use kiln_spec::docker_seccomp::{DEFAULT_PROFILE as DOCKER_DEFAULT_PROFILE, KernelVersion};

/// The kernel's limit on the length of a BPF program (`BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// A system call architecture kiln compiles filters for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86_64 (amd64), the 64-bit ABI.
    X86_64,
    /// aarch64 (arm64).
    Aarch64,
}

impl Arch {
    /// The architecture this program runs on, when kiln supports it.
    pub fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The `AUDIT_ARCH_*` value the kernel passes to the filter in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        // EM_X86_64 = 62, EM_AARCH64 = 183, with __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }

    /// The name seccomp profiles give it (`SCMP_ARCH_X86_64`).
    pub fn scmp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    /// The name Docker's profile conditions give it (`amd64`, `arm64`).
    pub fn docker_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// System call `name` on this architecture.
    fn syscall(self, name: &str) -> Lookup {
        let Ok(i) = syscalls::SYSCALLS.binary_search_by(|(n, _, _)| (*n).cmp(name)) else {
            return Lookup::Unknown;
        };
        let (_, x86_64, aarch64) = syscalls::SYSCALLS[i];
        let nr = match self {
            Arch::X86_64 => x86_64,
            Arch::Aarch64 => aarch64,
        };
        u32::try_from(nr).map_or(Lookup::Elsewhere, Lookup::Here)
    }
}

/// A system call name looked up on one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Its number here.
    Here(u32),
    /// Other architectures have it, this one does not.
    Elsewhere,
    /// No architecture has it.
    Unknown,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

/// Architecture names of the runtime-spec (and libseccomp); only the native one is filtered.
const ARCHITECTURES: [&str; 23] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// Filter flags of the runtime-spec kiln passes to seccomp(2), with their values.
const FLAGS: [(&str, u32); 3] = [
    ("SECCOMP_FILTER_FLAG_TSYNC", 1),
    ("SECCOMP_FILTER_FLAG_LOG", 2),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4),
];

/// A seccomp filter that cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A field holds a value kiln does not know or cannot apply.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A profile in Docker's format that is not JSON of the expected shape.
    #[error("seccomp profile, line {line} column {column}: {message}")]
    Profile {
        /// Line (from 1).
        line: usize,
        /// Column (from 1).
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The program is longer than the kernel accepts.
    #[error(
        "the seccomp filter needs {len} BPF instructions, more than the kernel's limit of \
         {MAX_INSTRUCTIONS}: name fewer system calls or argument conditions"
    )]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The target architecture has no Docker profile resolution.
    #[error("{0}")]
    Architecture(ProfileError),
    /// Rules depend on the kernel's version and the running kernel's cannot be read.
    #[error("cannot tell the running kernel's version from its release {release:?}")]
    Kernel {
        /// The release uname(2) gave.
        release: String,
    },
    /// The program runs on an architecture kiln has no system call table for.
    #[error("seccomp filters are supported on x86_64 and aarch64 only")]
    Unsupported,
}

fn invalid(
    field: String,
    value: &impl serde::Serialize,
    message: impl Into<String>,
) -> SeccompError {
    SeccompError::Invalid(Invalid::new(field, value, message))
}

impl From<ProfileError> for SeccompError {
    fn from(e: ProfileError) -> Self {
        match e {
            ProfileError::Syntax {
                line,
                column,
                message,
            } => SeccompError::Profile {
                line,
                column,
                message,
            },
            ProfileError::Invalid(i) => SeccompError::Invalid(i),
            e @ ProfileError::Architecture { .. } => SeccompError::Architecture(e),
        }
    }
}

/// A compiled filter, ready to install.
///
/// Installing it, in the container's process, as runc does:
///
/// 1. with no_new_privs (`process.noNewPrivileges`, and every `RUN` step): after everything else,
///    `prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)`, then the filter just before `execve`, so that
///    `execve` is the only call of the set-up that runs under it;
/// 2. without no_new_privs: the kernel accepts a filter only from a process with `CAP_SYS_ADMIN`
///    in its effective set (otherwise EACCES), so the filter goes in before capabilities are
///    dropped and the user is switched, and those calls (`capset`, `setresuid`, `setgroups`,
///    `prctl`, ...) then run under it;
/// 3. the call itself: `syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, program.flags(),
///    &program.sock_fprog())` returns 0, or -1 with errno; with `SECCOMP_FILTER_FLAG_TSYNC` in
///    the flags, a positive result is the id of a thread that could not be synchronised (also a
///    failure).
///
/// [`Program::sock_fprog`] points into this `Program`, which must outlive the call; it can be
/// made before the fork. None of this allocates.
pub struct Program {
    arch: Arch,
    flags: u32,
    filter: Vec<libc::sock_filter>,
    len: u16,
}

impl Program {
    /// The architecture the program filters.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The instructions.
    pub fn filter(&self) -> &[libc::sock_filter] {
        &self.filter
    }

    /// The `flags` argument of seccomp(2) (`SECCOMP_FILTER_FLAG_*` from the config).
    pub fn flags(&self) -> libc::c_uint {
        self.flags
    }

    /// The program as seccomp(2) takes it: a length and a pointer into `self.filter()`.
    pub fn sock_fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.len,
            filter: self.filter.as_ptr().cast_mut(),
        }
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("arch", &self.arch)
            .field("flags", &self.flags)
            .field("instructions", &self.filter.len())
            .finish()
    }
}

/// Compile `seccomp` (a config.json's `linux.seccomp`) for the architecture this program runs on.
pub fn compile(seccomp: &Seccomp) -> Result<Program, SeccompError> {
    compile_for(seccomp, Arch::native().ok_or(SeccompError::Unsupported)?)
}

/// Docker's default profile for a container whose bounding set is `caps` (names such as
/// `CAP_SYS_ADMIN`), on this architecture and the running kernel, compiled.
pub fn docker_default<S: AsRef<str>>(caps: &[S]) -> Result<Program, SeccompError> {
    let arch = Arch::native().ok_or(SeccompError::Unsupported)?;
    let spec = docker_default_spec(caps, arch, running_kernel()?)?;
    compile_for(&spec, arch)
}

/// Docker's default profile for `caps` (as [`docker_default`]), with one kiln addition for
/// `RUN` steps: creating a block device node (`mknod`, `mknodat` with `S_IFBLK`) fails with
/// EPERM. Docker allows the call and refuses the device's use with its device cgroup, which a
/// build host may not offer; a block device of the host's disk would expose every host file.
pub fn docker_default_without_block_devices<S: AsRef<str>>(
    caps: &[S],
) -> Result<Program, SeccompError> {
    let arch = Arch::native().ok_or(SeccompError::Unsupported)?;
    let mut spec = docker_default_spec(caps, arch, running_kernel()?)?;
    for (name, mode_arg) in [("mknod", 1), ("mknodat", 2)] {
        spec.syscalls.push(Syscall {
            names: vec![name.to_string()],
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: Some(libc::EPERM.unsigned_abs()),
            args: vec![SeccompArg {
                index: mode_arg,
                value: u64::from(libc::S_IFMT),
                value_two: u64::from(libc::S_IFBLK),
                op: "SCMP_CMP_MASKED_EQ".into(),
            }],
        });
    }
    compile_for(&spec, arch)
}

/// Docker's default profile resolved for `caps`, `arch` and `kernel`: the `linux.seccomp`
/// section Docker would write into the container's config.json.
pub fn docker_default_spec<S: AsRef<str>>(
    caps: &[S],
    arch: Arch,
    kernel: KernelVersion,
) -> Result<Seccomp, SeccompError> {
    Ok(docker_seccomp::default_profile(
        caps,
        arch.docker_name(),
        kernel,
    )?)
}

/// The running kernel's version, as Docker's profile conditions compare it.
pub fn running_kernel() -> Result<KernelVersion, SeccompError> {
    let uts = nix::sys::utsname::uname().map_err(|_| SeccompError::Kernel {
        release: String::new(),
    })?;
    let release = uts.release().to_string_lossy();
    KernelVersion::parse(&release).ok_or_else(|| SeccompError::Kernel {
        release: release.into_owned(),
    })
}

/// Resolve a profile in Docker's format (`text`, JSON) as Docker does for a container with
/// bounding set `caps` on `arch` and `kernel` (see [`docker_seccomp::resolve`]). The result is
/// a runtime-spec `linux.seccomp`, to [`compile_for`].
pub fn docker_profile<S: AsRef<str>>(
    text: &str,
    caps: &[S],
    arch: Arch,
    kernel: KernelVersion,
) -> Result<Seccomp, SeccompError> {
    Ok(docker_seccomp::resolve(
        text,
        caps,
        arch.docker_name(),
        kernel,
    )?)
}

// ---------------------------------------------------------------------------------------------
// Actions and conditions.

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_KILL_THREAD: u32 = 0x0000_0000;
const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// The largest errno the kernel passes on (`MAX_ERRNO`).
const MAX_ERRNO: u32 = 4095;

/// What the filter does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    KillProcess,
    KillThread,
    Trap,
    Errno(u32),
    Trace(u32),
    Log,
    Allow,
}

impl Action {
    /// The filter's return value.
    fn ret(self) -> u32 {
        match self {
            Action::KillProcess => SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => SECCOMP_RET_KILL_THREAD,
            Action::Trap => SECCOMP_RET_TRAP,
            Action::Errno(e) => SECCOMP_RET_ERRNO | e,
            Action::Trace(m) => SECCOMP_RET_TRACE | m,
            Action::Log => SECCOMP_RET_LOG,
            Action::Allow => SECCOMP_RET_ALLOW,
        }
    }

    /// The kernel's precedence: lower is more restrictive.
    fn rank(self) -> u8 {
        match self {
            Action::KillProcess => 0,
            Action::KillThread => 1,
            Action::Trap => 2,
            Action::Errno(_) => 3,
            Action::Trace(_) => 4,
            Action::Log => 5,
            Action::Allow => 6,
        }
    }

    /// Whether the action stops the system call.
    fn denies(self) -> bool {
        self.rank() <= Action::Errno(0).rank()
    }
}

/// An action named in a profile; `errno` is its `errnoRet` (or `defaultErrnoRet`).
fn action(
    name: &str,
    errno: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<Action, SeccompError> {
    let action = match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_ERRNO" => {
            let e = errno.unwrap_or(libc::EPERM.unsigned_abs());
            if e > MAX_ERRNO {
                return Err(invalid(
                    errno_field.into(),
                    &e,
                    format!("is not an errno: use a number from 0 to {MAX_ERRNO}"),
                ));
            }
            return Ok(Action::Errno(e));
        }
        "SCMP_ACT_TRACE" => {
            let m = errno.unwrap_or(libc::EPERM.unsigned_abs());
            if m > 0xffff {
                return Err(invalid(
                    errno_field.into(),
                    &m,
                    "is too large for SCMP_ACT_TRACE: use a number from 0 to 65535",
                ));
            }
            return Ok(Action::Trace(m));
        }
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                field.into(),
                &name,
                "is not supported: kiln runs no seccomp agent to answer notifications; use \
                 SCMP_ACT_ERRNO or SCMP_ACT_ALLOW",
            ));
        }
        _ => {
            return Err(invalid(
                field.into(),
                &name,
                "unknown action: use SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, \
                 SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP, SCMP_ACT_TRACE or SCMP_ACT_LOG",
            ));
        }
    };
    if let Some(e) = errno {
        return Err(invalid(
            errno_field.into(),
            &e,
            format!("is given with {name}: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take one"),
        ));
    }
    Ok(action)
}

/// A comparison of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`.
    MaskedEq {
        mask: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    index: u8,
    op: Op,
    value: u64,
}

fn condition(arg: &SeccompArg, field: &str) -> Result<Cond, SeccompError> {
    let index = u8::try_from(arg.index)
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| {
            invalid(
                format!("{field}.index"),
                &arg.index,
                "is not an argument index: system calls have arguments 0 to 5",
            )
        })?;
    let (op, value) = match arg.op.as_str() {
        "SCMP_CMP_NE" => (Op::Ne, arg.value),
        "SCMP_CMP_LT" => (Op::Lt, arg.value),
        "SCMP_CMP_LE" => (Op::Le, arg.value),
        "SCMP_CMP_EQ" => (Op::Eq, arg.value),
        "SCMP_CMP_GE" => (Op::Ge, arg.value),
        "SCMP_CMP_GT" => (Op::Gt, arg.value),
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq { mask: arg.value }, arg.value_two),
        other => {
            return Err(invalid(
                format!("{field}.op"),
                &other,
                "unknown comparison: use SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, \
                 SCMP_CMP_GT, SCMP_CMP_GE or SCMP_CMP_MASKED_EQ",
            ));
        }
    };
    Ok(Cond { index, op, value })
}

/// One rule of one system call: its action when all its conditions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    action: Action,
    conds: Vec<Cond>,
}

/// A filter, checked and resolved for one architecture.
#[derive(Debug)]
struct Resolved {
    default: Action,
    flags: u32,
    /// By system call number, ascending; each call's rules most restrictive first.
    calls: Vec<(u32, Vec<Rule>)>,
}

fn resolve(seccomp: &Seccomp, arch: Arch) -> Result<Resolved, SeccompError> {
    const AT: &str = "linux.seccomp";
    if !seccomp.listener_path.is_empty() {
        return Err(invalid(
            format!("{AT}.listenerPath"),
            &seccomp.listener_path,
            "is not supported: kiln runs no seccomp agent; remove it",
        ));
    }
    let default = action(
        &seccomp.default_action,
        seccomp.default_errno_ret,
        &format!("{AT}.defaultAction"),
        &format!("{AT}.defaultErrnoRet"),
    )?;
    for (i, a) in seccomp.architectures.iter().enumerate() {
        if !ARCHITECTURES.contains(&a.as_str()) {
            return Err(invalid(
                format!("{AT}.architectures[{i}]"),
                a,
                "unknown architecture: use names such as SCMP_ARCH_X86_64 or SCMP_ARCH_AARCH64",
            ));
        }
    }
    let mut flags = 0;
    for (i, f) in seccomp.flags.iter().enumerate() {
        let (_, bit) = FLAGS.iter().find(|(name, _)| name == f).ok_or_else(|| {
            invalid(
                format!("{AT}.flags[{i}]"),
                f,
                "unknown or unsupported flag: use SECCOMP_FILTER_FLAG_TSYNC, \
                 SECCOMP_FILTER_FLAG_LOG or SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            )
        })?;
        flags |= bit;
    }
    // (number, order written, rule)
    let mut rules: Vec<(u32, usize, Rule)> = Vec::new();
    for (i, call) in seccomp.syscalls.iter().enumerate() {
        let at = format!("{AT}.syscalls[{i}]");
        let action = action(
            &call.action,
            call.errno_ret,
            &format!("{at}.action"),
            &format!("{at}.errnoRet"),
        )?;
        let conds = call
            .args
            .iter()
            .enumerate()
            .map(|(j, a)| condition(a, &format!("{at}.args[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        // runc: two conditions on one argument make one rule per condition.
        let repeated = conds
            .iter()
            .enumerate()
            .any(|(j, c)| conds[..j].iter().any(|d| d.index == c.index));
        let alternatives: Vec<Vec<Cond>> = if repeated {
            conds.iter().map(|c| vec![*c]).collect()
        } else {
            vec![conds]
        };
        if call.names.is_empty() {
            return Err(invalid(
                format!("{at}.names"),
                &call.names,
                "is empty: name the system calls the rule is for",
            ));
        }
        for (j, name) in call.names.iter().enumerate() {
            let nr = match arch.syscall(name) {
                Lookup::Here(nr) => nr,
                // A call of other architectures only: skipped.
                Lookup::Elsewhere => continue,
                Lookup::Unknown => {
                    return Err(invalid(
                        format!("{at}.names[{j}]"),
                        name,
                        "unknown system call: no Linux architecture has one of this name",
                    ));
                }
            };
            for conds in &alternatives {
                rules.push((
                    nr,
                    rules.len(),
                    Rule {
                        action,
                        conds: conds.clone(),
                    },
                ));
            }
        }
    }
    rules.sort_by_key(|(nr, order, rule)| (*nr, rule.action.rank(), *order));
    let mut calls: Vec<(u32, Vec<Rule>)> = Vec::new();
    for (nr, _, rule) in rules {
        match calls.last_mut() {
            Some((last, list)) if *last == nr => list.push(rule),
            _ => calls.push((nr, vec![rule])),
        }
    }
    Ok(Resolved {
        default,
        flags,
        calls,
    })
}

// ---------------------------------------------------------------------------------------------
// Code generation.

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// The low 32 bits of argument `i` (both architectures are little-endian); the high 32 bits
/// follow.
fn data_arg_lo(index: u8) -> u32 {
    16 + 8 * u32::from(index)
}

/// x86_64 numbers of the x32 ABI have this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Syscalls per leaf of the dispatch tree, compared one by one.
const LEAF: usize = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(action: Action) -> libc::sock_filter {
    stmt(BPF_RET_K, action.ret())
}

/// A jump target inside a rule: so many instructions ahead, or past the rule.
#[derive(Clone, Copy)]
enum To {
    Skip(u8),
    Fail,
}

/// An instruction of a rule, before its jumps to "past the rule" are known.
struct Pending {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

fn p_load(off: u32) -> Pending {
    Pending {
        code: BPF_LD_W_ABS,
        k: off,
        jt: To::Skip(0),
        jf: To::Skip(0),
    }
}

fn p_jump(code: u16, k: u32, jt: To, jf: To) -> Pending {
    Pending { code, k, jt, jf }
}

fn split(v: u64) -> (u32, u32) {
    // Truncation intended: the high and the low 32 bits.
    #[allow(clippy::cast_possible_truncation)]
    ((v >> 32) as u32, v as u32)
}

/// The test of one condition: falls through when it holds, jumps past the rule when not.
fn emit_cond(c: &Cond, out: &mut Vec<Pending>) {
    use To::{Fail, Skip};
    let lo = data_arg_lo(c.index);
    let hi = lo + 4;
    let (vhi, vlo) = split(c.value);
    match c.op {
        Op::Eq => out.extend([
            p_load(hi),
            p_jump(BPF_JEQ_K, vhi, Skip(0), Fail),
            p_load(lo),
            p_jump(BPF_JEQ_K, vlo, Skip(0), Fail),
        ]),
        Op::Ne => out.extend([
            p_load(hi),
            p_jump(BPF_JEQ_K, vhi, Skip(0), Skip(2)),
            p_load(lo),
            p_jump(BPF_JEQ_K, vlo, Fail, Skip(0)),
        ]),
        Op::Gt | Op::Ge => out.extend([
            p_load(hi),
            p_jump(BPF_JGT_K, vhi, Skip(3), Skip(0)),
            p_jump(BPF_JEQ_K, vhi, Skip(0), Fail),
            p_load(lo),
            p_jump(
                if c.op == Op::Gt { BPF_JGT_K } else { BPF_JGE_K },
                vlo,
                Skip(0),
                Fail,
            ),
        ]),
        Op::Lt | Op::Le => out.extend([
            p_load(hi),
            p_jump(BPF_JGE_K, vhi, Skip(0), Skip(3)),
            p_jump(BPF_JEQ_K, vhi, Skip(0), Fail),
            p_load(lo),
            p_jump(
                if c.op == Op::Lt { BPF_JGE_K } else { BPF_JGT_K },
                vlo,
                Fail,
                Skip(0),
            ),
        ]),
        Op::MaskedEq { mask } => {
            let (mhi, mlo) = split(mask);
            out.extend([
                p_load(hi),
                p_jump(BPF_ALU_AND_K, mhi, Skip(0), Skip(0)),
                p_jump(BPF_JEQ_K, vhi, Skip(0), Fail),
                p_load(lo),
                p_jump(BPF_ALU_AND_K, mlo, Skip(0), Skip(0)),
                p_jump(BPF_JEQ_K, vlo, Skip(0), Fail),
            ]);
        }
    }
}

fn too_long(len: usize) -> SeccompError {
    SeccompError::TooLong { len }
}

/// The code for one system call: its rules in order, then the default action.
fn emit_call(rules: &[Rule], default: Action) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut out = Vec::new();
    for rule in rules {
        if rule.conds.is_empty() {
            // Unconditional: the rules after it never decide.
            out.push(ret(rule.action));
            return Ok(out);
        }
        let mut block = Vec::new();
        for c in &rule.conds {
            emit_cond(c, &mut block);
        }
        let end = block.len() + 1; // past the RET
        for (pc, p) in block.iter().enumerate() {
            let target = |to: To| match to {
                To::Skip(n) => Ok(n),
                To::Fail => u8::try_from(end - pc - 1).map_err(|_| too_long(end)),
            };
            out.push(jump(p.code, p.k, target(p.jt)?, target(p.jf)?));
        }
        out.push(ret(rule.action));
        if out.len() > MAX_INSTRUCTIONS {
            return Err(too_long(out.len()));
        }
    }
    out.push(ret(default));
    Ok(out)
}

/// A binary search over the system call number in the accumulator: compare at the middle,
/// recurse; in small leaves compare each number in turn. Every conditional jump is short, the
/// long ones are `BPF_JA`s.
fn emit_tree(
    calls: &[(u32, Vec<libc::sock_filter>)],
    default: Action,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let mut out = Vec::new();
    if calls.len() <= LEAF {
        for (nr, body) in calls {
            match u8::try_from(body.len()) {
                Ok(len) => out.push(jump(BPF_JEQ_K, *nr, 0, len)),
                Err(_) => {
                    let len = u32::try_from(body.len()).map_err(|_| too_long(body.len()))?;
                    out.push(jump(BPF_JEQ_K, *nr, 1, 0));
                    out.push(stmt(BPF_JA, len));
                }
            }
            out.extend_from_slice(body);
        }
        out.push(ret(default));
        return Ok(out);
    }
    let mid = calls.len() / 2;
    let left = emit_tree(&calls[..mid], default)?;
    let right = emit_tree(&calls[mid..], default)?;
    if left.len() + right.len() > MAX_INSTRUCTIONS {
        return Err(too_long(left.len() + right.len()));
    }
    let skip_left = u32::try_from(left.len()).map_err(|_| too_long(left.len()))?;
    out.push(jump(BPF_JGE_K, calls[mid].0, 0, 1));
    out.push(stmt(BPF_JA, skip_left));
    out.extend(left);
    out.extend(right);
    Ok(out)
}

/// Compile `seccomp` for `arch`, checking every field: an unknown action, comparison,
/// architecture, flag or system call name is an error naming the field and its value (a system
/// call of other architectures only is skipped).
pub fn compile_for(seccomp: &Seccomp, arch: Arch) -> Result<Program, SeccompError> {
    let resolved = resolve(seccomp, arch)?;
    let default = resolved.default;
    let kill = ret(Action::KillProcess);
    let mut filter = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JEQ_K, arch.audit_arch(), 1, 0),
        kill,
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    if arch == Arch::X86_64 {
        // x32 numbers: killed; -1 (a tracer skipping the call) goes on.
        filter.extend([
            jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 2),
            jump(BPF_JEQ_K, u32::MAX, 1, 0),
            kill,
        ]);
    }
    if let Some((last, _)) = resolved.calls.last()
        && default.denies()
        && default != Action::Errno(libc::ENOSYS.unsigned_abs())
    {
        filter.extend([
            jump(BPF_JGT_K, *last, 0, 1),
            ret(Action::Errno(libc::ENOSYS.unsigned_abs())),
        ]);
    }
    let mut calls = Vec::with_capacity(resolved.calls.len());
    let mut total = filter.len();
    for (nr, rules) in &resolved.calls {
        let body = emit_call(rules, default)?;
        total += body.len();
        if total > MAX_INSTRUCTIONS {
            return Err(too_long(total));
        }
        calls.push((*nr, body));
    }
    filter.extend(emit_tree(&calls, default)?);
    if filter.len() > MAX_INSTRUCTIONS {
        return Err(too_long(filter.len()));
    }
    let len = u16::try_from(filter.len()).map_err(|_| too_long(filter.len()))?;
    Ok(Program {
        arch,
        flags: resolved.flags,
        filter,
        len,
    })
}

#[cfg(test)]
mod tests;
