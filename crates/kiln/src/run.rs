//! `kiln run qemu NAME`: boot what `kiln build -f kernel+initrd` wrote. `kiln run bundle DIR`:
//! run an OCI bundle on this machine with kiln's runtime, as kiln-init would (like `runc run`).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln_vm::{Accel, Disk, Networking, Publish, Qemu};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Boot NAME-kernel, NAME-initrd.img and NAME-cmdline in qemu, the serial console on this
    /// terminal; the exit code is qemu's (0 after the guest powers off)
    Qemu(QemuArgs),
    /// Run the OCI bundle in DIR (config.json, and runtime.json when present) with kiln's
    /// runtime, stdout and stderr on this terminal, stdin empty. The exit code is the
    /// container's (128+N when a signal N ended it), 126 when its program cannot be executed,
    /// 127 when it is not found, 125 when kiln itself fails (as `docker run`). Needs root.
    Bundle(BundleArgs),
    /// Press the ACPI power button of a guest started with --detached STATE_DIR and wait for it
    /// to power off (services stop, onshutdown runs); qemu is killed after --timeout
    Stop(StopArgs),
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// The state directory given to --detached
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
    /// Disk image PATH[,size=1G], created when missing (qcow2 by extension, else raw); repeatable
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// Networking: user (qemu's slirp, with DHCP), tap:DEVICE, or none
    #[arg(long, default_value = "user")]
    networking: String,
    /// Publish HOST:GUEST[/tcp|/udp] from the host to the guest (user networking); repeatable
    #[arg(long = "publish", short = 'p')]
    publish: Vec<String>,
    /// Accelerator: auto (KVM when /dev/kvm is usable and KILN_KVM is not 0), kvm or tcg
    #[arg(long, default_value = "auto")]
    accel: String,
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
    #[arg(long, value_name = "STATE_DIR")]
    detached: Option<PathBuf>,
}

pub fn run(cmd: RunCommand) -> anyhow::Result<ExitCode> {
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
    let mut q = Qemu::from_name(&a.name)?;
    q.cpus = a.cpus;
    q.mem_mb = a.mem;
    for d in &a.disks {
        q.disks.push(d.parse::<Disk>()?);
    }
    q.networking = match a.networking.as_str() {
        "user" => Networking::User,
        "none" => Networking::None,
        other => match other.strip_prefix("tap:") {
            Some(dev) if !dev.is_empty() => Networking::Tap(dev.to_string()),
            _ => anyhow::bail!("--networking {other}: use user, tap:DEVICE or none"),
        },
    };
    for p in &a.publish {
        q.publish.push(p.parse::<Publish>()?);
    }
    if !q.publish.is_empty() && q.networking != Networking::User {
        anyhow::bail!("--publish needs --networking user");
    }
    q.accel = match a.accel.as_str() {
        "auto" => Accel::Auto,
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => anyhow::bail!("--accel {other}: use auto, kvm or tcg"),
    };
    if let Some(extra) = &a.append {
        q.cmdline = format!("{} {extra}", q.cmdline).trim().to_string();
    }
    let data = match (&a.data, &a.data_file) {
        (Some(d), _) => Some(d.as_bytes().to_vec()),
        (None, Some(f)) => {
            Some(std::fs::read(f).with_context(|| format!("reading --data-file {}", f.display()))?)
        }
        (None, None) => None,
    };
    // Attached runs keep the CD-ROM in a temporary directory; detached ones in the state dir.
    let scratch = tempfile::tempdir().context("a temporary directory for the user data")?;
    if let Some(data) = &data {
        let dir = a.detached.as_deref().unwrap_or(scratch.path());
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        q.cdrom = Some(kiln_vm::user_data_iso(data, dir)?);
    }
    if let Some(state) = &a.detached {
        let pid = q
            .start_detached(state)
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
