//! Where WGSL enters the crate: one constant per file in `shaders/`, and [`Template`], the one
//! way a kernel's source is filled in from them.

pub(crate) use crate::precision::WeightPrecision;

/// `shaders/common.wgsl`: the declarations every recurrent kernel shares (the weights'
/// element type, `Layer`, `Step`, the logistic function), put where a template says
/// `{{COMMON}}`.
pub(crate) const COMMON: &str = include_str!("../shaders/common.wgsl");

/// `shaders/input_projection.wgsl`: the batched input projection GEMM.
pub(crate) const INPUT_PROJECTION: &str = include_str!("../shaders/input_projection.wgsl");

/// `shaders/recurrent_step.wgsl`: one fused recurrent timestep.
pub(crate) const RECURRENT_STEP: &str = include_str!("../shaders/recurrent_step.wgsl");

/// `shaders/recurrent_block.wgsl`: the template of the same timestep in 4 × 4 blocks, for H a
/// multiple of 4, filled in by `gpu::block_loop`.
pub(crate) const RECURRENT_BLOCK: &str = include_str!("../shaders/recurrent_block.wgsl");

/// `shaders/wavefront_block.wgsl`: the template of every layer of a stacked RNN advancing in
/// one dispatch, filled in by `gpu::block_loop`.
pub(crate) const WAVEFRONT_BLOCK: &str = include_str!("../shaders/wavefront_block.wgsl");

/// `shaders/gated_block.wgsl`: the template of the gated timestep for four sequences an
/// invocation, filled in by `gpu::block_loop`.
pub(crate) const GATED_BLOCK: &str = include_str!("../shaders/gated_block.wgsl");

/// `shaders/gated_step.wgsl`: one fused LSTM or GRU timestep, and an LSTM's projection of h.
pub(crate) const GATED_STEP: &str = include_str!("../shaders/gated_step.wgsl");

/// `shaders/gated_persistent.wgsl`: the template of the persistent LSTM / GRU kernel, filled
/// in per (cell, sizes, lanes) by `gpu::gated_persistent`.
pub(crate) const GATED_PERSISTENT: &str = include_str!("../shaders/gated_persistent.wgsl");

/// `shaders/peak_multiply_add.wgsl`: register-resident multiply-add chains, the adapter's
/// ceiling (`gpu::kernels::peak`).
pub(crate) const PEAK_MULTIPLY_ADD: &str = include_str!("../shaders/peak_multiply_add.wgsl");

/// `shaders/projection_stationary.wgsl`: the weight-stationary input projection, a template
/// (`gpu::kernels::stationary`).
pub(crate) const PROJECTION_STATIONARY: &str =
    include_str!("../shaders/projection_stationary.wgsl");

/// `shaders/projection_subgroup.wgsl`: the template of the subgroup projection, filled in per
/// subgroup size by `gpu::projection`.
pub(crate) const PROJECTION_SUBGROUP: &str = include_str!("../shaders/projection_subgroup.wgsl");

/// `shaders/projection_tile.wgsl`: one subgroup's tile of the projection, the library both the
/// subgroup projection and the persistent recurrence (projecting ahead) include.
pub(crate) const PROJECTION_TILE: &str = include_str!("../shaders/projection_tile.wgsl");

/// `shaders/persistent_recurrence.wgsl`: the template of the persistent recurrence kernel,
/// filled in per hidden size by `gpu::persistent`.
pub(crate) const PERSISTENT_RECURRENCE: &str =
    include_str!("../shaders/persistent_recurrence.wgsl");

/// `shaders/train_step.wgsl`: the training forward and backward steps of every cell, for
/// any size (`{{TRAIN_UNIT}}` filled by [`train_step`]).
pub(crate) const TRAIN_STEP: &str = include_str!("../shaders/train_step.wgsl");

/// `shaders/train_gemm_params.wgsl`: a training GEMM operation's uniforms and summing slice
/// (`{{GEMM_PARAMS}}`), for the GEMM kernels and the one-dispatch programs.
pub(crate) const TRAIN_GEMM_PARAMS: &str = include_str!("../shaders/train_gemm_params.wgsl");

/// `shaders/train_gemm_common.wgsl`: what both training GEMMs share (`{{GEMM_COMMON}}`).
pub(crate) const TRAIN_GEMM_COMMON: &str = include_str!("../shaders/train_gemm_common.wgsl");

/// `shaders/train_gemm_subgroup.wgsl`: the template of the training GEMM for one-subgroup
/// workgroups, filled in per subgroup size by `gpu::kernels::training`.
pub(crate) const TRAIN_GEMM_SUBGROUP: &str = include_str!("../shaders/train_gemm_subgroup.wgsl");

/// `shaders/train_unit.wgsl`: the declarations every training recurrence kernel shares
/// (`{{TRAIN_UNIT}}`).
pub(crate) const TRAIN_UNIT: &str = include_str!("../shaders/train_unit.wgsl");

/// `shaders/train_subgroup.wgsl`: the template of the training recurrence with W_hh in
/// registers, filled in per cell and hidden size by `gpu::training::subgroup`.
pub(crate) const TRAIN_SUBGROUP: &str = include_str!("../shaders/train_subgroup.wgsl");

/// The training step kernels' source, with the tiled persistent kernels' `tiles`
/// (`gpu::kernels::sequence_tiles`).
pub(crate) fn train_step(tiles: &str) -> String {
    Template::new(TRAIN_STEP)
        .set("TRAIN_UNIT", train_unit())
        .set("SEQUENCE_TILES", tiles)
        .finish()
}

/// The shared declarations, `Unit` and `Step` the uniforms each dispatch is given.
pub(crate) fn train_unit() -> String {
    TRAIN_UNIT.replace(
        "{{UNIT_BINDINGS}}",
        "@group(0) @binding(0) var<uniform> u: Unit;\n@group(0) @binding(1) var<uniform> step: Step;",
    )
}

/// The shared declarations, `Unit` and `Step` private values a one-dispatch program sets
/// before each operation.
pub(crate) fn train_unit_private() -> String {
    TRAIN_UNIT.replace(
        "{{UNIT_BINDINGS}}",
        "var<private> u: Unit;\nvar<private> step: Step;",
    )
}

/// `shaders/train_program.wgsl`: a small training program run by one subgroup in one
/// dispatch (filled by `gpu::train_subgroup`).
pub(crate) const TRAIN_PROGRAM: &str = include_str!("../shaders/train_program.wgsl");

/// `shaders/train_gemm.wgsl`: the template of the training's strided GEMM, filled in per
/// (A, B, C) buffers by `gpu::kernels::training`.
pub(crate) const TRAIN_GEMM: &str = include_str!("../shaders/train_gemm.wgsl");

/// `shaders/loss.wgsl`: MSE and cross-entropy losses and their gradients (see [`loss`]).
pub(crate) const LOSS: &str = include_str!("../shaders/loss.wgsl");

/// `shaders/loss_common.wgsl`: a loss pass's uniforms and what one invocation of it computes
/// (`{{LOSS_COMMON}}`), for the loss kernels and the one-dispatch training iterations.
pub(crate) const LOSS_COMMON: &str = include_str!("../shaders/loss_common.wgsl");

/// The optimizer kernels' source for update rule `rule` (`UpdateRule as u32`).
pub(crate) fn optim(rule: u32) -> String {
    Template::new(OPTIM).set("RULE", rule.to_string()).finish()
}

/// The loss kernels' source.
pub(crate) fn loss() -> String {
    Template::new(LOSS).set("LOSS_COMMON", LOSS_COMMON).finish()
}

/// `shaders/weight_texture.wgsl`: W_hh copied from the training parameters into the texture
/// the register recurrences load it from.
pub(crate) const WEIGHT_TEXTURE: &str = include_str!("../shaders/weight_texture.wgsl");

/// `shaders/optim.wgsl`: optimizer steps and gradient clipping.
pub(crate) const OPTIM: &str = include_str!("../shaders/optim.wgsl");

/// A WGSL template being filled in: [`set`](Self::set) puts text into each `{{NAME}}` hole,
/// and [`finish`](Self::finish) refuses (in debug builds, which the tests are) to hand over a
/// source with a hole left: a forgotten hole is a bug of the generator, caught where it is
/// made instead of as a WGSL parse error far away. `{{COMMON}}` is filled on creation.
#[must_use]
pub(crate) struct Template {
    text: String,
}

impl Template {
    pub fn new(text: &str) -> Self {
        Template {
            text: text.replace("{{COMMON}}", COMMON),
        }
    }

    /// Puts `value` into every `{{hole}}`.
    pub fn set(self, hole: &str, value: impl AsRef<str>) -> Self {
        Template {
            text: self
                .text
                .replace(&format!("{{{{{hole}}}}}"), value.as_ref()),
        }
    }

    /// The finished source.
    pub fn finish(self) -> String {
        debug_assert!(
            unfilled_hole(&self.text).is_none(),
            "a WGSL template was left with the hole {} unfilled",
            unfilled_hole(&self.text).unwrap_or_default()
        );
        self.text
    }
}

/// The first `{{NAME}}` left in `source`, if any.
pub(crate) fn unfilled_hole(source: &str) -> Option<&str> {
    let start = source.find("{{")?;
    let end = source[start..]
        .find("}}")
        .map_or(source.len(), |e| start + e + 2);
    Some(&source[start..end])
}

/// A fixed shader with the shared declarations filled in.
pub(crate) fn fixed(text: &str) -> String {
    Template::new(text).finish()
}

/// The line every weight-reading shader declares its weights' element type with.
const F32_WEIGHTS: &str = "alias weight_t = f32;";

/// `source` with its weights stored as `precision`: f16 enables the extension and changes the
/// element type, nothing else (each read converts to f32).
pub(crate) fn with_weights(source: &str, precision: WeightPrecision) -> std::borrow::Cow<'_, str> {
    match precision {
        WeightPrecision::F32 => source.into(),
        WeightPrecision::F16 => {
            // `enable` must precede every declaration.
            format!(
                "enable f16;\n{}",
                source.replace(F32_WEIGHTS, "alias weight_t = f16;")
            )
            .into()
        }
    }
}

/// Parses and validates `source` with naga, panicking with the error shown in the source: the
/// generators' unit tests.
#[cfg(test)]
pub(crate) fn assert_valid(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
}

#[cfg(test)]
mod tests {
    use super::{Template, unfilled_hole};

    #[test]
    fn every_generated_source_is_filled_and_valid() {
        let sources = crate::testing::shader_sources();
        assert!(
            sources.len() > 40,
            "only {} sources enumerated",
            sources.len()
        );
        for (name, source) in &sources {
            assert_eq!(unfilled_hole(source), None, "{name}");
            super::assert_valid(name, source);
        }
    }

    #[test]
    #[should_panic(expected = "the hole {{ROWS}} unfilled")]
    #[cfg(debug_assertions)]
    fn a_hole_left_unfilled_fails() {
        let _ = Template::new("const A = {{LANES}}u;\nconst B = {{ROWS}}u;")
            .set("LANES", "4")
            .finish();
    }

    #[test]
    fn holes_are_filled_everywhere_they_appear() {
        let source = Template::new("{{N}} + {{N}}; {{COMMON}}")
            .set("N", "7")
            .finish();
        assert!(source.starts_with("7 + 7; "));
        assert!(source.contains("struct Layer"));
    }
}
