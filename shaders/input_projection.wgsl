// Input projection of one layer, all timesteps and both directions at once:
//
//     P[r, c] = sum_k X[r, k] * W[c, k] + bias[c]
//
// r = t·N + n runs over every (timestep, sequence) row, c = d·H + j over both directions'
// hidden units (W is W_ih of every direction stacked, (D·H, K) row-major; bias = b_ih + b_hh).
// X and P are addressed through (t, n) strides, so that seq-first, batch-first and a layer's
// own output all work without a copy. The same kernel applies a Linear head to the last
// layer's output (W = the head's weight, P = the head's output in the caller's layout).
//
// Each invocation computes a 4×4 block of P in registers: every loaded value feeds four
// multiply-adds, and no workgroup memory or barrier is needed (barriers are what make
// shared-memory tiling slow on CPU-backed adapters such as lavapipe).

// The element type weights are stored in: f32, or f16 where the model asked for it and the
// adapter has `SHADER_F16` (src/shaders.rs rewrites this line). Sums are always f32.
alias weight_t = f32;

struct Params {
    rows: u32,         // T·N
    cols: u32,         // D·H
    depth: u32,        // K: input features
    batch: u32,        // N, to split r into (t, n)
    x_stride_t: u32,   // elements between timesteps in X
    x_stride_n: u32,   // elements between sequences in X
    p_stride_t: u32,   // elements between timesteps in P
    p_stride_n: u32,   // elements between sequences in P
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<weight_t>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<f32>;

const BLOCK: u32 = 4u;

fn x_row_start(r: u32) -> u32 {
    // Rows past the end are clamped to the last one: their loads stay in bounds, their
    // results are never stored.
    let row = min(r, params.rows - 1u);
    return (row / params.batch) * params.x_stride_t + (row % params.batch) * params.x_stride_n;
}

fn w_row_start(c: u32) -> u32 {
    return min(c, params.cols - 1u) * params.depth;
}

// Stores row r's columns c0..c0+3 (those that exist); `values` include the bias.
fn store_row(r: u32, c0: u32, values: vec4<f32>) {
    if r >= params.rows {
        return;
    }
    let base = (r / params.batch) * params.p_stride_t + (r % params.batch) * params.p_stride_n;
    for (var i = 0u; i < BLOCK; i++) {
        let c = c0 + i;
        if c < params.cols {
            p[base + c] = values[i];
        }
    }
}

// The bias of columns c0..c0+3, zero past the last column: loaded once, not once per row.
fn bias4(c0: u32) -> vec4<f32> {
    var b = vec4<f32>(0.0);
    for (var i = 0u; i < BLOCK; i++) {
        if c0 + i < params.cols {
            b[i] = bias[c0 + i];
        }
    }
    return b;
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * BLOCK;
    let r0 = gid.y * BLOCK;
    if r0 >= params.rows || c0 >= params.cols {
        return;
    }
    let x0 = x_row_start(r0);
    let x1 = x_row_start(r0 + 1u);
    let x2 = x_row_start(r0 + 2u);
    let x3 = x_row_start(r0 + 3u);
    let w0 = w_row_start(c0);
    let w1 = w_row_start(c0 + 1u);
    let w2 = w_row_start(c0 + 2u);
    let w3 = w_row_start(c0 + 3u);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k = 0u; k < params.depth; k++) {
        let wk = vec4<f32>(f32(w[w0 + k]), f32(w[w1 + k]), f32(w[w2 + k]), f32(w[w3 + k]));
        acc0 += x[x0 + k] * wk;
        acc1 += x[x1 + k] * wk;
        acc2 += x[x2 + k] * wk;
        acc3 += x[x3 + k] * wk;
    }
    let b = bias4(c0);
    store_row(r0, c0, acc0 + b);
    store_row(r0 + 1u, c0, acc1 + b);
    store_row(r0 + 2u, c0, acc2 + b);
    store_row(r0 + 3u, c0, acc3 + b);
}
