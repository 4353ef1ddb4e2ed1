//! `ExceedsLimits` names the limit that was hit, its value, and what would fit: the adapter's
//! buffer or workgroup limits, or the caller's workspace budget, each in its own words.

use wgpu_rnn::{GpuContext, GpuRnn, Limit, Rnn, RnnConfig, RnnError, RnnWeights, Tensor, testing};

/// A context whose device allows buffers of at most `bytes` (as a small GPU might).
fn small_buffer_context(bytes: u64) -> Option<GpuContext> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .ok()?;
    let limits = wgpu::Limits {
        max_buffer_size: bytes,
        max_storage_buffer_binding_size: bytes.min(u64::from(u32::MAX)) as _,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .ok()?;
    GpuContext::from_device(device, queue).ok()
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
#[test]
fn too_many_sequences_for_the_workgroup_limit_say_so() {
    let Some(ctx) = testing::gpu("too_many_sequences_for_the_workgroup_limit_say_so") else {
        return;
    };
    let gpu = model(&ctx, RnnConfig::new(4, 4)).unwrap();
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
}

/// A workspace budget below one timestep's needs: the caller's budget, not the adapter,
/// refused it, and the message says how much budget would do.
#[test]
fn a_budget_too_small_for_one_timestep_names_the_budget() {
    let Some(ctx) = testing::gpu("a_budget_too_small_for_one_timestep_names_the_budget") else {
        return;
    };
    let gpu = model(&ctx, RnnConfig::new(3, 8)).unwrap();
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
}

fn needed_of(hint: &str) -> u64 {
    hint.split_whitespace()
        .find_map(|word| word.parse().ok())
        .expect("a number in the hint")
}

/// Weights bigger than the device's largest buffer: no sequence length helps, and the
/// message must not suggest one.
#[test]
fn weights_beyond_the_buffer_limit_ask_for_a_smaller_model() {
    if testing::gpu("weights_beyond_the_buffer_limit_ask_for_a_smaller_model").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    // W_ih is 256 × 128 floats: 128 KiB.
    let error = model(&ctx, RnnConfig::new(128, 256)).unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("sequence"), "{message}");
    assert!(!message.contains("batch"), "{message}");
    assert_limit(
        error,
        Limit::StorageBinding,
        64 << 10,
        "smaller hidden or input size",
    );
}

/// A batch whose hidden state alone exceeds the device's largest buffer: the message names
/// that buffer limit and the largest batch that fits.
#[test]
fn a_state_beyond_the_buffer_limit_asks_for_a_smaller_batch() {
    if testing::gpu("a_state_beyond_the_buffer_limit_asks_for_a_smaller_batch").is_none() {
        return;
    }
    let ctx = small_buffer_context(64 << 10).expect("a device with 64 KiB buffers");
    let gpu = model(&ctx, RnnConfig::new(3, 8)).unwrap();
    // Per sequence: 8 floats of h, in two halves: 64 bytes; 64 KiB hold 1024 sequences.
    let error = gpu.time_chunk(1, 2000).unwrap_err();
    assert_limit(
        error,
        Limit::StorageBinding,
        64 << 10,
        "at most 1024 sequences",
    );
    // 1024 sequences' state fits; their output beside it in the readback does not, which
    // the next check says in its own words.
    let error = gpu.time_chunk(1, 1024).unwrap_err();
    assert_limit(
        error,
        Limit::StorageBinding,
        64 << 10,
        "at most 1023 sequences",
    );
    assert!(gpu.time_chunk(1, 1023).is_ok());
}
