//! `nn.RNNCell`: one step, `h' = act(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`, on either backend.
//!
//! A cell is a one-layer, one-step RNN, so it runs on the same engine: the same kernels on the
//! GPU, the same reference loops on the CPU.

use std::path::Path;

use crate::config::{Nonlinearity, RnnConfig};
use crate::cpu::CpuRnn;
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::model::GpuRnn;
use crate::rnn::Rnn;
use crate::tensor::Tensor;
use crate::weights::{DirectionWeights, RnnWeights, parse_safetensors, read_file};

/// The configuration of a `torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnCellConfig {
    /// Features per input.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Whether the cell has `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// `tanh` (default) or `relu`.
    pub nonlinearity: Nonlinearity,
}

impl RnnCellConfig {
    /// `torch.nn.RNNCell(input_size, hidden_size)` with PyTorch's defaults.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RnnCellConfig {
            input_size,
            hidden_size,
            bias: true,
            nonlinearity: Nonlinearity::Tanh,
        }
    }

    /// The one-layer `nn.RNN` that computes the same step.
    fn as_rnn(&self) -> RnnConfig {
        RnnConfig {
            bias: self.bias,
            nonlinearity: self.nonlinearity,
            ..RnnConfig::new(self.input_size, self.hidden_size)
        }
    }

    /// Loads a cell's `state_dict` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, each
    /// after `prefix`) from a safetensors file.
    pub fn load_weights(&self, path: impl AsRef<Path>, prefix: &str) -> Result<DirectionWeights> {
        self.weights_from_safetensors(&read_file(path.as_ref())?, prefix)
    }

    /// Like [`load_weights`](Self::load_weights), from the bytes of a safetensors file.
    pub fn weights_from_safetensors(&self, bytes: &[u8], prefix: &str) -> Result<DirectionWeights> {
        self.as_rnn().validate()?;
        let file = parse_safetensors(bytes)?;
        DirectionWeights::read(
            &file,
            |name| format!("{prefix}{name}"),
            (self.hidden_size, self.input_size),
            self.bias,
        )
    }
}

/// An `nn.RNNCell` on the CPU (`RnnCell<CpuRnn>`) or a GPU (`RnnCell<GpuRnn>`).
#[derive(Debug)]
pub struct RnnCell<M> {
    config: RnnCellConfig,
    rnn: M,
}

impl RnnCell<CpuRnn> {
    /// A cell evaluated by the CPU reference path.
    pub fn cpu(config: RnnCellConfig, weights: DirectionWeights) -> Result<Self> {
        let rnn_config = config.as_rnn();
        let weights = RnnWeights::new(&rnn_config, vec![weights])?;
        Ok(RnnCell {
            rnn: CpuRnn::new(rnn_config, weights)?,
            config,
        })
    }
}

impl RnnCell<GpuRnn> {
    /// A cell on the GPU of `ctx`.
    pub fn gpu(ctx: &GpuContext, config: RnnCellConfig, weights: DirectionWeights) -> Result<Self> {
        let rnn_config = config.as_rnn();
        let weights = RnnWeights::new(&rnn_config, vec![weights])?;
        Ok(RnnCell {
            rnn: GpuRnn::new(ctx, rnn_config, &weights)?,
            config,
        })
    }
}

impl<M: Rnn> RnnCell<M> {
    /// The cell's configuration.
    pub fn config(&self) -> &RnnCellConfig {
        &self.config
    }

    /// `h' = cell(input, hx)`: input (N, I) or (I); hx (N, H) or (H), zeros when `None`.
    /// Returns h' shaped like hx.
    pub fn step(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        let (i, h) = (self.config.input_size, self.config.hidden_size);
        let batch = match *input.shape() {
            [n, f] if f == i && n > 0 => Some(n),
            [f] if f == i => None,
            _ => {
                return Err(RnnError::shape(
                    "input",
                    format!("(N, {i}) or ({i})"),
                    input.shape(),
                ));
            }
        };
        let state_shape: Vec<usize> = batch.map_or(vec![h], |n| vec![n, h]);
        if let Some(hx) = hx {
            if hx.shape() != state_shape.as_slice() {
                return Err(RnnError::shape(
                    "hx",
                    format!("{state_shape:?}"),
                    hx.shape(),
                ));
            }
        }
        // One timestep of a one-layer RNN: input (1, N, I) or (1, I); h0 (1, N, H) or (1, H).
        let with_time = |t: &Tensor| {
            let mut shape = vec![1];
            shape.extend_from_slice(t.shape());
            Tensor::new(t.data().to_vec(), &shape)
        };
        let h0 = hx.map(with_time).transpose()?;
        let out = self.rnn.forward(&with_time(input)?, h0.as_ref())?;
        Tensor::new(out.h_n.into_data(), &state_shape)
    }
}
