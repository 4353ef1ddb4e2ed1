// One timestep of one layer, both directions, for hidden sizes that are multiples of four:
//
//     h_t[d, n, j] = act(P[t, n, d·H + j] + sum_k h_{t-1}[d, n, k] * W_hh[d, j, k])
//
// The same step as recurrent_step.wgsl (same bindings, state halves, lengths and output
// strides), computed in blocks: each invocation owns 4 hidden units × SEQUENCES sequences (four;
// one, four or sixteen in the subgroup form, by batch) and walks K in vec4s, so every loaded
// vec4 of W_hh feeds each sequence and every vec4 of h four units
// (recurrent_step.wgsl loads two scalars per multiply-add). That is what a wide state needs:
// at H = 1024, N = 64 one step is 67 million multiply-adds. The vec4 partial sums are
// reduced once, after the loop. On adapters with a fixed subgroup size the workgroup is one
// subgroup whose lanes each load one vec4 in `size` of h and share it with subgroupBroadcast.
// This file is a template: src/gpu/block_loop.rs fills in the functions shared with
// wavefront_block.wgsl, and the sums, the loop and the finish calls for either form.

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
@group(0) @binding(2) var<storage, read> w_hh: array<vec4<weight_t>>;  // (D, H, H/4)
@group(0) @binding(3) var<storage, read> p: array<f32>;           // (T·N, D·H)
// The state halves and the lengths (u32 bits), read as vec4s: with H a multiple of four every
// row of h, every half and the lengths start on a vec4.
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;

{{ELMAN_FUNCTIONS}}

{{REDUCE}}

// Finishes sequence n's four units from j0: activation, masking, state and output.
fn finish(n: u32, j0: u32, t: u32, d: u32, prev: u32, next: u32, sums: vec4<f32>) {
    let hidden = layer.hidden;
    let p_at = (t * layer.batch + n) * layer.directions * hidden + d * hidden + j0;
    let pre = vec4<f32>(p[p_at], p[p_at + 1u], p[p_at + 2u], p[p_at + 3u]) + sums;
    let live = t < length_of(n);
    let row = n * (hidden / 4u) + j0 / 4u;
    let value = activate4(pre);
    state[next + row] = select(state[prev + row], value, live);
    let out = select(vec4<f32>(0.0), value, live);
    let at = t * layer.out_stride_t + n * layer.out_stride_n + d * hidden + j0;
    output[at] = out.x;
    output[at + 1u] = out.y;
    output[at + 2u] = out.z;
    output[at + 3u] = out.w;
}

@compute @workgroup_size({{WORKGROUP}})
fn main(@builtin(global_invocation_id) gid: vec3<u32>{{SUBGROUP_LANE}}) {
    let n0 = gid.y * {{SEQUENCES}}u;
    let d = gid.z;
    let hidden = layer.hidden;
    let batch = layer.batch;
    if n0 >= batch || d >= layer.directions {
        return;
    }
    // Invocations past the last units compute the last four again (subgroup operations need
    // every lane of the subgroup) and store nothing.
    let unit0 = gid.x * 4u;
    let j0 = min(unit0, hidden - 4u);
    let s = step.index;
    let t = select(s, layer.seq_len - 1u - s, d == 1u);
    let row = hidden / 4u; // vec4s per row of h and of W_hh
    // Direction d's (N, H) block of h in each half, in vec4s.
    let block = layer.state_offset / 4u + d * batch * row;
    let prev = (s & 1u) * (layer.state_half / 4u) + block;
    let next = ((s + 1u) & 1u) * (layer.state_half / 4u) + block;
    // Sequences past the batch read the last one's h; their sums are never stored.
    let last = batch - 1u;
{{H_STARTS}}    let w0 = (d * hidden + j0) * row;
    let w1 = w0 + row;
    let w2 = w1 + row;
    let w3 = w2 + row;
{{SUMS}}
{{LOOP}}
    if unit0 >= hidden {
        return;
    }
{{FINISH}}
}
