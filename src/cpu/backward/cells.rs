//! One step of each cell's backward pass for one sequence, in f64, written as the formulas in
//! PyTorch's autograd read (TRAINING-NOTES.md). The forward values a step needs (gates, c,
//! `W_hn·h + b_hn`) are recomputed here from the step's saved input and starting state: the
//! simplest way to be sure they are the values the forward used.

// Index loops over j (a unit of the hidden state) read as the formulas do, across several
// arrays at once.
#![allow(clippy::needless_range_loop)]

use crate::config::{Nonlinearity, RnnMode};
use crate::weights::DirectionWeights;

/// The gradients of one (layer, direction)'s parameters, accumulated over every step in f64
/// and shaped (row-major) as the parameters. The biases' sums are kept even without biases
/// (then they are simply not reported); `weight_hr` is empty unless the LSTM projects.
pub(super) struct UnitGrads {
    pub weight_ih: Vec<f64>,
    pub weight_hh: Vec<f64>,
    pub bias_ih: Vec<f64>,
    pub bias_hh: Vec<f64>,
    pub weight_hr: Vec<f64>,
}

impl UnitGrads {
    pub fn zeros(w: &DirectionWeights) -> Self {
        let rows = w.bias_ih.as_ref().map_or(0, Vec::len);
        UnitGrads {
            weight_ih: vec![0.0; w.weight_ih.len()],
            weight_hh: vec![0.0; w.weight_hh.len()],
            bias_ih: vec![0.0; rows],
            bias_hh: vec![0.0; rows],
            weight_hr: vec![0.0; w.weight_hr.as_ref().map_or(0, Vec::len)],
        }
    }
}

/// What the forward of one step of one sequence started from: the input frame x (I_k), the
/// state h (H_out) and, for an LSTM, c (H; empty otherwise).
#[derive(Clone, Copy)]
pub(super) struct StepStart<'a> {
    pub x: &'a [f32],
    pub h: &'a [f32],
    pub c: &'a [f32],
}

/// The upstream gradient of one step and where its results go. `dh` (H_out) is the gradient
/// of the state the step produced (its output frame's gradient plus the carry from the step
/// after it). `dc` (H, LSTM only) is the carry of c: in, the gradient of the c the step
/// produced; out, that of the c it started from. `dx` (I_k) and `dh_prev` (H_out) are added
/// to.
pub(super) struct StepGrads<'a> {
    pub dh: &'a [f64],
    pub dc: &'a mut [f64],
    pub dx: &'a mut [f64],
    pub dh_prev: &'a mut [f64],
}

fn dot(w: &[f32], v: &[f32]) -> f64 {
    w.iter()
        .zip(v)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Backpropagates one step of one sequence of a (layer, direction) with weights `w`.
pub(super) fn step_backward(
    mode: RnnMode,
    w: &DirectionWeights,
    hidden: usize,
    at: StepStart<'_>,
    out: StepGrads<'_>,
    grads: &mut UnitGrads,
) {
    let rows = mode.gates() * hidden;
    let (inputs, states) = (at.x.len(), at.h.len());
    // The two halves of every gate's pre-activation: W_ih·x + b_ih and W_hh·h + b_hh. They are
    // kept apart because the GRU's n gate multiplies the second by r.
    let ih = |r: usize| {
        w.bias_ih.as_ref().map_or(0.0, |b| f64::from(b[r]))
            + dot(&w.weight_ih[r * inputs..(r + 1) * inputs], at.x)
    };
    let hh = |r: usize| {
        w.bias_hh.as_ref().map_or(0.0, |b| f64::from(b[r]))
            + dot(&w.weight_hh[r * states..(r + 1) * states], at.h)
    };
    // Gradients of the two halves of every pre-activation; equal except for the GRU's n gate.
    let mut d_ih = vec![0.0f64; rows];
    let mut d_hh;
    match mode {
        RnnMode::Rnn(act) => {
            for j in 0..hidden {
                let pre = ih(j) + hh(j);
                let slope = match act {
                    Nonlinearity::Tanh => 1.0 - pre.tanh().powi(2),
                    // PyTorch's threshold_backward: the gradient passes where the result is
                    // positive.
                    Nonlinearity::Relu => {
                        if pre > 0.0 {
                            1.0
                        } else {
                            0.0
                        }
                    }
                };
                d_ih[j] = out.dh[j] * slope;
            }
            d_hh = d_ih.clone();
        }
        RnnMode::Lstm => {
            lstm_gates_backward(w, hidden, at.c, out.dh, out.dc, &ih, &hh, &mut d_ih, grads);
            d_hh = d_ih.clone();
        }
        RnnMode::Gru => {
            d_hh = vec![0.0f64; rows];
            for j in 0..hidden {
                let r = sigmoid(ih(j) + hh(j));
                let z = sigmoid(ih(hidden + j) + hh(hidden + j));
                let hn = hh(2 * hidden + j);
                let n = (ih(2 * hidden + j) + r * hn).tanh();
                let dh = out.dh[j];
                // h' = (1 − z)∘n + z∘h: h's direct share, then the gates'.
                out.dh_prev[j] += dh * z;
                let dn_pre = dh * (1.0 - z) * (1.0 - n * n);
                let dz_pre = dh * (f64::from(at.h[j]) - n) * z * (1.0 - z);
                let dr_pre = dn_pre * hn * r * (1.0 - r);
                d_ih[j] = dr_pre;
                d_ih[hidden + j] = dz_pre;
                d_ih[2 * hidden + j] = dn_pre;
                d_hh[j] = dr_pre;
                d_hh[hidden + j] = dz_pre;
                // r∘(W_hn·h + b_hn): the recurrent half of n sees dn_pre scaled by r.
                d_hh[2 * hidden + j] = dn_pre * r;
            }
        }
    }
    for r in 0..rows {
        if !grads.bias_ih.is_empty() {
            grads.bias_ih[r] += d_ih[r];
            grads.bias_hh[r] += d_hh[r];
        }
        for k in 0..inputs {
            grads.weight_ih[r * inputs + k] += d_ih[r] * f64::from(at.x[k]);
            out.dx[k] += f64::from(w.weight_ih[r * inputs + k]) * d_ih[r];
        }
        for k in 0..states {
            grads.weight_hh[r * states + k] += d_hh[r] * f64::from(at.h[k]);
            out.dh_prev[k] += f64::from(w.weight_hh[r * states + k]) * d_hh[r];
        }
    }
}

/// The LSTM's part of a step: from dh (H_out) and the carry dc, the gradients of the four
/// gates' pre-activations into `d_pre` (i, f, g, o), `weight_hr`'s into `grads`, and the carry
/// of c left in `dc`.
#[allow(clippy::too_many_arguments)]
fn lstm_gates_backward(
    w: &DirectionWeights,
    hidden: usize,
    c_prev: &[f32],
    dh: &[f64],
    dc: &mut [f64],
    ih: &impl Fn(usize) -> f64,
    hh: &impl Fn(usize) -> f64,
    d_pre: &mut [f64],
    grads: &mut UnitGrads,
) {
    let gate = |k: usize, j: usize| ih(k * hidden + j) + hh(k * hidden + j);
    let mut saved = Vec::with_capacity(hidden);
    for j in 0..hidden {
        let (i, f) = (sigmoid(gate(0, j)), sigmoid(gate(1, j)));
        let (g, o) = (gate(2, j).tanh(), sigmoid(gate(3, j)));
        let c = f * f64::from(c_prev[j]) + i * g;
        saved.push((i, f, g, o, c.tanh()));
    }
    // h = W_hr·h̃ with a projection (h̃ = o∘tanh(c)): dW_hr = dh·h̃ᵀ, dh̃ = W_hrᵀ·dh.
    let d_unprojected: Vec<f64> = match &w.weight_hr {
        Some(weight_hr) => (0..hidden)
            .map(|j| {
                let (.., o, tc) = saved[j];
                let mut sum = 0.0;
                for (p, &dh_p) in dh.iter().enumerate() {
                    grads.weight_hr[p * hidden + j] += dh_p * o * tc;
                    sum += dh_p * f64::from(weight_hr[p * hidden + j]);
                }
                sum
            })
            .collect(),
        None => dh.to_vec(),
    };
    for j in 0..hidden {
        let (i, f, g, o, tc) = saved[j];
        let dht = d_unprojected[j];
        let dcell = dc[j] + dht * o * (1.0 - tc * tc);
        d_pre[j] = dcell * g * i * (1.0 - i);
        d_pre[hidden + j] = dcell * f64::from(c_prev[j]) * f * (1.0 - f);
        d_pre[2 * hidden + j] = dcell * i * (1.0 - g * g);
        d_pre[3 * hidden + j] = dht * tc * o * (1.0 - o);
        dc[j] = dcell * f;
    }
}
