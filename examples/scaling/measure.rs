//! Timing forwards (or training steps): a warm-up, then repeated runs until there are enough
//! for a median; and the prediction that keeps the slow paths within their time budgets.

use std::time::{Duration, Instant};

use wgpu_rnn::{OutputGrads, Rnn, Tensor, Train};

use crate::model::{CpuModel, GpuModel};
use crate::shape::Shape;

/// Which implementation a measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Gpu,
    Cpu,
    /// PyTorch on the CPU, timed in this run by `time_torch.py` (`--torch`).
    Torch,
    /// onnxruntime on the CPU, timed in this run by `time_torch.py` (`--torch`).
    Ort,
}

impl Path {
    pub const ALL: [Path; 4] = [Path::Gpu, Path::Cpu, Path::Torch, Path::Ort];

    pub fn name(self) -> &'static str {
        match self {
            Path::Gpu => "gpu",
            Path::Cpu => "cpu",
            Path::Torch => "torch",
            Path::Ort => "ort",
        }
    }
}

/// What one timed run is (`--backward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// An inference forward (`Rnn::forward`).
    Forward,
    /// A training step: `Train::forward_train`, then `Train::backward` of loss = output.sum().
    Training,
}

/// How many forwards a measurement runs after its warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Runs at least this many...
    pub min_runs: usize,
    /// ...and goes on until this much time has passed...
    pub target: Duration,
    /// ...but never beyond this many.
    pub max_runs: usize,
}

impl Sampling {
    pub fn new(quick: bool) -> Self {
        if quick {
            Sampling {
                min_runs: 3,
                target: Duration::from_millis(300),
                max_runs: 20,
            }
        } else {
            Sampling {
                min_runs: 5,
                target: Duration::from_secs(1),
                max_runs: 50,
            }
        }
    }

    /// Whether `runs` timed runs over `elapsed` are enough for a median.
    fn enough(&self, runs: usize, elapsed: Duration) -> bool {
        runs >= self.max_runs
            || (runs >= self.min_runs && elapsed >= self.target)
            || (runs >= 3 && elapsed >= LONG_ENOUGH)
    }
}

/// Forwards that take this long in total may stop after three runs, whatever `min_runs` says:
/// the long ones are steady, and five of them would cost minutes.
const LONG_ENOUGH: Duration = Duration::from_secs(3);

/// The result of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median wall-clock time of a forward.
    pub median: Duration,
    /// Median GPU execution time (timestamp queries), where the adapter has them.
    pub gpu: Option<Duration>,
    /// A training step's parts: the median time of its forward_train and of its backward.
    pub parts: Option<(Duration, Duration)>,
    pub runs: usize,
    /// The untimed warm-up run's wall-clock time, where this process ran it: a model's first
    /// run compiles its kernels (on lavapipe at their first dispatch).
    pub warm_up: Option<Duration>,
}

/// Times `forward(profiled)`, which returns the GPU execution time of the run where it was
/// asked to profile and knows it. With `profile`, runs alternate: wall-clock times come from
/// the unprofiled runs only (writing, resolving and copying the timestamps costs a profiled
/// forward 0.1–0.15 ms on lavapipe, which a user's forward does not pay) and GPU times from the profiled
/// runs in between, so that both medians cover the same stretch of time.
fn time_runs(
    sampling: Sampling,
    profile: bool,
    mut forward: impl FnMut(bool) -> wgpu_rnn::Result<Option<Duration>>,
) -> wgpu_rnn::Result<Timing> {
    let warm_up = Instant::now();
    forward(false)?; // warm-up: allocates the GPU workspace, faults the CPU path's pages in
    let warm_up = warm_up.elapsed();
    let started = Instant::now();
    let mut walls = Vec::new();
    let mut gpus = Vec::new();
    let mut profiled = 0;
    loop {
        let start = Instant::now();
        forward(false)?;
        walls.push(start.elapsed());
        if profile {
            profiled += 1;
            gpus.extend(forward(true)?);
        }
        if sampling.enough(walls.len(), started.elapsed()) {
            break;
        }
    }
    Ok(Timing {
        median: median(&mut walls).expect("at least one run"),
        // Only when every profiled run was timed on the GPU.
        gpu: (profiled > 0 && gpus.len() == profiled)
            .then(|| median(&mut gpus))
            .flatten(),
        parts: None,
        runs: walls.len(),
        warm_up: Some(warm_up),
    })
}

pub fn time_gpu(model: &GpuModel, input: &Tensor, sampling: Sampling) -> wgpu_rnn::Result<Timing> {
    time_runs(sampling, true, |profiled| {
        model.set_profiling(profiled);
        model.forward(input, None)?;
        Ok(model.last_gpu_time())
    })
}

pub fn time_cpu(model: &CpuModel, input: &Tensor, sampling: Sampling) -> wgpu_rnn::Result<Timing> {
    time_runs(sampling, false, |_| {
        model.forward(input, None).map(|_| None)
    })
}

/// Times training steps of `model`: `forward_train` of `input` from a zero state, then
/// `backward_params` with d output = `ones` (loss = output.sum()) and no upstream gradient
/// for h_n: the parameters' gradients only, as PyTorch's baseline computes them (x and h0
/// without requires_grad), accumulating from step to step as its `.grad` does. `wait` waits
/// for the device (a GPU trainer's `backward_params` reads nothing back), so that the
/// backward's time is its own.
pub fn time_training(
    model: &mut impl Train,
    input: &Tensor,
    ones: &Tensor,
    sampling: Sampling,
    wait: impl Fn() -> wgpu_rnn::Result<()>,
) -> wgpu_rnn::Result<Timing> {
    let mut step = || -> wgpu_rnn::Result<(Duration, Duration)> {
        let start = Instant::now();
        let (_, tape) = model.forward_train(input, None, None)?;
        let forward = start.elapsed();
        model.backward_params(tape, OutputGrads::output(ones))?;
        wait()?;
        Ok((forward, start.elapsed() - forward))
    };
    let warm_up = Instant::now();
    step()?; // warm-up: makes the workspace, compiles the kernels on lavapipe
    let warm_up = warm_up.elapsed();
    let started = Instant::now();
    let (mut walls, mut forwards, mut backwards) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let (forward, backward) = step()?;
        walls.push(forward + backward);
        forwards.push(forward);
        backwards.push(backward);
        if sampling.enough(walls.len(), started.elapsed()) {
            break;
        }
    }
    let median = |values: &mut Vec<Duration>| median(values).expect("at least one run");
    Ok(Timing {
        median: median(&mut walls),
        gpu: None,
        parts: Some((median(&mut forwards), median(&mut backwards))),
        runs: walls.len(),
        warm_up: Some(warm_up),
    })
}

fn median(values: &mut [Duration]) -> Option<Duration> {
    values.sort_unstable();
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2),
    }
}

/// Predicts how long a forward will take from what was measured before, so that lengths that
/// would blow a time budget can be skipped. Both paths' times grow about linearly with T for a
/// given configuration; extrapolating from the origin ignores the fixed overhead, which errs
/// on the side of skipping.
pub struct Predictor {
    /// The latest measurement of each configuration and path: (shape, path, T, median).
    latest: Vec<(Shape, Path, usize, Duration)>,
    /// FLOP/s of the latest CPU measurement, of any configuration.
    cpu_rate: Option<f64>,
}

/// Before the CPU path has been measured at all: the low end of its 1–2 GFLOP/s.
const ASSUMED_CPU_FLOPS_PER_SECOND: f64 = 1e9;

impl Predictor {
    pub fn new() -> Self {
        Predictor {
            latest: Vec::new(),
            cpu_rate: None,
        }
    }

    /// The predicted time of one forward; `None` for a configuration's first measurement on
    /// the GPU (GPUs differ too much to guess), PyTorch or onnxruntime (fast enough to try).
    pub fn predict(&self, path: Path, shape: Shape, seq_len: usize) -> Option<Duration> {
        let same = self
            .latest
            .iter()
            .rev()
            .find(|(s, p, _, _)| (*s, *p) == (shape, path));
        if let Some(&(_, _, measured_len, median)) = same {
            return Some(median.mul_f64(seq_len as f64 / measured_len as f64));
        }
        (path == Path::Cpu).then(|| {
            let rate = self.cpu_rate.unwrap_or(ASSUMED_CPU_FLOPS_PER_SECOND);
            Duration::from_secs_f64(shape.flops(seq_len) / rate)
        })
    }

    pub fn record(&mut self, path: Path, shape: Shape, seq_len: usize, timing: &Timing) {
        self.latest.push((shape, path, seq_len, timing.median));
        if path == Path::Cpu {
            self.cpu_rate = Some(shape.flops(seq_len) / timing.median.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(2), ms(3)]),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(median(&mut []), None);
    }
}
