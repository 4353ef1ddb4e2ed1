//! The measured models: `nn.RNN(H, H)` (tanh), `nn.LSTM(H, H)` or `nn.GRU(H, H)`, one layer,
//! run on batches of N sequences.

use wgpu_rnn::{RnnConfig, Tensor};

/// The recurrent cell the report measures (`--cell`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cell {
    /// `nn.RNN`, tanh.
    #[default]
    Rnn,
    /// `nn.LSTM`.
    Lstm,
    /// `nn.GRU`.
    Gru,
}

impl Cell {
    pub const ALL: [Cell; 3] = [Cell::Rnn, Cell::Lstm, Cell::Gru];

    /// The `--cell` value, also what `time_torch.py` calls it: `rnn`, `lstm`, `gru`.
    pub fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    pub fn parse(text: &str) -> Option<Cell> {
        Cell::ALL
            .into_iter()
            .find(|cell| cell.name() == text.trim())
    }

    /// PyTorch's module: `nn.RNN`, `nn.LSTM`, `nn.GRU`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Cell::Rnn => "nn.RNN",
            Cell::Lstm => "nn.LSTM",
            Cell::Gru => "nn.GRU",
        }
    }

    /// Gates stacked in each weight matrix: the FLOPs of a step are this many times an
    /// Elman RNN's.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// A configuration of the report: the cell, hidden size H (= input size I) and batch N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub cell: Cell,
    pub hidden: usize,
    pub batch: usize,
}

impl Shape {
    /// The `nn.RNN(H, H)`, `nn.LSTM(H, H)` or `nn.GRU(H, H)` of the shape.
    pub fn config(self) -> RnnConfig {
        match self.cell {
            Cell::Rnn => RnnConfig::rnn(self.input(), self.hidden),
            Cell::Lstm => RnnConfig::lstm(self.input(), self.hidden),
            Cell::Gru => RnnConfig::gru(self.input(), self.hidden),
        }
    }

    pub fn input(self) -> usize {
        self.hidden
    }

    /// Every model of the report has one layer and one direction.
    pub const LAYERS: usize = 1;
    pub const DIRECTIONS: usize = 1;

    /// FLOPs of one forward, 2·G·T·N·H·(I + H) for one layer and direction with G gates: the
    /// multiply-adds of the input projection and the recurrence (the gates' elementwise work
    /// is not counted).
    pub fn flops(self, seq_len: usize) -> f64 {
        2.0 * (self.cell.gates() * seq_len * self.batch * self.hidden) as f64
            * (self.input() + self.hidden) as f64
            * (Self::LAYERS * Self::DIRECTIONS) as f64
    }

    /// A deterministic (T, N, I) input with values in [-1, 1].
    pub fn make_input(self, seq_len: usize) -> Tensor {
        let len = seq_len * self.batch * self.input();
        let data = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::new(data, &[seq_len, self.batch, self.input()]).expect("matching shape")
    }

    /// d loss / d output for loss = output.sum(): ones shaped as the (T, N, H) output.
    pub fn output_ones(self, seq_len: usize) -> Tensor {
        let shape = [seq_len, self.batch, self.hidden];
        Tensor::new(vec![1.0; shape.iter().product()], &shape).expect("matching shape")
    }

    /// `H=256 N=16` (the cell is the same for the whole report and said in its heading).
    pub fn label(self) -> String {
        format!("H={} N={}", self.hidden, self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_flops() {
        for cell in Cell::ALL {
            assert_eq!(Cell::parse(cell.name()), Some(cell));
        }
        assert_eq!(Cell::parse("LSTM"), None);
        let rnn = Shape {
            cell: Cell::Rnn,
            hidden: 64,
            batch: 2,
        };
        assert_eq!(rnn.flops(10), 2.0 * 10.0 * 2.0 * 64.0 * 128.0);
        let lstm = Shape {
            cell: Cell::Lstm,
            ..rnn
        };
        assert_eq!(lstm.flops(10), 4.0 * rnn.flops(10));
        assert_eq!(lstm.config().gate_size(), 256);
        assert_eq!(rnn.config().gate_size(), 64);
    }
}
