//! The CPU reference backward pass (backpropagation through time) for every mode: plain loops
//! over steps in reverse, f64 accumulation, PyTorch's formulas. It is the reference the
//! coming training API, and its GPU backward, will be checked against; it is not that API.
//!
//! The forward is run again here, saving what the backward needs: each layer's input and the
//! state every step of every (layer, direction) started from. The step backward recomputes
//! the gates from those (`cells.rs`).

mod cells;

use super::projection;
use super::steps::{gru_step, lstm_step, recurrent_step};
use crate::config::{RnnConfig, RnnMode};
use crate::error::{Result, RnnError};
use crate::layout::ForwardShape;
use crate::rnn::Hx;
use crate::tensor::Tensor;
use crate::weights::{RnnWeights, suffix};
use cells::{StepGrads, StepStart, UnitGrads, step_backward};

/// The gradients of `loss = Σ output·d_output + Σ h_n·d_h_n (+ Σ c_n·d_c_n)`: what PyTorch's
/// autograd leaves in `.grad` after `loss.backward()`. The CPU reference for the coming
/// training API, not that API: its shape will change.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    /// d loss / d input, shaped as the input (zero at frames past a sequence's length).
    pub d_input: Tensor,
    /// d loss / d h0, shaped as `h0` (given or not: zeros are a state too).
    pub d_h0: Tensor,
    /// An LSTM's d loss / d c0, shaped as `c0`; `None` for the other modes.
    pub d_c0: Option<Tensor>,
    /// Every parameter's gradient under PyTorch's name (`weight_ih_l0`, `bias_hh_l1_reverse`,
    /// `weight_hr_l0`, ...), ordered (layer, direction) then ih, hh, biases, hr.
    pub params: Vec<(String, Tensor)>,
}

impl Gradients {
    /// The gradient of the parameter PyTorch calls `name`.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// The upstream gradients of a backward call: of `output`, `h_n` and (LSTM) `c_n`.
#[derive(Clone, Copy)]
pub(crate) struct Upstream<'a> {
    pub d_output: &'a Tensor,
    pub d_h_n: &'a Tensor,
    pub d_c_n: Option<&'a Tensor>,
}

/// What the forward saved: every layer's input, sequence-first (T, N, I_k), and per
/// (layer, direction) the state each step started from, indexed by time: h (T, N, H_out) and,
/// for an LSTM, c (T, N, H).
struct Trace {
    layer_inputs: Vec<Vec<f32>>,
    h_before: Vec<Vec<f32>>,
    c_before: Vec<Vec<f32>>,
}

/// Checks the upstream gradients against the forward's output shapes.
fn check_upstream(config: &RnnConfig, shape: &ForwardShape, up: Upstream<'_>) -> Result<()> {
    let expect = |what: &'static str, t: &Tensor, want: Vec<usize>| {
        if t.shape() == want.as_slice() {
            Ok(())
        } else {
            Err(RnnError::shape(what, format!("{want:?}"), t.shape()))
        }
    };
    expect(
        "d_output",
        up.d_output,
        shape.frames_shape(config.output_size()),
    )?;
    expect("d_h_n", up.d_h_n, shape.state_shape(config))?;
    match (config.mode.has_cell_state(), up.d_c_n) {
        (true, Some(d_c_n)) => expect("d_c_n", d_c_n, shape.cell_state_shape(config)),
        (false, Some(d_c_n)) => {
            let none = format!("none: {} has no cell state", config.mode.torch_name());
            Err(RnnError::shape("d_c_n", none, d_c_n.shape()))
        }
        (_, None) => Ok(()),
    }
}

/// The forward of `CpuRnn::forward_masked`, step for step the same f32 values, saving the
/// [`Trace`].
fn forward_saving(
    config: &RnnConfig,
    weights: &RnnWeights,
    shape: &ForwardShape,
    input: &Tensor,
    hx: Option<Hx<'_>>,
    lengths: Option<&[usize]>,
) -> Trace {
    let (steps, batch) = (shape.seq_len, shape.batch);
    let (hidden, state_size) = (config.hidden_size, config.state_size());
    let (directions, out_features) = (config.num_directions(), config.output_size());
    let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);
    let (h_len, c_len) = (batch * state_size, batch * hidden);
    let mut trace = Trace {
        layer_inputs: vec![shape.gather_sequence_first(input.data(), config.input_size)],
        h_before: Vec::new(),
        c_before: Vec::new(),
    };
    for layer in 0..config.num_layers {
        let mut layer_output = vec![0.0f32; steps * batch * out_features];
        for direction in 0..directions {
            let unit = layer * directions + direction;
            let w = &weights.units()[unit];
            let projected = projection(&trace.layer_inputs[layer], w, config, layer);
            let initial = |state: Option<&Tensor>, len: usize| match state {
                Some(s) => s.data()[unit * len..(unit + 1) * len].to_vec(),
                None => vec![0.0; len],
            };
            let mut h = initial(hx.map(|hx| hx.h0), h_len);
            let mut c = initial(hx.and_then(|hx| hx.c0), c_len);
            let mut h_before = vec![0.0f32; steps * h_len];
            let mut c_before = vec![0.0f32; steps * c_len];
            let p_len = batch * config.gate_size();
            for s in 0..steps {
                let t = if direction == 0 { s } else { steps - 1 - s };
                h_before[t * h_len..(t + 1) * h_len].copy_from_slice(&h);
                c_before[t * c_len..(t + 1) * c_len].copy_from_slice(&c);
                let p_t = &projected[t * p_len..(t + 1) * p_len];
                let valid_now = |n| valid(t, n);
                match config.mode {
                    RnnMode::Rnn(act) => h = recurrent_step(p_t, &h, &w.weight_hh, act, valid_now),
                    RnnMode::Lstm => (h, c) = lstm_step(p_t, &h, &c, w, hidden, valid_now),
                    RnnMode::Gru => h = gru_step(p_t, &h, w, hidden, valid_now),
                }
                for n in (0..batch).filter(|&n| valid(t, n)) {
                    let frame = (t * batch + n) * out_features + direction * state_size;
                    layer_output[frame..frame + state_size]
                        .copy_from_slice(&h[n * state_size..(n + 1) * state_size]);
                }
            }
            trace.h_before.push(h_before);
            trace.c_before.push(c_before);
        }
        trace.layer_inputs.push(layer_output);
    }
    trace
}

/// Backpropagation through time over every layer (top first) and direction. Steps past a
/// sequence's length are the identity in the forward, so in the backward the carry passes
/// them unchanged: `d_h_n` enters at each sequence's own last valid step (for the reverse
/// direction, its first frame), and nothing flows into frames past the length.
pub(crate) fn backward(
    config: &RnnConfig,
    weights: &RnnWeights,
    input: &Tensor,
    lengths: Option<&[usize]>,
    hx: Option<Hx<'_>>,
    up: Upstream<'_>,
) -> Result<Gradients> {
    let shape = ForwardShape::resolve(config, input, hx, lengths)?;
    check_upstream(config, &shape, up)?;
    let trace = forward_saving(config, weights, &shape, input, hx, lengths);
    let (steps, batch) = (shape.seq_len, shape.batch);
    let (hidden, state_size) = (config.hidden_size, config.state_size());
    let (directions, out_features) = (config.num_directions(), config.output_size());
    let valid = |t: usize, n: usize| lengths.is_none_or(|l| t < l[n]);
    let (h_len, c_len) = (batch * state_size, batch * hidden);
    let lstm = config.mode.has_cell_state();

    let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    // The gradient of the layer's output, sequence-first (T, N, D·H_out).
    let mut d_above = widen(&shape.gather_sequence_first(up.d_output.data(), out_features));
    let mut grads: Vec<UnitGrads> = weights.units().iter().map(UnitGrads::zeros).collect();
    let mut d_h0 = vec![0.0f64; config.state_rows() * h_len];
    let mut d_c0 = vec![0.0f64; config.state_rows() * c_len];
    for layer in (0..config.num_layers).rev() {
        let inputs = config.layer_input_size(layer);
        let x = &trace.layer_inputs[layer];
        let mut d_below = vec![0.0f64; steps * batch * inputs];
        for direction in 0..directions {
            let unit = layer * directions + direction;
            let w = &weights.units()[unit];
            let mut carry_h = widen(&up.d_h_n.data()[unit * h_len..(unit + 1) * h_len]);
            let mut carry_c = match up.d_c_n {
                Some(d_c_n) if lstm => widen(&d_c_n.data()[unit * c_len..(unit + 1) * c_len]),
                _ => vec![0.0; c_len],
            };
            for s in (0..steps).rev() {
                let t = if direction == 0 { s } else { steps - 1 - s };
                for n in (0..batch).filter(|&n| valid(t, n)) {
                    let frame = (t * batch + n) * out_features + direction * state_size;
                    let dh: Vec<f64> = (0..state_size)
                        .map(|k| carry_h[n * state_size + k] + d_above[frame + k])
                        .collect();
                    let mut dh_prev = vec![0.0f64; state_size];
                    let at = StepStart {
                        x: &x[(t * batch + n) * inputs..][..inputs],
                        h: &trace.h_before[unit][t * h_len + n * state_size..][..state_size],
                        c: if lstm {
                            &trace.c_before[unit][t * c_len + n * hidden..][..hidden]
                        } else {
                            &[]
                        },
                    };
                    let out = StepGrads {
                        dh: &dh,
                        dc: if lstm {
                            &mut carry_c[n * hidden..(n + 1) * hidden]
                        } else {
                            &mut []
                        },
                        dx: &mut d_below[(t * batch + n) * inputs..][..inputs],
                        dh_prev: &mut dh_prev,
                    };
                    step_backward(config.mode, w, hidden, at, out, &mut grads[unit]);
                    carry_h[n * state_size..(n + 1) * state_size].copy_from_slice(&dh_prev);
                }
            }
            d_h0[unit * h_len..(unit + 1) * h_len].copy_from_slice(&carry_h);
            d_c0[unit * c_len..(unit + 1) * c_len].copy_from_slice(&carry_c);
        }
        d_above = d_below;
    }

    let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let d_input = shape.scatter_sequence_first(&narrow(&d_above), config.input_size);
    Ok(Gradients {
        d_input: Tensor::new(d_input, input.shape())?,
        d_h0: Tensor::new(narrow(&d_h0), &shape.state_shape(config))?,
        d_c0: match lstm {
            true => Some(Tensor::new(narrow(&d_c0), &shape.cell_state_shape(config))?),
            false => None,
        },
        params: named_params(config, &grads, narrow)?,
    })
}

/// Every unit's gradients under PyTorch's parameter names and shapes.
fn named_params(
    config: &RnnConfig,
    grads: &[UnitGrads],
    narrow: impl Fn(&[f64]) -> Vec<f32>,
) -> Result<Vec<(String, Tensor)>> {
    let directions = config.num_directions();
    let rows = config.gate_size();
    let mut params = Vec::new();
    for (unit, g) in grads.iter().enumerate() {
        let (layer, direction) = (unit / directions, unit % directions);
        let name = |part: &str| format!("{part}_{}", suffix(layer, direction));
        let mut push = |part: &str, values: &[f64], dims: &[usize]| -> Result<()> {
            params.push((name(part), Tensor::new(narrow(values), dims)?));
            Ok(())
        };
        push(
            "weight_ih",
            &g.weight_ih,
            &[rows, config.layer_input_size(layer)],
        )?;
        push("weight_hh", &g.weight_hh, &[rows, config.state_size()])?;
        if config.bias {
            push("bias_ih", &g.bias_ih, &[rows])?;
            push("bias_hh", &g.bias_hh, &[rows])?;
        }
        if config.proj_size > 0 {
            push(
                "weight_hr",
                &g.weight_hr,
                &[config.proj_size, config.hidden_size],
            )?;
        }
    }
    Ok(params)
}
