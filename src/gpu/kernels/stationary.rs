//! The weight-stationary input projection (`shaders/projection_stationary.wgsl`): on adapters
//! with a fixed subgroup size, each layer's projection with K and its columns multiples of
//! four and K ≤ [`MAX_DEPTH`] runs this form instead of the tile kernel (`projection.rs`),
//! reading W_ih from a texture the model fills once (`ModelBuffers`). One pipeline per K,
//! compiled when a workspace first needs it.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use crate::error::{Result, RnnError};
use crate::gpu::counters::Counters;
use crate::gpu::projection::PROJECTION_PARAMS;
use crate::shaders::{self, Template};

use super::{
    ProjectionParams, bind_group, compute_pipeline, size_of, storage_entry, storage_entry_unsized,
    texture_entry, uniform_entry,
};

/// Rows of X one workgroup walks with its weights: measured on lavapipe at 4096×256·256×256,
/// 256 and 512 alike, 128 a little slower (benches/README.md).
const BLOCK_ROWS: u32 = 256;

/// The deepest K the kernel is generated for: every loop over K is written out, and a lane
/// holds 4·K/4 weight vec4s, so the compile grows with K (0.2 s at K = 256 on lavapipe,
/// benches/README.md); deeper layers keep the tile kernel.
pub(crate) const MAX_DEPTH: u32 = 512;

/// The buffers and texture one dispatch binds.
#[derive(Clone, Copy)]
pub(crate) struct StationaryBindings<'a> {
    pub params: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    pub p: &'a wgpu::Buffer,
    /// W as texels, [`texture_size`] of the projection.
    pub weight: &'a wgpu::TextureView,
}

pub(crate) struct StationaryProjectionKernel {
    layout: wgpu::BindGroupLayout,
    /// The adapter's subgroup size: the lanes of a workgroup.
    lanes: usize,
    /// Pipelines by K, compiled on first use.
    pipelines: Mutex<HashMap<u32, Arc<wgpu::ComputePipeline>>>,
}

/// The texture W is read from: (K / 4 texels, one row per column of P).
pub(crate) fn texture_size(depth: u32, cols: u32) -> (u32, u32) {
    (depth / 4, cols)
}

/// Whether a projection of `depth` × `cols` may take this form (on an adapter that has it,
/// and whose textures hold [`texture_size`]): X, W and P read as vec4s, K within
/// [`MAX_DEPTH`]. The strides of every layout the plan makes are then multiples of four too.
pub(crate) fn fits(depth: u32, cols: u32) -> bool {
    depth % 4 == 0 && cols % 4 == 0 && depth > 0 && depth <= MAX_DEPTH
}

impl StationaryProjectionKernel {
    /// The kernel for adapters whose workgroup can be one subgroup of `subgroup` lanes.
    pub(crate) fn new(device: &wgpu::Device, subgroup: Option<usize>) -> Option<Self> {
        let lanes = subgroup?;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("projection_stationary"),
            entries: &[
                uniform_entry(0, size_of::<ProjectionParams>(), false),
                storage_entry_unsized(1, true),
                storage_entry(2, true),
                storage_entry_unsized(3, false),
                texture_entry(4, wgpu::TextureViewDimension::D2),
            ],
        });
        Some(StationaryProjectionKernel {
            layout,
            lanes,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The pipeline for K = `depth` (within [`fits`]), compiled on first use. The caller
    /// holds an error scope (`GpuContext::stationary_pipeline`).
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        depth: u32,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| RnnError::Gpu("a previous compilation panicked".into()))?;
        let pipeline = cache.entry(depth).or_insert_with(|| {
            let source = wgsl(self.lanes, depth as usize);
            Arc::new(compute_pipeline(
                device,
                counters,
                "projection_stationary",
                &source,
                &self.layout,
            ))
        });
        Ok(Arc::clone(pipeline))
    }

    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        b: StationaryBindings<'_>,
    ) -> wgpu::BindGroup {
        bind_group(
            device,
            counters,
            "projection_stationary",
            &self.layout,
            &[
                b.params.as_entire_binding(),
                b.x.as_entire_binding(),
                b.bias.as_entire_binding(),
                b.p.as_entire_binding(),
                wgpu::BindingResource::TextureView(b.weight),
            ],
        )
    }

    /// Records the projection of the first `rows` rows of `params`. The workgroups of the
    /// last block also project the rows after them, up to the block's end (at most 255 rows
    /// more): projecting ahead, the kernel that projects those rows later overwrites them
    /// before any step reads them.
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
        rows: u32,
    ) {
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        let columns = (units(params.depth as usize) * self.lanes) as u32;
        pass.dispatch_workgroups(
            params.cols.div_ceil(columns),
            rows.min(params.rows).div_ceil(BLOCK_ROWS),
            1,
        );
    }
}

/// Columns of P a lane owns for K = `depth` (a multiple of four): eight up to K = 128, where
/// each loaded and shared vec4 of X then feeds twice the products, four above. Measured on
/// lavapipe (`scaling --gemm --gemm-shape R×K×C`), four / eight / sixteen: 16384×64×192 47.3 /
/// 53.7 / 46.4 GFLOP/s, 16384×128×512 51.9 / 56.8 / 51.3, 4096×256×256 63.9 / 59.1 / 46.5.
pub(crate) fn units(depth: usize) -> usize {
    if depth <= 128 { 8 } else { 4 }
}

/// The kernel for subgroups of `lanes` and K = `depth`, its loops over K written out.
pub(crate) fn wgsl(lanes: usize, depth: usize) -> String {
    Template::new(shaders::PROJECTION_STATIONARY)
        .set("PROJECTION_PARAMS", PROJECTION_PARAMS)
        .set("LANES", lanes.to_string())
        .set("BLOCK_ROWS", BLOCK_ROWS.to_string())
        .set("UNITS", units(depth).to_string())
        .set("PROJECT_STATIONARY", library(lanes, depth, "w"))
        .finish()
}

/// Columns of P one subgroup of `lanes` covers at K = `depth`.
pub(crate) fn block_columns(lanes: usize, depth: usize) -> usize {
    lanes * units(depth)
}

/// The WGSL of `project_stationary(c0, first, end, lane)`: the columns of P from `c0` (this
/// lane's first; `lane` its index in its subgroup) for rows `first..end`, with W from the
/// texture named `texels` ((columns) rows of K/4 texels) and `params`, `x` (vec4s), `bias` and
/// `p` (vec4s) bound as in `projection_stationary.wgsl`. Shared with the persistent kernels
/// that project ahead in this form (`gpu::ahead`).
pub(crate) fn library(lanes: usize, depth: usize, texels: &str) -> String {
    let vec4s = depth / 4;
    let units = units(depth);
    let mut load_weights = String::new();
    for u in 0..units {
        let _ = writeln!(
            load_weights,
            "    let w{u} = min(c0 + {u}u, params.cols - 1u);"
        );
        for k in 0..vec4s {
            let _ = writeln!(
                load_weights,
                "    wr[{}] = subgroupShuffle(textureLoad({texels}, vec2<u32>({k}u, w{u}), 0), lane);",
                u * vec4s + k
            );
        }
    }
    for q in 0..units / 4 {
        let c = |u: usize| format!("stationary_bias(c0 + {}u)", 4 * q + u);
        let _ = writeln!(
            load_weights,
            "    let b{q} = vec4<f32>({}, {}, {}, {});",
            c(0),
            c(1),
            c(2),
            c(3)
        );
    }
    // Lane l loads X's vec4s l, l + lanes, ...: where K/4 is not a multiple of the lanes, the
    // last load of the lanes past K reads past the row (the next row's values or, past the
    // buffer, what WGSL's bounds rules give), values no product uses.
    let mut load_x = String::new();
    for i in 0..vec4s.div_ceil(lanes) {
        let _ = writeln!(load_x, "        let x{i} = x[row + {}u + lane];", i * lanes);
    }
    let mut accumulators = String::new();
    for u in 0..units {
        let _ = writeln!(accumulators, "        var a{u} = vec4<f32>(0.0);");
    }
    let mut products = String::new();
    for k in 0..vec4s {
        let _ = writeln!(
            products,
            "        let s{k} = subgroupBroadcast(x{}, {}u);",
            k / lanes,
            k % lanes
        );
        for u in 0..units {
            let _ = writeln!(
                products,
                "        a{u} = a{u} + wr[{}] * s{k};",
                u * vec4s + k
            );
        }
    }
    // Each four columns that exist (the columns are a multiple of four) as one vec4.
    let mut stores = String::new();
    for q in 0..units / 4 {
        let sum = |u: usize| format!("dot(a{}, one)", 4 * q + u);
        let _ = writeln!(
            stores,
            "        if c0 + {}u < params.cols {{
            p[at + {q}u] = vec4<f32>({}, {}, {}, {}) + b{q};
        }}",
            4 * q,
            sum(0),
            sum(1),
            sum(2),
            sum(3)
        );
    }
    format!(
        "fn stationary_bias(c: u32) -> f32 {{
    return select(0.0, bias[min(c, params.cols - 1u)], c < params.cols);
}}

// Lanes past the last column load the last column's weights (in bounds) and store nothing.
fn project_stationary(c0: u32, first: u32, end: u32, lane: u32) {{
    // The lane's rows of W: wr[u·K/4 + k] is vec4 k of column c0 + u. Each texel goes
    // through an identity subgroupShuffle, without which LLVM fetched them again in every row.
    var wr: array<vec4<f32>, {weights}>;
{load_weights}    for (var r = first; r < end; r++) {{
        let t = r / params.batch;
        let n = r % params.batch;
        let row = (t * params.x_stride_t + n * params.x_stride_n) / 4u;
{load_x}        // Four partial sums per column (one per component of the vec4s), added at the end.
{accumulators}{products}        let at = (t * params.p_stride_t + n * params.p_stride_n + c0) / 4u;
        let one = vec4<f32>(1.0);
{stores}    }}
}}
",
        weights = units * vec4s
    )
}
