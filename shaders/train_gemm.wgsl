// C (+)= A·B (+ bias), every operand addressed through offsets and strides, so that one kernel
// does the training's matrix products: the input projection X·W_ihᵀ + b_ih, the head, the
// input gradient dG·W_ih and, with A read transposed, the weight gradients dGᵀ·X, dGᵀ·H_prev
// (and a bias gradient as dGᵀ·1, B a single 1 with zero strides).
//
//     C[m, n] = (accumulate ? C[m, n] : 0) + Σ_k A[m, k]·B[k, n] (+ bias[n])
//
// Each workgroup computes a 64×64 tile, each invocation 4×4 of it, over K in slices of 16
// staged in workgroup memory. Every C element is summed by one invocation in a fixed order:
// results are bit-identical run to run (WGSL has no float atomics, and none are needed).
//
// The template picks the buffers: A and B are read, C written (`params`, `grads`
// or `work`, bound as every training kernel binds them).

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_sm: u32, a_sk: u32, b_off: u32,
    b_sk: u32, b_sn: u32, c_off: u32, c_sm: u32,
    c_sn: u32, bias_off: u32, _pad0: u32, _pad1: u32,
}

const ACCUMULATE: u32 = 1u;
const BIAS: u32 = 2u;

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [SLICE][TILE]: A[m0 + i, k0 + kk] at kk·TILE + i
var<workgroup> tile_b: array<f32, 1024>; // [SLICE][TILE]: B[k0 + kk, n0 + i] at kk·TILE + i

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let m0 = wg.x * TILE;
    let n0 = wg.y * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < g.k; k0 += SLICE) {
        for (var e = 0u; e < 4u; e++) {
            let idx = li + e * 256u;
            // Consecutive invocations take consecutive k for A read transposed (a_sk = 1 is
            // the common case otherwise), consecutive n for B.
            let i = idx % TILE;
            let kk = idx / TILE;
            var a = 0.0;
            if m0 + i < g.m && k0 + kk < g.k {
                a = {{A}}[g.a_off + (m0 + i) * g.a_sm + (k0 + kk) * g.a_sk];
            }
            tile_a[kk * TILE + i] = a;
            var b = 0.0;
            if n0 + i < g.n && k0 + kk < g.k {
                b = {{B}}[g.b_off + (k0 + kk) * g.b_sk + (n0 + i) * g.b_sn];
            }
            tile_b[kk * TILE + i] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SLICE; kk++) {
            let row = kk * TILE;
            let a = vec4<f32>(tile_a[row + lid.x * 4u], tile_a[row + lid.x * 4u + 1u],
                tile_a[row + lid.x * 4u + 2u], tile_a[row + lid.x * 4u + 3u]);
            let b = vec4<f32>(tile_b[row + lid.y * 4u], tile_b[row + lid.y * 4u + 1u],
                tile_b[row + lid.y * 4u + 2u], tile_b[row + lid.y * 4u + 3u]);
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + lid.x * 4u + r;
        if m >= g.m {
            continue;
        }
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + lid.y * 4u + c;
            if n >= g.n {
                continue;
            }
            let at = g.c_off + m * g.c_sm + n * g.c_sn;
            var value = acc[r][c];
            if (g.flags & BIAS) != 0u {
                value += params[g.bias_off + n];
            }
            if (g.flags & ACCUMULATE) != 0u {
                value = {{C}}[at] + value;
            }
            {{C}}[at] = value;
        }
    }
}
