//! `kernel+initrd`: `NAME-kernel`, `NAME-initrd.img` and `NAME-cmdline`.

use crate::format::{FormatError, FormatWriter, Target, write_err};
use crate::{AtomicOutput, KernelInitrd};
use std::io::Write;
use std::path::PathBuf;

struct Files {
    split: KernelInitrd<AtomicOutput, AtomicOutput>,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: PathBuf,
}

pub(crate) fn writer(target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
    let (kernel, initrd, cmdline) = (
        target.path("-kernel"),
        target.path("-initrd.img"),
        target.path("-cmdline"),
    );
    let split = KernelInitrd::new(
        AtomicOutput::create(&kernel).map_err(write_err(&kernel))?,
        AtomicOutput::create(&initrd).map_err(write_err(&initrd))?,
        target.initrd_options(),
    );
    Ok(Box::new(Files {
        split,
        kernel,
        initrd,
        cmdline,
    }))
}

kiln_fs::forward_sink!(Files => split);

impl FormatWriter for Files {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let (kernel, initrd, cmdline) = self.split.finish().map_err(write_err(&self.initrd))?;
        let mut c = AtomicOutput::create(&self.cmdline).map_err(write_err(&self.cmdline))?;
        c.write_all(cmdline.as_bytes())
            .map_err(write_err(&self.cmdline))?;
        Ok(vec![
            kernel.commit().map_err(write_err(&self.kernel))?,
            initrd.commit().map_err(write_err(&self.initrd))?,
            c.commit().map_err(write_err(&self.cmdline))?,
        ])
    }
}
