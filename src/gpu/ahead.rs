//! Projecting ahead: a persistent kernel (Elman or gated) whose recurrence is one workgroup
//! runs a layer's timesteps in chunks, and each of its dispatches adds one workgroup that
//! computes the input projection of the next chunk, on a core the recurrence leaves idle:
//! with the weight-stationary projection (`kernels::stationary`) where the model holds W_ih's
//! texels, else with the subgroup projection's tile (`shaders/projection_tile.wgsl`). The
//! first chunk is projected by the ordinary projection dispatch, with a grid of its rows only.
//!
//! This module owns when that pays ([`plan`]) and the WGSL a kernel adds for it
//! ([`WgslParts`]); the kernels' generators fill their templates' placeholders with it. The
//! same placeholders take the parts of a kernel that fuses its input instead
//! ([`WgslParts::fused_input`]): it binds the projection's inputs the same way.

use crate::gpu::kernels::{INPUT_TEXTURE_BINDING, ProjectionParams, stationary};
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

/// The same for a gated kernel projecting ahead in the weight-stationary form
/// ([`AheadProjection::Stationary`]), which on one core takes about what the recurrence of
/// a chunk takes where the tile form took 1.5–1.6× longer. Measured on lavapipe (2-core
/// Xeon), N = 1, T = 1024, I = H, median forward, two alternations, plain → ahead: `nn.LSTM`
/// H = 64 (I · 4H = 16,384) 3.20 / 3.27 → 2.55 / 2.61 ms, H = 48 (9,216) 2.79 / 2.98 → 2.49
/// / 2.54, H = 32 (4,096) 1.30 / 1.24 → 1.29 / 1.24; `nn.GRU` H = 64 2.44 / 2.55 → 2.20 /
/// 2.18, H = 48 (6,912) 2.39 / 2.26 → 1.99 / 1.90, but H = 32 (3,072) 1.08 / 1.08 → 1.27 /
/// 1.21.
const MIN_STATIONARY_GATED_PRODUCT: usize = 6144;

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

/// How a persistent kernel's extra workgroup projects the next chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AheadProjection {
    /// The subgroup projection's tiles (`shaders/projection_tile.wgsl`), W_ih from storage.
    Tile(SubgroupProjection),
    /// The weight-stationary projection (`kernels::stationary`) for K = `depth`, W_ih from the
    /// model's texels of it, on subgroups of `lanes`: each subgroup of the projecting
    /// workgroup takes blocks of columns in turn, loading their weights once per chunk.
    Stationary { lanes: usize, depth: usize },
}

impl AheadProjection {
    /// The subgroup size the form is written for (the kernel's).
    pub fn lanes(&self) -> usize {
        match self {
            AheadProjection::Tile(form) => form.lanes,
            AheadProjection::Stationary { lanes, .. } => *lanes,
        }
    }

    /// Loop iterations the projecting workgroup's lanes run for a chunk of `rows` rows of
    /// P with `cols` columns and K = `depth`, one projecting workgroup.
    fn iterations(&self, kernel: &KernelShape, rows: usize, cols: usize, depth: usize) -> usize {
        match self {
            AheadProjection::Tile(form) => {
                let (_, tile_rows) = form.tile();
                rows.div_ceil(tile_rows as usize)
                    * cols.div_ceil(kernel.columns())
                    * (depth.div_ceil(form.width()) + 1)
            }
            AheadProjection::Stationary { lanes, depth } => {
                let blocks = cols.div_ceil(stationary::block_columns(*lanes, *depth));
                blocks.div_ceil(kernel.lanes / lanes) * (rows + 1)
            }
        }
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
/// The form: weight-stationary ([`AheadProjection::Stationary`]) where the layer's model
/// holds W_ih's texels (`texels`, as `GpuContext::projects_stationary` decides), X and P
/// are vec4s and the workgroup is whole subgroups; else the tile.
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
    texels: bool,
) -> Option<(AheadProjection, usize)> {
    let (batch, cols, depth) = (
        projection.batch as usize,
        projection.cols as usize,
        projection.depth as usize,
    );
    let one_workgroup = batch.div_ceil(kernel.batch_tile) == 1;
    let size = kernel.subgroup?;
    // The stationary form where the layer's model holds W_ih's texels, X and P are vec4s and
    // the workgroup is whole subgroups.
    let stationary = (texels
        && projection.vec4_aligned()
        && projection.p_vec4_aligned()
        && kernel.hidden % 4 == 0
        && kernel.lanes % size == 0)
        .then_some(AheadProjection::Stationary { lanes: size, depth });
    let min_product = match (kernel.gated, kernel.split_rows, stationary.is_some()) {
        (_, true, _) => MIN_SPLIT_PRODUCT,
        (true, false, true) => MIN_STATIONARY_GATED_PRODUCT,
        (true, false, false) => MIN_GATED_PRODUCT,
        (false, false, _) => MIN_PRODUCT,
    };
    let worth_it = cols * depth >= min_product && depth <= kernel.hidden;
    if directions != 1 || !one_workgroup || !worth_it {
        return None;
    }
    // P is stored in the kernel's element type: vec4s where H is a multiple of four (then
    // the columns and strides of P are too).
    let form = match stationary {
        Some(form) => form,
        None => AheadProjection::Tile(SubgroupProjection::for_subgroup(
            size,
            projection.vec4_aligned(),
            kernel.hidden % 4 == 0,
        )?),
    };
    // As many rows as stay within the loop limit bound the chunk.
    let mut chunk = seq_len
        .div_ceil(4)
        .max(MIN_CHUNK)
        .min(STEPS_PER_DISPATCH as usize);
    while chunk >= MIN_CHUNK
        && form.iterations(&kernel, chunk * batch, cols, depth) > MAX_ITERATIONS
    {
        chunk -= 1;
    }
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
        projection: Option<&AheadProjection>,
        kernel: KernelShape,
        recurrence_groups: &str,
    ) -> Self {
        let lanes = kernel.lanes;
        match projection {
            None => WgslParts {
                p_access: "read",
                bindings: String::new(),
                library: String::new(),
                role: String::new(),
            },
            Some(AheadProjection::Tile(projection)) => {
                let columns = kernel.columns();
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
            Some(&AheadProjection::Stationary { lanes: size, depth }) => {
                let block = stationary::block_columns(size, depth);
                let units = stationary::units(depth);
                let subgroups = lanes / size;
                let role = format!(
                    "    // Workgroups after the recurrence's project the timesteps of the next dispatch:
    // each subgroup takes every so many blocks of {block} columns.
    let recurrence_groups = {recurrence_groups};
    if group.x >= recurrence_groups {{
        let subgroups = (groups.x - recurrence_groups) * {subgroups}u;
        let next_row = min((step.index + layer.steps_per_dispatch) * layer.batch, params.rows);
        let end_row = min(next_row + layer.steps_per_dispatch * layer.batch, params.rows);
        let blocks = (params.cols + {block}u - 1u) / {block}u;
        for (var b = (group.x - recurrence_groups) * {subgroups}u + lane / {size}u; b < blocks; b += subgroups) {{
            project_stationary((b * {size}u + sub) * {units}u, next_row, end_row, sub);
        }}
        return;
    }}"
                );
                WgslParts {
                    p_access: "read_write",
                    bindings: format!(
                        "{}@group(0) @binding({INPUT_TEXTURE_BINDING}) var w_ih_texels: texture_2d<f32>;\n",
                        projection_bindings(6, "read_write", true)
                    ),
                    library: stationary::library(size, depth, "w_ih_texels"),
                    role,
                }
            }
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
    use super::{AheadProjection, KernelShape, MAX_ITERATIONS, plan};
    use crate::gpu::kernels::ProjectionParams;

    #[test]
    fn gated_and_split_kernels_need_larger_projections() {
        // (gated, split rows, I, columns of P, W_ih's texels) → projects ahead; one sequence,
        // T = 1024.
        for (gated, split_rows, input, cols, texels, want) in [
            (false, false, 128, 128, false, true),
            (false, false, 64, 64, false, false),
            // Elman kernels keep their threshold in either form.
            (false, false, 64, 64, true, false),
            // An LSTM with H = 64: I · 4H = 128², short of the tile form's 2·128² but past the
            // stationary form's 6,144.
            (true, false, 64, 256, false, false),
            (true, false, 64, 256, true, true),
            (true, false, 128, 512, false, true),
            // A GRU with H = 32 (3,072) does not, H = 48 (6,912) does.
            (true, false, 32, 96, true, false),
            (true, false, 48, 144, true, true),
            // Split rows: from 2·256², in either form.
            (true, true, 128, 512, false, false),
            (true, true, 128, 512, true, false),
            (true, true, 256, 1024, false, true),
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
            let planned = plan(kernel, &projection, 1, 1024, texels);
            assert_eq!(
                planned.is_some(),
                want,
                "gated {gated}, split {split_rows}, I = {input}, {cols} columns, texels {texels}"
            );
            if let Some((form, _)) = planned {
                assert_eq!(
                    matches!(form, AheadProjection::Stationary { .. }),
                    texels,
                    "{form:?}"
                );
            }
        }
    }

    #[test]
    fn stationary_form_needs_vec4s_and_whole_subgroups() {
        let kernel = KernelShape {
            lanes: 64,
            subgroup: Some(8),
            batch_tile: 1,
            hidden: 256,
            gated: true,
            split_rows: false,
        };
        let stationary = |kernel: KernelShape, input: usize, cols: usize| {
            let projection = ProjectionParams::contiguous(1024, cols, input);
            let (form, _) = plan(kernel, &projection, 1, 1024, true).expect("projects ahead");
            matches!(form, AheadProjection::Stationary { lanes: 8, depth } if depth == input)
        };
        assert!(stationary(kernel, 128, 512));
        // K not a multiple of four: X is not read as vec4s.
        assert!(!stationary(kernel, 130, 520));
        // H not a multiple of four: P is not stored as vec4s.
        let odd = KernelShape {
            hidden: 131,
            ..kernel
        };
        assert!(!stationary(odd, 128, 524));
        // Lanes that are not whole subgroups.
        let ragged = KernelShape {
            lanes: 60,
            ..kernel
        };
        assert!(!stationary(ragged, 128, 512));
    }

    #[test]
    fn plans_stay_within_llvmpipes_loop_limit() {
        let mut ahead = [0, 0];
        // (lanes, H, columns of P): Elman kernels, an LSTM (4H) and a GRU (3H).
        for (lanes, hidden, cols) in [(8, 64, 64), (25, 100, 100), (32, 128, 128)]
            .into_iter()
            .chain([(64, 256, 256), (16, 64, 256), (24, 84, 252), (40, 160, 160)])
            .chain([(8, 64, 256), (64, 256, 1024), (128, 512, 2048)])
        {
            for input in [1, 3, 64, 100, 127, 128, 200, 255, 256, 257, 3277] {
                for batch in [1, 4] {
                    for seq_len in [65, 1000, 2048, 100_000] {
                        for texels in [false, true] {
                            let kernel = KernelShape {
                                lanes,
                                subgroup: Some(8),
                                batch_tile: if lanes == 8 { 4 } else { 1 },
                                hidden,
                                gated: cols > hidden,
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
                            let Some((form, chunk)) = plan(kernel, &projection, 1, seq_len, texels)
                            else {
                                continue;
                            };
                            let stationary = matches!(form, AheadProjection::Stationary { .. });
                            ahead[stationary as usize] += 1;
                            // What the projecting workgroup's lanes run for a whole chunk.
                            let iterations = match form {
                                AheadProjection::Tile(form) => {
                                    let (_, tile_rows) = form.tile();
                                    let tiles = (chunk * batch).div_ceil(tile_rows as usize)
                                        * cols.div_ceil(kernel.columns());
                                    assert_eq!(form.vec4_p, hidden % 4 == 0);
                                    tiles * (input.div_ceil(form.width()) + 1)
                                }
                                AheadProjection::Stationary { lanes: size, depth } => {
                                    assert_eq!((size, depth), (8, input));
                                    assert!(input % 4 == 0 && hidden % 4 == 0 && texels);
                                    // Each subgroup's blocks of columns, each a loop over the
                                    // chunk's rows.
                                    let block =
                                        crate::gpu::kernels::stationary::block_columns(size, depth);
                                    let blocks = cols.div_ceil(block).div_ceil(lanes / size);
                                    blocks * (chunk * batch + 1)
                                }
                            };
                            assert!(
                                iterations <= MAX_ITERATIONS && chunk < seq_len,
                                "{kernel:?} I={input} cols={cols} N={batch} T={seq_len}: chunk \
                                 {chunk}, {iterations} iterations"
                            );
                            assert!(input <= hidden && input * cols >= 6144);
                        }
                    }
                }
            }
        }
        assert!(
            ahead[0] > 30 && ahead[1] > 10,
            "shapes projecting ahead: {ahead:?}"
        );
    }
}
