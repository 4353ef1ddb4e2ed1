//! The host-side scheduler: records a whole forward (every layer, every timestep) into one
//! command encoder, submits it once and reads `output` and `h_n` back once.
//!
//! Per layer: one projection dispatch over all T·N rows, then T step dispatches in the same
//! compute pass. Layer k+1's projection reads layer k's output where it lies on the GPU;
//! nothing returns to the host between layers or steps. The initial state can come from the
//! host, from zeros, or from a GPU buffer (a stream's state, the previous time chunk's), and
//! the final state can be left in a GPU buffer for the next run.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Result, RnnError};
use crate::gpu::architecture::Architecture;
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::{Kernels, StationaryProjectionKernel, StepGrid};
use crate::gpu::plan::LayerKernel;
use crate::gpu::workspace::{OwnInput, TIMESTAMP_BYTES, UploadMap, Workspace, lengths_offset};

/// Workgroups a persistent kernel projecting ahead adds to each dispatch to project the next
/// chunk: one, on a core the recurrence leaves idle (see `gpu::ahead`).
const AHEAD_WORKERS: u32 = 1;

/// Records `layer`'s input projection (of its first `rows` rows, or all): the
/// weight-stationary kernel (the context's `stationary`) where the workspace has it for the
/// layer, else the tile kernel of the layer's `kernels`.
fn encode_projection(
    kernels: &Kernels,
    stationary: Option<&StationaryProjectionKernel>,
    pass: &mut wgpu::ComputePass<'_>,
    ws: &Workspace,
    layer: usize,
    rows: Option<u32>,
) {
    let params = &ws.projections[layer];
    let rows = rows.unwrap_or(params.rows);
    match (&ws.stationary[layer], stationary) {
        (Some(stationary), Some(kernel)) => {
            kernel.encode(pass, &stationary.pipeline, &stationary.group, params, rows);
        }
        _ => {
            let group = &ws.projection_groups[layer];
            kernels.projection.encode_rows(pass, group, params, rows);
        }
    }
}

/// The kernel and bind group of a layer that reads its input itself.
fn own_input(ws: &Workspace, layer: usize) -> Result<&OwnInput> {
    ws.own_input[layer]
        .as_ref()
        .ok_or_else(|| RnnError::Gpu("a layer's own-input kernel was not made".into()))
}

/// Where a run's initial state (the h block (L·D, N, H_out), then an LSTM's c block
/// (L·D, N, H)) comes from.
#[derive(Clone, Copy)]
pub(crate) enum InitialState<'a> {
    Zeros,
    Host(&'a [f32]),
    Device(&'a wgpu::Buffer),
}

/// Writes a run's input frames by calling the function it is given with (offset in floats,
/// frames) for each contiguous run of them.
pub(crate) type InputWriter<'a> = &'a dyn Fn(&mut dyn FnMut(usize, &[f32]));

/// One submission: a (chunk of a) sequence through every layer.
pub(crate) struct Run<'a> {
    /// Writes the input frames, in the workspace's layout: they go straight into the mapped
    /// upload buffer.
    pub write_input: InputWriter<'a>,
    /// Valid frames per sequence, each in 0..=T (0: a sequence that ended before this chunk);
    /// `None`: all T.
    pub lengths: Option<&'a [usize]>,
    pub initial: InitialState<'a>,
    /// Receives the final state, on the GPU.
    pub final_state: Option<&'a wgpu::Buffer>,
    /// Time the compute pass with timestamp queries (where the adapter has them).
    pub profile: bool,
}

/// What one run returns.
pub(crate) struct RunResult<T> {
    /// What `read_output` made of the output frames (in the workspace's layout).
    pub output: T,
    /// The final state, laid out as the initial one.
    pub state: Vec<f32>,
    /// GPU execution time of the compute pass, when profiled on an adapter that can.
    pub gpu_time: Option<Duration>,
}

/// Records, submits and reads back one run; `read_output` receives the output frames while
/// they are mapped (to copy them where they belong without an intermediate vector).
pub(crate) fn run<T>(
    ctx: &GpuContext,
    arch: &Architecture,
    ws: &mut Workspace,
    run: Run<'_>,
    read_output: impl FnOnce(&[f32]) -> T,
) -> Result<RunResult<T>> {
    let (device, queue) = (ctx.device(), ctx.queue());
    // The layers' kernels read the model's weights in its precision; a head's are f32.
    let kernels = ctx.kernels(ws.weights)?;
    let f32_kernels = &ctx.inner().kernels;
    let stationary = ctx.stationary_kernel();
    let scopes = ctx.error_scopes();

    write_upload(ctx, ws, run.write_input)?;
    match run.lengths {
        Some(lengths) => {
            let lengths: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
            let at = lengths_offset(ws.state_len);
            queue.write_buffer(&ws.state, at, bytemuck::cast_slice(&lengths));
            ws.lengths_full = false;
        }
        None if !ws.lengths_full => {
            let full = vec![ws.seq_len as u32; ws.batch];
            let at = lengths_offset(ws.state_len);
            queue.write_buffer(&ws.state, at, bytemuck::cast_slice(&full));
            ws.lengths_full = true;
        }
        None => {}
    }

    let state_bytes = (ws.state_len * 4) as u64;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("rnn forward"),
    });
    if let Some(upload) = &ws.upload {
        encoder.copy_buffer_to_buffer(upload, 0, &ws.input, 0, ws.input.size());
    }
    // The initial state goes into the first half of the state buffer, whose layout is
    // exactly the initial state's.
    match run.initial {
        InitialState::Zeros => encoder.clear_buffer(&ws.state, 0, Some(state_bytes)),
        InitialState::Host(h0) => queue.write_buffer(&ws.state, 0, bytemuck::cast_slice(h0)),
        InitialState::Device(h0) => encoder.copy_buffer_to_buffer(h0, 0, &ws.state, 0, state_bytes),
    }
    let timestamps = ws.timestamps.as_ref().filter(|_| run.profile);
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rnn layers"),
            timestamp_writes: timestamps.map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.queries,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        let grid = StepGrid {
            hidden: arch.hidden_size as u32,
            batch: ws.batch as u32,
            directions: arch.directions as u32,
            batch_tile: ws.plan.persistent.map_or(1, |p| p.batch_tile),
        };
        let steps = 0..ws.seq_len as u32;
        let steps_per_dispatch = ws.plan.persistent.map_or(1, |p| p.steps_per_dispatch);
        for (layer, kernel) in ws.plan.layers.iter().enumerate() {
            let (group, params) = (&ws.step_groups[layer], &ws.projections[layer]);
            match *kernel {
                LayerKernel::Wave => {
                    // Layer 0's projection, then every layer advancing together.
                    if let Some(waves) = ws.wave_group.as_ref().filter(|_| layer == 0) {
                        encode_projection(kernels, stationary, &mut pass, ws, layer, None);
                        let count = ws.plan.state_steps(ws.seq_len) as u32;
                        let layers = arch.num_layers as u32;
                        kernels.step.encode_waves(
                            &mut pass,
                            waves,
                            0..count,
                            ws.step_stride,
                            grid,
                            layers,
                        );
                    }
                }
                LayerKernel::FusedInput(_) => {
                    // No projection: the kernel computes x_t·W_ihᵀ + b in each step.
                    let own = own_input(ws, layer)?;
                    kernels.step.encode_persistent(
                        &mut pass,
                        &own.pipeline,
                        &own.group,
                        steps.clone(),
                        steps_per_dispatch,
                        ws.step_stride,
                        grid,
                    );
                }
                LayerKernel::ProjectingAhead { chunk, .. } => {
                    // The first chunk's projection, then the recurrence projecting the rest
                    // a chunk ahead.
                    let own = own_input(ws, layer)?;
                    let first_rows = chunk as u32 * params.batch;
                    encode_projection(kernels, stationary, &mut pass, ws, layer, Some(first_rows));
                    kernels.step.encode_projecting_ahead(
                        &mut pass,
                        &own.pipeline,
                        &own.group,
                        ws.seq_len as u32,
                        chunk as u32,
                        AHEAD_WORKERS,
                        ws.step_stride,
                        grid,
                    );
                }
                LayerKernel::Persistent => {
                    encode_projection(kernels, stationary, &mut pass, ws, layer, None);
                    let pipeline = ws.persistent.as_ref().ok_or_else(|| {
                        RnnError::Gpu("the persistent kernel was not compiled".into())
                    })?;
                    kernels.step.encode_persistent(
                        &mut pass,
                        pipeline,
                        group,
                        steps.clone(),
                        steps_per_dispatch,
                        ws.step_stride,
                        grid,
                    );
                }
                LayerKernel::ElmanSteps { blocks } => {
                    encode_projection(kernels, stationary, &mut pass, ws, layer, None);
                    kernels.step.encode_steps(
                        &mut pass,
                        group,
                        steps.clone(),
                        ws.step_stride,
                        grid,
                        blocks,
                    );
                }
                LayerKernel::GatedSteps { blocks, projected } => {
                    encode_projection(kernels, stationary, &mut pass, ws, layer, None);
                    kernels.gated.encode_steps(
                        &mut pass,
                        group,
                        steps.clone(),
                        ws.step_stride,
                        grid,
                        projected,
                        blocks,
                    );
                }
            }
        }
        if let Some(head) = &ws.head {
            f32_kernels
                .projection
                .encode(&mut pass, &head.group, &head.params);
        }
    }
    let output_bytes = (ws.output_len * 4) as u64;
    // The per-step kernels leave the state in half T % 2 (a wavefront in half
    // (T + L − 1) % 2); the persistent ones in place.
    let final_half = match ws.plan.persistent {
        Some(_) => 0,
        None => (ws.plan.state_steps(ws.seq_len) % 2) as u64 * state_bytes,
    };
    // The readback holds [output][final state][timestamps]; with unified memory it is the
    // result buffer itself, and the output is already in place.
    let readback = ws.readback();
    if let Some(staging) = &ws.readback {
        encoder.copy_buffer_to_buffer(ws.result(), 0, staging, 0, output_bytes);
    }
    encoder.copy_buffer_to_buffer(&ws.state, final_half, readback, output_bytes, state_bytes);
    if let Some(keep) = run.final_state {
        encoder.copy_buffer_to_buffer(&ws.state, final_half, keep, 0, state_bytes);
    }
    if let Some(t) = timestamps {
        encoder.resolve_query_set(&t.queries, 0..2, &t.resolved, 0);
        let after = output_bytes + state_bytes;
        encoder.copy_buffer_to_buffer(&t.resolved, 0, readback, after, TIMESTAMP_BYTES);
    }
    let submission = queue.submit([encoder.finish()]);
    // Errors of recording and submission are reported synchronously: check them before
    // mapping, so that a failed forward leaves no pending map behind.
    scopes.finish(ctx, "recording the forward")?;
    // The input's buffer is mapped again for the next forward once this one is done (the
    // readback's wait below resolves it).
    ws.upload_map = UploadMap::Pending(request_map(ws.input_target(), wgpu::MapMode::Write));

    let (output_len, state_len) = (ws.output_len, ws.state_len);
    let profiled = timestamps.is_some();
    let (output, state, ticks) = map_and_read(ctx, ws.readback(), submission, |values| {
        let end = output_len + state_len;
        // The two u64 timestamps, as the four f32 slots they were copied into.
        let ticks = profiled.then(|| {
            let raw: &[u8] = bytemuck::cast_slice(&values[end..end + 4]);
            let tick = |i: usize| {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&raw[8 * i..8 * i + 8]);
                u64::from_ne_bytes(bytes)
            };
            tick(1).saturating_sub(tick(0))
        });
        (
            read_output(&values[..output_len]),
            values[output_len..end].to_vec(),
            ticks,
        )
    })?;
    let gpu_time = ticks.map(|ticks| {
        let nanos = ticks as f64 * f64::from(ctx.queue().get_timestamp_period());
        Duration::from_nanos(nanos as u64)
    });
    Ok(RunResult {
        output,
        state,
        gpu_time,
    })
}

/// Hands the mapped buffer the input goes into (see `Workspace::input_target`) to `write`,
/// then unmaps it for the GPU. It is normally mapped already, by the end of the previous
/// forward.
fn write_upload(ctx: &GpuContext, ws: &mut Workspace, write: InputWriter<'_>) -> Result<()> {
    loop {
        match std::mem::replace(&mut ws.upload_map, UploadMap::Unmapped) {
            UploadMap::Mapped => break,
            UploadMap::Pending(receiver) => {
                if let Err(error) = map_result(ctx, &receiver, "mapping the input upload") {
                    // Cancels the map if it is still pending: the buffer is then Unmapped,
                    // and the next forward asks again.
                    let scopes = ctx.error_scopes();
                    ws.input_target().unmap();
                    let _ = scopes.finish(ctx, "cancelling the input's map");
                    return Err(error);
                }
                break;
            }
            UploadMap::Unmapped => {
                let target = ws.input_target();
                ws.upload_map = UploadMap::Pending(request_map(target, wgpu::MapMode::Write));
            }
        }
    }
    // Unmapped whatever happens: the state says so from here on.
    let written = ws
        .input_target()
        .get_mapped_range_mut(..)
        .map(|mut view| {
            write(&mut |at, frames| {
                view.slice(at * 4..(at + frames.len()) * 4)
                    .copy_from_slice(bytemuck::cast_slice(frames))
            })
        })
        .map_err(|e| ctx.classify("writing the input", e));
    ws.input_target().unmap();
    written
}

/// Asks for `buffer` to be mapped; the receiver gets the outcome at a later poll.
fn request_map(
    buffer: &wgpu::Buffer,
    mode: wgpu::MapMode,
) -> mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>> {
    let (sender, receiver) = mpsc::channel();
    buffer.map_async(mode, .., move |result| {
        let _ = sender.send(result);
    });
    receiver
}

/// Copies `len` floats of `buffer` to the host (a small, one-off readback: a stream's state).
pub(crate) fn read_buffer(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let scopes = ctx.error_scopes();
    let bytes = (len * 4) as u64;
    let staging = ctx.create_buffer(&wgpu::BufferDescriptor {
        label: Some("state readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    let submission = ctx.queue().submit([encoder.finish()]);
    scopes.finish(ctx, "reading the state")?;
    map_and_read(ctx, &staging, submission, <[f32]>::to_vec)
}

/// Maps `buffer` once `submission` is done, hands its floats to `read`, and unmaps it.
pub(crate) fn map_and_read<T>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    submission: wgpu::SubmissionIndex,
    read: impl FnOnce(&[f32]) -> T,
) -> Result<T> {
    let receiver = request_map(buffer, wgpu::MapMode::Read);
    let mapped =
        wait(ctx, submission).and_then(|()| map_result(ctx, &receiver, "reading results back"));
    if let Err(error) = mapped {
        // Cancels the pending map so that the buffer stays usable. On a lost device the
        // buffer is already gone and wgpu objects; that is expected, so its error is dropped.
        let scopes = ctx.error_scopes();
        buffer.unmap();
        let _ = scopes.finish(ctx, "cancelling the readback");
        return Err(error);
    }
    let result = {
        let view = buffer
            .get_mapped_range(..)
            .map_err(|e| ctx.classify("reading results back", e))?;
        read(bytemuck::cast_slice(&view))
    };
    buffer.unmap();
    Ok(result)
}

/// The outcome of a `map_async` whose submission is done. Its callback runs inside some
/// thread's `poll`: when another thread is polling the same device it may fire there a moment
/// after our own wait returned, so wait for it (polling too) instead of expecting it already.
fn map_result(
    ctx: &GpuContext,
    receiver: &mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
    what: &str,
) -> Result<()> {
    // A timeout too long to add to the clock (`Duration::MAX`, say) means no deadline.
    let deadline = Instant::now().checked_add(ctx.timeout());
    loop {
        let outcome = match receiver.try_recv() {
            Ok(result) => Ok(result),
            Err(mpsc::TryRecvError::Disconnected) => Err(mpsc::RecvTimeoutError::Disconnected),
            // Not yet: poll (the callback may be due), then wait a little for it.
            Err(mpsc::TryRecvError::Empty) => {
                let _ = ctx.device().poll(wgpu::PollType::Poll);
                receiver.recv_timeout(Duration::from_millis(1))
            }
        };
        match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => return Err(ctx.classify(what, error)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ctx.classify(what, "the map was dropped"));
            }
            Err(mpsc::RecvTimeoutError::Timeout)
                if deadline.is_some_and(|d| Instant::now() > d) =>
            {
                ctx.check_alive()?;
                return Err(RnnError::Timeout(ctx.timeout()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Waits for `submission` within the context's timeout.
pub(crate) fn wait(ctx: &GpuContext, submission: wgpu::SubmissionIndex) -> Result<()> {
    let timeout = ctx.timeout();
    match ctx.device().poll(wgpu::PollType::Wait {
        submission_index: Some(submission),
        timeout: Some(timeout),
    }) {
        Ok(_) => Ok(()),
        Err(wgpu::PollError::Timeout) => {
            ctx.check_alive()?;
            Err(RnnError::Timeout(timeout))
        }
        Err(error) => Err(ctx.classify("waiting for the GPU", error)),
    }
}
