//! Losses as PyTorch defines them, on a model's output: `nn.MSELoss` and
//! `nn.CrossEntropyLoss` (logits against class indices), mean or sum, with the CPU reference
//! of their values and gradients. The GPU computes the same in `shaders/loss.wgsl`.

use crate::error::{Result, RnnError};
use crate::tensor::Tensor;

/// How a loss reduces over its elements (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean (PyTorch's default): over every element for MSE, over the rows for
    /// cross-entropy.
    #[default]
    Mean,
    /// The sum.
    Sum,
}

/// A loss on a model's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `nn.MSELoss(reduction)`: `(y − t)²` over every element; the target has the output's
    /// shape ([`Target::Values`]).
    Mse(Reduction),
    /// `nn.CrossEntropyLoss(reduction)`: every output frame is a row of logits over the
    /// classes (the head's `out_features`); the target is one class index per frame, in the
    /// output's frame order ([`Target::Classes`]).
    CrossEntropy(Reduction),
}

/// What a loss compares the output with.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Values shaped as the output (MSE).
    Values(&'a Tensor),
    /// One class index per output frame, in the output's order: (T·N) frames for (T, N, C)
    /// output, (N·T) for batch-first (cross-entropy).
    Classes(&'a [usize]),
}

/// The target as f32s in the output's (caller's) frame order, checked against the loss and
/// the output's `rows` × `features`.
pub(crate) fn check_target(
    loss: Loss,
    target: Target<'_>,
    output_shape: &[usize],
    rows: usize,
    features: usize,
) -> Result<Vec<f32>> {
    match (loss, target) {
        (Loss::Mse(_), Target::Values(t)) => {
            if t.shape() != output_shape {
                return Err(RnnError::shape(
                    "target",
                    format!("{output_shape:?}"),
                    t.shape(),
                ));
            }
            Ok(t.data().to_vec())
        }
        (Loss::CrossEntropy(_), Target::Classes(classes)) => {
            if classes.len() != rows {
                return Err(RnnError::ShapeMismatch {
                    what: "target",
                    expected: format!("{rows} class indices, one per output frame"),
                    got: format!("{}", classes.len()),
                });
            }
            if let Some((i, &c)) = classes.iter().enumerate().find(|&(_, &c)| c >= features) {
                // PyTorch raises "Target {c} is out of bounds."
                return Err(RnnError::InvalidConfig(format!(
                    "target {c} (frame {i}) is out of bounds: the output has {features} classes"
                )));
            }
            Ok(classes.iter().map(|&c| f32::from_bits(c as u32)).collect())
        }
        (Loss::Mse(_), Target::Classes(_)) => Err(RnnError::InvalidConfig(
            "MSELoss compares values: give Target::Values".into(),
        )),
        (Loss::CrossEntropy(_), Target::Values(_)) => Err(RnnError::InvalidConfig(
            "CrossEntropyLoss takes class indices: give Target::Classes".into(),
        )),
    }
}

/// The loss of `output` (rows × features) against `target` (from [`check_target`]), and its
/// gradient with respect to the output. The CPU reference: f32 arithmetic per element, sums
/// in f64.
pub(crate) fn cpu_loss(
    loss: Loss,
    output: &[f32],
    target: &[f32],
    rows: usize,
    features: usize,
) -> (f32, Vec<f32>) {
    match loss {
        Loss::Mse(reduction) => {
            let scale = match reduction {
                Reduction::Mean => 1.0 / output.len() as f32,
                Reduction::Sum => 1.0,
            };
            let mut sum = 0.0f64;
            let grad = output
                .iter()
                .zip(target)
                .map(|(&y, &t)| {
                    let d = y - t;
                    sum += f64::from(d * d);
                    2.0 * d * scale
                })
                .collect();
            ((sum * f64::from(scale)) as f32, grad)
        }
        Loss::CrossEntropy(reduction) => {
            let scale = match reduction {
                Reduction::Mean => 1.0 / rows as f32,
                Reduction::Sum => 1.0,
            };
            let mut sum = 0.0f64;
            let mut grad = vec![0.0f32; output.len()];
            for m in 0..rows {
                let z = &output[m * features..(m + 1) * features];
                let class = target[m].to_bits() as usize;
                let max = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let exp_sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
                let lse = max + exp_sum.ln();
                sum += f64::from(lse - z[class]);
                for c in 0..features {
                    let softmax = (z[c] - max).exp() / exp_sum;
                    let onehot = if c == class { 1.0 } else { 0.0 };
                    grad[m * features + c] = (softmax - onehot) * scale;
                }
            }
            ((sum * f64::from(scale)) as f32, grad)
        }
    }
}
