//! PyTorch's rules, for every mode, on the CPU path: weight files under PyTorch's names (round
//! trips, and errors naming the tensor), its configuration checks (proj_size only for an
//! LSTM, smaller than hidden_size), typed errors for bad forward arguments, values checkable
//! by hand, and the layouts (batch-first, unbatched, packed) agreeing with each other. The
//! numbers against PyTorch's own are in torch_parity.rs.

mod support;

use safetensors::Dtype;
use support::{MODES, mode_name};
use wgpu_rnn::{
    CpuRnn, DirectionWeights, Hx, Rnn, RnnConfig, RnnError, RnnMode, RnnOutput, RnnWeights, Tensor,
};

// ---------------------------------------------------------------------------------------------
// Test files.

/// One tensor of a test file: name, dtype, shape, little-endian bytes (a dtype of its own, so
/// that a test can store a float64 where PyTorch would have a float32).
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_entry(name: String, shape: Vec<usize>, data: &[f32]) -> Entry {
    let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    (name, Dtype::F32, shape, bytes)
}

/// The `state_dict` PyTorch would save for `weights`, every name after `prefix`.
fn state_dict(config: &RnnConfig, weights: &RnnWeights, prefix: &str) -> Vec<Entry> {
    support::named_state_dict(config, weights, prefix)
        .into_iter()
        .map(|(name, shape, data)| f32_entry(name, shape, &data))
        .collect()
}

fn serialize(entries: &[Entry]) -> Vec<u8> {
    let views = entries.iter().map(|(name, dtype, shape, data)| {
        let data: &[u8] = data;
        (
            name.clone(),
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
        )
    });
    safetensors::serialize(views, None).unwrap()
}

/// Each mode's model for the loading and argument tests: for an LSTM
/// `torch.nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2)` (every tensor kind,
/// both directions), otherwise two layers of (3, 4), as `torch.nn.GRU(3, 4, num_layers=2)`.
fn sample_config(mode: RnnMode) -> RnnConfig {
    match mode {
        RnnMode::Lstm => RnnConfig {
            num_layers: 2,
            bidirectional: true,
            proj_size: 2,
            ..RnnConfig::lstm(3, 6)
        },
        _ => RnnConfig {
            num_layers: 2,
            ..RnnConfig::new(mode, 3, 4)
        },
    }
}

/// The prefix the sample model's file stores its tensors under (an LSTM's has one).
fn sample_prefix(mode: RnnMode) -> &'static str {
    if mode == RnnMode::Lstm { "lstm." } else { "" }
}

fn weights_round_trip(mode: RnnMode) {
    let config = sample_config(mode);
    let weights = RnnWeights::init(&config, 3).unwrap();
    let bytes = serialize(&state_dict(&config, &weights, "model.rnn."));
    let loaded = RnnWeights::from_safetensors(&config, &bytes, "model.rnn.").unwrap();
    assert_eq!(loaded, weights, "{mode:?}");
    // PyTorch's init bound, 1/√H, for every parameter.
    let bound = 1.0 / (config.hidden_size as f32).sqrt();
    for unit in weights.units() {
        let all = unit.weight_ih.iter().chain(&unit.weight_hh);
        let mut all = all.chain(unit.weight_hr.iter().flatten());
        assert!(all.all(|v| v.abs() <= bound), "{mode:?}");
    }
}
for_each_mode!(
    weights_round_trip_through_a_state_dict_with_prefix,
    weights_round_trip
);

// ---------------------------------------------------------------------------------------------
// Errors.

fn names(e: &RnnError, tensor: &str) -> bool {
    matches!(e, RnnError::Weights { name, .. } if name == tensor)
}

fn is_config(e: &RnnError) -> bool {
    matches!(e, RnnError::InvalidConfig(_))
}

/// A case of bad input: what it is, what it returned, and which error it must be.
type ErrorCase<'a> = (
    String,
    wgpu_rnn::Result<()>,
    Box<dyn Fn(&RnnError) -> bool + 'a>,
);

fn case<'a>(
    what: impl Into<String>,
    result: wgpu_rnn::Result<impl Sized>,
    expect: impl Fn(&RnnError) -> bool + 'a,
) -> ErrorCase<'a> {
    (what.into(), result.map(|_| ()), Box::new(expect))
}

/// Fails listing every case that succeeded or returned the wrong error.
fn expect_errors(cases: Vec<ErrorCase<'_>>) {
    let mut wrong = Vec::new();
    for (what, result, expect) in cases {
        match result {
            Err(e) if expect(&e) => println!("{what:<45} -> {e}"),
            Err(e) => wrong.push(format!("{what}: unexpected error {e:?}")),
            Ok(()) => wrong.push(format!("{what}: succeeded")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn bad_weight_files(mode: RnnMode) {
    let config = sample_config(mode);
    let prefix = sample_prefix(mode);
    let dict = state_dict(&config, &RnnWeights::init(&config, 1).unwrap(), prefix);
    let edited = |edit: &dyn Fn(&mut Vec<Entry>)| {
        let mut dict = dict.clone();
        edit(&mut dict);
        serialize(&dict)
    };
    let load = |config: &RnnConfig, bytes: Vec<u8>, prefix: &str| {
        RnnWeights::from_safetensors(config, &bytes, prefix)
    };
    let name = |part: &str| format!("{prefix}{part}");
    // Another mode's gate count: an LSTM's 4 for an Elman RNN or a GRU, a GRU's 3 for an LSTM.
    let other_gates = if mode == RnnMode::Lstm { 3 } else { 4 };
    let (h, i) = (config.hidden_size, config.input_size);
    let mut cases = vec![
        case(
            format!("weight_ih with {other_gates} gates"),
            load(
                &config,
                edited(&|d| {
                    let rows = other_gates * h;
                    d[0] = f32_entry(d[0].0.clone(), vec![rows, i], &vec![0.0; rows * i]);
                }),
                prefix,
            ),
            |e| names(e, &name("weight_ih_l0")),
        ),
        case(
            "second layer missing",
            load(
                &config,
                edited(&|d| d.retain(|e| !e.0.contains("_l1"))),
                prefix,
            ),
            |e| names(e, &name("weight_ih_l1")),
        ),
        case(
            "wrong prefix",
            load(&config, serialize(&dict), "gru."),
            |e| names(e, "gru.weight_ih_l0"),
        ),
        case(
            "bias present with bias = false",
            load(
                &RnnConfig {
                    bias: false,
                    ..config.clone()
                },
                serialize(&dict),
                prefix,
            ),
            |e| names(e, &name("bias_ih_l0")),
        ),
        case(
            "float64 bias",
            load(
                &config,
                edited(&|d| {
                    let at = d.iter().position(|e| e.0.ends_with("bias_hh_l0")).unwrap();
                    let rows = config.gate_size();
                    d[at] = (d[at].0.clone(), Dtype::F64, vec![rows], vec![0; rows * 8]);
                }),
                prefix,
            ),
            |e| names(e, &name("bias_hh_l0")),
        ),
        case(
            "weight_hr given directly without proj_size",
            RnnWeights::new(
                &RnnConfig::new(mode, 3, 4),
                vec![DirectionWeights {
                    weight_hr: Some(vec![0.0; 4]),
                    ..RnnWeights::init(&RnnConfig::new(mode, 3, 4), 1)
                        .unwrap()
                        .units()[0]
                        .clone()
                }],
            ),
            |e| names(e, "weight_hr_l0"),
        ),
    ];
    if mode == RnnMode::Lstm {
        let no_proj = RnnConfig {
            proj_size: 0,
            ..config.clone()
        };
        let no_proj_dict = state_dict(&no_proj, &RnnWeights::init(&no_proj, 1).unwrap(), "");
        let position = |d: &[Entry], name: &str| d.iter().position(|e| e.0 == name).unwrap();
        cases.extend([
            case(
                "missing weight_hr (proj_size > 0)",
                load(
                    &config,
                    edited(&|d| d.retain(|e| e.0 != "lstm.weight_hr_l1_reverse")),
                    prefix,
                ),
                |e| names(e, "lstm.weight_hr_l1_reverse"),
            ),
            case(
                "a projected file loaded with proj_size = 0",
                load(&no_proj, serialize(&dict), prefix),
                // Without a projection weight_hh would be (4H, H): that is checked first.
                |e| names(e, "lstm.weight_hh_l0"),
            ),
            case(
                "stray weight_hr with proj_size = 0",
                load(
                    &no_proj,
                    serialize(
                        &[
                            no_proj_dict.clone(),
                            vec![f32_entry("weight_hr_l0".into(), vec![2, 6], &[0.0; 12])],
                        ]
                        .concat(),
                    ),
                    "",
                ),
                |e| names(e, "weight_hr_l0"),
            ),
            case(
                "weight_hh (4H, H) where the projection makes it (4H, P)",
                load(
                    &config,
                    edited(&|d| {
                        let at = position(d, "lstm.weight_hh_l1");
                        d[at] = f32_entry(d[at].0.clone(), vec![24, 6], &[0.0; 24 * 6]);
                    }),
                    prefix,
                ),
                |e| names(e, "lstm.weight_hh_l1"),
            ),
        ]);
    }
    expect_errors(cases);
}
for_each_mode!(
    bad_weight_files_are_rejected_naming_the_tensor,
    bad_weight_files
);

#[test]
fn invalid_configurations_are_rejected_like_pytorch() {
    let init = |config: RnnConfig| RnnWeights::init(&config, 0);
    let mut cases = Vec::new();
    for mode in MODES {
        let name = mode_name(mode);
        let base = RnnConfig::new(mode, 3, 4);
        let with = |edit: &dyn Fn(&mut RnnConfig)| {
            let mut config = base.clone();
            edit(&mut config);
            init(config)
        };
        cases.extend([
            case(
                format!("{name}: hidden_size 0"),
                with(&|c| c.hidden_size = 0),
                is_config,
            ),
            case(
                format!("{name}: input_size 0"),
                with(&|c| c.input_size = 0),
                is_config,
            ),
            case(
                format!("{name}: num_layers 0"),
                with(&|c| c.num_layers = 0),
                is_config,
            ),
            case(
                format!("{name}: dropout 1.5"),
                with(&|c| c.dropout = 1.5),
                is_config,
            ),
        ]);
        if mode == RnnMode::Lstm {
            cases.extend([
                case(
                    "lstm: proj_size = hidden_size",
                    with(&|c| c.proj_size = 4),
                    is_config,
                ),
                case(
                    "lstm: proj_size > hidden_size",
                    with(&|c| c.proj_size = 9),
                    is_config,
                ),
            ]);
            let projected = with(&|c| c.proj_size = 3);
            assert!(projected.is_ok(), "proj_size < hidden_size: {projected:?}");
        } else {
            // PyTorch: "proj_size argument is only supported for LSTM, not RNN or GRU".
            cases.push(case(
                format!("{name}: proj_size"),
                with(&|c| c.proj_size = 2),
                is_config,
            ));
        }
    }
    expect_errors(cases);
}

fn shape_of(what: &'static str) -> impl Fn(&RnnError) -> bool {
    move |e| matches!(e, RnnError::ShapeMismatch { what: w, .. } if *w == what)
}

/// Bad shapes and lengths in a forward call are typed errors naming the argument.
fn bad_forward_arguments(mode: RnnMode) {
    let config = sample_config(mode);
    let weights = RnnWeights::init(&config, 5).unwrap();
    let model = CpuRnn::new(config.clone(), &weights).unwrap();
    let (rows, h_out, h) = (config.state_rows(), config.state_size(), config.hidden_size);
    let z = |shape: &[usize]| Tensor::zeros(shape).unwrap();
    let input = z(&[5, 2, 3]);
    // A valid state for N = 2, to pair with a wrong one.
    let (h0, c0) = (z(&[rows, 2, h_out]), z(&[rows, 2, h]));
    let good_c0 = config.mode.has_cell_state().then_some(&c0);
    let run = |input: &Tensor, h0: &Tensor, c0: Option<&Tensor>| {
        model.forward(input, Some(Hx { h0, c0 }))
    };
    let lengths = |lengths: &[usize]| model.forward_with_lengths(&input, lengths, None);
    let bad_length = |e: &RnnError| matches!(e, RnnError::InvalidLength { .. });
    let mut cases = vec![
        case(
            "h0 (N, D·L, H) instead of (D·L, N, H)",
            run(&z(&[5, 3, 3]), &z(&[3, rows, h_out]), None),
            shape_of("h0"),
        ),
        case(
            "input of wrong features",
            model.forward(&z(&[5, 2, 4]), None),
            shape_of("input"),
        ),
        case(
            "input with T = 0",
            model.forward(&z(&[0, 2, 3]), None),
            shape_of("input"),
        ),
        case(
            "one length for two sequences",
            lengths(&[5]),
            shape_of("lengths"),
        ),
        case("length 0", lengths(&[5, 0]), bad_length),
        case("length past T", lengths(&[6, 5]), bad_length),
    ];
    if mode == RnnMode::Lstm {
        // D·L = 4 state rows, H_out = P = 2, H = 6.
        cases.extend([
            case(
                "h0 of H features where proj gives P",
                run(&input, &z(&[4, 2, 6]), good_c0),
                shape_of("h0"),
            ),
            case(
                "c0 of P features (c keeps H)",
                run(&input, &h0, Some(&z(&[4, 2, 2]))),
                shape_of("c0"),
            ),
            case(
                "c0 missing a direction",
                run(&input, &h0, Some(&z(&[2, 2, 6]))),
                shape_of("c0"),
            ),
            case("h0 without c0", run(&input, &h0, None), shape_of("c0")),
        ]);
    } else {
        cases.push(case(
            format!("c0 given to {}", mode.torch_name()),
            run(&input, &h0, Some(&c0)),
            shape_of("c0"),
        ));
    }
    expect_errors(cases);
    // The same state, complete, is accepted.
    run(&input, &h0, good_c0).unwrap();
}
for_each_mode!(
    bad_forward_arguments_are_typed_errors,
    bad_forward_arguments
);

// ---------------------------------------------------------------------------------------------
// Values checkable by hand, and the layouts agreeing with each other.

/// Every parameter of `config` set to `value`.
fn constant_weights(config: &RnnConfig, value: f32) -> RnnWeights {
    let fill = |v: &Vec<f32>| vec![value; v.len()];
    let units = RnnWeights::init(config, 0)
        .unwrap()
        .units()
        .iter()
        .map(|u| DirectionWeights {
            weight_ih: fill(&u.weight_ih),
            weight_hh: fill(&u.weight_hh),
            bias_ih: u.bias_ih.as_ref().map(fill),
            bias_hh: u.bias_hh.as_ref().map(fill),
            weight_hr: u.weight_hr.as_ref().map(fill),
        })
        .collect();
    RnnWeights::new(config, units).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn lstm_with_zero_weights_halves_the_cell_state() {
    // Every gate pre-activation is 0: i = f = o = σ(0) = ½ and g = tanh(0) = 0, so
    // c' = ½·c and h' = ½·tanh(c'). From zeros everything stays 0.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::lstm(3, 4)
    };
    let lstm = CpuRnn::new(config.clone(), &constant_weights(&config, 0.0)).unwrap();
    let input = Tensor::new((0..5 * 2 * 3).map(|v| v as f32).collect(), &[5, 2, 3]).unwrap();
    let out = lstm.forward(&input, None).unwrap();
    assert!(out.output.data().iter().all(|&v| v == 0.0));
    assert!(out.h_n.data().iter().all(|&v| v == 0.0));
    assert!(out.c_n.unwrap().data().iter().all(|&v| v == 0.0));

    // From c0 = 1, after T = 5 steps the first layer's c is 2⁻⁵ and h = ½·tanh(2⁻⁵).
    let c0 = Tensor::new(vec![1.0; 2 * 2 * 4], &[2, 2, 4]).unwrap();
    let h0 = Tensor::zeros(&[2, 2, 4]).unwrap();
    let out = lstm.forward(&input, Some(Hx::lstm(&h0, &c0))).unwrap();
    let c_n = out.c_n.unwrap();
    let c = 1.0f64 / 32.0;
    assert!(max_abs_diff(&c_n.data()[..8], &[c as f32; 8]) < 1e-7);
    let h = 0.5 * c.tanh();
    assert!(max_abs_diff(&out.h_n.data()[..8], &[h as f32; 8]) < 1e-7);
}

#[test]
fn gru_with_the_update_gate_forced_to_one_keeps_h() {
    // z = σ(large) = 1, so h' = (1 − z)·n + z·h = h whatever the other weights are.
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::gru(3, 4)
    };
    let weights = RnnWeights::init(&config, 9).unwrap();
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
    let gru = CpuRnn::new(config.clone(), &RnnWeights::new(&config, units).unwrap()).unwrap();
    let h0_data: Vec<f32> = (0..2 * 2 * 4).map(|v| v as f32 / 10.0 - 0.8).collect();
    let h0 = Tensor::new(h0_data.clone(), &[2, 2, 4]).unwrap();
    let input = Tensor::new((0..6 * 2 * 3).map(|v| v as f32).collect(), &[6, 2, 3]).unwrap();
    let out = gru.forward(&input, Some(Hx::h0(&h0))).unwrap();
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
    let config = RnnConfig::gru(2, 3);
    let gru = CpuRnn::new(config.clone(), &constant_weights(&config, 0.0)).unwrap();
    let h0 = Tensor::new(vec![1.0, -2.0, 4.0], &[1, 3]).unwrap();
    let out = gru
        .forward(&Tensor::zeros(&[3, 2]).unwrap(), Some(Hx::h0(&h0)))
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

/// Batch-first gives the same numbers transposed, and each sequence of a packed batch alone,
/// unbatched and truncated to its length, gives its part of the packed result: this pins the
/// reverse direction starting at each sequence's own last frame. Two bidirectional layers of
/// (3, 6) (for an LSTM with proj_size = 2), from a given state.
fn layouts_agree(mode: RnnMode) {
    let config = RnnConfig {
        num_layers: 2,
        bidirectional: true,
        proj_size: if mode == RnnMode::Lstm { 2 } else { 0 },
        ..RnnConfig::new(mode, 3, 6)
    };
    let weights = RnnWeights::init(&config, 21).unwrap();
    let seq_first = CpuRnn::new(config.clone(), &weights).unwrap();
    let batch_first = RnnConfig {
        batch_first: true,
        ..config.clone()
    };
    let batch_first = CpuRnn::new(batch_first, &weights).unwrap();
    let (t, n, rows) = (5, 3, config.state_rows());
    let (h_out, h, out) = (
        config.state_size(),
        config.hidden_size,
        config.output_size(),
    );
    let data: Vec<f32> = (0..t * n * 3).map(|v| (v as f32 * 0.37).sin()).collect();
    let input = Tensor::new(data.clone(), &[t, n, 3]).unwrap();
    let h0 = (0..rows * n * h_out).map(|v| v as f32 * 0.01).collect();
    let h0 = Tensor::new(h0, &[rows, n, h_out]).unwrap();
    let c0 = (0..rows * n * h).map(|v| v as f32 * -0.01).collect();
    let c0 = Tensor::new(c0, &[rows, n, h]).unwrap();
    let c0 = config.mode.has_cell_state().then_some(c0);
    let hx = || {
        Some(Hx {
            h0: &h0,
            c0: c0.as_ref(),
        })
    };
    let whole = seq_first.forward(&input, hx()).unwrap();

    // batch_first: the same numbers, output transposed, states not.
    let bf_input = Tensor::new(transpose_tn(&data, t, n, 3), &[n, t, 3]).unwrap();
    let bf = batch_first.forward(&bf_input, hx()).unwrap();
    assert_eq!(
        bf.output.data(),
        transpose_tn(whole.output.data(), t, n, out)
    );
    assert_eq!((bf.h_n, bf.c_n), (whole.h_n.clone(), whole.c_n.clone()));

    let lengths = [5, 2, 4];
    let packed = seq_first
        .forward_with_lengths(&input, &lengths, hx())
        .unwrap();
    // Sequence `seq`'s rows of a (D·L, N, F) state, as a (D·L, F) one.
    let state = |tensor: &Tensor, seq: usize| -> Tensor {
        let features = tensor.shape()[2];
        let values = (0..rows)
            .flat_map(|row| tensor.data()[(row * n + seq) * features..][..features].to_vec())
            .collect();
        Tensor::new(values, &[rows, features]).unwrap()
    };
    for (seq, &len) in lengths.iter().enumerate() {
        let alone_input: Vec<f32> = (0..len)
            .flat_map(|ti| data[(ti * n + seq) * 3..][..3].to_vec())
            .collect();
        let (h0_seq, c0_seq) = (state(&h0, seq), c0.as_ref().map(|c0| state(c0, seq)));
        let alone: RnnOutput = seq_first
            .forward(
                &Tensor::new(alone_input, &[len, 3]).unwrap(),
                Some(Hx {
                    h0: &h0_seq,
                    c0: c0_seq.as_ref(),
                }),
            )
            .unwrap();
        assert_eq!(alone.output.shape(), &[len, out]);
        assert_eq!(alone.h_n.shape(), &[rows, h_out]);
        for ti in 0..t {
            let frame = &packed.output.data()[(ti * n + seq) * out..][..out];
            if ti < len {
                let error = max_abs_diff(frame, &alone.output.data()[ti * out..][..out]);
                assert!(
                    error < 1e-6,
                    "{mode:?} sequence {seq} frame {ti}: {error:e}"
                );
            } else {
                assert!(
                    frame.iter().all(|&v| v == 0.0),
                    "output past the length must be zero"
                );
            }
        }
        let error = max_abs_diff(state(&packed.h_n, seq).data(), alone.h_n.data());
        assert!(error < 1e-6, "{mode:?} sequence {seq} h_n: {error:e}");
        assert_eq!(packed.c_n.is_some(), alone.c_n.is_some());
        if let (Some(packed_c), Some(alone_c)) = (&packed.c_n, &alone.c_n) {
            let error = max_abs_diff(state(packed_c, seq).data(), alone_c.data());
            assert!(error < 1e-6, "{mode:?} sequence {seq} c_n: {error:e}");
        }
    }
}
for_each_mode!(
    batch_first_unbatched_and_packed_agree_with_separate_runs,
    layouts_agree
);
