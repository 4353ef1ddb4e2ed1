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
///
/// **After an error** the stream is as it was before the failed call: a `push` (or `finish`)
/// that fails, a timeout included, has not advanced the state or the delay, and its chunk may
/// simply be pushed again. (A timed-out push's GPU work may still finish later; it writes only
/// a scratch copy of the state, which the next push overwrites.) Only
/// [`RnnError::DeviceLost`] leaves it unusable, with its model and context.
///
/// **Unbatched chunks**: a stream of one sequence (`batch: 1`) may be fed (T_c, I) chunks as
/// well as 3-D ones, as `nn.RNN` may. Its outputs, `finish`, `state` and `cell_state` then
/// follow the form of the last tensor given to it (a chunk, or the state of `reset_to`):
/// (T_c, H) and (L, H) after unbatched ones, 3-D otherwise (and before any).
pub struct RnnStream<'m> {
    model: &'m Engine,
    batch_first: bool,
    options: StreamOptions,
    /// Every layer's h (L, N, H_out), then for an LSTM every layer's c (L, N, H), on the GPU.
    state: wgpu::Buffer,
    /// Where a push writes the state it ends with; swapped with `state` once the push has
    /// succeeded, so that a failed one leaves `state` as it was.
    next_state: wgpu::Buffer,
    /// Outputs still to hold back before the first one is returned.
    to_skip: usize,
    /// Whether the last tensor given was unbatched: outputs and states then drop N too.
    unbatched: bool,
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
        let next_state = self.state_buffer(options.batch)?;
        let mut stream = RnnStream {
            model: self,
            batch_first,
            options,
            state,
            next_state,
            to_skip: options.delay,
            unbatched: false,
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

    /// (L, N, `features`): one state block; (L, `features`) after unbatched input.
    fn block_shape(&self, features: usize) -> Vec<usize> {
        let layers = self.model.arch.num_layers;
        if self.unbatched {
            vec![layers, features]
        } else {
            vec![layers, self.options.batch, features]
        }
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
    /// On error the stream is unchanged (see [`RnnStream`]).
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
        // The run ends in `next_state` (chunks carry the state there too), from `state`.
        let (output, _) = model.run_chunks(
            &shape,
            chunk.data(),
            None,
            InitialState::Device(&self.state),
            Some(&self.next_state),
            len,
        )?;
        // Nothing below fails: the push has happened.
        std::mem::swap(&mut self.state, &mut self.next_state);
        self.unbatched = shape.unbatched;
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
    /// sequence. Without a delay it returns no frames and only resets. The frames are in the
    /// form of the last chunk pushed (unbatched after (T_c, I) chunks). On error the stream
    /// is unchanged, and `finish` may be called again.
    pub fn finish(&mut self) -> Result<Tensor> {
        let (i, delay) = (self.model.arch.input_size, self.options.delay);
        let frames_shape = |frames: usize, features: usize| {
            ForwardShape {
                seq_len: frames,
                batch: self.options.batch,
                unbatched: self.unbatched,
                batch_first: self.batch_first && !self.unbatched,
            }
            .frames_shape(features)
        };
        let out = if delay == 0 {
            Tensor::zeros(&frames_shape(0, self.model.output_features()))?
        } else {
            self.push(&Tensor::zeros(&frames_shape(delay, i))?)?
        };
        self.reset();
        self.to_skip = delay;
        Ok(out)
    }

    /// Reads every layer's h back: (L, N, H_out), or (L, H_out) after unbatched input.
    pub fn state(&self) -> Result<Tensor> {
        let _gl = self.model.ctx.gl_guard();
        let shape = self.h_shape();
        let values = scheduler::read_buffer(&self.model.ctx, &self.state, shape.iter().product())?;
        Tensor::new(values, &shape)
    }

    /// An LSTM stream's cell state c, (L, N, H) (or (L, H) after unbatched input); `None` for
    /// other cells.
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
    /// `c0` (L, N, H), which an LSTM stream needs and other streams refuse. A stream of one
    /// sequence also takes them without N; later outputs and states take their form.
    pub fn reset_to(&mut self, hx: Hx<'_>) -> Result<()> {
        let (h, c) = (self.model.arch.state_size, self.model.arch.hidden_size);
        match (self.is_lstm(), hx.c0) {
            (true, Some(c0)) => self.write_state(&[("h0", hx.h0, h), ("c0", c0, c)]),
            (false, None) => self.write_state(&[("h0", hx.h0, h)]),
            (true, None) => Err(RnnError::ShapeMismatch {
                what: "c0",
                expected: format!(
                    "{:?}: an LSTM stream's state is (h, c), Hx::lstm(h0, c0)",
                    self.block_shape(c)
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

    /// Checks each (name, tensor, features) and writes them one after the other. The tensors
    /// are (L, N, features), or all (L, features) when N = 1.
    fn write_state(&mut self, blocks: &[(&'static str, &Tensor, usize)]) -> Result<()> {
        let (layers, batch) = (self.model.arch.num_layers, self.options.batch);
        let unbatched = batch == 1 && blocks.first().is_some_and(|(_, t, _)| t.shape().len() == 2);
        for &(what, tensor, features) in blocks {
            let shape = if unbatched {
                vec![layers, features]
            } else {
                vec![layers, batch, features]
            };
            if tensor.shape() != shape.as_slice() {
                let expected = if batch == 1 {
                    format!("[{layers}, 1, {features}] or [{layers}, {features}]")
                } else {
                    format!("{shape:?}")
                };
                return Err(RnnError::shape(what, expected, tensor.shape()));
            }
        }
        self.unbatched = unbatched;
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
