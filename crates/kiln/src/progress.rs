//! Download progress bars, shown only when standard error is a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kiln_oci::registry::PullProgress;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

/// A progress reporter drawing one bar per blob, or `None` when stderr is not a terminal.
pub fn pull_bars() -> Option<PullProgress> {
    if !std::io::stderr().is_terminal() {
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
