//! Every `nn.LSTM` and `nn.GRU` case made by PyTorch (tests/fixtures/torch_gated, see its
//! README.md), packed ones included, must match on the CPU path: output, h_n and (LSTM) c_n
//! within 1e-5 max abs error. Also: weight loading and its errors (each naming the tensor),
//! PyTorch's configuration rules, typed errors for bad forward arguments, values checkable by
//! hand, and the layouts (batch-first, unbatched, packed) agreeing with each other.

mod support;

use std::path::PathBuf;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{
    CpuGatedRnn, GateKind, GatedCellConfig, GatedConfig, GatedDirectionWeights, GatedOutput,
    GatedRnn, GatedWeights, GruCell, LstmCell, RnnError, Tensor,
};

const CPU_TOLERANCE: f64 = 1e-5;

#[test]
fn cpu_path_matches_pytorch() {
    let cases = support::gated_cases();
    // The fixture README lists 6 LSTM cases (one packed, one projected) and 5 GRU cases (one
    // packed): a missing file must fail, not shrink the test.
    assert_eq!(cases.len(), 11, "gated fixtures went missing");
    let kinds = |kind| {
        cases
            .iter()
            .filter(|(_, case)| case.gated_config().unwrap().kind == kind)
            .count()
    };
    assert_eq!((kinds(GateKind::Lstm), kinds(GateKind::Gru)), (6, 5));
    let mut failures = Vec::new();
    let (mut worst_output, mut worst_h_n, mut worst_c_n) = (0.0f64, 0.0f64, 0.0f64);
    for (name, case) in &cases {
        let config = case.gated_config().unwrap();
        let weights = case.gated_weights(&config).unwrap();
        let model = CpuGatedRnn::new(config, weights).unwrap();
        let check = case.check_gated(&model, CPU_TOLERANCE).unwrap();
        let c_n = check
            .c_n
            .map_or("-".to_string(), |c| format!("{:.2e}", c.max_abs));
        println!(
            "cpu {name:<20} output {:.2e}  h_n {:.2e}  c_n {c_n}",
            check.output.max_abs, check.h_n.max_abs
        );
        worst_output = worst_output.max(check.output.max_abs);
        worst_h_n = worst_h_n.max(check.h_n.max_abs);
        worst_c_n = worst_c_n.max(check.c_n.map_or(0.0, |c| c.max_abs));
        if !check.passed() {
            failures.push(format!(
                "{name}: output {}; h_n {}; c_n {:?}",
                check.output, check.h_n, check.c_n
            ));
        }
    }
    println!(
        "cpu worst: output {worst_output:.2e}, h_n {worst_h_n:.2e}, c_n {worst_c_n:.2e} \
         (tolerance {CPU_TOLERANCE:e})"
    );
    assert!(
        failures.is_empty(),
        "cases off tolerance:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Loading weights: PyTorch's names, round trips, and errors naming the tensor.

/// One tensor of a test file: name, dtype, shape, little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_entry(name: String, shape: Vec<usize>, data: &[f32]) -> Entry {
    let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name, Dtype::F32, shape, bytes)
}

/// The `state_dict` PyTorch would save for `weights`, every name after `prefix`.
fn state_dict(config: &GatedConfig, weights: &GatedWeights, prefix: &str) -> Vec<Entry> {
    let (d, rows, h) = (
        config.num_directions(),
        config.gate_size(),
        config.hidden_size,
    );
    let mut entries = Vec::new();
    for (index, unit) in weights.units().iter().enumerate() {
        let layer = index / d;
        let suffix = if index % d == 0 {
            format!("l{layer}")
        } else {
            format!("l{layer}_reverse")
        };
        let name = |part: &str| format!("{prefix}{part}_{suffix}");
        let input = config.layer_input_size(layer);
        entries.push(f32_entry(
            name("weight_ih"),
            vec![rows, input],
            &unit.weight_ih,
        ));
        entries.push(f32_entry(
            name("weight_hh"),
            vec![rows, config.state_size()],
            &unit.weight_hh,
        ));
        if let (Some(b_ih), Some(b_hh)) = (&unit.bias_ih, &unit.bias_hh) {
            entries.push(f32_entry(name("bias_ih"), vec![rows], b_ih));
            entries.push(f32_entry(name("bias_hh"), vec![rows], b_hh));
        }
        if let Some(w_hr) = &unit.weight_hr {
            entries.push(f32_entry(
                name("weight_hr"),
                vec![config.proj_size, h],
                w_hr,
            ));
        }
    }
    entries
}

fn serialize(entries: &[Entry]) -> Vec<u8> {
    let views = entries.iter().map(|(name, dtype, shape, data)| {
        let data: &[u8] = data;
        (
            name.clone(),
            TensorView::new(*dtype, shape.clone(), data).unwrap(),
        )
    });
    safetensors::serialize(views, None).unwrap()
}

/// `torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)`.
fn projected_lstm() -> GatedConfig {
    GatedConfig {
        num_layers: 2,
        bidirectional: true,
        proj_size: 2,
        ..GatedConfig::lstm(3, 6)
    }
}

/// `torch.nn.GRU(3, 4, num_layers=2)`.
fn two_layer_gru() -> GatedConfig {
    GatedConfig {
        num_layers: 2,
        ..GatedConfig::gru(3, 4)
    }
}

#[test]
fn weights_round_trip_through_a_state_dict_with_prefix() {
    for config in [projected_lstm(), two_layer_gru()] {
        let weights = GatedWeights::init(&config, 3).unwrap();
        let bytes = serialize(&state_dict(&config, &weights, "model.rnn."));
        let loaded = GatedWeights::from_safetensors(&config, &bytes, "model.rnn.").unwrap();
        assert_eq!(loaded, weights, "{:?}", config.kind);
        // PyTorch's init bound, 1/√H, for every parameter.
        let bound = 1.0 / (config.hidden_size as f32).sqrt();
        for unit in weights.units() {
            let all = unit.weight_ih.iter().chain(&unit.weight_hh);
            assert!(
                all.chain(unit.weight_hr.iter().flatten())
                    .all(|v| v.abs() <= bound)
            );
        }
    }
}

fn names(e: &RnnError, tensor: &str) -> bool {
    matches!(e, RnnError::Weights { name, .. } if name == tensor)
}

/// A case of bad input: what it is, what it returned, and which error it must be.
type ErrorCase<'a> = (&'a str, wgpu_rnn::Result<()>, &'a dyn Fn(&RnnError) -> bool);

/// Runs each (description, result, expectation) and fails listing every case that succeeded
/// or returned the wrong error.
fn expect_errors(cases: Vec<ErrorCase<'_>>) {
    let mut wrong = Vec::new();
    for (name, result, expect) in cases {
        match result {
            Err(e) if expect(&e) => println!("{name:<40} -> {e}"),
            Err(e) => wrong.push(format!("{name}: unexpected error {e:?}")),
            Ok(()) => wrong.push(format!("{name}: succeeded")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn bad_weight_files_are_rejected_naming_the_tensor() {
    let lstm = projected_lstm();
    let lstm_dict = state_dict(&lstm, &GatedWeights::init(&lstm, 1).unwrap(), "lstm.");
    let gru = two_layer_gru();
    let gru_dict = state_dict(&gru, &GatedWeights::init(&gru, 1).unwrap(), "");
    let edited = |dict: &[Entry], edit: &dyn Fn(&mut Vec<Entry>)| {
        let mut dict = dict.to_vec();
        edit(&mut dict);
        serialize(&dict)
    };
    let load = |config: &GatedConfig, bytes: Vec<u8>, prefix: &str| {
        GatedWeights::from_safetensors(config, &bytes, prefix).map(|_| ())
    };
    let position = |dict: &[Entry], name: &str| dict.iter().position(|e| e.0 == name).unwrap();
    let no_proj = GatedConfig {
        proj_size: 0,
        ..lstm.clone()
    };
    expect_errors(vec![
        (
            "missing weight_hr (proj_size > 0)",
            load(
                &lstm,
                edited(&lstm_dict, &|d| {
                    d.retain(|e| e.0 != "lstm.weight_hr_l1_reverse")
                }),
                "lstm.",
            ),
            &|e| names(e, "lstm.weight_hr_l1_reverse"),
        ),
        (
            "a projected file loaded with proj_size = 0",
            load(&no_proj, serialize(&lstm_dict), "lstm."),
            // Without a projection weight_hh would be (4H, H): that is checked first.
            &|e| names(e, "lstm.weight_hh_l0"),
        ),
        (
            "stray weight_hr with proj_size = 0",
            load(
                &no_proj,
                edited(
                    &state_dict(&no_proj, &GatedWeights::init(&no_proj, 1).unwrap(), ""),
                    &|d| d.push(f32_entry("weight_hr_l0".into(), vec![2, 6], &[0.0; 12])),
                ),
                "",
            ),
            &|e| names(e, "weight_hr_l0"),
        ),
        (
            "weight_hh (4H, H) where the projection makes it (4H, P)",
            load(
                &lstm,
                edited(&lstm_dict, &|d| {
                    let at = position(d, "lstm.weight_hh_l1");
                    d[at] = f32_entry(d[at].0.clone(), vec![24, 6], &[0.0; 24 * 6]);
                }),
                "lstm.",
            ),
            &|e| names(e, "lstm.weight_hh_l1"),
        ),
        (
            "float64 bias",
            load(
                &lstm,
                edited(&lstm_dict, &|d| {
                    let at = position(d, "lstm.bias_hh_l0_reverse");
                    d[at] = (d[at].0.clone(), Dtype::F64, vec![12], vec![0; 96]);
                }),
                "lstm.",
            ),
            &|e| names(e, "lstm.bias_hh_l0_reverse"),
        ),
        (
            "GRU weight_ih with 4 gates",
            load(
                &gru,
                edited(&gru_dict, &|d| {
                    d[0] = f32_entry(d[0].0.clone(), vec![16, 3], &[0.0; 48]);
                }),
                "",
            ),
            &|e| names(e, "weight_ih_l0"),
        ),
        (
            "GRU second layer missing",
            load(
                &gru,
                edited(&gru_dict, &|d| d.retain(|e| !e.0.ends_with("_l1"))),
                "",
            ),
            &|e| names(e, "weight_ih_l1"),
        ),
        (
            "wrong prefix",
            load(&gru, serialize(&gru_dict), "gru."),
            &|e| names(e, "gru.weight_ih_l0"),
        ),
        (
            "bias present with bias = false",
            load(
                &GatedConfig {
                    bias: false,
                    ..gru.clone()
                },
                serialize(&gru_dict),
                "",
            ),
            &|e| names(e, "bias_ih_l0"),
        ),
        (
            "units of another shape given directly",
            GatedWeights::new(
                &GatedConfig::gru(3, 4),
                vec![GatedDirectionWeights {
                    weight_ih: vec![0.0; 12 * 3],
                    weight_hh: vec![0.0; 12 * 4],
                    bias_ih: Some(vec![0.0; 12]),
                    bias_hh: Some(vec![0.0; 12]),
                    weight_hr: Some(vec![0.0; 4]),
                }],
            )
            .map(|_| ()),
            &|e| names(e, "weight_hr_l0"),
        ),
    ]);
}

#[test]
fn invalid_configurations_are_rejected_like_pytorch() {
    let is_config = |e: &RnnError| matches!(e, RnnError::InvalidConfig(_));
    let init = |config: GatedConfig| GatedWeights::init(&config, 0).map(|_| ());
    expect_errors(vec![
        (
            "proj_size = hidden_size",
            init(GatedConfig {
                proj_size: 4,
                ..GatedConfig::lstm(3, 4)
            }),
            &is_config,
        ),
        (
            "proj_size > hidden_size",
            init(GatedConfig {
                proj_size: 9,
                ..GatedConfig::lstm(3, 4)
            }),
            &is_config,
        ),
        (
            "proj_size on a GRU",
            init(GatedConfig {
                proj_size: 2,
                ..GatedConfig::gru(3, 4)
            }),
            &is_config,
        ),
        ("hidden_size 0", init(GatedConfig::lstm(3, 0)), &is_config),
        ("input_size 0", init(GatedConfig::gru(0, 4)), &is_config),
        (
            "num_layers 0",
            init(GatedConfig {
                num_layers: 0,
                ..GatedConfig::gru(3, 4)
            }),
            &is_config,
        ),
        (
            "dropout 1.5",
            init(GatedConfig {
                dropout: 1.5,
                ..GatedConfig::lstm(3, 4)
            }),
            &is_config,
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Forward calls: bad shapes and lengths are typed errors.

fn model(config: GatedConfig) -> CpuGatedRnn {
    let weights = GatedWeights::init(&config, 5).unwrap();
    CpuGatedRnn::new(config, weights).unwrap()
}

fn shape_of(what: &'static str) -> impl Fn(&RnnError) -> bool {
    move |e| matches!(e, RnnError::ShapeMismatch { what: w, .. } if *w == what)
}

#[test]
fn bad_forward_arguments_are_typed_errors() {
    // D·L = 4 state rows, H_out = P = 2, H = 6.
    let lstm = model(projected_lstm());
    let gru = model(two_layer_gru());
    let input = Tensor::zeros(&[5, 2, 3]).unwrap();
    let z = |shape: &[usize]| Tensor::zeros(shape).unwrap();
    let lstm_run =
        |h0: Option<&Tensor>, c0: Option<&Tensor>| lstm.forward(&input, h0, c0).map(|_| ());
    let lengths = |lengths: &[usize]| {
        gru.forward_with_lengths(&input, lengths, None, None)
            .map(|_| ())
    };
    let bad_length = |e: &RnnError| matches!(e, RnnError::InvalidLength { .. });
    let (h0, c0) = (z(&[4, 2, 2]), z(&[4, 2, 6]));
    expect_errors(vec![
        (
            "h0 of H features where proj gives P",
            lstm_run(Some(&z(&[4, 2, 6])), Some(&c0)),
            &shape_of("h0"),
        ),
        (
            "c0 of P features (c keeps H)",
            lstm_run(Some(&h0), Some(&z(&[4, 2, 2]))),
            &shape_of("c0"),
        ),
        (
            "c0 missing a direction",
            lstm_run(Some(&h0), Some(&z(&[2, 2, 6]))),
            &shape_of("c0"),
        ),
        ("h0 without c0", lstm_run(Some(&h0), None), &shape_of("c0")),
        ("c0 without h0", lstm_run(None, Some(&c0)), &shape_of("h0")),
        (
            "c0 given to a GRU",
            gru.forward(&input, None, Some(&c0)).map(|_| ()),
            &shape_of("c0"),
        ),
        (
            "GRU h0 (N, D·L, H) instead of (D·L, N, H)",
            gru.forward(&z(&[5, 3, 3]), Some(&z(&[3, 2, 4])), None)
                .map(|_| ()),
            &shape_of("h0"),
        ),
        (
            "input of wrong features",
            gru.forward(&z(&[5, 2, 4]), None, None).map(|_| ()),
            &shape_of("input"),
        ),
        (
            "input with T = 0",
            lstm.forward(&z(&[0, 2, 3]), None, None).map(|_| ()),
            &shape_of("input"),
        ),
        (
            "one length for two sequences",
            lengths(&[5]),
            &shape_of("lengths"),
        ),
        ("length 0", lengths(&[5, 0]), &bad_length),
        ("length past T", lengths(&[6, 5]), &bad_length),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Values checkable by hand, and the layouts agreeing with each other.

/// Every parameter of `config` set to `value`.
fn constant_weights(config: &GatedConfig, value: f32) -> GatedWeights {
    let mut weights = GatedWeights::init(config, 0).unwrap();
    let units = weights.units().to_vec();
    let fill = |v: &Vec<f32>| vec![value; v.len()];
    let units = units
        .iter()
        .map(|u| GatedDirectionWeights {
            weight_ih: fill(&u.weight_ih),
            weight_hh: fill(&u.weight_hh),
            bias_ih: u.bias_ih.as_ref().map(fill),
            bias_hh: u.bias_hh.as_ref().map(fill),
            weight_hr: u.weight_hr.as_ref().map(fill),
        })
        .collect();
    weights = GatedWeights::new(config, units).unwrap();
    weights
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn lstm_with_zero_weights_halves_the_cell_state() {
    // Every gate pre-activation is 0: i = f = o = σ(0) = ½ and g = tanh(0) = 0, so
    // c' = ½·c and h' = ½·tanh(c'). From zeros everything stays 0.
    let config = GatedConfig {
        num_layers: 2,
        ..GatedConfig::lstm(3, 4)
    };
    let lstm = CpuGatedRnn::new(config.clone(), constant_weights(&config, 0.0)).unwrap();
    let input = Tensor::new((0..5 * 2 * 3).map(|v| v as f32).collect(), &[5, 2, 3]).unwrap();
    let out = lstm.forward(&input, None, None).unwrap();
    assert!(out.output.data().iter().all(|&v| v == 0.0));
    assert!(out.h_n.data().iter().all(|&v| v == 0.0));
    assert!(out.c_n.unwrap().data().iter().all(|&v| v == 0.0));

    // From c0 = 1, after T = 5 steps the first layer's c is 2⁻⁵ and h = ½·tanh(2⁻⁵).
    let c0 = Tensor::new(vec![1.0; 2 * 2 * 4], &[2, 2, 4]).unwrap();
    let h0 = Tensor::zeros(&[2, 2, 4]).unwrap();
    let out = lstm.forward(&input, Some(&h0), Some(&c0)).unwrap();
    let c_n = out.c_n.unwrap();
    let c = 1.0f64 / 32.0;
    assert!(max_abs_diff(&c_n.data()[..8], &[c as f32; 8]) < 1e-7);
    let h = 0.5 * c.tanh();
    assert!(max_abs_diff(&out.h_n.data()[..8], &[h as f32; 8]) < 1e-7);
}

#[test]
fn gru_with_the_update_gate_forced_to_one_keeps_h() {
    // z = σ(large) = 1, so h' = (1 − z)·n + z·h = h whatever the other weights are.
    let config = GatedConfig {
        bidirectional: true,
        ..GatedConfig::gru(3, 4)
    };
    let weights = GatedWeights::init(&config, 9).unwrap();
    let units = weights
        .units()
        .iter()
        .map(|u| {
            let mut u = u.clone();
            let bias = u.bias_ih.as_mut().unwrap();
            bias[4..8].fill(100.0); // gate z is rows H..2H
            u
        })
        .collect();
    let gru = CpuGatedRnn::new(config.clone(), GatedWeights::new(&config, units).unwrap()).unwrap();
    let h0_data: Vec<f32> = (0..2 * 2 * 4).map(|v| v as f32 / 10.0 - 0.8).collect();
    let h0 = Tensor::new(h0_data.clone(), &[2, 2, 4]).unwrap();
    let input = Tensor::new((0..6 * 2 * 3).map(|v| v as f32).collect(), &[6, 2, 3]).unwrap();
    let out = gru.forward(&input, Some(&h0), None).unwrap();
    assert_eq!(out.h_n.data(), h0_data.as_slice());
    assert!(out.c_n.is_none());
    // Every output frame is [h0 forward ‖ h0 reverse] of its sequence.
    for frame in out.output.data().chunks_exact(16) {
        for n in 0..2 {
            let got = &frame[n * 8..(n + 1) * 8];
            assert_eq!(&got[..4], &h0_data[n * 4..(n + 1) * 4]);
            assert_eq!(&got[4..], &h0_data[8 + n * 4..8 + (n + 1) * 4]);
        }
    }
}

#[test]
fn gru_with_zero_weights_halves_h() {
    // r = z = ½, n = tanh(0 + ½·0) = 0: h' = ½·h.
    let config = GatedConfig::gru(2, 3);
    let gru = CpuGatedRnn::new(config.clone(), constant_weights(&config, 0.0)).unwrap();
    let h0 = Tensor::new(vec![1.0, -2.0, 4.0], &[1, 3]).unwrap();
    let out = gru
        .forward(&Tensor::zeros(&[3, 2]).unwrap(), Some(&h0), None)
        .unwrap();
    assert_eq!(out.h_n.data(), &[0.125, -0.25, 0.5]);
    assert_eq!(out.output.shape(), &[3, 3]);
    assert_eq!(out.output.data()[..3], [0.5, -1.0, 2.0]);
}

/// (T, N, F) data into (N, T, F).
fn transpose_tn(data: &[f32], t: usize, n: usize, f: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for ti in 0..t {
        for ni in 0..n {
            let src = (ti * n + ni) * f;
            let dst = (ni * t + ti) * f;
            out[dst..dst + f].copy_from_slice(&data[src..src + f]);
        }
    }
    out
}

#[test]
fn batch_first_unbatched_and_packed_agree_with_separate_runs() {
    let config = projected_lstm();
    let weights = GatedWeights::init(&config, 21).unwrap();
    let seq_first = CpuGatedRnn::new(config.clone(), weights.clone()).unwrap();
    let batch_first = CpuGatedRnn::new(
        GatedConfig {
            batch_first: true,
            ..config.clone()
        },
        weights,
    )
    .unwrap();
    let (t, n) = (5, 3);
    let data: Vec<f32> = (0..t * n * 3).map(|v| (v as f32 * 0.37).sin()).collect();
    let input = Tensor::new(data.clone(), &[t, n, 3]).unwrap();
    let h0 = Tensor::new(
        (0..4 * n * 2).map(|v| v as f32 * 0.01).collect(),
        &[4, n, 2],
    )
    .unwrap();
    let c0 = Tensor::new(
        (0..4 * n * 6).map(|v| v as f32 * -0.01).collect(),
        &[4, n, 6],
    )
    .unwrap();
    let whole = seq_first.forward(&input, Some(&h0), Some(&c0)).unwrap();

    // batch_first: the same numbers, output transposed, states not.
    let bf_input = Tensor::new(transpose_tn(&data, t, n, 3), &[n, t, 3]).unwrap();
    let bf = batch_first
        .forward(&bf_input, Some(&h0), Some(&c0))
        .unwrap();
    assert_eq!(bf.output.data(), transpose_tn(whole.output.data(), t, n, 4));
    assert_eq!((bf.h_n, bf.c_n), (whole.h_n.clone(), whole.c_n.clone()));

    // Each sequence alone, unbatched and truncated to its length, equals its part of a packed
    // batch: this pins the reverse direction starting at each sequence's own last frame.
    let lengths = [5, 2, 4];
    let packed = seq_first
        .forward_with_lengths(&input, &lengths, Some(&h0), Some(&c0))
        .unwrap();
    let state = |tensor: &Tensor, seq: usize, features: usize| -> Vec<f32> {
        (0..4)
            .flat_map(|row| tensor.data()[(row * n + seq) * features..][..features].to_vec())
            .collect()
    };
    for (seq, &len) in lengths.iter().enumerate() {
        let alone_input: Vec<f32> = (0..len)
            .flat_map(|ti| data[(ti * n + seq) * 3..][..3].to_vec())
            .collect();
        let h0_seq = Tensor::new(state(&h0, seq, 2), &[4, 2]).unwrap();
        let c0_seq = Tensor::new(state(&c0, seq, 6), &[4, 6]).unwrap();
        let alone: GatedOutput = seq_first
            .forward(
                &Tensor::new(alone_input, &[len, 3]).unwrap(),
                Some(&h0_seq),
                Some(&c0_seq),
            )
            .unwrap();
        assert_eq!(alone.output.shape(), &[len, 4]);
        assert_eq!(alone.h_n.shape(), &[4, 2]);
        for ti in 0..t {
            let frame = &packed.output.data()[(ti * n + seq) * 4..][..4];
            if ti < len {
                assert!(max_abs_diff(frame, &alone.output.data()[ti * 4..][..4]) < 1e-6);
            } else {
                assert_eq!(frame, &[0.0; 4], "output past the length must be zero");
            }
        }
        assert!(max_abs_diff(&state(&packed.h_n, seq, 2), alone.h_n.data()) < 1e-6);
        let packed_c = state(packed.c_n.as_ref().unwrap(), seq, 6);
        assert!(max_abs_diff(&packed_c, alone.c_n.as_ref().unwrap().data()) < 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// Cells: nn.LSTMCell and nn.GRUCell.

/// A one-layer unidirectional case's weights as the cell's (`weight_ih`, ... without suffix).
fn cell_from_case(name: &str) -> (ReferenceCase, GatedCellConfig, GatedDirectionWeights) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/torch_gated/{name}.safetensors"));
    let case = ReferenceCase::load(path).unwrap();
    let config = case.gated_config().unwrap();
    assert_eq!((config.num_layers, config.num_directions()), (1, 1));
    let weights = case.gated_weights(&config).unwrap();
    // Through a cell state_dict, to exercise the cell's loader and its names.
    let entries = state_dict(&config, &weights, "cell.")
        .into_iter()
        .map(|(name, dtype, shape, data)| (name.replace("_l0", ""), dtype, shape, data))
        .collect::<Vec<_>>();
    let cell_config = GatedCellConfig {
        kind: config.kind,
        input_size: config.input_size,
        hidden_size: config.hidden_size,
        bias: config.bias,
    };
    let cell_weights = cell_config
        .weights_from_safetensors(&serialize(&entries), "cell.")
        .unwrap();
    assert_eq!(&cell_weights, &weights.units()[0]);
    (case, cell_config, cell_weights)
}

/// Frame t of a (T, N, F) tensor as an (N, F) tensor.
fn frame(tensor: &Tensor, t: usize) -> Tensor {
    let (n, f) = (tensor.shape()[1], tensor.shape()[2]);
    Tensor::new(tensor.data()[t * n * f..(t + 1) * n * f].to_vec(), &[n, f]).unwrap()
}

#[test]
fn cells_stepped_through_a_sequence_match_pytorch() {
    let (case, config, weights) = cell_from_case("lstm_l1");
    let cell = LstmCell::cpu(config, weights).unwrap();
    let (input, output) = (
        case.tensor("input").unwrap(),
        case.tensor("output").unwrap(),
    );
    let mut state: Option<(Tensor, Tensor)> = None;
    for t in 0..input.shape()[0] {
        let hx = state.as_ref().map(|(h, c)| (h, c));
        let (h, c) = cell.step(&frame(&input, t), hx).unwrap();
        let error = max_abs_diff(h.data(), frame(&output, t).data());
        assert!(error <= 1e-5, "LSTMCell step {t}: {error:e}");
        state = Some((h, c));
    }
    let c_n = case.tensor("c_n").unwrap();
    assert!(max_abs_diff(state.unwrap().1.data(), c_n.data()) <= 1e-5);

    let (case, config, weights) = cell_from_case("gru_l1");
    let cell = GruCell::cpu(config.clone(), weights.clone()).unwrap();
    let (input, output) = (
        case.tensor("input").unwrap(),
        case.tensor("output").unwrap(),
    );
    let mut h: Option<Tensor> = None;
    for t in 0..input.shape()[0] {
        let next = cell.step(&frame(&input, t), h.as_ref()).unwrap();
        let error = max_abs_diff(next.data(), frame(&output, t).data());
        assert!(error <= 1e-5, "GRUCell step {t}: {error:e}");
        h = Some(next);
    }

    // Unbatched input gives an unbatched state; bad shapes and the wrong kind are errors.
    let x = Tensor::zeros(&[config.input_size]).unwrap();
    assert_eq!(cell.step(&x, None).unwrap().shape(), &[config.hidden_size]);
    let batched_h = Tensor::zeros(&[1, config.hidden_size]).unwrap();
    expect_errors(vec![
        (
            "GRUCell hx batched for an unbatched input",
            cell.step(&x, Some(&batched_h)).map(|_| ()),
            &shape_of("hx"),
        ),
        (
            "GRUCell input of wrong features",
            cell.step(&Tensor::zeros(&[2, 1]).unwrap(), None)
                .map(|_| ()),
            &shape_of("input"),
        ),
        (
            "LSTMCell from a GRU configuration",
            LstmCell::cpu(config, weights).map(|_| ()),
            &|e| matches!(e, RnnError::InvalidConfig(_)),
        ),
    ]);
}
