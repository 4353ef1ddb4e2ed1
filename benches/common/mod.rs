//! What the two forward benchmarks share: the shapes, the inputs, the FLOP count, the
//! criterion settings and the rule that skips combinations too slow to measure.

use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, SamplingMode, Throughput, measurement::WallTime};
use wgpu_rnn::{RnnConfig, RnnWeights, Tensor};

/// Sequence lengths T, shortest first.
pub const LENGTHS: [usize; 5] = [16, 64, 256, 1024, 4096];

/// One benchmarked model and batch: `nn.RNN(H, H)`, one layer, tanh, batch N.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub hidden: usize,
    pub batch: usize,
}

/// (H=64, N=1): per-step overhead; (H=256, N=16): mid-size; (H=1024, N=64): compute-bound.
pub const SHAPES: [Shape; 3] = [
    Shape {
        hidden: 64,
        batch: 1,
    },
    Shape {
        hidden: 256,
        batch: 16,
    },
    Shape {
        hidden: 1024,
        batch: 64,
    },
];

/// Setting `WGPU_RNN_BENCH_ALL=1` lifts the FLOP budgets: every combination runs.
pub const RUN_ALL_VARIABLE: &str = "WGPU_RNN_BENCH_ALL";

/// Iterations per sample, fixed: the slow combinations need few, long iterations.
pub const SAMPLES: usize = 10;

impl Shape {
    /// `nn.RNN(H, H)`: input size equal to the hidden size, every other argument default.
    pub fn config(self) -> RnnConfig {
        RnnConfig::rnn(self.hidden, self.hidden)
    }

    /// PyTorch's initialisation, from a fixed seed.
    pub fn weights(self) -> RnnWeights {
        RnnWeights::init(&self.config(), 7).expect("weights for a valid configuration")
    }

    /// A deterministic (T, N, I) input with values in [-1, 1].
    pub fn input(self, seq_len: usize) -> Tensor {
        let len = seq_len * self.batch * self.hidden;
        let data = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::new(data, &[seq_len, self.batch, self.hidden]).expect("matching shape")
    }

    /// FLOPs of one forward: 2·T·N·H·(I + H), one layer, one direction.
    pub fn flops(self, seq_len: usize) -> f64 {
        2.0 * (seq_len * self.batch * self.hidden) as f64 * (2 * self.hidden) as f64
    }

    /// The criterion group name, e.g. `gpu_H256_N16`.
    pub fn group_name(self, path: &str) -> String {
        format!("{path}_H{}_N{}", self.hidden, self.batch)
    }
}

/// Whether `WGPU_RNN_BENCH_ALL` asks for every combination.
pub fn run_all() -> bool {
    std::env::var(RUN_ALL_VARIABLE).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A combination's FLOPs against a budget (`None`: no budget). Prints a note and returns false
/// when it is over.
pub fn within_budget(name: &str, flops: f64, budget: Option<f64>, why: &str) -> bool {
    match budget {
        Some(budget) if flops > budget && !run_all() => {
            eprintln!(
                "{name}: skipped, {:.2} GFLOP per forward is over the budget of {:.2} GFLOP \
                 ({why}; {RUN_ALL_VARIABLE}=1 runs it)",
                flops / 1e9,
                budget / 1e9
            );
            false
        }
        _ => true,
    }
}

/// Prepares `group` for a benchmark at length `seq_len`: throughput in frames (T·N) and a
/// measurement time that fits the `SAMPLES` iterations, from a rough rate estimate (criterion
/// warns when its target is too short, and stretches it anyway).
pub fn configure(
    group: &mut BenchmarkGroup<'_, WallTime>,
    shape: Shape,
    seq_len: usize,
    estimated_flops_per_second: f64,
) -> BenchmarkId {
    let estimate = shape.flops(seq_len) / estimated_flops_per_second;
    let needed = Duration::from_secs_f64(estimate * SAMPLES as f64 * 1.2);
    group
        .throughput(Throughput::Elements((seq_len * shape.batch) as u64))
        .measurement_time(needed.max(Duration::from_secs(2)));
    BenchmarkId::new("T", seq_len)
}

/// Settings for every group: few samples of a fixed iteration count (`SamplingMode::Flat`,
/// meant for long benchmarks), a short warm-up.
pub fn settle(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
}
