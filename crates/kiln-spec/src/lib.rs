//! kiln-spec is the one contract for a container's configuration between the stage that
//! writes it (kiln-assemble, for every container of a build and for `kiln image unpack`) and
//! the runtime that reads it (kiln-runtime, in kiln-init and `kiln run bundle`):
//!
//! - [`Spec`]: the OCI runtime `config.json` (the runtime-spec subset kiln and LinuxKit use),
//! - [`Runtime`]: LinuxKit's `runtime.json` with kiln's extensions (`restart`, `dependsOn`),
//! - [`load_config`] / [`load_runtime`]: strict reading from a bundle directory, where a field
//!   of the wrong type (or `null`) is an error naming the file, the field and the value — never
//!   a default,
//! - [`Spec::validate`] / [`Runtime::validate`]: the checks that make the runtime fail closed
//!   (no user namespaces, paths that stay in the container's root, only namespaced sysctls, no
//!   host /proc, known capability and rlimit names; absent capabilities mean none),
//! - [`to_go_json`]: writing either file byte for byte as LinuxKit (Go) does,
//! - [`docker_seccomp`]: Docker's default seccomp profile as data, resolved as Docker resolves
//!   it into a `linux.seccomp` section.
//!
//! It does not build configurations from manifests (kiln-assemble does) nor carry them out
//! (kiln-runtime does), and it reads no files but the two it is asked for.

mod config;
mod de;
pub mod docker_seccomp;
mod error;
mod gojson;
mod runtime;
mod validate;

pub use config::*;
pub use error::{Invalid, SpecError};
pub use gojson::to_go_json;
pub use runtime::{BindNs, Interface, RestartPolicy, Runtime};
pub use validate::{CAPABILITIES, RLIMITS, container_path, is_host_proc, sysctl_namespace};

use serde::de::DeserializeOwned;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The OCI runtime configuration's file name in a bundle.
pub const CONFIG_FILE: &str = "config.json";
/// LinuxKit's runtime configuration's file name in a bundle.
pub const RUNTIME_FILE: &str = "runtime.json";
/// The largest configuration file read (kiln's are a few KiB).
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// Read, type-check and validate `bundle`/config.json.
pub fn load_config(bundle: &Path) -> Result<Spec, SpecError> {
    let file = bundle.join(CONFIG_FILE);
    let text = read_bounded(&file)?;
    let spec = parse_config(&text, &file)?;
    spec.validate().map_err(|problem| SpecError::Field {
        file,
        at: None,
        problem,
    })?;
    Ok(spec)
}

/// Read, type-check and validate `bundle`/runtime.json; `None` when the bundle has none.
pub fn load_runtime(bundle: &Path) -> Result<Option<Runtime>, SpecError> {
    let file = bundle.join(RUNTIME_FILE);
    match fs::symlink_metadata(&file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpecError::Read { file, source }),
        Ok(_) => {}
    }
    let text = read_bounded(&file)?;
    let runtime = parse_runtime(&text, &file)?;
    runtime.validate().map_err(|problem| SpecError::Field {
        file,
        at: None,
        problem,
    })?;
    Ok(Some(runtime))
}

/// Type-check `text` as a config.json (`file` names it in errors). Not validated: see
/// [`Spec::validate`].
pub fn parse_config(text: &str, file: &Path) -> Result<Spec, SpecError> {
    parse(text, file)
}

/// Type-check `text` as a runtime.json (`file` names it in errors). Not validated: see
/// [`Runtime::validate`].
pub fn parse_runtime(text: &str, file: &Path) -> Result<Runtime, SpecError> {
    parse(text, file)
}

impl Resources {
    /// cgroup limits from a JSON value of `linux.resources`'s shape (a manifest's `resources:`,
    /// say), typed as strictly as a file; the error's field is relative to the value.
    pub fn from_value(value: serde_json::Value) -> Result<Resources, Invalid> {
        let shown = value.clone();
        serde_path_to_error::deserialize(value)
            .map(|de::Document(r)| r)
            .map_err(|e| {
                let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
                Invalid {
                    field: if segments.is_empty() {
                        "(the top level)".into()
                    } else {
                        e.path().to_string()
                    },
                    value: value_at(&shown, &segments).map(error::show_value),
                    message: readable(&e.inner().to_string()),
                }
            })
    }
}

/// A regular file's text, at most [`MAX_FILE_SIZE`] bytes.
fn read_bounded(file: &Path) -> Result<String, SpecError> {
    let read_err = |source| SpecError::Read {
        file: file.to_path_buf(),
        source,
    };
    // Checked before opening: opening a FIFO would block.
    let meta = fs::metadata(file).map_err(read_err)?;
    if !meta.is_file() {
        return Err(SpecError::File {
            file: file.to_path_buf(),
            message: "not a regular file: a bundle's configuration is a JSON file".into(),
        });
    }
    let mut text = String::new();
    fs::File::open(file)
        .map_err(read_err)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(SpecError::File {
            file: file.to_path_buf(),
            message: format!(
                "larger than {MAX_FILE_SIZE} bytes: a bundle's configuration is never that large"
            ),
        });
    }
    Ok(text)
}

fn parse<T: DeserializeOwned + de::Described>(text: &str, file: &Path) -> Result<T, SpecError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let de::Document(value) = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| type_error(text, file.to_path_buf(), e))?;
    // Trailing characters after the document.
    de.end().map_err(|e| SpecError::Syntax {
        file: file.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// A serde error as a [`SpecError`]: syntax errors by position, type errors by field, with the
/// value found there.
fn type_error(
    text: &str,
    file: PathBuf,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> SpecError {
    let inner = e.inner();
    let (line, column) = (inner.line(), inner.column());
    if !inner.is_data() {
        return SpecError::Syntax {
            file,
            line,
            column,
            message: strip_position(&inner.to_string()),
        };
    }
    let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
    let mut field = if segments.is_empty() {
        "(the top level)".to_string()
    } else {
        e.path().to_string()
    };
    let message = strip_position(&inner.to_string());
    let problem = if let Some(name) = missing_field(&message) {
        if segments.is_empty() {
            field = name.to_string();
        } else {
            field = format!("{field}.{name}");
        }
        Invalid {
            field,
            value: None,
            message: "is missing: the field is required".into(),
        }
    } else {
        let value = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|root| value_at(&root, &segments).map(error::show_value));
        Invalid {
            field,
            value,
            message: readable(&message),
        }
    };
    SpecError::Field {
        file,
        at: (line > 0).then_some((line, column)),
        problem,
    }
}

/// The value at a serde path in the parsed document.
fn value_at<'a>(
    root: &'a serde_json::Value,
    segments: &[&serde_path_to_error::Segment],
) -> Option<&'a serde_json::Value> {
    use serde_path_to_error::Segment;
    let mut v = root;
    for s in segments {
        v = match s {
            Segment::Seq { index } => v.get(*index)?,
            Segment::Map { key } => v.get(key.as_str())?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(v)
}

/// serde_json appends " at line L column C": the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The name in serde's "missing field `name`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// serde's expectations in words.
fn readable(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, words) in [
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
        (
            "expected i32",
            "expected a whole number from -2147483648 to 2147483647",
        ),
        ("expected i64", "expected a whole number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list"),
    ] {
        if let Some(rest) = m.strip_suffix(rust).map(str::to_string) {
            m = format!("{rest}{words}");
        }
    }
    if m.starts_with("invalid type: null") {
        m.push_str(" (null is not accepted: give a value or leave the field out)");
    }
    m
}

#[cfg(test)]
mod tests;
