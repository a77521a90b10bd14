//! Features from a dataset folder: each clip's audio is encoded to EnCodec codes, run
//! teacher-forced through the decoder with no text conditioning (MusicGen's capture mode), and
//! every chosen block's output is pooled over time.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, D};

use super::features::{FeatureSet, Labels};
use super::shards::FeatureShard;
use crate::concepts::manifest::entry_path;
use crate::concepts::{read_manifest, Concept, ConceptError, Label, ManifestEntry};
use crate::files::content_hash;
use crate::model::{ModelError, MusicGen};
use crate::shard::Shard;

/// Errors while extracting features.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The dataset folder or its manifest could not be read.
    #[error(transparent)]
    Dataset(#[from] ConceptError),
    /// A clip's WAV file could not be read.
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    /// The model failed to encode or run a clip.
    #[error("{path}: {source}")]
    Model {
        /// The clip being processed.
        path: PathBuf,
        /// What the model reported.
        #[source]
        source: ModelError,
    },
    /// A tensor operation (pooling) failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Bad options or manifest contents (unknown pooling, missing block, unsafe path, ...).
    #[error("{0}")]
    Invalid(String),
}

/// How block outputs are summarised over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Mean over all frames (the paper's choice).
    #[default]
    Mean,
    /// The last frame only (it has attended to the whole clip).
    Last,
}

impl Pooling {
    /// The name stored in features files and bundles.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Last => "last",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = ExtractError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::Last),
            other => Err(ExtractError::Invalid(format!(
                "unknown pooling `{other}`: expected mean or last"
            ))),
        }
    }
}

/// What to extract.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Decoder blocks to keep; empty means all of them.
    pub layers: Vec<usize>,
    /// Pooling over time.
    pub pooling: Pooling,
    /// Name of the model recorded in the features file.
    pub model_name: String,
}

/// Extracts pooled features for every clip listed in `dir/manifest.jsonl`.
/// `on_clip(done, total)` is called after each clip.
pub fn extract_dataset(
    model: &MusicGen,
    dir: &Path,
    options: &ExtractOptions,
    on_clip: &mut dyn FnMut(usize, usize),
) -> Result<FeatureSet, ExtractError> {
    let entries = read_manifest(dir)?;
    extract_entries(model, dir, &entries, options, on_clip)
}

/// What a manifest says about the features to extract, checked without touching the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetPlan {
    /// The name of the one concept all entries share.
    pub concept: String,
    /// Class names (empty for a regression concept).
    pub classes: Vec<String>,
    /// One label per entry.
    pub labels: Labels,
    /// Each entry's WAV file inside the dataset folder.
    pub files: Vec<PathBuf>,
}

/// Checks manifest entries before any audio is read: at least one clip, one concept, labels
/// that fit it, and files that stay inside `dir` (relative, no `..`).
///
/// A built-in concept's classes are its own, in its fixed order. Any other concept (the user's
/// own clips) is a classification over its sorted distinct class labels, at least two, or a
/// regression when every label is a number.
pub fn check_entries(dir: &Path, entries: &[ManifestEntry]) -> Result<DatasetPlan, ExtractError> {
    let first = entries.first().ok_or_else(|| {
        ExtractError::Invalid(format!("{}: the manifest lists no clips", dir.display()))
    })?;
    let concept = first.concept.clone();
    if let Some(other) = entries.iter().find(|e| e.concept != concept) {
        return Err(ExtractError::Invalid(format!(
            "{}: mixes concepts `{concept}` and `{}`",
            dir.display(),
            other.concept
        )));
    }
    let files = entries
        .iter()
        .map(|e| entry_path(dir, e))
        .collect::<Result<_, _>>()?;
    let classes = match Concept::from_name(&concept) {
        Some(c) if c.is_regression() => Vec::new(),
        Some(c) => c.classes(),
        None => own_classes(dir, entries)?,
    };
    let labels = labels_of(entries, &classes)?;
    Ok(DatasetPlan {
        concept,
        classes,
        labels,
        files,
    })
}

/// The classes of a concept baton does not know: its distinct class labels, sorted; none (a
/// regression) when every label is a number.
fn own_classes(dir: &Path, entries: &[ManifestEntry]) -> Result<Vec<String>, ExtractError> {
    let classes: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| match &e.label {
            Label::Class(c) => Some(c.as_str()),
            Label::Value(_) => None,
        })
        .collect();
    if classes.is_empty() {
        return Ok(Vec::new());
    }
    if let [only] = classes.iter().collect::<Vec<_>>()[..] {
        return Err(ExtractError::Invalid(format!(
            "{}: every clip is labelled `{only}`; a probe needs clips of at least two classes",
            dir.display()
        )));
    }
    Ok(classes.into_iter().map(str::to_string).collect())
}

/// Extracts pooled features for the given manifest entries of the dataset in `dir`.
/// Blocks are taken in increasing order, each once, whatever the order of `options.layers`.
pub fn extract_entries(
    model: &MusicGen,
    dir: &Path,
    entries: &[ManifestEntry],
    options: &ExtractOptions,
    on_clip: &mut dyn FnMut(usize, usize),
) -> Result<FeatureSet, ExtractError> {
    let plan = check_entries(dir, entries)?;
    let rows = extract_rows(model, &plan, 0..entries.len(), options, on_clip)?;
    let residual_norms = rows
        .norms
        .iter()
        .map(|(&l, norms)| (l, mean_norm(norms)))
        .collect();
    Ok(rows.into_set(plan, options, model.num_layers(), residual_norms))
}

/// The mean of clips' residual norms, as a features file records it: summed in clip order in
/// f64 (so a merge of shards, summing the same values in the same order, gives the same bits).
pub(crate) fn mean_norm(norms: &[f32]) -> f32 {
    let sum: f64 = norms.iter().map(|&n| n as f64).sum();
    (sum / norms.len().max(1) as f64) as f32
}

/// Shard `shard` of [`extract_entries`]: the rows of [`Shard::range`] over the entries, with
/// the classes and labels of the whole dataset (a shard's clips may lack some classes) and each
/// clip's residual norms, so that [`super::shards::merge`] can join the shards into exactly
/// the file one process writes.
pub fn extract_shard(
    model: &MusicGen,
    dir: &Path,
    entries: &[ManifestEntry],
    shard: Shard,
    options: &ExtractOptions,
    on_clip: &mut dyn FnMut(usize, usize),
) -> Result<FeatureShard, ExtractError> {
    let plan = check_entries(dir, entries)?;
    let manifest = dir.join(crate::concepts::manifest::MANIFEST_FILE);
    let dataset = content_hash(&manifest)
        .map(|h| format!("{h:016x}"))
        .ok_or_else(|| ExtractError::Invalid(format!("cannot read {}", manifest.display())))?;
    let range = shard.range(entries.len());
    let rows = extract_rows(model, &plan, range.clone(), options, on_clip)?;
    let clip_norms = rows.norms.clone();
    let mut plan = plan;
    plan.labels = match plan.labels {
        Labels::Classes(ids) => Labels::Classes(ids[range.clone()].to_vec()),
        Labels::Values(v) => Labels::Values(v[range.clone()].to_vec()),
    };
    let set = rows.into_set(plan, options, model.num_layers(), BTreeMap::new());
    Ok(FeatureShard {
        shard,
        total: entries.len(),
        dataset,
        set,
        clip_norms,
    })
}

/// Pooled features of a run of a dataset's clips: `[clips, hidden]` rows and each clip's
/// residual norm, per block.
struct Rows {
    n: usize,
    hidden: usize,
    rows: BTreeMap<usize, Vec<f32>>,
    norms: BTreeMap<usize, Vec<f32>>,
}

impl Rows {
    fn into_set(
        self,
        plan: DatasetPlan,
        options: &ExtractOptions,
        num_layers: usize,
        residual_norms: BTreeMap<usize, f32>,
    ) -> FeatureSet {
        FeatureSet {
            concept: plan.concept,
            model: options.model_name.clone(),
            pooling: options.pooling.name().to_string(),
            classes: plan.classes,
            n: self.n,
            hidden_size: self.hidden,
            num_layers: Some(num_layers),
            layers: self.rows,
            labels: plan.labels,
            residual_norms,
        }
    }
}

/// Extracts the clips `range` of `plan.files`; `on_clip(done, total)` counts within the range.
fn extract_rows(
    model: &MusicGen,
    plan: &DatasetPlan,
    range: Range<usize>,
    options: &ExtractOptions,
    on_clip: &mut dyn FnMut(usize, usize),
) -> Result<Rows, ExtractError> {
    let mut layers: Vec<usize> = if options.layers.is_empty() {
        (0..model.num_layers()).collect()
    } else {
        options.layers.clone()
    };
    // A block listed twice would otherwise get its rows appended twice.
    layers.sort_unstable();
    layers.dedup();
    if let Some(&l) = layers.iter().find(|&&l| l >= model.num_layers()) {
        return Err(ExtractError::Invalid(format!(
            "block {l} does not exist (the model has {} blocks)",
            model.num_layers()
        )));
    }

    let hidden = model.hidden_size();
    let files = &plan.files[range];
    let mut rows: BTreeMap<usize, Vec<f32>> = layers
        .iter()
        .map(|&l| (l, Vec::with_capacity(files.len() * hidden)))
        .collect();
    let mut norms: BTreeMap<usize, Vec<f32>> = layers
        .iter()
        .map(|&l| (l, Vec::with_capacity(files.len())))
        .collect();
    for (i, path) in files.iter().enumerate() {
        let features = per_block(model, path, &layers, |b| {
            Ok((pooled_vec(b, options.pooling)?, residual_norm(b)?))
        })?;
        for (l, (pooled, norm)) in layers.iter().zip(features) {
            rows.entry(*l).or_default().extend(pooled);
            norms.entry(*l).or_default().push(norm);
        }
        on_clip(i + 1, files.len());
    }
    Ok(Rows {
        n: files.len(),
        hidden,
        rows,
        norms,
    })
}

/// Pooled outputs of `layers` for one WAV file, in the order of `layers`. A file at another
/// rate than the model's is resampled first (as `baton eval` does).
pub fn pooled_clip(
    model: &MusicGen,
    path: &Path,
    layers: &[usize],
    pooling: Pooling,
) -> Result<Vec<Vec<f32>>, ExtractError> {
    per_block(model, path, layers, |b| pooled_vec(b, pooling))
}

/// `f` of each of `layers`' outputs for one WAV file (see [`block_outputs`]), resampled to the
/// model's rate when needed; a failure names the file.
fn per_block<T>(
    model: &MusicGen,
    path: &Path,
    layers: &[usize],
    f: impl Fn(&Tensor) -> candle_core::Result<T>,
) -> Result<Vec<T>, ExtractError> {
    let (audio, _) = crate::audio::read_wav_at(path, model.sample_rate())?;
    map_blocks(model, &audio, layers, f).map_err(|source| ExtractError::Model {
        path: path.to_path_buf(),
        source,
    })
}

/// `f` of each of `layers`' outputs for mono audio at the model's rate (see [`block_outputs`]).
fn map_blocks<T>(
    model: &MusicGen,
    audio: &[f32],
    layers: &[usize],
    f: impl Fn(&Tensor) -> candle_core::Result<T>,
) -> Result<Vec<T>, ModelError> {
    let blocks = block_outputs(model, audio, layers)?;
    Ok(blocks.iter().map(f).collect::<candle_core::Result<_>>()?)
}

/// Pooled outputs of `layers` for mono audio at the model's rate, in the order of `layers`: the
/// audio's EnCodec codes run teacher-forced through the decoder with no text.
pub fn pooled_audio(
    model: &MusicGen,
    audio: &[f32],
    layers: &[usize],
    pooling: Pooling,
) -> Result<Vec<Vec<f32>>, ModelError> {
    map_blocks(model, audio, layers, |b| pooled_vec(b, pooling))
}

/// Outputs `[1, frames, hidden]` of `layers` for mono audio at the model's rate, in the order of
/// `layers`: the audio's EnCodec codes run teacher-forced through the decoder with no text.
pub fn block_outputs(
    model: &MusicGen,
    audio: &[f32],
    layers: &[usize],
) -> Result<Vec<Tensor>, ModelError> {
    let codes = model.encode(audio)?;
    model.capture(&codes, layers)
}

/// One clip's block output pooled to a plain vector.
fn pooled_vec(block: &Tensor, pooling: Pooling) -> candle_core::Result<Vec<f32>> {
    pool(block, pooling)?.flatten_all()?.to_vec1::<f32>()
}

/// The mean over frames of each frame's L2 norm of a block output `[batch, frames, hidden]`:
/// the size of what flows in the residual stream at that block.
pub fn residual_norm(block: &Tensor) -> candle_core::Result<f32> {
    block
        .to_dtype(DType::F32)?
        .sqr()?
        .sum(D::Minus1)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()
}

/// Pools `[batch, frames, hidden]` over frames to `[batch, hidden]` (f32).
pub fn pool(block: &Tensor, pooling: Pooling) -> candle_core::Result<Tensor> {
    let pooled = match pooling {
        Pooling::Mean => block.mean(1)?,
        Pooling::Last => block.narrow(1, block.dim(1)? - 1, 1)?.squeeze(1)?,
    };
    pooled.to_dtype(DType::F32)
}

fn labels_of(entries: &[ManifestEntry], classes: &[String]) -> Result<Labels, ExtractError> {
    if classes.is_empty() {
        let values = entries
            .iter()
            .map(|e| match &e.label {
                Label::Value(v) => Ok(*v as f32),
                Label::Class(c) => Err(ExtractError::Invalid(format!(
                    "{}: class label `{c}` in a regression concept",
                    e.file
                ))),
            })
            .collect::<Result<_, _>>()?;
        return Ok(Labels::Values(values));
    }
    let ids = entries
        .iter()
        .map(|e| match &e.label {
            Label::Class(c) => classes
                .iter()
                .position(|k| k == c)
                .map(|i| i as i64)
                .ok_or_else(|| ExtractError::Invalid(format!("{}: unknown class `{c}`", e.file))),
            Label::Value(v) => Err(ExtractError::Invalid(format!(
                "{}: numeric label {v} in a classification concept",
                e.file
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Labels::Classes(ids))
}
