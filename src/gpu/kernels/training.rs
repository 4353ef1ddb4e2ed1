//! The training pipelines (`train_step.wgsl`, `train_gemm.wgsl`): every one binds the same
//! five things, so a trainer's workspace needs one bind group for its whole forward and
//! backward: a dynamically offset uniform of the operation (`TrainUnit` or `GemmParams`), a
//! dynamically offset step index, and three storage buffers (parameters read-only, gradients,
//! working memory), then the parameters and the working memory again as vec4 arrays.

use bytemuck::{Pod, Zeroable};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::counters::Counters;
use crate::gpu::kernels::sequence_tiles::{self, SequenceTile};
use crate::gpu::kernels::weight_texture::WeightTextureKernel;
use crate::gpu::train_subgroup::SubgroupRecurrence;
use crate::shaders::{self, Template};

use super::{
    StepIndex, entry_pipeline, size_of, storage_entry, storage_entry_unsized, texture_entry,
    uniform_entry,
};

/// Bytes of every operation's uniform binding (a `TrainUnit` or a `GemmBatch`); entries lie
/// at multiples of this rounded up to the device's uniform offset alignment.
pub(crate) const OP_UNIFORM_BYTES: u64 = std::mem::size_of::<GemmBatch>() as u64;

/// `Unit` of `train_step.wgsl`, field for field: one layer's sizes and where its values lie.
/// Offsets are in f32 elements; `*_half` is the size of one ping-pong half.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct TrainUnit {
    pub seq_len: u32,
    pub batch: u32,
    pub hidden: u32,
    pub state_size: u32,
    pub directions: u32,
    pub gates: u32,
    /// 0 Elman RNN, 1 LSTM, 2 GRU.
    pub cell: u32,
    /// Elman RNN: 0 tanh, 1 relu.
    pub activation: u32,
    pub has_bias: u32,
    pub proj: u32,
    pub y_stride: u32,
    pub lengths: u32,
    /// Elements between the two directions' parameters.
    pub param_stride: u32,
    pub w_hh: u32,
    pub b_hh: u32,
    pub w_hr: u32,
    pub p: u32,
    pub saved: u32,
    pub hprev: u32,
    pub dghh: u32,
    pub m: u32,
    pub dr: u32,
    pub state: u32,
    pub state_half: u32,
    pub cstate: u32,
    pub cstate_half: u32,
    pub carry_h: u32,
    pub carry_c: u32,
    pub y: u32,
    pub dy: u32,
    /// This layer's first row in the stacked states, `layer · D`.
    pub unit0: u32,
    pub c0: u32,
    /// Steps one persistent dispatch runs, forward and backward.
    pub forward_steps: u32,
    pub backward_steps: u32,
    /// The persistent kernels read W_hh, h and dG as vec4s (H_out and H multiples of four,
    /// no projection).
    pub vec4: u32,
    /// Where the register recurrence's forward projects the input itself
    /// (`SubgroupRecurrence::input_quads`): the input's features (else 0), where its frames
    /// lie and their stride, and direction 0's W_ih and b_ih.
    pub inputs: u32,
    pub x: u32,
    pub x_stride: u32,
    pub w_ih: u32,
    pub b_ih: u32,
    /// Where its backward computes the head's input gradient itself
    /// (`SubgroupRecurrence::head_outputs`): the head's outputs (else 0), its weight and
    /// its features (the weight's row stride), and where the gradient of its output lies.
    pub head_outputs: u32,
    pub head_w: u32,
    pub head_features: u32,
    pub head_dout: u32,
}

/// `Gemm` of `train_gemm.wgsl`: C (+)= A·B (+ bias), strides in elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub flags: u32,
    pub a_off: u32,
    pub a_sm: u32,
    pub a_sk: u32,
    pub b_off: u32,
    pub b_sk: u32,
    pub b_sn: u32,
    pub c_off: u32,
    pub c_sm: u32,
    pub c_sn: u32,
    pub bias_off: u32,
    /// Where along k this dispatch's part of the sum starts.
    pub k0: u32,
    /// With `ROW_SUMS`: where the M sums of A's rows are added (in C's buffer).
    pub sums_off: u32,
}

impl GemmParams {
    /// Add to C instead of overwriting it.
    pub const ACCUMULATE: u32 = 1;
    /// Add `params[bias_off + n]` to every row.
    pub const BIAS: u32 = 2;
    /// Also add Σ_k A[m, k] to C's buffer at `sums_off + m` (the subgroup form only): what
    /// a GEMM with B a column of ones would, in the same order.
    pub const ROW_SUMS: u32 = 4;
}

/// `GemmBatch` of `train_gemm_common.wgsl`: up to `CAPACITY` independent GEMMs of one kernel
/// as one dispatch. On lavapipe every dispatch costs ~40 µs of thread hand-off, and a weight
/// gradient's GEMM of a small model is a few tiles with a long k: alone, one of the two
/// cores often idles; together, the tiles share them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct GemmBatch {
    pub gemms: [GemmParams; GemmBatch::CAPACITY],
    /// Each GEMM's first workgroup, counting the dispatch's row by row (`u32::MAX`: none).
    pub first: [u32; GemmBatch::CAPACITY],
    /// Each GEMM's tiles along m.
    pub tiles_m: [u32; GemmBatch::CAPACITY],
    /// The batch's workgroups, and the dispatch's along x.
    pub total: u32,
    pub width: u32,
    pub _pad: [u32; 2],
}

impl GemmBatch {
    pub const CAPACITY: usize = 4;

    /// `gemms` (1 to `CAPACITY` of them) run by `kernel` in one dispatch of at most
    /// `max_width` workgroups along x: the batch, and the dispatch's workgroups (x, y).
    pub fn new(kernel: GemmKernel, gemms: &[GemmParams], max_width: u32) -> (Self, [u32; 2]) {
        assert!(
            (1..=Self::CAPACITY).contains(&gemms.len()),
            "a GEMM batch has 1 to {} GEMMs",
            Self::CAPACITY
        );
        let mut batch = GemmBatch {
            first: [u32::MAX; Self::CAPACITY],
            ..Default::default()
        };
        for (i, g) in gemms.iter().enumerate() {
            let [along_m, along_n] = kernel.groups(g.m, g.n);
            batch.gemms[i] = *g;
            batch.first[i] = batch.total;
            batch.tiles_m[i] = along_m;
            batch.total += along_m * along_n;
        }
        batch.width = batch.total.clamp(1, max_width.max(1));
        (batch, [batch.width, batch.total.div_ceil(batch.width)])
    }
}

/// How a GEMM operand is loaded: element by element, or in vec4s along k or along its other
/// index (the block GEMM loads 4 × 4 blocks so, `train_gemm.wgsl`; the subgroup GEMM its
/// values of a step, `GemmVectors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BlockLoad {
    /// Element by element: any strides.
    Elements,
    /// Four vec4s along k.
    AlongK,
    /// Four vec4s along the other index (m of A, n of B).
    AlongOuter,
}

/// The GEMM kernel's source for `kernel`.
pub(crate) fn gemm_wgsl(kernel: GemmKernel) -> String {
    let (a, b, c) = match kernel.buffers {
        GemmBuffers::WorkParamsToWork => ("work", "params", "work"),
        GemmBuffers::WorkWorkToGrads => ("work", "work", "grads"),
    };
    let template = match kernel.form {
        GemmForm::Blocks { a, b } => {
            let a_block = match a {
                BlockLoad::Elements => "a_block_elements",
                BlockLoad::AlongK => "a_block_along_k",
                BlockLoad::AlongOuter => "a_block_along_m",
            };
            let b_block = match b {
                BlockLoad::Elements => "b_block_elements",
                BlockLoad::AlongK => "b_block_along_k",
                BlockLoad::AlongOuter => "b_block_along_n",
            };
            Template::new(shaders::TRAIN_GEMM)
                .set("A_BLOCK", a_block)
                .set("B_BLOCK", b_block)
        }
        GemmForm::Subgroup {
            lanes,
            row_sums,
            vectors,
        } => subgroup_gemm(lanes as usize, row_sums, vectors),
    };
    template
        .set("GEMM_COMMON", shaders::TRAIN_GEMM_COMMON)
        .set("GEMM_PARAMS", shaders::TRAIN_GEMM_PARAMS)
        .set("A", a)
        .set("B", b)
        .set("C", c)
        .set("B4", format!("{b}4"))
        .set("C4", format!("{c}4"))
        .finish()
}

/// `train_gemm_subgroup.wgsl` for `lanes` lanes, its per-row work written out: row r of the
/// tile is component r % 4 of what lane r / 4 loaded; each row's sums are a vec4 over the
/// lane's four columns.
fn subgroup_gemm(lanes: usize, row_sums: bool, vectors: GemmVectors) -> Template {
    use std::fmt::Write;
    let rows = 4 * lanes;
    let xyzw = ["x", "y", "z", "w"];
    let (mut sums, mut blocks, mut add_blocks, mut store) =
        (String::new(), String::new(), String::new(), String::new());
    // A step k takes this lane's four rows of A (`a_mine`, shared by broadcast) and its four
    // columns of B (`b`). The k loop runs four steps a trip, their loads first: vec4s along k
    // (four steps' values at once) or, for the other forms, each step's values. Fewer trips
    // cost llvmpipe less (measured: weight-gradient GEMMs ~15 % faster than a trip per step;
    // eight steps a trip no faster than two or four). Vec4 loads index from starts computed
    // once (`starts`): rows and columns past the matrix are clamped to its last ones, whose
    // sums are never stored, so the loop checks no bounds.
    let mut starts = String::new();
    let mut prefetch = String::new();
    // The values of step `k + j` (`j` < 4) as an expression: A's four rows, then B's columns.
    let a_load = match vectors.a {
        BlockLoad::Elements => OperandLoad::Expression(
            "vec4<f32>(a_at(mine, K), a_at(mine + 1u, K), a_at(mine + 2u, K), a_at(mine + 3u, K))",
        ),
        BlockLoad::AlongOuter => {
            starts.push_str(
                "    let a_start = (g.a_off + min(mine, g.m - 4u)) / 4u;\n    let a_step = g.a_sk / 4u;\n",
            );
            OperandLoad::Expression("work4[a_start + (K) * a_step]")
        }
        BlockLoad::AlongK => {
            for i in 0..4 {
                let _ = writeln!(
                    starts,
                    "    let a_start{i} = (g.a_off + min(mine + {i}u, g.m - 1u) * g.a_sm) / 4u;"
                );
                let _ = writeln!(
                    prefetch,
                    "            let a_k{i} = work4[a_start{i} + k / 4u];"
                );
            }
            OperandLoad::AlongK("a_k")
        }
    };
    let b_load = match vectors.b {
        BlockLoad::Elements => OperandLoad::Expression(
            "vec4<f32>(b_at(K, n0), b_at(K, n0 + 1u), b_at(K, n0 + 2u), b_at(K, n0 + 3u))",
        ),
        BlockLoad::AlongOuter => {
            starts.push_str(
                "    let b_start = (g.b_off + min(n0, g.n - 4u)) / 4u;\n    let b_step = g.b_sk / 4u;\n",
            );
            OperandLoad::Expression("{{B4}}[b_start + (K) * b_step]")
        }
        BlockLoad::AlongK => {
            for i in 0..4 {
                let _ = writeln!(
                    starts,
                    "    let b_start{i} = (g.b_off + min(n0 + {i}u, g.n - 1u) * g.b_sn) / 4u;"
                );
                let _ = writeln!(
                    prefetch,
                    "            let b_k{i} = {{{{B4}}}}[b_start{i} + k / 4u];"
                );
            }
            OperandLoad::AlongK("b_k")
        }
    };
    // A step's work once `a_mine` and `b` hold its values.
    let mut step = String::new();
    for l in 0..lanes {
        let _ = writeln!(
            step,
            "            let a{l} = subgroupBroadcast(a_mine, {l}u);"
        );
    }
    for r in 0..rows {
        let _ = writeln!(sums, "    var acc{r} = vec4<f32>(0.0);");
        let _ = writeln!(blocks, "        var blk{r} = vec4<f32>(0.0);");
        let _ = writeln!(
            step,
            "            blk{r} += a{}.{} * b;",
            r / 4,
            xyzw[r % 4]
        );
        let _ = writeln!(add_blocks, "        acc{r} += blk{r};");
        if row_sums {
            // What `blk += a · 1` would sum (a product by one is exact).
            let _ = writeln!(sums, "    var row_sum{r} = 0.0;");
            let _ = writeln!(blocks, "        var row_blk{r} = 0.0;");
            let _ = writeln!(
                step,
                "            row_blk{r} += a{}.{};",
                r / 4,
                xyzw[r % 4]
            );
            let _ = writeln!(add_blocks, "        row_sum{r} += row_blk{r};");
        }
        if vectors.c {
            if r == 0 {
                let _ = writeln!(store, "    let bias = bias_columns(n0);");
            }
            let _ = writeln!(store, "    store_columns(m0 + {r}u, n0, acc{r}, bias);");
        } else {
            for (c, component) in xyzw.iter().enumerate() {
                if r == 0 {
                    let _ = writeln!(store, "    let bias{c} = bias_element(n0 + {c}u);");
                }
                let _ = writeln!(
                    store,
                    "    store_element(m0 + {r}u, n0 + {c}u, acc{r}.{component}, bias{c});"
                );
            }
        }
    }
    if row_sums {
        // One lane of each GEMM's first column of tiles adds them (every lane has them all).
        let _ = writeln!(
            store,
            "    if (g.flags & ROW_SUMS) != 0u && tile.y == 0u && lane == 0u {{"
        );
        for r in 0..rows {
            let _ = writeln!(store, "        add_row_sum(m0 + {r}u, row_sum{r});");
        }
        let _ = writeln!(store, "    }}");
    }
    // Four steps a trip, in order (k ascending, as the block form sums), written out: a loop
    // over the four would index the vec4s dynamically. Vec4s along k need k in fours; the
    // other forms finish a slice's last steps one a trip.
    let mut trip = prefetch;
    for j in 0..4 {
        let _ = writeln!(
            trip,
            "            let a_mine{j} = {};\n            let b{j} = {};",
            a_load.step(j),
            b_load.step(j)
        );
    }
    let step_in_block = step.replace("\n            ", "\n                ");
    for j in 0..4 {
        let _ = write!(
            trip,
            "            {{\n                let a_mine = a_mine{j};\n                let b = b{j};\n    {step_in_block}            }}\n"
        );
    }
    let mut k_loop = format!(
        "        var k = k_block;\n        for (; k + 4u <= k_stop; k += 4u) {{\n{trip}        }}\n"
    );
    if let (OperandLoad::Expression(a), OperandLoad::Expression(b)) = (&a_load, &b_load) {
        let _ = write!(
            k_loop,
            "        for (; k < k_stop; k++) {{\n            let a_mine = {};\n            let b = {};\n{step}        }}",
            a.replace('K', "k"),
            b.replace('K', "k")
        );
    }
    Template::new(shaders::TRAIN_GEMM_SUBGROUP)
        .set("LANES", lanes.to_string())
        .set("TILE_ROWS", rows.to_string())
        .set("ROWS_PER_LANE", "4")
        .set("DECLARE_SUMS", starts + &sums)
        .set("DECLARE_BLOCKS", blocks)
        .set("K_LOOP", k_loop)
        .set("ADD_BLOCKS", add_blocks)
        .set("STORE", store)
}

/// How the subgroup GEMM's generator gets an operand's values for a step.
enum OperandLoad {
    /// A load expression of the step's k, written `K`.
    Expression(&'static str),
    /// Components of the four vec4s along k loaded before a trip (`{name}0` to `{name}3`).
    AlongK(&'static str),
}

impl OperandLoad {
    /// The values of step `j` of a trip starting at `k`.
    fn step(&self, j: usize) -> String {
        match self {
            OperandLoad::Expression(load) => load.replace('K', &format!("k + {j}u")),
            OperandLoad::AlongK(name) => {
                let c = ["x", "y", "z", "w"][j];
                format!("vec4<f32>({name}0.{c}, {name}1.{c}, {name}2.{c}, {name}3.{c})")
            }
        }
    }
}

/// Every specialisation of the GEMM kernel: the block forms, and the subgroup form where the
/// adapter's subgroups have a fixed size (`subgroup`).
pub(crate) fn all_gemm_kernels(subgroup: Option<usize>) -> Vec<GemmKernel> {
    let mut all = Vec::new();
    for buffers in [GemmBuffers::WorkParamsToWork, GemmBuffers::WorkWorkToGrads] {
        for a in BlockLoad::ALL {
            for b in BlockLoad::ALL {
                all.push(GemmKernel {
                    buffers,
                    form: GemmForm::Blocks { a, b },
                });
            }
        }
        if let Some(lanes) = subgroup {
            for row_sums in [false, true] {
                for vectors in GemmVectors::all() {
                    all.push(GemmKernel {
                        buffers,
                        form: GemmForm::Subgroup {
                            lanes: lanes as u32,
                            row_sums,
                            vectors,
                        },
                    });
                }
            }
        }
    }
    all
}

/// Storage buffers per shader stage the training kernels bind: beyond wgpu's downlevel
/// limits (4), within its defaults (8).
pub(crate) const TRAINING_STORAGE_BUFFERS: u32 = 7;

impl BlockLoad {
    pub const ALL: [BlockLoad; 3] = [
        BlockLoad::Elements,
        BlockLoad::AlongK,
        BlockLoad::AlongOuter,
    ];
}

/// One specialisation of the GEMM kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmKernel {
    pub buffers: GemmBuffers,
    pub form: GemmForm,
}

/// How a GEMM's workgroups divide C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GemmForm {
    /// `train_gemm.wgsl`: 8 × 8 invocations of 8 × 8 outputs, operands' 4 × 4 blocks loaded
    /// as the layouts allow. Any adapter.
    Blocks { a: BlockLoad, b: BlockLoad },
    /// `train_gemm_subgroup.wgsl`: one subgroup of `lanes` lanes per 4·lanes × 4·lanes tile,
    /// A shared by subgroupBroadcast; with `row_sums`, also A's row sums (`ROW_SUMS`); the
    /// operands `vectors` names moved as vec4s. Adapters with a fixed subgroup size.
    Subgroup {
        lanes: u32,
        row_sums: bool,
        vectors: GemmVectors,
    },
}

/// How a subgroup GEMM moves its operands (see `program::gemm_vectors`): A and B element by
/// element, or as vec4s along the index the layout has side by side (a lane's four rows of A
/// or four columns of B, or four steps of k at once), and C's four columns of a lane as one
/// vec4 or not. On llvmpipe every load and store runs lane by lane, so one vec4 instead of
/// four scalars (each with its bounds check) makes the loop and the epilogue much cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmVectors {
    pub a: BlockLoad,
    pub b: BlockLoad,
    pub c: bool,
}

impl GemmVectors {
    /// Scalars throughout: any layout.
    #[cfg(test)]
    pub const SCALAR: GemmVectors = GemmVectors {
        a: BlockLoad::Elements,
        b: BlockLoad::Elements,
        c: false,
    };

    /// Every combination.
    pub fn all() -> impl Iterator<Item = GemmVectors> {
        BlockLoad::ALL.into_iter().flat_map(|a| {
            BlockLoad::ALL
                .into_iter()
                .flat_map(move |b| [false, true].map(|c| GemmVectors { a, b, c }))
        })
    }
}

impl GemmKernel {
    /// Tiles covering an M × N result, along m and along n.
    pub fn groups(&self, m: u32, n: u32) -> [u32; 2] {
        let tile = match self.form {
            GemmForm::Blocks { .. } => GEMM_TILE,
            GemmForm::Subgroup { lanes, .. } => 4 * lanes,
        };
        [m.div_ceil(tile), n.div_ceil(tile)]
    }
}

/// Which buffers a GEMM reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GemmBuffers {
    /// A in `work`, B in `params`, C in `work`: projections, the head, input gradients.
    WorkParamsToWork,
    /// A and B in `work`, C in `grads`: weight and bias gradients.
    WorkWorkToGrads,
}

/// The training step entry points of `train_step.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StepEntry {
    ForwardStep,
    ForwardProject,
    BackwardProject,
    BackwardStep,
    InitialStateGradient,
    ForwardPersistent,
    BackwardPersistent,
    /// The persistent forms for a tile of sequences a workgroup (vec4 layouts only); the
    /// forward's for a cell of the given number of gates.
    ForwardPersistentTiled(SequenceTile, usize),
    BackwardPersistentTiled(SequenceTile),
}

impl StepEntry {
    /// The entry point's name in `train_step.wgsl`.
    pub fn name(self) -> &'static str {
        match self {
            StepEntry::ForwardStep => "forward_step",
            StepEntry::ForwardProject => "forward_project",
            StepEntry::BackwardProject => "backward_project",
            StepEntry::BackwardStep => "backward_step",
            StepEntry::InitialStateGradient => "initial_state_gradient",
            StepEntry::ForwardPersistent => "forward_persistent",
            StepEntry::BackwardPersistent => "backward_persistent",
            StepEntry::ForwardPersistentTiled(tile, gates) => tile.forward_entry(gates),
            StepEntry::BackwardPersistentTiled(tile) => tile.backward_entry(),
        }
    }
}

/// Invocations of a step kernel's workgroup along the features.
pub(crate) const TRAIN_STEP_WORKGROUP: u32 = 64;

/// A GEMM workgroup's tile of C, each side (8 × 8 invocations of 8 × 8).
pub(crate) const GEMM_TILE: u32 = 64;

/// The most k one GEMM dispatch sums over: llvmpipe stops an invocation after 65,535 loop
/// iterations.
pub(crate) const GEMM_MAX_DEPTH: u32 = 32768;

/// A training pipeline that compiles on demand: an entry point of `train_step.wgsl`, or a GEMM
/// specialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TrainingPipeline {
    Step(StepEntry),
    Gemm(GemmKernel),
}

/// The training pipelines of one device. A program uses a few of the dozens there are (the
/// step kernels not at all where the recurrence runs in registers), and each costs up to
/// seconds of LLVM on a software adapter: each compiles when a workspace first needs it.
pub(crate) struct TrainingKernels {
    pub layout: wgpu::BindGroupLayout,
    step_module: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<TrainingPipeline, wgpu::ComputePipeline>>,
    /// Small programs as one kernel each, by their recurrence and entry point's body.
    programs: Mutex<HashMap<(SubgroupRecurrence, String), wgpu::ComputePipeline>>,
    /// The register-resident recurrences, compiled on first use.
    subgroup: Mutex<HashMap<SubgroupRecurrence, Arc<SubgroupPipelines>>>,
    /// Copies W_hh into the texture the register recurrences load it from.
    pub weight_texture: WeightTextureKernel,
}

/// What a training bind group binds (see [`TrainingKernels::bind_group`]).
#[derive(Clone, Copy)]
pub(crate) struct TrainingBuffers<'a> {
    /// Every operation's uniforms (`OP_UNIFORM_BYTES` apart or more).
    pub ops: &'a wgpu::Buffer,
    /// The step indices.
    pub steps: &'a wgpu::Buffer,
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub work: &'a wgpu::Buffer,
    /// W_hh of every layer and direction as texels (`gpu::training::recurrent_weights`).
    pub recurrent_weights: &'a wgpu::TextureView,
}

/// The two entry points of one `SubgroupRecurrence`.
pub(crate) struct SubgroupPipelines {
    pub forward: wgpu::ComputePipeline,
    pub backward: wgpu::ComputePipeline,
}

impl TrainingKernels {
    /// The layout and the step kernels' module of `device` (the pipelines come later:
    /// [`prepare`](Self::prepare)).
    pub fn new(device: &wgpu::Device, counters: &Counters) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("training"),
            entries: &[
                uniform_entry(0, wgpu::BufferSize::new(OP_UNIFORM_BYTES), true),
                uniform_entry(1, size_of::<StepIndex>(), true),
                storage_entry(2, true),
                storage_entry(3, false),
                storage_entry(4, false),
                storage_entry_unsized(5, true),
                storage_entry_unsized(6, false),
                storage_entry_unsized(7, false),
                // The uniforms of every operation, read by the one-dispatch programs.
                storage_entry_unsized(8, true),
                // W_hh as texels, read by the register recurrences.
                texture_entry(9, wgpu::TextureViewDimension::D2Array),
            ],
        });
        let step_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("train_step"),
            source: wgpu::ShaderSource::Wgsl(shaders::train_step(&sequence_tiles::wgsl()).into()),
        });
        TrainingKernels {
            step_module,
            pipelines: Mutex::new(HashMap::new()),
            programs: Mutex::new(HashMap::new()),
            subgroup: Mutex::new(HashMap::new()),
            weight_texture: WeightTextureKernel::new(device, counters),
            layout,
        }
    }

    /// The pipelines of `spec`, compiled on first use and kept for the device.
    pub fn subgroup(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        spec: SubgroupRecurrence,
    ) -> Arc<SubgroupPipelines> {
        // A poisoned lock only means another compilation panicked; the map is still whole.
        let mut cache = self.subgroup.lock().unwrap_or_else(|e| e.into_inner());
        let pipelines = cache.entry(spec).or_insert_with(|| {
            let label = format!("training recurrence {spec:?}");
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(spec.wgsl().into()),
            });
            let pipeline = |entry: &str| {
                entry_pipeline(device, counters, &label, &module, entry, &self.layout)
            };
            Arc::new(SubgroupPipelines {
                forward: pipeline("forward"),
                backward: pipeline("backward"),
            })
        });
        Arc::clone(pipelines)
    }

    /// A bind group of the training layout over `buffers`: one operation's and one step's
    /// uniforms (windows at dynamic offsets), `params`, `grads` and `work` with their vec4
    /// views, and every operation's uniforms as storage (read by the one-dispatch programs).
    pub fn bind_group(
        &self,
        device: &wgpu::Device,
        buffers: &TrainingBuffers<'_>,
    ) -> wgpu::BindGroup {
        fn window(buffer: &wgpu::Buffer, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: wgpu::BufferSize::new(size),
            })
        }
        let TrainingBuffers {
            ops,
            steps,
            params,
            grads,
            work,
            recurrent_weights,
        } = *buffers;
        let resources = [
            window(ops, OP_UNIFORM_BYTES),
            window(steps, std::mem::size_of::<StepIndex>() as u64),
            params.as_entire_binding(),
            grads.as_entire_binding(),
            work.as_entire_binding(),
            params.as_entire_binding(),
            work.as_entire_binding(),
            grads.as_entire_binding(),
            ops.as_entire_binding(),
        ];
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .chain([wgpu::BindingResource::TextureView(recurrent_weights)])
            .enumerate()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: binding as u32,
                resource,
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("training"),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Compiles `pipeline` unless it is compiled.
    pub fn prepare(&self, device: &wgpu::Device, counters: &Counters, pipeline: TrainingPipeline) {
        // A poisoned lock only means another compilation panicked; the map is still whole.
        let mut cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        cache.entry(pipeline).or_insert_with(|| match pipeline {
            TrainingPipeline::Step(entry) => {
                let name = entry.name();
                entry_pipeline(
                    device,
                    counters,
                    name,
                    &self.step_module,
                    name,
                    &self.layout,
                )
            }
            TrainingPipeline::Gemm(kernel) => {
                let label = format!("training gemm {kernel:?}");
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&label),
                    source: wgpu::ShaderSource::Wgsl(gemm_wgsl(kernel).into()),
                });
                entry_pipeline(device, counters, &label, &module, "main", &self.layout)
            }
        });
    }

    /// The kernel of a small training program run as one dispatch (`run`: its entry point's
    /// body), compiled on first use and kept for the device (workspaces of one shape share it).
    pub fn program(
        &self,
        device: &wgpu::Device,
        counters: &Counters,
        spec: SubgroupRecurrence,
        run: &str,
    ) -> wgpu::ComputePipeline {
        let mut cache = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((spec, run.to_string()))
            .or_insert_with(|| {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("training program"),
                    source: wgpu::ShaderSource::Wgsl(spec.program_wgsl(run).into()),
                });
                entry_pipeline(
                    device,
                    counters,
                    "training program",
                    &module,
                    "run",
                    &self.layout,
                )
            })
            .clone()
    }

    /// `pipeline`, which [`prepare`](Self::prepare) compiled (a workspace prepares every
    /// pipeline of its programs when it is made).
    pub fn pipeline(&self, pipeline: TrainingPipeline) -> wgpu::ComputePipeline {
        let cache = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(&pipeline)
            .unwrap_or_else(|| panic!("{pipeline:?} was not prepared"))
            .clone()
    }
}
