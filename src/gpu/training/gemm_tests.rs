//! `train_gemm.wgsl` and `train_gemm_subgroup.wgsl` against their CPU twin, on sizes that are
//! not multiples of the tiles (1, 3, 17, 257) as well as friendly ones, every way of loading
//! the blocks (element by element, vec4s along k, along m or n), a bias, accumulation, the
//! rows' sums, and both buffer variants.

use std::collections::HashSet;

use wgpu::util::DeviceExt;

use super::program::{Op, Operand, gemm_vectors};
use super::workspace::record_ops;
use crate::gpu::kernels::training::{
    BlockLoad, GemmBatch, GemmBuffers, GemmForm, GemmKernel, GemmParams, GemmVectors,
    OP_UNIFORM_BYTES, TrainingBuffers, TrainingPipeline,
};
use crate::testing;
use crate::weights::SplitMix64;

/// The twin: `C[m, n] = (acc ? C : 0) + Σ_k A[m, k]·B[k, n] (+ bias[n])`, through the same
/// offsets and strides, summed in f64; with `ROW_SUMS`, also `C[sums_off + m] += Σ_k A[m, k]`.
fn cpu_gemm(g: &GemmParams, a: &[f32], b: &[f32], c: &mut [f32], bias: &[f32]) {
    for m in 0..g.m as usize {
        if g.flags & GemmParams::ROW_SUMS != 0 {
            let sum: f64 = (0..g.k as usize)
                .map(|k| f64::from(a[g.a_off as usize + m * g.a_sm as usize + k * g.a_sk as usize]))
                .sum();
            let at = g.sums_off as usize + m;
            c[at] = (f64::from(c[at]) + sum) as f32;
        }
        for n in 0..g.n as usize {
            let mut sum = 0.0f64;
            for k in 0..g.k as usize {
                let av = a[g.a_off as usize + m * g.a_sm as usize + k * g.a_sk as usize];
                let bv = b[g.b_off as usize + k * g.b_sk as usize + n * g.b_sn as usize];
                sum += f64::from(av) * f64::from(bv);
            }
            if g.flags & GemmParams::BIAS != 0 {
                sum += f64::from(bias[g.bias_off as usize + n]);
            }
            let at = g.c_off as usize + m * g.c_sm as usize + n * g.c_sn as usize;
            if g.flags & GemmParams::ACCUMULATE != 0 {
                sum += f64::from(c[at]);
            }
            c[at] = sum as f32;
        }
    }
}

/// The training layout's buffers holding `params`, `grads` and `work`, one operation's
/// uniforms (at 0) and a step index of 0, bound.
struct Bound {
    ops: wgpu::Buffer,
    grads: wgpu::Buffer,
    work: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    _params: wgpu::Buffer,
    _steps: wgpu::Buffer,
}

fn bind(ctx: &crate::GpuContext, params: &[f32], grads: &[f32], work: &[f32]) -> Bound {
    let device = ctx.device();
    let buffer = |data: &[f32]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
    };
    let ops = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: OP_UNIFORM_BYTES,
        usage: wgpu::BufferUsages::UNIFORM
            | wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let steps = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &[0u8; 16],
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let (params, grads, work) = (buffer(params), buffer(grads), buffer(work));
    // The GEMMs read no weight texels.
    let texels = crate::gpu::training::recurrent_weights::placeholder_view(device);
    let bind_group = ctx.training_kernels().unwrap().bind_group(
        device,
        &TrainingBuffers {
            ops: &ops,
            steps: &steps,
            params: &params,
            grads: &grads,
            work: &work,
            recurrent_weights: &texels,
        },
    );
    Bound {
        ops,
        grads,
        work,
        bind_group,
        _params: params,
        _steps: steps,
    }
}

#[test]
fn training_gemm_matches_cpu_twin() {
    let Some(ctx) = testing::gpu("training_gemm_matches_cpu_twin") else {
        return;
    };
    let kernels = ctx.training_kernels().unwrap();
    let device = ctx.device();
    let mut rng = SplitMix64(23);
    let sizes = [1usize, 3, 17, 257, 64, 20];
    let mut cases = 0;
    let mut forms = HashSet::<(BlockLoad, BlockLoad)>::new();
    let (mut subgroup_cases, mut row_sum_cases) = (0, 0);
    let mut vector_forms = HashSet::new();
    for (i, &m) in sizes.iter().enumerate() {
        for (j, &n) in sizes.iter().enumerate() {
            for a_load in BlockLoad::ALL {
                for b_load in BlockLoad::ALL {
                    // Loads along k need K in fours: 20 or 64 then, any size otherwise.
                    let k = if a_load == BlockLoad::AlongK || b_load == BlockLoad::AlongK {
                        [20, 64][(i + j) % 2]
                    } else {
                        sizes[(i + j + cases) % sizes.len()]
                    };
                    let to_grads = (i * 5 + j) % 3 == 0;
                    let flags = [0, GemmParams::ACCUMULATE, GemmParams::BIAS][(i + 2 * j) % 3];
                    let flags = if to_grads {
                        flags & GemmParams::ACCUMULATE
                    } else {
                        flags
                    };
                    // Each form needs its layout: vec4s along k need K and the row stride in fours,
                    // along m (n) need M (N) and the k stride in fours; starts aligned.
                    let fits = |load: BlockLoad, outer: usize| match load {
                        BlockLoad::Elements => true,
                        BlockLoad::AlongK => k % 4 == 0,
                        BlockLoad::AlongOuter => outer % 4 == 0,
                    };
                    if !fits(a_load, m) || !fits(b_load, n) {
                        continue;
                    }
                    let transposed = a_load == BlockLoad::AlongOuter
                        || (a_load == BlockLoad::Elements && (i + j) % 2 == 1);
                    // A at offset 8 of `work` (5 when read element by element), (m, k) or stored
                    // (k, m); B after it, (k, n) or stored (n, k); C after B.
                    let a_off = if a_load == BlockLoad::Elements { 5 } else { 8 };
                    let (a_sm, a_sk) = if transposed { (1, m) } else { (k, 1) };
                    let b_off = (a_off + m * k + 3).next_multiple_of(4);
                    let b_by_columns = b_load == BlockLoad::AlongK;
                    let (b_sk, b_sn) = if b_by_columns { (1, k) } else { (n, 1) };
                    // C at an offset of four elements (the vec4 stores need it) or not.
                    let c_aligned = (i + 2 * j) % 2 == 0;
                    let c_off = match (to_grads, c_aligned) {
                        (true, true) => 8,
                        (true, false) => 7,
                        (false, true) => (b_off + k * n + 1).next_multiple_of(4),
                        (false, false) => b_off + k * n + 1,
                    };
                    let g = GemmParams {
                        m: m as u32,
                        n: n as u32,
                        k: k as u32,
                        flags,
                        a_off: a_off as u32,
                        a_sm: a_sm as u32,
                        a_sk: a_sk as u32,
                        b_off: b_off as u32,
                        b_sk: b_sk as u32,
                        b_sn: b_sn as u32,
                        c_off: c_off as u32,
                        c_sm: n as u32,
                        c_sn: 1,
                        // The bias at 4 (vec4s may add it) or 2.
                        bias_off: if c_aligned { 4 } else { 2 },
                        k0: 0,
                        // The rows' sums (where asked for) after C.
                        sums_off: (c_off + m * n) as u32,
                    };
                    let mut work = rng.uniform(-1.0, 1.0, b_off + k * n + 1 + m * n + 8);
                    let params = rng.uniform(-1.0, 1.0, 4 + n);
                    let mut grads = rng.uniform(-1.0, 1.0, 8 + m * n + m);
                    // The twin reads B from `work` either way; in the params variant B is in
                    // `params`: copy it there at the same offset.
                    let mut params_full = params.clone();
                    if !to_grads {
                        params_full.resize(b_off + k * n, 0.0);
                        params_full[b_off..b_off + k * n]
                            .copy_from_slice(&work[b_off..b_off + k * n]);
                    }
                    let (a, b) = (work.clone(), work.clone());
                    let twin = |g: &GemmParams| {
                        let mut c = if to_grads {
                            grads.clone()
                        } else {
                            work.clone()
                        };
                        cpu_gemm(g, &a, &b, &mut c, &params_full);
                        c
                    };
                    let Bound {
                        ops,
                        grads: grads_buffer,
                        work: work_buffer,
                        bind_group,
                        ..
                    } = bind(&ctx, &params_full, &grads, &work);
                    let buffers = if to_grads {
                        GemmBuffers::WorkWorkToGrads
                    } else {
                        GemmBuffers::WorkParamsToWork
                    };
                    // The block form the layout allows, and the subgroup form (any layout)
                    // where the adapter has one: both against the twin, and each other.
                    // The block form the layout allows; where the adapter has subgroups, the
                    // subgroup form (any layout), and into the gradients also summing rows.
                    let blocks = GemmForm::Blocks {
                        a: a_load,
                        b: b_load,
                    };
                    let mut kernels_run = vec![(
                        GemmKernel {
                            buffers,
                            form: blocks,
                        },
                        g,
                    )];
                    if let Some(lanes) = ctx.persistent_subgroup() {
                        let variants: &[bool] = if to_grads { &[false, true] } else { &[false] };
                        // Scalar loads and stores, and the vec4s this layout allows.
                        let operand = |off: usize, s0: usize, s1: usize| Operand { off, s0, s1 };
                        let allowed = gemm_vectors(
                            (m, n, k),
                            operand(a_off, a_sm, a_sk),
                            operand(b_off, b_sk, b_sn),
                            operand(c_off, n, 1),
                            (flags & GemmParams::BIAS != 0).then_some(g.bias_off as usize),
                        );
                        for &row_sums in variants {
                            for vectors in [GemmVectors::SCALAR, allowed] {
                                let form = GemmForm::Subgroup {
                                    lanes: lanes as u32,
                                    row_sums,
                                    vectors,
                                };
                                let flags = flags | if row_sums { GemmParams::ROW_SUMS } else { 0 };
                                kernels_run.push((
                                    GemmKernel { buffers, form },
                                    GemmParams { flags, ..g },
                                ));
                                vector_forms.insert(vectors);
                            }
                        }
                    }
                    let mut results: Vec<Vec<f32>> = Vec::new();
                    for (kernel, g) in kernels_run {
                        let want = twin(&g);
                        let (batch, groups) = GemmBatch::new(kernel, &[g], u32::MAX);
                        ctx.queue()
                            .write_buffer(&ops, 0, bytemuck::bytes_of(&batch));
                        let out = if to_grads {
                            &grads_buffer
                        } else {
                            &work_buffer
                        };
                        let initial = if to_grads { &grads } else { &work };
                        ctx.queue()
                            .write_buffer(out, 0, bytemuck::cast_slice(initial.as_slice()));
                        ctx.prepare_training(TrainingPipeline::Gemm(kernel))
                            .unwrap();
                        let op = Op::Gemm {
                            kernel,
                            params: 0,
                            groups,
                            gemms: 1,
                        };
                        let mut encoder = device.create_command_encoder(&Default::default());
                        record_ops(kernels, None, &[], &bind_group, &mut encoder, &[op]);
                        ctx.queue().submit([encoder.finish()]);
                        let got = crate::gpu::kernel_tests::read(&ctx, out);
                        // f32 sums of k products of values in [−1, 1]: rounding grows with k.
                        let c = crate::compare::compare(&got, &want, 1e-6 * k.max(10) as f64);
                        assert!(
                            c.passed(),
                            "m {m} n {n} k {k} {kernel:?} grads {to_grads} flags {flags}: {c}"
                        );
                        match kernel.form {
                            GemmForm::Subgroup {
                                row_sums: false, ..
                            } => subgroup_cases += 1,
                            GemmForm::Subgroup { row_sums: true, .. } => row_sum_cases += 1,
                            GemmForm::Blocks { .. } => {}
                        }
                        results.push(got);
                    }
                    // The forms sum each element of C in the same order.
                    let c_range = if to_grads {
                        0..c_off + m * n
                    } else {
                        0..work.len()
                    };
                    for other in &results[1..] {
                        assert!(
                            results[0][c_range.clone()] == other[c_range.clone()],
                            "m {m} n {n} k {k}: the subgroup form differs from the block form"
                        );
                    }
                    cases += 1;
                    forms.insert((a_load, b_load));
                    work.clear();
                    grads.clear();
                }
            }
        }
    }
    assert_eq!(
        forms.len(),
        9,
        "every pair of block loads ran ({cases} cases)"
    );
    if ctx.persistent_subgroup().is_some() {
        let forms = 2; // scalar loads and stores, and the vec4s the layout allows
        assert_eq!(
            subgroup_cases,
            forms * cases,
            "the subgroup forms ran on every case"
        );
        assert!(row_sum_cases > 10, "rows summed in {row_sum_cases} cases");
        // Every way of loading A and B, and both ways of storing C, ran.
        let (a, b, c): (HashSet<_>, HashSet<_>, HashSet<_>) = (
            vector_forms.iter().map(|v: &GemmVectors| v.a).collect(),
            vector_forms.iter().map(|v| v.b).collect(),
            vector_forms.iter().map(|v| v.c).collect(),
        );
        assert_eq!((a.len(), b.len(), c.len()), (3, 3, 2), "{vector_forms:?}");
    }
}

/// Independent GEMMs run as one dispatch (`GemmBatch`) compute, each, exactly what they
/// compute alone: whichever GEMM a workgroup's tile belongs to, also where the dispatch wraps
/// into rows of workgroups (its last row with workgroups past the batch's tiles). Sizes that
/// are not multiples of the tiles; both forms; the subgroup form also summing rows.
#[test]
fn batched_gemms_are_each_alone() {
    let Some(ctx) = testing::gpu("batched_gemms_are_each_alone") else {
        return;
    };
    let kernels = ctx.training_kernels().unwrap();
    let device = ctx.device();
    let mut rng = SplitMix64(29);
    // (m, n, k), and whether C accumulates: A's and B's side by side in `work`, each C and
    // its rows' sums in its own part of `grads`.
    let shapes = [
        (17, 3, 257, true),
        (1, 64, 20, false),
        (33, 5, 3, true),
        (64, 64, 17, false),
    ];
    let (mut work_len, mut grads_len) = (0, 0);
    let mut gemms = Vec::new();
    for (m, n, k, accumulate) in shapes {
        let (a_off, b_off) = (work_len, work_len + m * k);
        work_len = b_off + k * n;
        let (c_off, sums_off) = (grads_len, grads_len + m * n);
        grads_len = sums_off + m;
        gemms.push(GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            flags: if accumulate {
                GemmParams::ACCUMULATE
            } else {
                0
            },
            a_off: a_off as u32,
            a_sm: k as u32,
            a_sk: 1,
            b_off: b_off as u32,
            b_sk: n as u32,
            b_sn: 1,
            c_off: c_off as u32,
            c_sm: n as u32,
            c_sn: 1,
            bias_off: 0,
            k0: 0,
            sums_off: sums_off as u32,
        });
    }
    let work = rng.uniform(-1.0, 1.0, work_len);
    let grads = rng.uniform(-1.0, 1.0, grads_len);
    let Bound {
        ops,
        grads: grads_buffer,
        bind_group,
        ..
    } = bind(&ctx, &[0.0; 4], &grads, &work);
    // `batch` in one dispatch of at most `width` workgroups a row, from the initial gradients.
    let run = |kernel: GemmKernel, batch: &[GemmParams], width: u32| {
        ctx.queue()
            .write_buffer(&grads_buffer, 0, bytemuck::cast_slice(&grads));
        let (uniform, groups) = GemmBatch::new(kernel, batch, width);
        ctx.queue()
            .write_buffer(&ops, 0, bytemuck::bytes_of(&uniform));
        ctx.prepare_training(TrainingPipeline::Gemm(kernel))
            .unwrap();
        let op = Op::Gemm {
            kernel,
            params: 0,
            groups,
            gemms: batch.len() as u32,
        };
        let mut encoder = device.create_command_encoder(&Default::default());
        record_ops(kernels, None, &[], &bind_group, &mut encoder, &[op]);
        ctx.queue().submit([encoder.finish()]);
        crate::gpu::kernel_tests::read(&ctx, &grads_buffer)
    };
    let buffers = GemmBuffers::WorkWorkToGrads;
    let mut kernels_run = vec![(
        GemmKernel {
            buffers,
            form: GemmForm::Blocks {
                a: BlockLoad::Elements,
                b: BlockLoad::Elements,
            },
        },
        gemms.clone(),
    )];
    if let Some(lanes) = ctx.persistent_subgroup() {
        for row_sums in [false, true] {
            let form = GemmForm::Subgroup {
                lanes: lanes as u32,
                row_sums,
                vectors: GemmVectors::SCALAR,
            };
            let flags = if row_sums { GemmParams::ROW_SUMS } else { 0 };
            let gemms = gemms.iter().map(|g| GemmParams {
                flags: g.flags | flags,
                ..*g
            });
            kernels_run.push((GemmKernel { buffers, form }, gemms.collect()));
        }
    }
    for (kernel, gemms) in kernels_run {
        // Each GEMM alone, keeping only its own part of C (and of the rows' sums).
        let mut alone = grads.clone();
        for g in &gemms {
            let got = run(kernel, std::slice::from_ref(g), u32::MAX);
            let mine = g.c_off as usize..(g.sums_off + g.m) as usize;
            alone[mine.clone()].copy_from_slice(&got[mine]);
        }
        let mut twin = grads.clone();
        for g in &gemms {
            cpu_gemm(g, &work, &work, &mut twin, &[]);
        }
        let c = crate::compare::compare(&alone, &twin, 1e-6 * 257.0);
        assert!(c.passed(), "{kernel:?} alone against the twin: {c}");
        // Rows of 1, 3 and 5 workgroups (padded past the last tile), and one row.
        for width in [1, 3, 5, u32::MAX] {
            let batched = run(kernel, &gemms, width);
            assert!(
                batched == alone,
                "{kernel:?} width {width}: a batched GEMM differs from itself alone"
            );
        }
    }
}
