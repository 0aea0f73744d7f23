//! `kiln run qemu NAME`: boot what `kiln build` wrote (kernel+initrd, an ISO, a disk image or
//! a UKI). `kiln run bundle DIR`:
//! run an OCI bundle on this machine with kiln's runtime, as kiln-init would (like `runc run`).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_vm::{Accel, Boot, Disk, Firmware, Networking, Publish, Qemu};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Boot NAME-kernel, NAME-initrd.img and NAME-cmdline, or an image kiln wrote (ISO, disk
    /// in raw, qcow2, VHD or VMDK, UKI, GCE tarball) under SeaBIOS or UEFI as it needs, in qemu,
    /// the serial console on this terminal; the exit code is qemu's (0 after the guest powers
    /// off)
    Qemu(Box<QemuArgs>),
    /// Run the OCI bundle in DIR (config.json, and runtime.json when present) with kiln's
    /// runtime, stdout and stderr on this terminal, stdin empty. The exit code is the
    /// container's (128+N when a signal N ended it), 126 when its program cannot be executed,
    /// 127 when it is not found, 125 when kiln itself fails (as `docker run`). Needs root.
    Bundle(BundleArgs),
    /// Press the ACPI power button of a guest started with --detached [--state STATE_DIR] and
    /// wait for it to power off (services stop, onshutdown runs); qemu is killed after --timeout
    Stop(StopArgs),
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// The state directory of the detached guest (--state, default NAME-state)
    state: PathBuf,
    /// Seconds to wait for the guest to power off
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Args, Debug)]
pub struct BundleArgs {
    /// The bundle directory
    dir: PathBuf,
    /// Carry out runtime.json's host mounts and directories first (kiln-init does, once per boot)
    #[arg(long)]
    prepare: bool,
}

fn run_bundle(a: &BundleArgs) -> anyhow::Result<ExitCode> {
    use kiln_runtime::{Created, Options, RuntimeError};
    use std::process::Stdio;
    let options = Options {
        host_mounts: a.prepare,
        // Mount points made for the run are not part of the bundle.
        remove_mountpoints: true,
        // The container does not outlive kiln, even when kiln is killed.
        die_with_parent: true,
    };
    let exit = Created::from_bundle(&a.dir, options)
        .and_then(|created| created.run(Stdio::inherit(), Stdio::inherit()));
    match exit {
        Ok(exit) => Ok(ExitCode::from(u8::try_from(exit.code()).unwrap_or(u8::MAX))),
        // The container was set up but its program could not run: the shell's codes, as
        // `docker run` gives them; the message is the container's failure, not kiln's.
        Err(e @ RuntimeError::Exec { .. }) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(if e.is_not_found() { 127 } else { 126 }))
        }
        Err(e) => Err(e).with_context(|| format!("running the bundle {}", a.dir.display())),
    }
}

/// `kiln run qemu`'s flags: LinuxKit's `linuxkit run qemu` flags with their spelling and
/// meaning, and kiln's own (`--append`, `-p`, `tap:NAME`, `--accel auto`).
#[derive(Args, Debug)]
pub struct QemuArgs {
    /// The NAME given to `kiln build` (a path prefix: dir/NAME works)
    name: PathBuf,
    /// Virtual CPUs
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory in MiB
    #[arg(long, default_value_t = 1024)]
    mem: u32,
    /// Disk [file=]PATH[,size=SIZE][,format=FORMAT], created when missing; SIZE is GiB, or
    /// NM / NG (1G when not given); without PATH, disk.img in the state directory; repeatable
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Networking: user (or default: qemu's slirp, with DHCP), tap,DEVICE, bridge,BRIDGE or
    /// none (tap:DEVICE and bridge:BRIDGE too)
    #[arg(long, default_value = "user")]
    networking: String,
    /// Publish HOST:GUEST[/tcp|/udp] from the host to the guest (user networking); repeatable
    #[arg(long = "publish", short = 'p')]
    publish: Vec<String>,
    /// Accelerator: auto or kvm:tcg (KVM when /dev/kvm is usable and KILN_KVM is not 0, else
    /// TCG), kvm or tcg; default $LINUXKIT_QEMU_ACCEL, else auto
    #[arg(long)]
    accel: Option<String>,
    /// Extra kernel command-line arguments, appended to NAME-cmdline
    #[arg(long)]
    append: Option<String>,
    /// User data for the guest, on a CD-ROM (pkg/metadata puts it at /run/config/userdata)
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Like --data, from a file
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
    /// Run in the background; the state directory gets pid, console.log and the qemu arguments
    #[arg(long)]
    detached: bool,
    /// State directory: the user-data CD-ROM, disks named by size only, virtiofs sockets, and
    /// for --detached the pid, console.log and qemu arguments (default NAME-state)
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Boot NAME-kernel, NAME-initrd.img and NAME-cmdline (what kiln does for a NAME prefix)
    #[arg(long)]
    kernel: bool,
    /// Boot NAME.iso (NAME-efi.iso with --uefi), or the file NAME as a CD-ROM
    #[arg(long)]
    iso: bool,
    /// Boot NAME-kernel and NAME-initrd.img with NAME-squashfs.img (or NAME-erofs.img) as the
    /// root disk (what `kiln build -f kernel+squashfs` writes; found without the flag too)
    #[arg(long)]
    squashfs: bool,
    /// Boot with UEFI firmware (OVMF; images kiln writes for UEFI get it without the flag)
    #[arg(long)]
    uefi: bool,
    /// UEFI firmware file (default: OVMF.fd where Debian's ovmf package installs it)
    #[arg(long, value_name = "PATH")]
    fw: Option<PathBuf>,
    /// Show a display in a qemu window (the serial console stays on this terminal)
    #[arg(long)]
    gui: bool,
    /// Add a USB controller
    #[arg(long)]
    usb: bool,
    /// Add a qemu device, DRIVER[,PROP=VALUE...] as qemu's -device takes it; repeatable
    #[arg(long = "device", value_name = "DEV")]
    devices: Vec<String>,
    /// The qemu binary (default qemu-system-ARCH from PATH)
    #[arg(long, value_name = "PATH")]
    qemu: Option<String>,
    /// The virtiofsd binary (default ../lib/qemu/virtiofsd beside qemu, else
    /// /usr/libexec/virtiofsd)
    #[arg(long, value_name = "PATH")]
    virtiofsd: Option<PathBuf>,
    /// Share a host directory with the guest through virtio-fs, tag virtiofsN for the Nth;
    /// repeatable
    #[arg(long = "virtiofs", value_name = "DIR")]
    virtiofs: Vec<PathBuf>,
}

fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut p = name.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where a system's root image goes.
#[derive(Debug, PartialEq, Eq)]
enum RootImage {
    /// The first virtio disk (`kernel+squashfs`, `kernel+erofs`).
    Disk(PathBuf),
    /// The first CD-ROM drive (`kernel+iso`).
    Cdrom(PathBuf),
}

/// The root image of a `kernel+squashfs`, `kernel+erofs` or `kernel+iso` system NAME (whose
/// command line mounts the root from the first virtio disk or CD-ROM drive), which must be
/// attached first; or none.
fn root_image(a: &QemuArgs) -> anyhow::Result<Option<RootImage>> {
    if a.name.is_file() {
        return Ok(None);
    }
    let cmdline = std::fs::read_to_string(with_suffix(&a.name, "-cmdline")).unwrap_or_default();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    if words.contains(&"kiln.root=/dev/sr0") {
        let iso = with_suffix(&a.name, ".iso");
        if !iso.is_file() {
            anyhow::bail!(
                "{}: not found; build it with `kiln build -f kernel+iso --name NAME`",
                iso.display()
            );
        }
        return Ok(Some(RootImage::Cdrom(iso)));
    }
    if !a.squashfs && !words.contains(&"kiln.root=/dev/vda") {
        return Ok(None);
    }
    let found = ["-squashfs.img", "-erofs.img"]
        .iter()
        .map(|s| with_suffix(&a.name, s))
        .find(|p| p.is_file());
    match found {
        Some(p) => Ok(Some(RootImage::Disk(p))),
        None => anyhow::bail!(
            "{}: not found; build it with `kiln build -f kernel+squashfs --name NAME`",
            with_suffix(&a.name, "-squashfs.img").display()
        ),
    }
}

/// What to boot, and with which firmware, from the path and the flags, as LinuxKit decides it:
/// an existing file is an image (an ISO, a disk in any format kiln writes, a UKI, a Google
/// Compute Engine tarball, whose disk.raw is unpacked into `state`); otherwise the path is a
/// prefix: `NAME.iso` (`NAME-efi.iso` with --uefi) with --iso, else NAME-kernel, NAME-initrd.img
/// and NAME-cmdline.
fn boot_target(a: &QemuArgs, state: &Path) -> anyhow::Result<(Boot, bool)> {
    let file = if a.name.is_file() {
        Some(a.name.clone())
    } else if a.iso && !a.kernel {
        let iso = with_suffix(&a.name, if a.uefi { "-efi.iso" } else { ".iso" });
        if !iso.is_file() {
            anyhow::bail!(
                "{}: not found; build it with `kiln build -f {} --name NAME`",
                iso.display(),
                if a.uefi { "iso-efi" } else { "iso-bios" }
            );
        }
        Some(iso)
    } else {
        None
    };
    let Some(file) = file else {
        if a.iso {
            tracing::warn!("--kernel: booting the kernel and initrd; --iso ignored");
        }
        let q = Qemu::from_name(&a.name)?;
        return Ok((q.boot, a.uefi));
    };
    if file.to_string_lossy().ends_with(".img.tar.gz") {
        let raw = kiln_vm::boot::unpack_gcp(&file, state)?;
        let boot = Boot::Disk {
            path: raw,
            format: "raw".into(),
        };
        return Ok((boot, a.uefi));
    }
    let (boot, efi) = match kiln_vm::boot::detect(&file)? {
        Some(found) => found,
        // Any other file is a raw disk image, as LinuxKit takes it.
        None => (
            Boot::Disk {
                path: file.clone(),
                format: "raw".into(),
            },
            false,
        ),
    };
    let boot = match boot {
        Boot::Disk { path, .. } if a.iso => Boot::Cdrom(path),
        other => other,
    };
    Ok((boot, efi || a.uefi))
}

/// The accelerator: the flag, else $LINUXKIT_QEMU_ACCEL (as LinuxKit), else auto.
fn accel_value(flag: Option<&str>) -> String {
    match flag {
        Some(v) => v.to_string(),
        None => std::env::var("LINUXKIT_QEMU_ACCEL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "auto".into()),
    }
}

/// Run a `kiln run` command; `run qemu` boots a guest of the global `--arch` (LinuxKit's
/// `run qemu --arch` means the same).
pub fn run(cmd: RunCommand) -> anyhow::Result<ExitCode> {
    run_for_arch(cmd, Some(crate::images().arch()))
}

/// Run a `kiln run` command; `run qemu` boots a guest of `arch` (qemu's, Rust's or Go's name;
/// this machine's when `None`).
pub fn run_for_arch(cmd: RunCommand, arch: Option<&str>) -> anyhow::Result<ExitCode> {
    let a = match cmd {
        RunCommand::Qemu(a) => a,
        RunCommand::Bundle(b) => return run_bundle(&b),
        RunCommand::Stop(s) => {
            let clean =
                kiln_vm::stop_detached(&s.state, std::time::Duration::from_secs(s.timeout))?;
            if !clean {
                anyhow::bail!(
                    "the guest did not power off within {} s; qemu was killed",
                    s.timeout
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let arch = kiln_vm::qemu_arch(arch.unwrap_or(std::env::consts::ARCH))?;
    let state = a
        .state
        .clone()
        .unwrap_or_else(|| with_suffix(&a.name, "-state"));
    let (boot, uefi) = boot_target(&a, &state)?;
    let mut q = Qemu::new(boot);
    match root_image(&a)? {
        Some(RootImage::Disk(root)) => q.disks.push(Disk {
            path: Some(root),
            size_mb: None,
            format: Some("raw".into()),
        }),
        Some(RootImage::Cdrom(iso)) => q.root_cdrom = Some(iso),
        None => {}
    }
    if uefi {
        q.firmware = Firmware::Uefi(kiln_vm::boot::uefi_firmware(a.fw.as_deref(), arch)?);
    } else if a.fw.is_some() {
        tracing::warn!("--fw is used with --uefi only; ignored");
    }
    q.arch = arch.to_string();
    q.qemu = a
        .qemu
        .clone()
        .unwrap_or_else(|| format!("qemu-system-{arch}"));
    q.state = Some(state.clone());
    q.cpus = a.cpus;
    q.mem_mb = a.mem;
    for d in &a.disks {
        q.disks.push(d.parse::<Disk>()?);
    }
    q.networking = a.networking.parse::<Networking>()?;
    for p in &a.publish {
        q.publish.push(p.parse::<Publish>()?);
    }
    if !q.publish.is_empty() && q.networking != Networking::User {
        anyhow::bail!("--publish needs --networking user");
    }
    q.accel = accel_value(a.accel.as_deref())
        .parse::<Accel>()
        .with_context(|| match a.accel {
            Some(_) => "the accelerator".to_string(),
            None => "the accelerator named by LINUXKIT_QEMU_ACCEL".to_string(),
        })?;
    if q.accel == Accel::Kvm && arch != std::env::consts::ARCH {
        // As LinuxKit: no hardware acceleration for another architecture.
        tracing::info!("--accel kvm: a {arch} guest runs under TCG on this machine");
        q.accel = Accel::Tcg;
    }
    q.gui = a.gui;
    q.usb = a.usb;
    q.devices = a.devices.clone();
    q.virtiofs = a.virtiofs.clone();
    q.virtiofsd = a.virtiofsd.clone();
    if let Some(extra) = &a.append
        && !q.append(extra)
    {
        tracing::warn!("--append: the image's boot loader has its own command line; ignored");
    }
    let data = match (&a.data, &a.data_file) {
        (Some(d), _) => Some(d.as_bytes().to_vec()),
        (None, Some(f)) => {
            Some(std::fs::read(f).with_context(|| format!("reading --data-file {}", f.display()))?)
        }
        (None, None) => None,
    };
    if let Some(data) = &data {
        std::fs::create_dir_all(&state)
            .with_context(|| format!("creating the state directory {}", state.display()))?;
        q.cdrom = Some(kiln_vm::user_data_iso(data, &state)?);
    }
    if a.detached {
        let pid = q
            .start_detached(&state)
            .with_context(|| format!("starting {} in the background", a.name.display()))?;
        println!("{pid}");
        eprintln!(
            "started qemu (pid {pid}); console in {}",
            state.join("console.log").display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let status = q.run()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        qemu: QemuArgs,
    }

    fn args(line: &[&str]) -> QemuArgs {
        let mut argv = vec!["kiln"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.qemu,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    #[test]
    fn linuxkit_flags_parse() {
        let a = args(&[
            "--cpus",
            "2",
            "--mem",
            "512",
            "--disk",
            "size=1G",
            "--disk",
            "file=d.img,format=raw",
            "--networking",
            "tap,tap0",
            "--accel",
            "kvm:tcg",
            "--detached",
            "--state",
            "st",
            "--kernel",
            "--gui",
            "--usb",
            "--device",
            "usb-tablet",
            "--device",
            "usb-kbd",
            "--qemu",
            "/usr/bin/qemu-system-x86_64",
            "--virtiofsd",
            "/v",
            "--virtiofs",
            "a",
            "--virtiofs",
            "b",
            "--fw",
            "f.fd",
            "--data",
            "x",
            "p",
        ]);
        assert!(a.detached && a.kernel && a.gui && a.usb);
        assert_eq!(a.state, Some(PathBuf::from("st")));
        assert_eq!(a.devices, ["usb-tablet", "usb-kbd"]);
        assert_eq!(a.virtiofs, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(a.disks.len(), 2);
        // --detached takes no value: a second positional is refused.
        let cli = Cli::try_parse_from(["kiln", "--detached", "state", "p"]);
        assert!(cli.is_err());
    }

    #[test]
    fn what_to_boot_follows_the_path_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let name = dir.path().join("sys");
        for s in ["-kernel", "-initrd.img"] {
            std::fs::write(with_suffix(&name, s), b"x").expect("write");
        }
        let n = name.to_str().expect("utf-8 path");
        let kind = |line: &[&str]| boot_target(&args(line), &state);
        let (boot, uefi) = kind(&[n]).expect("kernel");
        assert!(matches!(boot, Boot::Kernel { .. }) && !uefi);
        let (boot, uefi) = kind(&["--kernel", "--iso", n]).expect("kernel wins");
        assert!(matches!(boot, Boot::Kernel { .. }) && !uefi);
        let (_, uefi) = kind(&["--uefi", n]).expect("kernel under UEFI");
        assert!(uefi);
        let e = kind(&["--iso", n]).expect_err("no NAME.iso").to_string();
        assert!(e.contains("sys.iso") && e.contains("iso-bios"), "{e}");
        std::fs::write(with_suffix(&name, "-efi.iso"), b"x").expect("write");
        let (boot, uefi) = kind(&["--iso", "--uefi", n]).expect("NAME-efi.iso");
        assert!(matches!(boot, Boot::Cdrom(_)) && uefi);
        let e = root_image(&args(&["--squashfs", n]))
            .expect_err("no squashfs")
            .to_string();
        assert!(e.contains("sys-squashfs.img"), "{e}");
        std::fs::write(with_suffix(&name, "-erofs.img"), b"x").expect("write");
        let found = root_image(&args(&["--squashfs", n])).expect("erofs");
        assert_eq!(
            found,
            Some(RootImage::Disk(with_suffix(&name, "-erofs.img")))
        );

        let raw = dir.path().join("sys-efi.img");
        std::fs::write(&raw, b"x").expect("write");
        let (boot, uefi) = kind(&[raw.to_str().expect("utf-8")]).expect("disk");
        assert!(matches!(boot, Boot::Disk { ref format, .. } if format == "raw") && uefi);
        let other = dir.path().join("disk.bin");
        std::fs::write(&other, b"x").expect("write");
        let (boot, uefi) = kind(&[other.to_str().expect("utf-8")]).expect("any file");
        assert!(matches!(boot, Boot::Disk { .. }) && !uefi);
    }

    #[test]
    fn accel_comes_from_the_flag_then_linuxkit_env() {
        assert_eq!(accel_value(Some("tcg")), "tcg");
        // The environment is read only when the flag is absent (checked without changing it).
        let env = std::env::var("LINUXKIT_QEMU_ACCEL")
            .ok()
            .filter(|v| !v.is_empty());
        assert_eq!(accel_value(None), env.unwrap_or_else(|| "auto".into()));
    }
}
