//! The generic persistent training kernels for several sequences a workgroup: the WGSL that
//! fills `train_step.wgsl`'s `{{SEQUENCE_TILES}}`, one pair of entry points per
//! [`SequenceTile`].
//!
//! `forward_persistent` and `backward_persistent` run one workgroup per sequence, and each
//! loads all of W_hh from storage every step; llvmpipe runs those loads lane by lane, so they
//! are what a step costs. A workgroup of a tile runs S sequences in the same steps, and each
//! vec4 of W_hh it loads feeds the S sequences' sums. The sums run in the one-sequence
//! kernels' order, and the per-unit work is theirs (`forward_unit`, `backward_unit`).

use std::fmt::Write;

/// Sequences per workgroup of the tiled persistent kernels (vec4 layouts only: H a multiple
/// of four, no projection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SequenceTile {
    Four,
    Eight,
}

impl SequenceTile {
    const ALL: [SequenceTile; 2] = [SequenceTile::Four, SequenceTile::Eight];

    pub fn sequences(self) -> usize {
        match self {
            SequenceTile::Four => 4,
            SequenceTile::Eight => 8,
        }
    }

    /// The tile for a batch of `batch`, if one pays: W_hh is loaded once per workgroup and
    /// step, and a CPU adapter's two cores each take workgroups, so the tile is the largest
    /// that still leaves two workgroups (four sequences where the batch has fewer than 16);
    /// below four sequences, one workgroup per sequence.
    pub fn for_batch(batch: usize) -> Option<Self> {
        match batch {
            0..=3 => None,
            4..=15 => Some(SequenceTile::Four),
            _ => Some(SequenceTile::Eight),
        }
    }

    /// The forward's entry point for a cell of `gates` gates (1, 3 or 4): the forward is
    /// written out per number of gates, so that each gate's sums sit in a constant component
    /// (indexed by a loop variable, they took a third more time on llvmpipe).
    pub fn forward_entry(self, gates: usize) -> &'static str {
        match (self, gates) {
            (SequenceTile::Four, 1) => "forward_persistent_x4_g1",
            (SequenceTile::Four, 3) => "forward_persistent_x4_g3",
            (SequenceTile::Four, _) => "forward_persistent_x4_g4",
            (SequenceTile::Eight, 1) => "forward_persistent_x8_g1",
            (SequenceTile::Eight, 3) => "forward_persistent_x8_g3",
            (SequenceTile::Eight, _) => "forward_persistent_x8_g4",
        }
    }

    pub fn backward_entry(self) -> &'static str {
        match self {
            SequenceTile::Four => "backward_persistent_x4",
            SequenceTile::Eight => "backward_persistent_x8",
        }
    }
}

/// Every tile's functions and entry points.
pub(crate) fn wgsl() -> String {
    let mut out = String::new();
    for tile in SequenceTile::ALL {
        write_tile(&mut out, tile);
    }
    out
}

/// The numbers of gates a cell has: an Elman RNN's one, a GRU's three, an LSTM's four.
const GATE_COUNTS: [usize; 3] = [1, 3, 4];

fn write_tile(out: &mut String, tile: SequenceTile) {
    for gates in GATE_COUNTS {
        write_forward(out, tile, gates);
    }
    write_backward(out, tile);
}

/// One line per sequence of a tile of `count`.
fn each_sequence(out: &mut String, count: usize, line: &dyn Fn(usize) -> String) {
    for i in 0..count {
        let _ = writeln!(out, "{}", line(i));
    }
}

fn write_forward(out: &mut String, tile: SequenceTile, gates: usize) {
    let count = tile.sequences();
    let each = |out: &mut String, line: &dyn Fn(usize) -> String| each_sequence(out, count, line);
    // Sequence i's row of h: those past the batch read the last sequence's and are not
    // stored.
    let _ = writeln!(
        out,
        "// `recurrent_dots4` of a {gates}-gate cell for sequences n0 .. n0 + {count}: sequence i, gate g of
// unit j + r in [i][r][g].
fn recurrent_dots4_x{count}_g{gates}(s: u32, d: u32, n0: u32, j: u32) -> array<array<vec4<f32>, 4>, {count}> {{
    var acc: array<array<vec4<f32>, 4>, {count}>;
    let quads = u.state_size / 4u;
    let last = u.batch - 1u;"
    );
    each(out, &|i| {
        format!("    let h{i} = state_row(s & 1u, d, min(n0 + {i}u, last)) / 4u;")
    });
    let _ = writeln!(
        out,
        "    let w = (u.w_hh + d * u.param_stride + j * u.state_size) / 4u;
    let gate = u.hidden * quads;
    for (var k = 0u; k < quads; k++) {{"
    );
    each(out, &|i| format!("        let x{i} = work4[h{i} + k];"));
    for (g, component) in ["x", "y", "z", "w"].iter().enumerate().take(gates) {
        let _ = writeln!(
            out,
            "        let row{g} = w + {g}u * gate + k;
        let r0_{g} = params4[row{g}];
        let r1_{g} = params4[row{g} + quads];
        let r2_{g} = params4[row{g} + 2u * quads];
        let r3_{g} = params4[row{g} + 3u * quads];"
        );
        each(out, &|i| {
            (0..4)
                .map(|r| format!("        acc[{i}][{r}].{component} += dot(r{r}_{g}, x{i});"))
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let _ = writeln!(out, "    }}\n    return acc;\n}}\n");
    write_entry(
        out,
        EntryParts {
            doc: "`forward_persistent`'s steps",
            name: tile.forward_entry(gates),
            count,
            steps: "let end = min(step.index + u.forward_steps, u.seq_len);
    for (var s = step.index; s < end; s++) {",
            sums: format!("let rec = recurrent_dots4_x{count}_g{gates}(s, d, n0, j);"),
            unit: "forward_unit(s, d, n0 + i, j + r, rec[i][r]);",
        },
    );
}

/// What differs between the forward's and the backward's entry points.
struct EntryParts {
    doc: &'static str,
    name: &'static str,
    count: usize,
    /// The loop over the dispatch's steps, up to its opening brace (`s` the step).
    steps: &'static str,
    /// The tile's sums for units j .. j + 3.
    sums: String,
    /// Unit j + r of sequence n0 + i.
    unit: &'static str,
}

/// Workgroup (0, n0 / count, d): for each step, each lane's quads of units j, the tile's sums,
/// then each real sequence's four units; a barrier between steps.
fn write_entry(out: &mut String, parts: EntryParts) {
    let EntryParts {
        doc,
        name,
        count,
        steps,
        sums,
        unit,
    } = parts;
    let _ = writeln!(
        out,
        "// Workgroup (0, n0 / {count}, d): {doc} for sequences n0 .. n0 + {count}.
@compute @workgroup_size(64, 1, 1)
fn {name}(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {{
    let n0 = wg.y * {count}u;
    let d = wg.z;
    {steps}
        for (var j = lane * 4u; j < u.hidden; j += 256u) {{
            {sums}
            for (var i = 0u; i < {count}u; i++) {{
                if n0 + i < u.batch {{
                    for (var r = 0u; r < 4u; r++) {{
                        {unit}
                    }}
                }}
            }}
        }}
        storageBarrier();
        workgroupBarrier();
    }}
}}
"
    );
}

fn write_backward(out: &mut String, tile: SequenceTile) {
    let count = tile.sequences();
    let each = |out: &mut String, line: &dyn Fn(usize) -> String| each_sequence(out, count, line);
    // Sequence i's frame of dG_hh, as the forward's rows of h.
    let _ = writeln!(
        out,
        "// `carried_through_w_hh4` for sequences n0 .. n0 + {count}: sequence i's in [i].
fn carried_through_w_hh4_x{count}(s: u32, d: u32, n0: u32, j: u32) -> array<vec4<f32>, {count}> {{
    var acc: array<vec4<f32>, {count}>;
    if s + 1u >= u.seq_len {{
        return acc;
    }}
    let next = position(s + 1u, d);
    let rows = gate_size();
    let base = select(u.p, u.dghh, u.cell == GRU);
    let last = u.batch - 1u;"
    );
    each(out, &|i| {
        format!("    let dg{i} = frame_at(base, d, next, min(n0 + {i}u, last), rows) / 4u;")
    });
    let _ = writeln!(
        out,
        "    let quads = u.state_size / 4u;
    var w = (u.w_hh + d * u.param_stride + j) / 4u;
    for (var k = 0u; k < rows / 4u; k++) {{
        let w0 = params4[w];
        let w1 = params4[w + quads];
        let w2 = params4[w + 2u * quads];
        let w3 = params4[w + 3u * quads];"
    );
    each(out, &|i| format!("        let g{i} = work4[dg{i} + k];"));
    each(out, &|i| {
        ["x", "y", "z", "w"]
            .iter()
            .enumerate()
            .map(|(c, part)| format!("        acc[{i}] += g{i}.{part} * w{c};"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let _ = writeln!(
        out,
        "        w += 4u * quads;
    }}
    // Nothing flows back from a frame past a sequence's length.
    for (var i = 0u; i < {count}u; i++) {{
        acc[i] = select(vec4<f32>(), acc[i], valid(next, min(n0 + i, last)));
    }}
    return acc;
}}
"
    );
    write_entry(
        out,
        EntryParts {
            doc: "`backward_persistent`'s steps",
            name: tile.backward_entry(),
            count,
            steps: "let count = min(u.backward_steps, step.index + 1u);
    for (var back = 0u; back < count; back++) {
        let s = step.index - back;",
            sums: format!("let through = carried_through_w_hh4_x{count}(s, d, n0, j);"),
            unit: "backward_unit(s, d, n0 + i, j + r, through[i][r]);",
        },
    );
}

#[cfg(test)]
mod tests {
    use super::SequenceTile;

    #[test]
    fn tiles_leave_two_workgroups_where_the_batch_allows() {
        assert_eq!(SequenceTile::for_batch(1), None);
        assert_eq!(SequenceTile::for_batch(3), None);
        assert_eq!(SequenceTile::for_batch(4), Some(SequenceTile::Four));
        assert_eq!(SequenceTile::for_batch(15), Some(SequenceTile::Four));
        assert_eq!(SequenceTile::for_batch(16), Some(SequenceTile::Eight));
        assert_eq!(SequenceTile::for_batch(64), Some(SequenceTile::Eight));
    }
}
