//! Human output: sizes, durations, tables and progress bars (only on a terminal).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Formats bytes with binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Formats a duration in seconds.
pub fn secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        let m = (s / 60.0).floor();
        format!("{m:.0}m{:.0}s", s - m * 60.0)
    }
}

/// Prints a table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    line(w.iter().map(|n| "-".repeat(*n)).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A progress bar refreshed from a closure by a background thread; hidden when stderr is not a
/// terminal or output is quiet/JSON.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the refresh closure reports: (position, length or 0 if unknown, message).
pub type Sample = (u64, u64, String);

impl Progress {
    /// Starts a byte progress bar.
    pub fn bytes(enabled: bool, sample: impl Fn() -> Sample + Send + 'static) -> Progress {
        let visible = enabled && std::io::stderr().is_terminal();
        let bar = if visible {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = visible.then(|| {
            let bar = bar.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (pos, len, msg) = sample();
                    if len > 0 {
                        bar.set_length(len.max(pos));
                    } else {
                        bar.set_length(pos);
                    }
                    bar.set_position(pos);
                    bar.set_message(msg);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Progress { bar, stop, thread }
    }

    /// Stops and clears the bar.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Set once a JSON document or line went to stdout: a failure after that must not add a second
/// document a parser would choke on (the exit code and the stderr line still report it).
static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(v: &T) {
    JSON_PRINTED.store(true, Ordering::Relaxed);
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// Prints a value as one compact JSON line on stdout (streams of events, one line each).
pub fn json_line<T: serde::Serialize>(v: &T) {
    JSON_PRINTED.store(true, Ordering::Relaxed);
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

/// With `--json`, a failed command still prints one document, so a script parsing stdout gets
/// the reason instead of empty input: `{"error": {"message": …, "exit_code": …}}`. Nothing when
/// the command already printed its own document before failing.
pub fn json_error(message: &str, exit_code: u8) {
    if !JSON_PRINTED.load(Ordering::Relaxed) {
        let doc = serde_json::json!({"error": {"message": message, "exit_code": exit_code}});
        // A reader that went away must not turn the failure into a panic (exit 101).
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{doc:#}");
    }
}
