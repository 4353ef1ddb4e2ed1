//! The CPU twins of the GPU kernels: one projection of every timestep's input, and one step of
//! each cell, written as PyTorch's formulas read, with f64 accumulation. States are kept in
//! f32 between steps, as PyTorch keeps them.

use crate::config::Nonlinearity;
use crate::weights::DirectionWeights;

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

/// `W_hh[j]·h + b_hh[j]` for gate row `j`, in f64.
fn recurrent_row(w: &DirectionWeights, h: &[f32], j: usize) -> f64 {
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
    w: &DirectionWeights,
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
    w: &DirectionWeights,
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

/// CPU twin of `peak_multiply_add.wgsl`: the sum of invocation `id`'s eight vec4 chains
/// a ← a·m + c after `iterations` iterations of eight rounds, each chain started as the shader
/// starts it. In f64: the chains contract towards c / (1 − m), so the shader's f32 rounding
/// stays within about ε / (1 − m) of it.
#[cfg(test)]
pub(crate) fn multiply_add_chains(id: u32, iterations: u32, m: f32, c: f32) -> [f32; 4] {
    let mut sum = [0.0f64; 4];
    for chain in 0..8 {
        let base = f64::from((id * 8 + chain) % 97) / 97.0;
        for (component, total) in sum.iter_mut().enumerate() {
            let mut a = base + 0.25 * component as f64;
            for _ in 0..8 * iterations {
                a = a * f64::from(m) + f64::from(c);
            }
            *total += a;
        }
    }
    sum.map(|v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(
        weight_hh: Vec<f32>,
        bias_hh: Vec<f32>,
        weight_hr: Option<Vec<f32>>,
    ) -> DirectionWeights {
        DirectionWeights {
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
