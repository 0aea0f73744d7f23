//! kiln-vm launches the systems kiln builds. qemu first: kernel+initrd booted with a serial
//! console, user-mode (slirp) or no networking, published ports, disks created on demand, and
//! either attached to the terminal (the guest's power-off ends the run) or detached with a state
//! directory holding the pid, the console log and the command line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Errors of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// An input file is missing.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What to do.
        message: String,
    },
    /// A flag value is malformed.
    #[error("{flag} {value}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is expected.
        message: String,
    },
    /// qemu (or qemu-img) could not be run.
    #[error("{program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: io::Error,
    },
    /// qemu-img failed.
    #[error("creating {path}: {message}")]
    Disk {
        /// The disk image.
        path: PathBuf,
        /// qemu-img's message.
        message: String,
    },
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when it really works (/dev/kvm opens and a probe guest reaches its BIOS within a
    /// few seconds; `KILN_KVM=0` skips the probe), else TCG.
    #[default]
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// Guest networking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Networking {
    /// qemu's user-mode network (slirp): DHCP in the guest, ports published with hostfwd.
    #[default]
    User,
    /// A tap device on the host.
    Tap(String),
    /// No network device.
    None,
}

/// A port published from the host to the guest (user networking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Host port.
    pub host: u16,
    /// Guest port.
    pub guest: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl std::str::FromStr for Publish {
    type Err = VmError;
    fn from_str(s: &str) -> Result<Self, VmError> {
        let bad = |m: &str| VmError::Flag {
            flag: "--publish",
            value: s.to_string(),
            message: m.to_string(),
        };
        let (ports, protocol) = match s.split_once('/') {
            Some((p, proto @ ("tcp" | "udp"))) => (p, proto),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
            None => (s, "tcp"),
        };
        let (h, g) = ports
            .split_once(':')
            .ok_or_else(|| bad("write HOST:GUEST[/tcp|/udp]"))?;
        Ok(Publish {
            host: h.parse().map_err(|_| bad("the host port is a number"))?,
            guest: g.parse().map_err(|_| bad("the guest port is a number"))?,
            protocol: protocol.to_string(),
        })
    }
}

/// A disk attached as virtio-blk, created (qcow2 or raw, by extension) when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// Size for a new image, as qemu-img takes it (`1G`, `512M`).
    pub size: String,
}

impl std::str::FromStr for Disk {
    type Err = VmError;
    fn from_str(s: &str) -> Result<Self, VmError> {
        let mut path = None;
        let mut size = "1G".to_string();
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("size", v)) => size = v.to_string(),
                Some(("file", v)) => path = Some(PathBuf::from(v)),
                Some((k, _)) => {
                    return Err(VmError::Flag {
                        flag: "--disk",
                        value: s.to_string(),
                        message: format!("unknown key {k:?}: use file=PATH,size=SIZE"),
                    });
                }
                None => path = Some(PathBuf::from(part)),
            }
        }
        let path = path.ok_or_else(|| VmError::Flag {
            flag: "--disk",
            value: s.to_string(),
            message: "name the image file: PATH[,size=1G]".into(),
        })?;
        Ok(Disk { path, size })
    }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initrd.
    pub initrd: PathBuf,
    /// Kernel command line (the console is added when missing).
    pub cmdline: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub mem_mb: u32,
    /// Disks.
    pub disks: Vec<Disk>,
    /// Networking.
    pub networking: Networking,
    /// Published ports.
    pub publish: Vec<Publish>,
    /// Accelerator.
    pub accel: Accel,
    /// The qemu binary.
    pub qemu: String,
    /// A CD-ROM image attached read-only (the user data of `--data`).
    pub cdrom: Option<PathBuf>,
}

impl Qemu {
    /// Boot `NAME-kernel`, `NAME-initrd.img` and `NAME-cmdline` (what `kiln build` writes).
    pub fn from_name(name: &Path) -> Result<Qemu, VmError> {
        let with = |suffix: &str| {
            let mut p = name.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        let (kernel, initrd, cmdline) = (with("-kernel"), with("-initrd.img"), with("-cmdline"));
        for p in [&kernel, &initrd] {
            if !p.is_file() {
                return Err(VmError::Input {
                    path: p.clone(),
                    message: "not found: build it with `kiln build -f kernel+initrd --name NAME`"
                        .into(),
                });
            }
        }
        let cmdline = fs::read_to_string(&cmdline)
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Qemu {
            kernel,
            initrd,
            cmdline,
            cpus: 1,
            mem_mb: 1024,
            disks: Vec::new(),
            networking: Networking::User,
            publish: Vec::new(),
            accel: Accel::Auto,
            qemu: "qemu-system-x86_64".into(),
            cdrom: None,
        })
    }

    /// Whether KVM is used.
    pub fn uses_kvm(&self) -> bool {
        match self.accel {
            Accel::Kvm => true,
            Accel::Tcg => false,
            Accel::Auto => {
                std::env::var("KILN_KVM").map_or(true, |v| v != "0")
                    && fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/kvm")
                        .is_ok()
                    && kvm_works(&self.qemu)
            }
        }
    }

    /// Create missing disk images.
    pub fn create_disks(&self) -> Result<(), VmError> {
        for d in &self.disks {
            if d.path.exists() {
                continue;
            }
            let format = if d.path.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            run_tool(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", format])
                    .arg(&d.path)
                    .arg(&d.size),
                |message| VmError::Disk {
                    path: d.path.clone(),
                    message,
                },
            )?;
        }
        Ok(())
    }

    /// The qemu command line (without the console wiring).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let kvm = self.uses_kvm();
        push(&["-M", "pc", "-accel", if kvm { "kvm" } else { "tcg" }]);
        if kvm {
            push(&["-cpu", "host"]);
        }
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.mem_mb.to_string(),
        ]);
        push(&["-nodefaults", "-no-reboot", "-display", "none"]);
        push(&[
            "-kernel",
            &self.kernel.to_string_lossy(),
            "-initrd",
            &self.initrd.to_string_lossy(),
        ]);
        let mut cmdline = self.cmdline.clone();
        if !cmdline
            .split_whitespace()
            .any(|w| w.starts_with("console="))
        {
            cmdline = format!("console=ttyS0 {cmdline}").trim().to_string();
        }
        if !cmdline.split_whitespace().any(|w| w.starts_with("panic=")) {
            cmdline.push_str(" panic=-1");
        }
        push(&["-append", &cmdline]);
        push(&["-device", "virtio-rng-pci"]);
        if let Some(iso) = &self.cdrom {
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,media=cdrom,if=ide,readonly=on",
                    iso.display()
                ),
            ]);
        }
        for (i, d) in self.disks.iter().enumerate() {
            let format = if d.path.extension().is_some_and(|e| e == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            push(&[
                "-drive",
                &format!(
                    "file={},format={format},if=none,id=disk{i}",
                    d.path.display()
                ),
                "-device",
                &format!("virtio-blk-pci,drive=disk{i}"),
            ]);
        }
        match &self.networking {
            Networking::None => {}
            Networking::User => {
                let mut nic = "user,id=net0".to_string();
                for p in &self.publish {
                    nic.push_str(&format!(",hostfwd={}::{}-:{}", p.protocol, p.host, p.guest));
                }
                push(&["-netdev", &nic, "-device", "virtio-net-pci,netdev=net0"]);
            }
            Networking::Tap(dev) => push(&[
                "-netdev",
                &format!("tap,id=net0,ifname={dev},script=no,downscript=no"),
                "-device",
                "virtio-net-pci,netdev=net0",
            ]),
        }
        a
    }

    /// Boot with the serial console on this terminal (stdin and stdout); returns when the guest
    /// powers off. The exit status is qemu's: 0 after a clean power-off.
    pub fn run(&self) -> Result<ExitStatus, VmError> {
        self.create_disks()?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(self.args()).args(["-serial", "stdio"]);
        exit_with_parent(&mut cmd);
        cmd.status().map_err(|source| VmError::Spawn {
            program: self.qemu.clone(),
            source,
        })
    }

    /// Boot in the background. `state` receives `pid`, `console.log` and `cmdline` (the qemu
    /// arguments); returns the pid.
    pub fn start_detached(&self, state: &Path) -> Result<u32, VmError> {
        self.create_disks()?;
        fs::create_dir_all(state).map_err(io_at(state))?;
        let log = state.join("console.log");
        let args = self.args();
        fs::write(state.join("cmdline"), args.join("\n")).map_err(io_at(state))?;
        let child = Command::new(&self.qemu)
            .args(&args)
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                state.join("monitor.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(state.join("qemu.err")).map_err(io_at(state))?)
            .spawn()
            .map_err(|source| VmError::Spawn {
                program: self.qemu.clone(),
                source,
            })?;
        fs::write(state.join("pid"), child.id().to_string()).map_err(io_at(state))?;
        Ok(child.id())
    }
}

/// Write `data` as the user data of a guest: an ISO 9660 CD-ROM image labelled `cidata` (as
/// cloud-init's NoCloud source expects) holding it as `user-data` and as `config` (LinuxKit's
/// name), made by genisoimage. Returns the image's path, `dir/user-data.iso`.
pub fn user_data_iso(data: &[u8], dir: &Path) -> Result<PathBuf, VmError> {
    let content = dir.join("user-data.d");
    fs::create_dir_all(&content).map_err(io_at(&content))?;
    for name in ["user-data", "config"] {
        fs::write(content.join(name), data).map_err(io_at(&content))?;
    }
    let iso = dir.join("user-data.iso");
    run_tool(
        Command::new("genisoimage")
            .args(["-quiet", "-V", "cidata", "-J", "-r", "-o"])
            .arg(&iso)
            .arg(&content),
        |stderr| input(&iso, format!("genisoimage failed: {stderr}")),
    )?;
    let _ = fs::remove_dir_all(&content);
    Ok(iso)
}

/// Press the ACPI power button of a guest started by [`Qemu::start_detached`] (through qemu's
/// monitor) and wait up to `timeout` for it to power off. Returns whether it did; if not, qemu
/// is killed.
pub fn stop_detached(state: &Path, timeout: std::time::Duration) -> Result<bool, VmError> {
    use std::io::Write;
    let pid_file = state.join("pid");
    let pid: u32 = fs::read_to_string(&pid_file)
        .map_err(io_at(&pid_file))?
        .trim()
        .parse()
        .map_err(|_| input(&pid_file, "not a pid"))?;
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    };
    if !alive() {
        return Ok(true);
    }
    let sock = state.join("monitor.sock");
    let mut monitor = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(|e| input(&sock, format!("{e} (is the guest running?)")))?;
    monitor
        .write_all(b"system_powerdown\n")
        .map_err(io_at(&sock))?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !alive() {
            return Ok(true);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    Ok(false)
}

/// Whether a KVM guest gets as far as printing its BIOS banner within three seconds (on some
/// hosts /dev/kvm exists but guests hang).
fn kvm_works(qemu: &str) -> bool {
    use std::io::Read;
    let Ok(mut child) = Command::new(qemu)
        .args([
            "-accel",
            "kvm",
            "-M",
            "pc",
            "-m",
            "64",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-no-reboot", "-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let Some(mut out) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(7).any(|w| w == b"SeaBIOS") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let ok = rx.recv_timeout(std::time::Duration::from_secs(3)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    ok
}

/// A problem with an input or output file.
fn input(path: &Path, message: impl ToString) -> VmError {
    VmError::Input {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// An I/O error at `path`, as [`input`].
fn io_at(path: &Path) -> impl Fn(io::Error) -> VmError + '_ {
    move |e| input(path, e)
}

/// Run a helper program (qemu-img, genisoimage) to completion; when it fails, `failed` turns
/// its stderr into the error.
fn run_tool(cmd: &mut Command, failed: impl FnOnce(String) -> VmError) -> Result<(), VmError> {
    let out = cmd.output().map_err(|source| VmError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The attached qemu goes when kiln goes (killed, say), instead of running on unseen.
#[allow(unsafe_code)]
fn exit_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and the hook touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let p: Publish = "8080:80".parse().expect("publish");
        assert_eq!((p.host, p.guest, p.protocol.as_str()), (8080, 80, "tcp"));
        let p: Publish = "5353:53/udp".parse().expect("publish");
        assert_eq!(p.protocol, "udp");
        assert!("80".parse::<Publish>().is_err());
        assert!("a:80".parse::<Publish>().is_err());
        let d: Disk = "data.qcow2,size=2G".parse().expect("disk");
        assert_eq!(
            (d.path, d.size.as_str()),
            (PathBuf::from("data.qcow2"), "2G")
        );
        assert!("size=1G".parse::<Disk>().is_err());
    }

    #[test]
    fn command_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = dir.path().join("sys");
        for s in ["-kernel", "-initrd.img"] {
            fs::write(format!("{}{s}", name.display()), b"x").expect("write");
        }
        fs::write(format!("{}-cmdline", name.display()), "quiet\n").expect("write");
        let mut q = Qemu::from_name(&name).expect("from name");
        q.accel = Accel::Tcg;
        q.publish.push("2222:22".parse().expect("publish"));
        let args = q.args().join(" ");
        assert!(args.contains("-accel tcg"), "{args}");
        assert!(
            args.contains("-append console=ttyS0 quiet panic=-1"),
            "{args}"
        );
        assert!(args.contains("hostfwd=tcp::2222-:22"), "{args}");
        let missing = Qemu::from_name(&dir.path().join("nothing")).expect_err("missing");
        assert!(missing.to_string().contains("nothing-kernel"), "{missing}");
    }
}
