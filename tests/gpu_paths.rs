//! The GPU engine's particular paths against the CPU reference, for every mode: the persistent
//! kernels across their dispatches of 8192 steps and the rule that picks them, long and wide
//! sequences, the per-step block kernels' subgroup forms, the wavefront, the layer plans
//! (fused input, projecting ahead) where they apply, and streams (chunks with a delay, a given
//! initial state).

mod support;

use support::{Problem, Rng, State, check_output, check_values, mode_name, random_lengths};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Hx, Linear, Nonlinearity, Recurrence, Rnn, RnnConfig,
    RnnError, RnnMode, RnnWeights, StreamOptions, Tensor, testing,
};

const TANH: RnnMode = RnnMode::Rnn(Nonlinearity::Tanh);
const RELU: RnnMode = RnnMode::Rnn(Nonlinearity::Relu);

/// One persistent dispatch runs at most 8192 steps: 9000 takes two, the second starting from
/// the state the first left behind, in both directions.
fn crosses_dispatch_boundaries(mode: RnnMode) {
    let name = format!(
        "persistent_kernel_crosses_dispatch_boundaries::{}",
        mode_name(mode)
    );
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 3, 17)
    };
    let problem = Problem {
        recurrence: Recurrence::Persistent,
        with_state: true,
        ..Problem::new(config, 9000, 2, 5)
    };
    problem.check(&ctx).unwrap();
}
for_each_mode!(
    persistent_kernel_crosses_dispatch_boundaries,
    crosses_dispatch_boundaries
);

/// Long sequences of the gated cells on both kernels: the state must not drift or stop
/// updating (a wide GRU per step, an LSTM at the persistent kernel's widest Auto size).
#[test]
fn long_gated_sequences_match_cpu() {
    let Some(ctx) = testing::gpu("long_gated_sequences_match_cpu") else {
        return;
    };
    for (config, seq_len, recurrence) in [
        (RnnConfig::lstm(4, 64), 1500, Recurrence::Persistent),
        (RnnConfig::gru(4, 256), 1000, Recurrence::PerStep),
    ] {
        let problem = Problem {
            recurrence,
            ..Problem::new(config, seq_len, 2, 3)
        };
        problem.check(&ctx).unwrap();
    }
}

/// The rule that picks the kernel: the persistent one up to H = 256 for an Elman RNN, 64 for
/// an LSTM and 84 for a GRU (on CPU adapters with 8-lane subgroups and 1024 lanes a
/// workgroup, lavapipe's, which load W_hh from a texture, 512 for an Elman RNN and an LSTM
/// and 672 for a GRU: the gated kernels' lanes split wide rows, 512 weight vec4s a lane at
/// most), the per-step ones for
/// wider or projected models; asking a projected LSTM for the persistent kernel is a typed
/// error, any other model gets it. And the state rules of the CPU path: only an LSTM takes
/// c0, and it needs it.
#[test]
fn recurrence_follows_the_documented_rule() {
    let Some(ctx) = testing::gpu("recurrence_follows_the_documented_rule") else {
        return;
    };
    let model = |config: RnnConfig, recurrence| {
        let weights = RnnWeights::init(&config, 1).unwrap();
        GpuRnn::with_options(&ctx, config, &weights, GpuOptions::recurrence(recurrence))
    };
    let projected = RnnConfig {
        proj_size: 2,
        ..RnnConfig::lstm(2, 4)
    };
    let mut cases = vec![
        (RnnConfig::new(TANH, 2, 256), Recurrence::Persistent),
        (RnnConfig::lstm(2, 64), Recurrence::Persistent),
        (RnnConfig::gru(2, 84), Recurrence::Persistent),
        (projected.clone(), Recurrence::PerStep),
    ];
    // The widest states on the persistent kernels, where this test knows them (other CPU
    // adapters: at least the sizes above).
    let widest = match support::cpu_subgroup_lanes(&ctx) {
        Some((8, lanes)) if lanes >= 1024 => Some((512, 512, 672)),
        Some(_) => None,
        None => Some((256, 64, 84)),
    };
    if let Some((elman, lstm, gru)) = widest {
        cases.extend([
            (RnnConfig::new(TANH, 2, elman), Recurrence::Persistent),
            (RnnConfig::new(RELU, 2, elman + 1), Recurrence::PerStep),
            (RnnConfig::lstm(2, lstm), Recurrence::Persistent),
            (RnnConfig::lstm(2, lstm + 1), Recurrence::PerStep),
            (RnnConfig::gru(2, gru), Recurrence::Persistent),
            (RnnConfig::gru(2, gru + 1), Recurrence::PerStep),
        ]);
    }
    for (config, auto) in cases {
        let got = model(config.clone(), Recurrence::Auto)
            .unwrap()
            .recurrence();
        assert_eq!(got, auto, "{config:?}");
        let per_step = model(config.clone(), Recurrence::PerStep).unwrap();
        assert_eq!(per_step.recurrence(), Recurrence::PerStep);
    }
    assert!(matches!(
        model(projected, Recurrence::Persistent),
        Err(RnnError::InvalidConfig(_))
    ));
    let input = Tensor::zeros(&[2, 1, 2]).unwrap();
    let state = Tensor::zeros(&[1, 1, 4]).unwrap();
    for mode in support::MODES {
        let gpu = model(RnnConfig::new(mode, 2, 4), Recurrence::Persistent).unwrap();
        assert_eq!(gpu.recurrence(), Recurrence::Persistent, "{mode:?}");
        let wrong = if mode.has_cell_state() {
            Hx::h0(&state)
        } else {
            Hx::lstm(&state, &state)
        };
        let result = gpu.forward(&input, Some(wrong));
        assert!(
            matches!(result, Err(RnnError::ShapeMismatch { what: "c0", .. })),
            "{mode:?}: {result:?}"
        );
    }
}

/// The per-step path's block kernels in each of their subgroup forms: on CPU adapters with
/// subgroups, hidden sizes that are multiples of 32 run one sequence an invocation for a
/// batch of one, four up to four, sixteen above; batches that are not multiples of the form's
/// sequences leave lanes past the batch. Every option that changes its addressing: both
/// directions, two layers, lengths, a given state, a projected LSTM, batch-first input.
fn subgroup_block_forms(mode: RnnMode) {
    let name = format!("every_subgroup_block_form_matches_cpu::{}", mode_name(mode));
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    // (H, proj_size for an LSTM, N, bidirectional)
    let cases = [
        (32, 0, 9, true),
        (64, 0, 16, false),
        (64, 32, 17, true),
        (32, 0, 33, false),
        (96, 0, 12, true),
        (32, 0, 5, false),
        (64, 0, 1, true),
        (64, 32, 1, false),
        (32, 0, 3, true),
    ];
    for (k, (hidden, proj_size, batch, bidirectional)) in cases.into_iter().enumerate() {
        let seq_len = 6;
        let config = RnnConfig {
            bidirectional,
            num_layers: 2,
            proj_size: if mode == RnnMode::Lstm { proj_size } else { 0 },
            batch_first: k % 2 == 1,
            ..RnnConfig::new(mode, 5 + k, hidden)
        };
        let lengths = random_lengths(&mut Rng(k as u64), batch, seq_len);
        let problem = Problem {
            recurrence: Recurrence::PerStep,
            with_state: k != 1,
            lengths: (k % 3 != 1).then_some(lengths),
            ..Problem::new(config, seq_len, batch, 40 + k as u64)
        };
        problem.check(&ctx).unwrap();
    }
}
for_each_mode!(every_subgroup_block_form_matches_cpu, subgroup_block_forms);

/// A Linear head of `out_features` reading `in_features`, from `seed`.
fn linear(in_features: usize, out_features: usize, seed: u64) -> Linear {
    let mut rng = Rng(seed);
    Linear {
        in_features,
        out_features,
        weight: rng.values(out_features * in_features),
        bias: Some(rng.values(out_features)),
    }
}

/// Stacked unidirectional Elman models on the per-step path run as a wavefront where it pays
/// (every layer advancing in one dispatch per wave, N ≥ 4 and small steps); the gated cells
/// run the same shapes layer by layer. Against the CPU with lengths, a given state,
/// batch-first input, no bias, and with a Linear head reading the last layer's output.
fn wavefront(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("wavefront_matches_cpu::{}", mode_name(mode))) else {
        return;
    };
    let cases = [
        RnnConfig {
            num_layers: 3,
            batch_first: true,
            ..RnnConfig::new(mode, 5, 64)
        },
        RnnConfig {
            num_layers: 2,
            bias: false,
            ..RnnConfig::new(mode, 3, 16)
        },
    ];
    for (k, config) in cases.into_iter().enumerate() {
        let problem = Problem {
            recurrence: Recurrence::PerStep,
            with_state: true,
            lengths: Some(vec![9, 1, 4, 9, 6]),
            ..Problem::new(config.clone(), 9, 5, 40 + k as u64)
        };
        let weights = problem.weights();
        let gpu = problem.gpu(&ctx, &weights);
        problem.check_model(&gpu, &weights).unwrap();

        // The same model with a head: the last layer writes sequence-first for the head.
        let head = linear(config.hidden_size, 2, 9);
        let headed = gpu.with_head(&head).unwrap();
        let cpu = CpuRnn::new(config.clone(), &weights)
            .unwrap()
            .with_head(&head)
            .unwrap();
        let input = problem.input();
        let got = headed.forward(&input, None).unwrap();
        let want = cpu.forward(&input, None).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{config:?} with a head: {e}"));
    }
}
for_each_mode!(wavefront_matches_cpu, wavefront);

// ---------------------------------------------------------------------------------------------
// Layer plans: layers that compute their input projection themselves.

/// A shape for [`check_layer_plans`] and the layers expected to take the plan on CPU adapters
/// with subgroups.
struct PlanCase {
    mode: RnnMode,
    input: usize,
    hidden: usize,
    seq_len: usize,
    batch: usize,
    layers: usize,
    batch_first: bool,
    bidirectional: bool,
    lengths: Option<Vec<usize>>,
    want: usize,
}

/// A plan case without lengths; `want` layers take the plan.
#[allow(clippy::too_many_arguments)]
fn plan(
    mode: RnnMode,
    (input, hidden, seq_len, batch, layers): (usize, usize, usize, usize, usize),
    batch_first: bool,
    bidirectional: bool,
    want: usize,
) -> PlanCase {
    PlanCase {
        mode,
        input,
        hidden,
        seq_len,
        batch,
        layers,
        batch_first,
        bidirectional,
        lengths: None,
        want,
    }
}

/// Whether the layer plans (fused input, projecting ahead) apply on `ctx`'s adapter: a CPU
/// adapter with subgroups of a fixed size.
fn plans_apply(ctx: &GpuContext) -> bool {
    support::cpu_subgroup_lanes(ctx).is_some()
}

/// Runs every case against the CPU, after checking that `layers` (how many of a model's
/// layers take some plan for (T, N)) counts the expected layers on CPU adapters with
/// subgroups, where the plans apply, and none elsewhere. Cases vary bias, the state and the
/// seed with their index.
fn check_layer_plans(
    ctx: &GpuContext,
    plan: &str,
    cases: &[PlanCase],
    seed: u64,
    layers: impl Fn(&GpuRnn, usize, usize) -> usize,
) {
    let info = ctx.adapter_info();
    let expected = plans_apply(ctx);
    let mut failures = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let config = RnnConfig {
            num_layers: case.layers,
            batch_first: case.batch_first,
            bidirectional: case.bidirectional,
            bias: k % 4 != 3,
            ..RnnConfig::new(case.mode, case.input, case.hidden)
        };
        let problem = Problem {
            with_state: k % 2 == 1,
            lengths: case.lengths.clone(),
            ..Problem::new(config, case.seq_len, case.batch, seed + k as u64)
        };
        let weights = problem.weights();
        let gpu = problem.gpu(ctx, &weights);
        let got = layers(&gpu, case.seq_len, case.batch);
        println!(
            "{} {}x{} T={} N={} L={}: {got} layer(s) {plan}",
            mode_name(case.mode),
            case.input,
            case.hidden,
            case.seq_len,
            case.batch,
            case.layers
        );
        let want = if expected { case.want } else { 0 };
        assert_eq!(got, want, "{problem:?} on {info:?}");
        if let Err(e) = problem.check_model(&gpu, &weights) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fused_input_matches_cpu() {
    let Some(ctx) = testing::gpu("fused_input_matches_cpu") else {
        return;
    };
    // On CPU adapters with subgroups (lavapipe), an Elman layer whose recurrence is one
    // subgroup (H ≤ 64 there) computes x_t·W_ihᵀ + b in each step instead of reading a
    // projection, where its input is a multiple of four no wider than the padded state, and,
    // above the first layer, the layer is unidirectional and writes its output where it reads
    // its input. Odd and friendly sizes, padded batch tiles (N = 5: tiles of four), both
    // directions of a first layer, reverse time, long sequences, h0 or not, no bias; and
    // shapes that must not fuse, checked against the CPU alike. The gated persistent kernels
    // never fuse their input (only the Elman kernel has the fused form): shapes that fuse for
    // an Elman RNN take no plan for an LSTM or a GRU.
    let cases = [
        plan(TANH, (64, 64, 1000, 1, 1), false, false, 1),
        // Layer 1's input (17) is not a multiple of four.
        plan(TANH, (16, 17, 257, 5, 2), false, false, 1),
        plan(RELU, (32, 64, 300, 4, 3), false, false, 3),
        plan(TANH, (4, 1, 3, 1, 1), true, false, 1),
        // Layer 1 reads the first layer's two directions: it may not fuse.
        plan(TANH, (64, 48, 129, 2, 2), false, true, 1),
        plan(RELU, (12, 20, 17, 3, 2), true, true, 1),
        // Layer 1 writes the caller's batch-first layout, not where it reads.
        plan(TANH, (8, 8, 100, 3, 2), true, false, 1),
        // Wider than the padded state (64), or not a multiple of four.
        plan(TANH, (128, 64, 50, 1, 1), false, false, 0),
        plan(RELU, (3, 8, 40, 2, 1), false, false, 0),
        // H = 100 takes more than one subgroup.
        plan(TANH, (100, 100, 64, 1, 1), false, false, 0),
        plan(RnnMode::Lstm, (16, 16, 300, 1, 2), false, false, 0),
        plan(RnnMode::Gru, (16, 17, 257, 5, 2), false, false, 0),
    ];
    check_layer_plans(&ctx, "fusing the input", &cases, 60, |gpu, t, n| {
        gpu.layers_fusing_input(t, n).unwrap()
    });
}

#[test]
fn projecting_ahead_matches_cpu() {
    let Some(ctx) = testing::gpu("projecting_ahead_matches_cpu") else {
        return;
    };
    // On CPU adapters with subgroups (lavapipe), a unidirectional persistent layer whose
    // recurrence is one workgroup (one sequence) and whose projection is large (I·G·H ≥ 128²)
    // but not wider than the recurrence (I ≤ H) projects each chunk of timesteps (a quarter
    // of T) while the recurrence runs the chunk before. Odd and friendly sizes (scalar and
    // vec4 loads of X and P), ragged last chunks, stacked layers in both layouts (above the
    // first only where a layer writes its output where it reads its input), lengths, h0 or
    // not; and shapes that must not project ahead (two workgroups, a small projection: an
    // Elman H = 64 fuses its input instead), checked against the CPU alike. Gated cells
    // project ahead from I·G·H ≥ 6,144 where X and P are vec4s (the weight-stationary form,
    // W_ih from texels: blocks of 64 columns at K ≤ 128, 32 above, ragged last blocks, K/4
    // not a multiple of the lanes, several subgroups taking blocks in turn), else from
    // 2·128² (the tile form); gated cells whose lanes split their rows only from 2·256²; on
    // lavapipe, where W_hh comes from a texture, one sequence splits rows only past that (an
    // LSTM wider than H = 256, a GRU wider than 340).
    let mut cases = vec![
        plan(TANH, (128, 128, 1000, 1, 2), false, false, 2),
        // I > H: projecting a chunk on one core would outlast the recurrence.
        plan(TANH, (257, 64, 300, 4, 1), true, false, 0),
        plan(RELU, (130, 130, 257, 1, 3), true, false, 3),
        plan(TANH, (256, 256, 1100, 1, 1), false, false, 1),
        plan(TANH, (66, 250, 129, 1, 2), false, false, 2),
        // Two sequences of H = 100: two workgroups.
        plan(RELU, (300, 100, 2000, 2, 3), true, false, 0),
        plan(TANH, (120, 140, 700, 1, 3), true, false, 3),
        plan(TANH, (64, 64, 1000, 1, 1), false, false, 0),
        // Stationary: an LSTM H = 64 (I·4H = 128²), two layers.
        plan(RnnMode::Lstm, (64, 64, 700, 1, 2), false, false, 2),
        plan(RnnMode::Gru, (84, 84, 300, 1, 1), false, false, 1),
        // I = 63: the tile form, whose threshold 63·260 misses.
        plan(RnnMode::Lstm, (63, 65, 257, 1, 1), false, false, 0),
        plan(RnnMode::Gru, (131, 131, 257, 1, 1), false, false, 1),
        plan(RnnMode::Gru, (132, 132, 129, 1, 2), false, false, 2),
        plan(RnnMode::Lstm, (256, 256, 300, 1, 1), false, false, 1),
        plan(RnnMode::Gru, (176, 176, 300, 1, 1), true, false, 1),
        plan(RnnMode::Gru, (128, 128, 300, 1, 1), true, false, 1),
        // Stationary, awkward: 156 columns (two blocks of 64 and 28), K/4 = 13; 300 columns
        // over four subgroups, K = 32 < H; two layers of 176 columns.
        plan(RnnMode::Gru, (52, 52, 257, 1, 1), false, false, 1),
        plan(RnnMode::Gru, (32, 100, 200, 1, 1), true, false, 1),
        plan(RnnMode::Lstm, (44, 44, 129, 1, 2), false, false, 2),
        // A GRU H = 32 (I·3H = 3,072) stays below the stationary form's threshold.
        plan(RnnMode::Gru, (32, 32, 300, 1, 1), false, false, 0),
    ];
    cases[9].lengths = Some(vec![211]);
    cases[18].lengths = Some(vec![97]);
    check_layer_plans(&ctx, "projecting ahead", &cases, 40, |gpu, t, n| {
        gpu.layers_projecting_ahead(t, n).unwrap()
    });

    // With a Linear head after the last layer, whole and in time chunks (each chunk projects
    // ahead in its own workspace).
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::rnn(128, 128)
    };
    let weights = RnnWeights::init(&config, 7).unwrap();
    let head = linear(128, 3, 8);
    let cpu = CpuRnn::new(config.clone(), &weights)
        .unwrap()
        .with_head(&head)
        .unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights)
        .unwrap()
        .with_head(&head)
        .unwrap();
    let (steps, n) = (700, 1);
    let input = Rng(10).tensor(&[steps, n, 128]);
    let want = cpu.forward(&input, None).unwrap();
    for budget in [None, Some(600_000)] {
        gpu.set_workspace_budget(budget);
        let chunk = gpu.time_chunk(steps, n).unwrap();
        let ahead = gpu.layers_projecting_ahead(steps, n).unwrap();
        println!("head, budget {budget:?}: chunks of {chunk}, {ahead} layer(s) projecting ahead");
        assert_eq!(chunk < steps, budget.is_some());
        if plans_apply(&ctx) {
            assert_eq!(ahead, 2, "head, budget {budget:?}");
        }
        let got = gpu.forward(&input, None).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("head, budget {budget:?}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Streams.

/// Pushing a sequence in chunks (with a delay) gives the outputs and final state (h, and c
/// for an LSTM) of one forward over it; for an LSTM with and without proj_size.
fn streams_match(mode: RnnMode) {
    let name = format!("streams_match_one_forward::{}", mode_name(mode));
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    let projections: &[usize] = if mode == RnnMode::Lstm { &[0, 3] } else { &[0] };
    for &proj_size in projections {
        let config = RnnConfig {
            num_layers: 2,
            proj_size,
            ..RnnConfig::new(mode, 3, 7)
        };
        let weights = RnnWeights::init(&config, 9).unwrap();
        let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
        let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
        let (steps, batch, delay) = (11, 2, 2);
        let input = Rng(5).tensor(&[steps, batch, 3]);
        let want = cpu.forward(&input, None).unwrap();
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
        assert_eq!(outputs.len(), steps * batch * features);
        // With a delay, output i of the stream is the model's output for frame i + delay.
        let expected = &want.output.data()[delay * batch * features..];
        let what = |part: &str| format!("{mode:?} proj {proj_size}: {part}");
        let got = Tensor::new(outputs[..expected.len()].to_vec(), &[expected.len()]).unwrap();
        let expected = Tensor::new(expected.to_vec(), &[expected.len()]).unwrap();
        check_values(&what("output"), &got, &expected).unwrap();
        check_values(&what("h"), &h, &want.h_n).unwrap();
        assert_eq!(c.is_some(), want.c_n.is_some(), "{}", what("c"));
        if let (Some(c), Some(want_c)) = (c, &want.c_n) {
            check_values(&what("c"), &c, want_c).unwrap();
        }
    }
}
for_each_mode!(streams_match_one_forward, streams_match);

/// A stream reset to a given state continues from it exactly as a forward from it; an LSTM
/// stream needs c0 and the others refuse one, and states of the wrong shape are refused.
fn stream_resets(mode: RnnMode) {
    let name = format!("streams_reset_to_a_given_state::{}", mode_name(mode));
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    let config = RnnConfig::new(mode, 2, 5);
    let weights = RnnWeights::init(&config, 4).unwrap();
    let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let mut rng = Rng(8);
    let input = rng.tensor(&[6, 1, 2]);
    let state = support::random_state(&mut rng, &config, 1);
    let want = gpu.forward(&input, Some(state.hx())).unwrap();
    let mut stream = gpu.stream(StreamOptions::default()).unwrap();
    // The other mode family's state: h0 alone for an LSTM, (h0, c0) for the others.
    let other = match &state.c0 {
        Some(_) => Hx::h0(&state.h0),
        None => Hx::lstm(&state.h0, &state.h0),
    };
    let refused = |result: wgpu_rnn::Result<()>, what: &str| {
        assert!(
            matches!(result, Err(RnnError::ShapeMismatch { what: w, .. }) if w == what),
            "{mode:?}: {result:?}"
        );
    };
    refused(stream.reset_to(other), "c0");
    stream.reset_to(state.hx()).unwrap();
    let got = stream.push(&input).unwrap();
    check_values("output", &got, &want.output).unwrap();
    check_values("h", &stream.state().unwrap(), &want.h_n).unwrap();
    let wrong = Tensor::zeros(&[1, 1, 4]).unwrap();
    refused(
        stream.reset_to(Hx {
            h0: &wrong,
            c0: state.c0.as_ref(),
        }),
        "h0",
    );
    if let State { h0, c0: Some(_) } = &state {
        refused(stream.reset_to(Hx::lstm(h0, &wrong)), "c0");
    }
}
for_each_mode!(streams_reset_to_a_given_state, stream_resets);
