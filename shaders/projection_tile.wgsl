// One tile of the input projection P = X·Wᵀ + bias (see input_projection.wgsl for the layout):
// TILE_ROWS rows of P, four columns per lane, computed by the lanes of one subgroup. For each k
// the lanes load the X values of the tile's rows between them (TILE_ROWS_PER_LANE each) and
// share them with subgroupBroadcast, so each loaded value feeds four multiply-adds in every
// lane and no workgroup memory or barrier is involved. On llvmpipe this runs ~10× faster than
// the 4×4-per-invocation kernel.
//
// When K and every row start are multiples of four, X and W are read as vec4s along K, four
// k at a time: loads are what costs most on llvmpipe (each is executed lane by lane).
//
// A library, not a kernel: the module that includes it declares `params: ProjectionParams`
// (struct and bindings from src/gpu/projection.rs) and the arrays `x`, `w`, `bias` and `p`
// (projection_subgroup.wgsl, the projection as a kernel of its own; the persistent
// recurrence, projecting the timesteps of its next dispatch while it runs).
// src/gpu/projection.rs fills in the holes (names in double braces), writing the per-row work
// out in full so that the accumulators are addressed by constant indices only.

const TILE_ROWS: u32 = {{ROWS}}u;
const TILE_ROWS_PER_LANE: u32 = {{ROWS_PER_LANE}}u;

fn x_row_start(r: u32) -> u32 {
    // Rows past the end are clamped to the last one: their loads stay in bounds, their
    // results are never stored.
    let row = min(r, params.rows - 1u);
    let start = (row / params.batch) * params.x_stride_t + (row % params.batch) * params.x_stride_n;
    return start / {{WIDTH}}u;
}

fn w_row_start(c: u32) -> u32 {
    return min(c, params.cols - 1u) * params.depth / {{WIDTH}}u;
}

// The bias of columns c0..c0+3 (zero past the last column), loaded once per lane rather than
// once per row: loads are what costs on llvmpipe, and at small K the stores dominate.
fn bias4(c0: u32) -> vec4<f32> {
    var b = vec4<f32>(0.0);
    if c0 < params.cols {
        b.x = bias[c0];
    }
    if c0 + 1u < params.cols {
        b.y = bias[c0 + 1u];
    }
    if c0 + 2u < params.cols {
        b.z = bias[c0 + 2u];
    }
    if c0 + 3u < params.cols {
        b.w = bias[c0 + 3u];
    }
    return b;
}

{{STORE_ROW}}

// Rows r0..r0 + TILE_ROWS and columns c0..c0 + 3 of P; `lane` is the invocation's index in
// its subgroup.
fn project_tile(c0: u32, r0: u32, lane: u32) {
    let mine = r0 + lane * TILE_ROWS_PER_LANE;
{{X_STARTS}}
    let w0 = w_row_start(c0);
    let w1 = w_row_start(c0 + 1u);
    let w2 = w_row_start(c0 + 2u);
    let w3 = w_row_start(c0 + 3u);
{{ACCUMULATORS}}
    for (var k = 0u; k < params.depth / {{WIDTH}}u; k++) {
        let wa = {{ELEMENT}}(w[w0 + k]);
        let wb = {{ELEMENT}}(w[w1 + k]);
        let wc = {{ELEMENT}}(w[w2 + k]);
        let wd = {{ELEMENT}}(w[w3 + k]);
{{LOADS}}
{{FMAS}}
    }
    let b = bias4(c0);
{{STORES}}
}
