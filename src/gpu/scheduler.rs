//! The host-side scheduler: records a whole forward (every layer, every timestep) into one
//! command encoder, submits it once and reads `output` and `h_n` back once.
//!
//! Per layer: one projection dispatch over all T·N rows, then T step dispatches in the same
//! compute pass. Layer k+1's projection reads layer k's output where it lies on the GPU;
//! nothing returns to the host between layers or steps.

use std::sync::mpsc;

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::context::GpuContext;
use crate::gpu::kernels::StepGrid;
use crate::gpu::workspace::Workspace;

/// Runs one forward in `workspace`; returns (output in the caller's layout, h_n).
pub(crate) fn forward(
    ctx: &GpuContext,
    config: &RnnConfig,
    ws: &mut Workspace,
    input: &[f32],
    h0: Option<&[f32]>,
    lengths: Option<&[usize]>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (device, queue) = (ctx.device(), ctx.queue());
    let kernels = &ctx.inner().kernels;
    let scopes = ctx.error_scopes();

    queue.write_buffer(&ws.input, 0, bytemuck::cast_slice(input));
    match lengths {
        Some(lengths) => {
            let lengths: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
            queue.write_buffer(&ws.lengths, 0, bytemuck::cast_slice(&lengths));
            ws.lengths_full = false;
        }
        None if !ws.lengths_full => {
            let full = vec![ws.seq_len as u32; ws.batch];
            queue.write_buffer(&ws.lengths, 0, bytemuck::cast_slice(&full));
            ws.lengths_full = true;
        }
        None => {}
    }

    let state_bytes = (ws.state_len * 4) as u64;
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("rnn forward"),
    });
    match h0 {
        // h0 is (L·D, N, H): exactly the layout of the state buffer's first half.
        Some(h0) => queue.write_buffer(&ws.state, 0, bytemuck::cast_slice(h0)),
        None => encoder.clear_buffer(&ws.state, 0, Some(state_bytes)),
    }
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("rnn layers"),
            timestamp_writes: None,
        });
        let rows = (ws.seq_len * ws.batch) as u32;
        let grid = StepGrid {
            hidden: config.hidden_size as u32,
            batch: ws.batch as u32,
            directions: config.num_directions() as u32,
        };
        for layer in 0..config.num_layers {
            kernels.projection.encode(
                &mut pass,
                &ws.projection_groups[layer],
                rows,
                config.output_size() as u32,
            );
            kernels.step.encode_steps(
                &mut pass,
                &ws.step_groups[layer],
                0..ws.seq_len as u32,
                ws.step_stride,
                grid,
            );
        }
    }
    let output_bytes = (ws.output_len * 4) as u64;
    let final_half = (ws.seq_len % 2) as u64 * state_bytes;
    encoder.copy_buffer_to_buffer(&ws.output, 0, &ws.readback, 0, output_bytes);
    encoder.copy_buffer_to_buffer(
        &ws.state,
        final_half,
        &ws.readback,
        output_bytes,
        state_bytes,
    );
    let submission = queue.submit([encoder.finish()]);

    // Errors of recording and submission are reported synchronously: check them before
    // mapping, so that a failed forward leaves no pending map behind.
    scopes.finish(ctx, "recording the forward")?;
    let (sender, receiver) = mpsc::channel();
    ws.readback
        .map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
    let mapped = wait(ctx, submission).and_then(|()| match receiver.try_recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ctx.classify("reading results back", error)),
        Err(_) => Err(ctx.classify("reading results back", "the map never completed")),
    });
    if let Err(error) = mapped {
        // Cancels the pending map so that the workspace stays usable. On a lost device the
        // buffer is already gone and wgpu objects; that is expected, so its error is dropped.
        let scopes = ctx.error_scopes();
        ws.readback.unmap();
        let _ = scopes.finish(ctx, "cancelling the readback");
        return Err(error);
    }
    let result = {
        let view = ws
            .readback
            .get_mapped_range(..)
            .map_err(|e| ctx.classify("reading results back", e))?;
        let values: &[f32] = bytemuck::cast_slice(&view);
        (
            values[..ws.output_len].to_vec(),
            values[ws.output_len..ws.output_len + ws.state_len].to_vec(),
        )
    };
    ws.readback.unmap();
    Ok(result)
}

/// Waits for `submission` within the context's timeout.
fn wait(ctx: &GpuContext, submission: wgpu::SubmissionIndex) -> Result<()> {
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
