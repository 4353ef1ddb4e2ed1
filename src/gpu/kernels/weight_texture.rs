//! The pipeline that copies W_hh from the training parameters into the texture the register
//! recurrences load it from (`shaders/weight_texture.wgsl`; why a texture:
//! `gpu::training::recurrent_weights`).

use crate::gpu::counters::Counters;
use crate::shaders;

use super::{compute_pipeline, storage_entry, storage_entry_unsized};

/// Invocations of a workgroup (one per texel), as the shader declares.
const WORKGROUP: u32 = 64;

/// The texture's format: a texel is four consecutive f32 of a row of W_hh.
pub(crate) const FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba32Float;

/// A texture of weights' texels in [`FORMAT`] (W_hh, or W_ih for the stationary
/// projection), (width, rows, layers), used as `usage` says (sampled by every kernel that
/// reads it; written by this kernel for training, or filled once by a model for inference).
pub(crate) fn texture_descriptor(
    (width, rows, layers): (u32, u32, u32),
    usage: wgpu::TextureUsages,
) -> wgpu::TextureDescriptor<'static> {
    wgpu::TextureDescriptor {
        label: Some("weights (texels)"),
        size: wgpu::Extent3d {
            width,
            height: rows,
            depth_or_array_layers: layers,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: FORMAT,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | usage,
        view_formats: &[],
    }
}

pub(crate) struct WeightTextureKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl WeightTextureKernel {
    pub fn new(device: &wgpu::Device, counters: &Counters) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("weight texture"),
            entries: &[
                // The parameters as vec4s.
                storage_entry_unsized(0, true),
                storage_entry(1, true),
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: FORMAT,
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                    },
                    count: None,
                },
            ],
        });
        let pipeline = compute_pipeline(
            device,
            counters,
            "weight texture",
            shaders::WEIGHT_TEXTURE,
            &layout,
        );
        WeightTextureKernel { layout, pipeline }
    }

    /// A bind group copying from `params` into `texture` (a storage view of every layer)
    /// as `table` says (`weight_texture.wgsl`'s `table`).
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        params: &wgpu::Buffer,
        table: &wgpu::Buffer,
        texture: &wgpu::TextureView,
    ) -> wgpu::BindGroup {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("weight texture"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: table.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(texture),
                },
            ],
        })
    }

    /// Records the copy of `texels` texels a layer into `layers` layers, in a pass of its own.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bind_group: &wgpu::BindGroup,
        texels: u32,
        layers: u32,
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("weight texture"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(texels.div_ceil(WORKGROUP), layers, 1);
    }
}
