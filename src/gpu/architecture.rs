//! What the GPU engine runs, whatever the mode: the cell, the sizes, and each (layer,
//! direction)'s weights in the form the kernels read.
//!
//! Every cell shares one plan: a projection GEMM of all timesteps' inputs (`G·H` columns,
//! G = 1 for an Elman RNN, 4 for an LSTM, 3 for a GRU), then a fused step per timestep. The
//! state of every (layer, direction, sequence) is h (`state_size` features), followed for an
//! LSTM by c (`hidden_size` features) in a second block, so that PyTorch's `h0`/`c0` and
//! `h_n`/`c_n` are each one contiguous range of the state buffer.

use crate::config::{RnnConfig, RnnMode};
use crate::weights::{DirectionWeights, RnnWeights};

/// The engine's name for the recurrent cell: the model's mode.
pub(crate) type Cell = RnnMode;

/// The sizes of a model, as the engine needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Architecture {
    pub cell: Cell,
    pub input_size: usize,
    /// H: units of each gate, and of an LSTM's c.
    pub hidden_size: usize,
    /// Features of h (PyTorch's H_out): `proj_size` for a projected LSTM, H otherwise.
    pub state_size: usize,
    pub num_layers: usize,
    pub directions: usize,
}

impl From<&RnnConfig> for Architecture {
    fn from(config: &RnnConfig) -> Self {
        Architecture {
            cell: config.mode,
            input_size: config.input_size,
            hidden_size: config.hidden_size,
            state_size: config.state_size(),
            num_layers: config.num_layers,
            directions: config.num_directions(),
        }
    }
}

impl Architecture {
    /// Columns of a layer's projection: D·G·H.
    pub fn projection_cols(&self) -> usize {
        self.directions * self.cell.gates() * self.hidden_size
    }

    /// Features of each output frame: D·H_out.
    pub fn output_size(&self) -> usize {
        self.directions * self.state_size
    }

    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Features of c per (layer, direction, sequence): H for an LSTM, none otherwise.
    pub fn cell_size(&self) -> usize {
        match self.cell {
            Cell::Lstm => self.hidden_size,
            _ => 0,
        }
    }

    /// Whether h is projected from H to `state_size` features after every step.
    pub fn projected(&self) -> bool {
        self.state_size != self.hidden_size
    }

    /// (layer, direction) pairs: rows of `h0` and `h_n`.
    pub fn state_rows(&self) -> usize {
        self.num_layers * self.directions
    }

    /// Elements of the h block of the state for `batch` sequences: (L·D, N, H_out).
    pub fn h_len(&self, batch: usize) -> usize {
        self.state_rows() * batch * self.state_size
    }

    /// Elements of the whole state for `batch` sequences: the h block, then the c block.
    pub fn state_len(&self, batch: usize) -> usize {
        self.state_rows() * batch * (self.state_size + self.cell_size())
    }

    /// The same cell as one layer of one direction reading `input_size` features.
    pub fn single(&self, input_size: usize) -> Self {
        Architecture {
            input_size,
            num_layers: 1,
            directions: 1,
            ..*self
        }
    }
}

/// One (layer, direction)'s weights as the engine uploads them.
#[derive(Clone, Debug)]
pub(crate) struct UnitWeights {
    /// (G·H, I_k) row-major.
    pub weight_ih: Vec<f32>,
    /// What the projection adds, (G·H): b_ih + b_hh, except the GRU's n gate, which gets b_in
    /// only (b_hn is multiplied by r inside the step).
    pub projection_bias: Vec<f32>,
    /// (G·H, H_out) row-major.
    pub weight_hh: Vec<f32>,
    /// GRU only: b_hn, (H); zeros without bias.
    pub step_bias: Option<Vec<f32>>,
    /// Projected LSTM only: W_hr, (H_out, H).
    pub weight_hr: Option<Vec<f32>>,
}

impl UnitWeights {
    /// Every unit of a model, ordered `layer · D + direction`.
    pub fn of(config: &RnnConfig, weights: &RnnWeights) -> Vec<Self> {
        weights
            .units()
            .iter()
            .map(|unit| Self::unit(config, unit))
            .collect()
    }

    fn unit(config: &RnnConfig, unit: &DirectionWeights) -> Self {
        let (h, gate_size) = (config.hidden_size, config.gate_size());
        let zeros = vec![0.0; gate_size];
        let b_ih = unit.bias_ih.as_ref().unwrap_or(&zeros);
        let b_hh = unit.bias_hh.as_ref().unwrap_or(&zeros);
        let gru = config.mode == RnnMode::Gru;
        // The GRU's n gate (rows 2H..3H) keeps b_hn out of the projection.
        let projection_bias = (0..gate_size)
            .map(|row| {
                if gru && row >= 2 * h {
                    b_ih[row]
                } else {
                    b_ih[row] + b_hh[row]
                }
            })
            .collect();
        UnitWeights {
            weight_ih: unit.weight_ih.clone(),
            projection_bias,
            weight_hh: unit.weight_hh.clone(),
            step_bias: gru.then(|| b_hh[2 * h..3 * h].to_vec()),
            weight_hr: unit.weight_hr.clone(),
        }
    }
}
