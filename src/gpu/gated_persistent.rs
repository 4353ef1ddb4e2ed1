//! The persistent LSTM / GRU kernel: WGSL generated per (cell, hidden size, lanes) from
//! `shaders/gated_persistent.wgsl`, and the rule that picks it over the per-step kernels.
//!
//! The same design as the Elman kernel (`persistent.rs`): one workgroup per (sequence,
//! direction); each lane keeps its units' rows of W_hh in private values addressed by
//! constant indices, with every loop over them written out. A gated unit has G rows (4 for an
//! LSTM, 3 for a GRU), so a lane holds G times the Elman kernel's weights for the same units,
//! and the generated code, and llvmpipe's compile time, grows with it: a lane holds four units
//! and the default rule keeps its weights within [`MAX_AUTO_WEIGHTS`]. Where four units' whole
//! rows would exceed that, several neighbouring lanes of a subgroup share them, each holding a
//! part of K (`GatedPersistentSpec::split`), and add their partial sums by broadcast.
//!
//! On adapters with a fixed subgroup size the lanes load W_hh from a texture the model fills
//! once (`GatedPersistentSpec::texture`): texel fetches compile several times faster than
//! storage loads on llvmpipe, so a lane may hold [`MAX_TEXTURE_WEIGHTS`] (a batch) or
//! [`MAX_ONE_SEQUENCE_WEIGHTS`] (one sequence), and one subgroup of eight units a lane covers
//! H ≤ 64.

use std::fmt::Write;

use crate::gpu::ahead;
use crate::gpu::ahead::AheadProjection;
use crate::gpu::architecture::{Architecture, Cell};
use crate::gpu::persistent_io;
use crate::shaders::{self, Template, WeightPrecision};

/// A lane's weight vec4s (rows × vec4s per row) up to which [`Recurrence::Auto`] runs this
/// kernel. Compile time grows faster than the code: measured on lavapipe (model creation and
/// first forward, shader cache off, machine busy), 256 weight vec4s (LSTM, H = 64, 16 lanes ×
/// 4 units) took 3.6 s, 512 (LSTM, H = 128) 14 s, and 512 as one subgroup of 8 units a lane
/// (LSTM, H = 64) 22 s, against the 5 s a model's creation may cost. So a lane holds four
/// units, a workgroup is one subgroup only when four units a lane cover H, and wider states
/// split rows over more lanes. Splitting costs little speed for what it saves in compiling
/// (LSTM N = 1, T = 1024, one process each, shader cache off, first forwards compiling the
/// projecting-ahead form): H = 128 in two parts (256 vec4s a lane) 12.9 ms a forward after
/// 4.6 s, four parts 21 ms after 2.8 s, eight 25 ms after 1.7 s, against 86–120 ms one
/// dispatch a step; H = 256 in four parts 48–74 ms, whole rows (1024 vec4s a lane) 44–59 ms
/// after ~140 s (51 + 88 s measured before). More in benches/README.md.
///
/// [`Recurrence::Auto`]: crate::Recurrence::Auto
pub(crate) const MAX_AUTO_WEIGHTS: usize = 256;

/// The same where W_hh is loaded from a texture ([`GatedPersistentSpec::texture`]): a
/// texel fetch is straight-line code where a storage load is a loop over the lanes, and
/// those loops were what took LLVM the time (the training kernels measured 22 s → 2 s for
/// 512 weight vec4s a lane; `gpu::training::recurrent_weights`). Measured for this kernel in
/// benches/README.md.
pub(crate) const MAX_TEXTURE_WEIGHTS: usize = 512;

/// What a lane holds from a texture in a forward of one sequence, where wide rows split over
/// fewer lanes than [`MAX_TEXTURE_WEIGHTS`] allows: fewer subgroups take turns at each step's
/// barrier, and compiling 1024 vec4s a lane takes 2.6–3.8 s cold rather than 1.5–2.3 (model
/// creation and first forward, T = 1024, H = 256 and 512). Measured on lavapipe, T = 1024,
/// median of 5, two runs, 512 → 1024: `nn.GRU` H = 256 N = 1 31.4 → 27.0 ms, H = 512 N = 1
/// 189 → 161 ms; `nn.LSTM` H = 512 N = 1 253 → 214 ms, H = 256 N = 1 35.0 → 35.3 ms (its
/// projection, ahead on the other core, is the longer); but N = 16, H = 256: LSTM 408 → 434
/// ms, GRU 315 → 344 ms: a batch keeps [`MAX_TEXTURE_WEIGHTS`]
/// ([`GatedPersistentSpec::batch_split`]).
pub(crate) const MAX_ONE_SEQUENCE_WEIGHTS: usize = 1024;

/// One specialisation of the persistent gated kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GatedPersistentSpec {
    pub lstm: bool,
    pub hidden: usize,
    /// Hidden units per lane: a multiple of 4 (they are handled as vec4s).
    pub units: usize,
    pub lanes: usize,
    /// The workgroup is exactly one subgroup: h stays in registers and is shared with
    /// `subgroupBroadcast`, without workgroup memory or barriers.
    pub broadcast: bool,
    /// Otherwise, on adapters with this fixed subgroup size: h goes through workgroup
    /// memory, but each lane loads only every `size`-th vec4 of it and gets the others from
    /// its subgroup with `subgroupBroadcast` (llvmpipe executes loads lane by lane and
    /// broadcasts as vector operations). The lanes are then whole subgroups.
    pub slices: Option<usize>,
    /// Lanes that share each four units' rows of W_hh (a power of two dividing the subgroup
    /// size; 1 but in the `slices` form): lane `l` holds part `l % split` of the rows' vec4s,
    /// `VEC4S / split` of them, and the `split` neighbouring lanes add their partial sums
    /// through `subgroupBroadcast`. Splitting keeps a lane's weights, and so llvmpipe's
    /// compile time, within [`MAX_AUTO_WEIGHTS`] for larger H, with more lanes.
    pub split: usize,
    /// The split of a forward of several sequences ([`for_batch`](Self::for_batch)): where
    /// W_hh comes from a texture, `split` is chosen for one sequence (within
    /// [`MAX_ONE_SEQUENCE_WEIGHTS`]) and this within [`MAX_TEXTURE_WEIGHTS`]; else the same.
    pub batch_split: usize,
    /// How W_hh and b_hn are stored (converted to f32 as they are loaded).
    pub weights: WeightPrecision,
    /// Projects ahead in this form, tiles or weight-stationary (see `gpu::ahead`).
    pub projects_ahead: Option<AheadProjection>,
    /// Loads W_hh from the model's texture of it (`ModelBuffers`, rows of
    /// [`texture_size`](Self::texture_size)) rather than from `recurrent`: what lets a lane
    /// hold [`MAX_TEXTURE_WEIGHTS`] rather than [`MAX_AUTO_WEIGHTS`]. Subgroup forms only
    /// (each texel goes through an identity `subgroupShuffle`, without which LLVM fetched
    /// the weights again in every step).
    pub texture: bool,
}

impl GatedPersistentSpec {
    /// The layout for `arch`'s cell: four units a lane (see [`MAX_AUTO_WEIGHTS`]), h shared
    /// through workgroup memory, or with `subgroupBroadcast` when one subgroup covers H.
    /// `subgroup` is the adapter's fixed subgroup size when subgroup operations may be used
    /// (see `GpuContext::persistent_subgroup`); with it, wide rows split over as many lanes
    /// as keep a lane's weights within its cap (as [`fits`](Self::fits) checks), up to
    /// `max_lanes` lanes a workgroup (`GpuContext::max_lanes`), and with `texture` W_hh comes
    /// from a texture: one subgroup may hold eight units a lane, and one sequence splits
    /// within a larger cap than a batch. `None` for an Elman RNN or a
    /// projected LSTM (which run other kernels).
    pub fn for_arch(
        arch: &Architecture,
        subgroup: Option<usize>,
        max_lanes: usize,
        texture: bool,
    ) -> Option<Self> {
        let lstm = match arch.cell {
            Cell::Lstm if !arch.projected() => true,
            Cell::Gru => false,
            _ => return None,
        };
        let hidden = arch.hidden_size;
        let texture = texture && subgroup.is_some();
        let one_subgroup = |size, units| GatedPersistentSpec {
            lstm,
            hidden,
            units,
            lanes: size,
            broadcast: true,
            slices: None,
            split: 1,
            batch_split: 1,
            weights: WeightPrecision::F32,
            projects_ahead: None,
            texture,
        };
        Some(match subgroup {
            Some(size) if hidden <= 4 * size => one_subgroup(size, 4),
            // Eight units a lane keep h in registers, shared without barriers, where one
            // subgroup of them covers H.
            Some(size) if hidden <= 8 * size && one_subgroup(size, 8).fits() => {
                one_subgroup(size, 8)
            }
            Some(size) => {
                // Split rows over the fewest lanes (a power of two, at most the subgroup) that
                // keep a lane's weights within a cap, or as many as `max_lanes` allow: for a
                // batch, and (from a texture) for one sequence.
                let groups = hidden.div_ceil(4).next_multiple_of(size);
                let split_over = |split| GatedPersistentSpec {
                    lstm,
                    hidden,
                    units: 4,
                    lanes: groups * split,
                    broadcast: false,
                    slices: Some(size),
                    split,
                    batch_split: split,
                    weights: WeightPrecision::F32,
                    projects_ahead: None,
                    texture,
                };
                let within = |most| {
                    let mut spec = split_over(1);
                    while spec.unpadded_weights() > most
                        && spec.split < size
                        && 2 * spec.lanes <= max_lanes
                    {
                        spec = split_over(2 * spec.split);
                    }
                    spec
                };
                let batched = within(match texture {
                    true => MAX_TEXTURE_WEIGHTS,
                    false => MAX_AUTO_WEIGHTS,
                });
                match texture {
                    true => GatedPersistentSpec {
                        batch_split: batched.split,
                        ..within(MAX_ONE_SEQUENCE_WEIGHTS)
                    },
                    false => batched,
                }
            }
            None => GatedPersistentSpec {
                lstm,
                hidden,
                units: 4,
                lanes: hidden.div_ceil(4),
                broadcast: false,
                slices: None,
                split: 1,
                batch_split: 1,
                weights: WeightPrecision::F32,
                projects_ahead: None,
                texture: false,
            },
        })
    }

    /// The kernel of a forward of `batch` sequences (one a workgroup): splitting rows over
    /// [`batch_split`](Self::batch_split) lanes where there are several. The same hidden
    /// padding, so the same padded weights and texture.
    pub fn for_batch(self, batch: usize) -> Self {
        match batch > 1 {
            true => GatedPersistentSpec {
                lanes: self.lanes / self.split * self.batch_split,
                split: self.batch_split,
                ..self
            },
            false => self,
        }
    }

    /// The same kernel reading weights stored as `weights`.
    pub fn with_weights(self, weights: WeightPrecision) -> Self {
        GatedPersistentSpec { weights, ..self }
    }

    /// What projecting ahead needs to know of this kernel (one sequence a workgroup).
    pub fn ahead_shape(&self) -> ahead::KernelShape {
        ahead::KernelShape {
            lanes: self.lanes,
            subgroup: if self.broadcast {
                Some(self.lanes)
            } else {
                self.slices
            },
            batch_tile: 1,
            hidden: self.hidden,
            gated: true,
            split_rows: self.split > 1,
        }
    }

    /// The same kernel, also projecting ahead with `projection` (whose subgroup size must be
    /// the kernel's).
    pub fn projecting_ahead(self, projection: AheadProjection) -> Self {
        debug_assert_eq!(self.ahead_shape().subgroup, Some(projection.lanes()));
        GatedPersistentSpec {
            projects_ahead: Some(projection),
            ..self
        }
    }

    fn gates(&self) -> usize {
        if self.lstm { 4 } else { 3 }
    }

    /// Hidden units including padding: units × the lanes that hold whole rows between them.
    pub fn hidden_pad(&self) -> usize {
        self.lanes / self.split * self.units
    }

    fn vec4s(&self) -> usize {
        self.hidden_pad() / 4
    }

    /// Weight vec4s one lane holds.
    pub fn lane_weights(&self) -> usize {
        self.gates() * self.units * self.vec4s() / self.split
    }

    /// Whether [`Recurrence::Auto`](crate::Recurrence::Auto) runs this kernel: a lane's
    /// weights in a batch's form, before padding the lanes to whole subgroups, within
    /// [`MAX_AUTO_WEIGHTS`] ([`MAX_TEXTURE_WEIGHTS`] from a texture).
    pub fn fits(&self) -> bool {
        let most = match self.texture {
            true => MAX_TEXTURE_WEIGHTS,
            false => MAX_AUTO_WEIGHTS,
        };
        self.for_batch(2).unpadded_weights() <= most
    }

    /// A lane's weight vec4s before padding the lanes to whole subgroups.
    fn unpadded_weights(&self) -> usize {
        self.gates() * self.units * self.hidden.div_ceil(4).div_ceil(self.split)
    }

    /// The texture of W_hh a [`texture`](Self::texture) kernel reads, in texels: H_pad / 4
    /// wide, a row per padded row of every direction and gate ((D, G, H_pad) rows, as
    /// [`pad_weights`](Self::pad_weights) lays them out before b_hn).
    pub fn texture_size(&self, directions: usize) -> (u32, u32) {
        let pad = self.hidden_pad();
        ((pad / 4) as u32, (directions * self.gates() * pad) as u32)
    }

    /// The recurrent weights as the kernel reads them: W_hh of every direction, (D·G·H, H),
    /// as (D, G, H_pad, H_pad) zero padded; then for a GRU b_hn, (D·H), as (D, H_pad). Returns
    /// them and where b_hn starts.
    pub fn pad_weights(&self, w_hh: &[f32], b_hn: &[f32], directions: usize) -> (Vec<f32>, usize) {
        let (h, pad, gates) = (self.hidden, self.hidden_pad(), self.gates());
        let mut padded = vec![0.0; directions * gates * pad * pad];
        for row in 0..directions * gates {
            for j in 0..h {
                let src = (row * h + j) * h;
                let dst = (row * pad + j) * pad;
                padded[dst..dst + h].copy_from_slice(&w_hh[src..src + h]);
            }
        }
        let bias_offset = padded.len();
        padded.resize(bias_offset + b_hn.len() / h.max(1) * pad, 0.0);
        for (d, bias) in b_hn.chunks(h).enumerate() {
            let at = bias_offset + d * pad;
            padded[at..at + h].copy_from_slice(bias);
        }
        (padded, bias_offset)
    }

    /// The kernel's WGSL.
    pub fn wgsl(&self) -> String {
        let (units, vec4s, groups, gates, split) = (
            self.units,
            self.vec4s(),
            self.units / 4,
            self.gates(),
            self.split,
        );
        // The vec4s of each row a lane holds: its part of K.
        let part_vec4s = vec4s / split;
        let memory = !self.broadcast;
        // Where lanes split rows, they all hold the same sums and state after the reduction,
        // and only part 0 of each row group writes h and the output.
        let guarded = |code: String, indent: &str| match split {
            1 => code,
            _ => {
                let body: String = code.lines().map(|line| format!("    {line}\n")).collect();
                format!("{indent}if part == 0u {{\n{body}{indent}}}\n")
            }
        };
        let part_offset = if split > 1 {
            "part * PART_VEC4S + "
        } else {
            ""
        };
        let mut load_weights = String::new();
        for g in 0..gates {
            for r in 0..units {
                for k in 0..part_vec4s {
                    let row = format!("(d * GATES + {g}u) * HIDDEN_PAD + row0 + {r}u");
                    let load = match self.texture {
                        true => persistent_io::texel_load(&format!("{part_offset}{k}u"), &row),
                        false => {
                            format!("vec4<f32>(recurrent[({row}) * VEC4S + {part_offset}{k}u])")
                        }
                    };
                    let _ = writeln!(
                        load_weights,
                        "    w[{}] = {load};",
                        (g * units + r) * part_vec4s + k
                    );
                }
            }
        }
        let mut load_state = String::new();
        let mut share_state = String::new();
        for q in 0..groups {
            let row = format!("row0 + {}u", 4 * q);
            let _ = writeln!(load_state, "    var s{q} = state4(h_at, {row});");
            if self.lstm {
                let _ = writeln!(load_state, "    var c{q} = state4(c_at, {row});");
            } else {
                let _ = writeln!(
                    load_state,
                    "    let b_hn{q} = vec4<f32>(recurrent[layer.step_bias_offset / 4u + (d * HIDDEN_PAD + {row}) / 4u]);"
                );
            }
            if memory {
                let _ = writeln!(share_state, "    h[row0 / 4u + {q}u] = s{q};");
            }
        }
        load_state += &guarded(share_state, "    ");
        let mut accumulate = String::new();
        if let Some(size) = self.slices {
            // Slice j holds vec4s j·size .. (j+1)·size, one per lane of the subgroup.
            for j in 0..vec4s / size {
                let _ = writeln!(
                    accumulate,
                    "        let slice{j} = h[cur + {}u + sub];",
                    j * size
                );
            }
        }
        for k in 0..part_vec4s {
            let value = match self.slices {
                Some(size) => {
                    // vec4 k of part p is vec4 p·PART_VEC4S + k of h: every part's, and the
                    // lane's own picked (broadcasts need constant lanes).
                    let of_part = |p: usize| {
                        let at = p * part_vec4s + k;
                        format!("subgroupBroadcast(slice{}, {}u)", at / size, at % size)
                    };
                    (1..split).fold(of_part(0), |picked, p| {
                        format!("select({picked}, {}, part == {p}u)", of_part(p))
                    })
                }
                None if memory => format!("h[cur + {k}u]"),
                // vec4 k of h is lane k / groups's value k % groups.
                None => format!("subgroupBroadcast(s{}, {}u)", k % groups, k / groups),
            };
            let _ = writeln!(accumulate, "        let h{k} = {value};");
        }
        // The gates' sums start from their input part, except the GRU's n gate, whose
        // recurrent part is multiplied by r before the input part is added. Split rows add it
        // after their parts' sums.
        let input_part = |g: usize, q: usize| {
            (self.lstm || g != 2)
                .then(|| format!("p_at(p_base + {g}u * HIDDEN, row0 + {}u)", 4 * q))
        };
        for g in 0..gates {
            for q in 0..groups {
                let start = match input_part(g, q) {
                    Some(p) if split == 1 => p,
                    _ => "vec4<f32>(0.0)".to_string(),
                };
                let _ = writeln!(accumulate, "        var a{g}_{q} = {start};");
            }
        }
        // Per row, a vec4 of partial sums built with fused multiply-adds and reduced once.
        for g in 0..gates {
            for r in 0..units {
                let (q, component) = (r / 4, ["x", "y", "z", "w"][r % 4]);
                let base = (g * units + r) * part_vec4s;
                let sum = format!("r{g}_{r}");
                let _ = writeln!(accumulate, "        var {sum} = w[{base}] * h0;");
                for k in 1..part_vec4s {
                    let _ = writeln!(
                        accumulate,
                        "        {sum} = fma(w[{}], h{k}, {sum});",
                        base + k
                    );
                }
                let _ = writeln!(
                    accumulate,
                    "        a{g}_{q}.{component} += ({sum}.x + {sum}.y) + ({sum}.z + {sum}.w);"
                );
            }
        }
        if let (Some(size), true) = (self.slices, split > 1) {
            // Each lane adds its row group's parts (lanes b·SPLIT .. (b+1)·SPLIT of the
            // subgroup, in order), then the input part.
            for g in 0..gates {
                for q in 0..groups {
                    let sum_of = |b: usize| {
                        (1..split).fold(
                            format!("subgroupBroadcast(a{g}_{q}, {}u)", b * split),
                            |sum, j| {
                                format!("({sum} + subgroupBroadcast(a{g}_{q}, {}u))", b * split + j)
                            },
                        )
                    };
                    let total = (1..size / split).fold(sum_of(0), |picked, b| {
                        format!("select({picked}, {}, sub / SPLIT == {b}u)", sum_of(b))
                    });
                    let value = match input_part(g, q) {
                        Some(p) => format!("{p} + {total}"),
                        None => total,
                    };
                    let _ = writeln!(accumulate, "        a{g}_{q} = {value};");
                }
            }
        }
        let mut update = String::new();
        let mut write = String::new();
        for q in 0..groups {
            let row = format!("row0 + {}u", 4 * q);
            if self.lstm {
                let _ = writeln!(
                    update,
                    "        let cell{q} = sigmoid4(a1_{q}) * c{q} + sigmoid4(a0_{q}) * tanh(a2_{q});"
                );
                let _ = writeln!(
                    update,
                    "        let new{q} = select(vec4<f32>(0.0), sigmoid4(a3_{q}) * tanh(cell{q}), real4({row}));"
                );
                let _ = writeln!(
                    update,
                    "        c{q} = select(c{q}, select(vec4<f32>(0.0), cell{q}, real4({row})), live);"
                );
            } else {
                let _ = writeln!(update, "        let update{q} = sigmoid4(a1_{q});");
                let _ = writeln!(
                    update,
                    "        let candidate{q} = tanh(p_at(p_base + 2u * HIDDEN, {row}) + sigmoid4(a0_{q}) * (a2_{q} + b_hn{q}));"
                );
                let _ = writeln!(
                    update,
                    "        let new{q} = select(vec4<f32>(0.0), (1.0 - update{q}) * candidate{q} + update{q} * s{q}, real4({row}));"
                );
            }
            let _ = writeln!(update, "        s{q} = select(s{q}, new{q}, live);");
            if memory {
                let _ = writeln!(write, "        h[next + row0 / 4u + {q}u] = s{q};");
            }
            let _ = writeln!(
                write,
                "        store_output(out_base, {row}, select(vec4<f32>(0.0), s{q}, live));"
            );
        }
        update += &guarded(write, "        ");
        let mut save_state = String::new();
        for q in 0..groups {
            let row = format!("row0 + {}u", 4 * q);
            let _ = writeln!(save_state, "    store_state(h_at, {row}, s{q});");
            if self.lstm {
                let _ = writeln!(save_state, "    store_state(c_at, {row}, c{q});");
            }
        }
        let save_state = guarded(save_state, "    ");
        let rows = if split > 1 {
            format!("const SPLIT: u32 = {split}u;\nconst PART_VEC4S: u32 = {part_vec4s}u;\n")
        } else {
            String::new()
        };
        let row0 = if split > 1 {
            "let part = lane % SPLIT;\n    let row0 = lane / SPLIT * UNITS;"
        } else {
            "let row0 = lane * UNITS;"
        };
        let barrier = if memory { "workgroupBarrier()" } else { "" };
        let (io_element, io_functions) = persistent_io::io_functions(self.hidden);
        let ahead = ahead::WgslParts::new(
            self.projects_ahead.as_ref(),
            self.ahead_shape(),
            "layer.batch",
        );
        ahead
            .fill(Template::new(shaders::GATED_PERSISTENT))
            .set("HIDDEN", self.hidden.to_string())
            .set("HIDDEN_PAD", self.hidden_pad().to_string())
            .set("VEC4S", vec4s.to_string())
            .set("UNITS", units.to_string())
            .set("GATES", gates.to_string())
            .set("SPLIT_CONSTANTS", rows)
            .set("ROW0", row0)
            .set("LANES", self.lanes.to_string())
            .set("H_SIZE", (if memory { 2 * vec4s } else { 1 }).to_string())
            .set("WEIGHTS", self.lane_weights().to_string())
            .set("LOAD_WEIGHTS", &load_weights)
            .set("LOAD_STATE", &load_state)
            .set("ACCUMULATE", &accumulate)
            .set("UPDATE", &update)
            .set("SAVE_STATE", &save_state)
            .set("BARRIER", barrier)
            .set("IO_ELEMENT", io_element)
            .set(
                "TEXTURE_BINDING",
                persistent_io::texture_binding(self.texture),
            )
            .set("IO_FUNCTIONS", &io_functions)
            .set(
                "SUBGROUP_LANE",
                ahead::builtins(
                    self.slices.is_some() || self.texture,
                    self.projects_ahead.is_some(),
                ),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::GatedPersistentSpec;
    use crate::gpu::architecture::{Architecture, Cell};

    fn arch(cell: Cell, hidden: usize) -> Architecture {
        Architecture {
            cell,
            input_size: 3,
            hidden_size: hidden,
            state_size: hidden,
            num_layers: 1,
            directions: 1,
        }
    }

    #[test]
    fn generated_wgsl_validates() {
        for hidden in [1, 3, 17, 64, 100, 257] {
            for cell in [Cell::Lstm, Cell::Gru] {
                for subgroup in [None, Some(8)] {
                    let spec =
                        GatedPersistentSpec::for_arch(&arch(cell, hidden), subgroup, 256, false)
                            .unwrap();
                    crate::shaders::assert_valid(&format!("{spec:?}"), &spec.wgsl());
                }
            }
        }
    }

    #[test]
    fn larger_states_split_rows_over_more_lanes() {
        // (cell, H, lanes a workgroup may have) → (split, lanes, weight vec4s a lane) on
        // 8-lane subgroups.
        for (cell, hidden, max_lanes, want) in [
            (Cell::Lstm, 64, 256, (1, 16, 256)),
            (Cell::Lstm, 100, 256, (2, 64, 256)),
            (Cell::Lstm, 128, 256, (2, 64, 256)),
            (Cell::Lstm, 256, 256, (4, 256, 256)),
            (Cell::Gru, 84, 256, (1, 24, 288)),
            (Cell::Gru, 256, 256, (4, 256, 192)),
            (Cell::Lstm, 512, 1024, (8, 1024, 256)),
            // 1024 lanes would hold 256 weight vec4s each: as many as 256 lanes allow.
            (Cell::Lstm, 512, 256, (2, 256, 1024)),
        ] {
            let spec =
                GatedPersistentSpec::for_arch(&arch(cell, hidden), Some(8), max_lanes, false)
                    .unwrap();
            assert_eq!(
                (spec.split, spec.lanes, spec.lane_weights()),
                want,
                "{cell:?} H = {hidden}"
            );
            assert!(spec.hidden_pad() >= hidden);
            // Auto runs all but the last (1024 weight vec4s a lane).
            assert_eq!(spec.fits(), want.2 < 1024, "{cell:?} H = {hidden}");
        }
    }

    #[test]
    fn texture_weights_let_lanes_hold_more() {
        // (cell, H) → (units, split, lanes, weight vec4s a lane) for one sequence, and
        // (split, lanes, weight vec4s a lane) for a batch, on 8-lane subgroups, 1024 lanes a
        // workgroup at most, W_hh from a texture.
        for (cell, hidden, one, batch) in [
            (Cell::Lstm, 32, (4, 1, 8, 128), (1, 8, 128)),
            // One subgroup of eight units a lane: h in registers, no barrier.
            (Cell::Lstm, 64, (8, 1, 8, 512), (1, 8, 512)),
            (Cell::Gru, 60, (8, 1, 8, 384), (1, 8, 384)),
            (Cell::Lstm, 128, (4, 1, 32, 512), (1, 32, 512)),
            (Cell::Gru, 168, (4, 1, 48, 576), (1, 48, 576)),
            (Cell::Lstm, 256, (4, 1, 64, 1024), (2, 128, 512)),
            (Cell::Gru, 256, (4, 1, 64, 768), (2, 128, 384)),
            (Cell::Lstm, 512, (4, 2, 256, 1024), (4, 512, 512)),
            (Cell::Gru, 672, (4, 2, 336, 1008), (4, 672, 504)),
        ] {
            let spec =
                GatedPersistentSpec::for_arch(&arch(cell, hidden), Some(8), 1024, true).unwrap();
            assert!(spec.texture && spec.fits(), "{cell:?} H = {hidden}");
            assert_eq!(
                (spec.units, spec.split, spec.lanes, spec.lane_weights()),
                one,
                "{cell:?} H = {hidden}"
            );
            let batched = spec.for_batch(16);
            assert_eq!(
                (batched.split, batched.lanes, batched.lane_weights()),
                batch,
                "{cell:?} H = {hidden}, a batch"
            );
            // Both read the same padded weights.
            assert_eq!(batched.hidden_pad(), spec.hidden_pad());
            assert_eq!(spec.for_batch(1), spec);
            let (width, rows) = spec.texture_size(2);
            assert_eq!(width as usize, spec.hidden_pad() / 4);
            assert_eq!(rows as usize, 2 * cell.gates() * spec.hidden_pad());
        }
        // Past what four parts of 512 vec4s hold within 1024 lanes.
        for (cell, hidden) in [(Cell::Lstm, 516), (Cell::Gru, 676)] {
            let spec =
                GatedPersistentSpec::for_arch(&arch(cell, hidden), Some(8), 1024, true).unwrap();
            assert!(!spec.fits(), "{cell:?} H = {hidden}");
        }
        // Without subgroups, no texture.
        let plain = GatedPersistentSpec::for_arch(&arch(Cell::Lstm, 64), None, 1024, true);
        assert!(!plain.unwrap().texture);
    }

    #[test]
    fn padded_weights_keep_rows_and_bias() {
        let spec = GatedPersistentSpec::for_arch(&arch(Cell::Gru, 3), None, 256, false).unwrap();
        let pad = spec.hidden_pad();
        assert_eq!(pad, 4);
        // One direction: 3 gates × 3 rows of 3, and b_hn of 3.
        let w: Vec<f32> = (1..=27).map(|v| v as f32).collect();
        let (padded, bias_at) = spec.pad_weights(&w, &[100.0, 101.0, 102.0], 1);
        assert_eq!(bias_at, 3 * pad * pad);
        // Gate 1 (z), row 2: the 6th row of W_hh.
        let at = (pad + 2) * pad;
        assert_eq!(&padded[at..at + 4], &[16.0, 17.0, 18.0, 0.0]);
        assert_eq!(&padded[bias_at..], &[100.0, 101.0, 102.0, 0.0]);
        assert_eq!(padded.iter().filter(|&&v| v != 0.0).count(), 30);
    }

    #[test]
    fn elman_and_projected_cells_have_no_gated_kernel() {
        assert!(
            GatedPersistentSpec::for_arch(
                &arch(Cell::Rnn(crate::Nonlinearity::Tanh), 8),
                None,
                256,
                false
            )
            .is_none()
        );
        let projected = Architecture {
            state_size: 4,
            ..arch(Cell::Lstm, 8)
        };
        assert!(GatedPersistentSpec::for_arch(&projected, Some(8), 256, true).is_none());
    }
}
