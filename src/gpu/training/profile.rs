//! Where a training iteration's time goes: each dispatch of the forward and the backward
//! timed alone (`GpuTrainer::profile_programs`), for the benchmarks and the notes in
//! benches/README.md. Not part of the stable API.

use std::time::Instant;

use super::GpuTrainer;
use super::program::Op;
use crate::error::Result;
use crate::gpu::kernels::training::{GemmBatch, GemmForm};
use crate::gpu::scheduler::wait;

/// One dispatch of a training program, and its time.
#[derive(Clone, Debug)]
pub struct OpTiming {
    /// "forward" or "backward".
    pub program: &'static str,
    /// What the dispatch does: the kernel and its shape.
    pub op: String,
    /// Median milliseconds per dispatch, over `rounds` submissions of `repeats` dispatches.
    pub ms: f64,
}

impl GpuTrainer {
    /// Times each dispatch of the programs of the (T = `seq_len`, N = `batch`) workspace,
    /// which a training forward of that shape must have made: `repeats` copies of the dispatch
    /// in one pass, one submission, waited for; the median over `rounds` such submissions,
    /// less an empty submission's time, divided by `repeats`. The dispatches recompute on the
    /// workspace's values (gradients accumulate): its contents are not meaningful afterwards.
    /// Dispatch overhead counts, as it does in an iteration.
    #[doc(hidden)]
    pub fn profile_programs(
        &mut self,
        seq_len: usize,
        batch: usize,
        repeats: usize,
        rounds: usize,
    ) -> Result<Vec<OpTiming>> {
        let ctx = self.ctx.clone();
        let _gl = ctx.gl_guard();
        let ws = self.workspaces.get(&(seq_len, batch)).ok_or_else(|| {
            crate::RnnError::InvalidConfig(format!(
                "no training forward of (T, N) = ({seq_len}, {batch}) has run"
            ))
        })?;
        // `repeats` copies of `op` (or none) in one pass.
        let time = |op: Option<&Op>| -> Result<f64> {
            let program: Vec<Op> = op.map_or(Vec::new(), |op| vec![*op; repeats]);
            let mut samples = Vec::with_capacity(rounds);
            for _ in 0..rounds.max(1) {
                let mut encoder = ctx.device().create_command_encoder(&Default::default());
                ws.record(&ctx, &mut encoder, &program)?;
                let start = Instant::now();
                let submission = ctx.queue().submit([encoder.finish()]);
                wait(&ctx, submission)?;
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
            samples.sort_by(f64::total_cmp);
            Ok(samples[samples.len() / 2])
        };
        let empty = time(None)?;
        let uniforms = &ws.uniforms;
        let describe = |op: &Op| match *op {
            Op::Gemm {
                kernel,
                params,
                groups,
                gemms,
            } => {
                let at = params as usize;
                let batch: GemmBatch =
                    bytemuck::pod_read_unaligned(&uniforms[at..at + size_of::<GemmBatch>()]);
                let form = match kernel.form {
                    GemmForm::Blocks { .. } => "block GEMM",
                    GemmForm::Subgroup { .. } => "subgroup GEMM",
                };
                let shapes: Vec<String> = batch.gemms[..gemms as usize]
                    .iter()
                    .map(|g| format!("m={} n={} k={}", g.m, g.n, g.k))
                    .collect();
                format!(
                    "{form} {:?} {} ({}×{} workgroups)",
                    kernel.buffers,
                    shapes.join(" + "),
                    groups[0],
                    groups[1]
                )
            }
            Op::Step { entry, groups, .. } => {
                format!(
                    "{entry:?} ({}×{}×{} workgroups)",
                    groups[0], groups[1], groups[2]
                )
            }
            Op::Subgroup {
                forward, groups, ..
            } => format!(
                "register recurrence {} ({}×{} workgroups)",
                if forward { "forward" } else { "backward" },
                groups[1],
                groups[2]
            ),
            Op::Program { index } => format!("one-dispatch program {index}"),
        };
        let mut timings = Vec::new();
        for (program, ops) in [
            ("forward", &ws.forward[..]),
            ("backward", ws.backward.select(false, true)),
        ] {
            for op in ops {
                let ms = (time(Some(op))? - empty) / repeats as f64;
                timings.push(OpTiming {
                    program,
                    op: describe(op),
                    ms,
                });
            }
        }
        Ok(timings)
    }
}
