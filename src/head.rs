//! A `torch.nn.Linear` output head applied to every frame of an RNN's output:
//! `O_t = h_t·Wᵀ + b`. On the GPU it runs as one more projection dispatch over all frames,
//! reading the RNN's output where it lies: no readback in between.

use std::path::Path;

use crate::checkpoint::{map_file, parse, read_f32};
use crate::error::{Result, RnnError};

/// The parameters of an `nn.Linear(in_features, out_features, bias)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Features of each input frame (the RNN's D·H).
    pub in_features: usize,
    /// Features of each output frame.
    pub out_features: usize,
    /// `weight`: (out_features, in_features), row-major.
    pub weight: Vec<f32>,
    /// `bias`: (out_features), when the layer has one.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Loads `{prefix}weight` and `{prefix}bias` (the bias is optional) from a safetensors
    /// file, e.g. prefix `"linear."` for a model whose head is the attribute `linear`.
    pub fn load(
        path: impl AsRef<Path>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Self::from_safetensors(&map_file(path.as_ref())?, prefix, in_features, out_features)
    }

    /// Like [`load`](Self::load), from the bytes of a safetensors file.
    pub fn from_safetensors(
        bytes: &[u8],
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        let file = parse(bytes)?;
        let weight = read_f32(
            &file,
            &format!("{prefix}weight"),
            &[out_features, in_features],
        )?;
        let bias_name = format!("{prefix}bias");
        let bias = match file.tensor(&bias_name) {
            Ok(_) => Some(read_f32(&file, &bias_name, &[out_features])?),
            Err(_) => None,
        };
        let linear = Linear {
            in_features,
            out_features,
            weight,
            bias,
        };
        linear.check(in_features)?;
        Ok(linear)
    }

    /// Checks the sizes, and that the head reads `rnn_features` features per frame.
    pub(crate) fn check(&self, rnn_features: usize) -> Result<()> {
        if self.out_features == 0 || self.in_features == 0 {
            return Err(RnnError::InvalidConfig(
                "a Linear head needs at least one input and one output feature".into(),
            ));
        }
        if self.in_features != rnn_features {
            return Err(RnnError::InvalidConfig(format!(
                "the Linear head reads {} features but the RNN outputs {rnn_features}",
                self.in_features
            )));
        }
        // The sizes are the caller's: their product may overflow.
        let expected = self.in_features.checked_mul(self.out_features);
        if expected != Some(self.weight.len()) {
            let expected = expected.map_or_else(
                || {
                    format!(
                        "{} × {} (more than fits in memory)",
                        self.out_features, self.in_features
                    )
                },
                |n| n.to_string(),
            );
            return Err(RnnError::weights(
                "weight",
                format!("has {} elements, expected {expected}", self.weight.len()),
            ));
        }
        if let Some(bias) = &self.bias {
            if bias.len() != self.out_features {
                return Err(RnnError::weights(
                    "bias",
                    format!(
                        "has {} elements, expected {}",
                        bias.len(),
                        self.out_features
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bias, zeros when the layer has none.
    pub(crate) fn bias_or_zeros(&self) -> Vec<f32> {
        self.bias
            .clone()
            .unwrap_or_else(|| vec![0.0; self.out_features])
    }
}
