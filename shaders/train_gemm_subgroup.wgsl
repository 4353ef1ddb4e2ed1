// The training GEMM (see train_gemm.wgsl for what it computes) for adapters whose workgroup can
// be exactly one subgroup of {{LANES}} lanes. A workgroup computes a tile of C of
// {{TILE_ROWS}} rows × 4·{{LANES}} columns: each lane owns four columns and sums all the tile's
// rows of them. For each k, each lane loads {{ROWS_PER_LANE}} values of A (its share of the
// tile's rows) and its four of B; the A values reach the other lanes by subgroupBroadcast, so
// every loaded value feeds many multiply-adds (llvmpipe runs loads lane by lane, and
// broadcasts as vector operations), with no workgroup memory and no barrier. Operands may have
// any strides; where the layout allows, values move as vec4s (along k: four steps' values at
// once). The k loop runs four steps a trip, their loads first. Each element of C is summed in
// the same order as train_gemm.wgsl's (k ascending within slices of SLICE, slices added in
// turn): the two kernels give the same results.
//
// A template: src/gpu/kernels/training.rs writes the per-row work out in full (constant
// indices keep the sums in registers; a broadcast's lane must be a constant).

{{GEMM_COMMON}}

// A[m, k] and B[k, n], zero outside the matrix (indices clamped: branch-free loads).
fn a_at(m: u32, k: u32) -> f32 {
    return select(0.0, {{A}}[g.a_off + min(m, g.m - 1u) * g.a_sm + k * g.a_sk], m < g.m);
}

fn b_at(k: u32, n: u32) -> f32 {
    return select(0.0, {{B}}[g.b_off + k * g.b_sk + min(n, g.n - 1u) * g.b_sn], n < g.n);
}

// The vec4 forms (see `GemmVectors`), where the layout has the four values side by side, at
// a start, strides and an extent that are multiples of four, read the vec4 arrays at starts
// the generator computes once per lane before the k loop: rows and columns past the matrix
// are clamped to its last ones, whose sums are never stored, so the loop checks no bounds.

// bias[n..n+4] where the operation adds a bias (and n is inside the matrix): loaded once per
// lane, not once per row (loads are what costs on llvmpipe, and at small k the stores are
// most of a tile's time).
fn bias_columns(n: u32) -> vec4<f32> {
    if (g.flags & BIAS) != 0u && n < g.n {
        return params4[(g.bias_off + n) / 4u];
    }
    return vec4<f32>(0.0);
}

// C[m, n..n+4] = sums (+ bias, `bias_columns(n)`) (+ C[m, n..n+4]): `store_element`'s
// arithmetic four columns at a time, with C contiguous along n.
fn store_columns(m: u32, n: u32, sums: vec4<f32>, bias: vec4<f32>) {
    if m >= g.m || n >= g.n {
        return;
    }
    let at = (g.c_off + m * g.c_sm + n) / 4u;
    var value = sums;
    if (g.flags & BIAS) != 0u {
        value += bias;
    }
    if (g.flags & ACCUMULATE) != 0u {
        value = {{C4}}[at] + value;
    }
    {{C4}}[at] = value;
}

@compute @workgroup_size({{LANES}}, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let tile = gemm_tile(wg);
    if tile.x == NO_TILE {
        return;
    }
    let m0 = tile.x * {{TILE_ROWS}}u;
    let n0 = (tile.y * {{LANES}}u + lane) * 4u;
    // The rows whose A values this lane loads for everyone.
    let mine = m0 + lane * {{ROWS_PER_LANE}}u;
    let k_end = g.k0 + g.k;
{{DECLARE_SUMS}}
    for (var k_block = g.k0; k_block < k_end; k_block += SLICE) {
{{DECLARE_BLOCKS}}
        let k_stop = min(k_block + SLICE, k_end);
{{K_LOOP}}
{{ADD_BLOCKS}}
    }
{{STORE}}
}
