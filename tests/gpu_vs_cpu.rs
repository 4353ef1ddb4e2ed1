//! The GPU path against the CPU reference, for every mode: random configurations (proptest,
//! the mode drawn with the rest), a pinned table of edge and odd sizes, workspace reuse across
//! calls, the allocation-free repeat forward, NaN and ±Inf, and bad arguments answered as the
//! CPU answers them. The engine's particular paths (persistent dispatches, subgroup block
//! forms, wavefront, fused input, projecting ahead, streams) are in gpu_paths.rs.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use support::{MODES, Problem, Rng, State, check_output, mode_name, random_lengths};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuRnn, Hx, Recurrence, Rnn, RnnConfig, RnnMode, RnnWeights, Tensor,
    testing,
};

/// The ranges a random problem of one mode draws from.
struct Ranges {
    hidden: BoxedStrategy<usize>,
    input: BoxedStrategy<usize>,
    max_layers: usize,
    max_seq_len: usize,
    max_batch: usize,
}

/// The Elman RNN's ranges: input 1..=300 features, hidden sizes from `hidden`, 1 to 3
/// layers, T 1..=64, N 1..=9.
fn elman(hidden: BoxedStrategy<usize>) -> Ranges {
    Ranges {
        hidden,
        input: (1usize..=300).boxed(),
        max_layers: 3,
        max_seq_len: 64,
        max_batch: 9,
    }
}

/// The gated cells' ranges, narrower since each step does three or four times the work:
/// input sizes from {1, 3, 8, 17, 64, 70}, hidden sizes from `hidden`, 1 or 2 layers, T 1..=9,
/// N 1..=4.
fn gated(hidden: BoxedStrategy<usize>) -> Ranges {
    Ranges {
        hidden,
        input: prop::sample::select(vec![1usize, 3, 8, 17, 64, 70]).boxed(),
        max_layers: 2,
        max_seq_len: 9,
        max_batch: 4,
    }
}

/// Random problems run by `recurrence`: any mode, its sizes from `ranges(mode)`, every flag
/// (bias, batch-first, bidirectional, unbatched, a given state, lengths) and, for an LSTM on
/// the per-step kernels, proj_size none, 1 or H − 1.
fn problems(
    recurrence: Recurrence,
    ranges: fn(RnnMode) -> Ranges,
) -> impl Strategy<Value = Problem> {
    prop::sample::select(MODES.to_vec())
        .prop_flat_map(move |mode| {
            let r = ranges(mode);
            (
                (Just(mode), r.hidden, r.input, 1..=r.max_layers),
                (1..=r.max_seq_len, 1..=r.max_batch),
                any::<[bool; 6]>(),
                (0usize..=2, any::<u64>()),
            )
        })
        .prop_map(
            move |((mode, hidden_size, input_size, num_layers), (t, n), flags, pick)| {
                let [
                    bias,
                    batch_first,
                    bidirectional,
                    unbatched,
                    with_state,
                    packed,
                ] = flags;
                let (proj_pick, seed) = pick;
                // The persistent kernel does not run a projected LSTM (a typed error).
                let projects = mode == RnnMode::Lstm && recurrence == Recurrence::PerStep;
                let proj_size = match proj_pick {
                    1 if projects && hidden_size > 1 => 1,
                    2 if projects && hidden_size > 1 => hidden_size - 1,
                    _ => 0,
                };
                let batch = if unbatched { 1 } else { n };
                let lengths =
                    (packed && !unbatched).then(|| random_lengths(&mut Rng(seed ^ 7), batch, t));
                Problem {
                    config: RnnConfig {
                        num_layers,
                        bias,
                        batch_first,
                        bidirectional,
                        proj_size,
                        ..RnnConfig::new(mode, input_size, hidden_size)
                    },
                    recurrence,
                    seq_len: t,
                    batch,
                    unbatched,
                    with_state,
                    lengths,
                    seed,
                }
            },
        )
}

fn run_random(ctx: &GpuContext, cases: u32, strategy: impl Strategy<Value = Problem>) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |problem| {
            problem.check(ctx).map_err(TestCaseError::fail)
        })
        .unwrap();
}

/// 80 cases over the four modes (64 Elman and 48 LSTM/GRU cases, half of those on the
/// persistent kernel, before the modes were merged): any hidden size up to 300 for an Elman
/// RNN, the sizes {1, 3, 8, 17, 64, 70} for the gated cells.
#[test]
fn random_configurations_match_cpu_per_step() {
    let Some(ctx) = testing::gpu("random_configurations_match_cpu_per_step") else {
        return;
    };
    let ranges = |mode| match mode {
        RnnMode::Rnn(_) => elman((1usize..=300).boxed()),
        RnnMode::Lstm | RnnMode::Gru => {
            gated(prop::sample::select(vec![1usize, 3, 8, 17, 64, 70]).boxed())
        }
    };
    run_random(&ctx, 80, problems(Recurrence::PerStep, ranges));
}

/// The persistent kernels are generated per hidden size and their first dispatch compiles
/// them (seconds on llvmpipe for wide states), so their random problems draw from a set of
/// sizes, odd ones included, up to 257: for an LSTM and a GRU beyond H = 64 and 84 their
/// lanes split the rows of W_hh where it is read from storage (100: two lanes a row group,
/// 257: eight), and on lavapipe, which reads it from a texture, an LSTM with H = 257 splits
/// over two lanes for one sequence and four for a batch, a GRU over one and two.
#[test]
fn random_configurations_match_cpu_persistent() {
    let Some(ctx) = testing::gpu("random_configurations_match_cpu_persistent") else {
        return;
    };
    let ranges = |mode| match mode {
        RnnMode::Rnn(_) => {
            elman(prop::sample::select(vec![1usize, 3, 8, 17, 64, 100, 257]).boxed())
        }
        RnnMode::Lstm => gated(prop::sample::select(vec![1usize, 3, 8, 17, 64, 100, 257]).boxed()),
        RnnMode::Gru => {
            gated(prop::sample::select(vec![1usize, 3, 8, 17, 64, 70, 100, 257]).boxed())
        }
    };
    run_random(&ctx, 64, problems(Recurrence::Persistent, ranges));
}

/// Small, odd and wide shapes, each unidirectional or bidirectional; then sizes that are not
/// multiples of the 64-invocation workgroup and one above it for each kernel (gates, the
/// projection of h), with every option that changes addressing (two bidirectional layers,
/// lengths, a given state).
fn edge_cases(mode: RnnMode) {
    let Some(ctx) = testing::gpu(&format!("edge_cases_match_cpu::{}", mode_name(mode))) else {
        return;
    };
    let mode_index = MODES.iter().position(|&m| m == mode).unwrap();
    let mut problems = Vec::new();
    for (k, (input_size, hidden_size, seq_len, batch)) in [
        (1, 1, 1, 1),
        (3, 17, 1, 9),
        (17, 3, 33, 1),
        (257, 1, 5, 2),
        (1, 257, 4, 3),
        (64, 64, 16, 4),
        (257, 257, 3, 2),
        // One sequence of a wide state: on lavapipe the gated kernel then splits rows over
        // fewer lanes than for a batch (an LSTM two, a GRU none).
        (5, 260, 30, 1),
    ]
    .into_iter()
    .enumerate()
    {
        // One direction per shape, alternating with the shape and the mode: across the two
        // Elman nonlinearities (and across LSTM and GRU) every shape runs both ways.
        let config = RnnConfig {
            num_layers: 1 + k % 3,
            bidirectional: (k + mode_index) % 2 == 1,
            ..RnnConfig::new(mode, input_size, hidden_size)
        };
        problems.push(Problem {
            with_state: k % 2 == 0,
            ..Problem::new(config, seq_len, batch, k as u64)
        });
    }
    let projections: &[usize] = if mode == RnnMode::Lstm {
        &[0, 65]
    } else {
        &[0]
    };
    for (hidden, proj_size) in projections.iter().map(|&p| (257, p)).chain([(1, 0)]) {
        let config = RnnConfig {
            bidirectional: true,
            num_layers: 2,
            proj_size,
            ..RnnConfig::new(mode, 3, hidden)
        };
        problems.push(Problem {
            with_state: true,
            lengths: Some(vec![5, 2, 4]),
            ..Problem::new(config, 5, 3, hidden as u64)
        });
    }
    let failures: Vec<String> = problems
        .iter()
        .filter_map(|p| p.check(&ctx).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
for_each_mode!(edge_cases_match_cpu, edge_cases);

/// Shapes revisit earlier ones (cache hits), and calls with a state are followed by calls
/// without, which must start from zeros again, not from what the last call left.
fn workspaces_reused(mode: RnnMode) {
    let name = format!(
        "workspaces_are_reused_without_stale_state::{}",
        mode_name(mode)
    );
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    let config = RnnConfig {
        num_layers: 2,
        bidirectional: true,
        ..RnnConfig::new(mode, 5, 19)
    };
    let weights = RnnWeights::init(&config, 3).unwrap();
    let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
    let gpu = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
    let calls = [
        (7, 3, true),
        (7, 3, false),
        (2, 1, true),
        (7, 3, false),
        (11, 2, false),
        (2, 1, false),
    ];
    for (i, &(t, n, with_state)) in calls.iter().enumerate() {
        let mut rng = Rng(100 + i as u64);
        let input = rng.tensor(&[t, n, 5]);
        let state = with_state.then(|| support::random_state(&mut rng, &config, n));
        let hx = state.as_ref().map(State::hx);
        let want = cpu.forward(&input, hx).unwrap();
        let got = gpu.forward(&input, hx).unwrap();
        if let Err(e) = check_output(&got, &want) {
            panic!("call {i} (T={t}, N={n}, state={with_state}): {e}");
        }
    }
}
for_each_mode!(workspaces_are_reused_without_stale_state, workspaces_reused);

/// After the first forward of a shape, a forward makes no buffer, bind group or pipeline.
fn allocates_nothing(mode: RnnMode) {
    let name = format!("repeated_forwards_allocate_nothing::{}", mode_name(mode));
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    // A context of its own, so that other tests' allocations do not count.
    let ctx = GpuContext::from_device(ctx.device().clone(), ctx.queue().clone()).unwrap();
    let config = RnnConfig {
        proj_size: if mode == RnnMode::Lstm { 2 } else { 0 },
        bidirectional: true,
        ..RnnConfig::new(mode, 3, 6)
    };
    let weights = RnnWeights::init(&config, 1).unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights).unwrap();
    let input = Rng(2).tensor(&[4, 2, 3]);
    let first = gpu.forward(&input, None).unwrap();
    let before = ctx.resource_counts();
    for _ in 0..3 {
        let again = gpu.forward(&input, None).unwrap();
        assert_eq!(again, first, "a repeated forward gives the same result");
    }
    assert_eq!(ctx.resource_counts(), before);
}
for_each_mode!(repeated_forwards_allocate_nothing, allocates_nothing);

/// NaN and ±Inf in the input and in the state propagate as on the CPU path (NaN where NaN,
/// the same infinities), through both kernels: σ(±inf) = 1 or 0, tanh(±inf) = ±1. Not on
/// wgpu's GL backend, whose shading language leaves NaN handling to the driver.
fn nan_and_inf(mode: RnnMode) {
    let name = format!("nan_and_inf_propagate_as_on_the_cpu::{}", mode_name(mode));
    let Some(ctx) = testing::gpu(&name) else {
        return;
    };
    if ctx.adapter_info().backend == wgpu::Backend::Gl {
        // GLSL leaves NaN and infinity handling to the implementation (llvmpipe's GL gives
        // σ(NaN)·tanh(−inf) = −1 here); wgpu's other backends are IEEE.
        println!("skipped on the GL backend: GLSL does not guarantee IEEE NaN propagation");
        return;
    }
    for recurrence in [Recurrence::Auto, Recurrence::PerStep] {
        let config = RnnConfig::new(mode, 2, 4);
        let weights = RnnWeights::init(&config, 3).unwrap();
        let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
        let options = wgpu_rnn::GpuOptions::recurrence(recurrence);
        let gpu = GpuRnn::with_options(&ctx, config.clone(), &weights, options).unwrap();
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
        let hx = Hx {
            h0: &h0,
            c0: mode.has_cell_state().then_some(&c0),
        };
        let want = cpu.forward(&input, Some(hx)).unwrap();
        let got = gpu.forward(&input, Some(hx)).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?} {recurrence:?}: {e}"));
        let last = &got.output.data()[(4 + 3) * 4..];
        assert!(last.iter().all(|v| v.is_finite()), "{mode:?}: {last:?}");
    }
}
for_each_mode!(nan_and_inf_propagate_as_on_the_cpu, nan_and_inf);

/// Arbitrary input, h0, c0 and lengths shapes (most of them wrong) for models of every mode:
/// the GPU path answers exactly as the CPU path does, the same numbers or the same kind of
/// typed error, and never panics. (A c0 without h0 cannot be expressed: `Hx` always has h0.)
#[test]
fn bad_arguments_get_the_cpu_paths_typed_errors() {
    let Some(ctx) = testing::gpu("bad_arguments_get_the_cpu_paths_typed_errors") else {
        return;
    };
    let models: Vec<(CpuRnn, GpuRnn)> = [
        RnnConfig::rnn(3, 4),
        RnnConfig {
            mode: RnnMode::Rnn(wgpu_rnn::Nonlinearity::Relu),
            batch_first: true,
            bidirectional: true,
            num_layers: 2,
            ..RnnConfig::rnn(2, 5)
        },
        RnnConfig::lstm(3, 4),
        RnnConfig {
            batch_first: true,
            proj_size: 2,
            num_layers: 2,
            ..RnnConfig::lstm(2, 5)
        },
        RnnConfig {
            bidirectional: true,
            ..RnnConfig::gru(3, 6)
        },
    ]
    .into_iter()
    .map(|config| {
        let weights = RnnWeights::init(&config, 2).unwrap();
        (
            CpuRnn::new(config.clone(), &weights).unwrap(),
            GpuRnn::new(&ctx, config, &weights).unwrap(),
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
    let cases = 2000;
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |(m, input, h0, c0, lengths)| {
            let tensor =
                |shape: &[usize]| Tensor::new(Rng(1).values(shape.iter().product()), shape);
            // Shapes a tensor cannot have are the tensor's error, not the model's.
            let (Ok(input), Ok(h0), Ok(c0)) = (
                tensor(&input),
                h0.map(|s| tensor(&s)).transpose(),
                c0.map(|s| tensor(&s)).transpose(),
            ) else {
                return Ok(());
            };
            let hx = h0.as_ref().map(|h0| Hx {
                h0,
                c0: c0.as_ref(),
            });
            let run = |model: &dyn Rnn| match &lengths {
                Some(l) => model.forward_with_lengths(&input, l, hx),
                None => model.forward(&input, hx),
            };
            let (cpu, gpu) = &models[m];
            let want = run(cpu);
            let got = support::no_panic(|| run(gpu)).map_err(TestCaseError::fail)?;
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    check_output(&got, &want).map_err(TestCaseError::fail)?;
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
    println!("{} of {cases} calls ran on both paths", matched.get());
    assert!(matched.get() >= 25, "only {} valid calls", matched.get());
}
