//! The CPU reference path: plain loops in the order PyTorch's formulas are written, with f64
//! accumulation. Every GPU result in this crate is checked against it.

use crate::config::{Nonlinearity, RnnConfig};
use crate::error::Result;
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::rnn::{Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// An `nn.RNN` evaluated on the CPU.
#[derive(Clone, Debug)]
pub struct CpuRnn {
    config: RnnConfig,
    weights: RnnWeights,
    head: Option<Linear>,
}

impl CpuRnn {
    /// A model from its configuration and weights (checked against each other).
    pub fn new(config: RnnConfig, weights: RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        Ok(CpuRnn {
            config,
            weights,
            head: None,
        })
    }

    /// Adds a Linear head: every output frame becomes `h_t·Wᵀ + b`, (…, out_features).
    pub fn with_head(mut self, head: Linear) -> Result<Self> {
        head.check(self.config.output_size())?;
        self.head = Some(head);
        Ok(self)
    }

    /// Features of each output frame: the head's `out_features`, or D·H without a head.
    pub fn output_features(&self) -> usize {
        self.head
            .as_ref()
            .map_or(self.config.output_size(), |head| head.out_features)
    }

    /// The model's weights.
    pub fn weights(&self) -> &RnnWeights {
        &self.weights
    }

    /// The forward pass with optional per-sequence lengths (`PackedSequence` semantics:
    /// frames at or past a sequence's length are skipped, their outputs are zero, and the
    /// state stays where the sequence ended).
    pub(crate) fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        let config = &self.config;
        let shape = ForwardShape::resolve(config, input, h0)?;
        if let Some(lengths) = lengths {
            shape.check_lengths(lengths)?;
        }
        let (steps, batch, hidden) = (shape.seq_len, shape.batch, config.hidden_size);
        let directions = config.num_directions();
        let out_features = config.output_size();
        let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);

        // Layer inputs are kept sequence-first, (T, N, F), whatever the caller's layout.
        let mut layer_input = shape.gather_sequence_first(input.data(), config.input_size);

        let state_len = batch * hidden;
        let mut h_n = vec![0.0f32; config.num_layers * directions * state_len];
        for layer in 0..config.num_layers {
            let features = config.layer_input_size(layer);
            let mut layer_output = vec![0.0f32; steps * batch * out_features];
            for direction in 0..directions {
                let w = self.weights.unit(layer, direction, config);
                let projected = input_projection(
                    &layer_input,
                    &w.weight_ih,
                    &w.combined_bias(hidden),
                    features,
                );
                let unit = layer * directions + direction;
                let mut state = match h0 {
                    Some(h0) => h0.data()[unit * state_len..(unit + 1) * state_len].to_vec(),
                    None => vec![0.0; state_len],
                };
                for s in 0..steps {
                    let t = if direction == 0 { s } else { steps - 1 - s };
                    let p_t = &projected[t * state_len..(t + 1) * state_len];
                    state = recurrent_step(p_t, &state, &w.weight_hh, config.nonlinearity, |n| {
                        valid(t, n)
                    });
                    for n in 0..batch {
                        if valid(t, n) {
                            let frame = (t * batch + n) * out_features + direction * hidden;
                            layer_output[frame..frame + hidden]
                                .copy_from_slice(&state[n * hidden..(n + 1) * hidden]);
                        }
                    }
                }
                h_n[unit * state_len..(unit + 1) * state_len].copy_from_slice(&state);
            }
            layer_input = layer_output;
        }

        if let Some(head) = &self.head {
            layer_input = input_projection(
                &layer_input,
                &head.weight,
                &head.bias_or_zeros(),
                out_features,
            );
        }
        let out_features = self.output_features();
        let output = shape.scatter_sequence_first(&layer_input, out_features);
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.frames_shape(out_features))?,
            h_n: Tensor::new(h_n, &shape.state_shape(config))?,
        })
    }
}

/// CPU twin of `input_projection.wgsl` for one direction: P = X·Wᵀ + bias, where X is
/// (rows, depth), W is (cols, depth) and P is (rows, cols), all row-major.
pub(crate) fn input_projection(x: &[f32], w: &[f32], bias: &[f32], depth: usize) -> Vec<f32> {
    let cols = bias.len();
    x.chunks_exact(depth)
        .flat_map(|row| {
            (0..cols).map(move |c| {
                (f64::from(bias[c]) + dot(row, &w[c * depth..(c + 1) * depth])) as f32
            })
        })
        .collect()
}

/// CPU twin of `recurrent_step.wgsl` for one direction and one step: for every sequence n with
/// `valid(n)`, `h'[n] = act(p_t[n] + W_hh·h[n])`; other sequences keep their state.
/// `p_t` and `h` are (N, H), `w_hh` is (H, H).
pub(crate) fn recurrent_step(
    p_t: &[f32],
    h: &[f32],
    w_hh: &[f32],
    nonlinearity: Nonlinearity,
    valid: impl Fn(usize) -> bool,
) -> Vec<f32> {
    let hidden = w_hh.len().isqrt();
    let mut next = h.to_vec();
    for (n, (h_n, p_n)) in h
        .chunks_exact(hidden)
        .zip(p_t.chunks_exact(hidden))
        .enumerate()
    {
        if !valid(n) {
            continue;
        }
        for j in 0..hidden {
            let acc = f64::from(p_n[j]) + dot(h_n, &w_hh[j * hidden..(j + 1) * hidden]);
            next[n * hidden + j] = nonlinearity.apply(acc) as f32;
        }
    }
    next
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

impl Rnn for CpuRnn {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward(&self, input: &Tensor, h0: Option<&Tensor>) -> Result<RnnOutput> {
        self.forward_masked(input, h0, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
    ) -> Result<RnnOutput> {
        self.forward_masked(input, h0, Some(lengths))
    }
}
