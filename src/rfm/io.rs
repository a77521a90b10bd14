//! Saving and loading a fitted probe (`baton.format = rfm-classifier/1`), so a multiclass probe
//! trained on synthetic clips can label generated audio later.
//!
//! Layout: tensors `centers` f32 `[n, d]`, `alpha` f32 `[n, outputs]`, `m` f32 `[d, d]`;
//! metadata `baton.format`, `task` (`binary`|`multiclass`|`regression`), `bandwidth`, `exponent`,
//! `classes` (JSON list), `layer` (decoder block of the features), `model`, `concept`.

use std::collections::HashMap;
use std::path::Path;

use crate::files::{OwnedTensor, Reader};
use faer::Mat;

use super::fit::{Rfm, Task};
use super::kernel::LaplaceKernel;
use super::RfmError;

/// The format tag of saved probes.
pub const CLASSIFIER_FORMAT: &str = "rfm-classifier/1";

/// A fitted probe with what it needs to be used on new features.
#[derive(Debug, Clone)]
pub struct SavedProbe {
    /// The predictor.
    pub rfm: Rfm,
    /// Class names (empty for regression).
    pub classes: Vec<String>,
    /// Decoder block whose pooled output the probe reads.
    pub layer: usize,
    /// Model the features came from.
    pub model: String,
    /// Concept family.
    pub concept: String,
}

impl SavedProbe {
    /// Class probabilities for one pooled feature vector `h` (the output of block
    /// [`SavedProbe::layer`]), in the order of [`SavedProbe::classes`].
    pub fn classify(&self, h: &[f32]) -> Result<Vec<f64>, String> {
        if self.rfm.task == crate::rfm::fit::Task::Regression {
            return Err("this is a regression probe: it predicts values, not classes".into());
        }
        let d = self.rfm.centers.ncols();
        if h.len() != d {
            return Err(format!(
                "the classifier reads {d}-wide features but the model gives {} (it was trained \
                 on `{}`)",
                h.len(),
                self.model
            ));
        }
        let x = faer::Mat::from_fn(1, d, |_, j| f64::from(h[j]));
        let proba = self.rfm.predict_proba(x.as_ref());
        Ok((0..proba.ncols()).map(|k| proba[(0, k)]).collect())
    }

    /// The name of class `k` (its number when the file names none).
    pub fn class_name(&self, k: usize) -> String {
        self.classes
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> RfmError {
    RfmError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A matrix as a row-major f32 tensor.
fn f32_tensor(name: &str, m: &Mat<f64>) -> OwnedTensor {
    let values: Vec<f32> = (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32))
        .collect();
    OwnedTensor::f32(name, vec![m.nrows(), m.ncols()], &values)
}

impl SavedProbe {
    /// Writes the probe atomically.
    pub fn write(&self, path: &Path) -> Result<(), RfmError> {
        let r = &self.rfm;
        let tensors = [
            f32_tensor("centers", &r.centers),
            f32_tensor("alpha", &r.alpha),
            f32_tensor("m", &r.m),
        ];
        let task = match r.task {
            Task::Binary => "binary",
            Task::Multiclass(_) => "multiclass",
            Task::Regression => "regression",
        };
        let metadata = HashMap::from([
            ("baton.format".to_string(), CLASSIFIER_FORMAT.to_string()),
            ("task".to_string(), task.to_string()),
            ("bandwidth".to_string(), r.kernel.bandwidth.to_string()),
            ("exponent".to_string(), r.kernel.exponent.to_string()),
            (
                "classes".to_string(),
                serde_json::to_string(&self.classes).unwrap_or_else(|_| "[]".into()),
            ),
            ("layer".to_string(), self.layer.to_string()),
            ("model".to_string(), self.model.clone()),
            ("concept".to_string(), self.concept.clone()),
        ]);
        Ok(crate::files::write(path, &tensors, metadata)?)
    }

    /// Reads a probe written by [`write`](Self::write).
    pub fn read(path: &Path) -> Result<Self, RfmError> {
        let r = Reader::open(path, CLASSIFIER_FORMAT)?;
        let get = |k: &str| -> Result<String, RfmError> { Ok(r.meta(k)?.to_string()) };
        let load = |name: &str| -> Result<Mat<f64>, RfmError> {
            let (shape, v) = r.f32(name)?;
            let [rows, cols] = shape[..] else {
                return Err(file_err(path, format!("`{name}` must be a 2-d f32 tensor")));
            };
            Ok(Mat::from_fn(rows, cols, |i, j| v[i * cols + j] as f64))
        };
        let (centers, alpha, m) = (load("centers")?, load("alpha")?, load("m")?);
        let number = |k: &str| -> Result<f64, RfmError> {
            get(k)?
                .parse()
                .map_err(|_| file_err(path, format!("metadata `{k}` is not a number")))
        };
        let classes: Vec<String> = serde_json::from_str(&get("classes")?)
            .map_err(|_| file_err(path, "metadata `classes` is not a JSON list"))?;
        let task = match get("task")?.as_str() {
            "binary" => Task::Binary,
            "multiclass" => Task::Multiclass(alpha.ncols()),
            "regression" => Task::Regression,
            other => return Err(file_err(path, format!("unknown task `{other}`"))),
        };
        let d = centers.ncols();
        if m.nrows() != d || m.ncols() != d || alpha.nrows() != centers.nrows() {
            return Err(file_err(path, "tensor shapes do not fit together"));
        }
        Ok(SavedProbe {
            rfm: Rfm {
                kernel: LaplaceKernel {
                    bandwidth: number("bandwidth")?,
                    exponent: number("exponent")?,
                },
                m,
                centers,
                alpha,
                task,
            },
            classes,
            layer: get("layer")?.parse().map_err(|_| {
                file_err(
                    path,
                    "metadata `layer` is not a decoder block index (0, 1, ...)",
                )
            })?,
            model: get("model")?,
            concept: get("concept")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe() -> SavedProbe {
        SavedProbe {
            rfm: Rfm {
                kernel: LaplaceKernel {
                    bandwidth: 10.0,
                    exponent: 1.0,
                },
                m: Mat::identity(2, 2),
                centers: Mat::from_fn(3, 2, |i, j| (i + j) as f64),
                alpha: Mat::from_fn(3, 1, |i, _| i as f64),
                task: Task::Binary,
            },
            classes: vec!["a".into(), "b".into()],
            layer: 4,
            model: "tiny".into(),
            concept: "notes".into(),
        }
    }

    /// Rewrites one metadata entry of a saved probe.
    fn with_meta(path: &Path, key: &str, value: &str) {
        let bytes = std::fs::read(path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.insert(key.into(), value.into());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let out = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn round_trip_keeps_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        probe().write(&path).unwrap();
        let back = SavedProbe::read(&path).unwrap();
        assert_eq!((back.layer, back.classes), (4, probe().classes));
    }

    #[test]
    fn layer_that_is_not_a_block_index_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        for bad in ["-1", "NaN", "2.5", "inf", ""] {
            probe().write(&path).unwrap();
            with_meta(&path, "layer", bad);
            let err = SavedProbe::read(&path)
                .expect_err(&format!("layer `{bad}` must be rejected"))
                .to_string();
            assert!(
                err.contains("`layer` is not a decoder block index"),
                "{err}"
            );
        }
    }
}
