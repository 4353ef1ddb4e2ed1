// What both training GEMM kernels share (`train_gemm.wgsl`, `train_gemm_subgroup.wgsl`): the
// operation (`train_gemm_params.wgsl`), the bindings of the training layout, and how an
// element of C is written. The template's {{A}}, {{B}}, {{C}} name the buffers.

{{GEMM_PARAMS}}

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;
@group(0) @binding(5) var<storage, read> params4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> work4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> grads4: array<vec4<f32>>;

// bias[n] where the operation adds a bias and n is inside the matrix (else 0): a kernel loads
// it once per column it stores, not once per element.
fn bias_element(n: u32) -> f32 {
    if (g.flags & BIAS) != 0u && n < g.n {
        return params[g.bias_off + n];
    }
    return 0.0;
}

// C[m, n] = value (+ `bias`, bias_element(n)) (+ C[m, n] where accumulating); nothing outside
// the matrix.
fn store_element(m: u32, n: u32, sum: f32, bias: f32) {
    if m >= g.m || n >= g.n {
        return;
    }
    let at = g.c_off + m * g.c_sm + n * g.c_sn;
    var value = sum;
    if (g.flags & BIAS) != 0u {
        value += bias;
    }
    if (g.flags & ACCUMULATE) != 0u {
        value = {{C}}[at] + value;
    }
    {{C}}[at] = value;
}

// C's buffer[sums_off + m] += the sum of A's row m (see `ROW_SUMS`), inside the matrix.
fn add_row_sum(m: u32, sum: f32) {
    if m < g.m {
        {{C}}[g.sums_off + m] = {{C}}[g.sums_off + m] + sum;
    }
}
