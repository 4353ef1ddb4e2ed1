//! The gated (LSTM, GRU) per-step pipelines.

use crate::gpu::block_loop;
use crate::gpu::counters::Counters;
use crate::shaders::{self, WeightPrecision};

use super::step::{STEP_WORKGROUP, SubgroupBlocks};
use super::{StepGrid, compute_pipeline, entry_pipeline};

/// `gated_step.wgsl`: one fused LSTM or GRU timestep of one layer, both directions (entry
/// `gates`), and for a projected LSTM the projection of h that follows it (entry `project`);
/// `gated_block.wgsl`, the `gates` step for several sequences an invocation. Same bind group
/// layout as [`RecurrentStepKernel`].
pub(crate) struct GatedStepKernel {
    gates: wgpu::ComputePipeline,
    block: wgpu::ComputePipeline,
    /// The block kernel as one subgroup sharing h by broadcast, on adapters with a fixed
    /// subgroup size.
    block_subgroup: Option<SubgroupBlocks>,
    project: wgpu::ComputePipeline,
}

impl GatedStepKernel {
    pub(super) fn new(
        device: &wgpu::Device,
        counters: &Counters,
        layout: &wgpu::BindGroupLayout,
        weights: WeightPrecision,
        subgroup: Option<usize>,
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("gated_step"),
            source: wgpu::ShaderSource::Wgsl(
                shaders::with_weights(&shaders::fixed(shaders::GATED_STEP), weights)
                    .into_owned()
                    .into(),
            ),
        });
        GatedStepKernel {
            gates: entry_pipeline(device, counters, "gated_step", &module, "gates", layout),
            block: compute_pipeline(
                device,
                counters,
                "gated_block",
                &shaders::with_weights(&block_loop::gated_wgsl(None, 4), weights),
                layout,
            ),
            block_subgroup: subgroup.map(|size| {
                SubgroupBlocks::new(size, |sequences| {
                    let template = block_loop::gated_wgsl(Some(size), sequences);
                    let source = shaders::with_weights(&template, weights);
                    let label = format!("gated_block_subgroup_{sequences}");
                    compute_pipeline(device, counters, &label, &source, layout)
                })
            }),
            project: entry_pipeline(device, counters, "lstm_project", &module, "project", layout),
        }
    }

    /// Whether the block kernel can run a layer of `hidden` units and `state_size` features
    /// of h: both multiples of four (its vec4 reads of W_hh and of what follows it).
    pub fn blocks_fit(hidden: u32, state_size: u32) -> bool {
        hidden % 4 == 0 && state_size % 4 == 0
    }

    /// Records steps `steps` of one layer (bind groups of [`RecurrentStepKernel`]), in blocks
    /// when `blocks` (see [`blocks_fit`](Self::blocks_fit)); with `projected` (H_out), each
    /// step's gates are followed by the projection of h.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_steps(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        steps: std::ops::Range<u32>,
        step_stride: u32,
        grid: StepGrid,
        projected: Option<u32>,
        blocks: bool,
    ) {
        // The subgroup form where the adapter has it and h's rows tile into its chunks, for
        // as many sequences an invocation as suit the batch.
        let subgroup = self.block_subgroup.as_ref().filter(|blocks| {
            block_loop::subgroup_fits(blocks.size, projected.unwrap_or(grid.hidden) as usize)
        });
        let (gates, lanes, rows) = match subgroup {
            Some(forms) if blocks => {
                let (pipeline, sequences) = forms.for_batch(grid.batch);
                (pipeline, forms.size as u32, grid.batch.div_ceil(sequences))
            }
            _ if blocks => (
                &self.block,
                block_loop::GATED_PORTABLE_LANES,
                grid.batch.div_ceil(4),
            ),
            _ => (&self.gates, STEP_WORKGROUP, grid.batch),
        };
        for step in steps {
            pass.set_bind_group(0, group, &[step * step_stride]);
            pass.set_pipeline(gates);
            pass.dispatch_workgroups(grid.hidden.div_ceil(lanes), rows, grid.directions);
            if let Some(state_size) = projected {
                pass.set_pipeline(&self.project);
                pass.dispatch_workgroups(
                    state_size.div_ceil(STEP_WORKGROUP),
                    grid.batch,
                    grid.directions,
                );
            }
        }
    }
}
