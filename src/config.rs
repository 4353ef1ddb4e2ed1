//! Model configuration, mirroring the `torch.nn.RNN` constructor.

use crate::error::{Result, RnnError};

/// The nonlinearity of an Elman RNN (`nonlinearity=` in PyTorch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`: `max(x, 0)`, with NaN passed through as PyTorch does.
    Relu,
}

impl Nonlinearity {
    /// Applies the nonlinearity to one value (the CPU reference's definition).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Nonlinearity::Tanh => x.tanh(),
            // `x < 0` is false for NaN, so NaN passes through unchanged, as in PyTorch.
            Nonlinearity::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
        }
    }
}

impl std::str::FromStr for Nonlinearity {
    type Err = RnnError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tanh" => Ok(Nonlinearity::Tanh),
            "relu" => Ok(Nonlinearity::Relu),
            other => Err(RnnError::InvalidConfig(format!(
                "unknown nonlinearity `{other}` (expected `tanh` or `relu`)"
            ))),
        }
    }
}

/// The configuration of a `torch.nn.RNN`, field for field.
///
/// ```
/// use wgpu_rnn::{Nonlinearity, RnnConfig};
/// // torch.nn.RNN(10, 20, num_layers=2, nonlinearity='relu', batch_first=True)
/// let config = RnnConfig {
///     num_layers: 2,
///     nonlinearity: Nonlinearity::Relu,
///     batch_first: true,
///     ..RnnConfig::new(10, 20)
/// };
/// assert_eq!(config.num_directions(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// Features per input frame (`input_size`).
    pub input_size: usize,
    /// Features of the hidden state (`hidden_size`).
    pub hidden_size: usize,
    /// Stacked layers (`num_layers`, default 1).
    pub num_layers: usize,
    /// `tanh` or `relu` (default `tanh`).
    pub nonlinearity: Nonlinearity,
    /// Whether the layers have `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// Input and output are (N, T, F) instead of (T, N, F) (default false). As in PyTorch,
    /// `h0` and `h_n` are never batch-first.
    pub batch_first: bool,
    /// Dropout between layers. It acts only in training; this crate does inference only, so any
    /// value in `[0, 1]` is accepted and has no effect, exactly like PyTorch's eval mode.
    pub dropout: f32,
    /// A second layer stack that reads the sequence backwards (default false).
    pub bidirectional: bool,
}

impl RnnConfig {
    /// `torch.nn.RNN(input_size, hidden_size)` with every other argument at PyTorch's default.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            nonlinearity: Nonlinearity::Tanh,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
        }
    }

    /// 2 for a bidirectional model, 1 otherwise (PyTorch's `D`).
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// The input features of layer `layer`: `input_size` for the first, `D·hidden_size` above.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.num_directions() * self.hidden_size
        }
    }

    /// Features of each output frame: `D·hidden_size`.
    pub fn output_size(&self) -> usize {
        self.num_directions() * self.hidden_size
    }

    /// Checks the configuration the way PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        validate_sizes(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.dropout,
            1,
        )
    }
}

/// The checks every recurrent module's constructor makes: non-zero sizes, dropout in [0, 1],
/// and sizes that stay within 32 bits on the GPU once `gates` gate blocks are stacked (far
/// beyond any real model).
pub(crate) fn validate_sizes(
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    dropout: f32,
    gates: usize,
) -> Result<()> {
    let invalid = |msg: String| Err(RnnError::InvalidConfig(msg));
    if input_size == 0 {
        return invalid("input_size must be at least 1".into());
    }
    if hidden_size == 0 {
        return invalid("hidden_size must be at least 1".into());
    }
    if num_layers == 0 {
        return invalid("num_layers must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&dropout) {
        return invalid(format!("dropout must be in [0, 1], got {dropout}"));
    }
    let limit = u32::MAX as usize / (4 * gates);
    if input_size > limit || hidden_size > limit || num_layers > limit {
        return invalid("sizes must fit in 32 bits".into());
    }
    Ok(())
}
