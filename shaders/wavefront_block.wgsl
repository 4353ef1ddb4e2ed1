// One wave of a stacked unidirectional Elman RNN: layer k runs its step t = w − k, so every
// layer advances in the same dispatch and a forward takes T + L − 1 dispatches instead of T·L:
//
//     h^0_t = act(P_t + W_hh^0·h^0_{t−1})                          (P: layer 0's projection)
//     h^k_t = act(b^k + W_ih^k·h^{k−1}_t + W_hh^k·h^k_{t−1})        (k ≥ 1, fused here)
//
// h^{k−1}_t was written by the previous wave, into the half of the state this wave reads:
// wave w reads half w % 2 and writes half (w + 1) % 2. A layer outside its steps in this wave
// (t < 0 or t ≥ T), or a sequence past its length, carries its state; only the last layer
// writes the output (zeros past a sequence's length). Blocks of 4 units × 4 sequences an
// invocation with vec4 loads, as in recurrent_block.wgsl; H must be a multiple of four.
// This file is a template: src/gpu/block_loop.rs fills in the functions shared with
// recurrent_block.wgsl, and the sums, the loop and the finish calls of its portable form.

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
// W_hh^0 (H, H/4); then for each k ≥ 1: W_ih^k (H, H/4), W_hh^k (H, H/4), b^k (H/4), where
// b^k = b_ih^k + b_hh^k.
@group(0) @binding(2) var<storage, read> weights: array<vec4<weight_t>>;
@group(0) @binding(3) var<storage, read> p: array<f32>;           // (T·N, H), layer 0
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

{{ELMAN_FUNCTIONS}}

{{REDUCE}}

// Where layer k's weights start, in vec4s: W_hh^0, then (W_ih, W_hh, b) per layer above.
fn layer_weights(k: u32) -> u32 {
    let matrix = layer.hidden * (layer.hidden / 4u);
    if k == 0u {
        return 0u;
    }
    return matrix + (k - 1u) * (2u * matrix + layer.hidden / 4u);
}

// Finishes sequence n's four units from j0 in layer k: the input term (layer 0's P, or b^k
// above it), activation, masking, state, and the output of the last layer.
fn finish(n: u32, j0: u32, t: u32, k: u32, prev: u32, next: u32, sums: vec4<f32>) {
    let hidden = layer.hidden;
    let batch = layer.batch;
    let row = hidden / 4u;
    let unit = j0 / 4u;
    var pre = sums;
    if k == 0u {
        let at = (t * batch + n) * hidden + j0;
        pre += vec4<f32>(p[at], p[at + 1u], p[at + 2u], p[at + 3u]);
    } else {
        pre += vec4<f32>(weights[layer_weights(k) + 2u * hidden * row + unit]);
    }
    let live = t < length_of(n);
    let value = activate4(pre);
    let at = k * batch * row + n * row + unit;
    state[next + at] = select(state[prev + at], value, live);
    if k + 1u == layer.layers {
        let out = select(vec4<f32>(0.0), value, live);
        let o = t * layer.out_stride_t + n * layer.out_stride_n + j0;
        output[o] = out.x;
        output[o + 1u] = out.y;
        output[o + 2u] = out.z;
        output[o + 3u] = out.w;
    }
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j0 = gid.x * 4u;
    let n0 = gid.y * 4u;
    let layer_k = gid.z; // not `k`: that is the generated loop's index over K
    let hidden = layer.hidden;
    let batch = layer.batch;
    if j0 >= hidden || n0 >= batch || layer_k >= layer.layers {
        return;
    }
    let w = step.index;
    let row = hidden / 4u; // vec4s per row of h and of each weight matrix
    let prev = (w & 1u) * (layer.state_half / 4u);
    let next = ((w + 1u) & 1u) * (layer.state_half / 4u);
    let block = layer_k * batch * row; // layer k's (N, H) block of h, in vec4s
    let last = batch - 1u;
    let rows = vec4<u32>(min(n0, last), min(n0 + 1u, last), min(n0 + 2u, last), min(n0 + 3u, last)) * row;
    let unit = j0 / 4u;
    // Outside this layer's steps in this wave: carry the state.
    if w < layer_k || w - layer_k >= layer.seq_len {
        for (var i = 0u; i < 4u; i++) {
            if n0 + i < batch {
                let at = block + (n0 + i) * row + unit;
                state[next + at] = state[prev + at];
            }
        }
        return;
    }
    let t = w - layer_k;
    let base = layer_weights(layer_k);
    // Two passes for k ≥ 1: W_ih^k with h^{k−1}_t, then W_hh^k with h^k_{t−1}; one for layer 0
    // (W_hh^0 with h^0_{t−1}).
{{SUMS}}
    let below = select(block, block - batch * row, layer_k > 0u);
    let passes = select(1u, 2u, layer_k > 0u);
    for (var part = 0u; part < passes; part++) {
        // Layer 0: W_hh^0 at `base`. Above: W_ih^k at `base`, W_hh^k after it.
        let first = layer_k > 0u && part == 0u;
        let w0 = base + select(0u, select(hidden * row, 0u, first), layer_k > 0u) + j0 * row;
        let w1 = w0 + row;
        let w2 = w1 + row;
        let w3 = w2 + row;
        let h_at = prev + select(block, below, first) + rows;
{{LOOP}}
    }
{{FINISH}}
}
