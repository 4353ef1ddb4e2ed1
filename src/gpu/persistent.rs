//! The persistent recurrence kernel: WGSL generated per hidden size from
//! `shaders/persistent_recurrence.wgsl`, and the rule that picks it over the per-step kernel.
//!
//! One dispatch runs many timesteps, one workgroup per (sequence, direction), each lane
//! holding its rows of W_hh in private values for the whole sequence. Per-step dispatches cost
//! tens of microseconds each on CPU-backed adapters (and several on discrete GPUs); this
//! kernel pays that once per `STEPS_PER_DISPATCH` steps instead of once per step.

use std::fmt::Write;

use crate::gpu::ahead;
use crate::gpu::ahead::AheadProjection;
use crate::gpu::persistent_io;
use crate::shaders::{self, Template, WeightPrecision};

/// Sequences per workgroup for batched forwards of one-subgroup kernels.
const BATCH_TILE: usize = 4;

/// The widest hidden state the persistent kernel is used for by default (see
/// [`Recurrence::Auto`](crate::Recurrence::Auto)).
pub(crate) const PERSISTENT_MAX_HIDDEN: usize = 256;

/// The same where it loads W_hh from a texture ([`PersistentSpec::texture`]), which compiles
/// several times faster. Measured on lavapipe, T = 1024, median of 3, two runs, per-step
/// kernels → persistent: H = 384 N = 1 135–145 → 19.2 ms, H = 512 N = 1 190 → 33 ms, H = 512
/// N = 16 693–700 → 422–432 ms; model creation and first forward, cold: H = 384 0.78 →
/// 1.69 s, H = 512 0.83 → 2.01 s.
pub(crate) const PERSISTENT_MAX_TEXTURE_HIDDEN: usize = 512;

/// How the lanes of a workgroup see each other's rows of h_{t-1}.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Sharing {
    /// The workgroup is exactly one subgroup; each lane's rows stay in its registers and the
    /// others read them with `subgroupBroadcast`: no workgroup memory, no barrier.
    Broadcast,
    /// Any workgroup: h goes through workgroup memory, synchronised with `workgroupBarrier`.
    WorkgroupMemory,
    /// A workgroup of whole subgroups of this size: h goes through workgroup memory,
    /// synchronised with `workgroupBarrier`, but each lane loads only every `size`-th vec4 of
    /// it and gets the others from its subgroup with `subgroupBroadcast`. llvmpipe executes
    /// a subgroup's loads lane by lane and its broadcasts as vector operations: at H = 256
    /// this took a forward at T = 1024 from about 25 ms to 16 ms.
    SubgroupSlices(usize),
}

/// One specialisation of the persistent kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PersistentSpec {
    pub hidden: usize,
    /// Hidden units per lane: a multiple of 4 (they are handled as vec4s).
    pub rows: usize,
    /// Lanes per workgroup.
    pub lanes: usize,
    pub sharing: Sharing,
    /// Sequences one workgroup runs side by side, sharing the weights it holds.
    pub batch_tile: usize,
    /// How W_hh is stored (it is converted to f32 as it is loaded into registers).
    pub weights: WeightPrecision,
    /// Projects ahead in this form, tiles or weight-stationary (see `gpu::ahead`).
    pub projects_ahead: Option<AheadProjection>,
    /// Computes its own input projection, x_t·W_ihᵀ + b, in each step, for inputs of this
    /// many features, instead of reading P (see [`PersistentSpecs::fusing_input`]).
    pub fused_input: Option<usize>,
    /// Loads W_hh from the model's texture of it (rows of [`texture_size`](Self::texture_size))
    /// rather than from `w_hh`, as the gated kernel does (`GatedPersistentSpec::texture`:
    /// the same compile-time reason); subgroup forms only.
    pub texture: bool,
}

impl PersistentSpec {
    /// The layout for `hidden` units. `subgroup` is the adapter's fixed subgroup size when
    /// subgroup operations may be used (see `GpuContext::persistent_subgroup`).
    pub fn for_hidden(hidden: usize, subgroup: Option<usize>) -> Self {
        // Four rows (one vec4) per lane: more rows per lane reuse each loaded h more often
        // but grow the unrolled code, and llvmpipe's compile time with it. Measured at
        // H = 256 on lavapipe (first forward, shader cache off): eight rows per lane 15 s,
        // sixteen 57 s, four under 5 s; with h shared by subgroup slices, eight and sixteen
        // rows were no faster than four.
        let rows = 4;
        match subgroup {
            // Spread small states over exactly one subgroup, up to eight rows a lane: h then
            // stays in registers, without barriers.
            Some(size) if hidden.div_ceil(size) <= 8 => PersistentSpec {
                hidden,
                rows: hidden.div_ceil(size).next_multiple_of(4),
                lanes: size,
                sharing: Sharing::Broadcast,
                batch_tile: 1,
                weights: WeightPrecision::F32,
                projects_ahead: None,
                fused_input: None,
                texture: false,
            },
            // Whole subgroups (the last one padded; a partial subgroup costs as much on
            // llvmpipe), loading h in slices.
            Some(size) => PersistentSpec {
                hidden,
                rows,
                lanes: hidden.div_ceil(rows).next_multiple_of(size),
                sharing: Sharing::SubgroupSlices(size),
                batch_tile: 1,
                weights: WeightPrecision::F32,
                projects_ahead: None,
                fused_input: None,
                texture: false,
            },
            None => PersistentSpec {
                hidden,
                rows,
                lanes: hidden.div_ceil(rows),
                sharing: Sharing::WorkgroupMemory,
                batch_tile: 1,
                weights: WeightPrecision::F32,
                projects_ahead: None,
                fused_input: None,
                texture: false,
            },
        }
    }

    /// The same kernel loading W_hh from a texture where `texture` and it shares h through
    /// subgroups.
    pub fn with_texture(self, texture: bool) -> Self {
        PersistentSpec {
            texture: texture && self.subgroup().is_some(),
            ..self
        }
    }

    /// The texture of W_hh a [`texture`](Self::texture) kernel reads, in texels: H_pad / 4
    /// wide, a row per padded row of every direction (as [`pad_weights`](Self::pad_weights)
    /// lays them out).
    pub fn texture_size(&self, directions: usize) -> (u32, u32) {
        let pad = self.hidden_pad();
        ((pad / 4) as u32, (directions * pad) as u32)
    }

    /// Whether [`Recurrence::Auto`](crate::Recurrence::Auto) runs this kernel: up to
    /// [`PERSISTENT_MAX_HIDDEN`] units ([`PERSISTENT_MAX_TEXTURE_HIDDEN`] from a texture).
    pub fn fits(&self) -> bool {
        self.hidden
            <= match self.texture {
                true => PERSISTENT_MAX_TEXTURE_HIDDEN,
                false => PERSISTENT_MAX_HIDDEN,
            }
    }

    /// The workgroup is exactly one subgroup.
    pub fn one_subgroup(&self) -> bool {
        self.sharing == Sharing::Broadcast
    }

    /// The same kernel reading W_hh stored as `weights`.
    pub fn with_weights(self, weights: WeightPrecision) -> Self {
        PersistentSpec { weights, ..self }
    }

    /// What projecting ahead needs to know of this kernel.
    pub fn ahead_shape(&self) -> ahead::KernelShape {
        ahead::KernelShape {
            lanes: self.lanes,
            subgroup: self.subgroup(),
            batch_tile: self.batch_tile,
            hidden: self.hidden,
            gated: false,
            split_rows: false,
        }
    }

    /// The subgroup size of the kernel's sharing of h, where it uses subgroups.
    pub fn subgroup(&self) -> Option<usize> {
        match self.sharing {
            Sharing::Broadcast => Some(self.lanes),
            Sharing::SubgroupSlices(size) => Some(size),
            Sharing::WorkgroupMemory => None,
        }
    }

    /// The same kernel, also projecting ahead with `projection` (whose subgroup size must be
    /// the kernel's).
    pub fn projecting_ahead(self, projection: AheadProjection) -> Self {
        debug_assert_eq!(self.subgroup(), Some(projection.lanes()));
        PersistentSpec {
            projects_ahead: Some(projection),
            ..self
        }
    }

    /// The same kernel, computing its input projection itself for `input` features (a
    /// multiple of four: x is read as vec4s).
    pub fn fusing_input(self, input: usize) -> Self {
        debug_assert!(self.one_subgroup() && input % 4 == 0);
        PersistentSpec {
            fused_input: Some(input),
            projects_ahead: None,
            ..self
        }
    }

    /// The same kernel running `tile` sequences per workgroup.
    pub fn with_batch_tile(self, tile: usize) -> Self {
        PersistentSpec {
            batch_tile: tile.max(1),
            ..self
        }
    }

    /// The batch tile for a forward of `batch` sequences: a few sequences per workgroup when
    /// the workgroup is one subgroup (small states, where reloading the weights is what a
    /// step costs), one otherwise (the unrolled code, and its compile time, grow with it).
    pub fn batch_tile_for(&self, batch: usize) -> usize {
        if self.one_subgroup() && batch >= BATCH_TILE {
            BATCH_TILE
        } else {
            1
        }
    }

    /// Hidden units including padding: lanes × rows.
    pub fn hidden_pad(&self) -> usize {
        self.lanes * self.rows
    }

    fn vec4s(&self) -> usize {
        self.hidden_pad() / 4
    }

    /// W_hh of every direction, (D, H, H), as the kernel reads it: (D, H_pad, H_pad/4) vec4s,
    /// zero padded.
    pub fn pad_weights(&self, w_hh: &[f32], directions: usize) -> Vec<f32> {
        let (h, pad) = (self.hidden, self.hidden_pad());
        let mut padded = vec![0.0; directions * pad * pad];
        for d in 0..directions {
            for j in 0..h {
                let src = (d * h + j) * h;
                let dst = (d * pad + j) * pad;
                padded[dst..dst + h].copy_from_slice(&w_hh[src..src + h]);
            }
        }
        padded
    }

    /// The kernel's WGSL.
    pub fn wgsl(&self) -> String {
        let (rows, vec4s, groups, tile) = (self.rows, self.vec4s(), self.rows / 4, self.batch_tile);
        // Every lane keeps its own rows of h_{t-1} in registers (`s{b}_{q}`). The other lanes'
        // rows come from workgroup memory (two buffers, alternating by step, so that one
        // barrier per step suffices), or, with `Sharing::Broadcast`, from subgroupBroadcast
        // of constant lanes, with no memory and no barrier at all.
        let memory = self.sharing != Sharing::Broadcast;
        let slices = match self.sharing {
            Sharing::SubgroupSlices(size) => Some(size),
            _ => None,
        };
        // Each sequence's h in workgroup memory, padded to whole slices.
        let stride = slices.map_or(vec4s, |size| vec4s.next_multiple_of(size));
        let shared_vec4s = stride * tile;
        let mut sequences = String::new();
        for b in 0..tile {
            let _ = writeln!(sequences, "    let at{b} = group.x * BATCH_TILE + {b}u;");
            let _ = writeln!(sequences, "    let real{b} = at{b} < layer.batch;");
            let _ = writeln!(sequences, "    let n{b} = min(at{b}, layer.batch - 1u);");
            let _ = writeln!(
                sequences,
                "    let unit{b} = layer.state_offset + (d * layer.batch + n{b}) * HIDDEN;"
            );
            let _ = writeln!(
                sequences,
                "    let len{b} = select(0u, bitcast<u32>(state[layer.lengths_offset + n{b}]), real{b});"
            );
        }
        let mut load_weights = String::new();
        for i in 0..rows * vec4s {
            let load = match self.texture {
                // Vec4 k of the lane's row r.
                true => persistent_io::texel_load(
                    &format!("{}u", i % vec4s),
                    &format!("d * HIDDEN_PAD + row0 + {}u", i / vec4s),
                ),
                false => format!("vec4<f32>(w_hh[w_base + {i}u])"),
            };
            let _ = writeln!(load_weights, "    w[{i}] = {load};");
        }
        // The fused input projection: this lane's rows of W_ih, zero for padding rows, and
        // of the bias, loaded once like W_hh; each step then adds x_t·W_ihᵀ to the sums.
        let input_vec4s = self.fused_input.map_or(0, |input| input / 4);
        if self.fused_input.is_some() {
            let _ = writeln!(
                load_weights,
                "    var wi: array<vec4<f32>, {}>;",
                rows * input_vec4s
            );
            for r in 0..rows {
                let _ = writeln!(
                    load_weights,
                    "    let wi_row{r} = (d * HIDDEN + min(row0 + {r}u, HIDDEN - 1u)) * INPUT_VEC4S;"
                );
                for k in 0..input_vec4s {
                    let _ = writeln!(
                        load_weights,
                        "    wi[{}] = select(vec4<f32>(0.0), w_ih_at(wi_row{r} + {k}u), row0 + {r}u < HIDDEN);",
                        r * input_vec4s + k
                    );
                }
            }
            for q in 0..groups {
                let _ = writeln!(
                    load_weights,
                    "    let bias{q} = bias_at(d, row0 + {}u);",
                    4 * q
                );
            }
        }
        let mut load_state = String::new();
        for b in 0..tile {
            for q in 0..groups {
                let r = 4 * q;
                let _ = writeln!(
                    load_state,
                    "    var s{b}_{q} = vec4<f32>(state_at(unit{b}, row0 + {r}u), state_at(unit{b}, row0 + {}u), \
                     state_at(unit{b}, row0 + {}u), state_at(unit{b}, row0 + {}u));",
                    r + 1,
                    r + 2,
                    r + 3
                );
                if memory {
                    let _ = writeln!(
                        load_state,
                        "    h[{}u + row0 / 4u + {q}u] = s{b}_{q};",
                        b * stride
                    );
                }
            }
        }
        let fetch = |b: usize, k: usize| -> String {
            let value = if let Some(size) = slices {
                format!("subgroupBroadcast(slice{b}_{}, {}u)", k / size, k % size)
            } else if memory {
                format!("h[cur + {}u]", b * stride + k)
            } else {
                // vec4 k of h is lane k / groups's value k % groups.
                format!("subgroupBroadcast(s{b}_{}, {}u)", k % groups, k / groups)
            };
            format!("        let h{b}_{k} = {value};\n")
        };
        let mut accumulate = String::new();
        for b in 0..tile {
            let _ = writeln!(accumulate, "        let live{b} = t < len{b};");
            if self.fused_input.is_some() {
                // x_t in slices of one vec4 per lane, shared within the subgroup like h.
                let _ = writeln!(
                    accumulate,
                    "        let x_base{b} = (t * params.x_stride_t + n{b} * params.x_stride_n) / 4u;"
                );
                for j in 0..input_vec4s.div_ceil(self.lanes) {
                    let _ = writeln!(
                        accumulate,
                        "        let xs{b}_{j} = x[x_base{b} + min({}u + lane, INPUT_VEC4S - 1u)];",
                        j * self.lanes
                    );
                }
                for k in 0..input_vec4s {
                    let _ = writeln!(
                        accumulate,
                        "        let x{b}_{k} = subgroupBroadcast(xs{b}_{}, {}u);",
                        k / self.lanes,
                        k % self.lanes
                    );
                }
            } else {
                let _ = writeln!(
                    accumulate,
                    "        let p_base{b} = (t * layer.batch + n{b}) * layer.directions * HIDDEN + d * HIDDEN;"
                );
            }
            // Every h vec4 is fetched once per step and feeds all of this lane's rows.
            if let Some(size) = slices {
                for j in 0..stride / size {
                    let _ = writeln!(
                        accumulate,
                        "        let slice{b}_{j} = h[cur + {}u + sub];",
                        b * stride + j * size
                    );
                }
            }
            for k in 0..vec4s {
                accumulate.push_str(&fetch(b, k));
            }
            for q in 0..groups {
                let start = if self.fused_input.is_some() {
                    format!("bias{q}")
                } else {
                    format!("p_at(p_base{b}, row0 + {}u)", 4 * q)
                };
                let _ = writeln!(accumulate, "        var a{b}_{q} = {start};");
            }
        }
        // Per row and sequence, a vec4 of partial sums built with fused multiply-adds and
        // reduced once (half the operations of a dot product per term); each weight is used
        // for every sequence of the tile while it is at hand.
        for row in 0..rows {
            let (q, component) = (row / 4, ["x", "y", "z", "w"][row % 4]);
            for b in 0..tile {
                let _ = writeln!(
                    accumulate,
                    "        var r{b}_{row} = w[{}] * h{b}_0;",
                    row * vec4s
                );
            }
            // The terms of h_{t-1} (the first one started the sums), then those of x_t where
            // the input is fused.
            let terms = [("w", "h", vec4s, 1), ("wi", "x", input_vec4s, 0)];
            for (weights, values, width, first) in terms {
                for k in first..width {
                    for b in 0..tile {
                        let _ = writeln!(
                            accumulate,
                            "        r{b}_{row} = fma({weights}[{}], {values}{b}_{k}, r{b}_{row});",
                            row * width + k
                        );
                    }
                }
            }
            for b in 0..tile {
                let _ = writeln!(
                    accumulate,
                    "        a{b}_{q}.{component} += (r{b}_{row}.x + r{b}_{row}.y) + (r{b}_{row}.z + r{b}_{row}.w);"
                );
            }
        }
        let mut update = String::new();
        for b in 0..tile {
            let _ = writeln!(
                update,
                "        let out_base{b} = t * layer.out_stride_t + n{b} * layer.out_stride_n + d * HIDDEN;"
            );
            for q in 0..groups {
                let r = 4 * q;
                let _ = writeln!(
                    update,
                    "        s{b}_{q} = select(s{b}_{q}, activate4(a{b}_{q}, row0 + {r}u), live{b});"
                );
                if memory {
                    let _ = writeln!(
                        update,
                        "        h[next + {}u + row0 / 4u + {q}u] = s{b}_{q};",
                        b * stride
                    );
                }
                let _ = writeln!(
                    update,
                    "        if real{b} {{ store_output(out_base{b}, row0 + {r}u, select(vec4<f32>(0.0), s{b}_{q}, live{b})); }}"
                );
            }
        }
        let mut save_state = String::new();
        for b in 0..tile {
            for q in 0..groups {
                let _ = writeln!(
                    save_state,
                    "    if real{b} {{ store_state(unit{b}, row0 + {}u, s{b}_{q}); }}",
                    4 * q
                );
            }
        }
        // An empty statement where no barrier is needed.
        let barrier = match self.sharing {
            Sharing::Broadcast => "",
            Sharing::WorkgroupMemory | Sharing::SubgroupSlices(_) => "workgroupBarrier()",
        };
        let sub_builtin = ahead::builtins(
            slices.is_some() || self.texture,
            self.projects_ahead.is_some(),
        );
        let (io_element, io_functions) = persistent_io::io_functions(self.hidden);
        let ahead = match self.fused_input {
            Some(input) => ahead::WgslParts::fused_input(input),
            None => ahead::WgslParts::new(
                self.projects_ahead.as_ref(),
                self.ahead_shape(),
                "(layer.batch + BATCH_TILE - 1u) / BATCH_TILE",
            ),
        };
        ahead
            .fill(Template::new(shaders::PERSISTENT_RECURRENCE))
            .set("IO_ELEMENT", io_element)
            .set("IO_FUNCTIONS", &io_functions)
            .set("HIDDEN", self.hidden.to_string())
            .set("HIDDEN_PAD", self.hidden_pad().to_string())
            .set("VEC4S", vec4s.to_string())
            .set("SHARED_VEC4S", shared_vec4s.to_string())
            .set(
                "H_SIZE",
                (if memory { 2 * shared_vec4s } else { 1 }).to_string(),
            )
            .set("ROWS", rows.to_string())
            .set("BATCH_TILE", tile.to_string())
            .set("LANES", self.lanes.to_string())
            .set("WEIGHTS", (rows * vec4s).to_string())
            .set("SEQUENCES", &sequences)
            .set("LOAD_WEIGHTS", &load_weights)
            .set("LOAD_STATE", &load_state)
            .set("ACCUMULATE", &accumulate)
            .set("UPDATE", &update)
            .set("SAVE_STATE", &save_state)
            .set("BARRIER", barrier)
            .set("SUBGROUP_LANE", sub_builtin)
            .set(
                "TEXTURE_BINDING",
                persistent_io::texture_binding(self.texture),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{PersistentSpec, Sharing};
    use crate::gpu::ahead::AheadProjection;
    use crate::gpu::projection::SubgroupProjection;
    use crate::shaders::assert_valid;

    #[test]
    fn layouts_cover_every_unit_with_vec4_rows() {
        for hidden in 1..=300 {
            for subgroup in [None, Some(8), Some(32)] {
                let spec = PersistentSpec::for_hidden(hidden, subgroup);
                assert!(
                    spec.hidden_pad() >= hidden && spec.rows % 4 == 0,
                    "{spec:?}"
                );
                // Padding is less than one vec4 per lane.
                assert!(spec.hidden_pad() - hidden < 4 * spec.lanes, "{spec:?}");
                // One subgroup of up to eight rows a lane where the adapter allows it.
                let one_subgroup = subgroup.is_some_and(|s| hidden <= 8 * s);
                assert_eq!(spec.one_subgroup(), one_subgroup, "{spec:?}");
                assert!(!one_subgroup || Some(spec.lanes) == subgroup, "{spec:?}");
                // Wider states on subgroups: whole subgroups sharing h in slices.
                if let (Some(size), false) = (subgroup, one_subgroup) {
                    assert_eq!(spec.sharing, Sharing::SubgroupSlices(size), "{spec:?}");
                    assert_eq!(spec.lanes % size, 0, "{spec:?}");
                }
            }
        }
    }

    #[test]
    fn padded_weights_keep_rows_and_zero_the_rest() {
        let spec = PersistentSpec::for_hidden(3, None);
        let w: Vec<f32> = (1..=18).map(|v| v as f32).collect(); // two directions of 3×3
        let padded = spec.pad_weights(&w, 2);
        let pad = spec.hidden_pad();
        assert_eq!(padded.len(), 2 * pad * pad);
        assert_eq!(&padded[pad..pad + 4], &[4.0, 5.0, 6.0, 0.0]); // direction 0, row 1
        assert_eq!(
            &padded[pad * pad + 2 * pad..pad * pad + 2 * pad + 3],
            &[16.0, 17.0, 18.0]
        );
        assert_eq!(padded.iter().filter(|&&v| v != 0.0).count(), 18);
    }

    #[test]
    fn generated_wgsl_validates() {
        for hidden in [1, 3, 17, 64, 257] {
            for (subgroup, tile) in [(None, 1), (Some(8), 1), (Some(8), 4), (None, 3)] {
                let mut specs = vec![PersistentSpec::for_hidden(hidden, subgroup)];
                // With subgroups, also projecting ahead (both forms of the projection).
                if let Some(size) = subgroup {
                    for vec4_k in [false, true] {
                        let projection =
                            SubgroupProjection::for_subgroup(size, vec4_k, hidden % 4 == 0)
                                .expect("8 lanes tile the projection");
                        specs.push(specs[0].projecting_ahead(AheadProjection::Tile(projection)));
                        if vec4_k && hidden % 4 == 0 {
                            specs.push(specs[0].projecting_ahead(AheadProjection::Stationary {
                                lanes: size,
                                depth: hidden,
                            }));
                        }
                    }
                }
                // Computing the input projection in each step, where one subgroup holds h.
                if specs[0].one_subgroup() {
                    for input in [4, 16, 64] {
                        specs.push(specs[0].fusing_input(input));
                    }
                }
                // Each with W_hh from storage and (with subgroups) from a texture.
                for spec in specs {
                    for texture in [false, true] {
                        let spec = spec.with_batch_tile(tile).with_texture(texture);
                        assert_eq!(spec.texture, texture && subgroup.is_some());
                        assert_valid(&format!("{spec:?}"), &spec.wgsl());
                    }
                }
            }
        }
    }
}
