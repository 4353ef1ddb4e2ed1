//! How a forward call's tensors are laid out: PyTorch's shape rules for `input`, `h0`,
//! `output` and `h_n`, resolved once and shared by the CPU and GPU paths.

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::rnn::Hx;
use crate::tensor::Tensor;

/// The resolved shape of one forward call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ForwardShape {
    /// T: timesteps.
    pub seq_len: usize,
    /// N: sequences in the batch (1 for unbatched input).
    pub batch: usize,
    /// The input was 2-D (T, I): outputs drop the batch dimension too.
    pub unbatched: bool,
    /// Input and output are (N, T, F).
    pub batch_first: bool,
}

/// Where frame (t, n) of a (T, N, F) or (N, T, F) tensor starts, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameStrides {
    pub t: usize,
    pub n: usize,
}

impl FrameStrides {
    pub fn offset(self, t: usize, n: usize) -> usize {
        t * self.t + n * self.n
    }
}

impl ForwardShape {
    /// Checks `input`, the initial state and `lengths` against `config` with PyTorch's rules.
    pub fn resolve(
        config: &RnnConfig,
        input: &Tensor,
        hx: Option<Hx<'_>>,
        lengths: Option<&[usize]>,
    ) -> Result<Self> {
        let shape = Self::resolve_input(config.input_size, config.batch_first, input)?;
        let rows = config.state_rows();
        if let Some(hx) = hx {
            shape.check_state("h0", hx.h0, rows, config.state_size())?;
            match (config.mode.has_cell_state(), hx.c0) {
                (true, Some(c0)) => shape.check_state("c0", c0, rows, config.hidden_size)?,
                (true, None) => {
                    let expected = shape.stacked_state_shape(rows, config.hidden_size);
                    return Err(RnnError::ShapeMismatch {
                        what: "c0",
                        expected: format!("{expected:?}, given with h0 (PyTorch's hx = (h0, c0))"),
                        got: "none".into(),
                    });
                }
                (false, Some(c0)) => {
                    let none = format!("none: {} has no cell state", config.mode.torch_name());
                    return Err(RnnError::shape("c0", none, c0.shape()));
                }
                (false, None) => {}
            }
        }
        if let Some(lengths) = lengths {
            shape.check_lengths(lengths)?;
        }
        Ok(shape)
    }

    /// Checks `input` alone with PyTorch's rules: (T, N, I), (N, T, I) when `batch_first`, or
    /// unbatched (T, I), with T and N at least 1. Shared by every recurrent model kind.
    pub fn resolve_input(input_size: usize, batch_first: bool, input: &Tensor) -> Result<Self> {
        let i = input_size;
        let dims = input.shape();
        let (seq_len, batch, unbatched) = match *dims {
            [t, f] if f == i => (t, 1, true),
            [a, b, f] if f == i => {
                if batch_first {
                    (b, a, false)
                } else {
                    (a, b, false)
                }
            }
            _ => {
                let expected = if batch_first {
                    format!("(N, T, {i}) or (T, {i})")
                } else {
                    format!("(T, N, {i}) or (T, {i})")
                };
                return Err(RnnError::shape("input", expected, dims));
            }
        };
        if seq_len == 0 {
            return Err(RnnError::shape("input", "at least one timestep", dims));
        }
        if batch == 0 {
            return Err(RnnError::shape("input", "at least one sequence", dims));
        }
        Ok(ForwardShape {
            seq_len,
            batch,
            unbatched,
            batch_first: batch_first && !unbatched,
        })
    }

    /// Checks an initial state (`h0`, `c0`, ...) of `rows` (D·L) rows of `features` each against
    /// this call: (rows, N, features), or (rows, features) when unbatched.
    pub fn check_state(
        &self,
        what: &'static str,
        state: &Tensor,
        rows: usize,
        features: usize,
    ) -> Result<()> {
        let expected = self.stacked_state_shape(rows, features);
        if state.shape() == expected.as_slice() {
            Ok(())
        } else {
            Err(RnnError::shape(
                what,
                format!("{expected:?}"),
                state.shape(),
            ))
        }
    }

    /// Copies a tensor of `features` per frame from this call's layout into sequence-first
    /// (T, N, F) order, the order the reference loops work in.
    pub fn gather_sequence_first(&self, data: &[f32], features: usize) -> Vec<f32> {
        let strides = self.frame_strides(features);
        let mut out = Vec::with_capacity(self.seq_len * self.batch * features);
        for t in 0..self.seq_len {
            for n in 0..self.batch {
                let start = strides.offset(t, n);
                out.extend_from_slice(&data[start..start + features]);
            }
        }
        out
    }

    /// The inverse of [`gather_sequence_first`](Self::gather_sequence_first): (T, N, F) frames into
    /// this call's layout.
    pub fn scatter_sequence_first(&self, data: &[f32], features: usize) -> Vec<f32> {
        let strides = self.frame_strides(features);
        let mut out = vec![0.0; self.seq_len * self.batch * features];
        for t in 0..self.seq_len {
            for n in 0..self.batch {
                let src = &data[(t * self.batch + n) * features..][..features];
                let dst = strides.offset(t, n);
                out[dst..dst + features].copy_from_slice(src);
            }
        }
        out
    }

    /// Checks per-sequence lengths: one per sequence, each in 1..=T.
    pub fn check_lengths(&self, lengths: &[usize]) -> Result<()> {
        if lengths.len() != self.batch {
            return Err(RnnError::ShapeMismatch {
                what: "lengths",
                expected: format!("{} lengths, one per sequence", self.batch),
                got: format!("{}", lengths.len()),
            });
        }
        match lengths
            .iter()
            .enumerate()
            .find(|&(_, &l)| l == 0 || l > self.seq_len)
        {
            Some((index, &length)) => Err(RnnError::InvalidLength {
                index,
                length,
                seq_len: self.seq_len,
            }),
            None => Ok(()),
        }
    }

    /// Strides of the input and output frames (their feature sizes differ, the frame order not).
    pub fn frame_strides(&self, features: usize) -> FrameStrides {
        if self.batch_first {
            FrameStrides {
                t: features,
                n: self.seq_len * features,
            }
        } else {
            FrameStrides {
                t: self.batch * features,
                n: features,
            }
        }
    }

    /// The shape of a tensor of `f` features per frame in this call's layout.
    pub fn frames_shape(&self, f: usize) -> Vec<usize> {
        if self.unbatched {
            vec![self.seq_len, f]
        } else if self.batch_first {
            vec![self.batch, self.seq_len, f]
        } else {
            vec![self.seq_len, self.batch, f]
        }
    }

    /// PyTorch's shape of `h0` and `h_n`: (D·L, N, H_out), or (D·L, H_out) when unbatched.
    pub fn state_shape(&self, config: &RnnConfig) -> Vec<usize> {
        self.stacked_state_shape(config.state_rows(), config.state_size())
    }

    /// PyTorch's shape of `c0` and `c_n`: (D·L, N, H), or (D·L, H) when unbatched.
    pub fn cell_state_shape(&self, config: &RnnConfig) -> Vec<usize> {
        self.stacked_state_shape(config.state_rows(), config.hidden_size)
    }

    /// The shape of `rows` stacked states of `features` each: (rows, N, features), or
    /// (rows, features) when unbatched (PyTorch's layout of `h0`, `h_n`, `c0`, `c_n`).
    pub fn stacked_state_shape(&self, rows: usize, features: usize) -> Vec<usize> {
        if self.unbatched {
            vec![rows, features]
        } else {
            vec![rows, self.batch, features]
        }
    }
}

/// Frames [t0, t0 + len) of every sequence of a tensor laid out as `shape` says.
pub(crate) struct TimeSlice {
    pub shape: ForwardShape,
    pub t0: usize,
    pub len: usize,
    pub features: usize,
}

impl TimeSlice {
    /// (offset in the whole tensor, offset in the slice, elements) of each contiguous run.
    fn runs(&self) -> Vec<(usize, usize, usize)> {
        let (steps, batch, f) = (self.shape.seq_len, self.shape.batch, self.features);
        if self.shape.batch_first {
            // (N, T, F): one run of len frames per sequence.
            (0..batch)
                .map(|n| ((n * steps + self.t0) * f, n * self.len * f, self.len * f))
                .collect()
        } else {
            // (T, N, F): the slice is contiguous.
            vec![(self.t0 * batch * f, 0, self.len * batch * f)]
        }
    }

    pub fn gather(&self, whole: &[f32]) -> Vec<f32> {
        let mut part = vec![0.0; self.len * self.shape.batch * self.features];
        self.gather_with(whole, |to, frames| {
            part[to..to + frames.len()].copy_from_slice(frames)
        });
        part
    }

    /// Hands each contiguous run of the slice's frames of `whole` to `put`, with its offset
    /// in the gathered slice.
    pub fn gather_with(&self, whole: &[f32], mut put: impl FnMut(usize, &[f32])) {
        for (at, to, n) in self.runs() {
            put(to, &whole[at..at + n]);
        }
    }

    pub fn scatter(&self, part: &[f32], whole: &mut [f32]) {
        for (at, from, n) in self.runs() {
            whole[at..at + n].copy_from_slice(&part[from..from + n]);
        }
    }
}
