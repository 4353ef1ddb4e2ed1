//! Contexts made from a caller's own device, and what happens when the device goes away.

use wgpu_rnn::compare::compare;
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Recurrence, Rnn, RnnConfig, RnnError, RnnWeights,
    Tensor, testing,
};

/// Opens a device the way an application with its own renderer would.
fn callers_device() -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .ok()?;
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).ok()
}

fn model_and_input() -> (RnnConfig, RnnWeights, Tensor) {
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(6, 10)
    };
    let weights = RnnWeights::init(&config, 9).unwrap();
    let input: Vec<f32> = (0..5 * 2 * 6).map(|i| (i as f32 * 0.1).cos()).collect();
    (config, weights, Tensor::new(input, &[5, 2, 6]).unwrap())
}

#[test]
fn runs_on_a_callers_device() {
    // The shared test context proves an adapter exists (or skips / fails per RNN_REQUIRE_GPU).
    if testing::gpu("runs_on_a_callers_device").is_none() {
        return;
    }
    let (device, queue) = callers_device().expect("an adapter exists, so a device opens");
    let ctx = GpuContext::from_device(device, queue).unwrap();
    let (config, weights, input) = model_and_input();
    let cpu = CpuRnn::new(config.clone(), weights.clone())
        .unwrap()
        .forward(&input, None)
        .unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights)
        .unwrap()
        .forward(&input, None)
        .unwrap();
    let c = compare(gpu.output.data(), cpu.output.data(), 1e-4);
    assert!(c.passed(), "{c}");
}

#[test]
fn memory_is_used_in_place_where_the_host_owns_it() {
    let Some(ctx) = testing::gpu("memory_is_used_in_place_where_the_host_owns_it") else {
        return;
    };
    let info = ctx.adapter_info();
    println!("{}", ctx.describe());
    // wgpu's Vulkan backend always offers mappable storage buffers: a CPU adapter (lavapipe)
    // must then read and write them in place; GPUs (integrated ones until measured) never.
    let host_memory = info.device_type == wgpu::DeviceType::Cpu;
    if info.backend == wgpu::Backend::Vulkan {
        assert_eq!(ctx.unified_memory(), host_memory, "{info:?}");
    }
    if !host_memory {
        assert!(!ctx.unified_memory(), "{info:?}");
    }
    // A caller's device made without the feature stages its copies (that path is checked
    // against the CPU in `runs_on_a_callers_device`).
    let (device, queue) = callers_device().expect("an adapter exists, so a device opens");
    assert!(
        !GpuContext::from_device(device, queue)
            .unwrap()
            .unified_memory()
    );
}

#[test]
fn a_destroyed_device_is_reported_as_lost() {
    if testing::gpu("a_destroyed_device_is_reported_as_lost").is_none() {
        return;
    }
    let (device, queue) = callers_device().expect("an adapter exists, so a device opens");
    let ctx = GpuContext::from_device(device, queue).unwrap();
    let (config, weights, input) = model_and_input();
    let rnn = GpuRnn::new(&ctx, config, &weights).unwrap();
    rnn.forward(&input, None).unwrap();
    ctx.device().destroy();
    let error = rnn.forward(&input, None).unwrap_err();
    assert!(matches!(error, RnnError::DeviceLost(_)), "{error:?}");
    // A new context works again.
    let fresh = testing::gpu("a_destroyed_device_is_reported_as_lost").unwrap();
    let (config, weights, input) = model_and_input();
    GpuRnn::new(&fresh, config, &weights)
        .unwrap()
        .forward(&input, None)
        .unwrap();
}

#[test]
fn profiling_reports_gpu_time_where_the_adapter_can() {
    let Some(ctx) = testing::gpu("profiling_reports_gpu_time_where_the_adapter_can") else {
        return;
    };
    let (config, weights, input) = model_and_input();
    let rnn = GpuRnn::new(&ctx, config, &weights).unwrap();
    let plain = rnn.forward(&input, None).unwrap();
    assert_eq!(rnn.last_gpu_time(), None, "profiling is off by default");
    rnn.set_profiling(true);
    let start = std::time::Instant::now();
    let profiled = rnn.forward(&input, None).unwrap();
    let wall = start.elapsed();
    // The timestamps travel in the same readback buffer as the results: they must not
    // disturb them.
    assert_eq!(profiled.output.data(), plain.output.data());
    assert_eq!(profiled.h_n.data(), plain.h_n.data());
    let timed = ctx
        .device()
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY);
    match rnn.last_gpu_time() {
        Some(gpu) => {
            println!("gpu {gpu:?} of wall {wall:?}");
            assert!(
                timed && gpu > std::time::Duration::ZERO && gpu <= wall,
                "{gpu:?} vs {wall:?}"
            );
        }
        None => assert!(
            !timed,
            "the adapter has timestamp queries but no time was measured"
        ),
    }
}

#[test]
fn repeated_forwards_create_no_gpu_resources() {
    if testing::gpu("repeated_forwards_create_no_gpu_resources").is_none() {
        return;
    }
    // A context of its own: the shared one is busy with other tests' resources.
    let ctx = GpuContext::new().unwrap();
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(6, 10)
    };
    let weights = RnnWeights::init(&config, 9).unwrap();
    let rnn = GpuRnn::new(&ctx, config, &weights).unwrap();
    let input = Tensor::new(
        (0..7 * 3 * 6).map(|i| (i as f32).sin()).collect(),
        &[7, 3, 6],
    )
    .unwrap();
    let h0 = Tensor::zeros(&[2, 3, 10]).unwrap();
    rnn.forward(&input, None).unwrap();
    let warm = ctx.resource_counts();
    assert!(
        warm.buffers > 0 && warm.bind_groups > 0 && warm.pipelines > 0,
        "{warm:?}"
    );
    for _ in 0..3 {
        rnn.forward(&input, None).unwrap();
        rnn.forward(&input, Some(&h0)).unwrap();
        rnn.forward_with_lengths(&input, &[7, 2, 5], None).unwrap();
    }
    assert_eq!(
        ctx.resource_counts(),
        warm,
        "forwards of a known shape allocated"
    );
    // A new shape makes its workspace once, then nothing again.
    let other = Tensor::zeros(&[4, 1, 6]).unwrap();
    rnn.forward(&other, None).unwrap();
    let second = ctx.resource_counts();
    assert!(second.buffers > warm.buffers, "{second:?}");
    rnn.forward(&other, None).unwrap();
    rnn.forward(&input, None).unwrap();
    assert_eq!(ctx.resource_counts(), second);

    // A model whose layers compute their input projection in the step, on CPU adapters
    // with subgroups (their own pipeline and bind group): likewise.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(8, 16)
    };
    let weights = RnnWeights::init(&config, 10).unwrap();
    let fused = GpuRnn::new(&ctx, config, &weights).unwrap();
    let input = Tensor::new(
        (0..7 * 3 * 8).map(|i| (i as f32).cos()).collect(),
        &[7, 3, 8],
    )
    .unwrap();
    println!(
        "{} layer(s) fusing the input",
        fused.layers_fusing_input(7, 3).unwrap()
    );
    fused.forward(&input, None).unwrap();
    let warm = ctx.resource_counts();
    for _ in 0..3 {
        fused.forward(&input, None).unwrap();
        fused
            .forward_with_lengths(&input, &[7, 2, 5], None)
            .unwrap();
    }
    assert_eq!(ctx.resource_counts(), warm, "fused forwards allocated");
}

#[test]
fn layers_fusing_their_input_allocate_no_projections() {
    if testing::gpu("layers_fusing_their_input_allocate_no_projections").is_none() {
        return;
    }
    // Two stacked unidirectional layers whose inputs are multiples of four: both fuse on
    // CPU adapters with subgroups; elsewhere neither does.
    let ctx = GpuContext::new().unwrap();
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(12, 16)
    };
    let weights = RnnWeights::init(&config, 11).unwrap();
    let auto = GpuRnn::with_options(
        &ctx,
        config.clone(),
        &weights,
        GpuOptions::recurrence(Recurrence::Auto),
    )
    .unwrap();
    let per_step = GpuRnn::with_options(
        &ctx,
        config,
        &weights,
        GpuOptions::recurrence(Recurrence::PerStep),
    )
    .unwrap();
    let (steps, batch) = (300, 3);
    let input = Tensor::new(
        (0..steps * batch * 12)
            .map(|i| (i as f32 * 0.3).sin())
            .collect(),
        &[steps, batch, 12],
    )
    .unwrap();
    let allocated = |model: &GpuRnn| {
        let before = ctx.resource_counts().buffer_bytes;
        model.forward(&input, None).unwrap();
        ctx.resource_counts().buffer_bytes - before
    };
    // The two paths make the same buffers but for P, the projections: T·N·H floats,
    // against the 16 bytes a fused forward keeps bound.
    let (fused_bytes, per_step_bytes) = (allocated(&auto), allocated(&per_step));
    let fused = auto.layers_fusing_input(steps, batch).unwrap();
    println!("{fused} of 2 layers fuse their input");
    assert_eq!(per_step.layers_fusing_input(steps, batch).unwrap(), 0);
    let projections = (steps * batch * 16 * 4) as u64;
    println!("workspace bytes: {fused_bytes} fused, {per_step_bytes} per step");
    if fused == 2 {
        assert_eq!(per_step_bytes - fused_bytes, projections - 16);
    } else {
        assert_eq!(per_step_bytes, fused_bytes);
    }

    // The time-chunking budget counts P only where it is allocated: the smallest budget
    // that holds the whole sequence at once is smaller by it.
    let smallest_whole = |model: &GpuRnn| {
        let (mut low, mut high) = (1u64, 1u64 << 32);
        while low < high {
            let mid = (low + high) / 2;
            model.set_workspace_budget(Some(mid));
            match model.time_chunk(steps, batch) {
                Ok(chunk) if chunk == steps => high = mid,
                _ => low = mid + 1,
            }
        }
        low
    };
    let (fused_budget, per_step_budget) = (smallest_whole(&auto), smallest_whole(&per_step));
    println!("smallest budget for T = {steps}: {fused_budget} fused, {per_step_budget} per step");
    if fused == 2 {
        assert_eq!(per_step_budget - fused_budget, projections);
    } else {
        assert_eq!(per_step_budget, fused_budget);
    }
}

/// `Duration::MAX` is a fair way to say "no timeout": the wait must treat a deadline beyond
/// what the clock can represent as none, not overflow computing it. A context of its own: the
/// timeout is context-wide and the shared test context serves other tests.
#[test]
fn an_unbounded_timeout_waits_without_overflowing() {
    if testing::gpu("an_unbounded_timeout_waits_without_overflowing").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    ctx.set_timeout(std::time::Duration::MAX);
    let (config, weights, input) = model_and_input();
    let want = CpuRnn::new(config.clone(), weights.clone())
        .unwrap()
        .forward(&input, None)
        .unwrap();
    let gpu = GpuRnn::new(&ctx, config, &weights).unwrap();
    // Twice: the second forward also waits for the input upload's map of the first.
    for round in 0..2 {
        let got = gpu.forward(&input, None).unwrap();
        let c = compare(got.output.data(), want.output.data(), 1e-4);
        assert!(c.passed(), "round {round}: {c}");
    }
}

/// A `WGPU_ADAPTER_NAME` that no adapter matches is `NoAdapter` naming the adapters there
/// are, not a panic inside wgpu; a matching one, in any case, opens that adapter. Through
/// the name parameter `GpuContext::new` reads the variable into: setting the variable would
/// change the environment of the tests running beside this one.
#[test]
fn an_adapter_name_that_matches_nothing_is_no_adapter() {
    let error = GpuContext::with_adapter_name(Some("no such adapter, surely")).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, RnnError::NoAdapter(_)),
        "{error:?}: {message}"
    );
    assert!(message.contains("no such adapter, surely"), "{message}");
    let Some(ctx) = testing::gpu("an_adapter_name_that_matches_nothing_is_no_adapter") else {
        return;
    };
    let name = &ctx.adapter_info().name;
    assert!(message.contains(&format!("{name:?}")), "{message}");
    // The first few characters, upper-cased: matching ignores case.
    let part: String = name.chars().take(6).collect();
    let chosen = GpuContext::with_adapter_name(Some(&part.to_uppercase())).unwrap();
    assert!(
        chosen
            .adapter_info()
            .name
            .to_lowercase()
            .contains(&part.to_lowercase()),
        "{}",
        chosen.describe()
    );
}
