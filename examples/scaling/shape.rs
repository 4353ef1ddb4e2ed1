//! The measured models: `nn.RNN(H, H)`, one layer, tanh, run on batches of N sequences.

use wgpu_rnn::{RnnConfig, Tensor};

/// A configuration of the report: hidden size H (= input size I) and batch N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub hidden: usize,
    pub batch: usize,
}

impl Shape {
    pub fn config(self) -> RnnConfig {
        RnnConfig::new(self.input(), self.hidden)
    }

    pub fn input(self) -> usize {
        self.hidden
    }

    /// FLOPs of one forward, 2·T·N·D·H·(I + H) per layer (one layer, D = 1): the
    /// multiply-adds of the input projection and the recurrence.
    pub fn flops(self, seq_len: usize) -> f64 {
        let config = self.config();
        let per_layer = 2.0
            * (seq_len * self.batch * config.num_directions() * self.hidden) as f64
            * (self.input() + self.hidden) as f64;
        per_layer * config.num_layers as f64
    }

    /// A deterministic (T, N, I) input with values in [-1, 1].
    pub fn make_input(self, seq_len: usize) -> Tensor {
        let len = seq_len * self.batch * self.input();
        let data = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::new(data, &[seq_len, self.batch, self.input()]).expect("matching shape")
    }

    /// `H=256 N=16`.
    pub fn label(self) -> String {
        format!("H={} N={}", self.hidden, self.batch)
    }
}
