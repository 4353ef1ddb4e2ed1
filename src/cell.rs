//! `nn.RNNCell`, `nn.LSTMCell` and `nn.GRUCell`: one step of one layer. A cell is a
//! one-layer, one-step model, so it runs on the same engines as the full models: the same
//! kernels on the GPU (`RnnCell::gpu`, ...), the same reference loops on the CPU
//! (`RnnCell::cpu`, ...).

use std::collections::BTreeSet;
use std::path::Path;

use crate::checkpoint::{map_file, parse, reject_unexpected};
use crate::config::{Nonlinearity, RnnConfig, RnnMode};
use crate::cpu::CpuRnn;
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::model::GpuRnn;
use crate::rnn::{Hx, Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::{DirectionWeights, RnnWeights, UnitShape};

/// The configuration of a `torch.nn.RNNCell(input_size, hidden_size, bias, nonlinearity)`,
/// `torch.nn.LSTMCell(input_size, hidden_size, bias)` or `torch.nn.GRUCell(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CellConfig {
    /// The cell: Elman (tanh or relu), LSTM or GRU.
    pub mode: RnnMode,
    /// Features per input.
    pub input_size: usize,
    /// Features of the hidden (and, for an LSTM, cell) state.
    pub hidden_size: usize,
    /// Whether the cell has `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
}

impl CellConfig {
    /// `torch.nn.RNNCell(input_size, hidden_size)`: tanh, with bias.
    pub fn rnn(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Rnn(Nonlinearity::Tanh), input_size, hidden_size)
    }

    /// `torch.nn.LSTMCell(input_size, hidden_size)`.
    pub fn lstm(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Lstm, input_size, hidden_size)
    }

    /// `torch.nn.GRUCell(input_size, hidden_size)`.
    pub fn gru(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Gru, input_size, hidden_size)
    }

    fn new(mode: RnnMode, input_size: usize, hidden_size: usize) -> Self {
        CellConfig {
            mode,
            input_size,
            hidden_size,
            bias: true,
        }
    }

    /// The one-layer model that computes the same step.
    fn as_model(&self) -> RnnConfig {
        RnnConfig {
            bias: self.bias,
            ..RnnConfig::new(self.mode, self.input_size, self.hidden_size)
        }
    }

    /// Loads a cell's `state_dict` (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, each
    /// after `prefix`) from a safetensors file; other tensors under `prefix` are an error, as
    /// in PyTorch's strict `load_state_dict`.
    pub fn load_weights(&self, path: impl AsRef<Path>, prefix: &str) -> Result<DirectionWeights> {
        self.weights_from_safetensors(&map_file(path.as_ref())?, prefix)
    }

    /// Like [`load_weights`](Self::load_weights), from the bytes of a safetensors file.
    pub fn weights_from_safetensors(&self, bytes: &[u8], prefix: &str) -> Result<DirectionWeights> {
        self.read_weights(bytes, prefix, true)
    }

    /// Reads the cell's tensors; `strict` rejects others under `prefix`.
    pub(crate) fn read_weights(
        &self,
        bytes: &[u8],
        prefix: &str,
        strict: bool,
    ) -> Result<DirectionWeights> {
        let config = self.as_model();
        config.validate()?;
        let file = parse(bytes)?;
        let name = |part: &str| format!("{prefix}{part}");
        let shape = UnitShape::of(&config, 0);
        let weights = DirectionWeights::read(&file, name, shape, strict)?;
        if strict {
            let expected: BTreeSet<String> = shape.names(name).into_iter().collect();
            reject_unexpected(&file, prefix, &expected)?;
        }
        Ok(weights)
    }

    /// The one-layer model of this cell, for training it unrolled over a sequence.
    pub(crate) fn unrolled(&self, weights: &DirectionWeights) -> Result<(RnnConfig, RnnWeights)> {
        self.model(true, "", weights)
    }

    /// The one-layer model of a cell that needs `expected` (the cell type's name), its
    /// weights checked.
    fn model(
        &self,
        fits: bool,
        expected: &str,
        weights: &DirectionWeights,
    ) -> Result<(RnnConfig, RnnWeights)> {
        if !fits {
            return Err(RnnError::InvalidConfig(format!(
                "{expected} needs a {expected} configuration, got {:?} (use CellConfig::{})",
                self.mode,
                expected
                    .trim_start_matches("nn.")
                    .trim_end_matches("Cell")
                    .to_lowercase()
            )));
        }
        let config = self.as_model();
        config.validate()?;
        // Checked as a cell's tensors first, so that errors name `weight_ih`, not
        // `weight_ih_l0`.
        weights.check(UnitShape::of(&config, 0), "")?;
        let weights = RnnWeights::new(&config, vec![weights.clone()])?;
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

/// Runs one step of `model` (one layer) for a cell: input (N, I) or (I), states (N, ·) or (·),
/// each checked against `shape`, the states' shape the input implies.
fn one_step(
    model: &impl Rnn,
    input: &Tensor,
    shape: &[usize],
    h: Option<&Tensor>,
    c: Option<&Tensor>,
) -> Result<RnnOutput> {
    for (what, state) in [("hx", h), ("cx", c)] {
        if let Some(s) = state.filter(|s| s.shape() != shape) {
            return Err(RnnError::shape(what, format!("{shape:?}"), s.shape()));
        }
    }
    let h0 = h.map(with_leading_one).transpose()?;
    let c0 = c.map(with_leading_one).transpose()?;
    let hx = h0.as_ref().map(|h0| Hx {
        h0,
        c0: c0.as_ref(),
    });
    model.forward(&with_leading_one(input)?, hx)
}

/// Defines a cell type: its constructors on both backends, over the one-layer model.
macro_rules! cell_type {
    ($(#[$doc:meta])* $name:ident, $torch:literal, $fits:pat) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name<M = CpuRnn> {
            config: CellConfig,
            model: M,
        }

        impl $name<CpuRnn> {
            #[doc = concat!("A `", $torch, "` on the CPU reference path, from its configuration and weights.")]
            pub fn cpu(config: CellConfig, weights: &DirectionWeights) -> Result<Self> {
                let (model_config, weights) =
                    config.model(matches!(config.mode, $fits), $torch, weights)?;
                let model = CpuRnn::new(model_config, &weights)?;
                Ok($name { config, model })
            }
        }

        impl $name<GpuRnn> {
            #[doc = concat!("A `", $torch, "` on the GPU of `ctx`: each step is one projection and one fused step.")]
            pub fn gpu(
                ctx: &GpuContext,
                config: CellConfig,
                weights: &DirectionWeights,
            ) -> Result<Self> {
                let (model_config, weights) =
                    config.model(matches!(config.mode, $fits), $torch, weights)?;
                let model = GpuRnn::new(ctx, model_config, &weights)?;
                Ok($name { config, model })
            }
        }

        impl<M> $name<M> {
            /// The cell's configuration.
            pub fn config(&self) -> &CellConfig {
                &self.config
            }
        }
    };
}

cell_type!(
    /// An `nn.RNNCell` on the CPU reference path (`RnnCell<CpuRnn>`, the default) or a GPU
    /// (`RnnCell<GpuRnn>`).
    RnnCell,
    "nn.RNNCell",
    RnnMode::Rnn(_)
);
cell_type!(
    /// An `nn.LSTMCell` on the CPU reference path (`LstmCell<CpuRnn>`, the default) or a GPU
    /// (`LstmCell<GpuRnn>`).
    LstmCell,
    "nn.LSTMCell",
    RnnMode::Lstm
);
cell_type!(
    /// An `nn.GRUCell` on the CPU reference path (`GruCell<CpuRnn>`, the default) or a GPU
    /// (`GruCell<GpuRnn>`).
    GruCell,
    "nn.GRUCell",
    RnnMode::Gru
);

impl<M: Rnn> RnnCell<M> {
    /// `h' = cell(input, hx)`: input (N, I) or (I); hx (N, H) or (H), zeros when `None`.
    /// Returns h' shaped like hx.
    pub fn step(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        hidden_step(&self.model, &self.config, input, hx)
    }
}

impl<M: Rnn> LstmCell<M> {
    /// `h', c' = cell(input, (h, c))`: input (N, I) or (I); h and c (N, H) or (H), both zeros
    /// when `hx` is `None`. Returns (h', c') shaped like h and c.
    pub fn step(&self, input: &Tensor, hx: Option<(&Tensor, &Tensor)>) -> Result<(Tensor, Tensor)> {
        let shape = self.config.state_shape(input)?;
        let (h, c) = (hx.map(|(h, _)| h), hx.map(|(_, c)| c));
        let out = one_step(&self.model, input, &shape, h, c)?;
        let c_n = out
            .c_n
            .ok_or_else(|| RnnError::InvalidConfig("an LSTM step returned no cell state".into()))?;
        Ok((
            Tensor::new(out.h_n.into_data(), &shape)?,
            Tensor::new(c_n.into_data(), &shape)?,
        ))
    }
}

impl<M: Rnn> GruCell<M> {
    /// `h' = cell(input, hx)`: input (N, I) or (I); hx (N, H) or (H), zeros when `None`.
    /// Returns h' shaped like hx.
    pub fn step(&self, input: &Tensor, hx: Option<&Tensor>) -> Result<Tensor> {
        hidden_step(&self.model, &self.config, input, hx)
    }
}

/// One step of a cell whose state is h alone (RNN, GRU): h' shaped like hx.
fn hidden_step(
    model: &impl Rnn,
    config: &CellConfig,
    input: &Tensor,
    hx: Option<&Tensor>,
) -> Result<Tensor> {
    let shape = config.state_shape(input)?;
    let out = one_step(model, input, &shape, hx, None)?;
    Tensor::new(out.h_n.into_data(), &shape)
}
