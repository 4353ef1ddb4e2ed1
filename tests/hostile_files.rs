//! Hostile files: weight files, cell weight files and reference cases of every mode must load
//! only when genuinely valid, get a typed error naming what is wrong otherwise, never panic,
//! and never allocate absurdly (a counting allocator watches).
//!
//! - a fuzz run over random bytes and valid files (a state_dict, a reference case and a cell
//!   file of each mode, LSTM with and without `proj_size`) with flipped bytes, truncation,
//!   rewritten headers (overlapping or out-of-range offsets, absurd shapes, wrong dtypes, huge
//!   header lengths) and hostile metadata;
//! - hostile files named one by one, each with the error it must get.
//!
//! How loading behaves and what it says about valid files of the wrong model is in
//! `loading.rs`.
//!
//! `FUZZ_SEED=n` replays a run; `FUZZ_SCALE=k` multiplies the time budget.

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use hostile::{
    Outcome, StoredTensor, TempFile, call, cell_config, cpu_cell, f32_tensor, fail, fuzz, scaled,
    serialize, stored,
};
use proptest::prelude::*;
use proptest::sample::select;
use safetensors::Dtype;
use support::{MODES, Rng, named_state_dict, no_panic, random_state};
use wgpu_rnn::reference_case::ReferenceCase;
use wgpu_rnn::{
    CpuRnn, GpuContext, GpuRnn, Rnn, RnnCell, RnnConfig, RnnError, RnnMode, RnnWeights, Tensor,
    testing,
};

// ---------------------------------------------------------------------------------------------
// The valid files the mutations start from.

/// The models every file of the fuzz run is for: two layers of (3 → 4) in each mode, and an
/// LSTM projecting to 2 (`proj_size` changes `weight_hh`'s shape and adds `weight_hr`).
fn file_models() -> Vec<RnnConfig> {
    let mut models: Vec<RnnConfig> = MODES
        .iter()
        .map(|&mode| RnnConfig {
            num_layers: 2,
            ..RnnConfig::new(mode, 3, 4)
        })
        .collect();
    models.push(RnnConfig {
        num_layers: 2,
        proj_size: 2,
        ..RnnConfig::lstm(3, 4)
    });
    models
}

/// A model's two-layer configuration in `mode` (3 → 4).
fn file_config(mode: RnnMode) -> RnnConfig {
    RnnConfig {
        num_layers: 2,
        ..RnnConfig::new(mode, 3, 4)
    }
}

/// The valid files the mutations start from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Base {
    /// A state_dict of the model, names prefixed `rnn.`.
    Weights,
    /// A PyTorch-style reference case of the model, variable lengths, h0 (and c0) included.
    Case,
    /// A cell's state_dict; for RNN modes a whole `rnn_cell` reference case (steps, h0).
    Cell,
}

struct BaseFile {
    tensors: Vec<StoredTensor>,
    metadata: Vec<(&'static str, String)>,
}

/// PyTorch's name of a mode's packed reference case and its nonlinearity entry.
fn case_kind(config: &RnnConfig) -> Vec<(&'static str, String)> {
    let mut meta = match config.mode {
        RnnMode::Rnn(act) => vec![
            ("kind", "rnn_packed".to_string()),
            (
                "nonlinearity",
                if act == wgpu_rnn::Nonlinearity::Relu {
                    "relu"
                } else {
                    "tanh"
                }
                .into(),
            ),
        ],
        RnnMode::Lstm => vec![("kind", "lstm_packed".into())],
        RnnMode::Gru => vec![("kind", "gru_packed".into())],
    };
    if config.proj_size > 0 {
        meta.push(("proj_size", config.proj_size.to_string()));
    }
    meta
}

fn base_file(config: &RnnConfig, base: Base) -> BaseFile {
    let weights = RnnWeights::init(config, 4).unwrap();
    let mut rng = Rng(5);
    match base {
        Base::Weights => BaseFile {
            tensors: stored(&named_state_dict(config, &weights, "rnn.")),
            metadata: vec![],
        },
        Base::Case => {
            let input = rng.tensor(&[3, 2, 3]);
            let state = random_state(&mut rng, config, 2);
            let lengths = [3usize, 2];
            let out = CpuRnn::new(config.clone(), &weights)
                .unwrap()
                .forward_with_lengths(&input, &lengths, Some(state.hx()))
                .unwrap();
            let mut tensors = stored(&named_state_dict(config, &weights, ""));
            tensors.push(f32_tensor("input", input.shape(), input.data()));
            tensors.push(f32_tensor("h0", state.h0.shape(), state.h0.data()));
            tensors.push(f32_tensor("output", out.output.shape(), out.output.data()));
            tensors.push(f32_tensor("h_n", out.h_n.shape(), out.h_n.data()));
            if let (Some(c0), Some(c_n)) = (&state.c0, &out.c_n) {
                tensors.push(f32_tensor("c0", c0.shape(), c0.data()));
                tensors.push(f32_tensor("c_n", c_n.shape(), c_n.data()));
            }
            let lengths: Vec<u8> = lengths
                .iter()
                .flat_map(|&l| (l as i32).to_le_bytes())
                .collect();
            tensors.push(("lengths".into(), Dtype::I32, vec![2], lengths));
            let mut metadata = case_kind(config);
            metadata.extend([
                ("input_size", "3".into()),
                ("hidden_size", "4".into()),
                ("num_layers", "2".into()),
                ("bias", "true".into()),
                ("batch_first", "false".into()),
                ("bidirectional", "false".into()),
                ("has_h0", "true".into()),
            ]);
            BaseFile { tensors, metadata }
        }
        Base::Cell => {
            let cell = cell_config(config.mode);
            let w = support::cell_weights(&cell, 4);
            let mut tensors = stored(&support::cell_state_dict(&cell, &w, ""));
            let RnnMode::Rnn(act) = config.mode else {
                return BaseFile {
                    tensors,
                    metadata: vec![],
                };
            };
            // An RNN cell's reference case: three steps from h0, as the fixtures hold them.
            let model = RnnCell::cpu(cell, &w).unwrap();
            let inputs = rng.tensor(&[3, 2, 3]);
            let mut h = rng.tensor(&[2, 4]);
            let h0 = h.clone();
            let mut steps = Vec::new();
            for s in 0..3 {
                let x = Tensor::new(inputs.data()[s * 6..(s + 1) * 6].to_vec(), &[2, 3]).unwrap();
                h = model.step(&x, Some(&h)).unwrap();
                steps.extend_from_slice(h.data());
            }
            tensors.extend([
                f32_tensor("inputs", inputs.shape(), inputs.data()),
                f32_tensor("h0", h0.shape(), h0.data()),
                f32_tensor("h_steps", &[3, 2, 4], &steps),
            ]);
            let act = if act == wgpu_rnn::Nonlinearity::Relu {
                "relu"
            } else {
                "tanh"
            };
            BaseFile {
                tensors,
                metadata: vec![
                    ("kind", "rnn_cell".into()),
                    ("input_size", "3".into()),
                    ("hidden_size", "4".into()),
                    ("bias", "true".into()),
                    ("nonlinearity", act.into()),
                ],
            }
        }
    }
}

fn base_bytes(config: &RnnConfig, base: Base) -> Vec<u8> {
    let b = base_file(config, base);
    serialize(&b.tensors, &b.metadata)
}

/// A safetensors file with a hand-written header: the 8-byte length, the header, `data_len`
/// bytes of data.
fn raw_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0x3F);
    bytes
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a rewritten header places a tensor's bytes.
#[derive(Clone, Debug)]
enum Offsets {
    /// Right after the previous tensor, as long as its shape and dtype say (however long).
    Chained,
    /// Starting 4 bytes inside the previous tensor.
    Overlapping,
    /// Ending 1000 bytes past what the shape needs.
    TooLong,
    /// End before start.
    Reversed,
    Raw(u64, u64),
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    offsets: Offsets,
}

fn bits(dtype: &str) -> u128 {
    match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        _ => 64,
    }
}

/// A whole header written by hand: entries, metadata, the stated header length and the
/// length of the data that follows.
#[derive(Clone, Debug)]
struct Header {
    entries: Vec<Entry>,
    metadata: Vec<(String, String)>,
    /// Added to the true header length in the length field (0: truthful).
    length_error: i64,
    /// Added to the length the offsets imply (capped at 64 KiB).
    data_error: i64,
}

impl Header {
    fn bytes(&self) -> Vec<u8> {
        let mut fields = Vec::new();
        if !self.metadata.is_empty() {
            let pairs: Vec<String> = self
                .metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
                .collect();
            fields.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
        }
        let (mut start, mut end) = (0u64, 0u64);
        for e in &self.entries {
            let elements = e
                .shape
                .iter()
                .fold(1u128, |a, &d| a.saturating_mul(d as u128));
            let size =
                u64::try_from(elements.saturating_mul(bits(e.dtype)) / 8).unwrap_or(u64::MAX);
            let (s, t) = match e.offsets {
                Offsets::Chained => (end, end.saturating_add(size)),
                Offsets::Overlapping => (
                    start.saturating_add(4).min(end.saturating_sub(1)),
                    end.saturating_add(size),
                ),
                Offsets::TooLong => (end, end.saturating_add(size).saturating_add(1000)),
                Offsets::Reversed => (end.saturating_add(size).max(end.saturating_add(1)), end),
                Offsets::Raw(s, t) => (s, t),
            };
            (start, end) = (s, t.max(end));
            let shape: Vec<String> = e.shape.iter().map(u64::to_string).collect();
            fields.push(format!(
                "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{s},{t}]}}",
                json_string(&e.name),
                e.dtype,
                shape.join(",")
            ));
        }
        let header = format!("{{{}}}", fields.join(","));
        let data_len = (end.min(1 << 16) as i64 + self.data_error).clamp(0, 1 << 16) as usize;
        let mut bytes = raw_file(&header, data_len);
        let stated = (header.len() as i64).wrapping_add(self.length_error) as u64;
        bytes[..8].copy_from_slice(&stated.to_le_bytes());
        bytes
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Random(Vec<u8>),
    /// (position modulo the length, xor mask)
    Flip(Vec<(usize, u8)>),
    /// Keep this many bytes (modulo the length).
    Truncate(usize),
    Append(Vec<u8>),
    /// Overwrite the 8-byte header length.
    HeaderLength(u64),
    Header(Header),
    /// The base file's tensors with these metadata entries set.
    Metadata(Vec<(&'static str, String)>),
}

#[derive(Clone, Debug)]
struct FileCase {
    /// Index into `file_models()`.
    model: usize,
    base: Base,
    mutation: Mutation,
    prefix: &'static str,
}

impl FileCase {
    fn config(&self) -> RnnConfig {
        file_models()[self.model].clone()
    }

    fn bytes(&self) -> Vec<u8> {
        let base = base_file(&self.config(), self.base);
        let valid = serialize(&base.tensors, &base.metadata);
        match &self.mutation {
            Mutation::Random(bytes) => bytes.clone(),
            Mutation::Flip(flips) => {
                let mut bytes = valid;
                for &(at, mask) in flips {
                    let len = bytes.len();
                    bytes[at % len] ^= mask;
                }
                bytes
            }
            Mutation::Truncate(keep) => valid[..keep % valid.len()].to_vec(),
            Mutation::Append(extra) => [valid, extra.clone()].concat(),
            Mutation::HeaderLength(n) => {
                let mut bytes = valid;
                bytes[..8].copy_from_slice(&n.to_le_bytes());
                bytes
            }
            Mutation::Header(header) => header.bytes(),
            Mutation::Metadata(entries) => {
                let mut metadata = base.metadata.clone();
                for (key, value) in entries {
                    metadata.retain(|(k, _)| k != key);
                    metadata.push((key, value.clone()));
                }
                serialize(&base.tensors, &metadata)
            }
        }
    }
}

const TENSOR_NAMES: &[&str] = &[
    "weight_ih_l0",
    "weight_hh_l0",
    "bias_ih_l0",
    "bias_hh_l0",
    "weight_ih_l1",
    "weight_hr_l0",
    "weight_hh_l0_reverse",
    "rnn.weight_ih_l0",
    "weight_ih",
    "weight_hh",
    "bias_ih",
    "input",
    "h0",
    "output",
    "h_n",
    "c0",
    "c_n",
    "lengths",
    "inputs",
    "h_steps",
    "__metadata__",
    "quote\"d",
    "",
];

const DTYPES: &[&str] = &[
    "F32", "F64", "F16", "BF16", "I32", "I64", "U8", "I8", "BOOL", "F4", "F6_E2M3", "F8_E8M0",
    "U64", "f32", "F33", "",
];

const META_KEYS: &[&str] = &[
    "kind",
    "input_size",
    "hidden_size",
    "num_layers",
    "nonlinearity",
    "bias",
    "batch_first",
    "bidirectional",
    "has_h0",
    "proj_size",
];

const META_VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "-1",
    "1073741823",
    "4294967296",
    "18446744073709551616",
    "abc",
    "",
    "true",
    "false",
    "True",
    "yes",
    "relu",
    "tanh",
    "gelu",
    "rnn",
    "rnn_cell",
    "rnn_packed",
    "lstm",
    "lstm_packed",
    "gru",
    "gru_packed",
    "rnn_relu",
];

fn header_strategy() -> impl Strategy<Value = Header> {
    let dim = prop_oneof![
        4 => select(vec![0u64, 1, 2, 3, 4, 8]),
        1 => select(vec![1u64 << 20, 1 << 40, (1 << 61) - 1, 1 << 62, u64::MAX]),
    ];
    let offsets = prop_oneof![
        6 => Just(Offsets::Chained),
        1 => Just(Offsets::Overlapping),
        1 => Just(Offsets::TooLong),
        1 => Just(Offsets::Reversed),
        1 => (
            select(vec![0u64, 4, 48, 1 << 40, u64::MAX - 8, u64::MAX]),
            select(vec![0u64, 4, 48, 1 << 40, u64::MAX - 8, u64::MAX])
        )
            .prop_map(|(s, e)| Offsets::Raw(s, e)),
    ];
    let entry = (
        select(TENSOR_NAMES),
        prop_oneof![4 => Just("F32"), 1 => select(DTYPES)],
        proptest::collection::vec(dim, 0..=3),
        offsets,
    )
        .prop_map(|(name, dtype, shape, offsets)| Entry {
            name: name.into(),
            dtype,
            shape,
            offsets,
        });
    let meta = (select(META_KEYS), select(META_VALUES)).prop_map(|(k, v)| (k.into(), v.into()));
    (
        proptest::collection::vec(entry, 0..=6),
        proptest::collection::vec(meta, 0..=4),
        prop_oneof![4 => Just(0i64), 1 => -9i64..=9, 1 => select(vec![i64::MIN, 100_000_001, i64::MAX])],
        prop_oneof![4 => Just(0i64), 1 => -9i64..=9],
    )
        .prop_map(|(entries, metadata, length_error, data_error)| Header {
            entries,
            metadata,
            length_error,
            data_error,
        })
}

fn file_cases() -> impl Strategy<Value = FileCase> {
    let mutation = prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(Mutation::Random),
        3 => proptest::collection::vec((any::<usize>(), 1u8..), 1..8).prop_map(Mutation::Flip),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        1 => prop_oneof![
            any::<u64>(),
            select(vec![0u64, 1, 2, 7, 100_000_000, 100_000_001, u64::MAX])
        ]
        .prop_map(Mutation::HeaderLength),
        4 => header_strategy().prop_map(Mutation::Header),
        3 => proptest::collection::vec(
            (select(META_KEYS), select(META_VALUES)).prop_map(|(k, v)| (k, v.to_string())),
            1..4
        )
        .prop_map(Mutation::Metadata),
    ];
    (
        0..file_models().len(),
        select(vec![Base::Weights, Base::Case, Base::Cell]),
        mutation,
        select(vec!["", "rnn."]),
    )
        .prop_map(|(model, base, mutation, prefix)| FileCase {
            model,
            base,
            mutation,
            prefix,
        })
}

/// Loads `bytes` every way the library can, for a model of `config`: weights (from bytes,
/// and from a file strictly and non-strictly), the mode's cell weights, and as a reference case
/// whose every accessor and check runs (on the GPU too, when the case loads). Whatever loads
/// must be consistent; nothing may panic or allocate absurdly.
fn exercise_file(
    bytes: &[u8],
    prefix: &str,
    config: &RnnConfig,
    ctx: Option<&GpuContext>,
) -> Outcome {
    let weights = call("RnnWeights::from_safetensors", || {
        RnnWeights::from_safetensors(config, bytes, prefix)
    })?;
    if let Ok(weights) = &weights {
        CpuRnn::new(config.clone(), weights).map_err(|e| {
            fail(
                "from_safetensors accepted weights the model rejects",
                e.to_string(),
            )
        })?;
    }
    let file = TempFile::new(bytes);
    let loaded = call("RnnWeights::load", || {
        RnnWeights::load(config, &file.0, prefix)
    })?;
    // Compared through Debug, where NaN equals NaN (a flipped byte can make one).
    if format!("{:?}", loaded.as_ref().ok()) != format!("{:?}", weights.as_ref().ok()) {
        return Err(fail(
            "load and from_safetensors disagree",
            format!("{loaded:?} vs {weights:?}"),
        ));
    }
    let lenient = call("RnnWeights::load_non_strict", || {
        RnnWeights::load_non_strict(config, &file.0, prefix)
    })?;
    match (&weights, &lenient) {
        // Strict loading accepts a subset of what non-strict loading does, with equal results.
        (Ok(strict), Ok(lenient)) if format!("{strict:?}") != format!("{lenient:?}") => {
            return Err(fail("load_non_strict differs from load", ""));
        }
        (Ok(_), Err(e)) => {
            return Err(fail(
                "load_non_strict rejected what load accepts",
                e.to_string(),
            ));
        }
        (_, Ok(lenient)) => {
            CpuRnn::new(config.clone(), lenient).map_err(|e| {
                fail(
                    "load_non_strict accepted weights the model rejects",
                    e.to_string(),
                )
            })?;
        }
        _ => {}
    }

    let cell = cell_config(config.mode);
    let cell_weights = call("CellConfig::weights_from_safetensors", || {
        cell.weights_from_safetensors(bytes, prefix)
    })?;
    if let Ok(w) = cell_weights {
        cpu_cell(cell, &w).map_err(|e| {
            fail(
                "weights_from_safetensors accepted weights the cell rejects",
                e.to_string(),
            )
        })?;
    }

    let Ok(case) = call("ReferenceCase::load", || ReferenceCase::load(&file.0))? else {
        return Ok(());
    };
    call("ReferenceCase accessors", || {
        let _ = case.kind();
        for key in META_KEYS {
            let _ = case.flag(key);
        }
        for name in TENSOR_NAMES {
            let _ = case.has(name);
            let _ = case.tensor(name);
        }
        let _ = case.lengths();
    })?;
    if let Ok(config) = case.config() {
        if let Ok(weights) = call("ReferenceCase::weights", || case.weights(&config))? {
            let cpu = CpuRnn::new(config.clone(), &weights).map_err(|e| {
                fail(
                    "ReferenceCase::weights accepted weights the model rejects",
                    e.to_string(),
                )
            })?;
            call("ReferenceCase::check (CPU)", || case.check(&cpu, 1e-5))?.ok();
            if let Some(ctx) = ctx {
                let gpu = GpuRnn::new(ctx, config, &weights)
                    .map_err(|e| fail("GpuRnn::new rejected loaded weights", e.to_string()))?;
                call("ReferenceCase::check (GPU)", || case.check(&gpu, 1e-4))?.ok();
                call("ReferenceCase::check_streamed", || {
                    case.check_streamed(&gpu, 2, 1e-4)
                })?
                .ok();
            }
        }
    }
    if let Ok(cell_config) = case.cell_config() {
        if let Ok(w) = call("ReferenceCase::cell_weights", || {
            case.cell_weights(&cell_config)
        })? {
            let cell = RnnCell::cpu(cell_config, &w).map_err(|e| {
                fail(
                    "ReferenceCase::cell_weights accepted weights the cell rejects",
                    e.to_string(),
                )
            })?;
            call("ReferenceCase::check_cell", || case.check_cell(&cell, 1e-5))?.ok();
        }
    }
    Ok(())
}

/// The harness itself: the unmutated files of every model load and PyTorch-style checks pass
/// on them (CPU and GPU), so a mutation that is rejected is rejected for what it changed.
#[test]
fn the_unmutated_files_load_and_check() {
    let ctx = testing::gpu("the_unmutated_files_load_and_check");
    for config in file_models() {
        let what = format!("{config:?}");
        let weights = base_bytes(&config, Base::Weights);
        RnnWeights::from_safetensors(&config, &weights, "rnn.").expect(&what);

        let file = TempFile::new(&base_bytes(&config, Base::Case));
        let case = ReferenceCase::load(&file.0).expect(&what);
        assert_eq!(case.config().unwrap(), config);
        let weights = case.weights(&config).expect(&what);
        let model = CpuRnn::new(config.clone(), &weights).unwrap();
        let check = case.check(&model, 1e-6).unwrap();
        assert!(check.passed(), "{what}: {check:?}");
        assert_eq!(check.c_n.is_some(), config.mode == RnnMode::Lstm, "{what}");
        if let Some(ctx) = &ctx {
            let gpu = GpuRnn::new(ctx, config.clone(), &weights).unwrap();
            assert!(case.check(&gpu, 1e-4).unwrap().passed(), "{what} (GPU)");
        }

        let cell = cell_config(config.mode);
        let bytes = base_bytes(&config, Base::Cell);
        let strict = cell.weights_from_safetensors(&bytes, "");
        if let RnnMode::Rnn(_) = config.mode {
            // The RNN cell's file is a whole reference case: its inputs and steps sit beside
            // the cell's tensors, which strict loading refuses (the case reads non-strictly).
            assert!(
                matches!(&strict, Err(RnnError::Weights { name, .. }) if name == "h0"),
                "{what}: {strict:?}"
            );
            let file = TempFile::new(&bytes);
            let case = ReferenceCase::load(&file.0).unwrap();
            let cell_config = case.cell_config().unwrap();
            assert_eq!(cell_config, cell);
            let model = RnnCell::cpu(
                cell_config.clone(),
                &case.cell_weights(&cell_config).unwrap(),
            );
            assert!(
                case.check_cell(&model.unwrap(), 1e-6).unwrap().passed(),
                "{what}"
            );
        } else {
            cpu_cell(cell.clone(), &strict.expect(&what)).expect(&what);
        }
    }
}

#[test]
fn fuzzed_files_are_rejected_or_valid_never_a_panic() {
    // GPU checks run on the cases that load; without an adapter the CPU checks still run.
    let ctx = testing::gpu("fuzzed_files_are_rejected_or_valid_never_a_panic");
    let models = file_models();
    // Half the old single binary's 15 s: the suite now runs alone, on a core of its own.
    fuzz("files", scaled(8.0), 1_000_000, file_cases(), |case| {
        exercise_file(
            &case.bytes(),
            case.prefix,
            &models[case.model],
            ctx.as_ref(),
        )
    });
}

/// Hostile files named one by one, each with the error it must get (overlapping and
/// out-of-range offsets, absurd shapes, wrong dtypes, huge header lengths), for a model of
/// `mode`.
fn pinned_hostile_files_are_rejected(mode: RnnMode) {
    let config = file_config(mode);
    let entry = |name: &str, dtype: &str, shape: &str, s: u64, e: u64| {
        format!("\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{s},{e}]}}")
    };
    // 8 tensors of usize::MAX / 8 bytes and one of 2 end at usize::MAX - 5: adding the header
    // length to that end overflows inside safetensors' own check (a debug-build panic).
    let overflowing_end = {
        let big = u64::MAX / 8;
        let entries: Vec<String> = (0..9u64)
            .map(|k| {
                let size = if k < 8 { big } else { 2 };
                entry(
                    &format!("t{k}"),
                    "U8",
                    &format!("[{size}]"),
                    k * big,
                    k * big + size,
                )
            })
            .collect();
        raw_file(&format!("{{{}}}", entries.join(",")), 0)
    };
    let valid_header = |tensors: &[String]| format!("{{{}}}", tensors.join(","));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("8 zero bytes", vec![0; 8]),
        ("header length u64::MAX", {
            let mut b = u64::MAX.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("header length 100 MB + 1", {
            let mut b = 100_000_001u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("header length past the end", {
            let mut b = raw_file("{}", 0);
            b[..8].copy_from_slice(&1000u64.to_le_bytes());
            b
        }),
        ("header not JSON", raw_file("not json", 0)),
        ("header a JSON array", raw_file("[1,2,3]", 0)),
        (
            "overlapping offsets",
            raw_file(
                &valid_header(&[
                    entry("weight_ih_l0", "F32", "[4,3]", 0, 48),
                    entry("weight_hh_l0", "F32", "[4,4]", 40, 104),
                ]),
                104,
            ),
        ),
        (
            "offsets beyond the data",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "F32", "[4,3]", 0, 48)]),
                20,
            ),
        ),
        (
            "offsets out of range (u64::MAX)",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "F32", "[4,3]", 0, u64::MAX)]),
                48,
            ),
        ),
        (
            "reversed offsets",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "F32", "[4,3]", 48, 0)]),
                48,
            ),
        ),
        (
            "shape [2^40, 2^40]",
            raw_file(
                &valid_header(&[entry(
                    "weight_ih_l0",
                    "F32",
                    "[1099511627776,1099511627776]",
                    0,
                    16,
                )]),
                16,
            ),
        ),
        (
            "shape [2^61, 8] of U8 (size overflows)",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "U8", "[2305843009213693952,8]", 0, 0)]),
                0,
            ),
        ),
        ("offsets ending past usize::MAX - 8", overflowing_end),
        (
            "unknown dtype",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "F33", "[4,3]", 0, 48)]),
                48,
            ),
        ),
        (
            "negative dimension",
            raw_file(
                &valid_header(&[entry("weight_ih_l0", "F32", "[-4,3]", 0, 48)]),
                48,
            ),
        ),
        (
            "duplicate tensor name",
            raw_file(
                &valid_header(&[
                    entry("weight_ih_l0", "F32", "[4,3]", 0, 48),
                    entry("weight_ih_l0", "F32", "[4,3]", 48, 96),
                ]),
                96,
            ),
        ),
        ("weights as F64", {
            let mut tensors = base_file(&config, Base::Weights).tensors;
            let (_, dtype, _, data) = &mut tensors[0];
            *dtype = Dtype::F64;
            data.extend(vec![0u8; data.len()]);
            serialize(&tensors, &[])
        }),
        ("weight_ih of shape [0, 2^62]", {
            let mut tensors = base_file(&config, Base::Weights).tensors;
            tensors[0] = (
                "rnn.weight_ih_l0".into(),
                Dtype::F32,
                vec![0, 1 << 62],
                vec![],
            );
            serialize(&tensors, &[])
        }),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in &cases {
        let file = TempFile::new(bytes);
        let outcomes = [
            (
                "from_safetensors",
                no_panic(|| RnnWeights::from_safetensors(&config, bytes, "rnn.").map(|_| ())),
            ),
            (
                "load_non_strict",
                no_panic(|| RnnWeights::load_non_strict(&config, &file.0, "rnn.").map(|_| ())),
            ),
            (
                "ReferenceCase",
                no_panic(|| {
                    let case = ReferenceCase::load(&file.0)?;
                    case.weights(&config).map(|_| ())
                }),
            ),
        ];
        for (how, outcome) in outcomes {
            match outcome {
                Ok(Err(RnnError::SafeTensors(_) | RnnError::Weights { .. })) => {}
                Ok(Err(e)) => wrong.push(format!("{name} ({how}): unexpected error {e:?}")),
                Ok(Ok(())) => wrong.push(format!("{name} ({how}): accepted")),
                Err(panic) => wrong.push(format!("{name} ({how}): {panic}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
for_each_mode!(pinned_hostile_files, pinned_hostile_files_are_rejected);

// ---------------------------------------------------------------------------------------------
// How loading behaves, and what its errors say.
