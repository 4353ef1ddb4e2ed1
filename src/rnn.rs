//! The one API both backends implement.

use crate::config::RnnConfig;
use crate::error::Result;
use crate::tensor::Tensor;

/// What a forward pass returns, in PyTorch's layouts.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnOutput {
    /// (T, N, D·H), (N, T, D·H) with `batch_first`, or (T, D·H) for unbatched input.
    /// Each frame's features are [forward ‖ reverse].
    pub output: Tensor,
    /// (D·L, N, H), or (D·L, H) for unbatched input; row `layer · D + direction`.
    pub h_n: Tensor,
}

/// An `nn.RNN` forward pass, on the CPU ([`CpuRnn`](crate::CpuRnn)) or a GPU
/// ([`GpuRnn`](crate::GpuRnn)).
pub trait Rnn {
    /// The model's configuration.
    fn config(&self) -> &RnnConfig;

    /// `output, h_n = rnn(input, h0)`, exactly as PyTorch defines it.
    ///
    /// `input` is (T, N, I), (N, T, I) with `batch_first`, or (T, I) unbatched; `h0` is
    /// (D·L, N, H) (never batch-first) or (D·L, H) unbatched, zeros when `None`.
    fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<RnnOutput>;

    /// The forward pass over a batch of sequences of different lengths, with PyTorch's
    /// `PackedSequence` semantics (`pack_padded_sequence(input, lengths,
    /// enforce_sorted=False)` through the RNN, then `pad_packed_sequence(total_length=T)`):
    /// `lengths[n]` (any order, each in 1..=T) frames of sequence n are valid; outputs past a
    /// sequence's length are zero; `h_n` holds each sequence's state at its own last valid
    /// frame; the reverse direction starts at each sequence's own last valid frame.
    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
    ) -> Result<RnnOutput>;
}
