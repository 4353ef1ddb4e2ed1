//! Reading PyTorch `state_dict`s saved as safetensors: the file is memory-mapped and only the
//! tensors a model asks for are decoded, so a small model can be loaded from a checkpoint
//! that also holds gigabytes of other tensors without reading them.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Result, RnnError};
use crate::tensor::Tensor;

/// A safetensors file's bytes, memory-mapped (nothing to map for an empty file).
pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Empty,
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Empty => &[],
        }
    }
}

/// Maps a regular file into memory. Devices, pipes and directories are refused: reading
/// `/dev/zero` as a checkpoint must fail, not grow until memory runs out.
pub(crate) fn map_file(path: &Path) -> Result<FileBytes> {
    let io = |source| RnnError::Io {
        path: path.to_owned(),
        source,
    };
    // Checked before opening: opening a FIFO without a writer blocks.
    let not_regular = || {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    };
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    let file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    if metadata.len() == 0 {
        // mmap refuses empty files; parsing no bytes gives safetensors' own error.
        return Ok(FileBytes::Empty);
    }
    // SAFETY: the map is read-only and lives only while one load runs; as with any
    // memory-mapped reader (safetensors' own loaders included), the caller must not truncate
    // the file while it is being loaded.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(FileBytes::Mapped(map))
}

/// Parses a safetensors container: the header only (limited to 100 MB by safetensors), whose
/// offsets are checked against the data; no tensor is decoded. safetensors 0.6 can overflow
/// an addition on some hostile headers (a panic in debug builds, an error in release ones), so
/// a panic while parsing is turned into an error too: untrusted files must never take the
/// process down.
pub(crate) fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    match std::panic::catch_unwind(|| SafeTensors::deserialize(bytes)) {
        Ok(parsed) => Ok(parsed?),
        Err(_) => Err(RnnError::weights(
            "(safetensors header)",
            "corrupt: its offsets overflow",
        )),
    }
}

/// Reads one float32 tensor and checks its shape.
pub(crate) fn read_f32(file: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let tensor = read_tensor(file, name)?;
    if tensor.shape() != shape {
        return Err(RnnError::weights(
            name,
            format!("has shape {:?}, expected {shape:?}", tensor.shape()),
        ));
    }
    Ok(tensor.into_data())
}

/// Reads one float32 tensor with its stored shape. Data in safetensors is little-endian and may
/// be unaligned, so it is decoded element by element.
pub(crate) fn read_tensor(file: &SafeTensors<'_>, name: &str) -> Result<Tensor> {
    let view = file
        .tensor(name)
        .map_err(|_| RnnError::weights(name, missing_problem(file, name)))?;
    if view.dtype() != Dtype::F32 {
        return Err(RnnError::weights(
            name,
            format!(
                "has dtype {:?}, expected F32 (save a float32 copy: \
                 `save_file({{k: v.float() for k, v in model.state_dict().items()}}, path)`, \
                 or `model.float()` before saving)",
                view.dtype()
            ),
        ));
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::new(data, view.shape())
        .map_err(|_| RnnError::weights(name, "its data does not match its shape"))
}

/// What to say of a tensor the file lacks: which tensors it has under the same prefix, and
/// which prefix would find the name when it is stored under another one.
fn missing_problem(file: &SafeTensors<'_>, name: &str) -> String {
    let mut problem = String::from("missing from the file");
    // The parameter's own name (after the last dot) and the prefix it was looked up under.
    let (prefix, base) = match name.rfind('.') {
        Some(dot) => (&name[..=dot], &name[dot + 1..]),
        None => ("", name),
    };
    let under: Vec<&str> = sorted_names(file)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if !under.is_empty() {
        problem += &format!(
            "; under the prefix `{prefix}` it has {}",
            list(&under, MAX_LISTED)
        );
    }
    let elsewhere: Vec<&str> = sorted_names(file)
        .into_iter()
        .filter(|n| *n != name && (*n == base || n.ends_with(&format!(".{base}"))))
        .collect();
    if let Some(found) = elsewhere.first() {
        let suggested = &found[..found.len() - base.len()];
        problem += &format!("; `{found}` exists: load with the prefix \"{suggested}\"");
    } else if under.is_empty() {
        problem += &format!("; the file has {}", list(&sorted_names(file), MAX_LISTED));
    }
    problem
}

/// Fails when the file has tensors under `prefix` that are not in `expected`, as PyTorch's
/// strict `load_state_dict` does ("Unexpected key(s) in state_dict"): a 2-layer file loaded
/// into a 1-layer configuration is a mistake, not a model.
pub(crate) fn reject_unexpected(
    file: &SafeTensors<'_>,
    prefix: &str,
    expected: &BTreeSet<String>,
) -> Result<()> {
    let unexpected: Vec<&str> = sorted_names(file)
        .into_iter()
        .filter(|n| n.starts_with(prefix) && !expected.contains(*n))
        .collect();
    if unexpected.is_empty() {
        return Ok(());
    }
    Err(RnnError::weights(
        unexpected[0],
        format!(
            "unexpected under the prefix `{prefix}` for this configuration ({} in all: {}); the \
             file holds a different model (more layers, another direction, a projection?) or \
             other modules under the same prefix: check the configuration, or load with a \
             longer prefix or non-strictly",
            unexpected.len(),
            list(&unexpected, MAX_LISTED)
        ),
    ))
}

const MAX_LISTED: usize = 12;

fn sorted_names<'a>(file: &'a SafeTensors<'_>) -> Vec<&'a str> {
    let mut names = file.names();
    names.sort_unstable();
    names
}

/// `a`, `b`, `c` and 3 more.
fn list(names: &[&str], max: usize) -> String {
    if names.is_empty() {
        return "no tensors".into();
    }
    let shown: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    let mut text = shown.join(", ");
    if names.len() > max {
        text += &format!(" and {} more", names.len() - max);
    }
    text
}

/// Writes `tensors` (f32, PyTorch's names) and `metadata` as a safetensors file, the way
/// `safetensors.torch.save_file(state_dict, path)` would, so that PyTorch's `load_file` reads it.
pub(crate) fn write_f32(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &[(&str, String)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| t.data().iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), data) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            t.shape().to_vec(),
            data,
        )?;
        views.push((name.clone(), view));
    }
    let metadata: std::collections::HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize_to_file(views, (!metadata.is_empty()).then_some(metadata), path).map_err(
        |e| match e {
            safetensors::SafeTensorError::IoError(source) => RnnError::Io {
                path: path.to_path_buf(),
                source,
            },
            other => RnnError::SafeTensors(other),
        },
    )
}
