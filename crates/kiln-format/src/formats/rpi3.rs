//! `rpi3`: `NAME.tar`, what goes on a Raspberry Pi 3's SD card, on its FAT boot partition, as
//! LinuxKit's rpi3 output is. The Pi's firmware starts the kernel itself, in 64-bit mode (no
//! U-Boot, unlike LinuxKit's):
//!
//! - the firmware: `bootcode.bin` (which the SoC's ROM reads), `start*.elf` and `fixup*.dat`
//!   (the GPU firmware that reads `config.txt` and starts the kernel), from kiln's
//!   rpi3-firmware package ([`Firmware`]);
//! - `config.txt`: 64-bit mode, `kernel8.img` as the kernel, `initrd.img` loaded after it, the
//!   device tree named as the mainline kernel names it, the serial console on the GPIO header;
//! - `kernel8.img`: the kernel, an uncompressed arm64 Image (a gzip-compressed one, as
//!   LinuxKit's arm64 kernels are, is decompressed: the firmware does not);
//! - `initrd.img`: the initrd, as the other formats have it;
//! - `cmdline.txt`: the manifest's command line with the Pi's consoles ([`pi_cmdline`]);
//! - the device trees of the Pi 3 family (`bcm2837-rpi-3-b.dtb`, `...-3-b-plus.dtb`, ...), which
//!   the kernel image carries in its `kernel.tar` under `boot/dtb/broadcom/`, where LinuxKit's
//!   arm64 kernels carry theirs; the firmware picks the one of the board.
//!
//! Every member is a plain file at the top of the archive, owned by root, mode 0644, with the
//! build's time: the same system gives the same bytes.

use super::boot_media::KernelCapture;
use crate::format::{Format, FormatError, FormatWriter, Target, write_err};
use crate::{AtomicOutput, Spool};
use kiln_fs::{Entry, Kind, Segment, Sink};
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The Raspberry Pi firmware files the rpi3 format puts on the SD card beside the kernel, by
/// their path on the card (from kiln's rpi3-firmware package, `pkg/rpi3-firmware`).
#[derive(Debug, Default, Clone)]
pub struct Firmware {
    /// The files.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The files of the firmware without which a Pi 3 does not start.
pub const FIRMWARE_FILES: [&str; 3] = ["bootcode.bin", "start.elf", "fixup.dat"];

/// The kernel's name on the card.
pub const KERNEL: &str = "kernel8.img";
/// The initrd's name on the card.
pub const INITRD: &str = "initrd.img";
/// The device tree of the Raspberry Pi 3 Model B, which the card must hold.
pub const PI3_DTB: &str = "bcm2837-rpi-3-b.dtb";

/// Where the kernel image's device trees are in the root filesystem (from its kernel.tar), and
/// which of them are the Pi 3 family's.
const DTB_DIR: &str = "boot/dtb/broadcom/";
const DTB_PREFIX: &str = "bcm2837-";

/// Bounds on the device trees read from the stream: a device tree is tens of kilobytes.
const DTB_MAX: u64 = 1 << 20;
const DTBS_MAX: u64 = 16 << 20;

/// The consoles of a Raspberry Pi 3: the screen, then the mini UART on the GPIO header (pins 8
/// and 10; `ttyS1` in the mainline kernel, `enable_uart=1` in config.txt), the last of them
/// being /dev/console.
pub const PI_CONSOLES: &str = "console=tty1 console=ttyS1,115200";

/// config.txt: what the firmware (start.elf) reads.
pub const CONFIG_TXT: &str = "\
# Written by kiln (format rpi3). The Raspberry Pi firmware reads it and starts the kernel.
# The CPU runs in 64-bit mode; the kernel is an uncompressed arm64 Image.
arm_64bit=1
kernel=kernel8.img
# The initrd, loaded after the kernel; the firmware tells the kernel where in the device tree.
initramfs initrd.img followkernel
# Device trees named as the mainline kernel names them (bcm2837-rpi-3-b.dtb, ...): the
# firmware loads the one of the board and puts cmdline.txt into it.
upstream_kernel=1
# The mini UART on the GPIO header, the serial console (ttyS1).
enable_uart=1
";

/// cmdline.txt's command line: `cmdline` without its `console=` arguments, which name the
/// consoles of other machines (the same manifest builds for a PC), then [`PI_CONSOLES`].
pub fn pi_cmdline(cmdline: &str) -> String {
    let kept: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|a| !crate::arch::is_console_arg(a))
        .collect();
    let mut line = kept.join(" ");
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(PI_CONSOLES);
    line
}

struct Rpi3 {
    capture: KernelCapture,
    /// Whether the capture takes the entries of the current segment (it may reuse its cached
    /// initrd segment; the device trees are looked for all the same).
    capture_emits: bool,
    dtbs: BTreeMap<String, Vec<u8>>,
    dtb_bytes: u64,
    target: Target,
}

pub(crate) fn writer(target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
    let firmware = firmware(target)?;
    check_firmware(firmware)?;
    Ok(Box::new(Rpi3 {
        capture: KernelCapture::new(target, target.initrd_options())?,
        capture_emits: true,
        dtbs: BTreeMap::new(),
        dtb_bytes: 0,
        target: target.clone(),
    }))
}

fn firmware(target: &Target) -> Result<&Firmware, FormatError> {
    target
        .firmware
        .as_deref()
        .ok_or(FormatError::NoFirmware(Format::Rpi3))
}

/// The firmware has what a Pi 3 needs, and nothing kiln writes itself.
fn check_firmware(firmware: &Firmware) -> Result<(), FormatError> {
    for name in FIRMWARE_FILES {
        if !firmware.files.contains_key(name) {
            return Err(FormatError::FirmwareFile {
                format: Format::Rpi3,
                file: name.to_string(),
            });
        }
    }
    let own =
        |n: &str| [KERNEL, INITRD, "config.txt", "cmdline.txt"].contains(&n) || n.ends_with(".dtb");
    if let Some(name) = firmware.files.keys().find(|n| own(n)) {
        return Err(content(format!(
            "the firmware image holds {name}, which kiln writes itself: use kiln's \
             rpi3-firmware package (pkg/rpi3-firmware)"
        )));
    }
    Ok(())
}

fn content(why: String) -> FormatError {
    FormatError::Content {
        format: Format::Rpi3,
        why,
    }
}

impl Rpi3 {
    /// The device tree's name on the card, when `entry` is one of the Pi 3 family's.
    fn dtb_name(entry: &Entry) -> Option<&str> {
        let name = entry.path.strip_prefix(DTB_DIR)?;
        (entry.kind == Kind::File
            && !name.contains('/')
            && name.starts_with(DTB_PREFIX)
            && name.ends_with(".dtb"))
        .then_some(name)
    }
}

impl Sink for Rpi3 {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let Some(name) = Self::dtb_name(entry) else {
            return if self.capture_emits {
                self.capture.add(entry, data)
            } else {
                Ok(())
            };
        };
        self.dtb_bytes += entry.size;
        if entry.size > DTB_MAX || self.dtb_bytes > DTBS_MAX {
            return Err(io::Error::other(format!(
                "/{}: device trees larger than the rpi3 format takes ({} KiB each, {} MiB in all)",
                entry.path,
                DTB_MAX >> 10,
                DTBS_MAX >> 20
            )));
        }
        let mut dtb = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        data.take(entry.size).read_to_end(&mut dtb)?;
        let name = name.to_string();
        if self.capture_emits {
            self.capture.add(entry, &mut dtb.as_slice())?;
        }
        self.dtbs.insert(name, dtb);
        Ok(())
    }

    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        // The device trees come in the kernel modules' segment: its entries are always wanted.
        self.capture_emits = self.capture.begin_segment(key)? == Segment::Emit;
        Ok(Segment::Emit)
    }

    fn end_segment(&mut self) -> io::Result<()> {
        self.capture_emits = true;
        self.capture.end_segment()
    }
}

impl FormatWriter for Rpi3 {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let Rpi3 {
            capture,
            dtbs,
            target,
            ..
        } = *self;
        let firmware = firmware(&target)?;
        let (kernel, initrd, cmdline) = capture.finish(&target)?;
        if !dtbs.contains_key(PI3_DTB) {
            return Err(content(format!(
                "the kernel image has no /{DTB_DIR}{PI3_DTB} (in its kernel.tar): use kiln's \
                 arm64 kernel (pkg/kernel built with --arch arm64) or a LinuxKit arm64 kernel"
            )));
        }
        let kernel = Kernel::of(&kernel).map_err(write_err(kernel.path()))??;
        let dest = target.path(Format::Rpi3.suffix());
        let line = format!("{}\n", pi_cmdline(&cmdline));
        let write = || -> io::Result<AtomicOutput> {
            let mut tar = tar::Builder::new(AtomicOutput::create(&dest)?);
            let mut members: BTreeMap<&str, Member<'_>> = BTreeMap::new();
            for (name, data) in &firmware.files {
                members.insert(name, Member::Bytes(data));
            }
            for (name, data) in &dtbs {
                members.insert(name, Member::Bytes(data));
            }
            members.insert("config.txt", Member::Bytes(CONFIG_TXT.as_bytes()));
            members.insert("cmdline.txt", Member::Bytes(line.as_bytes()));
            members.insert(KERNEL, kernel.member());
            members.insert(INITRD, Member::Spool(&initrd));
            for (name, member) in members {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_mtime(target.mtime);
                match member {
                    Member::Bytes(data) => {
                        h.set_size(data.len() as u64);
                        tar.append_data(&mut h, name, data)?;
                    }
                    Member::Spool(spool) => {
                        // The capture wrote the spool through a handle of its own: a handle of
                        // this one's own reads it from the start.
                        let mut file = spool.reopen()?;
                        h.set_size(file.metadata()?.len());
                        tar.append_data(&mut h, name, &mut file)?;
                    }
                }
            }
            tar.into_inner()
        };
        let out = write().map_err(write_err(&dest))?;
        Ok(vec![out.commit().map_err(write_err(&dest))?])
    }
}

/// A member of the archive.
enum Member<'a> {
    Bytes(&'a [u8]),
    Spool(&'a Spool),
}

/// The kernel as the firmware takes it: the captured file when it is an arm64 Image, or the
/// Image a gzip-compressed kernel holds.
enum Kernel<'a> {
    Captured(&'a Spool),
    Decompressed(Vec<u8>),
}

/// The arm64 Image header's magic, at [`IMAGE_MAGIC_AT`] (Documentation/arm64/booting.rst).
const IMAGE_MAGIC: &[u8] = b"ARM\x64";
const IMAGE_MAGIC_AT: usize = 0x38;

impl<'a> Kernel<'a> {
    fn of(spool: &'a Spool) -> io::Result<Result<Kernel<'a>, FormatError>> {
        let mut file = spool.reopen()?;
        let mut head = Vec::new();
        // Enough for the arm64 Image header and an x86 bzImage's (at 0x202).
        (&mut file).take(0x210).read_to_end(&mut head)?;
        if is_arm64_image(&head) {
            return Ok(Ok(Kernel::Captured(spool)));
        }
        if head.starts_with(b"\x1f\x8b") {
            file.seek(SeekFrom::Start(0))?;
            let mut gz = Vec::new();
            file.read_to_end(&mut gz)?;
            return Ok(match crate::decompress_kernel(&gz) {
                Ok(image) if is_arm64_image(&image) => Ok(Kernel::Decompressed(image)),
                Ok(_) => Err(not_arm64(
                    "a gzip-compressed kernel that is not an arm64 Image",
                )),
                Err(why) => Err(not_arm64(&format!("a gzip file kiln cannot read ({why})"))),
            });
        }
        Ok(Err(not_arm64(if head.get(0x202..0x206) == Some(b"HdrS") {
            "an x86 bzImage"
        } else {
            "neither an arm64 Image nor a gzip-compressed one"
        })))
    }

    fn member(&self) -> Member<'_> {
        match self {
            Kernel::Captured(spool) => Member::Spool(spool),
            Kernel::Decompressed(image) => Member::Bytes(image),
        }
    }
}

fn is_arm64_image(head: &[u8]) -> bool {
    head.get(IMAGE_MAGIC_AT..IMAGE_MAGIC_AT + 4) == Some(IMAGE_MAGIC)
}

fn not_arm64(what: &str) -> FormatError {
    content(format!(
        "the kernel is {what}; a Raspberry Pi 3 runs an arm64 kernel in 64-bit mode: build the \
         system for arm64 (kiln --arch arm64 build) with an arm64 kernel image"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compression;
    use std::io::Write as _;
    use std::sync::Arc;

    /// An arm64 Image: its 64-byte header and some code.
    fn image() -> Vec<u8> {
        let mut k = vec![0u8; 64];
        k[IMAGE_MAGIC_AT..IMAGE_MAGIC_AT + 4].copy_from_slice(IMAGE_MAGIC);
        k.extend_from_slice(&b"arm64 kernel code ".repeat(100));
        k
    }

    fn firmware() -> Firmware {
        let mut files = BTreeMap::new();
        for (name, data) in [
            ("bootcode.bin", &b"boot code"[..]),
            ("start.elf", b"gpu firmware"),
            ("fixup.dat", b"fixup"),
            ("start_x.elf", b"gpu firmware, camera"),
            ("fixup_x.dat", b"fixup x"),
            ("LICENCE.broadcom", b"licence"),
        ] {
            files.insert(name.to_string(), data.to_vec());
        }
        Firmware { files }
    }

    fn target(dir: &std::path::Path, firmware: Option<Firmware>) -> Target {
        Target {
            firmware: firmware.map(Arc::new),
            ..Target::new(dir, "pi", Compression::Gzip, 1_700_000_000)
        }
    }

    /// The stream assembly gives: the kernel, its command line, kernel.tar's device trees in
    /// a segment, and a file of the system.
    fn feed(w: &mut dyn FormatWriter, kernel: &[u8], dtbs: &[&str]) {
        let file = |w: &mut dyn FormatWriter, path: &str, data: &[u8]| {
            w.add(
                &Entry::file(path, 0o644, data.len() as u64, 0),
                &mut &data[..],
            )
            .expect("add");
        };
        w.add(&Entry::dir("boot", 0o755, 0), &mut io::empty())
            .expect("dir");
        file(w, "boot/cmdline", b"console=ttyS0 quiet");
        file(w, "boot/kernel", kernel);
        assert_eq!(
            w.begin_segment("kernel modules").expect("begin"),
            Segment::Emit
        );
        for d in ["boot/dtb", "boot/dtb/broadcom"] {
            w.add(&Entry::dir(d, 0o755, 0), &mut io::empty())
                .expect("dir");
        }
        for name in dtbs {
            file(w, &format!("boot/dtb/broadcom/{name}"), name.as_bytes());
        }
        w.end_segment().expect("end");
        file(w, "etc/hostname", b"pi\n");
    }

    fn members(tar: &std::path::Path) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
        let mut a = tar::Archive::new(std::fs::File::open(tar).expect("open"));
        let mut out = BTreeMap::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            out.insert(
                e.path().expect("path").to_string_lossy().into_owned(),
                (h.mode().expect("mode"), h.mtime().expect("mtime"), data),
            );
        }
        out
    }

    fn build(dir: &std::path::Path, kernel: &[u8], dtbs: &[&str]) -> Result<PathBuf, FormatError> {
        let target = target(dir, Some(firmware()));
        let mut w = Format::Rpi3.writer(&target)?;
        feed(&mut *w, kernel, dtbs);
        Ok(w.finish()?.remove(0))
    }

    #[test]
    fn the_card_holds_firmware_config_kernel_initrd_and_the_pi3_device_trees() {
        let dir = tempfile::tempdir().expect("tmp");
        let tar = build(
            dir.path(),
            &image(),
            &[PI3_DTB, "bcm2837-rpi-3-b-plus.dtb", "bcm2711-rpi-4-b.dtb"],
        )
        .expect("written");
        assert_eq!(tar, dir.path().join("pi.tar"));
        let m = members(&tar);
        let names: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "LICENCE.broadcom",
                "bcm2837-rpi-3-b-plus.dtb",
                "bcm2837-rpi-3-b.dtb",
                "bootcode.bin",
                "cmdline.txt",
                "config.txt",
                "fixup.dat",
                "fixup_x.dat",
                "initrd.img",
                "kernel8.img",
                "start.elf",
                "start_x.elf",
            ]
        );
        for (name, (mode, mtime, _)) in &m {
            assert_eq!((*mode, *mtime), (0o644, 1_700_000_000), "{name}");
        }
        assert_eq!(m["kernel8.img"].2, image());
        assert_eq!(m["bootcode.bin"].2, b"boot code");
        assert_eq!(m[PI3_DTB].2, PI3_DTB.as_bytes());
        assert_eq!(m["config.txt"].2, CONFIG_TXT.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&m["cmdline.txt"].2),
            "quiet console=tty1 console=ttyS1,115200\n"
        );
        // What the firmware reads in config.txt names the files on the card.
        let config = String::from_utf8_lossy(&m["config.txt"].2).into_owned();
        let settings: Vec<&str> = config
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            settings,
            [
                "arm_64bit=1",
                "kernel=kernel8.img",
                "initramfs initrd.img followkernel",
                "upstream_kernel=1",
                "enable_uart=1"
            ]
        );
        // The initrd is the system's: a gzip newc archive holding its files and the device
        // trees (as every format's initrd does), not the kernel.
        let mut cpio = Vec::new();
        flate2::read::MultiGzDecoder::new(&m["initrd.img"].2[..])
            .read_to_end(&mut cpio)
            .expect("gzip");
        let find = |s: &[u8]| cpio.windows(s.len()).any(|w| w == s);
        assert!(cpio.starts_with(b"070701"));
        assert!(find(b"etc/hostname"));
        assert!(find(b"boot/dtb/broadcom/bcm2837-rpi-3-b.dtb"));
        assert!(!find(b"arm64 kernel code"));
    }

    #[test]
    fn the_same_system_gives_the_same_bytes() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let one = std::fs::read(build(a.path(), &image(), &[PI3_DTB]).expect("a")).expect("read");
        let two = std::fs::read(build(b.path(), &image(), &[PI3_DTB]).expect("b")).expect("read");
        assert!(one == two, "two builds differ");
    }

    #[test]
    fn a_gzip_kernel_is_decompressed_for_the_firmware() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&image()).expect("gzip");
        let tar = build(dir.path(), &gz.finish().expect("gzip"), &[PI3_DTB]).expect("written");
        assert_eq!(members(&tar)["kernel8.img"].2, image());
    }

    #[test]
    fn other_kernels_missing_device_trees_and_firmware_are_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bzimage = vec![0u8; 1024];
        bzimage[0x202..0x206].copy_from_slice(b"HdrS");
        let err = build(dir.path(), &bzimage, &[PI3_DTB]).expect_err("x86");
        assert!(err.to_string().contains("an x86 bzImage"), "{err}");
        assert!(err.to_string().contains("--arch arm64"), "{err}");

        let err = build(dir.path(), &image(), &["bcm2711-rpi-4-b.dtb"]).expect_err("no dtb");
        assert!(
            err.to_string()
                .contains("no /boot/dtb/broadcom/bcm2837-rpi-3-b.dtb"),
            "{err}"
        );

        let err = Format::Rpi3
            .writer(&target(dir.path(), None))
            .err()
            .expect("no firmware");
        assert!(err.to_string().contains("pkg/rpi3-firmware"), "{err}");
        assert!(err.to_string().contains("--firmware"), "{err}");

        let mut partial = firmware();
        partial.files.remove("start.elf");
        let err = Format::Rpi3
            .writer(&target(dir.path(), Some(partial)))
            .err()
            .expect("no start.elf");
        assert!(err.to_string().contains("no start.elf"), "{err}");

        let mut own = firmware();
        own.files.insert("config.txt".into(), b"x".to_vec());
        let err = Format::Rpi3
            .writer(&target(dir.path(), Some(own)))
            .err()
            .expect("config.txt");
        assert!(err.to_string().contains("kiln writes itself"), "{err}");
        // Nothing was left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_command_line_gets_the_pi_consoles_instead_of_others() {
        assert_eq!(
            pi_cmdline("console=ttyS0 quiet"),
            "quiet console=tty1 console=ttyS1,115200"
        );
        assert_eq!(pi_cmdline(""), PI_CONSOLES);
        assert_eq!(
            pi_cmdline("  kiln.debug   console=tty0 \"console=ttyAMA0,115200\" x=1"),
            "kiln.debug x=1 console=tty1 console=ttyS1,115200"
        );
    }
}
