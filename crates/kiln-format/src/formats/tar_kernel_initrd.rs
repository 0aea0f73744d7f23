//! `tar-kernel-initrd`: `NAME-initrd.tar` holding `kernel`, `initrd.img` and `cmdline`.

use super::boot_media::KernelCapture;
use crate::AtomicOutput;
use crate::format::{FormatError, FormatWriter, Target, write_err};
use std::io::{self, Read};
use std::path::PathBuf;

struct KernelInitrdTar {
    capture: KernelCapture,
    target: Target,
}

pub(crate) fn writer(target: &Target) -> Result<Box<dyn FormatWriter>, FormatError> {
    Ok(Box::new(KernelInitrdTar {
        capture: KernelCapture::new(target, target.initrd_options())?,
        target: target.clone(),
    }))
}

kiln_fs::forward_sink!(KernelInitrdTar => capture);

impl FormatWriter for KernelInitrdTar {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let KernelInitrdTar { capture, target } = *self;
        let (kernel, initrd, cmdline) = capture.finish(&target)?;
        let dest = target.path("-initrd.tar");
        let write = || -> io::Result<AtomicOutput> {
            let mut tar = tar::Builder::new(AtomicOutput::create(&dest)?);
            let mut member = |name: &str, size: u64, data: &mut dyn Read| {
                let mut h = tar::Header::new_gnu();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_mtime(target.mtime);
                tar.append_data(&mut h, name, data)
            };
            // The capture wrote the spool files through handles of their own: these read them
            // from the start.
            for (name, spool) in [("kernel", &kernel), ("initrd.img", &initrd)] {
                let mut file = spool.reopen()?;
                let size = file.metadata()?.len();
                member(name, size, &mut file)?;
            }
            member("cmdline", cmdline.len() as u64, &mut cmdline.as_bytes())?;
            tar.into_inner()
        };
        let out = write().map_err(write_err(&dest))?;
        Ok(vec![out.commit().map_err(write_err(&dest))?])
    }
}
