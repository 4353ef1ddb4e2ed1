// One timestep of one layer, both directions in the same dispatch:
//
//     h_t[d, n, j] = act(P[t, n, d·H + j] + sum_k h_{t-1}[d, n, k] * W_hh[d, j, k])
//
// Step s of the forward direction is time t = s; of the reverse direction t = T − 1 − s.
// The hidden state lives in one buffer of two halves, [2][L][D][N][H]: step s reads half s % 2
// and writes half (s + 1) % 2 (ping-pong, no copies; after T steps h_n is half T % 2).
// h_t is also written into the layer's output at time t, through strides, so the last layer
// writes the caller's layout (seq-first or batch-first) directly.
//
// Sequences may be shorter than T (PackedSequence semantics): at a time t ≥ lengths[n] the
// state is carried unchanged and the output is zero. The reverse direction therefore starts
// from h0 at each sequence's own last valid frame. Full-length batches set every length to T.
//
// One invocation per (j, n, d); the step index comes from a dynamically offset uniform, so a
// whole sequence is recorded with one bind group per layer.

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w_hh: array<weight_t>;      // (D, H, H)
@group(0) @binding(3) var<storage, read> p: array<f32>;         // (T·N, D·H)
// The hidden state's two halves, then the N sequence lengths as u32 bit patterns: packing the
// lengths here keeps the kernel within four storage buffers (wgpu's downlevel limit).
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

fn activate(v: f32) -> f32 {
    if layer.activation == 1u {
        // `v < 0` is false for NaN, so NaN propagates as in PyTorch.
        return select(v, 0.0, v < 0.0);
    }
    return tanh(v);
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let n = gid.y;
    let d = gid.z;
    let hidden = layer.hidden;
    if j >= hidden || n >= layer.batch || d >= layer.directions {
        return;
    }
    let s = step.index;
    let t = select(s, layer.seq_len - 1u - s, d == 1u);
    let unit_row = layer.state_offset + (d * layer.batch + n) * hidden;
    let prev = (s & 1u) * layer.state_half + unit_row;
    let next = ((s + 1u) & 1u) * layer.state_half + unit_row;

    var h = state[prev + j];
    var out = 0.0;
    if t < bitcast<u32>(state[layer.lengths_offset + n]) {
        var acc = p[(t * layer.batch + n) * layer.directions * hidden + d * hidden + j];
        let w_row = (d * hidden + j) * hidden;
        for (var k = 0u; k < hidden; k++) {
            acc += state[prev + k] * f32(w_hh[w_row + k]);
        }
        h = activate(acc);
        out = h;
    }
    state[next + j] = h;
    output[t * layer.out_stride_t + n * layer.out_stride_n + d * hidden + j] = out;
}
