//! The input projection's pipelines: the GEMM over all rows of a layer, and its subgroup form.

use crate::gpu::counters::Counters;
use crate::gpu::projection::SubgroupProjection;
use crate::shaders::{self, WeightPrecision};

use super::{
    ProjectionParams, bind_group, compute_pipeline, size_of, storage_entry, storage_entry_unsized,
    uniform_entry,
};

/// `input_projection.wgsl`: P = X·Wᵀ + bias over all rows of a layer; on adapters with a
/// fixed subgroup size, its subgroup form (`projection_subgroup.wgsl`) with the same bindings.
/// There a layer whose projection fits the weight-stationary kernel runs that instead
/// (`stationary.rs`); this one serves the rest, and a model's Linear head.
pub(crate) struct ProjectionKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    /// The subgroup form, when the adapter allows it.
    subgroup: Option<SubgroupForms>,
}

/// The subgroup projection, by [reads vec4s along K][stores vec4s of P].
struct SubgroupForms {
    forms: [[wgpu::ComputePipeline; 2]; 2],
    /// (columns, rows) of P per workgroup.
    tile: (u32, u32),
}

/// Rows and columns of P covered by one workgroup (8×8 invocations × 4×4 outputs each).
pub(crate) const PROJECTION_TILE: u32 = 32;

/// The buffers one projection dispatch binds.
#[derive(Clone, Copy)]
pub(crate) struct ProjectionBindings<'a> {
    pub params: &'a wgpu::Buffer,
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    pub p: &'a wgpu::Buffer,
}

impl ProjectionKernel {
    pub(super) fn new(
        device: &wgpu::Device,
        counters: &Counters,
        subgroup: Option<usize>,
        weights: WeightPrecision,
    ) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("input_projection"),
            entries: &[
                uniform_entry(0, size_of::<ProjectionParams>(), false),
                // X and W: f32s, or vec4s for the subgroup form when K allows; sizes are
                // checked against the pipeline that binds them.
                storage_entry_unsized(1, true),
                storage_entry_unsized(2, true),
                storage_entry(3, true),
                // P: f32s, or vec4s for the subgroup form where its layout allows.
                storage_entry_unsized(4, false),
            ],
        });
        let pipeline = compute_pipeline(
            device,
            counters,
            "input_projection",
            &shaders::with_weights(shaders::INPUT_PROJECTION, weights),
            &layout,
        );
        let subgroup = subgroup.and_then(|size| {
            let form = |vec4_k, vec4_p| {
                SubgroupProjection::for_subgroup(size, vec4_k, vec4_p).map(|spec| {
                    let source = shaders::with_weights(&spec.wgsl(), weights).into_owned();
                    (
                        compute_pipeline(device, counters, "projection_subgroup", &source, &layout),
                        spec.tile(),
                    )
                })
            };
            let (scalar, tile) = form(false, false)?;
            let forms = [
                [scalar, form(false, true)?.0],
                [form(true, false)?.0, form(true, true)?.0],
            ];
            Some(SubgroupForms { forms, tile })
        });
        ProjectionKernel {
            layout,
            pipeline,
            subgroup,
        }
    }

    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        b: ProjectionBindings<'_>,
    ) -> wgpu::BindGroup {
        bind_group(
            device,
            counters,
            "input_projection",
            &self.layout,
            &[
                b.params.as_entire_binding(),
                b.x.as_entire_binding(),
                b.weight.as_entire_binding(),
                b.bias.as_entire_binding(),
                b.p.as_entire_binding(),
            ],
        )
    }

    /// Workgroups of the portable kernel for a (rows × cols) output: (column tiles, row
    /// tiles). The subgroup form's tiles are larger, so this bounds both.
    pub fn workgroups(rows: u32, cols: u32) -> (u32, u32) {
        (
            cols.div_ceil(PROJECTION_TILE),
            rows.div_ceil(PROJECTION_TILE),
        )
    }

    /// Records the projection `params` describes, in its fastest form on this device.
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
    ) {
        self.encode_with(pass, group, params, self.subgroup.is_some());
    }

    /// Records the projection of the first `rows` rows only.
    pub fn encode_rows(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
        rows: u32,
    ) {
        // The grid follows the rows; the kernel still sees them all (strides, bounds).
        let first = ProjectionParams {
            rows: rows.min(params.rows),
            ..*params
        };
        self.encode_with(pass, group, &first, self.subgroup.is_some());
    }

    /// Records the projection in the subgroup form (when the adapter has it and
    /// `use_subgroup`) or the portable one; tests run both.
    pub fn encode_with(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        group: &wgpu::BindGroup,
        params: &ProjectionParams,
        use_subgroup: bool,
    ) {
        let (rows, cols) = (params.rows, params.cols);
        let (pipeline, (x, y)) = match &self.subgroup {
            Some(forms) if use_subgroup => {
                let k = usize::from(params.vec4_aligned());
                let p = usize::from(params.p_vec4_aligned());
                let pipeline = &forms.forms[k][p];
                let (tile_cols, tile_rows) = forms.tile;
                (
                    pipeline,
                    (cols.div_ceil(tile_cols), rows.div_ceil(tile_rows)),
                )
            }
            _ => (&self.pipeline, Self::workgroups(rows, cols)),
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(x, y, 1);
    }

    /// Whether the subgroup form is available on this device.
    #[cfg(test)]
    pub fn has_subgroup_form(&self) -> bool {
        self.subgroup.is_some()
    }
}
