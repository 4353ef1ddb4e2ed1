//! A Linear head after the RNN: GPU against CPU, in every layout and path (plain, variable
//! lengths, time chunks, streams), and its loading and shape checks.

use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, GpuRnn, Linear, Rnn, RnnConfig, RnnError, RnnWeights, StreamOptions, Tensor, testing,
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

#[test]
fn gpu_head_matches_cpu_head() {
    let Some(ctx) = testing::gpu("gpu_head_matches_cpu_head") else {
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
            ..RnnConfig::new(6, 17)
        };
        let weights = RnnWeights::init(&config, k as u64).unwrap();
        let linear = head(config.output_size(), out, bias);
        let cpu = CpuRnn::new(config.clone(), weights.clone())
            .unwrap()
            .with_head(linear.clone())
            .unwrap();
        let gpu = GpuRnn::new(&ctx, config.clone(), &weights)
            .unwrap()
            .with_head(&linear)
            .unwrap();
        assert_eq!(gpu.output_features(), out);
        let (steps, n) = (13, 3);
        let shape = if batch_first {
            [n, steps, 6]
        } else {
            [steps, n, 6]
        };
        let input = Tensor::new(values(k as u64, steps * n * 6), &shape).unwrap();
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
            let c = compare(got.output.data(), want.output.data(), 1e-4);
            assert!(c.passed(), "case {k} {what}: {c}");
            let c = compare(got.h_n.data(), want.h_n.data(), 1e-4);
            assert!(c.passed(), "case {k} {what} h_n: {c}");
        }
        if !bidirectional {
            // Time chunks and streams produce the head's frames too.
            let whole = gpu.forward(&input, None).unwrap();
            gpu.set_workspace_budget(Some(6_000));
            assert!(gpu.time_chunk(steps, n).unwrap() < steps);
            let chunked = gpu.forward(&input, None).unwrap();
            gpu.set_workspace_budget(None);
            let c = compare(chunked.output.data(), whole.output.data(), 1e-6);
            assert!(c.passed(), "case {k} chunked: {c}");
            let mut stream = gpu.stream(StreamOptions { batch: n, delay: 0 }).unwrap();
            let streamed = stream.push(&input).unwrap();
            let c = compare(streamed.data(), whole.output.data(), 1e-6);
            assert!(c.passed(), "case {k} streamed: {c}");
        }
    }
}

#[test]
fn heads_that_do_not_fit_are_rejected() {
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(3, 4)
    };
    let cpu = || CpuRnn::new(config.clone(), RnnWeights::init(&config, 1).unwrap()).unwrap();
    // The head must read D·H = 8 features.
    let error = cpu().with_head(head(4, 2, true)).unwrap_err();
    assert!(matches!(error, RnnError::InvalidConfig(_)), "{error:?}");
    let mut short = head(8, 2, true);
    short.weight.pop();
    let error = cpu().with_head(short).unwrap_err();
    assert!(
        matches!(error, RnnError::Weights { ref name, .. } if name == "weight"),
        "{error:?}"
    );
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
