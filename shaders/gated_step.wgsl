// One timestep of one LSTM or GRU layer, both directions in the same dispatch. Every gate's
// recurrent dot product, the gate nonlinearities and the state update are fused: one
// invocation per (unit j, sequence n, direction d) computes all G gate rows of unit j.
//
// LSTM (gates i, f, g, o; b_ih + b_hh are already in P):
//     i, f, o = σ(P + W_hh·h),  g = tanh(P + W_hh·h),  c' = f∘c + i∘g,  h' = o∘tanh(c')
// and with proj_size, h' = W_hr·h' in the second entry point, `project`, dispatched right
// after `gates` (it needs every unit's h' of the sequence).
// GRU (gates r, z, n; P holds b_ir + b_hr, b_iz + b_hz and b_in only):
//     r, z = σ(P + W_hh·h),  n = tanh(P_n + r∘(W_hn·h + b_hn)),  h' = (1 − z)∘n + z∘h
//
// State, lengths, ping-pong halves and output strides work as in recurrent_step.wgsl: step
// s reads half s % 2 and writes half (s + 1) % 2; each half is the h block [L][D][N][H_out]
// followed by the c block [L][D][N][H]. At t ≥ lengths[n] the state is carried and the
// output is zero (PackedSequence semantics).

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
// W_hh (D, G·H, H_out); then b_hn (D, H) for a GRU; then W_hr (D, H_out, H) for a projected
// LSTM.
@group(0) @binding(2) var<storage, read> recurrent: array<weight_t>;
@group(0) @binding(3) var<storage, read> p: array<f32>;         // (T·N, D·G·H)
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;


// Row `row` of the stacked W_hh (D·G·H rows) times h_{t−1} at `h_at`.
fn recurrent_dot(row: u32, h_at: u32) -> f32 {
    let size = layer.state_size;
    let w = row * size;
    var acc = 0.0;
    for (var k = 0u; k < size; k++) {
        acc += state[h_at + k] * f32(recurrent[w + k]);
    }
    return acc;
}

// The timestep of step s for direction d: forwards, or backwards for the reverse direction.
fn time_of(s: u32, d: u32) -> u32 {
    return select(s, layer.seq_len - 1u - s, d == 1u);
}

@compute @workgroup_size(64, 1, 1)
fn gates(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let n = gid.y;
    let d = gid.z;
    let hidden = layer.hidden;
    if j >= hidden || n >= layer.batch || d >= layer.directions {
        return;
    }
    let s = step.index;
    let t = time_of(s, d);
    let sequence = d * layer.batch + n;
    let prev = (s & 1u) * layer.state_half;
    let next = ((s + 1u) & 1u) * layer.state_half;
    let h_prev = prev + layer.state_offset + sequence * layer.state_size;
    let h_next = next + layer.state_offset + sequence * layer.state_size;
    let live = t < bitcast<u32>(state[layer.lengths_offset + n]);
    let lstm = layer.cell == 0u;
    let gate_count = select(3u, 4u, lstm);
    let p_row = (t * layer.batch + n) * layer.directions * gate_count * hidden
        + d * gate_count * hidden;
    // Direction d's rows of W_hh start at d·G·H.
    let d_rows = d * gate_count * hidden;

    if lstm {
        let c_at = layer.cell_offset + sequence * hidden + j;
        var c = state[prev + c_at];
        var h = state[h_prev + min(j, layer.state_size - 1u)];
        if live {
            let i_gate = sigmoid(p[p_row + j] + recurrent_dot(d_rows + j, h_prev));
            let f_gate = sigmoid(p[p_row + hidden + j]
                + recurrent_dot(d_rows + hidden + j, h_prev));
            let g_gate = tanh(p[p_row + 2u * hidden + j]
                + recurrent_dot(d_rows + 2u * hidden + j, h_prev));
            let o_gate = sigmoid(p[p_row + 3u * hidden + j]
                + recurrent_dot(d_rows + 3u * hidden + j, h_prev));
            c = f_gate * c + i_gate * g_gate;
            h = o_gate * tanh(c);
        }
        state[next + c_at] = c;
        if layer.state_size != hidden {
            // `project` finishes h; it reads this only for live sequences.
            state[layer.scratch_offset + sequence * hidden + j] = h;
            return;
        }
        state[h_next + j] = h;
        output[t * layer.out_stride_t + n * layer.out_stride_n + d * hidden + j] =
            select(0.0, h, live);
        return;
    }

    let old = state[h_prev + j];
    var h = old;
    if live {
        let reset = sigmoid(p[p_row + j] + recurrent_dot(d_rows + j, h_prev));
        let update = sigmoid(p[p_row + hidden + j]
            + recurrent_dot(d_rows + hidden + j, h_prev));
        let b_hn = f32(recurrent[layer.step_bias_offset + d * hidden + j]);
        let candidate = tanh(p[p_row + 2u * hidden + j]
            + reset * (recurrent_dot(d_rows + 2u * hidden + j, h_prev) + b_hn));
        h = (1.0 - update) * candidate + update * old;
    }
    state[h_next + j] = h;
    output[t * layer.out_stride_t + n * layer.out_stride_n + d * hidden + j] =
        select(0.0, h, live);
}

// A projected LSTM's h_t = W_hr·h̃_t: one invocation per (feature q of H_out, n, d).
@compute @workgroup_size(64, 1, 1)
fn project(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x;
    let n = gid.y;
    let d = gid.z;
    let size = layer.state_size;
    if q >= size || n >= layer.batch || d >= layer.directions {
        return;
    }
    let s = step.index;
    let t = time_of(s, d);
    let sequence = d * layer.batch + n;
    let prev = (s & 1u) * layer.state_half;
    let next = ((s + 1u) & 1u) * layer.state_half;
    let row = layer.state_offset + sequence * size + q;
    let live = t < bitcast<u32>(state[layer.lengths_offset + n]);
    var h = state[prev + row];
    if live {
        let hidden = layer.hidden;
        let w = layer.hr_offset + (d * size + q) * hidden;
        let unprojected = layer.scratch_offset + sequence * hidden;
        var acc = 0.0;
        for (var k = 0u; k < hidden; k++) {
            acc += state[unprojected + k] * f32(recurrent[w + k]);
        }
        h = acc;
    }
    state[next + row] = h;
    output[t * layer.out_stride_t + n * layer.out_stride_n + d * size + q] = select(0.0, h, live);
}
