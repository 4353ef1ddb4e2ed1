//! One struct per compute pipeline: its bind group layout, its pipeline, its typed uniform
//! parameters (mirroring the WGSL structs field for field) and how to dispatch it.

use std::num::NonZeroU64;

use bytemuck::{Pod, Zeroable};

use std::sync::atomic::Ordering;

use crate::gpu::block_loop;
use crate::gpu::context::{Counters, GpuContext};
use crate::gpu::projection::SubgroupProjection;
use crate::shaders::{self, WeightPrecision};

/// Every pipeline the crate uses, compiled once per context.
pub(crate) struct Kernels {
    pub projection: ProjectionKernel,
    pub step: RecurrentStepKernel,
    pub gated: GatedStepKernel,
}

impl Kernels {
    /// `subgroup`: the fixed subgroup size when the subgroup projection may be used;
    /// `weights`: how the kernels read the weights they bind (a Linear head always binds
    /// f32 weights, to the f32 kernels).
    pub fn new(
        device: &wgpu::Device,
        counters: &Counters,
        subgroup: Option<usize>,
        weights: WeightPrecision,
    ) -> Self {
        let step = RecurrentStepKernel::new(device, counters, weights, subgroup);
        Kernels {
            projection: ProjectionKernel::new(device, counters, subgroup, weights),
            gated: GatedStepKernel::new(device, counters, &step.layout, weights, subgroup),
            step,
        }
    }
}

/// `Params` of `input_projection.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct ProjectionParams {
    pub rows: u32,
    pub cols: u32,
    pub depth: u32,
    pub batch: u32,
    pub x_stride_t: u32,
    pub x_stride_n: u32,
    pub p_stride_t: u32,
    pub p_stride_n: u32,
}

impl ProjectionParams {
    /// A plain (rows × depth) · (cols × depth)ᵀ product with contiguous rows: one "sequence"
    /// of `rows` timesteps.
    pub fn contiguous(rows: usize, cols: usize, depth: usize) -> Self {
        ProjectionParams {
            rows: rows as u32,
            cols: cols as u32,
            depth: depth as u32,
            batch: 1,
            x_stride_t: depth as u32,
            x_stride_n: 0,
            p_stride_t: cols as u32,
            p_stride_n: 0,
        }
    }

    /// Whether X and W can be read as vec4s along K: K and X's row strides are multiples of
    /// four (row starts are then 16-byte aligned, buffers start aligned).
    pub fn vec4_aligned(&self) -> bool {
        self.depth % 4 == 0 && self.x_stride_t % 4 == 0 && self.x_stride_n % 4 == 0
    }

    /// Whether P can be stored as vec4s: its columns and row strides are multiples of four.
    pub fn p_vec4_aligned(&self) -> bool {
        self.cols % 4 == 0 && self.p_stride_t % 4 == 0 && self.p_stride_n % 4 == 0
    }
}

/// `Layer` of `recurrent_step.wgsl` and `gated_step.wgsl` (the Elman RNN kernels declare the
/// first twelve fields only: the gated ones follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct StepLayerParams {
    pub seq_len: u32,
    pub batch: u32,
    pub hidden: u32,
    pub directions: u32,
    pub out_stride_t: u32,
    pub out_stride_n: u32,
    pub state_half: u32,
    pub state_offset: u32,
    pub activation: u32,
    /// Timesteps one persistent dispatch runs (unused by the per-step kernel).
    pub steps_per_dispatch: u32,
    /// Where the sequence lengths start in the state buffer (after both halves).
    pub lengths_offset: u32,
    pub _pad: u32,
    /// Features of h (H_out; `hidden` is the gates' H).
    pub state_size: u32,
    /// Where this layer's c block starts inside a state half.
    pub cell_offset: u32,
    /// Where b_hn (GRU) and W_hr (projected LSTM) start in the recurrent-weights buffer.
    pub step_bias_offset: u32,
    pub hr_offset: u32,
    /// Where a projected LSTM's unprojected h ([D][N][H]) lives in the state buffer.
    pub scratch_offset: u32,
    /// 0: LSTM, 1: GRU (gated kernels only).
    pub cell: u32,
    /// Layers of a wavefront (`wavefront_block.wgsl` only).
    pub layers: u32,
    pub _pad2: u32,
}

/// `Step` of `recurrent_step.wgsl`: the step index, read through a dynamic offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct StepIndex {
    pub index: u32,
    pub _pad: [u32; 3],
}

fn size_of<T>() -> Option<NonZeroU64> {
    NonZeroU64::new(std::mem::size_of::<T>() as u64)
}

fn uniform_entry(
    binding: u32,
    min: Option<NonZeroU64>,
    dynamic: bool,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: min,
        },
        count: None,
    }
}

/// A storage binding whose minimum size is left to pipeline validation.
fn storage_entry_unsized(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        ..storage_entry(binding, read_only)
    }
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            // Every storage array holds at least one f32.
            min_binding_size: NonZeroU64::new(4),
        },
        count: None,
    }
}

fn compute_pipeline(
    device: &wgpu::Device,
    counters: &Counters,
    label: &str,
    source: &str,
    layout: &wgpu::BindGroupLayout,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    entry_pipeline(device, counters, label, &module, "main", layout)
}

/// The pipeline of `entry` in `module`.
fn entry_pipeline(
    device: &wgpu::Device,
    counters: &Counters,
    label: &str,
    module: &wgpu::ShaderModule,
    entry: &str,
    layout: &wgpu::BindGroupLayout,
) -> wgpu::ComputePipeline {
    counters.pipelines.fetch_add(1, Ordering::Relaxed);
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

fn bind_group(
    ctx: &GpuContext,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    resources: &[wgpu::BindingResource<'_>],
) -> wgpu::BindGroup {
    let entries: Vec<_> = resources
        .iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: resource.clone(),
        })
        .collect();
    ctx.inner()
        .counters
        .bind_groups
        .fetch_add(1, Ordering::Relaxed);
    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &entries,
    })
}

/// `input_projection.wgsl`: P = X·Wᵀ + bias over all rows of a layer; on adapters with a
/// fixed subgroup size, its subgroup form (`projection_subgroup.wgsl`) with the same bindings.
pub(crate) struct ProjectionKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    /// The subgroup form, when the adapter allows it.
    subgroup: Option<SubgroupForms>,
}

/// The subgroup projection, by [reads vec4s along K][stores vec4s of P].
struct SubgroupForms {
    forms: [[wgpu::ComputePipeline; 2]; 2],
    /// (columns, rows) of P per workgroup.
    tile: (u32, u32),
}

/// Rows and columns of P covered by one workgroup (8×8 invocations × 4×4 outputs each).
pub(crate) const PROJECTION_TILE: u32 = 32;

/// The buffers one projection dispatch binds.
#[derive(Clone, Copy)]
pub(crate) struct ProjectionBindings<'a> {
    pub params: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    pub p: &'a wgpu::Buffer,
}

impl ProjectionKernel {
    fn new(
        device: &wgpu::Device,
        counters: &Counters,
        subgroup: Option<usize>,
        weights: WeightPrecision,
    ) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("input_projection"),
            entries: &[
                uniform_entry(0, size_of::<ProjectionParams>(), false),
                // X and W: f32s, or vec4s for the subgroup form when K allows; sizes are
                // checked against the pipeline that binds them.
                storage_entry_unsized(1, true),
                storage_entry_unsized(2, true),
                storage_entry(3, true),
                // P: f32s, or vec4s for the subgroup form where its layout allows.
                storage_entry_unsized(4, false),
            ],
        });
        let pipeline = compute_pipeline(
            device,
            counters,
            "input_projection",
            &shaders::with_weights(shaders::INPUT_PROJECTION, weights),
            &layout,
        );
        let subgroup = subgroup.and_then(|size| {
            let form = |vec4_k, vec4_p| {
                SubgroupProjection::for_subgroup(size, vec4_k, vec4_p).map(|spec| {
                    let source = shaders::with_weights(&spec.wgsl(), weights).into_owned();
                    (
                        compute_pipeline(device, counters, "projection_subgroup", &source, &layout),
                        spec.tile(),
                    )
                })
            };
            let (scalar, tile) = form(false, false)?;
            let forms = [
                [scalar, form(false, true)?.0],
                [form(true, false)?.0, form(true, true)?.0],
            ];
            Some(SubgroupForms { forms, tile })
        });
        ProjectionKernel {
            layout,
            pipeline,
            subgroup,
        }
    }

    pub fn bind_group(&self, ctx: &GpuContext, b: ProjectionBindings<'_>) -> wgpu::BindGroup {
        bind_group(
            ctx,
            "input_projection",
            &self.layout,
            &[
                b.params.as_entire_binding(),
                b.x.as_entire_binding(),
                b.weight.as_entire_binding(),
                b.bias.as_entire_binding(),
                b.p.as_entire_binding(),
            ],
        )
    }

    /// Workgroups of the portable kernel for a (rows × cols) output: (column tiles, row
    /// tiles). The subgroup form's tiles are larger, so this bounds both.
    pub fn workgroups(rows: u32, cols: u32) -> (u32, u32) {
        (
            cols.div_ceil(PROJECTION_TILE),
            rows.div_ceil(PROJECTION_TILE),
        )
    }

    /// Records the projection `params` describes, in its fastest form on this device.
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
    ) {
        self.encode_with(pass, group, params, self.subgroup.is_some());
    }

    /// Records the projection of the first `rows` rows only.
    pub fn encode_rows(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
        rows: u32,
    ) {
        // The grid follows the rows; the kernel still sees them all (strides, bounds).
        let first = ProjectionParams {
            rows: rows.min(params.rows),
            ..*params
        };
        self.encode_with(pass, group, &first, self.subgroup.is_some());
    }

    /// Records the projection in the subgroup form (when the adapter has it and
    /// `use_subgroup`) or the portable one; tests run both.
    pub fn encode_with(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
        use_subgroup: bool,
    ) {
        let (rows, cols) = (params.rows, params.cols);
        let (pipeline, (x, y)) = match &self.subgroup {
            Some(forms) if use_subgroup => {
                let k = usize::from(params.vec4_aligned());
                let p = usize::from(params.p_vec4_aligned());
                let pipeline = &forms.forms[k][p];
                let (tile_cols, tile_rows) = forms.tile;
                (
                    pipeline,
                    (cols.div_ceil(tile_cols), rows.div_ceil(tile_rows)),
                )
            }
            _ => (&self.pipeline, Self::workgroups(rows, cols)),
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Whether the subgroup form is available on this device.
    #[cfg(test)]
    pub fn has_subgroup_form(&self) -> bool {
        self.subgroup.is_some()
    }
}

/// `recurrent_step.wgsl`: one fused timestep of one layer, both directions, one invocation
/// per unit; and its block form `recurrent_block.wgsl` (4 units × 4 sequences an invocation,
/// or on subgroup adapters 1, 4 or 16 by batch; vec4 loads) for hidden sizes that are
/// multiples of four. Its bind group layout is shared by the gated and persistent kernels,
/// which bind the same buffers.
pub(crate) struct RecurrentStepKernel {
    pub(crate) layout: wgpu::BindGroupLayout,
    /// The layout of persistent kernels that read X themselves (projecting ahead, or fusing
    /// their input): these bindings with P writable, then the projection's params, X, W_ih
    /// and bias (6..9); only on devices that allow
    /// its [`OWN_INPUT_STORAGE_BUFFERS`] storage buffers (wgpu's downlevel limits allow 4).
    own_input_layout: Option<wgpu::BindGroupLayout>,
    pipeline: wgpu::ComputePipeline,
    block: wgpu::ComputePipeline,
    /// The block kernel as one subgroup sharing h by broadcast, on adapters with a fixed
    /// subgroup size.
    block_subgroup: Option<SubgroupBlocks>,
    /// `wavefront_block.wgsl`: every layer of a stacked unidirectional RNN in one dispatch.
    wavefront: wgpu::ComputePipeline,
}

/// Invocations per workgroup along the hidden units.
pub(crate) const STEP_WORKGROUP: u32 = 64;

/// Storage buffers of the persistent kernels that read X themselves (projecting ahead or
/// fusing their input): W_hh, P, the state, the output, X, W_ih and the bias.
pub(crate) const OWN_INPUT_STORAGE_BUFFERS: u32 = 7;

/// Invocations of the block kernel along units and along sequences (8 × 8 a workgroup).
const BLOCK_WORKGROUP: u32 = 8;

/// The buffers one layer's step dispatches bind.
#[derive(Clone, Copy)]
pub(crate) struct StepBindings<'a> {
    pub layer: &'a wgpu::Buffer,
    pub steps: &'a wgpu::Buffer,
    /// W_hh (and a gated cell's b_hn or W_hr after it).
    pub recurrent: &'a wgpu::Buffer,
    pub p: &'a wgpu::Buffer,
    /// Both state halves, then the lengths.
    pub state: &'a wgpu::Buffer,
    pub output: &'a wgpu::Buffer,
}

impl<'a> StepBindings<'a> {
    /// The resources of bindings 0..6, in order (the step uniform through its dynamic
    /// offset, one `StepIndex` wide).
    fn resources(&self) -> [wgpu::BindingResource<'a>; 6] {
        [
            self.layer.as_entire_binding(),
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: self.steps,
                offset: 0,
                size: size_of::<StepIndex>(),
            }),
            self.recurrent.as_entire_binding(),
            self.p.as_entire_binding(),
            self.state.as_entire_binding(),
            self.output.as_entire_binding(),
        ]
    }
}

impl RecurrentStepKernel {
    fn new(
        device: &wgpu::Device,
        counters: &Counters,
        weights: WeightPrecision,
        subgroup: Option<usize>,
    ) -> Self {
        // Bindings 0..6; P (3) is written only by kernels that project ahead.
        let step_entries = |p_read_only: bool| {
            [
                uniform_entry(0, size_of::<StepLayerParams>(), false),
                uniform_entry(1, size_of::<StepIndex>(), true),
                // W_hh: f32s for the per-step kernel, vec4s for the persistent one, so its
                // minimum size is checked when a pipeline uses it rather than here.
                storage_entry_unsized(2, true),
                // P, the state and the output: f32s, or vec4s for the kernels that read
                // them so.
                storage_entry_unsized(3, p_read_only),
                storage_entry_unsized(4, false),
                storage_entry_unsized(5, false),
            ]
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("recurrent_step"),
            entries: &step_entries(true),
        });
        let storage_buffers = device.limits().max_storage_buffers_per_shader_stage;
        let own_input_layout = (storage_buffers >= OWN_INPUT_STORAGE_BUFFERS).then(|| {
            let mut entries = step_entries(false).to_vec();
            entries.extend([
                uniform_entry(6, size_of::<ProjectionParams>(), false),
                // X: writable, as above the first layer it is the output buffer (binding 5):
                // wgpu forbids binding a buffer read-only and writable in one dispatch. (The
                // WebGPU specification also forbids two writable bindings of one buffer, which
                // wgpu does not check; in a browser, layers above the first would have to read
                // X through binding 5.) The rows the two touch in a dispatch never overlap.
                storage_entry_unsized(7, false),
                storage_entry_unsized(8, true),
                storage_entry(9, true),
            ]);
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("persistent kernel reading its input"),
                entries: &entries,
            })
        });
        let pipeline = compute_pipeline(
            device,
            counters,
            "recurrent_step",
            &shaders::with_weights(&shaders::fixed(shaders::RECURRENT_STEP), weights),
            &layout,
        );
        let block = compute_pipeline(
            device,
            counters,
            "recurrent_block",
            &shaders::with_weights(&block_loop::elman_wgsl(None, 4), weights),
            &layout,
        );
        let wavefront = compute_pipeline(
            device,
            counters,
            "wavefront_block",
            &shaders::with_weights(&block_loop::wavefront_wgsl(), weights),
            &layout,
        );
        let block_subgroup = subgroup.map(|size| {
            SubgroupBlocks::new(size, |sequences| {
                let template = block_loop::elman_wgsl(Some(size), sequences);
                let source = shaders::with_weights(&template, weights);
                let label = format!("recurrent_block_subgroup_{sequences}");
                compute_pipeline(device, counters, &label, &source, &layout)
            })
        });
        RecurrentStepKernel {
            layout,
            own_input_layout,
            pipeline,
            block,
            block_subgroup,
            wavefront,
        }
    }

    /// Compiles a persistent kernel (Elman or gated) against this kernel's bind group layout
    /// or, `projecting_ahead` (also set for a kernel fusing its input), the layout that adds
    /// the projection's bindings.
    pub fn compile_persistent(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        label: &str,
        source: &str,
        owns_input: bool,
    ) -> wgpu::ComputePipeline {
        // Kernels that read X themselves come only where their layout exists
        // (`can_own_input`); elsewhere wgpu's validation would report the mismatch as an error.
        let layout = match (owns_input, &self.own_input_layout) {
            (true, Some(own_input)) => own_input,
            _ => &self.layout,
        };
        compute_pipeline(device, counters, label, source, layout)
    }

    /// Whether the device allows the persistent kernels that read X themselves (projecting
    /// ahead, fusing their input): their layout's seven storage buffers.
    pub fn can_own_input(&self) -> bool {
        self.own_input_layout.is_some()
    }

    /// The bind group of a persistent kernel projecting ahead or fusing its input: the
    /// step's buffers, then the projection's (whose P must be the step's).
    pub fn own_input_bind_group(
        &self,
        ctx: &GpuContext,
        step: StepBindings<'_>,
        projection: ProjectionBindings<'_>,
    ) -> wgpu::BindGroup {
        debug_assert_eq!(step.p, projection.p);
        let mut resources = step.resources().to_vec();
        resources.extend([
            projection.params.as_entire_binding(),
            projection.x.as_entire_binding(),
            projection.weight.as_entire_binding(),
            projection.bias.as_entire_binding(),
        ]);
        bind_group(
            ctx,
            "persistent kernel reading its input",
            self.own_input_layout.as_ref().unwrap_or(&self.layout),
            &resources,
        )
    }

    /// Records one layer of `steps` timesteps with a persistent kernel that projects ahead
    /// (its P for the first `chunk` steps already recorded): one dispatch per `chunk` steps,
    /// each adding `workers` workgroups after the recurrence's to project the next chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_projecting_ahead(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        steps: u32,
        chunk: u32,
        workers: u32,
        step_stride: u32,
        grid: StepGrid,
    ) {
        pass.set_pipeline(pipeline);
        let recurrence = grid.batch.div_ceil(grid.batch_tile);
        for first in (0..steps).step_by(chunk as usize) {
            let last = first + chunk >= steps;
            pass.set_bind_group(0, group, &[first * step_stride]);
            pass.dispatch_workgroups(recurrence + if last { 0 } else { workers }, 1, 1);
        }
    }

    /// Records steps `first..end` of one layer with a persistent kernel: one dispatch per
    /// `steps_per_dispatch` steps, each starting where the previous left the state.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_persistent(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        steps: std::ops::Range<u32>,
        steps_per_dispatch: u32,
        step_stride: u32,
        grid: StepGrid,
    ) {
        pass.set_pipeline(pipeline);
        for first in steps.step_by(steps_per_dispatch as usize) {
            pass.set_bind_group(0, group, &[first * step_stride]);
            pass.dispatch_workgroups(grid.batch.div_ceil(grid.batch_tile), grid.directions, 1);
        }
    }

    pub fn bind_group(&self, ctx: &GpuContext, b: StepBindings<'_>) -> wgpu::BindGroup {
        bind_group(ctx, "recurrent_step", &self.layout, &b.resources())
    }

    /// Records steps `steps` of one layer; step s's uniform sits at `s · step_stride` bytes
    /// of the steps buffer. Hidden sizes that are multiples of four run the block kernel,
    /// unless the step is tiny (H·N < 128), where a step costs its dispatch whatever the
    /// kernel. Measured on lavapipe, per-step path, median forward: H = 1024, N = 64, T = 16:
    /// 598 ms in blocks, 3092 ms one unit an invocation; H = 256, N = 16, T = 256: 163 vs
    /// 744 ms; H = 128, N = 1, T = 512: 28 vs 33 ms; H = 64, N = 1, T = 512: 15.9 vs 12.9 ms.
    pub fn encode_steps(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        steps: std::ops::Range<u32>,
        step_stride: u32,
        grid: StepGrid,
    ) {
        let blocks = grid.hidden % 4 == 0 && grid.hidden * grid.batch >= 128;
        self.encode_steps_with(pass, group, steps, step_stride, grid, blocks);
    }

    /// Records steps with the block kernel (`blocks`, H a multiple of four) or the
    /// one-unit-per-invocation kernel; tests run both.
    pub fn encode_steps_with(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        steps: std::ops::Range<u32>,
        step_stride: u32,
        grid: StepGrid,
        blocks: bool,
    ) {
        let subgroup = self
            .block_subgroup
            .as_ref()
            .filter(|blocks| block_loop::subgroup_fits(blocks.size, grid.hidden as usize));
        let (pipeline, workgroups) = if let (true, Some(forms)) = (blocks, subgroup) {
            // One subgroup of invocations of 4 units × the form's sequences along the units.
            let (pipeline, sequences) = forms.for_batch(grid.batch);
            let x = grid.hidden.div_ceil(4 * forms.size as u32);
            (pipeline, (x, grid.batch.div_ceil(sequences)))
        } else if blocks {
            // 8 × 8 invocations of 4 units × 4 sequences.
            let x = grid.hidden.div_ceil(4 * BLOCK_WORKGROUP);
            (&self.block, (x, grid.batch.div_ceil(4 * BLOCK_WORKGROUP)))
        } else {
            (
                &self.pipeline,
                (grid.hidden.div_ceil(STEP_WORKGROUP), grid.batch),
            )
        };
        pass.set_pipeline(pipeline);
        for step in steps {
            pass.set_bind_group(0, group, &[step * step_stride]);
            pass.dispatch_workgroups(workgroups.0, workgroups.1, grid.directions);
        }
    }
}

impl RecurrentStepKernel {
    /// Records waves `waves` of a stacked unidirectional RNN of `layers` layers: wave w runs
    /// step w − k of every layer k (the bind group of `wavefront_block.wgsl`).
    pub fn encode_waves(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        waves: std::ops::Range<u32>,
        step_stride: u32,
        grid: StepGrid,
        layers: u32,
    ) {
        pass.set_pipeline(&self.wavefront);
        let x = grid.hidden.div_ceil(4 * BLOCK_WORKGROUP);
        let y = grid.batch.div_ceil(4 * BLOCK_WORKGROUP);
        for wave in waves {
            pass.set_bind_group(0, group, &[wave * step_stride]);
            pass.dispatch_workgroups(x, y, layers);
        }
    }
}

/// A block kernel's subgroup forms, on adapters with a fixed subgroup size: one pipeline per
/// number of sequences an invocation (see [`block_loop::block_sequences`]).
pub(crate) struct SubgroupBlocks {
    /// The subgroup size (the workgroup's lanes).
    pub size: usize,
    forms: Vec<(usize, wgpu::ComputePipeline)>,
}

impl SubgroupBlocks {
    fn new(size: usize, compile: impl Fn(usize) -> wgpu::ComputePipeline) -> Self {
        let forms = block_loop::SUBGROUP_BLOCK_SEQUENCES
            .iter()
            .map(|&sequences| (sequences, compile(sequences)))
            .collect();
        SubgroupBlocks { size, forms }
    }

    /// The form for `batch` sequences: its pipeline and its sequences an invocation. (Any
    /// form computes the same results; `block_sequences` picks the cheapest.)
    fn for_batch(&self, batch: u32) -> (&wgpu::ComputePipeline, u32) {
        let wanted = block_loop::block_sequences(batch);
        let (sequences, pipeline) = self
            .forms
            .iter()
            .find(|(sequences, _)| *sequences == wanted)
            .unwrap_or(&self.forms[0]);
        (pipeline, *sequences as u32)
    }
}

/// `gated_step.wgsl`: one fused LSTM or GRU timestep of one layer, both directions (entry
/// `gates`), and for a projected LSTM the projection of h that follows it (entry `project`);
/// `gated_block.wgsl`, the `gates` step for several sequences an invocation. Same bind group
/// layout as [`RecurrentStepKernel`].
pub(crate) struct GatedStepKernel {
    gates: wgpu::ComputePipeline,
    block: wgpu::ComputePipeline,
    /// The block kernel as one subgroup sharing h by broadcast, on adapters with a fixed
    /// subgroup size.
    block_subgroup: Option<SubgroupBlocks>,
    project: wgpu::ComputePipeline,
}

impl GatedStepKernel {
    fn new(
        device: &wgpu::Device,
        counters: &Counters,
        layout: &wgpu::BindGroupLayout,
        weights: WeightPrecision,
        subgroup: Option<usize>,
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("gated_step"),
            source: wgpu::ShaderSource::Wgsl(
                shaders::with_weights(&shaders::fixed(shaders::GATED_STEP), weights)
                    .into_owned()
                    .into(),
            ),
        });
        GatedStepKernel {
            gates: entry_pipeline(device, counters, "gated_step", &module, "gates", layout),
            block: compute_pipeline(
                device,
                counters,
                "gated_block",
                &shaders::with_weights(&block_loop::gated_wgsl(None, 4), weights),
                layout,
            ),
            block_subgroup: subgroup.map(|size| {
                SubgroupBlocks::new(size, |sequences| {
                    let template = block_loop::gated_wgsl(Some(size), sequences);
                    let source = shaders::with_weights(&template, weights);
                    let label = format!("gated_block_subgroup_{sequences}");
                    compute_pipeline(device, counters, &label, &source, layout)
                })
            }),
            project: entry_pipeline(device, counters, "lstm_project", &module, "project", layout),
        }
    }

    /// Whether the block kernel can run a layer of `hidden` units and `state_size` features
    /// of h: both multiples of four (its vec4 reads of W_hh and of what follows it).
    pub fn blocks_fit(hidden: u32, state_size: u32) -> bool {
        hidden % 4 == 0 && state_size % 4 == 0
    }

    /// Records steps `steps` of one layer (bind groups of [`RecurrentStepKernel`]), in blocks
    /// when `blocks` (see [`blocks_fit`](Self::blocks_fit)); with `projected` (H_out), each
    /// step's gates are followed by the projection of h.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_steps(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        steps: std::ops::Range<u32>,
        step_stride: u32,
        grid: StepGrid,
        projected: Option<u32>,
        blocks: bool,
    ) {
        // The subgroup form where the adapter has it and h's rows tile into its chunks, for
        // as many sequences an invocation as suit the batch.
        let subgroup = self.block_subgroup.as_ref().filter(|blocks| {
            block_loop::subgroup_fits(blocks.size, projected.unwrap_or(grid.hidden) as usize)
        });
        let (gates, lanes, rows) = match subgroup {
            Some(forms) if blocks => {
                let (pipeline, sequences) = forms.for_batch(grid.batch);
                (pipeline, forms.size as u32, grid.batch.div_ceil(sequences))
            }
            _ if blocks => (
                &self.block,
                block_loop::GATED_PORTABLE_LANES,
                grid.batch.div_ceil(4),
            ),
            _ => (&self.gates, STEP_WORKGROUP, grid.batch),
        };
        for step in steps {
            pass.set_bind_group(0, group, &[step * step_stride]);
            pass.set_pipeline(gates);
            pass.dispatch_workgroups(grid.hidden.div_ceil(lanes), rows, grid.directions);
            if let Some(state_size) = projected {
                pass.set_pipeline(&self.project);
                pass.dispatch_workgroups(
                    state_size.div_ceil(STEP_WORKGROUP),
                    grid.batch,
                    grid.directions,
                );
            }
        }
    }
}

/// The extent of one step: every (hidden unit, sequence, direction).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepGrid {
    pub hidden: u32,
    pub batch: u32,
    pub directions: u32,
    /// Sequences per persistent workgroup.
    pub batch_tile: u32,
}
