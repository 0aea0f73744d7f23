//! Assembly: manifest + images -> the root filesystem as one entry stream, laid out as LinuxKit
//! lays it out:
//!
//! ```text
//! boot/kernel, boot/cmdline, boot/ucode.cpio   from the kernel image (its kernel.tar merged at /)
//! /...                                         the init images, merged in order
//! containers/volumes/NAME/{lower,tmp,merged}   volumes (lower/ holds the volume's image, if any)
//! containers/onboot/NNN-NAME/                  config.json, runtime.json, rootfs/ (read-only) or
//! containers/onshutdown/NNN-NAME/                lower/ + tmp/ + rootfs/ (writable, an overlay)
//! containers/services/NAME/
//! files                                        the manifest's files section
//! ```
//!
//! An image used by several containers is written once; the others mount it from there.

use crate::error::AssembleError;
use crate::input_tar::{Found, InputTar};
use crate::oci_config::{self, to_go_json};
use kiln_fs::layers::entry_from_tar;
use kiln_fs::{Entry, Flattener, Kind, LayerError, Origin, Segment, Sink, normalize};
use kiln_manifest::{CONTAINER_SECTIONS, Image, ManifestSet};
use kiln_oci::ImageLayers;
use kiln_oci::{Reference, Store};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;

/// Where init images point /etc/resolv.conf: a writable place.
pub const RESOLV_SYMLINK: &str = "/run/resolvconf/resolv.conf";

const HOSTS: &str = "127.0.0.1       localhost\n::1     localhost ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";
const RESOLV: &str = "\n# no resolv.conf configured\n";
const EXCLUDED: [&str; 6] = [
    ".dockerenv",
    "Dockerfile",
    "dev/console",
    "dev/pts",
    "dev/shm",
    "etc/hostname",
];
/// The version of the layout segments are keyed by: change it whenever the entries assembly
/// writes for the same image and prefix change, so that cached initrd segments are not reused.
const SEGMENT_LAYOUT: u32 = 1;
/// Directories every image gets (as root-owned 0755), and in what order missing ones are added.
const TOUCH_DIRS: [&str; 6] = ["dev", "dev/pts", "dev/shm", "etc", "proc", "sys"];

/// How to assemble.
#[derive(Debug, Clone)]
pub struct Options {
    /// Architecture of the images to use.
    pub arch: String,
    /// SOURCE_DATE_EPOCH: the time of generated entries, and the latest time any entry may have.
    pub source_date_epoch: Option<u64>,
    /// Directory `files` sources are read relative to.
    pub base_dir: PathBuf,
    /// Add the Dockerfile LinuxKit's `docker` output carries.
    pub dockerfile: bool,
    /// An earlier tar build whose entries are reused for the images it already holds
    /// (LinuxKit's `--input-tar`): an image's files are copied from it when its PAX records
    /// show the same reference at the same location and, for a tar kiln wrote, the same
    /// manifest digest and segment key. It may be the file the output replaces.
    pub input_tar: Option<PathBuf>,
    /// Write the kernel decompressed (LinuxKit's `--decompress-kernel`).
    pub decompress_kernel: bool,
    /// The SBOM to write into the root filesystem (none: no SBOM, LinuxKit's `--no-sbom`).
    /// [`assemble`] returns the document it wrote.
    pub sbom: Option<kiln_sbom::Settings>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            arch: "amd64".into(),
            source_date_epoch: None,
            base_dir: PathBuf::from("."),
            dockerfile: false,
            input_tar: None,
            decompress_kernel: false,
            sbom: None,
        }
    }
}

struct Emitter<'a> {
    sink: &'a mut dyn Sink,
    epoch: Option<u64>,
    /// Where the entries being sent come from.
    origin: Option<Origin>,
    /// The earlier tar to reuse entries of.
    input: Option<InputTar>,
    /// The SBOM being gathered, when one is asked for.
    sbom: Option<SbomState>,
    /// The package files of the image being sent: entries under the prefix (the image's root)
    /// that [`kiln_sbom::Capture::wants`] are kept as they pass.
    capture: Option<(String, kiln_sbom::Capture)>,
}

/// The SBOM of the build as assembly gathers it.
struct SbomState {
    settings: kiln_sbom::Settings,
    doc: kiln_sbom::Sbom,
}

impl Emitter<'_> {
    fn now(&self) -> u64 {
        self.epoch.unwrap_or(0)
    }

    fn add(&mut self, mut entry: Entry, data: &mut dyn Read) -> Result<(), AssembleError> {
        if let Some(e) = self.epoch {
            entry.mtime = entry.mtime.min(e);
        }
        if entry.kind == Kind::File
            && let Some((prefix, capture)) = &mut self.capture
            && let Some(rel) = entry.path.strip_prefix(prefix.as_str())
            && kiln_sbom::Capture::wants(rel)
            && capture.accepts(rel, entry.size)
        {
            // A package database: kept on its way to the sink (it is small, and bounded).
            let mut buf = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
            data.take(entry.size)
                .read_to_end(&mut buf)
                .map_err(AssembleError::Output)?;
            self.sink
                .add(&entry, &mut buf.as_slice())
                .map_err(AssembleError::Output)?;
            capture.add(rel, buf);
            return Ok(());
        }
        if let Kind::Symlink(target) = &entry.kind
            && let Some((prefix, capture)) = &mut self.capture
            && let Some(rel) = entry.path.strip_prefix(prefix.as_str())
        {
            capture.add_link(rel, target);
        }
        self.sink.add(&entry, data).map_err(AssembleError::Output)
    }

    /// Start capturing the package files of the image whose root is `prefix`.
    fn start_capture(&mut self, prefix: &str) {
        if self.sbom.is_some() {
            self.capture = Some((prefix.to_string(), kiln_sbom::Capture::default()));
        }
    }

    /// Record `img` (at the current origin's location) in the SBOM with what its package files
    /// say: from the capture when its entries were sent (`sent`), else from the findings kept
    /// when they last were, else (nothing kept) from its layers, read once more for this.
    fn finish_capture(
        &mut self,
        store: &Store,
        img: &kiln_oci::Image,
        sent: bool,
    ) -> Result<(), AssembleError> {
        let capture = self.capture.take();
        let Some(state) = &self.sbom else {
            return Ok(());
        };
        let cache = state.settings.cache_dir.clone();
        let findings = match capture {
            Some((_, c)) if sent => {
                let f = c.finish();
                if let Some(dir) = &cache {
                    keep_findings(dir, img, &f);
                }
                f
            }
            _ => match cache.as_deref().and_then(|dir| kept_findings(dir, img)) {
                Some(f) => f,
                None => {
                    let f = recapture(store, img)?;
                    if let Some(dir) = &cache {
                        keep_findings(dir, img, &f);
                    }
                    f
                }
            },
        };
        self.record(store, img, findings);
        Ok(())
    }

    /// Record `img`, used at the current origin's location, in the SBOM with `findings`.
    fn record(&mut self, store: &Store, img: &kiln_oci::Image, findings: kiln_sbom::Findings) {
        let Some(state) = &mut self.sbom else {
            return;
        };
        let location = self
            .origin
            .as_ref()
            .map(|o| o.location.clone())
            .unwrap_or_default();
        let digest = img.digest.to_string();
        let known = state
            .doc
            .images
            .iter()
            .any(|i| i.reference == img.reference && i.digest == digest);
        let attached = if known {
            Vec::new()
        } else {
            attached_packages(store, img)
        };
        state
            .doc
            .add(&img.reference, &digest, &location, findings, attached);
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), AssembleError> {
        let e = Entry::dir(path, mode, self.now());
        self.add(e, &mut std::io::empty())
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), AssembleError> {
        let e = Entry::file(path, mode, data.len() as u64, self.now());
        self.add(e, &mut &data[..])
    }

    /// The entries from now on come from `origin`.
    fn set_origin(&mut self, origin: Option<Origin>) -> Result<(), AssembleError> {
        self.sink
            .set_origin(origin.as_ref())
            .map_err(AssembleError::Output)?;
        self.origin = origin;
        Ok(())
    }

    /// The key of a segment: `key` with what else shapes every segment's entries.
    fn segment_key(&self, key: &str) -> String {
        format!("{key}\nlayout {SEGMENT_LAYOUT}\nepoch {:?}", self.epoch)
    }

    /// Copy the entries of the segment `origin` describes (under `prefix`) from the earlier
    /// tar, when it holds them; false when they must be built.
    fn reuse(&mut self, origin: &Origin, prefix: &str) -> Result<bool, AssembleError> {
        let Some(mut input) = self.input.take() else {
            return Ok(false);
        };
        let result = self.reuse_from(&mut input, origin, prefix);
        self.input = Some(input);
        result
    }

    fn reuse_from(
        &mut self,
        input: &mut InputTar,
        origin: &Origin,
        prefix: &str,
    ) -> Result<bool, AssembleError> {
        let found = input.find(origin)?;
        if found == Found::Nothing {
            return Ok(false);
        }
        if found == Found::LinuxKit {
            // LinuxKit's entries do not hold the directories leading to the image.
            self.prefix_dirs(prefix)?;
        }
        let copied = input.copy(origin, &found, prefix, &mut |entry, data| {
            self.add(entry, data)
        })?;
        tracing::info!(
            "reused {copied} entries of {} ({}) from the input tar",
            origin.location,
            origin.source
        );
        Ok(true)
    }

    /// Start a segment whose entries `key` (with the time limit) determines completely;
    /// false when the sink reuses it, and its entries must not be sent. See [`Sink`].
    fn begin_segment(&mut self, key: &str) -> Result<bool, AssembleError> {
        let key = self.segment_key(key);
        let answer = self
            .sink
            .begin_segment(&key)
            .map_err(AssembleError::Output)?;
        Ok(answer == Segment::Emit)
    }

    fn end_segment(&mut self) -> Result<(), AssembleError> {
        self.sink.end_segment().map_err(AssembleError::Output)
    }

    /// The directories leading to `prefix` (which ends in `/`), as LinuxKit writes them.
    fn prefix_dirs(&mut self, prefix: &str) -> Result<(), AssembleError> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(());
        }
        let mut path = String::new();
        for part in trimmed.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            self.dir(&path, 0o755)?;
        }
        Ok(())
    }
}

/// The images of the manifest, resolved once.
struct Images<'a> {
    store: &'a Store,
    arch: &'a str,
    cache: HashMap<String, kiln_oci::Image>,
}

impl Images<'_> {
    fn get(
        &mut self,
        set: &ManifestSet,
        reference: &str,
        section: &str,
        index: usize,
        field: &str,
    ) -> Result<kiln_oci::Image, AssembleError> {
        let locate =
            |msg: String| -> AssembleError { set.diagnostic(section, index, field, msg).into() };
        let r: Reference = reference
            .parse()
            .map_err(|e: kiln_oci::ReferenceError| locate(e.to_string()))?;
        let key = r.to_string();
        if let Some(i) = self.cache.get(&key) {
            return Ok(i.clone());
        }
        let img = match self.store.resolve(&r, self.arch) {
            Ok(i) => i,
            Err(
                e @ (kiln_oci::StoreError::NotFound(_) | kiln_oci::StoreError::NoPlatform { .. }),
            ) => return Err(locate(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        self.cache.insert(key, img.clone());
        Ok(img)
    }
}

/// Assemble the root filesystem of `set` from `store` into `sink`. Returns the SBOM document
/// written into it, when `opts.sbom` asks for one.
pub fn assemble(
    set: &ManifestSet,
    store: &Store,
    opts: &Options,
    sink: &mut dyn Sink,
) -> Result<Option<Vec<u8>>, AssembleError> {
    let m = &set.manifest;
    let mut images = Images {
        store,
        arch: &opts.arch,
        cache: HashMap::new(),
    };
    let input = match &opts.input_tar {
        Some(path) => Some(InputTar::open(path)?),
        None => None,
    };
    let mut out = Emitter {
        sink,
        epoch: opts.source_date_epoch,
        origin: None,
        input,
        sbom: opts.sbom.as_ref().map(|settings| SbomState {
            settings: settings.clone(),
            doc: kiln_sbom::Sbom::new(settings.name.clone()),
        }),
        capture: None,
    };

    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut next = 100u32;
    for section in CONTAINER_SECTIONS {
        for img in m.containers(section) {
            ids.insert(img.name.clone(), next);
            next += 1;
        }
    }

    if !m.kernel.image.is_empty() {
        let kernel = images.get(set, &m.kernel.image, "kernel", 0, "image")?;
        out.set_origin(Some(image_origin(&kernel, "kernel".into())))?;
        kernel_files(store, &kernel, set, opts.decompress_kernel, &mut out)?;
        // The kernel image contributes files, not a file system: its packages are not read.
        out.record(store, &kernel, kiln_sbom::Findings::default());
    }
    for (i, r) in m.init.iter().enumerate() {
        let img = images.get(set, r, "init", i, "")?;
        out.set_origin(Some(image_origin(&img, format!("init[{i}]"))))?;
        image_tar(store, &img, "", Some(RESOLV_SYMLINK), &mut out)?;
    }
    for (i, v) in m.volumes.iter().enumerate() {
        let base = format!("containers/volumes/{}", v.name);
        let generated = Origin {
            source: "linuxkit.volumes".into(),
            location: format!("volumes[{i}]"),
            ..Origin::default()
        };
        out.set_origin(Some(generated.clone()))?;
        out.prefix_dirs(&format!("{base}/lower/"))?;
        if !v.image.is_empty() {
            let img = images.get(set, &v.image, "volumes", i, "image")?;
            out.set_origin(Some(image_origin(&img, format!("volumes[{i}]"))))?;
            image_tar(
                store,
                &img,
                &format!("{base}/lower/"),
                Some(RESOLV_SYMLINK),
                &mut out,
            )?;
            out.set_origin(Some(generated))?;
        }
        out.dir(&format!("{base}/tmp"), 0o755)?;
        out.dir(&format!("{base}/merged"), 0o755)?;
    }
    let mut extracted: HashMap<String, String> = HashMap::new();
    for section in CONTAINER_SECTIONS {
        for (i, yaml) in m.containers(section).iter().enumerate() {
            let img = images.get(set, &yaml.image, section, i, "image")?;
            out.set_origin(Some(image_origin(&img, format!("{section}[{i}]"))))?;
            let name = if section == "services" {
                yaml.name.clone()
            } else {
                format!("{i:03}-{}", yaml.name)
            };
            let prefix = format!("containers/{section}/{name}");
            let yaml = bind_volumes(set, section, i, yaml)?;
            let exec = img.config.config.clone().unwrap_or_default();
            let label = match exec
                .labels
                .as_ref()
                .and_then(|l| l.get(kiln_manifest::CONFIG_LABEL))
            {
                Some(text) => kiln_manifest::parse_label(&img.reference, text)
                    .map_err(AssembleError::Manifest)?,
                None => Image::default(),
            };
            let bundle = oci_config::bundle(&yaml, &label, &exec, &ids, &opts.arch).map_err(|(field, msg)| {
                let mut d = set.diagnostic(section, i, &field, msg);
                d.help = Some(format!("the value comes from the manifest or from the org.mobyproject.config label of {}", img.reference));
                AssembleError::from(d)
            })?;
            container(store, &img, &prefix, &bundle, &mut extracted, &mut out)?;
        }
    }
    files(set, opts, &ids, &mut out)?;
    out.set_origin(None)?;
    if opts.dockerfile {
        out.file(
            "Dockerfile",
            0o644,
            b"\nFROM scratch\n\nCOPY . ./\n\nENTRYPOINT [\"/bin/rc.init\"]\n",
        )?;
    }
    // The SBOM last, as LinuxKit writes its own.
    let Some(state) = out.sbom.take() else {
        return Ok(None);
    };
    let path = sbom_path(&state.settings.path)?;
    let doc = kiln_sbom::render(&state.doc, state.settings.format, state.settings.created);
    out.file(&path, 0o644, &doc)?;
    Ok(Some(doc))
}

/// The SBOM's path in the root filesystem, checked: relative, inside the root, not a directory.
fn sbom_path(raw: &str) -> Result<String, AssembleError> {
    let refuse = |why: &str| AssembleError::SbomPath {
        path: raw.to_string(),
        why: why.to_string(),
    };
    if raw.ends_with('/') {
        return Err(refuse("names a directory"));
    }
    match normalize(raw) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(refuse("is empty")),
        Err(why) => Err(refuse(&why)),
    }
}

/// Where the findings of `img` are kept in `dir`: they depend on its layers alone.
fn findings_file(dir: &std::path::Path, img: &kiln_oci::Image) -> PathBuf {
    let key = format!(
        "kiln-sbom findings {}\nlayers {}",
        kiln_sbom::Findings::VERSION,
        layer_digests(img)
    );
    let digest = kiln_oci::Digest::of(key.as_bytes()).to_string();
    dir.join(format!("{}.json", digest.trim_start_matches("sha256:")))
}

/// The findings kept for `img`, if intact.
fn kept_findings(dir: &std::path::Path, img: &kiln_oci::Image) -> Option<kiln_sbom::Findings> {
    let file = std::fs::File::open(findings_file(dir, img)).ok()?;
    let mut data = Vec::new();
    file.take(kiln_sbom::MAX_IMAGE_BYTES)
        .read_to_end(&mut data)
        .ok()?;
    kiln_sbom::Findings::from_bytes(&data)
}

/// Keep the findings of `img` for later builds (best effort: written whole or not at all).
fn keep_findings(dir: &std::path::Path, img: &kiln_oci::Image, findings: &kiln_sbom::Findings) {
    use std::io::Write as _;
    let dest = findings_file(dir, img);
    if dest.exists() {
        return;
    }
    let kept = std::fs::create_dir_all(dir)
        .and_then(|()| tempfile::NamedTempFile::new_in(dir))
        .and_then(|mut tmp| {
            tmp.write_all(&findings.to_bytes())?;
            tmp.persist(&dest).map_err(|e| e.error)?;
            Ok(())
        });
    if let Err(e) = kept {
        tracing::debug!(
            "cannot keep the SBOM findings of {} in {}: {e}",
            img.reference,
            dir.display()
        );
    }
}

/// The findings of `img` read from its layers (when its entries were not sent and nothing was
/// kept for it).
fn recapture(store: &Store, img: &kiln_oci::Image) -> Result<kiln_sbom::Findings, AssembleError> {
    let mut capture = kiln_sbom::Capture::default();
    Flattener::new(&ImageLayers::new(store, img)).run::<AssembleError>(&mut |entry, data| {
        if entry.kind == Kind::File
            && kiln_sbom::Capture::wants(&entry.path)
            && capture.accepts(&entry.path, entry.size)
        {
            let mut buf = Vec::new();
            data.take(entry.size)
                .read_to_end(&mut buf)
                .map_err(AssembleError::Output)?;
            capture.add(&entry.path, buf);
        } else if let Kind::Symlink(target) = &entry.kind {
            capture.add_link(&entry.path, target);
        }
        Ok(())
    })?;
    Ok(capture.finish())
}

/// The packages of the SBOMs the publisher of `img` attached to it, as far as the store holds
/// them. One that cannot be read is left out with a warning: it is the publisher's, and the
/// build's own findings do not depend on it.
fn attached_packages(store: &Store, img: &kiln_oci::Image) -> Vec<kiln_sbom::parse::Package> {
    let Ok(reference) = img.reference.parse::<Reference>() else {
        return Vec::new();
    };
    let statements = match store.attached_sboms(&reference, &img.digest) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("{}: cannot read its attached SBOM: {e}", img.reference);
            return Vec::new();
        }
    };
    let mut packages = Vec::new();
    for s in statements {
        match kiln_sbom::attached::packages(&s) {
            Ok(p) => packages.extend(p),
            Err(e) => tracing::warn!("{}: its attached SBOM is left out: {e}", img.reference),
        }
    }
    packages.sort();
    packages.dedup();
    packages
}

/// The origin of the entries of `img` at `location`.
fn image_origin(img: &kiln_oci::Image, location: String) -> Origin {
    Origin {
        source: img.reference.clone(),
        location,
        digest: Some(img.digest.to_string()),
        segment: None,
    }
}

/// Rewrite binds that name a volume to the volume's merged directory.
fn bind_volumes(
    set: &ManifestSet,
    section: &str,
    index: usize,
    yaml: &Image,
) -> Result<Image, AssembleError> {
    let mut img = yaml.clone();
    let rewrite = |list: &mut Option<Vec<String>>, field: &str| -> Result<(), AssembleError> {
        for (j, b) in list.iter_mut().flatten().enumerate() {
            let mut parts: Vec<String> = b.split(':').map(String::from).collect();
            if parts[0].starts_with('/') {
                continue;
            }
            let Some(vol) = set.manifest.volumes.iter().find(|v| v.name == parts[0]) else {
                let mut d = set.diagnostic(
                    section,
                    index,
                    &format!("{field}[{j}]"),
                    format!("volume `{}` is not defined", parts[0]),
                );
                d.help = Some("a bind source is an absolute path or the name of a volume in the volumes section".into());
                return Err(d.into());
            };
            if vol.readonly && parts.get(2).map(String::as_str) != Some("ro") {
                let mut d = set.diagnostic(
                    section,
                    index,
                    &format!("{field}[{j}]"),
                    format!(
                        "volume `{}` is read-only, but is bound read-write",
                        vol.name
                    ),
                );
                d.help = Some(format!(
                    "bind it with `:ro`, as in {}:{}:ro",
                    parts[0],
                    parts.get(1).map(String::as_str).unwrap_or("/dest")
                ));
                return Err(d.into());
            }
            parts[0] = format!("/containers/volumes/{}/merged", vol.name);
            *b = parts.join(":");
        }
        Ok(())
    };
    rewrite(&mut img.binds, "binds")?;
    rewrite(&mut img.binds_add, "binds.add")?;
    for (j, mount) in img.mounts.iter_mut().flatten().enumerate() {
        if mount.kind != "bind" || mount.source.starts_with('/') {
            continue;
        }
        let Some(vol) = set.manifest.volumes.iter().find(|v| v.name == mount.source) else {
            return Err(set
                .diagnostic(
                    section,
                    index,
                    &format!("mounts[{j}].source"),
                    format!("volume `{}` is not defined", mount.source),
                )
                .into());
        };
        let opts = mount.options.clone().unwrap_or_default();
        let ro = opts
            .iter()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro");
        if vol.readonly && !ro {
            return Err(set
                .diagnostic(
                    section,
                    index,
                    &format!("mounts[{j}]"),
                    format!(
                        "volume `{}` is read-only, but is mounted read-write; add the `ro` option",
                        vol.name
                    ),
                )
                .into());
        }
        mount.source = format!("/containers/volumes/{}/merged", vol.name);
    }
    Ok(img)
}

/// One image flattened under `prefix`, with LinuxKit's adjustments: files Docker adds are
/// dropped, /etc/hosts and /etc/resolv.conf replaced, and the mount points every container
/// needs (dev, proc, sys, ...) created.
///
/// One segment, keyed by the image's layers, the prefix and the resolv.conf link: nothing else
/// shapes these entries.
fn image_tar(
    store: &Store,
    img: &kiln_oci::Image,
    prefix: &str,
    resolv: Option<&str>,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    let key = format!(
        "image {}\nlayers {}\nprefix {prefix}\nresolv {resolv:?}",
        img.reference,
        layer_digests(img)
    );
    let segment = kiln_oci::Digest::of(out.segment_key(&key).as_bytes()).to_string();
    let sent = out.begin_segment(&key)?;
    if sent {
        out.start_capture(prefix);
        let outer = out.origin.clone();
        let origin = outer.clone().map(|o| Origin {
            segment: Some(segment),
            ..o
        });
        out.set_origin(origin.clone())?;
        let reused = match &origin {
            Some(o) => out.reuse(o, prefix)?,
            None => false,
        };
        if !reused {
            image_entries(store, img, prefix, resolv, out)?;
        }
        out.set_origin(outer)?;
    }
    out.end_segment()?;
    out.finish_capture(store, img, sent)
}

/// The layer digests of `img`, in order: what its flattened content depends on.
fn layer_digests(img: &kiln_oci::Image) -> String {
    let digests: Vec<&str> = img
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.as_str())
        .collect();
    digests.join(" ")
}

fn image_entries(
    store: &Store,
    img: &kiln_oci::Image,
    prefix: &str,
    resolv: Option<&str>,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    out.prefix_dirs(prefix)?;
    let mut seen: HashSet<String> = HashSet::new();
    let now = out.now();
    Flattener::new(&ImageLayers::new(store, img)).run::<AssembleError>(&mut |entry, data| {
        let rel = entry.path.as_str();
        if EXCLUDED.contains(&rel) || rel == "etc/hosts" || rel == "etc/resolv.conf" {
            return Ok(());
        }
        let mut e = entry.clone();
        if TOUCH_DIRS.contains(&rel) {
            e = Entry::dir(rel, 0o755, now);
        }
        seen.insert(rel.to_string());
        e.path = format!("{prefix}{rel}");
        if let Kind::Hardlink(t) = &e.kind {
            e.kind = Kind::Hardlink(format!("{prefix}{t}"));
        }
        out.add(e, data)
    })?;
    for name in [
        "dev",
        "dev/pts",
        "dev/shm",
        "etc",
        "etc/hosts",
        "etc/mtab",
        "etc/resolv.conf",
        "proc",
        "sys",
    ] {
        if seen.contains(name) {
            continue;
        }
        let path = format!("{prefix}{name}");
        match name {
            "etc/hosts" => out.file(&path, 0o644, HOSTS.as_bytes())?,
            "etc/mtab" => out.add(
                Entry::symlink(path, "/proc/mounts", 0o755, now),
                &mut std::io::empty(),
            )?,
            "etc/resolv.conf" => match resolv {
                Some(target) => out.add(
                    Entry::symlink(path, target, 0o644, now),
                    &mut std::io::empty(),
                )?,
                None => out.file(&path, 0o644, RESOLV.as_bytes())?,
            },
            _ => out.dir(&path, 0o755)?,
        }
    }
    Ok(())
}

fn container(
    store: &Store,
    img: &kiln_oci::Image,
    prefix: &str,
    bundle: &oci_config::Bundle,
    extracted: &mut HashMap<String, String>,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    let root_dir = format!(
        "{prefix}/{}",
        if bundle.readonly { "rootfs" } else { "lower" }
    );
    let (root, found_elsewhere) = match extracted.get(&img.reference) {
        Some(r) => {
            out.record(store, img, kiln_sbom::Findings::default());
            out.prefix_dirs(&format!("{prefix}/"))?;
            (r.clone(), true)
        }
        None => {
            image_tar(store, img, &format!("{root_dir}/"), None, out)?;
            extracted.insert(img.reference.clone(), root_dir.clone());
            (root_dir, false)
        }
    };
    out.file(
        &format!("{prefix}/config.json"),
        0o644,
        &to_go_json(&bundle.config),
    )?;
    if bundle.readonly {
        if found_elsewhere {
            out.dir(&format!("{prefix}/rootfs"), 0o755)?;
        }
    } else {
        out.dir(&format!("{prefix}/tmp"), 0o755)?;
        out.dir(&format!("{prefix}/rootfs"), 0o755)?;
    }
    let rootfs_mounts = oci_config::rootfs_mounts(prefix, &root, bundle.readonly);
    out.file(
        &format!("{prefix}/runtime.json"),
        0o644,
        &to_go_json(&bundle.runtime.with_rootfs(rootfs_mounts)),
    )
}

/// boot/kernel, boot/cmdline, boot/ucode.cpio and the kernel.tar contents.
fn kernel_files(
    store: &Store,
    img: &kiln_oci::Image,
    set: &ManifestSet,
    decompress: bool,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    let k = &set.manifest.kernel;
    let binary = if k.binary.is_empty() {
        "kernel"
    } else {
        k.binary.as_str()
    };
    let tar_name = match k.tar.as_deref() {
        None => Some("kernel.tar"),
        Some("none") | Some("") => None,
        Some(t) => Some(t),
    };
    let ucode = k.ucode.as_deref().filter(|u| !u.is_empty());
    let (mut found_kernel, mut found_tar, mut found_ucode) = (false, false, false);
    let now = out.now();
    out.dir("boot", 0o755)?;
    // Microcode first (a pass of its own): it must lead the initrd, whatever the layer order.
    if let Some(u) = ucode {
        Flattener::new(&ImageLayers::new(store, img)).run::<AssembleError>(
            &mut |entry, data| {
                if entry.path == u && entry.kind == Kind::File {
                    found_ucode = true;
                    out.add(entry.moved_to("boot/ucode.cpio", now), data)?;
                }
                Ok(())
            },
        )?;
    }
    Flattener::new(&ImageLayers::new(store, img)).run::<AssembleError>(&mut |entry, data| {
        let rel = entry.path.as_str();
        if rel == binary && entry.kind == Kind::File {
            found_kernel = true;
            out.file("boot/cmdline", 0o644, k.cmdline.as_bytes())?;
            if decompress {
                let mut image = Vec::new();
                data.read_to_end(&mut image)
                    .map_err(AssembleError::Output)?;
                let plain = kiln_format::decompress_kernel(&image).map_err(|why| {
                    AssembleError::KernelDecompress {
                        image: img.reference.clone(),
                        file: binary.to_string(),
                        why,
                    }
                })?;
                let mut moved = entry.moved_to("boot/kernel", now);
                moved.size = plain.len() as u64;
                out.add(moved, &mut plain.as_slice())?;
            } else {
                out.add(entry.moved_to("boot/kernel", now), data)?;
            }
        } else if Some(rel) == tar_name && entry.kind == Kind::File {
            found_tar = true;
            let key = format!("kernel modules {rel}\nlayers {}", layer_digests(img));
            if out.begin_segment(&key)? {
                modules_tar(img, data, out)?;
            }
            out.end_segment()?;
        }
        Ok(())
    })?;
    let missing = |file: &str| AssembleError::KernelFile {
        image: img.reference.clone(),
        file: file.into(),
    };
    if !found_kernel {
        return Err(missing(binary));
    }
    if let (Some(t), false) = (tar_name, found_tar) {
        return Err(missing(t));
    }
    if let (Some(u), false) = (ucode, found_ucode) {
        return Err(missing(u));
    }
    Ok(())
}

/// The kernel image's modules tarball, merged at /.
fn modules_tar(
    img: &kiln_oci::Image,
    data: &mut dyn Read,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    let hostile = |path: &str, why: String| LayerError::Hostile {
        image: img.reference.clone(),
        layer: "kernel.tar".into(),
        path: path.into(),
        why,
    };
    let io = |e| LayerError::Read {
        image: img.reference.clone(),
        layer: "kernel.tar".into(),
        source: e,
    };
    let mut archive = tar::Archive::new(data);
    for member in archive.entries().map_err(io)? {
        let mut member = member.map_err(io)?;
        let raw = String::from_utf8_lossy(&member.path_bytes()).to_string();
        let path = match normalize(&raw) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(why) => return Err(hostile(&raw, why).into()),
        };
        let Some(mut entry) = entry_from_tar(&mut member, path.clone()).map_err(io)? else {
            continue;
        };
        if let Kind::Hardlink(t) = &entry.kind {
            match normalize(t) {
                Ok(Some(t)) => entry.kind = Kind::Hardlink(t),
                _ => {
                    return Err(
                        hostile(&path, format!("hard link to `{t}`, outside the image")).into(),
                    );
                }
            }
        }
        out.add(entry, &mut member)?;
    }
    Ok(())
}

fn files(
    set: &ManifestSet,
    opts: &Options,
    ids: &HashMap<String, u32>,
    out: &mut Emitter<'_>,
) -> Result<(), AssembleError> {
    let mut added: HashSet<String> = HashSet::new();
    let mut source_bytes: u64 = 0;
    for (i, f) in set.manifest.files.iter().enumerate() {
        out.set_origin(Some(Origin {
            source: "linuxkit.files".into(),
            location: format!("files[{i}]"),
            ..Origin::default()
        }))?;
        let path = f.image_path().to_string();
        let mut mode = if f.directory { 0o700 } else { 0o600 };
        if !f.mode.is_empty() {
            mode = u32::from_str_radix(&f.mode, 8).map_err(|_| {
                AssembleError::from(set.diagnostic(
                    "files",
                    i,
                    "mode",
                    format!("cannot parse `{}` as an octal mode", f.mode),
                ))
            })?;
        }
        let mut dir_mode = mode;
        for (r, x) in [(0o700, 0o100), (0o070, 0o010), (0o007, 0o001)] {
            if dir_mode & r != 0 {
                dir_mode |= x;
            }
        }
        let id = |v: &Option<kiln_manifest::Id>, field: &str| -> Result<u64, AssembleError> {
            match v {
                None => Ok(0),
                Some(kiln_manifest::Id::Num(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
                Some(kiln_manifest::Id::Name(n)) if n.is_empty() || n == "root" => Ok(0),
                Some(kiln_manifest::Id::Name(n)) => {
                    ids.get(n).map(|v| u64::from(*v)).ok_or_else(|| {
                        set.diagnostic("files", i, field, format!("cannot find id `{n}`"))
                            .into()
                    })
                }
            }
        };
        let (uid, gid) = (id(&f.uid, "uid")?, id(&f.gid, "gid")?);
        let contents: Option<Contents> = if f.directory || !f.symlink.is_empty() {
            None
        } else if let Some(c) = &f.contents {
            Some(Contents::Bytes(c.clone().into_bytes()))
        } else if !f.source.is_empty() {
            match open_source(set, opts, i, &mut source_bytes)? {
                Some(source) => Some(source),
                None => continue,
            }
        } else {
            Some(Contents::Bytes(
                crate::metadata::render(&set.manifest, &f.metadata).into_bytes(),
            ))
        };
        let now = out.now();
        if let Some(parent) = path.rfind('/').map(|p| &path[..p]) {
            let mut dir = String::new();
            for part in parent.split('/').filter(|p| !p.is_empty() && *p != ".") {
                if !dir.is_empty() {
                    dir.push('/');
                }
                dir.push_str(part);
                if added.insert(dir.clone()) {
                    let e = Entry {
                        uid,
                        gid,
                        ..Entry::dir(dir.clone(), dir_mode, now)
                    };
                    out.add(e, &mut std::io::empty())?;
                }
            }
        }
        added.insert(path.clone());
        let base = Entry {
            uid,
            gid,
            ..Entry::dir(path.clone(), mode, now)
        };
        match contents {
            None if f.directory => out.add(base, &mut std::io::empty())?,
            None => out.add(
                Entry {
                    kind: Kind::Symlink(f.symlink.clone()),
                    ..base
                },
                &mut std::io::empty(),
            )?,
            Some(Contents::Bytes(data)) => out.add(
                Entry {
                    kind: Kind::File,
                    size: data.len() as u64,
                    ..base
                },
                &mut &data[..],
            )?,
            Some(Contents::Source(mut source)) => out.add(
                Entry {
                    kind: Kind::File,
                    size: source.remaining,
                    ..base
                },
                &mut source,
            )?,
        }
    }
    Ok(())
}

/// The data of a `files` entry: bytes from the manifest, or a host file streamed as it is
/// written out.
enum Contents {
    Bytes(Vec<u8>),
    Source(SourceReader),
}

/// Open `files[i].source` to stream it. Only a regular file is accepted: the file is opened
/// without blocking (a FIFO cannot hang the build) and checked on the open descriptor, and the
/// sizes of all sources together stay within [`kiln_manifest::limits::MAX_SOURCE_BYTES`]
/// (`total` counts them). `None` when the source cannot be opened and the entry is optional.
fn open_source(
    set: &ManifestSet,
    opts: &Options,
    i: usize,
    total: &mut u64,
) -> Result<Option<Contents>, AssembleError> {
    use kiln_manifest::limits::MAX_SOURCE_BYTES;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = &set.manifest.files[i];
    let source = match f.source.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => opts.base_dir.join(&f.source),
    };
    let refuse = |message: String, help: &str| -> AssembleError {
        let mut d = set.diagnostic("files", i, "source", message);
        d.help = Some(help.to_string());
        d.into()
    };
    let io_error = |e: std::io::Error| {
        let d = set.diagnostic("files", i, "source", String::new());
        AssembleError::Source {
            location: format!(
                "{}:{}:{}: {}",
                d.file,
                d.line.unwrap_or(0),
                d.column.unwrap_or(0),
                d.path
            ),
            path: source.display().to_string(),
            source: e,
        }
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(&source)
    {
        Ok(file) => file,
        Err(_) if f.optional => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let meta = file.metadata().map_err(io_error)?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a named pipe (FIFO)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        return Err(refuse(
            format!(
                "source `{}` is {what}, not a regular file",
                source.display()
            ),
            if kind.is_dir() {
                "a source is one regular file: give each file of the directory its own entry, or use `directory: true` for an empty directory"
            } else {
                "a source is a regular file whose contents are copied into the image; copy the data into a file and name that"
            },
        ));
    }
    let size = meta.len();
    *total = total.saturating_add(size);
    if *total > MAX_SOURCE_BYTES {
        return Err(refuse(
            format!(
                "source `{}` is {size} bytes, which brings the sources of files to {total} bytes, more than the limit of {} MiB",
                source.display(),
                MAX_SOURCE_BYTES >> 20
            ),
            "files sources are for configuration; put large data into an image (a package) and add it with init or as a container",
        ));
    }
    let d = set.diagnostic("files", i, "source", String::new());
    Ok(Some(Contents::Source(SourceReader {
        file: file.take(size),
        remaining: size,
        what: format!(
            "{}:{}: {}: source `{}`",
            d.file,
            d.line.unwrap_or(0),
            d.path,
            source.display()
        ),
    })))
}

/// Yields exactly the `remaining` bytes a source file had when it was measured: what it grows
/// by afterwards is not read, and an early end (it shrank) is an error.
struct SourceReader {
    file: std::io::Take<std::fs::File>,
    remaining: u64,
    what: String,
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} shrank by {} bytes while it was read; build again once it is stable",
                    self.what, self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod source_tests {
    use super::SourceReader;
    use std::io::Read;

    fn reader(file: &std::path::Path, measured: u64) -> SourceReader {
        let f = std::fs::File::open(file).expect("open");
        SourceReader {
            file: f.take(measured),
            remaining: measured,
            what: "m.yml:3: files[0].source: source `f`".into(),
        }
    }

    #[test]
    fn a_source_yields_what_it_held_when_measured() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").expect("write");
        // It grew after it was measured: the growth is not read.
        let mut out = Vec::new();
        reader(&f, 4).read_to_end(&mut out).expect("read");
        assert_eq!(out, b"0123");
        // It shrank: an error naming the source, not short or padded data.
        let e = reader(&f, 20)
            .read_to_end(&mut Vec::new())
            .expect_err("shrank");
        assert!(
            e.to_string()
                .starts_with("m.yml:3: files[0].source: source `f` shrank by 10 bytes"),
            "{e}"
        );
    }
}
