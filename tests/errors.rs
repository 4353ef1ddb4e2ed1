//! Bad input gets a clear, typed error and never a panic: one table, one assertion per case,
//! each checking the error variant (and, for weights, that the message names the tensor).

use std::sync::Arc;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use wgpu_rnn::{
    CpuRnn, DirectionWeights, GpuRnn, Limit, Linear, Rnn, RnnConfig, RnnError, RnnWeights, Tensor,
    testing,
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
fn names(e: &RnnError, tensor: &str) -> bool {
    matches!(e, RnnError::Weights { name, .. } if name == tensor)
}

fn with(f: fn(&mut RnnConfig)) -> RnnConfig {
    let mut config = RnnConfig::new(3, 4);
    f(&mut config);
    config
}

#[test]
fn invalid_configurations_are_rejected() {
    let init = |f: fn(&mut RnnConfig)| move || RnnWeights::init(&with(f), 1).map(|_| ());
    check(vec![
        case("hidden_size 0", init(|c| c.hidden_size = 0), is_config),
        case("input_size 0", init(|c| c.input_size = 0), is_config),
        case("num_layers 0", init(|c| c.num_layers = 0), is_config),
        case("dropout 1.5", init(|c| c.dropout = 1.5), is_config),
        case("dropout NaN", init(|c| c.dropout = f32::NAN), is_config),
        case(
            "weights of another config",
            || {
                let weights = RnnWeights::init(&RnnConfig::new(3, 5), 1)?;
                CpuRnn::new(RnnConfig::new(3, 4), weights).map(|_| ())
            },
            |e| matches!(e, RnnError::Weights { .. }),
        ),
        case(
            "direction weights of wrong length",
            || {
                let unit = DirectionWeights {
                    weight_ih: vec![0.0; 12],
                    weight_hh: vec![0.0; 15],
                    bias_ih: None,
                    bias_hh: None,
                };
                RnnWeights::new(&with(|c| c.bias = false), vec![unit]).map(|_| ())
            },
            |e| names(e, "weight_hh_l0"),
        ),
        case(
            "tensor data/shape mismatch",
            || Tensor::new(vec![0.0; 5], &[2, 3]).map(|_| ()),
            |e| matches!(e, RnnError::ShapeMismatch { what: "tensor", .. }),
        ),
    ]);
}

/// Forward-call cases for a model of RNN(3, 4, num_layers=2), on whichever backend.
fn forward_cases(model: Arc<dyn Rnn>) -> Vec<Case> {
    let run = move |input: &'static [usize], h0: Option<&'static [usize]>| {
        let model = Arc::clone(&model);
        move || {
            let h0 = h0.map(|shape| Tensor::zeros(shape).unwrap());
            model
                .forward(&Tensor::zeros(input).unwrap(), h0.as_ref())
                .map(|_| ())
        }
    };
    vec![
        case(
            "input with 4 dims",
            run(&[2, 1, 1, 3], None),
            is_input_shape,
        ),
        case("input of 1 dim", run(&[3], None), is_input_shape),
        case(
            "input with wrong features",
            run(&[2, 1, 5], None),
            is_input_shape,
        ),
        case("T = 0", run(&[0, 2, 3], None), is_input_shape),
        case("N = 0", run(&[4, 0, 3], None), is_input_shape),
        case("unbatched T = 0", run(&[0, 3], None), is_input_shape),
        case(
            "h0 missing a layer",
            run(&[4, 3, 3], Some(&[1, 3, 4])),
            is_h0_shape,
        ),
        case(
            "h0 given batch-first",
            run(&[4, 3, 3], Some(&[3, 2, 4])),
            is_h0_shape,
        ),
        case(
            "h0 batched for unbatched input",
            run(&[4, 3], Some(&[2, 1, 4])),
            is_h0_shape,
        ),
        case(
            "h0 with wrong hidden size",
            run(&[4, 3, 3], Some(&[2, 3, 5])),
            is_h0_shape,
        ),
    ]
}

fn two_layers() -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(3, 4)
    }
}

#[test]
fn bad_forward_input_is_rejected_on_the_cpu() {
    let config = two_layers();
    let weights = RnnWeights::init(&config, 1).unwrap();
    check(forward_cases(Arc::new(
        CpuRnn::new(config, weights).unwrap(),
    )));
}

#[test]
fn bad_forward_input_is_rejected_on_the_gpu() {
    let Some(ctx) = testing::gpu("bad_forward_input_is_rejected_on_the_gpu") else {
        return;
    };
    let config = two_layers();
    let weights = RnnWeights::init(&config, 1).unwrap();
    let mut cases = forward_cases(Arc::new(GpuRnn::new(&ctx, config, &weights).unwrap()));
    let ctx2 = ctx.clone();
    cases.push(case(
        "batch beyond the dispatch limit",
        move || {
            let wide = GpuRnn::new(
                &ctx2,
                RnnConfig::new(1, 1),
                &RnnWeights::init(&RnnConfig::new(1, 1), 1)?,
            )?;
            let n = ctx2.limits().max_compute_workgroups_per_dimension as usize + 1;
            wide.forward(&Tensor::zeros(&[1, n, 1]).unwrap(), None)
                .map(|_| ())
        },
        |e| {
            matches!(
                e,
                RnnError::ExceedsLimits {
                    limit: Limit::WorkgroupsPerDimension,
                    ..
                }
            )
        },
    ));
    let bidirectional = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(1, 1024)
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
                .forward(&Tensor::zeros(&[frames + 1, 1, 1]).unwrap(), None)
                .map(|_| ())
        },
        |e| {
            matches!(
                e,
                RnnError::ExceedsLimits {
                    limit: Limit::TimeChunk,
                    ..
                }
            )
        },
    ));
    cases.push(case(
        "one timestep beyond the storage binding limit",
        move || {
            big.forward(&Tensor::zeros(&[1, frames + 1, 1]).unwrap(), None)
                .map(|_| ())
        },
        |e| {
            matches!(
                e,
                RnnError::ExceedsLimits {
                    limit: Limit::StorageBinding,
                    ..
                }
            )
        },
    ));
    check(cases);
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

/// The tensors of RNN(3, 4), one layer with bias, under `prefix`, after `edit`.
/// A tensor entry of a test file: name, dtype, shape.
type Entry = (String, Dtype, Vec<usize>);

fn rnn_3_4(prefix: &str, edit: fn(&mut Vec<Entry>)) -> Vec<u8> {
    let mut tensors: Vec<_> = [
        ("weight_ih_l0", vec![4, 3]),
        ("weight_hh_l0", vec![4, 4]),
        ("bias_ih_l0", vec![4]),
        ("bias_hh_l0", vec![4]),
    ]
    .into_iter()
    .map(|(name, shape)| (format!("{prefix}{name}"), Dtype::F32, shape))
    .collect();
    edit(&mut tensors);
    file(&tensors)
}

#[test]
fn bad_weight_files_are_rejected_naming_the_tensor() {
    let load = |bytes: Vec<u8>, config: RnnConfig, prefix: &'static str| {
        move || RnnWeights::from_safetensors(&config, &bytes, prefix).map(|_| ())
    };
    let base = RnnConfig::new(3, 4);
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
            load(rnn_3_4("", |t| t[0].2 = vec![3, 4]), base.clone(), ""),
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
    RnnWeights::from_safetensors(&RnnConfig::new(3, 4), &rnn_3_4("rnn.", |_| {}), "rnn.").unwrap();
}

/// Sizes given by the caller whose products overflow get a typed error: a head of
/// `usize::MAX / 2` outputs (its weight's element count overflows), tensors of zeros whose
/// element or byte count does not fit in memory, and a stream whose flush would.
#[test]
fn overflowing_sizes_are_rejected_not_panicked_on() {
    let huge_head = || Linear {
        in_features: 4,
        out_features: usize::MAX / 2,
        weight: vec![0.0; 4],
        bias: None,
    };
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
                let config = RnnConfig::new(3, 4);
                let weights = RnnWeights::init(&config, 1)?;
                CpuRnn::new(config, weights)?
                    .with_head(huge_head())
                    .map(|_| ())
            },
            |e| names(e, "weight"),
        ),
    ];
    if let Some(ctx) = testing::gpu("overflowing_sizes_are_rejected_not_panicked_on") {
        cases.push(case(
            "GpuRnn::with_head(out_features: usize::MAX / 2)",
            move || {
                let config = RnnConfig::new(3, 4);
                let weights = RnnWeights::init(&config, 1)?;
                GpuRnn::new(&ctx, config, &weights)?
                    .with_head(&huge_head())
                    .map(|_| ())
            },
            |e| names(e, "weight"),
        ));
    }
    check(cases);
}
