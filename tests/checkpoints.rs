//! Saved training: parameters written under PyTorch's names and the caller's prefixes (read
//! back by the loaders PyTorch files go through), optimizer state saved and resumed so that
//! training continues bit-identically, on both paths; and checkpoints of another
//! configuration refused with errors that name what differs.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use hostile::TempFile;
use support::{Rng, mode_name};
use wgpu_rnn::testing::gpu;
use wgpu_rnn::{
    Adam, CpuTrainer, GpuTrainer, InitialState, Linear, Loss, OptimizerConfig, Reduction,
    RnnConfig, RnnError, RnnMode, RnnWeights, Sgd, Target, Train,
};

fn config(mode: RnnMode) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        batch_first: true,
        ..RnnConfig::new(mode, 2, 6)
    }
}

fn head() -> Linear {
    head_over(6)
}

fn head_over(in_features: usize) -> Linear {
    let mut rng = Rng(9);
    Linear {
        in_features,
        out_features: 1,
        weight: rng.values(in_features),
        bias: Some(rng.values(1)),
    }
}

/// `iterations` of an MSE loop from the carried state.
fn train(
    model: &mut impl Train,
    optimizer: &mut wgpu_rnn::Optimizer,
    iterations: std::ops::Range<u64>,
) {
    for i in iterations {
        let input = Rng(i).tensor(&[2, 5, 2]);
        let target = Rng(i + 1000).tensor(&[2, 5, 1]);
        let tape = model
            .forward_on_device(&input, None, InitialState::Zeros)
            .unwrap();
        model
            .backward_loss(tape, Loss::Mse(Reduction::Mean), Target::Values(&target))
            .unwrap();
        model.clip_grad_norm(1.0).unwrap();
        model.step(optimizer).unwrap();
        model.zero_grad().unwrap();
    }
}

/// Train 6 iterations straight, or 3, save, load into a fresh model, 3 more: the same
/// parameters, bit for bit.
fn resume<T: Train>(
    make: &dyn Fn(&RnnWeights, &Linear) -> T,
    mode: RnnMode,
    optimizer: OptimizerConfig,
) {
    let config = config(mode);
    let weights = RnnWeights::init(&config, 3).unwrap();
    let mut straight = make(&weights, &head());
    let mut opt = straight.optimizer(optimizer).unwrap();
    train(&mut straight, &mut opt, 0..6);

    let mut first = make(&weights, &head());
    let mut opt = first.optimizer(optimizer).unwrap();
    train(&mut first, &mut opt, 0..3);
    let (model_file, optim_file) = (TempFile::path("safetensors"), TempFile::path("safetensors"));
    first.save(&model_file.0, "rnn.", "linear.").unwrap();
    first.save_optimizer(&opt, &optim_file.0).unwrap();

    let weights = RnnWeights::load(&config, &model_file.0, "rnn.").unwrap();
    let linear = Linear::load(&model_file.0, "linear.", 6, 1).unwrap();
    let mut resumed = make(&weights, &linear);
    let mut opt = resumed.load_optimizer(optimizer, &optim_file.0).unwrap();
    assert_eq!(opt.steps(), 3);
    train(&mut resumed, &mut opt, 3..6);
    assert_eq!(
        resumed.parameters().unwrap(),
        straight.parameters().unwrap(),
        "{} {optimizer:?}: resuming must continue bit-identically",
        mode_name(mode)
    );
}

fn resumes_bit_identically(mode: RnnMode) {
    let cpu = |w: &RnnWeights, h: &Linear| {
        CpuTrainer::new(config(mode), w)
            .unwrap()
            .with_head(h)
            .unwrap()
    };
    for optimizer in [
        OptimizerConfig::from(Adam::new(0.01)),
        Sgd {
            momentum: 0.9,
            ..Sgd::new(0.05)
        }
        .into(),
    ] {
        resume(&cpu, mode, optimizer);
        if let Some(ctx) = gpu("resumes_bit_identically") {
            let gpu_model = |w: &RnnWeights, h: &Linear| {
                GpuTrainer::new(&ctx, config(mode), w)
                    .unwrap()
                    .with_head(h)
                    .unwrap()
            };
            resume(&gpu_model, mode, optimizer);
        }
    }
}
for_each_mode!(resume, resumes_bit_identically);

/// The file has PyTorch's state_dict names under the prefixes, nothing else.
#[test]
fn saved_names_are_pytorchs() {
    let config = config(RnnMode::Lstm);
    let model = CpuTrainer::new(config.clone(), &RnnWeights::init(&config, 1).unwrap())
        .unwrap()
        .with_head(&head())
        .unwrap();
    let file = TempFile::path("safetensors");
    model.save(&file.0, "model.rnn.", "model.linear.").unwrap();
    let bytes = std::fs::read(&file.0).unwrap();
    let parsed = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = parsed.names().into_iter().map(String::from).collect();
    names.sort();
    let mut want: Vec<String> = [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
        "weight_ih_l1",
        "weight_hh_l1",
        "bias_ih_l1",
        "bias_hh_l1",
    ]
    .iter()
    .map(|n| format!("model.rnn.{n}"))
    .chain([
        "model.linear.weight".to_string(),
        "model.linear.bias".to_string(),
    ])
    .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        parsed.tensor("model.rnn.weight_ih_l0").unwrap().shape(),
        &[24, 2]
    );
}

/// An optimizer state of another model or optimizer is refused, naming what differs.
#[test]
fn other_checkpoints_are_refused() {
    let config = config(RnnMode::Gru);
    let model = CpuTrainer::new(config.clone(), &RnnWeights::init(&config, 1).unwrap()).unwrap();
    let opt = model.optimizer(Adam::new(0.1).into()).unwrap();
    let file = TempFile::path("safetensors");
    model.save_optimizer(&opt, &file.0).unwrap();
    // Another optimizer.
    let sgd = model.load_optimizer(
        Sgd {
            momentum: 0.5,
            ..Sgd::new(0.1)
        }
        .into(),
        &file.0,
    );
    assert!(
        matches!(&sgd, Err(RnnError::InvalidConfig(m)) if m.contains("adam")),
        "{sgd:?}"
    );
    // Another model: a tensor of another shape, named.
    let wider = RnnConfig {
        hidden_size: 7,
        ..config
    };
    let other = CpuTrainer::new(wider.clone(), &RnnWeights::init(&wider, 1).unwrap()).unwrap();
    let loaded = other.load_optimizer(Adam::new(0.1).into(), &file.0);
    assert!(
        matches!(&loaded, Err(RnnError::Weights { name, .. }) if name.contains("exp_avg.weight_ih_l0")),
        "{loaded:?}"
    );
    // A model file is not an optimizer's.
    let weights_file = TempFile::path("safetensors");
    model.save(&weights_file.0, "", "").unwrap();
    assert!(
        model
            .load_optimizer(Adam::new(0.1).into(), &weights_file.0)
            .is_err()
    );
}

/// `train_step` (one submission on a GPU) does what the separate calls do, bit for bit.
fn train_step_is_the_loop(mode: RnnMode) {
    let Some(ctx) = gpu("train_step_is_the_loop") else {
        return;
    };
    let config = config(mode);
    let weights = RnnWeights::init(&config, 4).unwrap();
    let make = || {
        GpuTrainer::new(&ctx, config.clone(), &weights)
            .unwrap()
            .with_head(&head())
            .unwrap()
    };
    let (mut separate, mut combined) = (make(), make());
    let mut opt_a = separate.optimizer(Adam::new(0.01).into()).unwrap();
    let mut opt_b = combined.optimizer(Adam::new(0.01).into()).unwrap();
    for i in 0..4u64 {
        let input = Rng(i).tensor(&[2, 5, 2]);
        let target = Rng(i + 1000).tensor(&[2, 5, 1]);
        separate.zero_grad().unwrap();
        let tape = separate
            .forward_on_device(&input, None, InitialState::Carried)
            .unwrap();
        separate
            .backward_loss(tape, Loss::Mse(Reduction::Mean), Target::Values(&target))
            .unwrap();
        separate.clip_grad_norm(0.5).unwrap();
        separate.step(&mut opt_a).unwrap();
        let batch = wgpu_rnn::Batch {
            input: &input,
            lengths: None,
            state: InitialState::Carried,
            target: Target::Values(&target),
        };
        combined
            .train_step(batch, Loss::Mse(Reduction::Mean), &mut opt_b, Some(0.5))
            .unwrap();
        assert_eq!(separate.last_loss().unwrap(), combined.last_loss().unwrap());
        assert_eq!(
            separate.last_grad_norm().unwrap(),
            combined.last_grad_norm().unwrap()
        );
    }
    assert_eq!(
        separate.parameters().unwrap(),
        combined.parameters().unwrap(),
        "{}",
        mode_name(mode)
    );
}
for_each_mode!(train_step, train_step_is_the_loop);

/// `train_steps` (one submission on a GPU for all the batches) does what a loop of
/// `train_step`s does, bit for bit, every batch with its own input and target (a submission's
/// uploads must not overwrite each other); where a batch is refused, the ones before it ran.
/// At H = 6 the iteration runs as separate programs, at H = 8 (an Elman RNN's or a GRU's) as
/// one kernel, whose loss uniforms each iteration uploads.
fn train_steps_are_the_loop(mode: RnnMode) {
    let Some(ctx) = gpu("train_steps_are_the_loop") else {
        return;
    };
    for hidden in [6, 8] {
        let config = RnnConfig {
            hidden_size: hidden,
            ..config(mode)
        };
        train_steps_match(&ctx, mode, config, &head_over(hidden));
    }
}

fn train_steps_match(ctx: &wgpu_rnn::GpuContext, mode: RnnMode, config: RnnConfig, head: &Linear) {
    let weights = RnnWeights::init(&config, 5).unwrap();
    let make = || {
        GpuTrainer::new(ctx, config.clone(), &weights)
            .unwrap()
            .with_head(head)
            .unwrap()
    };
    let data: Vec<_> = (0..5u64)
        .map(|i| (Rng(i).tensor(&[2, 5, 2]), Rng(i + 100).tensor(&[2, 5, 1])))
        .collect();
    let batches: Vec<wgpu_rnn::Batch> = data
        .iter()
        .enumerate()
        .map(|(i, (input, target))| wgpu_rnn::Batch {
            input,
            lengths: (i == 2).then_some(&[5usize, 3][..]),
            state: if i == 0 {
                InitialState::Zeros
            } else {
                InitialState::Carried
            },
            target: Target::Values(target),
        })
        .collect();
    let loss = Loss::Mse(Reduction::Mean);
    let (mut looped, mut batched) = (make(), make());
    let mut opt_a = looped.optimizer(Adam::new(0.01).into()).unwrap();
    let mut opt_b = batched.optimizer(Adam::new(0.01).into()).unwrap();
    for &batch in &batches {
        looped
            .train_step(batch, loss, &mut opt_a, Some(0.5))
            .unwrap();
    }
    batched
        .train_steps(&batches, loss, &mut opt_b, Some(0.5))
        .unwrap();
    assert_eq!(looped.last_loss().unwrap(), batched.last_loss().unwrap());
    assert_eq!(opt_a.steps(), opt_b.steps());
    assert_eq!(
        looped.parameters().unwrap(),
        batched.parameters().unwrap(),
        "{} H={}",
        mode_name(mode),
        config.hidden_size
    );

    // A target of the wrong shape in the third batch: the first two run, then the error.
    let wrong = Rng(7).tensor(&[2, 5, 3]);
    let mut refused = batches[..3].to_vec();
    refused[2].target = Target::Values(&wrong);
    let (mut two, mut partial) = (make(), make());
    let mut opt_two = two.optimizer(Adam::new(0.01).into()).unwrap();
    let mut opt_partial = partial.optimizer(Adam::new(0.01).into()).unwrap();
    two.train_steps(&batches[..2], loss, &mut opt_two, None)
        .unwrap();
    assert!(matches!(
        partial.train_steps(&refused, loss, &mut opt_partial, None),
        Err(RnnError::ShapeMismatch { .. })
    ));
    assert_eq!(opt_partial.steps(), 2);
    assert_eq!(two.parameters().unwrap(), partial.parameters().unwrap());
}
for_each_mode!(train_steps, train_steps_are_the_loop);

/// A cell with a head keeps the cell's names on both paths (`weight_ih`, then `head.weight`).
#[test]
fn a_cell_with_a_head_keeps_its_names() {
    let cell = wgpu_rnn::CellConfig::gru(2, 6);
    let weights = support::cell_weights(&cell, 3);
    let names = |params: Vec<(String, wgpu_rnn::Tensor)>| -> Vec<String> {
        params.into_iter().map(|(n, _)| n).collect()
    };
    let cpu = CpuTrainer::cell(cell.clone(), &weights)
        .unwrap()
        .with_head(&head())
        .unwrap();
    let want = [
        "weight_ih",
        "weight_hh",
        "bias_ih",
        "bias_hh",
        "head.weight",
        "head.bias",
    ];
    assert_eq!(names(cpu.parameters().unwrap()), want);
    if let Some(ctx) = gpu("a_cell_with_a_head_keeps_its_names") {
        let gpu_model = GpuTrainer::cell(&ctx, cell, &weights)
            .unwrap()
            .with_head(&head())
            .unwrap();
        assert_eq!(names(gpu_model.parameters().unwrap()), want);
    }
}
