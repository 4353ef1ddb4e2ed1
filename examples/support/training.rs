//! What the training examples (train_sine, char_lm) share: a small seeded random number
//! generator, the `--cell` and `--recurrence` flags, PyTorch's default `nn.Linear`
//! initialisation, the progress bar, and writing a file with the library's error type.

// Each example uses only part of this file.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use wgpu_rnn::{Linear, Recurrence, RnnConfig, RnnError};

/// SplitMix64: a tiny seeded generator (no dependency), enough for initial weights, data
/// order and sampling. Its numbers are not PyTorch's; the distributions are the same.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    /// Uniform in [-bound, bound).
    pub fn uniform(&mut self, bound: f64) -> f32 {
        ((self.unit() * 2.0 - 1.0) * bound) as f32
    }

    /// N(mean, std²), by the Box–Muller transform.
    pub fn normal(&mut self, mean: f64, std: f64) -> f32 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln(u1) is finite
        let u2 = self.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mean + std * z) as f32
    }
}

/// `--recurrence`: which recurrent kernels the GPU trainer runs (`GpuTrainer::with_recurrence`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecurrenceArg {
    /// The library's default: kernels that compile within seconds.
    Auto,
    /// The fastest, whatever they cost to compile (on lavapipe the same as auto's where the
    /// model's W_hh fits a texture).
    Persistent,
    /// One dispatch per timestep.
    PerStep,
}

impl RecurrenceArg {
    pub fn recurrence(self) -> Recurrence {
        match self {
            RecurrenceArg::Auto => Recurrence::Auto,
            RecurrenceArg::Persistent => Recurrence::Persistent,
            RecurrenceArg::PerStep => Recurrence::PerStep,
        }
    }
}

/// `--cell`: which recurrent layer the model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Cell {
    /// nn.RNN (tanh).
    Rnn,
    /// nn.LSTM.
    Lstm,
    /// nn.GRU.
    Gru,
}

impl Cell {
    /// `nn.<CELL>(input_size, hidden_size, batch_first=True)`.
    pub fn config(self, input_size: usize, hidden_size: usize) -> RnnConfig {
        let config = match self {
            Cell::Rnn => RnnConfig::rnn(input_size, hidden_size),
            Cell::Lstm => RnnConfig::lstm(input_size, hidden_size),
            Cell::Gru => RnnConfig::gru(input_size, hidden_size),
        };
        RnnConfig {
            batch_first: true,
            ..config
        }
    }

    /// PyTorch's class name.
    pub fn torch_name(self) -> &'static str {
        match self {
            Cell::Rnn => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
}

/// `nn.Linear(in_features, out_features)` initialised as PyTorch does by default: weight and
/// bias from U(−1/√in_features, 1/√in_features).
pub fn linear_init(rng: &mut Rng, in_features: usize, out_features: usize) -> Linear {
    let bound = 1.0 / (in_features as f64).sqrt();
    let mut draw = |n: usize| (0..n).map(|_| rng.uniform(bound)).collect::<Vec<f32>>();
    let weight = draw(out_features * in_features);
    let bias = draw(out_features);
    Linear {
        in_features,
        out_features,
        weight,
        bias: Some(bias),
    }
}

/// A progress bar on stderr: `[####>---] 1200/6000 00:05 <message>`. indicatif hides it when
/// stderr is not a terminal, so logs and pipes get no carriage-return clutter; lines printed
/// meanwhile go through [`ProgressBar::suspend`] (`println` on a hidden bar prints nothing).
pub fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} {elapsed:>5} {msg}")
        .expect("a valid template")
        .progress_chars("#>-");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// Writes `contents` to `path`, making its folder first.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> wgpu_rnn::Result<()> {
    create_parent(path)?;
    std::fs::write(path, contents).map_err(|source| RnnError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes the folder `path` goes in (for the library's `save`, which does not).
pub fn create_parent(path: &Path) -> wgpu_rnn::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| RnnError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}
