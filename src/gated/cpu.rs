//! The CPU reference path of `nn.LSTM` and `nn.GRU`: plain loops in the order PyTorch's
//! formulas are written, with f64 accumulation. States are kept in f32 between steps, as
//! PyTorch keeps them.

use super::config::{GateKind, GatedConfig};
use super::weights::{GatedDirectionWeights, GatedWeights};
use super::{GatedOutput, GatedRnn};
use crate::cpu::input_projection;
use crate::error::Result;
use crate::tensor::Tensor;

/// An `nn.LSTM` or `nn.GRU` evaluated on the CPU: the reference the GPU path is checked
/// against.
#[derive(Clone, Debug)]
pub struct CpuGatedRnn {
    config: GatedConfig,
    weights: GatedWeights,
}

impl CpuGatedRnn {
    /// A model from its configuration and weights (checked against each other).
    pub fn new(config: GatedConfig, weights: GatedWeights) -> Result<Self> {
        config.validate()?;
        weights.check(&config)?;
        Ok(CpuGatedRnn { config, weights })
    }

    /// The model's weights.
    pub fn weights(&self) -> &GatedWeights {
        &self.weights
    }

    /// The forward pass with optional per-sequence lengths (`PackedSequence` semantics:
    /// frames at or past a sequence's length are skipped, their outputs are zero, and the
    /// state stays where the sequence ended).
    fn forward_masked(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        lengths: Option<&[usize]>,
    ) -> Result<GatedOutput> {
        let config = &self.config;
        let shape = config.resolve(input, h0, c0, lengths)?;
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
                let projected = gate_projection(&layer_input, w, config, layer);
                let initial = |state: Option<&Tensor>, len: usize| match state {
                    Some(s) => s.data()[unit * len..(unit + 1) * len].to_vec(),
                    None => vec![0.0; len],
                };
                let mut h = initial(h0, h_len);
                let mut c = initial(c0, c_len);
                let gate_rows = batch * config.gate_size();
                for s in 0..steps {
                    let t = if direction == 0 { s } else { steps - 1 - s };
                    let p_t = &projected[t * gate_rows..(t + 1) * gate_rows];
                    match config.kind {
                        GateKind::Lstm => {
                            (h, c) = lstm_step(p_t, &h, &c, w, hidden, |n| valid(t, n));
                        }
                        GateKind::Gru => h = gru_step(p_t, &h, w, hidden, |n| valid(t, n)),
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

        let output = shape.scatter_sequence_first(&layer_input, out_features);
        let rows = config.state_rows();
        Ok(GatedOutput {
            output: Tensor::new(output, &shape.frames_shape(out_features))?,
            h_n: Tensor::new(h_n, &shape.stacked_state_shape(rows, state_size))?,
            c_n: match config.kind {
                GateKind::Lstm => Some(Tensor::new(c_n, &shape.stacked_state_shape(rows, hidden))?),
                GateKind::Gru => None,
            },
        })
    }
}

/// The input projection of every timestep of one direction, all gates at once:
/// `P = X·W_ihᵀ + b_ih`, X (T·N, I_k) sequence-first, P (T·N, G·H). `b_hh` is not folded in
/// here because the GRU's n gate multiplies it by r; the step adds it for every gate.
pub(crate) fn gate_projection(
    x: &[f32],
    w: &GatedDirectionWeights,
    config: &GatedConfig,
    layer: usize,
) -> Vec<f32> {
    let zeros;
    let bias = match &w.bias_ih {
        Some(bias) => bias,
        None => {
            zeros = vec![0.0; config.gate_size()];
            &zeros
        }
    };
    input_projection(x, &w.weight_ih, bias, config.layer_input_size(layer))
}

/// `W_hh[j]·h + b_hh[j]` for gate row `j`, in f64.
fn recurrent_row(w: &GatedDirectionWeights, h: &[f32], j: usize) -> f64 {
    let cols = h.len();
    let bias = w.bias_hh.as_ref().map_or(0.0, |b| f64::from(b[j]));
    bias + dot(h, &w.weight_hh[j * cols..(j + 1) * cols])
}

/// CPU twin of the fused LSTM step for one direction and one timestep. `p_t` is (N, 4H), the
/// projected input of this step (gates i, f, g, o); `h` is (N, H_out) and `c` is (N, H).
/// For every sequence n with `valid(n)`:
/// `gates = p_t[n] + W_hh·h[n] + b_hh`, `i, f, o = σ(·)`, `g = tanh(·)`,
/// `c' = f∘c + i∘g`, `h' = o∘tanh(c')`, then `h' = W_hr·h'` with a projection.
/// Other sequences keep their state. Returns (h', c').
pub(crate) fn lstm_step(
    p_t: &[f32],
    h: &[f32],
    c: &[f32],
    w: &GatedDirectionWeights,
    hidden: usize,
    valid: impl Fn(usize) -> bool,
) -> (Vec<f32>, Vec<f32>) {
    let state_size = w.weight_hh.len() / (4 * hidden);
    let (mut next_h, mut next_c) = (h.to_vec(), c.to_vec());
    let mut unprojected = vec![0.0f32; hidden];
    for n in 0..c.len() / hidden {
        if !valid(n) {
            continue;
        }
        let h_n = &h[n * state_size..(n + 1) * state_size];
        let p_n = &p_t[n * 4 * hidden..(n + 1) * 4 * hidden];
        let gate = |k: usize, j: usize| {
            let row = k * hidden + j;
            f64::from(p_n[row]) + recurrent_row(w, h_n, row)
        };
        for j in 0..hidden {
            let input_gate = sigmoid(gate(0, j));
            let forget_gate = sigmoid(gate(1, j));
            let cell_candidate = gate(2, j).tanh();
            let output_gate = sigmoid(gate(3, j));
            let cell = forget_gate * f64::from(c[n * hidden + j]) + input_gate * cell_candidate;
            next_c[n * hidden + j] = cell as f32;
            // PyTorch computes tanh of the stored (f32) cell state.
            let h_j = output_gate * f64::from(cell as f32).tanh();
            unprojected[j] = h_j as f32;
        }
        let out = &mut next_h[n * state_size..(n + 1) * state_size];
        match &w.weight_hr {
            Some(weight_hr) => {
                for (p, value) in out.iter_mut().enumerate() {
                    *value = dot(&unprojected, &weight_hr[p * hidden..(p + 1) * hidden]) as f32;
                }
            }
            None => out.copy_from_slice(&unprojected),
        }
    }
    (next_h, next_c)
}

/// CPU twin of the fused GRU step for one direction and one timestep. `p_t` is (N, 3H), the
/// projected input of this step (gates r, z, n, `b_ih` included); `h` is (N, H).
/// For every sequence n with `valid(n)`: `r = σ(p_r + W_hr·h + b_hr)`,
/// `z = σ(p_z + W_hz·h + b_hz)`, `n = tanh(p_n + r∘(W_hn·h + b_hn))`, `h' = (1 − z)∘n + z∘h`.
/// Other sequences keep their state.
pub(crate) fn gru_step(
    p_t: &[f32],
    h: &[f32],
    w: &GatedDirectionWeights,
    hidden: usize,
    valid: impl Fn(usize) -> bool,
) -> Vec<f32> {
    let mut next = h.to_vec();
    for n in 0..h.len() / hidden {
        if !valid(n) {
            continue;
        }
        let h_n = &h[n * hidden..(n + 1) * hidden];
        let p_n = &p_t[n * 3 * hidden..(n + 1) * 3 * hidden];
        for j in 0..hidden {
            let reset = sigmoid(f64::from(p_n[j]) + recurrent_row(w, h_n, j));
            let update = sigmoid(f64::from(p_n[hidden + j]) + recurrent_row(w, h_n, hidden + j));
            let candidate = (f64::from(p_n[2 * hidden + j])
                + reset * recurrent_row(w, h_n, 2 * hidden + j))
            .tanh();
            next[n * hidden + j] = ((1.0 - update) * candidate + update * f64::from(h_n[j])) as f32;
        }
    }
    next
}

/// The logistic function; `exp` saturates to the right limits (0 or 1) for large |x|.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

impl GatedRnn for CpuGatedRnn {
    fn config(&self) -> &GatedConfig {
        &self.config
    }

    fn forward(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput> {
        self.forward_masked(input, h0, c0, None)
    }

    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<GatedOutput> {
        self.forward_masked(input, h0, c0, Some(lengths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(
        weight_hh: Vec<f32>,
        bias_hh: Vec<f32>,
        weight_hr: Option<Vec<f32>>,
    ) -> GatedDirectionWeights {
        GatedDirectionWeights {
            weight_ih: Vec::new(),
            weight_hh,
            bias_ih: None,
            bias_hh: Some(bias_hh),
            weight_hr,
        }
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn lstm_step_reads_gates_in_pytorch_order_and_projects() {
        // H = 1, P = 1: rows i, f, g, o of W_hh (4, 1) and b_hh (4), then h' = W_hr·h'.
        let w = unit(
            vec![0.1, 0.2, 0.3, 0.4],
            vec![0.5, -0.5, 0.25, 1.0],
            Some(vec![2.0]),
        );
        let (p, h, c) = ([0.3f32, -0.2, 0.7, 0.1], [0.6f32], [-0.4f32]);
        let (h_next, c_next) = lstm_step(&p, &h, &c, &w, 1, |_| true);
        let gate = |k: usize| {
            f64::from(p[k])
                + f64::from(w.weight_hh[k]) * 0.6
                + f64::from(w.bias_hh.as_ref().unwrap()[k])
        };
        let cell = sig(gate(1)) * -0.4 + sig(gate(0)) * gate(2).tanh();
        let hidden = sig(gate(3)) * f64::from(cell as f32).tanh();
        assert!((f64::from(c_next[0]) - cell).abs() < 1e-7);
        assert!((f64::from(h_next[0]) - 2.0 * f64::from(hidden as f32)).abs() < 1e-6);
    }

    #[test]
    fn gru_step_reads_gates_in_pytorch_order_and_masks() {
        // H = 1, two sequences; the second is past its length and keeps its state.
        let w = unit(vec![0.1, 0.2, 0.3], vec![0.5, -0.5, 0.25], None);
        let p = [0.3f32, -0.2, 0.7, 9.0, 9.0, 9.0];
        let h = [0.6f32, -0.8];
        let next = gru_step(&p, &h, &w, 1, |n| n == 0);
        let reset = sig(0.3 + 0.1 * 0.6 + 0.5);
        let update = sig(-0.2 + 0.2 * 0.6 - 0.5);
        let candidate = (0.7 + reset * (0.3 * 0.6 + 0.25)).tanh();
        let want = (1.0 - update) * candidate + update * 0.6;
        assert!((f64::from(next[0]) - want).abs() < 1e-7);
        assert_eq!(next[1], -0.8);
    }
}
