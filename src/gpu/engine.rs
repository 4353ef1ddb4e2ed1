//! The engine behind every GPU model: weights uploaded once, the persistent kernel chosen
//! once, a cache of per-shape workspaces (each made from its shape's [`Plan`]), and the forward
//! over a resolved shape. `GpuRnn` is a thin typed front over it; the mode (RNN, LSTM, GRU) is
//! data ([`Architecture`]), not a type.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Limit, Result, RnnError};
use crate::gpu::architecture::{Architecture, Cell, UnitWeights};
use crate::gpu::context::GpuContext;
use crate::gpu::gated_persistent::GatedPersistentSpec;
use crate::gpu::model_buffers::ModelBuffers;
use crate::gpu::persistent::PersistentSpec;
use crate::gpu::persistent_specs::PersistentSpecs;
use crate::gpu::plan::{ModelKernels, Plan};
use crate::gpu::scheduler::InitialState;
use crate::gpu::workspace::{Workspace, check_limits};
use crate::head::Linear;
use crate::layout::ForwardShape;
use crate::precision::WeightPrecision;

/// Which recurrent kernel a GPU model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Recurrence {
    /// The persistent kernel where it fits, the per-step kernels elsewhere. For an Elman
    /// RNN it fits up to H = 256 (512 where it loads W_hh from a texture: adapters with a
    /// fixed subgroup size, such as lavapipe); for an LSTM up to H = 64 and a GRU up to H = 84 (without
    /// `proj_size`), and on adapters with a fixed subgroup size, where it loads W_hh from a
    /// texture, up to an LSTM with H = 512 and a GRU with H = 672 where a workgroup may have
    /// 1024 lanes (lavapipe; fewer with fewer lanes), where its generated code compiles
    /// within a few seconds on lavapipe. Measured on lavapipe at T = 1024, the
    /// persistent kernels are 3–100× faster (one dispatch runs the whole sequence instead of
    /// one per step); on many-core GPUs a wide H spreads better over the per-step kernels'
    /// many workgroups.
    #[default]
    Auto,
    /// One dispatch per timestep (two for a projected LSTM), one invocation per (hidden
    /// unit, sequence, direction).
    PerStep,
    /// One dispatch runs up to 8192 timesteps; one workgroup per (sequence, direction) keeps
    /// its rows of W_hh in registers. Any hidden size works; where `Auto` would not take it,
    /// it compiles slowly: on lavapipe with Mesa's shader cache off, a kernel holding 1024
    /// weight vec4s a lane from storage (an LSTM with H = 256 before W_hh came from a
    /// texture and wide states split their rows over more lanes) took 51 s at model
    /// creation and 88 s more at its first T = 1024 forward. Not for an LSTM with
    /// `proj_size` (a typed error). For training
    /// (`GpuTrainer::with_recurrence`) it likewise picks the fastest recurrence whatever it
    /// costs to compile (on lavapipe the same as `Auto`'s wherever the model's W_hh fits a
    /// texture, see `GpuTrainer::with_recurrence`).
    Persistent,
}

/// Options of a GPU model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GpuOptions {
    /// The recurrent kernel (default: [`Recurrence::Auto`]).
    pub recurrence: Recurrence,
    /// How the weights are stored on the GPU (default: [`WeightPrecision::F32`]). With
    /// [`WeightPrecision::F16`], W_ih, W_hh (and b_hn, W_hr) take half the memory and are read
    /// back as f32; sums, states and activations stay f32, and the projection's bias and a
    /// Linear head stay f32. Results then match the CPU reference run on f16-rounded weights
    /// (see [`WeightPrecision::round`]) to the usual 1e-4, and the f32 model to within what
    /// rounding the weights costs: in `tests/f16_weights.rs` (PyTorch-initialised weights,
    /// H ≤ 64, T ≤ 12) at most 1.6e-4 on outputs of order 1, and the tests allow 5e-3; it
    /// grows with H and with how much the model amplifies small changes. Needs
    /// `wgpu::Features::SHADER_F16` (Vulkan, Metal, DX12; not GL): elsewhere model creation
    /// reports [`RnnError::InvalidConfig`].
    pub weights: WeightPrecision,
}

impl GpuOptions {
    /// The default options with `recurrence`.
    pub fn recurrence(recurrence: Recurrence) -> Self {
        GpuOptions {
            recurrence,
            ..GpuOptions::default()
        }
    }

    /// These options with the weights stored as `weights`.
    pub fn with_weights(self, weights: WeightPrecision) -> Self {
        GpuOptions { weights, ..self }
    }
}

/// How many problem shapes keep their workspace; the least recently used one goes first.
const CACHED_SHAPES: usize = 4;

/// A workspace's shape in the cache: (T, N).
type ShapeKey = (usize, usize);

/// A cached workspace and its shape.
pub(crate) type CachedWorkspace = (ShapeKey, Arc<Mutex<Workspace>>);

/// A model on a GPU, any cell. `Send + Sync`.
pub(crate) struct Engine {
    pub(crate) ctx: GpuContext,
    pub(crate) arch: Architecture,
    pub(crate) buffers: ModelBuffers,
    /// The persistent kernel (Elman or gated), when this model runs one (its pipelines are
    /// cached by the context, one per batch tile).
    pub(crate) persistent: Option<PersistentSpecs>,
    /// Most recently used first. Each entry's shape is beside its workspace, so that a
    /// lookup never locks a workspace that another thread's forward holds.
    pub(crate) workspaces: Mutex<Vec<CachedWorkspace>>,
    /// Bytes a forward's workspace may use; `u64::MAX`: no budget beyond the adapter's limits.
    pub(crate) budget: AtomicU64,
    pub(crate) profiling: AtomicBool,
    pub(crate) last_gpu_time: Mutex<Option<Duration>>,
    pub(crate) options: GpuOptions,
    /// Bidirectional models keep their weights on the host to build, when a sequence is too
    /// long for one submission, a unidirectional engine per (layer, direction).
    pub(crate) host_units: Option<Vec<UnitWeights>>,
    pub(crate) direction_engines: Mutex<Option<Arc<Vec<Engine>>>>,
}

impl Engine {
    /// Uploads `units` (ordered `layer · D + direction`) for `arch`. The caller has checked
    /// them against its configuration and holds the GL guard. Compiles the persistent kernel
    /// for this hidden size when it is chosen (once per context and size).
    pub(crate) fn build(
        ctx: &GpuContext,
        arch: Architecture,
        units: &[UnitWeights],
        options: GpuOptions,
    ) -> Result<Self> {
        ctx.check_alive()?;
        let precision = options.weights;
        // Compiles the f16 kernels on first use, or says the device cannot.
        ctx.kernels(precision)?;
        let limits = ctx.limits();
        let (h, gates) = (arch.hidden_size, arch.cell.gates());
        let widest_input = arch.input_size.max(arch.output_size());
        let widest = (arch.directions * gates * h * widest_input) as u64 * 4;
        let binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if widest > binding {
            // The weights do not depend on the input: only a smaller model fits.
            return Err(RnnError::exceeds(
                "a layer's W_ih (every direction and gate), in bytes",
                widest,
                Limit::StorageBinding,
                binding,
                "the model is too large for this adapter: use a smaller hidden or input size",
            ));
        }
        // The Elman kernel loads W_hh from a texture where the device's limits hold it.
        let elman = match arch.cell {
            Cell::Rnn(_) => {
                let spec = PersistentSpec::for_hidden(h, ctx.persistent_subgroup());
                let (width, rows) = spec.texture_size(arch.directions);
                let spec = spec
                    .with_texture(ctx.holds_texture((width, rows, 1)))
                    .with_weights(precision);
                match options.recurrence {
                    Recurrence::Persistent => Some(spec),
                    Recurrence::Auto => spec.fits().then_some(spec),
                    Recurrence::PerStep => None,
                }
            }
            _ => None,
        };
        // The gated kernel loads W_hh from a texture where the device's limits hold it.
        let gated_spec = || {
            let layout = |texture| {
                GatedPersistentSpec::for_arch(
                    &arch,
                    ctx.persistent_subgroup(),
                    ctx.max_lanes(),
                    texture,
                )
            };
            let spec = layout(true)?;
            let (width, rows) = spec.texture_size(arch.directions);
            match ctx.holds_texture((width, rows, 1)) {
                true => Some(spec.with_weights(precision)),
                false => layout(false).map(|spec| spec.with_weights(precision)),
            }
        };
        let gated = match options.recurrence {
            Recurrence::PerStep => None,
            Recurrence::Auto => gated_spec().filter(GatedPersistentSpec::fits),
            Recurrence::Persistent => {
                let spec = gated_spec();
                if spec.is_none() && arch.cell == Cell::Lstm {
                    return Err(RnnError::InvalidConfig(
                        "an LSTM with proj_size runs the per-step kernels only \
                         (Recurrence::Auto or PerStep)"
                            .into(),
                    ));
                }
                spec
            }
        };
        let persistent = elman
            .map(PersistentSpecs::Elman)
            .or(gated.map(PersistentSpecs::Gated));
        let scopes = ctx.error_scopes();
        // Compiled now, so that making the model pays for it rather than its first forward.
        persistent
            .map(|spec| ctx.persistent_pipeline(&spec))
            .transpose()?;
        let buffers = ModelBuffers::upload(ctx, &arch, units, persistent, precision);
        scopes.finish(ctx, "uploading the weights")?;
        Ok(Engine {
            ctx: ctx.clone(),
            arch,
            buffers,
            persistent,
            workspaces: Mutex::new(Vec::new()),
            budget: AtomicU64::new(u64::MAX),
            profiling: AtomicBool::new(false),
            last_gpu_time: Mutex::new(None),
            options,
            host_units: (arch.directions == 2).then(|| units.to_vec()),
            direction_engines: Mutex::new(None),
        })
    }

    /// Adds a Linear head, uploaded once: every output frame becomes `h_t·Wᵀ + b`, computed
    /// on the GPU right after the last layer.
    pub(crate) fn set_head(&mut self, head: &Linear) -> Result<()> {
        head.check(self.arch.output_size())?;
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let scopes = ctx.error_scopes();
        let buffers = ModelBuffers::upload_head(&ctx, head);
        scopes.finish(&ctx, "uploading the head")?;
        self.buffers.head = Some(buffers);
        // Workspaces made so far have no head.
        self.workspaces = Mutex::new(Vec::new());
        Ok(())
    }

    /// The recurrent kernel this model runs: [`Recurrence::PerStep`] or
    /// [`Recurrence::Persistent`].
    pub(crate) fn recurrence(&self) -> Recurrence {
        if self.persistent.is_some() {
            Recurrence::Persistent
        } else {
            Recurrence::PerStep
        }
    }

    /// Features of each output frame: the head's `out_features`, or D·H_out without a head.
    pub(crate) fn output_features(&self) -> usize {
        self.buffers
            .head
            .as_ref()
            .map_or(self.arch.output_size(), |head| head.out_features)
    }

    /// The workspace for `shape`, made on first use; most recently used first.
    ///
    /// The cache's lock is held only to look a shape up or to insert one, never while a
    /// workspace is made or locked: a forward of one shape must not wait for another
    /// thread's forward of a different shape, which holds its workspace's lock for its whole
    /// run. Evicting a shape only drops the cache's reference; a forward still running on it
    /// keeps its own.
    pub(crate) fn workspace(&self, shape: &ForwardShape) -> Result<Arc<Mutex<Workspace>>> {
        let key = (shape.seq_len, shape.batch);
        if let Some(found) = self.cached_workspace(key)? {
            return Ok(found);
        }
        check_limits(&self.ctx, &self.arch, shape)?;
        let plan = self.plan(shape);
        let scopes = self.ctx.error_scopes();
        let workspace = Workspace::new(
            &self.ctx,
            &self.arch,
            &self.buffers,
            self.options.weights,
            plan,
            shape,
        );
        scopes.finish(&self.ctx, "allocating the workspace")?;
        let made = Arc::new(Mutex::new(workspace?));
        let mut cache = self.workspace_cache()?;
        // Another thread may have made this shape meanwhile: keep the one cached first, so
        // that later forwards of the shape share one workspace.
        let workspace = match cache.iter().position(|(k, _)| *k == key) {
            Some(i) => cache.remove(i).1,
            None => made,
        };
        cache.insert(0, (key, Arc::clone(&workspace)));
        cache.truncate(CACHED_SHAPES);
        Ok(workspace)
    }

    /// The cached workspace of `key`, moved to the front; `None` when there is none (a
    /// workspace whose forward panicked is dropped from the cache: it may be half-written).
    fn cached_workspace(&self, key: ShapeKey) -> Result<Option<Arc<Mutex<Workspace>>>> {
        let mut cache = self.workspace_cache()?;
        cache.retain(|(_, w)| !w.is_poisoned());
        let Some(i) = cache.iter().position(|(k, _)| *k == key) else {
            return Ok(None);
        };
        let entry = cache.remove(i);
        let workspace = Arc::clone(&entry.1);
        cache.insert(0, entry);
        Ok(Some(workspace))
    }

    fn workspace_cache(&self) -> Result<std::sync::MutexGuard<'_, Vec<CachedWorkspace>>> {
        self.workspaces
            .lock()
            .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))
    }

    /// Whether every layer of a forward over `shape` computes its input projection itself
    /// (see [`PersistentSpecs::fusing_input`]): its workspace then has no projections.
    pub(crate) fn fuses_every_layer(&self, shape: &ForwardShape) -> bool {
        !self.plan(shape).reads_projections()
    }

    /// Which kernel runs each layer of a forward over `shape`.
    pub(crate) fn plan(&self, shape: &ForwardShape) -> Plan {
        let kernels = ModelKernels {
            persistent: self.persistent,
            wavefront: self.buffers.wavefront.is_some(),
            head: self.buffers.head.is_some(),
        };
        Plan::new(&self.ctx, &self.arch, kernels, shape)
    }

    pub(crate) fn set_workspace_budget(&self, bytes: Option<u64>) {
        self.budget
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The workspace budget (`None`: none).
    pub(crate) fn workspace_budget(&self) -> Option<u64> {
        Some(self.budget.load(Ordering::Relaxed)).filter(|&b| b != u64::MAX)
    }

    pub(crate) fn set_last_gpu_time(&self, time: Option<Duration>) {
        if let Ok(mut last) = self.last_gpu_time.lock() {
            *last = time;
        }
    }

    pub(crate) fn last_gpu_time(&self) -> Option<Duration> {
        self.last_gpu_time.lock().ok().and_then(|t| *t)
    }

    /// The forward over a resolved `shape`: `input` in the caller's layout, `initial` the
    /// whole state (the h block (L·D, N, H_out), then for an LSTM the c block (L·D, N, H);
    /// zeros when `None`). Returns (output in the caller's layout, final state laid out as
    /// `initial`). The caller holds the GL guard.
    pub(crate) fn forward(
        &self,
        shape: &ForwardShape,
        input: &[f32],
        initial: Option<&[f32]>,
        lengths: Option<&[usize]>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        self.ctx.check_alive()?;
        if let Some(lengths) = lengths {
            shape.check_lengths(lengths)?;
        }
        let chunk = self.chunk_len(shape)?;
        if chunk < shape.seq_len && self.arch.directions == 2 {
            let parts = self.direction_engines()?;
            return self.forward_bidirectional_by_layers(&parts, shape, input, initial, lengths);
        }
        let initial = initial.map_or(InitialState::Zeros, InitialState::Host);
        // Chunks carry the state between them in a small buffer of this call's.
        let carry = (chunk < shape.seq_len)
            .then(|| self.state_buffer(shape.batch))
            .transpose()?;
        self.run_chunks(shape, input, lengths, initial, carry.as_ref(), chunk)
    }

    /// The unidirectional engines of a bidirectional one, made on first need.
    fn direction_engines(&self) -> Result<Arc<Vec<Engine>>> {
        let mut made = self
            .direction_engines
            .lock()
            .map_err(|_| RnnError::Gpu("a previous forward panicked".into()))?;
        if let Some(parts) = made.as_ref() {
            return Ok(Arc::clone(parts));
        }
        let units = self
            .host_units
            .as_ref()
            .ok_or_else(|| RnnError::InvalidConfig("not a bidirectional model".into()))?;
        let parts = units
            .iter()
            .enumerate()
            .map(|(unit, weights)| {
                let arch = self.arch.single(self.arch.layer_input_size(unit / 2));
                Engine::build(&self.ctx, arch, std::slice::from_ref(weights), self.options)
            })
            .collect::<Result<Vec<_>>>()?;
        let parts = Arc::new(parts);
        *made = Some(Arc::clone(&parts));
        Ok(parts)
    }
}

impl Drop for Engine {
    /// On GL, wgpu unmaps a buffer that is dropped while mapped (a workspace keeps its input
    /// buffer mapped between forwards) by taking the device's one GL context, and panics if
    /// that takes longer than about 6 s: as long as another thread's forward can hold it.
    /// The workspaces are therefore dropped under the context's GL guard, as every forward
    /// runs (elsewhere the guard is nothing).
    fn drop(&mut self) {
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let cache = self
            .workspaces
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(std::mem::take(cache));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::layout::ForwardShape;
    use crate::{GpuRnn, Rnn, RnnConfig, RnnWeights, Tensor, testing};

    /// A forward holds its shape's workspace for its whole run; a forward of another shape
    /// must not wait for it, whether its shape is cached, new, or evicts the busy one. Here
    /// the test holds shape A's workspace itself, standing for another thread's long forward
    /// of A: that makes the check structural. (A real long forward cannot: on a device with
    /// one queue, lavapipe's, B's GPU work runs after the A submission ahead of it anyway.)
    #[test]
    fn a_busy_workspace_blocks_no_other_shape() {
        let Some(ctx) = testing::gpu("a_busy_workspace_blocks_no_other_shape") else {
            return;
        };
        let config = RnnConfig::rnn(3, 8);
        let weights = RnnWeights::init(&config, 1).unwrap();
        let model = GpuRnn::new(&ctx, config, &weights).unwrap();
        let input = |t: usize| Tensor::new(vec![0.5; t * 3], &[t, 1, 3]).unwrap();
        // B's shape is cached before A's forward "starts".
        let want = model.forward(&input(2), None).unwrap();
        let a = ForwardShape {
            seq_len: 50,
            batch: 1,
            unbatched: false,
            batch_first: false,
        };
        let busy = model.engine.workspace(&a).unwrap();
        let held = busy.lock().unwrap();
        let (done, finished) = mpsc::channel();
        // The cached shape B, then more new shapes than the cache keeps (evicting A).
        let lengths = [2, 2, 3, 4, 5, 6, 7, 2];
        let outcome = std::thread::scope(|scope| {
            let model = &model;
            scope.spawn(move || {
                for t in lengths {
                    let _ = done.send(model.forward(&input(t), None));
                }
            });
            let mut outcome = Ok(());
            for (i, &t) in lengths.iter().enumerate() {
                match finished.recv_timeout(Duration::from_secs(30)) {
                    Ok(Ok(got)) if t != 2 || got == want => {}
                    Ok(result) => outcome = Err(format!("forward {i} (T = {t}): {result:?}")),
                    Err(_) => {
                        outcome = Err(format!(
                            "forward {i} (T = {t}) waited 30 s for the busy workspace of \
                             another shape"
                        ));
                        break;
                    }
                }
            }
            // Lets a blocked forward finish, so that the scope can end and report.
            drop(held);
            outcome
        });
        outcome.unwrap();
    }
}
