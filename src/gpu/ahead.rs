//! Projecting ahead: a persistent kernel (Elman or gated) whose recurrence is one workgroup
//! runs a layer's timesteps in chunks, and each of its dispatches adds one workgroup that
//! computes the input projection of the next chunk, with the subgroup projection's tile
//! (`shaders/projection_tile.wgsl`), on a core the recurrence leaves idle. The first chunk is
//! projected by the ordinary projection dispatch, with a grid of its rows only.
//!
//! This module owns when that pays ([`plan`]) and the WGSL a kernel adds for it
//! ([`WgslParts`]); the kernels' generators fill their templates' placeholders with it. The
//! same placeholders take the parts of a kernel that fuses its input instead
//! ([`WgslParts::fused_input`]): it binds the projection's inputs the same way.

use crate::gpu::kernels::ProjectionParams;
use crate::gpu::persistent_io::STEPS_PER_DISPATCH;
use crate::gpu::projection::{SubgroupProjection, projection_bindings};
use crate::shaders::Template;

/// The fewest timesteps per dispatch: fewer, and the extra dispatches cost more than the
/// projection they hide.
const MIN_CHUNK: usize = 64;

/// The smallest projection, in multiply-adds per row of P (I · the columns of P: H, or G·H
/// for a gated cell), worth projecting ahead. Measured on lavapipe (2 cores), one layer,
/// N = 1, T = 1024, median forward, plain → ahead: `nn.RNN` I = H = 256: 11.7 / 12.3 →
/// 8.6 / 10.4 ms; I = H = 128: 3.2 / 3.0 → 2.4 / 2.4 ms; but I = H = 64: 0.75 → 0.87 ms,
/// where the three more dispatches (about 50 µs each) cost more than the 0.17 ms projection
/// they hide.
const MIN_PRODUCT: usize = 128 * 128;

/// The same for a gated kernel: measured on lavapipe, N = 1, T = 1024, I = H, median of 9,
/// three alternations, plain / ahead: `nn.LSTM` H = 64 (I · 4H = 16,384) 2.58–2.65 /
/// 2.82–2.99 ms (its recurrence, one subgroup, is short); H = 84 and 128, and `nn.GRU`
/// H = 84 and 128, within 3 % either way; `nn.LSTM` H = 176 21.9–22.4 / 18.3–18.9 ms,
/// H = 256 41.4–41.8 / 35.4–35.9, `nn.GRU` H = 176 18.2–18.3 / 14.3–14.8, H = 256
/// 33.1–33.3 / 27.2–27.6 (those with W_hh from a texture, `GatedPersistentSpec::texture`).
const MIN_GATED_PRODUCT: usize = 2 * 128 * 128;

/// The same for a gated kernel whose lanes split rows (`GatedPersistentSpec::split`, wide
/// states): measured on lavapipe, N = 1, T = 1024, I = H, median of 15, three or four
/// alternations, plain → ahead: `nn.LSTM` H = 256 (I · 4H = 262,144) 75–83 → 56–75 ms,
/// `nn.GRU` H = 256 (196,608) 54–65 → 53–57 ms, `nn.LSTM` H = 128 (65,536) 15.9–18.9 →
/// 15.4–16.0 ms, but `nn.GRU` H = 128 (49,152) 10.9–11.9 → 13.2–17.2 ms.
const MIN_SPLIT_PRODUCT: usize = 2 * 256 * 256;

/// Loop iterations the projecting workgroup may run per dispatch: llvmpipe silently stops an
/// invocation's loops after 65,535 in total.
pub(crate) const MAX_ITERATIONS: usize = 60_000;

/// What [`plan`] needs to know of a persistent kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelShape {
    /// Lanes of a workgroup.
    pub lanes: usize,
    /// The subgroup size the kernel shares h through, if it uses subgroups.
    pub subgroup: Option<usize>,
    /// Sequences per workgroup.
    pub batch_tile: usize,
    /// Hidden units: P and the output are vec4s where they are a multiple of four.
    pub hidden: usize,
    /// Whether this is the gated kernel ([`MIN_GATED_PRODUCT`]).
    pub gated: bool,
    /// Whether lanes split the rows of W_hh (the gated kernel for wide states).
    pub split_rows: bool,
}

impl KernelShape {
    /// Columns of P one projecting workgroup covers: four per lane.
    pub fn columns(&self) -> usize {
        4 * self.lanes
    }
}

/// The projection form and the timesteps per dispatch of a layer that projects ahead, where
/// that pays: the layer is unidirectional (`directions`) and its recurrence is one workgroup
/// (the other cores of a CPU adapter would idle), its projection is large enough
/// ([`MIN_PRODUCT`]) but no wider along K than the recurrence (I ≤ H: on one core the
/// projection of a chunk must not outlast the recurrence of the chunk before; measured on
/// lavapipe, N = 1, T = 1024, plain → ahead: `nn.RNN` I = 256, H = 64 1.30 → 1.87 ms;
/// I = 512, H = 128 5.15 → 6.22 ms; `nn.LSTM` I = 256, H = 64 4.94 → 6.4 ms; `nn.GRU`
/// I = 128, H = 64 2.6 → 2.95 ms; `nn.LSTM` I = H = 64 2.72 → 2.63 ms), the kernel shares h
/// through subgroups of the size the subgroup projection tiles, and the sequence spans at
/// least two chunks.
///
/// A chunk is a quarter of the sequence (at least [`MIN_CHUNK`] steps; T/2 and T/8 measured
/// no better): the first chunk's projection runs before the recurrence starts, on every core,
/// and each later one during the chunk before it, by one workgroup beside the recurrence's.
/// (lavapipe hands each thread an equal share of a dispatch's workgroups in order: more
/// projecting workgroups would put some on the recurrence's core.)
pub(crate) fn plan(
    kernel: KernelShape,
    projection: &ProjectionParams,
    directions: usize,
    seq_len: usize,
) -> Option<(SubgroupProjection, usize)> {
    let (batch, cols, depth) = (
        projection.batch as usize,
        projection.cols as usize,
        projection.depth as usize,
    );
    let one_workgroup = batch.div_ceil(kernel.batch_tile) == 1;
    let min_product = match (kernel.gated, kernel.split_rows) {
        (_, true) => MIN_SPLIT_PRODUCT,
        (true, false) => MIN_GATED_PRODUCT,
        (false, false) => MIN_PRODUCT,
    };
    let worth_it = cols * depth >= min_product && depth <= kernel.hidden;
    if directions != 1 || !one_workgroup || !worth_it {
        return None;
    }
    // P is stored in the kernel's element type: vec4s where H is a multiple of four (then
    // the columns and strides of P are too).
    let form = SubgroupProjection::for_subgroup(
        kernel.subgroup?,
        projection.vec4_aligned(),
        kernel.hidden % 4 == 0,
    )?;
    // The projecting workgroup runs whole tiles (TILE_ROWS rows × the columns a workgroup
    // covers), each a loop over K plus one iteration of the loop over tiles: as many whole
    // row tiles as stay within the loop limit bound the chunk.
    let (_, tile_rows) = form.tile();
    let per_row_tile = cols.div_ceil(kernel.columns()) * (depth.div_ceil(form.width()) + 1);
    let row_tiles = MAX_ITERATIONS / per_row_tile;
    let chunk = seq_len
        .div_ceil(4)
        .max(MIN_CHUNK)
        .min(STEPS_PER_DISPATCH as usize)
        .min(row_tiles * tile_rows as usize / batch);
    (chunk >= MIN_CHUNK && seq_len > chunk).then_some((form, chunk))
}

/// The main function's extra builtins: the lane's index in its subgroup where the kernel
/// loads h in slices or projects ahead; the grid where it projects ahead.
pub(crate) fn builtins(slices: bool, projects_ahead: bool) -> &'static str {
    match (slices, projects_ahead) {
        (_, true) => {
            ", @builtin(subgroup_invocation_id) sub: u32, \
             @builtin(num_workgroups) groups: vec3<u32>"
        }
        (true, false) => ", @builtin(subgroup_invocation_id) sub: u32",
        (false, false) => "",
    }
}

/// What a persistent kernel's template gets for projecting ahead (or not): P's access, the
/// projection's bindings (6..9) and tile library, and the role at the start of `main`.
pub(crate) struct WgslParts {
    p_access: &'static str,
    bindings: String,
    library: String,
    role: String,
}

impl WgslParts {
    /// The parts for `kernel` projecting ahead with `projection` (`None`: not projecting, P
    /// read-only); `recurrence_groups` is the WGSL expression of the recurrence's workgroup
    /// count along x.
    pub fn new(
        projection: Option<&SubgroupProjection>,
        kernel: KernelShape,
        recurrence_groups: &str,
    ) -> Self {
        let Some(projection) = projection else {
            return WgslParts {
                p_access: "read",
                bindings: String::new(),
                library: String::new(),
                role: String::new(),
            };
        };
        let (columns, lanes) = (kernel.columns(), kernel.lanes);
        let role = format!(
            "    // Workgroups after the recurrence's project the timesteps of the next dispatch,
    // sharing its tiles between them.
    let recurrence_groups = {recurrence_groups};
    if group.x >= recurrence_groups {{
        let workers = groups.x - recurrence_groups;
        let column_tiles = (params.cols + {columns}u - 1u) / {columns}u;
        let next_row = min((step.index + layer.steps_per_dispatch) * layer.batch, params.rows);
        let end_row = min(next_row + layer.steps_per_dispatch * layer.batch, params.rows);
        let tiles = (end_row - next_row + TILE_ROWS - 1u) / TILE_ROWS * column_tiles;
        for (var tile = group.x - recurrence_groups; tile < tiles; tile += workers) {{
            let r0 = next_row + (tile / column_tiles) * TILE_ROWS;
            project_tile(((tile % column_tiles) * {lanes}u + lane) * 4u, r0, sub);
        }}
        return;
    }}"
        );
        WgslParts {
            p_access: "read_write",
            // Above the first layer X is the output buffer the kernel writes.
            bindings: projection.bindings(6, "read_write"),
            library: projection.tile_library(),
            role,
        }
    }

    /// The parts for a kernel that computes its input projection itself, for `input`
    /// features (see `PersistentSpec::fusing_input`): the projection's inputs bound as when
    /// projecting ahead (the same bind group layout; P is bound but not read), read with the
    /// functions `w_ih_at` (main's private `w` hides the binding) and `bias_at`; no tile
    /// library, no projecting workgroups.
    pub fn fused_input(input: usize) -> Self {
        let library = format!(
            "const INPUT_VEC4S: u32 = {}u;

// W_ih's vec4 `i`, (D·H, I) row-major, as f32s.
fn w_ih_at(i: u32) -> vec4<f32> {{
    return vec4<f32>(w[i]);
}}

// The bias (b_ih + b_hh) of direction d's units row..row+3, zero past the last.
fn bias_at(d: u32, row: u32) -> vec4<f32> {{
    var b = vec4<f32>(0.0);
    if row < HIDDEN {{
        b.x = bias[d * HIDDEN + row];
    }}
    if row + 1u < HIDDEN {{
        b.y = bias[d * HIDDEN + row + 1u];
    }}
    if row + 2u < HIDDEN {{
        b.z = bias[d * HIDDEN + row + 2u];
    }}
    if row + 3u < HIDDEN {{
        b.w = bias[d * HIDDEN + row + 3u];
    }}
    return b;
}}
",
            input / 4
        );
        WgslParts {
            p_access: "read_write",
            bindings: projection_bindings(6, "read_write", true),
            library,
            role: String::new(),
        }
    }

    /// `template` with `{{P_ACCESS}}`, `{{PROJECTION_BINDINGS}}`, `{{PROJECTION_TILE}}` and
    /// `{{PROJECT_AHEAD}}` filled in.
    pub fn fill(&self, template: Template) -> Template {
        template
            .set("P_ACCESS", self.p_access)
            .set("PROJECTION_BINDINGS", &self.bindings)
            .set("PROJECTION_TILE", &self.library)
            .set("PROJECT_AHEAD", &self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::{KernelShape, MAX_ITERATIONS, plan};
    use crate::gpu::kernels::ProjectionParams;

    #[test]
    fn gated_and_split_kernels_need_larger_projections() {
        // (gated, split rows, I, columns of P) → projects ahead; one sequence, T = 1024.
        for (gated, split_rows, input, cols, want) in [
            (false, false, 128, 128, true),
            (false, false, 64, 64, false),
            // An LSTM with H = 64: I · 4H = 128², short of the gated kernels' 2·128².
            (true, false, 64, 256, false),
            (true, false, 128, 512, true),
            // Split rows: from 2·256².
            (true, true, 128, 512, false),
            (true, true, 256, 1024, true),
        ] {
            let kernel = KernelShape {
                lanes: 64,
                subgroup: Some(8),
                batch_tile: 1,
                hidden: 256,
                gated,
                split_rows,
            };
            let projection = ProjectionParams::contiguous(1024, cols, input);
            assert_eq!(
                plan(kernel, &projection, 1, 1024).is_some(),
                want,
                "gated {gated}, split {split_rows}, I = {input}, {cols} columns"
            );
        }
    }

    #[test]
    fn plans_stay_within_llvmpipes_loop_limit() {
        let mut ahead = 0;
        // (lanes, H, columns of P): Elman kernels, an LSTM (4H) and a GRU (3H).
        for (lanes, hidden, cols) in [(8, 64, 64), (25, 100, 100), (32, 128, 128)]
            .into_iter()
            .chain([(64, 256, 256), (16, 64, 256), (24, 84, 252), (40, 160, 160)])
        {
            for input in [1, 3, 64, 100, 127, 128, 200, 255, 256, 257, 3277] {
                for batch in [1, 4] {
                    for seq_len in [65, 1000, 2048, 100_000] {
                        let kernel = KernelShape {
                            lanes,
                            subgroup: Some(8),
                            batch_tile: if lanes == 8 { 4 } else { 1 },
                            hidden,
                            gated: false,
                            split_rows: false,
                        };
                        let projection = ProjectionParams {
                            rows: (seq_len * batch) as u32,
                            cols: cols as u32,
                            depth: input as u32,
                            batch: batch as u32,
                            x_stride_t: (batch * input) as u32,
                            x_stride_n: input as u32,
                            p_stride_t: (batch * cols) as u32,
                            p_stride_n: cols as u32,
                        };
                        let Some((form, chunk)) = plan(kernel, &projection, 1, seq_len) else {
                            continue;
                        };
                        ahead += 1;
                        // What the projecting workgroup runs for a whole chunk: every tile's
                        // loop over K, plus the loop over tiles.
                        let (_, tile_rows) = form.tile();
                        let tiles = (chunk * batch).div_ceil(tile_rows as usize)
                            * cols.div_ceil(kernel.columns());
                        let iterations = tiles * (input.div_ceil(form.width()) + 1);
                        assert!(
                            iterations <= MAX_ITERATIONS && chunk < seq_len,
                            "{kernel:?} I={input} cols={cols} N={batch} T={seq_len}: chunk \
                             {chunk}, {iterations} iterations"
                        );
                        assert_eq!(form.vec4_p, hidden % 4 == 0);
                        assert!(input <= hidden && input * cols >= 128 * 128);
                    }
                }
            }
        }
        assert!(ahead > 30, "only {ahead} shapes project ahead");
    }
}
