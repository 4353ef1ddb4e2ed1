//! Model configuration, mirroring PyTorch's `RNNBase` (the class behind `nn.RNN`, `nn.LSTM`
//! and `nn.GRU`): one struct, with the recurrence as its mode.

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

/// The recurrence a model runs: PyTorch's `RNNBase.mode` (`RNN_TANH`, `RNN_RELU`, `LSTM`,
/// `GRU`), cuDNN's `cudnnRNNMode_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RnnMode {
    /// `nn.RNN`: `h' = act(W_ih x + b_ih + W_hh h + b_hh)`.
    Rnn(Nonlinearity),
    /// `nn.LSTM`: gates i, f, g, o stacked in that order (4H rows), a cell state c beside h.
    Lstm,
    /// `nn.GRU`: gates r, z, n stacked in that order (3H rows), no cell state.
    Gru,
}

impl RnnMode {
    /// Gates stacked in each weight matrix: 1 for an Elman RNN, 4 for an LSTM, 3 for a GRU
    /// (PyTorch's `gate_size` is this times `hidden_size`).
    pub fn gates(self) -> usize {
        match self {
            RnnMode::Rnn(_) => 1,
            RnnMode::Lstm => 4,
            RnnMode::Gru => 3,
        }
    }

    /// Whether the model carries a cell state c beside h (an LSTM).
    pub fn has_cell_state(self) -> bool {
        self == RnnMode::Lstm
    }

    /// PyTorch's class name, for messages.
    pub fn torch_name(self) -> &'static str {
        match self {
            RnnMode::Rnn(_) => "nn.RNN",
            RnnMode::Lstm => "nn.LSTM",
            RnnMode::Gru => "nn.GRU",
        }
    }
}

impl std::str::FromStr for RnnMode {
    type Err = RnnError;
    /// `rnn` or `rnn_tanh`, `rnn_relu`, `lstm`, `gru` (any case): the names PyTorch's
    /// `RNNBase` takes.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rnn" | "rnn_tanh" => Ok(RnnMode::Rnn(Nonlinearity::Tanh)),
            "rnn_relu" => Ok(RnnMode::Rnn(Nonlinearity::Relu)),
            "lstm" => Ok(RnnMode::Lstm),
            "gru" => Ok(RnnMode::Gru),
            _ => Err(RnnError::InvalidConfig(format!(
                "unknown mode `{s}` (expected rnn_tanh, rnn_relu, lstm or gru)"
            ))),
        }
    }
}

/// The configuration of a `torch.nn.RNN`, `torch.nn.LSTM` or `torch.nn.GRU`, field for field.
///
/// ```
/// use wgpu_rnn::{Nonlinearity, RnnConfig, RnnMode};
/// // torch.nn.RNN(10, 20, num_layers=2, nonlinearity='relu', batch_first=True)
/// let rnn = RnnConfig {
///     mode: RnnMode::Rnn(Nonlinearity::Relu),
///     num_layers: 2,
///     batch_first: true,
///     ..RnnConfig::rnn(10, 20)
/// };
/// assert_eq!(rnn.output_size(), 20);
/// // torch.nn.LSTM(10, 20, proj_size=5)
/// let lstm = RnnConfig { proj_size: 5, ..RnnConfig::lstm(10, 20) };
/// assert_eq!(lstm.output_size(), 5);
/// // torch.nn.GRU(10, 20, bidirectional=True)
/// let gru = RnnConfig { bidirectional: true, ..RnnConfig::gru(10, 20) };
/// assert_eq!(gru.output_size(), 40);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    /// The recurrence: Elman (tanh or relu), LSTM or GRU.
    pub mode: RnnMode,
    /// Features per input frame (`input_size`).
    pub input_size: usize,
    /// Features of each gate, of an LSTM's cell state c, and (without a projection) of h
    /// (`hidden_size`).
    pub hidden_size: usize,
    /// Stacked layers (`num_layers`, default 1).
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// Input and output are (N, T, F) instead of (T, N, F) (default false). As in PyTorch,
    /// `h0`, `c0`, `h_n` and `c_n` are never batch-first.
    pub batch_first: bool,
    /// Dropout between layers. It acts only in training; the forward is inference, so any
    /// value in `[0, 1]` is accepted and has no effect, exactly like PyTorch's eval mode.
    pub dropout: f32,
    /// A second layer stack that reads the sequence backwards (default false).
    pub bidirectional: bool,
    /// LSTM only: when P > 0, h is projected to P features by `weight_hr` after every step, so
    /// h, the output, `h0` and `h_n` have P features (c keeps `hidden_size`). 0 (the default)
    /// means no projection; other modes must have 0, as PyTorch requires.
    pub proj_size: usize,
}

impl RnnConfig {
    /// A model of `mode` with every other argument at PyTorch's default.
    pub fn new(mode: RnnMode, input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            mode,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
        }
    }

    /// `torch.nn.RNN(input_size, hidden_size)`: tanh, PyTorch's defaults.
    pub fn rnn(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Rnn(Nonlinearity::Tanh), input_size, hidden_size)
    }

    /// `torch.nn.LSTM(input_size, hidden_size)` with PyTorch's defaults.
    pub fn lstm(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Lstm, input_size, hidden_size)
    }

    /// `torch.nn.GRU(input_size, hidden_size)` with PyTorch's defaults.
    pub fn gru(input_size: usize, hidden_size: usize) -> Self {
        Self::new(RnnMode::Gru, input_size, hidden_size)
    }

    /// 2 for a bidirectional model, 1 otherwise (PyTorch's `D`).
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Rows of every weight matrix and bias: gates × `hidden_size` (PyTorch's `gate_size`).
    pub fn gate_size(&self) -> usize {
        self.mode.gates() * self.hidden_size
    }

    /// Features of h (PyTorch's `H_out`, its `real_hidden_size`): `proj_size` when it is set,
    /// `hidden_size` otherwise.
    pub fn state_size(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// The input features of layer `layer`: `input_size` for the first, `D·H_out` above.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Features of each output frame: `D·H_out`.
    pub fn output_size(&self) -> usize {
        self.num_directions() * self.state_size()
    }

    /// Rows of `h0`, `h_n`, `c0` and `c_n`: `D·num_layers`.
    pub fn state_rows(&self) -> usize {
        self.num_directions() * self.num_layers
    }

    /// Checks the configuration the way PyTorch's constructor does, and that every size
    /// stays within 32 bits on the GPU once the gates are stacked (far beyond any real model).
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(RnnError::InvalidConfig(msg));
        if self.input_size == 0 {
            return invalid("input_size must be at least 1".into());
        }
        if self.hidden_size == 0 {
            return invalid("hidden_size must be at least 1".into());
        }
        if self.num_layers == 0 {
            return invalid("num_layers must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return invalid(format!("dropout must be in [0, 1], got {}", self.dropout));
        }
        let limit = u32::MAX as usize / (4 * self.mode.gates());
        if self.input_size > limit || self.hidden_size > limit || self.num_layers > limit {
            return invalid("sizes must fit in 32 bits".into());
        }
        if self.proj_size > 0 && self.mode != RnnMode::Lstm {
            // PyTorch: "proj_size argument is only supported for LSTM, not RNN or GRU".
            return invalid(format!(
                "proj_size = {} is only supported for nn.LSTM, not {}",
                self.proj_size,
                self.mode.torch_name()
            ));
        }
        if self.proj_size >= self.hidden_size && self.proj_size > 0 {
            // PyTorch: "proj_size has to be smaller than hidden_size".
            return invalid(format!(
                "proj_size = {} has to be smaller than hidden_size = {}",
                self.proj_size, self.hidden_size
            ));
        }
        Ok(())
    }
}
