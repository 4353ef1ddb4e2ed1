//! A PyTorch training loop run as a server beside ours, so that both are timed in one run,
//! alternated (the machines are shared and noisy): the script builds its model, warms up,
//! prints `ready <version>`, then answers each line `N` on stdin with the seconds that N more
//! iterations took.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

/// The running PyTorch loop.
pub struct TorchLoop {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// `torch.__version__`.
    pub version: String,
}

impl TorchLoop {
    /// Runs `script` with `python -c`, its arguments after it; returns once it is ready.
    pub fn start(python: &str, script: &str, args: &[String]) -> Result<Self, Error> {
        let mut child = Command::new(python)
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("--torch {python}: cannot run it: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut torch = TorchLoop {
            child,
            stdin,
            stdout,
            version: String::new(),
        };
        let line = torch.read_line()?;
        torch.version = line
            .strip_prefix("ready ")
            .ok_or_else(|| format!("--torch {python}: unexpected answer `{line}`"))?
            .to_string();
        Ok(torch)
    }

    /// `rounds` rounds of `iterations` iterations each, ours (`ours` runs them and waits for
    /// the device) then PyTorch's (on `threads` threads), each round printed, then the line
    /// `ms_per_iteration=<ours> torch_ms_per_iteration=<PyTorch's>` (medians over the rounds).
    pub fn race(
        &mut self,
        rounds: usize,
        iterations: usize,
        threads: usize,
        mut ours: impl FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        println!(
            "timing: {rounds} rounds of {iterations} iterations, ours then PyTorch {} (CPU, \
             {threads} thread{})",
            self.version,
            if threads == 1 { "" } else { "s" }
        );
        let (mut our_ms, mut their_ms) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let started = Instant::now();
            ours()?;
            let ms = started.elapsed().as_secs_f64() * 1e3 / iterations.max(1) as f64;
            let torch_ms = self.time(iterations)?;
            println!("round {round}: ours {ms:.3} ms per iteration, PyTorch {torch_ms:.3}");
            our_ms.push(ms);
            their_ms.push(torch_ms);
        }
        println!(
            "ms_per_iteration={:.4} torch_ms_per_iteration={:.4}",
            median(&mut our_ms),
            median(&mut their_ms)
        );
        Ok(())
    }

    /// PyTorch's milliseconds per iteration over `iterations` more iterations.
    pub fn time(&mut self, iterations: usize) -> Result<f64, Error> {
        let stdin = self.stdin.as_mut().expect("open until dropped");
        writeln!(stdin, "{iterations}")?;
        stdin.flush()?;
        let line = self.read_line()?;
        let seconds: f64 = line
            .parse()
            .map_err(|_| format!("--torch: unexpected answer `{line}`"))?;
        Ok(seconds * 1e3 / iterations as f64)
    }

    fn read_line(&mut self) -> Result<String, Error> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            return Err(format!(
                "--torch: the PyTorch loop exited ({status}); see its error above"
            )
            .into());
        }
        Ok(line.trim().to_string())
    }
}

impl Drop for TorchLoop {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input ends the script's loop
        let _ = self.child.wait();
    }
}

/// The median of `values` (sorted in place); NaN when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
