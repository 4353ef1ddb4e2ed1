//! A Linear head after the model, for every mode: the CPU head against the head applied by
//! hand, the GPU against the CPU in every layout and path (plain, variable lengths, time
//! chunks, streams; a projected LSTM too), and its loading and shape checks.

mod support;

use support::mode_name;
use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, GpuRnn, Linear, Rnn, RnnConfig, RnnError, RnnMode, RnnWeights, StreamOptions, Tensor,
    testing,
};

fn values(seed: u64, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f64 * 0.31 + seed as f64).cos() * 1.2) as f32)
        .collect()
}

fn head(in_features: usize, out_features: usize, bias: bool) -> Linear {
    Linear {
        in_features,
        out_features,
        weight: values(9, in_features * out_features)
            .iter()
            .map(|v| v * 0.3)
            .collect(),
        bias: bias.then(|| values(10, out_features)),
    }
}

/// `head` applied by hand to every frame of `frames` (…, in_features).
fn apply(head: &Linear, frames: &Tensor) -> Vec<f32> {
    let (i, o) = (head.in_features, head.out_features);
    frames
        .data()
        .chunks(i)
        .flat_map(|frame| {
            (0..o).map(move |k| {
                let row = &head.weight[k * i..(k + 1) * i];
                let dot: f32 = row.iter().zip(frame).map(|(w, x)| w * x).sum();
                dot + head.bias.as_ref().map_or(0.0, |b| b[k])
            })
        })
        .collect()
}

fn gpu_head_matches(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("gpu_head_matches_cpu_head::{}", mode_name(mode))) else {
        return;
    };
    for (k, (bidirectional, batch_first, out, bias)) in [
        (false, false, 1, true),
        (true, true, 5, true),
        (false, true, 33, false),
        (true, false, 3, false),
    ]
    .into_iter()
    .enumerate()
    {
        let config = RnnConfig {
            num_layers: 2,
            bidirectional,
            batch_first,
            // The head reads D·H_out features: P of a projected LSTM.
            proj_size: if mode == RnnMode::Lstm && k >= 2 {
                5
            } else {
                0
            },
            ..RnnConfig::new(mode, 6, 17)
        };
        let weights = RnnWeights::init(&config, k as u64).unwrap();
        let linear = head(config.output_size(), out, bias);
        let bare = CpuRnn::new(config.clone(), &weights).unwrap();
        let cpu = bare.clone().with_head(&linear).unwrap();
        let gpu = GpuRnn::new(&ctx, config.clone(), &weights)
            .unwrap()
            .with_head(&linear)
            .unwrap();
        assert_eq!((cpu.output_features(), gpu.output_features()), (out, out));
        let (steps, n) = (13, 3);
        let shape = if batch_first {
            [n, steps, 6]
        } else {
            [steps, n, 6]
        };
        let input = Tensor::new(values(k as u64, steps * n * 6), &shape).unwrap();

        // The CPU head is the head applied to the model's frames.
        let frames = bare.forward(&input, None).unwrap().output;
        let by_hand = apply(&linear, &frames);
        let c = compare(
            cpu.forward(&input, None).unwrap().output.data(),
            &by_hand,
            1e-4,
        );
        assert!(
            c.passed(),
            "{mode:?} case {k}: the CPU head against the head by hand: {c}"
        );

        let lengths = [13, 4, 9];
        for (what, want, got) in [
            (
                "plain",
                cpu.forward(&input, None).unwrap(),
                gpu.forward(&input, None).unwrap(),
            ),
            (
                "lengths",
                cpu.forward_with_lengths(&input, &lengths, None).unwrap(),
                gpu.forward_with_lengths(&input, &lengths, None).unwrap(),
            ),
        ] {
            let expected_shape = if batch_first {
                [n, steps, out]
            } else {
                [steps, n, out]
            };
            assert_eq!(got.output.shape(), expected_shape);
            support::check_output(&got, &want)
                .unwrap_or_else(|e| panic!("{mode:?} case {k} {what}: {e}"));
        }
        if !bidirectional {
            // Time chunks and streams produce the head's frames too. The smallest budget that
            // holds a step depends on the mode (an LSTM's gates take four times an RNN's).
            let whole = gpu.forward(&input, None).unwrap();
            let mut budget = 6_000;
            gpu.set_workspace_budget(Some(budget));
            while gpu.time_chunk(steps, n).is_err() {
                budget *= 2;
                gpu.set_workspace_budget(Some(budget));
            }
            assert!(
                gpu.time_chunk(steps, n).unwrap() < steps,
                "{mode:?} case {k}"
            );
            let chunked = gpu.forward(&input, None).unwrap();
            gpu.set_workspace_budget(None);
            let c = compare(chunked.output.data(), whole.output.data(), 1e-6);
            assert!(c.passed(), "{mode:?} case {k} chunked: {c}");
            let mut stream = gpu.stream(StreamOptions { batch: n, delay: 0 }).unwrap();
            let streamed = stream.push(&input).unwrap();
            let c = compare(streamed.data(), whole.output.data(), 1e-6);
            assert!(c.passed(), "{mode:?} case {k} streamed: {c}");
        }
    }
}
for_each_mode!(gpu_head_matches_cpu_head, gpu_head_matches);

/// A head must read D·H_out features and have the weights its sizes say, on both paths.
fn heads_rejected(mode: RnnMode) {
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 3, 4)
    };
    let weights = RnnWeights::init(&config, 1).unwrap();
    let cpu = || CpuRnn::new(config.clone(), &weights).unwrap();
    // The head must read D·H = 8 features.
    let error = cpu().with_head(&head(4, 2, true)).unwrap_err();
    assert!(matches!(error, RnnError::InvalidConfig(_)), "{error:?}");
    let mut short = head(8, 2, true);
    short.weight.pop();
    let error = cpu().with_head(&short).unwrap_err();
    assert!(
        matches!(error, RnnError::Weights { ref name, .. } if name == "weight"),
        "{error:?}"
    );
    let Some(ctx) = testing::gpu(&format!(
        "heads_that_do_not_fit_are_rejected::{}",
        mode_name(mode)
    )) else {
        return;
    };
    let gpu = || GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let error = gpu().with_head(&head(4, 2, true)).unwrap_err();
    assert!(matches!(error, RnnError::InvalidConfig(_)), "{error:?}");
    let error = gpu().with_head(&short).unwrap_err();
    assert!(
        matches!(error, RnnError::Weights { ref name, .. } if name == "weight"),
        "{error:?}"
    );
}
for_each_mode!(heads_that_do_not_fit_are_rejected, heads_rejected);

#[test]
fn heads_load_from_a_state_dict() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sine_model.safetensors");
    let error = Linear::load(&path, "linear.", 16, 2).unwrap_err();
    assert!(
        matches!(error, RnnError::Weights { ref name, .. } if name == "linear.weight"),
        "{error:?}"
    );
    let loaded = Linear::load(&path, "linear.", 16, 1).unwrap();
    assert_eq!(
        (loaded.weight.len(), loaded.bias.map(|b| b.len())),
        (16, Some(1))
    );
}
