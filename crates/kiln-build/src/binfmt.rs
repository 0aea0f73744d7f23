//! RUN steps of another architecture: the kernel hands the stage's binaries to qemu-user
//! through binfmt_misc. Before such a step runs, kiln checks that the handler is registered,
//! enabled and usable inside a container (the `F` flag: the interpreter is opened when it is
//! registered, so it need not exist in the build's root), and says how to add it when not.

use std::path::Path;

const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// qemu-user's name for the architecture `arch` (Go's naming), or `None` when binaries of
/// `arch` run natively here.
fn qemu_name(arch: &str) -> Option<&'static str> {
    let arch = kiln_oci::spec::normalize_arch(arch);
    if arch == crate::vars::host_arch() || (arch == "386" && crate::vars::host_arch() == "amd64") {
        return None;
    }
    Some(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "riscv64" => "riscv64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        _ => "",
    })
}

/// Check that RUN steps of linux/`arch` can run on this machine; the error says what to do.
pub(crate) fn check(arch: &str) -> Result<(), String> {
    check_in(Path::new(BINFMT_MISC), arch)
}

fn check_in(dir: &Path, arch: &str) -> Result<(), String> {
    let Some(qemu) = qemu_name(arch) else {
        return Ok(());
    };
    let platform = format!("linux/{}", kiln_oci::spec::normalize_arch(arch));
    if qemu.is_empty() {
        return Err(format!(
            "RUN steps of {platform} images cannot run here: kiln knows no qemu-user emulator \
             for it; build the stage with FROM --platform=$BUILDPLATFORM and cross-compile"
        ));
    }
    let entry = dir.join(format!("qemu-{qemu}"));
    let how = format!(
        "install Debian's qemu-user-static and binfmt-support (apt-get install qemu-user-static \
         binfmt-support), mount binfmt_misc if {} is empty (mount -t binfmt_misc binfmt_misc {}) \
         and run `update-binfmts --enable qemu-{qemu}`",
        dir.display(),
        dir.display()
    );
    let Ok(text) = std::fs::read_to_string(&entry) else {
        return Err(format!(
            "RUN steps of {platform} images run through qemu-user, and no handler is registered \
             ({} is missing): {how}",
            entry.display()
        ));
    };
    let enabled = text.lines().next() == Some("enabled");
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("")
        .trim();
    if !enabled {
        return Err(format!(
            "RUN steps of {platform} images run through qemu-user, and its handler {} is \
             disabled: run `update-binfmts --enable qemu-{qemu}`",
            entry.display()
        ));
    }
    if !flags.contains('F') {
        return Err(format!(
            "RUN steps of {platform} images run through qemu-user, and its handler {} lacks \
             the F flag (flags: {flags:?}), so the emulator would have to exist inside the \
             build's root: register the static emulator instead: {how}",
            entry.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn native_architectures_need_no_handler() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check_in(dir.path(), crate::vars::host_arch()), Ok(()));
    }

    #[test]
    fn a_foreign_architecture_needs_an_enabled_fix_binary_handler() {
        let foreign = if crate::vars::host_arch() == "arm64" {
            ("amd64", "qemu-x86_64")
        } else {
            ("arm64", "qemu-aarch64")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = check_in(dir.path(), foreign.0).expect_err("no handler");
        assert!(
            missing.contains("apt-get install qemu-user-static"),
            "{missing}"
        );
        assert!(
            missing.contains(&format!("update-binfmts --enable {}", foreign.1)),
            "{missing}"
        );
        handler(
            dir.path(),
            foreign.1,
            "disabled\ninterpreter /usr/libexec/qemu-binfmt/x-binfmt-P\nflags: PF\n",
        );
        let disabled = check_in(dir.path(), foreign.0).expect_err("disabled");
        assert!(disabled.contains("is disabled"), "{disabled}");
        handler(
            dir.path(),
            foreign.1,
            "enabled\ninterpreter /usr/bin/qemu\nflags: P\noffset 0\n",
        );
        let no_f = check_in(dir.path(), foreign.0).expect_err("no F flag");
        assert!(no_f.contains("lacks the F flag"), "{no_f}");
        handler(
            dir.path(),
            foreign.1,
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/x-binfmt-P\nflags: PF\noffset 0\n",
        );
        assert_eq!(check_in(dir.path(), foreign.0), Ok(()));
    }

    #[test]
    fn an_architecture_without_an_emulator_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_in(dir.path(), "wasm").expect_err("no emulator");
        assert!(err.contains("--platform=$BUILDPLATFORM"), "{err}");
    }
}
