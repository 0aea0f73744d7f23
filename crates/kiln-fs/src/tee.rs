//! One entry stream fed to several sinks, so that every output of a build comes from a single
//! assembly pass.
//!
//! A regular file's data can be read once; with more than one sink reading it, [`Tee`] keeps
//! the data in memory when it is small and in one reused temporary file when it is not, then
//! hands each sink a reader over it. Memory therefore stays bounded by [`IN_MEMORY_MAX`] whatever
//! the size of the files. Segments are asked of every sink: the entries of a segment are sent to
//! the sinks that want them, and skipped only when every sink reuses its own output.

use crate::{Entry, Kind, Origin, Segment, Sink};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The largest file data kept in memory to be replayed; larger files go through a temporary file.
pub const IN_MEMORY_MAX: u64 = 4 << 20;

/// A sink that forwards everything to each of its sinks (`&mut dyn Sink`, boxed sinks, ...).
pub struct Tee<S: Sink> {
    sinks: Vec<S>,
    /// Which sinks take the entries of the segment being sent.
    emitting: Vec<bool>,
    spill: Option<File>,
    buffer: Vec<u8>,
}

impl<S: Sink> Tee<S> {
    /// A tee over `sinks`, in the order they receive each entry.
    pub fn new(sinks: Vec<S>) -> Self {
        let emitting = vec![true; sinks.len()];
        Tee {
            sinks,
            emitting,
            spill: None,
            buffer: Vec::new(),
        }
    }

    /// The sinks, to finish them.
    pub fn into_inner(self) -> Vec<S> {
        self.sinks
    }

    /// Copy `data` into `spill`, then hand each active sink a reader over it.
    fn replay_from(
        &mut self,
        spill: &mut File,
        entry: &Entry,
        data: &mut dyn Read,
        active: &[usize],
    ) -> io::Result<()> {
        spill.set_len(0)?;
        spill.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut data.take(entry.size), spill)?;
        spill.flush()?;
        if copied != entry.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {copied} of {} bytes", entry.path, entry.size),
            ));
        }
        for &i in active {
            spill.seek(SeekFrom::Start(0))?;
            let mut reader = io::BufReader::with_capacity(1 << 20, &*spill).take(entry.size);
            self.sinks[i].add(entry, &mut reader)?;
        }
        Ok(())
    }
}

impl<S: Sink> Tee<S> {
    /// Add an entry to the sinks `wanted` picks (by index) among those taking the current
    /// segment; [`Sink::add`] adds it to all of them.
    pub fn add_to(
        &mut self,
        wanted: impl Fn(usize) -> bool,
        entry: &Entry,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let active: Vec<usize> = (0..self.sinks.len())
            .filter(|&i| self.emitting[i] && wanted(i))
            .collect();
        let has_data = entry.kind == Kind::File && entry.size > 0;
        if active.len() == 1 || !has_data {
            for &i in &active {
                self.sinks[i].add(entry, data)?;
            }
            return Ok(());
        }
        if entry.size <= IN_MEMORY_MAX {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            data.take(entry.size).read_to_end(&mut buffer)?;
            let result = active.iter().try_for_each(|&i| {
                let mut reader: &[u8] = &buffer;
                self.sinks[i].add(entry, &mut reader)
            });
            self.buffer = buffer;
            return result;
        }
        let mut spill = match self.spill.take() {
            Some(file) => file,
            None => tempfile::tempfile()?,
        };
        let result = self.replay_from(&mut spill, entry, data, &active);
        self.spill = Some(spill);
        result
    }
}

impl<S: Sink> Sink for Tee<S> {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.add_to(|_| true, entry, data)
    }

    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        let mut any = false;
        for (sink, emitting) in self.sinks.iter_mut().zip(&mut self.emitting) {
            *emitting = sink.begin_segment(key)? == Segment::Emit;
            any |= *emitting;
        }
        Ok(if any { Segment::Emit } else { Segment::Reuse })
    }

    fn end_segment(&mut self) -> io::Result<()> {
        for sink in &mut self.sinks {
            sink.end_segment()?;
        }
        self.emitting.fill(true);
        Ok(())
    }

    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|sink| sink.set_origin(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Collect;

    /// Reuses every segment.
    #[derive(Default)]
    struct Cached(Collect);

    impl Sink for Cached {
        fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
            self.0.add(entry, data)
        }
        fn begin_segment(&mut self, _key: &str) -> io::Result<Segment> {
            Ok(Segment::Reuse)
        }
    }

    #[test]
    fn every_sink_gets_every_entry_and_its_data_small_or_large() {
        let large = vec![7u8; usize::try_from(IN_MEMORY_MAX).expect("usize") + 5];
        let (mut a, mut b) = (Collect::default(), Collect::default());
        let mut tee = Tee::new(vec![&mut a as &mut dyn Sink, &mut b]);
        tee.add(&Entry::dir("etc", 0o755, 0), &mut io::empty())
            .expect("dir");
        tee.add(&Entry::file("etc/motd", 0o644, 5, 0), &mut &b"hello"[..])
            .expect("small");
        tee.add(
            &Entry::file("big", 0o644, large.len() as u64, 0),
            &mut &large[..],
        )
        .expect("large");
        drop(tee);
        for sink in [&a, &b] {
            assert_eq!(sink.entries.len(), 3);
            assert_eq!(sink.entries[1].1, b"hello");
            assert!(sink.entries[2].1 == large, "large data differs");
        }
    }

    #[test]
    fn a_segment_is_skipped_only_when_every_sink_reuses_it() {
        let (mut cached, mut plain) = (Cached::default(), Collect::default());
        let mut tee = Tee::new(vec![&mut cached as &mut dyn Sink, &mut plain]);
        assert_eq!(tee.begin_segment("k").expect("begin"), Segment::Emit);
        tee.add(&Entry::file("a", 0o644, 1, 0), &mut &b"a"[..])
            .expect("add");
        tee.end_segment().expect("end");
        tee.add(&Entry::file("b", 0o644, 1, 0), &mut &b"b"[..])
            .expect("add");
        drop(tee);
        assert_eq!(
            cached.0.entries.len(),
            1,
            "the reusing sink got the segment"
        );
        assert_eq!(plain.entries.len(), 2);

        let (mut x, mut y) = (Cached::default(), Cached::default());
        let mut tee = Tee::new(vec![&mut x, &mut y]);
        assert_eq!(tee.begin_segment("k").expect("begin"), Segment::Reuse);
    }
}
