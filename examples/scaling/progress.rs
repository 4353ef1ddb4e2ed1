//! A one-line progress bar on stderr, redrawn in place. It is drawn only when stderr is a
//! terminal, so logs and pipes get no carriage-return clutter.

use std::io::{IsTerminal, Write};
use std::time::Instant;

const WIDTH: usize = 30;

pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    enabled: bool,
    /// Length of the last line drawn, to blank it out completely.
    drawn: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
            drawn: 0,
        }
    }

    /// Shows that `what` is being measured now.
    pub fn working_on(&mut self, what: &str) {
        let filled = WIDTH * self.done / self.total;
        let elapsed = self.started.elapsed().as_secs();
        let line = format!(
            "[{}{}] {}/{} {:>2}:{:02} {what}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.done,
            self.total,
            elapsed / 60,
            elapsed % 60,
        );
        self.draw(&line);
    }

    /// One more measurement finished (or skipped).
    pub fn advance(&mut self) {
        self.done = (self.done + 1).min(self.total);
    }

    /// Removes the bar, so that stdout can print a clean line; the next `working_on` redraws.
    pub fn clear(&mut self) {
        self.draw("");
    }

    fn draw(&mut self, line: &str) {
        if !self.enabled {
            return;
        }
        let blank = " ".repeat(self.drawn.saturating_sub(line.chars().count()));
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{line}{blank}\r{line}");
        let _ = stderr.flush();
        self.drawn = line.chars().count();
    }
}
