//! The compiler is checked three ways: a small BPF interpreter runs the programs on chosen and
//! random `seccomp_data` and compares with the runtime-spec's semantics written out directly;
//! Docker's profile is resolved and compiled for both architectures and several capability sets;
//! and a child process (this test binary, run again) installs a filter in the real kernel.

use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Command, Output};

/// The capabilities Docker gives a container by default.
const DOCKER_CAPS: [&str; 14] = crate::security::DOCKER_DEFAULT_CAPABILITIES;

const KERNEL: KernelVersion = KernelVersion { major: 6, minor: 1 };
const ARCHES: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

const ALLOW: u32 = SECCOMP_RET_ALLOW;
const KILL_PROCESS: u32 = SECCOMP_RET_KILL_PROCESS;

fn errno(e: i32) -> u32 {
    SECCOMP_RET_ERRNO | e.unsigned_abs()
}

// ---------------------------------------------------------------------------------------------
// A BPF interpreter for the instructions the compiler emits.

#[derive(Debug, Clone, Copy)]
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn call(arch: Arch, name: &str, args: &[u64]) -> Data {
        let Lookup::Here(nr) = arch.syscall(name) else {
            panic!("{name} is not a system call on {arch}");
        };
        let mut all = [0; 6];
        all[..args.len()].copy_from_slice(args);
        Data {
            nr,
            arch: arch.audit_arch(),
            args: all,
        }
    }
}

/// The 32-bit word at `off` of `struct seccomp_data`.
fn word(d: &Data, off: u32) -> u32 {
    match off {
        0 => d.nr,
        4 => d.arch,
        8 | 12 => 0,
        16..=60 if off.is_multiple_of(4) => {
            let i = usize::try_from((off - 16) / 8).expect("index");
            let (h, l) = split(d.args[i]);
            if (off - 16).is_multiple_of(8) { l } else { h }
        }
        _ => panic!("load of offset {off}"),
    }
}

/// Check that every jump lands inside the program and that it ends with a return, as the
/// kernel's checker does.
fn check(filter: &[libc::sock_filter]) {
    assert!(!filter.is_empty() && filter.len() <= MAX_INSTRUCTIONS);
    assert_eq!(filter.last().map(|i| i.code), Some(BPF_RET_K));
    for (pc, i) in filter.iter().enumerate() {
        let targets: Vec<usize> = match i.code {
            BPF_JA => vec![pc + 1 + usize::try_from(i.k).expect("k")],
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K => {
                vec![pc + 1 + usize::from(i.jt), pc + 1 + usize::from(i.jf)]
            }
            BPF_LD_W_ABS | BPF_ALU_AND_K | BPF_RET_K => vec![],
            other => panic!("unexpected instruction {other:#x} at {pc}"),
        };
        for t in targets {
            assert!(t < filter.len(), "jump from {pc} to {t} leaves the program");
        }
    }
}

/// What the program returns for `d`.
fn run(filter: &[libc::sock_filter], d: &Data) -> u32 {
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = filter[pc];
        let skip = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
        pc += 1 + match i.code {
            BPF_LD_W_ABS => {
                a = word(d, i.k);
                0
            }
            BPF_ALU_AND_K => {
                a &= i.k;
                0
            }
            BPF_JA => usize::try_from(i.k).expect("k"),
            BPF_JEQ_K => skip(a == i.k),
            BPF_JGT_K => skip(a > i.k),
            BPF_JGE_K => skip(a >= i.k),
            BPF_RET_K => return i.k,
            other => panic!("unexpected instruction {other:#x}"),
        };
    }
}

fn docker(caps: &[&str], arch: Arch) -> Program {
    let spec = docker_default_spec(caps, arch, KERNEL).expect("Docker's profile resolves");
    let program = compile_for(&spec, arch).expect("Docker's profile compiles");
    check(program.filter());
    program
}

fn seccomp(v: serde_json::Value) -> Seccomp {
    serde_json::from_value(v).expect("a linux.seccomp section")
}

// ---------------------------------------------------------------------------------------------
// Docker's profile.

#[test]
fn docker_default_with_docker_capabilities() {
    for arch in ARCHES {
        let p = docker(&DOCKER_CAPS, arch);
        let f = p.filter();
        let call = |name: &str, args: &[u64]| run(f, &Data::call(arch, name, args));
        assert_eq!(call("read", &[]), ALLOW, "{arch}");
        assert_eq!(call("openat", &[]), ALLOW, "{arch}");
        assert_eq!(call("execve", &[]), ALLOW, "{arch}");
        // Not in the profile at all, or only with CAP_SYS_ADMIN and friends.
        for denied in [
            "keyctl", "add_key", "mount", "umount2", "unshare", "setns", "bpf",
        ] {
            assert_eq!(call(denied, &[]), errno(libc::EPERM), "{denied} on {arch}");
        }
        for denied in ["init_module", "reboot", "kexec_load"] {
            if let Lookup::Here(_) = arch.syscall(denied) {
                assert_eq!(call(denied, &[]), errno(libc::EPERM), "{denied} on {arch}");
            }
        }
        // CAP_SYS_CHROOT is a default capability: chroot is allowed.
        assert_eq!(call("chroot", &[]), ALLOW);
        // clone: allowed without namespace flags; clone3 answers ENOSYS so that the C library
        // falls back to clone.
        let newuser = u64::try_from(libc::CLONE_NEWUSER).expect("flag");
        let thread = u64::try_from(libc::CLONE_VM | libc::CLONE_THREAD).expect("flag");
        assert_eq!(call("clone", &[thread]), ALLOW);
        assert_eq!(call("clone", &[thread | newuser]), errno(libc::EPERM));
        assert_eq!(call("clone3", &[]), errno(libc::ENOSYS));
        // personality: the listed values only.
        assert_eq!(call("personality", &[0]), ALLOW);
        assert_eq!(call("personality", &[0xffff_ffff]), ALLOW);
        assert_eq!(call("personality", &[0x0040000]), errno(libc::EPERM));
        // socket: every family but AF_ALG (38) and AF_VSOCK (40).
        assert_eq!(
            call("socket", &[u64::from(libc::AF_INET.unsigned_abs())]),
            ALLOW
        );
        assert_eq!(call("socket", &[39]), ALLOW);
        assert_eq!(call("socket", &[40]), errno(libc::EPERM));
        assert_eq!(call("socket", &[38]), errno(libc::EPERM));
        assert_eq!(call("socket", &[41]), ALLOW);
        // A family with high bits set is not 39: 64-bit comparisons.
        assert_eq!(call("socket", &[(1 << 32) | 39]), ALLOW, "GT 40");
        // A number above everything the profile names: ENOSYS (runc's stub).
        let past = Data {
            nr: 1000,
            ..Data::call(arch, "read", &[])
        };
        assert_eq!(run(f, &past), errno(libc::ENOSYS));
        // Another ABI: the process is killed.
        let other = Data {
            arch: 0x4000_0003, // AUDIT_ARCH_I386
            ..Data::call(arch, "read", &[])
        };
        assert_eq!(run(f, &other), KILL_PROCESS);
    }
    // Architecture-specific rules.
    let x86 = docker(&DOCKER_CAPS, Arch::X86_64);
    let arch_prctl = Data::call(Arch::X86_64, "arch_prctl", &[]);
    assert_eq!(run(x86.filter(), &arch_prctl), ALLOW);
    let x32_read = Data {
        nr: X32_SYSCALL_BIT,
        ..arch_prctl
    };
    assert_eq!(run(x86.filter(), &x32_read), KILL_PROCESS);
    let skipped = Data {
        nr: u32::MAX,
        ..arch_prctl
    };
    assert_eq!(run(x86.filter(), &skipped), errno(libc::ENOSYS));
}

#[test]
fn the_run_step_profile_refuses_block_devices_only() {
    let Some(arch) = Arch::native() else { return };
    let p = docker_default_without_block_devices(&DOCKER_CAPS).expect("compiles");
    check(p.filter());
    let f = p.filter();
    let mode = |kind: libc::mode_t| u64::from(kind | 0o600);
    let mut calls = vec![("mknodat", 2)];
    if let Lookup::Here(_) = arch.syscall("mknod") {
        calls.push(("mknod", 1));
    }
    for (name, index) in calls {
        let call = |kind| {
            let mut args = [0; 3];
            args[index] = mode(kind);
            run(f, &Data::call(arch, name, &args))
        };
        assert_eq!(call(libc::S_IFBLK), errno(libc::EPERM), "{name}");
        assert_eq!(call(libc::S_IFCHR), ALLOW, "{name}");
        assert_eq!(call(libc::S_IFIFO), ALLOW, "{name}");
        assert_eq!(call(libc::S_IFREG), ALLOW, "{name}");
    }
    assert_eq!(run(f, &Data::call(arch, "read", &[])), ALLOW);
}

#[test]
fn docker_default_with_all_capabilities() {
    for arch in ARCHES {
        let p = docker(&kiln_spec::CAPABILITIES, arch);
        let call = |name: &str, args: &[u64]| run(p.filter(), &Data::call(arch, name, args));
        for allowed in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "clone3",
            "init_module",
        ] {
            assert_eq!(call(allowed, &[]), ALLOW, "{allowed} on {arch}");
        }
        let newuser = u64::try_from(libc::CLONE_NEWUSER).expect("flag");
        assert_eq!(call("clone", &[newuser]), ALLOW);
        // Even with every capability, Docker's profile denies the key management calls.
        assert_eq!(call("keyctl", &[]), errno(libc::EPERM));
        assert_eq!(call("add_key", &[]), errno(libc::EPERM));
    }
}

#[test]
fn docker_default_is_resolved_as_docker_resolves_it() {
    let spec = docker_default_spec(&DOCKER_CAPS, Arch::X86_64, KERNEL).expect("resolves");
    assert_eq!(spec.default_action, "SCMP_ACT_ERRNO");
    assert_eq!(spec.default_errno_ret, Some(1));
    assert_eq!(
        spec.architectures,
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    );
    let rules_for = |spec: &Seccomp, name: &str| {
        spec.syscalls
            .iter()
            .filter(|s| s.names.iter().any(|n| n == name))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(rules_for(&spec, "mount").is_empty());
    assert!(rules_for(&spec, "s390_runtime_instr").is_empty());
    assert_eq!(rules_for(&spec, "arch_prctl").len(), 1);
    let clone = rules_for(&spec, "clone");
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0].args[0].op, "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone[0].args[0].index, 0);
    let clone3 = rules_for(&spec, "clone3");
    assert_eq!(clone3[0].errno_ret, Some(38));

    let admin = docker_default_spec(&["CAP_SYS_ADMIN"], Arch::Aarch64, KERNEL).expect("resolves");
    assert_eq!(admin.architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    assert_eq!(rules_for(&admin, "mount").len(), 1);
    assert!(rules_for(&admin, "arch_prctl").is_empty());
    assert!(
        rules_for(&admin, "clone3")
            .iter()
            .all(|r| r.action == "SCMP_ACT_ALLOW")
    );

    // minKernel: ptrace is allowed from 4.8 on without CAP_SYS_PTRACE.
    let old = KernelVersion { major: 4, minor: 4 };
    let spec = docker_default_spec(&DOCKER_CAPS, Arch::X86_64, old).expect("resolves");
    assert!(rules_for(&spec, "ptrace").is_empty());
    let spec = docker_default_spec(&DOCKER_CAPS, Arch::X86_64, KERNEL).expect("resolves");
    assert_eq!(rules_for(&spec, "ptrace").len(), 1);
}

#[test]
fn every_name_in_dockers_profile_is_known() {
    let v: serde_json::Value = serde_json::from_str(DOCKER_DEFAULT_PROFILE).expect("JSON");
    let calls = v["syscalls"].as_array().expect("syscalls");
    let mut names = 0;
    for call in calls {
        for name in call["names"].as_array().expect("names") {
            let name = name.as_str().expect("a name");
            assert_ne!(Arch::X86_64.syscall(name), Lookup::Unknown, "{name}");
            names += 1;
        }
    }
    assert!(names > 350, "{names} names");
}

#[test]
fn docker_format_errors_keep_their_location() {
    // The profile's own checks are kiln-spec's (docker_seccomp's tests); here, that the
    // runtime's error still says where the text is wrong.
    let e = docker_profile("{\"syscalls\": 3}", &DOCKER_CAPS, Arch::X86_64, KERNEL)
        .expect_err("not a list");
    assert!(matches!(e, SeccompError::Profile { line: 1, .. }), "{e}");
    let e = docker_profile("{}", &DOCKER_CAPS, Arch::X86_64, KERNEL).expect_err("no default");
    assert!(e.to_string().starts_with("defaultAction"), "{e}");
}

#[test]
fn the_running_kernel_is_read() {
    // Parsing versions is kiln-spec's (docker_seccomp's tests).
    let running = running_kernel().expect("uname");
    assert!(running >= KernelVersion { major: 3, minor: 0 });
}

#[test]
fn rules_conditions_and_precedence() {
    let spec = seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            // Two conditions on one argument: either (runc).
            {"names": ["close"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18,
             "args": [{"index": 0, "value": 7, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"}]},
            // Conditions on two arguments: both.
            {"names": ["dup3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 19,
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 524288, "valueTwo": 524288,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            // An unconditional allow does not hide a conditional kill.
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS",
             "args": [{"index": 2, "value": 4096, "op": "SCMP_CMP_GT"}]},
            {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["gettid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getuid"], "action": "SCMP_ACT_KILL"},
            {"names": ["getgid"], "action": "SCMP_ACT_LOG"},
            {"names": ["open", "s390_runtime_instr"], "action": "SCMP_ACT_ERRNO"}
        ]
    }));
    for arch in ARCHES {
        let p = compile_for(&spec, arch).expect("compiles");
        check(p.filter());
        let call = |name: &str, args: &[u64]| run(p.filter(), &Data::call(arch, name, args));
        assert_eq!(call("close", &[7]), errno(18));
        assert_eq!(call("close", &[9]), errno(18));
        assert_eq!(call("close", &[8]), ALLOW);
        assert_eq!(call("close", &[(1 << 32) | 7]), ALLOW);
        assert_eq!(call("dup3", &[1, 2, 0x80000]), errno(19));
        assert_eq!(call("dup3", &[1, 2, 0x80001]), errno(19));
        assert_eq!(call("dup3", &[1, 2, 0]), ALLOW);
        assert_eq!(call("dup3", &[2, 2, 0x80000]), ALLOW);
        assert_eq!(call("write", &[1, 0, 4096]), ALLOW);
        assert_eq!(call("write", &[1, 0, 4097]), KILL_PROCESS);
        assert_eq!(call("write", &[1, 0, 1 << 32]), KILL_PROCESS);
        assert_eq!(call("getpid", &[]), SECCOMP_RET_TRACE | 7);
        assert_eq!(call("gettid", &[]), SECCOMP_RET_TRAP);
        assert_eq!(call("getuid", &[]), SECCOMP_RET_KILL_THREAD);
        assert_eq!(call("getgid", &[]), SECCOMP_RET_LOG);
        assert_eq!(call("read", &[]), ALLOW);
        if arch == Arch::X86_64 {
            assert_eq!(call("open", &[]), errno(libc::EPERM));
        }
        // The default allows: no ENOSYS stub.
        let past = Data {
            nr: 1000,
            ..Data::call(arch, "read", &[])
        };
        assert_eq!(run(p.filter(), &past), ALLOW);
    }
}

#[test]
fn flags_and_defaults() {
    let p = compile_for(
        &seccomp(
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                      "SECCOMP_FILTER_FLAG_TSYNC"]}),
        ),
        Arch::X86_64,
    )
    .expect("compiles");
    assert_eq!(p.flags(), 7);
    check(p.filter());
    assert_eq!(
        run(p.filter(), &Data::call(Arch::X86_64, "read", &[])),
        errno(libc::ENOSYS)
    );
    let fprog = p.sock_fprog();
    assert_eq!(usize::from(fprog.len), p.filter().len());
    assert_eq!(fprog.filter.cast_const(), p.filter().as_ptr());
}

/// The refusals: each names the field and the value.
#[test]
fn refusals_name_the_field_and_value() {
    let base = || {
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]})
    };
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|v| v["defaultAction"] = json!("SCMP_ACT_ALLOWED")),
            "linux.seccomp.defaultAction = \"SCMP_ACT_ALLOWED\": unknown action",
        ),
        (
            Box::new(|v| v["defaultAction"] = json!("SCMP_ACT_NOTIFY")),
            "linux.seccomp.defaultAction = \"SCMP_ACT_NOTIFY\": is not supported",
        ),
        (
            Box::new(|v| v["defaultErrnoRet"] = json!(5000)),
            "linux.seccomp.defaultErrnoRet = 5000: is not an errno",
        ),
        (
            Box::new(|v| v["syscalls"][0]["errnoRet"] = json!(1)),
            "linux.seccomp.syscalls[0].errnoRet = 1: is given with SCMP_ACT_ALLOW",
        ),
        (
            Box::new(|v| v["syscalls"][0]["action"] = json!("allow")),
            "linux.seccomp.syscalls[0].action = \"allow\": unknown action",
        ),
        (
            Box::new(|v| v["syscalls"][0]["names"] = json!(["read", "raed"])),
            "linux.seccomp.syscalls[0].names[1] = \"raed\": unknown system call",
        ),
        (
            Box::new(|v| v["syscalls"][0]["names"] = json!([])),
            "linux.seccomp.syscalls[0].names = []: is empty",
        ),
        (
            Box::new(|v| v["syscalls"][0]["args"][0]["op"] = json!("SCMP_CMP_EQUAL")),
            "linux.seccomp.syscalls[0].args[0].op = \"SCMP_CMP_EQUAL\": unknown comparison",
        ),
        (
            Box::new(|v| v["syscalls"][0]["args"][0]["index"] = json!(6)),
            "linux.seccomp.syscalls[0].args[0].index = 6: is not an argument index",
        ),
        (
            Box::new(|v| v["architectures"] = json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"])),
            "linux.seccomp.architectures[1] = \"SCMP_ARCH_Z80\": unknown architecture",
        ),
        (
            Box::new(|v| v["flags"] = json!(["SECCOMP_FILTER_FLAG_NEW_LISTENER"])),
            "linux.seccomp.flags[0] = \"SECCOMP_FILTER_FLAG_NEW_LISTENER\": unknown",
        ),
        (
            Box::new(|v| v["listenerPath"] = json!("/run/agent.sock")),
            "linux.seccomp.listenerPath = \"/run/agent.sock\": is not supported",
        ),
    ];
    assert!(compile_for(&seccomp(base()), Arch::X86_64).is_ok());
    for (change, expected) in cases {
        let mut v = base();
        change(&mut v);
        let e = compile_for(&seccomp(v), Arch::Aarch64).expect_err(expected);
        assert!(
            e.to_string().starts_with(expected),
            "{e}\nexpected: {expected}"
        );
    }
}

#[test]
fn names_of_other_architectures_are_skipped() {
    let spec = seccomp(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["arch_prctl", "open", "s390_runtime_instr"], "action": "SCMP_ACT_ERRNO"}]}));
    let p = compile_for(&spec, Arch::Aarch64).expect("skipped on aarch64");
    check(p.filter());
    let p = compile_for(&spec, Arch::X86_64).expect("x86_64");
    let call = |name: &str| run(p.filter(), &Data::call(Arch::X86_64, name, &[]));
    assert_eq!(call("arch_prctl"), errno(libc::EPERM));
    assert_eq!(call("open"), errno(libc::EPERM));
    assert_eq!(call("openat"), ALLOW);
}

#[test]
fn too_many_conditions_are_refused_not_truncated() {
    // Each rule: six 64-bit conditions, 33 instructions; 150 of them do not fit.
    let args: Vec<_> = (0..6)
        .map(|i| json!({"index": i, "value": 5, "op": "SCMP_CMP_GT"}))
        .collect();
    let syscalls: Vec<_> = (0..150)
        .map(|_| json!({"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": args}))
        .collect();
    let spec = seccomp(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": syscalls}));
    let e = compile_for(&spec, Arch::X86_64).expect_err("too long");
    assert!(matches!(e, SeccompError::TooLong { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The system call table.

#[test]
fn table_is_sorted_and_matches_libc() {
    assert!(
        syscalls::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0),
        "sorted, no duplicates"
    );
    #[cfg(target_arch = "x86_64")]
    let (arch, expected) = (
        Arch::X86_64,
        [
            ("read", libc::SYS_read),
            ("open", libc::SYS_open),
            ("arch_prctl", libc::SYS_arch_prctl),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("mount", libc::SYS_mount),
            ("keyctl", libc::SYS_keyctl),
            ("personality", libc::SYS_personality),
            ("seccomp", libc::SYS_seccomp),
            ("execveat", libc::SYS_execveat),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("fchmodat2", libc::SYS_fchmodat2),
            ("mseal", libc::SYS_mseal),
        ],
    );
    #[cfg(target_arch = "aarch64")]
    let (arch, expected) = (
        Arch::Aarch64,
        [
            ("read", libc::SYS_read),
            ("openat", libc::SYS_openat),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("mount", libc::SYS_mount),
            ("keyctl", libc::SYS_keyctl),
            ("personality", libc::SYS_personality),
            ("seccomp", libc::SYS_seccomp),
            ("execveat", libc::SYS_execveat),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("mseal", libc::SYS_mseal),
        ],
    );
    for (name, nr) in expected {
        let nr = u32::try_from(nr).expect("a number");
        assert_eq!(arch.syscall(name), Lookup::Here(nr), "{name}");
    }
    assert_eq!(Arch::Aarch64.syscall("open"), Lookup::Elsewhere);
    assert_eq!(Arch::X86_64.syscall("set_tls"), Lookup::Elsewhere);
    assert_eq!(Arch::X86_64.syscall("no_such_call"), Lookup::Unknown);
}

// ---------------------------------------------------------------------------------------------
// Random profiles against the semantics written out.

const NAMES: [&str; 10] = [
    "read",
    "write",
    "close",
    "getpid",
    "openat",
    "open",
    "arch_prctl",
    "keyctl",
    "personality",
    "s390_runtime_instr",
];
const ACTIONS: [&str; 8] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_LOG",
];
const OPS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            2,
            0x40000,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x8000_0000_0000_0000,
            u64::MAX,
        ]),
        any::<u64>(),
        0u64..4,
    ]
}

/// An action with an errnoRet where the action takes one.
fn act() -> impl Strategy<Value = (String, Option<u32>)> {
    (
        prop::sample::select(ACTIONS.to_vec()),
        prop::option::of(0u32..300),
    )
        .prop_map(|(a, e)| {
            let e = e.filter(|_| a == "SCMP_ACT_ERRNO" || a == "SCMP_ACT_TRACE");
            (a.to_string(), e)
        })
}

fn rule() -> impl Strategy<Value = Syscall> {
    let arg = (
        0u32..4,
        value(),
        value(),
        prop::sample::select(OPS.to_vec()),
    )
        .prop_map(|(index, value, value_two, op)| SeccompArg {
            index,
            value,
            value_two,
            op: op.to_string(),
        });
    (
        prop::collection::vec(prop::sample::select(NAMES.to_vec()), 1..3),
        act(),
        prop::collection::vec(arg, 0..4),
    )
        .prop_map(|(names, (action, errno_ret), args)| Syscall {
            names: names.into_iter().map(String::from).collect(),
            action,
            errno_ret,
            args,
        })
}

fn profile() -> impl Strategy<Value = Seccomp> {
    (act(), prop::collection::vec(rule(), 0..8)).prop_map(|((action, errno), syscalls)| Seccomp {
        default_action: action,
        default_errno_ret: errno,
        syscalls,
        ..Seccomp::default()
    })
}

fn data(arch: Arch) -> impl Strategy<Value = Data> {
    let nrs: Vec<u32> = NAMES
        .iter()
        .filter_map(|n| match arch.syscall(n) {
            Lookup::Here(nr) => Some(nr),
            _ => None,
        })
        .chain([1000, X32_SYSCALL_BIT, X32_SYSCALL_BIT | 1, u32::MAX])
        .collect();
    (
        prop_oneof![8 => prop::sample::select(nrs), 1 => any::<u32>()],
        prop_oneof![9 => Just(arch.audit_arch()), 1 => any::<u32>()],
        prop::array::uniform6(value()),
    )
        .prop_map(|(nr, arch, args)| Data { nr, arch, args })
}

/// The return value the runtime-spec (with runc's and the kernel's rules) gives for `d`.
fn reference(spec: &Seccomp, arch: Arch, d: &Data) -> u32 {
    let ret = |action: &str, errno: Option<u32>| match action {
        "SCMP_ACT_ALLOW" => (6, ALLOW),
        "SCMP_ACT_LOG" => (5, SECCOMP_RET_LOG),
        "SCMP_ACT_TRACE" => (4, SECCOMP_RET_TRACE | errno.unwrap_or(1)),
        "SCMP_ACT_ERRNO" => (3, SECCOMP_RET_ERRNO | errno.unwrap_or(1)),
        "SCMP_ACT_TRAP" => (2, SECCOMP_RET_TRAP),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => (1, SECCOMP_RET_KILL_THREAD),
        "SCMP_ACT_KILL_PROCESS" => (0, KILL_PROCESS),
        other => panic!("{other}"),
    };
    if d.arch != arch.audit_arch() {
        return KILL_PROCESS;
    }
    if arch == Arch::X86_64 && d.nr >= X32_SYSCALL_BIT && d.nr != u32::MAX {
        return KILL_PROCESS;
    }
    let holds = |a: &SeccompArg| {
        let v = d.args[usize::try_from(a.index).expect("index")];
        match a.op.as_str() {
            "SCMP_CMP_NE" => v != a.value,
            "SCMP_CMP_LT" => v < a.value,
            "SCMP_CMP_LE" => v <= a.value,
            "SCMP_CMP_EQ" => v == a.value,
            "SCMP_CMP_GE" => v >= a.value,
            "SCMP_CMP_GT" => v > a.value,
            "SCMP_CMP_MASKED_EQ" => v & a.value == a.value_two,
            other => panic!("{other}"),
        }
    };
    let mut last = None;
    let mut best: Option<(u8, u32)> = None;
    for call in &spec.syscalls {
        let (rank, r) = ret(&call.action, call.errno_ret);
        for name in &call.names {
            let Lookup::Here(nr) = arch.syscall(name) else {
                continue;
            };
            last = last.max(Some(nr));
            let repeated = call
                .args
                .iter()
                .enumerate()
                .any(|(i, a)| call.args[..i].iter().any(|b| b.index == a.index));
            let matched = if repeated {
                call.args.iter().any(holds)
            } else {
                call.args.iter().all(holds)
            };
            if nr == d.nr && matched && best.is_none_or(|(b, _)| rank < b) {
                best = Some((rank, r));
            }
        }
    }
    let (rank, default) = ret(&spec.default_action, spec.default_errno_ret);
    let enosys = errno(libc::ENOSYS);
    match best {
        Some((_, r)) => r,
        None if rank <= 3 && default != enosys && last.is_some_and(|l| d.nr > l) => enosys,
        None => default,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compiled_programs_follow_the_spec(
        spec in profile(),
        x86 in prop::collection::vec(data(Arch::X86_64), 48),
        arm in prop::collection::vec(data(Arch::Aarch64), 48),
    ) {
        for (arch, points) in [(Arch::X86_64, x86), (Arch::Aarch64, arm)] {
            let p = compile_for(&spec, arch).expect("a valid profile compiles");
            check(p.filter());
            for d in &points {
                prop_assert_eq!(run(p.filter(), d), reference(&spec, arch, d), "{:?} on {}", d, arch);
            }
        }
    }

    /// Mangled profiles: an error or a program, never a panic.
    #[test]
    fn mangled_profiles_do_not_panic(
        at in 0usize..DOCKER_DEFAULT_PROFILE.len(),
        cut in 0usize..24,
        insert in "[\\[\\]{}\",:0-9a-zA-Z_ .-]{0,24}",
    ) {
        let mut text = DOCKER_DEFAULT_PROFILE.as_bytes()[..at].to_vec();
        text.extend_from_slice(insert.as_bytes());
        text.extend_from_slice(DOCKER_DEFAULT_PROFILE.as_bytes().get(at + cut..).unwrap_or_default());
        let text = String::from_utf8_lossy(&text);
        for arch in ARCHES {
            if let Ok(spec) = docker_profile(&text, &DOCKER_CAPS, arch, KERNEL)
                && let Ok(p) = compile_for(&spec, arch)
            {
                check(p.filter());
            }
        }
        if let Ok(spec) = serde_json::from_str::<Seccomp>(&text) {
            let _ = compile_for(&spec, Arch::X86_64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// In the real kernel: this test binary, run again as a child that installs a filter.

/// Tells the child which filter to install.
const CHILD: &str = "KILN_SECCOMP_TEST_CHILD";
/// A path that does not exist: the calls that reach the kernel fail with ENOENT.
const MISSING: &str = "/nonexistent-kiln-seccomp-test";

/// A profile that allows everything but a few calls, each with its own answer.
fn custom() -> Seccomp {
    seccomp(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV,
             "args": [{"index": 0, "value": 0x0040000, "valueTwo": 0x0040000,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ELOOP},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    }))
}

/// Install `program` in this thread (with no_new_privs, which seccompiler always sets).
fn install(program: &Program) {
    let filter: Vec<seccompiler::sock_filter> = program
        .filter()
        .iter()
        .map(|i| seccompiler::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    seccompiler::apply_filter(&filter).expect("install the filter");
}

fn report(probe: &str, result: nix::Result<()>) {
    let outcome = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{e:?}"),
    };
    println!("seccomp-probe {probe}={outcome}");
}

/// The child's side: install the filter `mode` names, then make the probe calls.
fn child(mode: &str) {
    use nix::sys::personality::{self, Persona};
    let program = match mode {
        "control" => None,
        "docker" => Some(docker_default(&DOCKER_CAPS).expect("compiles")),
        "custom" | "kill" => Some(compile(&custom()).expect("compiles")),
        other => panic!("unknown mode {other}"),
    };
    if let Some(p) = &program {
        install(p);
    }
    report("personality-query", personality::get().map(drop));
    report(
        "personality-no-randomize",
        personality::set(Persona::ADDR_NO_RANDOMIZE).map(drop),
    );
    report("chroot", nix::unistd::chroot(MISSING));
    report(
        "mount",
        nix::mount::mount(
            Some("none"),
            MISSING,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ),
    );
    if mode == "kill" {
        let _ = nix::unistd::getppid();
        report("survived", Ok(()));
    }
}

/// Run this test in a child with `mode`, and its probes' outcomes.
fn in_child(mode: &str) -> (Output, BTreeMap<String, String>) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "seccomp::tests::filters_work_in_the_kernel",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .output()
        .expect("run the test binary");
    let probes = String::from_utf8_lossy(&out.stdout)
        .lines()
        // The harness writes "test NAME ... " before the first line.
        .filter_map(|l| l.split_once("seccomp-probe ").map(|(_, p)| p))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (out, probes)
}

#[test]
fn filters_work_in_the_kernel() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    let probe = |probes: &BTreeMap<String, String>, name: &str| {
        probes.get(name).cloned().unwrap_or_default()
    };
    let (out, control) = in_child("control");
    assert!(out.status.success(), "control: {out:?}");
    assert_eq!(probe(&control, "personality-no-randomize"), "ok");
    assert_eq!(probe(&control, "chroot"), "ENOENT");

    // Docker's default profile with Docker's default capabilities.
    let (out, docker) = in_child("docker");
    assert!(out.status.success(), "docker: {out:?}");
    assert_eq!(probe(&docker, "personality-query"), "ok");
    assert_eq!(probe(&docker, "personality-no-randomize"), "EPERM");
    assert_eq!(
        probe(&docker, "chroot"),
        "ENOENT",
        "allowed with CAP_SYS_CHROOT"
    );
    assert_eq!(probe(&docker, "mount"), "EPERM");

    // A custom profile: errno values of its own, a masked argument, a kill.
    let (out, custom) = in_child("custom");
    assert!(out.status.success(), "custom: {out:?}");
    assert_eq!(probe(&custom, "personality-no-randomize"), "EXDEV");
    // personality(0xffffffff) has the masked bit too.
    assert_eq!(probe(&custom, "personality-query"), "EXDEV");
    assert_eq!(probe(&custom, "chroot"), "ELOOP");
    assert_eq!(probe(&custom, "mount"), probe(&control, "mount"));

    let (out, killed) = in_child("kill");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "kill: {out:?}");
    assert_eq!(probe(&killed, "chroot"), "ELOOP");
    assert!(!killed.contains_key("survived"));
}
