//! The GPU path against the CPU reference: random configurations (proptest), a pinned table of
//! edge cases, and workspace reuse across calls.

use proptest::prelude::*;
use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Linear, Nonlinearity, Recurrence, Rnn, RnnConfig,
    RnnWeights, Tensor, testing,
};

const TOLERANCE: f64 = 1e-4;

/// Deterministic pseudo-random values in [-2, 2).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Problem {
    config: RnnConfig,
    seq_len: usize,
    batch: usize,
    unbatched: bool,
    with_h0: bool,
    seed: u64,
    recurrence: Recurrence,
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

    fn h0(&self) -> Option<Tensor> {
        let rows = self.config.num_layers * self.config.num_directions();
        let h = self.config.hidden_size;
        let shape = if self.unbatched {
            vec![rows, h]
        } else {
            vec![rows, self.batch, h]
        };
        self.with_h0
            .then(|| Tensor::new(values(self.seed + 1, rows * self.batch * h), &shape).unwrap())
    }

    /// Runs both paths and returns the worst error of output and h_n.
    fn check(&self, ctx: &GpuContext) -> Result<(), String> {
        let weights = RnnWeights::init(&self.config, self.seed).unwrap();
        let cpu = CpuRnn::new(self.config.clone(), weights.clone()).unwrap();
        let options = GpuOptions::recurrence(self.recurrence);
        let gpu = GpuRnn::with_options(ctx, self.config.clone(), &weights, options).unwrap();
        let (input, h0) = (self.input(), self.h0());
        let want = cpu.forward(&input, h0.as_ref()).unwrap();
        let got = gpu.forward(&input, h0.as_ref()).unwrap();
        assert_eq!(got.output.shape(), want.output.shape());
        assert_eq!(got.h_n.shape(), want.h_n.shape());
        let output = compare(got.output.data(), want.output.data(), TOLERANCE);
        let h_n = compare(got.h_n.data(), want.h_n.data(), TOLERANCE);
        if output.passed() && h_n.passed() {
            Ok(())
        } else {
            Err(format!("{self:?}: output {output}; h_n {h_n}"))
        }
    }
}

/// Random problems; hidden sizes from `hidden`.
fn problems(
    hidden: impl Strategy<Value = usize>,
    recurrence: Recurrence,
) -> impl Strategy<Value = Problem> {
    (
        (1usize..=300, hidden, 1usize..=3),
        (1usize..=64, 1usize..=9),
        any::<(bool, bool, bool, bool, bool, bool)>(),
        any::<u64>(),
    )
        .prop_map(
            move |((input_size, hidden_size, num_layers), (seq_len, batch), flags, seed)| {
                let (relu, bias, batch_first, bidirectional, unbatched, with_h0) = flags;
                Problem {
                    config: RnnConfig {
                        num_layers,
                        nonlinearity: if relu {
                            Nonlinearity::Relu
                        } else {
                            Nonlinearity::Tanh
                        },
                        bias,
                        batch_first,
                        bidirectional,
                        ..RnnConfig::new(input_size, hidden_size)
                    },
                    seq_len,
                    batch: if unbatched { 1 } else { batch },
                    unbatched,
                    with_h0,
                    seed,
                    recurrence,
                }
            },
        )
}

fn run_random(ctx: &GpuContext, cases: u32, strategy: impl Strategy<Value = Problem>) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |problem| {
            problem.check(ctx).map_err(TestCaseError::fail)
        })
        .unwrap();
}

#[test]
fn random_configurations_match_cpu_per_step() {
    let Some(ctx) = testing::gpu("random_configurations_match_cpu_per_step") else {
        return;
    };
    run_random(&ctx, 64, problems(1usize..=300, Recurrence::PerStep));
}

/// The persistent kernel is generated per hidden size and its first dispatch compiles it
/// (seconds on llvmpipe for wide states), so its random problems draw from a set of sizes,
/// odd ones included, instead of any size.
#[test]
fn random_configurations_match_cpu_persistent() {
    let Some(ctx) = testing::gpu("random_configurations_match_cpu_persistent") else {
        return;
    };
    let sizes = prop::sample::select(vec![1usize, 3, 8, 17, 64, 100, 257]);
    run_random(&ctx, 48, problems(sizes, Recurrence::Persistent));
}

#[test]
fn persistent_kernel_crosses_dispatch_boundaries() {
    let Some(ctx) = testing::gpu("persistent_kernel_crosses_dispatch_boundaries") else {
        return;
    };
    // One persistent dispatch runs at most 8192 steps: 9000 takes two, the second starting
    // from the state the first left behind, in both directions.
    let problem = Problem {
        config: RnnConfig {
            bidirectional: true,
            ..RnnConfig::new(3, 17)
        },
        seq_len: 9000,
        batch: 2,
        unbatched: false,
        with_h0: true,
        seed: 5,
        recurrence: Recurrence::Persistent,
    };
    problem.check(&ctx).unwrap();
}

#[test]
fn edge_cases_match_cpu() {
    let Some(ctx) = testing::gpu("edge_cases_match_cpu") else {
        return;
    };
    let mut failures = Vec::new();
    for (k, &(input_size, hidden_size, seq_len, batch)) in [
        (1, 1, 1, 1),
        (3, 17, 1, 9),
        (17, 3, 33, 1),
        (257, 1, 5, 2),
        (1, 257, 4, 3),
        (64, 64, 16, 4),
        (257, 257, 3, 2),
    ]
    .iter()
    .enumerate()
    {
        for bidirectional in [false, true] {
            let problem = Problem {
                config: RnnConfig {
                    num_layers: 1 + k % 3,
                    bidirectional,
                    ..RnnConfig::new(input_size, hidden_size)
                },
                seq_len,
                batch,
                unbatched: false,
                with_h0: k % 2 == 0,
                seed: k as u64,
                recurrence: Recurrence::Auto,
            };
            if let Err(e) = problem.check(&ctx) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn workspaces_are_reused_without_stale_state() {
    let Some(ctx) = testing::gpu("workspaces_are_reused_without_stale_state") else {
        return;
    };
    let config = RnnConfig {
        num_layers: 2,
        bidirectional: true,
        ..RnnConfig::new(5, 19)
    };
    let weights = RnnWeights::init(&config, 3).unwrap();
    let cpu = CpuRnn::new(config.clone(), weights.clone()).unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights).unwrap();
    // Shapes revisit earlier ones (cache hits), and calls with h0 are followed by calls
    // without, which must start from zeros again, not from what the last call left.
    let calls = [
        (7, 3, true),
        (7, 3, false),
        (2, 1, true),
        (7, 3, false),
        (11, 2, false),
        (2, 1, false),
    ];
    for (i, &(t, n, with_h0)) in calls.iter().enumerate() {
        let input = Tensor::new(values(100 + i as u64, t * n * 5), &[t, n, 5]).unwrap();
        let h0 =
            with_h0.then(|| Tensor::new(values(200 + i as u64, 4 * n * 19), &[4, n, 19]).unwrap());
        let want = cpu.forward(&input, h0.as_ref()).unwrap();
        let got = gpu.forward(&input, h0.as_ref()).unwrap();
        let output = compare(got.output.data(), want.output.data(), TOLERANCE);
        let h_n = compare(got.h_n.data(), want.h_n.data(), TOLERANCE);
        assert!(
            output.passed() && h_n.passed(),
            "call {i} (T={t}, N={n}, h0={with_h0}): output {output}; h_n {h_n}"
        );
    }
}

/// Stacked unidirectional models on the per-step path run as a wavefront where it pays (every
/// layer advancing in one dispatch per wave, N ≥ 4 and small steps): against the CPU with
/// lengths, h0, batch-first input, ReLU, no bias, and with a Linear head reading the last
/// layer's output.
#[test]
fn wavefront_matches_cpu() {
    let Some(ctx) = testing::gpu("wavefront_matches_cpu") else {
        return;
    };
    let cases = [
        RnnConfig {
            num_layers: 3,
            batch_first: true,
            ..RnnConfig::new(5, 64)
        },
        RnnConfig {
            num_layers: 2,
            nonlinearity: Nonlinearity::Relu,
            bias: false,
            ..RnnConfig::new(3, 16)
        },
    ];
    for (k, config) in cases.into_iter().enumerate() {
        let (steps, batch) = (9, 5);
        let weights = RnnWeights::init(&config, 40 + k as u64).unwrap();
        let cpu = CpuRnn::new(config.clone(), weights.clone()).unwrap();
        let options = GpuOptions::recurrence(Recurrence::PerStep);
        let gpu = GpuRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
        let shape = if config.batch_first {
            [batch, steps, config.input_size]
        } else {
            [steps, batch, config.input_size]
        };
        let input = Tensor::new(values(7, shape.iter().product()), &shape).unwrap();
        let (l, h) = (config.num_layers, config.hidden_size);
        let h0 = Tensor::new(values(8, l * batch * h), &[l, batch, h]).unwrap();
        let lengths = [9, 1, 4, 9, 6];
        let want = cpu
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        let got = gpu
            .forward_with_lengths(&input, &lengths, Some(&h0))
            .unwrap();
        let output = compare(got.output.data(), want.output.data(), TOLERANCE);
        let h_n = compare(got.h_n.data(), want.h_n.data(), TOLERANCE);
        assert!(
            output.passed() && h_n.passed(),
            "{config:?}: {output}; {h_n}"
        );

        // The same model with a head: the last layer writes sequence-first for the head.
        let head = Linear {
            in_features: h,
            out_features: 2,
            weight: values(9, 2 * h),
            bias: Some(vec![0.5, -0.5]),
        };
        let headed = GpuRnn::with_options(&ctx, config.clone(), &weights, options)
            .unwrap()
            .with_head(&head)
            .unwrap();
        let got = headed.forward(&input, None).unwrap();
        let frames = cpu.forward(&input, None).unwrap().output;
        let want: Vec<f32> = frames
            .data()
            .chunks(h)
            .flat_map(|frame| {
                let head = &head;
                (0..2).map(move |o| {
                    let row = &head.weight[o * h..(o + 1) * h];
                    let dot: f32 = row.iter().zip(frame).map(|(w, x)| w * x).sum();
                    dot + head.bias.as_ref().unwrap()[o]
                })
            })
            .collect();
        let c = compare(got.output.data(), &want, TOLERANCE);
        assert!(c.passed(), "{config:?} with a head: {c}");
    }
}

/// A shape for [`check_layer_plans`]: (I, H, T, N, layers, batch_first, bidirectional, the
/// layers expected to take the plan on CPU adapters with subgroups).
type PlanCase = (usize, usize, usize, usize, usize, bool, bool, usize);

/// Whether the layer plans (fused input, projecting ahead) apply on `ctx`'s adapter: a CPU
/// adapter with subgroups.
fn plans_apply(ctx: &GpuContext) -> bool {
    let has_subgroups = ctx.device().features().contains(wgpu::Features::SUBGROUP);
    has_subgroups && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu
}

/// Runs every case against the CPU, after checking that `layers` (how many of a model's
/// layers take some plan for (T, N)) counts the expected layers on CPU adapters with
/// subgroups, where the plans apply, and none elsewhere.
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
    for (k, &case) in cases.iter().enumerate() {
        let (input_size, hidden_size, seq_len, batch, num_layers, batch_first, bidirectional, want) =
            case;
        let problem = Problem {
            config: RnnConfig {
                num_layers,
                batch_first,
                bidirectional,
                bias: k % 4 != 3,
                nonlinearity: if k % 3 == 2 {
                    Nonlinearity::Relu
                } else {
                    Nonlinearity::Tanh
                },
                ..RnnConfig::new(input_size, hidden_size)
            },
            seq_len,
            batch,
            unbatched: false,
            with_h0: k % 2 == 1,
            seed: seed + k as u64,
            recurrence: Recurrence::Auto,
        };
        let weights = RnnWeights::init(&problem.config, problem.seed).unwrap();
        let gpu = GpuRnn::new(ctx, problem.config.clone(), &weights).unwrap();
        let got = layers(&gpu, seq_len, batch);
        println!(
            "{input_size}x{hidden_size} T={seq_len} N={batch} L={num_layers}: {got} layer(s) {plan}"
        );
        assert_eq!(
            got,
            if expected { want } else { 0 },
            "{problem:?} on {info:?}"
        );
        if let Err(e) = problem.check(ctx) {
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
    // On CPU adapters with subgroups (lavapipe), a layer whose recurrence is one subgroup
    // (H ≤ 64 there) computes x_t·W_ihᵀ + b in each step instead of reading a projection,
    // where its input is a multiple of four no wider than the padded state, and, above the
    // first layer, the layer is unidirectional and writes its output where it reads its
    // input. Odd and friendly sizes, padded batch tiles (N = 5: tiles of four), both
    // directions of a first layer, reverse time, long sequences, h0 or not, no bias; and
    // shapes that must not fuse, checked against the CPU alike.
    let cases = [
        (64, 64, 1000, 1, 1, false, false, 1),
        // Layer 1's input (17) is not a multiple of four.
        (16, 17, 257, 5, 2, false, false, 1),
        (32, 64, 300, 4, 3, false, false, 3),
        (4, 1, 3, 1, 1, true, false, 1),
        // Layer 1 reads the first layer's two directions: it may not fuse.
        (64, 48, 129, 2, 2, false, true, 1),
        (12, 20, 17, 3, 2, true, true, 1),
        // Layer 1 writes the caller's batch-first layout, not where it reads.
        (8, 8, 100, 3, 2, true, false, 1),
        // Wider than the padded state (64), or not a multiple of four.
        (128, 64, 50, 1, 1, false, false, 0),
        (3, 8, 40, 2, 1, false, false, 0),
        // H = 100 takes more than one subgroup.
        (100, 100, 64, 1, 1, false, false, 0),
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
    // On CPU adapters with subgroups (lavapipe), a unidirectional layer whose recurrence is
    // one workgroup (one sequence) and whose projection is large (I·H ≥ 128²) but not wider
    // than the recurrence (I ≤ H) projects each chunk of timesteps (a quarter of T) while the
    // recurrence runs the chunk before. Odd and friendly sizes (scalar and vec4 loads of X and P),
    // ragged last chunks, stacked layers in both layouts (above the first only where a layer
    // writes its output where it reads its input), h0 or not; and shapes that must not
    // project ahead (two workgroups, a small projection: H = 64 fuses its input instead),
    // checked against the CPU alike.
    let cases = [
        (128, 128, 1000, 1, 2, false, false, 2),
        // I > H: projecting a chunk on one core would outlast the recurrence.
        (257, 64, 300, 4, 1, true, false, 0),
        (130, 130, 257, 1, 3, true, false, 3),
        (256, 256, 1100, 1, 1, false, false, 1),
        (66, 250, 129, 1, 2, false, false, 2),
        // Two sequences of H = 100: two workgroups.
        (300, 100, 2000, 2, 3, true, false, 0),
        (120, 140, 700, 1, 3, true, false, 3),
        (64, 64, 1000, 1, 1, false, false, 0),
    ];
    check_layer_plans(&ctx, "projecting ahead", &cases, 40, |gpu, t, n| {
        gpu.layers_projecting_ahead(t, n).unwrap()
    });

    // With a Linear head after the last layer, whole and in time chunks (each chunk projects
    // ahead in its own workspace).
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(128, 128)
    };
    let weights = RnnWeights::init(&config, 7).unwrap();
    let linear = Linear {
        weight: values(8, 3 * 128),
        bias: Some(values(9, 3)),
        in_features: 128,
        out_features: 3,
    };
    let cpu = CpuRnn::new(config.clone(), weights.clone())
        .unwrap()
        .with_head(linear.clone())
        .unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights)
        .unwrap()
        .with_head(&linear)
        .unwrap();
    let (steps, n) = (700, 1);
    let input = Tensor::new(values(10, steps * n * 128), &[steps, n, 128]).unwrap();
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
        let output = compare(got.output.data(), want.output.data(), TOLERANCE);
        let h_n = compare(got.h_n.data(), want.h_n.data(), TOLERANCE);
        assert!(
            output.passed() && h_n.passed(),
            "head, budget {budget:?}: output {output}; h_n {h_n}"
        );
    }
}
