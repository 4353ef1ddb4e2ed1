//! Contexts made from a caller's own device, and what happens when the device goes away; for
//! every mode wherever a model runs (the adapter's own properties are checked once).

mod support;

use support::{MODES, Rng, State, check_output, mode_name, random_state};
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuOptions, GpuRnn, Recurrence, Rnn, RnnConfig, RnnError, RnnMode,
    RnnWeights, Tensor, testing,
};

/// The shared test context of the test `test` running `mode`, named `test::mode` as
/// `for_each_mode!` names it.
fn gpu(test: &str, mode: RnnMode) -> Option<GpuContext> {
    testing::gpu(&format!("{test}::{}", mode_name(mode)))
}

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

/// A small bidirectional model of `mode` (both directions, so that both halves of the state
/// travel), its input, and a random initial state (h0, and c0 for an LSTM).
fn model_and_input(mode: RnnMode) -> (RnnConfig, RnnWeights, Tensor, State) {
    let config = RnnConfig {
        bidirectional: true,
        ..RnnConfig::new(mode, 6, 10)
    };
    let weights = RnnWeights::init(&config, 9).unwrap();
    let input: Vec<f32> = (0..5 * 2 * 6).map(|i| (i as f32 * 0.1).cos()).collect();
    let state = random_state(&mut Rng(3), &config, 2);
    (
        config,
        weights,
        Tensor::new(input, &[5, 2, 6]).unwrap(),
        state,
    )
}

/// Whether the layer plans (fused input, projecting ahead) apply on `ctx`'s adapter: a CPU
/// adapter with subgroups; elsewhere no layer takes one.
fn plans_apply(ctx: &GpuContext) -> bool {
    let has_subgroups = ctx.device().features().contains(wgpu::Features::SUBGROUP);
    has_subgroups && ctx.adapter_info().device_type == wgpu::DeviceType::Cpu
}

/// Every mode on one caller's device (opening a device and compiling on it is the cost here,
/// so the modes share it), from zeros and from a given state, against the CPU.
#[test]
fn runs_on_a_callers_device() {
    // The shared test context proves an adapter exists (or skips / fails per RNN_REQUIRE_GPU).
    if testing::gpu("runs_on_a_callers_device").is_none() {
        return;
    }
    let (device, queue) = callers_device().expect("an adapter exists, so a device opens");
    let ctx = GpuContext::from_device(device, queue).unwrap();
    for mode in MODES {
        let (config, weights, input, state) = model_and_input(mode);
        let cpu = CpuRnn::new(config.clone(), &weights).unwrap();
        let gpu = GpuRnn::new(&ctx, config, &weights).unwrap();
        for hx in [None, Some(state.hx())] {
            let want = cpu.forward(&input, hx).unwrap();
            let got = gpu.forward(&input, hx).unwrap();
            let from = if hx.is_some() {
                "a given state"
            } else {
                "zeros"
            };
            check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?} from {from}: {e}"));
        }
    }
}

/// No model: how the adapter's memory is used does not depend on the mode.
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

/// A model of every mode on one caller's device: once the device is destroyed, each of them
/// (from zeros and from a given state) reports it lost; a new context works again.
#[test]
fn a_destroyed_device_is_reported_as_lost() {
    let Some(fresh) = testing::gpu("a_destroyed_device_is_reported_as_lost") else {
        return;
    };
    let (device, queue) = callers_device().expect("an adapter exists, so a device opens");
    let ctx = GpuContext::from_device(device, queue).unwrap();
    let models: Vec<_> = MODES
        .iter()
        .map(|&mode| {
            let (config, weights, input, state) = model_and_input(mode);
            let rnn = GpuRnn::new(&ctx, config.clone(), &weights).unwrap();
            rnn.forward(&input, Some(state.hx())).unwrap();
            (mode, config, weights, input, state, rnn)
        })
        .collect();
    ctx.device().destroy();
    for (mode, config, weights, input, state, rnn) in &models {
        for hx in [None, Some(state.hx())] {
            let error = rnn.forward(input, hx).unwrap_err();
            assert!(
                matches!(error, RnnError::DeviceLost(_)),
                "{mode:?}, state {hx:?}: {error:?}"
            );
        }
        // A new context (the shared one) works again.
        let want = CpuRnn::new(config.clone(), weights)
            .unwrap()
            .forward(input, Some(state.hx()))
            .unwrap();
        let got = GpuRnn::new(&fresh, config.clone(), weights)
            .unwrap()
            .forward(input, Some(state.hx()))
            .unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?}, after: {e}"));
    }
}

fn profiling_reports_gpu_time_where_the_adapter_can(mode: RnnMode) {
    let Some(ctx) = gpu("profiling_reports_gpu_time_where_the_adapter_can", mode) else {
        return;
    };
    let (config, weights, input, state) = model_and_input(mode);
    let rnn = GpuRnn::new(&ctx, config, &weights).unwrap();
    let plain = rnn.forward(&input, Some(state.hx())).unwrap();
    assert_eq!(rnn.last_gpu_time(), None, "profiling is off by default");
    rnn.set_profiling(true);
    let start = std::time::Instant::now();
    let profiled = rnn.forward(&input, Some(state.hx())).unwrap();
    let wall = start.elapsed();
    // The timestamps travel in the same readback buffer as the results (an LSTM's c_n
    // included): they must not disturb them.
    assert_eq!(profiled, plain, "{mode:?}");
    assert_eq!(profiled.c_n.is_some(), mode.has_cell_state());
    let timed = ctx
        .device()
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY);
    match rnn.last_gpu_time() {
        Some(gpu) => {
            println!("{mode:?}: gpu {gpu:?} of wall {wall:?}");
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
for_each_mode!(
    profiling_reports_gpu_time_where_the_adapter_can,
    profiling_reports_gpu_time_where_the_adapter_can
);

/// Every mode in turn on a context of its own (the shared one is busy with other tests'
/// resources; one context for the four modes, as a fresh context's compiles are the cost).
#[test]
fn repeated_forwards_create_no_gpu_resources() {
    if testing::gpu("repeated_forwards_create_no_gpu_resources").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    for mode in MODES {
        repeated_forwards_allocate_nothing(&ctx, mode);
    }
}

fn repeated_forwards_allocate_nothing(ctx: &GpuContext, mode: RnnMode) {
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 6, 10)
    };
    let weights = RnnWeights::init(&config, 9).unwrap();
    let rnn = GpuRnn::new(ctx, config.clone(), &weights).unwrap();
    let input = Tensor::new(
        (0..7 * 3 * 6).map(|i| (i as f32).sin()).collect(),
        &[7, 3, 6],
    )
    .unwrap();
    // h0, and c0 for an LSTM: the state upload must reuse its buffers too.
    let state = random_state(&mut Rng(4), &config, 3);
    rnn.forward(&input, None).unwrap();
    let warm = ctx.resource_counts();
    assert!(
        warm.buffers > 0 && warm.bind_groups > 0 && warm.pipelines > 0,
        "{warm:?}"
    );
    for _ in 0..3 {
        rnn.forward(&input, None).unwrap();
        rnn.forward(&input, Some(state.hx())).unwrap();
        rnn.forward_with_lengths(&input, &[7, 2, 5], None).unwrap();
        rnn.forward_with_lengths(&input, &[1, 7, 3], Some(state.hx()))
            .unwrap();
    }
    assert_eq!(
        ctx.resource_counts(),
        warm,
        "{mode:?}: forwards of a known shape allocated"
    );
    // A new shape makes its workspace once, then nothing again.
    let other = Tensor::zeros(&[4, 1, 6]).unwrap();
    rnn.forward(&other, None).unwrap();
    let second = ctx.resource_counts();
    assert!(second.buffers > warm.buffers, "{mode:?}: {second:?}");
    rnn.forward(&other, None).unwrap();
    rnn.forward(&input, None).unwrap();
    assert_eq!(ctx.resource_counts(), second, "{mode:?}");

    // A shape whose Elman layers compute their input projection in the step, on CPU adapters
    // with subgroups (their own pipeline and bind group): likewise. The gated cells run it on
    // their persistent kernel, which has no fused form (no layer fuses).
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 8, 16)
    };
    let weights = RnnWeights::init(&config, 10).unwrap();
    let fused = GpuRnn::new(ctx, config, &weights).unwrap();
    let input = Tensor::new(
        (0..7 * 3 * 8).map(|i| (i as f32).cos()).collect(),
        &[7, 3, 8],
    )
    .unwrap();
    let layers = fused.layers_fusing_input(7, 3).unwrap();
    println!("{mode:?}: {layers} layer(s) fusing the input");
    let want = match mode {
        RnnMode::Rnn(_) if plans_apply(ctx) => 2,
        _ => 0,
    };
    assert_eq!(layers, want, "{mode:?}");
    fused.forward(&input, None).unwrap();
    let warm = ctx.resource_counts();
    for _ in 0..3 {
        fused.forward(&input, None).unwrap();
        fused
            .forward_with_lengths(&input, &[7, 2, 5], None)
            .unwrap();
    }
    assert_eq!(
        ctx.resource_counts(),
        warm,
        "{mode:?}: fused forwards allocated"
    );
}

/// Every mode in turn on a context of its own, whose buffer bytes only this test's
/// forwards change.
#[test]
fn layers_fusing_their_input_allocate_no_projections() {
    if testing::gpu("layers_fusing_their_input_allocate_no_projections").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    for mode in MODES {
        fusing_allocates_no_projections(&ctx, mode);
    }
}

fn fusing_allocates_no_projections(ctx: &GpuContext, mode: RnnMode) {
    // Two stacked unidirectional layers whose inputs are multiples of four: both fuse on
    // CPU adapters with subgroups for an Elman RNN; elsewhere, and for the gated cells
    // (whose persistent kernel has no fused form), neither does.
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 12, 16)
    };
    let weights = RnnWeights::init(&config, 11).unwrap();
    let auto = GpuRnn::with_options(
        ctx,
        config.clone(),
        &weights,
        GpuOptions::recurrence(Recurrence::Auto),
    )
    .unwrap();
    let per_step = GpuRnn::with_options(
        ctx,
        config.clone(),
        &weights,
        GpuOptions::recurrence(Recurrence::PerStep),
    )
    .unwrap();
    // Every mode at H = 16 picks the persistent kernel: the comparison below is persistent
    // against per step.
    assert_eq!(auto.recurrence(), Recurrence::Persistent, "{mode:?}");
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
    let (fused_bytes, per_step_bytes) = (allocated(&auto), allocated(&per_step));
    let fused = auto.layers_fusing_input(steps, batch).unwrap();
    println!("{mode:?}: {fused} of 2 layers fuse their input");
    assert_eq!(per_step.layers_fusing_input(steps, batch).unwrap(), 0);
    let fusing = matches!(mode, RnnMode::Rnn(_)) && plans_apply(ctx);
    assert_eq!(fused, if fusing { 2 } else { 0 }, "{mode:?}");
    // The two paths make the same buffers but for P, the projections: T·N·G·H floats,
    // against the 16 bytes a fused forward keeps bound.
    let projections = (steps * batch * config.gate_size() * 4) as u64;
    println!("{mode:?}: workspace bytes: {fused_bytes} persistent, {per_step_bytes} per step");
    if fusing {
        assert_eq!(per_step_bytes - fused_bytes, projections - 16);
    } else {
        assert_eq!(per_step_bytes, fused_bytes, "{mode:?}");
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
    println!(
        "{mode:?}: smallest budget for T = {steps}: {fused_budget} persistent, \
         {per_step_budget} per step"
    );
    if fusing {
        assert_eq!(per_step_budget - fused_budget, projections);
    } else {
        assert_eq!(per_step_budget, fused_budget, "{mode:?}");
    }
    // Both run the sequence in those budgets, and agree with the CPU.
    let want = CpuRnn::new(config, &weights)
        .unwrap()
        .forward(&input, None)
        .unwrap();
    for model in [&auto, &per_step] {
        let got = model.forward(&input, None).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

/// `Duration::MAX` is a fair way to say "no timeout": the wait must treat a deadline beyond
/// what the clock can represent as none, not overflow computing it. A context of its own: the
/// timeout is context-wide and the shared test context serves other tests. Every mode on it.
#[test]
fn an_unbounded_timeout_waits_without_overflowing() {
    if testing::gpu("an_unbounded_timeout_waits_without_overflowing").is_none() {
        return;
    }
    let ctx = GpuContext::new().unwrap();
    ctx.set_timeout(std::time::Duration::MAX);
    for mode in MODES {
        waits_without_a_deadline(&ctx, mode);
    }
}

fn waits_without_a_deadline(ctx: &GpuContext, mode: RnnMode) {
    let (config, weights, input, state) = model_and_input(mode);
    let want = CpuRnn::new(config.clone(), &weights)
        .unwrap()
        .forward(&input, Some(state.hx()))
        .unwrap();
    let gpu = GpuRnn::new(ctx, config, &weights).unwrap();
    // Twice: the second forward also waits for the input upload's map of the first.
    for round in 0..2 {
        let got = gpu.forward(&input, Some(state.hx())).unwrap();
        check_output(&got, &want).unwrap_or_else(|e| panic!("{mode:?}, round {round}: {e}"));
    }
}

/// A `WGPU_ADAPTER_NAME` that no adapter matches is `NoAdapter` naming the adapters there
/// are, not a panic inside wgpu; a matching one, in any case, opens that adapter. Through
/// the name parameter `GpuContext::new` reads the variable into: setting the variable would
/// change the environment of the tests running beside this one. No model: choosing an
/// adapter does not depend on the mode.
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
