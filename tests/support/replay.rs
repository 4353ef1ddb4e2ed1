//! Replaying the training fixtures (`tests/fixtures/torch_train/{optim,runs}`, README beside
//! them): an optimizer's steps, or a whole training run, from PyTorch's starting point on the
//! same data, checked against PyTorch's results within the README's bounds. Shared by the
//! `optim` and `train_runs` tests and the parity tool (`examples/parity.rs`), which include
//! this file by path.

#![allow(dead_code)]

use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::testing::replay_optimizer;
use wgpu_rnn::{
    Adam, Batch, CpuTrainer, GpuContext, GpuTrainer, InitialState, Linear, Loss, OptimizerConfig,
    Reduction, RnnConfig, RnnMode, RnnWeights, Sgd, Target, Tensor, Train,
};

/// What one replay recorded: every loss, and the parameters at the checkpoints (named as the
/// fixture names them: `rnn.weight_ih_l0`, `linear.weight`).
pub struct Replay {
    pub losses: Vec<f32>,
    pub after: Vec<(usize, Vec<(String, Tensor)>)>,
}

/// The run's model: configuration, initial parameters and head.
pub fn model_of(case: &ReferenceCase) -> (RnnConfig, RnnWeights, Linear) {
    let num = |key: &str| case.meta(key).unwrap().parse::<usize>().unwrap();
    let mode = match case.meta("cell").unwrap() {
        "rnn" => RnnMode::Rnn(wgpu_rnn::Nonlinearity::Tanh),
        "lstm" => RnnMode::Lstm,
        _ => RnnMode::Gru,
    };
    let config = RnnConfig {
        batch_first: true,
        num_layers: num("num_layers"),
        bidirectional: case.meta("bidirectional") == Some("true"),
        ..RnnConfig::new(mode, num("input_size"), num("hidden_size"))
    };
    let weights = RnnWeights::from_safetensors(&config, case.bytes(), "init.rnn.").unwrap();
    let head = Linear::from_safetensors(
        case.bytes(),
        "init.linear.",
        config.output_size(),
        num("output_size"),
    )
    .unwrap();
    (config, weights, head)
}

/// The fixture's optimizer, from its metadata (PyTorch's defaults for what it does not name).
pub fn optimizer_of(case: &ReferenceCase) -> OptimizerConfig {
    let meta: serde_json::Value = serde_json::from_str(case.meta("optimizer").unwrap()).unwrap();
    let num = |key: &str, default: f32| {
        meta.get(key)
            .and_then(|v| v.as_f64())
            .map_or(default, |v| v as f32)
    };
    match meta["type"].as_str().unwrap() {
        "sgd" => Sgd {
            lr: num("lr", 1e-3),
            momentum: num("momentum", 0.0),
            dampening: num("dampening", 0.0),
            weight_decay: num("weight_decay", 0.0),
            nesterov: meta
                .get("nesterov")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
        .into(),
        kind @ ("adam" | "adamw") => {
            let base = if kind == "adam" {
                Adam::new(1e-3)
            } else {
                Adam::adamw(1e-3)
            };
            let betas = meta
                .get("betas")
                .and_then(|b| b.as_array())
                .map_or(base.betas, |b| {
                    (b[0].as_f64().unwrap() as f32, b[1].as_f64().unwrap() as f32)
                });
            Adam {
                lr: num("lr", base.lr),
                betas,
                eps: num("eps", base.eps),
                weight_decay: num("weight_decay", base.weight_decay),
                ..base
            }
            .into()
        }
        other => panic!("unknown optimizer {other}"),
    }
}

fn checkpoints(case: &ReferenceCase) -> Vec<usize> {
    serde_json::from_str(case.meta("checkpoints").unwrap()).unwrap()
}

/// Runs `iterations` of the case's loop on `model`: forward from the carried state, the loss
/// and its backward, clipping where the case clips, the optimizer's step, zero_grad.
pub fn replay_run(case: &ReferenceCase, model: &mut impl Train, iterations: usize) -> Replay {
    let mut optimizer = model.optimizer(optimizer_of(case)).unwrap();
    let clip = case
        .meta("clip_grad_norm")
        .and_then(|c| c.parse::<f32>().ok());
    let keep = checkpoints(case);
    let (mut losses, mut after) = (Vec::new(), Vec::new());
    let classify = case.meta("task") == Some("classify_last_state");
    let sine = case.has("y");
    let (x, y) = if sine {
        (case.tensor("x").unwrap(), case.tensor("y").unwrap())
    } else if classify {
        (case.tensor("x").unwrap(), Tensor::zeros(&[1]).unwrap())
    } else {
        (Tensor::zeros(&[1]).unwrap(), Tensor::zeros(&[1]).unwrap())
    };
    let labels = classify.then(|| {
        (
            case.indices("labels").unwrap(),
            case.indices("lengths").unwrap(),
        )
    });
    let tokens = (!sine && !classify).then(|| {
        (
            case.indices("tokens_x").unwrap(),
            case.indices("tokens_y").unwrap(),
        )
    });
    let vocab = model.config().input_size;
    for i in 0..iterations {
        // The iteration as one call (one submission on a GPU): zero_grad, forward from the
        // carried state, loss and backward, clipping, step.
        if let Some(((labels, shape), (lengths, _))) = &labels {
            // A fresh padded batch from zeros, classified from the last state.
            let (n, t, f) = (shape[1], x.shape()[2], x.shape()[3]);
            let input = Tensor::new(
                x.data()[i * n * t * f..(i + 1) * n * t * f].to_vec(),
                &[n, t, f],
            )
            .unwrap();
            let batch = Batch {
                input: &input,
                lengths: Some(&lengths[i * n..(i + 1) * n]),
                state: InitialState::Zeros,
                target: Target::Classes(&labels[i * n..(i + 1) * n]),
            };
            let loss = Loss::CrossEntropy(Reduction::Mean);
            model.train_step(batch, loss, &mut optimizer, clip).unwrap();
        } else if sine {
            let steps = x.shape()[1];
            let row = |t: &Tensor| {
                Tensor::new(
                    t.data()[i * steps..(i + 1) * steps].to_vec(),
                    &[1, steps, 1],
                )
                .unwrap()
            };
            let (input, target) = (row(&x), row(&y));
            let batch = Batch {
                input: &input,
                lengths: None,
                state: InitialState::Carried,
                target: Target::Values(&target),
            };
            model
                .train_step(batch, Loss::Mse(Reduction::Mean), &mut optimizer, clip)
                .unwrap();
        } else {
            let ((tx, shape), (ty, _)) = tokens.as_ref().unwrap();
            let (n, t) = (shape[1], shape[2]);
            let frames = &tx[i * n * t..(i + 1) * n * t];
            let mut onehot = vec![0.0f32; n * t * vocab];
            for (f, &c) in frames.iter().enumerate() {
                onehot[f * vocab + c] = 1.0;
            }
            let input = Tensor::new(onehot, &[n, t, vocab]).unwrap();
            let batch = Batch {
                input: &input,
                lengths: None,
                state: InitialState::Carried,
                target: Target::Classes(&ty[i * n * t..(i + 1) * n * t]),
            };
            let loss = Loss::CrossEntropy(Reduction::Mean);
            model.train_step(batch, loss, &mut optimizer, clip).unwrap();
        }
        losses.push(model.last_loss().unwrap());
        if keep.contains(&(i + 1)) {
            let named = model
                .parameters()
                .unwrap()
                .into_iter()
                .map(|(name, t)| {
                    let name = match name.strip_prefix("head.") {
                        Some(rest) => format!("linear.{rest}"),
                        None => format!("rnn.{name}"),
                    };
                    (name, t)
                })
                .collect();
            after.push((i + 1, named));
        }
    }
    Replay { losses, after }
}

/// Checks `got` against the case's bounds over its first `iterations`.
pub fn check(name: &str, path: &str, case: &ReferenceCase, got: &Replay) -> Result<String, String> {
    let want = case.tensor("loss").unwrap();
    let want = want.data();
    let relative =
        |a: f32, b: f32| (f64::from(a) - f64::from(b)).abs() / f64::from(b.abs()).max(1e-12);
    for (i, (&a, &b)) in got.losses.iter().zip(want).enumerate() {
        let bound = if i < 100 {
            1e-4
        } else if i < 1000 {
            1e-3
        } else {
            f64::INFINITY
        };
        if relative(a, b) > bound {
            return Err(format!("{name} {path}: loss {i}: {a} vs PyTorch's {b}"));
        }
    }
    let adam = matches!(optimizer_of(case), OptimizerConfig::Adam(_));
    let bound = match optimizer_of(case) {
        OptimizerConfig::Adam(a) => a.lr / 100.0,
        OptimizerConfig::Sgd(_) => 1e-5,
    };
    for (n, params) in &got.after {
        if *n > 10 {
            continue;
        }
        for (pname, t) in params {
            let w = case.tensor(&format!("after{n}.{pname}")).unwrap();
            let worst = t
                .data()
                .iter()
                .zip(w.data())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if worst > bound {
                return Err(format!(
                    "{name} {path}: after{n}.{pname} differs by {worst:e} (adam {adam})"
                ));
            }
        }
    }
    let iterations = got.losses.len();
    if iterations == want.len() {
        let last = |l: &[f32]| {
            l[l.len() - 100..]
                .iter()
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / 100.0
        };
        let (a, b) = (last(&got.losses), last(want));
        if (a - b).abs() > 0.1 * b {
            return Err(format!("{name} {path}: last 100 losses average {a} vs {b}"));
        }
    }
    Ok(format!(
        "{path}: {iterations} iterations, loss {} → {} (PyTorch {} → {})",
        got.losses[0],
        got.losses[iterations - 1],
        want[0],
        want[iterations - 1]
    ))
}

/// Replays an `optim` fixture on the CPU (`ctx` `None`) or a GPU: the worst absolute error of
/// the parameters after any step, or what failed.
pub fn replay_optim(case: &ReferenceCase, ctx: Option<&GpuContext>) -> Result<f64, String> {
    let names = ["a", "b", "c"];
    let steps: usize = case.meta("steps").unwrap().parse().unwrap();
    let clip = case
        .meta("clip_grad_norm")
        .and_then(|c| c.parse::<f32>().ok());
    let tensors = |prefix: String| -> Vec<Tensor> {
        names
            .iter()
            .map(|n| case.tensor(&format!("{prefix}.{n}")).unwrap())
            .collect()
    };
    let grads: Vec<Vec<Tensor>> = (0..steps).map(|s| tensors(format!("grad{s}"))).collect();
    let (after, norms) =
        replay_optimizer(ctx, &tensors("p0".into()), &grads, optimizer_of(case), clip)
            .map_err(|e| e.to_string())?;
    let mut worst = 0.0f64;
    for (s, got) in after.iter().enumerate() {
        for (g, w) in got.iter().zip(tensors(format!("p{}", s + 1))) {
            for (&a, &b) in g.data().iter().zip(w.data()) {
                worst = worst.max((f64::from(a) - f64::from(b)).abs());
            }
        }
    }
    if clip.is_some() {
        let want = case.tensor("total_norm").unwrap();
        for (&a, &b) in norms.iter().zip(want.data()) {
            if (a - b).abs() > 1e-5 * b.abs().max(1.0) {
                return Err(format!("total norm {a} vs PyTorch's {b}"));
            }
        }
        if norms.len() != steps {
            return Err(format!("{} norms for {steps} steps", norms.len()));
        }
    }
    Ok(worst)
}

/// Replays a `train_run` fixture on the CPU (every iteration) and, where `ctx` is given, on
/// the GPU (its first `gpu_iterations`): one summary line per path, or what failed.
pub fn replay_train_run(
    name: &str,
    case: &ReferenceCase,
    ctx: Option<&GpuContext>,
    gpu_iterations: usize,
) -> Result<Vec<String>, String> {
    let total: usize = case
        .meta("iterations")
        .and_then(|i| i.parse().ok())
        .ok_or("no iterations")?;
    let (config, weights, head) = model_of(case);
    // Sequence classification reads the final state; the other runs every frame.
    let on_state = case.meta("task") == Some("classify_last_state");
    let cpu = CpuTrainer::new(config.clone(), &weights).map_err(|e| e.to_string())?;
    let mut cpu = match on_state {
        true => cpu.with_state_head(&head),
        false => cpu.with_head(&head),
    }
    .map_err(|e| e.to_string())?;
    let mut lines = vec![check(
        name,
        "CPU",
        case,
        &replay_run(case, &mut cpu, total),
    )?];
    if let Some(ctx) = ctx {
        let model = GpuTrainer::new(ctx, config, &weights).map_err(|e| e.to_string())?;
        let mut model = match on_state {
            true => model.with_state_head(&head),
            false => model.with_head(&head),
        }
        .map_err(|e| e.to_string())?;
        let iterations = gpu_iterations.min(total);
        lines.push(check(
            name,
            "GPU",
            case,
            &replay_run(case, &mut model, iterations),
        )?);
    }
    Ok(lines)
}
