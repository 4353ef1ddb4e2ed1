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

/// What Adam's step `t` needs from the host, computed as PyTorch does (in double precision,
/// then used as f32 by the element updates): `lr / (1 − β1^t)` and `sqrt(1 − β2^t)`.
pub(crate) fn adam_corrections(adam: &Adam, step: u64) -> (f32, f32) {
    let t = step as i32;
    let bc1 = 1.0 - f64::from(adam.betas.0).powi(t);
    let bc2 = 1.0 - f64::from(adam.betas.1).powi(t);
    ((f64::from(adam.lr) / bc1) as f32, bc2.sqrt() as f32)
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
                        s.momentum * state[i] + (1.0 - s.dampening) * g
                    };
                    state[i] = b;
                    g = if s.nesterov { g + s.momentum * b } else { b };
                }
                *p += -s.lr * g;
            }
        }
        OptimizerConfig::Adam(a) => {
            let (step_size, bc2_sqrt) = adam_corrections(&a, step);
            let len = params.len();
            let (m, v) = state.split_at_mut(len);
            for (i, p) in params.iter_mut().enumerate() {
                let mut g = grads[i];
                if a.decoupled_weight_decay {
                    *p *= 1.0 - a.lr * a.weight_decay;
                } else if a.weight_decay != 0.0 {
                    g += a.weight_decay * *p;
                }
                m[i] += (1.0 - a.betas.0) * (g - m[i]);
                v[i] = v[i] * a.betas.1 + (1.0 - a.betas.1) * g * g;
                let denom = v[i].sqrt() / bc2_sqrt + a.eps;
                *p += -step_size * (m[i] / denom);
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
