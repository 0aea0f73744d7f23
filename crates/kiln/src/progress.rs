//! How kiln reports progress on standard error: build [`Event`]s rendered as plain text lines
//! or as one JSON object per line (`--progress`, see docs/progress.md), and download progress
//! bars, shown only in plain mode when standard error is a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_oci::registry::PullProgress;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};

pub use kiln_build::Event;

/// `--progress`: how events are written on standard error.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Text lines, RUN steps' output shown as it comes (and kept in their log files)
    #[default]
    Plain,
    /// One JSON object per line (docs/progress.md); RUN steps' output only in their log files
    Json,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Choose the mode for this process (once, before anything is reported).
pub fn set_mode(mode: Mode) {
    let _ = MODE.set(mode);
}

/// The mode chosen by `--progress`.
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Write `event` on standard error in the chosen mode (plain: its text line, unless empty).
pub fn emit(event: &Event) {
    match mode() {
        Mode::Plain => {
            let line = event.to_string();
            if !line.is_empty() {
                eprintln!("{line}");
            }
        }
        Mode::Json => {
            let mut v = serde_json::to_value(event).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("time".into(), serde_json::Value::from(now()));
            }
            json_line(&v);
        }
    }
}

/// Report the error that ends the command: its text as is in plain mode, a
/// `{"event":"error","message":...}` object in json mode.
pub fn error(text: &str) {
    match mode() {
        Mode::Plain => eprintln!("{text}"),
        Mode::Json => json_line(&serde_json::json!({
            "event": "error",
            "time": now(),
            "message": text.strip_prefix("error: ").unwrap_or(text),
        })),
    }
}

/// The progress callback of builds: [`emit`].
pub fn reporter() -> kiln_build::Progress {
    Arc::new(emit)
}

/// Seconds since the Unix epoch, with milliseconds.
fn now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// Write one JSON object as one line on standard error, in one write.
fn json_line(v: &serde_json::Value) {
    use std::io::Write as _;
    let mut line = v.to_string();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Where log messages (`tracing`) go: standard error as text, or in json mode as
/// `{"event":"log","time":...,"message":...}` objects, one per message.
pub struct LogWriter;

/// One log message being formatted.
pub struct LogMessage(Vec<u8>);

impl std::io::Write for LogMessage {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogMessage {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        match mode() {
            Mode::Plain => eprintln!("{text}"),
            Mode::Json => json_line(&serde_json::json!({
                "event": "log",
                "time": now(),
                "message": text,
            })),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogMessage;
    fn make_writer(&'a self) -> LogMessage {
        LogMessage(Vec::new())
    }
}

/// A progress reporter drawing one bar per blob, or `None` when stderr is not a terminal.
pub fn pull_bars() -> Option<PullProgress> {
    if mode() != Mode::Plain || !std::io::stderr().is_terminal() {
        return None;
    }
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    Some(PullProgress(Arc::new(
        move |_image, digest, done, total| {
            let Ok(mut bars) = bars.lock() else {
                return;
            };
            let bar = bars.entry(digest.to_string()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(total));
                b.set_style(style.clone());
                let short = digest.trim_start_matches("sha256:");
                b.set_message(short[..short.len().min(12)].to_string());
                b
            });
            bar.set_position(done);
            if done >= total {
                bar.finish();
            }
        },
    )))
}
