//! `CpuRnn::forward`, the reference path: `cargo bench --bench cpu_forward`.
//!
//! Choices:
//! - The same combinations as `gpu_forward`: `nn.RNN(H, H)`, one layer, tanh, for (H=64, N=1),
//!   (H=256, N=16), (H=1024, N=64) and T ∈ {16, 64, 256, 1024, 4096}, named
//!   `cpu_H{H}_N{N}/T/{T}`, throughput in frames (T·N) per second.
//! - The reference path accumulates in f64 with plain loops, about 1–2 GFLOP/s: combinations
//!   over `CPU_FLOP_BUDGET` (2^30 FLOP, about a second per forward) are skipped with a note,
//!   which leaves H=64 at every length, H=256 N=16 up to T=256 and none of H=1024 N=64 (its
//!   shortest forward is 4.3 GFLOP; T=4096 would be 1.1 TFLOP, hours).
//!   `WGPU_RNN_BENCH_ALL=1` runs them all anyway.
//! - Each shape's model is made on the first of its benchmarks, each length's input once.
//! - 10 samples of a fixed iteration count (criterion's flat sampling), half a second of
//!   warm-up: the slowest combination takes about 15 s.

mod common;

use std::cell::OnceCell;

use common::{LENGTHS, SHAPES, configure, settle, within_budget};
use criterion::{Criterion, criterion_group, criterion_main};
use wgpu_rnn::{CpuRnn, Rnn};

/// FLOPs per forward above which the reference path is not benchmarked: 2^30.
const CPU_FLOP_BUDGET: f64 = (1u64 << 30) as f64;

/// Rough throughput of the reference path (it sets criterion's measurement time only).
const CPU_FLOPS_PER_SECOND: f64 = 1.5e9;

fn cpu_forward(c: &mut Criterion) {
    for shape in SHAPES {
        let model = OnceCell::new();
        let mut group = c.benchmark_group(shape.group_name("cpu"));
        settle(&mut group);
        for seq_len in LENGTHS {
            let name = format!("{}/T/{seq_len}", shape.group_name("cpu"));
            let flops = shape.flops(seq_len);
            if !within_budget(&name, flops, Some(CPU_FLOP_BUDGET), "slow reference path") {
                continue;
            }
            let id = configure(&mut group, shape, seq_len, CPU_FLOPS_PER_SECOND);
            // Criterion calls this closure once per sample: set up only on the first call.
            let mut input = None;
            group.bench_function(id, |b| {
                let model = model.get_or_init(|| {
                    CpuRnn::new(shape.config(), &shape.weights()).expect("a valid model")
                });
                let input = input.get_or_insert_with(|| shape.input(seq_len));
                b.iter(|| model.forward(input, None).expect("CPU forward"));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, cpu_forward);
criterion_main!(benches);
