//! `nn.LSTM` and `nn.GRU` on the GPU: every PyTorch case of tests/fixtures/torch_gated within
//! 1e-4 (whole sequences and forced time chunks), random configurations against the CPU
//! reference (proptest), streams with delay, long sequences, and the allocation-free repeat
//! forward.

mod support;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use wgpu_rnn::compare::compare;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{
    CpuGatedRnn, GateKind, GatedCellConfig, GatedConfig, GatedOutput, GatedRnn, GatedWeights,
    GpuContext, GpuGatedRnn, GpuOptions, GruCell, Linear, LstmCell, Recurrence, RnnError,
    StreamOptions, Tensor, testing,
};

const TOLERANCE: f64 = 1e-4;

/// Every fixture on the GPU, whole and (with a budget that forces chunks of a few steps) in
/// time chunks, which bidirectional cases run layer by layer.
#[test]
fn gpu_path_matches_pytorch() {
    let Some(ctx) = testing::gpu("gpu_path_matches_pytorch") else {
        return;
    };
    let cases = support::gated_cases();
    assert_eq!(cases.len(), 11, "gated fixtures went missing");
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for (name, case) in &cases {
        let config = case.gated_config().unwrap();
        let weights = case.gated_weights(&config).unwrap();
        let model = GpuGatedRnn::new(&ctx, config, &weights).unwrap();
        for chunked in [false, true] {
            let budget = chunked.then(|| chunk_budget(&model, case));
            model.set_workspace_budget(budget);
            let check = case
                .check_gated(&model, TOLERANCE)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let c_n = check
                .c_n
                .map_or("-".to_string(), |c| format!("{:.2e}", c.max_abs));
            println!(
                "gpu {name:<20} chunked={chunked} output {:.2e}  h_n {:.2e}  c_n {c_n}",
                check.output.max_abs, check.h_n.max_abs
            );
            worst = worst
                .max(check.output.max_abs)
                .max(check.h_n.max_abs)
                .max(check.c_n.map_or(0.0, |c| c.max_abs));
            if !check.passed() {
                failures.push(format!(
                    "{name} (chunked: {chunked}): output {}; h_n {}; c_n {:?}",
                    check.output, check.h_n, check.c_n
                ));
            }
        }
    }
    println!("gpu worst: {worst:.2e} (tolerance {TOLERANCE:e})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A workspace budget under which `case` runs in chunks of about two timesteps.
fn chunk_budget(model: &GpuGatedRnn, case: &ReferenceCase) -> u64 {
    let input = case.tensor("input").unwrap();
    let config = model.config();
    let (t, n) = match (input.shape(), config.batch_first) {
        (&[t, _], _) => (t, 1),
        (&[n, t, _], true) => (t, n),
        (&[t, n, _], false) => (t, n),
        (shape, _) => panic!("input of shape {shape:?}"),
    };
    // Grow the budget until a chunk holds two steps (or the whole sequence).
    let mut budget = 1024u64;
    loop {
        model.set_workspace_budget(Some(budget));
        if let Ok(chunk) = model.time_chunk(t, n) {
            if chunk >= 2.min(t) {
                assert!(t < 3 || chunk < t, "the budget must force chunks");
                return budget;
            }
        }
        budget += 256;
    }
}

#[derive(Clone, Debug)]
struct Problem {
    config: GatedConfig,
    recurrence: Recurrence,
    seq_len: usize,
    batch: usize,
    unbatched: bool,
    with_state: bool,
    lengths: Option<Vec<usize>>,
    seed: u64,
}

fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = testing_rng(seed);
    (0..len).map(|_| rng()).collect()
}

/// Uniform values in [-2, 2) from `seed`.
fn testing_rng(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
}

impl Problem {
    fn input(&self) -> Tensor {
        let (t, n, i) = (self.seq_len, self.batch, self.config.input_size);
        let shape = if self.unbatched {
            vec![t, i]
        } else if self.config.batch_first {
            vec![n, t, i]
        } else {
            vec![t, n, i]
        };
        Tensor::new(values(self.seed, t * n * i), &shape).unwrap()
    }

    fn state(&self, features: usize, seed: u64) -> Tensor {
        let rows = self.config.state_rows();
        let shape = if self.unbatched {
            vec![rows, features]
        } else {
            vec![rows, self.batch, features]
        };
        Tensor::new(values(seed, rows * self.batch * features), &shape).unwrap()
    }

    fn run(&self, model: &impl GatedRnn) -> GatedOutput {
        let input = self.input();
        let h0 = self
            .with_state
            .then(|| self.state(self.config.state_size(), self.seed + 1));
        let c0 = (self.with_state && self.config.kind == GateKind::Lstm)
            .then(|| self.state(self.config.hidden_size, self.seed + 2));
        match &self.lengths {
            Some(lengths) => model.forward_with_lengths(&input, lengths, h0.as_ref(), c0.as_ref()),
            None => model.forward(&input, h0.as_ref(), c0.as_ref()),
        }
        .unwrap()
    }

    fn check(&self, ctx: &GpuContext) -> Result<(), String> {
        let weights = GatedWeights::init(&self.config, self.seed).unwrap();
        let cpu = CpuGatedRnn::new(self.config.clone(), weights.clone()).unwrap();
        let options = GpuOptions::recurrence(self.recurrence);
        let gpu = GpuGatedRnn::with_options(ctx, self.config.clone(), &weights, options).unwrap();
        check_same(&self.run(&gpu), &self.run(&cpu)).map_err(|e| format!("{self:?}: {e}"))
    }
}

/// Shapes equal and values within the tolerance, for output, h_n and c_n.
fn check_same(got: &GatedOutput, want: &GatedOutput) -> Result<(), String> {
    let parts = [
        ("output", Some(&got.output), Some(&want.output)),
        ("h_n", Some(&got.h_n), Some(&want.h_n)),
        ("c_n", got.c_n.as_ref(), want.c_n.as_ref()),
    ];
    for (what, g, w) in parts {
        match (g, w) {
            (Some(g), Some(w)) => {
                if g.shape() != w.shape() {
                    return Err(format!("{what}: shape {:?} != {:?}", g.shape(), w.shape()));
                }
                let c = compare(g.data(), w.data(), TOLERANCE);
                if !c.passed() {
                    return Err(format!("{what}: {c}"));
                }
            }
            (None, None) => {}
            _ => return Err(format!("{what}: present on one side only")),
        }
    }
    Ok(())
}

fn problem() -> impl Strategy<Value = Problem> {
    let sizes = prop::sample::select(vec![1usize, 3, 8, 17, 64, 70]);
    (
        (
            any::<bool>(),
            sizes.clone(),
            sizes,
            1usize..=2,
            any::<bool>(),
        ),
        (any::<bool>(), any::<bool>(), 0usize..=2),
        (1usize..=9, 1usize..=4, any::<bool>(), any::<bool>()),
        (any::<bool>(), any::<u64>(), any::<bool>()),
    )
        .prop_map(
            |(
                (lstm, input_size, hidden_size, num_layers, bidirectional),
                (bias, batch_first, proj_pick),
                (seq_len, batch, unbatched, with_state),
                (packed, seed, per_step),
            )| {
                let kind = if lstm { GateKind::Lstm } else { GateKind::Gru };
                // proj_size: none, 1, or hidden − 1 (LSTM with hidden > 1 only).
                let proj_size = match proj_pick {
                    1 if lstm && hidden_size > 1 => 1,
                    2 if lstm && hidden_size > 1 => hidden_size - 1,
                    _ => 0,
                };
                let config = GatedConfig {
                    num_layers,
                    bias,
                    batch_first,
                    bidirectional,
                    proj_size,
                    ..GatedConfig::with_defaults(kind, input_size, hidden_size)
                };
                let batch = if unbatched { 1 } else { batch };
                let lengths = (packed && !unbatched).then(|| {
                    let mut rng = testing_rng(seed ^ 7);
                    (0..batch)
                        .map(|_| 1 + ((rng() + 2.0) / 4.0 * seq_len as f32) as usize % seq_len)
                        .collect()
                });
                // Auto runs the persistent kernel where it fits: both kernels get covered.
                let recurrence = if per_step {
                    Recurrence::PerStep
                } else {
                    Recurrence::Auto
                };
                Problem {
                    config,
                    recurrence,
                    seq_len,
                    batch,
                    unbatched,
                    with_state,
                    lengths,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn gpu_matches_cpu_on_random_configurations(problem in problem()) {
        if let Some(ctx) = testing::gpu("gpu_matches_cpu_on_random_configurations") {
            if let Err(e) = problem.check(&ctx) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// Sizes that are not multiples of the 64-invocation workgroup, and one above it, for each
/// kernel (gates, projection of h), with every option that changes addressing.
#[test]
fn odd_sizes_match_cpu() {
    let Some(ctx) = testing::gpu("odd_sizes_match_cpu") else {
        return;
    };
    for (kind, hidden, proj_size) in [
        (GateKind::Lstm, 257, 0),
        (GateKind::Lstm, 257, 65),
        (GateKind::Gru, 257, 0),
        (GateKind::Lstm, 1, 0),
        (GateKind::Gru, 1, 0),
    ] {
        let problem = Problem {
            recurrence: Recurrence::Auto,
            config: GatedConfig {
                bidirectional: true,
                num_layers: 2,
                proj_size,
                ..GatedConfig::with_defaults(kind, 3, hidden)
            },
            seq_len: 5,
            batch: 3,
            unbatched: false,
            with_state: true,
            lengths: Some(vec![5, 2, 4]),
            seed: hidden as u64,
        };
        problem.check(&ctx).unwrap();
    }
}

/// The per-step path's block kernel in each of its subgroup forms: on CPU adapters with
/// subgroups, hidden sizes that are multiples of 32 run one sequence an invocation for a
/// batch of one, four up to four, sixteen above; batches that are not multiples of the form's
/// sequences leave lanes past the batch. Every option that changes its addressing: both
/// directions, two layers, lengths, h0 and c0, a projected LSTM, batch-first input.
#[test]
fn every_subgroup_block_form_matches_cpu() {
    let Some(ctx) = testing::gpu("every_subgroup_block_form_matches_cpu") else {
        return;
    };
    let cases = [
        (GateKind::Lstm, 32, 0, 9, true),
        (GateKind::Lstm, 64, 0, 16, false),
        (GateKind::Lstm, 64, 32, 17, true),
        (GateKind::Gru, 32, 0, 33, false),
        (GateKind::Gru, 96, 0, 12, true),
        (GateKind::Lstm, 32, 0, 5, false),
        (GateKind::Gru, 64, 0, 1, true),
        (GateKind::Lstm, 64, 32, 1, false),
        (GateKind::Lstm, 32, 0, 3, true),
    ];
    for (k, (kind, hidden, proj_size, batch, bidirectional)) in cases.into_iter().enumerate() {
        let seq_len = 6;
        let mut rng = testing_rng(k as u64);
        let lengths = (0..batch)
            .map(|_| 1 + ((rng() + 2.0) / 4.0 * seq_len as f32) as usize % seq_len)
            .collect();
        let problem = Problem {
            recurrence: Recurrence::PerStep,
            config: GatedConfig {
                bidirectional,
                num_layers: 2,
                proj_size,
                batch_first: k % 2 == 1,
                ..GatedConfig::with_defaults(kind, 5 + k, hidden)
            },
            seq_len,
            batch,
            unbatched: false,
            with_state: k != 1,
            lengths: (k % 3 != 1).then_some(lengths),
            seed: 40 + k as u64,
        };
        problem.check(&ctx).unwrap();
    }
}

/// Long sequences against the CPU, on both kernels: the state must not drift or stop
/// updating, and the persistent kernel must carry it across its dispatches of 8192 steps.
#[test]
fn long_sequences_match_cpu() {
    let Some(ctx) = testing::gpu("long_sequences_match_cpu") else {
        return;
    };
    for (kind, hidden, seq_len, recurrence) in [
        (GateKind::Lstm, 64, 1500, Recurrence::Persistent),
        (GateKind::Gru, 256, 1000, Recurrence::PerStep),
        (GateKind::Gru, 17, 9000, Recurrence::Persistent),
    ] {
        let problem = Problem {
            recurrence,
            config: GatedConfig::with_defaults(kind, 4, hidden),
            seq_len,
            batch: 2,
            unbatched: false,
            with_state: false,
            lengths: None,
            seed: 3,
        };
        problem.check(&ctx).unwrap();
    }
}

#[test]
fn projecting_ahead_matches_cpu() {
    let Some(ctx) = testing::gpu("projecting_ahead_matches_cpu") else {
        return;
    };
    // The persistent gated kernels project the next chunk of inputs while the recurrence
    // runs where a layer's recurrence is one workgroup and its projection (I·G·H ≥ 128²,
    // I ≤ H) pays (see `GpuGatedRnn::layers_projecting_ahead`): h0 and c0, lengths, stacked
    // layers, odd sizes, against the CPU.
    let info = ctx.adapter_info();
    let expected = ctx.device().features().contains(wgpu::Features::SUBGROUP)
        && info.device_type == wgpu::DeviceType::Cpu;
    for (kind, input, hidden, layers, seq_len, lengths, layers_ahead) in [
        (GateKind::Lstm, 64, 64, 2, 700, None, 2),
        (GateKind::Gru, 84, 84, 1, 300, Some(vec![211]), 1),
        // I·4H = 16380, just short of 128².
        (GateKind::Lstm, 63, 65, 1, 257, None, 0),
        (GateKind::Gru, 77, 77, 1, 257, None, 1),
        (GateKind::Gru, 76, 76, 2, 129, None, 2),
    ] {
        let problem = Problem {
            recurrence: Recurrence::Auto,
            config: GatedConfig {
                num_layers: layers,
                ..GatedConfig::with_defaults(kind, input, hidden)
            },
            seq_len,
            batch: 1,
            unbatched: false,
            with_state: true,
            lengths,
            seed: 11,
        };
        let weights = GatedWeights::init(&problem.config, problem.seed).unwrap();
        let gpu = GpuGatedRnn::new(&ctx, problem.config.clone(), &weights).unwrap();
        let ahead = gpu.layers_projecting_ahead(seq_len, 1).unwrap();
        println!("{problem:?}: {ahead} layer(s) projecting ahead");
        assert_eq!(
            ahead,
            if expected { layers_ahead } else { 0 },
            "{problem:?}"
        );
        problem.check(&ctx).unwrap();
    }
}

/// Pushing a sequence in chunks (with a delay) gives the outputs and final state (h and c)
/// of one forward over it.
#[test]
fn streams_match_one_forward() {
    let Some(ctx) = testing::gpu("streams_match_one_forward") else {
        return;
    };
    for (kind, proj_size) in [(GateKind::Lstm, 0), (GateKind::Lstm, 3), (GateKind::Gru, 0)] {
        let config = GatedConfig {
            num_layers: 2,
            proj_size,
            ..GatedConfig::with_defaults(kind, 3, 7)
        };
        let weights = GatedWeights::init(&config, 9).unwrap();
        let gpu = GpuGatedRnn::new(&ctx, config.clone(), &weights).unwrap();
        let cpu = CpuGatedRnn::new(config.clone(), weights).unwrap();
        let (steps, batch, delay) = (11, 2, 2);
        let input = Tensor::new(values(5, steps * batch * 3), &[steps, batch, 3]).unwrap();
        let want = cpu.forward(&input, None, None).unwrap();
        let mut stream = gpu.stream(StreamOptions { batch, delay }).unwrap();
        let mut outputs = Vec::new();
        for (t0, len) in [(0, 1), (1, 4), (5, 6)] {
            let chunk = Tensor::new(
                input.data()[t0 * batch * 3..(t0 + len) * batch * 3].to_vec(),
                &[len, batch, 3],
            )
            .unwrap();
            outputs.extend_from_slice(stream.push(&chunk).unwrap().data());
        }
        // The state after the last real frame, before finish() feeds the delay's zeros.
        let h = stream.state().unwrap();
        let c = stream.cell_state().unwrap();
        outputs.extend_from_slice(stream.finish().unwrap().data());
        let features = config.output_size();
        // With a delay, output i of the stream is the model's output for frame i + delay.
        let expected = &want.output.data()[delay * batch * features..];
        let got = &outputs[..expected.len()];
        let c_out = compare(got, expected, TOLERANCE);
        assert!(c_out.passed(), "{kind:?} proj {proj_size}: output {c_out}");
        assert_eq!(outputs.len(), steps * batch * features);
        let c_h = compare(h.data(), want.h_n.data(), TOLERANCE);
        assert!(c_h.passed(), "{kind:?}: h {c_h}");
        match (c, &want.c_n) {
            (Some(c), Some(want_c)) => {
                let c_c = compare(c.data(), want_c.data(), TOLERANCE);
                assert!(c_c.passed(), "{kind:?}: c {c_c}");
            }
            (None, None) => {}
            _ => panic!("{kind:?}: cell state on one side only"),
        }
    }
}

/// A stream reset to a given (h, c) continues from it exactly as a forward from (h0, c0).
#[test]
fn lstm_stream_resets_to_a_given_state() {
    let Some(ctx) = testing::gpu("lstm_stream_resets_to_a_given_state") else {
        return;
    };
    let config = GatedConfig::lstm(2, 5);
    let weights = GatedWeights::init(&config, 4).unwrap();
    let gpu = GpuGatedRnn::new(&ctx, config.clone(), &weights).unwrap();
    let input = Tensor::new(values(8, 6 * 2), &[6, 1, 2]).unwrap();
    let h0 = Tensor::new(values(9, 5), &[1, 1, 5]).unwrap();
    let c0 = Tensor::new(values(10, 5), &[1, 1, 5]).unwrap();
    let want = gpu.forward(&input, Some(&h0), Some(&c0)).unwrap();
    let mut stream = gpu.stream(StreamOptions::default()).unwrap();
    assert!(matches!(
        stream.reset_to(&h0),
        Err(RnnError::InvalidConfig(_))
    ));
    stream.reset_to_lstm_state(&h0, &c0).unwrap();
    let got = stream.push(&input).unwrap();
    assert!(compare(got.data(), want.output.data(), TOLERANCE).passed());
    let wrong = Tensor::zeros(&[1, 1, 4]).unwrap();
    assert!(matches!(
        stream.reset_to_lstm_state(&h0, &wrong),
        Err(RnnError::ShapeMismatch { what: "c0", .. })
    ));
}

/// After the first forward of a shape, a forward makes no buffer, bind group or pipeline.
#[test]
fn repeated_forwards_allocate_nothing() {
    let Some(ctx) = testing::gpu("gated repeated_forwards_allocate_nothing") else {
        return;
    };
    // A context of its own, so that other tests' allocations do not count.
    let ctx = GpuContext::from_device(ctx.device().clone(), ctx.queue().clone()).unwrap();
    let config = GatedConfig {
        proj_size: 2,
        bidirectional: true,
        ..GatedConfig::lstm(3, 6)
    };
    let weights = GatedWeights::init(&config, 1).unwrap();
    let gpu = GpuGatedRnn::new(&ctx, config, &weights).unwrap();
    let input = Tensor::new(values(2, 4 * 2 * 3), &[4, 2, 3]).unwrap();
    let first = gpu.forward(&input, None, None).unwrap();
    let before = ctx.resource_counts();
    for _ in 0..3 {
        let again = gpu.forward(&input, None, None).unwrap();
        assert_eq!(again, first, "a repeated forward gives the same result");
    }
    assert_eq!(ctx.resource_counts(), before);
}

/// The rule that picks the kernel: the persistent one for small LSTMs and GRUs, the per-step
/// ones for wide or projected ones; asking a projected LSTM for the persistent kernel is a
/// typed error.
#[test]
fn recurrence_follows_the_documented_rule() {
    let Some(ctx) = testing::gpu("recurrence_follows_the_documented_rule") else {
        return;
    };
    let model = |config: GatedConfig, recurrence| {
        let weights = GatedWeights::init(&config, 1).unwrap();
        GpuGatedRnn::with_options(&ctx, config, &weights, GpuOptions::recurrence(recurrence))
    };
    for (config, auto) in [
        (GatedConfig::lstm(2, 64), Recurrence::Persistent),
        (GatedConfig::lstm(2, 65), Recurrence::PerStep),
        (GatedConfig::gru(2, 84), Recurrence::Persistent),
        (GatedConfig::gru(2, 85), Recurrence::PerStep),
        (
            GatedConfig {
                proj_size: 2,
                ..GatedConfig::lstm(2, 4)
            },
            Recurrence::PerStep,
        ),
    ] {
        let got = model(config.clone(), Recurrence::Auto)
            .unwrap()
            .recurrence();
        assert_eq!(got, auto, "{config:?}");
        let per_step = model(config.clone(), Recurrence::PerStep).unwrap();
        assert_eq!(per_step.recurrence(), Recurrence::PerStep);
    }
    let projected = GatedConfig {
        proj_size: 2,
        ..GatedConfig::lstm(2, 4)
    };
    assert!(matches!(
        model(projected, Recurrence::Persistent),
        Err(RnnError::InvalidConfig(_))
    ));
    // A GRU has no c0; an LSTM needs both: the same rules as the CPU path.
    let gru = model(GatedConfig::gru(2, 4), Recurrence::Auto).unwrap();
    let input = Tensor::zeros(&[2, 1, 2]).unwrap();
    let state = Tensor::zeros(&[1, 1, 4]).unwrap();
    assert!(matches!(
        gru.forward(&input, Some(&state), Some(&state)),
        Err(RnnError::ShapeMismatch { what: "c0", .. })
    ));
}

/// `LSTMCell` and `GRUCell` on the GPU, stepped through PyTorch's one-layer sequences: every
/// step's h (and the final c) within the tolerance.
#[test]
fn gpu_cells_stepped_through_a_sequence_match_pytorch() {
    let Some(ctx) = testing::gpu("gpu_cells_stepped_through_a_sequence_match_pytorch") else {
        return;
    };
    let load = |name: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/torch_gated/{name}.safetensors"));
        let case = ReferenceCase::load(path).unwrap();
        let config = case.gated_config().unwrap();
        let weights = case.gated_weights(&config).unwrap().units()[0].clone();
        let cell = GatedCellConfig {
            kind: config.kind,
            input_size: config.input_size,
            hidden_size: config.hidden_size,
            bias: config.bias,
        };
        (case, cell, weights)
    };
    let frame = |tensor: &Tensor, t: usize| {
        let (n, f) = (tensor.shape()[1], tensor.shape()[2]);
        Tensor::new(tensor.data()[t * n * f..(t + 1) * n * f].to_vec(), &[n, f]).unwrap()
    };
    let close = |what: String, got: &Tensor, want: &Tensor| {
        let c = compare(got.data(), want.data(), TOLERANCE);
        assert!(c.passed(), "{what}: {c}");
    };

    let (case, config, weights) = load("lstm_l1");
    let cell = LstmCell::gpu(&ctx, config, weights).unwrap();
    let (input, output) = (
        case.tensor("input").unwrap(),
        case.tensor("output").unwrap(),
    );
    let mut state: Option<(Tensor, Tensor)> = None;
    for t in 0..input.shape()[0] {
        let hx = state.as_ref().map(|(h, c)| (h, c));
        let (h, c) = cell.step(&frame(&input, t), hx).unwrap();
        close(format!("LSTMCell step {t}"), &h, &frame(&output, t));
        state = Some((h, c));
    }
    let c_n = case.tensor("c_n").unwrap();
    let last_c = state.unwrap().1;
    close(
        "LSTMCell c".into(),
        &last_c,
        &Tensor::new(c_n.into_data(), last_c.shape()).unwrap(),
    );

    let (case, config, weights) = load("gru_l1");
    let cell = GruCell::gpu(&ctx, config, weights).unwrap();
    let (input, output) = (
        case.tensor("input").unwrap(),
        case.tensor("output").unwrap(),
    );
    let mut h: Option<Tensor> = None;
    for t in 0..input.shape()[0] {
        let next = cell.step(&frame(&input, t), h.as_ref()).unwrap();
        close(format!("GRUCell step {t}"), &next, &frame(&output, t));
        h = Some(next);
    }
}

/// A Linear head on an LSTM runs on the GPU after the last layer: the same numbers as the
/// head applied to the CPU model's output.
#[test]
fn a_linear_head_follows_the_last_layer() {
    let Some(ctx) = testing::gpu("gated a_linear_head_follows_the_last_layer") else {
        return;
    };
    let config = GatedConfig {
        num_layers: 2,
        bidirectional: true,
        ..GatedConfig::lstm(3, 5)
    };
    let weights = GatedWeights::init(&config, 6).unwrap();
    let head = Linear {
        in_features: 10,
        out_features: 2,
        weight: values(7, 2 * 10),
        bias: Some(values(8, 2)),
    };
    let gpu = GpuGatedRnn::new(&ctx, config.clone(), &weights)
        .unwrap()
        .with_head(&head)
        .unwrap();
    assert_eq!(gpu.output_features(), 2);
    let input = Tensor::new(values(9, 4 * 3 * 3), &[4, 3, 3]).unwrap();
    let got = gpu.forward(&input, None, None).unwrap();
    let frames = CpuGatedRnn::new(config, weights)
        .unwrap()
        .forward(&input, None, None)
        .unwrap()
        .output;
    let head = &head;
    let want: Vec<f32> = frames
        .data()
        .chunks(10)
        .flat_map(|frame| {
            (0..2).map(move |o| {
                let row = &head.weight[o * 10..(o + 1) * 10];
                let dot: f32 = row.iter().zip(frame).map(|(w, x)| w * x).sum();
                dot + head.bias.as_ref().unwrap()[o]
            })
        })
        .collect();
    assert_eq!(got.output.shape(), &[4, 3, 2]);
    let c = compare(got.output.data(), &want, TOLERANCE);
    assert!(c.passed(), "{c}");
}

/// NaN and ±Inf in the input and in h0/c0 propagate as on the CPU path (NaN where NaN, the
/// same infinities), through both kernels: σ(±inf) = 1 or 0, tanh(±inf) = ±1. Not on wgpu's
/// GL backend, whose shading language leaves NaN handling to the driver.
#[test]
fn nan_and_inf_propagate_as_on_the_cpu() {
    let Some(ctx) = testing::gpu("gated nan_and_inf_propagate_as_on_the_cpu") else {
        return;
    };
    if ctx.adapter_info().backend == wgpu::Backend::Gl {
        // GLSL leaves NaN and infinity handling to the implementation (llvmpipe's GL gives
        // σ(NaN)·tanh(−inf) = −1 here); wgpu's other backends are IEEE.
        println!("skipped on the GL backend: GLSL does not guarantee IEEE NaN propagation");
        return;
    }
    for (kind, recurrence) in [
        (GateKind::Lstm, Recurrence::Auto),
        (GateKind::Lstm, Recurrence::PerStep),
        (GateKind::Gru, Recurrence::Auto),
        (GateKind::Gru, Recurrence::PerStep),
    ] {
        let config = GatedConfig::with_defaults(kind, 2, 4);
        let weights = GatedWeights::init(&config, 3).unwrap();
        let cpu = CpuGatedRnn::new(config.clone(), weights.clone()).unwrap();
        let options = GpuOptions::recurrence(recurrence);
        let gpu = GpuGatedRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
        // Sequence 0 sees +inf then a finite frame, sequence 1 NaN, sequence 2 −inf and a
        // huge value; sequence 3 stays finite and must stay so.
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        #[rustfmt::skip]
        let input = Tensor::new(vec![
            inf, 0.5,   nan, 0.1,   -inf, 1e30,   0.3, -0.2,
            0.1, 0.2,   0.1, 0.2,   0.1, 0.2,     0.1, 0.2,
        ], &[2, 4, 2]).unwrap();
        // h0: +inf in sequence 0; c0: −inf in sequence 2.
        let mut h0 = vec![0.1; 16];
        h0[1] = inf;
        let mut c0 = vec![0.2; 16];
        c0[2 * 4] = -inf;
        let h0 = Tensor::new(h0, &[1, 4, 4]).unwrap();
        let c0 = Tensor::new(c0, &[1, 4, 4]).unwrap();
        let c0 = (kind == GateKind::Lstm).then_some(&c0);
        let want = cpu.forward(&input, Some(&h0), c0).unwrap();
        let got = gpu.forward(&input, Some(&h0), c0).unwrap();
        check_same(&got, &want).unwrap_or_else(|e| panic!("{kind:?} {recurrence:?}: {e}"));
        let last = &got.output.data()[(4 + 3) * 4..];
        assert!(last.iter().all(|v| v.is_finite()), "{kind:?}: {last:?}");
    }
}

/// Arbitrary input, h0, c0 and lengths shapes (most of them wrong): the GPU path answers
/// exactly as the CPU path does, the same numbers or the same kind of typed error, and never
/// panics.
#[test]
fn bad_arguments_get_the_cpu_paths_typed_errors() {
    let Some(ctx) = testing::gpu("bad_arguments_get_the_cpu_paths_typed_errors") else {
        return;
    };
    let models: Vec<(CpuGatedRnn, GpuGatedRnn)> = [
        GatedConfig::lstm(3, 4),
        GatedConfig {
            batch_first: true,
            proj_size: 2,
            num_layers: 2,
            ..GatedConfig::lstm(2, 5)
        },
        GatedConfig {
            bidirectional: true,
            ..GatedConfig::gru(3, 6)
        },
    ]
    .into_iter()
    .map(|config| {
        let weights = GatedWeights::init(&config, 2).unwrap();
        (
            CpuGatedRnn::new(config.clone(), weights.clone()).unwrap(),
            GpuGatedRnn::new(&ctx, config, &weights).unwrap(),
        )
    })
    .collect();
    // Any shape, or one of the (rows, N, features) shapes that come close to valid ones.
    let any_dims = prop::collection::vec(0usize..=6, 1..=4);
    let near = |lead: std::ops::RangeInclusive<usize>, last: std::ops::RangeInclusive<usize>| {
        (lead, 0usize..=4, last).prop_map(|(a, b, c)| vec![a, b, c])
    };
    let input = prop_oneof![any_dims.clone(), near(0..=5, 2..=3)];
    let state = prop_oneof![any_dims, near(1..=4, 2..=6)];
    let strategy = (
        0..models.len(),
        input,
        prop::option::of(state.clone()),
        prop::option::of(state),
        prop::option::of(prop::collection::vec(0usize..=7, 0..=5)),
    );
    // How many cases ran (not just errors): the strategy must reach valid calls too.
    let matched = std::cell::Cell::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(m, input, h0, c0, lengths)| {
            let tensor = |shape: &[usize]| Tensor::new(values(1, shape.iter().product()), shape);
            let (Ok(input), Ok(h0), Ok(c0)) = (
                tensor(&input),
                h0.map(|s| tensor(&s)).transpose(),
                c0.map(|s| tensor(&s)).transpose(),
            ) else {
                return Ok(());
            };
            let run = |model: &dyn GatedRnn| match &lengths {
                Some(l) => model.forward_with_lengths(&input, l, h0.as_ref(), c0.as_ref()),
                None => model.forward(&input, h0.as_ref(), c0.as_ref()),
            };
            let (cpu, gpu) = &models[m];
            let want = run(cpu);
            let got = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(gpu))) {
                Ok(got) => got,
                Err(_) => return Err(TestCaseError::fail("the GPU path panicked")),
            };
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    check_same(&got, &want).map_err(TestCaseError::fail)?;
                    matched.set(matched.get() + 1);
                }
                (Err(got), Err(want)) => {
                    prop_assert_eq!(
                        std::mem::discriminant(&got),
                        std::mem::discriminant(&want),
                        "GPU: {}; CPU: {}",
                        got,
                        want
                    );
                }
                (got, want) => {
                    return Err(TestCaseError::fail(format!(
                        "GPU {:?} but CPU {:?}",
                        got.map(|_| "ok"),
                        want.map(|_| "ok")
                    )));
                }
            }
            Ok(())
        })
        .unwrap();
    println!("{} of 2000 calls ran on both paths", matched.get());
    assert!(matched.get() >= 25, "only {} valid calls", matched.get());
}
