//! Streams: a unidirectional model run over a live sequence chunk by chunk, its hidden state
//! (every layer's) kept on the GPU between calls.

use crate::error::{Result, RnnError};
use crate::gpu::architecture::Cell;
use crate::gpu::engine::Engine;
use crate::gpu::model::GpuRnn;
use crate::gpu::scheduler::{self, InitialState};
use crate::layout::{ForwardShape, TimeSlice};
use crate::rnn::Hx;
use crate::tensor::Tensor;

/// How a stream is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Sequences processed side by side (N); default 1.
    pub batch: usize,
    /// For models trained to predict frame t at step t + k: the first `delay` outputs are
    /// held back so that the i-th returned output belongs to input frame i, and
    /// [`RnnStream::finish`] flushes the last `delay` by feeding zero frames. Default 0.
    pub delay: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { batch: 1, delay: 0 }
    }
}

/// A live sequence through a [`GpuRnn`] of any mode: `push` chunks of any length, get their outputs;
/// pushing a sequence in chunks gives the same outputs and state as one forward over it.
pub struct RnnStream<'m> {
    model: &'m Engine,
    batch_first: bool,
    options: StreamOptions,
    /// Every layer's h (L, N, H_out), then for an LSTM every layer's c (L, N, H), on the GPU.
    state: wgpu::Buffer,
    /// Outputs still to hold back before the first one is returned.
    to_skip: usize,
}

impl std::fmt::Debug for RnnStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RnnStream")
            .field("options", &self.options)
            .field("to_skip", &self.to_skip)
            .finish_non_exhaustive()
    }
}

/// The most floats a stream's final flush (`delay` zero frames and their outputs) may take:
/// 1 GiB.
const MAX_FLUSH_FLOATS: usize = 1 << 28;

impl GpuRnn {
    /// Starts a stream from a zero state. Fails for a bidirectional model, whose reverse
    /// direction needs the whole sequence before it can produce anything.
    pub fn stream(&self, options: StreamOptions) -> Result<RnnStream<'_>> {
        self.engine.stream(self.config.batch_first, options)
    }
}

impl Engine {
    /// A stream over this engine; `batch_first` is the model's input layout.
    pub(crate) fn stream(
        &self,
        batch_first: bool,
        options: StreamOptions,
    ) -> Result<RnnStream<'_>> {
        if self.arch.directions == 2 {
            return Err(RnnError::InvalidConfig(
                "a bidirectional model cannot stream: its reverse direction needs the whole \
                 sequence; use forward() instead"
                    .into(),
            ));
        }
        if options.batch == 0 {
            return Err(RnnError::InvalidConfig("a stream needs batch ≥ 1".into()));
        }
        // finish() feeds `delay` zero frames: keep that a sane amount of memory.
        let flush = options
            .delay
            .checked_mul(options.batch)
            .and_then(|f| f.checked_mul(self.arch.input_size.max(self.output_features())));
        if flush.is_none_or(|floats| floats > MAX_FLUSH_FLOATS) {
            return Err(RnnError::InvalidConfig(format!(
                "a delay of {} frames for {} sequences needs more than {MAX_FLUSH_FLOATS} \
                 floats to flush",
                options.delay, options.batch
            )));
        }
        let _gl = self.ctx.gl_guard();
        let state = self.state_buffer(options.batch)?;
        let mut stream = RnnStream {
            model: self,
            batch_first,
            options,
            state,
            to_skip: options.delay,
        };
        stream.clear();
        Ok(stream)
    }
}

impl RnnStream<'_> {
    /// The options the stream was made with.
    pub fn options(&self) -> StreamOptions {
        self.options
    }

    /// (L, N, `features`): one state block.
    fn block_shape(&self, features: usize) -> Vec<usize> {
        vec![self.model.arch.num_layers, self.options.batch, features]
    }

    fn h_shape(&self) -> Vec<usize> {
        self.block_shape(self.model.arch.state_size)
    }

    fn is_lstm(&self) -> bool {
        self.model.arch.cell == Cell::Lstm
    }

    /// Runs the next frames: `chunk` is (T_c, N, I), (N, T_c, I) with `batch_first`, or
    /// (T_c, I) when N = 1, with any T_c ≥ 1. Returns their outputs in the same layout
    /// ((T_c, N, H), ...), less the ones still held back by the delay (so possibly 0 frames).
    pub fn push(&mut self, chunk: &Tensor) -> Result<Tensor> {
        let model = self.model;
        let _gl = model.ctx.gl_guard();
        model.ctx.check_alive()?;
        let shape = ForwardShape::resolve_input(model.arch.input_size, self.batch_first, chunk)?;
        if shape.batch != self.options.batch {
            return Err(RnnError::shape(
                "input",
                format!(
                    "a chunk of {} sequences, as the stream was made for",
                    self.options.batch
                ),
                chunk.shape(),
            ));
        }
        let len = model.chunk_len(&shape)?;
        let (output, _) = model.run_chunks(
            &shape,
            chunk.data(),
            None,
            InitialState::Device(&self.state),
            Some(&self.state),
            len,
        )?;
        let skip = self.to_skip.min(shape.seq_len);
        self.to_skip -= skip;
        let features = model.output_features();
        let out_shape = shape.frames_shape(features);
        if skip == 0 {
            return Tensor::new(output, &out_shape);
        }
        let kept = TimeSlice {
            shape,
            t0: skip,
            len: shape.seq_len - skip,
            features,
        };
        let frames = ForwardShape {
            seq_len: kept.len,
            ..shape
        };
        Tensor::new(kept.gather(&output), &frames.frames_shape(features))
    }

    /// Ends the sequence: feeds `delay` zero frames, returns the outputs still held back
    /// (the last `delay` input frames'), and resets the stream to a zero state for the next
    /// sequence. Without a delay it returns no frames and only resets.
    pub fn finish(&mut self) -> Result<Tensor> {
        let (n, i, delay) = (
            self.options.batch,
            self.model.arch.input_size,
            self.options.delay,
        );
        let out = if delay == 0 {
            let f = self.model.output_features();
            let shape = if self.batch_first {
                [n, 0, f]
            } else {
                [0, n, f]
            };
            Tensor::zeros(&shape)
        } else {
            let shape = if self.batch_first {
                [n, delay, i]
            } else {
                [delay, n, i]
            };
            self.push(&Tensor::zeros(&shape))?
        };
        self.reset();
        self.to_skip = delay;
        Ok(out)
    }

    /// Reads every layer's h back: (L, N, H_out).
    pub fn state(&self) -> Result<Tensor> {
        let _gl = self.model.ctx.gl_guard();
        let shape = self.h_shape();
        let values = scheduler::read_buffer(&self.model.ctx, &self.state, shape.iter().product())?;
        Tensor::new(values, &shape)
    }

    /// An LSTM stream's cell state c, (L, N, H); `None` for other cells.
    pub fn cell_state(&self) -> Result<Option<Tensor>> {
        if !self.is_lstm() {
            return Ok(None);
        }
        let _gl = self.model.ctx.gl_guard();
        let h_len: usize = self.h_shape().iter().product();
        let values = scheduler::read_buffer(
            &self.model.ctx,
            &self.state,
            self.model.state_len(self.options.batch),
        )?;
        let shape = self.block_shape(self.model.arch.hidden_size);
        Tensor::new(values[h_len..].to_vec(), &shape).map(Some)
    }

    /// Sets the state to zeros (and restarts the delay).
    pub fn reset(&mut self) {
        let _gl = self.model.ctx.gl_guard();
        self.clear();
    }

    /// `reset` for callers that hold the GL guard already.
    fn clear(&mut self) {
        let ctx = &self.model.ctx;
        let scopes = ctx.error_scopes();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        encoder.clear_buffer(&self.state, 0, None);
        ctx.queue().submit([encoder.finish()]);
        // Only a lost device can fail here, and the next push or read reports that.
        let _ = scopes.finish(ctx, "resetting the stream");
        self.to_skip = self.options.delay;
    }

    /// Sets the state to `hx` (and restarts the delay): `h0` (L, N, H_out), and for an LSTM
    /// `c0` (L, N, H), which an LSTM stream needs and other streams refuse.
    pub fn reset_to(&mut self, hx: Hx<'_>) -> Result<()> {
        let h_block = ("h0", hx.h0, self.h_shape());
        match (self.is_lstm(), hx.c0) {
            (true, Some(c0)) => {
                let c_shape = self.block_shape(self.model.arch.hidden_size);
                self.write_state(&[h_block, ("c0", c0, c_shape)])
            }
            (false, None) => self.write_state(&[h_block]),
            (true, None) => Err(RnnError::ShapeMismatch {
                what: "c0",
                expected: format!(
                    "{:?}: an LSTM stream's state is (h, c), Hx::lstm(h0, c0)",
                    self.block_shape(self.model.arch.hidden_size)
                ),
                got: "none".into(),
            }),
            (false, Some(c0)) => Err(RnnError::shape(
                "c0",
                "none: only an LSTM has a cell state",
                c0.shape(),
            )),
        }
    }

    /// Checks each (name, tensor, expected shape) and writes them one after the other.
    fn write_state(&mut self, blocks: &[(&'static str, &Tensor, Vec<usize>)]) -> Result<()> {
        for (what, tensor, shape) in blocks {
            if tensor.shape() != shape.as_slice() {
                return Err(RnnError::shape(what, format!("{shape:?}"), tensor.shape()));
            }
        }
        let _gl = self.model.ctx.gl_guard();
        let mut at = 0;
        for (_, tensor, _) in blocks {
            self.model.ctx.queue().write_buffer(
                &self.state,
                at,
                bytemuck::cast_slice(tensor.data()),
            );
            at += (tensor.data().len() * 4) as u64;
        }
        self.to_skip = self.options.delay;
        Ok(())
    }
}
