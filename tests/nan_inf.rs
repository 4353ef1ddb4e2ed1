//! NaN and ±Inf in inputs, h0, c0 and weights propagate exactly as PyTorch propagates them,
//! in every mode: tanh(±inf) = ±1, sigmoid(±inf) = 1 or 0, tanh(NaN) = sigmoid(NaN) = NaN,
//! relu(NaN) = NaN, relu(−inf) = 0, inf · 0 = NaN, and a NaN anywhere in a unit's dot product
//! makes that unit NaN. Every case runs on the GPU and the CPU reference, compared element by
//! element (`compare` counts NaN = NaN and equal infinities as equal); most are also checked
//! against values or NaN patterns worked out by hand from PyTorch's documented equations:
//! `h' = act(W_ih x + b_ih + W_hh h + b_hh)`; for an LSTM `c' = f ⊙ c + i ⊙ g`,
//! `h' = o ⊙ tanh(c')`; for a GRU `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`,
//! `h' = (1 − z) ⊙ n + z ⊙ h`.

mod support;

use support::{Rng, State, TOLERANCE, check_output, input_shape, mode_name, random_state};
use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, DirectionWeights, GpuContext, GpuRnn, Hx, Nonlinearity, Rnn, RnnConfig, RnnMode,
    RnnOutput, RnnWeights, StreamOptions, Tensor, testing,
};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// One model on both paths.
struct Both {
    cpu: CpuRnn,
    gpu: GpuRnn,
}

impl Both {
    fn new(ctx: &GpuContext, config: RnnConfig, weights: &RnnWeights) -> Self {
        Both {
            cpu: CpuRnn::new(config.clone(), weights).unwrap(),
            gpu: GpuRnn::new(ctx, config, weights).unwrap(),
        }
    }

    fn random(ctx: &GpuContext, config: RnnConfig, seed: u64) -> Self {
        let weights = RnnWeights::init(&config, seed).unwrap();
        Self::new(ctx, config, &weights)
    }

    /// One (layer, direction) model from its unit.
    fn unit(ctx: &GpuContext, config: &RnnConfig, unit: DirectionWeights) -> Self {
        Self::new(
            ctx,
            config.clone(),
            &RnnWeights::new(config, vec![unit]).unwrap(),
        )
    }

    /// Runs both paths; fails unless they agree element by element (NaN where NaN, the same
    /// infinities, finite values within the usual tolerance). Returns the GPU's result.
    fn run(&self, input: &Tensor, hx: Option<Hx<'_>>, lengths: Option<&[usize]>) -> RnnOutput {
        let go = |m: &dyn Rnn| match lengths {
            Some(l) => m.forward_with_lengths(input, l, hx),
            None => m.forward(input, hx),
        };
        let want = go(&self.cpu).unwrap();
        let got = go(&self.gpu).unwrap();
        if let Err(e) = check_output(&got, &want) {
            panic!(
                "GPU and CPU disagree: {e}\n GPU output {:?}\n CPU output {:?}\n GPU h_n {:?}\n \
                 CPU h_n {:?}\n GPU c_n {:?}\n CPU c_n {:?}",
                got.output.data(),
                want.output.data(),
                got.h_n.data(),
                want.h_n.data(),
                got.c_n,
                want.c_n,
            );
        }
        got
    }
}

/// A one-direction unit from row-major parts; `bias` is (b_ih, b_hh).
fn unit(weight_ih: &[f32], weight_hh: &[f32], bias: Option<(&[f32], &[f32])>) -> DirectionWeights {
    DirectionWeights {
        weight_ih: weight_ih.to_vec(),
        weight_hh: weight_hh.to_vec(),
        bias_ih: bias.map(|b| b.0.to_vec()),
        bias_hh: bias.map(|b| b.1.to_vec()),
        weight_hr: None,
    }
}

/// `rows` (one gate's H rows of W_ih) stacked once per gate: every gate of unit j sees the
/// same pre-activation.
fn every_gate(mode: RnnMode, rows: &[f32]) -> Vec<f32> {
    rows.repeat(mode.gates())
}

/// `got` equals `want` element by element: NaN where NaN, the same infinities, finite values
/// within 1e-6 (these are single tanh, sigmoid or relu evaluations).
fn assert_values(what: &str, got: &[f32], want: &[f32]) {
    let c = compare(got, want, 1e-6);
    assert!(c.passed(), "{what}: {c}\n got  {got:?}\n want {want:?}");
}

/// Which elements are NaN.
fn nan_mask(values: &[f32]) -> Vec<bool> {
    values.iter().map(|v| v.is_nan()).collect()
}

fn t(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::new(values.to_vec(), shape).unwrap()
}

/// `mode`'s (2 → 3) model without recurrence (W_hh = 0, no bias): every gate of unit 0 sees
/// +x₀, of unit 1 −x₀, of unit 2 x₁. A step's pre-activations are then exactly [x₀, −x₀, x₁]
/// plus W_hh·h = 0·h, which is NaN when h holds a NaN or an infinity (0 · inf = NaN).
fn probe(ctx: &GpuContext, mode: RnnMode) -> Both {
    let config = RnnConfig {
        bias: false,
        ..RnnConfig::new(mode, 2, 3)
    };
    let w_ih = every_gate(mode, &[1.0, 0.0, -1.0, 0.0, 0.0, 1.0]);
    let w = unit(&w_ih, &vec![0.0; config.gate_size() * 3], None);
    Both::unit(ctx, &config, w)
}

/// Input (T = 2, N = 6, I = 2): step 0 is hostile, step 1 is the ordinary [0.5, 0.25].
fn probe_input() -> Tensor {
    let step0 = [
        [INF, 0.0],   // n = 0
        [-INF, 0.0],  // n = 1
        [0.0, NAN],   // n = 2
        [1.0, -INF],  // n = 3
        [-1e30, 0.0], // n = 4: saturates, but stays finite
        [1.0, 0.0],   // n = 5
    ];
    let mut data: Vec<f32> = step0.iter().flatten().copied().collect();
    for _ in 0..6 {
        data.extend_from_slice(&[0.5, 0.25]);
    }
    t(&data, &[2, 6, 2])
}

/// Step 1 of the probe: sequences 0–3 carry a NaN or an infinity in h, and 0·h poisons every
/// unit; 4 and 5 carry finite states (±1 included), and 0·h = 0.
fn probe_step1(act: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut step1 = vec![NAN; 4 * 3];
    for _ in 0..2 {
        step1.extend_from_slice(&[act(0.5), act(-0.5), act(0.25)]);
    }
    step1
}

#[test]
fn tanh_of_inf_and_nan_by_hand() {
    let Some(ctx) = testing::gpu("tanh_of_inf_and_nan_by_hand") else {
        return;
    };
    let out = probe(&ctx, RnnMode::Rnn(Nonlinearity::Tanh)).run(&probe_input(), None, None);
    let th = |x: f32| x.tanh();
    #[rustfmt::skip]
    let step0 = [
        1.0, -1.0, NAN,          // tanh(inf), tanh(-inf), tanh(inf·0 = NaN)
        -1.0, 1.0, NAN,          // tanh(-inf), tanh(inf), tanh(-inf·0)
        NAN, NAN, NAN,           // NaN·w is NaN for every w, 0 included
        NAN, NAN, -1.0,          // -inf·0 = NaN in units 0 and 1, tanh(-inf) in unit 2
        -1.0, 1.0, 0.0,          // tanh(∓1e30) = ∓1
        th(1.0), th(-1.0), 0.0,
    ];
    assert_values("step 0", &out.output.data()[..18], &step0);
    assert_values("step 1", &out.output.data()[18..], &probe_step1(th));
    assert_values("h_n", out.h_n.data(), &probe_step1(th));
}

#[test]
fn relu_of_inf_and_nan_by_hand() {
    let Some(ctx) = testing::gpu("relu_of_inf_and_nan_by_hand") else {
        return;
    };
    let out = probe(&ctx, RnnMode::Rnn(Nonlinearity::Relu)).run(&probe_input(), None, None);
    let relu = |x: f32| x.max(0.0);
    #[rustfmt::skip]
    let step0 = [
        INF, 0.0, NAN,           // relu(inf), relu(-inf) = 0, relu(NaN) = NaN
        0.0, INF, NAN,
        NAN, NAN, NAN,
        NAN, NAN, 0.0,           // relu(-inf) = 0 in unit 2
        0.0, 1e30, 0.0,
        1.0, 0.0, 0.0,
    ];
    assert_values("step 0", &out.output.data()[..18], &step0);
    assert_values("step 1", &out.output.data()[18..], &probe_step1(relu));
    assert_values("h_n", out.h_n.data(), &probe_step1(relu));
}

/// The probe through every mode: NaN exactly where a NaN or inf · 0 meets a unit's dot product
/// (step 0), then everywhere the state carried a NaN or an infinity (step 1). In an LSTM or
/// GRU an infinite pre-activation only saturates sigmoid and tanh gates, so every other value
/// is finite; an Elman relu passes +inf on (the by-hand tests above).
fn probe_nan_pattern(mode: RnnMode) {
    let Some(ctx) = testing::gpu("probe_nan_pattern") else {
        return;
    };
    let out = probe(&ctx, mode).run(&probe_input(), None, None);
    #[rustfmt::skip]
    let step0 = [
        false, false, true,
        false, false, true,
        true, true, true,
        true, true, false,
        false, false, false,
        false, false, false,
    ];
    let step1: Vec<bool> = (0..6).flat_map(|n| [n < 4; 3]).collect();
    let what = mode_name(mode);
    assert_eq!(nan_mask(&out.output.data()[..18]), step0, "{what}: step 0");
    assert_eq!(nan_mask(&out.output.data()[18..]), step1, "{what}: step 1");
    assert_eq!(nan_mask(out.h_n.data()), step1, "{what}: h_n");
    if let Some(c_n) = &out.c_n {
        assert_eq!(nan_mask(c_n.data()), step1, "{what}: c_n");
    }
    if mode != RnnMode::Rnn(Nonlinearity::Relu) {
        let finite = |v: &f32| v.is_nan() || v.is_finite();
        assert!(
            out.output.data().iter().all(finite),
            "{what}: {:?}",
            out.output
        );
        assert!(
            out.c_n.iter().all(|c| c.data().iter().all(finite)),
            "{what}"
        );
    }
}
for_each_mode!(probe_nan, probe_nan_pattern);

/// Pre-activations beyond f32's range: the GPU sums in f32 and overflows to inf, the CPU sums
/// in f64 and rounds to inf: both then agree with PyTorch's f32. Unit 0's every gate sees
/// +inf, unit 1's −inf, from h0 = c0 = 0 without bias:
/// - RNN: tanh → [1, −1], relu → [inf, 0];
/// - LSTM: unit 0 has i = f = o = 1, g = 1, so c' = 1 and h' = tanh(1); unit 1 has
///   i = f = o = 0, g = −1, so c' = 0 and h' = 0;
/// - GRU: unit 0 has r = z = 1, n = tanh(inf) = 1, so h' = 0·1 + 1·0 = 0; unit 1 has
///   r = z = 0, n = tanh(−inf + 0·0) = −1, so h' = −1.
fn overflow_to_inf_by_hand(mode: RnnMode) {
    let Some(ctx) = testing::gpu("overflow_to_inf_by_hand") else {
        return;
    };
    let (h, c): ([f32; 2], Option<[f32; 2]>) = match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => ([1.0, -1.0], None),
        RnnMode::Rnn(Nonlinearity::Relu) => ([INF, 0.0], None),
        RnnMode::Lstm => ([1f32.tanh(), 0.0], Some([1.0, 0.0])),
        RnnMode::Gru => ([0.0, -1.0], None),
    };
    let config = RnnConfig {
        bias: false,
        ..RnnConfig::new(mode, 2, 2)
    };
    let w_ih = every_gate(mode, &[1.0, 1.0, -1.0, -1.0]);
    let w = unit(&w_ih, &vec![0.0; config.gate_size() * 2], None);
    let out = Both::unit(&ctx, &config, w).run(&t(&[3e38, 3e38], &[1, 2]), None, None);
    let what = mode_name(mode);
    assert_values(what, out.output.data(), &h);
    if let Some(c) = c {
        assert_values(&format!("{what} c_n"), out.c_n.unwrap().data(), &c);
    }
}
for_each_mode!(overflow, overflow_to_inf_by_hand);

/// One NaN input value poisons its own sequence from its frame on (forward direction) or up
/// to it (reverse direction), and nothing else: output, h_n and (LSTM) c_n. An LSTM with a
/// projection too: the NaN reaches every projected feature of its sequence.
fn a_nan_input_poisons_only_its_sequence_and_direction(mode: RnnMode) {
    let Some(ctx) = testing::gpu("a_nan_input_poisons_only_its_sequence_and_direction") else {
        return;
    };
    let (steps, batch, hidden, nan_t, nan_n) = (6, 3, 5, 2, 1);
    let projections: &[usize] = if mode == RnnMode::Lstm { &[0, 2] } else { &[0] };
    for &proj_size in projections {
        for bidirectional in [false, true] {
            let config = RnnConfig {
                bidirectional,
                proj_size,
                ..RnnConfig::new(mode, 3, hidden)
            };
            let what = format!("{}, {config:?}", mode_name(mode));
            let both = Both::random(&ctx, config.clone(), 7);
            let mut x = Rng(1).values(steps * batch * 3);
            x[(nan_t * batch + nan_n) * 3] = NAN;
            let out = both.run(&t(&x, &[steps, batch, 3]), None, None);

            let (features, state) = (config.output_size(), config.state_size());
            let mut want = Vec::new();
            for s in 0..steps {
                for n in 0..batch {
                    for f in 0..features {
                        let reverse = f >= state;
                        let poisoned = if reverse { s <= nan_t } else { s >= nan_t };
                        want.push(n == nan_n && poisoned);
                    }
                }
            }
            assert_eq!(nan_mask(out.output.data()), want, "{what}");
            // h_n: the forward direction ends after the NaN, the reverse direction ends at
            // t = 0, which is after it in its own order (it starts at T-1): poisoned too.
            let final_mask = |width: usize| -> Vec<bool> {
                (0..config.num_directions())
                    .flat_map(|_| (0..batch).flat_map(|n| std::iter::repeat_n(n == nan_n, width)))
                    .collect()
            };
            assert_eq!(nan_mask(out.h_n.data()), final_mask(state), "{what}: h_n");
            if let Some(c_n) = &out.c_n {
                assert_eq!(nan_mask(c_n.data()), final_mask(hidden), "{what}: c_n");
            }
        }
    }
}
for_each_mode!(
    nan_input,
    a_nan_input_poisons_only_its_sequence_and_direction
);

/// NaN in one layer's h0 (or an LSTM's c0) poisons that layer and the ones above it, for that
/// sequence only. +inf in h0 saturates the first step: an Elman tanh's outputs are the signs
/// of W_hh's column (by hand), an LSTM's gates go to 0 or 1 and g to ±1 (so with c0 = 0 all
/// stays finite); relu and the GRU (whose `r ⊙ (W_hn h)` can be 0 · inf) are checked against
/// the CPU reference alone.
fn nan_and_inf_in_h0(mode: RnnMode) {
    let Some(ctx) = testing::gpu("nan_and_inf_in_h0") else {
        return;
    };
    let what = mode_name(mode);
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 2, 4)
    };
    let weights = RnnWeights::init(&config, 3).unwrap();
    let both = Both::new(&ctx, config.clone(), &weights);
    let input = Rng(2).tensor(&[3, 2, 2]);
    let lstm = mode == RnnMode::Lstm;
    let zeros_c0 = Tensor::zeros(&[2, 2, 4]).unwrap();
    let with_c0 = |h0: &Tensor, c0: &Tensor| -> RnnOutput {
        let hx = Hx {
            h0,
            c0: lstm.then_some(c0),
        };
        both.run(&input, Some(hx), None)
    };

    // Layer 0 of sequence 0, and layer 1 of sequence 1.
    let mut h0 = vec![0.1; 2 * 2 * 4];
    h0[2] = NAN; // [layer 0][n 0][unit 2]
    h0[(2 + 1) * 4 + 1] = NAN; // [layer 1][n 1][unit 1]
    let out = with_c0(&t(&h0, &[2, 2, 4]), &zeros_c0);
    // The output is layer 1's: NaN for both sequences (n 0 through layer 0, n 1 directly).
    assert!(out.output.data().iter().all(|v| v.is_nan()), "{what}");
    #[rustfmt::skip]
    let poisoned: Vec<bool> = [
        [true, false],  // layer 0: only n 0
        [true, true],   // layer 1: n 0 from below, n 1 from its own h0
    ].iter().flatten().flat_map(|&nan| [nan; 4]).collect();
    assert_eq!(nan_mask(out.h_n.data()), poisoned, "{what}: h_n");
    if let Some(c_n) = &out.c_n {
        assert_eq!(nan_mask(c_n.data()), poisoned, "{what}: c_n");
    }

    if lstm {
        // NaN in c0 alone (layer 1, sequence 0, unit 3): c' = f ⊙ c + i ⊙ g is element-wise,
        // so the first step poisons unit 3 alone (h' = o ⊙ tanh(c')); from the second step on
        // W_hh carries it to every unit.
        let mut c0 = vec![0.1; 2 * 2 * 4];
        c0[2 * 4 + 3] = NAN; // [layer 1][n 0][unit 3]
        let out = with_c0(&Tensor::zeros(&[2, 2, 4]).unwrap(), &t(&c0, &[2, 2, 4]));
        let mut seq0: Vec<bool> = [[false, false, false, true], [false; 4]].concat();
        for _ in 1..3 {
            seq0.extend([[true; 4], [false; 4]].concat());
        }
        assert_eq!(
            nan_mask(out.output.data()),
            seq0,
            "{what}: NaN in c0, output"
        );
        #[rustfmt::skip]
        let poisoned: Vec<bool> = [[false, false], [true, false]]
            .iter().flatten().flat_map(|&nan| [nan; 4]).collect();
        assert_eq!(nan_mask(out.h_n.data()), poisoned, "{what}: NaN in c0, h_n");
        assert_eq!(nan_mask(out.c_n.unwrap().data()), poisoned, "{what}: c_n");
    }

    // +inf in unit 1 of layer 0's h0 for sequence 0: the first step's pre-activations are
    // ±inf.
    let mut h0 = vec![0.0; 2 * 2 * 4];
    h0[1] = INF;
    let out = with_c0(&t(&h0, &[2, 2, 4]), &zeros_c0);
    match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => {
            // Layer 0 alone, on both paths, shows the first step by hand: its outputs are the
            // signs of W_hh's column 1; later steps are finite.
            let one = RnnConfig::new(mode, 2, 4);
            let w = weights.get(0, 0, &config).expect("layer 0").clone();
            let layer0 = Both::unit(&ctx, &one, w.clone()).run(
                &input,
                Some(Hx::h0(&t(&h0[..8], &[1, 2, 4]))),
                None,
            );
            let signs: Vec<f32> = (0..4).map(|j| w.weight_hh[j * 4 + 1].signum()).collect();
            assert_values("layer 0, step 0, n 0", &layer0.output.data()[..4], &signs);
            assert!(out.output.data().iter().all(|v| v.is_finite()));
        }
        RnnMode::Lstm => {
            assert!(out.output.data().iter().all(|v| v.is_finite()), "{what}");
            assert!(
                out.c_n.unwrap().data().iter().all(|v| v.is_finite()),
                "{what}"
            );
        }
        // Agreement with the CPU reference (checked by `run`) is the expectation.
        _ => {}
    }
}
for_each_mode!(nan_inf_h0, nan_and_inf_in_h0);

/// A weight edit, and the expected output at (step, unit): `None` finite, else that value.
type WeightCase = (
    &'static str,
    fn(&mut DirectionWeights),
    fn(usize, usize) -> Option<f32>,
);

/// A NaN or infinity in the weights, by hand (rows 0–3 are the first gate's: i for an LSTM,
/// r for a GRU): a NaN in W_ih row j or in bias j poisons unit j at the first step and every
/// unit after (through W_hh); inf in W_hh meets h0 = 0 and makes NaN at once (inf · 0); −inf
/// in W_ih saturates its unit: tanh to −1, relu to 0; in a gated cell it closes the input
/// gate (i = 0) or the reset gate (r = 0, so `r ⊙ (W_hn h + b_hn)` is 0) and all stays finite.
fn nan_and_inf_in_weights(mode: RnnMode) {
    let Some(ctx) = testing::gpu("nan_and_inf_in_weights") else {
        return;
    };
    let config = RnnConfig::new(mode, 3, 4);
    let base = RnnWeights::init(&config, 5).unwrap().units()[0].clone();
    // Strictly positive inputs, so that −inf · x is −inf and never NaN.
    let input = t(
        &Rng(4)
            .values(3 * 2 * 3)
            .iter()
            .map(|v| v.abs() + 0.1)
            .collect::<Vec<_>>(),
        &[3, 2, 3],
    );
    let saturated: fn(usize, usize) -> Option<f32> = match mode {
        RnnMode::Rnn(Nonlinearity::Tanh) => |_, j| (j == 3).then_some(-1.0),
        RnnMode::Rnn(Nonlinearity::Relu) => |_, j| (j == 3).then_some(0.0),
        RnnMode::Lstm | RnnMode::Gru => |_, _| None,
    };
    let cases: [WeightCase; 4] = [
        (
            "NaN in W_ih[1][0]",
            |w| w.weight_ih[3] = NAN,
            |step, j| (step > 0 || j == 1).then_some(NAN),
        ),
        (
            "NaN in b_hh[2]",
            |w| w.bias_hh.as_mut().unwrap()[2] = NAN,
            |step, j| (step > 0 || j == 2).then_some(NAN),
        ),
        (
            "inf in W_hh[0][1] (h0 = 0)",
            |w| w.weight_hh[1] = INF,
            |step, j| (step > 0 || j == 0).then_some(NAN),
        ),
        ("-inf in W_ih[3][0]", |w| w.weight_ih[9] = -INF, saturated),
    ];
    for (name, edit, expect) in cases {
        let name = format!("{}: {name}", mode_name(mode));
        let mut w = base.clone();
        edit(&mut w);
        let out = Both::unit(&ctx, &config, w).run(&input, None, None);
        for (k, &v) in out.output.data().iter().enumerate() {
            let (step, j) = (k / 8, k % 4);
            match expect(step, j) {
                Some(e) if e.is_nan() => assert!(v.is_nan(), "{name}: [{step}, {j}] = {v}"),
                Some(e) => assert_eq!(v, e, "{name}: [{step}, {j}]"),
                None => assert!(v.is_finite(), "{name}: [{step}, {j}] = {v}"),
            }
        }
    }
}
for_each_mode!(nan_inf_weights, nan_and_inf_in_weights);

/// Frames past a sequence's length are padding that PyTorch never reads: NaN and inf there
/// must not reach any output, h_n or c_n, in either direction, and padded outputs stay 0.
fn nan_in_padding_never_leaks(mode: RnnMode) {
    let Some(ctx) = testing::gpu("nan_in_padding_never_leaks") else {
        return;
    };
    let (steps, batch) = (7, 4);
    let lengths = [7, 3, 1, 5];
    for (bidirectional, batch_first) in [(false, false), (true, false), (true, true)] {
        let config = RnnConfig {
            num_layers: 2,
            bidirectional,
            batch_first,
            ..RnnConfig::new(mode, 3, 6)
        };
        let both = Both::random(&ctx, config.clone(), 8);
        let mut rng = Rng(9);
        let (t_stride, n_stride) = if batch_first {
            (3, steps * 3)
        } else {
            (batch * 3, 3)
        };
        let mut x = rng.values(steps * batch * 3);
        for (n, &len) in lengths.iter().enumerate() {
            for s in len..steps {
                let at = s * t_stride + n * n_stride;
                x[at..at + 3].copy_from_slice(&[NAN, INF, -INF]);
            }
        }
        let input = t(&x, &input_shape(&config, steps, batch));
        let state = random_state(&mut rng, &config, batch);
        let out = both.run(&input, Some(state.hx()), Some(&lengths[..]));
        let what = format!(
            "{}, bidirectional = {bidirectional}, batch_first = {batch_first}",
            mode_name(mode)
        );
        assert!(
            out.output.data().iter().all(|v| v.is_finite()),
            "{what}: output"
        );
        assert!(out.h_n.data().iter().all(|v| v.is_finite()), "{what}: h_n");
        assert!(
            out.c_n
                .iter()
                .all(|c| c.data().iter().all(|v| v.is_finite())),
            "{what}: c_n"
        );
        let features = config.output_size();
        let (ot, on) = if batch_first {
            (features, steps * features)
        } else {
            (batch * features, features)
        };
        for (n, &len) in lengths.iter().enumerate() {
            for s in len..steps {
                let at = s * ot + n * on;
                assert!(
                    out.output.data()[at..at + features]
                        .iter()
                        .all(|&v| v == 0.0),
                    "{what}: padded output (t {s}, n {n}) is not zero"
                );
            }
        }
    }
}
for_each_mode!(nan_padding, nan_in_padding_never_leaks);

/// NaN is the result of one call, not a state of the model: a clean call after a poisoned
/// one (same shape, so the same cached workspace, lengths and ping-pong buffers) is clean,
/// and a stream is clean again after `reset` / `reset_to`. Within one call, NaN survives the
/// chunk boundaries of a time-chunked forward, as it must.
fn nan_does_not_outlive_its_call_but_survives_chunks(mode: RnnMode) {
    let Some(ctx) = testing::gpu("nan_does_not_outlive_its_call_but_survives_chunks") else {
        return;
    };
    let what = mode_name(mode);
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 3, 6)
    };
    let both = Both::random(&ctx, config.clone(), 10);
    let mut rng = Rng(11);
    let clean = rng.tensor(&[9, 2, 3]);
    let mut poisoned = clean.clone().into_data();
    poisoned[3 * 2 * 3] = NAN; // t = 3, n = 0
    let poisoned = t(&poisoned, &[9, 2, 3]);
    let state: State = random_state(&mut rng, &config, 2);

    for round in 0..2 {
        let bad = both.run(&poisoned, Some(state.hx()), Some(&[9, 9][..]));
        assert!(bad.output.data().iter().any(|v| v.is_nan()));
        let good = both.run(&clean, None, None);
        assert!(
            good.output.data().iter().all(|v| v.is_finite()),
            "{what}, round {round}"
        );
        let good = both.run(&clean, Some(state.hx()), Some(&[9, 4][..]));
        assert!(
            good.output.data().iter().all(|v| v.is_finite()),
            "{what}, round {round}"
        );
    }

    // Chunks of a frame or two: the NaN enters at t = 3 and must be carried into the later
    // chunks. The smallest budget that runs at all gives them (a gated cell's frames are
    // larger, so its budget is too).
    let chunk = (1..200)
        .map(|k| k * 50)
        .find_map(|budget| {
            both.gpu.set_workspace_budget(Some(budget));
            both.gpu.time_chunk(9, 2).ok()
        })
        .expect("some budget under 10 KB runs (9, 2)");
    assert!(
        (1..=2).contains(&chunk),
        "{what}: the smallest budget should make chunks of 1 or 2 frames, not {chunk}"
    );
    let chunked = both.run(&poisoned, Some(state.hx()), None);
    both.gpu.set_workspace_budget(None);
    let frame = 2 * 6;
    for s in 0..9 {
        let nan = chunked.output.data()[s * frame..s * frame + 6]
            .iter()
            .all(|v| v.is_nan());
        assert_eq!(nan, s >= 3, "{what}, chunk {chunk}: sequence 0, t {s}");
    }

    // Streams: NaN in, reset, clean in: the same as a fresh CPU forward.
    let mut stream = both
        .gpu
        .stream(StreamOptions { batch: 2, delay: 0 })
        .unwrap();
    stream.push(&poisoned).unwrap();
    assert!(stream.state().unwrap().data().iter().any(|v| v.is_nan()));
    if let Some(c) = stream.cell_state().unwrap() {
        assert!(c.data().iter().any(|v| v.is_nan()), "{what}: cell state");
    }
    for reset_to_state in [false, true] {
        if reset_to_state {
            stream.reset_to(state.hx()).unwrap();
        } else {
            stream.reset();
        }
        let got = stream.push(&clean).unwrap();
        let want = both
            .cpu
            .forward(&clean, reset_to_state.then(|| state.hx()))
            .unwrap();
        let c = compare(got.data(), want.output.data(), TOLERANCE);
        assert!(
            c.passed(),
            "{what}, after reset (to a state: {reset_to_state}): {c}"
        );
        if let (Some(got), Some(want)) = (stream.cell_state().unwrap(), &want.c_n) {
            let c = compare(got.data(), want.data(), TOLERANCE);
            assert!(c.passed(), "{what}, cell state after reset: {c}");
        }
        stream.push(&poisoned).unwrap();
    }
}
for_each_mode!(
    nan_lifetime,
    nan_does_not_outlive_its_call_but_survives_chunks
);
