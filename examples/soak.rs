//! Soak test: many forwards of varying shape on one `GpuRnn`, watching resident memory.
//!
//!     cargo run --release --example soak                       # 10,000 forwards
//!     cargo run --release --example soak -- --iterations 50000 --max-growth-mib 20
//!
//! T and N change on every call (more shapes than the model's workspace cache holds, so
//! workspaces are made and dropped all the time), some calls pass h0 or per-sequence lengths,
//! and every 500th result is checked against the CPU path. Resident memory (from
//! `/proc/self/statm`) is printed after a warm-up of 200 forwards and every 1,000 after; the
//! process exits with status 1 if it grew by more than `--max-growth-mib` (default 20) since
//! the warm-up, or if any forward failed.
//!
//!     cargo run --release --example soak -- --train --iterations 2000
//!
//! `--train` soaks training instead: `GpuTrainer::train_step` iterations (a Linear head, MSE and
//! cross-entropy in turn, the state carried or reset, clipping, Adam), the loss read back every
//! 100, resident memory watched the same way. (It found a pass that made lavapipe keep
//! ~160 KB per iteration.)

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    Adam, Batch, CpuRnn, GpuContext, GpuRnn, GpuTrainer, Hx, InitialState, Linear, Loss, Reduction,
    Rnn, RnnConfig, RnnMode, RnnWeights, Target, Tensor, Train,
};

const WARM_UP: usize = 200;

/// Soak test: many forwards of varying shape on one GpuRnn, watching resident memory; exits
/// with status 1 if it grew too much after the warm-up or if any forward failed.
#[derive(Parser)]
#[command(name = "soak")]
struct Options {
    /// Forwards to run (T and N change on every call).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    iterations: usize,

    /// The most resident memory may grow, in MiB, between the end of the warm-up (200
    /// forwards) and the end.
    #[arg(long, value_name = "M", default_value_t = 20.0)]
    max_growth_mib: f64,

    /// The model's mode: rnn_tanh, rnn_relu, lstm or gru (an LSTM's calls with h0 pass c0
    /// too).
    #[arg(long, value_name = "MODE", default_value = "rnn_tanh")]
    mode: RnnMode,

    /// Soak training iterations (GpuTrainer::train_step) instead of forwards.
    #[arg(long)]
    train: bool,
}

/// The page size, from the auxiliary vector the kernel hands every process (AT_PAGESZ = 6);
/// std has no portable way to ask, and this avoids a libc dependency.
fn page_size() -> u64 {
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap());
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|&(key, _)| key == 6)
        .map_or(4096, |(_, value)| value)
}

/// Resident set size in bytes: the second field of /proc/self/statm, in pages.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Deterministic values in [-1, 1).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Prints the RSS after the warm-up and every 1,000 iterations; returns the baseline.
fn report(done: usize, total: usize, what: &str, baseline: &mut Option<u64>, started: Instant) {
    if done == WARM_UP.min(total) {
        let rss = resident_bytes().unwrap_or(0);
        println!("after {done:>6} {what} (warm-up): RSS {:8.1} MiB", mib(rss));
        *baseline = Some(rss);
    } else if done % 1000 == 0 || done == total {
        let rss = resident_bytes().unwrap_or(0);
        println!(
            "after {done:>6} {what}: RSS {:8.1} MiB ({:+.1} MiB since warm-up), {:.1?}",
            mib(rss),
            mib(rss) - baseline.map_or(0.0, mib),
            started.elapsed()
        );
    }
}

/// The final verdict: growth since the warm-up within the limit, no failures.
fn verdict(
    options: &Options,
    what: &str,
    baseline: Option<u64>,
    failures: usize,
    started: Instant,
) -> ExitCode {
    let end = resident_bytes().unwrap_or(0);
    let growth = mib(end) - baseline.map_or(mib(end), mib);
    println!(
        "end: RSS {:.1} MiB, growth since warm-up {growth:+.1} MiB (limit {} MiB), {} {what} in {:.1?}, {failures} failed",
        mib(end),
        options.max_growth_mib,
        options.iterations,
        started.elapsed()
    );
    if failures > 0 {
        eprintln!("FAIL: {failures} {what} failed");
        return ExitCode::from(1);
    }
    if growth > options.max_growth_mib {
        eprintln!(
            "FAIL: resident memory grew {growth:.1} MiB after the warm-up (limit {} MiB)",
            options.max_growth_mib
        );
        return ExitCode::from(1);
    }
    println!("PASS");
    ExitCode::SUCCESS
}

/// `--train`: training iterations on one GpuTrainer.
fn soak_training(options: &Options, ctx: &GpuContext) -> ExitCode {
    let config = RnnConfig {
        batch_first: true,
        ..RnnConfig::new(options.mode, 4, 32)
    };
    let weights = RnnWeights::init(&config, 1).expect("valid configuration");
    let head = Linear {
        in_features: 32,
        out_features: 5,
        weight: values(2, 5 * 32),
        bias: Some(values(3, 5)),
    };
    let model = GpuTrainer::new(ctx, config.clone(), &weights).and_then(|m| m.with_head(&head));
    let mut model = match model {
        Ok(model) => model,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut adam = model
        .optimizer(Adam::new(0.001).into())
        .expect("a valid optimizer");
    println!(
        "model: {}(4, 32) + Linear(32, 5), batch_first; {} training steps of (N 4, T 20)",
        config.mode.torch_name(),
        options.iterations
    );
    let started = Instant::now();
    let (mut baseline, mut failures) = (None, 0);
    for i in 0..options.iterations {
        let input = Tensor::new(values(i as u64, 4 * 20 * 4), &[4, 20, 4]).expect("shape matches");
        let values_target =
            Tensor::new(values(!(i as u64), 4 * 20 * 5), &[4, 20, 5]).expect("shape matches");
        let classes: Vec<usize> = (0..80).map(|f| (f * 3 + i) % 5).collect();
        let (loss, target) = match i % 2 {
            0 => (Loss::Mse(Reduction::Mean), Target::Values(&values_target)),
            _ => (
                Loss::CrossEntropy(Reduction::Mean),
                Target::Classes(&classes),
            ),
        };
        let batch = Batch {
            input: &input,
            lengths: None,
            state: if i % 7 == 0 {
                InitialState::Zeros
            } else {
                InitialState::Carried
            },
            target,
        };
        let stepped = model.train_step(batch, loss, &mut adam, Some(1.0));
        let read = if i % 100 == 99 {
            model.last_loss().map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = stepped.and(read) {
            eprintln!("training step {i}: {e}");
            failures += 1;
        }
        report(
            i + 1,
            options.iterations,
            "training steps",
            &mut baseline,
            started,
        );
    }
    verdict(options, "training steps", baseline, failures, started)
}

fn main() -> ExitCode {
    let options = Options::parse();
    let Some(start_rss) = resident_bytes() else {
        eprintln!("cannot read /proc/self/statm (this soak test needs Linux)");
        return ExitCode::from(2);
    };
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(options.mode, 16, 32)
    };
    let weights = RnnWeights::init(&config, 1).expect("valid configuration");
    let cpu = CpuRnn::new(config.clone(), &weights).expect("valid weights");
    let ctx = match GpuContext::new() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let gpu = GpuRnn::new(&ctx, config.clone(), &weights).expect("the model fits the adapter");
    println!("adapter: {}", ctx.describe());
    if options.train {
        println!("RSS at start {:.1} MiB", mib(start_rss));
        return soak_training(&options, &ctx);
    }
    println!(
        "model: {}(16, 32, num_layers=2); {} forwards, T in 1..=64, N in 1..=8; RSS at start {:.1} MiB",
        config.mode.torch_name(),
        options.iterations,
        mib(start_rss)
    );

    let started = Instant::now();
    let mut baseline = None;
    let mut failures = 0;
    for i in 0..options.iterations {
        // Steps through many (T, N) pairs in an order that rarely repeats soon.
        let seq_len = 1 + (i * 37) % 64;
        let batch = 1 + (i * 5) % 8;
        let input = Tensor::new(
            values(i as u64, seq_len * batch * config.input_size),
            &[seq_len, batch, config.input_size],
        )
        .expect("shape matches data");
        let state = |seed: u64| {
            let shape = [config.num_layers, batch, config.hidden_size];
            Tensor::new(values(seed, shape.iter().product()), &shape).unwrap()
        };
        let h0 = (i % 3 == 0).then(|| state(!(i as u64)));
        let c0 = (i % 3 == 0 && config.mode == RnnMode::Lstm).then(|| state(i as u64 ^ 0x5A5A));
        let hx = h0.as_ref().map(|h0| Hx {
            h0,
            c0: c0.as_ref(),
        });
        let lengths: Option<Vec<usize>> =
            (i % 4 == 0).then(|| (0..batch).map(|n| 1 + (n * 7 + i) % seq_len).collect());
        let run = |model: &dyn Rnn| match &lengths {
            Some(l) => model.forward_with_lengths(&input, l, hx),
            None => model.forward(&input, hx),
        };
        match run(&gpu) {
            Ok(out) if i % 500 == 0 => {
                let want = run(&cpu).expect("the CPU path accepts what the GPU path did");
                let c = compare(out.output.data(), want.output.data(), 1e-4);
                if !c.passed() {
                    eprintln!("forward {i} (T {seq_len}, N {batch}): differs from the CPU: {c}");
                    failures += 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("forward {i} (T {seq_len}, N {batch}): {e}");
                failures += 1;
            }
        }
        report(
            i + 1,
            options.iterations,
            "forwards",
            &mut baseline,
            started,
        );
    }
    verdict(&options, "forwards", baseline, failures, started)
}
