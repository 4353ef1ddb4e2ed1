//! The persistent kernels' specialisations as one type: the context compiles and caches their
//! pipelines by it, and the plan derives a layer's kernel (projecting ahead, fusing its input)
//! from it.

use crate::gpu::ahead;
use crate::gpu::gated_persistent::GatedPersistentSpec;
use crate::gpu::kernels::ProjectionParams;
use crate::gpu::persistent::PersistentSpec;
use crate::shaders;

/// A persistent kernel's specialisation: the Elman or the gated kernel. The context caches
/// their pipelines by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PersistentSpecs {
    Elman(PersistentSpec),
    Gated(GatedPersistentSpec),
}

impl PersistentSpecs {
    /// The kernel for a forward of `batch` sequences: the Elman kernel tiles sequences into
    /// its workgroups where it is one subgroup; the gated kernel runs one a workgroup, and may
    /// split wide rows over more lanes for a batch than for one sequence.
    pub fn for_batch(self, batch: usize) -> Self {
        match self {
            PersistentSpecs::Elman(spec) => {
                PersistentSpecs::Elman(spec.with_batch_tile(spec.batch_tile_for(batch)))
            }
            PersistentSpecs::Gated(spec) => PersistentSpecs::Gated(spec.for_batch(batch)),
        }
    }

    /// Whether the kernel projects ahead in the weight-stationary form (reading W_ih's
    /// texels).
    pub fn projects_ahead_stationary(&self) -> bool {
        let form = match self {
            PersistentSpecs::Elman(spec) => spec.projects_ahead,
            PersistentSpecs::Gated(spec) => spec.projects_ahead,
        };
        matches!(form, Some(ahead::AheadProjection::Stationary { .. }))
    }

    /// Sequences per workgroup.
    pub fn batch_tile(&self) -> usize {
        match self {
            PersistentSpecs::Elman(spec) => spec.batch_tile,
            PersistentSpecs::Gated(_) => 1,
        }
    }

    /// The kernel and the timesteps per dispatch of a layer that projects ahead, where that
    /// pays (see [`ahead::plan`]; `texels`: the layer's model holds W_ih's texels).
    pub fn projecting_ahead(
        self,
        projection: &ProjectionParams,
        directions: usize,
        seq_len: usize,
        texels: bool,
    ) -> Option<(Self, usize)> {
        let shape = match self {
            PersistentSpecs::Elman(spec) => spec.ahead_shape(),
            PersistentSpecs::Gated(spec) => spec.ahead_shape(),
        };
        let (form, chunk) = ahead::plan(shape, projection, directions, seq_len, texels)?;
        let spec = match self {
            PersistentSpecs::Elman(spec) => PersistentSpecs::Elman(spec.projecting_ahead(form)),
            PersistentSpecs::Gated(spec) => PersistentSpecs::Gated(spec.projecting_ahead(form)),
        };
        Some((spec, chunk))
    }

    /// The kernel computing the layer's input projection itself, in each step, where that
    /// pays: an Elman kernel that is one subgroup (small states: x_t then costs what h_{t-1}
    /// costs, a slice per lane shared by subgroupBroadcast), reading x as vec4s, with an
    /// input no wider than the padded state (W_ih then stays in private values beside
    /// W_hh). Each step then does twice the multiply-adds but nothing is projected before the
    /// recurrence starts: on llvmpipe the projection GEMM runs its loads lane by lane with a
    /// branch per component, while this kernel loads W_ih once per dispatch.
    pub fn fusing_input(self, projection: &ProjectionParams) -> Option<Self> {
        let PersistentSpecs::Elman(spec) = self else {
            return None;
        };
        let input = projection.depth as usize;
        (spec.one_subgroup() && projection.vec4_aligned() && input <= spec.hidden_pad())
            .then(|| PersistentSpecs::Elman(spec.fusing_input(input)))
    }

    /// What compiling the kernel takes: its label, its WGSL for its weights' precision, and
    /// whether it reads the projection's bindings (projecting ahead or fusing its input: the
    /// bind group layout it needs).
    pub fn compile_inputs(&self) -> (&'static str, String, bool) {
        match self {
            PersistentSpecs::Elman(spec) => (
                "persistent_recurrence",
                shaders::with_weights(&spec.wgsl(), spec.weights).into_owned(),
                spec.projects_ahead.is_some() || spec.fused_input.is_some(),
            ),
            PersistentSpecs::Gated(spec) => (
                "gated_persistent",
                shaders::with_weights(&spec.wgsl(), spec.weights).into_owned(),
                spec.projects_ahead.is_some(),
            ),
        }
    }
}
