//! Finding a model's files (a local folder, or a Hugging Face hub id at a revision) and reading
//! its weights, in any of the layouts checkpoints come in ([`WEIGHT_LAYOUTS`]: safetensors or
//! PyTorch pickles, whole or sharded).
//!
//! Safetensors weights are read tensor by tensor with positioned reads, so loading never holds
//! the file's pages and a converted copy at the same time: peak memory stays close to the size of
//! the weights themselves. The decoder's large f32 products can instead use their weights in
//! place, from a memory map of the file ([`MappedF32`]): nothing is copied at load, and the pages
//! are the page cache's, shared with every process reading the same checkpoint. PyTorch pickles
//! are read one tensor at a time, through candle's zip reader.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::ModelError;

/// The files that make up a MusicGen checkpoint.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// The weight files, in the first layout of [`WEIGHT_LAYOUTS`] the checkpoint has:
    /// `model.safetensors`, its shards, `pytorch_model.bin`, or its shards.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `generation_config.json`, when the checkpoint has one.
    pub generation_config: Option<PathBuf>,
}

/// True when `HF_HUB_OFFLINE` asks for the hub cache alone (shared with `eval::clap`).
pub(crate) fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// True for strings shaped like `owner/name` that are not an existing path.
pub(crate) fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Resolves `--model`: an existing folder is used as is; otherwise an `owner/name` id is looked up
/// on the hub (or only in the local cache when `HF_HUB_OFFLINE` is set), at the revision after an
/// `@` if there is one (`owner/name@refs/pr/1`: a branch, tag, commit or pull-request ref; the
/// default is `main`). [`with_revision`] writes such a spec.
pub fn resolve(spec: &str) -> Result<ModelFiles, ModelError> {
    let path = Path::new(spec);
    if path.exists() {
        if !path.is_dir() {
            return Err(ModelError::Invalid(format!(
                "--model {spec} is a file; give the folder that holds config.json and model.safetensors"
            )));
        }
        return resolve_folder(path);
    }
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) if Path::new(id).exists() => {
            return Err(ModelError::Invalid(format!(
                "--revision {rev}: {id} is a local folder, and revisions are for hub models"
            )))
        }
        Some((id, "")) => {
            return Err(ModelError::Invalid(format!(
                "--model {spec}: empty revision after `@` (for hub model {id})"
            )))
        }
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    if !looks_like_hub_id(id) {
        return Err(ModelError::Invalid(format!(
            "model folder {spec} does not exist (and it is not a hub id like facebook/musicgen-small)"
        )));
    }
    resolve_hub(id, revision)
}

/// The `--model` spec for `model` at hub revision `revision` (`owner/name@REV`, which
/// [`resolve`] reads back); `model` itself when there is none.
pub fn with_revision(model: &str, revision: Option<&str>) -> String {
    match revision {
        Some(rev) => format!("{model}@{rev}"),
        None => model.to_string(),
    }
}

/// The weight layouts a checkpoint may have, in the order they are looked for: each a file name
/// and whether it is an index naming shards (`weight_map`) rather than the weights.
pub const WEIGHT_LAYOUTS: [(&str, bool); 4] = [
    ("model.safetensors", false),
    ("model.safetensors.index.json", true),
    ("pytorch_model.bin", false),
    ("pytorch_model.bin.index.json", true),
];

/// The weight files of the first layout of [`WEIGHT_LAYOUTS`] that `fetch` finds; when none is
/// found, an error naming `place` and every file tried.
pub(crate) fn find_weights(
    place: &str,
    fetch: &dyn Fn(&str) -> Result<PathBuf, ModelError>,
) -> Result<Vec<PathBuf>, ModelError> {
    let mut last = None;
    for (name, is_index) in WEIGHT_LAYOUTS {
        match fetch(name) {
            Ok(found) if !is_index => return Ok(vec![found]),
            // Shards that an existing index names must exist: their error is the answer.
            Ok(index) => return shard_names(&index)?.iter().map(|n| fetch(n)).collect(),
            // A plain absence says nothing the list of files tried does not; a hub's answer
            // (a 404, a refusal, no network) does.
            Err(ModelError::Missing { .. }) => {}
            Err(e) => last = Some(e),
        }
    }
    let tried: Vec<&str> = WEIGHT_LAYOUTS.iter().map(|(n, _)| *n).collect();
    Err(ModelError::NoWeights {
        place: place.to_string(),
        tried: tried.join(", "),
        last: last.map(|e| e.to_string()).unwrap_or_default(),
    })
}

fn resolve_folder(dir: &Path) -> Result<ModelFiles, ModelError> {
    let need = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(ModelError::Missing { path: p })
        }
    };
    let config = need("config.json")?;
    let weights = find_weights(&dir.display().to_string(), &need)?;
    let tokenizer = need("tokenizer.json")?;
    let generation_config = Some(dir.join("generation_config.json")).filter(|p| p.is_file());
    Ok(ModelFiles {
        config,
        weights,
        tokenizer,
        generation_config,
    })
}

/// Shard file names listed in a `model.safetensors.index.json` (or `pytorch_model.bin.index.json`),
/// each once, in order.
pub(crate) fn shard_names(index: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::Io {
        path: index.to_path_buf(),
        source: e,
    })?;
    let bad = |message: String| ModelError::Weights {
        path: index.to_path_buf(),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut names: Vec<String> = Vec::new();
    for file in map.values() {
        let file = file
            .as_str()
            .ok_or_else(|| bad("`weight_map` values must be file names".into()))?;
        if file.contains('/') || file.contains("..") {
            return Err(bad(format!("shard name {file:?} leaves the model folder")));
        }
        if !names.iter().any(|n| n == file) {
            names.push(file.to_string());
        }
    }
    if names.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(names)
}

/// Fetches one file of a model (from a folder, the hub cache, or downloading it).
pub(crate) type Fetch = Box<dyn Fn(&str) -> Result<PathBuf, ModelError>>;

/// How files of hub model `id` at `revision` are fetched (the cache alone when
/// [`offline`]), and the words that name the place in errors.
pub(crate) fn hub_fetcher(id: &str, revision: Option<&str>) -> Result<(Fetch, String), ModelError> {
    let repo_of = |id: &str| match revision {
        Some(rev) => {
            hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, rev.into())
        }
        None => hf_hub::Repo::model(id.to_string()),
    };
    let place = match revision {
        Some(rev) => format!("hub model {id} at revision {rev}"),
        None => format!("hub model {id}"),
    };
    let name = with_revision(id, revision);
    let fetch: Fetch = if offline() {
        let cache = hf_hub::Cache::from_env();
        let root = cache.path().clone();
        let repo = cache.repo(repo_of(id));
        Box::new(move |file: &str| {
            repo.get(file).ok_or_else(|| ModelError::Hub {
                repo: name.clone(),
                file: file.to_string(),
                message: format!(
                    "not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
                    root.display()
                ),
            })
        })
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| hub_error(&name, "", e))?;
        let repo = api.repo(repo_of(id));
        Box::new(move |file: &str| repo.get(file).map_err(|e| hub_error(&name, file, e)))
    };
    Ok((fetch, place))
}

fn resolve_hub(id: &str, revision: Option<&str>) -> Result<ModelFiles, ModelError> {
    let (fetch, place) = hub_fetcher(id, revision)?;
    let config = fetch("config.json")?;
    let weights = find_weights(&place, &fetch)?;
    let tokenizer = fetch("tokenizer.json")?;
    let generation_config = fetch("generation_config.json").ok();
    Ok(ModelFiles {
        config,
        weights,
        tokenizer,
        generation_config,
    })
}

/// A failed hub look-up of `file` in `repo`. When the hub cannot be reached at all (no network,
/// as on many machines), the message says the two ways on: a local folder, or the cache alone.
pub(crate) fn hub_error(repo: &str, file: &str, e: impl std::fmt::Display) -> ModelError {
    let message = e.to_string();
    let lower = message.to_lowercase();
    let unreachable = [
        "dns",
        "lookup",
        "connect",
        "network",
        "timed out",
        "timeout",
        "transport",
    ]
    .iter()
    .any(|w| lower.contains(w));
    ModelError::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        message: if unreachable {
            format!(
                "{message} (the Hugging Face hub cannot be reached: give --model DIR for a \
                 local copy of the model, or set HF_HUB_OFFLINE=1 to use the hub cache alone)"
            )
        } else {
            message
        },
    }
}

/// Where one tensor lives inside a safetensors file.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// Reads tensors from one or more safetensors files on demand.
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
    /// Each file's memory map, made the first time a tensor of it is asked for in place
    /// (`None` where mapping failed: those tensors are read instead).
    maps: Vec<OnceLock<Option<Arc<memmap2::Mmap>>>>,
}

/// An f32 tensor of a safetensors file used where it lies, in a read-only memory map of the
/// file, instead of a copy in memory (see [`Weights::mapped_f32`]).
///
/// As with every memory-mapped loader (candle's, transformers'), the file must not be rewritten
/// while the model is loaded: the values would change under the model, or a truncated file
/// would end the process with a bus error.
#[derive(Debug, Clone)]
pub struct MappedF32 {
    map: Arc<memmap2::Mmap>,
    /// Byte offset of the first value in the map (a multiple of 4).
    start: usize,
    shape: Vec<usize>,
}

impl MappedF32 {
    /// The values, row-major.
    pub fn values(&self) -> &[f32] {
        let len = self.shape.iter().product::<usize>();
        let bytes = &self.map[self.start..self.start + 4 * len];
        // SAFETY: the map is page-aligned and `start` a multiple of 4, so the pointer is aligned
        // for f32; `Weights::mapped_f32` checked the range lies in the file; any bit pattern is
        // an f32; safetensors stores little-endian values and mapping is only offered on
        // little-endian targets.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), len) }
    }

    /// The tensor's shape.
    pub fn dims(&self) -> &[usize] {
        &self.shape
    }

    /// A copy in a CPU tensor (for work that needs candle's own storage).
    pub fn to_tensor(&self) -> candle_core::Result<Tensor> {
        Tensor::from_slice(self.values(), self.shape.as_slice(), &Device::Cpu)
    }

    /// Says this process is done with the values' pages for now, once they were converted or
    /// packed into memory of its own: they leave its resident set (the page cache keeps them,
    /// and a later read faults them back in), so a bf16, q8 or q4 load does not count the whole
    /// checkpoint in its RSS. Nothing changes for readers: the map is read-only, so its pages
    /// always come back from the file. Best effort: a refusal changes nothing.
    pub fn release(&self) {
        #[cfg(unix)]
        {
            let len = 4 * self.values().len();
            // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED only drops this
            // process's page-table entries: every later access (also through other views of
            // the same pages) reads the file's unchanged contents again. The range lies in the
            // map (checked when the view was made).
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.start, len)
            };
        }
    }
}

/// Whether f32 weights may be used in place from a memory map: on little-endian targets, unless
/// `BATON_MAP_WEIGHTS=0` asks for copies (to compare the two in benchmarks).
fn mapping_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        cfg!(target_endian = "little")
            && std::env::var("BATON_MAP_WEIGHTS").map_or(true, |v| v != "0")
    })
}

fn parse_dtype(s: &str) -> Option<(DType, usize)> {
    Some(match s {
        "F32" => (DType::F32, 4),
        "F16" => (DType::F16, 2),
        "BF16" => (DType::BF16, 2),
        "F64" => (DType::F64, 8),
        "I64" => (DType::I64, 8),
        "U8" => (DType::U8, 1),
        "U32" => (DType::U32, 4),
        _ => return None,
    })
}

impl SafetensorsFiles {
    /// Opens every file and checks its header; errors name the file.
    pub fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let bad = |message: String| ModelError::Weights {
                path: path.clone(),
                message,
            };
            let file = File::open(path).map_err(|e| ModelError::Io {
                path: path.clone(),
                source: e,
            })?;
            let size = file
                .metadata()
                .map_err(|e| ModelError::Io {
                    path: path.clone(),
                    source: e,
                })?
                .len();
            let mut n = [0u8; 8];
            read_at(&file, 0, &mut n)
                .map_err(|_| bad("not a safetensors file (too short)".into()))?;
            let n = u64::from_le_bytes(n);
            if n > 100_000_000 || 8 + n > size {
                return Err(bad("not a safetensors file (bad header size)".into()));
            }
            let mut header = vec![0u8; n as usize];
            read_at(&file, 8, &mut header).map_err(|e| bad(e.to_string()))?;
            let header: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&header)
                    .map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
            let data_start = 8 + n;
            for (name, info) in header {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
                let (dtype, width) = parse_dtype(dtype)
                    .ok_or_else(|| bad(format!("tensor {name}: unsupported dtype {dtype:?}")))?;
                let shape: Vec<usize> = info
                    .get("shape")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .ok_or_else(|| bad(format!("tensor {name}: bad shape")))?;
                let offsets: [u64; 2] = info
                    .get("data_offsets")
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .ok_or_else(|| bad(format!("tensor {name}: bad data_offsets")))?;
                // Every size comes from the file: overflow means a crafted or corrupt header.
                let len = shape
                    .iter()
                    .try_fold(width, |acc, &d| acc.checked_mul(d))
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor {name}: shape {shape:?} is too large (corrupt header)"
                        ))
                    })?;
                let end = data_start.checked_add(offsets[1]);
                if offsets[1] < offsets[0]
                    || offsets[1] - offsets[0] != len as u64
                    || end.is_none_or(|end| end > size)
                {
                    return Err(bad(format!(
                        "tensor {name}: data lies outside the file (truncated or corrupt)"
                    )));
                }
                entries.insert(
                    name,
                    Entry {
                        file: i,
                        dtype,
                        shape,
                        start: data_start + offsets[0],
                        len,
                    },
                );
            }
            files.push((path.clone(), file));
        }
        let maps = files.iter().map(|_| OnceLock::new()).collect();
        Ok(SafetensorsFiles {
            files,
            entries,
            maps,
        })
    }

    /// The f32 tensor `name` in place in its file's memory map, when it is stored as f32 at an
    /// aligned offset and the file maps; `None` otherwise (read it the usual way then).
    pub fn mapped_f32(&self, name: &str) -> Option<MappedF32> {
        let entry = self.entries.get(name)?;
        if entry.dtype != DType::F32 || !entry.start.is_multiple_of(4) || !mapping_enabled() {
            return None;
        }
        let map = self.maps[entry.file]
            .get_or_init(|| {
                // SAFETY: a read-only map; see `MappedF32` for the file staying unchanged.
                unsafe { memmap2::Mmap::map(&self.files[entry.file].1) }
                    .ok()
                    .map(Arc::new)
            })
            .clone()?;
        let start = usize::try_from(entry.start).ok()?;
        // `open` checked the entry against the file's size; the map may still be shorter if the
        // file shrank since.
        (start + entry.len <= map.len()).then(|| MappedF32 {
            map,
            start,
            shape: entry.shape.clone(),
        })
    }

    /// Name, dtype and shape of every tensor, sorted by name.
    pub fn tensors(&self) -> Vec<(String, DType, Vec<usize>)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.dtype, e.shape.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A `VarBuilder` reading from these files, converting floating-point weights to `dtype`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        Weights::Safetensors(self.clone()).var_builder(dtype, device)
    }

    fn read(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| missing_tensor(name, self.files.iter().map(|(p, _)| p)))?;
        // An f32 weight wanted narrower (`--dtype bf16`) is converted straight from the file's
        // memory map: reading it whole first faulted in and filled twice the memory, most of a
        // bf16 load.
        if matches!(dtype, DType::BF16 | DType::F16) {
            if let Some(m) = self.mapped_f32(name) {
                let t = narrowed(m.values(), m.dims(), dtype)?;
                m.release();
                return t.to_device(device);
            }
        }
        let (path, file) = &self.files[entry.file];
        let t = read_tensor(file, entry, &|e| {
            candle_core::Error::Msg(format!("{}: reading {name}: {e}", path.display()))
        })?;
        converted(t, dtype, device)
    }
}

/// A checkpoint's weights, by layout: safetensors files read on demand, or PyTorch pickles
/// (`pytorch_model.bin`: zip archives written by `torch.save`, read by candle tensor by tensor).
#[derive(Clone)]
pub enum Weights {
    /// `model.safetensors` or its shards.
    Safetensors(Arc<SafetensorsFiles>),
    /// `pytorch_model.bin` or its shards.
    Pth(Arc<PthFiles>),
}

/// True for a PyTorch pickle by its extension (`.bin`, `.pt`, `.pth`).
fn is_pth(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "bin" | "pt" | "pth"))
}

impl Weights {
    /// Opens the weight files, as PyTorch pickles when they are named so, else as safetensors.
    pub fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        if paths.iter().any(|p| is_pth(p)) {
            Ok(Weights::Pth(Arc::new(PthFiles::open(paths)?)))
        } else {
            Ok(Weights::Safetensors(Arc::new(SafetensorsFiles::open(
                paths,
            )?)))
        }
    }

    /// Name, dtype and shape of every tensor, sorted by name.
    pub fn tensors(&self) -> Vec<(String, DType, Vec<usize>)> {
        match self {
            Weights::Safetensors(f) => f.tensors(),
            Weights::Pth(f) => f.tensors(),
        }
    }

    /// A `VarBuilder` reading these weights, converting floating-point ones to `dtype`.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(Backend(self.clone())), dtype, device.clone())
    }

    /// The f32 tensor `name` used in place from a memory map of its safetensors file (see
    /// [`SafetensorsFiles::mapped_f32`]); `None` for PyTorch pickles (compressed or pickled
    /// storage cannot be used in place) and tensors stored otherwise.
    pub fn mapped_f32(&self, name: &str) -> Option<MappedF32> {
        match self {
            Weights::Safetensors(f) => f.mapped_f32(name),
            Weights::Pth(_) => None,
        }
    }
}

/// Tensors of one or more PyTorch pickles, each read when asked for.
pub struct PthFiles {
    files: Vec<(PathBuf, candle_core::pickle::PthTensors)>,
    /// Tensor name to the file that holds it.
    index: HashMap<String, usize>,
}

impl PthFiles {
    /// Reads every file's tensor table; errors name the file.
    pub fn open(paths: &[PathBuf]) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let pth = candle_core::pickle::PthTensors::new(path, None).map_err(|e| {
                ModelError::Weights {
                    path: path.clone(),
                    message: format!("not a PyTorch weights file ({e})"),
                }
            })?;
            for name in pth.tensor_infos().keys() {
                index.insert(name.clone(), i);
            }
            files.push((path.clone(), pth));
        }
        Ok(PthFiles { files, index })
    }

    /// Name, dtype and shape of every tensor, sorted by name.
    pub fn tensors(&self) -> Vec<(String, DType, Vec<usize>)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .flat_map(|(_, f)| f.tensor_infos().values())
            .map(|t| (t.name.clone(), t.dtype, t.layout.dims().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn read(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let missing = || missing_tensor(name, self.files.iter().map(|(p, _)| p));
        let (path, file) = &self.files[*self.index.get(name).ok_or_else(missing)?];
        let t = file
            .get(name)
            .map_err(|e| {
                candle_core::Error::Msg(format!("{}: reading {name}: {e}", path.display()))
            })?
            .ok_or_else(missing)?;
        converted(t, dtype, device)
    }
}

/// Weights as candle's `VarBuilder` reads them: each tensor read when asked for and checked
/// against the shape the config implies.
struct Backend(Weights);

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "tensor {name} has shape {:?}, the config implies {:?}",
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match &self.0 {
            Weights::Safetensors(f) => f.read(name, dtype, dev),
            Weights::Pth(f) => f.read(name, dtype, dev),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        match &self.0 {
            Weights::Safetensors(f) => f.entries.contains_key(name),
            Weights::Pth(f) => f.index.contains_key(name),
        }
    }
}

/// The error for a tensor that none of `files` holds.
fn missing_tensor<'a>(name: &str, files: impl Iterator<Item = &'a PathBuf>) -> candle_core::Error {
    let files: Vec<String> = files.map(|p| p.display().to_string()).collect();
    candle_core::Error::Msg(format!(
        "tensor {name} is missing from {}",
        files.join(", ")
    ))
}

/// `t` as `dtype` (floating-point tensors only) on `device`: how every layout hands a tensor over.
fn converted(t: Tensor, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let t = if t.dtype().is_float() && t.dtype() != dtype {
        t.to_dtype(dtype)?
    } else {
        t
    };
    t.to_device(device)
}

/// `values` as a CPU tensor of `dtype` (bf16 or f16), rounded as candle's `to_dtype` rounds
/// them (to nearest, ties to even), converted on every thread.
fn narrowed(values: &[f32], shape: &[usize], dtype: DType) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    match dtype {
        DType::BF16 => {
            let v: Vec<half::bf16> = values
                .par_iter()
                .map(|&x| half::bf16::from_f32(x))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        DType::F16 => {
            let v: Vec<half::f16> = values.par_iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        other => Tensor::from_slice(values, shape, &Device::Cpu)?.to_dtype(other),
    }
}

/// Reads one tensor's bytes into the CPU buffer the tensor will own. f32, f16 and bf16 (the
/// dtypes checkpoints hold) are read straight into a lazily zeroed typed buffer: going through a
/// separate byte buffer faulted in, cleared and copied every weight twice, most of a load's time
/// (measured: 2.2 GB f32 checkpoint). Safetensors data is little-endian, like every target candle
/// runs on. `io` puts a read failure in context.
fn read_tensor(
    file: &File,
    entry: &Entry,
    io: &dyn Fn(std::io::Error) -> candle_core::Error,
) -> candle_core::Result<Tensor> {
    let shape = entry.shape.as_slice();
    match entry.dtype {
        DType::F32 => {
            let mut v = vec![0f32; entry.len / 4];
            read_at(file, entry.start, as_bytes_mut(&mut v)).map_err(io)?;
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        DType::BF16 | DType::F16 => {
            let mut v = vec![0u16; entry.len / 2];
            read_at(file, entry.start, as_bytes_mut(&mut v)).map_err(io)?;
            if entry.dtype == DType::BF16 {
                Tensor::from_vec(retype::<half::bf16>(v), shape, &Device::Cpu)
            } else {
                Tensor::from_vec(retype::<half::f16>(v), shape, &Device::Cpu)
            }
        }
        _ => {
            let mut bytes = vec![0u8; entry.len];
            read_at(file, entry.start, &mut bytes).map_err(io)?;
            Tensor::from_raw_buffer(&bytes, entry.dtype, shape, &Device::Cpu)
        }
    }
}

/// Plain numbers a file's bytes may be read into directly.
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for u16 {}

fn as_bytes_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: `Plain` types have no padding and every bit pattern is a valid value, so their
    // memory may be viewed and written as bytes; the length covers exactly the slice.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Reinterprets raw 16-bit words as a 16-bit float type without copying.
fn retype<T: HalfFloat>(v: Vec<u16>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `HalfFloat` types are `repr(transparent)` over u16 (same size and alignment, any
    // bit pattern valid), and the allocation is handed over whole, length and capacity included.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// The 16-bit float types of `half`, both `repr(transparent)` over u16.
trait HalfFloat {}
impl HalfFloat for half::bf16 {}
impl HalfFloat for half::f16 {}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// What files record as the model `spec` names: the absolute path of a local folder (a path as
/// typed means nothing from another folder), else the hub id as given.
pub fn model_identity(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_dir() {
        if let Ok(abs) = std::fs::canonicalize(path) {
            return abs.display().to_string();
        }
    }
    spec.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_dtype_reads_back_exactly() {
        let dev = Device::Cpu;
        let base = Tensor::new(&[[1.5f32, -2.25, 3.0], [0.0, 1e-3, -7.5]], &dev).unwrap();
        let stored = [
            ("f32", base.clone()),
            ("bf16", base.to_dtype(DType::BF16).unwrap()),
            ("f16", base.to_dtype(DType::F16).unwrap()),
            (
                "i64",
                Tensor::new(&[[1i64, -2, 3], [4, 5, -6]], &dev).unwrap(),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        candle_core::safetensors::save(
            &stored
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            &path,
        )
        .unwrap();
        let files = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap();
        for (name, want) in &stored {
            let got = files.read(name, want.dtype(), &dev).unwrap();
            assert_eq!(
                (got.dtype(), got.dims()),
                (want.dtype(), want.dims()),
                "{name}"
            );
            let values = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
            assert_eq!(values(&got), values(want), "{name}");
        }
    }

    #[test]
    fn f32_weights_read_narrower_round_as_candle_rounds_and_released_pages_read_back() {
        let dev = Device::Cpu;
        // Halfway and near-halfway values for both formats, out of f16's range, subnormal,
        // signed zero, infinities, NaN.
        let mut values = vec![
            1.0f32 + f32::EPSILON * 64.0,
            1.0 + f32::EPSILON * 32.0,
            -1.0 - f32::EPSILON * 96.0,
            70000.0,
            -1e-40,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.3e-5,
        ];
        values.extend((0..990).map(|i| (i as f32 - 495.0) * 0.7311));
        let base = Tensor::from_vec(values, (10, 100), &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("w".to_string(), base.clone())]),
            &path,
        )
        .unwrap();
        let files = SafetensorsFiles::open(std::slice::from_ref(&path)).unwrap();
        assert!(files.mapped_f32("w").is_some() || !mapping_enabled());
        // Released pages come back with the file's contents (were the map ever anonymous or
        // written to, they would come back as zeros).
        if let Some(m) = files.mapped_f32("w") {
            let before: Vec<u32> = m.values().iter().map(|v| v.to_bits()).collect();
            m.release();
            let after: Vec<u32> = m.values().iter().map(|v| v.to_bits()).collect();
            assert_eq!(before, after);
        }
        let bits = |t: &Tensor| {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        for dtype in [DType::BF16, DType::F16] {
            let got = files.read("w", dtype, &dev).unwrap();
            let want = base.to_dtype(dtype).unwrap();
            assert_eq!((got.dtype(), got.dims()), (dtype, want.dims()));
            assert_eq!(bits(&got), bits(&want), "{dtype:?}");
        }
    }

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("facebook/musicgen-small"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("musicgen"));
    }

    #[test]
    fn revisions_ride_on_the_spec_and_are_for_hub_ids_only() {
        assert_eq!(with_revision("a/b", None), "a/b");
        assert_eq!(with_revision("a/b", Some("refs/pr/1")), "a/b@refs/pr/1");
        let e = resolve("a/b@").err().unwrap();
        assert!(e.to_string().contains("empty revision"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let spec = with_revision(dir.path().to_str().unwrap(), Some("main"));
        let e = resolve(&spec).err().unwrap();
        assert!(e.to_string().contains("local folder"), "{e}");
        let e = resolve("not a hub id@main").err().unwrap();
        assert!(e.to_string().contains("not a hub id"), "{e}");
    }

    #[test]
    fn corrupt_weights_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
        let e = SafetensorsFiles::open(std::slice::from_ref(&p))
            .err()
            .unwrap();
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }

    /// Writes a safetensors file with the given JSON header and `data` bytes.
    fn crafted(dir: &Path, header: &str, data: usize) -> PathBuf {
        let p = dir.join("model.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn crafted_headers_that_overflow_are_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let huge = u64::MAX / 2;
        // The shape's byte count overflows usize.
        let p = crafted(
            dir.path(),
            &format!(r#"{{"a":{{"dtype":"F32","shape":[{huge},{huge}],"data_offsets":[0,16]}}}}"#),
            16,
        );
        let e = SafetensorsFiles::open(std::slice::from_ref(&p))
            .err()
            .unwrap();
        assert!(e.to_string().contains("corrupt"), "{e}");
        // The end offset overflows when added to the data start.
        let p = crafted(
            dir.path(),
            &format!(
                r#"{{"a":{{"dtype":"U8","shape":[1],"data_offsets":[{},{}]}}}}"#,
                u64::MAX - 1,
                u64::MAX
            ),
            16,
        );
        let e = SafetensorsFiles::open(std::slice::from_ref(&p))
            .err()
            .unwrap();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }

    #[test]
    fn reads_back_a_written_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let t = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("a.weight", t)]), &p).unwrap();
        let files = Arc::new(SafetensorsFiles::open(&[p]).unwrap());
        let vb = files.var_builder(DType::F32, &Device::Cpu);
        let back = vb.get((2, 2), "a.weight").unwrap();
        assert_eq!(
            back.to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![3., 4.]]
        );
        assert!(vb.get((2, 3), "a.weight").is_err());
        assert!(vb.get((2, 2), "b.weight").is_err());
    }
}
