//! W_hh as a texture, where the register recurrences (`train_subgroup.wgsl`) load it from.
//!
//! Those kernels load a lane's rows (or columns) of W_hh into private values once per
//! dispatch, hundreds of vec4s, every load written out. From a storage buffer each load is, in
//! llvmpipe's code, a loop over the lanes with a branch per component; hundreds of such loops
//! with hundreds of values live across them are what took LLVM most of the compile time (an
//! LSTM with H = 64 in one subgroup: 22 s for the forward, 29 s for the backward). A texel
//! fetch is straight-line code: the same kernels compile in 2.2 and 1.9 s. The texture is a
//! copy, refreshed from the parameters before every program that runs these kernels (one
//! small dispatch), so that it always holds the weights the storage buffer holds: optimizer
//! steps, loaded weights and gradients checks see no difference.

use std::sync::Arc;

use crate::config::RnnConfig;
use crate::error::Result;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::weight_texture::texture_descriptor;
use crate::train::ParamLayout;

/// A view of every layer of `texture`, as the kernels bind it.
fn array_view(texture: &wgpu::Texture) -> wgpu::TextureView {
    texture.create_view(&wgpu::TextureViewDescriptor {
        dimension: Some(wgpu::TextureViewDimension::D2Array),
        ..Default::default()
    })
}

/// A texture of W_hh's texels, (width, height, layers), that the copy kernel writes (and the
/// tests read back).
fn texture_array(device: &wgpu::Device, size: (u32, u32, u32)) -> wgpu::Texture {
    device.create_texture(&texture_descriptor(
        size,
        wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_SRC,
    ))
}

/// A view of a 1×1 texture for bind groups whose kernels read no weight texels (the GEMMs'
/// tests).
#[cfg(test)]
pub(crate) fn placeholder_view(device: &wgpu::Device) -> wgpu::TextureView {
    array_view(&texture_array(device, (1, 1, 1)))
}

/// The texture of one trainer's W_hh, and what refreshes it.
pub(crate) struct RecurrentWeights {
    /// Read back by the tests (the view keeps it alive otherwise).
    #[cfg(test)]
    texture: wgpu::Texture,
    /// The sampled view the training bind groups bind.
    view: wgpu::TextureView,
    /// What the copy needs, where the model's W_hh fits a texture (else a placeholder texture
    /// that no kernel reads).
    refresh: Option<Refresh>,
}

struct Refresh {
    bind_group: wgpu::BindGroup,
    texels: u32,
    layers: u32,
}

impl RecurrentWeights {
    /// The texture for `config`'s W_hh (every layer and direction), laid out as
    /// `weight_texture.wgsl` says, and the copy from `params` (laid out as `layout`): where
    /// the device's texture limits hold it and the register recurrences could run (H in
    /// fours, no projection); else a 1×1 placeholder.
    pub fn new(
        ctx: &GpuContext,
        config: &RnnConfig,
        layout: &ParamLayout,
        params: &wgpu::Buffer,
    ) -> Result<Arc<Self>> {
        let hidden = config.hidden_size;
        let (width, rows) = (hidden / 4, config.gate_size());
        let layers = layout.units.len();
        let fits = hidden % 4 == 0
            && config.proj_size == 0
            && ctx.holds_texture((width as u32, rows as u32, layers as u32));
        let size = match fits {
            true => (width as u32, rows as u32, layers as u32),
            false => (1, 1, 1),
        };
        let device = ctx.device();
        let scopes = ctx.error_scopes();
        let texture = texture_array(device, size);
        let view = array_view(&texture);
        let refresh = match fits {
            true => {
                let mut table = vec![hidden as u32, width as u32, rows as u32];
                table.extend(layout.units.iter().map(|unit| unit.weight_hh as u32));
                let table = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("recurrent weights' table"),
                    contents: bytemuck::cast_slice(&table),
                    usage: wgpu::BufferUsages::STORAGE,
                });
                let kernels = ctx.training_kernels()?;
                let storage = array_view(&texture);
                Some(Refresh {
                    bind_group: kernels
                        .weight_texture
                        .bind_group(device, params, &table, &storage),
                    texels: (width * rows) as u32,
                    layers: layers as u32,
                })
            }
            false => None,
        };
        scopes.finish(ctx, "making the recurrent weights' texture")?;
        Ok(Arc::new(RecurrentWeights {
            #[cfg(test)]
            texture,
            view,
            refresh,
        }))
    }

    /// Whether the texture holds the model's W_hh (the register recurrences may load it).
    pub fn holds_weights(&self) -> bool {
        self.refresh.is_some()
    }

    pub fn view(&self) -> &wgpu::TextureView {
        &self.view
    }

    /// Records the copy of the parameters' W_hh into the texture (nothing for a placeholder).
    pub fn record_refresh(
        &self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        if let Some(refresh) = &self.refresh {
            let kernels = ctx.training_kernels()?;
            kernels.weight_texture.record(
                encoder,
                &refresh.bind_group,
                refresh.texels,
                refresh.layers,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RecurrentWeights;
    use crate::config::{Nonlinearity, RnnConfig, RnnMode};
    use crate::train::ParamLayout;

    /// The copy against its CPU twin: every layer's and direction's W_hh, row by row, four
    /// columns a texel, exactly; rows of 1, 3, 5 and 65 texels (texel counts that are not
    /// multiples of the workgroup), every cell, two layers, both directions.
    #[test]
    fn texture_holds_every_w_hh() {
        let Some(ctx) = crate::testing::gpu("texture_holds_every_w_hh") else {
            return;
        };
        let device = ctx.device();
        for mode in [
            RnnMode::Rnn(Nonlinearity::Tanh),
            RnnMode::Lstm,
            RnnMode::Gru,
        ] {
            for hidden in [4, 12, 20, 260] {
                let config = RnnConfig {
                    num_layers: 2,
                    bidirectional: true,
                    ..RnnConfig::new(mode, 3, hidden)
                };
                let layout = ParamLayout::new(&config, None);
                let flat: Vec<f32> = (0..layout.len).map(|i| i as f32 * 0.5 - 7.0).collect();
                let params = ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytemuck::cast_slice(&flat),
                    usage: wgpu::BufferUsages::STORAGE,
                });
                let weights = RecurrentWeights::new(&ctx, &config, &layout, &params).unwrap();
                assert!(weights.holds_weights());
                let (width, rows, layers) = (hidden / 4, config.gate_size(), layout.units.len());
                let row_bytes = (width * 16).next_multiple_of(256);
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: (row_bytes * rows * layers) as u64,
                    usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                    mapped_at_creation: false,
                });
                let mut encoder = device.create_command_encoder(&Default::default());
                weights.record_refresh(&ctx, &mut encoder).unwrap();
                encoder.copy_texture_to_buffer(
                    weights.texture.as_image_copy(),
                    wgpu::TexelCopyBufferInfo {
                        buffer: &readback,
                        layout: wgpu::TexelCopyBufferLayout {
                            offset: 0,
                            bytes_per_row: Some(row_bytes as u32),
                            rows_per_image: Some(rows as u32),
                        },
                    },
                    weights.texture.size(),
                );
                ctx.queue().submit([encoder.finish()]);
                readback.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
                device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
                let got: Vec<f32> =
                    bytemuck::cast_slice(&readback.get_mapped_range(..).unwrap()).to_vec();
                for (z, unit) in layout.units.iter().enumerate() {
                    for row in 0..rows {
                        let at = (z * rows + row) * row_bytes / 4;
                        let want = &flat[unit.weight_hh + row * hidden..][..hidden];
                        assert_eq!(
                            &got[at..at + hidden],
                            want,
                            "{mode:?} H = {hidden}, layer·direction {z}, row {row}"
                        );
                    }
                }
            }
        }
    }
}
