//! # wgpu-rnn
//!
//! PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU` forward passes on any GPU through wgpu compute
//! shaders (Vulkan, Metal, DX12, GL, and lavapipe where there is no GPU), with a plain CPU
//! reference path that returns the same numbers.
//!
//! One model for every mode, as PyTorch's `RNNBase` and cuDNN's `cudnnRNNMode_t` have it:
//! [`RnnConfig`] (with [`RnnMode`]: `Rnn(Tanh | Relu)`, `Lstm`, `Gru`), [`RnnWeights`],
//! [`GpuRnn`] and [`CpuRnn`] behind the [`Rnn`] trait, returning [`RnnOutput`]; the initial
//! state is an [`Hx`]. Streams ([`RnnStream`]), time chunks and a [`Linear`] head work for
//! every mode. The cells stay three types, as in PyTorch: [`RnnCell`], [`LstmCell`],
//! [`GruCell`] (configured by [`CellConfig`]).
//!
//! ```no_run
//! use wgpu_rnn::{GpuContext, GpuRnn, Hx, Rnn, RnnConfig, RnnWeights, Tensor};
//!
//! # fn main() -> wgpu_rnn::Result<()> {
//! // torch.nn.LSTM(4, 8, num_layers=2), weights from a PyTorch state_dict.
//! let config = RnnConfig { num_layers: 2, ..RnnConfig::lstm(4, 8) };
//! let weights = RnnWeights::load(&config, "lstm.safetensors", "")?;
//! let ctx = GpuContext::new()?;
//! let lstm = GpuRnn::new(&ctx, config, &weights)?;
//! let input = Tensor::zeros(&[5, 3, 4])?; // (T, N, I)
//! let (h0, c0) = (Tensor::zeros(&[2, 3, 8])?, Tensor::zeros(&[2, 3, 8])?);
//! let out = lstm.forward(&input, Some(Hx::lstm(&h0, &c0)))?;
//! assert_eq!(out.output.shape(), &[5, 3, 8]);
//! assert_eq!(out.h_n.shape(), &[2, 3, 8]);
//! assert!(out.c_n.is_some());
//! # Ok(()) }
//! ```
//!
//! ## Training
//! [`GpuTrainer`] and [`CpuTrainer`] (the plain reference) behind the [`Train`] trait:
//! `forward_train` keeps what the backward needs and returns a [`Tape`]; `backward(tape,`
//! [`OutputGrads`]`)` adds every parameter's gradient to what the model holds, as PyTorch's
//! `.grad` accumulates, and returns the inputs' gradients ([`InputGrads`]); `gradients()` and
//! `parameters()` read them back under PyTorch's names; `zero_grad()` clears. Every mode and
//! flag of the forward, a Linear head, and cells unrolled over a sequence.
//!
//! ## How the GPU forward works
//! Per layer, one GEMM projects the input of all timesteps and both directions at once
//! (`P = X·W_ihᵀ + b_ih + b_hh`, every gate's columns for an LSTM or GRU,
//! `shaders/input_projection.wgsl`), then the recurrence runs either as one fused dispatch per
//! timestep (`shaders/recurrent_step.wgsl`, `shaders/gated_step.wgsl`) or as a persistent
//! kernel that runs thousands of steps per dispatch with W_hh held in registers
//! (`shaders/persistent_recurrence.wgsl`, `shaders/gated_persistent.wgsl`; see [`Recurrence`]).
//! The whole forward, every layer and step, is recorded into one command encoder and submitted
//! once; output and `h_n` (and `c_n`) are read back once.
//!
//! ## Failure modes
//! Every entry point returns [`RnnError`]; nothing panics on bad input.
//! - [`RnnError::NoAdapter`]: no adapter matches (no driver installed, or `WGPU_BACKEND` /
//!   `WGPU_ADAPTER_NAME` exclude every adapter).
//! - [`RnnError::RequestDevice`]: the adapter refused to open a device.
//! - [`RnnError::InvalidConfig`]: a zero size, a dropout outside [0, 1], a `proj_size` PyTorch
//!   refuses, bad metadata, a Linear head that does not fit, a stream of a bidirectional model
//!   or with an absurd delay, the persistent kernel asked of a projected LSTM, f16 weights on
//!   an adapter without `SHADER_F16`, training on a device opened with wgpu's downlevel limits.
//! - [`RnnError::ShapeMismatch`]: `input`, `h0`, `c0`, `lengths`, a stream chunk or a
//!   backward's upstream gradients do not have PyTorch's shapes for the model.
//! - [`RnnError::InvalidLength`]: a sequence length outside 1..=T.
//! - [`RnnError::Weights`]: a tensor is missing, mis-shaped or not float32 (named in full), or
//!   the file's header is corrupt.
//! - [`RnnError::SafeTensors`] / [`RnnError::Io`]: the file is unreadable or not safetensors.
//! - [`RnnError::ExceedsLimits`]: even one timestep, or the state of the batch, needs bigger
//!   buffers or more workgroups than the adapter allows (longer sequences run in time chunks
//!   instead), or a bidirectional model with a Linear head gets a sequence too long for one
//!   submission.
//! - [`RnnError::Tape`]: a backward given the tape of another model, or of a training forward
//!   that a later one replaced.
//! - [`RnnError::Gpu`]: wgpu reported a validation or out-of-memory error.
//! - [`RnnError::DeviceLost`]: the device is gone; make a new [`GpuContext`].
//! - [`RnnError::Timeout`]: the GPU did not finish within [`GpuContext::set_timeout`].
#![deny(missing_docs)]

mod cell;
mod checkpoint;
pub mod compare;
mod config;
mod cpu;
mod error;
mod gpu;
mod head;
mod layout;
mod loss;
mod optim;
mod precision;
pub mod reference_case;
mod rnn;
mod shaders;
mod tensor;
#[doc(hidden)]
pub mod testing;
mod train;
mod weights;

pub use cell::{CellConfig, GruCell, LstmCell, RnnCell};
pub use config::{Nonlinearity, RnnConfig, RnnMode};
pub use cpu::CpuRnn;
#[doc(hidden)]
pub use cpu::backward::Gradients;
pub use cpu::trainer::CpuTrainer;
pub use error::{Limit, Result, RnnError};
pub use gpu::context::GpuContext;
pub use gpu::counters::ResourceCounts;
pub use gpu::engine::{GpuOptions, Recurrence};
pub use gpu::model::GpuRnn;
pub use gpu::stream::{RnnStream, StreamOptions};
pub use gpu::training::GpuTrainer;
#[doc(hidden)]
pub use gpu::training::OpTiming;
pub use head::Linear;
pub use loss::{Loss, Reduction, Target};
pub use optim::{Adam, OptimizerConfig, Sgd};
pub use precision::WeightPrecision;
pub use rnn::{Hx, Rnn, RnnOutput};
pub use tensor::Tensor;
pub use train::{Batch, InitialState, InputGrads, Optimizer, OutputGrads, Tape, Train};
pub use weights::{DirectionWeights, RnnWeights};

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
