//! The kernel+initrd output: the entry stream split into the kernel, its command line and a
//! compressed newc initrd (with CPU microcode prepended, uncompressed, when the kernel image
//! has it), written by [`InitrdWriter`].

use crate::initrd::{InitrdOptions, InitrdWriter};
use kiln_fs::{Entry, Segment, Sink};
use std::io::{self, BufWriter, Read, Write};

/// Initrd compression. Every member of an initrd has the same compression: the kernel's lz4
/// unpacker reads up to the end of the initrd, so nothing of another kind may follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (the default; every kernel reads it).
    Gzip,
    /// zstd (smaller and faster to unpack; kernels from 5.9).
    Zstd,
    /// lz4 in the kernel's legacy format (the fastest to unpack, larger; needs
    /// CONFIG_RD_LZ4, which Debian's kernels have and LinuxKit's do not).
    Lz4,
    /// None.
    None,
}

impl Compression {
    /// Every compression, in the order `--help` lists them.
    pub const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Lz4,
        Compression::None,
    ];

    /// The name `--compress` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    /// Another name `--compress` takes (the file name extension).
    pub fn alias(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gz"),
            Compression::Zstd => Some("zst"),
            Compression::Lz4 | Compression::None => None,
        }
    }

    /// One line for `--help`.
    pub fn description(self) -> &'static str {
        match self {
            Compression::Gzip => "every kernel reads it (CONFIG_RD_GZIP)",
            Compression::Zstd => "smaller, faster to unpack; kernels from 5.9 with CONFIG_RD_ZSTD",
            Compression::Lz4 => {
                "the kernel's legacy lz4 format: the fastest to unpack, larger; needs CONFIG_RD_LZ4"
            }
            Compression::None => "uncompressed: the largest, nothing to unpack",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s || c.alias() == Some(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Compression::ALL.iter().map(|c| c.name()).collect();
                format!("unknown compression `{s}`: use {}", names.join(", "))
            })
    }
}

enum Initrd<W: Write> {
    /// Nothing written yet: microcode may still be prepended.
    Pending(Option<W>),
    Open(Box<InitrdWriter<BufWriter<W>>>),
}

/// Splits the stream: `boot/kernel` to the kernel writer, `boot/cmdline` kept as a string,
/// `boot/ucode.cpio` and everything else to the initrd.
pub struct KernelInitrd<K: Write, I: Write> {
    kernel: K,
    initrd: Initrd<I>,
    options: InitrdOptions,
    cmdline: Vec<u8>,
    found_kernel: bool,
    /// The `boot` directory, held back so that microcode can still lead the initrd.
    boot_dir: Option<Entry>,
}

impl<K: Write, I: Write> KernelInitrd<K, I> {
    /// Write the kernel to `kernel` and the initrd to `initrd`.
    pub fn new(kernel: K, initrd: I, options: InitrdOptions) -> Self {
        KernelInitrd {
            kernel,
            initrd: Initrd::Pending(Some(initrd)),
            options,
            cmdline: Vec::new(),
            found_kernel: false,
            boot_dir: None,
        }
    }

    fn open(&mut self) -> io::Result<&mut InitrdWriter<BufWriter<I>>> {
        if let Initrd::Pending(w) = &mut self.initrd {
            let w = BufWriter::with_capacity(
                256 << 10,
                w.take()
                    .ok_or_else(|| io::Error::other("initrd writer lost"))?,
            );
            let mut writer = InitrdWriter::new(w, &self.options)?;
            if let Some(boot) = self.boot_dir.take() {
                writer.add(&boot, &mut io::empty())?;
            }
            self.initrd = Initrd::Open(Box::new(writer));
        }
        match &mut self.initrd {
            Initrd::Open(s) => Ok(s),
            Initrd::Pending(_) => Err(io::Error::other("initrd not open")),
        }
    }

    /// Finish: returns the kernel writer, the initrd writer and the command line.
    pub fn finish(mut self) -> io::Result<(K, I, String)> {
        if !self.found_kernel {
            return Err(io::Error::other(
                "the image has no kernel: the manifest needs a kernel section",
            ));
        }
        self.open()?;
        let initrd = match self.initrd {
            Initrd::Open(s) => s.finish()?.into_inner().map_err(|e| e.into_error())?,
            Initrd::Pending(_) => return Err(io::Error::other("initrd not open")),
        };
        Ok((
            self.kernel,
            initrd,
            String::from_utf8_lossy(&self.cmdline).into_owned(),
        ))
    }
}

impl<K: Write, I: Write> Sink for KernelInitrd<K, I> {
    fn add(&mut self, e: &Entry, data: &mut dyn Read) -> io::Result<()> {
        match e.path.as_str() {
            "boot/kernel" => {
                self.found_kernel = true;
                io::copy(&mut data.take(e.size), &mut self.kernel).map(|_| ())
            }
            "boot/cmdline" => {
                self.cmdline.clear();
                data.take(e.size).read_to_end(&mut self.cmdline).map(|_| ())
            }
            "boot/ucode.cpio" => match &mut self.initrd {
                Initrd::Pending(Some(w)) => io::copy(&mut data.take(e.size), w).map(|_| ()),
                _ => Err(io::Error::other(
                    "microcode must come before the rest of the initrd",
                )),
            },
            "boot" if matches!(self.initrd, Initrd::Pending(_)) => {
                self.boot_dir = Some(e.clone());
                Ok(())
            }
            _ => self.open()?.add(e, data),
        }
    }

    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        self.open()?.begin_segment(key)
    }

    fn end_segment(&mut self) -> io::Result<()> {
        self.open()?.end_segment()
    }
}
