//! Kernel command-line switches for debugging a system without rebuilding it (add them with
//! `kiln run qemu --append`):
//! - `kiln.skip=NAME[,NAME...]`: do not run these onboot, service or onshutdown containers;
//! - `kiln.norestart`: run every service once, whatever its restart policy;
//! - `kiln.debug`: log each container's start with its command and pid.
//!
//! And for a root file system on a block device instead of the initramfs (a kiln extension; the
//! initramfs then holds only kiln-init and the kernel modules needed to reach the device):
//! - `kiln.root=SPEC`: mount the root read-only from the block device SPEC names:
//!   `PARTLABEL=NAME` (a GPT partition's name), `PARTUUID=GUID` (a GPT partition's unique GUID,
//!   or `SSSSSSSS-PP` for an MBR partition, as the kernel's own `root=` takes them) or
//!   `/dev/NAME` (a kernel device name such as `/dev/vda`, `/dev/sda2` or `/dev/sr0`, a CD-ROM);
//! - `kiln.rootfstype=squashfs|erofs|iso9660`: the file system it must hold (found from its
//!   superblock when not given); iso9660 is the root of the `kernel+iso` format, an ISO 9660
//!   image (with Rock Ridge, for modes and owners) on a CD-ROM;
//! - `kiln.rootwait=SECONDS`: how long to wait for the device to appear (default 30).
//!
//! A malformed value of these three is an error that stops the boot: it never falls back to
//! the initramfs silently.

use std::fs;
use std::time::Duration;

/// How long kiln-init waits for the root device unless `kiln.rootwait` says otherwise.
pub const DEFAULT_ROOT_WAIT: Duration = Duration::from_secs(30);

/// The longest `kiln.rootwait` accepted.
const MAX_ROOT_WAIT_SECS: u64 = 3600;

/// Which block device holds the root (`kiln.root=SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `PARTLABEL=NAME`: the GPT partition of that name (PARTNAME in its uevent).
    PartLabel(String),
    /// `PARTUUID=GUID`: the partition of that unique GUID (lowercase), or `SSSSSSSS-PP` for
    /// an MBR partition (disk signature, partition number; lowercase hex).
    PartUuid(String),
    /// `/dev/NAME`: the device the kernel names NAME (DEVNAME in its uevent).
    DevName(String),
}

impl RootSpec {
    /// Whether it names a CD-ROM drive (`/dev/srN`), whose drivers kiln-init loads first.
    pub fn is_cdrom(&self) -> bool {
        match self {
            RootSpec::DevName(name) => name
                .strip_prefix("sr")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            RootSpec::PartLabel(_) | RootSpec::PartUuid(_) => false,
        }
    }
}

impl std::fmt::Display for RootSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSpec::PartLabel(n) => write!(f, "PARTLABEL={n}"),
            RootSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            RootSpec::DevName(n) => write!(f, "/dev/{n}"),
        }
    }
}

impl RootSpec {
    /// Parse the value of `kiln.root=`.
    pub fn parse(value: &str) -> Result<RootSpec, String> {
        let bad = |why: &str| {
            Err(format!(
                "kiln.root={value}: {why}; write kiln.root=PARTLABEL=NAME, kiln.root=PARTUUID=GUID \
                 or kiln.root=/dev/NAME"
            ))
        };
        if let Some(name) = value.strip_prefix("PARTLABEL=") {
            if name.is_empty() {
                return bad("the partition name is empty");
            }
            Ok(RootSpec::PartLabel(name.to_string()))
        } else if let Some(uuid) = value.strip_prefix("PARTUUID=") {
            let uuid = uuid.to_ascii_lowercase();
            let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            let groups: Vec<&str> = uuid.split('-').collect();
            let gpt =
                groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| hex(g, n));
            let mbr = groups.len() == 2 && hex(groups[0], 8) && hex(groups[1], 2);
            if !gpt && !mbr {
                return bad("the partition UUID is neither a GUID nor an MBR SSSSSSSS-PP");
            }
            Ok(RootSpec::PartUuid(uuid))
        } else if let Some(name) = value.strip_prefix("/dev/") {
            if name.is_empty()
                || name
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return bad("not a device name");
            }
            Ok(RootSpec::DevName(name.to_string()))
        } else if value.is_empty() {
            bad("the value is empty")
        } else {
            bad("unknown kind of device")
        }
    }
}

/// The file system of a root on a block device (`kiln.rootfstype=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFsType {
    /// squashfs.
    Squashfs,
    /// erofs.
    Erofs,
    /// ISO 9660 (with Rock Ridge), as on a CD-ROM.
    Iso9660,
}

impl RootFsType {
    /// Its name, as mount(2) and the module tree know it.
    pub fn name(self) -> &'static str {
        match self {
            RootFsType::Squashfs => "squashfs",
            RootFsType::Erofs => "erofs",
            RootFsType::Iso9660 => "iso9660",
        }
    }

    /// The module that provides it, when it is not built into the kernel.
    pub fn module(self) -> &'static str {
        match self {
            RootFsType::Squashfs => "squashfs",
            RootFsType::Erofs => "erofs",
            RootFsType::Iso9660 => "isofs",
        }
    }
}

/// A root on a block device, from `kiln.root`, `kiln.rootfstype` and `kiln.rootwait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRoot {
    /// The device.
    pub spec: RootSpec,
    /// The file system it must hold; `None`: whichever of squashfs, erofs and iso9660 it
    /// holds.
    pub fstype: Option<RootFsType>,
    /// How long to wait for the device.
    pub wait: Duration,
}

/// The values of `kiln.root`, `kiln.rootfstype` and `kiln.rootwait` (the last of each).
#[derive(Default)]
struct RootWords<'a> {
    root: Option<&'a str>,
    fstype: Option<&'a str>,
    wait: Option<&'a str>,
    /// Those given without `=VALUE`.
    bare: Vec<&'a str>,
}

impl RootWords<'_> {
    fn any(&self) -> bool {
        self.root.is_some() || self.fstype.is_some() || self.wait.is_some() || !self.bare.is_empty()
    }

    fn disk_root(&self) -> Result<DiskRoot, String> {
        let mut errors = Vec::new();
        for w in &self.bare {
            errors.push(format!("{w} needs a value ({w}=...)"));
        }
        let spec = match self.root {
            Some(v) => RootSpec::parse(v).map_err(|e| errors.push(e)).ok(),
            None => {
                if self.bare.iter().all(|w| *w != "kiln.root") {
                    errors.push(
                        "kiln.rootfstype or kiln.rootwait without kiln.root=SPEC".to_string(),
                    );
                }
                None
            }
        };
        let fstype = match self.fstype {
            None => None,
            Some("squashfs") => Some(RootFsType::Squashfs),
            Some("erofs") => Some(RootFsType::Erofs),
            Some("iso9660") => Some(RootFsType::Iso9660),
            Some(other) => {
                errors.push(format!(
                    "kiln.rootfstype={other}: the root can be squashfs, erofs or iso9660"
                ));
                None
            }
        };
        let wait = match self.wait.map(str::parse::<u64>) {
            None => DEFAULT_ROOT_WAIT,
            Some(Ok(secs)) if secs <= MAX_ROOT_WAIT_SECS => Duration::from_secs(secs),
            Some(_) => {
                errors.push(format!(
                    "kiln.rootwait={}: expected whole seconds from 0 to {MAX_ROOT_WAIT_SECS}",
                    self.wait.unwrap_or_default()
                ));
                DEFAULT_ROOT_WAIT
            }
        };
        match spec {
            Some(spec) if errors.is_empty() => Ok(DiskRoot { spec, fstype, wait }),
            _ => Err(errors.join("; ")),
        }
    }
}

/// The switches present on the command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Switches {
    /// Containers not to run.
    pub skip: Vec<String>,
    /// Ignore restart policies.
    pub no_restart: bool,
    /// Log more.
    pub debug: bool,
    /// The root on a block device, when `kiln.root` (or `kiln.rootfstype`, `kiln.rootwait`)
    /// is given; an error says what is malformed.
    pub root: Option<Result<DiskRoot, String>>,
}

impl Switches {
    /// The switches of this boot (/proc/cmdline, read once).
    pub fn read() -> &'static Switches {
        static SWITCHES: std::sync::OnceLock<Switches> = std::sync::OnceLock::new();
        SWITCHES.get_or_init(|| {
            Switches::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default())
        })
    }

    /// Parse a kernel command line.
    pub fn parse(cmdline: &str) -> Switches {
        let mut s = Switches::default();
        let mut root = RootWords::default();
        for word in cmdline.split_whitespace() {
            match word.split_once('=') {
                Some(("kiln.root", v)) => root.root = Some(v),
                Some(("kiln.rootfstype", v)) => root.fstype = Some(v),
                Some(("kiln.rootwait", v)) => root.wait = Some(v),
                None if matches!(word, "kiln.root" | "kiln.rootfstype" | "kiln.rootwait") => {
                    root.bare.push(word)
                }
                Some(("kiln.skip", names)) => s.skip.extend(
                    names
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string),
                ),
                None if word == "kiln.norestart" => s.no_restart = true,
                None if word == "kiln.debug" => s.debug = true,
                _ => {}
            }
        }
        if root.any() {
            s.root = Some(root.disk_root());
        }
        s
    }

    /// Whether the container `name` is to be skipped.
    pub fn skips(&self, name: &str) -> bool {
        self.skip.iter().any(|s| s == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_parsed() {
        let s = Switches::parse("console=ttyS0 kiln.skip=dhcp,getty quiet kiln.debug");
        assert_eq!(s.skip, ["dhcp", "getty"]);
        assert!(s.debug && !s.no_restart);
        assert!(s.skips("dhcp") && !s.skips("redis"));
        assert!(Switches::parse("kiln.norestart").no_restart);
        assert_eq!(Switches::parse("root=/dev/sda"), Switches::default());
        assert_eq!(Switches::parse("kiln.rootfoo=1 kiln.rw").root, None);
    }

    fn root(cmdline: &str) -> Result<DiskRoot, String> {
        Switches::parse(cmdline).root.expect("a root switch")
    }

    #[test]
    fn disk_root_switches_are_parsed() {
        let r = root("console=ttyS0 kiln.root=PARTLABEL=kiln-root kiln.rootfstype=squashfs");
        assert_eq!(
            r,
            Ok(DiskRoot {
                spec: RootSpec::PartLabel("kiln-root".into()),
                fstype: Some(RootFsType::Squashfs),
                wait: DEFAULT_ROOT_WAIT,
            })
        );
        let r =
            root("kiln.root=/dev/vda kiln.rootfstype=erofs kiln.rootwait=5").expect("well formed");
        assert_eq!(r.spec, RootSpec::DevName("vda".into()));
        assert_eq!(r.fstype, Some(RootFsType::Erofs));
        assert_eq!(r.wait, Duration::from_secs(5));
        let r =
            root("kiln.root=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4").expect("well formed");
        assert_eq!(
            r.spec,
            RootSpec::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into())
        );
        assert_eq!(r.fstype, None);
        assert_eq!(
            root("kiln.root=PARTUUID=1234abcd-02")
                .expect("well formed")
                .spec,
            RootSpec::PartUuid("1234abcd-02".into())
        );
        // The last of each wins, as the kernel's own root= does.
        let r = root("kiln.root=/dev/sda kiln.root=PARTLABEL=b").expect("well formed");
        assert_eq!(r.spec.to_string(), "PARTLABEL=b");
        assert_eq!(
            root("kiln.root=/dev/nvme0n1p2")
                .expect("well formed")
                .spec
                .to_string(),
            "/dev/nvme0n1p2"
        );
    }

    #[test]
    fn cdrom_roots_are_parsed() {
        let r =
            root("console=ttyS0 kiln.root=/dev/sr0 kiln.rootfstype=iso9660").expect("well formed");
        assert_eq!(r.spec, RootSpec::DevName("sr0".into()));
        assert_eq!(r.fstype, Some(RootFsType::Iso9660));
        assert_eq!(
            (RootFsType::Iso9660.name(), RootFsType::Iso9660.module()),
            ("iso9660", "isofs")
        );
        assert!(r.spec.is_cdrom());
        assert!(RootSpec::DevName("sr12".into()).is_cdrom());
        for not in ["sr", "sra", "sr0p1", "sda", "vda", "scd0"] {
            assert!(!RootSpec::DevName(not.into()).is_cdrom(), "{not}");
        }
        assert!(!RootSpec::PartLabel("sr0".into()).is_cdrom());
        // An ISO 9660 image on a disk partition is fine too.
        let r = root("kiln.root=PARTLABEL=iso kiln.rootfstype=iso9660").expect("well formed");
        assert_eq!(r.fstype, Some(RootFsType::Iso9660));
        // The file system's name, not its module's.
        let e = root("kiln.root=/dev/sr0 kiln.rootfstype=isofs").expect_err("malformed");
        assert!(e.contains("squashfs, erofs or iso9660"), "{e}");
    }

    #[test]
    fn malformed_disk_root_switches_are_errors() {
        for (cmdline, says) in [
            ("kiln.root=", "the value is empty"),
            ("kiln.root", "kiln.root needs a value"),
            ("kiln.root=PARTLABEL=", "the partition name is empty"),
            ("kiln.root=LABEL=root", "unknown kind of device"),
            ("kiln.root=vda", "unknown kind of device"),
            ("kiln.root=/dev/", "not a device name"),
            ("kiln.root=/dev/../etc/x", "not a device name"),
            ("kiln.root=PARTUUID=nope", "neither a GUID"),
            (
                "kiln.root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de",
                "neither a GUID",
            ),
            (
                "kiln.root=/dev/vda kiln.rootfstype=ext4",
                "kiln.rootfstype=ext4",
            ),
            (
                "kiln.root=/dev/vda kiln.rootfstype",
                "kiln.rootfstype needs a value",
            ),
            (
                "kiln.root=/dev/vda kiln.rootwait=soon",
                "kiln.rootwait=soon",
            ),
            ("kiln.root=/dev/vda kiln.rootwait=-1", "kiln.rootwait=-1"),
            (
                "kiln.root=/dev/vda kiln.rootwait=99999",
                "kiln.rootwait=99999",
            ),
            ("kiln.rootfstype=squashfs", "without kiln.root=SPEC"),
            ("kiln.rootwait=3", "without kiln.root=SPEC"),
        ] {
            let e = root(cmdline).expect_err(cmdline);
            assert!(e.contains(says), "{cmdline}: {e}");
        }
        // Every problem is named, not just the first.
        let e = root("kiln.root=LABEL=x kiln.rootfstype=ext4").expect_err("malformed");
        assert!(
            e.contains("kiln.root=LABEL=x") && e.contains("kiln.rootfstype=ext4"),
            "{e}"
        );
    }
}
