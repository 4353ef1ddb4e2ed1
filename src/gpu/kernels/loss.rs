//! The loss pipelines (`loss.wgsl`): a uniform and the sequence's data buffer.

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::shaders;

use super::{entry_pipeline, size_of, storage_entry, uniform_entry};

/// `LossParams` of `loss.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub(crate) struct LossParams {
    pub kind: u32,
    pub rows: u32,
    pub features: u32,
    pub groups: u32,
    pub output: u32,
    pub target: u32,
    pub grad: u32,
    pub partials: u32,
    pub scale: f32,
    pub per_lane: u32,
    /// Where the loss's value goes.
    pub value: u32,
    /// Elements from one row's class index to the next's (cross-entropy).
    pub target_stride: u32,
}

/// Items an invocation of a loss's first pass sums (MSE: elements; cross-entropy: rows): a
/// loss of up to 64 × 16 items is one workgroup, which also writes the total (one dispatch).
pub(crate) const LOSS_PER_LANE: u32 = 16;

/// The loss pipelines of one device.
pub(crate) struct LossKernels {
    pub layout: wgpu::BindGroupLayout,
    pub mse: wgpu::ComputePipeline,
    pub cross_entropy: wgpu::ComputePipeline,
    pub total: wgpu::ComputePipeline,
}

impl LossKernels {
    pub fn new(device: &wgpu::Device, counters: &Counters) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("loss"),
            entries: &[
                uniform_entry(0, size_of::<LossParams>(), false),
                storage_entry(1, false),
            ],
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("loss"),
            source: wgpu::ShaderSource::Wgsl(shaders::loss().into()),
        });
        let pipeline =
            |entry: &str| entry_pipeline(device, counters, entry, &module, entry, &layout);
        LossKernels {
            mse: pipeline("mse"),
            cross_entropy: pipeline("cross_entropy"),
            total: pipeline("total"),
            layout,
        }
    }
}
