//! Byte-level pieces: ECMA-119 names, dates, directory records and the SUSP / Rock Ridge
//! entries they carry.

use std::collections::BTreeSet;

/// Both-endian 16-bit field (ECMA-119 7.2.3).
pub fn both16(v: u16) -> [u8; 4] {
    let l = v.to_le_bytes();
    let b = v.to_be_bytes();
    [l[0], l[1], b[0], b[1]]
}

/// Both-endian 32-bit field (ECMA-119 7.3.3).
pub fn both32(v: u32) -> [u8; 8] {
    let mut o = [0u8; 8];
    o[..4].copy_from_slice(&v.to_le_bytes());
    o[4..].copy_from_slice(&v.to_be_bytes());
    o
}

/// Civil date and time (UTC) of `secs` since the epoch: (year, month, day, hour, min, sec).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let c = kiln_fs::time::civil(secs);
    (
        i64::from(c.year),
        u32::from(c.month),
        u32::from(c.day),
        u32::from(c.hour),
        u32::from(c.minute),
        u32::from(c.second),
    )
}

/// The 7-byte directory record date (ECMA-119 9.1.5), UTC; years past 2155 saturate.
#[allow(clippy::cast_possible_truncation)] // calendar fields are bounded, the year clamped
pub fn date7(secs: u64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(secs);
    let years = (y - 1900).clamp(0, 255) as u8;
    [years, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// The 17-byte volume descriptor date (ECMA-119 8.4.26.1), UTC.
pub fn date17(secs: u64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = civil(secs);
    let text = format!("{:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}00", y.clamp(0, 9999));
    let mut o = [0u8; 17];
    o[..16].copy_from_slice(text.as_bytes());
    o
}

/// An unset 17-byte volume descriptor date.
pub fn date17_unset() -> [u8; 17] {
    let mut o = [b'0'; 17];
    o[16] = 0;
    o
}

/// Upper-cased d-characters of `s` (others become `_`), at most `max` of them.
fn d_chars(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(max)
        .collect()
}

/// The ISO 9660 identifier (without the `;1` of files) of `name` in a directory whose taken
/// identifiers are `taken`: level-1 style, 8.3 for files, 8 characters for directories,
/// made unique by a numeric suffix.
pub fn iso_name(name: &str, is_dir: bool, taken: &mut BTreeSet<String>) -> String {
    let (stem, ext) = if is_dir {
        (name, "")
    } else {
        match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
            _ => (name, ""),
        }
    };
    let mut stem = d_chars(stem, 8);
    if stem.is_empty() && (is_dir || ext.is_empty()) {
        stem.push('_');
    }
    let ext = d_chars(ext, 3);
    let join = |stem: &str| {
        if is_dir {
            stem.to_string()
        } else {
            format!("{stem}.{ext}")
        }
    };
    let mut candidate = join(&stem);
    let mut n = 1u32;
    while taken.contains(&candidate) {
        let suffix = n.to_string();
        let keep = 8usize.saturating_sub(suffix.len()).min(stem.len());
        candidate = join(&format!("{}{suffix}", &stem[..keep]));
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// SUSP `SP`: the first entry of the root's `.` record.
pub fn sp() -> Vec<u8> {
    vec![b'S', b'P', 7, 1, 0xbe, 0xef, 0]
}

/// SUSP `ER` announcing Rock Ridge (RRIP 1.10, identifier `RRIP_1991A`).
#[allow(clippy::cast_possible_truncation)] // the texts are short constants
pub fn er() -> Vec<u8> {
    let id = b"RRIP_1991A";
    let des: &[u8] = b"ROCK RIDGE INTERCHANGE PROTOCOL: POSIX FILE SYSTEM SEMANTICS";
    let src: &[u8] = b"SEE IEEE P1282 ROCK RIDGE INTERCHANGE PROTOCOL";
    let mut e = vec![
        b'E',
        b'R',
        (8 + id.len() + des.len() + src.len()) as u8,
        1,
        id.len() as u8,
        des.len() as u8,
        src.len() as u8,
        1,
    ];
    e.extend_from_slice(id);
    e.extend_from_slice(des);
    e.extend_from_slice(src);
    e
}

/// RRIP `PX` (RRIP 1.10 form, 36 bytes, as `RRIP_1991A` announces and Linux reads): file
/// type and permission bits, link count, owner and group.
pub fn px(mode: u32, nlink: u32, uid: u32, gid: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    for v in [mode, nlink, uid, gid] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// RRIP `PN`: the device number of a character or block device. Devices that fit the old
/// 16-bit number (major below 4096, minor below 256) store it in the low word, as mkisofs and
/// xorriso do; others store the major in the high word and the minor in the low word, which is
/// how Linux reads a non-zero high word (a major of 0 with a minor above 255 cannot be
/// written so that Linux reads it back).
pub fn pn(major: u32, minor: u32) -> Vec<u8> {
    let (high, low) = if major < 4096 && minor < 256 {
        (0, (major << 8) | minor)
    } else {
        (major, minor)
    };
    let mut e = vec![b'P', b'N', 20, 1];
    e.extend_from_slice(&both32(high));
    e.extend_from_slice(&both32(low));
    e
}

/// Bytes of components one `SL` entry holds (255 minus its 5-byte header).
const SL_BODY: usize = 250;

/// RRIP `SL` entries holding the symbolic link `target`: a leading `/` is the ROOT
/// component, `.` and `..` the CURRENT and PARENT components, other components their text;
/// components longer than an entry has room for are split with the component CONTINUE flag,
/// and entries after the first follow with the entry CONTINUE flag (Linux joins components
/// with `/` except after ROOT or a continued component).
#[allow(clippy::cast_possible_truncation)] // component and entry lengths are at most 250
pub fn sl(target: &str) -> Vec<Vec<u8>> {
    let mut comps: Vec<(u8, &[u8])> = Vec::new();
    let rest = match target.strip_prefix('/') {
        Some(r) => {
            comps.push((8, b""));
            r
        }
        None => target,
    };
    // A lone `/` is the ROOT component only.
    if !rest.is_empty() || comps.is_empty() {
        for c in rest.split('/') {
            comps.push(match c {
                "." => (2, b""),
                ".." => (4, b""),
                c => (0, c.as_bytes()),
            });
        }
    }
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for (flags, mut text) in comps {
        loop {
            let room = SL_BODY - cur.len();
            if text.len() + 2 <= room {
                cur.push(flags);
                cur.push(text.len() as u8);
                cur.extend_from_slice(text);
                break;
            }
            if room >= 3 {
                let n = room - 2;
                cur.push(flags | 1);
                cur.push(n as u8);
                cur.extend_from_slice(&text[..n]);
                text = &text[n..];
            }
            bodies.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        bodies.push(cur);
    }
    let last = bodies.len().saturating_sub(1);
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut e = vec![b'S', b'L', (5 + body.len()) as u8, 1, u8::from(i != last)];
            e.extend_from_slice(&body);
            e
        })
        .collect()
}

/// RRIP `TF` with modification, access and attribute-change times, all `secs`.
pub fn tf(secs: u64) -> Vec<u8> {
    let mut e = vec![b'T', b'F', 5 + 21, 1, 0x0e];
    for _ in 0..3 {
        e.extend_from_slice(&date7(secs));
    }
    e
}

/// RRIP `NM` entries holding `name` (split with the CONTINUE flag when long).
#[allow(clippy::cast_possible_truncation)] // chunks are at most 250 bytes
pub fn nm(name: &str) -> Vec<Vec<u8>> {
    let bytes = name.as_bytes();
    let chunks: Vec<&[u8]> = bytes.chunks(250).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut e = vec![b'N', b'M', (5 + c.len()) as u8, 1, u8::from(i != last)];
            e.extend_from_slice(c);
            e
        })
        .collect()
}

/// SUSP `CE` pointing at a continuation area.
pub fn ce(lba: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = vec![b'C', b'E', 28, 1];
    e.extend_from_slice(&both32(lba));
    e.extend_from_slice(&both32(offset));
    e.extend_from_slice(&both32(len));
    e
}

/// Size of a `CE` entry.
pub const CE_LEN: usize = 28;

/// The largest continuation area: one logical block (Linux reads each area within a block).
pub const AREA_MAX: usize = 2048;

/// The system use entries of one record, split between the record and a chain of
/// continuation areas.
#[derive(Debug, Clone, Default)]
pub struct Susp {
    /// Entries inside the record.
    pub inline: Vec<u8>,
    /// The continuation areas' entries, in order (empty: no `CE`); each area but the last
    /// ends with a `CE` to the next (not included here), and fits in [`AREA_MAX`] with it.
    pub cont: Vec<Vec<u8>>,
}

impl Susp {
    /// The length of continuation area `i`, with its trailing `CE` if another follows.
    pub fn area_len(&self, i: usize) -> usize {
        self.cont[i].len() + if i + 1 < self.cont.len() { CE_LEN } else { 0 }
    }
}

/// Split `entries` for a record whose fixed part and identifier take `base` bytes: all
/// inline if they fit in 255 bytes, else as many as fit before a `CE`, the rest in
/// continuation areas of at most [`AREA_MAX`] bytes each.
pub fn split_susp(base: usize, entries: Vec<Vec<u8>>) -> Susp {
    let total: usize = entries.iter().map(Vec::len).sum();
    let mut s = Susp::default();
    if base + total <= 254 {
        s.inline = entries.concat();
        return s;
    }
    let mut rest = Vec::new();
    for e in entries {
        if rest.is_empty() && base + s.inline.len() + e.len() + CE_LEN <= 254 {
            s.inline.extend_from_slice(&e);
        } else {
            rest.push(e);
        }
    }
    let mut cur: Vec<u8> = Vec::new();
    let mut left: usize = rest.iter().map(Vec::len).sum();
    for e in rest {
        // The last area needs no `CE`: fill it when everything left fits.
        if cur.len() + left > AREA_MAX && cur.len() + e.len() + CE_LEN > AREA_MAX {
            s.cont.push(std::mem::take(&mut cur));
        }
        left -= e.len();
        cur.extend_from_slice(&e);
    }
    s.cont.push(cur);
    s
}

/// The length of a directory record with identifier length `fi_len` and `susp` (even).
pub fn record_len(fi_len: usize, susp: &Susp) -> usize {
    let mut n = 33 + fi_len + usize::from(fi_len.is_multiple_of(2)) + susp.inline.len();
    if !susp.cont.is_empty() {
        n += CE_LEN;
    }
    n + n % 2
}

/// One directory record (ECMA-119 9.1).
pub struct Record<'a> {
    pub lba: u32,
    pub len: u32,
    pub secs: u64,
    pub dir: bool,
    pub fi: &'a [u8],
    pub susp: &'a Susp,
    /// Where this record's first continuation area is: (lba, offset).
    pub cont_at: (u32, u32),
}

impl Record<'_> {
    /// Append the record's bytes to `out`.
    #[allow(clippy::cast_possible_truncation)] // records are at most 254 bytes, identifiers and continuation areas shorter
    pub fn render(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = record_len(self.fi.len(), self.susp);
        out.push(len as u8);
        out.push(0);
        out.extend_from_slice(&both32(self.lba));
        out.extend_from_slice(&both32(self.len));
        out.extend_from_slice(&date7(self.secs));
        out.push(if self.dir { 2 } else { 0 });
        out.push(0);
        out.push(0);
        out.extend_from_slice(&both16(1));
        out.push(self.fi.len() as u8);
        out.extend_from_slice(self.fi);
        if self.fi.len().is_multiple_of(2) {
            out.push(0);
        }
        out.extend_from_slice(&self.susp.inline);
        if !self.susp.cont.is_empty() {
            out.extend_from_slice(&ce(
                self.cont_at.0,
                self.cont_at.1,
                self.susp.area_len(0) as u32,
            ));
        }
        out.resize(start + len, 0);
    }
}
