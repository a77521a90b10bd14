//! Features files (`baton.format = features/1`): pooled decoder block outputs of a dataset, with
//! labels.
//!
//! File layout: tensors `layer.{l}` f32 `[n, hidden]` and `labels` (i64 `[n]` class ids, or f32
//! `[n]` regression targets); metadata `baton.format`, `classes` (JSON list), `model`, `pooling`,
//! `concept`, and optionally `num_layers` (decoder blocks in the model, whichever blocks the file
//! holds; files written before it existed lack it, see [`FeatureSet::model_blocks`]) and
//! `residual_norms` (JSON object block -> mean per-frame L2 norm of the block's output over the
//! clips, before pooling; older files lack it).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::Dtype;

use crate::files::{self as st, FormatError, OwnedTensor};

/// The format tag of features files.
pub const FEATURES_FORMAT: &str = "features/1";

/// Labels of a feature set.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Class ids, indices into [`FeatureSet::classes`].
    Classes(Vec<i64>),
    /// Regression targets (e.g. BPM).
    Values(Vec<f32>),
}

impl Labels {
    /// Number of labelled examples.
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes(v) => v.len(),
            Labels::Values(v) => v.len(),
        }
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Pooled per-block features of `n` clips, row-major `[n, hidden]` per block.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// Concept family the labels describe.
    pub concept: String,
    /// The model the features come from.
    pub model: String,
    /// Pooling over time (`mean`, ...).
    pub pooling: String,
    /// Class names (empty for regression).
    pub classes: Vec<String>,
    /// Number of examples.
    pub n: usize,
    /// Feature width.
    pub hidden_size: usize,
    /// Number of decoder blocks in the model the features come from (None in older files).
    pub num_layers: Option<usize>,
    /// Row-major `[n, hidden]` features per decoder block.
    pub layers: BTreeMap<usize, Vec<f32>>,
    /// One label per example.
    pub labels: Labels,
    /// L2 norm of each block's output before pooling, averaged over each clip's frames and then
    /// over the clips (empty in older files): the residual stream's scale, which bundles carry
    /// for residual-unit strengths.
    pub residual_norms: BTreeMap<usize, f32>,
}

impl FeatureSet {
    /// Reads and validates a features file.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let reader = st::Reader::open(path, FEATURES_FORMAT).map_err(|e| match e {
            FormatError::Invalid { path, message }
                if message.contains(super::shards::FEATURES_SHARD_FORMAT) =>
            {
                FormatError::Invalid {
                    path,
                    message: format!(
                        "{message}: one shard of a features file; join the shards with \
                         `baton merge SHARD... --out FILE` first"
                    ),
                }
            }
            other => other,
        })?;
        Self::from_reader(&reader)
    }

    /// The feature set in an opened file (a features file, or a shard of one).
    pub(crate) fn from_reader(r: &st::Reader) -> Result<Self, FormatError> {
        let path = r.path.as_path();
        let classes: Vec<String> = r.meta_json("classes")?;
        let (dtype, shape, bytes) = r.raw("labels")?;
        if shape.len() != 1 {
            return Err(FormatError::invalid(
                path,
                "`labels` must be one-dimensional",
            ));
        }
        let labels = match dtype {
            Dtype::I64 => {
                let ids: Vec<i64> = bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect();
                if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= classes.len()) {
                    return Err(FormatError::invalid(
                        path,
                        format!(
                            "label {bad} is not a class index (there are {} classes)",
                            classes.len()
                        ),
                    ));
                }
                Labels::Classes(ids)
            }
            Dtype::F32 => Labels::Values(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                    .collect(),
            ),
            other => {
                return Err(FormatError::invalid(
                    path,
                    format!("`labels` is {other:?}, expected I64 (classes) or F32 (values)"),
                ))
            }
        };
        let n = labels.len();
        let mut layers = BTreeMap::new();
        let mut hidden_size = None;
        for name in r.names()? {
            let Some(l) = name.strip_prefix("layer.") else {
                continue;
            };
            let l: usize = l.parse().map_err(|_| {
                FormatError::invalid(path, format!("tensor `{name}` has no block index"))
            })?;
            let (shape, values) = r.f32(&name)?;
            if shape.len() != 2 || shape[0] != n {
                return Err(FormatError::invalid(
                    path,
                    format!("`{name}` has shape {shape:?}, expected [{n}, hidden]"),
                ));
            }
            if *hidden_size.get_or_insert(shape[1]) != shape[1] {
                return Err(FormatError::invalid(path, "layers have different widths"));
            }
            layers.insert(l, values);
        }
        let Some(hidden_size) = hidden_size else {
            return Err(FormatError::invalid(path, "holds no `layer.{l}` tensor"));
        };
        let num_layers = match r.metadata.get("num_layers") {
            None => None,
            Some(text) => {
                let blocks: usize = text.parse().map_err(|_| {
                    FormatError::invalid(
                        path,
                        format!("metadata `num_layers` is `{text}`, expected a block count"),
                    )
                })?;
                if let Some(l) = layers.keys().find(|&&l| l >= blocks) {
                    return Err(FormatError::invalid(
                        path,
                        format!("holds block {l} but metadata `num_layers` is {blocks}"),
                    ));
                }
                Some(blocks)
            }
        };
        Ok(FeatureSet {
            concept: r.meta("concept")?.to_string(),
            model: r.meta("model")?.to_string(),
            pooling: r.meta("pooling")?.to_string(),
            classes,
            n,
            hidden_size,
            num_layers,
            layers,
            labels,
            residual_norms: read_residual_norms(r)?,
        })
    }

    /// Number of decoder blocks in the model: `num_layers` when recorded, else (older files)
    /// one past the largest block held, a lower bound.
    pub fn model_blocks(&self) -> usize {
        self.num_layers
            .unwrap_or_else(|| self.layers.keys().max().map_or(0, |m| m + 1))
    }

    /// Writes the feature set atomically.
    pub fn write(&self, path: &Path) -> Result<(), FormatError> {
        let (tensors, metadata) = self.contents();
        st::write(path, &tensors, metadata)
    }

    /// The tensors and metadata of the file [`FeatureSet::write`] writes.
    pub(crate) fn contents(&self) -> (Vec<OwnedTensor>, HashMap<String, String>) {
        let mut tensors: Vec<OwnedTensor> = self
            .layers
            .iter()
            .map(|(l, v)| OwnedTensor::f32(format!("layer.{l}"), vec![self.n, self.hidden_size], v))
            .collect();
        tensors.push(match &self.labels {
            Labels::Classes(ids) => OwnedTensor::i64("labels", vec![ids.len()], ids),
            Labels::Values(v) => OwnedTensor::f32("labels", vec![v.len()], v),
        });
        let mut metadata = HashMap::from([
            ("baton.format".to_string(), FEATURES_FORMAT.to_string()),
            ("concept".to_string(), self.concept.clone()),
            ("model".to_string(), self.model.clone()),
            ("pooling".to_string(), self.pooling.clone()),
            (
                "classes".to_string(),
                serde_json::to_string(&self.classes).unwrap_or_else(|_| "[]".into()),
            ),
        ]);
        if let Some(blocks) = self.num_layers {
            metadata.insert("num_layers".to_string(), blocks.to_string());
        }
        insert_residual_norms(&mut metadata, &self.residual_norms);
        (tensors, metadata)
    }
}

/// The optional `residual_norms` metadata of features files and bundles (empty when absent);
/// each norm must be a positive number.
pub(crate) fn read_residual_norms(r: &st::Reader) -> Result<BTreeMap<usize, f32>, FormatError> {
    let norms: BTreeMap<usize, f32> = r.meta_blocks("residual_norms", true)?;
    if let Some((l, v)) = norms.iter().find(|(_, v)| !(v.is_finite() && **v > 0.0)) {
        return Err(FormatError::invalid(
            &r.path,
            format!("residual norm {v} of block {l} is not a positive number"),
        ));
    }
    Ok(norms)
}

/// Records `norms` as `residual_norms` metadata, when there are any.
pub(crate) fn insert_residual_norms(
    metadata: &mut HashMap<String, String>,
    norms: &BTreeMap<usize, f32>,
) {
    if !norms.is_empty() {
        metadata.insert("residual_norms".to_string(), st::blocks_json(norms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_classes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        for labels in [
            Labels::Classes(vec![0, 1, 1]),
            Labels::Values(vec![60.0, 90.0, 120.0]),
        ] {
            let set = FeatureSet {
                concept: "tempos".into(),
                model: "tiny".into(),
                pooling: "mean".into(),
                classes: vec!["a".into(), "b".into()],
                n: 3,
                hidden_size: 2,
                num_layers: Some(24),
                layers: BTreeMap::from([
                    (0, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                    (3, vec![0.5; 6]),
                ]),
                labels,
                residual_norms: BTreeMap::from([(0, 9.5), (3, 20.0)]),
            };
            let path = dir.path().join("f.safetensors");
            set.write(&path).unwrap();
            assert_eq!(FeatureSet::read(&path).unwrap(), set);
            assert_eq!(set.model_blocks(), 24);
        }
    }

    fn two_blocks(num_layers: Option<usize>) -> FeatureSet {
        FeatureSet {
            concept: "notes".into(),
            model: "tiny".into(),
            pooling: "mean".into(),
            classes: vec!["a".into(), "b".into()],
            n: 2,
            hidden_size: 1,
            num_layers,
            layers: BTreeMap::from([(1, vec![0.0, 1.0]), (3, vec![2.0, 3.0])]),
            labels: Labels::Classes(vec![0, 1]),
            residual_norms: BTreeMap::new(),
        }
    }

    #[test]
    fn old_files_without_num_layers_fall_back_to_max_block_plus_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        two_blocks(None).write(&path).unwrap();
        let read = FeatureSet::read(&path).unwrap();
        assert_eq!((read.num_layers, read.model_blocks()), (None, 4));
    }

    #[test]
    fn num_layers_below_a_held_block_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.safetensors");
        two_blocks(Some(3)).write(&path).unwrap();
        let err = FeatureSet::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("holds block 3 but metadata `num_layers` is 3"),
            "{err}"
        );
    }
}
