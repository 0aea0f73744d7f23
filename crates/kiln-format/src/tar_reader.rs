//! Reading back a root filesystem tar, as [`crate::TarSink`] (or LinuxKit) wrote it: one entry
//! at a time, with the origin its PAX records give, and its data streamed on demand.
//!
//! An entry read here and written again by [`crate::TarSink`] under the same origin gives the
//! same bytes as it had, so that a build can copy entries of an earlier tar into its output.
//! Nothing is buffered but the headers of one entry.

use crate::tar_sink::{PAX_DIGEST, PAX_LOCATION, PAX_SEGMENT, PAX_SOURCE, PAX_XATTR};
use kiln_fs::{Entry, Kind, Origin};
use std::io::{self, Read};

/// The most bytes of PAX records or GNU long names one entry may carry.
const MAX_META_BYTES: u64 = 1 << 20;

/// One entry read back, with the origin records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The entry (a directory's path without its trailing `/`).
    pub entry: Entry,
    /// Its origin, when it carried the [`crate::PAX_SOURCE`] and [`crate::PAX_LOCATION`]
    /// records (with kiln's digest and segment records when present).
    pub origin: Option<Origin>,
}

/// Reads a tar archive entry by entry.
pub struct TarReader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not read yet.
    data_left: u64,
    /// Padding after the current entry's data.
    padding: u64,
    ended: bool,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> TarReader<R> {
    /// A reader of the archive `inner`.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            data_left: 0,
            padding: 0,
            ended: false,
        }
    }

    /// The next entry, `None` at the end-of-archive marker. What the caller did not read of
    /// the previous entry's data is skipped. An archive that ends without its marker, a header
    /// whose checksum is wrong, or an entry type a root filesystem does not hold is an error.
    pub fn next_entry(&mut self) -> io::Result<Option<TarEntry>> {
        if self.ended {
            return Ok(None);
        }
        let mut pax: Option<Vec<u8>> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            self.skip_rest()?;
            let mut block = [0u8; 512];
            self.inner.read_exact(&mut block).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    invalid("the archive ends without its end-of-archive marker (truncated)")
                } else {
                    e
                }
            })?;
            if block.iter().all(|b| *b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let sum: u32 = block
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(*b)
                    }
                })
                .sum();
            if header.cksum().ok() != Some(sum) {
                return Err(invalid("a header's checksum is wrong (corrupt archive)"));
            }
            let mut size = header.entry_size()?;
            let kind = header.entry_type();
            let meta = |r: &mut Self, size: u64| -> io::Result<Vec<u8>> {
                if size > MAX_META_BYTES {
                    return Err(invalid(format!(
                        "an extended header of {size} bytes is more than the limit of {} MiB",
                        MAX_META_BYTES >> 20
                    )));
                }
                r.start(size);
                let mut buf = Vec::new();
                r.data().read_to_end(&mut buf)?;
                Ok(buf)
            };
            match kind {
                tar::EntryType::XHeader => {
                    pax = Some(meta(self, size)?);
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    self.start(size);
                    continue;
                }
                tar::EntryType::GNULongName => {
                    long_name = Some(trim_nul(meta(self, size)?));
                    continue;
                }
                tar::EntryType::GNULongLink => {
                    long_link = Some(trim_nul(meta(self, size)?));
                    continue;
                }
                _ => {}
            }
            let mut path = long_name
                .take()
                .unwrap_or_else(|| header.path_bytes().into());
            let mut link = long_link
                .take()
                .or_else(|| header.link_name_bytes().map(Into::into));
            let (mut uid, mut gid, mut mtime) = (header.uid()?, header.gid()?, header.mtime()?);
            let mut xattrs = Vec::new();
            let (mut source, mut location, mut digest, mut segment) = (None, None, None, None);
            let text = |v: &[u8], what: &str| {
                String::from_utf8(v.to_vec())
                    .map_err(|_| invalid(format!("the PAX record {what} is not UTF-8")))
            };
            let number = |v: &[u8], what: &str| -> io::Result<u64> {
                let t = text(v, what)?;
                // mtime may have a fraction: whole seconds are kept.
                t.split('.')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| invalid(format!("the PAX record {what} is `{t}`, not a number")))
            };
            for record in tar::PaxExtensions::new(pax.as_deref().unwrap_or_default()) {
                let record = record.map_err(|_| invalid("a PAX record is malformed"))?;
                let (key, value) = (record.key_bytes(), record.value_bytes());
                match key {
                    b"path" => path = value.to_vec(),
                    b"linkpath" => link = Some(value.to_vec()),
                    b"uid" => uid = number(value, "uid")?,
                    b"gid" => gid = number(value, "gid")?,
                    b"mtime" => mtime = number(value, "mtime")?,
                    b"size" => size = number(value, "size")?,
                    k if k == PAX_SOURCE.as_bytes() => source = Some(text(value, PAX_SOURCE)?),
                    k if k == PAX_LOCATION.as_bytes() => {
                        location = Some(text(value, PAX_LOCATION)?)
                    }
                    k if k == PAX_DIGEST.as_bytes() => digest = Some(text(value, PAX_DIGEST)?),
                    k if k == PAX_SEGMENT.as_bytes() => segment = Some(text(value, PAX_SEGMENT)?),
                    k if k.starts_with(PAX_XATTR.as_bytes()) => {
                        let name = text(&k[PAX_XATTR.len()..], "key of an extended attribute")?;
                        xattrs.push((name, value.to_vec()));
                    }
                    _ => {}
                }
            }
            let path = String::from_utf8(path)
                .map_err(|_| invalid("an entry's path is not UTF-8"))?
                .trim_end_matches('/')
                .to_string();
            let link = || -> io::Result<String> {
                String::from_utf8(link.clone().unwrap_or_default())
                    .map_err(|_| invalid(format!("the link target of `{path}` is not UTF-8")))
            };
            let device = || -> io::Result<(u32, u32)> {
                Ok((
                    header.device_major()?.unwrap_or(0),
                    header.device_minor()?.unwrap_or(0),
                ))
            };
            let kind = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()?),
                tar::EntryType::Link => Kind::Hardlink(link()?),
                tar::EntryType::Char => {
                    let (major, minor) = device()?;
                    Kind::Char { major, minor }
                }
                tar::EntryType::Block => {
                    let (major, minor) = device()?;
                    Kind::Block { major, minor }
                }
                tar::EntryType::Fifo => Kind::Fifo,
                other => {
                    return Err(invalid(format!(
                        "`{path}` is a tar entry of type {:?}, which kiln does not write",
                        other.as_byte() as char
                    )));
                }
            };
            self.start(size);
            let entry = Entry {
                path,
                size: if kind == Kind::File { size } else { 0 },
                kind,
                mode: header.mode()?,
                uid,
                gid,
                mtime,
                xattrs,
            };
            let origin = match (source, location) {
                (Some(source), Some(location)) => Some(Origin {
                    source,
                    location,
                    digest,
                    segment,
                }),
                _ => None,
            };
            return Ok(Some(TarEntry { entry, origin }));
        }
    }

    /// The data of the entry returned last (what is left of it).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    fn start(&mut self, size: u64) {
        self.data_left = size;
        self.padding = (512 - size % 512) % 512;
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let rest = self.data_left + self.padding;
        let skipped = io::copy(&mut (&mut self.inner).take(rest), &mut io::sink())?;
        if skipped < rest {
            return Err(invalid("the archive ends inside an entry (truncated)"));
        }
        self.data_left = 0;
        self.padding = 0;
        Ok(())
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// The data of one entry of a [`TarReader`]; an archive that ends before it does is an error.
pub struct Data<'a, R: Read> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.reader;
        if r.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(r.data_left).unwrap_or(usize::MAX));
        let n = r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside an entry's data (truncated)",
            ));
        }
        r.data_left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TarSink;
    use kiln_fs::Sink;

    fn origin(location: &str, segment: Option<&str>) -> Origin {
        Origin {
            source: "docker.io/library/alpine:3.19".into(),
            location: location.into(),
            digest: Some("sha256:aa".into()),
            segment: segment.map(String::from),
        }
    }

    /// Entries of every kind, long names and links, xattrs, big ids: written under origins.
    fn sample() -> Vec<(Option<Origin>, Entry, Vec<u8>)> {
        let long = format!("containers/services/x/rootfs/{}", "d/".repeat(80));
        let long = long.trim_end_matches('/').to_string();
        let mut file = Entry::file("etc/motd", 0o644, 5, 1_700_000_000);
        file.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2, 255])];
        file.uid = 1 << 30;
        vec![
            (None, Entry::dir("boot", 0o755, 0), Vec::new()),
            (
                Some(origin("init[0]", Some("sha256:bb"))),
                file,
                b"hello".to_vec(),
            ),
            (
                Some(origin("init[0]", Some("sha256:bb"))),
                Entry::dir(long.clone(), 0o4755, 3),
                Vec::new(),
            ),
            (
                Some(origin("services[1]", None)),
                Entry::symlink(format!("{long}/l"), "x".repeat(200), 0o777, 4),
                Vec::new(),
            ),
            (
                Some(origin("services[1]", None)),
                Entry::new("h", Kind::Hardlink("etc/motd".into()), 0o644, 5),
                Vec::new(),
            ),
            (
                Some(Origin {
                    source: "linuxkit.files".into(),
                    location: "files[0]".into(),
                    digest: None,
                    segment: None,
                }),
                Entry::new("dev/null", Kind::Char { major: 1, minor: 3 }, 0o666, 0),
                Vec::new(),
            ),
            (None, Entry::new("p", Kind::Fifo, 0o600, 0), Vec::new()),
            (None, Entry::file("big", 0o600, 1000, 0), vec![7u8; 1000]),
        ]
    }

    fn write(entries: &[(Option<Origin>, Entry, Vec<u8>)]) -> Vec<u8> {
        let mut sink = TarSink::new(Vec::new());
        for (o, e, d) in entries {
            sink.set_origin(o.as_ref()).expect("origin");
            sink.add(e, &mut &d[..]).expect("add");
        }
        sink.finish().expect("finish")
    }

    #[test]
    fn every_entry_carries_its_origin_as_pax_records() {
        let bytes = write(&sample());
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for member in ar.entries().expect("entries") {
            let mut member = member.expect("member");
            let records: Vec<(String, String)> = member
                .pax_extensions()
                .expect("pax")
                .map(|x| {
                    x.flatten()
                        .map(|r| {
                            (
                                r.key().expect("key").to_string(),
                                String::from_utf8_lossy(r.value_bytes()).to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            seen.push(records);
        }
        assert!(seen[0].is_empty(), "no origin, no records: {:?}", seen[0]);
        let keys: Vec<&str> = seen[1].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "LINUXKIT.source",
                "LINUXKIT.location",
                "kiln.digest",
                "kiln.segment",
                "SCHILY.xattr.security.capability"
            ]
        );
        assert_eq!(seen[1][0].1, "docker.io/library/alpine:3.19");
        assert_eq!(seen[1][1].1, "init[0]");
        assert_eq!(seen[1][2].1, "sha256:aa");
        assert_eq!(seen[1][3].1, "sha256:bb");
        assert_eq!(
            seen[5],
            [
                ("LINUXKIT.source".to_string(), "linuxkit.files".to_string()),
                ("LINUXKIT.location".to_string(), "files[0]".to_string())
            ]
        );
    }

    #[test]
    fn entries_read_back_and_written_again_give_the_same_bytes() {
        let entries = sample();
        let bytes = write(&entries);
        let mut reader = TarReader::new(&bytes[..]);
        let mut again = Vec::new();
        while let Some(t) = reader.next_entry().expect("entry") {
            let mut data = Vec::new();
            reader.data().read_to_end(&mut data).expect("data");
            again.push((t.origin, t.entry, data));
        }
        assert_eq!(again, entries);
        assert_eq!(write(&again), bytes);
    }

    #[test]
    fn damaged_archives_are_errors() {
        let bytes = write(&sample());
        // Truncated inside the data of the last file, and at an entry boundary.
        for cut in [bytes.len() - 1024 - 300, bytes.len() - 1024] {
            let mut reader = TarReader::new(&bytes[..cut]);
            let err = loop {
                match reader.next_entry() {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("a tar cut at {cut} read to its end"),
                    Err(e) => break e,
                }
            };
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        let err = TarReader::new(&bad[..]).next_entry().expect_err("checksum");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
