//! A PyTorch training loop run as a server beside ours, so that both are timed in one run,
//! alternated (the machines are shared and noisy): the script builds its model, warms up,
//! prints `ready <version>`, then answers each line `N` on stdin with the seconds that N more
//! iterations took.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

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
