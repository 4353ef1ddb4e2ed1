// The input projection P = X·Wᵀ + bias (see input_projection.wgsl for the layout), weight-
// stationary, for adapters whose workgroup can be exactly one subgroup of {{LANES}} lanes and
// for one depth K (a multiple of four): each workgroup owns {{LANES}} × {{UNITS}} columns of P,
// {{UNITS}} a lane. A lane fetches its rows of W (all of K) once, from a
// texture, into private values addressed by constant indices, then walks a block of BLOCK_ROWS
// rows of X: per row the lanes load X's vec4s between them (one each per load), share them with
// subgroupBroadcast, and each lane multiplies them into its columns, every product written out.
//
// Why on llvmpipe (measured in benches/README.md): a storage load runs lane by lane there, and
// the tile kernel (projection_tile.wgsl) loads W again for every tile of rows; here W is loaded
// once per block. Texel fetches rather than storage loads keep the compile short (written-out
// storage loads of W took 4.3 s to compile at K = 256, texel fetches 0.2 s).
//
// A template: src/gpu/kernels/stationary.rs fills in the holes (names in double braces); the
// work is its generated `project_stationary`, which the persistent kernels that project ahead
// in this form call too (src/gpu/ahead.rs).

{{PROJECTION_PARAMS}}
@group(0) @binding(0) var<uniform> params: ProjectionParams;
// X and P as vec4s: K, the columns and every stride are multiples of four.
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> p: array<vec4<f32>>;
// W, (columns) rows of K / 4 texels: the weights in the model's precision, as f32.
@group(0) @binding(4) var w: texture_2d<f32>;

const BLOCK_ROWS: u32 = {{BLOCK_ROWS}}u;

{{PROJECT_STATIONARY}}
@compute @workgroup_size({{LANES}}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let first = group.y * BLOCK_ROWS;
    let c0 = (group.x * {{LANES}}u + lane) * {{UNITS}}u;
    project_stationary(c0, first, min(first + BLOCK_ROWS, params.rows), lane);
}
