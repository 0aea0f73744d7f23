//! What a build reports while it runs: typed [`Event`]s handed to the [`Progress`] callback of
//! [`BuildOptions`](crate::BuildOptions). A renderer chooses their form: [`Event`]'s `Display`
//! is the plain text line (empty for events plain output does not show), and its `Serialize`
//! the JSON object, tagged by an `"event"` field (`"step_finished"`, ...).
//!
//! The JSON form is a stable interface (docs/progress.md): fields are only ever added.
//!
//! Each RUN step's output is also kept in a log file of its own under the store's
//! `build/logs/` directory ([`LOG_DIR`]), one directory per build, the latest [`KEEP_LOGS`]
//! builds kept.

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a build's events go.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// The directory of RUN step logs, under the store.
pub const LOG_DIR: &str = "build/logs";

/// How many builds' log directories are kept (older ones are removed as builds start).
pub const KEEP_LOGS: usize = 32;

/// How many lines of a failed step's log its error shows.
pub const TAIL_LINES: usize = 20;

/// Something that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A stage began: its base is an image, `scratch` or an earlier stage.
    StageStarted {
        /// The stage's name (`stage-N` when unnamed).
        stage: String,
        /// What it starts from, as FROM names it (after expansion).
        from: String,
    },
    /// A base image was pulled from its registry.
    ImagePulled {
        /// The image name.
        reference: String,
        /// The digest of what was pulled (manifest or index).
        digest: String,
        /// Bytes downloaded (blobs the store already held are not counted).
        bytes: u64,
    },
    /// An image was taken from a running Docker engine's store (`kiln build --docker`).
    ImageFromDocker {
        /// The image name.
        reference: String,
        /// The digest of its manifest in kiln's store.
        digest: String,
        /// Bytes the engine sent.
        bytes: u64,
    },
    /// A step of a stage began.
    StepStarted {
        /// The stage's name.
        stage: String,
        /// The instruction's line in the Dockerfile.
        line: usize,
        /// The instruction: keyword and first line of its text.
        instruction: String,
    },
    /// A step finished.
    StepFinished {
        /// The stage's name.
        stage: String,
        /// The instruction's line.
        line: usize,
        /// The instruction.
        instruction: String,
        /// Whether its result came from the step cache.
        cached: bool,
        /// How long it took.
        seconds: f64,
        /// The log file holding a RUN step's output (absent for other steps and cache hits).
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<PathBuf>,
    },
    /// A step failed; the build stops.
    StepFailed {
        /// The stage's name.
        stage: String,
        /// The instruction's line.
        line: usize,
        /// The instruction.
        instruction: String,
        /// How long it ran.
        seconds: f64,
        /// The log file holding a RUN step's output.
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<PathBuf>,
        /// The error.
        error: String,
    },
    /// Something the user should know that does not stop the build.
    Warning {
        /// What happened.
        message: String,
    },
    /// An image was built and written into the store.
    ImageBuilt {
        /// The image manifest's digest.
        digest: String,
        /// Steps that changed the file system and were executed.
        steps_run: usize,
        /// Steps that changed the file system and came from the cache.
        steps_cached: usize,
    },
    /// A package was built, or found in the store already.
    PackageBuilt {
        /// The package directory.
        dir: PathBuf,
        /// Its image name.
        reference: String,
        /// The image manifest's digest.
        digest: String,
        /// Whether it was built now (false: the store had it).
        built: bool,
        /// Steps executed (0 when not built).
        steps_run: usize,
        /// Steps from the cache (0 when not built).
        steps_cached: usize,
    },
    /// An image was pushed to its registry (`kiln pkg build --push`).
    ImagePushed {
        /// The image name.
        reference: String,
    },
    /// An output file was written (`kiln build`).
    OutputWritten {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The SHA-256 of its content, in hex.
        sha256: String,
    },
}

impl fmt::Display for Event {
    /// The plain text line of the event; empty for events plain output leaves out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::StageStarted { stage, from } => write!(f, "[{stage}] FROM {from}"),
            Event::ImagePulled {
                reference,
                digest,
                bytes,
            } => write!(f, "pulled {reference} ({digest}, {bytes} bytes)"),
            Event::ImageFromDocker {
                reference,
                digest,
                bytes,
            } => write!(
                f,
                "took {reference} from the Docker engine ({digest}, {bytes} bytes)"
            ),
            Event::StepStarted {
                stage, instruction, ..
            } => write!(f, "[{stage}] {instruction}"),
            Event::StepFinished {
                cached: true,
                instruction,
                ..
            } => write!(f, "  CACHED {instruction}"),
            Event::StepFinished { .. } | Event::StepFailed { .. } => Ok(()),
            Event::Warning { message } => write!(f, "  {message}"),
            Event::ImageBuilt {
                digest,
                steps_run,
                steps_cached,
            } => write!(
                f,
                "built {digest} ({steps_run} steps run, {steps_cached} cached)"
            ),
            Event::PackageBuilt {
                dir,
                reference,
                built: true,
                steps_run,
                steps_cached,
                ..
            } => write!(
                f,
                "{}: built {reference} ({steps_run} steps run, {steps_cached} cached)",
                dir.display()
            ),
            Event::PackageBuilt { dir, reference, .. } => {
                write!(f, "{}: {reference} is already in the store", dir.display())
            }
            Event::ImagePushed { reference } => write!(f, "pushed {reference}"),
            Event::OutputWritten {
                path,
                bytes,
                sha256,
            } => write!(
                f,
                "wrote {} ({bytes} bytes, sha256:{sha256})",
                path.display()
            ),
        }
    }
}

/// The last `n` lines of the file at `path` (lossily decoded; empty when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A new log directory for one build under `logs` (named so that names sort by start time),
/// after removing all but the newest [`KEEP_LOGS`]` - 1` older ones.
pub(crate) fn new_log_dir(logs: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(logs)?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(logs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(KEEP_LOGS - 1);
    for dir in &old[..excess] {
        // Another build may be removing it at the same time.
        let _ = std::fs::remove_dir_all(dir);
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let base = format!("{millis:013}-{}", std::process::id());
    for n in 0.. {
        let dir = logs.join(format!("{base}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

/// The log file name of the step at `line` of stage `stage` (characters outside
/// `[A-Za-z0-9._-]` of the stage name replaced by `_`).
pub(crate) fn log_name(stage: &str, line: usize) -> String {
    let stage: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stage}-line{line}.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_tagged_and_display_as_plain_lines() {
        let e = Event::StepFinished {
            stage: "build".into(),
            line: 3,
            instruction: "RUN make".into(),
            cached: false,
            seconds: 1.5,
            log: Some("/s/build/logs/x/build-line3.log".into()),
        };
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["event"], "step_finished");
        assert_eq!(v["line"], 3);
        assert_eq!(v["cached"], false);
        assert_eq!(v["log"], "/s/build/logs/x/build-line3.log");
        assert_eq!(e.to_string(), "");
        let cached = Event::StepFinished {
            stage: "build".into(),
            line: 3,
            instruction: "RUN make".into(),
            cached: true,
            seconds: 0.0,
            log: None,
        };
        assert!(
            serde_json::to_value(&cached)
                .expect("json")
                .get("log")
                .is_none()
        );
        assert_eq!(cached.to_string(), "  CACHED RUN make");
        let started = Event::StepStarted {
            stage: "build".into(),
            line: 3,
            instruction: "RUN make".into(),
        };
        assert_eq!(started.to_string(), "[build] RUN make");
    }

    #[test]
    fn log_directories_are_bounded_and_names_safe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut made = Vec::new();
        for _ in 0..KEEP_LOGS + 5 {
            made.push(new_log_dir(dir.path()).expect("log dir"));
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").collect();
        assert_eq!(left.len(), KEEP_LOGS);
        assert!(made.last().expect("made").is_dir());
        assert!(!made[0].exists());
        assert_eq!(log_name("a/b c", 7), "a_b_c-line7.log");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, text).expect("write");
        let t = tail(&f, 20);
        assert!(t.starts_with("line 11\n") && t.ends_with("line 30"), "{t}");
        assert_eq!(tail(&dir.path().join("none"), 20), "");
    }
}
