//! The ACPI power button (what `system_powerdown` in qemu's monitor, or a hypervisor's "shut
//! down", presses): its input device is read through evdev, and a press powers the system off
//! as SIGTERM to init does.

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
        for name in ["button", "evdev"] {
            let _ = m.load(name);
        }
    }
    for dev in power_buttons() {
        std::thread::spawn(move || read_presses(dev));
    }
}

/// The /dev/input/eventN nodes whose device calls itself a power button.
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
        let label = fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if label.trim() == "Power Button" {
            found.push(PathBuf::from("/dev/input").join(name));
        }
    }
    found
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
