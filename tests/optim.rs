//! Optimizers and clipping against `torch.optim` and `clip_grad_norm_`: every `optim`
//! fixture (tests/fixtures/torch_train/optim, README beside them) replayed on the CPU and the
//! GPU, parameters after each step within 1e-6; the trainers' optimizer API (state on the
//! model's device, refusing another model's optimizer, clipping the model's gradients) against
//! the CPU trainer.

#[path = "support/replay.rs"]
mod replay;
mod support;

use wgpu_rnn::testing::gpu;
use wgpu_rnn::{
    Adam, CpuTrainer, GpuTrainer, OptimizerConfig, OutputGrads, RnnConfig, RnnError, RnnMode,
    RnnWeights, Sgd, Tensor, Train,
};

#[test]
fn torch_optim_fixtures() {
    let cases = support::cases_in("tests/fixtures/torch_train/optim");
    assert_eq!(cases.len(), 7, "the 7 optimizer fixtures");
    let ctx = gpu("torch_optim_fixtures");
    for (name, case) in &cases {
        let cpu = replay::replay_optim(case, None).unwrap();
        eprintln!("{name}: CPU worst {cpu:.2e}");
        assert!(cpu <= 1e-6, "{name}: CPU parameters differ by {cpu:.3e}");
        if let Some(ctx) = &ctx {
            let gpu = replay::replay_optim(case, Some(ctx)).unwrap();
            eprintln!("{name}: GPU worst {gpu:.2e}");
            assert!(gpu <= 1e-6, "{name}: GPU parameters differ by {gpu:.3e}");
        }
    }
}

/// A few training iterations (clip, step, zero_grad) on both trainers give the same
/// parameters; the optimizer's state lives with its model.
fn trainers_step_alike(mode: RnnMode) {
    let Some(ctx) = gpu("trainers_step_alike") else {
        return;
    };
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 3, 8)
    };
    let weights = RnnWeights::init(&config, 5).unwrap();
    let mut cpu = CpuTrainer::new(config.clone(), &weights).unwrap();
    let mut gpu_model = GpuTrainer::new(&ctx, config.clone(), &weights).unwrap();
    let input = support::Rng(2).tensor(&[6, 2, 3]);
    let d_out = support::Rng(3).tensor(&[6, 2, 8]);
    for config in [
        OptimizerConfig::from(Adam::adamw(0.01)),
        Sgd {
            momentum: 0.9,
            nesterov: true,
            ..Sgd::new(0.1)
        }
        .into(),
    ] {
        let mut cpu_opt = cpu.optimizer(config).unwrap();
        let mut gpu_opt = gpu_model.optimizer(config).unwrap();
        for _ in 0..3 {
            for model in [&mut cpu as &mut dyn TrainDyn, &mut gpu_model] {
                model.iteration(&input, &d_out);
            }
            cpu.clip_grad_norm(0.5).unwrap();
            gpu_model.clip_grad_norm(0.5).unwrap();
            let (a, b) = (
                cpu.last_grad_norm().unwrap(),
                gpu_model.last_grad_norm().unwrap(),
            );
            assert!((a - b).abs() <= 1e-4 * a.max(1.0), "norms {a} vs {b}");
            cpu.step(&mut cpu_opt).unwrap();
            gpu_model.step(&mut gpu_opt).unwrap();
            cpu.zero_grad().unwrap();
            gpu_model.zero_grad().unwrap();
        }
        for ((name, a), (_, b)) in cpu
            .parameters()
            .unwrap()
            .iter()
            .zip(&gpu_model.parameters().unwrap())
        {
            for (&x, &y) in a.data().iter().zip(b.data()) {
                assert!((x - y).abs() <= 1e-4, "{name}: {x} vs {y}");
            }
        }
        // An optimizer belongs to its model.
        assert!(matches!(
            cpu.step(&mut gpu_opt),
            Err(RnnError::InvalidConfig(_))
        ));
    }
}

/// One forward and backward, whatever the trainer.
trait TrainDyn {
    fn iteration(&mut self, input: &Tensor, d_out: &Tensor);
}

impl<T: Train> TrainDyn for T {
    fn iteration(&mut self, input: &Tensor, d_out: &Tensor) {
        let (_, tape) = self.forward_train(input, None, None).unwrap();
        self.backward(tape, OutputGrads::output(d_out)).unwrap();
    }
}

#[test]
fn trainers_step_alike_rnn() {
    trainers_step_alike(RnnMode::Rnn(wgpu_rnn::Nonlinearity::Tanh));
}

#[test]
fn trainers_step_alike_lstm() {
    trainers_step_alike(RnnMode::Lstm);
}

#[test]
fn trainers_step_alike_gru() {
    trainers_step_alike(RnnMode::Gru);
}

#[test]
fn optimizer_settings_are_checked() {
    let config = RnnConfig::rnn(2, 3);
    let model = CpuTrainer::new(config.clone(), &RnnWeights::init(&config, 0).unwrap()).unwrap();
    for bad in [
        OptimizerConfig::from(Sgd::new(-1.0)),
        Sgd {
            nesterov: true,
            ..Sgd::new(0.1)
        }
        .into(),
        Adam {
            betas: (1.0, 0.9),
            ..Adam::new(0.1)
        }
        .into(),
        Adam {
            eps: f32::NAN,
            ..Adam::new(0.1)
        }
        .into(),
    ] {
        assert!(
            matches!(model.optimizer(bad), Err(RnnError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
    assert!(model.last_grad_norm().is_err());
}

/// A non-finite loss comes back as the value PyTorch's would be (NaN here), when asked for,
/// on both paths; nothing hangs, and the model stays usable.
#[test]
fn non_finite_loss_is_reported() {
    let config = RnnConfig {
        batch_first: true,
        ..RnnConfig::gru(2, 4)
    };
    let weights = RnnWeights::init(&config, 2).unwrap();
    let mut input = support::Rng(4).tensor(&[1, 6, 2]).into_data();
    input[3] = f32::NAN;
    let input = Tensor::new(input, &[1, 6, 2]).unwrap();
    let target = support::Rng(5).tensor(&[1, 6, 4]);
    let check = |model: &mut dyn TrainLoss| {
        let loss = model.mse(&input, &target);
        assert!(loss.is_nan(), "a NaN input gives a NaN loss, got {loss}");
    };
    check(&mut CpuTrainer::new(config.clone(), &weights).unwrap());
    if let Some(ctx) = gpu("non_finite_loss_is_reported") {
        check(&mut GpuTrainer::new(&ctx, config, &weights).unwrap());
    }
}

/// One MSE loss and backward, its value read back.
trait TrainLoss {
    fn mse(&mut self, input: &Tensor, target: &Tensor) -> f32;
}

impl<T: Train> TrainLoss for T {
    fn mse(&mut self, input: &Tensor, target: &Tensor) -> f32 {
        let tape = self
            .forward_on_device(input, None, wgpu_rnn::InitialState::Zeros)
            .unwrap();
        self.backward_loss(
            tape,
            wgpu_rnn::Loss::Mse(wgpu_rnn::Reduction::Mean),
            wgpu_rnn::Target::Values(target),
        )
        .unwrap();
        self.last_loss().unwrap()
    }
}
