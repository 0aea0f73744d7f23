//! The rpi3 format: a Raspberry Pi 3's SD card boot partition as a tar, from kiln's arm64
//! kernel (pkg/kernel built for arm64) and Raspberry Pi firmware (pkg/rpi3-firmware), both
//! built from Debian's packages on this x86_64 machine.
//!
//! qemu's `raspi3b` machine does not run the Pi's GPU, so it cannot run the firmware on the card
//! (bootcode.bin and start.elf are VideoCore programs): qemu's own loader stands in for it,
//! given what the firmware would take from the card (`kernel8.img`, the board's device tree,
//! `initrd.img`, cmdline.txt). The system boots to its marker and powers off through the
//! Pi's watchdog. What the firmware itself reads is checked against the card's layout.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A system whose /init (busybox) says where it runs, loads the Pi's watchdog driver (which
/// powers the board off) and powers off.
fn pi_manifest() -> String {
    format!(
        r#"kernel:
  image: {kernel}
  cmdline: "console=ttyS0 quiet"
init:
  - {busybox}
files:
  - path: init
    mode: "0755"
    contents: |
      #!/bin/sh
      mount -t proc proc /proc
      mount -t sysfs sysfs /sys
      echo "RPI3-MARKER model=$(cat /proc/device-tree/model) uptime=$(cut -d' ' -f1 /proc/uptime) machine=$(uname -m)"
      echo "cmdline=$(cat /proc/cmdline)"
      modprobe bcm2835_wdt && echo "RPI3-WATCHDOG loaded"
      poweroff -f
"#,
        kernel = pkg_ref("kernel"),
        busybox = pkg_ref("busybox"),
    )
}

/// `kiln --arch arm64 build -f rpi3 --name pi` of `manifest` into `dir` (the packages, the
/// firmware's too, are built for arm64 on the way); returns DIR/pi.tar and the seconds the
/// build took.
fn build_card(cache: &Path, manifest: &Path, dir: &Path) -> (PathBuf, f64) {
    let start = std::time::Instant::now();
    run_ok(
        kiln()
            .args([
                "--arch",
                "arm64",
                "build",
                "-f",
                "rpi3",
                "--name",
                "pi",
                "--firmware",
            ])
            .arg(format!(
                "@pkg:{}",
                repo_root().join("pkg/rpi3-firmware").display()
            ))
            .arg("--cache")
            .arg(cache)
            .arg("--dir")
            .arg(dir)
            .arg(manifest)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    (dir.join("pi.tar"), start.elapsed().as_secs_f64())
}

/// Every member of the tar: name -> (is a regular file, data).
fn members(tar: &Path) -> BTreeMap<String, (bool, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar).expect("open the card"));
    let mut out = BTreeMap::new();
    for e in archive.entries().expect("a tar") {
        let mut e = e.expect("a member");
        let regular = e.header().entry_type() == tar::EntryType::Regular;
        let name = e.path().expect("a path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        out.insert(name, (regular, data));
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The shared store with what the arm64 builds need (the arm64 Debian base for busybox).
fn prerequisites(tools: &[&str]) -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipping: package builds need root");
        return None;
    }
    if !tools_present(tools) {
        return None;
    }
    Some(shared_store_arm64())
}

/// What the Raspberry Pi firmware reads from the card, checked as it reads it: bootcode.bin,
/// then start.elf (with its fixup.dat), which reads config.txt, loads the kernel it names in
/// 64-bit mode, the initrd after it and the board's device tree (by its mainline name), and
/// puts cmdline.txt into the device tree. Also: the card is reproducible, and an amd64 build
/// is refused.
#[test]
fn rpi3_card_holds_what_the_firmware_reads() {
    let Some(cache) = prerequisites(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("pi.yml");
    std::fs::write(&manifest, pi_manifest()).expect("manifest");
    let (card, seconds) = build_card(&cache, &manifest, &dir.path().join("a"));
    eprintln!("rpi3 build: {seconds:.1} s");
    let m = members(&card);
    let names: Vec<&str> = m.keys().map(String::as_str).collect();
    eprintln!("the card: {names:?}");

    // A FAT boot partition's root: plain files, no directories, links or special files.
    for (name, (regular, _)) in &m {
        assert!(
            *regular && !name.contains('/'),
            "{name}: not a plain top-level file"
        );
    }
    // The firmware: the ROM loads bootcode.bin, which loads start.elf, which needs its
    // fixup.dat; each other start*.elf has its fixup*.dat.
    for name in ["bootcode.bin", "start.elf", "fixup.dat", "LICENCE.broadcom"] {
        assert!(
            m.get(name).is_some_and(|(_, d)| !d.is_empty()),
            "no {name} in {names:?}"
        );
    }
    for start in names
        .iter()
        .filter(|n| n.starts_with("start") && n.ends_with(".elf"))
    {
        let fixup = start.replace("start", "fixup").replace(".elf", ".dat");
        assert!(m.contains_key(&fixup), "{start} without {fixup}");
    }
    // config.txt, as start.elf parses it: `key=value` and `initramfs FILE ADDRESS` lines.
    let config = String::from_utf8(m["config.txt"].1.clone()).expect("config.txt is text");
    let mut settings = BTreeMap::new();
    let mut initramfs = None;
    for line in config.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("initramfs ") {
            initramfs = Some(rest.split_whitespace().collect::<Vec<_>>());
        } else {
            let (k, v) = line.split_once('=').expect("key=value");
            settings.insert(k.to_string(), v.to_string());
        }
    }
    assert_eq!(
        settings.get("arm_64bit").map(String::as_str),
        Some("1"),
        "{config}"
    );
    assert_eq!(
        settings.get("upstream_kernel").map(String::as_str),
        Some("1")
    );
    assert_eq!(settings.get("enable_uart").map(String::as_str), Some("1"));
    // The kernel it names: an arm64 Image (header magic "ARM\x64" at 0x38, little-endian),
    // uncompressed as the firmware needs it.
    let kernel = &m[settings.get("kernel").expect("kernel=")].1;
    assert_eq!(&kernel[0x38..0x3c], b"ARM\x64", "not an arm64 Image");
    assert_eq!(kernel[0x18] & 1, 0, "a big-endian kernel");
    let image_size = u64::from_le_bytes(kernel[0x10..0x18].try_into().expect("8 bytes"));
    assert!(image_size >= kernel.len() as u64, "image_size {image_size}");
    // The initrd it names, placed after the kernel: a gzip newc archive with /init and the
    // kernel's modules, the Pi's and qemu virt's among them.
    let initramfs = initramfs.expect("an initramfs line");
    assert_eq!(initramfs.get(1), Some(&"followkernel"), "{initramfs:?}");
    let mut cpio = Vec::new();
    flate2::read::MultiGzDecoder::new(&m[initramfs[0]].1[..])
        .read_to_end(&mut cpio)
        .expect("a gzip initrd");
    assert!(cpio.starts_with(b"070701"), "not a newc archive");
    for path in [
        &b"\0init\0"[..],
        b"/kernel/drivers/watchdog/bcm2835_wdt.ko\0",
        b"/kernel/drivers/virtio/virtio_mmio.ko\0",
        b"/kernel/drivers/input/keyboard/gpio_keys.ko\0",
        b"/kernel/drivers/net/usb/smsc95xx.ko\0",
        b"/modules.dep\0",
    ] {
        assert!(
            contains(&cpio, path),
            "the initrd has no {}",
            String::from_utf8_lossy(path)
        );
    }
    assert!(
        !contains(&cpio, b"crc32c-intel.ko"),
        "an x86 module in an arm64 kernel"
    );
    // The device tree the firmware loads for a Pi 3 Model B under upstream_kernel=1: a
    // flattened device tree (magic d00dfeed) of that board.
    let dtb = &m["bcm2837-rpi-3-b.dtb"].1;
    assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed], "not a device tree");
    assert!(
        contains(dtb, b"raspberrypi,3-model-b\0"),
        "not the Pi 3 B's device tree"
    );
    // cmdline.txt: one line; the Pi's consoles, the serial one (the mini UART on the GPIO
    // header) last, so that it is /dev/console; the manifest's other arguments kept.
    let cmdline = String::from_utf8(m["cmdline.txt"].1.clone()).expect("text");
    assert_eq!(cmdline.lines().count(), 1, "{cmdline:?}");
    assert!(cmdline.ends_with("console=ttyS1,115200\n"), "{cmdline:?}");
    assert!(
        cmdline.contains("quiet") && !cmdline.contains("ttyS0"),
        "{cmdline:?}"
    );

    // The same system gives the same card.
    let (again, _) = build_card(&cache, &manifest, &dir.path().join("b"));
    let (one, two) = (
        std::fs::read(&card).expect("a"),
        std::fs::read(&again).expect("b"),
    );
    assert!(one == two, "two builds of the card differ");

    // A system for amd64 cannot go on a Pi: said before anything is built or written.
    let out = kiln()
        .args(["build", "-f", "rpi3", "--cache"])
        .arg(&cache)
        .arg("--dir")
        .arg(dir.path().join("amd64"))
        .arg(&manifest)
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--arch arm64"),
        "{err}"
    );
    assert!(!dir.path().join("amd64/pi.tar").exists());
}

/// Boot the card `tar` under qemu's Raspberry Pi 3 model as its firmware would start it: the
/// kernel, the board's device tree, the initrd and cmdline.txt's command line, the console on
/// the mini UART (qemu's second serial port). `-no-reboot`: the watchdog's reset, which is how
/// the Pi powers off, ends qemu; a system that does not power off is stopped after 300 s.
/// Returns the console, qemu having exited 0, and the cmdline.txt line.
fn boot_card(tar: &Path, dir: &Path) -> (String, String) {
    let m = members(tar);
    let card = dir.join("card");
    std::fs::create_dir_all(&card).expect("mkdir");
    for name in ["kernel8.img", "initrd.img", "bcm2837-rpi-3-b.dtb"] {
        std::fs::write(card.join(name), &m[name].1).expect("write");
    }
    let cmdline = String::from_utf8(m["cmdline.txt"].1.clone()).expect("text");
    let cmdline = cmdline.trim_end().to_string();
    let start = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["300", "qemu-system-aarch64", "-M", "raspi3b", "-kernel"])
        .arg(card.join("kernel8.img"))
        .arg("-dtb")
        .arg(card.join("bcm2837-rpi-3-b.dtb"))
        .arg("-initrd")
        .arg(card.join("initrd.img"))
        .args(["-append", &cmdline])
        .args(["-display", "none", "-monitor", "none", "-no-reboot"])
        .args(["-serial", "null", "-serial", "stdio"])
        .output()
        .expect("spawn qemu");
    let wall = start.elapsed().as_secs_f64();
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu: {:?} after {wall:.1} s (no power-off?):\n{console}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("raspi3b: qemu ran {wall:.1} s");
    (console, cmdline)
}

/// The card boots under qemu's Raspberry Pi 3 model to the system's marker and powers off
/// through the watchdog.
#[test]
fn rpi3_card_boots_under_qemu_raspi3b() {
    let Some(cache) = prerequisites(&["qemu-system-aarch64"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("pi.yml");
    std::fs::write(&manifest, pi_manifest()).expect("manifest");
    let (card, _) = build_card(&cache, &manifest, dir.path());
    let (console, cmdline) = boot_card(&card, dir.path());
    let marker = console
        .lines()
        .find(|l| l.contains("RPI3-MARKER"))
        .unwrap_or_else(|| panic!("no marker:\n{console}"));
    eprintln!("raspi3b: {marker}");
    assert!(marker.contains("model=Raspberry Pi 3 Model B"), "{marker}");
    assert!(marker.contains("machine=aarch64"), "{marker}");
    assert!(console.contains(&format!("cmdline={cmdline}")), "{console}");
    assert!(console.contains("RPI3-WATCHDOG loaded"), "{console}");
}

/// One manifest, a third machine: examples/hello.yml, the manifest the x86_64 tests boot, built
/// for arm64 as an rpi3 card, boots under qemu's Raspberry Pi 3 model to its greeting; kiln-init
/// loads the Pi's drivers for the devices present (the watchdog among them) and powers off.
#[test]
fn hello_boots_on_a_raspberry_pi_3_from_the_same_manifest() {
    let Some(cache) = prerequisites(&["qemu-system-aarch64", "aarch64-linux-gnu-gcc"]) else {
        return;
    };
    build_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let (card, seconds) = build_card(&cache, &repo_root().join("examples/hello.yml"), dir.path());
    eprintln!("hello rpi3 build: {seconds:.1} s");
    let (console, _) = boot_card(&card, dir.path());
    assert!(
        console.contains("hello: Hello from kiln, running Linux"),
        "no greeting:\n{console}"
    );
    assert!(
        console.contains("arm64"),
        "not the arm64 kernel:\n{console}"
    );
    assert!(
        console.contains("bcm2835_wdt"),
        "no watchdog driver:\n{console}"
    );
    assert!(
        console.contains("kiln-init: shutting down"),
        "no shutdown:\n{console}"
    );
}
