//! Small training programs as one dispatch. On a software adapter every dispatch costs about
//! 40 µs of thread hand-off however little it computes, and a small model's forward or
//! backward is half a dozen dispatches of a few µs of work each (the sine-wave tutorial's
//! whole iteration: eleven). Where a program's work is small, `one_dispatch` writes it out as
//! one kernel (`train_program.wgsl`) that one subgroup runs: the operations in order,
//! separated by barriers, each reading the uniforms its dispatch would have read from where
//! the program keeps them (the same buffer, bound as storage too). The kernel's text depends
//! on the model and the program's structure, not on T or N: workspaces of every shape share
//! it. The recurrence is the register-resident kernel's (`train_subgroup.wgsl`), where it runs
//! in one subgroup; the GEMMs sum in the GEMM kernels' order: the results are the
//! multi-dispatch program's. (The generic recurrence in one workgroup was slower than its own
//! dispatches: ~0.5 ms for the sine tutorial's forward against 0.17.)

use std::fmt::Write;

use crate::config::RnnConfig;
use crate::gpu::kernels::loss::LOSS_PER_LANE;
use crate::gpu::kernels::training::{GemmBatch, GemmBuffers, GemmParams, TrainUnit};
use crate::gpu::train_subgroup::SubgroupRecurrence;

use super::program::Op;

/// The most multiply-adds a program may have to run as one workgroup: beyond it, the
/// several workgroups of its separate dispatches (spread over the adapter's cores) win.
const MAX_MULTIPLY_ADDS: u64 = 1 << 20;

/// The most loop iterations the one invocation may run (llvmpipe stops every loop of an
/// invocation past 65,535 in all, silently), with a margin.
const MAX_LOOP_TRIPS: u64 = 40_000;

/// Where a program's operations read their values: the program builder's uniforms and the
/// step indices' spacing.
pub(crate) struct Uniforms<'a> {
    pub bytes: &'a [u8],
    pub step_align: u32,
}

/// A program written out as (part of) the body of `train_program.wgsl`'s entry point, with
/// what it costs the one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OneDispatch {
    pub run: String,
    multiply_adds: u64,
    trips: u64,
}

impl OneDispatch {
    /// Whether one workgroup should run it: small enough to beat the separate dispatches,
    /// and within llvmpipe's loop budget.
    pub fn fits(&self) -> bool {
        self.multiply_adds <= MAX_MULTIPLY_ADDS && self.trips <= MAX_LOOP_TRIPS
    }

    /// `self`, then `next`, in one kernel.
    pub fn then(self, next: OneDispatch) -> OneDispatch {
        OneDispatch {
            run: self.run + &next.run,
            multiply_adds: self.multiply_adds + next.multiply_adds,
            trips: self.trips + next.trips,
        }
    }
}

/// `program` written out for one dispatch, or `None` where its recurrence is not `spec`'s in
/// one subgroup (or it has operations only separate dispatches run). Whether it is small
/// enough to run so is [`OneDispatch::fits`].
pub(crate) fn one_dispatch(
    config: &RnnConfig,
    spec: SubgroupRecurrence,
    program: &[Op],
    uniforms: &Uniforms<'_>,
) -> Option<OneDispatch> {
    if spec.subgroups != 1 {
        return None;
    }
    let lanes = spec.lanes as u64;
    // Loop iterations of the register recurrence per step, at most: the step's, and at a
    // frame past a sequence's length the zeroing of each gate of each of a lane's units.
    let recurrence_trips = 2 + (spec.rows * config.mode.gates()) as u64;
    let (mut multiply_adds, mut trips) = (0u64, 0u64);
    let mut run = String::new();
    for op in program {
        match *op {
            Op::Gemm {
                kernel,
                params,
                gemms,
                ..
            } => {
                let at = params as usize;
                let batch: GemmBatch =
                    bytemuck::pod_read_unaligned(&uniforms.bytes[at..at + size_of::<GemmBatch>()]);
                let function = match kernel.buffers {
                    GemmBuffers::WorkParamsToWork => "gemm_to_work",
                    GemmBuffers::WorkWorkToGrads => "gemm_to_grads",
                };
                // A batch's GEMMs are independent: in turn, as its dispatch's workgroups.
                for (i, g) in batch.gemms[..gemms as usize].iter().enumerate() {
                    let (m, n, k) = (u64::from(g.m), u64::from(g.n), u64::from(g.k));
                    multiply_adds += m * n * k;
                    trips += (m * n).div_ceil(lanes) * (k + k / 32 + 4);
                    let word = (at + i * size_of::<GemmParams>()) / 4;
                    let _ = writeln!(
                        run,
                        "    gemm = gemm_at({word}u);\n    {function}(lane);\n    barrier();"
                    );
                }
            }
            Op::Subgroup {
                forward,
                unit,
                step,
                groups,
            } => {
                let at = unit as usize;
                let u: TrainUnit =
                    bytemuck::pod_read_unaligned(&uniforms.bytes[at..at + size_of::<TrainUnit>()]);
                let index = step / uniforms.step_align;
                // The backward's step counted from the end (its first dispatch starts at
                // T − 1), so that the text does not depend on T.
                let (call, index, steps) = if forward {
                    ("forward_sequence", format!("{index}u"), u.forward_steps)
                } else {
                    let from_end = u.seq_len - index;
                    (
                        "backward_sequence",
                        format!("u.seq_len - {from_end}u"),
                        u.backward_steps,
                    )
                };
                let steps = u64::from(steps.min(u.seq_len));
                let sequences = u64::from(groups[1]) * u64::from(groups[2]);
                let (g, h) = (config.gate_size() as u64, config.hidden_size as u64);
                // With what the steps compute besides: the input's projection (forward),
                // the head's input gradient (backward).
                multiply_adds += sequences
                    * steps
                    * match forward {
                        true => g * (h + u64::from(u.inputs)),
                        false => (g + u64::from(u.head_outputs)) * h,
                    };
                trips += sequences * steps * recurrence_trips;
                let _ = writeln!(
                    run,
                    "    u = unit_at({}u);\n    step = Step({index}, 0u, 0u, 0u);\n    \
                     for (var n = 0u; n < u.batch; n++) {{\n        \
                     for (var d = 0u; d < u.directions; d++) {{\n            \
                     {call}(n, d, lane);\n        }}\n    }}\n    barrier();",
                    unit / 4,
                );
            }
            // d h0 (asked for by `backward`, or between chunks) and the step kernels.
            Op::Step { .. } | Op::Program { .. } => return None,
        }
    }
    Some(OneDispatch {
        run,
        multiply_adds,
        trips,
    })
}

/// The loss of a whole training iteration's kernel (forward, loss, backward: see
/// `SequencePlan::record_iteration`), between its forward and its backward: `loss.wgsl`'s
/// passes as the program's functions, their `LossParams` at `LOSS_UNIFORM` (written per
/// call). Its target lies where its gradient goes (`train_program.wgsl`).
pub(crate) fn iteration_loss(
    spec: SubgroupRecurrence,
    cross_entropy: bool,
    rows: usize,
    features: usize,
) -> OneDispatch {
    let (rows, features) = (rows as u64, features as u64);
    // Per item (an element; a row of logits): its loop trips, and items per emulated
    // invocation of the loss kernel's workgroups of 64.
    let (items, per_item) = if cross_entropy {
        (rows, 3 * features + 1)
    } else {
        (rows * features, 1)
    };
    let per_lane = u64::from(LOSS_PER_LANE);
    let groups = items.div_ceil(64 * per_lane).max(1);
    // Each lane runs 64 / lanes of the emulated invocations, then its part of the tree.
    let emulated = 64u64.div_ceil(spec.lanes as u64);
    OneDispatch {
        run: format!(
            "    loss = loss_at({}u);\n    loss_pass(lane, {cross_entropy});\n    barrier();\n",
            LOSS_UNIFORM / 4
        ),
        multiply_adds: items * features,
        trips: groups * (emulated * (per_lane * per_item + 1) + 8),
    }
}

/// Where an iteration kernel's `LossParams` lie in the program's uniforms: first, so that the
/// kernel's text does not depend on where the other operations' values are.
pub(crate) const LOSS_UNIFORM: u32 = 0;

/// What `one_dispatch` writes for a forward and a loss's backward (a projection, the
/// recurrence, a head; the head's gradients, the recurrence backward, the weight gradients),
/// with both losses of a whole iteration, for the shader validation tests
/// (`testing::shader_sources`).
pub(crate) const EXAMPLE_PROGRAM: &str = "    loss = loss_at(0u);
    loss_pass(lane, false);
    barrier();
    loss_pass(lane, true);
    barrier();
    gemm = gemm_at(0u);
    gemm_to_work(lane);
    barrier();
    u = unit_at(64u);
    step = Step(0u, 0u, 0u, 0u);
    for (var n = 0u; n < u.batch; n++) {
        for (var d = 0u; d < u.directions; d++) {
            forward_sequence(n, d, lane);
        }
    }
    barrier();
    gemm = gemm_at(128u);
    gemm_to_grads(lane);
    barrier();
    u = unit_at(64u);
    step = Step(u.seq_len - 1u, 0u, 0u, 0u);
    for (var n = 0u; n < u.batch; n++) {
        for (var d = 0u; d < u.directions; d++) {
            backward_sequence(n, d, lane);
        }
    }
    barrier();
";
