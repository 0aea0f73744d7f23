//! kiln-vm launches the systems kiln builds. qemu first: kernel+initrd, or an ISO, a disk image
//! or a Unified Kernel Image booted by SeaBIOS or UEFI firmware ([`boot`]), with a serial
//! console, user-mode (slirp) or no networking, published ports, disks created on demand, and
//! either attached to the terminal (the guest's power-off ends the run) or detached with a state
//! directory holding the pid, the console log and the command line.

pub mod boot;
pub mod serve;

pub use boot::{Boot, Firmware};
pub use serve::{ServeError, ServeOptions, Server, ipxe_script};

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

impl std::str::FromStr for Accel {
    type Err = VmError;
    /// kiln's `auto`, `kvm` and `tcg`, and LinuxKit's spellings: a colon-separated list tried in
    /// order as qemu does (`kvm:tcg` is `auto`), and the empty string (no accelerator: TCG).
    fn from_str(s: &str) -> Result<Self, VmError> {
        let bad = |m: &str| VmError::Flag {
            flag: "--accel",
            value: s.to_string(),
            message: m.to_string(),
        };
        let list: Vec<&str> = s.split(':').map(str::trim).collect();
        match list.as_slice() {
            ["auto"] => Ok(Accel::Auto),
            [""] | ["tcg", ..] => Ok(Accel::Tcg),
            ["kvm"] => Ok(Accel::Kvm),
            ["kvm", "tcg", ..] => Ok(Accel::Auto),
            [first @ ("hvf" | "whpx" | "hax" | "nvmm"), ..] => Err(bad(&format!(
                "{first} is not available on Linux: use kvm:tcg (KVM when usable, else TCG), kvm or tcg"
            ))),
            _ => Err(bad("use auto (the same as kvm:tcg), kvm or tcg")),
        }
    }
}

/// Guest networking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Networking {
    /// qemu's user-mode network (slirp): DHCP in the guest, ports published with hostfwd.
    #[default]
    User,
    /// A tap device on the host.
    Tap(String),
    /// A bridge on the host, joined through qemu's bridge helper (`-netdev bridge,br=NAME`).
    Bridge(String),
    /// No network device.
    None,
}

impl std::str::FromStr for Networking {
    type Err = VmError;
    /// `user` (or LinuxKit's `default`), `none`, `tap,NAME` or `bridge,NAME` (LinuxKit's
    /// spelling), and `tap:NAME` or `bridge:NAME`.
    fn from_str(s: &str) -> Result<Self, VmError> {
        let bad = |m: &str| VmError::Flag {
            flag: "--networking",
            value: s.to_string(),
            message: m.to_string(),
        };
        let (mode, name) = match s.find([',', ':']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let device = |mode: &str| match name {
            Some(n) if !n.is_empty() => Ok(n.to_string()),
            _ => Err(bad(&format!("name the {mode} device: {mode},NAME"))),
        };
        match mode {
            "" | "default" | "user" if name.is_none() => Ok(Networking::User),
            "none" if name.is_none() => Ok(Networking::None),
            "tap" => Ok(Networking::Tap(device("tap")?)),
            "bridge" => Ok(Networking::Bridge(device("bridge")?)),
            _ => Err(bad("use user (or default), tap,NAME, bridge,NAME or none")),
        }
    }
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

/// A disk attached as virtio-blk, created when missing: `[file=]PATH[,size=SIZE][,format=FMT]`
/// (LinuxKit's syntax). SIZE is a number of GiB, or N`M` / N`G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image file; without one, [`Qemu::create_disks`] puts it in the state directory
    /// (`disk.img`, `disk1.img`, ..., as LinuxKit does).
    pub path: Option<PathBuf>,
    /// Size of a new image in MiB (1 GiB when not given).
    pub size_mb: Option<u64>,
    /// Image format (qemu-img's name); when not given, an existing image's own, else qcow2 for
    /// a `.qcow2` name or an image in the state directory and raw for other names.
    pub format: Option<String>,
}

/// A disk size as LinuxKit writes it: a bare number of GiB, or `NM` / `NG`; in MiB.
pub fn parse_size_mb(s: &str) -> Option<u64> {
    let (digits, factor) = match s.as_bytes().last()? {
        b'M' => (&s[..s.len() - 1], 1),
        b'G' => (&s[..s.len() - 1], 1024),
        _ => (s, 1024),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

impl std::str::FromStr for Disk {
    type Err = VmError;
    fn from_str(s: &str) -> Result<Self, VmError> {
        let bad = |m: String| VmError::Flag {
            flag: "--disk",
            value: s.to_string(),
            message: m,
        };
        let mut disk = Disk {
            path: None,
            size_mb: None,
            format: None,
        };
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("size", v)) => {
                    disk.size_mb = Some(parse_size_mb(v).filter(|&n| n > 0).ok_or_else(|| {
                        bad(format!(
                            "size {v:?}: write a number of GiB, or a number followed by M or G"
                        ))
                    })?);
                }
                Some(("file", v)) if !v.is_empty() => disk.path = Some(PathBuf::from(v)),
                Some(("format", v))
                    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    disk.format = Some(v.to_string());
                }
                Some((k, _)) => {
                    return Err(bad(format!(
                        "{k:?}: use [file=]PATH[,size=SIZE][,format=FORMAT]"
                    )));
                }
                None if !part.is_empty() => disk.path = Some(PathBuf::from(part)),
                None => {}
            }
        }
        if disk.path.is_none() && disk.size_mb.is_none() {
            return Err(bad(
                "name the image file or give its size: [file=]PATH[,size=SIZE]".into(),
            ));
        }
        Ok(disk)
    }
}

/// The format of the disk `d` at `path`: the one given; else an existing image's (qcow2 by its
/// magic number, else raw); else qcow2 for a `.qcow2` name or a disk named by its size alone
/// (as LinuxKit), raw for other names.
fn disk_format(d: &Disk, path: &Path) -> String {
    use std::io::Read;
    if let Some(f) = &d.format {
        return f.clone();
    }
    let mut magic = [0u8; 4];
    let qcow2 = match fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut magic).is_ok() && &magic == b"QFI\xfb",
        Err(_) => d.path.is_none() || path.extension().is_some_and(|e| e == "qcow2"),
    };
    if qcow2 { "qcow2" } else { "raw" }.to_string()
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// What to boot.
    pub boot: Boot,
    /// The firmware.
    pub firmware: Firmware,
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
    /// A CD-ROM image attached read-only as the first CD-ROM drive, before [`Qemu::cdrom`]:
    /// the root of a `kernel+iso` system (`/dev/sr0` in the guest).
    pub root_cdrom: Option<PathBuf>,
    /// The guest architecture, in qemu's words: `x86_64`, `aarch64` or `riscv64`.
    pub arch: String,
    /// Show a display (a graphics card in a qemu window) besides the serial console.
    pub gui: bool,
    /// Add a USB controller.
    pub usb: bool,
    /// Extra qemu `-device` values, as given.
    pub devices: Vec<String>,
    /// Host directories shared with the guest through virtio-fs (tags `virtiofs0`, ...).
    pub virtiofs: Vec<PathBuf>,
    /// The virtiofsd binary; by default `../lib/qemu/virtiofsd` beside qemu, else
    /// `/usr/libexec/virtiofsd`.
    pub virtiofsd: Option<PathBuf>,
    /// The state directory: disks without a file name and virtiofs sockets go there.
    pub state: Option<PathBuf>,
}

/// The qemu architectures kiln boots, from qemu's, Rust's or Go's name (`amd64`, `arm64`).
pub fn qemu_arch(name: &str) -> Result<&'static str, VmError> {
    match name {
        "x86_64" | "amd64" => Ok("x86_64"),
        "aarch64" | "arm64" => Ok("aarch64"),
        "riscv64" => Ok("riscv64"),
        other => Err(VmError::Flag {
            flag: "--arch",
            value: other.to_string(),
            message: "kiln boots x86_64, aarch64 and riscv64 guests".into(),
        }),
    }
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
        Ok(Qemu::new(Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        }))
    }

    /// Boot `boot` with the defaults: SeaBIOS, one CPU, 1 GiB, user networking, x86_64.
    pub fn new(boot: Boot) -> Qemu {
        Qemu {
            boot,
            firmware: Firmware::Bios,
            cpus: 1,
            mem_mb: 1024,
            disks: Vec::new(),
            networking: Networking::User,
            publish: Vec::new(),
            accel: Accel::Auto,
            qemu: "qemu-system-x86_64".into(),
            cdrom: None,
            root_cdrom: None,
            arch: "x86_64".into(),
            gui: false,
            usb: false,
            devices: Vec::new(),
            virtiofs: Vec::new(),
            virtiofsd: None,
            state: None,
        }
    }

    /// Append `extra` to the kernel command line (for a kernel and initrd only; firmware reads
    /// the command line from the image). Returns whether it could.
    pub fn append(&mut self, extra: &str) -> bool {
        match &mut self.boot {
            Boot::Kernel { cmdline, .. } => {
                *cmdline = format!("{cmdline} {extra}").trim().to_string();
                true
            }
            _ => false,
        }
    }

    /// Whether KVM is used (never for a guest of another architecture than this machine's).
    pub fn uses_kvm(&self) -> bool {
        match self.accel {
            Accel::Kvm => true,
            Accel::Tcg => false,
            Accel::Auto => {
                self.arch == std::env::consts::ARCH
                    && std::env::var("KILN_KVM").map_or(true, |v| v != "0")
                    && fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/kvm")
                        .is_ok()
                    && kvm_works(&self.qemu)
            }
        }
    }

    /// The image file of the `i`th disk: its own, or `disk.img`, `disk1.img`, ... in the state
    /// directory.
    pub fn disk_path(&self, i: usize) -> Result<PathBuf, VmError> {
        let d = self.disks.get(i).ok_or_else(|| VmError::Flag {
            flag: "--disk",
            value: i.to_string(),
            message: "no such disk".into(),
        })?;
        if let Some(p) = &d.path {
            return Ok(p.clone());
        }
        let state = self.state.as_deref().ok_or_else(|| VmError::Flag {
            flag: "--disk",
            value: format!("size={}M", d.size_mb.unwrap_or(1024)),
            message: "a disk without a file name needs a state directory".into(),
        })?;
        let id = if i == 0 { String::new() } else { i.to_string() };
        Ok(state.join(format!("disk{id}.img")))
    }

    /// Create missing disk images.
    pub fn create_disks(&self) -> Result<(), VmError> {
        for (i, d) in self.disks.iter().enumerate() {
            let path = self.disk_path(i)?;
            if path.exists() {
                continue;
            }
            let format = disk_format(d, &path);
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(io_at(dir))?;
            }
            run_tool(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", &format])
                    .arg(&path)
                    .arg(format!("{}M", d.size_mb.unwrap_or(1024))),
                |message| VmError::Disk {
                    path: path.clone(),
                    message,
                },
            )?;
        }
        Ok(())
    }

    /// The directory a UKI is booted from (in the state directory).
    fn uki_dir(&self) -> PathBuf {
        self.state
            .as_deref()
            .unwrap_or(Path::new("."))
            .join("uki-esp")
    }

    /// Prepare what the boot needs: missing disks, a UKI's FAT directory.
    fn prepare(&self) -> Result<(), VmError> {
        self.create_disks()?;
        if let Boot::Uki(uki) = &self.boot {
            let state = self.state.as_deref().unwrap_or(Path::new("."));
            boot::uki_directory(uki, state)?;
        }
        Ok(())
    }

    /// The virtiofs socket of the `i`th shared directory.
    fn virtiofs_socket(&self, i: usize) -> PathBuf {
        self.state
            .as_deref()
            .unwrap_or(Path::new("."))
            .join(format!("virtiofs{i}"))
    }

    /// The qemu command line (without the console wiring).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let kvm = self.uses_kvm();
        let x86 = self.arch == "x86_64";
        let (machine, console) = match self.arch.as_str() {
            "aarch64" => ("virt", "ttyAMA0"),
            "riscv64" => ("virt", "ttyS0"),
            _ => ("pc", "ttyS0"),
        };
        push(&["-M", machine, "-accel", if kvm { "kvm" } else { "tcg" }]);
        if kvm {
            push(&["-cpu", "host"]);
        } else if self.arch == "aarch64" {
            push(&["-cpu", "cortex-a57"]);
        }
        push(&[
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.mem_mb.to_string(),
        ]);
        push(&["-nodefaults", "-no-reboot"]);
        if self.gui {
            push(&["-device", if x86 { "VGA" } else { "virtio-gpu-pci" }]);
        } else {
            push(&["-display", "none"]);
        }
        if let Firmware::Uefi(fw) = &self.firmware {
            push(&["-bios", &fw.to_string_lossy()]);
        }
        match &self.boot {
            Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                push(&[
                    "-kernel",
                    &kernel.to_string_lossy(),
                    "-initrd",
                    &initrd.to_string_lossy(),
                ]);
                let mut cmdline = cmdline.clone();
                if !cmdline
                    .split_whitespace()
                    .any(|w| w.starts_with("console="))
                {
                    let screen = if self.gui { "console=tty0 " } else { "" };
                    cmdline = format!("{screen}console={console} {cmdline}")
                        .trim()
                        .to_string();
                } else if !cmdline.split_whitespace().any(|w| {
                    w.strip_prefix("console=")
                        .is_some_and(|c| c.starts_with(console))
                }) {
                    // The same manifest boots on another machine: x86's console=ttyS0 does not
                    // exist on arm64's virt, whose serial port is ttyAMA0. The last console
                    // named is the one the guest's programs write to.
                    cmdline = format!("{cmdline} console={console}");
                }
                if !cmdline.split_whitespace().any(|w| w.starts_with("panic=")) {
                    cmdline.push_str(" panic=-1");
                }
                push(&["-append", &cmdline]);
            }
            Boot::Cdrom(iso) => {
                push(&[
                    "-drive",
                    &format!(
                        "file={},format=raw,media=cdrom,if=none,id=boot,readonly=on",
                        iso.display()
                    ),
                ]);
                if x86 {
                    push(&["-device", "ide-cd,drive=boot,bootindex=0"]);
                } else {
                    push(&["-device", "virtio-scsi-pci"]);
                    push(&["-device", "scsi-cd,drive=boot,bootindex=0"]);
                }
            }
            // A stream-optimized VMDK cannot be written in place: the guest's writes go to a
            // temporary overlay.
            Boot::Disk { path, format } => push(&[
                "-drive",
                &format!(
                    "file={},format={format},if=none,id=boot{}",
                    path.display(),
                    if format == "vmdk" { ",snapshot=on" } else { "" }
                ),
                "-device",
                "virtio-blk-pci,drive=boot,bootindex=0",
            ]),
            Boot::Uki(_) => push(&[
                "-drive",
                &format!(
                    "file=fat:{},format=raw,if=none,id=boot,readonly=on",
                    self.uki_dir().display()
                ),
                "-device",
                "virtio-blk-pci,drive=boot,bootindex=0",
            ]),
        }
        push(&["-device", "virtio-rng-pci"]);
        for iso in self.root_cdrom.iter().chain(&self.cdrom) {
            let bus = if x86 { "if=ide" } else { "if=virtio" };
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,media=cdrom,{bus},readonly=on",
                    iso.display()
                ),
            ]);
        }
        for (i, d) in self.disks.iter().enumerate() {
            // Paths are checked by create_disks, which runs first.
            let Ok(path) = self.disk_path(i) else {
                continue;
            };
            let format = disk_format(d, &path);
            push(&[
                "-drive",
                &format!("file={},format={format},if=none,id=disk{i}", path.display()),
                "-device",
                &format!("virtio-blk-pci,drive=disk{i}"),
            ]);
        }
        let netdev = match &self.networking {
            Networking::None => None,
            Networking::User => {
                let mut nic = "user,id=net0".to_string();
                for p in &self.publish {
                    nic.push_str(&format!(",hostfwd={}::{}-:{}", p.protocol, p.host, p.guest));
                }
                Some(nic)
            }
            Networking::Tap(dev) => {
                Some(format!("tap,id=net0,ifname={dev},script=no,downscript=no"))
            }
            Networking::Bridge(br) => Some(format!("bridge,id=net0,br={br}")),
        };
        if let Some(netdev) = netdev {
            push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
        }
        if self.usb {
            if x86 {
                push(&["-usb"]);
            } else {
                push(&["-device", "qemu-xhci"]);
            }
        }
        for d in &self.devices {
            push(&["-device", d]);
        }
        if !self.virtiofs.is_empty() {
            push(&[
                "-object",
                &format!("memory-backend-memfd,id=mem,size={}M,share=on", self.mem_mb),
                "-numa",
                "node,memdev=mem",
            ]);
        }
        for i in 0..self.virtiofs.len() {
            let socket = self.virtiofs_socket(i);
            push(&[
                "-chardev",
                &format!("socket,id=fs{i},path={}", socket.display()),
                "-device",
                &format!("vhost-user-fs-pci,chardev=fs{i},tag=virtiofs{i}"),
            ]);
        }
        a
    }

    /// The virtiofsd to run: [`Qemu::virtiofsd`], else `../lib/qemu/virtiofsd` beside the
    /// qemu found in PATH, else `/usr/libexec/virtiofsd`.
    fn virtiofsd_path(&self) -> PathBuf {
        if let Some(p) = &self.virtiofsd {
            return p.clone();
        }
        let qemu = Path::new(&self.qemu);
        let found = if qemu.components().count() > 1 {
            Some(qemu.to_path_buf())
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(qemu))
                    .find(|p| p.is_file())
            })
        };
        found
            .and_then(|q| q.parent().map(|d| d.join("../lib/qemu/virtiofsd")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/libexec/virtiofsd"))
    }

    /// Start one virtiofsd per shared directory and wait until each listens on its socket.
    /// `attached` daemons end with this process; detached ones with qemu's connection.
    fn start_virtiofsd(&self, attached: bool) -> Result<Vec<std::process::Child>, VmError> {
        let mut children = Vec::new();
        if self.virtiofs.is_empty() {
            return Ok(children);
        }
        let Some(state) = self.state.as_deref() else {
            return Err(VmError::Flag {
                flag: "--virtiofs",
                value: self.virtiofs[0].display().to_string(),
                message: "virtiofs needs a state directory for its sockets".into(),
            });
        };
        fs::create_dir_all(state).map_err(io_at(state))?;
        let program = self.virtiofsd_path();
        for (i, dir) in self.virtiofs.iter().enumerate() {
            if !dir.is_dir() {
                return Err(input(dir, "--virtiofs: not a directory"));
            }
            // virtiofsd resolves the source after entering its own mount namespace.
            let dir = fs::canonicalize(dir).map_err(io_at(dir))?;
            let socket = self.virtiofs_socket(i);
            let _ = fs::remove_file(&socket);
            let mut cmd = Command::new(&program);
            cmd.arg(format!("--socket-path={}", socket.display()))
                .arg("-o")
                .arg(format!("source={}", dir.display()))
                .stdin(Stdio::null());
            if attached {
                exit_with_parent(&mut cmd);
            } else {
                let err = state.join(format!("virtiofsd{i}.err"));
                cmd.stdout(Stdio::null())
                    .stderr(fs::File::create(&err).map_err(io_at(&err))?);
            }
            let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
                program: format!("{} (give --virtiofsd PATH)", program.display()),
                source,
            })?;
            // virtiofsd creates its socket before it accepts qemu's connection; qemu fails
            // when the socket is not there yet.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !socket.exists() {
                let exited = child.try_wait().ok().flatten();
                if exited.is_some() || std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(input(
                        &socket,
                        format!("{} did not start ({exited:?})", program.display()),
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            children.push(child);
        }
        Ok(children)
    }

    /// Boot with the serial console on this terminal (stdin and stdout); returns when the guest
    /// powers off. The exit status is qemu's: 0 after a clean power-off.
    pub fn run(&self) -> Result<ExitStatus, VmError> {
        self.prepare()?;
        let daemons = self.start_virtiofsd(true)?;
        let mut cmd = Command::new(&self.qemu);
        cmd.args(self.args()).args(["-serial", "stdio"]);
        exit_with_parent(&mut cmd);
        let status = cmd.status().map_err(|source| VmError::Spawn {
            program: self.qemu.clone(),
            source,
        });
        for mut d in daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        status
    }

    /// Boot in the background. `state` receives `pid`, `console.log` and `cmdline` (the qemu
    /// arguments); returns the pid.
    pub fn start_detached(&self, state: &Path) -> Result<u32, VmError> {
        self.prepare()?;
        fs::create_dir_all(state).map_err(io_at(state))?;
        self.start_virtiofsd(false)?;
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
/// name), written by kiln's ISO 9660 writer. Returns the image's path, `dir/user-data.iso`.
pub fn user_data_iso(data: &[u8], dir: &Path) -> Result<PathBuf, VmError> {
    let iso = dir.join("user-data.iso");
    write_user_data_iso(data, &iso)?;
    Ok(iso)
}

/// Write the image of [`user_data_iso`] to `iso` (`kiln metadata create`): built under a
/// temporary name beside it and renamed into place, so that `iso` is never left partial.
pub fn write_user_data_iso(data: &[u8], iso: &Path) -> Result<(), VmError> {
    let mut image = kiln_format::iso9660::IsoBuilder::new("cidata", 0)
        .map_err(|e| input(iso, format!("user data ISO: {e}")))?;
    for name in ["user-data", "config"] {
        image
            .add_file(name, kiln_format::iso9660::FileSource::Bytes(data.to_vec()))
            .map_err(|e| input(iso, format!("user data ISO: {e}")))?;
    }
    let mut out = kiln_format::AtomicOutput::create(iso).map_err(io_at(iso))?;
    image
        .write(&mut out)
        .map_err(|e| input(iso, format!("user data ISO: {e}")))?;
    out.commit().map_err(io_at(iso))?;
    Ok(())
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

/// Run a helper program (qemu-img) to completion; when it fails, `failed` turns
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
fn exit_with_parent(cmd: &mut Command) {
    kiln_runtime::signal_child_on_parent_death(cmd, libc::SIGTERM);
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
    }

    #[test]
    fn disk_flag_takes_linuxkit_syntax() {
        let d: Disk = "data.qcow2,size=2G".parse().expect("disk");
        assert_eq!(
            (d.path, d.size_mb, d.format),
            (Some(PathBuf::from("data.qcow2")), Some(2048), None)
        );
        let d: Disk = "file=a.img,size=512M,format=raw".parse().expect("disk");
        assert_eq!(
            (d.path, d.size_mb, d.format.as_deref()),
            (Some(PathBuf::from("a.img")), Some(512), Some("raw"))
        );
        // A bare number is GiB; a disk may be named by its size alone (it goes to the state dir).
        let d: Disk = "size=4".parse().expect("disk");
        assert_eq!((d.path, d.size_mb), (None, Some(4096)));
        assert_eq!("x.img".parse::<Disk>().expect("disk").size_mb, None);
        for bad in [
            "",
            "format=qcow2",
            "x.img,size=",
            "x.img,size=1T",
            "x.img,size=-1",
            "x.img,size=0",
            "x.img,size=1.5G",
            "x.img,bus=ide",
            "x.img,format=",
        ] {
            let e = bad.parse::<Disk>().expect_err(bad);
            assert!(e.to_string().starts_with("--disk "), "{e}");
        }
        assert_eq!(parse_size_mb("99999999999999999999"), None);
        assert_eq!(parse_size_mb("3G"), Some(3072));
        assert_eq!(parse_size_mb("3"), Some(3072));
        assert_eq!(parse_size_mb("64M"), Some(64));
    }

    #[test]
    fn networking_flag_takes_linuxkit_and_kiln_spellings() {
        let n = |s: &str| s.parse::<Networking>();
        assert_eq!(n("user").expect("user"), Networking::User);
        assert_eq!(n("default").expect("default"), Networking::User);
        assert_eq!(n("none").expect("none"), Networking::None);
        assert_eq!(n("tap,tap0").expect("tap"), Networking::Tap("tap0".into()));
        assert_eq!(n("tap:tap1").expect("tap"), Networking::Tap("tap1".into()));
        assert_eq!(
            n("bridge,br0").expect("bridge"),
            Networking::Bridge("br0".into())
        );
        for bad in [
            "tap", "tap,", "bridge", "user,x", "none:y", "vde,sw", "slirp",
        ] {
            let e = n(bad).expect_err(bad);
            assert!(e.to_string().starts_with("--networking "), "{e}");
        }
    }

    #[test]
    fn accel_flag_takes_linuxkit_values() {
        let a = |s: &str| s.parse::<Accel>();
        assert_eq!(a("auto").expect("auto"), Accel::Auto);
        assert_eq!(a("kvm:tcg").expect("kvm:tcg"), Accel::Auto);
        assert_eq!(a("kvm").expect("kvm"), Accel::Kvm);
        assert_eq!(a("tcg").expect("tcg"), Accel::Tcg);
        assert_eq!(a("").expect("empty"), Accel::Tcg);
        let e = a("hvf:tcg").expect_err("hvf");
        assert!(e.to_string().contains("not available on Linux"), "{e}");
        assert!(a("xen").is_err());
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
        assert!(
            args.contains("-display none") && !args.contains("-usb"),
            "{args}"
        );

        q.gui = true;
        q.usb = true;
        q.devices.push("usb-tablet".into());
        q.networking = Networking::Bridge("br0".into());
        q.state = Some(dir.path().join("state"));
        q.disks.push("size=1G".parse().expect("disk"));
        q.disks.push("b.qcow2".parse().expect("disk"));
        q.virtiofs.push(dir.path().to_path_buf());
        let args = q.args().join(" ");
        assert!(!args.contains("-display none"), "{args}");
        assert!(args.contains("-device VGA"), "{args}");
        assert!(args.contains("-usb -device usb-tablet"), "{args}");
        assert!(args.contains("-netdev bridge,id=net0,br=br0"), "{args}");
        let state = dir.path().join("state");
        assert!(
            args.contains(&format!("file={}/disk.img,", state.display())),
            "{args}"
        );
        assert!(args.contains("file=b.qcow2,format=qcow2"), "{args}");
        assert!(
            args.contains("memory-backend-memfd,id=mem,size=1024M,share=on")
                && args.contains(&format!("socket,id=fs0,path={}/virtiofs0", state.display()))
                && args.contains("vhost-user-fs-pci,chardev=fs0,tag=virtiofs0"),
            "{args}"
        );

        q.arch = "aarch64".into();
        if let Boot::Kernel { cmdline, .. } = &mut q.boot {
            cmdline.clear();
        }
        q.gui = false;
        let args = q.args().join(" ");
        assert!(
            args.contains("-M virt -accel tcg -cpu cortex-a57")
                && args.contains("console=ttyAMA0")
                && args.contains("-device qemu-xhci"),
            "{args}"
        );
        // An x86 manifest's console is kept, and arm64's serial port added after it.
        if let Boot::Kernel { cmdline, .. } = &mut q.boot {
            *cmdline = "console=ttyS0 quiet".into();
        }
        let args = q.args().join(" ");
        assert!(
            args.contains("-append console=ttyS0 quiet console=ttyAMA0 panic=-1"),
            "{args}"
        );
        let missing = Qemu::from_name(&dir.path().join("nothing")).expect_err("missing");
        assert!(missing.to_string().contains("nothing-kernel"), "{missing}");
    }
}
