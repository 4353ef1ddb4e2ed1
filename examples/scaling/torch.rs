//! `--torch PYTHON`: PyTorch's CPU forward of the same model, timed in the same run.
//!
//! The interpreter runs `benches/baselines/time_torch.py` (built into this program) as a
//! server: it builds `nn.RNN`/`nn.LSTM`/`nn.GRU(H, H)` once per configuration and answers one
//! request per point with its median, right after our own paths have been timed at that
//! point, so that both see the same machine. Where the interpreter also has onnxruntime and
//! onnx, the same model is timed there too. With `--backward` it runs `time_torch_train.py`
//! (this folder) appended to `time_torch.py` instead, which times the same model's forward and
//! `y.sum().backward()` and answers the same protocol (no onnxruntime row). Nothing else in
//! the crate needs Python.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::measure::{Sampling, Timing, Workload};
use crate::shape::Shape;

/// The timing script, run with `PYTHON -c`: the report needs no path to the repository.
const SCRIPT: &str = include_str!("../../benches/baselines/time_torch.py");

/// `--backward`'s script: `time_torch_train.py` after `time_torch.py`, whose model, timing
/// loop and server it uses; `__name__` is set first so that `time_torch.py`'s main does not
/// run.
const TRAIN_SCRIPT: &str = concat!(
    "__name__ = \"time_torch\"\n",
    include_str!("../../benches/baselines/time_torch.py"),
    "\n",
    include_str!("time_torch_train.py")
);

/// What the interpreter runs for `workload`, as the report names it.
pub fn script_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Forward => "benches/baselines/time_torch.py",
        Workload::Training => {
            "benches/baselines/time_torch.py + examples/scaling/time_torch_train.py"
        }
    }
}

/// What the interpreter reported when it started.
#[derive(Clone, Debug, PartialEq)]
pub struct Versions {
    pub torch: String,
    /// `None`: the interpreter has no onnxruntime (or no onnx).
    pub ort: Option<String>,
    pub threads: usize,
}

/// One point's baselines.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub torch: Timing,
    pub ort: Option<Timing>,
    /// Largest |onnxruntime − PyTorch| over the output.
    pub ort_diff: Option<f64>,
}

/// The running `time_torch.py --serve`.
pub struct TorchTimer {
    python: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Everything the script wrote to stderr, for error messages.
    stderr: Arc<Mutex<String>>,
    /// False once the script has stopped answering: later points are not asked for.
    alive: bool,
    pub versions: Versions,
}

impl TorchTimer {
    /// Starts the script of `workload` with `python` and waits until PyTorch is imported and
    /// warm; PyTorch and onnxruntime run `threads` threads. `Err`: a message for the user (no
    /// such interpreter, no torch, ...).
    pub fn start(python: &str, threads: usize, workload: Workload) -> Result<Self, String> {
        let threads_arg = threads.to_string();
        let script_args = match workload {
            Workload::Forward => ["-c", SCRIPT, "--serve", "--ort"].as_slice(),
            Workload::Training => ["-c", TRAIN_SCRIPT, "--serve"].as_slice(),
        };
        let mut child = Command::new(python)
            .args(script_args)
            .args(["--threads", &threads_arg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("--torch {python}: cannot run it: {error}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        // Drained all the time, so that a chatty interpreter never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]);
                sink.lock().expect("stderr buffer").push_str(&text);
            }
        });
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut timer = TorchTimer {
            python: python.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            alive: true,
            versions: Versions {
                torch: String::new(),
                ort: None,
                threads,
            },
        };
        let line = timer.read_line()?;
        timer.versions = parse_ready(&line).ok_or_else(|| {
            format!(
                "--torch {python}: {} did not start as expected: `{line}`",
                script_name(workload)
            )
        })?;
        Ok(timer)
    }

    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// PyTorch's (and onnxruntime's) median for one point, sampled as our paths are.
    pub fn measure(
        &mut self,
        shape: Shape,
        seq_len: usize,
        sampling: Sampling,
    ) -> Result<Measured, String> {
        let request = format!(
            "{},{},{},{seq_len},{},{},{}\n",
            shape.cell.name(),
            shape.hidden,
            shape.batch,
            sampling.min_runs,
            sampling.target.as_secs_f64(),
            sampling.max_runs
        );
        let stdin = self.stdin.as_mut().expect("open until dropped");
        stdin
            .write_all(request.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|error| self.died(&format!("cannot send a request: {error}")))?;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if line == "end" {
                break;
            }
            lines.push(line);
        }
        parse_answer(&lines)
    }

    /// The next line of stdout; `Err` when the script has exited.
    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(line.trim_end().to_string()),
            Ok(_) => Err(self.died("it exited")),
            Err(error) => Err(self.died(&format!("cannot read its output: {error}"))),
        }
    }

    /// A message for a script that stopped answering: its exit status and its stderr.
    fn died(&mut self, what: &str) -> String {
        self.alive = false;
        // The stderr reader finishes when the process has exited; give it a moment.
        let status = self.child.wait().ok();
        std::thread::sleep(Duration::from_millis(100));
        let stderr = self
            .stderr
            .lock()
            .expect("stderr buffer")
            .trim()
            .to_string();
        let hint = match status.and_then(|s| s.code()) {
            Some(3) => {
                "\n(torch is not importable there: e.g. `python3 -m venv DIR && DIR/bin/pip \
                 install torch`, then --torch DIR/bin/python)"
            }
            _ => "",
        };
        let status = status.map_or("unknown status".into(), |s| s.to_string());
        format!(
            "--torch {}: time_torch.py failed: {what} ({status}){}{hint}",
            self.python,
            if stderr.is_empty() {
                String::new()
            } else {
                format!(":\n{stderr}")
            }
        )
    }
}

impl Drop for TorchTimer {
    fn drop(&mut self) {
        // End of input ends the script's loop.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `ready,torch=2.15.0,ort=1.32.0,threads=2` (`ort=none` without onnxruntime).
fn parse_ready(line: &str) -> Option<Versions> {
    let mut fields = line.split(',');
    if fields.next()? != "ready" {
        return None;
    }
    let mut value = |key: &str| {
        fields
            .next()?
            .strip_prefix(key)?
            .strip_prefix('=')
            .map(str::to_string)
    };
    let torch = value("torch")?;
    let ort = value("ort")?;
    let threads = value("threads")?.parse().ok()?;
    Some(Versions {
        torch,
        ort: (ort != "none").then_some(ort),
        threads,
    })
}

/// The rows of one answer: `backend,cell,H,I,N,T,threads,median_ms,min_ms,max_ms,runs,diff`
/// for torch and maybe ort, or one `error,<message>`.
fn parse_answer(lines: &[String]) -> Result<Measured, String> {
    let mut torch = None;
    let mut ort = None;
    let mut ort_diff = None;
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[0] == "error" {
            return Err(format!("time_torch.py: {}", &line["error,".len()..]));
        }
        let bad = || format!("time_torch.py: unexpected answer `{line}`");
        if fields.len() != 12 {
            return Err(bad());
        }
        let median_ms: f64 = fields[7].parse().map_err(|_| bad())?;
        let runs: usize = fields[10].parse().map_err(|_| bad())?;
        let timing = Timing {
            median: Duration::from_secs_f64(median_ms / 1e3),
            gpu: None,
            parts: None,
            runs,
            warm_up: None,
        };
        match fields[0] {
            "torch" => torch = Some(timing),
            "ort" => {
                ort = Some(timing);
                ort_diff = fields[11].parse().ok();
            }
            _ => return Err(bad()),
        }
    }
    Ok(Measured {
        torch: torch.ok_or("time_torch.py: no torch row in its answer")?,
        ort,
        ort_diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line() {
        assert_eq!(
            parse_ready("ready,torch=2.15.0+cpu,ort=none,threads=2"),
            Some(Versions {
                torch: "2.15.0+cpu".into(),
                ort: None,
                threads: 2
            })
        );
        let versions = parse_ready("ready,torch=2.15.0,ort=1.32.0,threads=2").unwrap();
        assert_eq!(versions.ort.as_deref(), Some("1.32.0"));
        assert_eq!(parse_ready("Traceback (most recent call last):"), None);
        assert_eq!(parse_ready("ready,torch=2"), None);
    }

    #[test]
    fn answers() {
        let lines = |rows: &[&str]| rows.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let measured = parse_answer(&lines(&[
            "torch,lstm,64,64,1,1024,2,5.0035,4.8074,5.8093,50,",
            "ort,lstm,64,64,1,1024,2,1.0791,1.0446,1.4129,50,1.49e-07",
        ]))
        .unwrap();
        assert!((measured.torch.median.as_secs_f64() - 5.0035e-3).abs() < 1e-9);
        assert_eq!(measured.torch.runs, 50);
        assert_eq!(measured.ort.map(|t| t.runs), Some(50));
        assert_eq!(measured.ort_diff, Some(1.49e-7));
        let error = parse_answer(&lines(&["error,ValueError: unknown cell `x`"])).unwrap_err();
        assert!(error.contains("unknown cell"), "{error}");
        assert!(parse_answer(&lines(&["torch,1,2"])).is_err());
        assert!(parse_answer(&[]).is_err());
    }

    /// The script that `--torch` runs is the one in `benches/baselines/`, and it speaks the
    /// protocol parsed here.
    #[test]
    fn script_protocol() {
        assert!(SCRIPT.contains("def serve("));
        assert!(SCRIPT.contains("ready,"));
        assert!(SCRIPT.contains(r#"print("end", flush=True)"#));
        // The training script uses time_torch.py's names, and is appended to it.
        for name in ["class Timer:", "def serve(", "def time_forwards("] {
            assert!(SCRIPT.contains(name), "{name}");
        }
        assert!(TRAIN_SCRIPT.starts_with("__name__ = \"time_torch\"\n"));
        assert!(TRAIN_SCRIPT.contains("class TrainTimer(Timer):"));
    }

    #[test]
    fn missing_interpreter_is_a_clear_error() {
        let Err(error) = TorchTimer::start("/nonexistent/python3", 2, Workload::Forward) else {
            panic!("started a missing interpreter")
        };
        assert!(
            error.contains("--torch /nonexistent/python3: cannot run it"),
            "{error}"
        );
        // An interpreter that exits at once (`false` ignores its arguments).
        let Err(error) = TorchTimer::start("false", 2, Workload::Training) else {
            panic!("`false` answered")
        };
        assert!(error.contains("time_torch.py failed: it exited"), "{error}");
    }
}
