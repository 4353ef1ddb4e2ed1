// What a training GEMM operation is (`GemmParams` in src/gpu/kernels/training.rs, field for
// field): its shape, flags, offsets and strides, and the slice its two-level sums add up in.
// Shared by the GEMM kernels (`train_gemm_common.wgsl`) and the one-dispatch programs
// (`train_program.wgsl`), which must sum in the same order.

struct Gemm {
    m: u32, n: u32, k: u32, flags: u32,
    a_off: u32, a_sm: u32, a_sk: u32, b_off: u32,
    b_sk: u32, b_sn: u32, c_off: u32, c_sm: u32,
    c_sn: u32, bias_off: u32, k0: u32, sums_off: u32,
}

const ACCUMULATE: u32 = 1u;
const BIAS: u32 = 2u;
const ROW_SUMS: u32 = 4u;

// k summed into one block before the block joins the total. A multiple of 4.
const SLICE: u32 = 32u;
