//! `nn.LSTMCell` and `nn.GRUCell`: one step of one layer, on the same engines as the full
//! models (a cell is a one-layer, one-step model): `LstmCell::cpu` / `GruCell::cpu` on the CPU
//! reference, `LstmCell::gpu` / `GruCell::gpu` on the GPU.

use std::path::Path;

use super::config::{GateKind, GatedConfig};
use super::cpu::CpuGatedRnn;
use super::gpu::GpuGatedRnn;
use super::weights::{GatedDirectionWeights, GatedWeights};
use super::{GatedOutput, GatedRnn};
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::tensor::Tensor;
use crate::weights::{parse_safetensors, read_file};

/// The configuration of a `torch.nn.LSTMCell(input_size, hidden_size, bias)` or
/// `torch.nn.GRUCell(input_size, hidden_size, bias)`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedCellConfig {
    /// LSTM or GRU.
    pub kind: GateKind,
    /// Features per input.
    pub input_size: usize,
    /// Features of the hidden (and, for an LSTM, cell) state.
    pub hidden_size: usize,
    /// Whether the cell has `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
}

impl GatedCellConfig {
    /// `torch.nn.LSTMCell(input_size, hidden_size)`.
    pub fn lstm(input_size: usize, hidden_size: usize) -> Self {
        GatedCellConfig {
            kind: GateKind::Lstm,
            input_size,
            hidden_size,
            bias: true,
        }
    }

    /// `torch.nn.GRUCell(input_size, hidden_size)`.
    pub fn gru(input_size: usize, hidden_size: usize) -> Self {
        GatedCellConfig {
            kind: GateKind::Gru,
            ..Self::lstm(input_size, hidden_size)
        }
    }

    /// The one-layer model that computes the same step.
    fn as_model(&self) -> GatedConfig {
        GatedConfig {
            bias: self.bias,
            ..GatedConfig::with_defaults(self.kind, self.input_size, self.hidden_size)
        }
    }

    /// Loads a cell's `state_dict` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, each
    /// after `prefix`) from a safetensors file.
    pub fn load_weights(
        &self,
        path: impl AsRef<Path>,
        prefix: &str,
    ) -> Result<GatedDirectionWeights> {
        self.weights_from_safetensors(&read_file(path.as_ref())?, prefix)
    }

    /// Like [`load_weights`](Self::load_weights), from the bytes of a safetensors file.
    pub fn weights_from_safetensors(
        &self,
        bytes: &[u8],
        prefix: &str,
    ) -> Result<GatedDirectionWeights> {
        let config = self.as_model();
        config.validate()?;
        let file = parse_safetensors(bytes)?;
        GatedDirectionWeights::read(
            &file,
            |name| format!("{prefix}{name}"),
            &config,
            self.input_size,
        )
    }

    /// The one-layer model of a cell of `kind`, with its weights checked.
    fn model(
        &self,
        kind: GateKind,
        weights: GatedDirectionWeights,
    ) -> Result<(GatedConfig, GatedWeights)> {
        if self.kind != kind {
            return Err(RnnError::InvalidConfig(format!(
                "a {} cell needs a {} configuration",
                kind.torch_name(),
                kind.torch_name()
            )));
        }
        let config = self.as_model();
        let weights = GatedWeights::new(&config, vec![weights])?;
        Ok((config, weights))
    }

    /// Checks a cell input, (N, I) or (I), and returns the shape of the states that go with
    /// it: (N, H) or (H).
    fn state_shape(&self, input: &Tensor) -> Result<Vec<usize>> {
        let (i, h) = (self.input_size, self.hidden_size);
        match *input.shape() {
            [n, f] if f == i && n > 0 => Ok(vec![n, h]),
            [f] if f == i => Ok(vec![h]),
            _ => Err(RnnError::shape(
                "input",
                format!("(N, {i}) or ({i})"),
                input.shape(),
            )),
        }
    }
}

/// Adds a leading dimension of 1: a cell's tensors as one timestep, or one layer of state.
fn with_leading_one(t: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1];
    shape.extend_from_slice(t.shape());
    Tensor::new(t.data().to_vec(), &shape)
}

/// Runs one step of `model` (one layer) for a cell: input (N, I) or (I), states (N, ·) or (·).
fn one_step(
    model: &impl GatedRnn,
    input: &Tensor,
    h: Option<&Tensor>,
    c: Option<&Tensor>,
) -> Result<GatedOutput> {
    let h0 = h.map(with_leading_one).transpose()?;
    let c0 = c.map(with_leading_one).transpose()?;
    model.forward(&with_leading_one(input)?, h0.as_ref(), c0.as_ref())
}

/// Checks a state given to a cell against the shape its input implies.
fn check_state(what: &'static str, state: Option<&Tensor>, expected: &[usize]) -> Result<()> {
    match state {
        Some(s) if s.shape() != expected => {
            Err(RnnError::shape(what, format!("{expected:?}"), s.shape()))
        }
        _ => Ok(()),
    }
}

/// An `nn.LSTMCell` on the CPU reference path (`LstmCell<CpuGatedRnn>`, the default) or a
/// GPU (`LstmCell<GpuGatedRnn>`).
#[derive(Clone, Debug)]
pub struct LstmCell<M = CpuGatedRnn> {
    config: GatedCellConfig,
    model: M,
}

impl LstmCell<CpuGatedRnn> {
    /// A cell from its configuration (`kind` must be LSTM) and weights (`weight_ih` (4H, I),
    /// `weight_hh` (4H, H), biases (4H), no `weight_hr`).
    pub fn cpu(config: GatedCellConfig, weights: GatedDirectionWeights) -> Result<Self> {
        let (model_config, weights) = config.model(GateKind::Lstm, weights)?;
        let model = CpuGatedRnn::new(model_config, weights)?;
        Ok(LstmCell { config, model })
    }
}

impl LstmCell<GpuGatedRnn> {
    /// The same cell on the GPU of `ctx`: each step is one projection and one fused step.
    pub fn gpu(
        ctx: &GpuContext,
        config: GatedCellConfig,
        weights: GatedDirectionWeights,
    ) -> Result<Self> {
        let (model_config, weights) = config.model(GateKind::Lstm, weights)?;
        let model = GpuGatedRnn::new(ctx, model_config, &weights)?;
        Ok(LstmCell { config, model })
    }
}

impl<M: GatedRnn> LstmCell<M> {
    /// The cell's configuration.
    pub fn config(&self) -> &GatedCellConfig {
        &self.config
    }

    /// `h', c' = cell(input, (h, c))`: input (N, I) or (I); h and c (N, H) or (H), both zeros
    /// when `hx` is `None`. Returns (h', c') shaped like h and c.
    pub fn step(&self, input: &Tensor, hx: Option<(&Tensor, &Tensor)>) -> Result<(Tensor, Tensor)> {
        let shape = self.config.state_shape(input)?;
        check_state("hx", hx.map(|(h, _)| h), &shape)?;
        check_state("cx", hx.map(|(_, c)| c), &shape)?;
        let out = one_step(&self.model, input, hx.map(|(h, _)| h), hx.map(|(_, c)| c))?;
        let c_n = out
            .c_n
            .ok_or_else(|| RnnError::InvalidConfig("an LSTM step returned no cell state".into()))?;
        Ok((
            Tensor::new(out.h_n.into_data(), &shape)?,
            Tensor::new(c_n.into_data(), &shape)?,
        ))
    }
}

/// An `nn.GRUCell` on the CPU reference path (`GruCell<CpuGatedRnn>`, the default) or a GPU
/// (`GruCell<GpuGatedRnn>`).
#[derive(Clone, Debug)]
pub struct GruCell<M = CpuGatedRnn> {
    config: GatedCellConfig,
    model: M,
}

impl GruCell<CpuGatedRnn> {
    /// A cell from its configuration (`kind` must be GRU) and weights (`weight_ih` (3H, I),
    /// `weight_hh` (3H, H), biases (3H)).
    pub fn cpu(config: GatedCellConfig, weights: GatedDirectionWeights) -> Result<Self> {
        let (model_config, weights) = config.model(GateKind::Gru, weights)?;
        let model = CpuGatedRnn::new(model_config, weights)?;
        Ok(GruCell { config, model })
    }
}

impl GruCell<GpuGatedRnn> {
    /// The same cell on the GPU of `ctx`.
    pub fn gpu(
        ctx: &GpuContext,
        config: GatedCellConfig,
        weights: GatedDirectionWeights,
    ) -> Result<Self> {
        let (model_config, weights) = config.model(GateKind::Gru, weights)?;
        let model = GpuGatedRnn::new(ctx, model_config, &weights)?;
        Ok(GruCell { config, model })
    }
}

impl<M: GatedRnn> GruCell<M> {
    /// The cell's configuration.
    pub fn config(&self) -> &GatedCellConfig {
        &self.config
    }

    /// `h' = cell(input, hx)`: input (N, I) or (I); hx (N, H) or (H), zeros when `None`.
    /// Returns h' shaped like hx.
    pub fn step(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        let shape = self.config.state_shape(input)?;
        check_state("hx", hx, &shape)?;
        let out = one_step(&self.model, input, hx, None)?;
        Tensor::new(out.h_n.into_data(), &shape)
    }
}
