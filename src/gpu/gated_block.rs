//! `shaders/gated_block.wgsl` in its two forms: the portable one (64 lanes, each loading the
//! four sequences' h itself) and, on adapters with a fixed subgroup size, one subgroup whose
//! lanes share h with `subgroupBroadcast`.

use std::fmt::Write;

use crate::shaders;

/// Lanes of the portable form's workgroups, along the hidden units.
pub(crate) const PORTABLE_LANES: u32 = 64;

/// The kernel's WGSL: `subgroup` is the fixed subgroup size of the subgroup form, `None` for
/// the portable one. The subgroup form needs H_out to be a multiple of 4 · size (see
/// [`subgroup_fits`]).
pub(crate) fn wgsl(subgroup: Option<usize>) -> String {
    // The 16 fused multiply-adds of one k: four gate rows × four sequences.
    let fmas = |indent: &str| {
        let mut text = String::new();
        for (i, h) in ["ha", "hb", "hc", "hd"].iter().enumerate() {
            for (g, w) in ["wa", "wb", "wc", "wd"].iter().enumerate() {
                let _ = writeln!(text, "{indent}s{i}{g} = fma({w}, {h}, s{i}{g});");
            }
        }
        text
    };
    let weights = |indent: &str, k: &str| {
        ["wa", "wb", "wc", "wd"]
            .iter()
            .enumerate()
            .map(|(g, w)| format!("{indent}let {w} = vec4<f32>(recurrent[w{g} + {k}]);\n"))
            .collect::<String>()
    };
    let (lanes, lane, body) = match subgroup {
        None => {
            let mut body = String::from("    for (var k = 0u; k < row; k++) {\n");
            body += &weights("        ", "k");
            for (i, h) in ["ha", "hb", "hc", "hd"].iter().enumerate() {
                let _ = writeln!(body, "        let {h} = state4(h{i} + 4u * k);");
            }
            body += &fmas("        ");
            body += "    }";
            (PORTABLE_LANES as usize, String::new(), body)
        }
        Some(size) => {
            let mut body = format!("    for (var chunk = 0u; chunk < row; chunk += {size}u) {{\n");
            body += "        // This lane's vec4 of the chunk, for each sequence.\n";
            for i in 0..4 {
                let _ = writeln!(
                    body,
                    "        let m{i} = state4(h{i} + 4u * (chunk + sub));"
                );
            }
            for l in 0..size {
                let _ = writeln!(body, "        {{");
                body += &weights("            ", &format!("chunk + {l}u"));
                for (i, h) in ["ha", "hb", "hc", "hd"].iter().enumerate() {
                    let _ = writeln!(body, "            let {h} = subgroupBroadcast(m{i}, {l}u);");
                }
                body += &fmas("            ");
                let _ = writeln!(body, "        }}");
            }
            body += "    }";
            (
                size,
                ", @builtin(subgroup_invocation_id) sub: u32".to_string(),
                body,
            )
        }
    };
    shaders::GATED_BLOCK
        .replace("{{LANES}}", &lanes.to_string())
        .replace("{{SUBGROUP_LANE}}", &lane)
        .replace("{{LOOP}}", &body)
}

/// Whether the subgroup form of `size` lanes can run a layer with `state_size` features of h:
/// its chunks of `size` vec4s must tile the row.
pub(crate) fn subgroup_fits(size: usize, state_size: usize) -> bool {
    state_size % (4 * size) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_forms_validate() {
        for subgroup in [None, Some(8), Some(32)] {
            let source = super::wgsl(subgroup);
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
