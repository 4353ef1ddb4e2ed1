//! The training recurrence with W_hh in registers (`shaders/train_subgroup.wgsl`): WGSL
//! generated per cell and rows per lane, and where it fits (the training program picks it
//! over the generic persistent kernels of `train_step.wgsl` wherever it does).
//!
//! Where one subgroup can hold a state (H ≤ 8 rows × the subgroup size: H ≤ 64 on lavapipe),
//! one workgroup of exactly one subgroup runs a sequence's whole forward or backward with its
//! rows (forward) or columns (backward) of W_hh in private values, h or dG shared by
//! `subgroupBroadcast`. Wider states run in several subgroups, four units a lane, h or dG
//! passing through workgroup memory; wider gated states still (H > 64 on lavapipe) split each
//! group of four units over 2, 4 or 8 lanes, each holding part of K (`split`). It reads and
//! writes the same regions as the generic kernels, so the rest of a training program (GEMMs,
//! heads, losses, checkpointing) does not know which ran.
//!
//! Measured on lavapipe (forward + `backward_params`, N = 1, T = 256, same run as the
//! generic kernels these states ran before; `benches/README.md`): LSTM H = 128 66 → 15 ms,
//! H = 256 231 → 58, H = 512 992 → 295; GRU H = 128 56 → 11, H = 256 181 → 44 (then the
//! backward's groups of eight units: LSTM H = 256 ~5–10 % faster again). Cold, the first
//! training step compiles for longer (LSTM H = 256: 2.3 → 10.8 s, GRU 2.4 → 6.9 s).
//!
//! W_hh comes from a texture copy of the parameters (`texture_weights`,
//! `gpu::training::recurrent_weights`): hundreds of storage loads in the kernels' prologue
//! were most of what LLVM spent compiling them. So a lane may hold twice the weights
//! (`MAX_TEXTURE_WEIGHTS`): one subgroup holds a gated cell with H ≤ 64 by default (eight
//! units a lane; an LSTM's first training step ~5 s cold, 45 s from storage, its recurrences
//! ~1.6× faster than in two subgroups), wide gated states split over half as many lanes
//! (LSTM H = 256 first step 10.8 → ~5 s cold, and faster), and an Elman RNN up to H = 512
//! runs here instead of in the generic kernels (H = 512, N = 1, T = 256: ~8× faster).

use std::fmt::Write;

use crate::config::{RnnConfig, RnnMode};
use crate::shaders::{self, Template};

/// The most hidden units one lane owns.
const MAX_ROWS: usize = 8;

/// The most weight vec4s one lane holds, in each of the two kernels, where they are loaded
/// from storage. llvmpipe's compile time grows faster than the code: measured (shader cache
/// off, first training step) at 8 rows a lane, a GRU with H = 64 (384 vec4s) took 23 s and an
/// LSTM (512) 45 s; at 256 and below a kernel compiles in a few seconds, as the inference
/// kernels found (`gated_persistent.rs`). (Loaded from a texture, `MAX_TEXTURE_WEIGHTS`.)
/// So a lane holds four units where eight would exceed this, and a workgroup of several
/// subgroups shares h (or dG) through workgroup memory: on lavapipe (8 lanes) an Elman RNN
/// runs here up to H = 256, a GRU or an LSTM up to 64 unsplit and up to 512 split; wider
/// states take the generic kernels. (From the texture, with `MAX_TEXTURE_WEIGHTS`: every
/// cell up to H = 512, wide gated states split over half as many lanes.) (Halving it to 128
/// for a faster compile, LSTM H = 256 split over eight lanes: the first step 10.8 → 4.3 s
/// cold, but the forward ran 1.4 s instead of 80 ms at T = 1024, not examined further.)
const MAX_WEIGHTS: usize = 256;

/// The most weight vec4s a lane of a one-subgroup kernel holds where the caller asked for the
/// fastest recurrence whatever it costs to compile (`Recurrence::Persistent`): eight units a
/// lane, so that one subgroup holds a GRU or an LSTM with H ≤ 64 on lavapipe, without the
/// workgroup memory and barrier each step of several subgroups needs. Measured there (LSTM,
/// H = 64, N = 1, T = 1024, per dispatch, `GpuTrainer::profile_programs`): forward 3.5 →
/// 1.8 ms, backward 5.1 → 1.5 ms against two subgroups of four units a lane; but 45 s to
/// compile cold from storage (the GRU's 384 vec4s: 23 s), against the few seconds
/// `MAX_WEIGHTS` allows. From the texture it compiles in seconds and `Auto` takes it too.
const MAX_PERSISTENT_WEIGHTS: usize = 512;

/// The most weight vec4s a lane holds where W_hh comes from its texture (`texture_weights`):
/// the straight-line texel fetches compile in seconds what hundreds of storage loads took
/// LLVM most of a minute to (LSTM, H = 64, eight units a lane, shader cache off: forward
/// 22 → 2.2 s, backward 29 → 1.9 s), so the one-subgroup kernel `MAX_PERSISTENT_WEIGHTS`
/// describes is `Auto`'s too, and wide states split their groups over half as many lanes.
/// Measured on lavapipe against `MAX_WEIGHTS` (both from the texture; N = 1, per dispatch,
/// forward / backward, and the first training step cold): LSTM H = 128 (T = 256) 3.2 / 5.2 →
/// 2.1 / 2.3 ms, 3.2 → 4.5 s; H = 256 13.6 / 22.0 → 12.5 / 19.1 ms, 3.2 → 5.2 s; H = 512
/// (T = 128) 47 / 81 → 45 / 56 ms, 3.3 → 5.1 s; GRU H = 128 2.7 / 3.9 → 1.6 / 1.9 ms,
/// 2.8 → 3.5 s; H = 256 11.8 / 18.1 → 10.8 / 15.3 ms, 2.9 → 4.1 s.
const MAX_TEXTURE_WEIGHTS: usize = 512;

/// What a device allows one workgroup of these kernels: lanes (invocations, along x) and bytes
/// of workgroup memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkgroupLimits {
    pub lanes: usize,
    pub shared_bytes: usize,
}

impl WorkgroupLimits {
    /// lavapipe's: 1024 lanes, and WebGPU's default 16 KiB.
    pub const LAVAPIPE: WorkgroupLimits = WorkgroupLimits {
        lanes: 1024,
        shared_bytes: 16384,
    };
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Steps one dispatch runs. Each step is one loop iteration (everything inside is written
/// out), so llvmpipe's limit of 65,535 iterations per invocation would allow far more; at
/// 1024 the dispatch boundary (where the state and the carries pass through memory) costs
/// nothing measurable and the tests' 1100-step sequences cross it.
pub(crate) const SUBGROUP_STEPS_PER_DISPATCH: usize = 1024;

/// Which cell's pointwise code the kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CellKind {
    Rnn,
    Lstm,
    Gru,
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

/// One specialisation of the kernel: every hidden size with the same rows per lane shares it
/// (sizes and offsets come from the layer's uniform).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SubgroupRecurrence {
    pub cell: CellKind,
    /// Lanes per subgroup: the adapter's subgroup size.
    pub lanes: usize,
    /// Subgroups per workgroup: with one, h and dG stay in registers; with several, each
    /// step passes them through workgroup memory (one barrier a step), each lane loading a
    /// slice and broadcasting it within its subgroup.
    pub subgroups: usize,
    /// Hidden units per lane, a multiple of four.
    pub rows: usize,
    /// vec4s of the input whose projection the forward computes in its step (W_ih's rows
    /// then in registers too), or 0 where the projection GEMM writes P (`with_input`).
    pub input_quads: usize,
    /// Outputs of a head on every frame whose input gradient (dY = dL·W) the backward
    /// computes in its step (the lane's columns of W then in registers), or 0 where the
    /// head's GEMM writes dY (`with_head`).
    pub head_outputs: usize,
    /// The backward loads W_hh as it is, without selecting zeros for padding rows and
    /// columns: a gated cell whose H fills the workgroup's units exactly (no padding units).
    /// Measured on lavapipe (LSTM and GRU, H = 64, two subgroups, N = 1, T = 1024, per
    /// dispatch, three alternations): backward 4.5–5.0 → 2.5–2.6 ms (LSTM), 3.3–3.5 → 2.3–2.5
    /// (GRU); LLVM re-applies each weight's select every step. (The forward's selects stay:
    /// without them it ran slower, 3.4 → 5.6–6.2 ms; so do an Elman RNN's backward's: H = 64,
    /// one subgroup, 285–304 → 322–332 µs without them.)
    pub unmasked_weights: bool,
    /// Lanes that share a group of four units (1: a lane holds all of them). A gated cell
    /// too wide for four units a lane splits each group's weights over `split` neighbouring
    /// lanes of a subgroup: lane `l` is part `l % split` of group `l / split`, holds the
    /// part's share of K (the forward's columns, the backward's rows of W_hh) and loads only
    /// that share of h (or dG); the parts' sums are added by subgroup broadcasts, in part
    /// order, and part 0 alone stores and publishes (the other parts compute on zeros).
    pub split: usize,
    /// W_hh comes from the model's texture of it (`gpu::training::recurrent_weights`) instead
    /// of the parameters' storage buffer: the same values, loaded by straight-line texel
    /// fetches that llvmpipe compiles many times faster than its lane-by-lane storage loads.
    /// (The one-dispatch programs, `program_wgsl`, always load from storage.)
    pub texture_weights: bool,
}

impl SubgroupRecurrence {
    /// The kernel for `config` on an adapter whose subgroups have `subgroup` lanes (None: no
    /// subgroup operations), if it fits: no projection, H within one subgroup's registers and
    /// a multiple of four (W_hh is loaded as vec4s: hundreds of scalar loads with their
    /// bounds made an LSTM with H = 64 take llvmpipe over a minute to compile). With
    /// `fastest`, where several subgroups would share the state, one holds it with up to
    /// [`MAX_PERSISTENT_WEIGHTS`] a lane. With `texture` (the model's W_hh is in a texture,
    /// `texture_weights`) every form may hold up to [`MAX_TEXTURE_WEIGHTS`] a lane, whatever
    /// was asked.
    ///
    /// A gated cell too wide for that splits each group of four units over 2, 4, … lanes
    /// (`split`), the fewest that keep the cap a lane within the `limits` of a
    /// workgroup (its lanes and workgroup memory): on lavapipe (8 lanes, 1024 a
    /// workgroup) an LSTM or a GRU up to H = 512. Summing each unit's parts apart changes
    /// the rounding against the generic kernels (which those states ran before) by an ulp or
    /// so; the unsplit kernels are unchanged.
    pub fn for_config(
        config: &RnnConfig,
        subgroup: Option<usize>,
        limits: WorkgroupLimits,
        fastest: bool,
        texture: bool,
    ) -> Option<Self> {
        let lanes = subgroup?;
        let hidden = config.hidden_size;
        let cell = match config.mode {
            RnnMode::Rnn(_) => CellKind::Rnn,
            RnnMode::Lstm => CellKind::Lstm,
            RnnMode::Gru => CellKind::Gru,
        };
        if config.proj_size != 0 || hidden % 4 != 0 {
            return None;
        }
        // One subgroup, up to MAX_ROWS units a lane; else four a lane over several.
        let one = SubgroupRecurrence {
            cell,
            lanes,
            subgroups: 1,
            rows: hidden.div_ceil(lanes).next_multiple_of(4),
            input_quads: 0,
            head_outputs: 0,
            unmasked_weights: false,
            split: 1,
            texture_weights: texture,
        };
        let several = SubgroupRecurrence {
            subgroups: hidden.div_ceil(4 * lanes),
            rows: 4,
            ..one
        };
        let fits = |spec: &Self, cap| {
            spec.rows <= MAX_ROWS
                && spec.lane_weights() <= cap
                && spec.lanes * spec.subgroups <= limits.lanes
                && 16 * spec.shared_vec4s() <= limits.shared_bytes
        };
        let gated = cell != CellKind::Rnn;
        let splits = (1..)
            .map(|k| 1usize << k)
            .take_while(|&split| gated && split <= lanes && lanes % split == 0)
            .map(|split| several.split_over(hidden, split));
        let cap = if texture {
            MAX_TEXTURE_WEIGHTS
        } else {
            MAX_WEIGHTS
        };
        let chosen = [one, several]
            .into_iter()
            .chain(splits)
            .find(|spec| fits(spec, cap))?;
        // Only where it replaces several subgroups, as measured: elsewhere (a state that
        // needs the generic kernels, or wide subgroups with four units a lane) a bigger
        // budget would buy another trade, not measured.
        let spec = if fastest && chosen.subgroups > 1 && fits(&one, MAX_PERSISTENT_WEIGHTS) {
            one
        } else {
            chosen
        };
        Some(SubgroupRecurrence {
            unmasked_weights: cell != CellKind::Rnn && spec.vec4s() * 4 == hidden,
            ..spec
        })
    }

    /// `self` (four units a group) with each group split over `split` lanes, in as many
    /// subgroups as cover `hidden` units with a padded K that the parts divide evenly.
    fn split_over(self, hidden: usize, split: usize) -> Self {
        let per_subgroup = self.lanes / split;
        // Groups (vec4s of h) across the workgroup: whole subgroups of them, a multiple of
        // `split` so that each part holds as many of K's vec4s.
        let step = per_subgroup * split / gcd(per_subgroup, split);
        let groups = hidden.div_ceil(4).next_multiple_of(step);
        SubgroupRecurrence {
            subgroups: groups / per_subgroup,
            split,
            ..self
        }
    }

    /// The form the backward runs in: with a split, groups of eight units over twice the
    /// lanes where they fit (the same lanes, weights a lane and workgroup memory). A lane's
    /// part of K is the rows of W_hh whose dG it loads each step, every gate's: half as many
    /// loads for the same multiply-adds (the split backward cost about twice the forward).
    fn backward_form(&self) -> Self {
        let (split, kq) = (2 * self.split, self.vec4s());
        if self.split > 1 && split <= self.lanes && kq % split == 0 {
            SubgroupRecurrence {
                rows: 8,
                split,
                ..*self
            }
        } else {
            *self
        }
    }

    /// Whether lanes share h (or dG) through workgroup memory: with several subgroups, or
    /// lanes splitting groups.
    fn shares_memory(&self) -> bool {
        self.subgroups > 1 || self.split > 1
    }

    /// vec4s of workgroup memory the kernel uses: h (or every gate's dG), twice.
    fn shared_vec4s(&self) -> usize {
        match self.shares_memory() {
            true => 2 * self.cell.gates() * self.vec4s(),
            false => 0,
        }
    }

    /// Weight vec4s a lane holds: its rows (or columns) of every gate, over the padded state
    /// or its part of it (and the forward's of W_ih, over the input).
    fn lane_weights(&self) -> usize {
        let recurrent = self.cell.gates() * self.rows * self.vec4s() / self.split;
        let forward = recurrent + self.cell.gates() * self.rows * self.input_quads;
        let backward = recurrent + self.head_outputs * self.rows / 4;
        forward.max(backward)
    }

    /// `self` computing the input projection in the forward's step where that pays: instead
    /// of a GEMM writing P (T·N·G·H values) that every step then reads back, each step
    /// multiplies x_t by W_ih's rows in registers. On llvmpipe, where every load and store
    /// runs lane by lane, that saves the GEMM's dispatch, its stores and the steps' loads of P
    /// (the character model: ~8 % of an iteration). Only where it stays cheap: one layer (the
    /// kernel's input is the model's), four features a vec4, W_ih's rows within the
    /// registers' cap, at most half H's features (the step's extra work small beside W_hh's),
    /// and a batch of at least four sequences: with fewer, the recurrence's workgroups leave
    /// cores idle that the GEMM's tiles would fill.
    pub fn with_input(self, config: &RnnConfig, batch: usize) -> Self {
        let inputs = config.input_size;
        let fused = SubgroupRecurrence {
            input_quads: inputs / 4,
            ..self
        };
        if inputs % 4 == 0 && fused.pays(config, inputs, batch) {
            fused
        } else {
            self
        }
    }

    /// `self` computing the input gradient of a head on every frame (`outputs` of them) in
    /// the backward's step where that pays, for the same reasons and on the same conditions
    /// as `with_input` (the head's outputs in place of the input's features): instead of a
    /// GEMM writing dY that every step reads back, each step multiplies dL_t by the lane's
    /// columns of W in registers.
    pub fn with_head(self, config: &RnnConfig, outputs: Option<usize>, batch: usize) -> Self {
        let Some(outputs) = outputs else {
            return self;
        };
        let fused = SubgroupRecurrence {
            head_outputs: outputs,
            ..self
        };
        if fused.pays(config, outputs, batch) {
            fused
        } else {
            self
        }
    }

    /// Whether a small program may run this recurrence as one dispatch (`program_wgsl`, which
    /// loads W_hh from storage): its weights within what such loads compile in seconds.
    pub fn fits_one_dispatch(&self) -> bool {
        self.subgroups == 1 && self.lane_weights() <= MAX_WEIGHTS
    }

    /// Whether `self`, with a projection `width` wide in its steps, is worth it for `config`
    /// over batches of `batch` (see `with_input`).
    fn pays(&self, config: &RnnConfig, width: usize, batch: usize) -> bool {
        config.num_layers == 1
            && self.subgroups == 1
            && 2 * width <= config.hidden_size
            && batch >= 4
            && self.lane_weights() <= MAX_WEIGHTS
    }

    /// vec4s of h (and of each gate's dG) across the workgroup.
    fn vec4s(&self) -> usize {
        self.lanes * self.subgroups * self.rows / 4 / self.split
    }

    /// The kernel's WGSL: entry points `forward` and `backward`.
    pub fn wgsl(&self) -> String {
        self.module(shaders::train_unit())
    }

    /// A whole small training program as one dispatch of this recurrence's one subgroup
    /// (`train_program.wgsl`; `run`: its entry point's body, see
    /// `gpu::training::one_dispatch`), the recurrence's `forward_sequence` and
    /// `backward_sequence` among its operations.
    pub fn program_wgsl(&self, run: &str) -> String {
        debug_assert_eq!(self.subgroups, 1, "a program runs as one subgroup");
        // A program loads W_hh from storage: no refresh of the texture precedes it
        // (`TrainWorkspace::record` refreshes it for `Op::Subgroup`s), and its recurrence is
        // small enough (`fits_one_dispatch`) to compile fast that way.
        let storage = SubgroupRecurrence {
            texture_weights: false,
            ..*self
        };
        Template::new(shaders::TRAIN_PROGRAM)
            .set("RECURRENCE", storage.module(shaders::train_unit_private()))
            .set("GEMM_PARAMS", shaders::TRAIN_GEMM_PARAMS)
            .set("LOSS_COMMON", shaders::LOSS_COMMON)
            .set("RUN", run)
            .set("LANES", self.lanes.to_string())
            .finish()
    }

    /// The recurrence's module over `declarations` (`train_unit.wgsl` with `Unit` and `Step`
    /// as uniforms, or as private values).
    fn module(&self, declarations: String) -> String {
        let generator = Generator::new(self);
        let backward_generator = Generator::new(&self.backward_form());
        let (forward_load, forward_step, forward_save) = generator.forward();
        let (backward_load, backward_step, backward_save) = backward_generator.backward();
        let Generator {
            rows,
            kw,
            gates: g_count,
            shared,
            half,
            texture,
            ..
        } = generator;
        // The subgroup lane: for the broadcasts of workgroup-memory slices, and for the
        // texture's weights (see `Generator::recurrent_weight`).
        let sub = shared || texture;
        Template::new(shaders::TRAIN_SUBGROUP)
            .set("TRAIN_UNIT", declarations)
            .set("LANES", (self.lanes * self.subgroups).to_string())
            .set(
                "SHARED",
                if shared {
                    format!(
                        "var<workgroup> shared_values: array<vec4<f32>, {}>;",
                        2 * half
                    )
                } else {
                    String::new()
                },
            )
            .set(
                "SUB_BUILTIN",
                if sub {
                    ", @builtin(subgroup_invocation_id) sub: u32"
                } else {
                    ""
                },
            )
            .set("SUB_ARG", if sub { ", sub" } else { "" })
            .set("SUB_PARAM", if sub { ", sub: u32" } else { "" })
            .set(
                "WEIGHT_TEXTURE",
                if texture { WEIGHT_TEXTURE_BINDING } else { "" },
            )
            .set("FORWARD_UNIT_LETS", generator.unit_lets())
            .set("BACKWARD_UNIT_LETS", backward_generator.unit_lets())
            .set("ROWS", rows.to_string())
            .set("FORWARD_WEIGHTS", (g_count * rows * kw).to_string())
            .set("BACKWARD_WEIGHTS", (g_count * rows * kw).to_string())
            .set("FORWARD_LOAD", forward_load)
            .set("FORWARD_STEP", forward_step)
            .set("FORWARD_SAVE", forward_save)
            .set("BACKWARD_LOAD", backward_load)
            .set("BACKWARD_STEP", backward_step)
            .set("BACKWARD_SAVE", backward_save)
            .finish()
    }
}

/// The parts of `train_subgroup.wgsl` for one specialisation, written out: its sizes, how a lane
/// reaches the values the others hold, and the forward's and backward's loads, steps and saves.
#[derive(Clone, Copy)]
struct Generator {
    cell: CellKind,
    /// Units a lane owns, and vec4s of h (and of each gate's dG) across the workgroup.
    rows: usize,
    kq: usize,
    /// vec4s of a lane's units.
    quads: usize,
    gates: usize,
    lanes: usize,
    /// vec4s of an input the forward projects itself (`SubgroupRecurrence::input_quads`).
    input_quads: usize,
    /// Outputs of a head whose input gradient the backward computes itself.
    head_outputs: usize,
    /// Several subgroups: h and dG pass through workgroup memory.
    shared: bool,
    /// What each lane shares, one half of the workgroup memory: h, or each gate's dG.
    half: usize,
    /// `SubgroupRecurrence::unmasked_weights`.
    unmasked_weights: bool,
    /// `SubgroupRecurrence::split`, and the vec4s of K a lane holds (`kq / split`).
    split: usize,
    kw: usize,
    /// `SubgroupRecurrence::texture_weights`.
    texture: bool,
}

/// W_hh's texture and how a lane fetches a texel of it (`WEIGHT_TEXTURE` of the template).
const WEIGHT_TEXTURE_BINDING: &str =
    "// W_hh of every layer and direction as texels (src/gpu/training/recurrent_weights.rs): layer
// u.unit0 + d holds this layer's W_hh of direction d, texel (x, row) its row's columns
// 4x .. 4x + 3.
@group(0) @binding(9) var recurrent_weights: texture_2d_array<f32>;

fn recurrent_texel(x: u32, row: u32, d: u32) -> vec4<f32> {
    return textureLoad(recurrent_weights, vec2<u32>(x, row), u.unit0 + d, 0);
}
";

const XYZW: [&str; 4] = ["x", "y", "z", "w"];

/// The k a training GEMM sums into one part before adding it to the total (`SLICE` of
/// `train_gemm_params.wgsl`).
const GEMM_SLICE: usize = 32;

/// The sums run in the generic kernels' order (train_step.wgsl: each vec4's dot product, or
/// each term, added in turn): the same rounding, so that which kernel ran does not change a
/// result. Adam's first steps magnify rounding in gradients near its eps, and the tutorials'
/// replays are checked against PyTorch after those steps.
fn dot(out: &mut String, name: &str, terms: &[(usize, String)]) {
    let (w0, v0) = &terms[0];
    let _ = writeln!(out, "        var {name} = dot(w[{w0}], {v0});");
    for (wi, v) in &terms[1..] {
        let _ = writeln!(out, "        {name} += dot(w[{wi}], {v});");
    }
}

impl Generator {
    fn new(spec: &SubgroupRecurrence) -> Self {
        let (kq, gates) = (spec.vec4s(), spec.cell.gates());
        Generator {
            cell: spec.cell,
            rows: spec.rows,
            kq,
            quads: spec.rows / 4,
            gates,
            lanes: spec.lanes,
            input_quads: spec.input_quads,
            head_outputs: spec.head_outputs,
            shared: spec.shares_memory(),
            half: gates * kq,
            unmasked_weights: spec.unmasked_weights,
            split: spec.split,
            kw: kq / spec.split,
            texture: spec.texture_weights,
        }
    }

    /// A lane's weight vec4: `select(0, W_hh's vec4 (x, row), keep)` (`keep`: "" where every
    /// load counts), from the parameters' vec4s at `at` or from the texture. A texel goes
    /// through `subgroupShuffle` from the lane itself, the identity: opaque to LLVM, which
    /// otherwise fetches some weights again in every step instead of keeping them (a
    /// texel's fetch is an invariant load it may repeat; measured, LSTM H = 64 in one
    /// subgroup: forward 3.1 ms at T = 1024 against 1.9 with the shuffle or from storage).
    fn recurrent_weight(&self, at: &str, x: &str, row: &str, keep: &str) -> String {
        let load = match self.texture {
            true => format!("recurrent_texel({x}, {row}, d)"),
            false => format!("params4[{at}]"),
        };
        let masked = match keep {
            "" => load,
            _ => format!("select(vec4<f32>(0.0), {load}, {keep})"),
        };
        match self.texture {
            true => format!("subgroupShuffle({masked}, sub)"),
            false => masked,
        }
    }

    /// The lane's units (`UNIT_LETS`): `row0`, and with a split `part`, `kbase`, `own0`.
    fn unit_lets(&self) -> String {
        if self.split == 1 {
            return "    let row0 = lane * ROWS;\n".into();
        }
        let (split, kw, rows) = (self.split, self.kw, self.rows);
        format!(
            "    let row0 = (lane / {split}u) * {rows}u;\n    let part = lane % {split}u;\n    \
             let kbase = part * {kw}u;\n    let own0 = select(row0, 0x40000000u, part != 0u);\n"
        )
    }

    /// Where a lane loads and stores its units' values: `row0`, or `own0` with a split.
    fn own(&self) -> &'static str {
        if self.split == 1 { "row0" } else { "own0" }
    }

    /// `total`: the sum of `partial` (a vec4) over the parts of this lane's group, in part
    /// order, in every lane of the group: each lane of the subgroup broadcasts (a constant
    /// lane per broadcast), and each lane picks its group's.
    fn add_parts(&self, out: &mut String, partial: &str, total: &str) {
        let (lanes, split) = (self.lanes, self.split);
        for l in 0..lanes {
            let _ = writeln!(
                out,
                "        let {partial}_{l} = subgroupBroadcast({partial}, {l}u);"
            );
        }
        let mut terms = Vec::new();
        for q in 0..split {
            let mut pick = format!("{partial}_{q}");
            for group in 1..lanes / split {
                pick = format!(
                    "select({pick}, {partial}_{}, sub / {split}u == {group}u)",
                    group * split + q
                );
            }
            terms.push(pick);
        }
        let _ = writeln!(out, "        let {total} = {};", terms.join(" + "));
    }

    /// vec4 k of a value spread over the workgroup (`name`, gate `g`): in one subgroup, lane
    /// k / quads's register k % quads; else slice k / lanes that lane k % lanes of each
    /// subgroup loaded (`fetch`).
    fn broadcast(&self, name: &str, g: usize, k: usize) -> String {
        let (lanes, quads) = (self.lanes, self.quads);
        if self.shared {
            format!(
                "subgroupBroadcast({name}s{g}_{}, {}u)",
                k / lanes,
                k % lanes
            )
        } else {
            format!("subgroupBroadcast({name}{}, {}u)", k % quads, k / quads)
        }
    }

    /// A frame's `vectors` vec4s of a value read by `load(p, n, v)`, in every lane as
    /// `{names.1}{v}`: each lane loads its share (`{names.0}{q}`: vec4s lane·per .. of them),
    /// and broadcasts it as h is.
    fn share(&self, out: &mut String, names: (&str, &str), load: &str, vectors: usize) {
        let (mine, all) = names;
        let per_lane = vectors.div_ceil(self.lanes);
        for q in 0..per_lane {
            let _ = writeln!(
                out,
                "        let {mine}{q} = {load}(p, n, lane * {per_lane}u + {q}u);"
            );
        }
        for v in 0..vectors {
            let _ = writeln!(
                out,
                "        let {all}{v} = subgroupBroadcast({mine}{}, {}u);",
                v % per_lane,
                v / per_lane
            );
        }
    }

    /// With several subgroups, this lane's slices of gate `g`'s `name` from the half `cur`.
    fn fetch(&self, out: &mut String, name: &str, g: usize) {
        if self.shared {
            for j in 0..self.kq / self.lanes {
                let _ = writeln!(
                    out,
                    "        let {name}s{g}_{j} = shared_values[cur + {}u + sub];",
                    g * self.kq + j * self.lanes
                );
            }
        }
    }

    /// This lane's registers into the half `at` (`next`, or 0 before the loop), then the
    /// barrier that makes them visible.
    /// With a split, part 0 of each group writes the group's.
    fn publish(&self, out: &mut String, at: &str, registers: &[(usize, String)]) {
        if self.shared {
            let (quads, split) = (self.quads, self.split);
            let slot = match split {
                1 => "lane".to_string(),
                _ => format!("(lane / {split}u)"),
            };
            if split > 1 {
                let _ = writeln!(out, "        if part == 0u {{");
            }
            for (g, name) in registers {
                for q in 0..quads {
                    let _ = writeln!(
                        out,
                        "        shared_values[{at} + {}u + {slot} * {quads}u] = {name}{q};",
                        g * self.kq + q
                    );
                }
            }
            if split > 1 {
                let _ = writeln!(out, "        }}");
            }
            let _ = writeln!(out, "        workgroupBarrier();");
        }
    }

    /// With a split, this lane's part of gate `g`'s values from the half `cur`, as
    /// `{prefix}{k}` for the `kw` vec4s of K it holds.
    fn fetch_part(&self, out: &mut String, prefix: &str, g: usize) {
        let offset = match g {
            0 => String::new(),
            _ => format!("{}u + ", g * self.kq),
        };
        for k in 0..self.kw {
            let _ = writeln!(
                out,
                "        let {prefix}{k} = shared_values[cur + {offset}{}];",
                self.k_at(k)
            );
        }
    }

    /// vec4 k of K among the `kw` a lane holds: k itself, or past the lane's part's start.
    fn k_at(&self, k: usize) -> String {
        match self.split {
            1 => format!("{k}u"),
            _ => format!("kbase + {k}u"),
        }
    }

    /// The forward's `FORWARD_LOAD`, `FORWARD_STEP` and `FORWARD_SAVE`.
    fn forward(&self) -> (String, String, String) {
        let (rows, kq, kw, quads, g_count) = (self.rows, self.kq, self.kw, self.quads, self.gates);
        let own = self.own();
        // Forward: w[(g·rows + i)·kw + k] = W_hh[g·H + row0 + i, 4k' .. 4k' + 3], k' = k past
        // the lane's part's start.
        let mut forward_load = String::new();
        for i in 0..rows {
            let _ = writeln!(forward_load, "    let real{i} = row0 + {i}u < u.hidden;");
        }
        for g in 0..g_count {
            for i in 0..rows {
                let _ = writeln!(
                    forward_load,
                    "    let row{g}_{i} = weights + ({g}u * u.hidden + row0 + {i}u) * quads;"
                );
                for k in 0..kw {
                    let at = self.k_at(k);
                    let _ = writeln!(
                        forward_load,
                        "    w[{}] = {};",
                        (g * rows + i) * kw + k,
                        self.recurrent_weight(
                            &format!("row{g}_{i} + {at}"),
                            &at,
                            &format!("{g}u * u.hidden + row0 + {i}u"),
                            &format!("real{i} && {at} < quads"),
                        ),
                    );
                }
                let _ = writeln!(
                    forward_load,
                    "    let b{g}_{i} = hh_bias(d, {g}u, row0 + {i}u);"
                );
            }
        }
        let iq = self.input_quads;
        if iq > 0 {
            // wx[(g·rows + i)·iq + v] = W_ih[g·H + row0 + i, 4v .. 4v + 3].
            let _ = writeln!(
                forward_load,
                "    var wx: array<vec4<f32>, {}>;",
                g_count * rows * iq
            );
            for g in 0..g_count {
                for i in 0..rows {
                    for v in 0..iq {
                        let _ = writeln!(
                            forward_load,
                            "    wx[{}] = select(vec4<f32>(0.0), input_weights(d, {g}u * u.hidden + row0 + {i}u, {v}u), real{i});",
                            (g * rows + i) * iq + v
                        );
                    }
                    let _ = writeln!(
                        forward_load,
                        "    let bx{g}_{i} = ih_bias(d, {g}u, row0 + {i}u);"
                    );
                }
            }
        }
        let _ = writeln!(
            forward_load,
            "    let state_in = state_row(first & 1u, d, n);"
        );
        let _ = writeln!(
            forward_load,
            "    let cell_in = cell_row(first & 1u, d, n);"
        );
        for q in 0..quads {
            let _ = writeln!(
                forward_load,
                "    var h{q} = load_quad(state_in, {own} + {}u);",
                4 * q
            );
            if self.cell == CellKind::Lstm {
                let _ = writeln!(
                    forward_load,
                    "    var c{q} = load_quad(cell_in, {own} + {}u);",
                    4 * q
                );
            }
        }

        let mut forward_step = String::new();
        if self.shared {
            let half = self.half;
            let _ = writeln!(
                forward_step,
                "        let cur = ((s - first) & 1u) * {half}u;\n        let next = {half}u - cur;"
            );
        }
        if self.split > 1 {
            // The lane's part of h_{t−1}, from workgroup memory.
            self.fetch_part(&mut forward_step, "hb", 0);
        } else {
            self.fetch(&mut forward_step, "h", 0);
            for k in 0..kq {
                let _ = writeln!(
                    forward_step,
                    "        let hb{k} = {};",
                    self.broadcast("h", 0, k)
                );
            }
        }
        for g in 0..g_count {
            for i in 0..rows {
                let terms: Vec<_> = (0..kw)
                    .map(|k| ((g * rows + i) * kw + k, format!("hb{k}")))
                    .collect();
                dot(&mut forward_step, &format!("a{g}_{i}"), &terms);
            }
            if self.split > 1 {
                // The group's parts added: W_hh·h_{t−1} of its four units, in every part.
                let _ = writeln!(
                    forward_step,
                    "        let pa{g} = vec4<f32>(a{g}_0, a{g}_1, a{g}_2, a{g}_3);"
                );
                self.add_parts(&mut forward_step, &format!("pa{g}"), &format!("sa{g}"));
            }
        }
        // Each unit's input projections: P's, or W_ih·x_t + b_ih (each lane loading its
        // share of x_t's vec4s, broadcast as h's are), summed as the projection GEMM sums P
        // (`train_gemm_params.wgsl`: each term in turn within slices of SLICE, the slices in
        // turn, b last), so that the two ways give the same values.
        if iq > 0 {
            self.share(&mut forward_step, ("x", "xb"), "input_at", iq);
            for g in 0..g_count {
                for i in 0..rows {
                    let w = (g * rows + i) * iq;
                    let _ = writeln!(forward_step, "        var in{g}_{i} = 0.0;");
                    for slice in (0..4 * iq).step_by(GEMM_SLICE) {
                        let _ = writeln!(forward_step, "        {{\n            var part = 0.0;");
                        for k in slice..(slice + GEMM_SLICE).min(4 * iq) {
                            let _ = writeln!(
                                forward_step,
                                "            part += xb{}.{c} * wx[{}].{c};",
                                k / 4,
                                w + k / 4,
                                c = XYZW[k % 4]
                            );
                        }
                        let _ =
                            writeln!(forward_step, "            in{g}_{i} += part;\n        }}");
                    }
                    let _ = writeln!(forward_step, "        in{g}_{i} += bx{g}_{i};");
                }
            }
        } else {
            for g in 0..g_count {
                for q in 0..quads {
                    let _ = writeln!(
                        forward_step,
                        "        let inq{g}_{q} = load_quad(pre + {g}u * u.hidden, {own} + {}u);",
                        4 * q
                    );
                }
            }
        }
        // Every frame runs the same code: a dead one (past the sequence's length) stores
        // zeros as its output and h_{t−1}, and keeps the state (`live` selects; llvmpipe
        // would run both sides of an if/else, masked).
        let _ = writeln!(forward_step, "        let live = p < length;");
        for q in 0..quads {
            let _ = writeln!(
                forward_step,
                "        store_quad(hprev, {own} + {}u, select(vec4<f32>(0.0), h{q}, live));",
                4 * q
            );
        }
        // Each gate's values of quad q's four units, as the cell's functions take them.
        let quad = |prefix: &str, g: usize, q: usize| {
            let units: Vec<String> = (4 * q..4 * q + 4)
                .map(|i| format!("{prefix}{g}_{i}"))
                .collect();
            format!("vec4<f32>({})", units.join(", "))
        };
        let input = |g: usize, q: usize| {
            if iq > 0 {
                quad("in", g, q)
            } else {
                format!("inq{g}_{q}")
            }
        };
        // W_hh·h_{t−1} of quad q's units: the group's parts added, with a split.
        let rec = |g: usize, q: usize| {
            if self.split > 1 {
                format!("sa{g}")
            } else {
                quad("a", g, q)
            }
        };
        let gates = |value: &dyn Fn(usize) -> String| {
            let parts: Vec<String> = (0..4)
                .map(|g| {
                    if g < g_count {
                        value(g)
                    } else {
                        "vec4<f32>(0.0)".into()
                    }
                })
                .collect();
            format!("array<vec4<f32>, 4>({})", parts.join(", "))
        };
        for q in 0..quads {
            let j = format!("{own} + {}u", 4 * q);
            let call = match self.cell {
                CellKind::Rnn => format!(
                    "forward_rnn({j}, live, {}, out, {}, {})",
                    input(0, q),
                    rec(0, q),
                    quad("b", 0, q)
                ),
                CellKind::Lstm => format!(
                    "forward_lstm({j}, live, {}, saved, out, {}, {}, &c{q})",
                    gates(&|g| input(g, q)),
                    gates(&|g| rec(g, q)),
                    gates(&|g| quad("b", g, q))
                ),
                CellKind::Gru => format!(
                    "forward_gru({j}, live, {}, saved, out, {}, {}, h{q})",
                    gates(&|g| input(g, q)),
                    gates(&|g| rec(g, q)),
                    gates(&|g| quad("b", g, q))
                ),
            };
            let _ = writeln!(forward_step, "        h{q} = select(h{q}, {call}, live);");
        }
        self.publish(&mut forward_step, "next", &[(0, "h".into())]);
        self.publish(&mut forward_load, "0u", &[(0, "h".into())]);

        let mut forward_save = String::new();
        let _ = writeln!(
            forward_save,
            "    let state_out = state_row(end & 1u, d, n);"
        );
        let _ = writeln!(forward_save, "    let cell_out = cell_row(end & 1u, d, n);");
        for q in 0..quads {
            let j = 4 * q;
            let _ = writeln!(
                forward_save,
                "    store_quad(state_out, {own} + {j}u, h{q});"
            );
            if self.cell == CellKind::Lstm {
                let _ = writeln!(
                    forward_save,
                    "    store_quad(cell_out, {own} + {j}u, c{q});"
                );
            }
        }
        (forward_load, forward_step, forward_save)
    }

    /// The backward's `BACKWARD_LOAD`, `BACKWARD_STEP` and `BACKWARD_SAVE`.
    fn backward(&self) -> (String, String, String) {
        let (kq, kw, quads, g_count) = (self.kq, self.kw, self.quads, self.gates);
        let own = self.own();
        // Backward: w[m·quads + q] = W_hh[g·H + r', row0 + 4q .. 4q + 3] for the rows
        // m = g·pad + r (r' = r past the lane's part's first row, 4·kbase; zero for padding,
        // unless `SubgroupRecurrence::unmasked_weights`): this lane's columns, four units per
        // vec4.
        let pad = 4 * kw;
        let mut backward_load = String::new();
        for g in 0..g_count {
            for r in 0..pad {
                let r_at = match self.split {
                    1 => format!("{r}u"),
                    _ => format!("4u * kbase + {r}u"),
                };
                let _ = writeln!(
                    backward_load,
                    "    let row{g}_{r} = weights + ({g}u * u.hidden + {r_at}) * quads + row0 / 4u;"
                );
                for q in 0..quads {
                    let keep = match self.unmasked_weights {
                        true => String::new(),
                        false => format!("{r_at} < u.hidden && row0 + {}u < u.hidden", 4 * q),
                    };
                    let _ = writeln!(
                        backward_load,
                        "    w[{}] = {};",
                        (g * pad + r) * quads + q,
                        self.recurrent_weight(
                            &format!("row{g}_{r} + {q}u"),
                            &format!("row0 / 4u + {q}u"),
                            &format!("{g}u * u.hidden + {r_at}"),
                            &keep,
                        ),
                    );
                }
            }
        }
        // wo[o·quads + q] = W[o, d·S + row0 + 4q .. + 3]: the lane's columns of the head.
        let outputs = self.head_outputs;
        if outputs > 0 {
            let _ = writeln!(
                backward_load,
                "    var wo: array<vec4<f32>, {}>;",
                outputs * quads
            );
            for o in 0..outputs {
                for q in 0..quads {
                    let _ = writeln!(
                        backward_load,
                        "    wo[{}] = head_weights(d, {o}u, row0 + {}u);",
                        o * quads + q,
                        4 * q
                    );
                }
            }
        }
        // dG_hh of the step after the first this dispatch runs (zero past the end; frames
        // past a sequence's length hold zeros), and the carries.
        for g in 0..g_count {
            for q in 0..quads {
                let _ = writeln!(backward_load, "    var e{g}_{q} = vec4<f32>(0.0);");
            }
        }
        let _ = writeln!(backward_load, "    if step.index + 1u < u.seq_len {{");
        let _ = writeln!(
            backward_load,
            "        let after = frame_at(dghh_base, d, position(step.index + 1u, d), n, rows);"
        );
        for g in 0..g_count {
            for q in 0..quads {
                let _ = writeln!(
                    backward_load,
                    "        e{g}_{q} = load_quad(after + {g}u * u.hidden, {own} + {}u);",
                    4 * q
                );
            }
        }
        let _ = writeln!(backward_load, "    }}");
        for q in 0..quads {
            let j = 4 * q;
            let _ = writeln!(
                backward_load,
                "    var ch{q} = load_quad(carry_h_at(d, n), {own} + {j}u);"
            );
            if self.cell == CellKind::Lstm {
                let _ = writeln!(
                    backward_load,
                    "    var cc{q} = load_quad(carry_c_at(d, n), {own} + {j}u);"
                );
            }
        }

        let mut backward_step = String::new();
        if self.shared {
            let half = self.half;
            let _ = writeln!(
                backward_step,
                "        let cur = (i & 1u) * {half}u;\n        let next = {half}u - cur;"
            );
        }
        for g in 0..g_count {
            if self.split > 1 {
                // The lane's part of gate g's dG_hh, from workgroup memory.
                self.fetch_part(&mut backward_step, &format!("eb{g}_"), g);
                continue;
            }
            self.fetch(&mut backward_step, "e", g);
            for k in 0..kq {
                let name = if self.shared {
                    "e".to_string()
                } else {
                    format!("e{g}_")
                };
                let _ = writeln!(
                    backward_step,
                    "        let eb{g}_{k} = {};",
                    self.broadcast(&name, g, k)
                );
            }
        }
        // Σ_m dG_hh[m] · W_hh[m, j], for four units j at a time, m in order.
        for q in 0..quads {
            let _ = writeln!(backward_step, "        var through{q} = vec4<f32>(0.0);");
        }
        for g in 0..g_count {
            for k in 0..kw {
                for (c, component) in XYZW.iter().enumerate() {
                    let m = g * pad + 4 * k + c;
                    for q in 0..quads {
                        let _ = writeln!(
                            backward_step,
                            "        through{q} += eb{g}_{k}.{component} * w[{}];",
                            m * quads + q
                        );
                    }
                }
            }
        }
        if self.split > 1 {
            // The group's parts added: what reaches its four units' h through W_hh.
            for q in 0..quads {
                self.add_parts(
                    &mut backward_step,
                    &format!("through{q}"),
                    &format!("tsum{q}"),
                );
                let _ = writeln!(backward_step, "        through{q} = tsum{q};");
            }
        }
        // The output's gradient: dY's, or dL_t·W (each lane loading its share of dL_t's
        // vec4s, broadcast), summed as the head's GEMM sums dY (terms in turn within slices
        // of SLICE, the slices in turn), so that the two ways give the same values.
        if outputs > 0 {
            self.share(
                &mut backward_step,
                ("dl", "db"),
                "head_grad_at",
                outputs.div_ceil(4),
            );
            for q in 0..quads {
                let _ = writeln!(backward_step, "        var dy{q} = vec4<f32>(0.0);");
                for slice in (0..outputs).step_by(GEMM_SLICE) {
                    let _ = writeln!(
                        backward_step,
                        "        {{\n            var part = vec4<f32>(0.0);"
                    );
                    for o in slice..(slice + GEMM_SLICE).min(outputs) {
                        let _ = writeln!(
                            backward_step,
                            "            part += db{}.{} * wo[{}];",
                            o / 4,
                            XYZW[o % 4],
                            o * quads + q
                        );
                    }
                    let _ = writeln!(backward_step, "            dy{q} += part;\n        }}");
                }
            }
        }
        // Every frame runs the same code (a dead one, past the sequence's length, zeros its
        // gradients and keeps the carries: `live` selects in the cell's functions).
        let _ = writeln!(backward_step, "        let live = p < length;");
        for q in 0..quads {
            let j = format!("{own} + {}u", 4 * q);
            let dy = if outputs > 0 {
                format!("dy{q}")
            } else {
                format!("load_quad(dy, {j})")
            };
            let call = match self.cell {
                CellKind::Rnn => {
                    format!("backward_rnn({j}, live, dg, {dy}, out, through{q}, &ch{q})")
                }
                CellKind::Lstm => format!(
                    "backward_lstm({j}, live, dg, {dy}, saved, c_prev, through{q}, &ch{q}, &cc{q})"
                ),
                CellKind::Gru => format!(
                    "backward_gru({j}, live, dg, dghh, {dy}, saved, hprev, through{q}, &ch{q})"
                ),
            };
            let _ = writeln!(backward_step, "        let grads{q} = {call};");
            for g in 0..g_count {
                let _ = writeln!(backward_step, "        e{g}_{q} = grads{q}[{g}];");
            }
        }
        let gradients: Vec<(usize, String)> = (0..g_count).map(|g| (g, format!("e{g}_"))).collect();
        self.publish(&mut backward_step, "next", &gradients);
        self.publish(&mut backward_load, "0u", &gradients);

        let mut backward_save = String::new();
        for q in 0..quads {
            let j = 4 * q;
            let _ = writeln!(
                backward_save,
                "    store_quad(carry_h_at(d, n), {own} + {j}u, ch{q});"
            );
            if self.cell == CellKind::Lstm {
                let _ = writeln!(
                    backward_save,
                    "    store_quad(carry_c_at(d, n), {own} + {j}u, cc{q});"
                );
            }
        }
        (backward_load, backward_step, backward_save)
    }
}

#[cfg(test)]
mod tests {
    use super::{CellKind, SubgroupRecurrence, WorkgroupLimits};
    use crate::config::{Nonlinearity, RnnConfig, RnnMode};
    use crate::shaders::assert_valid;

    const LIMITS: WorkgroupLimits = WorkgroupLimits::LAVAPIPE;

    #[test]
    fn layouts_fit_the_registers_a_lane_may_hold() {
        let config = |mode, hidden, proj| RnnConfig {
            proj_size: proj,
            ..RnnConfig::new(mode, 3, hidden)
        };
        // What `Auto` (or, `fastest`, `Persistent`) chooses with W_hh from storage.
        let chosen = |mode, hidden, fastest| {
            SubgroupRecurrence::for_config(
                &config(mode, hidden, 0),
                Some(8),
                LIMITS,
                fastest,
                false,
            )
        };
        let layout =
            |mode, hidden, fastest| chosen(mode, hidden, fastest).map(|s| (s.subgroups, s.rows));
        let spec = |mode, hidden| layout(mode, hidden, false);
        let rnn = RnnMode::Rnn(Nonlinearity::Tanh);
        // One subgroup while eight units a lane cover H within the weights' cap.
        assert_eq!(spec(rnn, 20), Some((1, 4)));
        assert_eq!(spec(rnn, 64), Some((1, 8)));
        assert_eq!(spec(RnnMode::Lstm, 32), Some((1, 4)));
        // Then four units a lane over several subgroups.
        assert_eq!(spec(RnnMode::Gru, 36), Some((2, 4)));
        assert_eq!(spec(RnnMode::Lstm, 64), Some((2, 4)));
        assert_eq!(spec(rnn, 68), Some((3, 4)));
        assert_eq!(spec(rnn, 256), Some((8, 4)));
        // Wider gated states split each group of four units over 2, 4, 8 lanes: subgroups,
        // split and the weights a lane holds (at most 256), the workgroup's lanes (at most
        // 1024) and workgroup memory (at most 1024 vec4s).
        let split = |mode, hidden, lanes| {
            let limits = WorkgroupLimits { lanes, ..LIMITS };
            SubgroupRecurrence::for_config(&config(mode, hidden, 0), Some(8), limits, false, false)
                .map(|s| {
                    assert!(s.lanes * s.subgroups <= lanes);
                    assert!(16 * s.shared_vec4s() <= LIMITS.shared_bytes);
                    assert!(s.vec4s() * 4 >= hidden && s.vec4s() % s.split == 0);
                    (s.subgroups, s.split, s.lane_weights())
                })
        };
        assert_eq!(split(RnnMode::Lstm, 64, 1024), Some((2, 1, 256)));
        assert_eq!(split(RnnMode::Lstm, 68, 1024), Some((5, 2, 160)));
        assert_eq!(split(RnnMode::Lstm, 128, 1024), Some((8, 2, 256)));
        assert_eq!(split(RnnMode::Gru, 100, 1024), Some((7, 2, 168)));
        assert_eq!(split(RnnMode::Lstm, 256, 1024), Some((32, 4, 256)));
        assert_eq!(split(RnnMode::Gru, 256, 1024), Some((32, 4, 192)));
        assert_eq!(split(RnnMode::Lstm, 512, 1024), Some((128, 8, 256)));
        assert_eq!(split(RnnMode::Gru, 500, 1024), Some((128, 8, 192)));
        // The backward's groups: eight units over twice the lanes where that fits (the same
        // lanes, weights and K's vec4s in whole parts), else the forward's.
        let backward = |mode, hidden| {
            let s = SubgroupRecurrence::for_config(
                &config(mode, hidden, 0),
                Some(8),
                LIMITS,
                false,
                false,
            )
            .unwrap();
            let b = s.backward_form();
            assert_eq!(b.lanes * b.subgroups, s.lanes * s.subgroups);
            assert_eq!((b.lane_weights(), b.vec4s()), (s.lane_weights(), s.vec4s()));
            assert_eq!(b.vec4s() % b.split, 0);
            (b.rows, b.split)
        };
        assert_eq!(backward(RnnMode::Lstm, 64), (4, 1));
        assert_eq!(backward(RnnMode::Lstm, 68), (8, 4));
        assert_eq!(backward(RnnMode::Lstm, 256), (8, 8));
        assert_eq!(backward(RnnMode::Gru, 100), (8, 4));
        assert_eq!(backward(RnnMode::Lstm, 132), (4, 4));
        assert_eq!(backward(RnnMode::Lstm, 512), (4, 8));
        // Not beyond the lanes a workgroup may have, nor beyond 1024 vec4s of workgroup
        // memory (H = 516), nor for an Elman RNN (four units a lane reach H = 256).
        assert_eq!(split(RnnMode::Lstm, 512, 256), None);
        assert_eq!(split(RnnMode::Lstm, 516, 1024), None);
        assert_eq!(split(RnnMode::Gru, 516, 1024), None);
        assert_eq!(spec(rnn, 260), None);
        assert_eq!(spec(rnn, 17), None);
        let projected = config(RnnMode::Lstm, 16, 8);
        for fastest in [false, true] {
            assert!(
                SubgroupRecurrence::for_config(&projected, Some(8), LIMITS, fastest, false)
                    .is_none()
            );
            assert!(
                SubgroupRecurrence::for_config(&config(rnn, 16, 0), None, LIMITS, fastest, false)
                    .is_none()
            );
        }
        // The fastest kernels: a gated cell up to H = 64 in one subgroup, eight units a lane;
        // the rest as before.
        assert_eq!(layout(RnnMode::Lstm, 64, true), Some((1, 8)));
        assert_eq!(layout(RnnMode::Gru, 36, true), Some((1, 8)));
        assert_eq!(layout(RnnMode::Lstm, 32, true), Some((1, 4)));
        assert_eq!(layout(RnnMode::Lstm, 68, true), Some((5, 4)));
        assert_eq!(layout(rnn, 256, true), Some((8, 4)));
        // Whether the backward loads W_hh unmasked: a gated cell whose H fills the units
        // exactly (never an Elman RNN: its kernels would differ by nothing).
        let unmasked =
            |mode, hidden, fastest| chosen(mode, hidden, fastest).map(|s| s.unmasked_weights);
        assert_eq!(unmasked(RnnMode::Lstm, 64, false), Some(true));
        assert_eq!(unmasked(RnnMode::Lstm, 64, true), Some(true));
        assert_eq!(unmasked(RnnMode::Gru, 44, false), Some(false));
        assert_eq!(unmasked(RnnMode::Gru, 44, true), Some(false));
        assert_eq!(unmasked(rnn, 32, false), Some(false));
        assert_eq!(unmasked(rnn, 20, false), Some(false));
        // Wide subgroups (32 lanes): an LSTM with H = 64 splits its 16 groups over two lanes each,
        // in one subgroup, either way.
        let wide = |fastest| {
            SubgroupRecurrence::for_config(
                &config(RnnMode::Lstm, 64, 0),
                Some(32),
                LIMITS,
                fastest,
                false,
            )
            .map(|s| (s.subgroups, s.split, s.lane_weights()))
        };
        assert_eq!(
            (wide(false), wide(true)),
            (Some((1, 2, 128)), Some((1, 2, 128)))
        );
        // W_hh from its texture: every form up to 512 weight vec4s a lane, whatever was asked.
        let textured = |mode, hidden, fastest| {
            SubgroupRecurrence::for_config(&config(mode, hidden, 0), Some(8), LIMITS, fastest, true)
                .map(|s| {
                    assert!(s.texture_weights);
                    (s.subgroups, s.split, s.lane_weights())
                })
        };
        for fastest in [false, true] {
            assert_eq!(textured(RnnMode::Lstm, 64, fastest), Some((1, 1, 512)));
            assert_eq!(textured(RnnMode::Gru, 44, fastest), Some((1, 1, 384)));
            assert_eq!(textured(RnnMode::Lstm, 128, fastest), Some((4, 1, 512)));
            assert_eq!(textured(RnnMode::Lstm, 256, fastest), Some((16, 2, 512)));
            assert_eq!(textured(RnnMode::Gru, 256, fastest), Some((16, 2, 384)));
            assert_eq!(textured(RnnMode::Lstm, 512, fastest), Some((64, 4, 512)));
            assert_eq!(textured(rnn, 512, fastest), Some((16, 1, 512)));
            assert_eq!(textured(rnn, 516, fastest), None);
            assert_eq!(textured(RnnMode::Lstm, 516, fastest), None);
        }
        for hidden in (4..=520).step_by(4) {
            for mode in [rnn, RnnMode::Lstm, RnnMode::Gru] {
                if let Some(s) = SubgroupRecurrence::for_config(
                    &config(mode, hidden, 0),
                    Some(8),
                    LIMITS,
                    false,
                    true,
                ) {
                    assert!(s.vec4s() * 4 >= hidden);
                    assert!(s.lane_weights() <= super::MAX_TEXTURE_WEIGHTS);
                    assert!(s.lanes * s.subgroups <= 1024);
                } else {
                    assert!(hidden > 512, "{mode:?} H = {hidden}");
                }
                for (fastest, cap) in [
                    (false, super::MAX_WEIGHTS),
                    (true, super::MAX_PERSISTENT_WEIGHTS),
                ] {
                    let config = config(mode, hidden, 0);
                    if let Some(s) =
                        SubgroupRecurrence::for_config(&config, Some(8), LIMITS, fastest, false)
                    {
                        assert!(s.vec4s() * 4 >= hidden && s.lane_weights() <= cap);
                        assert!(s.subgroups == 1 || s.lane_weights() <= super::MAX_WEIGHTS);
                        assert!(s.lanes * s.subgroups <= 1024);
                        assert!(s.split == 1 || mode != rnn);
                    } else {
                        // Every gated state up to H = 512 runs in registers.
                        assert!(hidden > 512 || mode == rnn, "{mode:?} H = {hidden}");
                    }
                }
            }
        }
    }

    #[test]
    fn generated_wgsl_validates() {
        for cell in [CellKind::Rnn, CellKind::Lstm, CellKind::Gru] {
            for (lanes, subgroups, rows, split) in [
                (8, 1, 4, 1),
                (8, 1, 8, 1),
                (4, 1, 4, 1),
                (32, 1, 4, 1),
                (8, 2, 4, 1),
                (8, 3, 4, 1),
                (8, 5, 4, 2),
                (8, 4, 4, 4),
                (8, 8, 4, 8),
            ] {
                for (unmasked_weights, texture_weights) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let spec = SubgroupRecurrence {
                        cell,
                        lanes,
                        subgroups,
                        rows,
                        input_quads: 0,
                        head_outputs: 0,
                        unmasked_weights,
                        split,
                        texture_weights,
                    };
                    assert_valid(&format!("{spec:?}"), &spec.wgsl());
                }
            }
            // Projecting the input in the steps (one subgroup): fewer vec4s than lanes,
            // more (two a lane), none.
            // And the head's input gradient in the backward's: outputs not in fours, more
            // than a slice, none.
            for (lanes, rows, input_quads, head_outputs) in
                [(8, 4, 1, 3), (8, 8, 7, 28), (4, 4, 5, 0), (8, 4, 0, 37)]
            {
                let spec = SubgroupRecurrence {
                    cell,
                    lanes,
                    subgroups: 1,
                    rows,
                    input_quads,
                    head_outputs,
                    unmasked_weights: false,
                    split: 1,
                    texture_weights: input_quads % 2 == 1,
                };
                assert_valid(&format!("{spec:?}"), &spec.wgsl());
                assert_valid(&format!("{spec:?} program"), &spec.program_wgsl(""));
            }
        }
    }

    #[test]
    fn inputs_project_in_the_steps_only_where_it_pays() {
        // The steps sum as the GEMM's slices do.
        let slice = format!("const SLICE: u32 = {}u;", super::GEMM_SLICE);
        assert!(crate::shaders::TRAIN_GEMM_PARAMS.contains(&slice));
        let rnn = RnnMode::Rnn(Nonlinearity::Tanh);
        let quads = |mode, inputs, hidden, layers, batch| {
            let config = RnnConfig {
                num_layers: layers,
                ..RnnConfig::new(mode, inputs, hidden)
            };
            SubgroupRecurrence::for_config(&config, Some(8), LIMITS, false, false)
                .map(|s| s.with_input(&config, batch).input_quads)
        };
        // The character model: 28 features, H = 64, eight sequences.
        assert_eq!(quads(rnn, 28, 64, 1, 8), Some(7));
        assert_eq!(quads(RnnMode::Lstm, 8, 32, 1, 4), Some(2));
        assert_eq!(quads(RnnMode::Gru, 4, 8, 1, 5), Some(1));
        // Not: fewer than four sequences, features not in fours or over half H, two layers,
        // several subgroups (a GRU with H = 64).
        assert_eq!(quads(rnn, 28, 64, 1, 3), Some(0));
        assert_eq!(quads(rnn, 30, 64, 1, 8), Some(0));
        assert_eq!(quads(rnn, 36, 64, 1, 8), Some(0));
        assert_eq!(quads(rnn, 28, 64, 2, 8), Some(0));
        assert_eq!(quads(RnnMode::Gru, 8, 64, 1, 8), Some(0));
        assert_eq!(quads(RnnMode::Lstm, 16, 32, 1, 8), Some(4));
        // Nor where the kernel's own weights already fill the registers (one subgroup of the
        // fastest kind holding a GRU with H = 64).
        let config = RnnConfig::new(RnnMode::Gru, 8, 64);
        let fastest =
            SubgroupRecurrence::for_config(&config, Some(8), LIMITS, true, false).unwrap();
        assert_eq!(fastest.with_input(&config, 8).input_quads, 0);
    }
}
