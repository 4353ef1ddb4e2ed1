//! The optimizer pipelines (`optim.wgsl`): one bind group layout (the step's uniform, then
//! parameters, gradients, optimizer state and clipping scratch, all storage) and four entry
//! points.

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::shaders;

use super::{entry_pipeline, size_of, storage_entry, uniform_entry};

/// `Optim` of `optim.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub(crate) struct OptimParams {
    pub len: u32,
    /// 0 SGD, 1 Adam.
    pub kind: u32,
    pub flags: u32,
    pub slots: u32,
    pub lr: f32,
    pub momentum: f32,
    /// The host's `StepScalars` (src/optim.rs) are `grad_share`, `one_minus_beta1`,
    /// `step_size`, `bc2_sqrt`, `one_minus_beta2` and `decay`.
    pub grad_share: f32,
    pub weight_decay: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub step_size: f32,
    pub bc2_sqrt: f32,
    pub max_norm: f32,
    pub one_minus_beta2: f32,
    pub decay: f32,
}

impl OptimParams {
    pub const NESTEROV: u32 = 1;
    pub const DECOUPLED: u32 = 2;
    pub const FIRST_STEP: u32 = 4;
    pub const MOMENTUM: u32 = 8;
}

/// The optimizer pipelines of one device.
pub(crate) struct OptimKernels {
    pub layout: wgpu::BindGroupLayout,
    pub update: wgpu::ComputePipeline,
    pub tensor_norms: wgpu::ComputePipeline,
    pub total_norm: wgpu::ComputePipeline,
    pub scale: wgpu::ComputePipeline,
    /// The three above in one workgroup, for small models.
    pub clip_in_one: wgpu::ComputePipeline,
    /// `clip_in_one`, then `update` over every element, in one workgroup.
    pub clip_and_update: wgpu::ComputePipeline,
}

impl OptimKernels {
    pub fn new(device: &wgpu::Device, counters: &Counters) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("optim"),
            entries: &[
                uniform_entry(0, size_of::<OptimParams>(), false),
                storage_entry(1, false),
                storage_entry(2, false),
                storage_entry(3, false),
                storage_entry(4, false),
            ],
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("optim"),
            source: wgpu::ShaderSource::Wgsl(shaders::fixed(shaders::OPTIM).into()),
        });
        let pipeline =
            |entry: &str| entry_pipeline(device, counters, entry, &module, entry, &layout);
        OptimKernels {
            update: pipeline("update"),
            tensor_norms: pipeline("tensor_norms"),
            total_norm: pipeline("total_norm"),
            scale: pipeline("scale"),
            clip_in_one: pipeline("clip_in_one"),
            clip_and_update: pipeline("clip_and_update"),
            layout,
        }
    }
}
