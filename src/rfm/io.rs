//! Saving and loading a fitted probe (`baton.format = rfm-classifier/1`), so a multiclass probe
//! trained on synthetic clips can label generated audio later.
//!
//! Layout: tensors `centers` f32 `[n, d]`, `alpha` f32 `[n, outputs]`, `m` f32 `[d, d]`;
//! metadata `baton.format`, `task` (`binary`|`multiclass`|`regression`), `bandwidth`, `exponent`,
//! `classes` (JSON list), `layer` (decoder block of the features), `model`, `concept`.

use std::collections::HashMap;
use std::path::Path;

use faer::Mat;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

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

fn file_err(path: &Path, message: impl Into<String>) -> RfmError {
    RfmError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn to_bytes(m: &Mat<f64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols() * 4);
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.extend_from_slice(&(m[(i, j)] as f32).to_le_bytes());
        }
    }
    out
}

impl SavedProbe {
    /// Writes the probe atomically.
    pub fn write(&self, path: &Path) -> Result<(), RfmError> {
        let r = &self.rfm;
        let tensors = [("centers", &r.centers), ("alpha", &r.alpha), ("m", &r.m)];
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, m)| to_bytes(m)).collect();
        let views = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, m), b)| {
                TensorView::new(Dtype::F32, vec![m.nrows(), m.ncols()], b)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| file_err(path, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| file_err(path, e.to_string()))?;
        crate::audio::write_atomic(path, &bytes).map_err(|e| file_err(path, e.to_string()))
    }

    /// Reads a probe written by [`write`](Self::write).
    pub fn read(path: &Path) -> Result<Self, RfmError> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| file_err(path, format!("metadata `{k}` is missing")))
        };
        let format = get("baton.format")?;
        if format != CLASSIFIER_FORMAT {
            return Err(file_err(
                path,
                format!("holds a `{format}` file, expected `{CLASSIFIER_FORMAT}`"),
            ));
        }
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(path, format!("not a valid safetensors file: {e}")))?;
        let load = |name: &str| -> Result<Mat<f64>, RfmError> {
            let t = st
                .tensor(name)
                .map_err(|_| file_err(path, format!("tensor `{name}` is missing")))?;
            let shape = t.shape();
            if t.dtype() != Dtype::F32 || shape.len() != 2 {
                return Err(file_err(path, format!("`{name}` must be a 2-d f32 tensor")));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let cols = shape[1];
            Ok(Mat::from_fn(shape[0], cols, |i, j| v[i * cols + j] as f64))
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
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.insert(key.into(), value.into());
        let st = SafeTensors::deserialize(&bytes).unwrap();
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
