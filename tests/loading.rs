//! How loading behaves and what it says, for every mode: strict loading (tensors the
//! configuration has no place for) and non-strict loading, missing tensors (what the file has,
//! which prefix would find them), dtypes (how to save float32), cell tensor names, files that
//! are not regular files, a small model read out of a large file without reading the rest,
//! and `init` of sizes no machine holds.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use std::time::{Duration, Instant};

use hostile::{TempFile, cell_config, cpu_cell, gpu_cell, largest_allocation, serialize, stored};
use safetensors::Dtype;
use support::{MODES, mode_name, named_state_dict};
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{
    CellConfig, DirectionWeights, GruCell, LstmCell, RnnCell, RnnConfig, RnnError, RnnMode,
    RnnWeights, testing,
};

/// The weight error's tensor name and problem, or a panic saying what came instead.
fn weights_error<T: std::fmt::Debug>(what: &str, result: wgpu_rnn::Result<T>) -> (String, String) {
    match result {
        Err(RnnError::Weights { name, problem }) => (name, problem),
        other => panic!("{what}: expected RnnError::Weights, got {other:?}"),
    }
}

/// `state_dict` bytes of `config`'s model under `prefix` (weights from `seed`), with the
/// weights themselves.
fn model_file(config: &RnnConfig, prefix: &str, seed: u64) -> (Vec<u8>, RnnWeights) {
    let weights = RnnWeights::init(config, seed).unwrap();
    let tensors = named_state_dict(config, &weights, prefix);
    (support::safetensors_f32(&tensors, &[]), weights)
}

/// Strict loading, as PyTorch's `load_state_dict` by default: a file holding another model
/// (more layers, a reverse direction, a projection, another module under the same prefix) is
/// an error naming a tensor the configuration has no place for; `load_non_strict` takes the
/// tensors it needs and ignores the others, and tensors outside the prefix never matter.
fn strict_loading_rejects_tensors_without_a_place(mode: RnnMode) {
    let one = RnnConfig::new(mode, 3, 4);
    let wider = [
        (
            "a 2-layer file, 1-layer configuration",
            RnnConfig {
                num_layers: 2,
                ..one.clone()
            },
            "_l1",
            "`rnn.weight_ih_l1`",
        ),
        (
            "a bidirectional file, unidirectional configuration",
            RnnConfig {
                bidirectional: true,
                ..one.clone()
            },
            "_reverse",
            "`rnn.weight_ih_l0_reverse`",
        ),
    ];
    for (what, file_config, marker, listed) in wider {
        let (bytes, weights) = model_file(&file_config, "rnn.", 1);
        let (name, problem) =
            weights_error(what, RnnWeights::from_safetensors(&one, &bytes, "rnn."));
        assert!(
            name.starts_with("rnn.") && name.ends_with(marker),
            "{what}: names {name}"
        );
        assert!(
            problem.contains(listed),
            "{what}: `{problem}` should list {listed}"
        );
        let file = TempFile::new(&bytes);
        let (strict, _) = weights_error(what, RnnWeights::load(&one, &file.0, "rnn."));
        assert_eq!(
            strict, name,
            "{what}: load and from_safetensors name the same tensor"
        );
        // The forward direction of layer 0 is unit 0 of both.
        let lenient = RnnWeights::load_non_strict(&one, &file.0, "rnn.")
            .unwrap_or_else(|e| panic!("{what}, non-strict: {e}"));
        assert_eq!(lenient.units(), &weights.units()[..1], "{what}, non-strict");
    }

    // Another module's tensor under the model's prefix is unexpected too; outside it, it is
    // none of the model's business.
    let mut tensors = named_state_dict(&one, &RnnWeights::init(&one, 2).unwrap(), "rnn.");
    tensors.push(("rnn.extra.weight".into(), vec![2], vec![1.0, 2.0]));
    let bytes = support::safetensors_f32(&tensors, &[]);
    let (name, _) = weights_error(
        "another module under the prefix",
        RnnWeights::from_safetensors(&one, &bytes, "rnn."),
    );
    assert_eq!(name, "rnn.extra.weight");
    let file = TempFile::new(&bytes);
    RnnWeights::load_non_strict(&one, &file.0, "rnn.").unwrap();
    tensors.pop();
    tensors.push(("head.weight".into(), vec![2], vec![1.0, 2.0]));
    let bytes = support::safetensors_f32(&tensors, &[]);
    RnnWeights::from_safetensors(&one, &bytes, "rnn.").unwrap();

    if mode == RnnMode::Lstm {
        // A projecting LSTM's file differs from a plain one in weight_hh's shape too.
        let projected = RnnConfig {
            proj_size: 2,
            ..one.clone()
        };
        let (bytes, _) = model_file(&projected, "", 3);
        let (name, _) = weights_error(
            "a projecting LSTM's file, proj_size = 0",
            RnnWeights::from_safetensors(&one, &bytes, ""),
        );
        assert!(
            ["weight_hh_l0", "weight_hr_l0"].contains(&name.as_str()),
            "names {name}"
        );
        // A plain LSTM's file with a weight_hr beside it: that tensor is the unexpected one.
        let mut tensors = named_state_dict(&one, &RnnWeights::init(&one, 2).unwrap(), "");
        tensors.push(("weight_hr_l0".into(), vec![2, 4], vec![0.5; 8]));
        let bytes = support::safetensors_f32(&tensors, &[]);
        let (name, _) = weights_error(
            "weight_hr_l0 with proj_size = 0",
            RnnWeights::from_safetensors(&one, &bytes, ""),
        );
        assert_eq!(name, "weight_hr_l0");
    }
}
for_each_mode!(
    strict_loading,
    strict_loading_rejects_tensors_without_a_place
);

/// `load_non_strict` ignores what the configuration has no place for, as PyTorch's
/// `load_state_dict(strict=False)` ignores unexpected keys: biases when `bias = false`, an
/// LSTM's `weight_hr` when `proj_size = 0`.
#[test]
fn non_strict_loading_ignores_biases_and_projections_the_configuration_lacks() {
    let mut wrong = Vec::new();
    for mode in MODES {
        let with_bias = RnnConfig::new(mode, 3, 4);
        let without = RnnConfig {
            bias: false,
            ..with_bias.clone()
        };
        let (bytes, _) = model_file(&with_bias, "", 1);
        let file = TempFile::new(&bytes);
        if let Err(e) = RnnWeights::load_non_strict(&without, &file.0, "") {
            wrong.push(format!(
                "{}: biases with bias = false: {e}",
                mode_name(mode)
            ));
        }
    }
    let lstm = RnnConfig::lstm(3, 4);
    let mut tensors = named_state_dict(&lstm, &RnnWeights::init(&lstm, 2).unwrap(), "");
    tensors.push(("weight_hr_l0".into(), vec![2, 4], vec![0.5; 8]));
    let file = TempFile::new(&support::safetensors_f32(&tensors, &[]));
    if let Err(e) = RnnWeights::load_non_strict(&lstm, &file.0, "") {
        wrong.push(format!("lstm: weight_hr_l0 with proj_size = 0: {e}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A missing tensor's error says what the file has under the prefix and, when the name is
/// there under another prefix, which prefix to load with.
fn missing_tensors_are_explained(mode: RnnMode) {
    let config = RnnConfig::new(mode, 3, 4);
    let (prefixed, _) = model_file(&config, "rnn.", 1);
    let (bare, _) = model_file(&config, "", 1);
    let (nested, _) = model_file(&config, "model.rnn.", 1);
    let cases = [
        (
            "`rnn.` names loaded with \"\"",
            &prefixed,
            "",
            "weight_ih_l0",
            "prefix \"rnn.\"",
        ),
        (
            "bare names loaded with `rnn.`",
            &bare,
            "rnn.",
            "rnn.weight_ih_l0",
            "prefix \"\"",
        ),
        (
            "`model.rnn.` names loaded with `rnn.`",
            &nested,
            "rnn.",
            "rnn.weight_ih_l0",
            "prefix \"model.rnn.\"",
        ),
    ];
    for (what, bytes, prefix, missing, advice) in cases {
        let (name, problem) =
            weights_error(what, RnnWeights::from_safetensors(&config, bytes, prefix));
        assert_eq!(name, missing, "{what}");
        assert!(
            problem.contains(advice),
            "{what}: `{problem}` should say {advice}"
        );
    }
    // weight_hh missing under the right prefix: the error lists what is there.
    let mut tensors = named_state_dict(&config, &RnnWeights::init(&config, 1).unwrap(), "rnn.");
    tensors.retain(|(name, ..)| name != "rnn.weight_hh_l0");
    let bytes = support::safetensors_f32(&tensors, &[]);
    let (name, problem) = weights_error(
        "weight_hh missing",
        RnnWeights::from_safetensors(&config, &bytes, "rnn."),
    );
    assert_eq!(name, "rnn.weight_hh_l0");
    for present in ["`rnn.weight_ih_l0`", "`rnn.bias_hh_l0`"] {
        assert!(
            problem.contains(present),
            "`{problem}` should list {present}"
        );
    }
}
for_each_mode!(missing_tensors, missing_tensors_are_explained);

/// A tensor of another dtype: the error says how to save float32 from PyTorch.
fn dtype_errors_say_how_to_save_float32(mode: RnnMode) {
    let config = RnnConfig::new(mode, 3, 4);
    let weights = RnnWeights::init(&config, 1).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16, Dtype::F64] {
        let mut tensors = stored(&named_state_dict(&config, &weights, ""));
        let (_, kind, shape, data) = &mut tensors[1];
        assert_eq!(shape[0], config.gate_size());
        *kind = dtype;
        data.resize(shape.iter().product::<usize>() * dtype.bitsize() / 8, 0);
        let bytes = serialize(&tensors, &[]);
        let (name, problem) = weights_error(
            &format!("{dtype:?}"),
            RnnWeights::from_safetensors(&config, &bytes, ""),
        );
        assert_eq!(name, "weight_hh_l0");
        assert!(
            problem.contains(&format!("{dtype:?}")) && problem.contains("float()"),
            "{dtype:?}: `{problem}` should name the dtype and say how to save float32"
        );
    }
}
for_each_mode!(dtype_errors, dtype_errors_say_how_to_save_float32);

/// A cell's tensors are `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` (PyTorch's
/// `nn.RNNCell` names), not a layer's `weight_ih_l0`: its errors name them so, on both
/// backends; and a cell type takes only its own mode.
fn cell_errors_name_cell_tensors(mode: RnnMode) {
    let config = cell_config(mode);
    let good = support::cell_weights(&config, 1);
    let ctx = testing::gpu(&format!(
        "cell_errors_name_cell_tensors ({})",
        mode_name(mode)
    ));
    type Edit = fn(&mut DirectionWeights);
    let edits: [(&str, Edit); 4] = [
        ("weight_ih", |w| w.weight_ih.pop().map(|_| ()).unwrap()),
        ("weight_hh", |w| w.weight_hh.push(0.0)),
        ("bias_ih", |w| w.bias_ih.as_mut().unwrap().push(0.0)),
        ("bias_ih", |w| w.bias_hh = None),
    ];
    for (tensor, edit) in edits {
        let mut w = good.clone();
        edit(&mut w);
        let (name, _) = weights_error(tensor, cpu_cell(config.clone(), &w));
        assert_eq!(name, tensor, "CPU cell");
        if let Some(ctx) = &ctx {
            let (name, _) = weights_error(tensor, gpu_cell(ctx, config.clone(), &w));
            assert_eq!(name, tensor, "GPU cell");
        }
    }
    // From a file: a missing tensor is named as the cell calls it.
    let mut tensors = support::cell_state_dict(&config, &good, "cell.");
    tensors.retain(|(name, ..)| name != "cell.weight_hh");
    let bytes = support::safetensors_f32(&tensors, &[]);
    let (name, _) = weights_error(
        "weight_hh missing",
        config.weights_from_safetensors(&bytes, "cell."),
    );
    assert_eq!(name, "cell.weight_hh");
    // Another mode's cell type refuses the configuration.
    type MakeCell = fn(CellConfig, &DirectionWeights) -> wgpu_rnn::Result<()>;
    let others: [(&str, MakeCell); 3] = [
        ("RnnCell", |c, w| RnnCell::cpu(c, w).map(|_| ())),
        ("LstmCell", |c, w| LstmCell::cpu(c, w).map(|_| ())),
        ("GruCell", |c, w| GruCell::cpu(c, w).map(|_| ())),
    ];
    for (cell, make) in others {
        let own = match mode {
            RnnMode::Rnn(_) => "RnnCell",
            RnnMode::Lstm => "LstmCell",
            RnnMode::Gru => "GruCell",
        };
        match make(config.clone(), &good) {
            Ok(()) if cell == own => {}
            Err(RnnError::InvalidConfig(_)) if cell != own => {}
            other => panic!("{cell} of a {} configuration: {other:?}", mode_name(mode)),
        }
    }
}
for_each_mode!(cell_errors, cell_errors_name_cell_tensors);

/// Runs `f` on a thread of its own and waits at most `limit` for it: a load that reads forever
/// fails the test instead of hanging it.
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn is_io<T>(result: &wgpu_rnn::Result<T>) -> bool {
    matches!(result, Err(RnnError::Io { .. }))
}

/// A character device or a directory is not a weight file: every loader refuses it at once
/// with `RnnError::Io`, where reading `/dev/zero` to its end would never finish.
#[test]
fn non_regular_files_are_refused_at_once() {
    let mut wrong = Vec::new();
    let dir = std::env::temp_dir();
    for mode in MODES {
        let config = RnnConfig::new(mode, 3, 4);
        for path in ["/dev/zero".into(), "/dev/null".into(), dir.clone()] {
            if !path.exists() {
                continue;
            }
            let what = format!("{} from {}", mode_name(mode), path.display());
            let (c, p) = (config.clone(), path.clone());
            let outcomes = within(&what, Duration::from_secs(10), move || {
                let cell = CellConfig {
                    mode: c.mode,
                    ..CellConfig::rnn(3, 4)
                };
                let verdict =
                    |result: wgpu_rnn::Result<()>| (is_io(&result), format!("{result:?}"));
                [
                    ("load", verdict(RnnWeights::load(&c, &p, "").map(|_| ()))),
                    (
                        "load_non_strict",
                        verdict(RnnWeights::load_non_strict(&c, &p, "").map(|_| ())),
                    ),
                    (
                        "load_weights",
                        verdict(cell.load_weights(&p, "").map(|_| ())),
                    ),
                    (
                        "ReferenceCase::load",
                        verdict(ReferenceCase::load(&p).map(|_| ())),
                    ),
                ]
            });
            for (loader, (io, got)) in outcomes {
                if !io {
                    wrong.push(format!("{what}, {loader}: {got}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A FIFO is not a weight file either; one without a writer must not block the loader.
#[cfg(target_os = "linux")]
#[test]
fn a_fifo_is_refused_at_once() {
    let fifo = TempFile::path("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo.0).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    let path = fifo.0.clone();
    let outcome = within("loading a FIFO", Duration::from_secs(5), move || {
        RnnWeights::load(&RnnConfig::rnn(3, 4), &path, "")
    });
    assert!(is_io(&outcome), "{outcome:?}");
}

/// A process's resident set: (now, peak) in bytes, from /proc/self/status.
#[cfg(target_os = "linux")]
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A checkpoint that holds a small model beside a 256 MiB tensor: loading the model maps the
/// file and reads the header and its own tensors only. The largest allocation of the load
/// stays small (a whole-file read would be one 256 MiB buffer), and so does the growth of the
/// process's peak resident set. The file is sparse, so writing it costs nothing.
#[cfg(target_os = "linux")]
fn a_small_model_is_read_out_of_a_large_file(mode: RnnMode) {
    use std::io::Write;
    const BIG: usize = 256 << 20;
    let config = RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 3, 4)
    };
    let weights = RnnWeights::init(&config, 1).unwrap();
    let small = named_state_dict(&config, &weights, "rnn.");
    // The header by hand, the big tensor last: its bytes are a hole the file never writes.
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in &small {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    let start = data.len();
    entries.push(format!(
        "\"embedding.weight\":{{\"dtype\":\"F32\",\"shape\":[{},1024],\"data_offsets\":[{start},{}]}}",
        BIG / 4096,
        start + BIG
    ));
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let file = TempFile::path("safetensors");
    let mut out = std::fs::File::create(&file.0).unwrap();
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(header.as_bytes()).unwrap();
    out.write_all(&data).unwrap();
    let total = 8 + header.len() + data.len() + BIG;
    out.set_len(total as u64).unwrap();
    drop(out);

    // Reset the peak resident set where the kernel allows it (Linux ≥ 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (rss_before, _) = resident();
    let (loaded, largest) = largest_allocation(|| {
        (
            RnnWeights::load(&config, &file.0, "rnn."),
            RnnWeights::load_non_strict(&config, &file.0, "rnn."),
            RnnWeights::load_non_strict(&RnnConfig::new(mode, 3, 4), &file.0, "rnn."),
        )
    });
    let (_, peak) = resident();
    assert_eq!(loaded.0.as_ref().unwrap(), &weights);
    assert_eq!(loaded.1.as_ref().unwrap(), &weights);
    assert_eq!(loaded.2.unwrap().units(), &weights.units()[..1]);
    assert!(
        largest < BIG / 16,
        "loading a small model allocated {largest} bytes at once from a {total}-byte file"
    );
    // Other tests of this binary run beside it: allow them some growth, far below the tensor.
    if reset {
        let growth = peak.saturating_sub(rss_before);
        assert!(
            growth < BIG as u64 / 2,
            "the peak resident set grew by {growth} bytes loading a small model"
        );
    }
}
#[cfg(target_os = "linux")]
for_each_mode!(
    small_model_large_file,
    a_small_model_is_read_out_of_a_large_file
);

/// `RnnWeights::init` of sizes that do not fit in memory returns an error, at once, instead
/// of aborting the process when the allocation fails. Two sizes: 100,000 × 100,000 (40 GB and
/// more a tensor: beyond this machine's memory, where the kernel refuses it), and one beyond
/// any machine's address space (refused even where memory is overcommitted without limit).
fn init_of_absurd_sizes_is_an_error(mode: RnnMode) {
    let attempt = |size: usize| {
        let config = RnnConfig::new(mode, size, size);
        let start = Instant::now();
        let result = RnnWeights::init(&config, 1).map(|_| ());
        let elapsed = start.elapsed();
        assert!(
            matches!(result, Err(RnnError::InvalidConfig(_))),
            "init of ({size}, {size}): {result:?}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "init of ({size}, {size}) took {elapsed:?}"
        );
    };
    // G·H·I floats of weight_ih: 10 PB and more.
    attempt(50_000_000);
    let tensor = (mode.gates() * 100_000 * 100_000 * 4) as u64;
    match memory_and_overcommit() {
        Some((memory, overcommit)) if overcommit != 1 && tensor > memory => attempt(100_000),
        other => println!(
            "init of (100000, 100000) not tried: a {tensor}-byte tensor may be granted here \
             (memory + swap, overcommit mode: {other:?})"
        ),
    }
}
for_each_mode!(absurd_init, init_of_absurd_sizes_is_an_error);

/// MemTotal + SwapTotal in bytes and the kernel's overcommit mode, where Linux says.
fn memory_and_overcommit() -> Option<(u64, u32)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let memory = (kib("MemTotal:")? + kib("SwapTotal:")?) * 1024;
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
    Some((memory, mode.trim().parse().ok()?))
}
