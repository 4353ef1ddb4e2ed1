//! The models a configuration is timed on, from the same weights: a `GpuRnn` and a `CpuRnn` of
//! the shape's mode, or (`--backward`) a `GpuTrainer` and a `CpuTrainer`.

use wgpu_rnn::{
    CpuRnn, CpuTrainer, GpuContext, GpuOptions, GpuRnn, GpuTrainer, Recurrence, RnnWeights,
};

use crate::shape::Shape;

/// The seed of every model's weights (PyTorch's initialisation, U(−1/√H, 1/√H)).
const SEED: u64 = 7;

pub type GpuModel = GpuRnn;
pub type CpuModel = CpuRnn;

/// The configuration's GPU model with `recurrence` (`Err` when the adapter cannot take it)
/// and, unless `gpu_only`, its CPU model, from the same weights. `Err` outside: the weights
/// themselves.
pub fn build(
    ctx: &GpuContext,
    shape: Shape,
    gpu_only: bool,
    recurrence: Recurrence,
) -> wgpu_rnn::Result<(wgpu_rnn::Result<GpuModel>, Option<CpuModel>)> {
    let config = shape.config();
    let weights = RnnWeights::init(&config, SEED)?;
    let options = GpuOptions::recurrence(recurrence);
    let gpu = GpuRnn::with_options(ctx, config.clone(), &weights, options);
    if gpu_only {
        return Ok((gpu, None));
    }
    Ok((gpu, Some(CpuRnn::new(config, &weights)?)))
}

/// The same for training (`--backward`): the configuration's `GpuTrainer` with `recurrence`
/// and, unless `gpu_only`, its `CpuTrainer`.
pub fn build_trainers(
    ctx: &GpuContext,
    shape: Shape,
    gpu_only: bool,
    recurrence: Recurrence,
) -> wgpu_rnn::Result<(wgpu_rnn::Result<GpuTrainer>, Option<CpuTrainer>)> {
    let config = shape.config();
    let weights = RnnWeights::init(&config, SEED)?;
    let gpu = GpuTrainer::new(ctx, config.clone(), &weights)
        .map(|trainer| trainer.with_recurrence(recurrence));
    if gpu_only {
        return Ok((gpu, None));
    }
    Ok((gpu, Some(CpuTrainer::new(config, &weights)?)))
}
