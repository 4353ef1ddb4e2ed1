//! The CPU reference backward (BPTT), `CpuRnn::backward_reference`: against PyTorch's
//! autograd (every fixture with gradients), against central finite differences of the CPU
//! forward (every mode over several flag combinations), zero gradients past each sequence's
//! length, and typed errors for mis-shaped upstream gradients.

mod support;

use support::cases_in;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{CpuRnn, Gradients, Hx, RnnConfig, RnnWeights, Tensor};

/// The fixtures' tolerance for the CPU path (tests/fixtures/torch_train/README.md).
const FIXTURE_TOLERANCE: f64 = 1e-5;

/// The fixtures' error measure: `max|x − ref| / max(1, max|ref|)`; a shape mismatch is infinite.
fn fixture_error(got: &Tensor, want: &Tensor) -> f64 {
    if got.shape() != want.shape() {
        return f64::INFINITY;
    }
    let scale = want
        .data()
        .iter()
        .fold(1.0f64, |m, &v| m.max(f64::from(v).abs()));
    let worst = got
        .data()
        .iter()
        .zip(want.data())
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs())
        .fold(
            0.0f64,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        );
    worst / scale
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
