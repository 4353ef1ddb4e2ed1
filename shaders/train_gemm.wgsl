// C (+)= A·B (+ bias), every operand addressed through offsets and strides, so that one kernel
// does the training's matrix products: the input projection X·W_ihᵀ + b_ih, the head, the
// input gradient dG·W_ih and, with A read transposed, the weight gradients dGᵀ·X, dGᵀ·H_prev
// (and a bias gradient as dGᵀ·1, B a single 1 with zero strides).
//
//     C[m, n] = (accumulate ? C[m, n] : 0) + Σ_{k in [k0, k0 + K)} A[m, k]·B[k, n] (+ bias[n])
//
// Each invocation computes a 4 × 4 block of C in registers, loading 4 values of A and 4 of B
// per k straight from storage: on lavapipe, staging tiles through workgroup memory costs more
// in barriers than it saves (WGPU-NOTES.md). Every C element is summed by one invocation in a
// fixed order, so results are bit-identical run to run (WGSL has no float atomics, and none
// are needed). Long reductions (the weight gradients sum over every frame) are split over
// dispatches along k (`k0`), each adding to C, to stay within llvmpipe's loop limit.
//
// The template picks the buffers: A and B are read, C written (`params`, `grads` or `work`,
// bound as every training kernel binds them).

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_sm: u32, a_sk: u32, b_off: u32,
    b_sk: u32, b_sn: u32, c_off: u32, c_sm: u32,
    c_sn: u32, bias_off: u32, k0: u32, _pad: u32,
}

const ACCUMULATE: u32 = 1u;
const BIAS: u32 = 2u;

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;

fn load_a(m: u32, k: u32) -> f32 {
    if m >= g.m {
        return 0.0;
    }
    return {{A}}[g.a_off + m * g.a_sm + k * g.a_sk];
}

fn load_b(k: u32, n: u32) -> f32 {
    if n >= g.n {
        return 0.0;
    }
    return {{B}}[g.b_off + k * g.b_sk + n * g.b_sn];
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m0 = gid.x * 4u;
    let n0 = gid.y * 4u;
    if m0 >= g.m || n0 >= g.n {
        return;
    }
    var acc: array<vec4<f32>, 4>;
    for (var k = g.k0; k < g.k0 + g.k; k++) {
        let a = vec4<f32>(load_a(m0, k), load_a(m0 + 1u, k), load_a(m0 + 2u, k), load_a(m0 + 3u, k));
        let b = vec4<f32>(load_b(k, n0), load_b(k, n0 + 1u), load_b(k, n0 + 2u), load_b(k, n0 + 3u));
        acc[0] += a.x * b;
        acc[1] += a.y * b;
        acc[2] += a.z * b;
        acc[3] += a.w * b;
    }
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + r;
        if m >= g.m {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let n = n0 + c;
            if n >= g.n {
                break;
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
