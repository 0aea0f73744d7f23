//! Seccomp profiles, as a config.json's `linux.seccomp` section and in Docker's profile format
//! (with `archMap`, `includes` and `excludes`): parsing, resolving and compiling must return a
//! program or an error, never panic, and every program must pass the checks the kernel makes
//! before it installs one (at most 4096 instructions, every jump inside, a return at the end).
#![no_main]

use kiln_runtime::seccomp::{Arch, KernelVersion, MAX_INSTRUCTIONS, Program};
use libfuzzer_sys::fuzz_target;

const BPF_JA: u16 = 0x05;
const BPF_JEQ_JGT_JGE: [u16; 3] = [0x15, 0x25, 0x35];
const BPF_RET_K: u16 = 0x06;

fn check(program: &Program) {
    let f = program.filter();
    assert!(!f.is_empty() && f.len() <= MAX_INSTRUCTIONS);
    assert_eq!(f.last().map(|i| i.code), Some(BPF_RET_K));
    for (pc, i) in f.iter().enumerate() {
        let far = if i.code == BPF_JA {
            pc + 1 + i.k as usize
        } else if BPF_JEQ_JGT_JGE.contains(&i.code) {
            pc + 1 + usize::from(i.jt.max(i.jf))
        } else {
            pc
        };
        assert!(far < f.len(), "jump from {pc} leaves the program");
    }
    assert_eq!(usize::from(program.sock_fprog().len), f.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let caps = ["CAP_CHOWN", "CAP_SYS_CHROOT", "CAP_SYS_ADMIN"];
    let kernel = KernelVersion { major: 6, minor: 1 };
    let oci = serde_json::from_str::<kiln_spec::Seccomp>(text).ok();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        if let Some(spec) = &oci
            && let Ok(p) = kiln_runtime::seccomp::compile_for(spec, arch)
        {
            check(&p);
        }
        if let Ok(spec) = kiln_runtime::seccomp::docker_profile(text, &caps, arch, kernel)
            && let Ok(p) = kiln_runtime::seccomp::compile_for(&spec, arch)
        {
            check(&p);
        }
    }
});
