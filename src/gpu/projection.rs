//! The subgroup form of the input projection, generated from
//! `shaders/projection_subgroup.wgsl` for one subgroup size.

use std::fmt::Write;

use crate::shaders::{self, Template};

/// Rows of P one workgroup of the subgroup projection computes. Measured on lavapipe at
/// 4096×256·256×256 (`scaling --gemm`, best of three): 64 rows 22 GFLOP/s (the accumulators
/// spill), 32 rows 36, 16 rows 31; later, alternating binaries, medians of eight runs: 40
/// rows 42.0, 32 rows 39.3 (24 rows 38.5, 48 rows 39.6, three runs each). Forwards were no
/// slower with 40 (`nn.RNN` H=64 N=1 T=1024 0.741–0.744 vs 0.748 ms; H=256 N=16 T=256 within
/// noise).
///
/// The 64-row slowdown comes from the FMA order below (each k of a vec4 over every row), which
/// touches each accumulator four times per iteration, far apart; ordering the FMAs row by row
/// brings 64 rows back to the speed of 32, but no faster (re-measured with 96 and 128 rows,
/// 8 columns per lane and 8 k per iteration: all within noise of 32 rows). What bounds it is
/// the loads: Mesa 22.3 runs every storage load lane by lane with a branch per component, and
/// with the X and W loads replaced by constants the same kernel runs ~85 GFLOP/s instead of ~35.
pub(crate) const TILE_ROWS: usize = 40;

/// Stores row r's columns c0..c0+3 (those that exist), bias included in `values`.
const STORE_ROW_SCALAR: &str = "fn store_row(r: u32, c0: u32, values: vec4<f32>) {
    if r >= params.rows {
        return;
    }
    let base = (r / params.batch) * params.p_stride_t + (r % params.batch) * params.p_stride_n;
    if c0 < params.cols {
        p[base + c0] = values.x;
    }
    if c0 + 1u < params.cols {
        p[base + c0 + 1u] = values.y;
    }
    if c0 + 2u < params.cols {
        p[base + c0 + 2u] = values.z;
    }
    if c0 + 3u < params.cols {
        p[base + c0 + 3u] = values.w;
    }
}";

/// The same as one vec4 store: the columns and P's strides are multiples of four, so the
/// four columns exist together and start on a vec4.
const STORE_ROW_VEC4: &str = "fn store_row(r: u32, c0: u32, values: vec4<f32>) {
    if r >= params.rows || c0 >= params.cols {
        return;
    }
    let base = (r / params.batch) * params.p_stride_t + (r % params.batch) * params.p_stride_n;
    p[(base + c0) / 4u] = values;
}";

/// `ProjectionParams` (`kernels::ProjectionParams`) as WGSL, for the kernels generated here and
/// the weight-stationary one.
pub(crate) const PROJECTION_PARAMS: &str = "struct ProjectionParams {
    rows: u32,
    cols: u32,
    depth: u32,
    batch: u32,
    x_stride_t: u32,
    x_stride_n: u32,
    p_stride_t: u32,
    p_stride_n: u32,
}
";

/// `ProjectionParams` and the projection's inputs `params`, `x`, `w` and `bias`, as bindings
/// `first..first + 4` of group 0 (the includer declares `p`, if it writes P); `x_access` is
/// X's (`read`, or `read_write` where the includer also writes that buffer); X and W are
/// vec4s along K where `vec4_k`, else scalars.
pub(crate) fn projection_bindings(first: u32, x_access: &str, vec4_k: bool) -> String {
    let (x, w) = if vec4_k {
        ("vec4<f32>", "vec4<weight_t>")
    } else {
        ("f32", "weight_t")
    };
    format!(
        "{PROJECTION_PARAMS}
@group(0) @binding({}) var<uniform> params: ProjectionParams;
// X and W: f32s, or vec4s along K where K and X's row strides allow.
@group(0) @binding({}) var<storage, {x_access}> x: array<{x}>;
@group(0) @binding({}) var<storage, read> w: array<{w}>;
@group(0) @binding({}) var<storage, read> bias: array<f32>;
",
        first,
        first + 1,
        first + 2,
        first + 3
    )
}

/// The subgroup projection for workgroups of exactly `lanes` lanes (one subgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SubgroupProjection {
    pub lanes: usize,
    /// Read X and W as vec4s along K (K and the row strides must be multiples of 4).
    pub vec4_k: bool,
    /// Store P as vec4s (the columns and P's strides must be multiples of 4): a quarter of
    /// the stores, which at small K cost as much as the products.
    pub vec4_p: bool,
}

impl SubgroupProjection {
    /// The kernel for a fixed subgroup size, if the tile divides over it.
    pub fn for_subgroup(size: usize, vec4_k: bool, vec4_p: bool) -> Option<Self> {
        ((4..=TILE_ROWS).contains(&size) && TILE_ROWS % size == 0).then_some(SubgroupProjection {
            lanes: size,
            vec4_k,
            vec4_p,
        })
    }

    /// K values each iteration of the loop over K covers: 4 with vec4 loads, else 1.
    pub fn width(&self) -> usize {
        if self.vec4_k { 4 } else { 1 }
    }

    /// (columns, rows) of P per workgroup.
    pub fn tile(&self) -> (u32, u32) {
        ((4 * self.lanes) as u32, TILE_ROWS as u32)
    }

    fn rows_per_lane(&self) -> usize {
        TILE_ROWS / self.lanes
    }

    /// The subgroup projection as a kernel of its own.
    pub fn wgsl(&self) -> String {
        Template::new(shaders::PROJECTION_SUBGROUP)
            .set("BINDINGS", self.bindings(0, "read"))
            .set("P_ELEMENT", self.p_element())
            .set("PROJECTION_TILE", self.tile_library())
            .set("LANES", self.lanes.to_string())
            .finish()
    }

    /// Declarations of the bindings `project_tile` reads (see [`projection_bindings`]).
    pub fn bindings(&self, first: u32, x_access: &str) -> String {
        projection_bindings(first, x_access, self.vec4_k)
    }

    /// The element type of P this form stores.
    pub fn p_element(&self) -> &'static str {
        if self.vec4_p { "vec4<f32>" } else { "f32" }
    }

    /// `shaders/projection_tile.wgsl` filled in: `ProjectionParams` and
    /// `project_tile(c0, r0, lane)`.
    pub fn tile_library(&self) -> String {
        let per_lane = self.rows_per_lane();
        let mut x_starts = String::new();
        let mut loads = String::new();
        for i in 0..per_lane {
            let _ = writeln!(x_starts, "    let x{i} = x_row_start(mine + {i}u);");
            let _ = writeln!(loads, "        let xv{i} = x[x{i} + k];");
        }
        let mut accumulators = String::new();
        let mut fmas = String::new();
        let mut stores = String::new();
        let width = self.width();
        for m in 0..TILE_ROWS {
            let _ = writeln!(accumulators, "    var acc{m} = vec4<f32>(0.0);");
            let _ = writeln!(stores, "    store_row(r0 + {m}u, c0, acc{m} + b);");
        }
        // Each of the `width` k of this iteration: the four columns' weights, then every row.
        for j in 0..width {
            let pick = |v: &str| {
                if self.vec4_k {
                    format!("{v}[{j}]")
                } else {
                    v.to_string()
                }
            };
            let _ = writeln!(
                fmas,
                "        let wk{j} = vec4<f32>({}, {}, {}, {});",
                pick("wa"),
                pick("wb"),
                pick("wc"),
                pick("wd")
            );
            for m in 0..TILE_ROWS {
                // Tile row m was loaded by lane m / per_lane as its value m % per_lane.
                let (lane, value) = (m / per_lane, m % per_lane);
                let _ = writeln!(
                    fmas,
                    "        acc{m} = fma(vec4<f32>(subgroupBroadcast({}, {lane}u)), wk{j}, acc{m});",
                    pick(&format!("xv{value}"))
                );
            }
        }
        Template::new(shaders::PROJECTION_TILE)
            .set("ELEMENT", if self.vec4_k { "vec4<f32>" } else { "f32" })
            .set(
                "STORE_ROW",
                if self.vec4_p {
                    STORE_ROW_VEC4
                } else {
                    STORE_ROW_SCALAR
                },
            )
            .set("WIDTH", width.to_string())
            .set("ROWS", TILE_ROWS.to_string())
            .set("ROWS_PER_LANE", per_lane.to_string())
            .set("X_STARTS", &x_starts)
            .set("ACCUMULATORS", &accumulators)
            .set("LOADS", &loads)
            .set("FMAS", &fmas)
            .set("STORES", &stores)
            .finish()
    }
}
