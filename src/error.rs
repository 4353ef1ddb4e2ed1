//! The crate's one error type.
//!
//! Every public entry point returns [`Result<T>`](Result). Each variant says what went wrong
//! and, where there is one, what to do about it. Bad input never panics.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RnnError {
    /// No wgpu adapter matched the request (or none exists on this machine).
    #[error(
        "no GPU adapter found ({0}); install a Vulkan, Metal, DX12 or GL driver \
         (on Linux without a GPU: `apt-get install libvulkan1 mesa-vulkan-drivers` for lavapipe), \
         or check WGPU_BACKEND / WGPU_ADAPTER_NAME"
    )]
    NoAdapter(String),

    /// The adapter was found but refused to open a device.
    #[error("the adapter refused to open a device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),

    /// The model configuration is not valid (a zero size, an unsupported option...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A tensor given to a forward call has the wrong shape or length.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which argument: `input`, `h0`, ...
        what: &'static str,
        /// The shape that was expected, in PyTorch's notation.
        expected: String,
        /// The shape that was given.
        got: String,
    },

    /// A sequence length is outside 1..=T.
    #[error("lengths[{index}] = {length} is outside 1..={seq_len} (the input has T = {seq_len})")]
    InvalidLength {
        /// Which sequence.
        index: usize,
        /// Its given length.
        length: usize,
        /// The input's T.
        seq_len: usize,
    },

    /// A weight tensor is missing, mis-shaped or of the wrong type.
    #[error("weight `{name}`: {problem}")]
    Weights {
        /// The tensor's full name, prefix included (e.g. `rnn.weight_hh_l1_reverse`).
        name: String,
        /// What is wrong with it.
        problem: String,
    },

    /// The safetensors container itself could not be parsed.
    #[error("not a valid safetensors file: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),

    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// A problem would need more than one of the limits it runs under allows: the adapter's
    /// (buffer sizes, workgroup counts), the kernels' or the workspace budget the caller set.
    /// `limit` says which one was hit, `allowed` its value, and `hint` what would fit.
    #[error("{what} needs {needed} but {limit} is {allowed}; {hint}")]
    ExceedsLimits {
        /// The resource (a buffer, a dispatch dimension), with its unit.
        what: String,
        /// What the problem needs, in the unit of `what`.
        needed: u64,
        /// The limit that was hit.
        limit: Limit,
        /// What that limit allows, in the unit of `what`.
        allowed: u64,
        /// What would fit: a smaller batch, a shorter chunk, a bigger budget...
        hint: String,
    },

    /// A backward was given a [`Tape`](crate::Tape) it cannot use: another model's, or one
    /// whose forward a later training forward replaced.
    #[error("cannot run this backward: {0}")]
    Tape(String),

    /// The GPU device was lost (driver reset, GPU removed, ...). The context is unusable:
    /// create a new [`GpuContext`](crate::GpuContext) and new models.
    #[error("the GPU device was lost ({0}); create a new GpuContext")]
    DeviceLost(String),

    /// wgpu reported a validation or out-of-memory error for work this crate submitted.
    #[error("the GPU rejected the work: {0}")]
    Gpu(String),

    /// The GPU did not finish within the context's timeout.
    #[error("the GPU did not finish within {0:?}; raise it with GpuContext::set_timeout")]
    Timeout(std::time::Duration),
}

/// Which limit an [`RnnError::ExceedsLimits`] hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The largest storage buffer a kernel may bind: the device's
    /// `max_storage_buffer_binding_size`, or its `max_buffer_size` where that is smaller.
    StorageBinding,
    /// The device's `max_buffer_size`.
    BufferSize,
    /// The device's `max_compute_workgroups_per_dimension`.
    WorkgroupsPerDimension,
    /// The kernels index elements with 32-bit integers: at most `u32::MAX` per buffer.
    ElementIndex,
    /// The workspace budget set with `set_workspace_budget`.
    WorkspaceBudget,
    /// The longest time chunk one submission runs within the other limits: what must run as
    /// one submission (a bidirectional sequence with a Linear head) cannot be longer.
    TimeChunk,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::StorageBinding => "the adapter's largest storage binding",
            Limit::BufferSize => "the adapter's max_buffer_size",
            Limit::WorkgroupsPerDimension => "the adapter's max_compute_workgroups_per_dimension",
            Limit::ElementIndex => "the kernels' 32-bit element index limit",
            Limit::WorkspaceBudget => "the workspace budget (set_workspace_budget)",
            Limit::TimeChunk => "the longest time chunk one submission can run",
        })
    }
}

/// `Result` with [`RnnError`].
pub type Result<T, E = RnnError> = std::result::Result<T, E>;

impl RnnError {
    pub(crate) fn weights(name: impl Into<String>, problem: impl Into<String>) -> Self {
        RnnError::Weights {
            name: name.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn shape(what: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        RnnError::ShapeMismatch {
            what,
            expected: expected.into(),
            got: format!("{got:?}"),
        }
    }

    pub(crate) fn exceeds(
        what: impl Into<String>,
        needed: u64,
        limit: Limit,
        allowed: u64,
        hint: impl Into<String>,
    ) -> Self {
        RnnError::ExceedsLimits {
            what: what.into(),
            needed,
            limit,
            allowed,
            hint: hint.into(),
        }
    }
}
