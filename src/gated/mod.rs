//! Gated recurrent networks: `nn.LSTM` and `nn.GRU`, with PyTorch's names, shapes and
//! formulas.
//!
//! The CPU reference ([`CpuGatedRnn`]) is structured as the GPU path is: per layer and
//! direction, one projection of every timestep's input (`P = X·W_ihᵀ + b_ih`, all gates at
//! once), then one fused update per timestep that adds `W_hh·h + b_hh` and applies the gates.
//! [`GpuGatedRnn`] implements the same [`GatedRnn`] trait on the GPU engine.
//!
//! LSTM (gates i, f, g, o):
//! `i, f, o = σ(·)`, `g = tanh(·)`, `c' = f∘c + i∘g`, `h' = o∘tanh(c')`, then
//! `h' = W_hr·h'` when `proj_size > 0`.
//!
//! GRU (gates r, z, n):
//! `r, z = σ(·)`, `n = tanh(W_in x + b_in + r∘(W_hn h + b_hn))`, `h' = (1 − z)∘n + z∘h`.

mod cell;
mod config;
pub(crate) mod cpu;
mod gpu;
mod weights;

pub use cell::{GatedCellConfig, GruCell, LstmCell};
pub use config::{GateKind, GatedConfig};
pub use cpu::CpuGatedRnn;
pub use gpu::GpuGatedRnn;
pub use weights::{GatedDirectionWeights, GatedWeights};

use crate::error::Result;
use crate::tensor::Tensor;

/// What a gated forward pass returns, in PyTorch's layouts (`output, h_n` for a GRU,
/// `output, (h_n, c_n)` for an LSTM).
#[derive(Clone, Debug, PartialEq)]
pub struct GatedOutput {
    /// (T, N, D·H_out), (N, T, D·H_out) with `batch_first`, or (T, D·H_out) unbatched. Each
    /// frame's features are [forward ‖ reverse].
    pub output: Tensor,
    /// (D·L, N, H_out), or (D·L, H_out) unbatched; row `layer · D + direction`.
    pub h_n: Tensor,
    /// LSTM only: (D·L, N, H), or (D·L, H) unbatched. `None` for a GRU.
    pub c_n: Option<Tensor>,
}

/// An `nn.LSTM` or `nn.GRU` forward pass, on the CPU ([`CpuGatedRnn`]) or a GPU
/// ([`GpuGatedRnn`]).
pub trait GatedRnn {
    /// The model's configuration.
    fn config(&self) -> &GatedConfig;

    /// `output, h_n = gru(input, h0)` or `output, (h_n, c_n) = lstm(input, (h0, c0))`,
    /// exactly as PyTorch defines them.
    ///
    /// `input` is (T, N, I), (N, T, I) with `batch_first`, or (T, I) unbatched; `h0` is
    /// (D·L, N, H_out) (never batch-first) or (D·L, H_out) unbatched; `c0` (LSTM only) is
    /// (D·L, N, H) or (D·L, H). Both are zeros when `None`; an LSTM takes both or neither, as
    /// PyTorch's `hx = (h0, c0)` does, and a GRU takes no `c0`.
    fn forward(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput>;

    /// The forward pass over sequences of different lengths, with PyTorch's `PackedSequence`
    /// semantics (as [`Rnn::forward_with_lengths`](crate::Rnn::forward_with_lengths)): outputs
    /// past a sequence's length are zero, `h_n` and `c_n` hold each sequence's state at its own
    /// last valid frame, and the reverse direction starts there.
    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput>;
}
