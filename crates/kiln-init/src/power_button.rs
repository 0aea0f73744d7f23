//! The power button (what `system_powerdown` in qemu's monitor, or a hypervisor's "shut down",
//! presses): ACPI's "Power Button" on x86 and under UEFI, a gpio-keys device on arm64's `virt`
//! machine without firmware. Every input device that can send KEY_POWER is read through evdev,
//! and a press powers the system off as SIGTERM to init does.

use crate::modules::Modules;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::Read;
use std::path::PathBuf;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: a timeval, then type, code and value.
const EVENT_SIZE: usize = 24;

/// Load the button and evdev drivers and watch every power-button input device.
pub fn watch(modules: Option<&mut Modules>) {
    if let Some(m) = modules {
        // `button` is ACPI's, `gpio_keys` arm64 virt's (absent modules are no error: the
        // driver may be built in, or the machine has no such button).
        for name in ["button", "gpio_keys", "evdev"] {
            let _ = m.load(name);
        }
    }
    for dev in power_buttons() {
        std::thread::spawn(move || read_presses(dev));
    }
}

/// The /dev/input/eventN nodes whose device can send KEY_POWER (its key capability bitmap has
/// the bit), or calls itself a power button.
fn power_buttons() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/class/input")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("event") {
            continue;
        }
        let device = entry.path().join("device");
        let label = fs::read_to_string(device.join("name")).unwrap_or_default();
        let keys = fs::read_to_string(device.join("capabilities/key")).unwrap_or_default();
        if label.trim() == "Power Button" || has_key(&keys, KEY_POWER) {
            found.push(PathBuf::from("/dev/input").join(name));
        }
    }
    found
}

/// Whether the key capability bitmap `bitmap`, as sysfs writes it (hexadecimal words, the most
/// significant first, separated by spaces; each word a `long`), has bit `key`.
fn has_key(bitmap: &str, key: u16) -> bool {
    let bits = usize::BITS as usize;
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let (index, bit) = (usize::from(key) / bits, usize::from(key) % bits);
    let Some(word) = words
        .len()
        .checked_sub(index + 1)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    usize::from_str_radix(word, 16).is_ok_and(|w| w & (1 << bit) != 0)
}

fn read_presses(dev: PathBuf) {
    let Ok(mut f) = fs::File::open(&dev) else {
        return;
    };
    let mut event = [0u8; EVENT_SIZE];
    while f.read_exact(&mut event).is_ok() {
        let kind = u16::from_ne_bytes([event[16], event[17]]);
        let code = u16::from_ne_bytes([event[18], event[19]]);
        let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
        if kind == EV_KEY && code == KEY_POWER && value == 1 {
            println!("kiln-init: power button pressed");
            let _ = kill(Pid::from_raw(1), Signal::SIGTERM);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_key_is_found_in_a_capability_bitmap() {
        // qemu virt's gpio-keys and ACPI's power button: KEY_POWER (116) alone, in the second
        // 64-bit word.
        assert!(has_key("10000000000000 0", KEY_POWER));
        // A keyboard without a power key, and one with it among others.
        assert!(!has_key("ffefffffffffffff fffffffffffffffe", KEY_POWER));
        assert!(has_key(
            "fffffffffffffffe ffffffffffffffff fffffffffffffffe",
            KEY_POWER + 64
        ));
        // Empty, short or malformed bitmaps have no key.
        assert!(!has_key("", KEY_POWER));
        assert!(!has_key("0", KEY_POWER));
        assert!(!has_key("zz 0", KEY_POWER));
    }
}
