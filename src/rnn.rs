//! The one API both backends implement, for every mode.

use crate::config::RnnConfig;
use crate::error::Result;
use crate::tensor::Tensor;

/// The initial state of a forward, PyTorch's `hx`: `h0` for an RNN or GRU, `(h0, c0)` for an
/// LSTM. `h0` is (D·L, N, H_out) or (D·L, H_out) unbatched, `c0` (D·L, N, H) or (D·L, H); never
/// batch-first.
///
/// ```
/// # use wgpu_rnn::{Hx, Tensor};
/// # fn main() -> wgpu_rnn::Result<()> {
/// let (h0, c0) = (Tensor::zeros(&[1, 2, 8])?, Tensor::zeros(&[1, 2, 8])?);
/// let rnn_state = Hx::h0(&h0); // nn.RNN, nn.GRU: hx = h0
/// let lstm_state = Hx::lstm(&h0, &c0); // nn.LSTM: hx = (h0, c0)
/// assert!(rnn_state.c0.is_none() && lstm_state.c0.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Hx<'a> {
    /// The hidden state h.
    pub h0: &'a Tensor,
    /// An LSTM's cell state c; `None` for the other modes.
    pub c0: Option<&'a Tensor>,
}

impl<'a> Hx<'a> {
    /// `hx = h0`: the state of an RNN or GRU.
    pub fn h0(h0: &'a Tensor) -> Self {
        Hx { h0, c0: None }
    }

    /// `hx = (h0, c0)`: the state of an LSTM.
    pub fn lstm(h0: &'a Tensor, c0: &'a Tensor) -> Self {
        Hx { h0, c0: Some(c0) }
    }
}

impl<'a> From<&'a Tensor> for Hx<'a> {
    fn from(h0: &'a Tensor) -> Self {
        Hx::h0(h0)
    }
}

impl<'a> From<(&'a Tensor, &'a Tensor)> for Hx<'a> {
    fn from((h0, c0): (&'a Tensor, &'a Tensor)) -> Self {
        Hx::lstm(h0, c0)
    }
}

/// What a forward pass returns, in PyTorch's layouts: `output, h_n` for an RNN or GRU,
/// `output, (h_n, c_n)` for an LSTM.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnOutput {
    /// (T, N, D·H_out), (N, T, D·H_out) with `batch_first`, or (T, D·H_out) for unbatched
    /// input (a Linear head's `out_features` in place of D·H_out). Each frame's features are
    /// [forward ‖ reverse].
    pub output: Tensor,
    /// (D·L, N, H_out), or (D·L, H_out) for unbatched input; row `layer · D + direction`.
    pub h_n: Tensor,
    /// An LSTM's final cell state: (D·L, N, H), or (D·L, H) unbatched. `None` for an RNN or GRU.
    pub c_n: Option<Tensor>,
}

/// An `nn.RNN`, `nn.LSTM` or `nn.GRU` forward pass, on the CPU ([`CpuRnn`](crate::CpuRnn)) or
/// a GPU ([`GpuRnn`](crate::GpuRnn)).
pub trait Rnn {
    /// The model's configuration.
    fn config(&self) -> &RnnConfig;

    /// `output, h_n = rnn(input, hx)` (`output, (h_n, c_n)` for an LSTM), exactly as PyTorch
    /// defines it.
    ///
    /// `input` is (T, N, I), (N, T, I) with `batch_first`, or (T, I) unbatched. `hx` is the
    /// initial state ([`Hx`]), zeros when `None`; an LSTM takes both h0 and c0 or neither, as
    /// PyTorch's `hx = (h0, c0)` does, and the other modes take no c0.
    fn forward(&self, input: &Tensor, hx: Option<Hx<'_>>) -> Result<RnnOutput>;

    /// The forward pass over a batch of sequences of different lengths, with PyTorch's
    /// `PackedSequence` semantics (`pack_padded_sequence(input, lengths,
    /// enforce_sorted=False)` through the model, then `pad_packed_sequence(total_length=T)`):
    /// `lengths[n]` (any order, each in 1..=T) frames of sequence n are valid; outputs past a
    /// sequence's length are zero; `h_n` (and `c_n`) hold each sequence's state at its own last
    /// valid frame; the reverse direction starts at each sequence's own last valid frame.
    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        hx: Option<Hx<'_>>,
    ) -> Result<RnnOutput>;
}
