//! The model's weights on the GPU, uploaded once when the model is made: per layer W_ih, the
//! projection's bias and what the step kernels read beside the state; the wavefront's weights
//! and a Linear head where the model has them.

use crate::gpu::architecture::{Architecture, Cell, UnitWeights};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::stationary::texture_size;
use crate::gpu::kernels::weight_texture::texture_descriptor;
use crate::gpu::persistent_specs::PersistentSpecs;
use crate::gpu::plan::{WAVEFRONT_MIN_BATCH, wavefront_pays};
use crate::head::Linear;
use crate::precision::WeightPrecision;

/// One layer's weights on the GPU, both directions stacked.
pub(crate) struct LayerBuffers {
    /// W_ih of every direction, (D·G·H, I_k) row-major.
    pub w_ih: wgpu::Buffer,
    /// The projection's bias of every direction, (D·G·H); zeros without bias.
    pub bias: wgpu::Buffer,
    /// What the step kernels read besides the state: W_hh of every direction, (D, G·H, H_out)
    /// (for the persistent kernel padded to (D, H_pad, H_pad)); then, for a GRU, b_hn (D, H);
    /// then, for a projected LSTM, W_hr (D, H_out, H). One buffer keeps the kernels within
    /// four storage bindings.
    pub recurrent: wgpu::Buffer,
    /// Where b_hn and W_hr start in `recurrent`, in elements.
    pub step_bias_offset: usize,
    pub hr_offset: usize,
    /// W_hh again as texels, where the persistent kernel loads them so
    /// (`GatedPersistentSpec::texture`).
    pub recurrent_texture: Option<wgpu::TextureView>,
    /// W_ih again as texels, (D·G·H) rows of I_k / 4, where the layer's projection runs the
    /// weight-stationary kernel (`GpuContext::projects_stationary`).
    pub w_ih_texture: Option<wgpu::TextureView>,
}

/// A Linear head on the GPU.
pub(crate) struct HeadBuffers {
    /// (out_features, D·H_out) row-major.
    pub weight: wgpu::Buffer,
    /// (out_features); zeros without bias.
    pub bias: wgpu::Buffer,
    pub out_features: usize,
}

/// Everything a model keeps on the GPU.
pub(crate) struct ModelBuffers {
    pub layers: Vec<LayerBuffers>,
    /// Every layer's weights as the wavefront reads them, when a stacked unidirectional
    /// Elman RNN runs per step as a wavefront (see `wavefront_block.wgsl`).
    pub wavefront: Option<wgpu::Buffer>,
    pub head: Option<HeadBuffers>,
}

impl ModelBuffers {
    /// Uploads `units` (ordered `layer · D + direction`) for `arch`, laid out for the
    /// `persistent` kernel where the model runs one, in `precision`. The caller holds the GL
    /// guard and an error scope.
    pub fn upload(
        ctx: &GpuContext,
        arch: &Architecture,
        units: &[UnitWeights],
        persistent: Option<PersistentSpecs>,
        precision: WeightPrecision,
    ) -> Self {
        let upload = |label: &str, data: &[u8]| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        // Weights in the model's precision; biases the projection adds stay f32.
        let weights = |label: &str, data: &[f32]| upload(label, &precision.encode(data));
        let f32s = |label: &str, data: &[f32]| upload(label, bytemuck::cast_slice(data));
        // The texels of W_hh and W_ih hold what the storage buffers hold: the weights in the
        // model's precision, as f32.
        let texels = |width, rows, data: &[f32]| {
            let rounded: Vec<f32> = data.iter().map(|&w| precision.round(w)).collect();
            upload_texture(ctx, width, rows, &rounded)
        };
        let (d, h) = (arch.directions, arch.hidden_size);
        let cols = arch.projection_cols();
        let layers = units
            .chunks(d)
            .enumerate()
            .map(|(k, layer)| {
                let stack = |part: &dyn Fn(&UnitWeights) -> Vec<f32>| -> Vec<f32> {
                    layer.iter().flat_map(part).collect()
                };
                let mut recurrent = stack(&|u| u.weight_hh.clone());
                let step_bias = stack(&|u| u.step_bias.clone().unwrap_or_default());
                let step_bias_offset;
                let mut recurrent_texture = None;
                if let Some(PersistentSpecs::Gated(spec)) = &persistent {
                    (recurrent, step_bias_offset) = spec.pad_weights(&recurrent, &step_bias, d);
                    if spec.texture {
                        // The padded W_hh, (D·G·H_pad) rows of H_pad / 4 texels.
                        let (width, rows) = spec.texture_size(d);
                        recurrent_texture =
                            Some(texels(width, rows, &recurrent[..step_bias_offset]));
                    }
                } else {
                    if let Some(PersistentSpecs::Elman(spec)) = &persistent {
                        recurrent = spec.pad_weights(&recurrent, d);
                        if spec.texture {
                            // The padded W_hh, (D·H_pad) rows of H_pad / 4 texels.
                            let (width, rows) = spec.texture_size(d);
                            recurrent_texture = Some(texels(width, rows, &recurrent));
                        }
                    }
                    step_bias_offset = recurrent.len();
                    recurrent.extend(step_bias);
                }
                let hr_offset = recurrent.len();
                recurrent.extend(stack(&|u| u.weight_hr.clone().unwrap_or_default()));
                let w_ih = stack(&|u| u.weight_ih.clone());
                let depth = arch.layer_input_size(k);
                let w_ih_texture = ctx.projects_stationary(depth, cols).then(|| {
                    let (width, rows) = texture_size(depth as u32, cols as u32);
                    texels(width, rows, &w_ih)
                });
                LayerBuffers {
                    w_ih: weights("weight_ih", &w_ih),
                    bias: f32s("projection bias", &stack(&|u| u.projection_bias.clone())),
                    recurrent: weights("recurrent weights", &recurrent),
                    step_bias_offset,
                    hr_offset,
                    recurrent_texture,
                    w_ih_texture,
                }
            })
            .collect();
        // A stacked unidirectional Elman RNN that runs per step may advance every layer in
        // one dispatch per wave (T + L − 1 dispatches instead of T·L), for the batch sizes
        // where that pays (see `wavefront_pays`).
        let wavefront = (matches!(arch.cell, Cell::Rnn(_))
            && persistent.is_none()
            && d == 1
            && arch.num_layers > 1
            && h % 4 == 0
            // Whether it pays for some batch: the smallest one it accepts is the likeliest.
            && wavefront_pays(h, WAVEFRONT_MIN_BATCH))
        .then(|| weights("wavefront weights", &wavefront_weights(units)));
        ModelBuffers {
            layers,
            wavefront,
            head: None,
        }
    }

    /// Uploads a Linear head (checked by the caller).
    pub fn upload_head(ctx: &GpuContext, head: &Linear) -> HeadBuffers {
        let upload = |label: &str, data: &[f32]| {
            ctx.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        HeadBuffers {
            weight: upload("head weight", &head.weight),
            bias: upload("head bias", &head.bias_or_zeros()),
            out_features: head.out_features,
        }
    }
}

/// A texture of `width` × `rows` texels filled with `texels` (row-major, four f32 a texel),
/// and its view.
pub(crate) fn upload_texture(
    ctx: &GpuContext,
    width: u32,
    rows: u32,
    texels: &[f32],
) -> wgpu::TextureView {
    let texture = ctx.device().create_texture(&texture_descriptor(
        (width, rows, 1),
        wgpu::TextureUsages::COPY_DST,
    ));
    ctx.queue().write_texture(
        texture.as_image_copy(),
        bytemuck::cast_slice(texels),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(16 * width),
            rows_per_image: None,
        },
        wgpu::Extent3d {
            width,
            height: rows,
            depth_or_array_layers: 1,
        },
    );
    texture.create_view(&Default::default())
}

/// The weights of a stacked unidirectional RNN as `wavefront_block.wgsl` reads them: W_hh of
/// layer 0, then for every layer above W_ih, W_hh and b_ih + b_hh.
fn wavefront_weights(units: &[UnitWeights]) -> Vec<f32> {
    let mut all = units[0].weight_hh.clone();
    for unit in &units[1..] {
        all.extend_from_slice(&unit.weight_ih);
        all.extend_from_slice(&unit.weight_hh);
        all.extend_from_slice(&unit.projection_bias);
    }
    all
}
