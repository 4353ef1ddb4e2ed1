//! Where WGSL enters the crate: one constant per file in `shaders/`.

pub(crate) use crate::precision::WeightPrecision;

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

/// The line every weight-reading shader declares its weights' element type with.
const F32_WEIGHTS: &str = "alias weight_t = f32;";

/// `source` with its weights stored as `precision`: f16 enables the extension and changes the
/// element type, nothing else (each read converts to f32).
pub(crate) fn with_weights(source: &str, precision: WeightPrecision) -> std::borrow::Cow<'_, str> {
    match precision {
        WeightPrecision::F32 => source.into(),
        WeightPrecision::F16 => {
            // `enable` must precede every declaration: the alias is the first one.
            source
                .replace(F32_WEIGHTS, "enable f16;\nalias weight_t = f16;")
                .into()
        }
    }
}

/// The persistent kernels projecting ahead, for representative sizes: they need 7 storage
/// buffers per stage, beyond wgpu's downlevel limits, and are compiled only where the device
/// allows them (see `gpu::kernels::OWN_INPUT_STORAGE_BUFFERS`).
pub(crate) fn beyond_downlevel_sources() -> Vec<(String, String)> {
    use crate::gpu::architecture::{Architecture, Cell};
    use crate::gpu::gated_persistent::GatedPersistentSpec;
    use crate::gpu::persistent::PersistentSpec;
    use crate::gpu::projection::SubgroupProjection;
    let mut sources = Vec::new();
    for (cell, hidden) in [(Cell::Lstm, 64), (Cell::Gru, 17), (Cell::Gru, 84)] {
        let arch = Architecture {
            cell,
            input_size: hidden,
            hidden_size: hidden,
            state_size: hidden,
            num_layers: 1,
            directions: 1,
        };
        let (Some(spec), Some(projection)) = (
            GatedPersistentSpec::for_arch(&arch, Some(8)),
            SubgroupProjection::for_subgroup(8, hidden % 4 == 0, hidden % 4 == 0),
        ) else {
            continue;
        };
        let spec = spec.projecting_ahead(projection);
        sources.push((format!("gated_persistent {spec:?}"), spec.wgsl()));
    }
    for hidden in [17, 64, 256] {
        for vec4_k in [false, true] {
            let base = PersistentSpec::for_hidden(hidden, Some(8));
            let Some(projection) = SubgroupProjection::for_subgroup(8, vec4_k, hidden % 4 == 0)
            else {
                continue;
            };
            let spec = base
                .with_batch_tile(base.batch_tile_for(4))
                .projecting_ahead(projection);
            sources.push((format!("persistent_recurrence {spec:?}"), spec.wgsl()));
        }
    }
    sources
}

/// Every shader source, by name (see `testing::shader_sources`).
pub(crate) fn all_sources() -> Vec<(String, String)> {
    use crate::gpu::architecture::{Architecture, Cell};
    use crate::gpu::gated_persistent::GatedPersistentSpec;
    use crate::gpu::persistent::PersistentSpec;
    let mut sources = vec![
        ("input_projection".into(), INPUT_PROJECTION.into()),
        ("recurrent_step".into(), RECURRENT_STEP.into()),
        (
            "wavefront_block".into(),
            crate::gpu::block_loop::wavefront_wgsl(),
        ),
        ("gated_step".into(), GATED_STEP.into()),
        (
            "gated_block".into(),
            crate::gpu::block_loop::gated_wgsl(None, 4),
        ),
        (
            "gated_block subgroup 8, 1 sequence".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 1),
        ),
        (
            "gated_block subgroup 8, 4 sequences".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 4),
        ),
        (
            "gated_block subgroup 8, 16 sequences".into(),
            crate::gpu::block_loop::gated_wgsl(Some(8), 16),
        ),
        (
            "recurrent_block".into(),
            crate::gpu::block_loop::elman_wgsl(None, 4),
        ),
        (
            "recurrent_block subgroup 8, 1 sequence".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 1),
        ),
        (
            "recurrent_block subgroup 8, 4 sequences".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 4),
        ),
        (
            "recurrent_block subgroup 8, 16 sequences".into(),
            crate::gpu::block_loop::elman_wgsl(Some(8), 16),
        ),
    ];
    for size in [8, 16, 32, 64] {
        for (vec4_k, vec4_p) in [(false, false), (false, true), (true, false), (true, true)] {
            if let Some(spec) =
                crate::gpu::projection::SubgroupProjection::for_subgroup(size, vec4_k, vec4_p)
            {
                sources.push((format!("projection_subgroup {spec:?}"), spec.wgsl()));
            }
        }
    }
    // The persistent kernel for representative hidden sizes, with and without subgroups.
    for hidden in [1, 3, 17, 64, 100, 256] {
        for subgroup in [None, Some(8), Some(32)] {
            let base = PersistentSpec::for_hidden(hidden, subgroup);
            // One sequence per workgroup, and the batch tile a batched forward uses.
            for tile in [1, base.batch_tile_for(16)] {
                let spec = base.with_batch_tile(tile);
                let name = format!("persistent_recurrence {spec:?}");
                // Wide states make the same kernel whatever the subgroup size.
                if !sources.iter().any(|(n, _)| *n == name) {
                    sources.push((name, spec.wgsl()));
                }
            }
        }
    }
    // The persistent gated kernel: LSTM and GRU, one subgroup or workgroup memory.
    for hidden in [1usize, 17, 64, 100] {
        for subgroup in [None, Some(8), Some(32)] {
            for cell in [Cell::Lstm, Cell::Gru] {
                let arch = Architecture {
                    cell,
                    input_size: 1,
                    hidden_size: hidden,
                    state_size: hidden,
                    num_layers: 1,
                    directions: 1,
                };
                if let Some(spec) = GatedPersistentSpec::for_arch(&arch, subgroup) {
                    let name = format!("gated_persistent {spec:?}");
                    if !sources.iter().any(|(n, _)| *n == name) {
                        sources.push((name, spec.wgsl()));
                    }
                }
            }
        }
    }
    sources
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
