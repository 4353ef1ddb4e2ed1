//! The CPU reference path: plain loops in the order PyTorch's formulas are written, with f64
//! accumulation, for every mode. Every GPU result in this crate is checked against it.

pub(crate) mod backward;
pub(crate) mod steps;
pub(crate) mod trainer;

use crate::config::{RnnConfig, RnnMode};
use crate::error::Result;
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::rnn::{Hx, Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::{DirectionWeights, RnnWeights};
use steps::{gru_step, input_projection, lstm_step, recurrent_step};

/// An `nn.RNN`, `nn.LSTM` or `nn.GRU` evaluated on the CPU: the reference the GPU path is
/// checked against.
#[derive(Clone, Debug)]
pub struct CpuRnn {
    config: RnnConfig,
    weights: RnnWeights,
    head: Option<Linear>,
}

impl CpuRnn {
    /// A model from its configuration and weights (checked against each other).
    pub fn new(config: RnnConfig, weights: &RnnWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        Ok(CpuRnn {
            config,
            weights: weights.clone(),
            head: None,
        })
    }

    /// Adds a Linear head: every output frame becomes `h_t·Wᵀ + b`, (…, out_features).
    pub fn with_head(mut self, head: &Linear) -> Result<Self> {
        head.check(self.config.output_size())?;
        self.head = Some(head.clone());
        Ok(self)
    }

    /// Features of each output frame: the head's `out_features`, or D·H_out without a head.
    pub fn output_features(&self) -> usize {
        self.head
            .as_ref()
            .map_or(self.config.output_size(), |head| head.out_features)
    }

    /// The model's weights.
    pub fn weights(&self) -> &RnnWeights {
        &self.weights
    }

    /// The CPU reference backward pass (BPTT): the gradients of `loss = Σ output·d_output +
    /// Σ h_n·d_h_n (+ Σ c_n·d_c_n)` with respect to the input, h0 (c0) and every parameter, for
    /// `forward_with_lengths(input, lengths, hx)` (or `forward` when `lengths` is `None`).
    /// `d_c_n` is an LSTM's only (`None` means zeros). Internal: the reference the coming
    /// training API and its GPU backward will be checked against, not that API. A model with a
    /// Linear head is refused (the head's backward is not written yet).
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn backward_reference(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        hx: Option<Hx<'_>>,
        d_output: &Tensor,
        d_h_n: &Tensor,
        d_c_n: Option<&Tensor>,
    ) -> Result<backward::Gradients> {
        if self.head.is_some() {
            return Err(crate::error::RnnError::InvalidConfig(
                "backward_reference covers the recurrent layers only, not a Linear head".into(),
            ));
        }
        let upstream = backward::Upstream {
            d_output,
            d_h_n,
            d_c_n,
        };
        backward::backward(&self.config, &self.weights, input, lengths, hx, upstream)
    }

    /// The forward pass with optional per-sequence lengths (`PackedSequence` semantics:
    /// frames at or past a sequence's length are skipped, their outputs are zero, and the
    /// state stays where the sequence ended).
    fn forward_masked(
        &self,
        input: &Tensor,
        hx: Option<Hx<'_>>,
        lengths: Option<&[usize]>,
    ) -> Result<RnnOutput> {
        let config = &self.config;
        let shape = ForwardShape::resolve(config, input, hx, lengths)?;
        let (steps, batch) = (shape.seq_len, shape.batch);
        let (hidden, state_size) = (config.hidden_size, config.state_size());
        let (directions, out_features) = (config.num_directions(), config.output_size());
        let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);

        let h_len = batch * state_size;
        let c_len = batch * hidden;
        let mut h_n = vec![0.0f32; config.state_rows() * h_len];
        let mut c_n = vec![0.0f32; config.state_rows() * c_len];
        // Layer inputs are kept sequence-first, (T, N, F), whatever the caller's layout.
        let mut layer_input = shape.gather_sequence_first(input.data(), config.input_size);
        for layer in 0..config.num_layers {
            let mut layer_output = vec![0.0f32; steps * batch * out_features];
            for direction in 0..directions {
                let unit = layer * directions + direction;
                let w = &self.weights.units()[unit];
                let projected = projection(&layer_input, w, config, layer);
                let initial = |state: Option<&Tensor>, len: usize| match state {
                    Some(s) => s.data()[unit * len..(unit + 1) * len].to_vec(),
                    None => vec![0.0; len],
                };
                let mut h = initial(hx.map(|hx| hx.h0), h_len);
                let mut c = initial(hx.and_then(|hx| hx.c0), c_len);
                let p_len = batch * config.gate_size();
                for s in 0..steps {
                    let t = if direction == 0 { s } else { steps - 1 - s };
                    let p_t = &projected[t * p_len..(t + 1) * p_len];
                    let valid_now = |n| valid(t, n);
                    match config.mode {
                        RnnMode::Rnn(act) => {
                            h = recurrent_step(p_t, &h, &w.weight_hh, act, valid_now);
                        }
                        RnnMode::Lstm => (h, c) = lstm_step(p_t, &h, &c, w, hidden, valid_now),
                        RnnMode::Gru => h = gru_step(p_t, &h, w, hidden, valid_now),
                    }
                    for n in 0..batch {
                        if valid(t, n) {
                            let frame = (t * batch + n) * out_features + direction * state_size;
                            layer_output[frame..frame + state_size]
                                .copy_from_slice(&h[n * state_size..(n + 1) * state_size]);
                        }
                    }
                }
                h_n[unit * h_len..(unit + 1) * h_len].copy_from_slice(&h);
                c_n[unit * c_len..(unit + 1) * c_len].copy_from_slice(&c);
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
            c_n: match config.mode {
                RnnMode::Lstm => Some(Tensor::new(c_n, &shape.cell_state_shape(config))?),
                _ => None,
            },
        })
    }
}

/// The input projection of every timestep of one direction, all gates at once:
/// X (T·N, I_k) sequence-first, P (T·N, G·H). An Elman RNN folds both biases in
/// (`P = X·W_ihᵀ + b_ih + b_hh`, as `recurrent_step` expects); the gated cells add only `b_ih`,
/// because the GRU's n gate multiplies `b_hh` by r, and their steps add `b_hh` for every gate.
fn projection(x: &[f32], w: &DirectionWeights, config: &RnnConfig, layer: usize) -> Vec<f32> {
    let rows = config.gate_size();
    let bias: Vec<f32> = match (config.mode, &w.bias_ih, &w.bias_hh) {
        (RnnMode::Rnn(_), Some(b_ih), Some(b_hh)) => {
            b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect()
        }
        (_, Some(b_ih), _) => b_ih.clone(),
        _ => vec![0.0; rows],
    };
    input_projection(x, &w.weight_ih, &bias, config.layer_input_size(layer))
}

impl Rnn for CpuRnn {
    fn config(&self) -> &RnnConfig {
        &self.config
    }

    fn forward(&self, input: &Tensor, hx: Option<Hx<'_>>) -> Result<RnnOutput> {
        self.forward_masked(input, hx, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        hx: Option<Hx<'_>>,
    ) -> Result<RnnOutput> {
        self.forward_masked(input, hx, Some(lengths))
    }
}
