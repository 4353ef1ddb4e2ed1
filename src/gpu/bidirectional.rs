//! Bidirectional forwards too long for one submission. The reverse direction needs the whole
//! sequence, so the two directions cannot share time chunks; instead each layer runs as two
//! unidirectional passes, each chunked with its state carried on the GPU: the forward
//! direction over the sequence, the reverse direction over the sequence reversed in time
//! (within each sequence's own length, which is exactly PyTorch's packed semantics). The
//! layer's output comes back to the host between layers, so GPU memory stays proportional to
//! the chunk while host memory holds the sequence.

use crate::error::{Limit, Result, RnnError};
use crate::gpu::engine::Engine;
use crate::layout::ForwardShape;

/// Reverses each sequence's first `lengths[n]` frames of a (T, N, F) tensor in place (all T
/// without lengths); frames past a sequence's length stay where they are.
fn reverse_in_time(
    data: &mut [f32],
    steps: usize,
    batch: usize,
    features: usize,
    lengths: Option<&[usize]>,
) {
    for n in 0..batch {
        let len = lengths.map_or(steps, |l| l[n]);
        for t in 0..len / 2 {
            let (a, b) = (
                (t * batch + n) * features,
                ((len - 1 - t) * batch + n) * features,
            );
            for f in 0..features {
                data.swap(a + f, b + f);
            }
        }
    }
}

impl Engine {
    /// The layer-by-layer forward of a bidirectional model (see the module docs); `parts`
    /// holds one engine per (layer, direction). States as in [`Engine::forward`].
    pub(crate) fn forward_bidirectional_by_layers(
        &self,
        parts: &[Engine],
        shape: &ForwardShape,
        input: &[f32],
        initial: Option<&[f32]>,
        lengths: Option<&[usize]>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let arch = self.arch;
        if self.output_features() != arch.output_size() {
            let chunk = self.chunk_len(shape)?;
            return Err(RnnError::exceeds(
                "timesteps of a bidirectional forward with a Linear head (it cannot run in \
                 time chunks)",
                shape.seq_len as u64,
                Limit::TimeChunk,
                chunk as u64,
                format!(
                    "use sequences of at most {chunk} timesteps, raise the workspace budget if \
                     one is set, or run the head on the host"
                ),
            ));
        }
        let (steps, batch) = (shape.seq_len, shape.batch);
        let (features_out, cell) = (arch.state_size, arch.cell_size());
        // Per (layer, direction): its h (N, H_out) in the h block, its c (N, H) in the c block.
        let (h_part, c_part) = (batch * features_out, batch * cell);
        let h_block = arch.h_len(batch);
        let mut x = shape.gather_sequence_first(input, arch.input_size);
        let mut state = vec![0.0f32; arch.state_len(batch)];
        for layer in 0..arch.num_layers {
            let features = arch.layer_input_size(layer);
            let mut output = vec![0.0f32; steps * batch * 2 * features_out];
            for direction in 0..2 {
                let unit = 2 * layer + direction;
                let part = &parts[unit];
                part.set_workspace_budget(self.workspace_budget());
                let mut frames = x.clone();
                if direction == 1 {
                    reverse_in_time(&mut frames, steps, batch, features, lengths);
                }
                let h_range = unit * h_part..(unit + 1) * h_part;
                let c_range = h_block + unit * c_part..h_block + (unit + 1) * c_part;
                let part_initial =
                    initial.map(|all| [&all[h_range.clone()], &all[c_range.clone()]].concat());
                let part_shape = ForwardShape {
                    batch_first: false,
                    unbatched: false,
                    ..*shape
                };
                let (mut y, part_state) =
                    part.forward(&part_shape, &frames, part_initial.as_deref(), lengths)?;
                if direction == 1 {
                    reverse_in_time(&mut y, steps, batch, features_out, lengths);
                }
                for (row, frame) in y.chunks_exact(features_out).enumerate() {
                    let at = row * 2 * features_out + direction * features_out;
                    output[at..at + features_out].copy_from_slice(frame);
                }
                state[h_range].copy_from_slice(&part_state[..h_part]);
                state[c_range].copy_from_slice(&part_state[h_part..]);
            }
            x = output;
        }
        Ok((shape.scatter_sequence_first(&x, arch.output_size()), state))
    }
}
