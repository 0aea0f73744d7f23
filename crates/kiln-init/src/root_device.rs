//! The root file system on a block device (`kiln.root=SPEC`, see `cmdline`): from the
//! initramfs, which then holds only kiln-init and kernel modules, load the modules needed to
//! reach the device, wait (bounded) for the device SPEC names to appear in /sys/class/block,
//! check that it holds the file system asked for (squashfs, erofs or ISO 9660, from its
//! superblock) and mount it read-only. A CD-ROM (`/dev/srN`, or any root said to be iso9660)
//! gets its drivers loaded first: sr_mod (with cdrom) and the ATA controllers qemu's IDE and
//! SATA CD drives sit on. `readonly_root` then makes it the root as it does a view of the
//! initramfs. Any failure here stops the machine (`fatal`): a system whose root is missing has
//! nothing to run.
//!
//! Not owned here: the kernel command line (`cmdline`), what happens to the mounted root
//! (`readonly_root`), module loading itself (`modules`).

use crate::boot::since_boot;
use crate::cmdline::{DiskRoot, RootFsType, RootSpec};
use crate::log;
use crate::modules::Modules;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Modules for the disk controllers qemu and clouds give a machine, loaded first.
const FIRST_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "nvme"];

/// Modules for slower-to-probe controllers (ATA port resets, USB enumeration), loaded only when
/// the device is not there after the first ones.
const MORE_MODULES: &[&str] = &[
    "ahci",
    "ata_piix",
    "xhci_pci",
    "ehci_pci",
    "usb_storage",
    "uas",
];

/// Modules for CD-ROM drives: the IDE and SATA controllers qemu and PCs put them on, and
/// sr_mod (which brings cdrom; virtio_scsi is among the first ones). Loaded before the first
/// ones when the root is a CD-ROM or an ISO 9660 image.
const CDROM_MODULES: &[&str] = &["ata_piix", "ahci", "sr_mod"];

/// Where an ISO 9660 image has its first volume descriptor's "CD001" (sector 16 of 2048
/// bytes, after the type byte).
const ISO9660_MAGIC_AT: usize = 16 * 2048 + 1;

/// How much of the device `detect` looks at.
const HEAD_LEN: usize = 36 * 1024;

/// How often /sys/class/block is looked at while waiting for the device.
const POLL: Duration = Duration::from_millis(20);

/// Log a fatal boot error and power the machine off. PID 1 must not exit, so this never
/// returns.
pub fn fatal(msg: &str) -> ! {
    log(&format!("error: {msg}"));
    log("cannot boot: powering off");
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A block device as its uevent (/sys/class/block/NAME/uevent) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// DEVNAME: its name under /dev.
    pub name: String,
    /// PARTNAME: the GPT partition name, for partitions that have one.
    pub part_name: Option<String>,
    /// PARTN: the partition number, for partitions.
    pub part_number: Option<u32>,
}

impl BlockDevice {
    /// Parse a uevent file's KEY=VALUE lines; `None` without DEVNAME.
    pub fn from_uevent(text: &str) -> Option<BlockDevice> {
        let mut dev = BlockDevice {
            name: String::new(),
            part_name: None,
            part_number: None,
        };
        for (key, value) in text.lines().filter_map(|l| l.split_once('=')) {
            match key {
                "DEVNAME" => dev.name = value.to_string(),
                "PARTNAME" => dev.part_name = Some(value.to_string()),
                "PARTN" => dev.part_number = value.parse().ok(),
                _ => {}
            }
        }
        (!dev.name.is_empty()).then_some(dev)
    }

    /// Whether it is the device `spec` names; `partuuid` gives a partition's PARTUUID (read
    /// from its disk's partition table) when it is needed.
    pub fn matches(&self, spec: &RootSpec, partuuid: impl FnOnce(&Self) -> Option<String>) -> bool {
        match spec {
            RootSpec::PartLabel(label) => self.part_name.as_deref() == Some(label.as_str()),
            RootSpec::DevName(name) => self.name == *name,
            RootSpec::PartUuid(uuid) => {
                self.part_number.is_some() && partuuid(self).is_some_and(|u| u == *uuid)
            }
        }
    }

    /// How it appears in messages: `/dev/vda1 (PARTNAME=kiln-root)`.
    fn describe(&self) -> String {
        match &self.part_name {
            Some(p) => format!("/dev/{} (PARTNAME={p})", self.name),
            None => format!("/dev/{}", self.name),
        }
    }
}

/// The file system whose superblock starts `head` (the first `HEAD_LEN` bytes of the device,
/// or all of it), among those a root can be.
pub fn detect(head: &[u8]) -> Option<RootFsType> {
    if head.starts_with(b"hsqs") {
        return Some(RootFsType::Squashfs);
    }
    // EROFS_SUPER_MAGIC_V1, little-endian, at EROFS_SUPER_OFFSET.
    if head.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..]) {
        return Some(RootFsType::Erofs);
    }
    if head.get(ISO9660_MAGIC_AT..ISO9660_MAGIC_AT + 5) == Some(&b"CD001"[..]) {
        return Some(RootFsType::Iso9660);
    }
    None
}

/// Format a GPT GUID as text (its first three fields are little-endian).
fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// The PARTUUID of partition `number` of the disk `disk` (sectors of `sector` bytes), as the
/// kernel's `root=PARTUUID=` knows it: the GPT entry's unique GUID, or `SSSSSSSS-PP` (disk
/// signature, partition number) on an MBR disk.
pub fn partuuid(disk: &mut (impl Read + Seek), sector: u64, number: u32) -> Option<String> {
    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0)).ok()?;
    disk.read_exact(&mut mbr).ok()?;
    if mbr[510..512] != [0x55, 0xAA] {
        return None;
    }
    // A protective MBR (one partition of type 0xEE) stands in front of a GPT.
    if mbr[446 + 4] != 0xEE {
        let signature = u32::from_le_bytes([mbr[440], mbr[441], mbr[442], mbr[443]]);
        return (number > 0 && number < 256).then(|| format!("{signature:08x}-{number:02x}"));
    }
    let mut header = [0u8; 92];
    disk.seek(SeekFrom::Start(sector)).ok()?;
    disk.read_exact(&mut header).ok()?;
    if &header[..8] != b"EFI PART" {
        return None;
    }
    let entries = u64::from_le_bytes(header[72..80].try_into().ok()?);
    let count = u32::from_le_bytes(header[80..84].try_into().ok()?);
    let size = u32::from_le_bytes(header[84..88].try_into().ok()?);
    if number == 0 || number > count || !(128..=4096).contains(&size) {
        return None;
    }
    let at = entries
        .checked_mul(sector)?
        .checked_add(u64::from(number - 1) * u64::from(size))?;
    let mut entry = [0u8; 32];
    disk.seek(SeekFrom::Start(at)).ok()?;
    disk.read_exact(&mut entry).ok()?;
    // An unused entry has a zero type GUID.
    if entry[..16].iter().all(|&b| b == 0) {
        return None;
    }
    Some(guid_text(entry[16..32].try_into().ok()?))
}

/// The PARTUUID of the partition `dev`, read from its disk (the parent directory in sysfs).
fn read_partuuid(dev: &BlockDevice) -> Option<String> {
    let link = fs::canonicalize(Path::new("/sys/class/block").join(&dev.name)).ok()?;
    let disk_dir = link.parent()?;
    let disk = disk_dir.file_name()?.to_str()?;
    let sector = fs::read_to_string(disk_dir.join("queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512);
    let mut f = fs::File::open(Path::new("/dev").join(disk)).ok()?;
    partuuid(&mut f, sector, dev.part_number?)
}

/// The block devices present now, sorted by name.
fn block_devices() -> Vec<BlockDevice> {
    let mut found: Vec<BlockDevice> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("uevent")).ok())
        .filter_map(|t| BlockDevice::from_uevent(&t))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The modules that may be needed to reach the device `root` names, in the order to load
/// them: a CD-ROM's controllers first (their drives are probed while the rest load), then the
/// first ones, then the slower ones.
fn modules_for(root: &DiskRoot) -> Vec<&'static str> {
    let cdrom = root.spec.is_cdrom() || root.fstype == Some(RootFsType::Iso9660);
    let mut names: Vec<&'static str> = Vec::new();
    if cdrom {
        names.extend(CDROM_MODULES);
    }
    for name in FIRST_MODULES.iter().chain(MORE_MODULES) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// Wait for the device `root` names, loading one at a time, until it is there, the modules
/// that may be needed to reach it (a missing module is fine: the driver may be built in).
fn find(root: &DiskRoot, modules: &mut Option<Modules>) -> Result<BlockDevice, String> {
    let deadline = Instant::now() + root.wait;
    let mut to_load = modules_for(root).into_iter();
    let mut failed = Vec::new();
    // PARTUUIDs read so far, by device name.
    let mut uuids: HashMap<String, String> = HashMap::new();
    loop {
        let devices = block_devices();
        for dev in &devices {
            let hit = dev.matches(&root.spec, |d| {
                // Only what was read is kept: the disk may not be readable yet.
                if let Some(u) = uuids.get(&d.name) {
                    return Some(u.clone());
                }
                let u = read_partuuid(d)?;
                uuids.insert(d.name.clone(), u.clone());
                Some(u)
            });
            // devtmpfs makes the node a moment after sysfs shows the device.
            if hit && Path::new("/dev").join(&dev.name).exists() {
                return Ok(dev.clone());
            }
        }
        if let (Some(m), Some(name)) = (modules.as_mut(), to_load.next()) {
            failed.extend(m.load(name).err());
            continue;
        }
        if Instant::now() >= deadline {
            let seen = if devices.is_empty() {
                "no block devices at all".to_string()
            } else {
                let list: Vec<String> = devices.iter().map(BlockDevice::describe).collect();
                format!("block devices present: {}", list.join(", "))
            };
            let failed = failed
                .iter()
                .filter(|e| !e.contains(" is not in "))
                .cloned()
                .collect::<Vec<_>>();
            let failed = if failed.is_empty() {
                String::new()
            } else {
                format!("; module errors: {}", failed.join("; "))
            };
            return Err(format!(
                "no block device matches kiln.root={} within {} s; {seen}{failed}",
                root.spec,
                root.wait.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// The first `HEAD_LEN` bytes of a device.
fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    fs::File::open(path)?
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Find the device `root` names and mount it read-only on `target`. Needs /proc, /sys and a
/// devtmpfs on /dev (the caller mounts them). Returns what to log about it.
pub fn mount_root(root: &DiskRoot, target: &Path) -> Result<String, String> {
    let mut modules = Modules::open();
    if modules.is_none() {
        log("no module tree in the initramfs: the drivers for the root device must be built in");
    }
    let dev = find(root, &mut modules)?;
    let node = Path::new("/dev").join(&dev.name);
    let head = read_head(&node)
        .map_err(|e| format!("kiln.root={}: reading {}: {e}", root.spec, node.display()))?;
    let found = detect(&head);
    let fstype = match (root.fstype, found) {
        (Some(want), Some(got)) if want != got => {
            return Err(format!(
                "kiln.root={} is {}, which holds {}, not {} (kiln.rootfstype={})",
                root.spec,
                dev.describe(),
                got.name(),
                want.name(),
                want.name()
            ));
        }
        (_, Some(got)) => got,
        (want, None) => {
            let first: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(format!(
                "kiln.root={} is {}, which holds no {} file system (it starts with {})",
                root.spec,
                dev.describe(),
                want.map_or("squashfs, erofs or iso9660", RootFsType::name),
                first.join(" ")
            ));
        }
    };
    // Built in when it is not in the tree: mount says so if it is neither.
    let module = match modules.as_mut().map(|m| m.load(fstype.module())) {
        Some(Err(e)) => format!(" ({e})"),
        _ => String::new(),
    };
    fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    mount(
        Some(&node),
        target,
        Some(fstype.name()),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "kiln.root={}: mounting {} read-only as {}: {e}{module}",
            root.spec,
            dev.describe(),
            fstype.name()
        )
    })?;
    let bytes = fs::read_to_string(Path::new("/sys/class/block").join(&dev.name).join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(0, |sectors| sectors * 512);
    Ok(format!(
        "root kiln.root={}: {}, {}, {:.1} MiB, mounted read-only {:.2} s after the kernel",
        root.spec,
        dev.describe(),
        fstype.name(),
        bytes as f64 / (1024.0 * 1024.0),
        since_boot()
    ))
}

/// Mount what finding the device needs: /proc, /sys and a devtmpfs on /dev of the initramfs;
/// and make this program the kernel's modprobe helper already, for the modules that modules
/// ask for (erofs needs libcrc32c, which asks for `crypto-crc32c`).
pub fn mount_kernel_fs() -> Result<(), String> {
    let none: Option<&str> = None;
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = fs::create_dir_all(target);
        match mount(Some(source), target, Some(fstype), MsFlags::empty(), none) {
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(e) => return Err(format!("mounting {target} in the initramfs: {e}")),
        }
    }
    if let Ok(me) = fs::read_link("/proc/self/exe") {
        let _ = fs::write(
            "/proc/sys/kernel/modprobe",
            me.as_os_str().as_encoded_bytes(),
        );
    }
    Ok(())
}

/// Undo `mount_kernel_fs` and free the initramfs: everything in it but /init (the running
/// program, which the kernel's modprobe helper path names) and the mount points under it.
pub fn release_initramfs() {
    for target in ["/dev", "/sys", "/proc"] {
        let _ = umount2(target, MntFlags::MNT_DETACH);
    }
    let Ok(root_dev) = fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    for entry in fs::read_dir("/").into_iter().flatten().flatten() {
        if entry.file_name() != "init" {
            remove_tree(&entry.path(), root_dev);
        }
    }
}

/// Remove `path` and what is under it, staying on the device `dev` (mounted file systems and
/// the directories they are mounted on are left alone). Best effort.
fn remove_tree(path: &Path, dev: u64) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.dev() != dev {
        return;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            remove_tree(&entry.path(), dev);
        }
        let _ = fs::remove_dir(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const VDA: &str = "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n";
    const VDA1: &str = "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=1\nPARTNAME=kiln-root\n";
    const SDA2: &str = "MAJOR=8\nMINOR=2\nDEVNAME=sda2\nDEVTYPE=partition\nPARTN=2\n";

    fn no_uuid(_: &BlockDevice) -> Option<String> {
        None
    }

    #[test]
    fn uevents_are_parsed() {
        assert_eq!(
            BlockDevice::from_uevent(VDA1),
            Some(BlockDevice {
                name: "vda1".into(),
                part_name: Some("kiln-root".into()),
                part_number: Some(1),
            })
        );
        let sda2 = BlockDevice::from_uevent(SDA2).expect("a device");
        assert_eq!((sda2.part_name, sda2.part_number), (None, Some(2)));
        assert_eq!(BlockDevice::from_uevent("MAJOR=1\nMINOR=0\n"), None);
        assert_eq!(BlockDevice::from_uevent(""), None);
    }

    #[test]
    fn devices_match_their_spec() {
        let vda = BlockDevice::from_uevent(VDA).expect("a device");
        let vda1 = BlockDevice::from_uevent(VDA1).expect("a device");
        let label = RootSpec::PartLabel("kiln-root".into());
        assert!(vda1.matches(&label, no_uuid));
        assert!(!vda.matches(&label, no_uuid));
        assert!(!vda1.matches(&RootSpec::PartLabel("kiln".into()), no_uuid));
        assert!(!vda1.matches(&RootSpec::PartLabel("kiln-root2".into()), no_uuid));
        let path = RootSpec::DevName("vda".into());
        assert!(vda.matches(&path, no_uuid));
        assert!(!vda1.matches(&path, no_uuid));
        assert!(vda1.matches(&RootSpec::DevName("vda1".into()), no_uuid));
        let uuid = RootSpec::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into());
        let it = |_: &BlockDevice| Some("0fc63daf-8483-4772-8e79-3d69d8477de4".to_string());
        let other = |_: &BlockDevice| Some("00000000-8483-4772-8e79-3d69d8477de4".to_string());
        assert!(vda1.matches(&uuid, it));
        assert!(!vda1.matches(&uuid, other));
        assert!(!vda1.matches(&uuid, no_uuid));
        // A whole disk has no PARTUUID, whatever its table says.
        assert!(!vda.matches(&uuid, it));
    }

    fn disk_root(spec: RootSpec, fstype: Option<RootFsType>) -> DiskRoot {
        DiskRoot {
            spec,
            fstype,
            wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn cdroms_get_their_drivers_first() {
        let vda = modules_for(&disk_root(RootSpec::DevName("vda".into()), None));
        assert_eq!(vda[0], "virtio_pci");
        assert!(!vda.contains(&"sr_mod"));
        assert!(vda.contains(&"ata_piix"));
        for cd in [
            disk_root(RootSpec::DevName("sr0".into()), None),
            disk_root(RootSpec::PartLabel("iso".into()), Some(RootFsType::Iso9660)),
        ] {
            let m = modules_for(&cd);
            assert_eq!(&m[..3], CDROM_MODULES, "{cd:?}");
            assert!(m.contains(&"virtio_scsi") && m.contains(&"usb_storage"));
            // Each once.
            let mut unique = m.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), m.len(), "{m:?}");
        }
    }

    #[test]
    fn file_systems_are_told_by_their_superblock() {
        let mut squashfs = b"hsqs".to_vec();
        squashfs.resize(4096, 0);
        assert_eq!(detect(&squashfs), Some(RootFsType::Squashfs));
        let mut erofs = vec![0u8; 4096];
        erofs[1024..1028].copy_from_slice(&[0xE2, 0xE1, 0xF5, 0xE0]);
        assert_eq!(detect(&erofs), Some(RootFsType::Erofs));
        // A primary volume descriptor at sector 16: type 1, "CD001", version 1.
        let mut iso = vec![0u8; HEAD_LEN];
        iso[32768..32775].copy_from_slice(b"\x01CD001\x01");
        assert_eq!(detect(&iso), Some(RootFsType::Iso9660));
        // A hybrid ISO has an MBR in front: still ISO 9660.
        iso[510..512].copy_from_slice(&[0x55, 0xAA]);
        assert_eq!(detect(&iso), Some(RootFsType::Iso9660));
        assert_eq!(detect(&iso[..32773]), None);
        iso[32769] = b'c';
        assert_eq!(detect(&iso), None);
        // The magic elsewhere is nothing.
        let mut moved = vec![0u8; HEAD_LEN];
        moved[32768..32773].copy_from_slice(b"CD001");
        assert_eq!(detect(&moved), None);
        assert_eq!(detect(&[0u8; 4096]), None);
        assert_eq!(detect(&erofs[..1027]), None);
        assert_eq!(detect(b""), None);
    }

    /// A disk with a protective MBR and a GPT of 128 entries of 128 bytes at LBA 2.
    fn gpt_disk(sector: usize, unique: [u8; 16], number: usize) -> Vec<u8> {
        let mut d = vec![0u8; sector * 40];
        d[446 + 4] = 0xEE;
        d[510] = 0x55;
        d[511] = 0xAA;
        let h = sector;
        d[h..h + 8].copy_from_slice(b"EFI PART");
        d[h + 72..h + 80].copy_from_slice(&2u64.to_le_bytes());
        d[h + 80..h + 84].copy_from_slice(&128u32.to_le_bytes());
        d[h + 84..h + 88].copy_from_slice(&128u32.to_le_bytes());
        let e = 2 * sector + (number - 1) * 128;
        d[e..e + 16].copy_from_slice(&[0xAF; 16]);
        d[e + 16..e + 32].copy_from_slice(&unique);
        d
    }

    #[test]
    fn partuuids_are_read_from_gpt_and_mbr() {
        // 0FC63DAF-8483-4772-8E79-3D69D8477DE4 as stored on disk.
        let unique = [
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ];
        for sector in [512, 4096] {
            let mut disk = Cursor::new(gpt_disk(sector, unique, 3));
            assert_eq!(
                partuuid(&mut disk, sector as u64, 3).as_deref(),
                Some("0fc63daf-8483-4772-8e79-3d69d8477de4")
            );
            // Unused entries, numbers past the table.
            assert_eq!(partuuid(&mut disk, sector as u64, 1), None);
            assert_eq!(partuuid(&mut disk, sector as u64, 0), None);
            assert_eq!(partuuid(&mut disk, sector as u64, 129), None);
        }
        let mut mbr = vec![0u8; 512];
        mbr[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        mbr[446 + 4] = 0x83;
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(
            partuuid(&mut Cursor::new(mbr.clone()), 512, 2).as_deref(),
            Some("1234abcd-02")
        );
        // No partition table; a truncated GPT.
        assert_eq!(partuuid(&mut Cursor::new(vec![0u8; 1024]), 512, 1), None);
        let mut short = gpt_disk(512, unique, 1);
        short.truncate(600);
        assert_eq!(partuuid(&mut Cursor::new(short), 512, 1), None);
    }
}
