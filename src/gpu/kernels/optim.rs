//! The optimizer pipelines (`optim.wgsl`): one bind group layout (the step's uniform, then
//! parameters, gradients, optimizer state and clipping scratch, all storage) and four entry
//! points.

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::optim::OptimizerConfig;
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

/// Which update an optimizer's step runs (`RULE` of `optim.wgsl`): each its own module and
/// pipelines, holding only its own loads and stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpdateRule {
    Sgd,
    SgdMomentum,
    Adam,
}

impl UpdateRule {
    pub const ALL: [UpdateRule; 3] = [UpdateRule::Sgd, UpdateRule::SgdMomentum, UpdateRule::Adam];

    pub fn of(config: &OptimizerConfig) -> Self {
        match config {
            OptimizerConfig::Sgd(s) if s.momentum != 0.0 => UpdateRule::SgdMomentum,
            OptimizerConfig::Sgd(_) => UpdateRule::Sgd,
            OptimizerConfig::Adam(_) => UpdateRule::Adam,
        }
    }
}

/// The optimizer pipelines of one device.
pub(crate) struct OptimKernels {
    pub layout: wgpu::BindGroupLayout,
    /// One per `UpdateRule` (as `UpdateRule::ALL` orders them), as `clip_and_update`.
    update: [wgpu::ComputePipeline; 3],
    pub tensor_norms: wgpu::ComputePipeline,
    pub total_norm: wgpu::ComputePipeline,
    pub scale: wgpu::ComputePipeline,
    /// The three above in one workgroup, for small models.
    pub clip_in_one: wgpu::ComputePipeline,
    /// `clip_in_one`, then `update` over every element, in one workgroup.
    clip_and_update: [wgpu::ComputePipeline; 3],
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
        // One module per rule; clipping's kernels, which step nothing, from the first.
        let modules = UpdateRule::ALL.map(|rule| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("optim"),
                source: wgpu::ShaderSource::Wgsl(shaders::optim(rule as u32).into()),
            })
        });
        let pipeline =
            |entry: &str| entry_pipeline(device, counters, entry, &modules[0], entry, &layout);
        let per_rule = |entry: &str| {
            UpdateRule::ALL.map(|rule| {
                let module = &modules[rule as usize];
                entry_pipeline(device, counters, entry, module, entry, &layout)
            })
        };
        OptimKernels {
            update: per_rule("update"),
            tensor_norms: pipeline("tensor_norms"),
            total_norm: pipeline("total_norm"),
            scale: pipeline("scale"),
            clip_in_one: pipeline("clip_in_one"),
            clip_and_update: per_rule("clip_and_update"),
            layout,
        }
    }

    /// The step of `rule`.
    pub fn update(&self, rule: UpdateRule) -> &wgpu::ComputePipeline {
        &self.update[rule as usize]
    }

    /// Clipping then the step of `rule`, in one workgroup.
    pub fn clip_and_update(&self, rule: UpdateRule) -> &wgpu::ComputePipeline {
        &self.clip_and_update[rule as usize]
    }
}
