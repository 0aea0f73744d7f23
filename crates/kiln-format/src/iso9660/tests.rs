use super::*;
use std::process::Command;

/// A stand-in for the ESP image (the structure checks do not read it).
fn fat_image() -> Vec<u8> {
    pseudo_random(1 << 20, 5)
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Sample {
    dir: tempfile::TempDir,
    kernel: Vec<u8>,
    builder: IsoBuilder,
}

fn sample() -> Sample {
    let dir = tempfile::tempdir().unwrap();
    let kernel = pseudo_random(300_001, 7);
    let kpath = dir.path().join("kernel");
    std::fs::write(&kpath, &kernel).unwrap();
    let mut b = IsoBuilder::new("KILN_TEST", 1_700_000_000).unwrap();
    b.add_file("boot/kernel", FileSource::host(&kpath, kernel.len() as u64))
        .unwrap();
    b.add_file("boot/initrd.img", FileSource::Bytes(pseudo_random(5000, 3)))
        .unwrap();
    b.add_file(
        "boot/grub/i386-pc/eltorito.img",
        FileSource::Bytes(pseudo_random(6000, 11)),
    )
    .unwrap();
    b.add_file("boot/efi.img", FileSource::Bytes(fat_image()))
        .unwrap();
    b.add_file(
        "boot/grub/grub.cfg",
        FileSource::Bytes(b"linux /boot/kernel\n".to_vec()),
    )
    .unwrap();
    b.add_file("EFI/BOOT/BOOTX64.EFI", FileSource::Bytes(b"MZ".to_vec()))
        .unwrap();
    b.add_file("etc/empty", FileSource::Bytes(Vec::new()))
        .unwrap();
    b.add_file("etc/README", FileSource::Bytes(b"upper".to_vec()))
        .unwrap();
    b.add_file("etc/readme", FileSource::Bytes(b"lower".to_vec()))
        .unwrap();
    b.add_file(
        &format!("etc/{}", "long-name.".repeat(25)),
        FileSource::Bytes(b"long".to_vec()),
    )
    .unwrap();
    b.add_dir("var/lib/empty-dir").unwrap();
    b.set_bios_boot(BiosBoot::grub("boot/grub/i386-pc/eltorito.img"));
    b.set_efi_boot(EfiBoot::new("boot/efi.img"));
    let mut code = vec![0xfa; 440];
    code[0] = 0xeb;
    b.set_hybrid(HybridMbr::grub(code));
    Sample {
        dir,
        kernel,
        builder: b,
    }
}

fn write_iso(s: &Sample) -> std::path::PathBuf {
    let path = s.dir.path().join("test.iso");
    let mut f = std::fs::File::create(&path).unwrap();
    s.builder.write(&mut f).unwrap();
    path
}

/// Output of `tool args`, or None (outside CI) when the tool is missing.
fn run(tool: &str, args: &[&str]) -> Option<String> {
    match Command::new(tool).args(args).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(o.status.success(), "{tool} {args:?} failed:\n{text}");
            Some(text)
        }
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI needs {tool}: {e}");
            eprintln!("skipped: {tool} is not installed ({e})");
            None
        }
    }
}

fn lba(s: &Sample, path: &str) -> u32 {
    s.builder.layout().unwrap().files[path].0
}

fn iso_bytes(s: &Sample) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = s.builder.write(&mut out).unwrap();
    assert_eq!(summary.bytes, out.len() as u64);
    assert_eq!(summary.bytes, s.builder.layout().unwrap().bytes());
    out
}

#[test]
fn xorriso_reports_both_boot_entries_and_the_hybrid_mbr() {
    let s = sample();
    let iso = write_iso(&s);
    let p = iso.to_str().unwrap();
    let Some(out) = run(
        "xorriso",
        &[
            "-indev",
            p,
            "-report_el_torito",
            "plain",
            "-report_system_area",
            "plain",
        ],
    ) else {
        return;
    };
    let (bios, efi) = (
        lba(&s, "boot/grub/i386-pc/eltorito.img"),
        lba(&s, "boot/efi.img"),
    );
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let sectors = s.builder.layout().unwrap().sectors * 4;
    for want in [
        format!("El Torito boot img : 1 BIOS y none 0x0000 0x00 4 {bios}"),
        format!("El Torito boot img : 2 UEFI y none 0x0000 0x00 2048 {efi}"),
        "El Torito img path : 1 /boot/grub/i386-pc/eltorito.img".to_string(),
        "El Torito img opts : 1 boot-info-table grub2-boot-info".to_string(),
        "El Torito img path : 2 /boot/efi.img".to_string(),
        "System area summary: MBR grub2-mbr cyl-align-off".to_string(),
        format!("MBR partition : 1 0x80 0x00 0 {sectors}"),
        format!("MBR partition : 2 0x00 0xef {} 2048", efi * 4),
        "MBR partition path : 2 /boot/efi.img".to_string(),
    ] {
        assert!(lines.contains(&want), "no {want:?} in:\n{out}");
    }
}

#[test]
fn efi_only_image_has_an_efi_default_entry() {
    let mut s = sample();
    s.builder.bios = None;
    s.builder.hybrid = None;
    let iso = write_iso(&s);
    let Some(out) = run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ],
    ) else {
        return;
    };
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let want = format!(
        "El Torito boot img : 1 UEFI y none 0x0000 0x00 2048 {}",
        lba(&s, "boot/efi.img")
    );
    assert!(lines.contains(&want), "no {want:?} in:\n{out}");
    assert!(!out.contains("BIOS"), "{out}");
}

#[test]
fn isoinfo_sees_rock_ridge_names_and_the_volume() {
    let s = sample();
    let iso = write_iso(&s);
    let p = iso.to_str().unwrap();
    let Some(listing) = run("isoinfo", &["-R", "-l", "-i", p]) else {
        return;
    };
    let long = "long-name.".repeat(25);
    for name in [
        " kernel ",
        " initrd.img ",
        " eltorito.img ",
        " grub.cfg ",
        " BOOTX64.EFI ",
        " README ",
        " readme ",
        " empty ",
        " empty-dir ",
        &format!(" {long} "),
    ] {
        assert!(
            listing.lines().any(|l| format!("{l} ").contains(name)),
            "{name:?} not in:\n{listing}"
        );
    }
    assert!(
        listing.contains("Directory listing of /boot/grub/i386-pc/"),
        "{listing}"
    );
    let Some(desc) = run("isoinfo", &["-d", "-i", p]) else {
        return;
    };
    for want in [
        "Volume id: KILN_TEST",
        "Rock Ridge signatures version 1 found",
        "El Torito VD version 1 found",
        "Nsect 4",
    ] {
        assert!(desc.contains(want), "{want:?} not in:\n{desc}");
    }
    // Without Rock Ridge, the names are ISO 9660 level 1, unique per directory.
    let Some(plain) = run("isoinfo", &["-l", "-i", p]) else {
        return;
    };
    for want in [
        "KERNEL.;1",
        "INITRD.IMG;1",
        "README.;1",
        "README1.;1",
        "GRUB.CFG;1",
    ] {
        assert!(plain.contains(want), "{want:?} not in:\n{plain}");
    }
}

#[test]
fn xorriso_extracts_files_unchanged() {
    let s = sample();
    let iso = write_iso(&s);
    let long = format!("etc/{}", "long-name.".repeat(25));
    for (path, want) in [
        ("boot/kernel", s.kernel.clone()),
        ("boot/efi.img", fat_image()),
        (long.as_str(), b"long".to_vec()),
        ("etc/readme", b"lower".to_vec()),
        ("etc/README", b"upper".to_vec()),
    ] {
        let out = s.dir.path().join("extracted");
        let _ = std::fs::remove_file(&out);
        let Some(_) = run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                iso.to_str().unwrap(),
                "-extract",
                &format!("/{path}"),
                out.to_str().unwrap(),
            ],
        ) else {
            return;
        };
        assert!(std::fs::read(&out).unwrap() == want, "{path} differs");
    }
}

#[test]
fn fdisk_lists_the_hybrid_partitions() {
    let s = sample();
    let iso = write_iso(&s);
    let Some(out) = run("fdisk", &["-l", iso.to_str().unwrap()]) else {
        return;
    };
    let efi = lba(&s, "boot/efi.img") * 4;
    let sectors = s.builder.layout().unwrap().sectors * 4;
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let p = iso.to_str().unwrap();
    // Device, boot flag, start, end, sectors, (size), id, type.
    for (start, end) in [
        (format!("{p}1 * 0 {} {sectors} ", sectors - 1), " 0 Empty"),
        (
            format!("{p}2 {efi} {} 2048 ", efi + 2047),
            " ef EFI (FAT-12/16/32)",
        ),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&start) && l.ends_with(end)),
            "no {start:?}...{end:?} in:\n{out}"
        );
    }
    assert!(lines.iter().any(|l| l == "Disklabel type: dos"), "{out}");
}

#[test]
fn two_builds_are_identical_and_depend_on_mtime() {
    let s = sample();
    let a = iso_bytes(&s);
    assert_eq!(a, iso_bytes(&sample()));
    let mut t = sample();
    t.builder.mtime += 1;
    assert_ne!(a, iso_bytes(&t));
}

#[test]
fn boot_image_and_mbr_are_patched() {
    let s = sample();
    let iso = iso_bytes(&s);
    let l = lba(&s, "boot/grub/i386-pc/eltorito.img");
    let img = &iso[l as usize * 2048..l as usize * 2048 + 6000];
    let orig = pseudo_random(6000, 11);
    let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert_eq!(word(img, 8), 16, "boot info table: PVD LBA");
    assert_eq!(word(img, 12), l, "boot info table: image LBA");
    assert_eq!(word(img, 16), 6000, "boot info table: length");
    let sum = img[64..]
        .chunks(4)
        .fold(0u32, |s, c| s.wrapping_add(word(&[c, &[0; 4]].concat(), 0)));
    assert_eq!(word(img, 20), sum, "boot info table: checksum");
    assert!(img[24..64].iter().all(|&b| b == 0));
    let grub = u64::from_le_bytes(img[2548..2556].try_into().unwrap());
    assert_eq!(grub, u64::from(l) * 4 + 5);
    assert_eq!(img[..8], orig[..8]);
    assert_eq!(img[64..2548], orig[64..2548]);
    assert_eq!(img[2556..], orig[2556..]);
    let mbr = u64::from_le_bytes(iso[0x1b0..0x1b8].try_into().unwrap());
    assert_eq!(mbr, u64::from(l) * 4 + 4);
    assert_eq!(iso[0], 0xeb);
    assert_eq!(iso[510..512], [0x55, 0xaa]);
    // 300 KiB of zeros after the last file: GRUB's 32 KiB reads on a CD must not pass the end.
    let layout = s.builder.layout().unwrap();
    let data_end = layout
        .files
        .values()
        .map(|&(l, n)| u64::from(l) * 2048 + n)
        .max()
        .unwrap();
    assert!(layout.bytes() - data_end >= 150 * 2048);
    assert!(iso[data_end as usize..].iter().all(|&b| b == 0));
    // The catalog's validation entry sums to zero.
    let cat = s.builder.layout().unwrap().catalog.unwrap() as usize * 2048;
    let sum = iso[cat..cat + 32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    assert_eq!(sum, 0);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let mut b = IsoBuilder::new("X", 0).unwrap();
    b.add_file("a/b", FileSource::Bytes(vec![1])).unwrap();
    assert!(matches!(
        b.add_file("a/b", FileSource::Bytes(vec![])),
        Err(IsoError::Duplicate { .. })
    ));
    assert!(matches!(
        b.add_file("a/b/c", FileSource::Bytes(vec![])),
        Err(IsoError::NotADirectory { .. })
    ));
    assert!(matches!(
        b.add_dir("a/../c"),
        Err(IsoError::InvalidPath { .. })
    ));
    assert!(matches!(
        b.add_file(&"x".repeat(256), FileSource::Bytes(vec![])),
        Err(IsoError::InvalidPath { .. })
    ));
    assert!(matches!(
        b.add_file("big", FileSource::host("/nonexistent", 1 << 32)),
        Err(IsoError::FileTooLarge { .. })
    ));
    assert!(IsoBuilder::new(&"V".repeat(33), 0).is_err());
    assert!(IsoBuilder::new("tab\there", 0).is_err());

    b.set_efi_boot(EfiBoot::new("efi.img"));
    assert!(matches!(
        b.write(&mut Vec::new()),
        Err(IsoError::MissingBootImage { .. })
    ));
    b.efi = None;
    b.set_hybrid(HybridMbr::grub(vec![0; 440]));
    assert!(matches!(b.write(&mut Vec::new()), Err(IsoError::Hybrid(_))));
    b.set_hybrid(HybridMbr {
        boot_code: vec![0; 446],
        grub2_patch: false,
    });
    assert!(matches!(b.write(&mut Vec::new()), Err(IsoError::Hybrid(_))));
    b.hybrid = None;
    b.set_bios_boot(BiosBoot::grub("a/b"));
    let err = b.write(&mut Vec::new()).unwrap_err();
    assert!(matches!(err, IsoError::BootImageSize { .. }), "{err}");
    b.bios = None;

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"abc").unwrap();
    b.add_file("short", FileSource::host(&short, 10)).unwrap();
    let err = b.write(&mut Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            IsoError::ShortFile {
                got: 3,
                len: 10,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn names_and_dates() {
    use super::records::{civil, iso_name};
    let mut taken = std::collections::BTreeSet::new();
    assert_eq!(iso_name("initrd.img", false, &mut taken), "INITRD.IMG");
    assert_eq!(iso_name("INITRD.img", false, &mut taken), "INITRD1.IMG");
    assert_eq!(
        iso_name("very-long-name.tar.gz", false, &mut taken),
        "VERY_LON.GZ"
    );
    assert_eq!(
        iso_name("very-long-name2.gz", false, &mut taken),
        "VERY_LO1.GZ"
    );
    assert_eq!(iso_name(".hidden", false, &mut taken), "_HIDDEN.");
    assert_eq!(iso_name("Makefile", false, &mut taken), "MAKEFILE.");
    assert_eq!(iso_name("some.dir", true, &mut taken), "SOME_DIR");
    assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
    assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
    assert_eq!(civil(4_102_444_799), (2099, 12, 31, 23, 59, 59));
}

#[test]
fn many_entries_span_sectors_and_continuation_areas() {
    // Enough long names that directories and continuation areas take several sectors.
    let mut b = IsoBuilder::new("MANY", 5).unwrap();
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("{i:03}-{}", "n".repeat(200 + i % 50));
        b.add_file(&format!("d/{name}"), FileSource::Bytes(vec![i as u8; i]))
            .unwrap();
        names.push(name);
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("many.iso");
    b.write(&mut std::fs::File::create(&iso).unwrap()).unwrap();
    let Some(listing) = run("isoinfo", &["-R", "-l", "-i", iso.to_str().unwrap()]) else {
        return;
    };
    for name in &names {
        assert!(listing.contains(&format!(" {name} ")), "{name} not listed");
    }
    let out = dir.path().join("x");
    let Some(_) = run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso.to_str().unwrap(),
            "-extract",
            &format!("/d/{}", names[299]),
            out.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    assert_eq!(std::fs::read(&out).unwrap(), vec![(299 % 256) as u8; 299]);
}
