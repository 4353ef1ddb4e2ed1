//! Weights stored as f16 (`GpuOptions::with_weights(WeightPrecision::F16)`): on adapters with
//! `SHADER_F16`, every kernel of every mode (projection, per-step, block, wavefront,
//! persistent, gated), given the f32 weights, gives the CPU reference's results for those weights rounded to f16 as the
//! GPU stores them (W_ih, W_hh, W_hr, a GRU's b_hn; the projection's biases stay f32) within
//! the usual 1e-4, which shows the GPU really read f16, and the f32 model's within the stated
//! f16 tolerance; elsewhere asking for f16 is a typed error.

mod support;

use support::mode_name;
use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, DirectionWeights, GpuContext, GpuOptions, GpuRnn, Recurrence, Rnn, RnnConfig, RnnError,
    RnnMode, RnnWeights, Tensor, WeightPrecision, testing,
};

const TOLERANCE: f64 = 1e-4;
/// What storing PyTorch-initialised weights as f16 may cost against the f32 model (the
/// README's figure): weights lose about 2^−11 of their size each.
const F16_VS_F32: f64 = 5e-3;

fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn round(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&v| WeightPrecision::F16.round(v))
        .collect()
}

/// The context, if it can store f16 weights; otherwise checks that asking for them is a
/// typed error and returns `None`.
fn f16_context(test: &str, mode: RnnMode) -> Option<GpuContext> {
    let ctx = testing::gpu(test)?;
    if ctx.device().features().contains(wgpu::Features::SHADER_F16) {
        return Some(ctx);
    }
    let config = RnnConfig::new(mode, 2, 3);
    let weights = RnnWeights::init(&config, 1).unwrap();
    let options = GpuOptions::default().with_weights(WeightPrecision::F16);
    let refused = GpuRnn::with_options(&ctx, config, &weights, options);
    assert!(
        matches!(refused, Err(RnnError::InvalidConfig(_))),
        "{refused:?}"
    );
    println!("{test}: the adapter has no SHADER_F16: f16 weights refused with a typed error");
    None
}

/// Compares `got` with `want` at `tolerance`; returns the worst error.
fn check(what: &str, got: &[f32], want: &[f32], tolerance: f64) -> f64 {
    let c = compare(got, want, tolerance);
    assert!(c.passed(), "{what}: {c}");
    c.max_abs
}

/// The GPU must sit much closer to the rounded model than to the f32 one: proof that it read
/// f16 weights rather than f32 ones (its f32 results differ from the CPU by ~1e-7).
fn assert_stored_as_f16(what: &str, vs_rounded: f64, vs_f32: f64) {
    assert!(
        vs_rounded * 10.0 < vs_f32,
        "{what}: {vs_rounded:.2e} from the f16-rounded model, {vs_f32:.2e} from the f32 one"
    );
}

/// The kernels each mode runs. Elman: persistent (H ≤ 256; projecting ahead where
/// I·H ≥ 128² and T spans chunks, fusing the input at H ≤ 64 on CPU adapters with subgroups
/// where I is a multiple of four ≤ H), per-step unit and block kernels, and a wavefront
/// (L = 2, N ≥ 4, no bias: the wavefront stores b_ih + b_hh as one f16). LSTM and GRU:
/// persistent (small H; H = 100 splits its rows over two lanes on CPU adapters with
/// subgroups), per-step unit and block kernels (the wide form above four sequences), and for
/// an LSTM the projection of h. (config, recurrence, N, T)
fn kernel_cases(mode: RnnMode) -> Vec<(RnnConfig, Recurrence, usize, usize)> {
    let new = |i, h| RnnConfig::new(mode, i, h);
    match mode {
        RnnMode::Rnn(_) => vec![
            (new(5, 64), Recurrence::Auto, 3, 12),
            (new(8, 64), Recurrence::Auto, 3, 12),
            (new(128, 128), Recurrence::Auto, 1, 200),
            (
                RnnConfig {
                    bidirectional: true,
                    ..new(3, 17)
                },
                Recurrence::Auto,
                2,
                12,
            ),
            (new(4, 64), Recurrence::PerStep, 1, 12),
            (new(4, 20), Recurrence::PerStep, 8, 12),
            (
                RnnConfig {
                    num_layers: 2,
                    bias: false,
                    ..new(4, 32)
                },
                Recurrence::PerStep,
                4,
                12,
            ),
        ],
        RnnMode::Lstm | RnnMode::Gru => {
            let mut cases = vec![
                (new(3, 16), Recurrence::Auto, 5, 10),
                (new(3, 40), Recurrence::Auto, 5, 10),
                (new(3, 100), Recurrence::Auto, 2, 10),
                (new(3, 17), Recurrence::PerStep, 5, 10),
                (new(3, 32), Recurrence::PerStep, 5, 10),
                (new(3, 64), Recurrence::PerStep, 12, 10),
            ];
            if mode == RnnMode::Lstm {
                let projected = RnnConfig {
                    proj_size: 5,
                    bidirectional: true,
                    ..new(3, 12)
                };
                cases.push((projected, Recurrence::Auto, 5, 10));
            }
            cases
        }
    }
}

/// The weights as the GPU stores them in f16: W_ih, W_hh, W_hr and a GRU's b_hn (which sits
/// beside W_hh) rounded; every other bias stays f32.
fn rounded(config: &RnnConfig, weights: &RnnWeights) -> RnnWeights {
    let h = config.hidden_size;
    let units = weights
        .units()
        .iter()
        .map(|u| DirectionWeights {
            weight_ih: round(&u.weight_ih),
            weight_hh: round(&u.weight_hh),
            weight_hr: u.weight_hr.as_ref().map(|w| round(w)),
            bias_hh: u.bias_hh.as_ref().map(|b| match config.mode {
                RnnMode::Gru => [&b[..2 * h], &round(&b[2 * h..])].concat(),
                _ => b.clone(),
            }),
            ..u.clone()
        })
        .collect();
    RnnWeights::new(config, units).unwrap()
}

fn kernels_read_f16(mode: RnnMode) {
    let name = format!("kernels_read_f16_weights::{}", mode_name(mode));
    let Some(ctx) = f16_context(&name, mode) else {
        return;
    };
    let mut worst_vs_f32 = 0.0f64;
    for (config, recurrence, batch, steps) in kernel_cases(mode) {
        let weights = RnnWeights::init(&config, 3).unwrap();
        let options = GpuOptions::recurrence(recurrence).with_weights(WeightPrecision::F16);
        let gpu = GpuRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
        let input = Tensor::new(
            values(4, steps * batch * config.input_size),
            &[steps, batch, config.input_size],
        )
        .unwrap();
        let got = gpu.forward(&input, None).unwrap();
        let want = CpuRnn::new(config.clone(), &rounded(&config, &weights))
            .unwrap()
            .forward(&input, None)
            .unwrap();
        let ahead = gpu.layers_projecting_ahead(steps, batch).unwrap();
        let fused = gpu.layers_fusing_input(steps, batch).unwrap();
        let what = format!("{config:?} {recurrence:?} N={batch} T={steps}");
        println!("{what}: {ahead} layer(s) projecting ahead, {fused} fusing the input");
        let vs_rounded = check(&what, got.output.data(), want.output.data(), TOLERANCE);
        check(&what, got.h_n.data(), want.h_n.data(), TOLERANCE);
        assert_eq!(got.c_n.is_some(), want.c_n.is_some(), "{what}");
        if let (Some(g), Some(w)) = (&got.c_n, &want.c_n) {
            check(&what, g.data(), w.data(), TOLERANCE);
        }
        // Against the f32 weights the rounding shows, within the stated tolerance.
        let exact = CpuRnn::new(config.clone(), &weights)
            .unwrap()
            .forward(&input, None)
            .unwrap();
        let vs_f32 = check(&what, got.output.data(), exact.output.data(), F16_VS_F32);
        assert_stored_as_f16(&what, vs_rounded, vs_f32);
        worst_vs_f32 = worst_vs_f32.max(vs_f32);
    }
    println!("{mode:?}, f16 weights against the f32 model: worst {worst_vs_f32:.2e}");
}
for_each_mode!(kernels_read_f16_weights, kernels_read_f16);
