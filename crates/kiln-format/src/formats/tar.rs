//! `tar` (`NAME.tar`, or `-o FILE`, `-o -` for standard output) and `docker`
//! (`NAME-docker.tar`): the root filesystem as a tar archive.

use crate::format::{FormatError, FormatWriter, Target, write_err};
use crate::{AtomicOutput, TarSink};
use kiln_fs::{Entry, Origin, Sink};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

enum Tar {
    File(TarSink<BufWriter<AtomicOutput>>, PathBuf),
    Stdout(TarSink<BufWriter<io::Stdout>>),
}

/// `suffix` names the output in the output directory; `honours_output` says whether `-o`
/// replaces that name.
pub(crate) fn writer(
    target: &Target,
    suffix: &str,
    honours_output: bool,
) -> Result<Box<dyn FormatWriter>, FormatError> {
    let dest = match (&target.tar_output, honours_output) {
        (Some(o), true) => o.clone(),
        _ => target.path(suffix),
    };
    if dest == Path::new("-") {
        return Ok(Box::new(Tar::Stdout(TarSink::new(BufWriter::new(
            io::stdout(),
        )))));
    }
    let out = AtomicOutput::create(&dest).map_err(write_err(&dest))?;
    Ok(Box::new(Tar::File(
        TarSink::new(BufWriter::with_capacity(1 << 20, out)),
        dest,
    )))
}

impl Sink for Tar {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        match self {
            Tar::File(t, _) => t.add(entry, data),
            Tar::Stdout(t) => t.add(entry, data),
        }
    }

    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        match self {
            Tar::File(t, _) => t.set_origin(origin),
            Tar::Stdout(t) => t.set_origin(origin),
        }
    }
}

impl FormatWriter for Tar {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        match *self {
            Tar::File(t, dest) => {
                let out = t
                    .finish()
                    .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                    .map_err(write_err(&dest))?;
                Ok(vec![out.commit().map_err(write_err(&dest))?])
            }
            Tar::Stdout(t) => {
                let stdout = Path::new("standard output");
                t.finish()
                    .and_then(|mut w| w.flush())
                    .map_err(write_err(stdout))?;
                Ok(Vec::new())
            }
        }
    }
}
