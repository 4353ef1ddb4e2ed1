//! `ExceedsLimits` names the limit that was hit, its value, and what would fit: the adapter's
//! buffer or workgroup limits, or the caller's workspace budget, each in its own words; for
//! every mode (an LSTM's state, h and c, is twice an RNN's or GRU's of the same size).

mod support;

use support::{Rng, mode_name, random_state, small_buffer_context};
use wgpu_rnn::{
    GpuContext, GpuRnn, Limit, Rnn, RnnConfig, RnnError, RnnMode, RnnWeights, Tensor, testing,
};

/// The shared test context of the test `test` running `mode`, named as `for_each_mode!`
/// names it.
fn gpu(test: &str, mode: RnnMode) -> Option<GpuContext> {
    testing::gpu(&format!("{test}::{}", mode_name(mode)))
}

fn model(ctx: &GpuContext, config: RnnConfig) -> wgpu_rnn::Result<GpuRnn> {
    let weights = RnnWeights::init(&config, 1)?;
    GpuRnn::new(ctx, config, &weights)
}

/// Checks that `error` is `ExceedsLimits` of `limit` allowing `allowed`, that its message
/// names that limit and says what would fit (`hint`), and that it names no other limit.
fn assert_limit(error: RnnError, limit: Limit, allowed: u64, hint: &str) {
    let message = error.to_string();
    println!("{message}");
    match error {
        RnnError::ExceedsLimits {
            limit: got,
            allowed: got_allowed,
            needed,
            ..
        } => {
            assert_eq!(got, limit, "{message}");
            assert_eq!(got_allowed, allowed, "{message}");
            assert!(needed > allowed, "needs no more than allowed: {message}");
        }
        other => panic!("expected ExceedsLimits of {limit:?}, got {other:?}"),
    }
    assert!(message.contains(&limit.to_string()), "{message}");
    assert!(message.contains(&allowed.to_string()), "{message}");
    assert!(message.contains(hint), "no hint {hint:?}: {message}");
    let others = [
        Limit::StorageBinding,
        Limit::BufferSize,
        Limit::WorkgroupsPerDimension,
        Limit::ElementIndex,
        Limit::WorkspaceBudget,
        Limit::TimeChunk,
    ];
    for other in others.into_iter().filter(|&o| o != limit) {
        assert!(
            !message.contains(&other.to_string()),
            "names {other:?}: {message}"
        );
    }
}

/// So many sequences that the projection's workgroups for one timestep (N / 32) exceed the
/// dispatch limit, while one frame of them fits a buffer: the message used to quote the
/// buffer limit ("needs 48000000 but the adapter allows at most 134217728").
fn too_many_sequences_for_the_workgroup_limit_say_so(mode: RnnMode) {
    let Some(ctx) = gpu("too_many_sequences_for_the_workgroup_limit_say_so", mode) else {
        return;
    };
    let gpu = model(&ctx, RnnConfig::new(mode, 4, 4)).unwrap();
    let groups = u64::from(ctx.limits().max_compute_workgroups_per_dimension);
    let batch = (groups * 32 + 1) as usize;
    let error = gpu.time_chunk(1, batch).unwrap_err();
    let hint = format!("at most {} sequences", groups * 32);
    assert_limit(error, Limit::WorkgroupsPerDimension, groups, &hint);

    // Fewer, but still more than one step workgroup per sequence allows.
    let batch = groups as usize + 1;
    let input = Tensor::new(vec![0.0; batch * 4], &[1, batch, 4]).unwrap();
    let error = gpu.forward(&input, None).unwrap_err();
    let hint = format!("at most {groups} sequences");
    assert_limit(error, Limit::WorkgroupsPerDimension, groups, &hint);
    // A given state (h0, and c0 for an LSTM) changes nothing: the same limit, the same words.
    let state = random_state(&mut Rng(1), gpu.config(), batch);
    let error = gpu.forward(&input, Some(state.hx())).unwrap_err();
    assert_limit(error, Limit::WorkgroupsPerDimension, groups, &hint);
}
for_each_mode!(
    too_many_sequences_for_the_workgroup_limit_say_so,
    too_many_sequences_for_the_workgroup_limit_say_so
);

/// A workspace budget below one timestep's needs: the caller's budget, not the adapter,
/// refused it, and the message says how much budget would do.
fn a_budget_too_small_for_one_timestep_names_the_budget(mode: RnnMode) {
    let Some(ctx) = gpu("a_budget_too_small_for_one_timestep_names_the_budget", mode) else {
        return;
    };
    let gpu = model(&ctx, RnnConfig::new(mode, 3, 8)).unwrap();
    gpu.set_workspace_budget(Some(100));
    let input = Tensor::new(vec![0.0; 10 * 3], &[10, 1, 3]).unwrap();
    let error = gpu.forward(&input, None).unwrap_err();
    let RnnError::ExceedsLimits { needed, .. } = &error else {
        panic!("expected ExceedsLimits, got {error:?}");
    };
    let hint = format!("raise the budget to at least {needed} bytes");
    assert_limit(error, Limit::WorkspaceBudget, 100, &hint);
    // And that budget is indeed enough.
    let enough = gpu.time_chunk(10, 1);
    gpu.set_workspace_budget(Some(needed_of(&hint)));
    assert!(gpu.time_chunk(10, 1).is_ok(), "{enough:?}");
    assert!(gpu.forward(&input, None).is_ok());
    let state = random_state(&mut Rng(2), gpu.config(), 1);
    let out = gpu.forward(&input, Some(state.hx())).unwrap();
    assert_eq!(out.c_n.is_some(), mode.has_cell_state(), "{mode:?}");
}
for_each_mode!(
    a_budget_too_small_for_one_timestep_names_the_budget,
    a_budget_too_small_for_one_timestep_names_the_budget
);

fn needed_of(hint: &str) -> u64 {
    hint.split_whitespace()
        .find_map(|word| word.parse().ok())
        .expect("a number in the hint")
}

/// Weights bigger than the device's largest buffer: no sequence length helps, and the
/// message must not suggest one. One small-buffer device for the four modes (opening a
/// device is the cost here).
#[test]
fn weights_beyond_the_buffer_limit_ask_for_a_smaller_model() {
    if testing::gpu("weights_beyond_the_buffer_limit_ask_for_a_smaller_model").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    for mode in support::MODES {
        // W_ih is G·256 × 128 floats: 128 KiB for an RNN, 512 KiB for an LSTM, 384 for a GRU.
        let error = model(&ctx, RnnConfig::new(mode, 128, 256)).unwrap_err();
        let message = error.to_string();
        assert!(!message.contains("sequence"), "{mode:?}: {message}");
        assert!(!message.contains("batch"), "{mode:?}: {message}");
        assert_limit(
            error,
            Limit::StorageBinding,
            64 << 10,
            "smaller hidden or input size",
        );
    }
}

/// A batch whose hidden state alone exceeds the device's largest buffer: the message names
/// that buffer limit and the largest batch that fits. One small-buffer device for the four
/// modes.
#[test]
fn a_state_beyond_the_buffer_limit_asks_for_a_smaller_batch() {
    if testing::gpu("a_state_beyond_the_buffer_limit_asks_for_a_smaller_batch").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    for mode in support::MODES {
        state_beyond_the_buffer_limit(&ctx, mode);
    }
}

fn state_beyond_the_buffer_limit(ctx: &GpuContext, mode: RnnMode) {
    let gpu = model(ctx, RnnConfig::new(mode, 3, 8)).unwrap();
    // Per sequence: 8 floats of h (and 8 of c for an LSTM), in two halves: 64 bytes (128 for
    // an LSTM); 64 KiB hold 1024 sequences (512).
    let fits = if mode.has_cell_state() { 512 } else { 1024 };
    let error = gpu.time_chunk(1, 2000).unwrap_err();
    let hint = format!("at most {fits} sequences");
    assert_limit(error, Limit::StorageBinding, 64 << 10, &hint);
    let error = gpu.time_chunk(1, fits + 1).unwrap_err();
    assert_limit(error, Limit::StorageBinding, 64 << 10, &hint);
    // What the next limit is at the batch whose state just fits depends on the mode.
    match mode {
        RnnMode::Rnn(_) => {
            // 1024 sequences' state fits; their output beside it in the readback (8 + 8
            // floats each, and the timestamps) does not, which the next check says in its
            // own words.
            let error = gpu.time_chunk(1, fits).unwrap_err();
            assert_limit(
                error,
                Limit::StorageBinding,
                64 << 10,
                "at most 1023 sequences",
            );
            assert!(gpu.time_chunk(1, fits - 1).is_ok(), "{mode:?}");
        }
        RnnMode::Gru => {
            // 1024 sequences' state fits, but one timestep of their input projections (the
            // three gates: 24 floats a sequence) does not: 64 KiB hold 682 of them.
            let error = gpu.time_chunk(1, fits).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("24 features each"), "{message}");
            assert_limit(
                error,
                Limit::StorageBinding,
                64 << 10,
                "at most 682 sequences",
            );
            assert!(gpu.time_chunk(1, 682).is_ok(), "{mode:?}");
        }
        RnnMode::Lstm => {
            // 512 sequences fit every other buffer: their projections (four gates, 32
            // floats a sequence) fill 64 KiB exactly, and the readback (8 output floats
            // beside 16 of state) is smaller than the state's two halves.
            assert!(gpu.time_chunk(1, fits).is_ok(), "{mode:?}");
        }
    }
}
