// The training kernels of one layer, one timestep, both directions in one dispatch (gid.z):
// the forward step that keeps what the backward needs, and the backward step that walks the
// sequence in reverse. Every buffer the trainer owns is one of three: `params` (the model's
// parameters in PyTorch's layout), `grads` (their gradients, same layout) and `work` (inputs,
// outputs, saved values, states, upstream gradients), addressed by the offsets in `Unit`.
//
// Positions: step s of the forward direction is frame p = s, of the reverse p = T − 1 − s. A
// frame p of sequence n is valid when p < lengths[n] (PackedSequence semantics); at other
// frames the forward carries the state unchanged and writes zeros, and the backward writes
// zero gradients and leaves its carry alone. Everything saved is indexed by frame, so the
// weight gradients are GEMMs over all frames at once (`train_gemm.wgsl`).
//
// Saved per frame (regions [D][T][N][·]): the state the step started from (`hprev`, H_out);
// an LSTM's i, f, g, o, c (5H); a GRU's r, z, n and W_hn·h + b_hn (4H); a projected LSTM's
// unprojected o·tanh(c) (`m`, H). An Elman RNN's derivative comes from its output h itself.
//
// Each kernel comes in two forms over the same per-unit functions: one dispatch per step
// (`*_step`: a workgroup per 64 units), and persistent (`*_persistent`: one workgroup per
// (sequence, direction) runs `Unit.forward_steps` / `backward_steps` steps in one dispatch,
// its 64 invocations striding over the units, a storage and workgroup barrier between steps).
// The persistent form saves ~40 µs of dispatch hand-off per step on lavapipe; the step count per
// dispatch keeps every invocation under llvmpipe's 65,535 loop iterations (WGPU-NOTES.md).
//
// The state is [2][L·D][N][H_out], ping-pong by step parity (c likewise, [2][L·D][N][H]); the
// backward's carries are [L·D][N][H_out] (dh, seeded with d_h_n) and [L·D][N][H] (dc, seeded
// with d_c_n), and end as d_h0 and d_c0.

{{TRAIN_UNIT}}

// Σ_k W_hh[row, k] · h[k], W_hh (G·H, H_out) of direction d.
fn recurrent_dot(d: u32, row: u32, h: u32) -> f32 {
    let w = u.w_hh + d * u.param_stride + row * u.state_size;
    var acc = 0.0;
    for (var k = 0u; k < u.state_size; k++) {
        acc += params[w + k] * work[h + k];
    }
    return acc;
}

fn hh_bias(d: u32, row: u32) -> f32 {
    return select(0.0, params[u.b_hh + d * u.param_stride + row], u.has_bias == 1u);
}

// Step s of unit j (a hidden unit, or below H_out a state feature) of sequence n, direction d;
// `rec` holds W_hh·h_{t−1} of each of its gates (i f g o, or r z n; an Elman RNN's in x).
fn forward_unit(s: u32, d: u32, n: u32, j: u32, rec: vec4<f32>) {
    let p = position(s, d);
    let prev = state_row(s & 1u, d, n);
    let next = state_row((s + 1u) & 1u, d, n);
    let out = output_at(p, n, d);
    let hprev = frame_at(u.hprev, d, p, n, u.state_size);
    if !valid(p, n) {
        if j < u.state_size {
            work[next + j] = work[prev + j];
            work[out + j] = 0.0;
            work[hprev + j] = 0.0;
        }
        if u.cell == LSTM && j < u.hidden {
            work[cell_row((s + 1u) & 1u, d, n) + j] = work[cell_row(s & 1u, d, n) + j];
            if u.proj == 1u {
                work[frame_at(u.m, d, p, n, u.hidden) + j] = 0.0;
            }
        }
        return;
    }
    if j < u.state_size {
        work[hprev + j] = work[prev + j];
    }
    if j >= u.hidden {
        return;
    }
    let h = u.hidden;
    let pre = frame_at(u.p, d, p, n, gate_size());
    let saved = frame_at(u.saved, d, p, n, saved_width());
    if u.cell == RNN {
        let acc = work[pre + j] + hh_bias(d, j) + rec.x;
        // `acc < 0` is false for NaN, so NaN propagates as in PyTorch.
        let value = select(tanh(acc), select(acc, 0.0, acc < 0.0), u.activation == 1u);
        work[next + j] = value;
        work[out + j] = value;
    } else if u.cell == LSTM {
        let i = sigmoid(work[pre + j] + hh_bias(d, j) + rec.x);
        let f = sigmoid(work[pre + h + j] + hh_bias(d, h + j) + rec.y);
        let g = tanh(work[pre + 2u * h + j] + hh_bias(d, 2u * h + j) + rec.z);
        let o = sigmoid(work[pre + 3u * h + j] + hh_bias(d, 3u * h + j) + rec.w);
        let c = f * work[cell_row(s & 1u, d, n) + j] + i * g;
        let m = o * tanh(c);
        work[saved + j] = i;
        work[saved + h + j] = f;
        work[saved + 2u * h + j] = g;
        work[saved + 3u * h + j] = o;
        work[saved + 4u * h + j] = c;
        work[cell_row((s + 1u) & 1u, d, n) + j] = c;
        if u.proj == 1u {
            work[frame_at(u.m, d, p, n, h) + j] = m;
        } else {
            work[next + j] = m;
            work[out + j] = m;
        }
    } else {
        let r = sigmoid(work[pre + j] + hh_bias(d, j) + rec.x);
        let z = sigmoid(work[pre + h + j] + hh_bias(d, h + j) + rec.y);
        let hn = hh_bias(d, 2u * h + j) + rec.z;
        let cand = tanh(work[pre + 2u * h + j] + r * hn);
        let value = (1.0 - z) * cand + z * work[prev + j];
        work[saved + j] = r;
        work[saved + h + j] = z;
        work[saved + 2u * h + j] = cand;
        work[saved + 3u * h + j] = hn;
        work[next + j] = value;
        work[out + j] = value;
    }
}

// The gates' W_hh·h_{t−1} of unit j, one row at a time (zero where the step does not run it).
fn recurrent_dots(s: u32, d: u32, n: u32, j: u32) -> vec4<f32> {
    var rec = vec4<f32>();
    if j >= u.hidden || !valid(position(s, d), n) {
        return rec;
    }
    let prev = state_row(s & 1u, d, n);
    for (var g = 0u; g < u.gates; g++) {
        rec[g] = recurrent_dot(d, g * u.hidden + j, prev);
    }
    return rec;
}

// The same for units j..j + 3 at once, reading W_hh and h as vec4s (H_out and H multiples of
// four, no projection): one load of h and one of each of the 4·G rows per four k, ~6× fewer
// loads than row by row (llvmpipe runs loads lane by lane: they are what costs). Gate g of
// unit j + i is in [i][g].
fn recurrent_dots4(s: u32, d: u32, n: u32, j: u32) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    let quads = u.state_size / 4u;
    let h = state_row(s & 1u, d, n) / 4u;
    // Row (g·H + j + i) of W_hh starts at w + (g·H + i)·quads.
    let w = (u.w_hh + d * u.param_stride + j * u.state_size) / 4u;
    let gate = u.hidden * quads;
    for (var k = 0u; k < quads; k++) {
        let hv = work4[h + k];
        for (var g = 0u; g < u.gates; g++) {
            let row = w + g * gate + k;
            acc[0][g] += dot(params4[row], hv);
            acc[1][g] += dot(params4[row + quads], hv);
            acc[2][g] += dot(params4[row + 2u * quads], hv);
            acc[3][g] += dot(params4[row + 3u * quads], hv);
        }
    }
    return acc;
}

// A projected LSTM's h_t = W_hr · m_t, feature q.
fn project_unit(s: u32, d: u32, n: u32, q: u32) {
    let p = position(s, d);
    if !valid(p, n) {
        return;
    }
    let m = frame_at(u.m, d, p, n, u.hidden);
    let w = u.w_hr + d * u.param_stride + q * u.hidden;
    var acc = 0.0;
    for (var k = 0u; k < u.hidden; k++) {
        acc += params[w + k] * work[m + k];
    }
    work[state_row((s + 1u) & 1u, d, n) + q] = acc;
    work[output_at(p, n, d) + q] = acc;
}

// The gradient reaching h_t through the recurrence: Σ_k dG_hh[next frame, k] · W_hh[k, j],
// where the next frame is the one step s + 1 ran (none after the last step, or when it was
// past the sequence's length).
fn carried_through_w_hh(s: u32, d: u32, n: u32, j: u32) -> f32 {
    if s + 1u >= u.seq_len {
        return 0.0;
    }
    let next = position(s + 1u, d);
    if !valid(next, n) {
        return 0.0;
    }
    return through_w_hh(d, next, n, j);
}

// The same for state features j..j + 3 (H_out and G·H multiples of four): dG_hh read four k
// at a time, each W_hh row's four columns as one vec4.
fn carried_through_w_hh4(s: u32, d: u32, n: u32, j: u32) -> vec4<f32> {
    var acc = vec4<f32>();
    if s + 1u >= u.seq_len {
        return acc;
    }
    let next = position(s + 1u, d);
    if !valid(next, n) {
        return acc;
    }
    let rows = gate_size();
    let dg = select(frame_at(u.p, d, next, n, rows), frame_at(u.dghh, d, next, n, rows),
        u.cell == GRU) / 4u;
    let quads = u.state_size / 4u;
    var w = (u.w_hh + d * u.param_stride + j) / 4u;
    for (var k = 0u; k < rows / 4u; k++) {
        let g = work4[dg + k];
        acc += g.x * params4[w];
        acc += g.y * params4[w + quads];
        acc += g.z * params4[w + 2u * quads];
        acc += g.w * params4[w + 3u * quads];
        w += 4u * quads;
    }
    return acc;
}

fn through_w_hh(d: u32, p: u32, n: u32, j: u32) -> f32 {
    let rows = gate_size();
    // A GRU's dG_hh differs from dG_ih in the n gate (scaled by r); the other cells share one.
    let dg = select(frame_at(u.p, d, p, n, rows), frame_at(u.dghh, d, p, n, rows), u.cell == GRU);
    let w = u.w_hh + d * u.param_stride + j;
    var acc = 0.0;
    for (var k = 0u; k < rows; k++) {
        acc += work[dg + k] * params[w + k * u.state_size];
    }
    return acc;
}

// d loss / d h_t for state feature j at step s: the output's gradient, what the carry holds
// (d_h_n before the sequence's last step; a GRU's z·dh after) and what flows back through
// W_hh from step s + 1. Clears a carry the recurrence replaces.
fn state_gradient(d: u32, n: u32, j: u32, p: u32, through: f32) -> f32 {
    let carry = carry_h_at(d, n) + j;
    let dh = work[u.dy + (p * u.batch + n) * u.y_stride + d * u.state_size + j]
        + work[carry] + through;
    work[carry] = 0.0;
    return dh;
}

// The backward of step s for hidden unit j: the gates' gradients and the carries. `through`:
// what reaches h_t through W_hh from step s + 1 (`carried_through_w_hh`; unused when projected).
fn backward_unit(s: u32, d: u32, n: u32, j: u32, through: f32) {
    let p = position(s, d);
    let h = u.hidden;
    let dg = frame_at(u.p, d, p, n, gate_size());
    if !valid(p, n) {
        for (var g = 0u; g < u.gates; g++) {
            work[dg + g * h + j] = 0.0;
            if u.cell == GRU {
                work[frame_at(u.dghh, d, p, n, gate_size()) + g * h + j] = 0.0;
            }
        }
        return;
    }
    var dh: f32;
    if u.proj == 1u {
        // d m_t = W_hrᵀ · d h_t, d h_t written by `backward_project`.
        let dr = frame_at(u.dr, d, p, n, u.state_size);
        let w = u.w_hr + d * u.param_stride + j;
        dh = 0.0;
        for (var q = 0u; q < u.state_size; q++) {
            dh += work[dr + q] * params[w + q * h];
        }
    } else {
        dh = state_gradient(d, n, j, p, through);
    }
    let saved = frame_at(u.saved, d, p, n, saved_width());
    if u.cell == RNN {
        let value = work[output_at(p, n, d) + j];
        // relu' from the output, as PyTorch's threshold_backward: [h > 0].
        work[dg + j] = select(dh * (1.0 - value * value), select(0.0, dh, value > 0.0),
            u.activation == 1u);
    } else if u.cell == LSTM {
        let i = work[saved + j];
        let f = work[saved + h + j];
        let g = work[saved + 2u * h + j];
        let o = work[saved + 3u * h + j];
        let tc = tanh(work[saved + 4u * h + j]);
        // c_{t−1}: c0 at the sequence's first step, else the c the previous step saved.
        var c_prev: f32;
        if s == 0u || !valid(position(s - 1u, d), n) {
            c_prev = work[u.c0 + ((u.unit0 + d) * u.batch + n) * h + j];
        } else {
            c_prev = work[frame_at(u.saved, d, position(s - 1u, d), n, saved_width()) + 4u * h + j];
        }
        let carry_c = carry_c_at(d, n) + j;
        let dc = work[carry_c] + dh * o * (1.0 - tc * tc);
        work[dg + j] = dc * g * i * (1.0 - i);
        work[dg + h + j] = dc * c_prev * f * (1.0 - f);
        work[dg + 2u * h + j] = dc * i * (1.0 - g * g);
        work[dg + 3u * h + j] = dh * tc * o * (1.0 - o);
        work[carry_c] = dc * f;
    } else {
        let r = work[saved + j];
        let z = work[saved + h + j];
        let cand = work[saved + 2u * h + j];
        let hn = work[saved + 3u * h + j];
        let h_prev = work[frame_at(u.hprev, d, p, n, u.state_size) + j];
        let d_cand = dh * (1.0 - z) * (1.0 - cand * cand);
        let d_r = d_cand * hn * r * (1.0 - r);
        let d_z = dh * (h_prev - cand) * z * (1.0 - z);
        let dghh = frame_at(u.dghh, d, p, n, gate_size());
        work[dg + j] = d_r;
        work[dg + h + j] = d_z;
        work[dg + 2u * h + j] = d_cand;
        work[dghh + j] = d_r;
        work[dghh + h + j] = d_z;
        work[dghh + 2u * h + j] = d_cand * r;
        // h_t = … + z·h_{t−1}: this part of dh skips W_hh.
        work[carry_h_at(d, n) + j] = dh * z;
    }
}

// A projected LSTM's d h_t (feature q), before `backward_unit` turns it into d m_t.
fn backward_project_unit(s: u32, d: u32, n: u32, q: u32) {
    let p = position(s, d);
    let dr = frame_at(u.dr, d, p, n, u.state_size);
    if !valid(p, n) {
        work[dr + q] = 0.0;
        return;
    }
    work[dr + q] = state_gradient(d, n, q, p, carried_through_w_hh(s, d, n, q));
}

// After step 0: d h0 = the carry + what flows back through W_hh from each sequence's first
// step (the reverse direction's is at its last valid frame). d c0 is the cell carry as left.
@compute @workgroup_size(64, 1, 1)
fn initial_state_gradient(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let n = gid.y;
    let d = gid.z;
    if n >= u.batch || d >= u.directions || j >= u.state_size {
        return;
    }
    let length = bitcast<u32>(work[u.lengths + n]);
    let first = select(0u, length - 1u, d == 1u);
    let carry = carry_h_at(d, n) + j;
    work[carry] += through_w_hh(d, first, n, j);
}

// The entry points. Step forms: x covers the units, y the sequences, z the directions.

fn in_grid(n: u32, d: u32) -> bool {
    return n < u.batch && d < u.directions;
}

@compute @workgroup_size(64, 1, 1)
fn forward_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    if in_grid(gid.y, gid.z) && gid.x < max(u.hidden, u.state_size) {
        forward_unit(step.index, gid.z, gid.y, gid.x, recurrent_dots(step.index, gid.z, gid.y, gid.x));
    }
}

@compute @workgroup_size(64, 1, 1)
fn forward_project(@builtin(global_invocation_id) gid: vec3<u32>) {
    if in_grid(gid.y, gid.z) && gid.x < u.state_size {
        project_unit(step.index, gid.z, gid.y, gid.x);
    }
}

@compute @workgroup_size(64, 1, 1)
fn backward_project(@builtin(global_invocation_id) gid: vec3<u32>) {
    if in_grid(gid.y, gid.z) && gid.x < u.state_size {
        backward_project_unit(step.index, gid.z, gid.y, gid.x);
    }
}

@compute @workgroup_size(64, 1, 1)
fn backward_step(@builtin(global_invocation_id) gid: vec3<u32>) {
    if in_grid(gid.y, gid.z) && gid.x < u.hidden {
        let s = step.index;
        backward_unit(s, gid.z, gid.y, gid.x, carried_through_w_hh(s, gid.z, gid.y, gid.x));
    }
}

// Persistent forms: workgroup (0, n, d), 64 invocations striding over the units. Steps
// step.index .. step.index + forward_steps (capped at T) in order.
@compute @workgroup_size(64, 1, 1)
fn forward_persistent(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let n = wg.y;
    let d = wg.z;
    let end = min(step.index + u.forward_steps, u.seq_len);
    let units = max(u.hidden, u.state_size);
    for (var s = step.index; s < end; s++) {
        if u.vec4 == 1u {
            let valid_step = valid(position(s, d), n);
            for (var j = lane * 4u; j < units; j += 256u) {
                var rec: array<vec4<f32>, 4>;
                if valid_step {
                    rec = recurrent_dots4(s, d, n, j);
                }
                for (var i = 0u; i < 4u; i++) {
                    forward_unit(s, d, n, j + i, rec[i]);
                }
            }
        } else {
            for (var j = lane; j < units; j += 64u) {
                forward_unit(s, d, n, j, recurrent_dots(s, d, n, j));
            }
        }
        storageBarrier();
        workgroupBarrier();
        if u.proj == 1u {
            for (var q = lane; q < u.state_size; q += 64u) {
                project_unit(s, d, n, q);
            }
            storageBarrier();
            workgroupBarrier();
        }
    }
}

// Steps step.index down to step.index + 1 − backward_steps (not below 0).
@compute @workgroup_size(64, 1, 1)
fn backward_persistent(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let n = wg.y;
    let d = wg.z;
    let count = min(u.backward_steps, step.index + 1u);
    for (var i = 0u; i < count; i++) {
        let s = step.index - i;
        if u.proj == 1u {
            for (var q = lane; q < u.state_size; q += 64u) {
                backward_project_unit(s, d, n, q);
            }
            storageBarrier();
            workgroupBarrier();
        }
        if u.vec4 == 1u {
            let valid_step = valid(position(s, d), n);
            for (var j = lane * 4u; j < u.hidden; j += 256u) {
                var through = vec4<f32>();
                if valid_step {
                    through = carried_through_w_hh4(s, d, n, j);
                }
                for (var i = 0u; i < 4u; i++) {
                    backward_unit(s, d, n, j + i, through[i]);
                }
            }
        } else {
            for (var j = lane; j < u.hidden; j += 64u) {
                backward_unit(s, d, n, j, carried_through_w_hh(s, d, n, j));
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
}

// The persistent forms for several sequences a workgroup, written out per number of
// sequences by src/gpu/kernels/sequence_tiles.rs.
{{SEQUENCE_TILES}}
