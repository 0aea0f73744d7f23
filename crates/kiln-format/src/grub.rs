//! GRUB on boot media: the bytes a disk or ISO writer places so that GRUB's images from kiln's
//! bootloader package (`pkg/bootloader`) boot under a PC BIOS, where each of the package's files
//! is, and the `grub.cfg` that boots kiln's kernel and initrd (on BIOS, and under UEFI on amd64
//! and arm64).
//!
//! Pure functions over byte slices: they patch what `grub-bios-setup` and `xorriso` patch when
//! they install the same images, and write no file. The layouts they serve:
//!
//! - **BIOS disk** (MBR partition table, first partition at 1 MiB): the MBR's first 440 bytes
//!   are `boot.img` patched by [`bios_disk_boot_area`], `core.img` is embedded from LBA 1 on (the
//!   gap before the first partition), and the first partition is FAT holding
//!   `/boot/grub/grub.cfg` ([`grub_cfg`]), the kernel and the initrd. The package's `core.img`
//!   carries every module it needs and its prefix is `(,msdos1)/boot/grub`: the first MBR
//!   partition of the disk the BIOS booted.
//! - **BIOS ISO**: `eltorito.img` is the El Torito no-emulation boot image (load size 4 sectors
//!   of 512 bytes) with its boot info table, and, hybrid (the same ISO booted as a disk), the
//!   MBR's first 440 bytes are `boot_hybrid.img`; the ISO writer patches both where it knows
//!   the blocks ([`crate::iso9660::BiosBoot::grub`], [`crate::iso9660::HybridMbr::grub`]).
//!   GRUB reads `/boot/grub/grub.cfg` from the ISO 9660 file system.
//!
//! - **UEFI** (`iso-efi-initrd`): GRUB's EFI image for the architecture
//!   ([`crate::Arch::grub_efi`]) starts from the firmware's removable-media path and finds the
//!   device holding `/boot/grub/grub.cfg`. arm64 has no BIOS, so only this layout exists there.
//!
//! Offsets come from GRUB 2.06's `boot.S`, `diskboot.S` and `util/setup.c`.

use crate::Arch;
use std::fmt::Write as _;

/// The size of a disk sector as BIOS and GRUB count: 512 bytes.
pub const SECTOR_SIZE: usize = 512;
/// The bytes of boot code at the start of an MBR (the disk signature and partition table follow).
pub const MBR_CODE_SIZE: usize = 440;
/// The sector at which `core.img` is embedded on a BIOS disk: the one after the MBR.
pub const EMBED_LBA: u64 = 1;
/// The most sectors `core.img` may have: GRUB loads it at 0x8000 in real-mode memory and
/// `grub-bios-setup` refuses more than fit below 0x78000.
pub const MAX_CORE_SECTORS: u64 = (0x78000 - 0x9000) / SECTOR_SIZE as u64;

/// Where kiln's bootloader package keeps each file, relative to its `/boot-files` directory.
/// The package for amd64 has the BIOS images and the x86-64 EFI files, the one for arm64 the
/// arm64 EFI files only; [`crate::Arch`] picks a format's files by architecture.
pub mod files {
    /// GRUB's MBR boot code for BIOS disks ([`super::bios_disk_boot_area`]).
    pub const BOOT_IMG: &str = "grub/i386-pc/boot.img";
    /// GRUB for BIOS disks, embedded after the MBR ([`super::bios_disk_boot_area`]).
    pub const CORE_IMG: &str = "grub/i386-pc/core.img";
    /// GRUB's El Torito boot image for BIOS ISOs.
    pub const ELTORITO_IMG: &str = "grub/i386-pc/eltorito.img";
    /// GRUB's MBR boot code for hybrid ISOs.
    pub const BOOT_HYBRID_IMG: &str = "grub/i386-pc/boot_hybrid.img";
    /// GRUB for UEFI on x86-64: it makes the device holding `/boot/grub/grub.cfg` its root.
    pub const GRUB_EFI: &str = "grub/x86_64-efi/BOOTX64.EFI";
    /// GRUB for UEFI on arm64 (`grub-mkimage -O arm64-efi`), made as [`GRUB_EFI`] is.
    pub const GRUB_EFI_ARM64: &str = "grub/arm64-efi/BOOTAA64.EFI";
    /// The systemd-boot EFI stub for x86-64, for Unified Kernel Images.
    pub const EFI_STUB: &str = "systemd-boot/linuxx64.efi.stub";
    /// The systemd-boot EFI stub for arm64, for Unified Kernel Images.
    pub const EFI_STUB_ARM64: &str = "systemd-boot/linuxaa64.efi.stub";
}

// boot.img (GRUB's boot.S, include/grub/i386/pc/boot.h).
/// The BIOS parameter block area, which `grub-bios-setup` takes from the disk's old sector 0.
const BPB: std::ops::Range<usize> = 0x03..0x5a;
/// The 64-bit LBA of core.img's first sector, which boot.img loads.
const KERNEL_SECTOR: usize = 0x5c;
/// The BIOS drive to load from; 0xff means the drive booted from.
const BOOT_DRIVE: usize = 0x64;
/// A 2-byte jump that skips the workaround for BIOSes that pass a bad drive number.
const DRIVE_CHECK: usize = 0x66;

// diskboot.img, core.img's first sector (diskboot.S): block lists grow down from its end.
/// One block list entry: 64-bit start sector, 16-bit count, 16-bit load segment.
const BLOCKLIST_SIZE: usize = 12;
/// The load segment of the sectors after diskboot.img (0x8200).
const FIRST_SEGMENT: u16 = 0x820;
/// In the sector after diskboot.img: how much of the kernel has no Reed-Solomon codes; 0xffff
/// in a core.img of another GRUB version.
const NO_REED_SOLOMON_LENGTH: usize = 0x14;

/// GRUB images or inputs that cannot be laid out.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// An MBR boot image is not one boot sector.
    #[error(
        "{file} is not a GRUB boot sector ({len} bytes{sig}); take it from kiln's bootloader package",
        sig = if *.signature { "" } else { ", no 55 aa signature" }
    )]
    BootSector {
        /// Which image (`boot.img`, `boot_hybrid.img`).
        file: &'static str,
        /// Its length.
        len: usize,
        /// Whether it ends in the boot signature.
        signature: bool,
    },
    /// An image is not the GRUB image it should be.
    #[error(
        "{file} is not a GRUB 2.06 i386-pc image as grub-mkimage writes it: {reason}; take it from kiln's bootloader package"
    )]
    Image {
        /// Which image (`core.img`, `eltorito.img`).
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// core.img does not fit where it is embedded.
    #[error(
        "core.img needs {sectors} sectors after the MBR but only {room} fit{why}; build it with fewer modules{hint}"
    )]
    CoreTooLarge {
        /// Its size in sectors.
        sectors: u64,
        /// The sectors available.
        room: u64,
        /// Why the room ends there.
        why: String,
        /// What else could help.
        hint: &'static str,
    },
    /// A path GRUB should read cannot be written into grub.cfg.
    #[error("grub.cfg: boot file path `{path}` {reason}")]
    Path {
        /// The path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A kernel command line that GRUB cannot pass on unchanged.
    #[error("grub.cfg: kernel command line `{cmdline}`: {reason}")]
    Cmdline {
        /// The command line.
        cmdline: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The start of a BIOS disk laid out for GRUB: [`bios_disk_boot_area`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosDiskBootArea {
    /// The MBR's boot code (bytes 0..440 of LBA 0; the disk signature, partition table and
    /// 55 aa signature are the partition writer's).
    pub mbr_code: [u8; MBR_CODE_SIZE],
    /// core.img, patched and padded to whole sectors: write it at LBA [`EMBED_LBA`].
    pub embedding: Vec<u8>,
}

/// Lay out GRUB on a BIOS disk as `grub-bios-setup` embeds it into an MBR disk's gap:
/// `core_img` from LBA [`EMBED_LBA`] on, before the first partition at `first_partition_lba`.
///
/// boot.img gets core.img's first sector (0x5c, 64-bit), "the drive booted from" (0x64 = 0xff)
/// and the workaround for BIOSes that pass a wrong drive number enabled (the jump at 0x66
/// replaced by two NOPs), and a zeroed BIOS parameter block (a fresh disk's). core.img's first
/// sector (diskboot.img) gets one block list: the rest of core.img, from LBA 2, loaded at
/// 0x8200. No Reed-Solomon codes are added: GRUB checks them only when present.
pub fn bios_disk_boot_area(
    boot_img: &[u8],
    core_img: &[u8],
    first_partition_lba: u64,
) -> Result<BiosDiskBootArea, GrubError> {
    check_boot_sector("boot.img", boot_img)?;
    let reject = |reason: String| GrubError::Image {
        file: "core.img",
        reason,
    };
    if core_img.len() < 2 * SECTOR_SIZE {
        return Err(reject(format!(
            "{} bytes is less than its first two sectors",
            core_img.len()
        )));
    }
    let first_list = SECTOR_SIZE - BLOCKLIST_SIZE;
    if read_u16(core_img, first_list + 10) != FIRST_SEGMENT {
        return Err(reject(format!(
            "its first sector is not diskboot.img (no block list loading at segment {FIRST_SEGMENT:#x})"
        )));
    }
    if read_u16(core_img, SECTOR_SIZE + NO_REED_SOLOMON_LENGTH) == 0xffff {
        return Err(reject("it is from another GRUB version".to_string()));
    }
    let sectors = core_img.len().div_ceil(SECTOR_SIZE) as u64;
    let room = first_partition_lba.saturating_sub(EMBED_LBA);
    if sectors > room {
        return Err(GrubError::CoreTooLarge {
            sectors,
            room,
            why: format!(" before the first partition at LBA {first_partition_lba}"),
            hint: ", or start the first partition later (at 1 MiB, LBA 2048)",
        });
    }
    if sectors > MAX_CORE_SECTORS {
        return Err(GrubError::CoreTooLarge {
            sectors,
            room: MAX_CORE_SECTORS,
            why: " in the real-mode memory GRUB loads it into".to_string(),
            hint: "",
        });
    }

    let mut mbr_code = [0u8; MBR_CODE_SIZE];
    mbr_code.copy_from_slice(&boot_img[..MBR_CODE_SIZE]);
    mbr_code[BPB].fill(0);
    mbr_code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&EMBED_LBA.to_le_bytes());
    mbr_code[BOOT_DRIVE] = 0xff;
    mbr_code[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);

    let mut embedding = core_img.to_vec();
    embedding.resize(core_img.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE, 0);
    // Clear the block lists grub-mkimage left (they grow down from the sector's end, ended by
    // one of length 0), then write the single one of an embedded core.img.
    let mut at = first_list;
    while read_u16(&embedding, at + 8) != 0 {
        embedding[at..at + BLOCKLIST_SIZE].fill(0);
        at = at
            .checked_sub(BLOCKLIST_SIZE)
            .filter(|&a| a > 0)
            .ok_or_else(|| reject("its block lists have no terminator".to_string()))?;
    }
    let rest = u16::try_from(sectors - 1).map_err(|_| GrubError::CoreTooLarge {
        sectors,
        room: MAX_CORE_SECTORS,
        why: " in one block list".to_string(),
        hint: "",
    })?;
    write_blocklist(
        &mut embedding,
        first_list,
        EMBED_LBA + 1,
        rest,
        FIRST_SEGMENT,
    );
    write_blocklist(&mut embedding, first_list - BLOCKLIST_SIZE, 0, 0, 0);
    Ok(BiosDiskBootArea {
        mbr_code,
        embedding,
    })
}

/// The `grub.cfg` that boots `kernel` with `initrd` and `cmdline` at once on `arch`, with its
/// own progress lines (`kiln: loading ...`). Paths are absolute on GRUB's root device
/// (`/boot/kernel`). On amd64 GRUB's output goes to the first serial port (115200 baud) as well
/// as the screen; on arm64 to the firmware's console (UEFI's, which arm64 firmware puts on the
/// serial port: GRUB has no driver of its own for arm64 UARTs). GRUB's `linux` command loads
/// the kernel of either: an x86 bzImage, or an arm64 `Image` through its EFI stub.
///
/// GRUB hands the kernel its arguments re-quoted: it wraps an argument holding a space in
/// double quotes and puts a backslash before `\`, `'` and `"`. So the command line is split
/// as the kernel splits it, the quotes the kernel would remove (`"a=b c"`, `a="b c"`) are
/// removed, and each argument is one single-quoted GRUB word: the kernel gets the same
/// parameters. Command lines GRUB would alter (`\`, `'`, other double quotes, control
/// characters) are refused.
pub fn grub_cfg(
    arch: Arch,
    kernel: &str,
    initrd: &str,
    cmdline: &str,
) -> Result<String, GrubError> {
    for path in [kernel, initrd] {
        check_path(path)?;
    }
    let args = kernel_args(cmdline)?;
    let mut cfg = String::from(match arch {
        Arch::Amd64 => {
            "# Written by kiln: boot at once, with output on the serial console too.\n\
             serial --unit=0 --speed=115200\n\
             terminal_input serial console\n\
             terminal_output serial console\n"
        }
        Arch::Arm64 => "# Written by kiln: boot at once, with output on the firmware's console.\n",
    });
    let _ = writeln!(cfg, "echo 'kiln: loading {kernel}'");
    cfg.push_str("linux '");
    cfg.push_str(kernel);
    cfg.push('\'');
    for a in &args {
        let _ = write!(cfg, " '{a}'");
    }
    cfg.push('\n');
    let _ = writeln!(cfg, "echo 'kiln: loading {initrd}'");
    let _ = writeln!(cfg, "initrd '{initrd}'");
    cfg.push_str("echo 'kiln: booting'\nboot\n");
    Ok(cfg)
}

fn check_path(path: &str) -> Result<(), GrubError> {
    let bad = |reason| GrubError::Path {
        path: path.to_string(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("is not absolute"));
    }
    if path
        .chars()
        .any(|c| c == '\'' || c == '\\' || c.is_control())
    {
        return Err(bad("holds a quote, backslash or control character"));
    }
    Ok(())
}

/// The kernel's parameters in `cmdline` (split as the kernel's `next_arg` does), without the
/// double quotes the kernel removes.
fn kernel_args(cmdline: &str) -> Result<Vec<String>, GrubError> {
    let bad = |reason| GrubError::Cmdline {
        cmdline: cmdline.to_string(),
        reason,
    };
    if cmdline.chars().any(|c| c == '\\' || c == '\'') {
        return Err(bad(
            "GRUB passes `\\` and `'` to the kernel with a backslash before them",
        ));
    }
    if cmdline.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == ' ' && !quoted {
            if !cur.is_empty() {
                args.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c == '"' {
            quoted = !quoted;
        }
        cur.push(c);
    }
    if quoted {
        return Err(bad("a double quote is not closed"));
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args.into_iter()
        .map(|a| {
            if !a.contains('"') {
                return Ok(a);
            }
            // "param=value" or "param", and param="value": the forms whose quotes the kernel
            // removes. The value must be the rest of the argument.
            let inner = if let Some(whole) = a.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
            {
                whole.to_string()
            } else if let Some((k, v)) = a.split_once('=')
                && let Some(v) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
            {
                format!("{k}={v}")
            } else {
                return Err(bad(
                    "a double quote that is not around a whole argument or value reaches the kernel with a backslash under GRUB",
                ));
            };
            if inner.contains('"') {
                return Err(bad(
                    "a double quote inside a quoted argument reaches the kernel with a backslash under GRUB",
                ));
            }
            Ok(inner)
        })
        .collect()
}

fn check_boot_sector(file: &'static str, img: &[u8]) -> Result<(), GrubError> {
    let signature = img.len() == SECTOR_SIZE && img[SECTOR_SIZE - 2..] == [0x55, 0xaa];
    if signature {
        Ok(())
    } else {
        Err(GrubError::BootSector {
            file,
            len: img.len(),
            signature: img.ends_with(&[0x55, 0xaa]),
        })
    }
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn write_blocklist(b: &mut [u8], at: usize, start: u64, len: u16, segment: u16) {
    b[at..at + 8].copy_from_slice(&start.to_le_bytes());
    b[at + 8..at + 10].copy_from_slice(&len.to_le_bytes());
    b[at + 10..at + 12].copy_from_slice(&segment.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        let mut b: Vec<u8> = (0..SECTOR_SIZE)
            .map(|i| u8::try_from(i % 251).expect("small"))
            .collect();
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    /// A core.img as grub-mkimage writes it: diskboot.img whose block list says "2, n - 1,
    /// 0x820", then n - 1 more sectors, the last one partial.
    fn core_img(sectors: usize) -> Vec<u8> {
        let mut c = vec![0xc3u8; sectors * SECTOR_SIZE - 100];
        c[SECTOR_SIZE - 3 * BLOCKLIST_SIZE..SECTOR_SIZE].fill(0);
        let n = u16::try_from(sectors - 1).unwrap_or(u16::MAX);
        write_blocklist(&mut c, SECTOR_SIZE - BLOCKLIST_SIZE, 2, n, FIRST_SEGMENT);
        c[SECTOR_SIZE + NO_REED_SOLOMON_LENGTH..SECTOR_SIZE + NO_REED_SOLOMON_LENGTH + 2]
            .copy_from_slice(&0x1234u16.to_le_bytes());
        c
    }

    #[test]
    fn disk_boot_area_patches_boot_img_and_core_img() {
        let boot = boot_img();
        let core = core_img(295);
        let area = bios_disk_boot_area(&boot, &core, 2048).expect("fits");
        let m = &area.mbr_code;
        assert!(m[BPB].iter().all(|&b| b == 0), "BPB zeroed");
        assert_eq!(m[0..3], boot[0..3], "the jump over the BPB stays");
        assert_eq!(m[KERNEL_SECTOR..KERNEL_SECTOR + 8], 1u64.to_le_bytes());
        assert_eq!(m[BOOT_DRIVE], 0xff);
        assert_eq!(m[DRIVE_CHECK..DRIVE_CHECK + 2], [0x90, 0x90]);
        assert_eq!(
            m[0x68..],
            boot[0x68..MBR_CODE_SIZE],
            "code after the patches kept"
        );

        let e = &area.embedding;
        assert_eq!(e.len(), 295 * SECTOR_SIZE, "padded to whole sectors");
        assert_eq!(e[..core.len()], core[..], "core.img itself unchanged");
        assert!(e[core.len()..].iter().all(|&b| b == 0));
        let list = SECTOR_SIZE - BLOCKLIST_SIZE;
        assert_eq!(
            e[list..list + 8],
            2u64.to_le_bytes(),
            "rest starts at LBA 2"
        );
        assert_eq!(read_u16(e, list + 8), 294, "all sectors but diskboot");
        assert_eq!(read_u16(e, list + 10), 0x820);
        assert!(
            e[list - BLOCKLIST_SIZE..list].iter().all(|&b| b == 0),
            "terminator"
        );
    }

    #[test]
    fn disk_boot_area_clears_stale_block_lists() {
        let mut core = core_img(10);
        let list = SECTOR_SIZE - BLOCKLIST_SIZE;
        write_blocklist(&mut core, list - BLOCKLIST_SIZE, 99, 7, 0x1000);
        let area = bios_disk_boot_area(&boot_img(), &core, 2048).expect("fits");
        let e = &area.embedding;
        assert_eq!(read_u16(e, list + 8), 9);
        assert!(e[list - BLOCKLIST_SIZE..list].iter().all(|&b| b == 0));
        // Without a terminator the lists would run into diskboot's code.
        let mut endless = core_img(10);
        endless[..SECTOR_SIZE - BLOCKLIST_SIZE].fill(0xc3);
        let err = bios_disk_boot_area(&boot_img(), &endless, 2048).expect_err("no terminator");
        assert!(err.to_string().contains("terminator"), "{err}");
    }

    #[test]
    fn core_img_must_fit_before_the_first_partition() {
        let core = core_img(64);
        assert!(
            bios_disk_boot_area(&boot_img(), &core, 65).is_ok(),
            "exactly fits"
        );
        let err = bios_disk_boot_area(&boot_img(), &core, 64).expect_err("one sector short");
        assert!(
            matches!(
                err,
                GrubError::CoreTooLarge {
                    sectors: 64,
                    room: 63,
                    ..
                }
            ),
            "{err}"
        );
        let err = bios_disk_boot_area(&boot_img(), &core_img(900), 2048).expect_err("too big");
        assert!(
            matches!(
                err,
                GrubError::CoreTooLarge {
                    sectors: 900,
                    room: 888,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn disk_boot_area_rejects_wrong_images() {
        let core = core_img(10);
        assert!(matches!(
            bios_disk_boot_area(&boot_img()[..511], &core, 2048),
            Err(GrubError::BootSector { len: 511, .. })
        ));
        let mut unsigned = boot_img();
        unsigned[511] = 0;
        assert!(bios_disk_boot_area(&unsigned, &core, 2048).is_err());
        let mut eltorito = core.clone();
        eltorito[SECTOR_SIZE - 2..SECTOR_SIZE].fill(0);
        let err = bios_disk_boot_area(&boot_img(), &eltorito, 2048).expect_err("no diskboot");
        assert!(err.to_string().contains("diskboot.img"), "{err}");
        assert!(bios_disk_boot_area(&boot_img(), &core[..600], 2048).is_err());
    }

    #[test]
    fn grub_cfg_boots_with_serial_console() {
        let cfg = grub_cfg(
            Arch::Amd64,
            "/boot/kernel",
            "/boot/initrd.img",
            "console=ttyS0 quiet",
        )
        .expect("plain command line");
        assert!(cfg.contains("serial --unit=0 --speed=115200\n"));
        assert!(cfg.contains("terminal_output serial console\n"));
        assert!(cfg.contains("\nlinux '/boot/kernel' 'console=ttyS0' 'quiet'\n"));
        assert!(cfg.contains("\ninitrd '/boot/initrd.img'\n"));
        assert!(cfg.ends_with("boot\n"));
    }

    #[test]
    fn grub_cfg_on_arm64_uses_the_firmware_console() {
        let cfg = grub_cfg(
            Arch::Arm64,
            "/boot/kernel",
            "/boot/initrd.img",
            "console=ttyAMA0",
        )
        .expect("plain command line");
        // GRUB's `--unit` ports are PC UARTs, which arm64-efi has none of: the firmware's
        // console carries its output.
        assert!(!cfg.contains("serial"), "{cfg}");
        assert!(
            cfg.contains("\nlinux '/boot/kernel' 'console=ttyAMA0'\n"),
            "{cfg}"
        );
        assert!(cfg.contains("\ninitrd '/boot/initrd.img'\n"));
        assert!(cfg.ends_with("boot\n"));
    }

    #[test]
    fn grub_cfg_quotes_the_command_line() {
        let cfg =
            grub_cfg(Arch::Amd64, "/k", "/i", r#"a="b c"  "d=e f" g=$x;h "#).expect("quotable");
        assert!(
            cfg.contains("linux '/k' 'a=b c' 'd=e f' 'g=$x;h'\n"),
            "{cfg}"
        );
        for bad in [
            r"a=\n",
            "a='b'",
            r#"a"b"#,
            r#"a=b"c""#,
            "a=\"b\"c\"\"",
            "a=\nb",
        ] {
            assert!(
                matches!(
                    grub_cfg(Arch::Arm64, "/k", "/i", bad),
                    Err(GrubError::Cmdline { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            grub_cfg(Arch::Amd64, "boot/k", "/i", ""),
            Err(GrubError::Path { .. })
        ));
        assert!(matches!(
            grub_cfg(Arch::Amd64, "/k", "/i'", ""),
            Err(GrubError::Path { .. })
        ));
    }
}
