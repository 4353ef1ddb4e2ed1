// The input projection (P = X·Wᵀ + bias, see input_projection.wgsl for the layout) for
// adapters whose workgroup can be exactly one subgroup of {{LANES}} lanes: each workgroup
// computes one tile of P with projection_tile.wgsl, {{LANES}} × 4 columns wide.
//
// A template: src/gpu/projection.rs fills in the holes (names in double braces).

// The element type weights are stored in: f32, or f16 where the model asked for it and the
// adapter has `SHADER_F16` (src/shaders.rs rewrites this line). Sums are always f32.
alias weight_t = f32;

{{BINDINGS}}
// P: f32s, or vec4s where its columns and strides are multiples of four.
@group(0) @binding(4) var<storage, read_write> p: array<{{P_ELEMENT}}>;

{{PROJECTION_TILE}}

@compute @workgroup_size({{LANES}}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    project_tile((group.x * {{LANES}}u + lane) * 4u, group.y * TILE_ROWS, lane);
}
