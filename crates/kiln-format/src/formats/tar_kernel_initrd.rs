//! `tar-kernel-initrd`: `NAME-initrd.tar` holding `kernel`, `initrd.img` and `cmdline`.

use crate::format::{FormatError, FormatWriter, Target, write_err};
use crate::{AtomicOutput, KernelInitrd};
use kiln_fs::{Entry, Segment, Sink};
use std::io::{self, Read, Seek};
use std::path::PathBuf;

type Spool = std::fs::File;

struct KernelInitrdTar {
    split: KernelInitrd<Spool, Spool>,
    dest: PathBuf,
    mtime: u64,
}

pub(crate) fn writer(target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
    let dest = target.path("-initrd.tar");
    let spool = || tempfile::tempfile_in(&target.dir).map_err(write_err(&target.dir));
    Ok(Box::new(KernelInitrdTar {
        split: KernelInitrd::new(spool()?, spool()?, target.initrd_options()),
        dest,
        mtime: target.mtime,
    }))
}

impl Sink for KernelInitrdTar {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        self.split.add(entry, data)
    }

    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        self.split.begin_segment(key)
    }

    fn end_segment(&mut self) -> io::Result<()> {
        self.split.end_segment()
    }
}

impl KernelInitrdTar {
    fn write(self) -> io::Result<AtomicOutput> {
        let (mut kernel, mut initrd, cmdline) = self.split.finish()?;
        let mut tar = tar::Builder::new(AtomicOutput::create(&self.dest)?);
        let mut member = |name: &str, size: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(self.mtime);
            tar.append_data(&mut h, name, data)
        };
        for (name, file) in [("kernel", &mut kernel), ("initrd.img", &mut initrd)] {
            let size = file.stream_position()?;
            file.rewind()?;
            member(name, size, file)?;
        }
        member("cmdline", cmdline.len() as u64, &mut cmdline.as_bytes())?;
        tar.into_inner()
    }
}

impl FormatWriter for KernelInitrdTar {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let dest = self.dest.clone();
        let out = self.write().map_err(write_err(&dest))?;
        Ok(vec![out.commit().map_err(write_err(&dest))?])
    }
}
