//! `GpuRnn::forward` on the default adapter: `cargo bench --bench gpu_forward`.
//!
//! Choices:
//! - `nn.RNN(H, H)`, one layer, tanh, for (H=64, N=1), (H=256, N=16), (H=1024, N=64) and
//!   T ∈ {16, 64, 256, 1024, 4096}. Benchmarks are named `gpu_H{H}_N{N}/T/{T}`; throughput is
//!   in frames (T·N) per second.
//! - The GPU context is made once; each shape's model (weights uploaded) on the first of its
//!   benchmarks, and each length's input once, with one forward before timing that allocates
//!   the workspace. An iteration is one full `forward`: upload, record, submit, wait for the
//!   GPU and read output and h_n back.
//! - 10 samples of a fixed iteration count (criterion's flat sampling, meant for long
//!   benchmarks), half a second of warm-up: the slow combinations run about 11 forwards.
//! - On a software adapter (device type `Cpu`: lavapipe, WARP, llvmpipe on GL) combinations over
//!   `SOFTWARE_FLOP_BUDGET` (5 GFLOP per forward) are skipped with a note. Lavapipe on 2 cores
//!   runs these forwards at about 1–2 GFLOP/s, so the budget keeps H=64 N=1 at every length,
//!   H=256 N=16 up to T=1024 and H=1024 N=64 at T=16 (each about 4 s per forward, 50 s per
//!   benchmark); H=1024 N=64 at T=4096 would take about 15 minutes per forward. Hardware
//!   adapters run everything; `WGPU_RNN_BENCH_ALL=1` also runs everything on software ones.
//! - Without any adapter the benchmark prints why and measures nothing.

mod common;

use std::cell::OnceCell;
use std::time::Duration;

use common::{LENGTHS, SHAPES, Shape, configure, settle, within_budget};
use criterion::{Criterion, criterion_group, criterion_main};
use wgpu_rnn::{GpuContext, GpuRnn, Rnn, Tensor};

/// FLOPs per forward above which a software adapter skips a combination: a few seconds per
/// forward on lavapipe with 2 cores.
const SOFTWARE_FLOP_BUDGET: f64 = 5e9;

/// Rough forward throughput of lavapipe on 2 cores (it sets criterion's measurement time only).
const SOFTWARE_FLOPS_PER_SECOND: f64 = 1e9;

/// A hardware adapter: the 2-second minimum measurement time covers every combination.
const HARDWARE_FLOPS_PER_SECOND: f64 = 1e12;

fn gpu_forward(c: &mut Criterion) {
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(error) => {
            eprintln!("gpu_forward: no GPU adapter, nothing measured ({error})");
            return;
        }
    };
    // The longest forwards on a software adapter are far beyond the default timeout.
    ctx.set_timeout(Duration::from_secs(3600));
    eprintln!("gpu_forward on {}", ctx.describe());
    let software = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let (budget, rate) = if software {
        (Some(SOFTWARE_FLOP_BUDGET), SOFTWARE_FLOPS_PER_SECOND)
    } else {
        (None, HARDWARE_FLOPS_PER_SECOND)
    };
    for shape in SHAPES {
        let model = OnceCell::new();
        let mut group = c.benchmark_group(shape.group_name("gpu"));
        settle(&mut group);
        for seq_len in LENGTHS {
            let name = format!("{}/T/{seq_len}", shape.group_name("gpu"));
            if !within_budget(&name, shape.flops(seq_len), budget, "software adapter") {
                continue;
            }
            let id = configure(&mut group, shape, seq_len, rate);
            // Criterion calls this closure once per sample: set up only on the first call.
            let mut input = None;
            group.bench_function(id, |b| {
                let model = model.get_or_init(|| upload(&ctx, shape));
                let input = input.get_or_insert_with(|| first_forward(model, shape, seq_len));
                b.iter(|| model.forward(input, None).expect("GPU forward"));
            });
        }
        group.finish();
    }
}

fn upload(ctx: &GpuContext, shape: Shape) -> GpuRnn {
    GpuRnn::new(ctx, shape.config(), &shape.weights()).expect("uploading the model")
}

/// The input for `seq_len`, after one untimed forward that allocates its workspace.
fn first_forward(model: &GpuRnn, shape: Shape, seq_len: usize) -> Tensor {
    let input = shape.input(seq_len);
    model.forward(&input, None).expect("GPU forward");
    input
}

criterion_group!(benches, gpu_forward);
criterion_main!(benches);
