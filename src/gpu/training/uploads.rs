//! A submission's host data, placed where it goes by commands in the submission itself.
//!
//! `Queue::write_buffer` lands before every command of the next submission: two iterations
//! recorded into one submission would both see the last one's input. So the training's
//! uploads (inputs, targets, initial states, the loss's and the optimizer's uniforms) are
//! gathered while recording, each copied into place by a command recorded where the
//! iteration needs it, and written to the device in one `write_buffer` per chunk before the
//! submission (one staging allocation instead of one per upload). A submission can then hold
//! any number of iterations (`Train::train_steps`), and a single iteration's uploads cost
//! one write.

use crate::gpu::context::GpuContext;

/// Bytes of a chunk of the upload buffer, at least.
const CHUNK_BYTES: u64 = 1 << 20;

/// `copy_buffer_to_buffer`'s offsets and sizes are multiples of 4; 16 keeps vec4s aligned.
const ALIGN: u64 = 16;

/// The uploads of the submission being recorded, and the device buffers they go through.
#[derive(Default)]
pub(crate) struct Uploads {
    /// The device's side: chunks, reused from submission to submission.
    chunks: Vec<wgpu::Buffer>,
    /// The host's side of each chunk this submission uses.
    pending: Vec<Vec<u8>>,
}

impl Uploads {
    /// Records a copy of `data` (whole 4-byte words, as every copy must be) to `to` at byte
    /// `offset`, its bytes written with the others by [`flush`](Self::flush) before the
    /// submission.
    pub fn copy(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        data: &[u8],
        to: &wgpu::Buffer,
        offset: u64,
    ) {
        if data.is_empty() {
            return;
        }
        debug_assert!(
            data.len() % 4 == 0 && offset % 4 == 0,
            "copies move 4-byte words"
        );
        let len = data.len() as u64;
        // The current chunk, or the next where this does not fit (made, or remade larger,
        // where it is missing or too small: chunks past the current are unused so far).
        let fits = |chunk: &wgpu::Buffer, used: usize| used as u64 + len <= chunk.size();
        let current = self.pending.len().checked_sub(1);
        let index = match current {
            Some(i) if fits(&self.chunks[i], self.pending[i].len()) => i,
            _ => {
                let i = self.pending.len();
                if self.chunks.get(i).is_none_or(|c| c.size() < len) {
                    let chunk = ctx.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("training uploads"),
                        size: len.max(CHUNK_BYTES).next_multiple_of(ALIGN),
                        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    match self.chunks.get_mut(i) {
                        Some(small) => *small = chunk,
                        None => self.chunks.push(chunk),
                    }
                }
                self.pending.push(Vec::new());
                i
            }
        };
        let bytes = &mut self.pending[index];
        let at = bytes.len() as u64;
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().next_multiple_of(ALIGN as usize), 0);
        encoder.copy_buffer_to_buffer(&self.chunks[index], at, to, offset, len);
    }

    /// Writes what the recorded copies read; call before submitting what was recorded.
    pub fn flush(&mut self, ctx: &GpuContext) {
        for (chunk, bytes) in self.chunks.iter().zip(self.pending.drain(..)) {
            if !bytes.is_empty() {
                ctx.queue().write_buffer(chunk, 0, &bytes);
            }
        }
    }

    /// Forgets what was recorded (a recording that failed is not submitted).
    pub fn discard(&mut self) {
        self.pending.clear();
    }
}
