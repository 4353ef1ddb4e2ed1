//! Which kernel runs each layer of a forward, decided once per (model, shape): the workspace
//! allocates what the plan needs and the scheduler records what it says, neither decides.

use crate::gpu::architecture::{Architecture, Cell};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{GatedStepKernel, ProjectionParams};
use crate::gpu::persistent_io::STEPS_PER_DISPATCH;
use crate::gpu::persistent_specs::PersistentSpecs;
use crate::layout::{ForwardShape, FrameStrides};

/// How one layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerKernel {
    /// The persistent kernel computing x_t·W_ihᵀ + b itself in each step: no projection runs
    /// (see [`PersistentSpecs::fusing_input`]).
    FusedInput(PersistentSpecs),
    /// The first `chunk` timesteps projected, then the persistent kernel, each dispatch of
    /// which projects the next chunk beside the recurrence (see
    /// [`PersistentSpecs::projecting_ahead`]).
    ProjectingAhead { spec: PersistentSpecs, chunk: usize },
    /// The projection of every timestep, then the plan's shared persistent kernel.
    Persistent,
    /// The projection, then one Elman step dispatch per timestep: the block kernel (4 units
    /// × several sequences an invocation) or one unit an invocation.
    ElmanSteps { blocks: bool },
    /// The projection, then one gated step dispatch per timestep (block or unit form), and
    /// for a projected LSTM (`projected`: H_out) a second dispatch for `h = W_hr·h̃`.
    GatedSteps {
        blocks: bool,
        projected: Option<u32>,
    },
    /// Advanced together with every other layer, one dispatch per wave (only layer 0's
    /// projection runs on its own; see `shaders/wavefront_block.wgsl`).
    Wave,
}

/// The persistent kernel the plan's [`LayerKernel::Persistent`] layers share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PersistentPlan {
    /// The kernel, specialised for this batch (its batch tile).
    pub spec: PersistentSpecs,
    /// Sequences per workgroup.
    pub batch_tile: u32,
    /// Timesteps per dispatch (llvmpipe's loop limit).
    pub steps_per_dispatch: u32,
}

/// Every layer's kernel and frames for one (model, shape).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    /// How each layer reads its input frames and writes its output frames.
    pub frames: Vec<LayerFrames>,
    pub layers: Vec<LayerKernel>,
    /// The model's persistent kernel for this batch, when it has one; the layers that own
    /// their input derive theirs from it.
    pub persistent: Option<PersistentPlan>,
}

/// What the model brings to a plan: what it compiled and uploaded when it was made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelKernels {
    /// The persistent kernel it runs (for one sequence a workgroup), if any.
    pub persistent: Option<PersistentSpecs>,
    /// Whether it uploaded the wavefront's weights (a stacked unidirectional Elman RNN
    /// running per step).
    pub wavefront: bool,
    pub head: bool,
}

impl Plan {
    /// The plan of a forward over `shape` of a model with `arch` and `kernels` on `ctx`.
    pub fn new(
        ctx: &GpuContext,
        arch: &Architecture,
        kernels: ModelKernels,
        shape: &ForwardShape,
    ) -> Self {
        let (t, n, l) = (shape.seq_len, shape.batch, arch.num_layers);
        let mut frames: Vec<LayerFrames> = (0..l)
            .map(|k| LayerFrames::new(arch, kernels.head, shape, k))
            .collect();
        let persistent = kernels.persistent.map(|spec| {
            let spec = spec.for_batch(n);
            PersistentPlan {
                spec,
                batch_tile: spec.batch_tile() as u32,
                steps_per_dispatch: STEPS_PER_DISPATCH,
            }
        });
        if kernels.wavefront && persistent.is_none() && wavefront_pays(arch.hidden_size, n) {
            return Plan {
                frames,
                layers: vec![LayerKernel::Wave; l],
                persistent,
            };
        }
        // Owning its input, a persistent kernel reads X through the projection's bindings
        // beside the step's (a device may not allow that many), and a layer writes timestep t
        // while reading later ones, so it must write its output where it reads its input.
        let owns_input = |frames: &LayerFrames| {
            persistent
                .filter(|_| frames.in_place && ctx.inner().kernels.step.can_own_input())
                .map(|p| p.spec)
        };
        let layers: Vec<LayerKernel> = frames
            .iter()
            .map(|frames| {
                let own = owns_input(frames);
                // Fused, a layer reads x_t just before writing its output at t: above the
                // first layer, where that is the same place, a second direction would
                // overwrite the frames the other still has to read.
                let fused = own
                    .filter(|_| frames.first || arch.directions == 1)
                    .and_then(|spec| spec.fusing_input(&frames.projection));
                let projection = &frames.projection;
                let texels =
                    ctx.projects_stationary(projection.depth as usize, projection.cols as usize);
                let ahead = || own?.projecting_ahead(projection, arch.directions, t, texels);
                match (fused, persistent) {
                    (Some(spec), _) => LayerKernel::FusedInput(spec),
                    (None, Some(_)) => match ahead() {
                        Some((spec, chunk)) => LayerKernel::ProjectingAhead { spec, chunk },
                        None => LayerKernel::Persistent,
                    },
                    (None, None) => per_step(arch, n),
                }
            })
            .collect();
        // The persistent gated kernel reads each sequence's rows of P step after step: laid
        // out sequence by sequence, they follow one another in memory (in timestep order
        // they are N rows apart, which on a CPU misses the cache at every step). Measured on
        // lavapipe, T = 1024, median of 15, two alternations, before / after: LSTM H = 64
        // N = 16 38.9 / 34.4 and 39.2 / 32.6 ms, GRU H = 64 N = 16 27.7 / 32.9 (min 26.6 /
        // 24.4) and 28.8 / 24.8; LSTM H = 256 N = 16, GRU H = 128 N = 16 and LSTM H = 64
        // N = 4 within 2 % either way.
        if let Some(PersistentSpecs::Gated(_)) = persistent.map(|p| p.spec) {
            for (frames, layer) in frames.iter_mut().zip(&layers) {
                if *layer == LayerKernel::Persistent && n > 1 {
                    let cols = frames.projection.cols;
                    frames.projection.p_stride_t = cols;
                    frames.projection.p_stride_n = t as u32 * cols;
                }
            }
        }
        Plan {
            frames,
            layers,
            persistent,
        }
    }

    /// Whether some layer reads a projection of every timestep (else the workspace keeps
    /// no projections buffer).
    pub fn reads_projections(&self) -> bool {
        !self
            .layers
            .iter()
            .all(|layer| matches!(layer, LayerKernel::FusedInput(_)))
    }

    /// Whether some layer runs the shared persistent kernel (which then must be compiled).
    pub fn runs_shared_persistent(&self) -> bool {
        self.layers.contains(&LayerKernel::Persistent)
    }

    pub fn wavefront(&self) -> bool {
        self.layers.first() == Some(&LayerKernel::Wave)
    }

    /// Layers projecting ahead, and layers fusing their input (the test hooks' counts).
    pub fn own_input_counts(&self) -> (usize, usize) {
        let count = |f: fn(&LayerKernel) -> bool| self.layers.iter().filter(|l| f(l)).count();
        (
            count(|l| matches!(l, LayerKernel::ProjectingAhead { .. })),
            count(|l| matches!(l, LayerKernel::FusedInput(_))),
        )
    }

    /// Dispatches that advance the state through the ping-pong halves: T, or for a
    /// wavefront T + L − 1 waves. (Persistent kernels keep the state in place.)
    pub fn state_steps(&self, seq_len: usize) -> usize {
        if self.wavefront() {
            seq_len + self.layers.len() - 1
        } else {
            seq_len
        }
    }
}

/// The per-step kernel of a layer of `arch` for `batch` sequences.
fn per_step(arch: &Architecture, batch: usize) -> LayerKernel {
    let (h, s) = (arch.hidden_size as u32, arch.state_size as u32);
    match arch.cell {
        Cell::Rnn(_) => LayerKernel::ElmanSteps {
            blocks: elman_blocks_pay(h, batch as u32),
        },
        Cell::Lstm | Cell::Gru => LayerKernel::GatedSteps {
            blocks: GatedStepKernel::blocks_fit(h, s),
            projected: arch.projected().then_some(s),
        },
    }
}

/// Whether the Elman block kernel beats one unit an invocation: for hidden sizes that are
/// multiples of four, unless the step is tiny (H·N < 128), where a step costs its dispatch
/// whatever the kernel. Measured on lavapipe, per-step path, median forward: H = 1024,
/// N = 64, T = 16: 598 ms in blocks, 3092 ms one unit an invocation; H = 256, N = 16,
/// T = 256: 163 vs 744 ms; H = 128, N = 1, T = 512: 28 vs 33 ms; H = 64, N = 1, T = 512:
/// 15.9 vs 12.9 ms.
pub(crate) fn elman_blocks_pay(hidden: u32, batch: u32) -> bool {
    hidden % 4 == 0 && hidden * batch >= 128
}

/// The smallest batch [`wavefront_pays`] accepts.
pub(crate) const WAVEFRONT_MIN_BATCH: usize = 4;

/// Whether a wavefront beats layer-by-layer steps for `hidden` units and `batch` sequences.
/// It saves dispatches but computes the input projection of layers above the first inside
/// the step, in 4 × 4 blocks, instead of in one GEMM over all timesteps: it wins while a step
/// is small enough for dispatches to dominate, and loses on single sequences, whose blocks
/// waste three quarters of their work. Measured on lavapipe, per-step path, median forward,
/// wavefront vs layer by layer: H = 64, N = 8, L = 3: 83 vs 148 ms; H = 128, N = 4, L = 2:
/// 97 vs 124 ms; but H = 256, N = 16, L = 3: 363 vs 261 ms; H = 512, N = 4, L = 2: 118 vs
/// 79 ms; H = 64, N = 1, L = 4: 96 vs 64 ms.
pub(crate) fn wavefront_pays(hidden: usize, batch: usize) -> bool {
    batch >= WAVEFRONT_MIN_BATCH && hidden * hidden * batch <= 1 << 18
}

/// How layer `k` of a forward reads its input frames and writes its output frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayerFrames {
    /// Its input projection, X·W_ihᵀ + b over the input frames.
    pub projection: ProjectionParams,
    pub out_strides: FrameStrides,
    /// The first layer, reading the caller's input.
    pub first: bool,
    /// It writes its output where it reads its input. Layers above the first read the
    /// output buffer they write: projecting ahead, a layer writes timestep t while projecting
    /// later ones, so it must write them where it reads them.
    pub in_place: bool,
}

impl LayerFrames {
    /// Layer `k` of a forward over `shape`, followed by a head or not. Layer 0 reads the
    /// caller's layout; higher layers read the previous layer's sequence-first output. Only
    /// the last layer writes the caller's layout, unless a head follows: then the head does.
    pub fn new(arch: &Architecture, head: bool, shape: &ForwardShape, k: usize) -> Self {
        let (t, n) = (shape.seq_len, shape.batch);
        let seq_first = ForwardShape {
            batch_first: false,
            ..*shape
        };
        let x_strides = if k == 0 {
            shape.frame_strides(arch.input_size)
        } else {
            seq_first.frame_strides(arch.output_size())
        };
        let writes_result = k + 1 == arch.num_layers && !head;
        let out_strides =
            if writes_result { *shape } else { seq_first }.frame_strides(arch.output_size());
        let cols = arch.projection_cols();
        LayerFrames {
            projection: ProjectionParams {
                rows: (t * n) as u32,
                cols: cols as u32,
                depth: arch.layer_input_size(k) as u32,
                batch: n as u32,
                x_stride_t: x_strides.t as u32,
                x_stride_n: x_strides.n as u32,
                p_stride_t: (n * cols) as u32,
                p_stride_n: cols as u32,
            },
            out_strides,
            first: k == 0,
            in_place: k == 0
                || (x_strides.t == out_strides.t && (n == 1 || x_strides.n == out_strides.n)),
        }
    }
}
