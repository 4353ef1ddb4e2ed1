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

    /// A problem would need more memory or more work items than the adapter allows.
    #[error(
        "{what} needs {needed} but the adapter allows at most {limit}; \
         use a shorter sequence or a smaller batch per call"
    )]
    ExceedsLimits {
        /// The resource (a buffer, a dispatch dimension).
        what: String,
        /// What the problem needs.
        needed: u64,
        /// What the adapter allows.
        limit: u64,
    },

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
}
