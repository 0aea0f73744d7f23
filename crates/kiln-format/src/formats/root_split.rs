//! Systems whose root is a read-only image on a disk (`kernel+squashfs`, `kernel+erofs`, and
//! the boot media built with `--root squashfs|erofs`): the whole entry stream goes into the
//! root image(s), and the entries of the kernel and init images (the kernel, its modules,
//! kiln-init) also into a small initrd. kiln-init, started from that initrd, finds the root
//! device named by `kiln.root=` on the command line, mounts it and goes on from there.

use super::boot_media::{BootFiles, KernelCapture, RootImage, content_id, write_kernel_files};
use super::packager::Packager;
use crate::erofs::ErofsSink;
use crate::format::{Format, FormatError, FormatWriter, RootFs, Target, write_err};
use crate::iso9660::IsoSink;
use crate::squashfs::{SquashfsOptions, SquashfsSink};
use crate::{InitrdOptions, Spool};
use kiln_fs::{Entry, Origin, Segment, Sink, Tee};
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

/// The device `kernel+squashfs` and `kernel+erofs` expect their root image on (the first
/// virtio disk), and `kernel+iso` (the first CD-ROM drive), as `kiln run qemu` attaches them.
fn whole_disk_root(fs: RootFs) -> &'static str {
    match fs {
        RootFs::Iso9660 => "/dev/sr0",
        _ => "/dev/vda",
    }
}

/// Mount points every root image has.
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
];

/// One writer of the split: a root image, or the small initrd's capture.
enum Part {
    Squashfs(Box<SquashfsSink<File>>),
    Erofs(Box<ErofsSink<File>>),
    Iso(Box<IsoSink<File>>),
    Initrd(Box<KernelCapture>),
}

impl Sink for Part {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        match self {
            Part::Squashfs(s) => s.add(entry, data),
            Part::Erofs(s) => s.add(entry, data),
            Part::Iso(s) => s.add(entry, data),
            Part::Initrd(s) => s.add(entry, data),
        }
    }
    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        match self {
            Part::Squashfs(s) => s.begin_segment(key),
            Part::Erofs(s) => s.begin_segment(key),
            Part::Iso(s) => s.begin_segment(key),
            Part::Initrd(s) => s.begin_segment(key),
        }
    }
    fn end_segment(&mut self) -> io::Result<()> {
        match self {
            Part::Squashfs(s) => s.end_segment(),
            Part::Erofs(s) => s.end_segment(),
            Part::Iso(s) => s.end_segment(),
            Part::Initrd(s) => s.end_segment(),
        }
    }
}

struct RootSplit {
    tee: Tee<Part>,
    /// The root file systems, in the order of the first parts of `tee`.
    roots: Vec<(RootFs, Spool)>,
    /// Whether the entries now coming belong to the kernel or an init image.
    boot_origin: bool,
    /// `kernel+squashfs` / `kernel+erofs` asked for.
    whole_disk: Vec<Format>,
    /// Boot media with their root on a partition.
    media: Vec<Format>,
    target: Target,
}

/// The writer of `whole_disk` (kernel+squashfs, kernel+erofs) and of the boot media `media`
/// with their root as `target.root`.
pub(crate) fn writer(
    whole_disk: &[Format],
    media: &[Format],
    target: &Target,
) -> Result<Box<dyn FormatWriter>, FormatError> {
    if let Some(&f) = media.iter().find(|f| !carries_root_partition(**f)) {
        return Err(FormatError::NoRootImage(f));
    }
    let mut kinds: Vec<RootFs> = whole_disk.iter().filter_map(|f| f.root_image()).collect();
    if !media.is_empty() {
        kinds.push(target.root);
    }
    kinds.sort_by_key(|k| k.name());
    kinds.dedup();
    std::fs::create_dir_all(&target.dir).map_err(write_err(&target.dir))?;
    let spool = || Spool::create(&target.dir).map_err(write_err(&target.dir));
    let reopen = |t: &Spool| t.reopen().map_err(write_err(t.path()));
    let mut parts = Vec::new();
    let mut roots = Vec::new();
    for kind in kinds {
        let tmp = spool()?;
        let out = reopen(&tmp)?;
        let path = target.path(&format!("-{}.img", kind.name()));
        let part = match kind {
            RootFs::Squashfs => Part::Squashfs(Box::new(
                SquashfsSink::new(out, target.mtime, SquashfsOptions::default())
                    .map_err(write_err(&path))?,
            )),
            RootFs::Erofs => Part::Erofs(Box::new(
                ErofsSink::new(out, target.mtime).map_err(write_err(&path))?,
            )),
            RootFs::Iso9660 => Part::Iso(Box::new(
                IsoSink::new(out, "KILN_ROOT", target.mtime).map_err(write_err(&path))?,
            )),
            RootFs::Ram => continue,
        };
        parts.push(part);
        roots.push((kind, tmp));
    }
    // The directories the system mounts on, which a read-only root cannot create at boot; the
    // stream's own entries for them, if any, come later and win.
    for part in &mut parts {
        for (dir, mode) in MOUNT_POINTS {
            part.add(&Entry::dir(*dir, *mode, target.mtime), &mut io::empty())
                .map_err(write_err(&target.dir))?;
        }
    }
    // No segment cache: this initrd holds only part of each segment's entries.
    let options = InitrdOptions::new(target.compression);
    parts.push(Part::Initrd(Box::new(KernelCapture::new(target, options)?)));
    Ok(Box::new(RootSplit {
        tee: Tee::new(parts),
        roots,
        boot_origin: false,
        whole_disk: whole_disk.to_vec(),
        media: media.to_vec(),
        target: target.clone(),
    }))
}

/// The boot media formats that can hold the root on a partition: the disks.
fn carries_root_partition(f: Format) -> bool {
    matches!(
        f,
        Format::RawEfi
            | Format::Qcow2Efi
            | Format::RawBios
            | Format::Qcow2Bios
            | Format::Vhd
            | Format::DynamicVhd
            | Format::Vmdk
            | Format::Gcp
            | Format::Aws
    )
}

impl Sink for RootSplit {
    fn add(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        if self.boot_origin {
            self.tee.add(entry, data)
        } else {
            let roots = self.roots.len();
            self.tee.add_to(|i| i < roots, entry, data)
        }
    }
    fn begin_segment(&mut self, key: &str) -> io::Result<Segment> {
        self.tee.begin_segment(key)
    }
    fn end_segment(&mut self) -> io::Result<()> {
        self.tee.end_segment()
    }
    fn set_origin(&mut self, origin: Option<&Origin>) -> io::Result<()> {
        self.boot_origin =
            origin.is_some_and(|o| o.location == "kernel" || o.location.starts_with("init["));
        self.tee.set_origin(origin)
    }
}

impl FormatWriter for RootSplit {
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>, FormatError> {
        let RootSplit {
            tee,
            roots,
            whole_disk,
            media,
            target,
            ..
        } = *self;
        let initrd_path = target.path("-initrd.img");
        // The root images are complete once their writers finish; the spool files are read
        // back by this process only, so they are not synced.
        let mut captured = None;
        for part in tee.into_inner() {
            let name = |fs: RootFs| target.path(&format!("-{}.img", fs.name()));
            match part {
                Part::Squashfs(s) => drop(s.finish().map_err(write_err(&name(RootFs::Squashfs)))?),
                Part::Erofs(s) => drop(s.finish().map_err(write_err(&name(RootFs::Erofs)))?),
                Part::Iso(s) => drop(s.finish().map_err(write_err(&name(RootFs::Iso9660)))?),
                Part::Initrd(s) => captured = Some(s.finish(&target)?),
            }
        }
        let (kernel, initrd, cmdline) = captured.ok_or_else(|| FormatError::Write {
            path: initrd_path.clone(),
            source: io::Error::other("the kernel and initrd were not captured"),
        })?;
        let mut roots = roots;
        let mut written = Vec::new();
        // A whole-disk format's root image is its output: renamed into place, not copied.
        let mut committed: Vec<(RootFs, PathBuf)> = Vec::new();
        for f in &whole_disk {
            let Some(fs) = f.root_image() else { continue };
            let line = root_cmdline(&cmdline, whole_disk_root(fs), fs);
            written.extend(write_kernel_files(&target, &kernel, &initrd, &line)?);
            let path = target.path(f.suffix());
            let spool = take_root(&mut roots, fs)?;
            let path = spool.commit(&path).map_err(write_err(&path))?;
            committed.push((fs, path.clone()));
            written.push(path);
        }
        if !media.is_empty() {
            let fs = target.root;
            let root = match committed.iter().find(|(k, _)| *k == fs) {
                Some((_, path)) => path.clone(),
                None => roots
                    .iter()
                    .find(|(k, _)| *k == fs)
                    .map(|(_, spool)| spool.path().to_path_buf())
                    .ok_or_else(|| no_root(fs))?,
            };
            let id = content_id(&[kernel.path(), initrd.path(), &root], &cmdline)
                .map_err(write_err(&initrd_path))?;
            let label = format!("kiln-root-{}", hex8(&id));
            let boot = BootFiles {
                kernel,
                initrd,
                cmdline,
                id,
                root: Some(RootImage {
                    file: root,
                    label,
                    fs,
                }),
            };
            let packager = Packager::new(&boot, &target);
            for f in media {
                written.push(packager.write(f)?);
            }
        }
        Ok(written)
    }
}

/// The spool of the root image `fs`, taken out of `roots`.
fn take_root(roots: &mut Vec<(RootFs, Spool)>, fs: RootFs) -> Result<Spool, FormatError> {
    let i = roots
        .iter()
        .position(|(k, _)| *k == fs)
        .ok_or_else(|| no_root(fs))?;
    Ok(roots.remove(i).1)
}

fn no_root(fs: RootFs) -> FormatError {
    FormatError::Write {
        path: PathBuf::from(format!("-{}.img", fs.name())),
        source: io::Error::other("no such root image was written"),
    }
}

/// The command line with the switches that make kiln-init mount the root from `device`.
pub(crate) fn root_cmdline(cmdline: &str, device: &str, fs: RootFs) -> String {
    format!("{cmdline} kiln.root={device} kiln.rootfstype={}", fs.name())
        .trim()
        .to_string()
}

fn hex8(id: &[u8; 32]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}
