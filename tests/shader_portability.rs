//! Every WGSL source the library can hand to wgpu (`testing::shader_sources()`: the fixed
//! shaders and any generated specialisations) must translate for every backend wgpu has, not
//! only the one this machine runs: SPIR-V (Vulkan), MSL (Metal), HLSL (DX12, both compilers'
//! shader models) and GLSL (GL / GLES). Runs without a GPU; naga does all the work.
//!
//! The backend options follow what wgpu-hal passes for each backend, with the bounds-check
//! policy that generates the most code (`ReadZeroSkipWrite`, which also needs buffer sizes on
//! Metal), so that a translation wgpu could attempt on some machine is attempted here.

mod support;

use naga::back::{glsl, hlsl, msl, spv};
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ShaderStage};

/// What a backend needs to know about one shader to translate it.
struct Shader<'a> {
    name: &'a str,
    module: Module,
    info: ModuleInfo,
    /// Compute entry points.
    entry_points: Vec<String>,
}

fn policies() -> BoundsCheckPolicies {
    BoundsCheckPolicies {
        index: BoundsCheckPolicy::ReadZeroSkipWrite,
        buffer: BoundsCheckPolicy::ReadZeroSkipWrite,
        image_load: BoundsCheckPolicy::ReadZeroSkipWrite,
        binding_array: BoundsCheckPolicy::Unchecked,
    }
}

/// Parses and validates one source. Validation allows every capability: a specialisation
/// may use a feature (subgroups, f16...) that only some adapters have, and the library only
/// builds it where the adapter has it; each backend writer below still rejects what it cannot
/// express.
fn front_end<'a>(name: &'a str, source: &str) -> Result<Shader<'a>, String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| format!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| format!("{name}: validation error:\n{}", e.emit_to_string(source)))?;
    let entry_points: Vec<String> = module
        .entry_points
        .iter()
        .filter(|e| e.stage == ShaderStage::Compute)
        .map(|e| e.name.clone())
        .collect();
    if entry_points.is_empty() {
        return Err(format!("{name}: no compute entry point"));
    }
    Ok(Shader {
        name,
        module,
        info,
        entry_points,
    })
}

/// The (group, binding) of every resource global, with whether it is writable storage, in
/// declaration order.
fn resources(module: &Module) -> Vec<(naga::ResourceBinding, AddressSpace)> {
    module
        .global_variables
        .iter()
        .filter_map(|(_, g)| g.binding.map(|b| (b, g.space)))
        .collect()
}

fn is_storage(space: AddressSpace) -> bool {
    matches!(space, AddressSpace::Storage { .. })
}

fn spirv(shader: &Shader<'_>, entry_point: &str) -> Result<(), String> {
    // Vulkan 1.0's SPIR-V, which every Vulkan driver wgpu supports accepts.
    let options = spv::Options {
        lang_version: (1, 0),
        bounds_check_policies: policies(),
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry_point.into(),
    };
    let words = spv::write_vec(&shader.module, &shader.info, &options, Some(&pipeline))
        .map_err(|e| format!("{e:?}"))?;
    // The SPIR-V magic number, and more than a header.
    if words.first() != Some(&0x0723_0203) || words.len() < 20 {
        return Err(format!("not a SPIR-V module ({} words)", words.len()));
    }
    Ok(())
}

fn metal(shader: &Shader<'_>, entry_point: &str, version: (u8, u8)) -> Result<(), String> {
    // Slots as wgpu-hal assigns them: one buffer slot per binding, then the sizes buffer
    // that ReadZeroSkipWrite needs for runtime-sized arrays. No missing binding is faked.
    // Textures take texture slots of their own.
    let mut slots = msl::EntryPointResources::default();
    let (mut next, mut next_texture) = (0u8, 0u8);
    for (binding, space) in resources(&shader.module) {
        let mutable = matches!(space, AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE));
        let target = if space == AddressSpace::Handle {
            next_texture += 1;
            msl::BindTarget {
                texture: Some(next_texture - 1),
                ..Default::default()
            }
        } else {
            next += 1;
            msl::BindTarget {
                buffer: Some(next - 1),
                mutable,
                ..Default::default()
            }
        };
        slots.resources.insert(binding, target);
    }
    slots.sizes_buffer = Some(next);
    let options = msl::Options {
        lang_version: version,
        per_entry_point_map: [(entry_point.to_string(), slots)].into(),
        fake_missing_bindings: false,
        bounds_check_policies: policies(),
        ..msl::Options::default()
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry_point.into())),
        ..msl::PipelineOptions::default()
    };
    let (source, _) = msl::write_string(&shader.module, &shader.info, &options, &pipeline)
        .map_err(|e| format!("{e:?}"))?;
    expect_text(&source, "kernel", entry_point)
}

fn hlsl_for(
    shader: &Shader<'_>,
    entry_point: &str,
    model: hlsl::ShaderModel,
) -> Result<(), String> {
    let options = hlsl::Options {
        shader_model: model,
        // Registers from (group, binding), as wgpu's DX12 backend lays its root signature out.
        fake_missing_bindings: true,
        ..hlsl::Options::default()
    };
    let pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry_point.into())),
    };
    let mut source = String::new();
    hlsl::Writer::new(&mut source, &options, &pipeline)
        .write(&shader.module, &shader.info, None)
        .map_err(|e| format!("{e:?}"))?;
    expect_text(&source, "numthreads", entry_point)
}

fn glsl_for(shader: &Shader<'_>, entry_point: &str, version: glsl::Version) -> Result<(), String> {
    // GL has separate binding points for uniform blocks, storage blocks and textures;
    // wgpu-hal numbers each kind in order, as here.
    let (mut uniform, mut storage, mut textures) = (0u8, 0u8, 0u8);
    let binding_map = resources(&shader.module)
        .into_iter()
        .map(|(binding, space)| {
            let counter = if is_storage(space) {
                &mut storage
            } else if space == AddressSpace::Handle {
                &mut textures
            } else {
                &mut uniform
            };
            *counter += 1;
            (binding, *counter - 1)
        })
        .collect();
    let options = glsl::Options {
        version,
        binding_map,
        ..glsl::Options::default()
    };
    // wgpu-hal checks image loads' bounds on desktop GL 4.3+ only (the check needs
    // textureQueryLevels); elsewhere it leaves them to the driver.
    let checks_images = matches!(version, glsl::Version::Desktop(v) if v >= 430);
    let policies = BoundsCheckPolicies {
        image_load: match checks_images {
            true => BoundsCheckPolicy::ReadZeroSkipWrite,
            false => BoundsCheckPolicy::Unchecked,
        },
        ..policies()
    };
    let pipeline = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry_point.into(),
        multiview: None,
    };
    let mut source = String::new();
    glsl::Writer::new(
        &mut source,
        &shader.module,
        &shader.info,
        &options,
        &pipeline,
        policies,
    )
    .and_then(|mut w| w.write())
    .map_err(|e| format!("{e:?}"))?;
    // GLSL names the entry point `main` whatever it was called.
    expect_text(&source, "local_size_x", "main")
}

/// A translation that "succeeds" with an empty or truncated text is no success: it must hold
/// the stage's `marker` and the entry point's name.
fn expect_text(source: &str, marker: &str, entry_point: &str) -> Result<(), String> {
    if source.contains(marker) && source.contains(entry_point) {
        Ok(())
    } else {
        Err(format!(
            "output lacks `{marker}` ({} bytes):\n{source}",
            source.len()
        ))
    }
}

type Backend = (&'static str, fn(&Shader<'_>, &str) -> Result<(), String>);

/// Every backend and language version a wgpu build may translate to.
const BACKENDS: &[Backend] = &[
    ("SPIR-V 1.0", spirv),
    ("MSL 2.0", |s, e| metal(s, e, (2, 0))),
    ("MSL 3.0", |s, e| metal(s, e, (3, 0))),
    ("HLSL SM 5.1 (FXC)", |s, e| {
        hlsl_for(s, e, hlsl::ShaderModel::V5_1)
    }),
    ("HLSL SM 6.0 (DXC)", |s, e| {
        hlsl_for(s, e, hlsl::ShaderModel::V6_0)
    }),
    ("GLSL ES 3.10", |s, e| {
        glsl_for(s, e, glsl::Version::new_gles(310))
    }),
    ("GLSL 4.30", |s, e| {
        glsl_for(s, e, glsl::Version::Desktop(430))
    }),
];

#[test]
fn the_shader_list_has_the_core_kernels() {
    let sources = wgpu_rnn::testing::shader_sources();
    assert!(!sources.is_empty(), "testing::shader_sources() is empty");
    let names: Vec<&str> = sources.iter().map(|(n, _)| n.as_str()).collect();
    for required in ["input_projection", "recurrent_step"] {
        assert!(
            names.contains(&required),
            "`{required}` missing from {names:?}"
        );
    }
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
}

/// Translates every source for every backend; one line per failure (shader × backend).
fn translation_failures(sources: &[(String, String)]) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut translations = 0;
    for (name, source) in sources {
        let shader = match front_end(name, source) {
            Ok(shader) => shader,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for entry_point in &shader.entry_points {
            for (backend, translate) in BACKENDS {
                // A panicking backend writer is a failure of this shader on that backend,
                // not the end of the test.
                let outcome = support::no_panic(|| translate(&shader, entry_point))
                    .unwrap_or_else(|panic| Err(format!("the naga backend {panic}")));
                match outcome {
                    Ok(()) => translations += 1,
                    Err(e) => failures.push(format!(
                        "{} (entry point `{entry_point}`) × {backend}: {e}",
                        shader.name
                    )),
                }
            }
        }
    }
    (translations, failures)
}

#[test]
fn every_shader_translates_for_every_backend() {
    let sources = wgpu_rnn::testing::shader_sources();
    let (translations, failures) = translation_failures(&sources);
    println!(
        "{} shaders, {translations} translations succeeded",
        sources.len()
    );
    assert!(
        failures.is_empty(),
        "{} translation(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The kernels compiled for f16 weights (`enable f16;`, weights read as `f16`) translate for
/// the backends that have 16-bit floats: Vulkan, Metal and DX12 with shader model 6.2 (wgpu
/// only offers `SHADER_F16` there; GL has none).
#[test]
fn f16_weight_variants_translate_where_f16_exists() {
    let sources = wgpu_rnn::testing::shader_sources_f16();
    // The 9 shader files that read weights, several specialisations of the generated ones.
    assert!(sources.len() >= 9, "{} f16 sources", sources.len());
    let mut failures = Vec::new();
    for (name, source) in &sources {
        let shader = match front_end(name, source) {
            Ok(shader) => shader,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for entry in &shader.entry_points {
            for (backend, outcome) in [
                ("SPIR-V", spirv(&shader, entry)),
                ("MSL 2.1", metal(&shader, entry, (2, 1))),
                (
                    "HLSL SM 6.2",
                    hlsl_for(&shader, entry, hlsl::ShaderModel::V6_2),
                ),
            ] {
                if let Err(e) = outcome {
                    failures.push(format!("{name} (entry point `{entry}`) × {backend}: {e}"));
                }
            }
        }
    }
    println!("{} f16 sources translated", sources.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The check above can fail: shaders that are broken in each way it looks for are caught.
#[test]
fn the_translation_check_catches_broken_shaders() {
    let broken = |name: &str, wgsl: &str| vec![(name.to_string(), wgsl.to_string())];
    let cases = [
        // Not WGSL at all.
        broken("syntax", "fn main( {"),
        // WGSL that does not type-check.
        broken(
            "type error",
            "@group(0) @binding(0) var<storage, read_write> x: array<f32>;\n\
             @compute @workgroup_size(1) fn main() { x[0] = 1u; }",
        ),
        // No compute entry point to translate.
        broken("no entry point", "fn helper() -> f32 { return 1.0; }"),
        // f64 is valid with every capability, but Metal has no doubles.
        broken(
            "f64",
            "@group(0) @binding(0) var<storage, read_write> x: array<f64>;\n\
             @compute @workgroup_size(1) fn main() { x[0] = x[1] * 2.0lf; }",
        ),
    ];
    for sources in cases {
        let (_, failures) = translation_failures(&sources);
        println!("{}: {failures:?}", sources[0].0);
        assert!(!failures.is_empty(), "{} was not caught", sources[0].0);
    }
}

/// Resources and sizes one compute entry point uses, to compare with an adapter's limits.
#[derive(Debug, Default)]
struct Usage {
    storage_buffers: u32,
    uniform_buffers: u32,
    max_group: u32,
    max_binding: u32,
    workgroup_size: [u32; 3],
    workgroup_storage: u32,
}

fn usage(shader: &Shader<'_>, index: usize) -> Usage {
    let module = &shader.module;
    let function = shader.info.get_entry_point(index);
    let mut usage = Usage {
        workgroup_size: module.entry_points[index].workgroup_size,
        ..Usage::default()
    };
    for (handle, global) in module.global_variables.iter() {
        if function[handle].is_empty() {
            continue;
        }
        match global.space {
            AddressSpace::Storage { .. } => usage.storage_buffers += 1,
            AddressSpace::Uniform => usage.uniform_buffers += 1,
            AddressSpace::WorkGroup => {
                usage.workgroup_storage += module.types[global.ty].inner.size(module.to_ctx())
            }
            _ => {}
        }
        if let Some(b) = global.binding {
            usage.max_group = usage.max_group.max(b.group);
            usage.max_binding = usage.max_binding.max(b.binding);
        }
    }
    usage
}

/// Which of `limits` one entry point exceeds.
fn exceeded(u: &Usage, limits: &wgpu::Limits) -> Vec<String> {
    let [x, y, z] = u.workgroup_size;
    [
        (
            "storage buffers per shader stage",
            u.storage_buffers,
            limits.max_storage_buffers_per_shader_stage,
        ),
        (
            "uniform buffers per shader stage",
            u.uniform_buffers,
            limits.max_uniform_buffers_per_shader_stage,
        ),
        ("bind groups", u.max_group + 1, limits.max_bind_groups),
        (
            "bindings per bind group",
            u.max_binding + 1,
            limits.max_bindings_per_bind_group,
        ),
        ("workgroup size x", x, limits.max_compute_workgroup_size_x),
        ("workgroup size y", y, limits.max_compute_workgroup_size_y),
        ("workgroup size z", z, limits.max_compute_workgroup_size_z),
        (
            "invocations per workgroup",
            x * y * z,
            limits.max_compute_invocations_per_workgroup,
        ),
        (
            "workgroup storage bytes",
            u.workgroup_storage,
            limits.max_compute_workgroup_storage_size,
        ),
    ]
    .into_iter()
    .filter(|&(_, used, limit)| used > limit)
    .map(|(what, used, limit)| format!("{what}: uses {used}, limit {limit}"))
    .collect()
}

/// wgpu's `downlevel_defaults` are what every adapter wgpu runs compute on guarantees
/// (GLES 3.1 and old Vulkan / D3D11-class hardware): a kernel beyond them fails to build there,
/// so `GpuContext::new` fails on such an adapter. `Limits::default()` is checked too. The
/// kernels the library compiles only where the device's limits allow them
/// (`testing::beyond_downlevel_names()`) must fit `Limits::default()`.
#[test]
fn every_shader_fits_wgpus_downlevel_limits() {
    let mut failures = Vec::new();
    let optional = wgpu_rnn::testing::beyond_downlevel_names();
    assert!(!optional.is_empty());
    for (name, source) in wgpu_rnn::testing::shader_sources() {
        let shader = match front_end(&name, &source) {
            Ok(shader) => shader,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for (index, entry_point) in shader.module.entry_points.iter().enumerate() {
            let u = usage(&shader, index);
            println!("{name}::{}: {u:?}", entry_point.name);
            for (limits_name, limits) in [
                ("downlevel_defaults", wgpu::Limits::downlevel_defaults()),
                ("default", wgpu::Limits::default()),
            ] {
                if limits_name == "downlevel_defaults" && optional.contains(&name) {
                    continue;
                }
                for e in exceeded(&u, &limits) {
                    failures.push(format!(
                        "{name}::{} exceeds Limits::{limits_name}(): {e}",
                        entry_point.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The limits check can fail: a kernel beyond the downlevel limits is flagged.
#[test]
fn the_limits_check_catches_an_oversized_kernel() {
    let wgsl = "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n\
                @group(0) @binding(1) var<storage, read_write> b: array<f32>;\n\
                @group(0) @binding(2) var<storage, read_write> c: array<f32>;\n\
                @group(0) @binding(3) var<storage, read_write> d: array<f32>;\n\
                @group(0) @binding(4) var<storage, read_write> e: array<f32>;\n\
                var<workgroup> tile: array<f32, 8192>;\n\
                @compute @workgroup_size(1024) fn main(@builtin(local_invocation_index) i: u32) {\n\
                    tile[i] = a[i] + b[i] + c[i] + d[i];\n\
                    workgroupBarrier();\n\
                    e[i] = tile[1023u - i];\n\
                }";
    let shader = front_end("oversized", wgsl).unwrap();
    let u = usage(&shader, 0);
    let problems = exceeded(&u, &wgpu::Limits::downlevel_defaults());
    println!("{problems:#?}");
    for what in [
        "storage buffers",
        "workgroup size x",
        "invocations",
        "workgroup storage",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(what)),
            "`{what}` not flagged in {problems:?}"
        );
    }
}

/// What the downlevel check means in practice: a device opened with wgpu's downlevel limits
/// (as a portable renderer opens its device) must run the crate through
/// `GpuContext::from_device`, which the README offers for exactly that case.
#[test]
fn a_device_with_downlevel_limits_runs_the_kernels() {
    if wgpu_rnn::testing::gpu("a_device_with_downlevel_limits_runs_the_kernels").is_none() {
        return;
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))
    .expect("an adapter exists");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::downlevel_defaults(),
        ..Default::default()
    }))
    .expect("every adapter meets the downlevel limits");
    let ctx = wgpu_rnn::GpuContext::from_device(device, queue);
    assert!(ctx.is_ok(), "{:?}", ctx.err());
    // Training binds more storage buffers than the downlevel limits allow: a typed refusal.
    let config = wgpu_rnn::RnnConfig::rnn(2, 3);
    let weights = wgpu_rnn::RnnWeights::init(&config, 0).unwrap();
    let trainer = wgpu_rnn::GpuTrainer::new(&ctx.unwrap(), config, &weights);
    assert!(
        matches!(&trainer, Err(wgpu_rnn::RnnError::InvalidConfig(m)) if m.contains("storage buffers")),
        "{trainer:?}"
    );
}
