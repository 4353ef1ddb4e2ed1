//! Bad input gets a clear, typed error and never a panic: one table, one assertion per case,
//! each checking the error variant (and, for weights, that the message names the tensor).
//! Every table runs for every mode, with the LSTM's own misuse (c0 missing beside h0, c0 given
//! to a GRU or RNN, `proj_size` where PyTorch refuses it) in the same tables.

mod support;

use std::sync::Arc;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use wgpu_rnn::{
    CpuRnn, DirectionWeights, GpuRnn, Hx, Linear, Rnn, RnnConfig, RnnError, RnnMode, RnnWeights,
    StreamOptions, Tensor, testing,
};

type Outcome = wgpu_rnn::Result<()>;

struct Case {
    name: &'static str,
    run: Box<dyn Fn() -> Outcome>,
    expect: fn(&RnnError) -> bool,
}

fn case(
    name: &'static str,
    run: impl Fn() -> Outcome + 'static,
    expect: fn(&RnnError) -> bool,
) -> Case {
    Case {
        name,
        run: Box::new(run),
        expect,
    }
}

/// Runs every case; fails listing each that returned Ok or the wrong variant.
fn check(cases: Vec<Case>) {
    let mut wrong = Vec::new();
    for c in &cases {
        match (c.run)() {
            Err(e) if (c.expect)(&e) => println!("{:<40} -> {e}", c.name),
            Err(e) => wrong.push(format!("{}: unexpected error {e:?}", c.name)),
            Ok(()) => wrong.push(format!("{}: succeeded", c.name)),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn is_config(e: &RnnError) -> bool {
    matches!(e, RnnError::InvalidConfig(_))
}
fn is_input_shape(e: &RnnError) -> bool {
    matches!(e, RnnError::ShapeMismatch { what: "input", .. })
}
fn is_h0_shape(e: &RnnError) -> bool {
    matches!(e, RnnError::ShapeMismatch { what: "h0", .. })
}
fn is_c0_shape(e: &RnnError) -> bool {
    matches!(e, RnnError::ShapeMismatch { what: "c0", .. })
}
fn names(e: &RnnError, tensor: &str) -> bool {
    matches!(e, RnnError::Weights { name, .. } if name == tensor)
}

fn with(mode: RnnMode, f: fn(&mut RnnConfig)) -> RnnConfig {
    let mut config = RnnConfig::new(mode, 3, 4);
    f(&mut config);
    config
}

fn invalid_configurations_are_rejected(mode: RnnMode) {
    let init = move |f: fn(&mut RnnConfig)| move || RnnWeights::init(&with(mode, f), 1).map(|_| ());
    let gates = mode.gates();
    let mut cases = vec![
        case("hidden_size 0", init(|c| c.hidden_size = 0), is_config),
        case("input_size 0", init(|c| c.input_size = 0), is_config),
        case("num_layers 0", init(|c| c.num_layers = 0), is_config),
        case("dropout 1.5", init(|c| c.dropout = 1.5), is_config),
        case("dropout NaN", init(|c| c.dropout = f32::NAN), is_config),
        case(
            "weights of another config",
            move || {
                let weights = RnnWeights::init(&RnnConfig::new(mode, 3, 5), 1)?;
                CpuRnn::new(RnnConfig::new(mode, 3, 4), &weights).map(|_| ())
            },
            |e| matches!(e, RnnError::Weights { .. }),
        ),
        case(
            "direction weights of wrong length",
            move || {
                let unit = DirectionWeights {
                    weight_ih: vec![0.0; gates * 12],
                    weight_hh: vec![0.0; gates * 16 - 1],
                    bias_ih: None,
                    bias_hh: None,
                    weight_hr: None,
                };
                RnnWeights::new(&with(mode, |c| c.bias = false), vec![unit]).map(|_| ())
            },
            |e| names(e, "weight_hh_l0"),
        ),
        case(
            "tensor data/shape mismatch",
            || Tensor::new(vec![0.0; 5], &[2, 3]).map(|_| ()),
            |e| matches!(e, RnnError::ShapeMismatch { what: "tensor", .. }),
        ),
    ];
    if mode == RnnMode::Lstm {
        // PyTorch: "proj_size has to be smaller than hidden_size".
        cases.push(case(
            "proj_size = hidden_size",
            init(|c| c.proj_size = 4),
            is_config,
        ));
        cases.push(case(
            "proj_size > hidden_size",
            init(|c| c.proj_size = 9),
            is_config,
        ));
        cases.push(case(
            "weight_hr missing with proj_size = 2",
            || {
                let plain = RnnWeights::init(&RnnConfig::lstm(3, 4), 1)?;
                let mut unit = plain.units()[0].clone();
                unit.weight_hh = vec![0.0; 16 * 2];
                RnnWeights::new(&with(RnnMode::Lstm, |c| c.proj_size = 2), vec![unit]).map(|_| ())
            },
            |e| names(e, "weight_hr_l0"),
        ));
        cases.push(case(
            "weight_hr given with proj_size = 0",
            || {
                let mut unit = RnnWeights::init(&RnnConfig::lstm(3, 4), 1)?.units()[0].clone();
                unit.weight_hr = Some(vec![0.0; 8]);
                RnnWeights::new(&RnnConfig::lstm(3, 4), vec![unit]).map(|_| ())
            },
            |e| names(e, "weight_hr_l0"),
        ));
    } else {
        // PyTorch: "proj_size argument is only supported for LSTM, not RNN or GRU".
        cases.push(case(
            "proj_size on an RNN or GRU",
            init(|c| c.proj_size = 2),
            is_config,
        ));
    }
    check(cases);
    // The control: a projection PyTorch accepts.
    if mode == RnnMode::Lstm {
        RnnWeights::init(&with(mode, |c| c.proj_size = 3), 1).unwrap();
    }
}
for_each_mode!(invalid_configurations, invalid_configurations_are_rejected);

/// Forward-call cases for a model of `nn.*(3, 4, num_layers=2)` in `mode`, on whichever
/// backend: input shapes, h0 shapes, and c0 as PyTorch's `hx = (h0, c0)` rules have it.
fn forward_cases(model: Arc<dyn Rnn>) -> Vec<Case> {
    let lstm = model.config().mode == RnnMode::Lstm;
    let run = move |input: &'static [usize],
                    h0: Option<&'static [usize]>,
                    c0: Option<&'static [usize]>| {
        let model = Arc::clone(&model);
        move || {
            let h0 = h0.map(Tensor::zeros).transpose()?;
            let c0 = c0.map(Tensor::zeros).transpose()?;
            let hx = h0.as_ref().map(|h0| Hx {
                h0,
                c0: c0.as_ref(),
            });
            model.forward(&Tensor::zeros(input)?, hx).map(|_| ())
        }
    };
    // An LSTM's valid h0 comes with its c0; the other modes' alone.
    let c0_of = move |shape: &'static [usize]| lstm.then_some(shape);
    let mut cases = vec![
        case(
            "input with 4 dims",
            run(&[2, 1, 1, 3], None, None),
            is_input_shape,
        ),
        case("input of 1 dim", run(&[3], None, None), is_input_shape),
        case(
            "input with wrong features",
            run(&[2, 1, 5], None, None),
            is_input_shape,
        ),
        case("T = 0", run(&[0, 2, 3], None, None), is_input_shape),
        case("N = 0", run(&[4, 0, 3], None, None), is_input_shape),
        case("unbatched T = 0", run(&[0, 3], None, None), is_input_shape),
        case(
            "h0 missing a layer",
            run(&[4, 3, 3], Some(&[1, 3, 4]), c0_of(&[2, 3, 4])),
            is_h0_shape,
        ),
        case(
            "h0 given batch-first",
            run(&[4, 3, 3], Some(&[3, 2, 4]), c0_of(&[2, 3, 4])),
            is_h0_shape,
        ),
        case(
            "h0 batched for unbatched input",
            run(&[4, 3], Some(&[2, 1, 4]), c0_of(&[2, 4])),
            is_h0_shape,
        ),
        case(
            "h0 with wrong hidden size",
            run(&[4, 3, 3], Some(&[2, 3, 5]), c0_of(&[2, 3, 4])),
            is_h0_shape,
        ),
    ];
    if lstm {
        cases.extend([
            case(
                "h0 without c0",
                run(&[4, 3, 3], Some(&[2, 3, 4]), None),
                is_c0_shape,
            ),
            case(
                "unbatched h0 without c0",
                run(&[4, 3], Some(&[2, 4]), None),
                is_c0_shape,
            ),
            case(
                "c0 missing a layer",
                run(&[4, 3, 3], Some(&[2, 3, 4]), Some(&[1, 3, 4])),
                is_c0_shape,
            ),
            case(
                "c0 batched for unbatched input",
                run(&[4, 3], Some(&[2, 4]), Some(&[2, 1, 4])),
                is_c0_shape,
            ),
            case(
                "c0 with wrong hidden size",
                run(&[4, 3, 3], Some(&[2, 3, 4]), Some(&[2, 3, 5])),
                is_c0_shape,
            ),
        ]);
    } else {
        cases.push(case(
            "c0 given where there is no cell state",
            run(&[4, 3, 3], Some(&[2, 3, 4]), Some(&[2, 3, 4])),
            is_c0_shape,
        ));
    }
    cases
}

/// Forward-call cases for `nn.LSTM(3, 4, num_layers=2, proj_size=2)`: h0 has P = 2 features,
/// c0 keeps H = 4, and each refuses the other's size.
fn projected_cases(model: Arc<dyn Rnn>) -> Vec<Case> {
    let run = move |h0: &'static [usize], c0: &'static [usize]| {
        let model = Arc::clone(&model);
        move || {
            let (h0, c0) = (Tensor::zeros(h0)?, Tensor::zeros(c0)?);
            model
                .forward(&Tensor::zeros(&[4, 3, 3])?, Some(Hx::lstm(&h0, &c0)))
                .map(|_| ())
        }
    };
    vec![
        case(
            "projected: h0 of hidden_size features",
            run(&[2, 3, 4], &[2, 3, 4]),
            is_h0_shape,
        ),
        case(
            "projected: c0 of proj_size features",
            run(&[2, 3, 2], &[2, 3, 2]),
            is_c0_shape,
        ),
    ]
}

fn projected() -> RnnConfig {
    RnnConfig {
        proj_size: 2,
        ..two_layers(RnnMode::Lstm)
    }
}

fn two_layers(mode: RnnMode) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 3, 4)
    }
}

fn bad_forward_input_is_rejected_on_the_cpu(mode: RnnMode) {
    let config = two_layers(mode);
    let weights = RnnWeights::init(&config, 1).unwrap();
    let mut cases = forward_cases(Arc::new(CpuRnn::new(config, &weights).unwrap()));
    if mode == RnnMode::Lstm {
        let weights = RnnWeights::init(&projected(), 1).unwrap();
        cases.extend(projected_cases(Arc::new(
            CpuRnn::new(projected(), &weights).unwrap(),
        )));
    }
    check(cases);
}
for_each_mode!(
    bad_forward_input_cpu,
    bad_forward_input_is_rejected_on_the_cpu
);

fn bad_forward_input_is_rejected_on_the_gpu(mode: RnnMode) {
    let Some(ctx) = testing::gpu("bad_forward_input_is_rejected_on_the_gpu") else {
        return;
    };
    let config = two_layers(mode);
    let weights = RnnWeights::init(&config, 1).unwrap();
    let model = Arc::new(GpuRnn::new(&ctx, config, &weights).unwrap());
    let mut cases = forward_cases(model.clone());
    cases.extend(stream_cases(model));
    if mode == RnnMode::Lstm {
        let weights = RnnWeights::init(&projected(), 1).unwrap();
        cases.extend(projected_cases(Arc::new(
            GpuRnn::new(&ctx, projected(), &weights).unwrap(),
        )));
    }
    let ctx2 = ctx.clone();
    cases.push(case(
        "batch beyond the dispatch limit",
        move || {
            let tiny = RnnConfig::new(mode, 1, 1);
            let wide = GpuRnn::new(&ctx2, tiny.clone(), &RnnWeights::init(&tiny, 1)?)?;
            let n = ctx2.limits().max_compute_workgroups_per_dimension as usize + 1;
            wide.forward(&Tensor::zeros(&[1, n, 1])?, None).map(|_| ())
        },
        |e| matches!(e, RnnError::ExceedsLimits { .. }),
    ));
    let bidirectional = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 1, 1024)
    };
    let weights = RnnWeights::init(&bidirectional, 1).unwrap();
    let big = Arc::new(GpuRnn::new(&ctx, bidirectional, &weights).unwrap());
    // One frame of output is 2·1024 floats: the binding limit holds `frames` of them.
    let frames = (ctx.limits().max_storage_buffer_binding_size / 4 / 2048) as usize;
    // With a Linear head a bidirectional forward cannot fall back to one layer and direction
    // at a time either.
    let head = Linear {
        in_features: 2048,
        out_features: 1,
        weight: vec![0.0; 2048],
        bias: None,
    };
    let headed = GpuRnn::new(&ctx, big.config().clone(), &weights)
        .unwrap()
        .with_head(&head)
        .unwrap();
    cases.push(case(
        "bidirectional sequence with a head beyond the storage binding limit",
        move || {
            headed
                .forward(&Tensor::zeros(&[frames + 1, 1, 1])?, None)
                .map(|_| ())
        },
        |e| matches!(e, RnnError::ExceedsLimits { .. }),
    ));
    cases.push(case(
        "one timestep beyond the storage binding limit",
        move || {
            big.forward(&Tensor::zeros(&[1, frames + 1, 1])?, None)
                .map(|_| ())
        },
        |e| matches!(e, RnnError::ExceedsLimits { .. }),
    ));
    check(cases);
}
for_each_mode!(
    bad_forward_input_gpu,
    bad_forward_input_is_rejected_on_the_gpu
);

/// A stream's initial state follows the same rules: an LSTM stream needs (h0, c0), the others
/// refuse a c0; shapes are (L, N, H_out) and (L, N, H).
fn stream_cases(model: Arc<GpuRnn>) -> Vec<Case> {
    let lstm = model.config().mode == RnnMode::Lstm;
    let reset = move |h0: &'static [usize], c0: Option<&'static [usize]>| {
        let model = Arc::clone(&model);
        move || {
            let h0 = Tensor::zeros(h0)?;
            let c0 = c0.map(Tensor::zeros).transpose()?;
            let mut stream = model.stream(StreamOptions { batch: 3, delay: 0 })?;
            stream.reset_to(Hx {
                h0: &h0,
                c0: c0.as_ref(),
            })
        }
    };
    let c0_of = move |shape: &'static [usize]| lstm.then_some(shape);
    let mut cases = vec![case(
        "stream reset to h0 of another batch",
        reset(&[2, 2, 4], c0_of(&[2, 2, 4])),
        is_h0_shape,
    )];
    if lstm {
        cases.extend([
            case(
                "stream reset to h0 without c0",
                reset(&[2, 3, 4], None),
                is_c0_shape,
            ),
            case(
                "stream reset to c0 of another batch",
                reset(&[2, 3, 4], Some(&[2, 2, 4])),
                is_c0_shape,
            ),
        ]);
    } else {
        cases.push(case(
            "stream reset with a c0 where there is no cell state",
            reset(&[2, 3, 4], Some(&[2, 3, 4])),
            is_c0_shape,
        ));
    }
    cases
}

/// A safetensors file holding `tensors` (name, dtype, shape), every byte 0.
fn file(tensors: &[Entry]) -> Vec<u8> {
    let buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, dtype, shape)| vec![0u8; shape.iter().product::<usize>() * dtype.bitsize() / 8])
        .collect();
    let views = tensors
        .iter()
        .zip(&buffers)
        .map(|((name, dtype, shape), data)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        });
    safetensors::serialize(views, None).unwrap()
}

/// A tensor entry of a test file: name, dtype, shape.
type Entry = (String, Dtype, Vec<usize>);

/// The tensors of `nn.*(3, 4)` in `mode` (one layer with bias; G·4 rows), under `prefix`,
/// after `edit`.
fn model_3_4(mode: RnnMode, prefix: &str, edit: fn(&mut Vec<Entry>)) -> Vec<u8> {
    let rows = mode.gates() * 4;
    let mut tensors: Vec<_> = [
        ("weight_ih_l0", vec![rows, 3]),
        ("weight_hh_l0", vec![rows, 4]),
        ("bias_ih_l0", vec![rows]),
        ("bias_hh_l0", vec![rows]),
    ]
    .into_iter()
    .map(|(name, shape)| (format!("{prefix}{name}"), Dtype::F32, shape))
    .collect();
    edit(&mut tensors);
    file(&tensors)
}

fn bad_weight_files_are_rejected_naming_the_tensor(mode: RnnMode) {
    let load = |bytes: Vec<u8>, config: RnnConfig, prefix: &'static str| {
        move || RnnWeights::from_safetensors(&config, &bytes, prefix).map(|_| ())
    };
    let rnn_3_4 = move |prefix: &str, edit: fn(&mut Vec<Entry>)| model_3_4(mode, prefix, edit);
    let base = RnnConfig::new(mode, 3, 4);
    check(vec![
        case(
            "missing weight_hh",
            load(
                rnn_3_4("", |t| t.retain(|x| x.0 != "weight_hh_l0")),
                base.clone(),
                "",
            ),
            |e| names(e, "weight_hh_l0"),
        ),
        case(
            "mis-shaped weight_ih",
            load(rnn_3_4("", |t| t[0].2.reverse()), base.clone(), ""),
            |e| names(e, "weight_ih_l0"),
        ),
        case(
            "f64 bias",
            load(rnn_3_4("", |t| t[2].1 = Dtype::F64), base.clone(), ""),
            |e| names(e, "bias_ih_l0"),
        ),
        case(
            "wrong prefix",
            load(rnn_3_4("rnn.", |_| {}), base.clone(), "model."),
            |e| names(e, "model.weight_ih_l0"),
        ),
        case(
            "second layer missing",
            load(
                rnn_3_4("", |_| {}),
                RnnConfig {
                    num_layers: 2,
                    ..base.clone()
                },
                "",
            ),
            |e| names(e, "weight_ih_l1"),
        ),
        case(
            "reverse direction missing",
            load(
                rnn_3_4("", |_| {}),
                RnnConfig {
                    bidirectional: true,
                    ..base.clone()
                },
                "",
            ),
            |e| names(e, "weight_ih_l0_reverse"),
        ),
        case(
            "biases present with bias=false",
            load(
                rnn_3_4("", |_| {}),
                RnnConfig {
                    bias: false,
                    ..base.clone()
                },
                "",
            ),
            |e| names(e, "bias_ih_l0"),
        ),
        case(
            "not a safetensors file",
            load(b"definitely not safetensors".to_vec(), base.clone(), ""),
            |e| matches!(e, RnnError::SafeTensors(_)),
        ),
        case(
            "truncated file",
            load(
                {
                    let mut f = rnn_3_4("", |_| {});
                    f.truncate(f.len() - 8);
                    f
                },
                base.clone(),
                "",
            ),
            |e| matches!(e, RnnError::SafeTensors(_)),
        ),
        case(
            "missing file",
            move || RnnWeights::load(&base, "/nonexistent/model.safetensors", "").map(|_| ()),
            |e| matches!(e, RnnError::Io { .. }),
        ),
    ]);
    // The control: the same file, well-formed, loads.
    RnnWeights::from_safetensors(
        &RnnConfig::new(mode, 3, 4),
        &rnn_3_4("rnn.", |_| {}),
        "rnn.",
    )
    .unwrap();
}
for_each_mode!(
    bad_weight_files,
    bad_weight_files_are_rejected_naming_the_tensor
);

/// Sizes given by the caller whose products overflow get a typed error: a head of
/// `usize::MAX / 2` outputs (its weight's element count overflows), tensors of zeros whose
/// element or byte count does not fit in memory.
fn overflowing_sizes_are_rejected_not_panicked_on(mode: RnnMode) {
    let huge_head = || Linear {
        in_features: 4,
        out_features: usize::MAX / 2,
        weight: vec![0.0; 4],
        bias: None,
    };
    let config = move || RnnConfig::new(mode, 3, 4);
    let mut cases = vec![
        case(
            "Tensor::zeros(&[usize::MAX, 2])",
            || Tensor::zeros(&[usize::MAX, 2]).map(|_| ()),
            |e| matches!(e, RnnError::ShapeMismatch { what: "tensor", .. }),
        ),
        case(
            // Counts fine as elements, but not as bytes.
            "Tensor::zeros(&[usize::MAX / 2])",
            || Tensor::zeros(&[usize::MAX / 2]).map(|_| ()),
            |e| matches!(e, RnnError::ShapeMismatch { what: "tensor", .. }),
        ),
        case(
            "CpuRnn::with_head(out_features: usize::MAX / 2)",
            move || {
                let weights = RnnWeights::init(&config(), 1)?;
                CpuRnn::new(config(), &weights)?
                    .with_head(&huge_head())
                    .map(|_| ())
            },
            |e| names(e, "weight"),
        ),
    ];
    if let Some(ctx) = testing::gpu("overflowing_sizes_are_rejected_not_panicked_on") {
        cases.push(case(
            "GpuRnn::with_head(out_features: usize::MAX / 2)",
            move || {
                let weights = RnnWeights::init(&config(), 1)?;
                GpuRnn::new(&ctx, config(), &weights)?
                    .with_head(&huge_head())
                    .map(|_| ())
            },
            |e| names(e, "weight"),
        ));
    }
    check(cases);
}
for_each_mode!(
    overflowing_sizes,
    overflowing_sizes_are_rejected_not_panicked_on
);
