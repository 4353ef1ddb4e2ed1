// Persistent LSTM / GRU recurrence: one dispatch runs up to `steps_per_dispatch` timesteps of
// one layer, with the formulas, bindings, state layout and masking of gated_step.wgsl.
//
// One workgroup per (sequence n, direction d): sequences never interact, so the only
// synchronisation is inside the workgroup. Lane l owns the UNITS consecutive hidden units
// from l·UNITS: the G gate rows of W_hh of each live in private values for the whole
// dispatch, and their h and c in registers. h_{t−1} reaches the other lanes through workgroup
// memory (double buffered by step parity, one barrier per step; on subgroup adapters each
// lane loads one vec4 in `size` and shares it with subgroupBroadcast) or, when the workgroup
// is one subgroup, through subgroupBroadcast from constant lanes, with no barrier at all.
// Like the Elman kernel it can project ahead (persistent_recurrence.wgsl, src/gpu/ahead.rs).
//
// For wide states SPLIT neighbouring lanes of a subgroup share the same units (lane l owns
// the units from (l / SPLIT)·UNITS, `part` l % SPLIT): each holds PART_VEC4S of each row's
// VEC4S vec4s of W_hh, takes its part of h_{t−1} from the broadcast slices, and the SPLIT
// lanes' partial sums are added by subgroupBroadcast (each lane adds its group's, in lane
// order); all of them then hold the same gates and state, and part 0 writes them. A lane's
// generated code then stays the size that compiles in seconds on llvmpipe.
//
// This file is a template: src/gpu/gated_persistent.rs fills in its holes (names in double
// braces) for one (cell, H, lanes), writing every loop over weights out in full, so that the private values
// are addressed by constant indices only (that is what keeps them in registers on llvmpipe,
// and keeps the loop count, which llvmpipe limits, at one iteration per step).

{{COMMON}}

@group(0) @binding(0) var<uniform> layer: Layer;
@group(0) @binding(1) var<uniform> step: Step;
// W_hh as (D, G, HIDDEN_PAD, VEC4S) vec4s, zero padded; for a GRU then b_hn as (D, HIDDEN_PAD).
@group(0) @binding(2) var<storage, read> recurrent: array<vec4<weight_t>>;
// P (T·N rows of D·G·H; a row (t, n) at t·p_stride_t + n·p_stride_n: for N > 1 the plan
// lays them out sequence by sequence, so that a workgroup's steps read consecutive rows) and
// the output: f32s, or vec4s when H is a multiple of four (every lane's four units are then
// one aligned vec4 of each gate's P and of the output frame).
// Read-write where this kernel also projects ahead (see src/gpu/ahead.rs).
@group(0) @binding(3) var<storage, {{P_ACCESS}}> p: array<{{IO_ELEMENT}}>;
// The state is read from half 0 and left there; after both halves come the lengths.
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<{{IO_ELEMENT}}>;
// W_hh again as texels, (D·G·HIDDEN_PAD) rows of VEC4S, where the kernel loads it so.
{{TEXTURE_BINDING}}
{{PROJECTION_BINDINGS}}
const HIDDEN: u32 = {{HIDDEN}}u;
const HIDDEN_PAD: u32 = {{HIDDEN_PAD}}u;
const VEC4S: u32 = {{VEC4S}}u;
const UNITS: u32 = {{UNITS}}u;
const GATES: u32 = {{GATES}}u;
{{SPLIT_CONSTANTS}}
// h_{t−1} and h_t, VEC4S vec4s each, by step parity (unused with subgroupBroadcast).
var<workgroup> h: array<vec4<f32>, {{H_SIZE}}>;


// Which of the four units from `row` are real (padding units must stay exactly zero).
fn real4(row: u32) -> vec4<bool> {
    return vec4<u32>(row, row + 1u, row + 2u, row + 3u) < vec4<u32>(HIDDEN);
}

fn state_at(base: u32, j: u32) -> f32 {
    if j < HIDDEN {
        return state[base + j];
    }
    return 0.0;
}

fn state4(base: u32, row: u32) -> vec4<f32> {
    return vec4<f32>(
        state_at(base, row),
        state_at(base, row + 1u),
        state_at(base, row + 2u),
        state_at(base, row + 3u),
    );
}

{{IO_FUNCTIONS}}
{{PROJECTION_TILE}}
@compute @workgroup_size({{LANES}}, 1, 1)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) group: vec3<u32>{{SUBGROUP_LANE}}) {
{{PROJECT_AHEAD}}
    let n = group.x;
    let d = group.y;
    {{ROW0}}
    let sequence = d * layer.batch + n;
    let h_at = layer.state_offset + sequence * HIDDEN;
    let c_at = layer.cell_offset + sequence * HIDDEN;
    let length = bitcast<u32>(state[layer.lengths_offset + n]);
    // This lane's rows of W_hh: w[(g·UNITS + r)·VEC4S + k] is vec4 k of gate g's row
    // row0 + r.
    var w: array<vec4<f32>, {{WEIGHTS}}>;
{{LOAD_WEIGHTS}}
    // The state (h0 and c0, or where the previous dispatch stopped).
{{LOAD_STATE}}
    {{BARRIER}};

    let first = step.index;
    let count = min(layer.steps_per_dispatch, layer.seq_len - first);
    for (var i = 0u; i < count; i++) {
        let s = first + i;
        let t = select(s, layer.seq_len - 1u - s, d == 1u);
        let live = t < length;
        let cur = (i & 1u) * VEC4S;
        let next = VEC4S - cur;
        let p_base = t * layer.p_stride_t + n * layer.p_stride_n + d * GATES * HIDDEN;
        let out_base = t * layer.out_stride_t + n * layer.out_stride_n + d * HIDDEN;
{{ACCUMULATE}}
{{UPDATE}}
        {{BARRIER}};
    }
{{SAVE_STATE}}
}
