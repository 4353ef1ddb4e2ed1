//! The report's progress bar on stderr, drawn by indicatif. indicatif hides the bar when stderr
//! is not a terminal, so logs and pipes get no carriage-return clutter.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often the bar redraws on its own: a single measurement can run for minutes on a software
/// adapter, and the elapsed time should keep moving meanwhile.
const TICK: Duration = Duration::from_millis(500);

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` measurements (run or skipped).
    pub fn new(total: usize) -> Self {
        let bar = ProgressBar::new(total as u64);
        let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {elapsed:>5} {msg}")
            .expect("a valid template")
            .progress_chars("#>-");
        bar.set_style(style);
        bar.enable_steady_tick(TICK);
        Progress { bar }
    }

    /// Shows that `what` is being measured now.
    pub fn working_on(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// One more measurement finished (or skipped).
    pub fn advance(&self) {
        self.bar.inc(1);
    }

    /// Runs `print` with the bar taken off the terminal, so that a line on stdout is not
    /// interleaved with a redraw on stderr; the bar comes back afterwards.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        self.bar.suspend(print)
    }

    /// Removes the bar for good, before the summary.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
