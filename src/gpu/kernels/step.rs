//! The Elman per-step pipelines: the unit kernel, its block forms and the wavefront.

use crate::gpu::block_loop;
use crate::gpu::counters::Counters;
use crate::shaders::{self, WeightPrecision};

use super::projection::ProjectionBindings;
use super::weight_texture::texture_descriptor;
use super::{
    ProjectionParams, StepGrid, StepIndex, StepLayerParams, bind_group_entries, compute_pipeline,
    size_of, storage_entry, storage_entry_unsized, texture_entry, uniform_entry,
};

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
    /// A 1×1 texture bound as W_hh's texels (binding 10) where a layer has none: only
    /// persistent kernels reading W_hh from a texture declare that binding.
    placeholder_texture: wgpu::TextureView,
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

/// The binding of W_hh's texels in both layouts (after the projection's 6..9).
pub(crate) const RECURRENT_TEXTURE_BINDING: u32 = 10;

/// The binding of W_ih's texels in the layout of kernels reading their input, for those that
/// project ahead in the weight-stationary form (`gpu::ahead::AheadProjection::Stationary`).
pub(crate) const INPUT_TEXTURE_BINDING: u32 = 11;

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
    /// W_hh as texels, where the layer's persistent kernel reads them so
    /// (`GatedPersistentSpec::texture`).
    pub recurrent_texture: Option<&'a wgpu::TextureView>,
}

impl<'a> StepBindings<'a> {
    /// The entries of bindings 0..6 and of W_hh's texels (`placeholder` where the layer
    /// has none), in order (the step uniform through its dynamic offset, one `StepIndex`
    /// wide).
    fn entries(&self, placeholder: &'a wgpu::TextureView) -> Vec<wgpu::BindGroupEntry<'a>> {
        let resources = [
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
        ];
        let texture =
            wgpu::BindingResource::TextureView(self.recurrent_texture.unwrap_or(placeholder));
        (0..)
            .zip(resources)
            .chain([(RECURRENT_TEXTURE_BINDING, texture)])
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect()
    }
}

impl RecurrentStepKernel {
    pub(super) fn new(
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
                texture_entry(RECURRENT_TEXTURE_BINDING, wgpu::TextureViewDimension::D2),
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
                texture_entry(INPUT_TEXTURE_BINDING, wgpu::TextureViewDimension::D2),
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
        let placeholder_texture = device
            .create_texture(&texture_descriptor((1, 1, 1), wgpu::TextureUsages::empty()))
            .create_view(&Default::default());
        RecurrentStepKernel {
            layout,
            own_input_layout,
            placeholder_texture,
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
    /// step's buffers, then the projection's (whose P must be the step's), and W_ih's texels
    /// where the layer's model has them.
    pub fn own_input_bind_group(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        step: StepBindings<'_>,
        projection: ProjectionBindings<'_>,
        input_texels: Option<&wgpu::TextureView>,
    ) -> wgpu::BindGroup {
        debug_assert_eq!(step.p, projection.p);
        let mut entries = step.entries(&self.placeholder_texture);
        let projection = [
            projection.params.as_entire_binding(),
            projection.x.as_entire_binding(),
            projection.weight.as_entire_binding(),
            projection.bias.as_entire_binding(),
        ];
        let texels =
            wgpu::BindingResource::TextureView(input_texels.unwrap_or(&self.placeholder_texture));
        entries.extend(
            (6..)
                .zip(projection)
                .chain([(INPUT_TEXTURE_BINDING, texels)])
                .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource }),
        );
        bind_group_entries(
            device,
            counters,
            "persistent kernel reading its input",
            self.own_input_layout.as_ref().unwrap_or(&self.layout),
            &entries,
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

    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        b: StepBindings<'_>,
    ) -> wgpu::BindGroup {
        bind_group_entries(
            device,
            counters,
            "recurrent_step",
            &self.layout,
            &b.entries(&self.placeholder_texture),
        )
    }

    /// Records steps `steps` of one layer (step s's uniform sits at `s · step_stride` bytes
    /// of the steps buffer) with the block kernel (`blocks`, H a multiple of four; the plan
    /// decides, see `plan::elman_blocks_pay`) or the one-unit-per-invocation kernel.
    pub fn encode_steps(
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
    pub(super) fn new(size: usize, compile: impl Fn(usize) -> wgpu::ComputePipeline) -> Self {
        let forms = block_loop::SUBGROUP_BLOCK_SEQUENCES
            .iter()
            .map(|&sequences| (sequences, compile(sequences)))
            .collect();
        SubgroupBlocks { size, forms }
    }

    /// The form for `batch` sequences: its pipeline and its sequences an invocation. (Any
    /// form computes the same results; `block_sequences` picks the cheapest.)
    pub(super) fn for_batch(&self, batch: u32) -> (&wgpu::ComputePipeline, u32) {
        let wanted = block_loop::block_sequences(batch);
        let (sequences, pipeline) = self
            .forms
            .iter()
            .find(|(sequences, _)| *sequences == wanted)
            .unwrap_or(&self.forms[0]);
        (pipeline, *sequences as u32)
    }
}
