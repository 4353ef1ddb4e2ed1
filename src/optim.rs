//! Optimizers and gradient clipping as `torch.optim` and `torch.nn.utils.clip_grad_norm_`
//! compute them, over a model's flat parameter vector (see `train::ParamLayout`): the
//! configurations, the state, and the CPU reference of every update. The GPU runs the same
//! updates in `shaders/optim.wgsl` (`gpu::optim`).

use crate::error::{Result, RnnError};

/// `torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ (0: none).
    pub momentum: f32,
    /// Dampening τ of the momentum.
    pub dampening: f32,
    /// L2 penalty λ added to the gradient (`g += λ·p`).
    pub weight_decay: f32,
    /// Nesterov momentum (needs μ > 0 and τ = 0, as PyTorch requires).
    pub nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`, PyTorch's other defaults.
    pub fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// `torch.optim.Adam(params, lr, betas, eps, weight_decay)`, or with
/// `decoupled_weight_decay` `torch.optim.AdamW`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// (β1, β2).
    pub betas: (f32, f32),
    /// Added to the denominator.
    pub eps: f32,
    /// λ: Adam adds λ·p to the gradient (L2); AdamW decays the parameters (`p *= 1 − lr·λ`).
    pub weight_decay: f32,
    /// AdamW's decoupled weight decay.
    pub decoupled_weight_decay: bool,
}

impl Adam {
    /// `torch.optim.Adam(params, lr)`: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(lr: f32) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }

    /// `torch.optim.AdamW(params, lr)`: Adam's defaults with decoupled weight decay 0.01.
    pub fn adamw(lr: f32) -> Self {
        Adam {
            weight_decay: 0.01,
            decoupled_weight_decay: true,
            ..Adam::new(lr)
        }
    }
}

/// An optimizer's configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(Sgd),
    /// `torch.optim.Adam` / `AdamW`.
    Adam(Adam),
}

impl From<Sgd> for OptimizerConfig {
    fn from(sgd: Sgd) -> Self {
        OptimizerConfig::Sgd(sgd)
    }
}

impl From<Adam> for OptimizerConfig {
    fn from(adam: Adam) -> Self {
        OptimizerConfig::Adam(adam)
    }
}

impl OptimizerConfig {
    /// Checks the values as PyTorch's constructors do.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(RnnError::InvalidConfig(what));
        let finite_nonnegative = |name: &str, v: f32| -> Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(RnnError::InvalidConfig(format!("invalid {name}: {v}")))
            }
        };
        match *self {
            OptimizerConfig::Sgd(s) => {
                finite_nonnegative("learning rate", s.lr)?;
                finite_nonnegative("momentum value", s.momentum)?;
                finite_nonnegative("weight_decay value", s.weight_decay)?;
                finite_nonnegative("dampening value", s.dampening)?;
                if s.nesterov && (s.momentum <= 0.0 || s.dampening != 0.0) {
                    return invalid(
                        "Nesterov momentum requires a momentum and zero dampening".into(),
                    );
                }
                Ok(())
            }
            OptimizerConfig::Adam(a) => {
                finite_nonnegative("learning rate", a.lr)?;
                finite_nonnegative("epsilon value", a.eps)?;
                finite_nonnegative("weight_decay value", a.weight_decay)?;
                for (i, beta) in [a.betas.0, a.betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&beta) {
                        return invalid(format!("invalid beta parameter at index {i}: {beta}"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The scalars of one optimizer step, computed as PyTorch computes them: on the host, in
/// double precision, from the hyperparameters as the decimals they were written as, then used
/// as f32 by the element updates (CPU and GPU alike). PyTorch's hyperparameters are Python
/// floats; ours are f32, and `1 − β2` from f32 β2 = 0.999 is 1.3e-5 off PyTorch's 0.001: a
/// bias on every step that moved a replayed training run visibly off PyTorch's curve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct StepScalars {
    /// SGD: `1 − dampening`, what of the gradient enters the momentum buffer.
    pub grad_share: f32,
    /// AdamW: `1 − lr·weight_decay`, the decoupled decay.
    pub decay: f32,
    /// Adam: the lerp weight of m, `1 − β1`, and v's `1 − β2`.
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    /// Adam: `lr / (1 − β1^t)` and `sqrt(1 − β2^t)`.
    pub step_size: f32,
    pub bc2_sqrt: f32,
}

/// `x` as the decimal it was written as: the shortest decimal that reads back as `x` (Rust
/// prints f32s so), as an f64. 0.9f32 is 0.89999997615…; this gives 0.9, as Python has it.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `config`'s scalars for step `step` (1 for the first).
pub(crate) fn step_scalars(config: &OptimizerConfig, step: u64) -> StepScalars {
    match *config {
        OptimizerConfig::Sgd(s) => StepScalars {
            grad_share: (1.0 - decimal(s.dampening)) as f32,
            ..StepScalars::default()
        },
        OptimizerConfig::Adam(a) => {
            let (lr, beta1, beta2) = (decimal(a.lr), decimal(a.betas.0), decimal(a.betas.1));
            let t = step.min(i32::MAX as u64) as i32;
            let bc1 = 1.0 - beta1.powi(t);
            let bc2 = 1.0 - beta2.powi(t);
            StepScalars {
                decay: (1.0 - lr * decimal(a.weight_decay)) as f32,
                one_minus_beta1: (1.0 - beta1) as f32,
                one_minus_beta2: (1.0 - beta2) as f32,
                step_size: (lr / bc1) as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                ..StepScalars::default()
            }
        }
    }
}

/// `torch.lerp(start, end, weight)` as ATen computes it in f32: from the nearer end.
pub(crate) fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// One optimizer step over `params` with gradients `grads` (already clipped), updating
/// `state`: SGD's momentum buffer, or Adam's m then v (`2·len` values). The CPU reference;
/// `shaders/optim.wgsl` does the same per element, in the same order of operations.
pub(crate) fn cpu_step(
    config: &OptimizerConfig,
    step: u64,
    params: &mut [f32],
    grads: &[f32],
    state: &mut [f32],
) {
    let k = step_scalars(config, step);
    match *config {
        OptimizerConfig::Sgd(s) => {
            for (i, p) in params.iter_mut().enumerate() {
                let mut g = grads[i];
                if s.weight_decay != 0.0 {
                    g += s.weight_decay * *p;
                }
                if s.momentum != 0.0 {
                    let b = if step == 1 {
                        g
                    } else {
                        s.momentum * state[i] + k.grad_share * g
                    };
                    state[i] = b;
                    g = if s.nesterov { g + s.momentum * b } else { b };
                }
                *p += -s.lr * g;
            }
        }
        OptimizerConfig::Adam(a) => {
            let len = params.len();
            let (m, v) = state.split_at_mut(len);
            for (i, p) in params.iter_mut().enumerate() {
                let mut g = grads[i];
                if a.decoupled_weight_decay {
                    *p *= k.decay;
                } else if a.weight_decay != 0.0 {
                    g += a.weight_decay * *p;
                }
                // exp_avg.lerp_(grad, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(grad, grad,
                // value=1 − β2); param.addcdiv_(exp_avg, denom, value=−step_size).
                m[i] = lerp(m[i], g, k.one_minus_beta1);
                v[i] = v[i] * a.betas.1 + k.one_minus_beta2 * g * g;
                let denom = v[i].sqrt() / k.bc2_sqrt + a.eps;
                *p += -k.step_size * m[i] / denom;
            }
        }
    }
}

/// `clip_grad_norm_` over the tensors `slots` (offset, length) of `grads`: the total norm
/// (the norm of the tensors' norms), then every gradient times
/// `min(max_norm / (total + 1e-6), 1)`. Returns the total from before clipping.
pub(crate) fn cpu_clip(grads: &mut [f32], slots: &[(usize, usize)], max_norm: f32) -> f32 {
    let norms: Vec<f32> = slots
        .iter()
        .map(|&(at, len)| {
            grads[at..at + len]
                .iter()
                .map(|g| g * g)
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    for g in grads.iter_mut() {
        *g *= coef;
    }
    total
}

/// Values of state per parameter element: SGD with momentum 1, Adam 2, plain SGD 0.
pub(crate) fn state_per_element(config: &OptimizerConfig) -> usize {
    match config {
        OptimizerConfig::Sgd(s) if s.momentum != 0.0 => 1,
        OptimizerConfig::Sgd(_) => 0,
        OptimizerConfig::Adam(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The step's scalars are PyTorch's: computed from the decimals the hyperparameters were
    /// written as, in f64, then rounded once to f32. Computed in f32 from f32 betas instead,
    /// `1 − β2` is 0.00099998713 (1.3e-5 off) and `1 − β1` 0.100000024: a bias on every step
    /// that moved a replayed PyTorch run (classify_gru_bidir_packed) 2e-3 off its losses.
    #[test]
    fn step_scalars_are_pytorchs() {
        let adam = Adam {
            weight_decay: 0.01,
            ..Adam::adamw(0.005)
        };
        let k = step_scalars(&adam.into(), 1);
        assert_eq!(k.one_minus_beta1, 0.1f32);
        assert_eq!(k.one_minus_beta2, 0.001f32);
        assert_eq!(k.step_size, (0.005f64 / (1.0 - 0.9)) as f32);
        assert_eq!(k.bc2_sqrt, (1.0f64 - 0.999).sqrt() as f32);
        assert_eq!(k.decay, (1.0 - 0.005f64 * 0.01) as f32);
        let k = step_scalars(&adam.into(), 1000);
        assert_eq!(k.step_size, (0.005f64 / (1.0 - 0.9f64.powi(1000))) as f32);
        assert_eq!(k.bc2_sqrt, (1.0 - 0.999f64.powi(1000)).sqrt() as f32);
        let sgd = Sgd {
            dampening: 0.3,
            ..Sgd::new(0.1)
        };
        assert_eq!(step_scalars(&sgd.into(), 2).grad_share, 0.7f32);
    }

    /// ATen's lerp: from `start` for small weights, from `end` for large ones.
    #[test]
    fn lerp_is_atens() {
        assert_eq!(lerp(1.0, 3.0, 0.25), 1.0 + 0.25 * 2.0);
        assert_eq!(lerp(1.0, 3.0, 0.75), 3.0 - 2.0 * (1.0 - 0.75));
        assert_eq!(lerp(0.3, 0.7, 0.9), 0.7 - (0.7 - 0.3) * (1.0 - 0.9f32));
    }
}
