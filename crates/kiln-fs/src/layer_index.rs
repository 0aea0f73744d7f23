//! A layer's index: what the flattener's first pass needs of each member of one layer (its path
//! as the layer spells it, what kind of entry it is, a directory's metadata), without data.
//!
//! An index depends on the layer's content alone, not on the layers around it, so a source of
//! layers may keep it ([`crate::Layers::save_index`]) and hand it back for any later flattening
//! of an image holding the same layer ([`crate::Layers::load_index`]); the flattener then reads
//! that layer once instead of twice. Replaying a saved index applies exactly the records the
//! layer's own headers would give, in the same order, so the flattened output cannot differ.
//!
//! The encoding: [`MAGIC`] (which names the format's version), one record per tar member in
//! order, then the SHA-256 of everything before it, so that a damaged file is detected and
//! ignored rather than trusted. A record is a tag byte, the member's path, and for a hard link
//! its target, for a directory its mode, owner, group, mtime and extended attributes. Integers
//! are little-endian; strings and byte strings carry a `u32` length.

use crate::entry::{Entry, Kind};
use crate::layers::{base_of, entry_from_tar, normalize};
use sha2::{Digest, Sha256};
use std::io::Read;

/// The first bytes of an encoded index; the last byte is the format's version.
pub const MAGIC: &[u8] = b"kiln-layer-index\x01";

/// The largest index recorded, checksum included (about 150,000 members): a larger layer's
/// index is not recorded, so that recording never costs more memory than this.
pub const MAX_INDEX_BYTES: usize = 16 << 20;

/// What the first pass needs of one member of a layer.
#[derive(Debug)]
pub(crate) struct Member {
    /// The member's path as the layer spells it (decoded lossily).
    pub raw: String,
    /// What it is.
    pub what: What,
}

/// The kind of a member, as far as flattening cares.
#[derive(Debug)]
pub(crate) enum What {
    /// Nothing to add: a whiteout, the root, or a member that is no file system entry.
    Nothing,
    /// A directory, with its metadata (its path is set when it is applied).
    Dir(Entry),
    /// A symbolic link.
    Symlink,
    /// A hard link to the target as the layer spells it.
    Hardlink(String),
    /// A regular file, a device or a named pipe.
    Other,
    /// The member's header could not be read: flattening fails at this member.
    Failed(std::io::Error),
}

impl Member {
    /// The record of a member read from a layer. Whiteouts and the root are not examined
    /// further, as the first pass never reads their headers.
    pub fn read<R: Read>(member: &mut tar::Entry<'_, R>) -> Member {
        let raw = String::from_utf8_lossy(&member.path_bytes()).to_string();
        let path = match normalize(&raw) {
            Ok(Some(p)) if !base_of(&p).starts_with(".wh.") => p,
            _ => {
                return Member {
                    raw,
                    what: What::Nothing,
                };
            }
        };
        let what = match entry_from_tar(member, path) {
            Err(e) => What::Failed(e),
            Ok(None) => What::Nothing,
            Ok(Some(e)) => match e.kind {
                Kind::Dir => What::Dir(e),
                Kind::Symlink(_) => What::Symlink,
                Kind::Hardlink(target) => What::Hardlink(target),
                _ => What::Other,
            },
        };
        Member { raw, what }
    }
}

const NOTHING: u8 = 0;
const DIR: u8 = 1;
const SYMLINK: u8 = 2;
const HARDLINK: u8 = 3;
const OTHER: u8 = 4;

/// Encodes the records of one layer, in order; gives up (and yields nothing) on a member that
/// failed or once the index outgrows [`MAX_INDEX_BYTES`].
pub(crate) struct Recorder {
    out: Option<Vec<u8>>,
}

impl Recorder {
    /// An empty index.
    pub fn new() -> Self {
        Recorder {
            out: Some(MAGIC.to_vec()),
        }
    }

    /// Append the record of the next member.
    pub fn push(&mut self, m: &Member) {
        let Some(out) = &mut self.out else { return };
        let tag = match &m.what {
            What::Nothing => NOTHING,
            What::Dir(_) => DIR,
            What::Symlink => SYMLINK,
            What::Hardlink(_) => HARDLINK,
            What::Other => OTHER,
            What::Failed(_) => {
                self.out = None;
                return;
            }
        };
        out.push(tag);
        put_bytes(out, m.raw.as_bytes());
        match &m.what {
            What::Hardlink(target) => put_bytes(out, target.as_bytes()),
            What::Dir(e) => {
                out.extend_from_slice(&e.mode.to_le_bytes());
                out.extend_from_slice(&e.uid.to_le_bytes());
                out.extend_from_slice(&e.gid.to_le_bytes());
                out.extend_from_slice(&e.mtime.to_le_bytes());
                put_len(out, e.xattrs.len());
                for (name, value) in &e.xattrs {
                    put_bytes(out, name.as_bytes());
                    put_bytes(out, value);
                }
            }
            _ => {}
        }
        if out.len() + 32 > MAX_INDEX_BYTES {
            self.out = None;
        }
    }

    /// The encoded index, unless recording gave up.
    pub fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Some(out)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths stay far below 4 GiB: the whole index is bounded by MAX_INDEX_BYTES.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

/// The records of an encoded index, in order. Built only from data whose magic and checksum
/// match ([`Records::parse`]); a record that still fails to decode ends the records with an
/// error rather than silently.
pub(crate) struct Records<'d> {
    rest: &'d [u8],
}

/// A saved index that does not decode.
#[derive(Debug)]
pub(crate) struct Damaged;

impl<'d> Records<'d> {
    /// The records of `data`, or `None` when it is not an intact index of this format.
    pub fn parse(data: &'d [u8]) -> Option<Self> {
        let body = data.strip_prefix(MAGIC)?;
        let split = body.len().checked_sub(32)?;
        let (records, sum) = body.split_at(split);
        let want = Sha256::digest(&data[..MAGIC.len() + split]);
        (want.as_slice() == sum).then_some(Records { rest: records })
    }

    fn take(&mut self, n: usize) -> Result<&'d [u8], Damaged> {
        if self.rest.len() < n {
            return Err(Damaged);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Damaged> {
        self.take(N)?.try_into().map_err(|_| Damaged)
    }

    fn u32(&mut self) -> Result<u32, Damaged> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Damaged> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'d [u8], Damaged> {
        let len = usize::try_from(self.u32()?).map_err(|_| Damaged)?;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, Damaged> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Damaged)
    }

    fn member(&mut self) -> Result<Member, Damaged> {
        let [tag] = self.array()?;
        let raw = self.string()?;
        let what = match tag {
            NOTHING => What::Nothing,
            SYMLINK => What::Symlink,
            OTHER => What::Other,
            HARDLINK => What::Hardlink(self.string()?),
            DIR => {
                let mut e = Entry::dir(String::new(), self.u32()?, 0);
                e.uid = self.u64()?;
                e.gid = self.u64()?;
                e.mtime = self.u64()?;
                let n = self.u32()?;
                for _ in 0..n {
                    let name = self.string()?;
                    e.xattrs.push((name, self.bytes()?.to_vec()));
                }
                What::Dir(e)
            }
            _ => return Err(Damaged),
        };
        Ok(Member { raw, what })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Member, Damaged>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let m = self.member();
        if m.is_err() {
            self.rest = &[];
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Member> {
        let mut dir = Entry::dir("", 0o1755, 7);
        dir.uid = 1000;
        dir.gid = 1001;
        dir.xattrs = vec![("user.x".into(), vec![0, 1, 2])];
        vec![
            Member {
                raw: "./".into(),
                what: What::Nothing,
            },
            Member {
                raw: "./etc/".into(),
                what: What::Dir(dir),
            },
            Member {
                raw: "etc/ł".into(),
                what: What::Other,
            },
            Member {
                raw: "a".into(),
                what: What::Symlink,
            },
            Member {
                raw: "b".into(),
                what: What::Hardlink("etc/ł".into()),
            },
        ]
    }

    fn encode(members: &[Member]) -> Option<Vec<u8>> {
        let mut r = Recorder::new();
        for m in members {
            r.push(m);
        }
        r.finish()
    }

    #[test]
    fn records_round_trip() {
        let want = sample();
        let data = encode(&want).expect("encoded");
        let got: Vec<Member> = Records::parse(&data)
            .expect("intact")
            .collect::<Result<_, _>>()
            .expect("decodes");
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    #[test]
    fn damaged_index_is_refused() {
        let data = encode(&sample()).expect("encoded");
        for i in [0, MAGIC.len(), data.len() / 2, data.len() - 1] {
            let mut bad = data.clone();
            bad[i] ^= 1;
            assert!(Records::parse(&bad).is_none(), "flipped byte {i}");
        }
        assert!(Records::parse(&data[..data.len() - 1]).is_none());
        assert!(Records::parse(b"").is_none());
    }

    #[test]
    fn failed_member_is_not_recorded() {
        let mut members = sample();
        members.push(Member {
            raw: "x".into(),
            what: What::Failed(std::io::Error::other("bad header")),
        });
        assert!(encode(&members).is_none());
    }
}
