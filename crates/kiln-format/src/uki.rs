//! Unified Kernel Images: the systemd-boot EFI stub (`linuxx64.efi.stub` or, for arm64,
//! `linuxaa64.efi.stub` of Debian's `systemd-boot-efi`) with the kernel, initrd, command line
//! and os-release appended as PE sections, one file any UEFI firmware of the stub's
//! architecture boots ([`pe_machine`] says which that is).
//!
//! [`write_uki`] parses the stub's PE32+ headers, checks it (PE magic, PE32+, unsigned, room
//! for the new section headers), appends `.osrel`, `.cmdline`, optionally `.uname`, `.initrd`
//! and `.linux` in the order systemd's `ukify` uses, each at the next file offset aligned to
//! FileAlignment and the next virtual address aligned to SectionAlignment (and a 4 KiB page),
//! and updates NumberOfSections, SizeOfInitializedData, SizeOfImage and the PE CheckSum. The
//! kernel and initrd stream from their files; only the stub's headers are held in memory.
//! This module does not obtain the stub (it comes from a kiln package) and does not sign.
//!
//! ```no_run
//! use kiln_format::fat::Source;
//! use kiln_format::uki::{self, UkiSections};
//! let sections = UkiSections {
//!     osrel: Source::Bytes(b"ID=kiln\n".to_vec()),
//!     cmdline: Source::Bytes(b"console=ttyS0".to_vec()),
//!     uname: None,
//!     initrd: vec![Source::File("initrd.img".into())],
//!     linux: Source::File("vmlinuz".into()),
//! };
//! let stub = Source::File("linuxx64.efi.stub".into());
//! let mut out = std::fs::File::create("linux.efi")?;
//! uki::write_uki(&mut out, &stub, &sections)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use crate::fat::{FatError, Source};

/// The largest stub read: 16 MiB (systemd's is under 200 KiB).
const MAX_STUB: u64 = 16 << 20;
const SECTION_HEADER: usize = 40;
const IMAGE_SCN_CNT_CODE: u32 = 0x0000_0020;
const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
/// Sections start at page-aligned virtual addresses at least.
const PAGE: u32 = 4096;

/// Errors building a UKI.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    /// The stub is not a usable EFI stub.
    #[error("EFI stub {stub}: {reason}")]
    Stub {
        /// Where the stub came from.
        stub: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A section's content could not be read.
    #[error(transparent)]
    Source(#[from] FatError),
    /// A section's content changed length while it was copied.
    #[error(
        "{section}: read {copied} bytes from {source_desc}, expected {expected}; was it modified during the build?"
    )]
    Changed {
        /// The section.
        section: String,
        /// The source.
        source_desc: String,
        /// Bytes read.
        copied: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The image would exceed what PE32+ addresses.
    #[error("the UKI would be {0} bytes; PE images are limited to 4 GiB: use a smaller initrd")]
    TooLarge(u64),
    /// Writing the output failed.
    #[error("writing the UKI: {0}")]
    Io(#[from] io::Error),
}

/// The contents appended to the stub.
#[derive(Debug, Clone)]
pub struct UkiSections {
    /// `.osrel`: an os-release file.
    pub osrel: Source,
    /// `.cmdline`: the kernel command line.
    pub cmdline: Source,
    /// `.uname`: the kernel release (`uname -r`), optional.
    pub uname: Option<Source>,
    /// `.initrd`: initrds, concatenated in this order (the kernel reads concatenated cpio
    /// archives, compressed or not). May be empty.
    pub initrd: Vec<Source>,
    /// `.linux`: the kernel with its EFI stub (an x86 bzImage, an arm64 `Image`).
    pub linux: Source,
}

/// Where a section was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedSection {
    /// Section name, e.g. ".linux".
    pub name: String,
    /// Virtual address (relative to the image base).
    pub virtual_address: u32,
    /// Size in memory.
    pub virtual_size: u32,
    /// Offset in the file.
    pub file_offset: u32,
    /// Bytes of content.
    pub len: u64,
}

/// What [`write_uki`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiLayout {
    /// The appended sections, in file order.
    pub sections: Vec<PlacedSection>,
    /// Total bytes written.
    pub size: u64,
    /// The PE CheckSum stored.
    pub checksum: u32,
}

/// The machine type of the PE image whose first bytes are `b` (0x8664 for x86-64, 0xaa64 for
/// arm64); `None` when `b` does not start with PE headers.
pub fn pe_machine(b: &[u8]) -> Option<u16> {
    if b.get(..2) != Some(b"MZ") {
        return None;
    }
    let pe = usize::try_from(u32_at(b, 0x3c)?).ok()?;
    if b.get(pe..pe.checked_add(4)?) != Some(b"PE\0\0") {
        return None;
    }
    u16_at(b, pe + 4)
}

/// Whether `b`, the bytes at offset `at` after the section table of a PE image for `machine`,
/// hold nothing: zeros or, in an arm64 image, the AArch64 NOPs (`d503201f`) with which the
/// assembler pads the hand-written headers of gnu-efi's arm64 programs (systemd's
/// `linuxaa64.efi.stub`, whose code starts at the next page).
fn unused_header_space(machine: u16, b: &[u8], at: usize) -> bool {
    const AARCH64_NOP: [u8; 4] = 0xd503_201f_u32.to_le_bytes();
    b.iter().all(|&x| x == 0)
        || (machine == 0xaa64
            && at.is_multiple_of(4)
            && b.len().is_multiple_of(4)
            && b.chunks(4).all(|w| w == AARCH64_NOP))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// The parsed headers of a PE32+ image.
#[derive(Debug)]
struct Pe {
    /// Offset of the COFF file header (after "PE\0\0").
    coff: usize,
    /// Offset of the optional header.
    opt: usize,
    sections: usize,
    section_table: usize,
    section_alignment: u32,
    file_alignment: u32,
    size_of_headers: u32,
    size_of_image: u32,
}

impl Pe {
    const NUMBER_OF_SECTIONS: usize = 2;
    const SIZE_OF_INITIALIZED_DATA: usize = 8;
    const SIZE_OF_IMAGE: usize = 56;
    const SIZE_OF_HEADERS: usize = 60;
    const CHECKSUM: usize = 64;

    /// Parses `b` (at least the headers of a file) or says what is wrong.
    fn parse(b: &[u8]) -> Result<Pe, String> {
        if b.get(..2) != Some(b"MZ") {
            return Err("no MZ signature: not a PE image".into());
        }
        let pe = u32_at(b, 0x3c).ok_or("truncated DOS header")? as usize;
        if b.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err("no PE signature at e_lfanew: not a PE image".into());
        }
        let coff = pe + 4;
        let sections = u16_at(b, coff + 2).ok_or("truncated COFF header")? as usize;
        let opt_size = u16_at(b, coff + 16).ok_or("truncated COFF header")? as usize;
        let opt = coff + 20;
        let magic = u16_at(b, opt).ok_or("truncated optional header")?;
        if magic != 0x20b {
            return Err(format!(
                "optional header magic {magic:#x}: not PE32+ (0x20b); use systemd's stub for \
                 the system's architecture"
            ));
        }
        if opt_size < 112 {
            return Err(format!(
                "optional header of {opt_size} bytes is too short for PE32+"
            ));
        }
        let field = |at: usize| u32_at(b, opt + at).ok_or("truncated optional header");
        let section_alignment = field(32)?;
        let file_alignment = field(36)?;
        let size_of_image = field(Pe::SIZE_OF_IMAGE)?;
        let size_of_headers = field(Pe::SIZE_OF_HEADERS)?;
        if !section_alignment.is_power_of_two() || !file_alignment.is_power_of_two() {
            return Err(format!(
                "alignments {section_alignment:#x}/{file_alignment:#x} are not powers of two"
            ));
        }
        let section_table = opt + opt_size;
        if b.len() < section_table + sections * SECTION_HEADER {
            return Err("truncated section table".into());
        }
        Ok(Pe {
            coff,
            opt,
            sections,
            section_table,
            section_alignment,
            file_alignment,
            size_of_headers,
            size_of_image,
        })
    }

    fn section(&self, b: &[u8], i: usize) -> Section {
        let at = self.section_table + i * SECTION_HEADER;
        let name = String::from_utf8_lossy(&b[at..at + 8])
            .trim_end_matches('\0')
            .to_string();
        let f = |o: usize| u32_at(b, at + o).unwrap_or(0);
        Section {
            name,
            virtual_size: f(8),
            virtual_address: f(12),
            raw_size: f(16),
            raw_offset: f(20),
        }
    }

    /// The security (signature) directory's size, 0 when absent.
    fn security_size(&self, b: &[u8]) -> u32 {
        let count = u32_at(b, self.opt + 108).unwrap_or(0);
        if count <= 4 {
            return 0;
        }
        u32_at(b, self.opt + 112 + 4 * 8 + 4).unwrap_or(0)
    }
}

#[derive(Debug)]
struct Section {
    name: String,
    virtual_size: u32,
    virtual_address: u32,
    raw_size: u32,
    raw_offset: u32,
}

/// The PE image checksum as the Windows loader and `ImageHlp` compute it: the 16-bit one's
/// complement style sum of the file's little-endian words (with the CheckSum field counted
/// as zero) plus the file length.
#[derive(Debug, Default)]
struct Checksum {
    sum: u64,
    len: u64,
    /// A pending low byte when the data so far has odd length.
    odd: Option<u8>,
}

impl Checksum {
    fn word(&mut self, w: u16) {
        self.sum += u64::from(w);
        self.sum = (self.sum & 0xffff) + (self.sum >> 16);
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if let Some(lo) = self.odd.take() {
            let Some((&hi, rest)) = data.split_first() else {
                self.odd = Some(lo);
                return;
            };
            self.word(u16::from_le_bytes([lo, hi]));
            data = rest;
        }
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            self.word(u16::from_le_bytes([c[0], c[1]]));
        }
        if let [b] = chunks.remainder() {
            self.odd = Some(*b);
        }
    }

    fn finish(mut self) -> u32 {
        if let Some(lo) = self.odd.take() {
            self.word(u16::from(lo));
        }
        let folded = ((self.sum & 0xffff) + (self.sum >> 16)) & 0xffff;
        // The sum is taken modulo 2^32, as the 32-bit reference implementation does.
        u32::try_from((folded + self.len) & 0xffff_ffff).unwrap_or(0)
    }
}

/// A writer that feeds a [`Checksum`].
struct Summing<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `SizeOfImage` from a kernel's PE header (what it needs in memory, BSS included), if it has
/// one.
fn pe_size_of_image(source: &Source) -> Result<Option<u32>, UkiError> {
    let mut head = Vec::with_capacity(4096);
    source
        .open()?
        .take(4096)
        .read_to_end(&mut head)
        .map_err(|e| {
            UkiError::Source(FatError::Source {
                path: source.describe().into(),
                source: e,
            })
        })?;
    Ok(Pe::parse(&head)
        .ok()
        .and_then(|pe| u32_at(&head, pe.opt + Pe::SIZE_OF_IMAGE)))
}

fn zeros(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    static Z: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = usize::try_from(n).map_or(Z.len(), |n| n.min(Z.len()));
        out.write_all(&Z[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Writes a UKI to `out` (from its current start, position 0): the stub with the sections
/// appended. Fails with a message naming the problem if the stub is not a PE32+ image, is
/// signed, already carries a section that would be added, or lacks header room.
pub fn write_uki<W: Write + Seek>(
    out: &mut W,
    stub: &Source,
    sections: &UkiSections,
) -> Result<UkiLayout, UkiError> {
    let stub_name = stub.describe();
    let bad = |reason: String| UkiError::Stub {
        stub: stub_name.clone(),
        reason,
    };
    let stub_len = stub.len()?;
    if stub_len > MAX_STUB {
        return Err(bad(format!("{stub_len} bytes: too large for an EFI stub")));
    }
    let mut image = Vec::with_capacity(usize::try_from(stub_len).unwrap_or(0));
    stub.open()?
        .take(MAX_STUB)
        .read_to_end(&mut image)
        .map_err(|e| {
            UkiError::Source(FatError::Source {
                path: stub_name.clone().into(),
                source: e,
            })
        })?;
    let pe = Pe::parse(&image).map_err(bad)?;
    if pe.security_size(&image) != 0 {
        return Err(bad(
            "it is signed; appending sections would break the signature: use an \
                        unsigned stub and sign the UKI afterwards"
                .into(),
        ));
    }
    let existing: Vec<Section> = (0..pe.sections).map(|i| pe.section(&image, i)).collect();

    // The sections to add: (name, sources, virtual size override, characteristics).
    let mut add: Vec<(&str, Vec<&Source>, u32)> = vec![
        (
            ".osrel",
            vec![&sections.osrel],
            IMAGE_SCN_CNT_INITIALIZED_DATA,
        ),
        (
            ".cmdline",
            vec![&sections.cmdline],
            IMAGE_SCN_CNT_INITIALIZED_DATA,
        ),
    ];
    if let Some(u) = &sections.uname {
        add.push((".uname", vec![u], IMAGE_SCN_CNT_INITIALIZED_DATA));
    }
    if !sections.initrd.is_empty() {
        add.push((
            ".initrd",
            sections.initrd.iter().collect(),
            IMAGE_SCN_CNT_INITIALIZED_DATA,
        ));
    }
    // Old kernels entered through the EFI handover protocol run in place: code.
    add.push((".linux", vec![&sections.linux], IMAGE_SCN_CNT_CODE));
    for (name, _, _) in &add {
        if existing.iter().any(|s| s.name == *name) {
            return Err(bad(format!(
                "it already has a {name} section: give the bare stub, not a UKI"
            )));
        }
    }

    // Room for the new section headers before the first section's data.
    let table_end = pe.section_table + pe.sections * SECTION_HEADER;
    let need = table_end + add.len() * SECTION_HEADER;
    let first_data = existing
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(image.len());
    let mut size_of_headers = pe.size_of_headers;
    if need > size_of_headers as usize {
        // The space up to the first section's (aligned) data is unused; claim it.
        let grown = align(u64::from(size_of_headers), u64::from(pe.file_alignment));
        if let (Ok(grown), Ok(grown_at)) = (u32::try_from(grown), usize::try_from(grown))
            && need <= grown_at
            && grown_at <= first_data
        {
            size_of_headers = grown;
        }
    }
    if need > size_of_headers as usize || need > first_data {
        return Err(bad(format!(
            "no room for {} more section headers (headers end at {table_end:#x}, \
             SizeOfHeaders is {size_of_headers:#x}): use systemd's stub \
             (linuxx64.efi.stub, linuxaa64.efi.stub)",
            add.len()
        )));
    }
    let machine = u16_at(&image, pe.coff).unwrap_or(0);
    if !unused_header_space(machine, &image[table_end..need], table_end) {
        return Err(bad("the space after the section table is not empty".into()));
    }

    // Place the new sections.
    let file_align = u64::from(pe.file_alignment);
    let va_align = u64::from(pe.section_alignment.max(PAGE));
    let mut va_end = u64::from(pe.size_of_image);
    for s in &existing {
        va_end = va_end.max(u64::from(s.virtual_address) + u64::from(s.virtual_size));
    }
    let mut offset = align(image.len() as u64, file_align);
    let mut placed = Vec::with_capacity(add.len());
    let mut initialized_data =
        u64::from(u32_at(&image, pe.opt + Pe::SIZE_OF_INITIALIZED_DATA).unwrap_or(0));
    for (i, (name, sources, flags)) in add.iter().enumerate() {
        let mut len = 0u64;
        for s in sources {
            len += s.len()?;
        }
        let mut vsize = len;
        if *name == ".linux"
            && let Some(image_size) = pe_size_of_image(sources[0])?
        {
            // The kernel's own SizeOfImage covers its BSS, as ukify records it.
            vsize = vsize.max(u64::from(image_size));
        }
        let va = align(va_end, va_align);
        let raw = align(len, file_align);
        let too_large = |v: u64| u32::try_from(v).map_err(|_| UkiError::TooLarge(v));
        let header = pe.section_table + (pe.sections + i) * SECTION_HEADER;
        let h = &mut image[header..header + SECTION_HEADER];
        // Over zeros or padding: every field the header does not set is zero.
        h.fill(0);
        h[..name.len()].copy_from_slice(name.as_bytes());
        put_u32(h, 8, too_large(vsize)?);
        put_u32(h, 12, too_large(va)?);
        put_u32(h, 16, too_large(raw)?);
        put_u32(h, 20, too_large(offset)?);
        put_u32(h, 36, IMAGE_SCN_MEM_READ | flags);
        placed.push(PlacedSection {
            name: name.to_string(),
            virtual_address: too_large(va)?,
            virtual_size: too_large(vsize)?,
            file_offset: too_large(offset)?,
            len,
        });
        initialized_data += vsize;
        va_end = va + vsize;
        offset += raw;
    }
    let total = offset;
    let too_large = |v: u64| u32::try_from(v).map_err(|_| UkiError::TooLarge(v));
    let size_of_image = too_large(align(va_end, u64::from(pe.section_alignment)))?;
    too_large(total)?;
    let sections_count =
        u16::try_from(pe.sections + add.len()).map_err(|_| bad("too many sections".into()))?;
    put_u16(&mut image, pe.coff + Pe::NUMBER_OF_SECTIONS, sections_count);
    put_u32(
        &mut image,
        pe.opt + Pe::SIZE_OF_INITIALIZED_DATA,
        too_large(initialized_data)?,
    );
    put_u32(&mut image, pe.opt + Pe::SIZE_OF_IMAGE, size_of_image);
    put_u32(&mut image, pe.opt + Pe::SIZE_OF_HEADERS, size_of_headers);
    put_u32(&mut image, pe.opt + Pe::CHECKSUM, 0);

    out.seek(SeekFrom::Start(0))?;
    let checksum = write_body(&mut *out, &image, &placed, &add, total)?;
    out.seek(SeekFrom::Start((pe.opt + Pe::CHECKSUM) as u64))?;
    out.write_all(&checksum.to_le_bytes())?;
    out.seek(SeekFrom::Start(total))?;
    out.flush()?;
    Ok(UkiLayout {
        sections: placed,
        size: total,
        checksum,
    })
}

/// Writes the headers and the sections' contents; returns the PE checksum of what it wrote.
fn write_body(
    out: &mut impl Write,
    image: &[u8],
    placed: &[PlacedSection],
    add: &[(&str, Vec<&Source>, u32)],
    total: u64,
) -> Result<u32, UkiError> {
    let mut w = Summing {
        inner: BufWriter::with_capacity(1 << 20, out),
        sum: Checksum::default(),
    };
    w.write_all(image)?;
    let mut at = image.len() as u64;
    let mut buf = vec![0u8; 256 << 10];
    for (p, (name, sources, _)) in placed.iter().zip(add) {
        zeros(&mut w, u64::from(p.file_offset) - at)?;
        let mut copied = 0u64;
        for s in sources {
            let mut r = s.open()?;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(UkiError::Source(FatError::Source {
                            path: s.describe().into(),
                            source: e,
                        }));
                    }
                };
                if copied + n as u64 > p.len {
                    break;
                }
                w.write_all(&buf[..n])?;
                copied += n as u64;
            }
        }
        if copied != p.len {
            return Err(UkiError::Changed {
                section: name.to_string(),
                source_desc: sources
                    .iter()
                    .map(|s| s.describe())
                    .collect::<Vec<_>>()
                    .join(", "),
                copied,
                expected: p.len,
            });
        }
        at = u64::from(p.file_offset) + p.len;
    }
    zeros(&mut w, total - at)?;
    w.flush()?;
    Ok(w.sum.finish())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test images are small
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The systemd stub: `KILN_TEST_EFI_STUB`, else Debian's path on the host.
    fn stub_path() -> Option<PathBuf> {
        let p = std::env::var_os("KILN_TEST_EFI_STUB")
            .map_or_else(|| PathBuf::from(STUB), PathBuf::from);
        if p.is_file() {
            Some(p)
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs the EFI stub at {}: run scripts/install-deps.sh",
                p.display()
            );
            eprintln!(
                "skipping: no EFI stub at {} (install systemd-boot-efi or set KILN_TEST_EFI_STUB)",
                p.display()
            );
            None
        }
    }

    /// A minimal PE32+ image (with `magic`): one .text section whose data is at 0x400.
    pub(crate) fn tiny_pe(magic: u16, size_of_headers: u32) -> Vec<u8> {
        let mut b = vec![0u8; 0x600];
        b[..2].copy_from_slice(b"MZ");
        put_u32(&mut b, 0x3c, 0x80);
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        put_u16(&mut b, coff, 0x8664);
        put_u16(&mut b, coff + 2, 1);
        put_u16(&mut b, coff + 16, 240);
        put_u16(&mut b, coff + 18, 0x0206);
        let opt = coff + 20;
        put_u16(&mut b, opt, magic);
        put_u32(&mut b, opt + 16, 0x1000); // entry point
        put_u32(&mut b, opt + 32, 0x1000); // SectionAlignment
        put_u32(&mut b, opt + 36, 0x200); // FileAlignment
        put_u32(&mut b, opt + 56, 0x2000); // SizeOfImage
        put_u32(&mut b, opt + 60, size_of_headers);
        put_u16(&mut b, opt + 68, 10); // EFI application
        put_u32(&mut b, opt + 108, 16);
        let sec = opt + 240;
        b[sec..sec + 5].copy_from_slice(b".text");
        put_u32(&mut b, sec + 8, 0x10);
        put_u32(&mut b, sec + 12, 0x1000);
        put_u32(&mut b, sec + 16, 0x200);
        put_u32(&mut b, sec + 20, 0x400);
        put_u32(&mut b, sec + 36, 0x6000_0020);
        b[0x400] = 0xc3;
        b
    }

    fn sections(kernel: Source) -> UkiSections {
        UkiSections {
            osrel: Source::Bytes(b"ID=kiln\nNAME=kiln\n".to_vec()),
            cmdline: Source::Bytes(b"console=ttyS0".to_vec()),
            uname: Some(Source::Bytes(b"6.1.0-test".to_vec())),
            initrd: vec![Source::Bytes(vec![1; 1000]), Source::Bytes(vec![2; 24])],
            linux: kernel,
        }
    }

    fn build(stub: &Source, s: &UkiSections) -> Result<(Vec<u8>, UkiLayout), UkiError> {
        let mut out = io::Cursor::new(Vec::new());
        let layout = write_uki(&mut out, stub, s)?;
        Ok((out.into_inner(), layout))
    }

    #[test]
    fn appends_aligned_sections_and_updates_headers() {
        let stub = Source::Bytes(tiny_pe(0x20b, 0x400));
        let (uki, layout) = build(&stub, &sections(Source::Bytes(vec![0x90; 5000]))).expect("uki");
        let pe = Pe::parse(&uki).expect("parse output");
        assert_eq!(pe.sections, 6);
        let names: Vec<String> = (0..6).map(|i| pe.section(&uki, i).name).collect();
        assert_eq!(
            names,
            [".text", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
        );
        let mut prev_end = 0x1010;
        for (i, p) in layout.sections.iter().enumerate() {
            let s = pe.section(&uki, i + 1);
            assert_eq!(s.raw_offset % 0x200, 0, "{s:?}");
            assert_eq!(s.virtual_address % 0x1000, 0, "{s:?}");
            assert!(s.virtual_address >= prev_end, "{s:?}");
            prev_end = s.virtual_address + s.virtual_size;
            assert_eq!(u64::from(s.raw_size), align(p.len, 0x200));
            let data = &uki[s.raw_offset as usize..s.raw_offset as usize + p.len as usize];
            match s.name.as_str() {
                ".cmdline" => assert_eq!(data, b"console=ttyS0"),
                ".initrd" => {
                    assert_eq!(p.len, 1024);
                    assert_eq!((data[999], data[1000]), (1, 2));
                }
                ".linux" => assert!(data.iter().all(|&b| b == 0x90)),
                _ => {}
            }
        }
        let size_of_image = u32_at(&uki, pe.opt + Pe::SIZE_OF_IMAGE).expect("field");
        assert_eq!(size_of_image, align(u64::from(prev_end), 0x1000) as u32);
        assert_eq!(uki.len() as u64, layout.size);
        assert_eq!(uki.len() % 0x200, 0);
        // The stored checksum is the checksum of the file with the field zeroed.
        let mut zeroed = uki.clone();
        put_u32(&mut zeroed, pe.opt + Pe::CHECKSUM, 0);
        let mut c = Checksum::default();
        c.update(&zeroed);
        assert_eq!(u32_at(&uki, pe.opt + Pe::CHECKSUM), Some(c.finish()));
        assert_eq!(
            layout.checksum,
            u32_at(&uki, pe.opt + Pe::CHECKSUM).expect("field")
        );
        // Same inputs, same bytes.
        let (again, _) = build(&stub, &sections(Source::Bytes(vec![0x90; 5000]))).expect("uki");
        assert!(again == uki);
    }

    #[test]
    fn rejects_unusable_stubs() {
        let s = sections(Source::Bytes(vec![0; 10]));
        let err = |b: Vec<u8>| {
            build(&Source::Bytes(b), &s)
                .expect_err("must fail")
                .to_string()
        };
        assert!(err(b"not a pe".to_vec()).contains("no MZ signature"));
        assert!(err(tiny_pe(0x10b, 0x400)).contains("not PE32+"));
        let mut no_pe = tiny_pe(0x20b, 0x400);
        no_pe[0x80] = b'X';
        assert!(err(no_pe).contains("no PE signature"));
        // Headers end at 0x1a0: room for the .text header but not five more.
        let e = err(tiny_pe(0x20b, 0x1d0));
        assert!(e.contains("no room for 5 more section headers"), "{e}");
        let mut signed = tiny_pe(0x20b, 0x400);
        put_u32(&mut signed, 0x84 + 20 + 112 + 4 * 8 + 4, 0x100);
        assert!(err(signed).contains("signed"));
        let mut uki = tiny_pe(0x20b, 0x400);
        uki[0x84 + 20 + 240..0x84 + 20 + 246].copy_from_slice(b".linux");
        assert!(err(uki).contains("already has a .linux section"));
        assert!(err(tiny_pe(0x20b, 0x400)[..0x100].to_vec()).contains("truncated"));
    }

    /// A minimal EFI stub for `machine` that [`write_uki`] takes.
    pub(crate) fn tiny_stub(machine: u16) -> Vec<u8> {
        let mut b = tiny_pe(0x20b, 0x400);
        put_u16(&mut b, 0x84, machine);
        b
    }

    #[test]
    fn arm64_stubs_padded_with_nops_take_the_new_headers() {
        // gnu-efi's arm64 header: the section table, then NOPs up to the code.
        let nops = |machine: u16| {
            let mut b = tiny_stub(machine);
            let table_end = 0x84 + 20 + 240 + SECTION_HEADER;
            for w in b[table_end..0x400].chunks_mut(4) {
                w.copy_from_slice(&0xd503_201f_u32.to_le_bytes());
            }
            b
        };
        let s = sections(Source::Bytes(vec![0x90; 100]));
        let (uki, _) = build(&Source::Bytes(nops(0xaa64)), &s).expect("arm64 stub");
        let pe = Pe::parse(&uki).expect("parse output");
        assert_eq!(pe.section(&uki, 5).name, ".linux");
        let header = pe.section_table + 5 * SECTION_HEADER;
        assert_eq!(&uki[header..header + 8], b".linux\0\0", "padding cleared");
        assert!(
            uki[header + 24..header + 36].iter().all(|&b| b == 0),
            "relocations, line numbers: none"
        );
        assert_eq!(pe_machine(&uki), Some(0xaa64));
        // Not padding on x86-64: something the stub keeps there.
        let err = build(&Source::Bytes(nops(0x8664)), &s).expect_err("x86-64 stub");
        assert!(err.to_string().contains("not empty"), "{err}");
    }

    #[test]
    fn machine_of_a_pe_image() {
        let mut pe = tiny_pe(0x20b, 0x400);
        assert_eq!(pe_machine(&pe), Some(0x8664));
        put_u16(&mut pe, 0x84, 0xaa64);
        assert_eq!(pe_machine(&pe), Some(0xaa64));
        assert_eq!(pe_machine(&pe[..0x85]), None, "truncated");
        assert_eq!(pe_machine(b"MZ"), None);
        put_u32(&mut pe, 0x3c, u32::MAX);
        assert_eq!(pe_machine(&pe), None, "e_lfanew beyond the file");
        assert_eq!(pe_machine(b"\x7fELF"), None);
    }

    #[test]
    fn checksum_matches_the_stubs_own() {
        let Some(path) = stub_path() else { return };
        let stub = std::fs::read(&path).expect("read stub");
        let pe = Pe::parse(&stub).expect("parse stub");
        let stored = u32_at(&stub, pe.opt + Pe::CHECKSUM).expect("field");
        if stored == 0 {
            eprintln!("skipping checksum comparison: the stub stores no checksum");
            return;
        }
        let mut zeroed = stub.clone();
        put_u32(&mut zeroed, pe.opt + Pe::CHECKSUM, 0);
        let mut c = Checksum::default();
        // Odd-sized pieces exercise the carried byte.
        for piece in zeroed.chunks(333) {
            c.update(piece);
        }
        assert_eq!(c.finish(), stored);
    }

    #[test]
    fn objdump_lists_sections_of_a_uki_from_the_systemd_stub() {
        let Some(path) = stub_path() else { return };
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        std::fs::write(&kernel, vec![0xcc; 300_001]).expect("kernel");
        let out = dir.path().join("linux.efi");
        let mut f = std::fs::File::create(&out).expect("create");
        let layout = write_uki(
            &mut f,
            &Source::File(path.clone()),
            &sections(Source::File(kernel.clone())),
        )
        .expect("uki");
        drop(f);
        let o = Command::new("objdump").arg("-h").arg(&out).output();
        let Ok(o) = o else {
            eprintln!("skipping objdump check: objdump is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "objdump -h: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains("pei-x86-64"), "{text}");
        for p in &layout.sections {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some(p.name.as_str()))
                .unwrap_or_else(|| panic!("{} missing: {text}", p.name));
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
            assert_eq!(hex(f[2]), u64::from(p.virtual_size), "{line}");
            assert_eq!(hex(f[3]), u64::from(p.virtual_address), "{line}");
            assert_eq!(hex(f[5]), u64::from(p.file_offset), "{line}");
        }
        assert!(
            text.contains(".sdmagic") || text.contains(".text"),
            "{text}"
        );
        let mut f2 = io::Cursor::new(Vec::new());
        write_uki(
            &mut f2,
            &Source::File(path),
            &sections(Source::File(kernel)),
        )
        .expect("uki");
        assert!(
            f2.into_inner() == std::fs::read(&out).expect("read"),
            "two builds differ"
        );
    }
}
