//! The CPU reference backward (BPTT), `CpuRnn::backward_reference`: against PyTorch's
//! autograd (every fixture with gradients), against central finite differences of the CPU
//! forward (every mode over several flag combinations), zero gradients past each sequence's
//! length, and typed errors for mis-shaped upstream gradients.

mod gradient_check;
mod support;

use gradient_check::{Loss, finite_difference_check};
use support::{Problem, cases_in, mode_name};
use wgpu_rnn::compare::scaled_max_error;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{CpuRnn, Gradients, Hx, RnnConfig, RnnError, RnnMode, RnnWeights, Tensor};

/// The fixtures' tolerance for the CPU path (tests/fixtures/torch_train/README.md).
const FIXTURE_TOLERANCE: f64 = 1e-5;

/// The fixtures' error measure: `max|x − ref| / max(1, max|ref|)`; a shape mismatch is infinite.
fn fixture_error(got: &Tensor, want: &Tensor) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    scaled_max_error(got.data(), want.data())
}

/// Every gradient of `grads` against the case's: `(tensor name, error)` for each.
fn fixture_errors(
    case: &ReferenceCase,
    grads: &Gradients,
    rename: impl Fn(&str) -> String,
) -> Vec<(String, f64)> {
    let input_name = if case.has("grad_input") {
        "grad_input"
    } else {
        "grad_inputs"
    };
    let mut pairs = vec![(input_name.to_string(), grads.d_input.clone())];
    if case.has("grad_h0") {
        pairs.push(("grad_h0".into(), grads.d_h0.clone()));
    }
    if case.has("grad_c0") {
        pairs.push((
            "grad_c0".into(),
            grads.d_c0.clone().expect("an LSTM has d_c0"),
        ));
    }
    for (name, tensor) in &grads.params {
        pairs.push((format!("grad.{}", rename(name)), tensor.clone()));
    }
    pairs
        .into_iter()
        .map(|(name, got)| {
            let want = case.tensor(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            // States may be stored without the (D·L) row of a cell: compare the values.
            let got = Tensor::new(got.into_data(), want.shape()).unwrap();
            let error = fixture_error(&got, &want);
            (name, error)
        })
        .collect()
}

/// The gradients of an nn.RNN / nn.LSTM / nn.GRU fixture, computed from its upstream ones.
fn model_fixture(case: &ReferenceCase) -> Vec<(String, f64)> {
    let config = case.config().unwrap();
    let model = CpuRnn::new(config.clone(), &case.weights(&config).unwrap()).unwrap();
    let input = case.tensor("input").unwrap();
    let h0 = case.has("h0").then(|| case.tensor("h0").unwrap());
    let c0 = case.has("c0").then(|| case.tensor("c0").unwrap());
    let hx = h0.as_ref().map(|h0| Hx {
        h0,
        c0: c0.as_ref(),
    });
    let lengths = case.lengths().unwrap();
    let d_c_n = case
        .has("grad_c_n")
        .then(|| case.tensor("grad_c_n").unwrap());
    let grads = model
        .backward_reference(
            &input,
            lengths.as_deref(),
            hx,
            &case.tensor("grad_output").unwrap(),
            &case.tensor("grad_h_n").unwrap(),
            d_c_n.as_ref(),
        )
        .unwrap();
    fixture_errors(case, &grads, str::to_string)
}

/// An nn.RNNCell fixture run for S steps is a one-layer nn.RNN over S frames whose output is
/// `h_steps`: its upstream gradient is `grad_h_steps` and h_n's is zero.
fn cell_fixture(case: &ReferenceCase) -> Vec<(String, f64)> {
    let cell = case.cell_config().unwrap();
    let config = RnnConfig {
        bias: cell.bias,
        ..RnnConfig::new(cell.mode, cell.input_size, cell.hidden_size)
    };
    let weights = RnnWeights::new(&config, vec![case.cell_weights(&cell).unwrap()]).unwrap();
    let model = CpuRnn::new(config, &weights).unwrap();
    let inputs = case.tensor("inputs").unwrap();
    let batch = inputs.shape()[1];
    let h0 = case.tensor("h0").unwrap();
    let h0 = Tensor::new(h0.into_data(), &[1, batch, cell.hidden_size]).unwrap();
    let d_h_n = Tensor::zeros(&[1, batch, cell.hidden_size]).unwrap();
    let grads = model
        .backward_reference(
            &inputs,
            None,
            Some(Hx::h0(&h0)),
            &case.tensor("grad_h_steps").unwrap(),
            &d_h_n,
            None,
        )
        .unwrap();
    fixture_errors(case, &grads, |name| {
        name.trim_end_matches("_l0").to_string()
    })
}

/// Checks every case of a family, printing the worst error of each; returns the family's worst.
fn check_family(
    cases: &[(String, ReferenceCase)],
    run: impl Fn(&ReferenceCase) -> Vec<(String, f64)>,
) -> f64 {
    assert!(!cases.is_empty(), "no fixtures with gradients found");
    let mut family_worst = 0.0f64;
    let mut failures = Vec::new();
    for (name, case) in cases {
        let errors = run(case);
        let (worst_name, worst) = errors
            .iter()
            .cloned()
            .fold((String::new(), 0.0), |a, b| if b.1 > a.1 { b } else { a });
        eprintln!(
            "{name}: {} tensors, worst {worst:.2e} ({worst_name})",
            errors.len()
        );
        family_worst = family_worst.max(worst);
        failures.extend(
            errors
                .into_iter()
                .filter(|(_, e)| *e > FIXTURE_TOLERANCE)
                .map(|(t, e)| format!("{name}: {t} error {e:.3e}")),
        );
    }
    assert!(
        failures.is_empty(),
        "beyond {FIXTURE_TOLERANCE}:\n{}",
        failures.join("\n")
    );
    family_worst
}

#[test]
fn torch_rnn_fixtures_gradients() {
    let cases: Vec<_> = cases_in("tests/fixtures")
        .into_iter()
        .filter(|(_, c)| c.kind() == "rnn" && c.has("grad_input"))
        .collect();
    assert!(
        cases.len() >= 14,
        "expected the 14 nn.RNN gradient fixtures"
    );
    let worst = check_family(&cases, model_fixture);
    eprintln!("nn.RNN fixtures: worst gradient error {worst:.2e}");
}

#[test]
fn torch_rnn_cell_fixture_gradients() {
    let cases: Vec<_> = cases_in("tests/fixtures")
        .into_iter()
        .filter(|(_, c)| c.kind() == "rnn_cell")
        .collect();
    let worst = check_family(&cases, cell_fixture);
    eprintln!("nn.RNNCell fixture: worst gradient error {worst:.2e}");
}

#[test]
fn torch_gated_fixtures_gradients() {
    let cases = cases_in("tests/fixtures/torch_train/gated_grad");
    assert_eq!(cases.len(), 12, "the 12 LSTM/GRU gradient fixtures");
    let (lstm, gru): (Vec<_>, Vec<_>) = cases.into_iter().partition(|(n, _)| n.starts_with("lstm"));
    for (kind, family) in [("nn.LSTM", lstm), ("nn.GRU", gru)] {
        let worst = check_family(&family, model_fixture);
        eprintln!("{kind} fixtures: worst gradient error {worst:.2e}");
    }
}

/// Small problems of `mode` over the flag combinations the forward has.
fn fd_problems(mode: RnnMode) -> Vec<(&'static str, Problem)> {
    let base = RnnConfig::new(mode, 3, 4);
    let mut problems = Vec::new();
    let mut stacked = Problem::new(
        RnnConfig {
            num_layers: 2,
            bidirectional: true,
            ..base.clone()
        },
        4,
        3,
        11,
    );
    stacked.with_state = true;
    stacked.lengths = Some(vec![4, 2, 3]);
    problems.push(("2 layers, bidirectional, lengths, h0/c0", stacked));
    let mut batch_first = Problem::new(
        RnnConfig {
            batch_first: true,
            bias: false,
            ..base.clone()
        },
        3,
        2,
        12,
    );
    batch_first.lengths = Some(vec![1, 3]);
    problems.push(("batch_first, no bias, lengths, zero state", batch_first));
    let mut unbatched = Problem::new(
        RnnConfig {
            bidirectional: true,
            ..base.clone()
        },
        5,
        1,
        13,
    );
    unbatched.unbatched = true;
    unbatched.with_state = true;
    problems.push(("unbatched, bidirectional, h0/c0", unbatched));
    if mode == RnnMode::Lstm {
        let mut projected = Problem::new(
            RnnConfig {
                num_layers: 2,
                proj_size: 2,
                bidirectional: true,
                ..base
            },
            4,
            2,
            14,
        );
        projected.with_state = true;
        projected.lengths = Some(vec![2, 4]);
        problems.push((
            "proj_size 2, 2 layers, bidirectional, lengths, h0/c0",
            projected,
        ));
    }
    problems
}

fn matches_finite_differences(mode: RnnMode) {
    let mut report = Vec::new();
    for (what, problem) in fd_problems(mode) {
        let (failures, worst) = finite_difference_check(problem);
        eprintln!(
            "{} {what}: worst |fd - analytic| {worst:.2e}",
            mode_name(mode)
        );
        report.extend(failures.into_iter().map(|f| format!("{what}: {f}")));
    }
    let shown: Vec<_> = report.iter().take(20).collect();
    assert!(
        report.is_empty(),
        "{} mismatches:\n{shown:#?}",
        report.len()
    );
}

for_each_mode!(finite_differences, matches_finite_differences);

/// No gradient reaches a frame at or past its sequence's length (PackedSequence semantics),
/// and every frame within the length gets one; whatever the upstream gradient of the padded
/// output frames says.
fn nothing_flows_past_lengths(mode: RnnMode) {
    for batch_first in [false, true] {
        let config = RnnConfig {
            num_layers: 2,
            bidirectional: true,
            batch_first,
            ..RnnConfig::new(mode, 3, 5)
        };
        let lengths = vec![6, 1, 4, 3];
        let (steps, batch) = (6, lengths.len());
        let mut problem = Problem::new(config.clone(), steps, batch, 21);
        problem.with_state = true;
        problem.lengths = Some(lengths.clone());
        let loss = Loss::new(problem);
        let grads = loss.backward();
        let d = grads.d_input.data();
        let f = config.input_size;
        for (n, &length) in lengths.iter().enumerate() {
            for t in 0..steps {
                let at = if batch_first {
                    n * steps + t
                } else {
                    t * batch + n
                } * f;
                let frame = &d[at..at + f];
                if t >= length {
                    assert!(
                        frame.iter().all(|&g| g == 0.0),
                        "{}: sequence {n}, frame {t} past length {}: {frame:?}",
                        mode_name(mode),
                        length
                    );
                } else {
                    assert!(frame.iter().any(|&g| g != 0.0), "frame {t} of {n} got none");
                }
            }
        }
    }
}

for_each_mode!(zero_past_lengths, nothing_flows_past_lengths);

/// Mis-shaped upstream gradients are typed errors, never a panic.
fn wrong_upstream_shapes_are_errors(mode: RnnMode) {
    let config = RnnConfig::new(mode, 3, 4);
    let problem = Problem::new(config.clone(), 5, 2, 31);
    let model = CpuRnn::new(config.clone(), &problem.weights()).unwrap();
    let input = problem.input();
    let good_output = Tensor::zeros(&[5, 2, 4]).unwrap();
    let good_h_n = Tensor::zeros(&[1, 2, 4]).unwrap();
    let good_c_n = (mode == RnnMode::Lstm).then(|| Tensor::zeros(&[1, 2, 4]).unwrap());
    let bad = [
        Tensor::zeros(&[5, 2, 5]).unwrap(),
        Tensor::zeros(&[2, 5, 4]).unwrap(),
        Tensor::zeros(&[10, 4]).unwrap(),
        Tensor::zeros(&[2, 2, 4]).unwrap(),
        Tensor::zeros(&[1, 4]).unwrap(),
    ];
    let call = |d_output: &Tensor, d_h_n: &Tensor, d_c_n: Option<&Tensor>| {
        support::no_panic(|| model.backward_reference(&input, None, None, d_output, d_h_n, d_c_n))
            .unwrap_or_else(|panic| panic!("{}: panicked: {panic}", mode_name(mode)))
    };
    call(&good_output, &good_h_n, good_c_n.as_ref()).expect("the right shapes work");
    for wrong in &bad {
        for result in [
            call(wrong, &good_h_n, good_c_n.as_ref()),
            call(&good_output, wrong, good_c_n.as_ref()),
        ] {
            assert!(
                matches!(result, Err(RnnError::ShapeMismatch { .. })),
                "{}: {:?} accepted: {result:?}",
                mode_name(mode),
                wrong.shape()
            );
        }
        // A c_n gradient is an LSTM's only, and then must have c_n's shape.
        let result = call(&good_output, &good_h_n, Some(wrong));
        assert!(
            matches!(result, Err(RnnError::ShapeMismatch { .. })),
            "{result:?}"
        );
    }
    if mode != RnnMode::Lstm {
        let result = call(&good_output, &good_h_n, Some(&good_h_n));
        assert!(matches!(
            result,
            Err(RnnError::ShapeMismatch { what: "d_c_n", .. })
        ));
    }
}

for_each_mode!(upstream_shape_errors, wrong_upstream_shapes_are_errors);
