//! Configuration of gated models, mirroring the `torch.nn.LSTM` and `torch.nn.GRU` constructors.

use crate::config::validate_sizes;
use crate::error::{Result, RnnError};
use crate::layout::ForwardShape;
use crate::tensor::Tensor;

/// Which gated recurrence a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GateKind {
    /// `nn.LSTM`: gates i, f, g, o stacked in that order (4H rows), a cell state c beside h.
    Lstm,
    /// `nn.GRU`: gates r, z, n stacked in that order (3H rows), no cell state.
    Gru,
}

impl GateKind {
    /// Gates stacked in each weight matrix: 4 for an LSTM, 3 for a GRU (PyTorch's `gate_size`
    /// is this times `hidden_size`).
    pub fn gates(self) -> usize {
        match self {
            GateKind::Lstm => 4,
            GateKind::Gru => 3,
        }
    }

    /// PyTorch's class name, for messages.
    pub fn torch_name(self) -> &'static str {
        match self {
            GateKind::Lstm => "nn.LSTM",
            GateKind::Gru => "nn.GRU",
        }
    }
}

/// The configuration of a `torch.nn.LSTM` or `torch.nn.GRU`, field for field.
///
/// ```
/// use wgpu_rnn::GatedConfig;
/// // torch.nn.LSTM(10, 20, num_layers=2, batch_first=True, proj_size=5)
/// let lstm = GatedConfig { num_layers: 2, batch_first: true, proj_size: 5, ..GatedConfig::lstm(10, 20) };
/// assert_eq!(lstm.output_size(), 5);
/// // torch.nn.GRU(10, 20, bidirectional=True)
/// let gru = GatedConfig { bidirectional: true, ..GatedConfig::gru(10, 20) };
/// assert_eq!(gru.output_size(), 40);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GatedConfig {
    /// LSTM or GRU.
    pub kind: GateKind,
    /// Features per input frame (`input_size`).
    pub input_size: usize,
    /// Features of the gates and of the cell state c (`hidden_size`).
    pub hidden_size: usize,
    /// Stacked layers (`num_layers`, default 1).
    pub num_layers: usize,
    /// Whether the layers have `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// Input and output are (N, T, F) instead of (T, N, F) (default false). As in PyTorch,
    /// `h0`, `c0`, `h_n` and `c_n` are never batch-first.
    pub batch_first: bool,
    /// Dropout between layers: training only, so any value in `[0, 1]` is accepted and has no
    /// effect, exactly like PyTorch's eval mode.
    pub dropout: f32,
    /// A second layer stack that reads the sequence backwards (default false).
    pub bidirectional: bool,
    /// LSTM only: when P > 0, h is projected to P features by `weight_hr` after every step, so
    /// h, the output, `h0` and `h_n` have P features (c keeps `hidden_size`). 0 (the default)
    /// means no projection; a GRU must have 0, as PyTorch requires.
    pub proj_size: usize,
}

impl GatedConfig {
    /// `torch.nn.LSTM(input_size, hidden_size)` with every other argument at PyTorch's default.
    pub fn lstm(input_size: usize, hidden_size: usize) -> Self {
        Self::with_defaults(GateKind::Lstm, input_size, hidden_size)
    }

    /// `torch.nn.GRU(input_size, hidden_size)` with every other argument at PyTorch's default.
    pub fn gru(input_size: usize, hidden_size: usize) -> Self {
        Self::with_defaults(GateKind::Gru, input_size, hidden_size)
    }

    /// A model of `kind` with PyTorch's defaults.
    pub fn with_defaults(kind: GateKind, input_size: usize, hidden_size: usize) -> Self {
        GatedConfig {
            kind,
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

    /// 2 for a bidirectional model, 1 otherwise (PyTorch's `D`).
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Rows of every weight matrix and bias: gates × `hidden_size` (PyTorch's `gate_size`).
    pub fn gate_size(&self) -> usize {
        self.kind.gates() * self.hidden_size
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

    /// Checks the configuration the way PyTorch's constructor does.
    pub fn validate(&self) -> Result<()> {
        validate_sizes(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.dropout,
            self.kind.gates(),
        )?;
        let invalid = |msg: String| Err(RnnError::InvalidConfig(msg));
        if self.proj_size > 0 && self.kind != GateKind::Lstm {
            // PyTorch: "proj_size argument is only supported for LSTM, not RNN or GRU".
            return invalid(format!(
                "proj_size = {} is only supported for nn.LSTM, not {}",
                self.proj_size,
                self.kind.torch_name()
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

    /// Checks `input`, `h0`, `c0` and `lengths` against the model with PyTorch's rules.
    pub(crate) fn resolve(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<ForwardShape> {
        let config = self;
        let shape = ForwardShape::resolve_input(config.input_size, config.batch_first, input)?;
        let rows = config.state_rows();
        if let Some(h0) = h0 {
            shape.check_state("h0", h0, rows, config.state_size())?;
        }
        match (config.kind, h0.is_some(), c0) {
            (GateKind::Gru, _, Some(c0)) => {
                return Err(RnnError::shape(
                    "c0",
                    "none: nn.GRU has no cell state",
                    c0.shape(),
                ));
            }
            (GateKind::Lstm, true, None) => {
                let expected = shape.stacked_state_shape(rows, config.hidden_size);
                return Err(RnnError::ShapeMismatch {
                    what: "c0",
                    expected: format!("{expected:?}, given with h0 (PyTorch's hx = (h0, c0))"),
                    got: "none".into(),
                });
            }
            (GateKind::Lstm, false, Some(_)) => {
                let expected = shape.stacked_state_shape(rows, config.state_size());
                return Err(RnnError::ShapeMismatch {
                    what: "h0",
                    expected: format!("{expected:?}, given with c0 (PyTorch's hx = (h0, c0))"),
                    got: "none".into(),
                });
            }
            (GateKind::Lstm, true, Some(c0)) => {
                shape.check_state("c0", c0, rows, config.hidden_size)?
            }
            _ => {}
        }
        if let Some(lengths) = lengths {
            shape.check_lengths(lengths)?;
        }
        Ok(shape)
    }
}
