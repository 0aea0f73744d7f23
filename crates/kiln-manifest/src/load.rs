//! Loading manifests: YAML parsing with located errors, merging several files, validation.

use crate::error::{Diagnostic, ManifestError};
use crate::limits::{self, MAX_DOCUMENT_BYTES};
use crate::locate::{Locations, Position};
use crate::schema::{File, Id, Image, Manifest, Trust};
use std::collections::HashMap;
use std::path::Path;

/// The sections that hold containers, in the order LinuxKit allocates their ids.
pub const CONTAINER_SECTIONS: [&str; 3] = ["onboot", "onshutdown", "services"];

/// Where a merged entry came from: which file, and its index in that file's section.
#[derive(Debug, Clone, Copy)]
struct Origin {
    file: usize,
    index: usize,
}

/// One or more manifest files merged into one, remembering where every entry came from so that
/// later stages can point at the file and line of a problem.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    /// The merged manifest.
    pub manifest: Manifest,
    files: Vec<(String, Locations)>,
    origins: HashMap<(&'static str, usize), Origin>,
    kernel_origin: Option<usize>,
    /// Each file's `trust:` section, with the index of its file.
    trusts: Vec<(usize, Trust)>,
}

/// One file's `trust:` section, as [`ManifestSet::trust_sections`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct TrustSection<'a> {
    /// Its position among the set's trust sections (for [`ManifestSet::trust_diagnostic`]).
    pub index: usize,
    /// The name of the file it is in, as given to [`ManifestSet::add`] (a path for files read
    /// by [`ManifestSet::load`]): the paths of `keys` are relative to its directory.
    pub file: &'a str,
    /// The section.
    pub trust: &'a Trust,
}

fn static_section(section: &str) -> &'static str {
    match section {
        "onboot" => "onboot",
        "onshutdown" => "onshutdown",
        "services" => "services",
        "files" => "files",
        "volumes" => "volumes",
        "init" => "init",
        _ => "kernel",
    }
}

impl ManifestSet {
    /// Read and merge files in order: kernel fields of later files override, lists append.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ManifestError> {
        let mut set = ManifestSet::default();
        for p in paths {
            let p = p.as_ref();
            let text = read_bounded(p)?;
            set.add(&p.display().to_string(), &text)?;
        }
        set.validate()?;
        Ok(set)
    }

    /// Read one document named `name` from `reader` (standard input, a download), bounded as
    /// files are, and merge it. Call [`ManifestSet::validate`] when done.
    pub fn add_reader(
        &mut self,
        name: &str,
        reader: impl std::io::Read,
    ) -> Result<(), ManifestError> {
        let text = read_document(name, reader)?;
        self.add(name, &text)
    }

    /// Parse one document from memory and merge it. Call [`ManifestSet::validate`] when done.
    pub fn add(&mut self, name: &str, text: &str) -> Result<(), ManifestError> {
        let m = parse_document(name, text).map_err(ManifestError::Invalid)?;
        let file = self.files.len();
        self.files.push((name.to_string(), Locations::index(text)));
        let base = &mut self.manifest;
        let k = m.kernel;
        if !k.image.is_empty() {
            base.kernel.image = k.image;
            self.kernel_origin = Some(file);
        }
        if !k.cmdline.is_empty() {
            base.kernel.cmdline = k.cmdline;
        }
        if !k.binary.is_empty() {
            base.kernel.binary = k.binary;
        }
        if k.tar.is_some() {
            base.kernel.tar = k.tar;
        }
        if k.ucode.is_some() {
            base.kernel.ucode = k.ucode;
        }
        let mut record = |section: &'static str, start: usize, count: usize| {
            for i in 0..count {
                self.origins
                    .insert((section, start + i), Origin { file, index: i });
            }
        };
        record("init", base.init.len(), m.init.len());
        record("onboot", base.onboot.len(), m.onboot.len());
        record("onshutdown", base.onshutdown.len(), m.onshutdown.len());
        record("services", base.services.len(), m.services.len());
        record("files", base.files.len(), m.files.len());
        record("volumes", base.volumes.len(), m.volumes.len());
        base.init.extend(m.init);
        base.onboot.extend(m.onboot);
        base.onshutdown.extend(m.onshutdown);
        base.services.extend(m.services);
        base.files.extend(m.files);
        base.volumes.extend(m.volumes);
        if let Some(t) = m.trust {
            let merged = base.trust.get_or_insert_with(Trust::default);
            for (into, from) in [
                (&mut merged.image, &t.image),
                (&mut merged.org, &t.org),
                (&mut merged.keys, &t.keys),
            ] {
                if let Some(from) = from {
                    into.get_or_insert_with(Vec::new)
                        .extend(from.iter().cloned());
                }
            }
            self.trusts.push((file, t));
        }
        Ok(())
    }

    /// Every file's `trust:` section, in the order the files were added. Each keeps its own
    /// `keys`, relative to its own file.
    pub fn trust_sections(&self) -> Vec<TrustSection<'_>> {
        self.trusts
            .iter()
            .enumerate()
            .map(|(index, (file, trust))| TrustSection {
                index,
                file: self
                    .files
                    .get(*file)
                    .map_or("<manifest>", |(n, _)| n.as_str()),
                trust,
            })
            .collect()
    }

    /// A diagnostic pointing at `field` (`image[0]`, `keys[1]`, or empty for the section) of
    /// the trust section `index` of [`ManifestSet::trust_sections`].
    pub fn trust_diagnostic(&self, index: usize, field: &str, message: String) -> Diagnostic {
        let file = self.trusts.get(index).map_or(0, |(f, _)| *f);
        let path = join_field("trust", field);
        self.located(file, path, message)
    }

    /// A diagnostic pointing at `field` (dotted, may be empty) of entry `index` of `section` in
    /// the merged manifest.
    pub fn diagnostic(
        &self,
        section: &str,
        index: usize,
        field: &str,
        message: String,
    ) -> Diagnostic {
        let section = static_section(section);
        let (file, path) = match (section, self.origins.get(&(section, index))) {
            ("kernel", _) => (self.kernel_origin.unwrap_or(0), join_field("kernel", field)),
            (_, Some(o)) => (
                o.file,
                join_field(&format!("{section}[{}]", o.index), field),
            ),
            (_, None) => (0, join_field(&format!("{section}[{index}]"), field)),
        };
        self.located(file, path, message)
    }

    /// A diagnostic at the key `path` of manifest file number `file`.
    fn located(&self, file: usize, path: String, message: String) -> Diagnostic {
        let (name, pos) = match self.files.get(file) {
            Some((name, locs)) => (name.clone(), locs.find(&path)),
            None => ("<manifest>".to_string(), None),
        };
        Diagnostic {
            file: name,
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path,
            message,
            help: None,
        }
    }

    /// Check what the schema alone cannot: required keys, unique names, id references, file
    /// entries that make sense.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let m = &self.manifest;
        let mut names: HashMap<&str, &'static str> = HashMap::new();
        for section in CONTAINER_SECTIONS {
            for (i, img) in m.containers(section).iter().enumerate() {
                if img.name.is_empty() {
                    return Err(self.missing(section, i, "name", "a container needs a name"));
                }
                if let Err(r) = crate::paths::check_name(&img.name) {
                    let mut d = self.diagnostic(section, i, "name", r.message);
                    d.help = Some(r.help);
                    return Err(d.into());
                }
                if img.image.is_empty() {
                    return Err(self.missing(
                        section,
                        i,
                        "image",
                        "a container needs an image reference",
                    ));
                }
                let previous = names.insert(&img.name, section);
                if section == "services" && previous == Some("services") {
                    let first = m
                        .containers(section)
                        .iter()
                        .position(|x| x.name == img.name)
                        .unwrap_or(0);
                    let mut d = self.diagnostic(
                        section,
                        i,
                        "name",
                        format!("duplicate service name `{}`", img.name),
                    );
                    d.help = Some(format!(
                        "service names must be unique, as services run side by side; `{}` is first used at {}",
                        img.name,
                        self.where_is(section, first, "name")
                    ));
                    return Err(d.into());
                }
            }
        }
        for section in CONTAINER_SECTIONS {
            for (i, img) in m.containers(section).iter().enumerate() {
                self.check_id(section, i, "uid", img.uid.as_ref())?;
                self.check_id(section, i, "gid", img.gid.as_ref())?;
                for (j, id) in img.additional_gids.iter().flatten().enumerate() {
                    self.check_id(section, i, &format!("additionalGids[{j}]"), Some(id))?;
                }
            }
        }
        let mut volumes = HashMap::new();
        for (i, v) in m.volumes.iter().enumerate() {
            if v.name.is_empty()
                || !v
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                let mut d = self.diagnostic(
                    "volumes",
                    i,
                    "name",
                    format!("invalid volume name `{}`", v.name),
                );
                d.help = Some("use lowercase letters, digits, `_` and `-`".into());
                return Err(d.into());
            }
            if volumes.insert(&v.name, i).is_some() {
                return Err(self
                    .diagnostic(
                        "volumes",
                        i,
                        "name",
                        format!("duplicate volume name `{}`", v.name),
                    )
                    .into());
            }
        }
        for (i, f) in m.files.iter().enumerate() {
            self.check_file(i, f)?;
            self.check_id("files", i, "uid", f.uid.as_ref())?;
            self.check_id("files", i, "gid", f.gid.as_ref())?;
        }
        self.check_trust()?;
        self.check_file_conflicts()
    }

    /// Every `trust:` entry is a plain non-empty string, and `keys` comes with something to
    /// apply to (what the entries mean is `kiln-trust`'s to check).
    fn check_trust(&self) -> Result<(), ManifestError> {
        for (index, (_, t)) in self.trusts.iter().enumerate() {
            let err = |field: String, message: String, help: &str| -> ManifestError {
                let mut d = self.trust_diagnostic(index, &field, message);
                d.help = Some(help.to_string());
                d.into()
            };
            for (key, list) in [("image", &t.image), ("org", &t.org), ("keys", &t.keys)] {
                for (i, v) in list.iter().flatten().enumerate() {
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(err(
                            format!("{key}[{i}]"),
                            format!(
                                "`{}` is not a valid entry",
                                shorten(v, SHOWN_CHARS).escape_debug()
                            ),
                            match key {
                                "image" => {
                                    "give an image name such as `registry.example.com/tool` or `linuxkit/kernel:6.6`"
                                }
                                "org" => {
                                    "give an organisation such as `linuxkit` or `registry.example.com/team`"
                                }
                                _ => {
                                    "give the path of a public key file (PEM), relative to this manifest"
                                }
                            },
                        ));
                    }
                }
            }
            if t.keys.is_some() && t.is_empty() {
                return Err(err(
                    "keys".into(),
                    "`keys` applies to nothing: this trust section names no image and no org"
                        .into(),
                    "list the images (`image:`) or organisations (`org:`) that must be signed with these keys",
                ));
            }
            if t.keys.as_ref().is_some_and(Vec::is_empty) {
                return Err(err(
                    "keys".into(),
                    "`keys` is empty".into(),
                    "give at least one public key file, or remove `keys` to take the keys from the policy file",
                ));
            }
        }
        Ok(())
    }

    /// No two `files` entries share a path, and none lies beneath an entry that is not a
    /// directory (call after every entry's path passed [`crate::paths::check_file_path`]).
    fn check_file_conflicts(&self) -> Result<(), ManifestError> {
        let files = &self.manifest.files;
        let conflict =
            crate::paths::find_conflict(files.iter().map(|f| (f.image_path(), f.directory)));
        let (at, message, help) = match conflict {
            None => return Ok(()),
            Some(crate::paths::Conflict::Duplicate { first, later }) => (
                later,
                format!("duplicate file path `{}`", files[later].image_path()),
                format!(
                    "each path may appear once in files; it is first used at {}: remove one of the entries",
                    self.where_is("files", first, "path")
                ),
            ),
            Some(crate::paths::Conflict::Beneath { parent, child }) => {
                let kind = if files[parent].symlink.is_empty() {
                    "a file"
                } else {
                    "a symlink"
                };
                let (at, other) = (parent.max(child), parent.min(child));
                (
                    at,
                    format!(
                        "file path `{}` lies beneath `{}`, which is {kind}",
                        files[child].image_path(),
                        files[parent].image_path()
                    ),
                    format!(
                        "the other entry is at {}; a file or symlink cannot hold other files: make it a directory (`directory: true`) or move one of the entries",
                        self.where_is("files", other, "path")
                    ),
                )
            }
        };
        let mut d = self.diagnostic("files", at, "path", message);
        d.help = Some(help);
        Err(d.into())
    }

    fn where_is(&self, section: &str, index: usize, field: &str) -> String {
        let d = self.diagnostic(section, index, field, String::new());
        match (d.line, d.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", d.file),
            _ => d.file,
        }
    }

    fn missing(&self, section: &str, index: usize, key: &str, why: &str) -> ManifestError {
        let mut d = self.diagnostic(section, index, "", format!("missing key `{key}`"));
        d.help = Some(format!("{why}: add `{key}:` to this entry"));
        d.into()
    }

    fn check_id(
        &self,
        section: &str,
        index: usize,
        field: &str,
        id: Option<&Id>,
    ) -> Result<(), ManifestError> {
        match id {
            Some(Id::Name(name)) if !name.is_empty() && name != "root" => {
                let known = CONTAINER_SECTIONS
                    .iter()
                    .flat_map(|s| self.manifest.containers(s))
                    .any(|img| &img.name == name);
                if known {
                    return Ok(());
                }
                let mut d =
                    self.diagnostic(section, index, field, format!("cannot find id `{name}`"));
                d.help = Some("a named uid or gid must be `root` or the name of a container in onboot, onshutdown or services".into());
                Err(d.into())
            }
            Some(Id::Num(n)) if *n < 0 || *n > i64::from(u32::MAX) => Err(self
                .diagnostic(
                    section,
                    index,
                    field,
                    format!("id {n} is out of range (0 to 4294967295)"),
                )
                .into()),
            _ => Ok(()),
        }
    }

    fn check_file(&self, i: usize, f: &File) -> Result<(), ManifestError> {
        let err = |field: &str, msg: String, help: &str| -> ManifestError {
            let mut d = self.diagnostic("files", i, field, msg);
            d.help = Some(help.to_string());
            d.into()
        };
        if f.path.is_empty() {
            return Err(err(
                "path",
                "file path is empty".into(),
                "give the path of the file in the image, such as `etc/motd`",
            ));
        }
        if let Err(r) = crate::paths::check_file_path(&f.path, f.directory) {
            return Err(err("path", r.message, &r.help));
        }
        if let Err(r) = crate::paths::check_symlink_target(&f.symlink) {
            return Err(err("symlink", r.message, &r.help));
        }
        if f.source.contains('\0') {
            return Err(err(
                "source",
                format!(
                    "source path `{}` contains a NUL byte",
                    f.source.escape_debug()
                ),
                "a path cannot contain NUL; remove it",
            ));
        }
        let kinds = [
            ("contents", f.contents.is_some()),
            ("source", !f.source.is_empty()),
            ("metadata", !f.metadata.is_empty()),
            ("symlink", !f.symlink.is_empty()),
            ("directory", f.directory),
        ];
        let set: Vec<&str> = kinds
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| *k)
            .collect();
        if set.len() > 1 {
            return Err(err(
                set[1],
                format!(
                    "specified both `{}` and `{}` for file {}",
                    set[0], set[1], f.path
                ),
                "a file entry takes exactly one of contents, source, metadata, symlink or directory",
            ));
        }
        if set.is_empty() {
            return Err(err(
                "",
                format!("contents of file {} not specified", f.path),
                "add one of contents, source, metadata, symlink or `directory: true`",
            ));
        }
        if !f.metadata.is_empty() && f.metadata != "yaml" && f.metadata != "json" {
            return Err(err(
                "metadata",
                format!("unsupported metadata type `{}`", f.metadata),
                "use `yaml` or `json`",
            ));
        }
        if !f.mode.is_empty() && u32::from_str_radix(&f.mode, 8).map_or(true, |m| m > 0o7777) {
            return Err(err(
                "mode",
                format!("cannot parse file mode `{}` as an octal value", f.mode),
                "write the mode in octal, quoted, such as \"0644\"",
            ));
        }
        Ok(())
    }
}

/// Read a manifest file (see [`read_document`]).
fn read_bounded(p: &Path) -> Result<String, ManifestError> {
    let name = p.display().to_string();
    let file = std::fs::File::open(p).map_err(|source| ManifestError::Read {
        path: name.clone(),
        source,
    })?;
    read_document(&name, file)
}

/// Read the document `name` from `reader`, but no more than one byte beyond
/// [`MAX_DOCUMENT_BYTES`]: a longer one is refused by [`parse_document`] with its size limit,
/// and an endless one (a device, a pipe) does not eat memory.
fn read_document(name: &str, reader: impl std::io::Read) -> Result<String, ManifestError> {
    use std::io::Read;
    let read_err = |source| ManifestError::Read {
        path: name.to_string(),
        source,
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        // A cut through a multi-byte character at the limit: the size check refuses it anyway.
        Err(e) if e.as_bytes().len() > MAX_DOCUMENT_BYTES => {
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
        Err(e) => {
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text: {}", e.utf8_error()),
            )));
        }
    };
    Ok(text)
}

fn join_field(base: &str, field: &str) -> String {
    match field {
        "" => base.to_string(),
        f if f.starts_with('[') => format!("{base}{f}"),
        f => format!("{base}.{f}"),
    }
}

/// Parse one YAML document into a manifest, with a located, helpful error.
///
/// The text is refused, before any parsing, when it is larger than [`MAX_DOCUMENT_BYTES`] or
/// nests deeper than [`MAX_DEPTH`](crate::limits::MAX_DEPTH).
pub fn parse_document(name: &str, text: &str) -> Result<Manifest, Box<Diagnostic>> {
    limits::check(name, text, limits::Kind::Manifest)?;
    if text.trim().is_empty() {
        return Ok(Manifest::default());
    }
    serde_norway::from_str::<Manifest>(text).map_err(|e| Box::new(serde_diagnostic(name, text, &e)))
}

/// Parse an `org.mobyproject.config` image label (JSON or YAML).
///
/// The text is refused, before any parsing, when it is larger than
/// [`MAX_LABEL_BYTES`](crate::limits::MAX_LABEL_BYTES) or nests deeper than
/// [`MAX_DEPTH`](crate::limits::MAX_DEPTH).
pub fn parse_label(image: &str, text: &str) -> Result<Image, Box<Diagnostic>> {
    let label_name = format!("label org.mobyproject.config of {image}");
    limits::check(&label_name, text, limits::Kind::Label)?;
    let img: Image =
        serde_norway::from_str(text).map_err(|e| serde_diagnostic(&label_name, text, &e))?;
    for (key, value) in [("name", &img.name), ("image", &img.image)] {
        if !value.is_empty() {
            return Err(Box::new(Diagnostic {
                file: label_name,
                line: None,
                column: None,
                path: key.into(),
                message: format!("{key} cannot be set in an image label"),
                help: Some("remove it from the label; the manifest names the container".into()),
            }));
        }
    }
    Ok(img)
}

/// Turn a serde_norway error into a diagnostic: position, key path, message, and a suggestion
/// for misspelt keys.
fn serde_diagnostic(name: &str, text: &str, e: &serde_norway::Error) -> Diagnostic {
    let full = e.to_string();
    let mut pos = e.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    // serde_norway renders "path: message at line L column C"; drop that suffix when it repeats
    // the position we report (a syntax error's second position, "while scanning a quoted scalar
    // at line 3 column 12", says where the construct began and is kept).
    let suffix = pos.map(|p| format!(" at line {} column {}", p.line, p.column));
    let body = match suffix.as_deref() {
        Some(s) => full.replacen(s, "", 1),
        None => full.clone(),
    };
    let body = body.as_str();
    let (path, message) = match body.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && !p.is_empty() => (p.to_string(), m.to_string()),
        _ => (String::new(), body.to_string()),
    };
    let mut help = None;
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        // A misspelt key is short; comparing a long one costs time for nothing.
        let best = candidates
            .iter()
            .filter(|_| field.len() <= SHOWN_CHARS)
            .map(|c| (strsim::damerau_levenshtein(field, c), *c))
            .min();
        help = Some(match best {
            Some((d, c)) if d <= 3 => format!("did you mean `{c}`?"),
            _ => format!("valid keys here: {}", candidates.join(", ")),
        });
        let key_path = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        if let Some(p) = Locations::index(text).key(&key_path) {
            pos = Some(p);
        }
        return Diagnostic {
            file: name.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: shorten(&key_path, SHOWN_CHARS),
            message: format!("unknown key `{}`", shorten(field, SHOWN_CHARS)),
            help,
        };
    }
    if path.is_empty()
        && message.starts_with("invalid type")
        && message.ends_with("expected struct Manifest")
    {
        return Diagnostic {
            file: name.into(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path,
            message: "this document is not a manifest: a manifest is a mapping".into(),
            help: Some(
                "start with top-level keys such as `kernel:`, `init:`, `onboot:` and `services:`"
                    .into(),
            ),
        };
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        help = Some(expectation_help(&path));
    }
    Diagnostic {
        file: name.into(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        path: shorten(&path, SHOWN_CHARS * 4),
        // serde quotes offending values whole; a long one is cut.
        message: shorten(&message, SHOWN_CHARS * 4),
        help,
    }
}

/// How much of a key from the input an error shows.
const SHOWN_CHARS: usize = 64;

/// `s` cut to at most `max` characters, marked with `…` where cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn expectation_help(path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let key = key.split('[').next().unwrap_or(key);
    match key {
        "readonly" | "noNewPrivileges" | "directory" | "optional" | "createInRoot" => {
            format!("`{key}` takes true or false")
        }
        "oomScoreAdj" | "major" | "minor" => format!("`{key}` takes an integer"),
        "uid" | "gid" | "additionalGids" => format!("`{key}` takes a number or a container name"),
        "mode" => "`mode` takes an octal string such as \"0644\"".into(),
        "seccomp" => "`seccomp` takes `docker-default` or `unconfined`".into(),
        _ => format!(
            "check the type of `{key}` against the manifest reference: docs/manifest.md#{}",
            reference_anchor(path)
        ),
    }
}

/// The section of docs/manifest.md that documents the key at `path` (`onboot[0].binds`).
fn reference_anchor(path: &str) -> &'static str {
    let section = path.split(['.', '[']).next().unwrap_or(path);
    match section {
        "kernel" => "kernel",
        "init" => "init",
        "onboot" | "onshutdown" | "services" => "key-summary",
        "files" => "files",
        "volumes" => "volumes",
        "trust" => "trust",
        _ => "top-level",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::SeccompProfile;

    #[test]
    fn help_anchors_exist_in_the_manifest_reference() {
        let doc = include_str!("../../../docs/manifest.md");
        let anchors: Vec<String> = doc
            .lines()
            .filter(|l| l.starts_with("## ") || l.starts_with("### "))
            .map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect();
        for path in [
            "kernel.x",
            "init[0]",
            "onboot[1].binds",
            "files[0].x",
            "volumes[0].x",
            "trust.x",
            "x",
        ] {
            let anchor = reference_anchor(path);
            assert!(
                anchors.iter().any(|a| a == anchor),
                "docs/manifest.md has no #{anchor}"
            );
        }
    }

    fn load(docs: &[(&str, &str)]) -> Result<ManifestSet, ManifestError> {
        let mut set = ManifestSet::default();
        for (name, text) in docs {
            set.add(name, text)?;
        }
        set.validate()?;
        Ok(set)
    }

    fn err(docs: &[(&str, &str)]) -> String {
        match load(docs) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_key_is_located_with_suggestion() {
        let e = err(&[(
            "m.yml",
            "onboot:\n  - name: a\n    image: b\n    capabilties: [X]\n",
        )]);
        assert!(
            e.starts_with("m.yml:4:5: onboot[0].capabilties: unknown key `capabilties`"),
            "{e}"
        );
        assert!(e.contains("did you mean `capabilities`?"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = err(&[(
            "m.yml",
            "services:\n  - name: x\n    image: y\n    readonly: \"maybe\"\n",
        )]);
        assert!(
            e.starts_with("m.yml:4:15: services[0].readonly: invalid type"),
            "{e}"
        );
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn duplicate_service_across_files() {
        let e = err(&[
            ("a.yml", "services:\n  - name: dup\n    image: x\n"),
            (
                "b.yml",
                "kernel:\n  image: k\nservices:\n  - name: dup\n    image: y\n",
            ),
        ]);
        assert!(
            e.starts_with("b.yml:4:11: services[0].name: duplicate service name `dup`"),
            "{e}"
        );
        assert!(e.contains("first used at a.yml:2:11"), "{e}");
    }

    #[test]
    fn missing_image() {
        let e = err(&[(
            "m.yml",
            "services:\n  - name: noimage\n    command: [/bin/true]\n",
        )]);
        assert!(
            e.starts_with("m.yml:2:5: services[0]: missing key `image`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_uid_name() {
        let e = err(&[(
            "m.yml",
            "services:\n  - name: a\n    image: b\n    uid: nobody-here\n",
        )]);
        assert!(
            e.starts_with("m.yml:4:10: services[0].uid: cannot find id `nobody-here`"),
            "{e}"
        );
    }

    #[test]
    fn file_conflicts() {
        let e = err(&[(
            "m.yml",
            "files:\n  - path: etc/x\n    contents: a\n    source: /etc/hostname\n",
        )]);
        assert!(
            e.starts_with("m.yml:4:13: files[0].source: specified both `contents` and `source`"),
            "{e}"
        );
    }

    #[test]
    fn merge_overrides_kernel_and_appends_lists() {
        let set = load(&[
            ("a.yml", "kernel:\n  image: k1\n  cmdline: c1\ninit: [i1]\nonboot:\n  - name: a\n    image: x\n"),
            ("b.yml", "kernel:\n  image: k2\n  binary: bz\ninit: [i2]\nonboot:\n  - name: b\n    image: y\n"),
        ])
        .expect("valid");
        let m = set.manifest;
        assert_eq!(m.kernel.image, "k2");
        assert_eq!(m.kernel.cmdline, "c1");
        assert_eq!(m.kernel.binary, "bz");
        assert_eq!(m.init, vec!["i1", "i2"]);
        assert_eq!(
            m.onboot.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn trust_sections_are_kept_per_file_and_merged() {
        let set = load(&[
            (
                "a/one.yml",
                "trust:\n  org: [linuxkit]\n  keys: [k/one.pub]\n",
            ),
            (
                "b/two.yml",
                "trust:\n  image:\n    - registry.example.com/tool\n",
            ),
            ("c.yml", "init: [x]\n"),
        ])
        .expect("valid");
        let sections = set.trust_sections();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].file, "a/one.yml");
        assert_eq!(
            sections[0].trust.keys.as_deref(),
            Some(&["k/one.pub".to_string()][..])
        );
        assert_eq!(sections[1].file, "b/two.yml");
        assert!(sections[1].trust.keys.is_none());
        let merged = set.manifest.trust.clone().expect("merged");
        assert_eq!(merged.org.as_deref(), Some(&["linuxkit".to_string()][..]));
        assert_eq!(
            merged.image.as_deref(),
            Some(&["registry.example.com/tool".to_string()][..])
        );
        let d = set.trust_diagnostic(1, "image[0]", "refused".into());
        assert_eq!(
            (d.file.as_str(), d.line, d.column),
            ("b/two.yml", Some(3), Some(7))
        );
        // Not written back by --dry-run.
        assert!(!crate::to_yaml(&set.manifest).contains("trust"));
    }

    #[test]
    fn trust_errors_are_located() {
        let e = err(&[("m.yml", "trust:\n  org: [a]\n  key: [k.pub]\n")]);
        assert!(
            e.starts_with("m.yml:3:3: trust.key: unknown key `key`"),
            "{e}"
        );
        assert!(e.contains("did you mean `keys`?"), "{e}");
        let e = err(&[("m.yml", "trust:\n  keys: [k.pub]\n")]);
        assert!(
            e.starts_with("m.yml:2:9: trust.keys: `keys` applies to nothing"),
            "{e}"
        );
        let e = err(&[("m.yml", "trust:\n  image: [a]\n  keys: []\n")]);
        assert!(
            e.starts_with("m.yml:3:9: trust.keys: `keys` is empty"),
            "{e}"
        );
        let e = err(&[("m.yml", "trust:\n  image:\n    - ok\n    - \"bad name\"\n")]);
        assert!(e.starts_with("m.yml:4:7: trust.image[1]: "), "{e}");
        let e = err(&[("m.yml", "trust:\n  image: alpine\n")]);
        assert!(
            e.starts_with("m.yml:2:10: trust.image: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn label_may_not_name_the_container() {
        assert!(parse_label("img", r#"{"name": "x"}"#).is_err());
        let l = parse_label(
            "img",
            r#"{"binds.add": ["/a:/b"], "capabilities": ["all"], "pid": "host"}"#,
        )
        .expect("ok");
        assert_eq!(l.pid.as_deref(), Some("host"));
    }

    #[test]
    fn seccomp_takes_a_profile_name() {
        let set = load(&[(
            "m.yml",
            "onboot:\n  - name: a\n    image: b\n    seccomp: docker-default\n\
             services:\n  - name: c\n    image: d\n    seccomp: unconfined\n  - name: e\n    image: f\n",
        )])
        .expect("valid");
        let m = &set.manifest;
        assert_eq!(m.onboot[0].seccomp, Some(SeccompProfile::DockerDefault));
        assert_eq!(m.services[0].seccomp, Some(SeccompProfile::Unconfined));
        assert_eq!(m.services[1].seccomp, None);
        // --dry-run prints it back as written, and leaves it out when absent.
        let yaml = crate::to_yaml(m);
        assert!(yaml.contains("seccomp: docker-default"), "{yaml}");
        assert_eq!(yaml.matches("seccomp").count(), 2, "{yaml}");
        let label = parse_label("img", r#"{"seccomp": "docker-default"}"#).expect("label");
        assert_eq!(label.seccomp, Some(SeccompProfile::DockerDefault));
    }

    #[test]
    fn an_unknown_seccomp_profile_is_located_with_the_accepted_values() {
        let e = err(&[(
            "m.yml",
            "services:\n  - name: a\n    image: b\n    seccomp: strict\n",
        )]);
        assert!(e.starts_with("m.yml:4:14: services[0].seccomp: "), "{e}");
        assert!(
            e.contains("`strict`") && e.contains("`docker-default`") && e.contains("`unconfined`"),
            "{e}"
        );
        let e = err(&[(
            "m.yml",
            "onboot:\n  - name: a\n    image: b\n    seccomp: [docker-default]\n",
        )]);
        assert!(e.starts_with("m.yml:4:14: onboot[0].seccomp: "), "{e}");
        assert!(e.contains("`docker-default` or `unconfined`"), "{e}");
        let e = parse_label("img", r#"{"seccomp": "default"}"#)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("seccomp") && e.contains("`docker-default`"),
            "{e}"
        );
    }

    #[test]
    fn bad_yaml_is_located() {
        let e = err(&[(
            "m.yml",
            "kernel:\n  image: k\n  cmdline: \"console=ttyS0\nservices:\n  - name: x\n",
        )]);
        assert!(e.starts_with("m.yml:"), "{e}");
        assert!(
            e.contains("line")
                || e.split(':')
                    .nth(1)
                    .is_some_and(|l| l.parse::<u32>().is_ok()),
            "{e}"
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_document("fuzz.yml", &s);
            let _ = Locations::index(&s);
        }

        #[test]
        fn parser_never_panics_on_yamlish(s in "([a-z:\\- \\[\\]{}\"'\n]|services|image|name|onboot){0,60}") {
            let _ = parse_document("fuzz.yml", &s);
            let _ = Locations::index(&s);
        }
    }
}
