//! One struct per compute pipeline: its bind group layout, its pipeline, its typed uniform
//! parameters (mirroring the WGSL structs field for field) and how to dispatch it, one file
//! per pipeline family: the input projection (`projection`), the Elman per-step kernels
//! (`step`) and the gated per-step kernels (`gated_step`). The persistent kernels are compiled
//! per specialisation by the context (`gpu::persistent_specs`).
//!
//! Kernels depend only on the device and the resource counters, never on the context that
//! owns them.

mod gated_step;
pub(crate) mod loss;
pub(crate) mod optim;
pub(crate) mod peak;
mod projection;
pub(crate) mod sequence_tiles;
pub(crate) mod stationary;
mod step;
pub(crate) mod training;
pub(crate) mod weight_texture;

use std::num::NonZeroU64;
use std::sync::atomic::Ordering;

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::shaders::WeightPrecision;

pub(crate) use gated_step::GatedStepKernel;
pub(crate) use projection::{PROJECTION_TILE, ProjectionBindings, ProjectionKernel};
pub(crate) use stationary::{StationaryBindings, StationaryProjectionKernel};
pub(crate) use step::{
    INPUT_TEXTURE_BINDING, RECURRENT_TEXTURE_BINDING, RecurrentStepKernel, StepBindings,
};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
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
    /// Elements between timesteps and between sequences in P, as the projection wrote it
    /// (read by the persistent gated kernel only; the others assume `(t, n)` rows).
    pub p_stride_t: u32,
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
    pub p_stride_n: u32,
}

/// `Step` of `recurrent_step.wgsl`: the step index, read through a dynamic offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct StepIndex {
    pub index: u32,
    pub _pad: [u32; 3],
}

pub(super) fn size_of<T>() -> Option<NonZeroU64> {
    NonZeroU64::new(std::mem::size_of::<T>() as u64)
}

pub(super) fn uniform_entry(
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
pub(super) fn storage_entry_unsized(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        ..storage_entry(binding, read_only)
    }
}

/// A texture of unfilterable floats the kernel reads with `textureLoad`.
pub(super) fn texture_entry(
    binding: u32,
    view_dimension: wgpu::TextureViewDimension,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension,
            multisampled: false,
        },
        count: None,
    }
}

pub(super) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
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

pub(super) fn compute_pipeline(
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
pub(super) fn entry_pipeline(
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

pub(super) fn bind_group(
    device: &wgpu::Device,
    counters: &Counters,
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
    bind_group_entries(device, counters, label, layout, &entries)
}

/// A bind group of `entries`, whose bindings need not follow one another.
pub(super) fn bind_group_entries(
    device: &wgpu::Device,
    counters: &Counters,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    entries: &[wgpu::BindGroupEntry<'_>],
) -> wgpu::BindGroup {
    counters.bind_groups.fetch_add(1, Ordering::Relaxed);
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries,
    })
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
