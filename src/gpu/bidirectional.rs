//! Bidirectional forwards too long for one submission. The reverse direction needs the whole
//! sequence, so the two directions cannot share time chunks; instead each layer runs as two
//! unidirectional passes, each chunked with its state carried on the GPU: the forward
//! direction over the sequence, the reverse direction over the sequence reversed in time
//! (within each sequence's own length, which is exactly PyTorch's packed semantics). The
//! layer's output comes back to the host between layers, so GPU memory stays proportional to
//! the chunk while host memory holds the sequence.

use std::sync::Arc;

use crate::config::RnnConfig;
use crate::error::{Result, RnnError};
use crate::gpu::model::GpuRnn;
use crate::layout::ForwardShape;
use crate::rnn::{Rnn, RnnOutput};
use crate::tensor::Tensor;
use crate::weights::RnnWeights;

/// One unidirectional, one-layer model per (layer, direction) of a bidirectional model.
pub(crate) fn direction_models(
    model: &GpuRnn,
    config: &RnnConfig,
    weights: &RnnWeights,
) -> Result<Vec<GpuRnn>> {
    let mut parts = Vec::with_capacity(2 * config.num_layers);
    for layer in 0..config.num_layers {
        for direction in 0..2 {
            let part_config = RnnConfig {
                input_size: config.layer_input_size(layer),
                num_layers: 1,
                batch_first: false,
                bidirectional: false,
                ..config.clone()
            };
            let unit = weights.unit(layer, direction, config).clone();
            let part_weights = RnnWeights::new(&part_config, vec![unit])?;
            // The caller's forward holds the GL guard already.
            parts.push(GpuRnn::build(
                model.context(),
                part_config,
                &part_weights,
                model.options(),
            )?);
        }
    }
    Ok(parts)
}

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

impl GpuRnn {
    /// The layer-by-layer forward of a bidirectional model (see the module docs).
    pub(crate) fn forward_bidirectional_by_layers(
        &self,
        parts: Arc<Vec<GpuRnn>>,
        input: &Tensor,
        h0: Option<&Tensor>,
        lengths: Option<&[usize]>,
        shape: &ForwardShape,
    ) -> Result<RnnOutput> {
        let config = self.config();
        if self.output_features() != config.output_size() {
            return Err(RnnError::ExceedsLimits {
                what: "timesteps of a bidirectional forward with a Linear head (it cannot run \\
                       in chunks)"
                    .into(),
                needed: shape.seq_len as u64,
                limit: self.chunk_len(shape)? as u64,
            });
        }
        let (steps, batch, hidden) = (shape.seq_len, shape.batch, config.hidden_size);
        let mut x = shape.gather_sequence_first(input.data(), config.input_size);
        let state = batch * hidden;
        let mut h_n = vec![0.0f32; 2 * config.num_layers * state];
        for layer in 0..config.num_layers {
            let features = config.layer_input_size(layer);
            let mut output = vec![0.0f32; steps * batch * 2 * hidden];
            for direction in 0..2 {
                let unit = 2 * layer + direction;
                let part = &parts[unit];
                part.set_workspace_budget(self.workspace_budget());
                let mut frames = x.clone();
                if direction == 1 {
                    reverse_in_time(&mut frames, steps, batch, features, lengths);
                }
                let part_h0 = h0
                    .map(|h0| {
                        Tensor::new(
                            h0.data()[unit * state..(unit + 1) * state].to_vec(),
                            &[1, batch, hidden],
                        )
                    })
                    .transpose()?;
                let frames = Tensor::new(frames, &[steps, batch, features])?;
                let out = part.forward_masked(&frames, part_h0.as_ref(), lengths)?;
                let mut y = out.output.into_data();
                if direction == 1 {
                    reverse_in_time(&mut y, steps, batch, hidden, lengths);
                }
                for (row, frame) in y.chunks_exact(hidden).enumerate() {
                    let at = row * 2 * hidden + direction * hidden;
                    output[at..at + hidden].copy_from_slice(frame);
                }
                h_n[unit * state..(unit + 1) * state].copy_from_slice(out.h_n.data());
            }
            x = output;
        }
        let features = config.output_size();
        let output = shape.scatter_sequence_first(&x, features);
        Ok(RnnOutput {
            output: Tensor::new(output, &shape.frames_shape(features))?,
            h_n: Tensor::new(h_n, &shape.state_shape(config))?,
        })
    }
}
