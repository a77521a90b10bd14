//! Direction bundles (`baton.format = direction/1`): one unit-norm concept direction per steered
//! decoder block, with the probe's per-block validation scores.
//!
//! File layout: tensors `direction.{l}` f32 `[hidden]` (l = 0-based decoder block whose output is
//! steered); metadata `baton.format`, `concept`, `target`, `model`, `hidden_size`, `num_layers`
//! (decoder blocks in the whole model, not just those with a direction), `metric`
//! (`auc`|`acc`|`mse`), `scores` (JSON object block -> validation score), `pooling`, and
//! optionally `residual_norms` (JSON object block -> the typical norm of that block's output over
//! the features file's clips; bundles trained before baton recorded it lack it) and `method`
//! (`rfm` or `mean-diff`; absent in older bundles, which are all RFM).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::features::{insert_residual_norms, read_residual_norms};
use crate::files::{self as st, FormatError, OwnedTensor};

/// The format tag of direction bundles.
pub const DIRECTION_FORMAT: &str = "direction/1";

/// Concept directions for some decoder blocks of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionBundle {
    /// Concept family, e.g. `notes`.
    pub concept: String,
    /// What the direction points to within the family, e.g. `C#` (or the regression target).
    pub target: String,
    /// The model the probes were trained on (hub id or folder name).
    pub model: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder blocks in the model.
    pub num_layers: usize,
    /// Validation metric of the scores: `auc`, `acc` or `mse`.
    pub metric: String,
    /// Pooling used for the features (`mean`, ...).
    pub pooling: String,
    /// How the directions were found: `rfm` (also for older bundles, which lack the key) or
    /// `mean-diff`.
    pub method: String,
    /// Validation score per block.
    pub scores: BTreeMap<usize, f64>,
    /// Unit-norm direction per block.
    pub directions: BTreeMap<usize, Vec<f32>>,
    /// L2 norm of each block's output, averaged over each clip's frames and then over the
    /// features file's clips (empty in older bundles): the residual stream's scale, which
    /// residual-unit strengths are measured in.
    pub residual_norms: BTreeMap<usize, f32>,
}

/// `dir/name.safetensors` -> `dir/name.classifier.safetensors`: where `baton train --task
/// multiclass` puts the classifier of a bundle.
pub fn classifier_path(bundle: &Path) -> PathBuf {
    let stem = bundle
        .file_stem()
        .map_or_else(|| "bundle".into(), |s| s.to_string_lossy().into_owned());
    bundle.with_file_name(format!("{stem}.classifier.safetensors"))
}

impl DirectionBundle {
    /// Reads and validates a bundle file.
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let r = st::Reader::open(path, DIRECTION_FORMAT)?;
        let parse_usize = |key: &str| -> Result<usize, FormatError> {
            r.meta(key)?.parse().map_err(|_| {
                FormatError::invalid(path, format!("metadata `{key}` is not a whole number"))
            })
        };
        let hidden_size = parse_usize("hidden_size")?;
        let num_layers = parse_usize("num_layers")?;
        let scores: BTreeMap<usize, f64> = r.meta_blocks("scores", false)?;
        let residual_norms = read_residual_norms(&r)?;
        let mut directions = BTreeMap::new();
        for name in r.names()? {
            let Some(l) = name.strip_prefix("direction.") else {
                continue;
            };
            let l: usize = l.parse().map_err(|_| {
                FormatError::invalid(path, format!("tensor `{name}` has no block index"))
            })?;
            if l >= num_layers {
                return Err(FormatError::invalid(
                    path,
                    format!("`{name}` is beyond num_layers = {num_layers}"),
                ));
            }
            let (shape, values) = r.f32(&name)?;
            if shape != [hidden_size] {
                return Err(FormatError::invalid(
                    path,
                    format!("`{name}` has shape {shape:?}, expected [{hidden_size}]"),
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(FormatError::invalid(
                    path,
                    format!("`{name}` is not finite"),
                ));
            }
            directions.insert(l, values);
        }
        if directions.is_empty() {
            return Err(FormatError::invalid(
                path,
                "holds no `direction.{l}` tensor",
            ));
        }
        Ok(DirectionBundle {
            concept: r.meta("concept")?.to_string(),
            target: r.meta("target")?.to_string(),
            model: r.meta("model")?.to_string(),
            hidden_size,
            num_layers,
            metric: r.meta("metric")?.to_string(),
            pooling: r.meta("pooling")?.to_string(),
            method: r
                .metadata
                .get("method")
                .cloned()
                .unwrap_or_else(|| "rfm".into()),
            scores,
            directions,
            residual_norms,
        })
    }

    /// Writes the bundle atomically.
    pub fn write(&self, path: &Path) -> Result<(), FormatError> {
        let tensors: Vec<OwnedTensor> = self
            .directions
            .iter()
            .map(|(l, v)| OwnedTensor::f32(format!("direction.{l}"), vec![v.len()], v))
            .collect();
        let mut metadata = HashMap::from([
            ("baton.format".to_string(), DIRECTION_FORMAT.to_string()),
            ("concept".to_string(), self.concept.clone()),
            ("target".to_string(), self.target.clone()),
            ("model".to_string(), self.model.clone()),
            ("hidden_size".to_string(), self.hidden_size.to_string()),
            ("num_layers".to_string(), self.num_layers.to_string()),
            ("metric".to_string(), self.metric.clone()),
            ("pooling".to_string(), self.pooling.clone()),
            ("scores".to_string(), st::blocks_json(&self.scores)),
            ("method".to_string(), self.method.clone()),
        ]);
        insert_residual_norms(&mut metadata, &self.residual_norms);
        st::write(path, &tensors, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DirectionBundle {
        DirectionBundle {
            concept: "notes".into(),
            target: "C#".into(),
            model: "tiny".into(),
            hidden_size: 4,
            num_layers: 3,
            metric: "auc".into(),
            pooling: "mean".into(),
            scores: BTreeMap::from([(0, 0.5), (2, 0.9)]),
            directions: BTreeMap::from([
                (0, vec![1.0, 0.0, 0.0, 0.0]),
                (2, vec![0.0, 0.6, 0.8, 0.0]),
            ]),
            residual_norms: BTreeMap::from([(0, 3.5), (2, 12.25)]),
            method: "rfm".into(),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.safetensors");
        sample().write(&path).unwrap();
        assert_eq!(DirectionBundle::read(&path).unwrap(), sample());
        // Older bundles have no residual norms.
        let old = DirectionBundle {
            residual_norms: BTreeMap::new(),
            ..sample()
        };
        old.write(&path).unwrap();
        let r = st::Reader::open(&path, DIRECTION_FORMAT).unwrap();
        assert!(!r.metadata.contains_key("residual_norms"));
        assert_eq!(DirectionBundle::read(&path).unwrap(), old);
        // A norm that is not a positive number is refused.
        DirectionBundle {
            residual_norms: BTreeMap::from([(0, 0.0)]),
            ..sample()
        }
        .write(&path)
        .unwrap();
        let err = DirectionBundle::read(&path).unwrap_err().to_string();
        assert!(err.contains("residual norm 0 of block 0"), "{err}");
    }

    #[test]
    fn wrong_format_and_garbage_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("g.safetensors");
        std::fs::write(&garbage, b"not a safetensors file").unwrap();
        let err = DirectionBundle::read(&garbage).unwrap_err().to_string();
        assert!(err.contains("not a valid safetensors"), "{err}");

        let feats = dir.path().join("f.safetensors");
        crate::probe::FeatureSet {
            concept: "notes".into(),
            model: "tiny".into(),
            pooling: "mean".into(),
            classes: vec!["a".into(), "b".into()],
            layers: BTreeMap::from([(0, vec![0.0; 4])]),
            n: 2,
            hidden_size: 2,
            num_layers: None,
            labels: crate::probe::Labels::Classes(vec![0, 1]),
            residual_norms: BTreeMap::new(),
        }
        .write(&feats)
        .unwrap();
        let err = DirectionBundle::read(&feats).unwrap_err().to_string();
        assert!(err.contains("holds a `features/1` file"), "{err}");
    }
}
