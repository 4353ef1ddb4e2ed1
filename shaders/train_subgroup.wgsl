// The training recurrence of one layer with W_hh in registers: the same forward and backward
// as the persistent kernels of train_step.wgsl (same regions, same values saved, the same
// state and carries left behind), for states small enough that one subgroup holds them.
//
// One workgroup, exactly one subgroup of LANES lanes, per (sequence, direction); lane l owns
// the ROWS hidden units l·ROWS .. l·ROWS + ROWS − 1 (those ≥ H are padding, kept at zero and
// never stored). The forward keeps the lane's rows of every gate of W_hh in private values,
// the backward its columns (W_hhᵀ); h_{t−1} (forward) and dG_hh of step s + 1 (backward) stay
// in the lanes' registers and reach the others through subgroupBroadcast of constant lanes:
// no workgroup memory, no barrier, one loop iteration per timestep. The generic kernels load
// W_hh from storage every step, element by element per lane on llvmpipe: that, not the
// arithmetic, was what a step cost.
//
// This file is a template: src/gpu/training/subgroup.rs writes the loops over weights out in
// full (constant indices keep the private arrays in registers) and fills in the holes.

{{TRAIN_UNIT}}

const LANES: u32 = {{LANES}}u;
const ROWS: u32 = {{ROWS}}u;

// With several subgroups: h (forward) or each gate's dG (backward), twice (step i reads half
// i % 2 and writes the other, so one barrier a step suffices).
{{SHARED}}

// Where W_hh comes from a texture (`texture_weights`), its binding and fetch.
{{WEIGHT_TEXTURE}}

// With lanes splitting each group of four units (`split` > 1 in src/gpu/train_subgroup.rs),
// lane l holds part l % SPLIT of group l / SPLIT's weights: `row0` is the group's first unit,
// `part` the lane's part, `kbase` the first vec4 of K it holds, and `own0` is `row0` in part
// 0 and out of range (every load zero, every store skipped) in the others. (The backward's
// groups may be of eight units over twice the lanes: `SubgroupRecurrence::backward_form`.)

// The kernels read W_hh as vec4s (H is a multiple of four, and so is every offset):
// `weights` is where direction d's starts, `quads` the vec4s of one of its rows.

fn hh_bias(d: u32, g: u32, j: u32) -> f32 {
    let at = u.b_hh + d * u.param_stride + g * u.hidden + min(j, u.hidden - 1u);
    return select(0.0, params[at], u.has_bias == 1u && j < u.hidden);
}

fn ih_bias(d: u32, g: u32, j: u32) -> f32 {
    let at = u.b_ih + d * u.param_stride + g * u.hidden + min(j, u.hidden - 1u);
    return select(0.0, params[at], u.has_bias == 1u && j < u.hidden);
}

// Where the step computes W_ih·x_t itself (`Unit::inputs` > 0, a multiple of four): vec4 v
// of W_ih's row `row` of direction d, and of frame (p, n)'s input (zeros past the row, or
// for padding units).
fn input_weights(d: u32, row: u32, v: u32) -> vec4<f32> {
    let quads = u.inputs / 4u;
    let at = (u.w_ih + d * u.param_stride) / 4u + min(row, u.gates * u.hidden - 1u) * quads;
    return select(vec4<f32>(0.0), params4[at + min(v, quads - 1u)],
        v < quads && row < u.gates * u.hidden);
}

fn input_at(p: u32, n: u32, v: u32) -> vec4<f32> {
    let quads = u.inputs / 4u;
    let at = (u.x + (p * u.batch + n) * u.x_stride) / 4u;
    return select(vec4<f32>(0.0), work4[at + min(v, quads - 1u)], v < quads);
}

// Where the backward computes dy = dL·W from the head's gradient itself
// (`Unit::head_outputs` > 0): W[o, d·S + j .. j + 3] (zero for padding units), and
// elements 4v .. 4v + 3 of frame (p, n)'s dL (zero past the head's outputs).
fn head_weights(d: u32, o: u32, j: u32) -> vec4<f32> {
    let at = (u.head_w + o * u.head_features + d * u.state_size) / 4u + min(j, u.hidden - 4u) / 4u;
    return select(vec4<f32>(0.0), params4[at], j < u.hidden);
}

fn head_grad_at(p: u32, n: u32, v: u32) -> vec4<f32> {
    let at = u.head_dout + (p * u.batch + n) * u.head_outputs;
    var values = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
        let e = 4u * v + c;
        values[c] = select(0.0, work[at + min(e, u.head_outputs - 1u)], e < u.head_outputs);
    }
    return values;
}

// Units j .. j + 3 of a [·][H] row starting at `base` (j and H are multiples of four, so
// the four are all real or all padding), zero for padding units. A vec4 per access, not four
// scalars: llvmpipe runs every storage access as a loop over the lanes, once per access, and
// most of a step's time went to those loops (benches/README.md).
fn load_quad(base: u32, j: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), work4[(base + min(j, u.hidden - 4u)) / 4u], j < u.hidden);
}

fn store_quad(base: u32, j: u32, value: vec4<f32>) {
    if j < u.hidden {
        work4[(base + j) / 4u] = value;
    }
}

// Four units' forward step from their gates' input projections (`input[g]`: W_ih·x_t + b_ih,
// from the projection GEMM's P or computed in the step), W_hh·h_{t−1} (`rec[g]`) and biases:
// writes their output and what the backward needs, returns h_t (zero for padding units). At
// a frame past the sequence's length (not `live`) the output is zero and an LSTM's c stays
// (the caller keeps h); what it saves there no backward reads.
fn forward_rnn(j: u32, live: bool, input: vec4<f32>, out: u32, rec: vec4<f32>,
               bias: vec4<f32>) -> vec4<f32> {
    let acc = input + bias + rec;
    // `acc < 0` is false for NaN, so NaN propagates as in PyTorch.
    let value = select(tanh(acc), select(acc, vec4<f32>(0.0), acc < vec4<f32>(0.0)),
        u.activation == 1u);
    store_quad(out, j, select(vec4<f32>(0.0), value, live));
    return select(vec4<f32>(0.0), value, j < u.hidden);
}

fn forward_lstm(j: u32, live: bool, input: array<vec4<f32>, 4>, saved: u32, out: u32,
                rec: array<vec4<f32>, 4>, bias: array<vec4<f32>, 4>,
                c: ptr<function, vec4<f32>>) -> vec4<f32> {
    let h = u.hidden;
    let i = sigmoid4(input[0] + bias[0] + rec[0]);
    let f = sigmoid4(input[1] + bias[1] + rec[1]);
    let g = tanh(input[2] + bias[2] + rec[2]);
    let o = sigmoid4(input[3] + bias[3] + rec[3]);
    let c_new = f * *c + i * g;
    let m = o * tanh(c_new);
    store_quad(saved, j, i);
    store_quad(saved + h, j, f);
    store_quad(saved + 2u * h, j, g);
    store_quad(saved + 3u * h, j, o);
    store_quad(saved + 4u * h, j, c_new);
    store_quad(out, j, select(vec4<f32>(0.0), m, live));
    *c = select(*c, select(vec4<f32>(0.0), c_new, j < h), live);
    return select(vec4<f32>(0.0), m, j < h);
}

fn forward_gru(j: u32, live: bool, input: array<vec4<f32>, 4>, saved: u32, out: u32,
               rec: array<vec4<f32>, 4>, bias: array<vec4<f32>, 4>, h_prev: vec4<f32>)
    -> vec4<f32> {
    let h = u.hidden;
    let r = sigmoid4(input[0] + bias[0] + rec[0]);
    let z = sigmoid4(input[1] + bias[1] + rec[1]);
    let hn = bias[2] + rec[2];
    let cand = tanh(input[2] + r * hn);
    let value = (1.0 - z) * cand + z * h_prev;
    store_quad(saved, j, r);
    store_quad(saved + h, j, z);
    store_quad(saved + 2u * h, j, cand);
    store_quad(saved + 3u * h, j, hn);
    store_quad(out, j, select(vec4<f32>(0.0), value, live));
    return select(vec4<f32>(0.0), value, j < h);
}

// Four units' backward step from d h_t = dy + carry + `through` (what reached h_t through
// W_hh from step s + 1; `dy`: the output's gradient, read from dY or computed in the step
// from the head's): writes the gates' gradients dG (and a GRU's dG_hh), updates the carries,
// returns each gate's dG_hh (what flows on through W_hh; zero for gates the cell lacks and
// for padding units). At a frame past the sequence's length (not `live`) the gradients are
// zeros and the carries stay: selected, not branched around (llvmpipe would run both
// branches, masked).
fn backward_rnn(j: u32, live: bool, dg: u32, dy: vec4<f32>, out: u32, through: vec4<f32>,
                carry: ptr<function, vec4<f32>>) -> array<vec4<f32>, 4> {
    let zero = vec4<f32>(0.0);
    let dh = dy + *carry + through;
    *carry = select(*carry, zero, live);
    let value = load_quad(out, j);
    // relu' from the output, as PyTorch's threshold_backward: [h > 0].
    let grad = select(zero, select(dh * (1.0 - value * value), select(zero, dh, value > zero),
        u.activation == 1u), live);
    store_quad(dg, j, grad);
    return array<vec4<f32>, 4>(select(zero, grad, j < u.hidden), zero, zero, zero);
}

fn backward_lstm(j: u32, live: bool, dg: u32, dy: vec4<f32>, saved: u32, c_prev_at: u32,
                 through: vec4<f32>, carry: ptr<function, vec4<f32>>,
                 carry_c: ptr<function, vec4<f32>>) -> array<vec4<f32>, 4> {
    let h = u.hidden;
    let zero = vec4<f32>(0.0);
    let dh = dy + *carry + through;
    *carry = select(*carry, zero, live);
    let i = load_quad(saved, j);
    let f = load_quad(saved + h, j);
    let g = load_quad(saved + 2u * h, j);
    let o = load_quad(saved + 3u * h, j);
    let tc = tanh(load_quad(saved + 4u * h, j));
    let c_prev = load_quad(c_prev_at, j);
    let dc = *carry_c + dh * o * (1.0 - tc * tc);
    let real = live && j < h;
    let d_i = select(zero, dc * g * i * (1.0 - i), live);
    let d_f = select(zero, dc * c_prev * f * (1.0 - f), live);
    let d_g = select(zero, dc * i * (1.0 - g * g), live);
    let d_o = select(zero, dh * tc * o * (1.0 - o), live);
    store_quad(dg, j, d_i);
    store_quad(dg + h, j, d_f);
    store_quad(dg + 2u * h, j, d_g);
    store_quad(dg + 3u * h, j, d_o);
    *carry_c = select(*carry_c, select(zero, dc * f, j < h), live);
    return array<vec4<f32>, 4>(select(zero, d_i, real), select(zero, d_f, real),
        select(zero, d_g, real), select(zero, d_o, real));
}

fn backward_gru(j: u32, live: bool, dg: u32, dghh: u32, dy: vec4<f32>, saved: u32,
                hprev: u32, through: vec4<f32>, carry: ptr<function, vec4<f32>>)
    -> array<vec4<f32>, 4> {
    let h = u.hidden;
    let zero = vec4<f32>(0.0);
    let dh = dy + *carry + through;
    let r = load_quad(saved, j);
    let z = load_quad(saved + h, j);
    let cand = load_quad(saved + 2u * h, j);
    let hn = load_quad(saved + 3u * h, j);
    let h_prev = load_quad(hprev, j);
    let d_cand = dh * (1.0 - z) * (1.0 - cand * cand);
    // Every value stored selected, not computed from selected ones: a dead frame's stale
    // saved values may be NaN, and 0·NaN is NaN.
    let d_r = select(zero, d_cand * hn * r * (1.0 - r), live);
    let d_z = select(zero, dh * (h_prev - cand) * z * (1.0 - z), live);
    let d_n = select(zero, d_cand, live);
    let d_hn = select(zero, d_cand * r, live);
    store_quad(dg, j, d_r);
    store_quad(dg + h, j, d_z);
    store_quad(dg + 2u * h, j, d_n);
    store_quad(dghh, j, d_r);
    store_quad(dghh + h, j, d_z);
    store_quad(dghh + 2u * h, j, d_hn);
    // h_t = … + z·h_{t−1}: this part of dh skips W_hh.
    *carry = select(*carry, select(zero, dh * z, j < h), live);
    let real = j < h;
    return array<vec4<f32>, 4>(select(zero, d_r, real), select(zero, d_z, real),
        select(zero, d_hn, real), zero);
}


@compute @workgroup_size({{LANES}}, 1, 1)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32{{SUB_BUILTIN}}) {
    forward_sequence(wg.y, wg.z, lane{{SUB_ARG}});
}

fn forward_sequence(n: u32, d: u32, lane: u32{{SUB_PARAM}}) {
{{FORWARD_UNIT_LETS}}    let first = step.index;
    let end = min(first + u.forward_steps, u.seq_len);
    let weights = (u.w_hh + d * u.param_stride) / 4u;
    let quads = u.hidden / 4u;
    // This lane's rows of each gate, [gate][row][k / 4].
    var w: array<vec4<f32>, {{FORWARD_WEIGHTS}}>;
{{FORWARD_LOAD}}
    // The sequence's length, read once: a frame at p is live while p < length.
    let length = bitcast<u32>(work[u.lengths + n]);
    for (var s = first; s < end; s++) {
        let p = position(s, d);
        let pre = frame_at(u.p, d, p, n, gate_size());
        let saved = frame_at(u.saved, d, p, n, saved_width());
        let hprev = frame_at(u.hprev, d, p, n, u.hidden);
        let out = output_at(p, n, d);
{{FORWARD_STEP}}
    }
{{FORWARD_SAVE}}
}

// Steps step.index down to step.index + 1 − backward_steps (not below 0).
@compute @workgroup_size({{LANES}}, 1, 1)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32{{SUB_BUILTIN}}) {
    backward_sequence(wg.y, wg.z, lane{{SUB_ARG}});
}

fn backward_sequence(n: u32, d: u32, lane: u32{{SUB_PARAM}}) {
{{BACKWARD_UNIT_LETS}}    let count = min(u.backward_steps, step.index + 1u);
    let rows = gate_size();
    // Where dG_hh lies: a GRU's differs from dG in the n gate.
    let dghh_base = select(u.p, u.dghh, u.cell == GRU);
    let weights = (u.w_hh + d * u.param_stride) / 4u;
    let quads = u.hidden / 4u;
    // This lane's columns of W_hh, [gate][row][column / 4].
    var w: array<vec4<f32>, {{BACKWARD_WEIGHTS}}>;
{{BACKWARD_LOAD}}
    let length = bitcast<u32>(work[u.lengths + n]);
    let c0_at = u.c0 + ((u.unit0 + d) * u.batch + n) * u.hidden;
    for (var i = 0u; i < count; i++) {
        let s = step.index - i;
        let p = position(s, d);
        let dg = frame_at(u.p, d, p, n, rows);
        let dghh = frame_at(u.dghh, d, p, n, rows);
        let saved = frame_at(u.saved, d, p, n, saved_width());
        let dy = u.dy + (p * u.batch + n) * u.y_stride + d * u.state_size;
        let out = output_at(p, n, d);
        let hprev = frame_at(u.hprev, d, p, n, u.hidden);
        // An LSTM's c_{t−1}: c0 at the sequence's first step, else what step s − 1 saved.
        let before = position(max(s, 1u) - 1u, d);
        let c_prev = select(c0_at,
            frame_at(u.saved, d, before, n, saved_width()) + 4u * u.hidden,
            s > 0u && before < length);
{{BACKWARD_STEP}}
    }
{{BACKWARD_SAVE}}
}
