//! The models a configuration is timed on: `GpuRnn` / `CpuRnn` for `--cell rnn`,
//! `GpuGatedRnn` / `CpuGatedRnn` for `lstm` and `gru`, behind one small interface.

use std::time::Duration;

use wgpu_rnn::{
    CpuGatedRnn, CpuRnn, GatedRnn, GatedWeights, GpuContext, GpuGatedRnn, GpuRnn, Rnn, RnnWeights,
    Tensor,
};

use crate::shape::Shape;

/// The seed of every model's weights (PyTorch's initialisation, U(−1/√H, 1/√H)).
const SEED: u64 = 7;

pub enum GpuModel {
    Rnn(GpuRnn),
    Gated(GpuGatedRnn),
}

pub enum CpuModel {
    Rnn(CpuRnn),
    Gated(CpuGatedRnn),
}

/// The weights of one configuration, drawn once for both paths.
enum Weights {
    Rnn(RnnWeights),
    Gated(GatedWeights),
}

/// The configuration's GPU model (`Err` when the adapter cannot take it) and, unless
/// `gpu_only`, its CPU model, from the same weights. `Err` outside: the weights themselves.
pub fn build(
    ctx: &GpuContext,
    shape: Shape,
    gpu_only: bool,
) -> wgpu_rnn::Result<(wgpu_rnn::Result<GpuModel>, Option<CpuModel>)> {
    let weights = match shape.gated_config() {
        None => Weights::Rnn(RnnWeights::init(&shape.rnn_config(), SEED)?),
        Some(config) => Weights::Gated(GatedWeights::init(&config, SEED)?),
    };
    let gpu = match (&weights, shape.gated_config()) {
        (Weights::Rnn(weights), _) => {
            GpuRnn::new(ctx, shape.rnn_config(), weights).map(GpuModel::Rnn)
        }
        (Weights::Gated(weights), Some(config)) => {
            GpuGatedRnn::new(ctx, config, weights).map(GpuModel::Gated)
        }
        (Weights::Gated(_), None) => unreachable!("gated weights come from a gated config"),
    };
    if gpu_only {
        return Ok((gpu, None));
    }
    let cpu = match (weights, shape.gated_config()) {
        (Weights::Rnn(weights), _) => CpuModel::Rnn(CpuRnn::new(shape.rnn_config(), weights)?),
        (Weights::Gated(weights), Some(config)) => {
            CpuModel::Gated(CpuGatedRnn::new(config, weights)?)
        }
        (Weights::Gated(_), None) => unreachable!("gated weights come from a gated config"),
    };
    Ok((gpu, Some(cpu)))
}

impl GpuModel {
    /// One forward from a zero state; the output is read back and dropped.
    pub fn forward(&self, input: &Tensor) -> wgpu_rnn::Result<()> {
        match self {
            GpuModel::Rnn(model) => model.forward(input, None).map(drop),
            GpuModel::Gated(model) => model.forward(input, None, None).map(drop),
        }
    }

    pub fn set_profiling(&self, on: bool) {
        match self {
            GpuModel::Rnn(model) => model.set_profiling(on),
            GpuModel::Gated(model) => model.set_profiling(on),
        }
    }

    pub fn last_gpu_time(&self) -> Option<Duration> {
        match self {
            GpuModel::Rnn(model) => model.last_gpu_time(),
            GpuModel::Gated(model) => model.last_gpu_time(),
        }
    }

    pub fn time_chunk(&self, seq_len: usize, batch: usize) -> wgpu_rnn::Result<usize> {
        match self {
            GpuModel::Rnn(model) => model.time_chunk(seq_len, batch),
            GpuModel::Gated(model) => model.time_chunk(seq_len, batch),
        }
    }
}

impl CpuModel {
    pub fn forward(&self, input: &Tensor) -> wgpu_rnn::Result<()> {
        match self {
            CpuModel::Rnn(model) => model.forward(input, None).map(drop),
            CpuModel::Gated(model) => model.forward(input, None, None).map(drop),
        }
    }
}
