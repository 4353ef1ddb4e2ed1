//! The CPU reference path: plain loops in the order PyTorch's formulas are written, with f64
//! accumulation. Every GPU result in this crate is checked against it.

use crate::config::RnnConfig;
use crate::error::Result;
use crate::layout::ForwardShape;
use crate::rnn::{Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// An `nn.RNN` evaluated on the CPU.
#[derive(Clone, Debug)]
pub struct CpuRnn {
    config: RnnConfig,
    weights: RnnWeights,
}

impl CpuRnn {
    /// A model from its configuration and weights (checked against each other).
    pub fn new(config: RnnConfig, weights: RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        Ok(CpuRnn { config, weights })
    }

    /// The model's weights.
    pub fn weights(&self) -> &RnnWeights {
        &self.weights
    }

    /// The forward pass with optional per-sequence lengths (`PackedSequence` semantics:
    /// frames at or past a sequence's length are skipped, their outputs are zero, and the
    /// state stays where the sequence ended). Lengths must already be validated.
    pub(crate) fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        let config = &self.config;
        let shape = ForwardShape::resolve(config, input, h0)?;
        let (steps, batch, hidden) = (shape.seq_len, shape.batch, config.hidden_size);
        let directions = config.num_directions();
        let out_features = config.output_size();
        let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);

        // Layer inputs are kept sequence-first, (T, N, F), whatever the caller's layout.
        let in_strides = shape.frame_strides(config.input_size);
        let mut layer_input = Vec::with_capacity(steps * batch * config.input_size);
        for t in 0..steps {
            for n in 0..batch {
                let start = in_strides.offset(t, n);
                layer_input.extend_from_slice(&input.data()[start..start + config.input_size]);
            }
        }

        let state_len = batch * hidden;
        let mut h_n = vec![0.0f32; config.num_layers * directions * state_len];
        for layer in 0..config.num_layers {
            let features = config.layer_input_size(layer);
            let mut layer_output = vec![0.0f32; steps * batch * out_features];
            for direction in 0..directions {
                let w = self.weights.get(layer, direction, config);
                let unit = layer * directions + direction;
                let mut state = match h0 {
                    Some(h0) => h0.data()[unit * state_len..(unit + 1) * state_len].to_vec(),
                    None => vec![0.0; state_len],
                };
                for s in 0..steps {
                    let t = if direction == 0 { s } else { steps - 1 - s };
                    let mut next = state.clone();
                    for n in (0..batch).filter(|&n| valid(t, n)) {
                        let x = &layer_input[(t * batch + n) * features..][..features];
                        let h = &state[n * hidden..][..hidden];
                        for j in 0..hidden {
                            let mut acc = 0.0f64;
                            if let (Some(b_ih), Some(b_hh)) = (&w.bias_ih, &w.bias_hh) {
                                acc += f64::from(b_ih[j]) + f64::from(b_hh[j]);
                            }
                            acc += dot(x, &w.weight_ih[j * features..][..features]);
                            acc += dot(h, &w.weight_hh[j * hidden..][..hidden]);
                            let value = config.nonlinearity.apply(acc) as f32;
                            next[n * hidden + j] = value;
                            layer_output[(t * batch + n) * out_features + direction * hidden + j] =
                                value;
                        }
                    }
                    state = next;
                }
                h_n[unit * state_len..(unit + 1) * state_len].copy_from_slice(&state);
            }
            layer_input = layer_output;
        }

        // Scatter the sequence-first result into the caller's layout.
        let out_strides = shape.frame_strides(out_features);
        let mut output = vec![0.0f32; steps * batch * out_features];
        for t in 0..steps {
            for n in 0..batch {
                let src = &layer_input[(t * batch + n) * out_features..][..out_features];
                let dst = out_strides.offset(t, n);
                output[dst..dst + out_features].copy_from_slice(src);
            }
        }
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.output_shape(config))?,
            h_n: Tensor::new(h_n, &shape.state_shape(config))?,
        })
    }
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
}
