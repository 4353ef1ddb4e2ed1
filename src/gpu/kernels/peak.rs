//! The multiply-add ceiling (`peak_multiply_add.wgsl`): register-resident chains of fused
//! multiply-adds with no memory traffic, timed by the scaling report's `--peak` to say what
//! the adapter's ALUs sustain, the bound every kernel's rate is read against. Compiled only
//! when measured, never by a model.

use std::fmt::Write;

use bytemuck::{Pod, Zeroable};

use crate::gpu::counters::Counters;
use crate::shaders::{self, Template};

use super::{bind_group, compute_pipeline, size_of, storage_entry_unsized, uniform_entry};

/// Invocations of a workgroup (`@workgroup_size` of the shader).
pub(crate) const PEAK_LANES: u32 = 64;

/// Independent vec4 chains an invocation runs (`a0` … `a7` in the shader).
const CHAINS: usize = 8;

/// Rounds of the chains written out in each iteration of the loop: llvmpipe's loop bookkeeping
/// is then a small share (four rounds measured 7 % slower on lavapipe, sixteen no faster).
const ROUNDS: usize = 8;

/// Scalar multiply-adds one invocation runs per iteration.
pub(crate) const PEAK_MULTIPLY_ADDS: u64 = (ROUNDS * CHAINS * 4) as u64;

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
        let pipeline = compute_pipeline(device, counters, "peak_multiply_add", &wgsl(), &layout);
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

/// The kernel's WGSL, its rounds written out.
pub(crate) fn wgsl() -> String {
    let mut rounds = String::new();
    for _ in 0..ROUNDS {
        for chain in 0..CHAINS {
            let _ = writeln!(rounds, "        a{chain} = fma(a{chain}, m, c);");
        }
    }
    Template::new(shaders::PEAK_MULTIPLY_ADD)
        .set("ROUNDS", rounds)
        .finish()
}
