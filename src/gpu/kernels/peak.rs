//! The multiply-add ceiling (`peak_multiply_add.wgsl`): register-resident chains of fused
//! multiply-adds with no memory traffic, timed by the scaling report's `--peak` to say what
//! the adapter's ALUs sustain, the bound every kernel's rate is read against. Compiled only
//! when measured, never by a model.

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::shaders;

use super::{bind_group, compute_pipeline, size_of, storage_entry_unsized, uniform_entry};

/// Invocations of a workgroup (`@workgroup_size` of the shader).
pub(crate) const PEAK_LANES: u32 = 64;

/// Scalar multiply-adds one invocation runs per iteration: eight rounds of eight vec4 chains.
pub(crate) const PEAK_MULTIPLY_ADDS: u64 = 8 * 8 * 4;

/// `PeakParams` of `peak_multiply_add.wgsl`, field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub(crate) struct PeakParams {
    pub iterations: u32,
    pub multiplier: f32,
    pub addend: f32,
    pub _pad: u32,
}

pub(crate) struct PeakKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl PeakKernel {
    pub fn new(device: &wgpu::Device, counters: &Counters) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("peak_multiply_add"),
            entries: &[
                uniform_entry(0, size_of::<PeakParams>(), false),
                storage_entry_unsized(1, false),
            ],
        });
        let pipeline = compute_pipeline(
            device,
            counters,
            "peak_multiply_add",
            &shaders::fixed(shaders::PEAK_MULTIPLY_ADD),
            &layout,
        );
        PeakKernel { layout, pipeline }
    }

    /// `sums` holds a vec4 per invocation of the dispatches it is used with.
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        params: &wgpu::Buffer,
        sums: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        bind_group(
            device,
            counters,
            "peak_multiply_add",
            &self.layout,
            &[params.as_entire_binding(), sums.as_entire_binding()],
        )
    }

    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        workgroups: u32,
    ) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(workgroups, 1, 1);
    }
}
