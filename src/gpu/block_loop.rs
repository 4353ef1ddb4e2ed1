//! The block kernels, 4 weight rows × 4 sequences an invocation: `shaders/recurrent_block.wgsl`
//! and `shaders/gated_block.wgsl` in their two forms, portable (each invocation loads the four
//! sequences' h itself) and, on adapters with a fixed subgroup size, one subgroup whose lanes
//! each load one vec4 in `size` of h and share it with `subgroupBroadcast` (llvmpipe runs loads
//! lane by lane but broadcasts as vector operations), for one, four or sixteen sequences an
//! invocation (see [`block_sequences`]); and `shaders/wavefront_block.wgsl` in the portable
//! form. Every one accumulates s{i}{g} += W row g · h of sequence i over K in vec4s and hands
//! sequence i's four reduced sums to its template's `finish`; the two Elman kernels also share
//! their activation and length functions.

use std::fmt::Write;

use crate::shaders::{self, Template};

/// Lanes of the portable gated form's workgroups, along the hidden units.
pub(crate) const GATED_PORTABLE_LANES: u32 = 64;

/// Invocations of the portable Elman form along units and along sequences (8 × 8).
pub(crate) const ELMAN_PORTABLE_SIDE: u32 = 8;

/// How a kernel reads its operands: the weights array, and vec4 k of sequence i's h.
struct Operands {
    weights: &'static str,
    h: fn(usize, &str) -> String,
}

/// `reduce`, which the finish calls apply to each partial sum.
const REDUCE: &str = "fn reduce(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}";

/// The Elman kernels' activation (`layer.activation`) and sequence lengths, read from the
/// state as vec4s.
const ELMAN_FUNCTIONS: &str = "fn activate4(v: vec4<f32>) -> vec4<f32> {
    if layer.activation == 1u {
        // `v < 0` is false for NaN, so NaN propagates as in PyTorch.
        return select(v, vec4<f32>(0.0), v < vec4<f32>(0.0));
    }
    return tanh(v);
}

fn length_of(n: u32) -> u32 {
    let at = layer.lengths_offset + n;
    return bitcast<u32>(state[at / 4u][at % 4u]);
}";

/// The partial sums, s{i}{g} for sequence n0 + i of `sequences` and weight row g of four.
fn partial_sums(sequences: usize) -> String {
    let mut sums = String::from("    // s{i}{g}: sequence n0 + i, row g of the weights.");
    for i in 0..sequences {
        for g in 0..4 {
            let _ = write!(sums, "\n    var s{i}{g} = vec4<f32>(0.0);");
        }
    }
    sums
}

/// The accumulation loop over K (`row` vec4s) into the partial sums of `sequences`, in the
/// portable or the subgroup form.
fn accumulation_loop(subgroup: Option<usize>, operands: &Operands, sequences: usize) -> String {
    let mut body = String::new();
    let step = |body: &mut String, indent: &str, k: &str, h: &dyn Fn(usize) -> String| {
        for g in 0..4 {
            let _ = writeln!(
                body,
                "{indent}let w{g}v = vec4<f32>({}[w{g} + {k}]);",
                operands.weights
            );
        }
        for i in 0..sequences {
            let _ = writeln!(body, "{indent}let h{i}v = {};", h(i));
        }
        for i in 0..sequences {
            for g in 0..4 {
                let _ = writeln!(body, "{indent}s{i}{g} = fma(w{g}v, h{i}v, s{i}{g});");
            }
        }
    };
    match subgroup {
        None => {
            body += "    for (var k = 0u; k < row; k++) {\n";
            step(&mut body, "        ", "k", &|i| (operands.h)(i, "k"));
            body += "    }";
        }
        Some(size) => {
            let _ = writeln!(
                body,
                "    for (var chunk = 0u; chunk < row; chunk += {size}u) {{"
            );
            body += "        // This lane's vec4 of the chunk, for each sequence.\n";
            for i in 0..sequences {
                let _ = writeln!(
                    body,
                    "        let m{i} = {};",
                    (operands.h)(i, "chunk + sub")
                );
            }
            for lane in 0..size {
                body += "        {\n";
                let k = format!("chunk + {lane}u");
                step(&mut body, "            ", &k, &|i| {
                    format!("subgroupBroadcast(m{i}, {lane}u)")
                });
                body += "        }\n";
            }
            body += "    }";
        }
    }
    body
}

/// The `sequences` sequences' `finish(n, {arguments}, sums)` calls, each with its four
/// reduced sums; sequences past the batch are skipped.
fn finish_calls(arguments: &str, sequences: usize) -> String {
    let mut calls = String::new();
    for i in 0..sequences {
        let sums = (0..4)
            .map(|g| format!("reduce(s{i}{g})"))
            .collect::<Vec<_>>()
            .join(", ");
        let call = format!("finish(n0 + {i}u, {arguments}, vec4<f32>({sums}));");
        if i == 0 {
            let _ = writeln!(calls, "    {call}");
        } else {
            let _ = writeln!(calls, "    if n0 + {i}u < batch {{\n        {call}\n    }}");
        }
    }
    calls.trim_end().to_string()
}

fn subgroup_lane(subgroup: Option<usize>) -> &'static str {
    match subgroup {
        Some(_) => ", @builtin(subgroup_invocation_id) sub: u32",
        None => "",
    }
}

/// `template` with what every block kernel shares filled in, for `sequences` sequences an
/// invocation: that number, `reduce`, the partial sums, the loop over K and the finish calls,
/// whose arguments after n are `finish_arguments`.
fn fill_block(
    template: Template,
    subgroup: Option<usize>,
    operands: &Operands,
    finish_arguments: &str,
    sequences: usize,
) -> String {
    template
        .set("SEQUENCES", sequences.to_string())
        .set("SUBGROUP_LANE", subgroup_lane(subgroup))
        .set("REDUCE", REDUCE)
        .set("SUMS", partial_sums(sequences))
        .set("LOOP", accumulation_loop(subgroup, operands, sequences))
        .set("FINISH", finish_calls(finish_arguments, sequences))
        .finish()
}

/// Where each of `sequences` sequences' row of h starts: `h{i}`, from the block at `base` with
/// rows of `stride` (sequences past the batch read the last one's).
fn h_starts(sequences: usize, base: &str, stride: &str) -> String {
    let mut starts = String::new();
    for i in 0..sequences {
        let _ = writeln!(
            starts,
            "    let h{i} = {base} + min(n0 + {i}u, last) * {stride};"
        );
    }
    starts
}

/// The numbers of sequences an invocation of the subgroup forms of `gated_block.wgsl` and
/// `recurrent_block.wgsl` come in (the portable forms run four).
pub(crate) const SUBGROUP_BLOCK_SEQUENCES: [usize; 3] = [1, 4, 16];

/// Sequences an invocation of the subgroup forms of the block kernels runs for `batch`
/// sequences. Every loaded vec4 of W_hh feeds that many (llvmpipe runs those loads lane by
/// lane: they are what a step costs), while sequences past the batch cost as much as real
/// ones. Measured with `callgrind` on lavapipe, T = 16, per-step path, instructions per
/// forward (one sequence an invocation / four / sixteen):
///
/// | batch | `nn.LSTM` I = H = 256 | `nn.RNN` I = H = 512 |
/// |---:|---|---|
/// | 1 | 88M / 108M / 187M | 84M / 98M / 154M |
/// | 2 | 160M / 109M / – | 154M / 99M / 155M |
/// | 3 | 248M / 125M / – | |
/// | 4 | – / 126M / 206M | 307M / 116M / 172M |
/// | 5 | – / 218M / 206M | 376M / 199M / 173M |
/// | 8 | – / 252M / 240M | |
/// | 9 | – / 343M / 241M | |
/// | 16 | – / 488M / 295M | 1210M / 447M / 257M |
pub(crate) fn block_sequences(batch: u32) -> usize {
    match batch {
        0..=1 => 1,
        2..=4 => 4,
        _ => 16,
    }
}

/// `gated_block.wgsl` for `sequences` sequences an invocation (four, or in the subgroup form
/// one of [`SUBGROUP_BLOCK_SEQUENCES`]): `subgroup` is the fixed subgroup size of the
/// subgroup form, `None` for the portable one (see [`subgroup_fits`]).
pub(crate) fn gated_wgsl(subgroup: Option<usize>, sequences: usize) -> String {
    let operands = Operands {
        weights: "recurrent",
        h: |i, k| format!("state4(h{i} + 4u * ({k}))"),
    };
    let lanes = subgroup.map_or(GATED_PORTABLE_LANES as usize, |size| size);
    let template = Template::new(shaders::GATED_BLOCK)
        .set("LANES", lanes.to_string())
        .set("H_STARTS", h_starts(sequences, "h_block", "size"));
    fill_block(
        template,
        subgroup,
        &operands,
        "j, t, d, prev, next",
        sequences,
    )
}

/// `recurrent_block.wgsl`, in the same two forms and numbers of sequences.
pub(crate) fn elman_wgsl(subgroup: Option<usize>, sequences: usize) -> String {
    let operands = Operands {
        weights: "w_hh",
        h: |i, k| format!("state[h{i} + {k}]"),
    };
    let workgroup = match subgroup {
        Some(size) => format!("{size}, 1, 1"),
        None => format!("{ELMAN_PORTABLE_SIDE}, {ELMAN_PORTABLE_SIDE}, 1"),
    };
    let template = Template::new(shaders::RECURRENT_BLOCK)
        .set("WORKGROUP", &workgroup)
        .set("ELMAN_FUNCTIONS", ELMAN_FUNCTIONS)
        .set("H_STARTS", h_starts(sequences, "prev", "row"));
    fill_block(
        template,
        subgroup,
        &operands,
        "j0, t, d, prev, next",
        sequences,
    )
}

/// `wavefront_block.wgsl`, in the portable form: one pass over K per weight matrix, layers
/// above the first adding W_ih·h of the layer below to the sums of W_hh·h.
pub(crate) fn wavefront_wgsl() -> String {
    let operands = Operands {
        weights: "weights",
        h: |i, k| format!("state[h_at.{} + {k}]", ["x", "y", "z", "w"][i]),
    };
    let template = Template::new(shaders::WAVEFRONT_BLOCK).set("ELMAN_FUNCTIONS", ELMAN_FUNCTIONS);
    fill_block(template, None, &operands, "j0, t, layer_k, prev, next", 4)
}

/// Whether the subgroup form of `size` lanes can run rows of h of `features`: its chunks of
/// `size` vec4s must tile the row.
pub(crate) fn subgroup_fits(size: usize, features: usize) -> bool {
    features % (4 * size) == 0
}

#[cfg(test)]
mod tests {
    use crate::shaders::{self, WeightPrecision, assert_valid as validate};

    #[test]
    fn every_form_validates() {
        for subgroup in [None, Some(8), Some(32)] {
            validate(
                &format!("gated {subgroup:?}"),
                &super::gated_wgsl(subgroup, 4),
            );
            validate(
                &format!("elman {subgroup:?}"),
                &super::elman_wgsl(subgroup, 4),
            );
            for sequences in super::SUBGROUP_BLOCK_SEQUENCES {
                let source = super::gated_wgsl(subgroup, sequences);
                validate(&format!("gated {subgroup:?} × {sequences}"), &source);
                let source = super::elman_wgsl(subgroup, sequences);
                validate(&format!("elman {subgroup:?} × {sequences}"), &source);
            }
        }
    }

    #[test]
    fn every_batch_gets_a_compiled_form() {
        for batch in 0..=70 {
            let sequences = super::block_sequences(batch);
            assert!(
                super::SUBGROUP_BLOCK_SEQUENCES.contains(&sequences),
                "batch {batch}: {sequences}"
            );
        }
    }

    #[test]
    fn wavefront_validates() {
        let wavefront = super::wavefront_wgsl();
        for weights in [WeightPrecision::F32, WeightPrecision::F16] {
            let source = shaders::with_weights(&wavefront, weights);
            validate(&format!("wavefront {weights:?}"), &source);
        }
    }
}
