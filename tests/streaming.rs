//! Streams, delays, variable lengths and time-chunked long sequences on the GPU, each against
//! a plain forward (GPU) or the CPU reference.

use wgpu_rnn::compare::{Comparison, compare};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Nonlinearity, Recurrence, Rnn, RnnConfig, RnnError,
    RnnOutput, RnnWeights, StreamOptions, Tensor, testing,
};

fn values(seed: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f64 * 0.7 + seed as f64 * 1.3).sin() * 1.5) as f32)
        .collect()
}

fn stacked(batch_first: bool) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        batch_first,
        ..RnnConfig::new(5, 24)
    }
}

fn model(ctx: &GpuContext, config: &RnnConfig) -> GpuRnn {
    GpuRnn::new(ctx, config.clone(), &RnnWeights::init(config, 5).unwrap()).unwrap()
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

#[test]
fn chunked_pushes_equal_one_forward() {
    let Some(ctx) = testing::gpu("chunked_pushes_equal_one_forward") else {
        return;
    };
    for batch_first in [false, true] {
        let config = stacked(batch_first);
        let rnn = model(&ctx, &config);
        let (steps, n) = (150, 3);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(1, steps * n * 5), &shape).unwrap();
        let whole = rnn.forward(&input, None).unwrap();
        for chunk in [1, 7, 64] {
            let mut stream = rnn.stream(StreamOptions { batch: n, delay: 0 }).unwrap();
            let outputs: Vec<Tensor> = (0..steps)
                .step_by(chunk)
                .map(|t0| {
                    stream
                        .push(&frames(&input, batch_first, t0, (t0 + chunk).min(steps)))
                        .unwrap()
                })
                .collect();
            let what = format!("chunks of {chunk}, batch_first={batch_first}");
            let streamed = concat(&outputs, batch_first);
            assert_eq!(streamed.shape(), whole.output.shape(), "{what}");
            assert_close(&what, compare(streamed.data(), whole.output.data(), 1e-6));
            assert_close(
                &format!("{what}: state"),
                compare(stream.state().unwrap().data(), whole.h_n.data(), 1e-6),
            );
        }
    }
}

#[test]
fn delay_holds_back_the_first_outputs() {
    let Some(ctx) = testing::gpu("delay_holds_back_the_first_outputs") else {
        return;
    };
    let config = stacked(false);
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
            "delay {delay}"
        );
        parts.push(stream.finish().unwrap());
        let got = concat(&parts, false);
        assert_eq!(got.shape(), want.shape(), "delay {delay}");
        assert_close(
            &format!("delay {delay}"),
            compare(got.data(), want.data(), 1e-6),
        );
        // finish() reset the stream: the next utterance starts from zeros again.
        assert!(stream.state().unwrap().data().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn streams_start_from_a_given_state_and_reject_bad_use() {
    let Some(ctx) = testing::gpu("streams_start_from_a_given_state_and_reject_bad_use") else {
        return;
    };
    let config = stacked(false);
    let rnn = model(&ctx, &config);
    let input = Tensor::new(values(3, 6 * 2 * 5), &[6, 2, 5]).unwrap();
    let h0 = Tensor::new(values(4, 2 * 2 * 24), &[2, 2, 24]).unwrap();
    let want = rnn.forward(&input, Some(&h0)).unwrap();
    let mut stream = rnn.stream(StreamOptions { batch: 2, delay: 0 }).unwrap();
    stream.reset_to(&h0).unwrap();
    assert_close(
        "state after reset_to",
        compare(stream.state().unwrap().data(), h0.data(), 0.0),
    );
    let got = stream.push(&input).unwrap();
    assert_close(
        "output from h0",
        compare(got.data(), want.output.data(), 1e-6),
    );
    assert_close(
        "state from h0",
        compare(stream.state().unwrap().data(), want.h_n.data(), 1e-6),
    );

    let wrong_batch = stream
        .push(&Tensor::zeros(&[3, 4, 5]).unwrap())
        .unwrap_err();
    assert!(
        matches!(wrong_batch, RnnError::ShapeMismatch { what: "input", .. }),
        "{wrong_batch:?}"
    );
    let wrong_h0 = stream
        .reset_to(&Tensor::zeros(&[2, 24]).unwrap())
        .unwrap_err();
    assert!(
        matches!(wrong_h0, RnnError::ShapeMismatch { what: "h0", .. }),
        "{wrong_h0:?}"
    );
    let bidir = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(5, 8)
    };
    let error = model(&ctx, &bidir)
        .stream(StreamOptions::default())
        .unwrap_err();
    assert!(matches!(error, RnnError::InvalidConfig(_)), "{error:?}");
}

#[test]
fn variable_lengths_match_cpu() {
    let Some(ctx) = testing::gpu("variable_lengths_match_cpu") else {
        return;
    };
    for (k, bidirectional) in [(0u64, false), (1, true), (2, true), (3, false)] {
        let config = RnnConfig {
            num_layers: 1 + k as usize % 2,
            bidirectional,
            batch_first: k % 2 == 1,
            nonlinearity: if k == 3 {
                Nonlinearity::Relu
            } else {
                Nonlinearity::Tanh
            },
            ..RnnConfig::new(17, 33)
        };
        let weights = RnnWeights::init(&config, k).unwrap();
        let cpu = CpuRnn::new(config.clone(), weights.clone()).unwrap();
        let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
        let (steps, lengths) = (23, [23usize, 1, 9, 17, 2]);
        let n = lengths.len();
        let shape = if config.batch_first {
            [n, steps, 17]
        } else {
            [steps, n, 17]
        };
        let input = Tensor::new(values(k, steps * n * 17), &shape).unwrap();
        let want = cpu.forward_with_lengths(&input, &lengths, None).unwrap();
        let got = gpu.forward_with_lengths(&input, &lengths, None).unwrap();
        assert_close(
            &format!("case {k} output"),
            compare(got.output.data(), want.output.data(), 1e-4),
        );
        assert_close(
            &format!("case {k} h_n"),
            compare(got.h_n.data(), want.h_n.data(), 1e-4),
        );
        let bad = gpu
            .forward_with_lengths(&input, &[23, 0, 9, 17, 2], None)
            .unwrap_err();
        assert!(
            matches!(bad, RnnError::InvalidLength { index: 1, .. }),
            "{bad:?}"
        );
    }
}

#[test]
fn a_small_budget_runs_in_chunks_with_identical_results() {
    let Some(ctx) = testing::gpu("a_small_budget_runs_in_chunks_with_identical_results") else {
        return;
    };
    for batch_first in [false, true] {
        let config = stacked(batch_first);
        let rnn = model(&ctx, &config);
        let (steps, n) = (300, 4);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(7, steps * n * 5), &shape).unwrap();
        let h0 = Tensor::new(values(8, 2 * n * 24), &[2, n, 24]).unwrap();
        let lengths = [300, 17, 151, 299];
        let whole = rnn.forward(&input, Some(&h0)).unwrap();
        let whole_packed = rnn
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        // About 64 frames per chunk: 300 frames take five chunks, the last one partial.
        assert_eq!(rnn.time_chunk(steps, n).unwrap(), steps);
        rnn.set_workspace_budget(Some(64 * (4 * n as u64 * (5 + 3 * 24) + 256) + 10_000));
        let chunk = rnn.time_chunk(steps, n).unwrap();
        assert!((32..=100).contains(&chunk), "{chunk} frames per chunk");
        let chunked = rnn.forward(&input, Some(&h0)).unwrap();
        let chunked_packed = rnn
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        rnn.set_workspace_budget(None);
        let what = format!("batch_first={batch_first}");
        assert_close(
            &what,
            compare(chunked.output.data(), whole.output.data(), 1e-6),
        );
        assert_close(&what, compare(chunked.h_n.data(), whole.h_n.data(), 1e-6));
        assert_close(
            &what,
            compare(
                chunked_packed.output.data(),
                whole_packed.output.data(),
                1e-6,
            ),
        );
        assert_close(
            &what,
            compare(chunked_packed.h_n.data(), whole_packed.h_n.data(), 1e-6),
        );
    }
    // A bidirectional model runs one layer and direction at a time, each in chunks: the
    // same numbers again, variable lengths and batch-first included.
    for batch_first in [false, true] {
        let bidir = RnnConfig {
            bidirectional: true,
            num_layers: 2,
            batch_first,
            ..RnnConfig::new(5, 24)
        };
        let rnn = model(&ctx, &bidir);
        let (steps, n) = (150, 3);
        let shape = if batch_first {
            [n, steps, 5]
        } else {
            [steps, n, 5]
        };
        let input = Tensor::new(values(9, steps * n * 5), &shape).unwrap();
        let h0 = Tensor::new(values(10, 4 * n * 24), &[4, n, 24]).unwrap();
        let lengths = [150, 7, 88];
        let whole = rnn
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        let whole_full = rnn.forward(&input, Some(&h0)).unwrap();
        rnn.set_workspace_budget(Some(20_000));
        assert!(rnn.time_chunk(steps, n).unwrap() < steps);
        let chunked = rnn
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        let chunked_full = rnn.forward(&input, Some(&h0)).unwrap();
        let what = format!("bidirectional, batch_first={batch_first}");
        for (got, want) in [(&chunked, &whole), (&chunked_full, &whole_full)] {
            assert_eq!(got.output.shape(), want.output.shape());
            assert_close(&what, compare(got.output.data(), want.output.data(), 1e-5));
            assert_close(&what, compare(got.h_n.data(), want.h_n.data(), 1e-5));
        }
    }
}

#[test]
fn long_sequences_with_wide_state_match_cpu() {
    let Some(ctx) = testing::gpu("long_sequences_with_wide_state_match_cpu") else {
        return;
    };
    let config = RnnConfig::new(16, 256);
    let weights = RnnWeights::init(&config, 11).unwrap();
    let steps = 1200;
    let input = Tensor::new(values(12, steps * 16), &[steps, 1, 16]).unwrap();
    let want = CpuRnn::new(config.clone(), weights.clone())
        .unwrap()
        .forward(&input, None)
        .unwrap();
    let got = GpuRnn::new(&ctx, config, &weights)
        .unwrap()
        .forward(&input, None)
        .unwrap();
    assert_close(
        "T=1200 output",
        compare(got.output.data(), want.output.data(), 1e-4),
    );
    assert_close("T=1200 h_n", compare(got.h_n.data(), want.h_n.data(), 1e-4));
}

/// Pushes the sequence-first `input` (N = `batch`) through a stream of `rnn` in the chunks
/// between consecutive `bounds`, and checks its outputs and final state against `want`.
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
    assert_close("stream", compare(streamed.data(), want.output.data(), 1e-4));
    assert_close(
        "stream state",
        compare(stream.state().unwrap().data(), want.h_n.data(), 1e-4),
    );
}

#[test]
fn streams_and_lengths_project_ahead_alike() {
    let Some(ctx) = testing::gpu("streams_and_lengths_project_ahead_alike") else {
        return;
    };
    // Shapes whose persistent layers project their inputs ahead on CPU adapters (one
    // workgroup, I·H ≥ 128², I ≤ H): a stream in chunks long enough to project ahead too, and
    // a sequence shorter than the input, against the CPU.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(128, 128)
    };
    let weights = RnnWeights::init(&config, 8).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config.clone(), weights).unwrap();
    let steps = 600;
    let input = Tensor::new(values(2, steps * 128), &[steps, 1, 128]).unwrap();
    let want = cpu.forward(&input, None).unwrap();
    println!(
        "stream chunks of 250: {} layer(s) projecting ahead",
        rnn.layers_projecting_ahead(250, 1).unwrap()
    );
    assert_streams_alike(&rnn, &input, 1, &[0, 250, 500, steps], &want);

    let config = RnnConfig::new(128, 130);
    let weights = RnnWeights::init(&config, 9).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config, weights).unwrap();
    let (steps, n) = (300, 1);
    let lengths = [217];
    println!(
        "lengths: {} layer(s) projecting ahead",
        rnn.layers_projecting_ahead(steps, n).unwrap()
    );
    let input = Tensor::new(values(3, steps * n * 128), &[steps, n, 128]).unwrap();
    let got = rnn.forward_with_lengths(&input, &lengths, None).unwrap();
    let want = cpu.forward_with_lengths(&input, &lengths, None).unwrap();
    assert_close(
        "lengths",
        compare(got.output.data(), want.output.data(), 1e-4),
    );
    assert_close(
        "lengths h_n",
        compare(got.h_n.data(), want.h_n.data(), 1e-4),
    );
}

#[test]
fn streams_and_lengths_fuse_the_input_alike() {
    let Some(ctx) = testing::gpu("streams_and_lengths_fuse_the_input_alike") else {
        return;
    };
    // Layers that compute their input projection in each step on CPU adapters with
    // subgroups (one-subgroup recurrence, I a multiple of four ≤ the padded state): a stream
    // in uneven chunks, and sequences of several lengths in padded batch tiles, against the
    // CPU.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(40, 64)
    };
    let weights = RnnWeights::init(&config, 10).unwrap();
    let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let cpu = CpuRnn::new(config.clone(), weights).unwrap();
    let (steps, n) = (300, 6);
    println!(
        "{} layer(s) fusing the input",
        rnn.layers_fusing_input(steps, n).unwrap()
    );
    let input = Tensor::new(values(4, steps * n * 40), &[steps, n, 40]).unwrap();
    let want = cpu.forward(&input, None).unwrap();
    assert_streams_alike(&rnn, &input, n, &[0, 1, 97, 250, steps], &want);

    let lengths = [300, 1, 217, 64, 299, 5];
    let got = rnn.forward_with_lengths(&input, &lengths, None).unwrap();
    let want = cpu.forward_with_lengths(&input, &lengths, None).unwrap();
    assert_close(
        "lengths",
        compare(got.output.data(), want.output.data(), 1e-4),
    );
    assert_close(
        "lengths h_n",
        compare(got.h_n.data(), want.h_n.data(), 1e-4),
    );
}

/// A push that times out has not happened: the state and the delay are as before it, and
/// pushing the same chunk again (with a sane timeout) gives what one forward over the whole
/// sequence gives. A context of its own: the timeout is context-wide.
#[test]
fn a_timed_out_push_leaves_the_stream_unchanged() {
    if testing::gpu("a_timed_out_push_leaves_the_stream_unchanged").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    let config = stacked(false);
    let weights = RnnWeights::init(&config, 5).unwrap();
    // Per step: one dispatch per step and layer, which no adapter finishes the instant they
    // are submitted (as in hostile_input's a_timeout_leaves_the_model_usable).
    let options = GpuOptions::recurrence(Recurrence::PerStep);
    let rnn = GpuRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
    let cpu = CpuRnn::new(config, weights).unwrap();
    let (first, long, delay) = (4, 1000, 2);
    let input = Tensor::new(values(7, (first + long) * 5), &[first + long, 1, 5]).unwrap();
    let mut stream = rnn.stream(StreamOptions { batch: 1, delay }).unwrap();
    let mut parts = vec![stream.push(&frames(&input, false, 0, first)).unwrap()];
    let rest = frames(&input, false, first, first + long);
    for round in 0..2 {
        ctx.set_timeout(std::time::Duration::ZERO);
        let timed_out = stream.push(&rest);
        ctx.set_timeout(std::time::Duration::from_secs(60));
        assert!(
            matches!(timed_out, Err(RnnError::Timeout(_))),
            "round {round}: {timed_out:?}"
        );
    }
    parts.push(stream.push(&rest).unwrap());
    let state = stream.state().unwrap();
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
    assert_eq!(got.shape(), want.shape());
    assert_close("outputs", compare(got.data(), want.data(), 1e-4));
    let want_state = cpu.forward(&input, None).unwrap().h_n;
    assert_close("state", compare(state.data(), want_state.data(), 1e-4));
}

/// A stream of one sequence fed unbatched (T_c, I) chunks answers unbatched everywhere, as
/// `nn.RNN` does: pushes and `finish` give (T_c, H), `state` (L, H); `reset_to` takes (L, H)
/// as well as (L, 1, H), and the state's form follows it.
#[test]
fn unbatched_chunks_give_unbatched_results() {
    let Some(ctx) = testing::gpu("unbatched_chunks_give_unbatched_results") else {
        return;
    };
    let config = stacked(false);
    let rnn = model(&ctx, &config);
    let (steps, h, layers) = (9, 24, 2);
    let input = Tensor::new(values(8, steps * 5), &[steps, 5]).unwrap();
    let h0 = Tensor::new(values(9, layers * h), &[layers, h]).unwrap();
    let want = rnn.forward(&input, Some(&h0)).unwrap();
    assert_eq!(want.output.shape(), &[steps, h]);
    for delay in [0, 2] {
        let mut stream = rnn.stream(StreamOptions { batch: 1, delay }).unwrap();
        stream.reset_to(&h0).unwrap();
        assert_eq!(
            stream.state().unwrap().shape(),
            &[layers, h],
            "delay {delay}"
        );
        let mut data = Vec::new();
        for (t0, t1) in [(0, 4), (4, 9)] {
            let chunk = Tensor::new(input.data()[t0 * 5..t1 * 5].to_vec(), &[t1 - t0, 5]).unwrap();
            let out = stream.push(&chunk).unwrap();
            assert_eq!(
                out.shape().len(),
                2,
                "delay {delay}: push gave {:?}",
                out.shape()
            );
            data.extend_from_slice(out.data());
        }
        let state = stream.state().unwrap();
        assert_eq!(state.shape(), want.h_n.shape(), "delay {delay}");
        if delay == 0 {
            assert_close("state", compare(state.data(), want.h_n.data(), 1e-5));
        }
        let last = stream.finish().unwrap();
        assert_eq!(last.shape(), &[delay, h], "delay {delay}: finish");
        // Held back: the outputs returned are the model's frames delay.. (see
        // delay_holds_back_the_first_outputs).
        let got = Tensor::new(data, &[steps - delay, h]).unwrap();
        assert_close(
            &format!("delay {delay}: outputs"),
            compare(got.data(), &want.output.data()[delay * h..], 1e-5),
        );
    }
    // (L, 1, H) is accepted too, and brings the batched form back.
    let mut stream = rnn.stream(StreamOptions::default()).unwrap();
    let batched = Tensor::new(h0.data().to_vec(), &[layers, 1, h]).unwrap();
    stream.reset_to(&batched).unwrap();
    assert_eq!(stream.state().unwrap().shape(), &[layers, 1, h]);
    assert_eq!(stream.finish().unwrap().shape(), &[0, 1, h]);
}
