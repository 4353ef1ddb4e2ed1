//! What both persistent kernels (Elman and gated) share: how many steps one dispatch runs,
//! and the WGSL functions they read P and write the output and the state with.

use crate::gpu::kernels::RECURRENT_TEXTURE_BINDING;

/// Timesteps one persistent dispatch runs at most. llvmpipe silently stops any invocation
/// after 65,535 loop iterations in total; the generated kernel has one loop iteration per step
/// (everything else is written out), so this leaves a wide margin.
pub(crate) const STEPS_PER_DISPATCH: u32 = 8192;

/// The element type of P and the output, and the functions both persistent kernels (Elman and
/// gated) read P and write the output and the state with, for a hidden size: P and the output
/// as vec4s where H allows, one load or store per four units instead of four (llvmpipe runs
/// every load and store lane by lane). The state stays f32s (a dispatch's end writes it).
pub(crate) fn io_functions(hidden: usize) -> (&'static str, String) {
    let (element, io) = if hidden % 4 == 0 {
        ("vec4<f32>", IO_VEC4)
    } else {
        ("f32", IO_SCALAR)
    };
    (element, format!("{io}\n{STORE_STATE}"))
}

/// The declaration of W_hh's texels (`recurrent_texels`) where a persistent kernel loads W_hh
/// from the model's texture of it, else nothing.
pub(crate) fn texture_binding(texture: bool) -> String {
    match texture {
        true => format!(
            "@group(0) @binding({RECURRENT_TEXTURE_BINDING}) var recurrent_texels: texture_2d<f32>;"
        ),
        false => String::new(),
    }
}

/// The WGSL loading W_hh's texel `x` of texture row `row` into a lane's private values: through
/// an identity `subgroupShuffle` (`sub` is the lane's index in its subgroup), without which
/// LLVM fetched the texels again in every step of the loop that uses them.
pub(crate) fn texel_load(x: &str, row: &str) -> String {
    format!("subgroupShuffle(textureLoad(recurrent_texels, vec2<u32>({x}, {row}), 0), sub)")
}

/// Stores units row..row+3 of the state (those that exist) at `base`.
const STORE_STATE: &str = "fn store_state(base: u32, row: u32, v: vec4<f32>) {
    if row < HIDDEN {
        state[base + row] = v.x;
    }
    if row + 1u < HIDDEN {
        state[base + row + 1u] = v.y;
    }
    if row + 2u < HIDDEN {
        state[base + row + 2u] = v.z;
    }
    if row + 3u < HIDDEN {
        state[base + row + 3u] = v.w;
    }
}
";

/// `p_at` and `store_output` over f32 views of P and the output, for any H: units past H
/// read a clamped P and store nothing. Shared with the Elman kernel, whose P rows are one
/// gate wide.
const IO_SCALAR: &str = "// Units row..row+3 of one gate's P, clamped into range for padding units.
fn p_at(base: u32, row: u32) -> vec4<f32> {
    let last = HIDDEN - 1u;
    return vec4<f32>(
        p[base + min(row, last)],
        p[base + min(row + 1u, last)],
        p[base + min(row + 2u, last)],
        p[base + min(row + 3u, last)],
    );
}

// Written out rather than looped: every loop iteration counts towards llvmpipe's limit.
fn store_output(base: u32, row: u32, v: vec4<f32>) {
    if row < HIDDEN {
        output[base + row] = v.x;
    }
    if row + 1u < HIDDEN {
        output[base + row + 1u] = v.y;
    }
    if row + 2u < HIDDEN {
        output[base + row + 2u] = v.z;
    }
    if row + 3u < HIDDEN {
        output[base + row + 3u] = v.w;
    }
}
";

/// The same over vec4 views, for H a multiple of four: `base` and `row` are then multiples of
/// four (P's rows are G·H long, output frames D·H, the strides multiples of them). Padding
/// lanes (`row` ≥ H) read whatever lies there (their results are masked) and store nothing.
const IO_VEC4: &str = "// Units row..row+3 of one gate's P.
fn p_at(base: u32, row: u32) -> vec4<f32> {
    return p[(base + row) / 4u];
}

fn store_output(base: u32, row: u32, v: vec4<f32>) {
    if row < HIDDEN {
        output[(base + row) / 4u] = v;
    }
}
";
