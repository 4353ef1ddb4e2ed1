// One LSTM or GRU timestep of one layer, both directions, in blocks: the same step as the
// `gates` entry of gated_step.wgsl (same bindings, state layout, masking and formulas), with
// each invocation computing one hidden unit for SEQUENCES sequences (four; sixteen in the wide
// subgroup form, for larger batches). It walks K four at a time: every loaded vec4 of W_hh
// feeds each sequence and every four values of h the unit's G gate rows (gated_step.wgsl
// loads two scalars per multiply-add). For H_out a multiple of four.
//
// On adapters with a fixed subgroup size (CPU ones) the workgroup is one subgroup and each
// lane loads one vec4 in `size` of every sequence's h, sharing it with subgroupBroadcast:
// llvmpipe runs loads lane by lane but broadcasts as vector operations. This file is a
// template: src/gpu/block_loop.rs fills in `reduce`, each sequence's row of h, the sums, the
// loop and the finish calls for either form.
//
// LSTM: i, f, o = σ(P + W_hh·h), g = tanh(P + W_hh·h), c' = f∘c + i∘g, h' = o∘tanh(c')
// (a projected LSTM's h' goes to the scratch for `project`, as in gated_step.wgsl).
// GRU: r, z = σ(P + W_hh·h), n = tanh(P_n + r∘(W_hn·h + b_hn)), h' = (1 − z)∘n + z∘h.

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
// W_hh (D·G·H, H_out) as vec4s; then b_hn (GRU) or W_hr (projected LSTM), read as scalars
// through `scalar`.
@group(0) @binding(2) var<storage, read> recurrent: array<vec4<weight_t>>;
@group(0) @binding(3) var<storage, read> p: array<f32>;
// The state halves, the lengths (u32 bits) and the scratch. Scalars, not vec4s: invocations
// write single elements, and WGSL lets a write to one component of a vector touch all four.
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;


fn state_scalar(at: u32) -> f32 {
    return state[at];
}

fn set_state(at: u32, value: f32) {
    state[at] = value;
}

fn state4(at: u32) -> vec4<f32> {
    return vec4<f32>(state[at], state[at + 1u], state[at + 2u], state[at + 3u]);
}

fn recurrent_scalar(at: u32) -> f32 {
    return f32(recurrent[at / 4u][at % 4u]);
}

{{REDUCE}}

// Finishes unit j of sequence n from its gates' recurrent sums g (LSTM: i, f, g, o; GRU:
// r, z, n in x, y, z).
fn finish(n: u32, j: u32, t: u32, d: u32, prev: u32, next: u32, g: vec4<f32>) {
    let hidden = layer.hidden;
    let size = layer.state_size;
    let lstm = layer.cell == 0u;
    let gates = select(3u, 4u, lstm);
    let sequence = d * layer.batch + n;
    let p_row = (t * layer.batch + n) * layer.directions * gates * hidden + d * gates * hidden;
    let live = t < bitcast<u32>(state_scalar(layer.lengths_offset + n));
    let h_prev = prev + layer.state_offset + sequence * size;
    let h_next = next + layer.state_offset + sequence * size;
    let out_at = t * layer.out_stride_t + n * layer.out_stride_n + d * size + j;
    if lstm {
        let c_at = layer.cell_offset + sequence * hidden + j;
        var c = state_scalar(prev + c_at);
        var h = 0.0;
        if live {
            let i_gate = sigmoid(p[p_row + j] + g.x);
            let f_gate = sigmoid(p[p_row + hidden + j] + g.y);
            let g_gate = tanh(p[p_row + 2u * hidden + j] + g.z);
            let o_gate = sigmoid(p[p_row + 3u * hidden + j] + g.w);
            c = f_gate * c + i_gate * g_gate;
            h = o_gate * tanh(c);
        }
        set_state(next + c_at, c);
        if size != hidden {
            set_state(layer.scratch_offset + sequence * hidden + j, h);
            return;
        }
        let kept = select(state_scalar(h_prev + j), h, live);
        set_state(h_next + j, kept);
        output[out_at] = select(0.0, h, live);
        return;
    }
    let old = state_scalar(h_prev + j);
    var h = old;
    if live {
        let reset = sigmoid(p[p_row + j] + g.x);
        let update = sigmoid(p[p_row + hidden + j] + g.y);
        let b_hn = recurrent_scalar(layer.step_bias_offset + d * hidden + j);
        let candidate = tanh(p[p_row + 2u * hidden + j] + reset * (g.z + b_hn));
        h = (1.0 - update) * candidate + update * old;
    }
    set_state(h_next + j, h);
    output[out_at] = select(0.0, h, live);
}

@compute @workgroup_size({{LANES}}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>{{SUBGROUP_LANE}}) {
    let n0 = gid.y * {{SEQUENCES}}u;
    let d = gid.z;
    let hidden = layer.hidden;
    let batch = layer.batch;
    if n0 >= batch || d >= layer.directions {
        return;
    }
    // Lanes past the last unit compute unit H − 1 again (subgroup operations need every lane
    // of the subgroup) and store nothing.
    let unit = gid.x;
    let j = min(unit, hidden - 1u);
    let s = step.index;
    let t = select(s, layer.seq_len - 1u - s, d == 1u);
    let prev = (s & 1u) * layer.state_half;
    let next = ((s + 1u) & 1u) * layer.state_half;
    let lstm = layer.cell == 0u;
    let gates = select(3u, 4u, lstm);
    let row = layer.state_size / 4u; // vec4s per row of h and of W_hh
    // Sequences past the batch read the last one's h; their sums are never stored.
    let last = batch - 1u;
    let size = layer.state_size;
    let h_block = prev + layer.state_offset + d * batch * size;
{{H_STARTS}}    // Gate rows of unit j; a GRU's fourth row is its third again (its sums are unused).
    let w0 = ((d * gates) * hidden + j) * row;
    let w1 = w0 + hidden * row;
    let w2 = w1 + hidden * row;
    let w3 = select(w2, w2 + hidden * row, lstm);
{{SUMS}}
{{LOOP}}
    if unit >= hidden {
        return;
    }
{{FINISH}}
}
