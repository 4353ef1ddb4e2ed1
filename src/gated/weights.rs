//! Gated model parameters with PyTorch's names and shapes, loaded from a `state_dict` in
//! safetensors.

use std::path::Path;

use safetensors::SafeTensors;

use super::config::GatedConfig;
use crate::error::{Result, RnnError};
use crate::weights::{
    DirectionWeights, SplitMix64, parse_safetensors, read_f32, read_file, suffix,
};

/// The parameters of one direction of one layer of an `nn.LSTM` or `nn.GRU`. G is 4 (gates
/// i, f, g, o) for an LSTM and 3 (gates r, z, n) for a GRU; `H_out` is `proj_size` when set,
/// `hidden_size` otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedDirectionWeights {
    /// `weight_ih_l{k}`: (G·H, I_k), row-major, gates stacked in PyTorch's order.
    pub weight_ih: Vec<f32>,
    /// `weight_hh_l{k}`: (G·H, H_out), row-major.
    pub weight_hh: Vec<f32>,
    /// `bias_ih_l{k}`: (G·H), absent when `bias = false`.
    pub bias_ih: Option<Vec<f32>>,
    /// `bias_hh_l{k}`: (G·H), absent when `bias = false`.
    pub bias_hh: Option<Vec<f32>>,
    /// `weight_hr_l{k}`: (P, H), LSTM with `proj_size` P > 0 only.
    pub weight_hr: Option<Vec<f32>>,
}

impl GatedDirectionWeights {
    /// Reads one direction's tensors, named by `name("weight_ih")` and so on, for a layer with
    /// `input` features.
    pub(crate) fn read(
        file: &SafeTensors<'_>,
        name: impl Fn(&str) -> String,
        config: &GatedConfig,
        input: usize,
    ) -> Result<Self> {
        let gates = DirectionWeights::read_shaped(
            file,
            &name,
            (config.gate_size(), input, config.state_size()),
            config.bias,
        )?;
        let weight_hr = if config.proj_size > 0 {
            Some(read_f32(
                file,
                &name("weight_hr"),
                &[config.proj_size, config.hidden_size],
            )?)
        } else {
            if file.tensor(&name("weight_hr")).is_ok() {
                return Err(RnnError::weights(
                    name("weight_hr"),
                    "present, but the configuration says proj_size = 0",
                ));
            }
            None
        };
        Ok(GatedDirectionWeights {
            weight_ih: gates.weight_ih,
            weight_hh: gates.weight_hh,
            bias_ih: gates.bias_ih,
            bias_hh: gates.bias_hh,
            weight_hr,
        })
    }
}

/// Every parameter of an `nn.LSTM` or `nn.GRU`, one [`GatedDirectionWeights`] per (layer,
/// direction), in the order of `h_n`'s first dimension: `index = layer · D + direction`.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedWeights {
    units: Vec<GatedDirectionWeights>,
}

impl GatedWeights {
    /// Weights for `config` from parts (ordered `layer · D + direction`), checked against the
    /// configuration.
    pub fn new(config: &GatedConfig, units: Vec<GatedDirectionWeights>) -> Result<Self> {
        config.validate()?;
        let weights = GatedWeights { units };
        weights.check(config)?;
        Ok(weights)
    }

    /// The parameters of `layer`, `direction` (0 forward, 1 reverse), or `None` when the
    /// model has no such unit.
    pub fn get(
        &self,
        layer: usize,
        direction: usize,
        config: &GatedConfig,
    ) -> Option<&GatedDirectionWeights> {
        if direction >= config.num_directions() {
            return None;
        }
        self.units.get(layer * config.num_directions() + direction)
    }

    /// Every unit, ordered `layer · D + direction`.
    pub fn units(&self) -> &[GatedDirectionWeights] {
        &self.units
    }

    /// Random weights drawn like PyTorch's initialisation, U(−1/√H, 1/√H) for every parameter
    /// (`weight_hr` included), from `seed`. (The numbers differ from PyTorch's own generator;
    /// the distribution is the same.)
    pub fn init(config: &GatedConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let bound = 1.0 / (config.hidden_size as f64).sqrt();
        let mut rng = SplitMix64(seed);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.next_unit() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let rows = config.gate_size();
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            for _ in 0..config.num_directions() {
                let weight_ih = draw(rows * config.layer_input_size(layer));
                let weight_hh = draw(rows * config.state_size());
                let (bias_ih, bias_hh) = if config.bias {
                    (Some(draw(rows)), Some(draw(rows)))
                } else {
                    (None, None)
                };
                let weight_hr =
                    (config.proj_size > 0).then(|| draw(config.proj_size * config.hidden_size));
                units.push(GatedDirectionWeights {
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                    weight_hr,
                });
            }
        }
        Ok(GatedWeights { units })
    }

    /// Loads a PyTorch `state_dict` saved as safetensors (`safetensors.torch.save_file(
    /// model.state_dict(), path)`). `prefix` is prepended to every name, e.g. `"lstm."` for an
    /// `nn.LSTM` stored as the attribute `lstm` of a larger module; use `""` for none.
    pub fn load(config: &GatedConfig, path: impl AsRef<Path>, prefix: &str) -> Result<Self> {
        Self::from_safetensors(config, &read_file(path.as_ref())?, prefix)
    }

    /// Like [`load`](Self::load), from the bytes of a safetensors file.
    pub fn from_safetensors(config: &GatedConfig, bytes: &[u8], prefix: &str) -> Result<Self> {
        config.validate()?;
        let file = parse_safetensors(bytes)?;
        let mut units = Vec::new();
        for layer in 0..config.num_layers {
            for direction in 0..config.num_directions() {
                let s = suffix(layer, direction);
                units.push(GatedDirectionWeights::read(
                    &file,
                    |name| format!("{prefix}{name}_{s}"),
                    config,
                    config.layer_input_size(layer),
                )?);
            }
        }
        Ok(GatedWeights { units })
    }

    /// Checks that every tensor has the size `config` implies.
    pub(crate) fn check(&self, config: &GatedConfig) -> Result<()> {
        let d = config.num_directions();
        let expected_units = config.num_layers * d;
        if self.units.len() != expected_units {
            return Err(RnnError::weights(
                "(all)",
                format!(
                    "{} (layer, direction) units given, the configuration needs {expected_units}",
                    self.units.len()
                ),
            ));
        }
        let rows = config.gate_size();
        for (index, unit) in self.units.iter().enumerate() {
            let s = suffix(index / d, index % d);
            let check = |name: &str, len: usize, want: usize| {
                if len == want {
                    Ok(())
                } else {
                    Err(RnnError::weights(
                        format!("{name}_{s}"),
                        format!("has {len} elements, expected {want}"),
                    ))
                }
            };
            check(
                "weight_ih",
                unit.weight_ih.len(),
                rows * config.layer_input_size(index / d),
            )?;
            check(
                "weight_hh",
                unit.weight_hh.len(),
                rows * config.state_size(),
            )?;
            match (&unit.bias_ih, &unit.bias_hh, config.bias) {
                (Some(a), Some(b), true) => {
                    check("bias_ih", a.len(), rows)?;
                    check("bias_hh", b.len(), rows)?;
                }
                (None, None, false) => {}
                _ => {
                    return Err(RnnError::weights(
                        format!("bias_ih_{s}"),
                        format!(
                            "biases must be both present when bias = true and both absent when \
                             bias = false (bias = {})",
                            config.bias
                        ),
                    ));
                }
            }
            match (&unit.weight_hr, config.proj_size) {
                (Some(w), p) if p > 0 => check("weight_hr", w.len(), p * config.hidden_size)?,
                (None, 0) => {}
                _ => {
                    return Err(RnnError::weights(
                        format!("weight_hr_{s}"),
                        format!(
                            "must be present exactly when proj_size > 0 (proj_size = {})",
                            config.proj_size
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
