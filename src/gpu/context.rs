//! The GPU context: adapter, device, queue and the compiled kernels, created once and shared
//! by every model made from it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use std::time::Duration;
use wgpu::util::DeviceExt;

use crate::error::{Result, RnnError};
use crate::gpu::counters::{Counters, ResourceCounts};
use crate::gpu::kernels::loss::LossKernels;
use crate::gpu::kernels::optim::OptimKernels;
use crate::gpu::kernels::training::TrainingKernels;
use crate::gpu::kernels::{Kernels, StationaryProjectionKernel, stationary};
use crate::gpu::persistent_specs::PersistentSpecs;
use crate::shaders::WeightPrecision;

/// A device, its queue and this crate's compiled pipelines. Cheap to clone (shared inside);
/// `Send + Sync`, so one context can serve models on many threads.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<ContextInner>,
}

pub(crate) struct ContextInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// See [`GpuContext::unified_memory`].
    unified_memory: bool,
    pub kernels: Kernels,
    /// The weight-stationary projection, on adapters with a fixed subgroup size.
    pub stationary: Option<StationaryProjectionKernel>,
    /// The kernels reading f16 weights, compiled for the first model that asks for them.
    kernels_f16: std::sync::OnceLock<Kernels>,
    /// The training kernels, compiled for the first trainer.
    training: std::sync::OnceLock<TrainingKernels>,
    /// The optimizer kernels, compiled for the first optimizer or clipping.
    optim: std::sync::OnceLock<OptimKernels>,
    /// The loss kernels, compiled for the first loss.
    loss: std::sync::OnceLock<LossKernels>,
    lost: Arc<Mutex<Option<String>>>,
    timeout: Mutex<Duration>,
    pub counters: Arc<Counters>,
    /// Taken around every piece of GPU work on wgpu's GL backend (see `gl_guard`).
    gl_serial: Mutex<()>,
    /// Persistent kernels compiled so far, by specialisation.
    persistent: Mutex<HashMap<PersistentSpecs, Arc<wgpu::ComputePipeline>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish_non_exhaustive()
    }
}

impl GpuContext {
    /// Opens the default adapter. The choice honours wgpu's environment variables:
    /// `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`) restricts the backends, and
    /// `WGPU_ADAPTER_NAME` picks the first adapter whose name contains the given text (ignoring
    /// case); otherwise the highest-performance adapter is used (`WGPU_POWER_PREF` can change
    /// that). [`RnnError::NoAdapter`] when no adapter exists or none matches the name (the
    /// message then lists the adapters there are).
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// Async form of [`new`](Self::new).
    pub async fn new_async() -> Result<Self> {
        let name = std::env::var("WGPU_ADAPTER_NAME").ok();
        Self::with_adapter_name_async(name.as_deref()).await
    }

    /// [`new`](Self::new) with `name` in place of `WGPU_ADAPTER_NAME`'s value (`None`: as if
    /// unset). Lets a test ask for an adapter by name without setting the environment
    /// variable, which is process-wide. Not part of the stable API.
    #[doc(hidden)]
    pub fn with_adapter_name(name: Option<&str>) -> Result<Self> {
        pollster::block_on(Self::with_adapter_name_async(name))
    }

    async fn with_adapter_name_async(name: Option<&str>) -> Result<Self> {
        // `_from_env` honours WGPU_BACKEND: only the allowed backends' adapters are seen.
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match name {
            // wgpu's own `initialize_adapter_from_env` panics when no adapter matches; the
            // rule is the same (a case-insensitive substring, first match wins).
            Some(name) => {
                let wanted = name.to_lowercase();
                let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let seen: Vec<String> = adapters
                    .iter()
                    .map(|adapter| {
                        let info = adapter.get_info();
                        format!("{:?} ({:?})", info.name, info.backend)
                    })
                    .collect();
                adapters
                    .into_iter()
                    .find(|adapter| adapter.get_info().name.to_lowercase().contains(&wanted))
                    .ok_or_else(|| {
                        let seen = if seen.is_empty() {
                            "there are none".to_string()
                        } else {
                            format!("the adapters are {}", seen.join(", "))
                        };
                        RnnError::NoAdapter(format!(
                            "WGPU_ADAPTER_NAME is {name:?}, which no adapter's name contains; \
                             {seen}"
                        ))
                    })?
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(|e| RnnError::NoAdapter(e.to_string()))?,
        };
        Self::from_adapter(&adapter).await
    }

    /// Opens a device on a given adapter, requesting every limit the adapter offers (wgpu's
    /// defaults are lower, e.g. 128 MiB storage bindings).
    pub async fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-rnn device"),
                // Timestamp queries split GPU time from host overhead when profiling;
                // subgroups let small persistent workgroups share h without barriers.
                // SHADER_F16 lets models store their weights as f16. Where the adapter's
                // memory is the host's, mappable storage buffers save a copy each way.
                required_features: adapter.features()
                    & (wgpu::Features::TIMESTAMP_QUERY
                        | wgpu::Features::SUBGROUP
                        | wgpu::Features::SHADER_F16
                        | unified_features(adapter.get_info().device_type)),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await?;
        Self::from_device(device, queue)
    }

    /// Wraps a device and queue the caller already has (for instance a renderer's). The crate
    /// works within whatever limits and features that device was created with.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        let lost = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut lost) = flag.lock() {
                *lost = Some(format!("{reason:?}: {message}"));
            }
        });
        let counters = Arc::new(Counters::default());
        let scopes = ErrorScopes::push(&device);
        let kernels = Kernels::new(
            &device,
            &counters,
            cpu_subgroup_size(&device),
            WeightPrecision::F32,
        );
        let stationary = StationaryProjectionKernel::new(&device, cpu_subgroup_size(&device));
        if let Some(error) = scopes.pop() {
            return Err(RnnError::Gpu(format!("compiling the kernels: {error}")));
        }
        let info = device.adapter_info();
        let unified_memory = !unified_features(info.device_type).is_empty()
            && device
                .features()
                .contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        Ok(GpuContext {
            inner: Arc::new(ContextInner {
                unified_memory,
                info,
                limits: device.limits(),
                device,
                queue,
                kernels,
                stationary,
                kernels_f16: std::sync::OnceLock::new(),
                training: std::sync::OnceLock::new(),
                optim: std::sync::OnceLock::new(),
                loss: std::sync::OnceLock::new(),
                lost,
                timeout: Mutex::new(Duration::from_secs(120)),
                persistent: Mutex::new(HashMap::new()),
                gl_serial: Mutex::new(()),
                counters,
            }),
        })
    }

    /// Whether forwards read their input and write their output in place, through storage
    /// buffers that are also mapped (`Features::MAPPABLE_PRIMARY_BUFFERS`), rather than
    /// through staging buffers and a copy each way. Only on CPU adapters, whose memory is the
    /// host's (measured there: 7–13 % faster forwards at H = 64, N = 1, T = 1024 on lavapipe,
    /// and no copies of megabytes on the queue thread for long sequences); on a discrete GPU
    /// mapped storage would live in host memory and every kernel would read it across the
    /// bus. Integrated GPUs share the host's memory too but are left staged until measured.
    pub fn unified_memory(&self) -> bool {
        self.inner.unified_memory
    }

    /// The adapter this context runs on: name, backend, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// One line naming the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        let info = &self.inner.info;
        let memory = if self.unified_memory() {
            ", unified memory"
        } else {
            ""
        };
        format!(
            "{} ({:?}, {:?}{memory})",
            info.name, info.backend, info.device_type
        )
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Whether the device's limits allow a 2D texture of (width, rows, layers).
    pub(crate) fn holds_texture(&self, (width, rows, layers): (u32, u32, u32)) -> bool {
        let limits = &self.inner.limits;
        width.max(rows) <= limits.max_texture_dimension_2d
            && layers <= limits.max_texture_array_layers
    }

    /// Whether a layer's projection of K = `depth` into `cols` columns runs the
    /// weight-stationary kernel (`kernels::stationary`), from a texture of W_ih the model
    /// fills when it is made: on adapters with a fixed subgroup size, for the sizes it fits
    /// and textures hold.
    pub(crate) fn projects_stationary(&self, depth: usize, cols: usize) -> bool {
        let (depth, cols) = (depth as u32, cols as u32);
        let (width, rows) = stationary::texture_size(depth, cols);
        self.persistent_subgroup().is_some()
            && stationary::fits(depth, cols)
            && self.holds_texture((width, rows, 1))
    }

    /// The weight-stationary projection (its layout and pipelines by K), on adapters with a
    /// fixed subgroup size. One for every precision: it reads W_ih's texels, which are f32
    /// whatever the model's weights.
    pub(crate) fn stationary_kernel(&self) -> Option<&StationaryProjectionKernel> {
        self.inner.stationary.as_ref()
    }

    /// The weight-stationary projection's pipeline for K = `depth` (where
    /// [`projects_stationary`](Self::projects_stationary)), compiled on first use and cached.
    pub(crate) fn stationary_pipeline(&self, depth: u32) -> Result<Arc<wgpu::ComputePipeline>> {
        let kernel = self.stationary_kernel().ok_or_else(|| {
            RnnError::Gpu("this adapter has no weight-stationary projection".into())
        })?;
        let scopes = self.error_scopes();
        let pipeline = kernel.pipeline(&self.inner.device, &self.inner.counters, depth)?;
        scopes.finish(self, "compiling the stationary projection")?;
        Ok(pipeline)
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The counters every resource creation on this device goes through.
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// How long a forward call waits for the GPU before giving up with
    /// [`RnnError::Timeout`] (default 120 s).
    pub fn set_timeout(&self, timeout: Duration) {
        if let Ok(mut t) = self.inner.timeout.lock() {
            *t = timeout;
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner
            .timeout
            .lock()
            .map(|t| *t)
            .unwrap_or(Duration::from_secs(120))
    }

    pub(crate) fn inner(&self) -> &ContextInner {
        &self.inner
    }

    /// Turns a wgpu error of `doing` into [`RnnError::DeviceLost`] when the device is gone (a
    /// lost device makes every later call fail with some error), [`RnnError::Gpu`] otherwise.
    pub(crate) fn classify(&self, doing: &str, error: impl std::fmt::Display) -> RnnError {
        // Lets wgpu run its device-lost callback if the loss is still pending.
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
        match self.check_alive() {
            Err(lost) => lost,
            Ok(()) => RnnError::Gpu(format!("{doing}: {error}")),
        }
    }

    /// Captures wgpu's errors for the work done until [`ErrorScopes::finish`].
    pub(crate) fn error_scopes(&self) -> ErrorScopes {
        ErrorScopes::push(&self.inner.device)
    }

    /// The fixed subgroup size the persistent kernels may build on: workgroups of exactly
    /// one subgroup sharing h with `subgroupBroadcast`, or of whole subgroups loading h in
    /// slices and broadcasting them. Measured on CPU-backed adapters (lavapipe) with a fixed
    /// subgroup size; elsewhere the kernels keep h in workgroup memory until measured there.
    pub(crate) fn persistent_subgroup(&self) -> Option<usize> {
        cpu_subgroup_size(&self.inner.device)
    }

    /// The most lanes (invocations) one workgroup of a one-dimensional workgroup may have.
    pub(crate) fn max_lanes(&self) -> usize {
        let limits = &self.inner.limits;
        limits
            .max_compute_invocations_per_workgroup
            .min(limits.max_compute_workgroup_size_x) as usize
    }

    /// What one workgroup of the training recurrence may use on this device.
    pub(crate) fn workgroup_limits(&self) -> crate::gpu::train_subgroup::WorkgroupLimits {
        crate::gpu::train_subgroup::WorkgroupLimits {
            lanes: self.max_lanes(),
            shared_bytes: self.inner.limits.max_compute_workgroup_storage_size as usize,
        }
    }

    /// The persistent kernel (Elman or gated) `spec`, compiled on first use and cached for
    /// the context.
    pub(crate) fn persistent_pipeline(
        &self,
        spec: &PersistentSpecs,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self
            .inner
            .persistent
            .lock()
            .map_err(|_| RnnError::Gpu("a previous compilation panicked".into()))?;
        if let Some(pipeline) = cache.get(spec) {
            return Ok(Arc::clone(pipeline));
        }
        let (label, source, owns_input) = spec.compile_inputs();
        let scopes = self.error_scopes();
        let pipeline = self.inner.kernels.step.compile_persistent(
            &self.inner.device,
            &self.inner.counters,
            label,
            &source,
            owns_input,
        );
        scopes.finish(self, &format!("compiling the {label} kernel"))?;
        let pipeline = Arc::new(pipeline);
        cache.insert(*spec, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// The kernels that read weights stored as `precision`: f16 ones are compiled on first
    /// use, and only where the device has `SHADER_F16`.
    pub(crate) fn kernels(&self, precision: WeightPrecision) -> Result<&Kernels> {
        match precision {
            WeightPrecision::F32 => Ok(&self.inner.kernels),
            WeightPrecision::F16 => {
                if !self
                    .inner
                    .device
                    .features()
                    .contains(wgpu::Features::SHADER_F16)
                {
                    return Err(RnnError::InvalidConfig(format!(
                        "f16 weights need wgpu::Features::SHADER_F16, which {} does not have \
                         (or the device was opened without it)",
                        self.describe()
                    )));
                }
                if let Some(kernels) = self.inner.kernels_f16.get() {
                    return Ok(kernels);
                }
                let scopes = self.error_scopes();
                let kernels = Kernels::new(
                    &self.inner.device,
                    &self.inner.counters,
                    cpu_subgroup_size(&self.inner.device),
                    WeightPrecision::F16,
                );
                scopes.finish(self, "compiling the f16 kernels")?;
                Ok(self.inner.kernels_f16.get_or_init(|| kernels))
            }
        }
    }

    /// The training kernels, compiled on first use.
    pub(crate) fn training_kernels(&self) -> Result<&TrainingKernels> {
        if let Some(kernels) = self.inner.training.get() {
            return Ok(kernels);
        }
        let needed = crate::gpu::kernels::training::TRAINING_STORAGE_BUFFERS;
        let allowed = self.inner.limits.max_storage_buffers_per_shader_stage;
        if allowed < needed {
            return Err(RnnError::InvalidConfig(format!(
                "training needs {needed} storage buffers per shader stage, and {} allows \
                 {allowed} (the device was opened with wgpu's downlevel limits?)",
                self.describe()
            )));
        }
        // W_hh reaches the register recurrences through a texture a kernel writes.
        if self.inner.limits.max_storage_textures_per_shader_stage < 1 {
            return Err(RnnError::InvalidConfig(format!(
                "training needs a storage texture per shader stage, and {} allows none",
                self.describe()
            )));
        }
        let scopes = self.error_scopes();
        let kernels = TrainingKernels::new(&self.inner.device, self.counters());
        scopes.finish(self, "compiling the training kernels")?;
        Ok(self.inner.training.get_or_init(|| kernels))
    }

    /// The training recurrence `spec` with W_hh in registers, compiled on first use.
    pub(crate) fn training_subgroup(
        &self,
        spec: crate::gpu::train_subgroup::SubgroupRecurrence,
    ) -> Result<std::sync::Arc<crate::gpu::kernels::training::SubgroupPipelines>> {
        let kernels = self.training_kernels()?;
        let scopes = self.error_scopes();
        let pipelines = kernels.subgroup(&self.inner.device, &self.inner.counters, spec);
        scopes.finish(self, "compiling a training recurrence")?;
        Ok(pipelines)
    }

    /// Compiles the training `pipeline` unless it is compiled.
    pub(crate) fn prepare_training(
        &self,
        pipeline: crate::gpu::kernels::training::TrainingPipeline,
    ) -> Result<()> {
        let kernels = self.training_kernels()?;
        let scopes = self.error_scopes();
        kernels.prepare(&self.inner.device, &self.inner.counters, pipeline);
        scopes.finish(self, "compiling a training kernel")
    }

    /// A small training program as one kernel (`run`: its entry point's body, see
    /// `gpu::training::one_dispatch`).
    pub(crate) fn training_program(
        &self,
        spec: crate::gpu::train_subgroup::SubgroupRecurrence,
        run: &str,
    ) -> Result<wgpu::ComputePipeline> {
        let kernels = self.training_kernels()?;
        let scopes = self.error_scopes();
        let pipeline = kernels.program(&self.inner.device, &self.inner.counters, spec, run);
        scopes.finish(self, "compiling a training program")?;
        Ok(pipeline)
    }

    /// The loss kernels, compiled on first use.
    pub(crate) fn loss_kernels(&self) -> Result<&LossKernels> {
        if let Some(kernels) = self.inner.loss.get() {
            return Ok(kernels);
        }
        let scopes = self.error_scopes();
        let kernels = LossKernels::new(&self.inner.device, &self.inner.counters);
        scopes.finish(self, "compiling the loss kernels")?;
        Ok(self.inner.loss.get_or_init(|| kernels))
    }

    /// The optimizer kernels, compiled on first use.
    pub(crate) fn optim_kernels(&self) -> Result<&OptimKernels> {
        if let Some(kernels) = self.inner.optim.get() {
            return Ok(kernels);
        }
        let scopes = self.error_scopes();
        let kernels = OptimKernels::new(&self.inner.device, &self.inner.counters);
        scopes.finish(self, "compiling the optimizer kernels")?;
        Ok(self.inner.optim.get_or_init(|| kernels))
    }

    /// On wgpu's GL backend, serialises this crate's GPU work across threads. GL has one
    /// context per device, and wgpu panics when a thread waits more than 6 s for it (which a
    /// long forward on a software GL driver can make another thread do); waiting on this lock
    /// instead has no such limit. Other backends run threads concurrently: `None`.
    ///
    /// Re-entrant on one thread: a thread that already holds this context's guard (a model
    /// dropped inside a forward, say) gets an empty one instead of deadlocking on itself.
    pub(crate) fn gl_guard(&self) -> Option<GlGuard<'_>> {
        if self.inner.info.backend != wgpu::Backend::Gl {
            return None;
        }
        let id = Arc::as_ptr(&self.inner) as usize;
        if GL_HELD.with(|held| held.borrow().contains(&id)) {
            return Some(GlGuard { held: None, id });
        }
        // A panic elsewhere while holding it leaves nothing half-done that matters here.
        let lock = self
            .inner
            .gl_serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        GL_HELD.with(|held| held.borrow_mut().push(id));
        Some(GlGuard {
            held: Some(lock),
            id,
        })
    }

    /// How many buffers, bind groups and pipelines this crate has created on the context's
    /// device so far. After the first forward of a shape, later forwards of that shape create
    /// none: they only write inputs, record and submit.
    pub fn resource_counts(&self) -> ResourceCounts {
        self.inner.counters.snapshot()
    }

    /// A buffer, counted.
    pub(crate) fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        let counters = &self.inner.counters;
        counters.buffers.fetch_add(1, Ordering::Relaxed);
        counters
            .buffer_bytes
            .fetch_add(desc.size, Ordering::Relaxed);
        self.inner.device.create_buffer(desc)
    }

    /// A buffer with contents, counted.
    pub(crate) fn create_buffer_init(
        &self,
        desc: &wgpu::util::BufferInitDescriptor<'_>,
    ) -> wgpu::Buffer {
        let counters = &self.inner.counters;
        counters.buffers.fetch_add(1, Ordering::Relaxed);
        let bytes = desc.contents.len() as u64;
        counters.buffer_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.device.create_buffer_init(desc)
    }

    /// `Err(DeviceLost)` once the device has been lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self.inner.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Err(RnnError::DeviceLost(reason)),
            None => Ok(()),
        }
    }
}

/// The fixed subgroup size of a CPU-backed adapter (lavapipe) with subgroups enabled. The
/// subgroup kernels were measured there; on other adapters the portable kernels run until they
/// are measured too.
fn cpu_subgroup_size(device: &wgpu::Device) -> Option<usize> {
    let info = device.adapter_info();
    (device.features().contains(wgpu::Features::SUBGROUP)
        && info.device_type == wgpu::DeviceType::Cpu
        && info.subgroup_min_size == info.subgroup_max_size
        && info.subgroup_min_size >= 4)
        .then_some(info.subgroup_min_size as usize)
}

/// Validation, out-of-memory and internal error scopes around a piece of work, so that wgpu's
/// errors come back as values instead of reaching the default handler, which panics.
pub(crate) struct ErrorScopes {
    // Scopes must be popped in reverse order of pushing, and a dropped guard pops its scope:
    // fields drop in declaration order, so the last pushed comes first.
    internal: wgpu::ErrorScopeGuard,
    out_of_memory: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl ErrorScopes {
    fn push(device: &wgpu::Device) -> Self {
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out_of_memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        ErrorScopes {
            internal,
            out_of_memory,
            validation,
        }
    }

    /// The first error captured, if any.
    fn pop(self) -> Option<wgpu::Error> {
        let internal = pollster::block_on(self.internal.pop());
        let out_of_memory = pollster::block_on(self.out_of_memory.pop());
        let validation = pollster::block_on(self.validation.pop());
        validation.or(out_of_memory).or(internal)
    }

    /// `Ok` when the work raised no error; otherwise the error, classified by `ctx`.
    pub fn finish(self, ctx: &GpuContext, doing: &str) -> Result<()> {
        match self.pop() {
            None => Ok(()),
            Some(error) => Err(ctx.classify(doing, error)),
        }
    }
}

/// The features worth asking for on adapters of `device_type` to use its memory in place:
/// mappable storage buffers on CPU adapters, nothing elsewhere (see `unified_memory`).
fn unified_features(device_type: wgpu::DeviceType) -> wgpu::Features {
    match device_type {
        wgpu::DeviceType::Cpu => wgpu::Features::MAPPABLE_PRIMARY_BUFFERS,
        _ => wgpu::Features::empty(),
    }
}

thread_local! {
    /// The contexts whose GL guard this thread holds (see [`GpuContext::gl_guard`]).
    static GL_HELD: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A context's GL guard, held by this thread (or, nested, an empty one).
pub(crate) struct GlGuard<'a> {
    held: Option<std::sync::MutexGuard<'a, ()>>,
    id: usize,
}

impl Drop for GlGuard<'_> {
    fn drop(&mut self) {
        if self.held.is_some() {
            GL_HELD.with(|held| held.borrow_mut().retain(|&id| id != self.id));
        }
    }
}
