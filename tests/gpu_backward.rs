//! The GPU backward (`GpuTrainer`) against the CPU reference (`CpuTrainer`) over random
//! configurations of every mode and flag, on sizes that are not multiples of the workgroup
//! size; gradient accumulation and `zero_grad`; bit-identical repeats; and the tape's checks.

mod support;

use support::{Problem, Rng, context_with, mode_name, random_lengths};
use wgpu_rnn::compare::scaled_max_error;
use wgpu_rnn::testing::gpu;
use wgpu_rnn::{
    CpuTrainer, GpuContext, GpuTrainer, Hx, InitialState, Linear, Loss, OutputGrads, Recurrence,
    Reduction, RnnConfig, RnnError, RnnMode, Target, Tensor, Train,
};

/// GPU against CPU: `max|gpu − cpu| / max(1, max|cpu|)`, as the fixtures measure.
const TOLERANCE: f64 = 1e-4;

fn error(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    scaled_max_error(got.data(), want.data())
}

/// Every named tensor of `got` against `want`'s (the same names in the same order) within
/// `tolerance`, panicking with `context` and the tensor that differs; the worst error and its
/// tensor's name.
fn assert_within(
    context: &str,
    got: &[(String, Tensor)],
    want: &[(String, Tensor)],
    tolerance: f64,
) -> (f64, String) {
    assert_eq!(got.len(), want.len(), "{context}");
    let mut worst = (0.0f64, String::new());
    for ((name, g), (wname, w)) in got.iter().zip(want) {
        assert_eq!(name, wname, "{context}");
        let e = error(g, w);
        assert!(e <= tolerance, "{context}: {name} differs by {e:.3e}");
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    worst
}

/// A random problem of `mode`: its flags, sizes and upstream gradients.
struct Case {
    problem: Problem,
    head: Option<Linear>,
    d_output: Tensor,
    d_h_n: Option<Tensor>,
    d_c_n: Option<Tensor>,
}

fn random_case(mode: RnnMode, seed: u64) -> Case {
    let mut rng = Rng(seed);
    // Multiples of four run the register-resident recurrence on adapters with subgroups (in
    // one subgroup, or in several: a gated cell's 64, an Elman RNN's 128; a gated cell's 128
    // with each group of four units split over two lanes); the others the generic kernels.
    let sizes = [1, 3, 17, 8, 64, 5, 20, 32, 128];
    let hidden = sizes[rng.range(0, sizes.len() - 1)];
    let proj_size = if mode == RnnMode::Lstm && hidden > 1 && rng.chance(2) {
        rng.range(1, hidden - 1)
    } else {
        0
    };
    let config = RnnConfig {
        num_layers: rng.range(1, 2),
        bias: !rng.chance(4),
        batch_first: rng.chance(2),
        bidirectional: rng.chance(2),
        proj_size,
        ..RnnConfig::new(mode, [1, 3, 17, 4][rng.range(0, 3)], hidden)
    };
    let seq_len = rng.range(1, 9);
    let unbatched = rng.chance(5);
    let batch = if unbatched { 1 } else { rng.range(1, 4) };
    let mut problem = Problem::new(config.clone(), seq_len, batch, seed);
    problem.unbatched = unbatched;
    problem.with_state = rng.chance(2);
    if !unbatched && rng.chance(2) {
        problem.lengths = Some(random_lengths(&mut rng, batch, seq_len));
    }
    let head = rng.chance(3).then(|| {
        let out = rng.range(1, 5);
        let fin = config.output_size();
        Linear {
            in_features: fin,
            out_features: out,
            weight: rng.values(out * fin),
            bias: (!rng.chance(3)).then(|| rng.values(out)),
        }
    });
    let features = head
        .as_ref()
        .map_or(config.output_size(), |h| h.out_features);
    let frames: Vec<usize> = if unbatched {
        vec![seq_len, features]
    } else if config.batch_first {
        vec![batch, seq_len, features]
    } else {
        vec![seq_len, batch, features]
    };
    let rows = config.state_rows();
    let state = |f: usize, rng: &mut Rng| {
        let shape: Vec<usize> = if unbatched {
            vec![rows, f]
        } else {
            vec![rows, batch, f]
        };
        rng.tensor(&shape)
    };
    let d_output = rng.tensor(&frames);
    let d_h_n = rng.chance(2).then(|| state(config.state_size(), &mut rng));
    let d_c_n = (mode == RnnMode::Lstm && rng.chance(2)).then(|| state(hidden, &mut rng));
    Case {
        problem,
        head,
        d_output,
        d_h_n,
        d_c_n,
    }
}

/// Forward and backward of `case` through `model`: every output and gradient, named.
fn run(model: &mut impl Train, case: &Case) -> Vec<(String, Tensor)> {
    let p = &case.problem;
    let input = p.input();
    let state = p.state();
    let hx = state.as_ref().map(|s| Hx {
        h0: &s.h0,
        c0: s.c0.as_ref(),
    });
    let (out, tape) = model
        .forward_train(&input, p.lengths.as_deref(), hx)
        .unwrap_or_else(|e| panic!("{p:?}: forward: {e}"));
    let grads = OutputGrads {
        d_output: &case.d_output,
        d_h_n: case.d_h_n.as_ref(),
        d_c_n: case.d_c_n.as_ref(),
    };
    let inputs = model
        .backward(tape, grads)
        .unwrap_or_else(|e| panic!("{p:?}: backward: {e}"));
    let mut all = vec![
        ("output".to_string(), out.output),
        ("h_n".to_string(), out.h_n),
        ("d_input".to_string(), inputs.d_input),
        ("d_h0".to_string(), inputs.d_h0),
    ];
    all.extend(out.c_n.map(|c| ("c_n".to_string(), c)));
    all.extend(inputs.d_c0.map(|c| ("d_c0".to_string(), c)));
    all.extend(model.gradients().unwrap());
    all
}

fn trainers(ctx: &GpuContext, case: &Case) -> (CpuTrainer, GpuTrainer) {
    let config = case.problem.config.clone();
    let weights = case.problem.weights();
    let mut cpu = CpuTrainer::new(config.clone(), &weights).unwrap();
    let mut gpu = GpuTrainer::new(ctx, config, &weights).unwrap();
    if let Some(head) = &case.head {
        cpu = cpu.with_head(head).unwrap();
        gpu = gpu.with_head(head).unwrap();
    }
    (cpu, gpu)
}

fn matches_cpu_backward(mode: RnnMode) {
    let Some(ctx) = gpu("matches_cpu_backward") else {
        return;
    };
    matches_cpu_on(&ctx, mode, 0..24);
}
for_each_mode!(gpu_matches_cpu, matches_cpu_backward);

/// The same on a device opened without subgroup operations: where an adapter has them, the
/// cases above run the register-resident recurrence and the subgroup GEMM (with the bias
/// gradients as row sums); here the generic recurrence, the block GEMM and the bias GEMMs.
fn matches_cpu_without_subgroups(mode: RnnMode) {
    if gpu("matches_cpu_without_subgroups").is_none() {
        return;
    }
    // No features asked for: no SUBGROUP.
    let ctx = context_with(|limits| limits).unwrap();
    matches_cpu_on(&ctx, mode, 100..108);
}
for_each_mode!(without_subgroups, matches_cpu_without_subgroups);

/// GPU against CPU backward on the random cases of `seeds`, both recurrent kernel forms
/// alternating.
fn matches_cpu_on(ctx: &GpuContext, mode: RnnMode, seeds: std::ops::Range<u64>) {
    let mut worst = (0.0f64, String::new());
    for seed in seeds {
        let case = random_case(mode, 1000 + seed);
        let (mut cpu, gpu) = trainers(ctx, &case);
        // Both recurrent kernel forms, alternating.
        let recurrence = [Recurrence::PerStep, Recurrence::Persistent][seed as usize % 2];
        let mut gpu = gpu.with_recurrence(recurrence);
        let want = run(&mut cpu, &case);
        let got = run(&mut gpu, &case);
        let context = format!(
            "{} {recurrence:?} seed {seed} {:?} head {:?}",
            mode_name(mode),
            case.problem,
            case.head.as_ref().map(|h| h.out_features)
        );
        let (e, name) = assert_within(&context, &got, &want, TOLERANCE);
        if e > worst.0 {
            worst = (e, format!("seed {seed} {name}"));
        }
    }
    eprintln!(
        "{}: worst GPU-vs-CPU error {:.2e} ({})",
        mode_name(mode),
        worst.0,
        worst.1
    );
}

/// `backward_params`, the backward without the input's gradient: the same parameter
/// gradients as `backward`, bit for bit, over random cases (the register recurrence, the
/// tiles and the generic kernels, heads, lengths, chunks of none), accumulating as `backward`
/// does; and the same typed error for upstream gradients of the wrong shape.
fn params_only_backward_matches_backward(mode: RnnMode) {
    let Some(ctx) = gpu("params_only_backward_matches_backward") else {
        return;
    };
    for seed in 0..8 {
        let case = random_case(mode, 2000 + seed);
        let (_, mut full) = trainers(&ctx, &case);
        let (_, mut params_only) = trainers(&ctx, &case);
        let p = &case.problem;
        let (input, state) = (p.input(), p.state());
        let hx = || {
            state.as_ref().map(|s| Hx {
                h0: &s.h0,
                c0: s.c0.as_ref(),
            })
        };
        let grads = OutputGrads {
            d_output: &case.d_output,
            d_h_n: case.d_h_n.as_ref(),
            d_c_n: case.d_c_n.as_ref(),
        };
        // Twice each, so that both accumulate.
        for _ in 0..2 {
            let (_, tape) = full
                .forward_train(&input, p.lengths.as_deref(), hx())
                .unwrap();
            full.backward(tape, grads).unwrap();
            let (_, tape) = params_only
                .forward_train(&input, p.lengths.as_deref(), hx())
                .unwrap();
            params_only.backward_params(tape, grads).unwrap();
        }
        let context = format!("{} seed {seed} {p:?}", mode_name(mode));
        assert_eq!(
            params_only.gradients().unwrap(),
            full.gradients().unwrap(),
            "{context}"
        );
        let (_, tape) = params_only
            .forward_train(&input, p.lengths.as_deref(), hx())
            .unwrap();
        let wrong = Tensor::new(vec![0.0; 3], &[3]).unwrap();
        let error = params_only
            .backward_params(tape, OutputGrads::output(&wrong))
            .unwrap_err();
        assert!(
            matches!(error, RnnError::ShapeMismatch { .. }),
            "{context}: {error}"
        );
    }
}
for_each_mode!(params_only, params_only_backward_matches_backward);

/// Where the register recurrence projects the input in its forward's steps (one layer,
/// features in fours and at most half H, four sequences or more: the character model's
/// shape), and a head's input gradient in its backward's (at most H/2 outputs), the results
/// are the CPU's, as where GEMMs write P and dY: one and two directions, lengths, a given
/// state, with a head and without.
fn inputs_projected_in_steps_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("inputs_projected_in_steps_match_cpu") else {
        return;
    };
    let hiddens: &[usize] = match mode {
        RnnMode::Rnn(_) => &[8, 20, 64],
        _ => &[8, 32],
    };
    let mut worst = 0.0f64;
    for (i, &hidden) in hiddens.iter().enumerate() {
        for (j, (bidirectional, outputs)) in [(false, None), (false, Some(2)), (true, Some(3))]
            .into_iter()
            .enumerate()
        {
            let seed = 40 + i as u64 * 3 + j as u64;
            let mut rng = Rng(seed);
            let inputs = 4 * rng.range(1, hidden / 8);
            let config = RnnConfig {
                bidirectional,
                batch_first: rng.chance(2),
                ..RnnConfig::new(mode, inputs, hidden)
            };
            let (seq_len, batch) = (rng.range(1, 9), rng.range(4, 6));
            let mut problem = Problem::new(config.clone(), seq_len, batch, seed);
            problem.with_state = rng.chance(2);
            problem.lengths = rng
                .chance(2)
                .then(|| random_lengths(&mut rng, batch, seq_len));
            let mut case = random_case(mode, seed);
            let out = outputs.unwrap_or(config.output_size());
            case.head = outputs.map(|out| Linear {
                in_features: config.output_size(),
                out_features: out,
                weight: rng.values(out * config.output_size()),
                bias: Some(rng.values(out)),
            });
            let frames = match config.batch_first {
                true => vec![batch, seq_len, out],
                false => vec![seq_len, batch, out],
            };
            case.d_output = rng.tensor(&frames);
            case.d_h_n = None;
            case.d_c_n = None;
            case.problem = problem;
            let (mut cpu, mut gpu) = trainers(&ctx, &case);
            let want = run(&mut cpu, &case);
            let got = run(&mut gpu, &case);
            let context = format!("{} {:?}", mode_name(mode), case.problem);
            worst = worst.max(assert_within(&context, &got, &want, TOLERANCE).0);
        }
    }
    eprintln!("{}: worst GPU-vs-CPU error {worst:.2e}", mode_name(mode));
}
for_each_mode!(inputs_in_steps, inputs_projected_in_steps_match_cpu);

/// The steps' input projections round as the projection GEMM's P does, and their head
/// gradients as the head's GEMM's dY: a batch of four sequences (both in the steps) gives,
/// bit for bit, the outputs and input gradients its first two give as a batch of their own
/// (two sequences: the GEMMs).
fn inputs_projected_in_steps_round_as_p(mode: RnnMode) {
    let Some(ctx) = gpu("inputs_projected_in_steps_round_as_p") else {
        return;
    };
    for (hidden, inputs, seq_len) in [(8, 4, 5), (32, 16, 3), (64, 28, 7)] {
        if mode == RnnMode::Lstm && hidden == 64 {
            continue; // several subgroups: the steps do not project
        }
        let config = RnnConfig {
            batch_first: true,
            ..RnnConfig::new(mode, inputs, hidden)
        };
        let mut rng = Rng(hidden as u64);
        let weights = wgpu_rnn::RnnWeights::init(&config, 5).unwrap();
        let input = rng.tensor(&[4, seq_len, inputs]);
        // A head of H/2 outputs (a whole GEMM slice of 32 at H = 64).
        let outputs = hidden / 2;
        let head = Linear {
            in_features: hidden,
            out_features: outputs,
            weight: rng.values(outputs * hidden),
            bias: Some(rng.values(outputs)),
        };
        let d_output = rng.tensor(&[4, seq_len, outputs]);
        let mut model = GpuTrainer::new(&ctx, config.clone(), &weights)
            .unwrap()
            .with_head(&head)
            .unwrap();
        // Outputs and d input of the first `batch` sequences.
        let mut run = |batch: usize| {
            let first = |t: &Tensor, width: usize| {
                let values = t.data()[..batch * seq_len * width].to_vec();
                Tensor::new(values, &[batch, seq_len, width]).unwrap()
            };
            let (out, tape) = model
                .forward_train(&first(&input, inputs), None, None)
                .unwrap();
            let grads = OutputGrads {
                d_output: &first(&d_output, outputs),
                d_h_n: None,
                d_c_n: None,
            };
            let d_input = model.backward(tape, grads).unwrap().d_input;
            (out.output, d_input)
        };
        let (four, two) = (run(4), run(2));
        let context = format!("{} H {hidden} I {inputs}", mode_name(mode));
        assert!(
            four.0.data()[..two.0.data().len()] == *two.0.data(),
            "{context}: outputs differ between the two ways of projecting the input"
        );
        assert!(
            four.1.data()[..two.1.data().len()] == *two.1.data(),
            "{context}: d input differs between the two ways of computing dY"
        );
    }
}
for_each_mode!(inputs_round_as_p, inputs_projected_in_steps_round_as_p);

/// Two backwards add up (`+=`, as `.grad` does); `zero_grad` clears; repeats are bit-identical.
fn gradients_accumulate(mode: RnnMode) {
    let Some(ctx) = gpu("gradients_accumulate") else {
        return;
    };
    let case = random_case(mode, 77);
    let (_, mut model) = trainers(&ctx, &case);
    let once = run(&mut model, &case);
    let twice = run(&mut model, &case);
    let params = model.parameters().unwrap();
    for (name, _) in &params {
        let g1 = &once.iter().find(|(n, _)| n == name).unwrap().1;
        let g2 = &twice.iter().find(|(n, _)| n == name).unwrap().1;
        let doubled: Vec<f32> = g1.data().iter().map(|v| v * 2.0).collect();
        assert_eq!(
            g2.data(),
            doubled.as_slice(),
            "{name}: the second backward must add"
        );
    }
    model.zero_grad().unwrap();
    let again = run(&mut model, &case);
    assert_eq!(
        once, again,
        "a repeat after zero_grad must be bit-identical"
    );
    model.zero_grad().unwrap();
    assert!(
        model
            .gradients()
            .unwrap()
            .iter()
            .all(|(_, g)| g.data().iter().all(|&v| v == 0.0))
    );
}
for_each_mode!(accumulation, gradients_accumulate);

fn tapes_are_checked(mode: RnnMode) {
    let Some(ctx) = gpu("tapes_are_checked") else {
        return;
    };
    let case = random_case(mode, 5);
    let (_, mut a) = trainers(&ctx, &case);
    let (_, mut b) = trainers(&ctx, &case);
    let input = case.problem.input();
    let lengths = case.problem.lengths.as_deref();
    let grads = OutputGrads::output(&case.d_output);
    let (_, tape_a) = a.forward_train(&input, lengths, None).unwrap();
    let (_, _tape_b) = b.forward_train(&input, lengths, None).unwrap();
    assert!(matches!(b.backward(tape_a, grads), Err(RnnError::Tape(_))));
    let (_, old) = a.forward_train(&input, lengths, None).unwrap();
    let (_, new) = a.forward_train(&input, lengths, None).unwrap();
    assert!(matches!(a.backward(old, grads), Err(RnnError::Tape(_))));
    // A wrong upstream shape is refused, and the forward stays usable.
    let wrong = Tensor::zeros(&[1, 1, 1]).unwrap();
    let (_, tape) = a.forward_train(&input, lengths, None).unwrap();
    assert!(matches!(
        a.backward(tape, OutputGrads::output(&wrong)),
        Err(RnnError::ShapeMismatch { .. })
    ));
    drop(new);
}
for_each_mode!(tapes, tapes_are_checked);

/// A fixture's gradients through the training API of `make`'s trainer: `(tensor, error)`
/// for every gradient the fixture holds. nn.RNN, nn.LSTM and nn.GRU cases run as stored;
/// the nn.RNNCell case is a one-layer nn.RNN over its S steps whose output is `h_steps`.
fn fixture_errors<T: Train>(
    case: &wgpu_rnn::reference_case::ReferenceCase,
    make: &impl Fn(Fixture) -> T,
) -> Vec<(String, f64)> {
    let cell = case.kind() == "rnn_cell";
    let mut model = if cell {
        let c = case.cell_config().unwrap();
        make(Fixture::Cell(c.clone(), case.cell_weights(&c).unwrap()))
    } else {
        let config = case.config().unwrap();
        make(Fixture::Model(
            config.clone(),
            case.weights(&config).unwrap(),
        ))
    };
    let config = model.config().clone();
    let input = case.tensor(if cell { "inputs" } else { "input" }).unwrap();
    let reshape = |t: Tensor, rows: usize| {
        let batch = if cell { input.shape()[1] } else { 0 };
        if cell {
            Tensor::new(t.into_data(), &[rows, batch, config.hidden_size]).unwrap()
        } else {
            t
        }
    };
    let h0 = case
        .has("h0")
        .then(|| reshape(case.tensor("h0").unwrap(), 1));
    let c0 = case.has("c0").then(|| case.tensor("c0").unwrap());
    let hx = h0.as_ref().map(|h0| Hx {
        h0,
        c0: c0.as_ref(),
    });
    let lengths = case.lengths().unwrap();
    let (_, tape) = model.forward_train(&input, lengths.as_deref(), hx).unwrap();
    let upstream = |name: &str| case.has(name).then(|| case.tensor(name).unwrap());
    let d_output = upstream(if cell { "grad_h_steps" } else { "grad_output" }).unwrap();
    let (d_h_n, d_c_n) = (upstream("grad_h_n"), upstream("grad_c_n"));
    let grads = OutputGrads {
        d_output: &d_output,
        d_h_n: d_h_n.as_ref(),
        d_c_n: d_c_n.as_ref(),
    };
    let inputs = model.backward(tape, grads).unwrap();
    let mut pairs = vec![(
        if cell { "grad_inputs" } else { "grad_input" }.to_string(),
        inputs.d_input,
    )];
    if case.has("grad_h0") {
        pairs.push(("grad_h0".into(), inputs.d_h0));
    }
    if case.has("grad_c0") {
        pairs.push(("grad_c0".into(), inputs.d_c0.expect("an LSTM has d_c0")));
    }
    for (name, tensor) in model.gradients().unwrap() {
        let name = if cell {
            name.trim_end_matches("_l0").to_string()
        } else {
            name
        };
        pairs.push((format!("grad.{name}"), tensor));
    }
    pairs
        .into_iter()
        .map(|(name, got)| {
            let want = case.tensor(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = Tensor::new(got.into_data(), want.shape()).unwrap();
            let e = error(&got, &want);
            (name, e)
        })
        .collect()
}

/// What a fixture holds: a model, or a cell run over its steps.
enum Fixture {
    Model(RnnConfig, wgpu_rnn::RnnWeights),
    Cell(wgpu_rnn::CellConfig, wgpu_rnn::DirectionWeights),
}

/// Every fixture with gradients: (file, case).
fn gradient_fixtures() -> Vec<(String, wgpu_rnn::reference_case::ReferenceCase)> {
    let mut cases: Vec<_> = support::cases_in("tests/fixtures")
        .into_iter()
        .filter(|(_, c)| (c.kind() == "rnn" && c.has("grad_input")) || c.kind() == "rnn_cell")
        .collect();
    cases.extend(support::cases_in("tests/fixtures/torch_train/gated_grad"));
    assert_eq!(
        cases.len(),
        14 + 1 + 12,
        "the nn.RNN, nn.RNNCell and gated gradient fixtures"
    );
    cases
}

fn check_fixtures<T: Train>(path: &str, tolerance: f64, make: impl Fn(Fixture) -> T) {
    let mut failures = Vec::new();
    for (name, case) in gradient_fixtures() {
        let errors = fixture_errors(&case, &make);
        let worst = errors
            .iter()
            .cloned()
            .fold((String::new(), 0.0), |a, b| if b.1 > a.1 { b } else { a });
        eprintln!(
            "{path} {name}: {} tensors, worst {:.2e} ({})",
            errors.len(),
            worst.1,
            worst.0
        );
        failures.extend(
            errors
                .into_iter()
                .filter(|(_, e)| *e > tolerance)
                .map(|(t, e)| format!("{name}: {t} error {e:.3e}")),
        );
    }
    assert!(
        failures.is_empty(),
        "{path} beyond {tolerance}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn torch_gradient_fixtures_on_the_cpu_trainer() {
    check_fixtures("cpu", 1e-5, |fixture| match fixture {
        Fixture::Model(config, weights) => CpuTrainer::new(config, &weights).unwrap(),
        Fixture::Cell(config, weights) => CpuTrainer::cell(config, &weights).unwrap(),
    });
}

#[test]
fn torch_gradient_fixtures_on_the_gpu_trainer() {
    let Some(ctx) = gpu("torch_gradient_fixtures_on_the_gpu_trainer") else {
        return;
    };
    check_fixtures("gpu", TOLERANCE, |fixture| match fixture {
        Fixture::Model(config, weights) => GpuTrainer::new(&ctx, config, &weights).unwrap(),
        Fixture::Cell(config, weights) => GpuTrainer::cell(&ctx, config, &weights).unwrap(),
    });
}

/// After the first forward and backward of a shape, later ones create no GPU resources.
fn no_resources_per_iteration(mode: RnnMode) {
    if gpu("no_resources_per_iteration").is_none() {
        return;
    }
    // A context of its own: the shared one counts what the other tests make meanwhile.
    let ctx = GpuContext::new().unwrap();
    let case = random_case(mode, 31);
    let (_, mut model) = trainers(&ctx, &case);
    run(&mut model, &case);
    let warm = ctx.resource_counts();
    for _ in 0..3 {
        run(&mut model, &case);
        model.zero_grad().unwrap();
    }
    assert_eq!(ctx.resource_counts(), warm, "{}", mode_name(mode));
    // The backward of the parameters only, likewise after its first.
    let p = &case.problem;
    let grads = OutputGrads::output(&case.d_output);
    let params_only = |model: &mut GpuTrainer| {
        let (_, tape) = model
            .forward_train(&p.input(), p.lengths.as_deref(), None)
            .unwrap();
        model.backward_params(tape, grads).unwrap();
    };
    params_only(&mut model);
    let warm = ctx.resource_counts();
    for _ in 0..3 {
        params_only(&mut model);
    }
    assert_eq!(
        ctx.resource_counts(),
        warm,
        "{} backward_params",
        mode_name(mode)
    );
}
for_each_mode!(resources, no_resources_per_iteration);

/// After the first, `train_step`s create no GPU resources: a model small enough for the
/// one-kernel iteration (MSE, Adam) and one that is not (cross-entropy, SGD), both clipped
/// (clipping and the step then share one dispatch and a bind group made the first time).
fn no_resources_per_train_step(mode: RnnMode) {
    if gpu("no_resources_per_train_step").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    for (hidden, classes, steps) in [(16, 1, 49), (64, 28, 35)] {
        let config = RnnConfig {
            batch_first: true,
            ..RnnConfig::new(mode, classes, hidden)
        };
        let weights = wgpu_rnn::RnnWeights::init(&config, 3).unwrap();
        let mut rng = Rng(hidden as u64);
        let head = Linear {
            in_features: hidden,
            out_features: classes,
            weight: rng.values(classes * hidden),
            bias: Some(rng.values(classes)),
        };
        let mut model = GpuTrainer::new(&ctx, config, &weights)
            .unwrap()
            .with_head(&head)
            .unwrap();
        let batch = if classes == 1 { 1 } else { 8 };
        let input = rng.tensor(&[batch, steps, classes]);
        let values = rng.tensor(&[batch, steps, classes]);
        let labels: Vec<usize> = (0..batch * steps).map(|i| i % classes).collect();
        let (loss, target, optimizer) = match classes {
            1 => (
                Loss::Mse(Reduction::Mean),
                Target::Values(&values),
                wgpu_rnn::Adam::new(0.01).into(),
            ),
            _ => (
                Loss::CrossEntropy(Reduction::Mean),
                Target::Classes(&labels),
                wgpu_rnn::Sgd::new(1.0).into(),
            ),
        };
        let mut optimizer = model.optimizer(optimizer).unwrap();
        let batch = wgpu_rnn::Batch {
            input: &input,
            lengths: None,
            state: InitialState::Carried,
            target,
        };
        let mut step = || {
            model
                .train_step(batch, loss, &mut optimizer, Some(1.0))
                .unwrap();
            model.last_loss().unwrap()
        };
        step();
        let warm = ctx.resource_counts();
        for _ in 0..3 {
            step();
        }
        assert_eq!(
            ctx.resource_counts(),
            warm,
            "{} H={hidden}",
            mode_name(mode)
        );
    }
}
for_each_mode!(train_step_resources, no_resources_per_train_step);

/// A hidden size beyond the step kernels' 64-wide workgroups and the GEMM's 64 × 64 tiles.
fn hidden_257_matches_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("hidden_257_matches_cpu") else {
        return;
    };
    let config = RnnConfig {
        bidirectional: true,
        proj_size: if mode == RnnMode::Lstm { 65 } else { 0 },
        ..RnnConfig::new(mode, 3, 257)
    };
    let mut problem = Problem::new(config.clone(), 3, 2, 9);
    problem.lengths = Some(vec![3, 2]);
    let mut rng = Rng(4);
    let d_output = rng.tensor(&[3, 2, config.output_size()]);
    let case = Case {
        problem,
        head: None,
        d_output,
        d_h_n: None,
        d_c_n: None,
    };
    let (mut cpu, mut gpu) = trainers(&ctx, &case);
    let want = run(&mut cpu, &case);
    assert_within(mode_name(mode), &run(&mut gpu, &case), &want, TOLERANCE);
}
for_each_mode!(hidden_257, hidden_257_matches_cpu);

/// NaN in the input propagates to the gradients, as in PyTorch, and nothing hangs; the
/// trainer stays usable.
fn nan_propagates(mode: RnnMode) {
    let Some(ctx) = gpu("nan_propagates") else {
        return;
    };
    let case = random_case(mode, 12);
    let (_, mut model) = trainers(&ctx, &case);
    let mut data = case.problem.input().into_data();
    data[0] = f32::NAN;
    let input = Tensor::new(data, case.problem.input().shape()).unwrap();
    let (out, tape) = model.forward_train(&input, None, None).unwrap();
    assert!(out.output.data().iter().any(|v| v.is_nan()));
    let inputs = model
        .backward(tape, OutputGrads::output(&case.d_output))
        .unwrap();
    let grads = model.gradients().unwrap();
    let w_ih = &grads[0].1;
    assert!(
        w_ih.data().iter().any(|v| v.is_nan()) || inputs.d_input.data().iter().any(|v| v.is_nan()),
        "{}: a NaN input must reach the gradients",
        mode_name(mode)
    );
    model.zero_grad().unwrap();
    let again = run(&mut model, &case);
    assert!(
        again
            .iter()
            .all(|(_, t)| t.data().iter().all(|v| v.is_finite()))
    );
}
for_each_mode!(nan, nan_propagates);

/// Sequences longer than one persistent dispatch runs (llvmpipe's loop limit splits them):
/// the state and the backward's carries cross the dispatch boundaries. Where the adapter has
/// subgroups, H = 32 runs the register-resident recurrence in one subgroup, H = 64 (gated
/// cells) in two, and H = 66 (not a multiple of four) the generic kernels.
fn long_sequences_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("long_sequences_match_cpu") else {
        return;
    };
    for hidden in [32, 64, 66] {
        long_sequence_matches_cpu(&ctx, mode, hidden);
    }
}

fn long_sequence_matches_cpu(ctx: &GpuContext, mode: RnnMode, hidden: usize) {
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 2, hidden)
    };
    let mut problem = Problem::new(config.clone(), 1100, 2, 21);
    problem.with_state = true;
    problem.lengths = Some(vec![1100, 777]);
    let d_output = Rng(8).tensor(&[1100, 2, config.output_size()]);
    let case = Case {
        problem,
        head: None,
        d_output,
        d_h_n: None,
        d_c_n: None,
    };
    let (mut cpu, gpu) = trainers(ctx, &case);
    let mut gpu = gpu.with_recurrence(Recurrence::Persistent);
    let want = run(&mut cpu, &case);
    let context = format!("{} H={hidden}", mode_name(mode));
    assert_within(&context, &run(&mut gpu, &case), &want, TOLERANCE);
}
for_each_mode!(long_sequences, long_sequences_match_cpu);

/// A hidden size the generic persistent kernels run with vec4s (a multiple of four) on every
/// adapter: too wide for the register recurrence where the adapter has one (every cell up to
/// H = 512 on lavapipe).
const TILED_HIDDEN: usize = 516;

/// A case of `config` over `seq_len` steps, a sequence per entry of `lengths`, with a random
/// d output and, `with_state`, a given initial state and random d h_n (d c_n).
fn lengths_case(config: &RnnConfig, seq_len: usize, lengths: Vec<usize>, with_state: bool) -> Case {
    let batch = lengths.len();
    let mut problem = Problem::new(config.clone(), seq_len, batch, 31);
    problem.with_state = with_state;
    problem.lengths = Some(lengths);
    let mut rng = Rng(9);
    let d_output = rng.tensor(&[seq_len, batch, config.output_size()]);
    let rows = config.state_rows();
    let d_h_n = with_state.then(|| rng.tensor(&[rows, batch, config.state_size()]));
    let d_c_n = (with_state && config.mode == RnnMode::Lstm)
        .then(|| rng.tensor(&[rows, batch, config.hidden_size]));
    Case {
        problem,
        head: None,
        d_output,
        d_h_n,
        d_c_n,
    }
}

/// `case` forward and backward on the GPU trainer against the CPU's, within `TOLERANCE`.
fn gpu_matches_cpu(ctx: &GpuContext, case: &Case, context: &str) {
    let (mut cpu, mut gpu) = trainers(ctx, case);
    let want = run(&mut cpu, case);
    assert_within(context, &run(&mut gpu, case), &want, TOLERANCE);
}

/// Where the generic persistent kernels run several sequences a workgroup (a multiple of
/// four units, too wide for the register recurrence on subgroup adapters, and four sequences
/// or more): tiles of four (six sequences: a whole tile and a half-empty one) and of eight
/// (eighteen: two whole and one of two), lengths from 1 to T, two directions, a given state
/// and d h_n, against the CPU.
fn sequence_tiles_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("sequence_tiles_match_cpu") else {
        return;
    };
    let hidden = TILED_HIDDEN;
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 3, hidden)
    };
    let seq_len = 7;
    for batch in [6, 18] {
        let lengths = (0..batch).map(|n| [7, 3, 7, 1, 5, 6][n % 6]).collect();
        let case = lengths_case(&config, seq_len, lengths, true);
        let context = format!("{} H={hidden} N={batch}", mode_name(mode));
        gpu_matches_cpu(&ctx, &case, &context);
    }
}
for_each_mode!(sequence_tiles, sequence_tiles_match_cpu);

/// Tiles over many dispatches: llvmpipe stops an invocation after 65,535 loop iterations, and
/// a tile runs a loop per sequence and unit besides the sums (a frame past its length more:
/// `backward_unit`'s loop over the gates), so the steps one dispatch runs must count them.
/// Sixteen sequences (tiles of eight) over 420 steps, all but one ending at the first; and
/// two (one workgroup each, the vec4 kernels without tiles) the same way.
fn sequence_tiles_cross_dispatches(mode: RnnMode) {
    let Some(ctx) = gpu("sequence_tiles_cross_dispatches") else {
        return;
    };
    let hidden = TILED_HIDDEN;
    let config = RnnConfig::new(mode, 2, hidden);
    let seq_len = 420;
    for batch in [16, 2] {
        let mut lengths = vec![1; batch];
        lengths[batch / 3] = seq_len;
        let case = lengths_case(&config, seq_len, lengths, false);
        let context = format!("{} H={hidden} T={seq_len} N={batch}", mode_name(mode));
        gpu_matches_cpu(&ctx, &case, &context);
    }
}
for_each_mode!(sequence_tiles_long, sequence_tiles_cross_dispatches);

/// A gated cell with H ≤ 64 trains in one subgroup (eight units a lane on lavapipe, W_hh
/// loaded from its texture), by `Auto` and `Persistent` alike: against the CPU, and the two
/// bit for bit. H = 64 fills the lanes; H = 44 leaves padding units (and whole padding lanes);
/// a GRU with H = 84 runs in several subgroups (four units a lane, h and dG through workgroup
/// memory). Two directions, lengths from 1 to T, a given state and d h_n (d c_n).
fn one_subgroup_matches_several(mode: RnnMode) {
    let Some(ctx) = gpu("one_subgroup_matches_several") else {
        return;
    };
    let sizes: &[usize] = match mode {
        RnnMode::Rnn(_) => return, // an Elman RNN's state fits one subgroup whatever was asked
        RnnMode::Lstm => &[64, 44],
        RnnMode::Gru => &[64, 44, 84],
    };
    for &hidden in sizes {
        let config = RnnConfig {
            bidirectional: true,
            ..RnnConfig::new(mode, 3, hidden)
        };
        let case = lengths_case(&config, 9, vec![9, 4, 1], true);
        let context = format!("{} H={hidden}", mode_name(mode));
        let (mut cpu, gpu) = trainers(&ctx, &case);
        let mut auto = gpu.with_recurrence(Recurrence::Auto);
        let (_, gpu) = trainers(&ctx, &case);
        let mut persistent = gpu.with_recurrence(Recurrence::Persistent);
        let want = run(&mut cpu, &case);
        let (got_auto, got_persistent) = (run(&mut auto, &case), run(&mut persistent, &case));
        assert_within(&context, &got_auto, &want, TOLERANCE);
        for ((name, a), (_, b)) in got_auto.iter().zip(&got_persistent) {
            assert!(
                a.data() == b.data(),
                "{context}: {name} differs between Auto and Persistent"
            );
        }
    }
}
for_each_mode!(one_subgroup, one_subgroup_matches_several);

/// Gated states too wide for four units a lane split each group of four units over 2, 4 or
/// 8 lanes (on lavapipe: H = 68 and 100 over two, 132 and 256 over four), each lane holding
/// part of K and the parts' sums added by broadcast: against the CPU with two directions, two
/// layers, lengths from 1 to T, a given state and d h_n (d c_n), by `Auto` and `Persistent`
/// alike; and a sequence that crosses the dispatches' 1024 steps.
fn split_groups_match_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("split_groups_match_cpu") else {
        return;
    };
    if matches!(mode, RnnMode::Rnn(_)) {
        return; // an Elman RNN's four units a lane reach H = 256 unsplit
    }
    for (hidden, layers) in [(68, 2), (100, 1), (132, 1), (256, 1)] {
        let config = RnnConfig {
            bidirectional: true,
            num_layers: layers,
            ..RnnConfig::new(mode, 5, hidden)
        };
        let case = lengths_case(&config, 6, vec![6, 3, 1], true);
        let (mut cpu, gpu) = trainers(&ctx, &case);
        let want = run(&mut cpu, &case);
        let mut auto = gpu.with_recurrence(Recurrence::Auto);
        let context = format!("{} H={hidden} layers={layers}", mode_name(mode));
        assert_within(&context, &run(&mut auto, &case), &want, TOLERANCE);
        let (_, gpu) = trainers(&ctx, &case);
        let mut persistent = gpu.with_recurrence(Recurrence::Persistent);
        assert_within(&context, &run(&mut persistent, &case), &want, TOLERANCE);
    }
    let config = RnnConfig::new(mode, 3, 100);
    let case = lengths_case(&config, 1100, vec![1100, 613], true);
    gpu_matches_cpu(&ctx, &case, &format!("{} H=100 T=1100", mode_name(mode)));
}
for_each_mode!(split_groups, split_groups_match_cpu);

/// Checkpointing: under a workspace budget a sequence trains in time chunks (the forward
/// keeps each chunk's start state, the backward recomputes the chunk), with the gradients of
/// the whole sequence: equal to the unchunked ones within 1e-6, and to the CPU's.
fn chunked_training_matches_whole(mode: RnnMode) {
    let Some(ctx) = gpu("chunked_training_matches_whole") else {
        return;
    };
    let case = chunked_case(mode);
    let (mut cpu, mut whole, mut chunked) = chunked_trainers(&ctx, &case);
    assert_eq!(
        chunked.time_chunk(37, 3).unwrap(),
        8,
        "5 chunks, the last of 5 steps"
    );
    let want = run(&mut whole, &case);
    let cpu_want = run(&mut cpu, &case);
    {
        let got = run(&mut chunked, &case);
        let context = |against: &str| format!("{}: chunked against {against}", mode_name(mode));
        assert_within(&context("whole"), &got, &want, 1e-6);
        assert_within(&context("CPU"), &got, &cpu_want, TOLERANCE);
    }
    // Again, after zero_grad: the same gradients (nothing of the first run left behind).
    chunked.zero_grad().unwrap();
    let again = run(&mut chunked, &case);
    assert!(
        again
            .iter()
            .zip(&want)
            .all(|((_, g), (_, w))| error(g, w) <= 1e-6)
    );
}
for_each_mode!(chunked, chunked_training_matches_whole);

/// A loss's backward returns no input gradients and skips computing them (layer 0's dX, and
/// d h0 in the sequence's first chunk), but not what the parameters' gradients need: the
/// carries between chunks. Chunked and whole, against the CPU, from a given h0.
fn chunked_loss_backward_matches_whole(mode: RnnMode) {
    let Some(ctx) = gpu("chunked_loss_backward_matches_whole") else {
        return;
    };
    let case = chunked_case(mode);
    let (mut cpu, mut whole, mut chunked) = chunked_trainers(&ctx, &case);
    let want = loss_gradients(&mut whole, &case);
    let cpu_want = loss_gradients(&mut cpu, &case);
    let got = loss_gradients(&mut chunked, &case);
    let context = |against: &str| format!("{}: chunked against {against}", mode_name(mode));
    assert_within(&context("whole"), &got, &want, 1e-6);
    assert_within(&context("CPU"), &got, &cpu_want, TOLERANCE);
    assert_within(
        &format!("{}: whole", mode_name(mode)),
        &want,
        &cpu_want,
        TOLERANCE,
    );
}
for_each_mode!(chunked_loss, chunked_loss_backward_matches_whole);

/// The loss (MSE against `case.d_output` as the target) and the parameters' gradients of
/// `forward_on_device` + `backward_loss` from the case's h0.
fn loss_gradients(model: &mut impl Train, case: &Case) -> Vec<(String, Tensor)> {
    let p = &case.problem;
    let state = p.state().expect("the case has an initial state");
    let hx = Hx {
        h0: &state.h0,
        c0: state.c0.as_ref(),
    };
    let tape = model
        .forward_on_device(&p.input(), p.lengths.as_deref(), InitialState::Given(hx))
        .unwrap();
    let loss = Loss::Mse(Reduction::Mean);
    model
        .backward_loss(tape, loss, Target::Values(&case.d_output))
        .unwrap();
    let value = Tensor::new(vec![model.last_loss().unwrap()], &[1]).unwrap();
    let mut all = vec![("loss".to_string(), value)];
    all.extend(model.gradients().unwrap());
    all
}

/// The CPU trainer of `case`, and two GPU trainers: one on whole sequences, one under the
/// workspace budget of 8 steps.
fn chunked_trainers(ctx: &GpuContext, case: &Case) -> (CpuTrainer, GpuTrainer, GpuTrainer) {
    let (cpu, whole) = trainers(ctx, case);
    let (_, mut chunked) = trainers(ctx, case);
    let budget = chunked.workspace_bytes(8, 3).unwrap();
    chunked.set_workspace_budget(Some(budget));
    (cpu, whole, chunked)
}

/// Two layers (an LSTM with proj_size), batch-first, lengths, a given state and a head, over
/// 37 steps: 5 chunks of 8 under the budget of 8 steps.
fn chunked_case(mode: RnnMode) -> Case {
    let config = RnnConfig {
        num_layers: 2,
        batch_first: true,
        proj_size: if mode == RnnMode::Lstm { 3 } else { 0 },
        ..RnnConfig::new(mode, 3, 8)
    };
    let mut problem = Problem::new(config.clone(), 37, 3, 17);
    problem.with_state = true;
    problem.lengths = Some(vec![37, 9, 20]);
    let mut rng = Rng(3);
    let head = Linear {
        in_features: config.output_size(),
        out_features: 2,
        weight: rng.values(2 * config.output_size()),
        bias: Some(rng.values(2)),
    };
    Case {
        d_output: rng.tensor(&[3, 37, 2]),
        d_h_n: Some(rng.tensor(&[2, 3, config.state_size()])),
        d_c_n: (mode == RnnMode::Lstm).then(|| rng.tensor(&[2, 3, 8])),
        problem,
        head: Some(head),
    }
}

/// What checkpointing cannot do is a typed error: a bidirectional model over the budget (its
/// reverse direction starts at the end), a budget below two steps.
fn chunking_limits_are_errors(mode: RnnMode) {
    let Some(ctx) = gpu("chunking_limits_are_errors") else {
        return;
    };
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 3, 8)
    };
    let weights = wgpu_rnn::RnnWeights::init(&config, 1).unwrap();
    let mut model = GpuTrainer::new(&ctx, config.clone(), &weights).unwrap();
    let budget = model.workspace_bytes(8, 2).unwrap();
    model.set_workspace_budget(Some(budget));
    let input = Rng(1).tensor(&[20, 2, 3]);
    assert!(matches!(
        model.forward_train(&input, None, None),
        Err(RnnError::ExceedsLimits {
            limit: wgpu_rnn::Limit::WorkspaceBudget,
            ..
        })
    ));
    let config = RnnConfig::new(mode, 3, 8);
    let weights = wgpu_rnn::RnnWeights::init(&config, 1).unwrap();
    let mut model = GpuTrainer::new(&ctx, config, &weights).unwrap();
    model.set_workspace_budget(Some(64));
    assert!(matches!(
        model.forward_train(&input, None, None),
        Err(RnnError::ExceedsLimits { .. })
    ));
}
for_each_mode!(chunking_limits, chunking_limits_are_errors);

/// A head on the final state (sequence classification): the GPU against the CPU over random
/// configurations (layers, directions, lengths, given h0, chunked or not).
fn state_head_matches_cpu(mode: RnnMode) {
    let Some(ctx) = gpu("state_head_matches_cpu") else {
        return;
    };
    for seed in 0..8 {
        let mut case = random_case(mode, 500 + seed);
        if case.problem.unbatched {
            continue;
        }
        let config = case.problem.config.clone();
        let mut rng = Rng(seed);
        let head = Linear {
            in_features: config.output_size(),
            out_features: 3,
            weight: rng.values(3 * config.output_size()),
            bias: Some(rng.values(3)),
        };
        let batch = case.problem.batch;
        case.d_output = rng.tensor(&[batch, 3]);
        let weights = case.problem.weights();
        let mut cpu = CpuTrainer::new(config.clone(), &weights)
            .unwrap()
            .with_state_head(&head)
            .unwrap();
        let mut gpu_model = GpuTrainer::new(&ctx, config.clone(), &weights)
            .unwrap()
            .with_state_head(&head)
            .unwrap();
        if seed % 3 == 2 && !config.bidirectional {
            let budget = gpu_model.workspace_bytes(2, batch).unwrap();
            gpu_model.set_workspace_budget(Some(budget));
        }
        let want = run(&mut cpu, &case);
        let got = run(&mut gpu_model, &case);
        let context = format!("{} seed {seed} {:?}", mode_name(mode), case.problem);
        assert_within(&context, &got, &want, TOLERANCE);
        assert_eq!(
            want[0].1.shape(),
            &[batch, 3],
            "the output is one row per sequence"
        );
    }
}
for_each_mode!(state_head, state_head_matches_cpu);

/// A sequence whose inputs and outputs together exceed a storage binding (the device allows
/// 1 MiB here) trains with a loss on the device: the loss binds only its part of the
/// sequence's buffer, the workspace runs in chunks; the same loss as the CPU's.
#[test]
fn long_sequences_train_with_a_device_loss() {
    if gpu("long_sequences_train_with_a_device_loss").is_none() {
        return;
    }
    let ctx = context_with(|limits| wgpu::Limits {
        max_storage_buffer_binding_size: 1 << 20,
        ..limits
    })
    .unwrap();
    let config = RnnConfig::rnn(256, 4);
    let weights = wgpu_rnn::RnnWeights::init(&config, 3).unwrap();
    let input = Rng(6).tensor(&[1000, 2, 256]);
    let target = Rng(7).tensor(&[1000, 2, 4]);
    let mut gpu_model = GpuTrainer::new(&ctx, config.clone(), &weights).unwrap();
    assert!(
        gpu_model.time_chunk(1000, 2).unwrap() < 1000,
        "the workspace runs in chunks"
    );
    let mut cpu = CpuTrainer::new(config, &weights).unwrap();
    let mut losses = Vec::new();
    for model in [&mut cpu as &mut dyn LossOnce, &mut gpu_model] {
        losses.push(model.loss_once(&input, &target));
    }
    let (a, b) = (losses[0], losses[1]);
    assert!(
        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
        "CPU {a} vs GPU {b}"
    );
}

/// One MSE loss and its backward on the device, the loss read back.
trait LossOnce {
    fn loss_once(&mut self, input: &Tensor, target: &Tensor) -> f32;
}

impl<T: Train> LossOnce for T {
    fn loss_once(&mut self, input: &Tensor, target: &Tensor) -> f32 {
        let tape = self
            .forward_on_device(input, None, InitialState::Zeros)
            .unwrap();
        let loss = Loss::Mse(Reduction::Mean);
        self.backward_loss(tape, loss, Target::Values(target))
            .unwrap();
        self.last_loss().unwrap()
    }
}

/// A small model's forward and backward run as one dispatch each, and `train_step` its whole
/// iteration (forward, loss, backward) as one where it pays (an Elman RNN's or a GRU's;
/// `Recurrence::Auto`), with the results of their
/// separate dispatches (`Recurrence::Persistent`), bit for bit: losses (MSE and
/// cross-entropy, mean and sum, lengths or none), gradients, and the parameters after a few
/// steps; with a head and without. Sizes where the recurrence fits one subgroup and where it
/// does not (the programs then stay separate dispatches).
fn one_dispatch_programs_match(mode: RnnMode) {
    let Some(ctx) = gpu("one_dispatch_programs_match") else {
        return;
    };
    let cases = [(8, 1, 49, true), (16, 3, 11, true), (12, 2, 9, false)];
    for (hidden, batch, steps, with_head) in cases
        .into_iter()
        .chain([(20, 2, 7, true), (64, 1, 5, true)])
    {
        let config = RnnConfig {
            batch_first: true,
            ..RnnConfig::new(mode, 3, hidden)
        };
        let mut rng = Rng(hidden as u64);
        let weights = wgpu_rnn::RnnWeights::init(&config, 7).unwrap();
        let out = if with_head { 3 } else { hidden };
        let head = Linear {
            in_features: hidden,
            out_features: out,
            weight: rng.values(out * hidden),
            bias: Some(rng.values(out)),
        };
        let input = rng.tensor(&[batch, steps, 3]);
        let values = rng.tensor(&[batch, steps, out]);
        let classes: Vec<usize> = (0..batch * steps).map(|i| (i * 7 + 1) % out).collect();
        let lengths: Vec<usize> = (0..batch).map(|n| steps - n % steps).collect();
        let mut results = Vec::new();
        for recurrence in [Recurrence::Auto, Recurrence::Persistent] {
            let model = GpuTrainer::new(&ctx, config.clone(), &weights).unwrap();
            let mut model = match with_head {
                true => model.with_head(&head).unwrap(),
                false => model,
            }
            .with_recurrence(recurrence);
            let mut optimizer = model.optimizer(wgpu_rnn::Adam::new(0.01).into()).unwrap();
            let mut seen = Vec::new();
            for i in 0..4 {
                let (loss, target) = match i {
                    0 => (Loss::Mse(Reduction::Mean), Target::Values(&values)),
                    1 => (
                        Loss::CrossEntropy(Reduction::Sum),
                        Target::Classes(&classes),
                    ),
                    2 => (Loss::Mse(Reduction::Sum), Target::Values(&values)),
                    _ => (
                        Loss::CrossEntropy(Reduction::Mean),
                        Target::Classes(&classes),
                    ),
                };
                let batch = wgpu_rnn::Batch {
                    input: &input,
                    lengths: (i % 2 == 1).then_some(&lengths[..]),
                    state: if i == 0 {
                        InitialState::Zeros
                    } else {
                        InitialState::Carried
                    },
                    target,
                };
                model.train_step(batch, loss, &mut optimizer, None).unwrap();
                seen.push((format!("step {i} loss"), vec![model.last_loss().unwrap()]));
                for (name, t) in model.gradients().unwrap() {
                    seen.push((format!("step {i} d {name}"), t.data().to_vec()));
                }
            }
            // A refused target: a typed error, nothing run (the parameters stay).
            let before = model.parameters().unwrap();
            let out_of_range = vec![out; batch * steps];
            let wrong_shape = rng.tensor(&[batch, steps, out + 1]);
            for (loss, target) in [
                (
                    Loss::CrossEntropy(Reduction::Mean),
                    Target::Classes(&out_of_range),
                ),
                (Loss::Mse(Reduction::Mean), Target::Values(&wrong_shape)),
            ] {
                let refused = wgpu_rnn::Batch {
                    input: &input,
                    lengths: None,
                    state: InitialState::Zeros,
                    target,
                };
                assert!(matches!(
                    model.train_step(refused, loss, &mut optimizer, None),
                    Err(RnnError::InvalidConfig(_) | RnnError::ShapeMismatch { .. })
                ));
            }
            assert_eq!(model.parameters().unwrap(), before);
            for (name, t) in before {
                seen.push((name, t.data().to_vec()));
            }
            results.push(seen);
        }
        let context = format!(
            "{} H={hidden} N={batch} T={steps} head {with_head}",
            mode_name(mode)
        );
        for ((name, one), (_, separate)) in results[0].iter().zip(&results[1]) {
            assert!(
                one == separate,
                "{context}: {name} differs: {one:?} vs {separate:?}"
            );
        }
    }
}
for_each_mode!(one_dispatch, one_dispatch_programs_match);
