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

// The element type weights are stored in: f32, or f16 where the model asked for it and the
// adapter has `SHADER_F16` (src/shaders.rs rewrites this line). Sums are always f32.
alias weight_t = f32;

struct Layer {
    seq_len: u32,
    batch: u32,
    hidden: u32,
    directions: u32,         // 1
    out_stride_t: u32,       // the last layer's output
    out_stride_n: u32,
    state_half: u32,
    state_offset: u32,       // (unused: every layer's block is at k·N·H)
    activation: u32,         // 0: tanh, 1: relu
    steps_per_dispatch: u32, // (unused)
    lengths_offset: u32,
    _pad0: u32,
    state_size: u32,
    cell_offset: u32,
    step_bias_offset: u32,
    hr_offset: u32,
    scratch_offset: u32,
    cell: u32,
    layers: u32,             // L
    _pad1: u32,
}

struct Step {
    index: u32,              // the wave w
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
// W_hh^0 (H, H/4); then for each k ≥ 1: W_ih^k (H, H/4), W_hh^k (H, H/4), b^k (H/4), where
// b^k = b_ih^k + b_hh^k.
@group(0) @binding(2) var<storage, read> weights: array<vec4<weight_t>>;
@group(0) @binding(3) var<storage, read> p: array<f32>;           // (T·N, H), layer 0
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

fn activate4(v: vec4<f32>) -> vec4<f32> {
    if layer.activation == 1u {
        return select(v, vec4<f32>(0.0), v < vec4<f32>(0.0));
    }
    return tanh(v);
}

fn reduce(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

fn length_of(n: u32) -> u32 {
    let at = layer.lengths_offset + n;
    return bitcast<u32>(state[at / 4u][at % 4u]);
}

// Where layer k's weights start, in vec4s: W_hh^0, then (W_ih, W_hh, b) per layer above.
fn layer_weights(k: u32) -> u32 {
    let matrix = layer.hidden * (layer.hidden / 4u);
    if k == 0u {
        return 0u;
    }
    return matrix + (k - 1u) * (2u * matrix + layer.hidden / 4u);
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j0 = gid.x * 4u;
    let n0 = gid.y * 4u;
    let k = gid.z;
    let hidden = layer.hidden;
    let batch = layer.batch;
    if j0 >= hidden || n0 >= batch || k >= layer.layers {
        return;
    }
    let w = step.index;
    let row = hidden / 4u; // vec4s per row of h and of each weight matrix
    let prev = (w & 1u) * (layer.state_half / 4u);
    let next = ((w + 1u) & 1u) * (layer.state_half / 4u);
    let block = k * batch * row; // layer k's (N, H) block of h, in vec4s
    let last = batch - 1u;
    let rows = vec4<u32>(min(n0, last), min(n0 + 1u, last), min(n0 + 2u, last), min(n0 + 3u, last)) * row;
    let unit = j0 / 4u;
    // Outside this layer's steps in this wave: carry the state.
    if w < k || w - k >= layer.seq_len {
        for (var i = 0u; i < 4u; i++) {
            if n0 + i < batch {
                let at = block + (n0 + i) * row + unit;
                state[next + at] = state[prev + at];
            }
        }
        return;
    }
    let t = w - k;
    let base = layer_weights(k);
    // s{i}{u}: sequence n0 + i, unit j0 + u. Two passes for k ≥ 1: W_ih^k with h^{k−1}_t,
    // then W_hh^k with h^k_{t−1}; one for layer 0 (W_hh^0 with h^0_{t−1}).
    var s00 = vec4<f32>(0.0);
    var s01 = vec4<f32>(0.0);
    var s02 = vec4<f32>(0.0);
    var s03 = vec4<f32>(0.0);
    var s10 = vec4<f32>(0.0);
    var s11 = vec4<f32>(0.0);
    var s12 = vec4<f32>(0.0);
    var s13 = vec4<f32>(0.0);
    var s20 = vec4<f32>(0.0);
    var s21 = vec4<f32>(0.0);
    var s22 = vec4<f32>(0.0);
    var s23 = vec4<f32>(0.0);
    var s30 = vec4<f32>(0.0);
    var s31 = vec4<f32>(0.0);
    var s32 = vec4<f32>(0.0);
    var s33 = vec4<f32>(0.0);
    let below = select(block, block - batch * row, k > 0u);
    let passes = select(1u, 2u, k > 0u);
    for (var part = 0u; part < passes; part++) {
        // Layer 0: W_hh^0 at `base`. Above: W_ih^k at `base`, W_hh^k after it.
        let first = k > 0u && part == 0u;
        let matrix = base + select(0u, select(hidden * row, 0u, first), k > 0u) + j0 * row;
        let h_at = prev + select(block, below, first) + rows;
        for (var c = 0u; c < row; c++) {
            let w0 = vec4<f32>(weights[matrix + c]);
            let w1 = vec4<f32>(weights[matrix + row + c]);
            let w2 = vec4<f32>(weights[matrix + 2u * row + c]);
            let w3 = vec4<f32>(weights[matrix + 3u * row + c]);
            let h0 = state[h_at.x + c];
            let h1 = state[h_at.y + c];
            let h2 = state[h_at.z + c];
            let h3 = state[h_at.w + c];
        s00 = fma(w0, h0, s00);
        s01 = fma(w1, h0, s01);
        s02 = fma(w2, h0, s02);
        s03 = fma(w3, h0, s03);
        s10 = fma(w0, h1, s10);
        s11 = fma(w1, h1, s11);
        s12 = fma(w2, h1, s12);
        s13 = fma(w3, h1, s13);
        s20 = fma(w0, h2, s20);
        s21 = fma(w1, h2, s21);
        s22 = fma(w2, h2, s22);
        s23 = fma(w3, h2, s23);
        s30 = fma(w0, h3, s30);
        s31 = fma(w1, h3, s31);
        s32 = fma(w2, h3, s32);
        s33 = fma(w3, h3, s33);
        }
    }
    let sums = array<vec4<f32>, 16>(
        s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33,
    );
    for (var i = 0u; i < 4u; i++) {
        let n = n0 + i;
        if n >= batch {
            break;
        }
        var pre = vec4<f32>(
            reduce(sums[4u * i]),
            reduce(sums[4u * i + 1u]),
            reduce(sums[4u * i + 2u]),
            reduce(sums[4u * i + 3u]),
        );
        if k == 0u {
            let at = (t * batch + n) * hidden + j0;
            pre += vec4<f32>(p[at], p[at + 1u], p[at + 2u], p[at + 3u]);
        } else {
            pre += vec4<f32>(weights[base + 2u * hidden * row + unit]);
        }
        let live = t < length_of(n);
        let value = activate4(pre);
        let at = block + n * row + unit;
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
}
