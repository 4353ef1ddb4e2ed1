//! The block kernels (`shaders/recurrent_block.wgsl`, `shaders/gated_block.wgsl`) in their two
//! forms: portable (each invocation loads the four sequences' h itself) and, on adapters with
//! a fixed subgroup size, one subgroup whose lanes each load one vec4 in `size` of h and share
//! it with `subgroupBroadcast` (llvmpipe runs loads lane by lane but broadcasts as vector
//! operations). Both kernels accumulate s{i}{g} += W row g · h of sequence i over K in vec4s.

use std::fmt::Write;

use crate::shaders;

/// Lanes of the portable gated form's workgroups, along the hidden units.
pub(crate) const GATED_PORTABLE_LANES: u32 = 64;

/// Invocations of the portable Elman form along units and along sequences (8 × 8).
pub(crate) const ELMAN_PORTABLE_SIDE: u32 = 8;

/// How a kernel reads its operands: the weights array, and vec4 k of sequence i's h.
struct Operands {
    weights: &'static str,
    h: fn(usize, &str) -> String,
}

/// The sixteen partial sums, s{i}{g} for sequence n0 + i and weight row g, then the
/// accumulation loop over K (`row` vec4s), in the portable or the subgroup form.
fn block_loop(subgroup: Option<usize>, operands: &Operands) -> String {
    let mut body = String::from("    // s{i}{g}: sequence n0 + i, row g of the weights.\n");
    for i in 0..4 {
        for g in 0..4 {
            let _ = writeln!(body, "    var s{i}{g} = vec4<f32>(0.0);");
        }
    }
    let step = |body: &mut String, indent: &str, k: &str, h: &dyn Fn(usize) -> String| {
        for g in 0..4 {
            let _ = writeln!(
                body,
                "{indent}let w{g}v = vec4<f32>({}[w{g} + {k}]);",
                operands.weights
            );
        }
        for i in 0..4 {
            let _ = writeln!(body, "{indent}let h{i}v = {};", h(i));
        }
        for i in 0..4 {
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
            for i in 0..4 {
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

/// The four sequences' `finish(n, unit, t, d, prev, next, sums)` calls, each with its four
/// reduced sums; sequences past the batch are skipped.
fn finish_calls(unit: &str) -> String {
    let mut calls = String::new();
    for i in 0..4 {
        let sums = (0..4)
            .map(|g| format!("reduce(s{i}{g})"))
            .collect::<Vec<_>>()
            .join(", ");
        let call = format!("finish(n0 + {i}u, {unit}, t, d, prev, next, vec4<f32>({sums}));");
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

/// `gated_block.wgsl`: `subgroup` is the fixed subgroup size of the subgroup form, `None` for
/// the portable one (see [`subgroup_fits`]).
pub(crate) fn gated_wgsl(subgroup: Option<usize>) -> String {
    let operands = Operands {
        weights: "recurrent",
        h: |i, k| format!("state4(h{i} + 4u * ({k}))"),
    };
    let lanes = subgroup.map_or(GATED_PORTABLE_LANES as usize, |size| size);
    shaders::GATED_BLOCK
        .replace("{{LANES}}", &lanes.to_string())
        .replace("{{SUBGROUP_LANE}}", subgroup_lane(subgroup))
        .replace("{{LOOP}}", &block_loop(subgroup, &operands))
        .replace("{{FINISH}}", &finish_calls("j"))
}

/// `recurrent_block.wgsl`, in the same two forms.
pub(crate) fn elman_wgsl(subgroup: Option<usize>) -> String {
    let operands = Operands {
        weights: "w_hh",
        h: |i, k| format!("state[h{i} + {k}]"),
    };
    let workgroup = match subgroup {
        Some(size) => format!("{size}, 1, 1"),
        None => format!("{ELMAN_PORTABLE_SIDE}, {ELMAN_PORTABLE_SIDE}, 1"),
    };
    shaders::RECURRENT_BLOCK
        .replace("{{WORKGROUP}}", &workgroup)
        .replace("{{SUBGROUP_LANE}}", subgroup_lane(subgroup))
        .replace("{{LOOP}}", &block_loop(subgroup, &operands))
        .replace("{{FINISH}}", &finish_calls("j0"))
}

/// Whether the subgroup form of `size` lanes can run rows of h of `features`: its chunks of
/// `size` vec4s must tile the row.
pub(crate) fn subgroup_fits(size: usize, features: usize) -> bool {
    features % (4 * size) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_form_validates() {
        for subgroup in [None, Some(8), Some(32)] {
            for source in [super::gated_wgsl(subgroup), super::elman_wgsl(subgroup)] {
                let module = naga::front::wgsl::parse_str(&source)
                    .unwrap_or_else(|e| panic!("{subgroup:?}: {}", e.emit_to_string(&source)));
                naga::valid::Validator::new(
                    naga::valid::ValidationFlags::all(),
                    naga::valid::Capabilities::all(),
                )
                .validate(&module)
                .unwrap_or_else(|e| panic!("{subgroup:?}: {}", e.emit_to_string(&source)));
            }
        }
    }
}
