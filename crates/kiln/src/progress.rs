//! How kiln reports progress on standard error: build [`Event`]s rendered as plain text lines,
//! as live lines redrawn in place on a terminal, or as one JSON object per line (`--progress`,
//! see docs/progress.md), and download progress bars, shown only on a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_oci::registry::PullProgress;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use kiln_build::Event;

/// `--progress`: how events are written on standard error.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `tty` when standard error is a terminal, `plain` otherwise
    #[default]
    Auto,
    /// Text lines; RUN steps' output only with -v (always in their log files)
    Plain,
    /// One live line per running step (its elapsed time and last output line), redrawn in place
    Tty,
    /// One JSON object per line (docs/progress.md); RUN steps' output only in their log files
    Json,
}

/// The chosen mode (never `Auto`) and whether -v was given.
static MODE: OnceLock<(Mode, bool)> = OnceLock::new();

/// Choose the mode for this process (once, before anything is reported); `Auto` becomes `Tty`
/// or `Plain`. `verbose` (-v) shows RUN steps' output in plain mode.
pub fn set_mode(mode: Mode, verbose: bool) {
    let mode = match mode {
        Mode::Auto if std::io::stderr().is_terminal() => Mode::Tty,
        Mode::Auto => Mode::Plain,
        m => m,
    };
    let _ = MODE.set((mode, verbose));
}

/// `-q`: no progress in the text modes (errors still show; json mode is unaffected, since a
/// program asked for it).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Show no progress in the text modes (`-q`).
pub fn set_quiet() {
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed) && mode() != Mode::Json
}

/// The mode chosen by `--progress` (`Plain` or `Tty` for `Auto`).
pub fn mode() -> Mode {
    match MODE.get() {
        Some((m, _)) => *m,
        None => Mode::Plain,
    }
}

/// Whether RUN steps' output is copied to standard error as it comes: in plain mode with -v.
pub fn echo_run_output() -> bool {
    MODE.get() == Some(&(Mode::Plain, true))
}

/// Where RUN steps' output goes besides their logs: the live lines in tty mode.
pub fn run_output() -> Option<kiln_build::RunOutput> {
    if mode() != Mode::Tty {
        return None;
    }
    Some(Arc::new(|stage: &str, line: usize, chunk: &[u8]| {
        if let Ok(mut live) = live().lock() {
            if let Some(step) = live
                .running
                .iter_mut()
                .find(|s| s.stage == stage && s.line == line)
            {
                step.output(chunk);
            }
            live.redraw(false);
        }
    }))
}

/// Write `event` on standard error in the chosen mode (plain: its text line, unless empty).
pub fn emit(event: &Event) {
    if quiet() {
        return;
    }
    match mode() {
        Mode::Plain | Mode::Auto => {
            let line = event.to_string();
            if !line.is_empty() {
                eprintln!("{line}");
            }
        }
        Mode::Tty => {
            if let Ok(mut live) = live().lock() {
                live.event(event);
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

/// Write a line of text on standard error, above the live lines in tty mode.
fn text_line(text: &str) {
    if mode() == Mode::Tty
        && let Ok(mut live) = live().lock()
    {
        live.print(text);
        return;
    }
    eprintln!("{text}");
}

/// Report the error that ends the command: its text as is in plain mode, a
/// `{"event":"error","message":...}` object in json mode.
pub fn error(text: &str) {
    match mode() {
        Mode::Json => json_line(&serde_json::json!({
            "event": "error",
            "time": now(),
            "message": text.strip_prefix("error: ").unwrap_or(text),
        })),
        _ => text_line(text),
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
            Mode::Json => json_line(&serde_json::json!({
                "event": "log",
                "time": now(),
                "message": text,
            })),
            _ => text_line(text),
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
    if quiet() || mode() == Mode::Json || !std::io::stderr().is_terminal() {
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

/// The live lines of tty mode, created (with the thread that redraws them) on first use.
fn live() -> &'static Mutex<Live> {
    static LIVE: OnceLock<Mutex<Live>> = OnceLock::new();
    LIVE.get_or_init(|| {
        // Elapsed times move on while nothing else happens.
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(REDRAW);
                if let Ok(mut live) = live().lock() {
                    live.redraw(true);
                }
            }
        });
        Mutex::new(Live::default())
    })
}

/// How often live lines are redrawn at most (and at least, while steps run).
const REDRAW: Duration = Duration::from_millis(200);

/// The most bytes of an unfinished output line kept for display.
const PARTIAL_MAX: usize = 4096;

/// A step running, as tty mode shows it.
struct Running {
    stage: String,
    line: usize,
    instruction: String,
    started: Instant,
    /// The last complete non-empty output line.
    last: String,
    /// Output after the last line end.
    partial: Vec<u8>,
}

impl Running {
    /// Take a chunk of the step's output.
    fn output(&mut self, chunk: &[u8]) {
        for (i, piece) in chunk.split(|b| *b == b'\n' || *b == b'\r').enumerate() {
            if i > 0 {
                // A line ended before this piece.
                let done = clean(&self.partial);
                if !done.is_empty() {
                    self.last = done;
                }
                self.partial.clear();
            }
            self.partial.extend_from_slice(piece);
            if self.partial.len() > PARTIAL_MAX {
                let cut = self.partial.len() - PARTIAL_MAX;
                self.partial.drain(..cut);
            }
        }
    }

    /// The output line shown: the unfinished one if it has text, else the last one.
    fn shown(&self) -> String {
        let partial = clean(&self.partial);
        if partial.is_empty() {
            self.last.clone()
        } else {
            partial
        }
    }
}

/// Output as one line of plain text: escape sequences and control characters removed,
/// trimmed.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = console::strip_ansi_codes(&text);
    text.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// The live area of tty mode: the running steps and how many lines are drawn.
#[derive(Default)]
struct Live {
    running: Vec<Running>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Live {
    /// Render `event`: a running step's line, or a line printed above the live lines.
    fn event(&mut self, event: &Event) {
        match event {
            Event::StepStarted {
                stage,
                line,
                instruction,
            } => {
                self.running.push(Running {
                    stage: stage.clone(),
                    line: *line,
                    instruction: instruction.clone(),
                    started: Instant::now(),
                    last: String::new(),
                    partial: Vec::new(),
                });
                self.redraw(true);
            }
            Event::StepFinished {
                stage,
                line,
                instruction,
                cached,
                seconds,
                ..
            } => {
                self.running
                    .retain(|s| !(s.stage == *stage && s.line == *line));
                let text = if *cached {
                    format!("[{stage}] CACHED {instruction}")
                } else {
                    format!("[{stage}] {instruction} {}", elapsed(*seconds))
                };
                self.print(&text);
            }
            Event::StepFailed {
                stage,
                line,
                instruction,
                seconds,
                ..
            } => {
                self.running
                    .retain(|s| !(s.stage == *stage && s.line == *line));
                self.print(&format!(
                    "[{stage}] {instruction} failed after {}",
                    elapsed(*seconds)
                ));
            }
            Event::Warning { message } => self.print(&format!("warning: {message}")),
            other => {
                let text = other.to_string();
                if !text.is_empty() {
                    self.print(&text);
                }
            }
        }
    }

    /// Print `text` above the live lines (and draw them again below it).
    fn print(&mut self, text: &str) {
        let mut out = self.erase();
        out.push_str(text);
        out.push('\n');
        out.push_str(&self.lines(width()));
        write_stderr(&out);
        self.last_draw = Some(Instant::now());
    }

    /// Draw the live lines again, at most every [`REDRAW`] unless `now`.
    fn redraw(&mut self, now: bool) {
        if self.running.is_empty() && self.drawn == 0 {
            return;
        }
        if !now && self.last_draw.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        let mut out = self.erase();
        out.push_str(&self.lines(width()));
        write_stderr(&out);
        self.last_draw = Some(Instant::now());
    }

    /// What moves the cursor back to the first live line and clears from there.
    fn erase(&mut self) -> String {
        let n = std::mem::take(&mut self.drawn);
        if n == 0 {
            String::new()
        } else {
            format!("\x1b[{n}A\r\x1b[J")
        }
    }

    /// The live lines, each ending with a line end (counted in `drawn`).
    fn lines(&mut self, width: usize) -> String {
        let mut out = String::new();
        for step in &self.running {
            out.push_str(&live_line(
                &step.stage,
                &step.instruction,
                step.started.elapsed(),
                &step.shown(),
                width,
            ));
            out.push('\n');
        }
        self.drawn = self.running.len();
        out
    }
}

/// Write `text` on standard error in one write.
fn write_stderr(text: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The terminal's width in columns (80 when it cannot be told).
fn width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map_or(80, |(_, cols)| usize::from(cols))
}

/// A duration for people: `0.4s`, `12.3s`, `2m05s`, `1h02m`.
fn elapsed(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds
    } else {
        0.0
    };
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = Duration::try_from_secs_f64(s).map_or(u64::MAX, |d| d.as_secs());
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

/// One live line: `[stage] instruction 12.3s | last output line`, fitted into `width - 1`
/// columns (the last column left free so that the line never wraps). The elapsed time stays
/// visible: the output goes first, then the instruction is shortened.
fn live_line(
    stage: &str,
    instruction: &str,
    running: Duration,
    output: &str,
    width: usize,
) -> String {
    let room = width.saturating_sub(1).max(20);
    let time = elapsed(running.as_secs_f64());
    let head = format!("[{stage}] {instruction}");
    let fixed = console::measure_text_width(&time) + 1;
    let head = console::truncate_str(&head, room.saturating_sub(fixed), "…");
    let mut line = format!("{head} {time}");
    let left = room.saturating_sub(console::measure_text_width(&line));
    // Output is worth showing only with a few columns for it.
    if !output.is_empty() && left > 8 {
        line.push_str(" | ");
        line.push_str(&console::truncate_str(output, left - 3, "…"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_read_as_people_write_them() {
        assert_eq!(elapsed(0.0), "0.0s");
        assert_eq!(elapsed(0.44), "0.4s");
        assert_eq!(elapsed(12.34), "12.3s");
        assert_eq!(elapsed(125.0), "2m05s");
        assert_eq!(elapsed(3725.0), "1h02m");
        assert_eq!(elapsed(f64::NAN), "0.0s");
        assert_eq!(elapsed(-1.0), "0.0s");
    }

    #[test]
    fn live_lines_fit_the_terminal_and_keep_the_time() {
        let t = Duration::from_millis(12_340);
        assert_eq!(
            live_line("build", "RUN make", t, "cc -c main.c", 80),
            "[build] RUN make 12.3s | cc -c main.c"
        );
        assert_eq!(
            live_line("build", "RUN make", t, "", 80),
            "[build] RUN make 12.3s"
        );
        // The output is cut first.
        let long_out = "x".repeat(200);
        let l = live_line("build", "RUN make", t, &long_out, 40);
        assert_eq!(console::measure_text_width(&l), 39, "{l}");
        assert!(
            l.starts_with("[build] RUN make 12.3s | xxx") && l.ends_with('…'),
            "{l}"
        );
        // Then the instruction, the time staying.
        let long_ins = format!("RUN apt-get install -y {}", "pkg ".repeat(40));
        let l = live_line("build", &long_ins, t, "Unpacking ...", 40);
        assert_eq!(console::measure_text_width(&l), 39, "{l}");
        assert!(l.ends_with("… 12.3s"), "{l}");
        // Wide characters count by their columns.
        let l = live_line("s", "RUN echo", t, &"日本".repeat(50), 40);
        assert!(console::measure_text_width(&l) <= 39, "{l}");
    }

    #[test]
    fn the_last_output_line_is_shown_clean() {
        let mut step = Running {
            stage: "build".into(),
            line: 2,
            instruction: "RUN make".into(),
            started: Instant::now(),
            last: String::new(),
            partial: Vec::new(),
        };
        assert_eq!(step.shown(), "");
        step.output(b"first line\nsecond ");
        assert_eq!(step.shown(), "second");
        step.output(b"line\n\n  \n");
        assert_eq!(step.shown(), "second line");
        step.output(b"\x1b[1;31mred\x1b[0m\tdone\r\n");
        assert_eq!(step.shown(), "red done");
        step.output(b"Progress: 10%\rProgress: 50%");
        assert_eq!(step.shown(), "Progress: 50%");
        step.output(&vec![b'y'; PARTIAL_MAX * 3]);
        assert_eq!(step.shown().len(), PARTIAL_MAX);
    }

    #[test]
    fn live_lines_are_redrawn_in_place() {
        let mut live = Live::default();
        live.running.push(Running {
            stage: "a".into(),
            line: 1,
            instruction: "RUN x".into(),
            started: Instant::now(),
            last: "out".into(),
            partial: Vec::new(),
        });
        assert_eq!(live.erase(), "");
        let lines = live.lines(80);
        assert!(
            lines.starts_with("[a] RUN x 0.") && lines.ends_with("s | out\n"),
            "{lines}"
        );
        assert_eq!(live.drawn, 1);
        assert_eq!(live.erase(), "\x1b[1A\r\x1b[J");
        assert_eq!(live.drawn, 0);
    }
}
