// C (+)= A·B (+ bias), every operand addressed through offsets and strides, so that one kernel
// does the training's matrix products: the input projection X·W_ihᵀ + b_ih, the head, the
// input gradient dG·W_ih and, with A read transposed, the weight gradients dGᵀ·X, dGᵀ·H_prev
// (and a bias gradient as dGᵀ·1, B a single 1 with zero strides).
//
//     C[m, n] = (accumulate ? C[m, n] : 0) + Σ_{k in [k0, k0 + K)} A[m, k]·B[k, n] (+ bias[n])
//
// Each invocation computes an 8 × 8 block of C in registers, four k at a time, loading its
// 8 × 4 block of A and 4 × 8 block of B straight from storage: on lavapipe, staging tiles through workgroup
// memory costs more in barriers than it saves, and loads (run lane by lane) are what costs, so
// where an operand's layout allows, a block is four vec4 loads instead of sixteen scalars
// (the template's A_BLOCK and B_BLOCK: along k, along m or n, or element by element). Every C
// element is summed by one invocation in a fixed order, so results are bit-identical run to
// run (WGSL has no float atomics, and none are needed). Long reductions (the weight gradients
// sum over every frame) are split over dispatches along k (`k0`), each adding to C, to stay
// within llvmpipe's loop limit.
//
// The template also picks the buffers: A and B are read, C written (`params`, `grads` or
// `work`, bound as every training kernel binds them; `params4` and `work4` are their vec4 views).

{{GEMM_COMMON}}

// The block forms. A block is returned as its four columns (A[m0..m0+3, k + i] in [i]); a B
// block as its four rows (B[k + i, n0..n0+3] in [i]). Entries outside the matrix are zero.

fn a_scalar(m: u32, k: u32, k_end: u32) -> f32 {
    if m >= g.m || k >= k_end {
        return 0.0;
    }
    return {{A}}[g.a_off + m * g.a_sm + k * g.a_sk];
}

fn b_scalar(k: u32, n: u32, k_end: u32) -> f32 {
    if n >= g.n || k >= k_end {
        return 0.0;
    }
    return {{B}}[g.b_off + k * g.b_sk + n * g.b_sn];
}

fn a_block_elements(m0: u32, k: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var cols: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        cols[i] = vec4<f32>(a_scalar(m0, k + i, k_end), a_scalar(m0 + 1u, k + i, k_end),
            a_scalar(m0 + 2u, k + i, k_end), a_scalar(m0 + 3u, k + i, k_end));
    }
    return cols;
}

// A's rows are contiguous along k (a_sk = 1; offsets, a_sm and K multiples of 4).
fn a_block_along_k(m0: u32, k: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var rows: array<vec4<f32>, 4>;
    for (var r = 0u; r < 4u; r++) {
        if m0 + r < g.m {
            rows[r] = {{A}}4[(g.a_off + (m0 + r) * g.a_sm + k) / 4u];
        }
    }
    return array<vec4<f32>, 4>(
        vec4<f32>(rows[0].x, rows[1].x, rows[2].x, rows[3].x),
        vec4<f32>(rows[0].y, rows[1].y, rows[2].y, rows[3].y),
        vec4<f32>(rows[0].z, rows[1].z, rows[2].z, rows[3].z),
        vec4<f32>(rows[0].w, rows[1].w, rows[2].w, rows[3].w));
}

// A's columns are contiguous along m (a_sm = 1; offsets, a_sk and M multiples of 4).
fn a_block_along_m(m0: u32, k: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var cols: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        if k + i < k_end {
            cols[i] = {{A}}4[(g.a_off + m0 + (k + i) * g.a_sk) / 4u];
        }
    }
    return cols;
}

fn b_block_elements(k: u32, n0: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var rows: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        rows[i] = vec4<f32>(b_scalar(k + i, n0, k_end), b_scalar(k + i, n0 + 1u, k_end),
            b_scalar(k + i, n0 + 2u, k_end), b_scalar(k + i, n0 + 3u, k_end));
    }
    return rows;
}

// B's rows are contiguous along n (b_sn = 1; offsets, b_sk and N multiples of 4).
fn b_block_along_n(k: u32, n0: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var rows: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        if k + i < k_end {
            rows[i] = {{B}}4[(g.b_off + (k + i) * g.b_sk + n0) / 4u];
        }
    }
    return rows;
}

// B's columns are contiguous along k (b_sk = 1; offsets, b_sn and K multiples of 4).
fn b_block_along_k(k: u32, n0: u32, k_end: u32) -> array<vec4<f32>, 4> {
    var cols: array<vec4<f32>, 4>;
    for (var c = 0u; c < 4u; c++) {
        if n0 + c < g.n {
            cols[c] = {{B}}4[(g.b_off + (n0 + c) * g.b_sn + k) / 4u];
        }
    }
    return array<vec4<f32>, 4>(
        vec4<f32>(cols[0].x, cols[1].x, cols[2].x, cols[3].x),
        vec4<f32>(cols[0].y, cols[1].y, cols[2].y, cols[3].y),
        vec4<f32>(cols[0].z, cols[1].z, cols[2].z, cols[3].z),
        vec4<f32>(cols[0].w, cols[1].w, cols[2].w, cols[3].w));
}

// An invocation's block of C: 8 × 8, as four 4 × 4 quarters (rows lo/hi, columns lo/hi).
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let tile = gemm_tile(wg);
    if tile.x == NO_TILE {
        return;
    }
    let m0 = (tile.x * 8u + local.x) * 8u;
    let n0 = (tile.y * 8u + local.y) * 8u;
    if m0 >= g.m || n0 >= g.n {
        return;
    }
    var acc00: array<vec4<f32>, 4>;
    var acc01: array<vec4<f32>, 4>;
    var acc10: array<vec4<f32>, 4>;
    var acc11: array<vec4<f32>, 4>;
    let k_end = g.k0 + g.k;
    // Sums in two levels: each slice of SLICE k into its own block, each block into the
    // total. Weight gradients sum over every frame, terms that often nearly cancel: summed in
    // one run, their rounding errors grow with T·N and reach what Adam's first steps amplify
    // (an element whose gradient is near eps moves by up to lr); blocked, they stay near
    // PyTorch's own (its GEMMs block too).
    for (var k_block = g.k0; k_block < k_end; k_block += SLICE) {
        var blk00: array<vec4<f32>, 4>;
        var blk01: array<vec4<f32>, 4>;
        var blk10: array<vec4<f32>, 4>;
        var blk11: array<vec4<f32>, 4>;
        let k_stop = min(k_block + SLICE, k_end);
        for (var k = k_block; k < k_stop; k += 4u) {
            let a0 = {{A_BLOCK}}(m0, k, k_stop);
            let a1 = {{A_BLOCK}}(m0 + 4u, k, k_stop);
            let b0 = {{B_BLOCK}}(k, n0, k_stop);
            let b1 = {{B_BLOCK}}(k, n0 + 4u, k_stop);
            for (var i = 0u; i < 4u; i++) {
                for (var r = 0u; r < 4u; r++) {
                    blk00[r] += a0[i][r] * b0[i];
                    blk01[r] += a0[i][r] * b1[i];
                    blk10[r] += a1[i][r] * b0[i];
                    blk11[r] += a1[i][r] * b1[i];
                }
            }
        }
        for (var r = 0u; r < 4u; r++) {
            acc00[r] += blk00[r];
            acc01[r] += blk01[r];
            acc10[r] += blk10[r];
            acc11[r] += blk11[r];
        }
    }
    store(m0, n0, acc00);
    store(m0, n0 + 4u, acc01);
    store(m0 + 4u, n0, acc10);
    store(m0 + 4u, n0 + 4u, acc11);
}

// Writes a 4 × 4 block of C from (m0, n0), the parts inside the matrix.
fn store(m0: u32, n0: u32, acc: array<vec4<f32>, 4>) {
    for (var r = 0u; r < 4u; r++) {
        for (var c = 0u; c < 4u; c++) {
            store_element(m0 + r, n0 + c, acc[r][c], bias_element(n0 + c));
        }
    }
}
