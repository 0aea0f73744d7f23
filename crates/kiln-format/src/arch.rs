//! The machine architectures kiln writes boot media for, and what the boot media differ in
//! between them: the firmware (BIOS and UEFI on amd64, UEFI alone on arm64), the file UEFI
//! firmware starts from removable media, the boot loader files of kiln's bootloader package,
//! the serial console the kernel is given, and the GPT type of a root partition.
//!
//! The formats that do not boot (tar, kernel+initrd, ...) are the same for every architecture
//! and do not look at it.

use crate::grub::files;
use crate::partition::{self, Guid};

/// A machine architecture that kiln writes boot media for, named as OCI names platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    /// x86-64 (`amd64`): BIOS and UEFI.
    #[default]
    Amd64,
    /// 64-bit ARM (`arm64`, aarch64): UEFI only.
    Arm64,
}

impl Arch {
    /// Every architecture with boot media.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The architecture of an OCI platform (`amd64`, `arm64`; the kernel's `x86_64` and
    /// `aarch64` too); `None` for one kiln writes no boot media for.
    pub fn from_oci(name: &str) -> Option<Arch> {
        match name {
            "amd64" | "x86_64" | "x86-64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The OCI name (`amd64`, `arm64`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Whether machines of this architecture boot through a PC BIOS (the formats that boot
    /// only so, `raw-bios`, `iso-bios`, ..., are refused for the others).
    pub fn has_bios(self) -> bool {
        self == Arch::Amd64
    }

    /// Where UEFI firmware looks for the boot loader on removable media and disks without
    /// boot entries: `EFI/BOOT/BOOTX64.EFI`, `EFI/BOOT/BOOTAA64.EFI`.
    pub fn efi_boot_path(self) -> &'static str {
        match self {
            Arch::Amd64 => "EFI/BOOT/BOOTX64.EFI",
            Arch::Arm64 => "EFI/BOOT/BOOTAA64.EFI",
        }
    }

    /// The PE machine type of EFI programs for this architecture (0x8664, 0xaa64).
    pub fn pe_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 0x8664,
            Arch::Arm64 => 0xaa64,
        }
    }

    /// GRUB for UEFI in kiln's bootloader package.
    pub fn grub_efi(self) -> &'static str {
        match self {
            Arch::Amd64 => files::GRUB_EFI,
            Arch::Arm64 => files::GRUB_EFI_ARM64,
        }
    }

    /// The systemd-boot EFI stub in kiln's bootloader package.
    pub fn efi_stub(self) -> &'static str {
        match self {
            Arch::Amd64 => files::EFI_STUB,
            Arch::Arm64 => files::EFI_STUB_ARM64,
        }
    }

    /// The GPT partition type of a root partition (the Discoverable Partitions
    /// Specification's, per architecture).
    pub fn root_partition_type(self) -> Guid {
        match self {
            Arch::Amd64 => partition::LINUX_ROOT_X86_64,
            Arch::Arm64 => partition::LINUX_ROOT_ARM64,
        }
    }

    /// The serial console the boot media give the kernel when its command line names none:
    /// on arm64 the first PL011 UART (`ttyAMA0`: qemu's `virt` machine, most servers); none on
    /// amd64, whose kernel keeps its default (the screen) unless the command line says.
    pub fn default_console(self) -> Option<&'static str> {
        match self {
            Arch::Amd64 => None,
            Arch::Arm64 => Some("ttyAMA0"),
        }
    }

    /// `cmdline` as the boot media pass it: with `console=` of [`Arch::default_console`]
    /// appended when no argument names a console.
    pub fn boot_cmdline(self, cmdline: &str) -> String {
        let Some(console) = self.default_console() else {
            return cmdline.to_string();
        };
        if cmdline.split_whitespace().any(is_console_arg) {
            cmdline.to_string()
        } else {
            format!("{cmdline} console={console}")
                .trim_start()
                .to_string()
        }
    }
}

/// Whether the kernel command line argument `arg` names a console (`console=...`, quoted or
/// not).
pub(crate) fn is_console_arg(arg: &str) -> bool {
    arg.trim_start_matches('"').starts_with("console=")
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_oci(a.name()), Some(a));
        }
        assert_eq!(Arch::from_oci("aarch64"), Some(Arch::Arm64));
        assert_eq!(Arch::from_oci("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::from_oci("riscv64"), None);
        assert_eq!(Arch::default(), Arch::Amd64);
    }

    #[test]
    fn files_and_names_follow_the_architecture() {
        assert_eq!(Arch::Amd64.efi_boot_path(), "EFI/BOOT/BOOTX64.EFI");
        assert_eq!(Arch::Arm64.efi_boot_path(), "EFI/BOOT/BOOTAA64.EFI");
        assert_eq!(Arch::Amd64.grub_efi(), "grub/x86_64-efi/BOOTX64.EFI");
        assert_eq!(Arch::Arm64.grub_efi(), "grub/arm64-efi/BOOTAA64.EFI");
        assert_eq!(Arch::Amd64.efi_stub(), "systemd-boot/linuxx64.efi.stub");
        assert_eq!(Arch::Arm64.efi_stub(), "systemd-boot/linuxaa64.efi.stub");
        assert_eq!(Arch::Arm64.pe_machine(), 0xaa64);
        assert!(Arch::Amd64.has_bios() && !Arch::Arm64.has_bios());
        assert_eq!(
            Arch::Arm64.root_partition_type().to_string(),
            "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
        );
        assert_eq!(
            Arch::Amd64.root_partition_type().to_string(),
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        );
    }

    #[test]
    fn arm64_gets_a_serial_console_unless_the_command_line_names_one() {
        assert_eq!(Arch::Arm64.boot_cmdline("quiet"), "quiet console=ttyAMA0");
        assert_eq!(Arch::Arm64.boot_cmdline(""), "console=ttyAMA0");
        for named in [
            "console=ttyS0 quiet",
            "quiet console=tty0",
            r#""console=ttyAMA1,115200" quiet"#,
        ] {
            assert_eq!(Arch::Arm64.boot_cmdline(named), named);
        }
        // Not an argument naming a console.
        assert_eq!(
            Arch::Arm64.boot_cmdline("kiln.console=x"),
            "kiln.console=x console=ttyAMA0"
        );
        // amd64's command line is passed as it is.
        assert_eq!(Arch::Amd64.boot_cmdline("quiet"), "quiet");
    }
}
