//! Streams, delays, variable lengths and time-chunked long sequences on the GPU, each against
//! a plain forward (GPU) or the CPU reference, for every mode: an LSTM's streams carry c
//! beside h, start from (h0, c0) and are compared on `cell_state()` and c_n too.

mod support;

use support::{MODES, Problem, State, check_output, mode_name, random_state};
use wgpu_rnn::compare::{Comparison, compare};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Hx, Recurrence, Rnn, RnnConfig, RnnError, RnnMode,
    RnnOutput, RnnStream, RnnWeights, StreamOptions, Tensor, testing,
};

/// The shared test context of the test `test` running `mode`, named as `for_each_mode!`
/// names it.
fn gpu(test: &str, mode: RnnMode) -> Option<GpuContext> {
    testing::gpu(&format!("{test}::{}", mode_name(mode)))
}

fn values(seed: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f64 * 0.7 + seed as f64 * 1.3).sin() * 1.5) as f32)
        .collect()
}

fn stacked(mode: RnnMode, batch_first: bool) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        batch_first,
        ..RnnConfig::new(mode, 5, 24)
    }
}

fn model(ctx: &GpuContext, config: &RnnConfig) -> GpuRnn {
    GpuRnn::new(ctx, config.clone(), &RnnWeights::init(config, 5).unwrap()).unwrap()
}

/// Whether the layer plans (fused input, projecting ahead) apply on `ctx`'s adapter: a CPU
/// adapter with subgroups; elsewhere no layer takes one.
fn plans_apply(ctx: &GpuContext) -> bool {
    let has_subgroups = ctx.device().features().contains(wgpu::Features::SUBGROUP);
    has_subgroups && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu
}

/// Frames [t0, t1) of a (T, N, F) or (N, T, F) tensor.
fn frames(x: &Tensor, batch_first: bool, t0: usize, t1: usize) -> Tensor {
    let s = x.shape();
    let (t_dim, f) = (if batch_first { 1 } else { 0 }, s[2]);
    let (n, steps) = if batch_first {
        (s[0], s[1])
    } else {
        (s[1], s[0])
    };
    let mut data = Vec::new();
    let mut shape = s.to_vec();
    shape[t_dim] = t1 - t0;
    if batch_first {
        for b in 0..n {
            data.extend_from_slice(&x.data()[(b * steps + t0) * f..(b * steps + t1) * f]);
        }
    } else {
        data.extend_from_slice(&x.data()[t0 * n * f..t1 * n * f]);
    }
    Tensor::new(data, &shape).unwrap()
}

/// Concatenates along time.
fn concat(parts: &[Tensor], batch_first: bool) -> Tensor {
    let mut all = parts[0].clone();
    for p in &parts[1..] {
        let (a, b) = (all.shape().to_vec(), p.shape());
        let (n, f) = if batch_first {
            (a[0], a[2])
        } else {
            (a[1], a[2])
        };
        let (ta, tb) = if batch_first {
            (a[1], b[1])
        } else {
            (a[0], b[0])
        };
        let data = if batch_first {
            (0..n)
                .flat_map(|i| {
                    let mut row = all.data()[i * ta * f..(i + 1) * ta * f].to_vec();
                    row.extend_from_slice(&p.data()[i * tb * f..(i + 1) * tb * f]);
                    row
                })
                .collect()
        } else {
            [all.data(), p.data()].concat()
        };
        let shape = if batch_first {
            vec![n, ta + tb, f]
        } else {
            vec![ta + tb, n, f]
        };
        all = Tensor::new(data, &shape).unwrap();
    }
    all
}

fn assert_close(what: &str, c: Comparison) {
    assert!(c.passed(), "{what}: {c}");
}

/// `got` against `want` within `tolerance`, shapes included.
fn assert_tensor(what: &str, got: &Tensor, want: &Tensor, tolerance: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    assert_close(what, compare(got.data(), want.data(), tolerance));
}

/// Output, h_n and (for an LSTM) c_n of `got` against `want` within `tolerance`; the other
/// modes must have no c_n.
fn assert_forward(what: &str, got: &RnnOutput, want: &RnnOutput, tolerance: f64) {
    assert_tensor(
        &format!("{what}: output"),
        &got.output,
        &want.output,
        tolerance,
    );
    assert_tensor(&format!("{what}: h_n"), &got.h_n, &want.h_n, tolerance);
    match (&got.c_n, &want.c_n) {
        (Some(got), Some(want)) => assert_tensor(&format!("{what}: c_n"), got, want, tolerance),
        (None, None) => {}
        (got, want) => panic!("{what}: c_n {got:?}, expected {want:?}"),
    }
}

/// A stream's state, h and (for an LSTM) c, against a forward's final one (`h_n`, `c_n`):
/// `cell_state()` is `Some` exactly for an LSTM.
fn assert_stream_state(what: &str, stream: &RnnStream<'_>, want: &RnnOutput, tolerance: f64) {
    assert_tensor(
        &format!("{what}: state"),
        &stream.state().unwrap(),
        &want.h_n,
        tolerance,
    );
    let c = stream.cell_state().unwrap();
    assert_eq!(c.is_some(), want.c_n.is_some(), "{what}: cell_state {c:?}");
    if let (Some(c), Some(want)) = (&c, &want.c_n) {
        assert_tensor(&format!("{what}: cell_state"), c, want, tolerance);
    }
}

/// A stream's state as a forward's final one (h_n, c_n), to hold against the same stream
/// later; the output is left empty.
fn state_of(stream: &RnnStream<'_>) -> RnnOutput {
    RnnOutput {
        output: Tensor::zeros(&[0]).unwrap(),
        h_n: stream.state().unwrap(),
        c_n: stream.cell_state().unwrap(),
    }
}

fn chunked_pushes_equal_one_forward(mode: RnnMode) {
    let Some(ctx) = gpu("chunked_pushes_equal_one_forward", mode) else {
        return;
    };
    for batch_first in [false, true] {
        let config = stacked(mode, batch_first);
        let rnn = model(&ctx, &config);
        let (steps, n) = (64, 3);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(1, steps * n * 5), &shape).unwrap();
        let whole = rnn.forward(&input, None).unwrap();
        // Single frames, uneven chunks, and a long chunk then a partial one.
        for chunk in [1, 7, 40] {
            let mut stream = rnn.stream(StreamOptions { batch: n, delay: 0 }).unwrap();
            let outputs: Vec<Tensor> = (0..steps)
                .step_by(chunk)
                .map(|t0| {
                    stream
                        .push(&frames(&input, batch_first, t0, (t0 + chunk).min(steps)))
                        .unwrap()
                })
                .collect();
            let what = format!("{mode:?}: chunks of {chunk}, batch_first={batch_first}");
            let streamed = concat(&outputs, batch_first);
            assert_tensor(&what, &streamed, &whole.output, 1e-6);
            assert_stream_state(&what, &stream, &whole, 1e-6);
        }
    }
}
for_each_mode!(
    chunked_pushes_equal_one_forward,
    chunked_pushes_equal_one_forward
);

fn delay_holds_back_the_first_outputs(mode: RnnMode) {
    let Some(ctx) = gpu("delay_holds_back_the_first_outputs", mode) else {
        return;
    };
    let config = stacked(mode, false);
    let rnn = model(&ctx, &config);
    let (steps, n) = (20, 2);
    let input = Tensor::new(values(2, steps * n * 5), &[steps, n, 5]).unwrap();
    for delay in [0, 1, 3] {
        // What a delayed model means: output frame t + k belongs to input frame t, and the
        // last k outputs come from k extra zero frames.
        let mut padded = input.data().to_vec();
        padded.extend(vec![0.0; delay * n * 5]);
        let padded = Tensor::new(padded, &[steps + delay, n, 5]).unwrap();
        let want = frames(
            &rnn.forward(&padded, None).unwrap().output,
            false,
            delay,
            steps + delay,
        );

        let mut stream = rnn.stream(StreamOptions { batch: n, delay }).unwrap();
        let mut parts: Vec<Tensor> = [0, 1, 2, 9, 20]
            .windows(2)
            .map(|w| stream.push(&frames(&input, false, w[0], w[1])).unwrap())
            .collect();
        // The first push (one frame) returns nothing while the delay holds it back.
        assert_eq!(
            parts[0].shape()[0],
            1usize.saturating_sub(delay),
            "{mode:?}, delay {delay}"
        );
        parts.push(stream.finish().unwrap());
        let got = concat(&parts, false);
        assert_tensor(&format!("{mode:?}, delay {delay}"), &got, &want, 1e-6);
        // finish() reset the stream: the next utterance starts from zeros again, c included.
        assert!(stream.state().unwrap().data().iter().all(|&v| v == 0.0));
        let c = stream.cell_state().unwrap();
        assert_eq!(c.is_some(), mode.has_cell_state(), "{mode:?}");
        assert!(
            c.is_none_or(|c| c.data().iter().all(|&v| v == 0.0)),
            "{mode:?}"
        );
    }
}
for_each_mode!(
    delay_holds_back_the_first_outputs,
    delay_holds_back_the_first_outputs
);

fn streams_start_from_a_given_state_and_reject_bad_use(mode: RnnMode) {
    let Some(ctx) = gpu("streams_start_from_a_given_state_and_reject_bad_use", mode) else {
        return;
    };
    let config = stacked(mode, false);
    let rnn = model(&ctx, &config);
    let input = Tensor::new(values(3, 6 * 2 * 5), &[6, 2, 5]).unwrap();
    let state = random_state(&mut support::Rng(4), &config, 2);
    let want = rnn.forward(&input, Some(state.hx())).unwrap();
    let mut stream = rnn.stream(StreamOptions { batch: 2, delay: 0 }).unwrap();
    stream.reset_to(state.hx()).unwrap();
    // reset_to stores the state as given, bit for bit.
    let given = RnnOutput {
        output: Tensor::zeros(&[0]).unwrap(),
        h_n: state.h0.clone(),
        c_n: state.c0.clone(),
    };
    assert_stream_state(&format!("{mode:?} after reset_to"), &stream, &given, 0.0);
    let got = stream.push(&input).unwrap();
    assert_tensor(
        &format!("{mode:?}: output from hx"),
        &got,
        &want.output,
        1e-6,
    );
    assert_stream_state(&format!("{mode:?} from hx"), &stream, &want, 1e-6);
    let pushed = state_of(&stream);

    let wrong_batch = stream
        .push(&Tensor::zeros(&[3, 4, 5]).unwrap())
        .unwrap_err();
    assert!(
        matches!(wrong_batch, RnnError::ShapeMismatch { what: "input", .. }),
        "{mode:?}: {wrong_batch:?}"
    );
    // The refused push left the state as it was.
    assert_stream_state(
        &format!("{mode:?} after a refused push"),
        &stream,
        &pushed,
        0.0,
    );
    let refused = |result: wgpu_rnn::Result<()>, what: &str| {
        assert!(
            matches!(&result, Err(RnnError::ShapeMismatch { what: w, .. }) if *w == what),
            "{mode:?}: expected a ShapeMismatch of {what}, got {result:?}"
        );
    };
    // An unbatched h0 for a stream of two sequences (with the right c0 for an LSTM).
    let wrong = Tensor::zeros(&[2, 24]).unwrap();
    refused(
        stream.reset_to(Hx {
            h0: &wrong,
            c0: state.c0.as_ref(),
        }),
        "h0",
    );
    // An LSTM needs c0, of its own shape; the other modes refuse one.
    match &state {
        State { h0, c0: Some(_) } => {
            refused(stream.reset_to(Hx::h0(h0)), "c0");
            refused(stream.reset_to(Hx::lstm(h0, &wrong)), "c0");
        }
        State { h0, c0: None } => refused(stream.reset_to(Hx::lstm(h0, h0)), "c0"),
    }
    // None of the refused resets touched the state.
    assert_stream_state(
        &format!("{mode:?} after refused resets"),
        &stream,
        &pushed,
        0.0,
    );

    let bidir = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 5, 8)
    };
    let error = model(&ctx, &bidir)
        .stream(StreamOptions::default())
        .unwrap_err();
    assert!(
        matches!(error, RnnError::InvalidConfig(_)),
        "{mode:?}: {error:?}"
    );
}
for_each_mode!(
    streams_start_from_a_given_state_and_reject_bad_use,
    streams_start_from_a_given_state_and_reject_bad_use
);

fn variable_lengths_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("variable_lengths_match_cpu", mode) else {
        return;
    };
    for (k, bidirectional) in [(0u64, false), (1, true), (2, true), (3, false)] {
        let config = RnnConfig {
            num_layers: 1 + k as usize % 2,
            bidirectional,
            batch_first: k % 2 == 1,
            ..RnnConfig::new(mode, 17, 33)
        };
        // Half the cases start from a given state (h0, and c0 for an LSTM).
        let problem = Problem {
            with_state: k >= 2,
            lengths: Some(vec![23, 1, 9, 17, 2]),
            ..Problem::new(config, 23, 5, k)
        };
        let weights = problem.weights();
        let gpu = problem.gpu(&ctx, &weights);
        problem.check_model(&gpu, &weights).unwrap();
        let bad = gpu
            .forward_with_lengths(&problem.input(), &[23, 0, 9, 17, 2], None)
            .unwrap_err();
        assert!(
            matches!(bad, RnnError::InvalidLength { index: 1, .. }),
            "{mode:?}, case {k}: {bad:?}"
        );
    }
}
for_each_mode!(variable_lengths_match_cpu, variable_lengths_match_cpu);

fn a_small_budget_runs_in_chunks_with_identical_results(mode: RnnMode) {
    let Some(ctx) = gpu("a_small_budget_runs_in_chunks_with_identical_results", mode) else {
        return;
    };
    for batch_first in [false, true] {
        let config = stacked(mode, batch_first);
        let rnn = model(&ctx, &config);
        let (steps, n) = (200, 4);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(7, steps * n * 5), &shape).unwrap();
        let state = random_state(&mut support::Rng(8), &config, n);
        let lengths = [200, 17, 151, 199];
        let whole = rnn.forward(&input, Some(state.hx())).unwrap();
        let whole_packed = rnn
            .forward_with_lengths(&input, &lengths, Some(state.hx()))
            .unwrap();
        // About 64 frames per chunk (on lavapipe 74 for an RNN, 69 for an LSTM, 71 for a
        // GRU): 200 frames take three chunks, the last one partial. Per frame the workspace
        // holds the input twice, the projections (G·H features), two layers' output and the
        // result twice, and a step uniform: the budget follows the mode's gates.
        assert_eq!(rnn.time_chunk(steps, n).unwrap(), steps);
        let per_frame = 4 * n * (2 * 5 + config.gate_size() + 4 * config.output_size()) + 256;
        rnn.set_workspace_budget(Some(64 * per_frame as u64 + 10_000));
        let chunk = rnn.time_chunk(steps, n).unwrap();
        println!("{mode:?}, batch_first={batch_first}: chunks of {chunk}");
        assert!(
            (32..=100).contains(&chunk),
            "{mode:?}: {chunk} frames per chunk"
        );
        let chunked = rnn.forward(&input, Some(state.hx())).unwrap();
        let chunked_packed = rnn
            .forward_with_lengths(&input, &lengths, Some(state.hx()))
            .unwrap();
        rnn.set_workspace_budget(None);
        let what = format!("{mode:?}, batch_first={batch_first}");
        assert_forward(&what, &chunked, &whole, 1e-6);
        assert_forward(
            &format!("{what}, lengths"),
            &chunked_packed,
            &whole_packed,
            1e-6,
        );
    }
    // A bidirectional model runs one layer and direction at a time, each in chunks: the
    // same numbers again, variable lengths and batch-first included.
    for batch_first in [false, true] {
        let bidir = RnnConfig {
            bidirectional: true,
            ..stacked(mode, batch_first)
        };
        let rnn = model(&ctx, &bidir);
        let (steps, n) = (60, 3);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(9, steps * n * 5), &shape).unwrap();
        let state = random_state(&mut support::Rng(10), &bidir, n);
        let lengths = [60, 7, 48];
        let whole = rnn
            .forward_with_lengths(&input, &lengths, Some(state.hx()))
            .unwrap();
        let whole_full = rnn.forward(&input, Some(state.hx())).unwrap();
        rnn.set_workspace_budget(Some(20_000));
        let chunk = rnn.time_chunk(steps, n).unwrap();
        println!("{mode:?} bidirectional, batch_first={batch_first}: chunks of {chunk}");
        assert!(chunk < steps, "{mode:?}: {chunk}");
        let chunked = rnn
            .forward_with_lengths(&input, &lengths, Some(state.hx()))
            .unwrap();
        let chunked_full = rnn.forward(&input, Some(state.hx())).unwrap();
        let what = format!("{mode:?} bidirectional, batch_first={batch_first}");
        assert_forward(&format!("{what}, lengths"), &chunked, &whole, 1e-5);
        assert_forward(&what, &chunked_full, &whole_full, 1e-5);
    }
}
for_each_mode!(
    a_small_budget_runs_in_chunks_with_identical_results,
    a_small_budget_runs_in_chunks_with_identical_results
);

/// A long sequence through a wide state: the state must not drift or stop updating. An
/// Elman RNN of H = 256 runs its persistent kernel over 1200 steps; an LSTM or GRU that wide
/// runs over 300 steps (four times the work per step, on both paths): per step, or on CPU
/// adapters with subgroups (lavapipe) their persistent kernel with each unit's rows split
/// over four lanes; gpu_paths' long_gated_sequences_match_cpu runs them long (GRU H = 256
/// over 1000 steps per step, LSTM over 1500 persistent).
fn long_sequences_with_wide_state_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("long_sequences_with_wide_state_match_cpu", mode) else {
        return;
    };
    let config = RnnConfig::new(mode, 16, 256);
    let weights = RnnWeights::init(&config, 11).unwrap();
    let steps = match mode {
        RnnMode::Rnn(_) => 1200,
        RnnMode::Lstm | RnnMode::Gru => 300,
    };
    let input = Tensor::new(values(12, steps * 16), &[steps, 1, 16]).unwrap();
    let want = CpuRnn::new(config.clone(), &weights)
        .unwrap()
        .forward(&input, None)
        .unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights).unwrap();
    // Four parts of the rows, from whole subgroups: 256 lanes.
    let splits_rows = support::cpu_subgroup_lanes(&ctx).is_some_and(|(_, lanes)| lanes >= 256);
    let recurrence = match mode {
        RnnMode::Rnn(_) => Recurrence::Persistent,
        RnnMode::Lstm | RnnMode::Gru if splits_rows => Recurrence::Persistent,
        RnnMode::Lstm | RnnMode::Gru => Recurrence::PerStep,
    };
    assert_eq!(gpu.recurrence(), recurrence, "{mode:?}");
    let got = gpu.forward(&input, None).unwrap();
    check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?}, T = {steps}: {e}"));
}
for_each_mode!(
    long_sequences_with_wide_state_match_cpu,
    long_sequences_with_wide_state_match_cpu
);

/// Pushes the sequence-first `input` (N = `batch`) through a stream of `rnn` in the chunks
/// between consecutive `bounds`, and checks its outputs and final state (c too for an LSTM)
/// against `want`.
fn assert_streams_alike(
    rnn: &GpuRnn,
    input: &Tensor,
    batch: usize,
    bounds: &[usize],
    want: &RnnOutput,
) {
    let mut stream = rnn
        .stream(StreamOptions {
            batch,
            ..StreamOptions::default()
        })
        .unwrap();
    let outputs: Vec<Tensor> = bounds
        .windows(2)
        .map(|w| stream.push(&frames(input, false, w[0], w[1])).unwrap())
        .collect();
    let streamed = concat(&outputs, false);
    assert_tensor("stream", &streamed, &want.output, 1e-4);
    assert_stream_state("stream", &stream, want, 1e-4);
}

fn streams_and_lengths_project_ahead_alike(mode: RnnMode) {
    let Some(ctx) = gpu("streams_and_lengths_project_ahead_alike", mode) else {
        return;
    };
    // Shapes whose persistent layers project their inputs ahead on CPU adapters (one
    // workgroup, I·G·H ≥ 128², 2·128² for the gated cells, I ≤ H): a stream in chunks long
    // enough to project ahead too, and a sequence shorter than the input, against the CPU.
    // (stream model: I, H, layers; lengths model: I, H)
    let ((i, h, layers), (li, lh)) = match mode {
        RnnMode::Rnn(_) => ((128, 128, 2), (128, 130)),
        RnnMode::Lstm => ((96, 96, 2), (96, 97)),
        RnnMode::Gru => ((108, 108, 2), (109, 109)),
    };
    let config = RnnConfig {
        num_layers: layers,
        ..RnnConfig::new(mode, i, h)
    };
    let weights = RnnWeights::init(&config, 8).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config, &weights).unwrap();
    let steps = 400;
    let input = Tensor::new(values(2, steps * i), &[steps, 1, i]).unwrap();
    let want = cpu.forward(&input, None).unwrap();
    let ahead = rnn.layers_projecting_ahead(250, 1).unwrap();
    println!("{mode:?}: stream chunks of 250: {ahead} layer(s) projecting ahead");
    // Every layer of each mode's shape projects ahead where the plans apply.
    assert_eq!(
        ahead,
        if plans_apply(&ctx) { layers } else { 0 },
        "{mode:?}"
    );
    assert_streams_alike(&rnn, &input, 1, &[0, 250, 330, steps], &want);

    let config = RnnConfig::new(mode, li, lh);
    let weights = RnnWeights::init(&config, 9).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config, &weights).unwrap();
    let (steps, n) = (200, 1);
    let lengths = [151];
    let ahead = rnn.layers_projecting_ahead(steps, n).unwrap();
    println!("{mode:?}: lengths: {ahead} layer(s) projecting ahead");
    assert_eq!(ahead, if plans_apply(&ctx) { 1 } else { 0 }, "{mode:?}");
    let input = Tensor::new(values(3, steps * n * li), &[steps, n, li]).unwrap();
    let got = rnn.forward_with_lengths(&input, &lengths, None).unwrap();
    let want = cpu.forward_with_lengths(&input, &lengths, None).unwrap();
    assert_forward(&format!("{mode:?}: lengths"), &got, &want, 1e-4);
}
for_each_mode!(
    streams_and_lengths_project_ahead_alike,
    streams_and_lengths_project_ahead_alike
);

fn streams_and_lengths_fuse_the_input_alike(mode: RnnMode) {
    let Some(ctx) = gpu("streams_and_lengths_fuse_the_input_alike", mode) else {
        return;
    };
    // Elman layers that compute their input projection in each step on CPU adapters with
    // subgroups (one-subgroup recurrence, I a multiple of four ≤ the padded state): a stream
    // in uneven chunks, and sequences of several lengths in padded batch tiles, against the
    // CPU. The gated cells' persistent kernels have no fused form: the same shapes run with
    // a projection GEMM there, and must agree alike.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 40, 64)
    };
    let weights = RnnWeights::init(&config, 10).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
    let (steps, n) = (150, 6);
    let fused = rnn.layers_fusing_input(steps, n).unwrap();
    println!("{mode:?}: {fused} layer(s) fusing the input");
    let want_fused = match mode {
        RnnMode::Rnn(_) if plans_apply(&ctx) => 2,
        _ => 0,
    };
    assert_eq!(fused, want_fused, "{mode:?}");
    let input = Tensor::new(values(4, steps * n * 40), &[steps, n, 40]).unwrap();
    let want = cpu.forward(&input, None).unwrap();
    assert_streams_alike(&rnn, &input, n, &[0, 1, 47, 120, steps], &want);

    let lengths = [150, 1, 110, 64, 149, 5];
    let got = rnn.forward_with_lengths(&input, &lengths, None).unwrap();
    let want = cpu.forward_with_lengths(&input, &lengths, None).unwrap();
    assert_forward(&format!("{mode:?}: lengths"), &got, &want, 1e-4);
}
for_each_mode!(
    streams_and_lengths_fuse_the_input_alike,
    streams_and_lengths_fuse_the_input_alike
);

/// A push that times out has not happened: the state (c too) and the delay are as before it,
/// and pushing the same chunk again (with a sane timeout) gives what one forward over the
/// whole sequence gives. A context of its own, as the timeout is context-wide; every mode on
/// it in turn (a fresh context compiles everything anew: one for the four modes).
#[test]
fn a_timed_out_push_leaves_the_stream_unchanged() {
    if testing::gpu("a_timed_out_push_leaves_the_stream_unchanged").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    for mode in MODES {
        timed_out_push(&ctx, mode);
    }
}

fn timed_out_push(ctx: &GpuContext, mode: RnnMode) {
    let config = stacked(mode, false);
    let weights = RnnWeights::init(&config, 5).unwrap();
    // Per step: one dispatch per step and layer, which no adapter finishes the instant they
    // are submitted (as in hostile_limits' timeout). 3000 steps, 6000 dispatches: with 300, a
    // `.ci/run` once saw the push finish before its zero-timeout wait (the test thread
    // descheduled while two cores ran the whole suite); now that would take a stall of a
    // tenth of a second or more on lavapipe.
    let options = GpuOptions::recurrence(Recurrence::PerStep);
    let rnn = GpuRnn::with_options(ctx, config.clone(), &weights, options).unwrap();
    let cpu = CpuRnn::new(config, &weights).unwrap();
    let (first, long, delay) = (4, 3000, 2);
    let input = Tensor::new(values(7, (first + long) * 5), &[first + long, 1, 5]).unwrap();
    let mut stream = rnn.stream(StreamOptions { batch: 1, delay }).unwrap();
    let mut parts = vec![stream.push(&frames(&input, false, 0, first)).unwrap()];
    let before = cpu.forward(&frames(&input, false, 0, first), None).unwrap();
    let rest = frames(&input, false, first, first + long);
    for round in 0..2 {
        ctx.set_timeout(std::time::Duration::ZERO);
        let timed_out = stream.push(&rest);
        ctx.set_timeout(std::time::Duration::from_secs(60));
        assert!(
            matches!(timed_out, Err(RnnError::Timeout(_))),
            "{mode:?}, round {round}: {timed_out:?}"
        );
        // Still the state after the first frames.
        assert_stream_state(&format!("{mode:?}, round {round}"), &stream, &before, 1e-4);
    }
    parts.push(stream.push(&rest).unwrap());
    let whole = cpu.forward(&input, None).unwrap();
    assert_stream_state(&format!("{mode:?}"), &stream, &whole, 1e-4);
    parts.push(stream.finish().unwrap());

    // The delayed outputs, as in delay_holds_back_the_first_outputs.
    let mut padded = input.data().to_vec();
    padded.extend(vec![0.0; delay * 5]);
    let padded = Tensor::new(padded, &[first + long + delay, 1, 5]).unwrap();
    let want = frames(
        &cpu.forward(&padded, None).unwrap().output,
        false,
        delay,
        first + long + delay,
    );
    let got = concat(&parts, false);
    assert_tensor(&format!("{mode:?}: outputs"), &got, &want, 1e-4);
}

/// A stream of one sequence fed unbatched (T_c, I) chunks answers unbatched everywhere, as
/// `nn.RNN` does: pushes and `finish` give (T_c, H), `state` (L, H) and an LSTM's
/// `cell_state` (L, H); `reset_to` takes (L, H) as well as (L, 1, H), and the state's form
/// follows it.
fn unbatched_chunks_give_unbatched_results(mode: RnnMode) {
    let Some(ctx) = gpu("unbatched_chunks_give_unbatched_results", mode) else {
        return;
    };
    let config = stacked(mode, false);
    let rnn = model(&ctx, &config);
    let (steps, h, layers) = (9, 24, 2);
    let input = Tensor::new(values(8, steps * 5), &[steps, 5]).unwrap();
    // (L, H) forms of a random state: h0, and c0 for an LSTM.
    let batched = random_state(&mut support::Rng(9), &config, 1);
    let unbatch = |t: &Tensor| Tensor::new(t.data().to_vec(), &[layers, h]).unwrap();
    let state = State {
        h0: unbatch(&batched.h0),
        c0: batched.c0.as_ref().map(unbatch),
    };
    let want = rnn.forward(&input, Some(state.hx())).unwrap();
    assert_eq!(want.output.shape(), &[steps, h]);
    assert_eq!(want.h_n.shape(), &[layers, h]);
    for delay in [0, 2] {
        let mut stream = rnn.stream(StreamOptions { batch: 1, delay }).unwrap();
        stream.reset_to(state.hx()).unwrap();
        assert_eq!(
            stream.state().unwrap().shape(),
            &[layers, h],
            "{mode:?}, delay {delay}"
        );
        let c = stream.cell_state().unwrap();
        assert_eq!(
            c.as_ref().map(|c| c.shape().to_vec()),
            mode.has_cell_state().then(|| vec![layers, h]),
            "{mode:?}, delay {delay}"
        );
        let mut data = Vec::new();
        for (t0, t1) in [(0, 4), (4, 9)] {
            let chunk = Tensor::new(input.data()[t0 * 5..t1 * 5].to_vec(), &[t1 - t0, 5]).unwrap();
            let out = stream.push(&chunk).unwrap();
            assert_eq!(
                out.shape().len(),
                2,
                "{mode:?}, delay {delay}: push gave {:?}",
                out.shape()
            );
            data.extend_from_slice(out.data());
        }
        // (L, H) states, equal to the forward's (the delay's zero frames come in finish()).
        assert_stream_state(&format!("{mode:?}, delay {delay}"), &stream, &want, 1e-5);
        let last = stream.finish().unwrap();
        assert_eq!(last.shape(), &[delay, h], "{mode:?}, delay {delay}: finish");
        // Held back: the outputs returned are the model's frames delay.. (see
        // delay_holds_back_the_first_outputs).
        let got = Tensor::new(data, &[steps - delay, h]).unwrap();
        assert_close(
            &format!("{mode:?}, delay {delay}: outputs"),
            compare(got.data(), &want.output.data()[delay * h..], 1e-5),
        );
    }
    // (L, 1, H) is accepted too, and brings the batched form back (for c too).
    let mut stream = rnn.stream(StreamOptions::default()).unwrap();
    stream.reset_to(batched.hx()).unwrap();
    assert_eq!(stream.state().unwrap().shape(), &[layers, 1, h]);
    if let Some(c) = stream.cell_state().unwrap() {
        assert_eq!(c.shape(), &[layers, 1, h], "{mode:?}");
    }
    assert_eq!(stream.finish().unwrap().shape(), &[0, 1, h]);
}
for_each_mode!(
    unbatched_chunks_give_unbatched_results,
    unbatched_chunks_give_unbatched_results
);
