//! Audio embeddings for the distances: which embedding (`encodec`, `clap`), loading it, and
//! turning a WAV file into embedding rows.
//!
//! `clap`: the audio embedding of a CLAP model ([`Clap`], laion's `larger_clap_music` by
//! default), one row per 10 s window of the file (mixed to mono, resampled to 48 kHz; a file of
//! at most 10 s is one row, its clip embedding; a longer one the windows of
//! [`crate::eval::clap::features::windows`]): fadtk's convention for CLAP, and what lets a few
//! long files give enough rows. The rows are unit vectors, as CLAP scores them.
//!
//! `encodec`: the continuous latent of the MusicGen model's own EnCodec encoder, before
//! quantisation (`[hidden, frames]`, 50 frames/s and 128 dimensions for the 32 kHz codec); every
//! frame is one row, and the distances pool every frame of every file (the FAD convention, as
//! fadtk does for frame-level embeddings). It measures distance in the space the model writes
//! its codes from, with nothing downloaded beyond the model. Each file is encoded whole, as
//! MusicGen's codec codes clips (no chunking), so the encoder's activations grow with the
//! file's length: minutes-long references are better cut into clips first.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use faer::Mat;

use super::clap::Clap;
use super::EvalError;
use crate::audio::read_wav_at;
use crate::model::encodec::Encodec;

/// Which embedding the distances are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// CLAP audio embeddings, one row per 10 s window.
    Clap,
    /// The MusicGen codec's encoder latent, one row per frame.
    Encodec,
}

impl Embedding {
    /// The name the command line takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Embedding::Clap => "clap",
            Embedding::Encodec => "encodec",
        }
    }
}

impl std::fmt::Display for Embedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Embedding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "clap" => Ok(Embedding::Clap),
            "encodec" => Ok(Embedding::Encodec),
            _ => Err(format!("unknown embedding {s:?}: expected clap or encodec")),
        }
    }
}

/// One file's embedding rows.
#[derive(Debug, Clone)]
pub struct FileEmbedding {
    /// The WAV file.
    pub path: PathBuf,
    /// `rows x dim`.
    pub rows: Mat<f64>,
}

/// A loaded embedding model.
pub enum Embedder {
    /// The EnCodec encoder of a MusicGen checkpoint (boxed, as both models are large structs).
    Encodec(Box<Encodec>),
    /// A CLAP model.
    Clap(Box<Clap>),
}

impl Embedder {
    /// Loads `kind` from `model` (hub id or folder): for `encodec` the MusicGen whose codec
    /// embeds, for `clap` the CLAP checkpoint (such as [`crate::eval::clap::DEFAULT_MODEL`]).
    pub fn load(kind: Embedding, model: &str, device: &Device) -> Result<Self, EvalError> {
        match kind {
            Embedding::Encodec => Ok(Embedder::Encodec(Box::new(crate::model::load_codec(
                model, device,
            )?))),
            Embedding::Clap => Ok(Embedder::Clap(Box::new(
                Clap::load(model, device).map_err(|source| EvalError::Clap {
                    model: model.to_string(),
                    source,
                })?,
            ))),
        }
    }

    /// Which embedding this is.
    pub fn kind(&self) -> Embedding {
        match self {
            Embedder::Encodec(_) => Embedding::Encodec,
            Embedder::Clap(_) => Embedding::Clap,
        }
    }

    /// The sample rate audio is converted to before embedding.
    pub fn sample_rate(&self) -> u32 {
        match self {
            Embedder::Encodec(codec) => codec.sample_rate(),
            Embedder::Clap(clap) => clap.sample_rate(),
        }
    }

    /// Embedding rows of mono `audio` at [`Embedder::sample_rate`].
    pub fn embed(&self, audio: &[f32]) -> Result<Mat<f64>, EvalError> {
        if audio.is_empty() {
            return Err(EvalError::Invalid("cannot embed empty audio".into()));
        }
        match self {
            Embedder::Encodec(codec) => {
                let x = Tensor::from_slice(audio, (1, 1, audio.len()), &Device::Cpu)?;
                // [1, hidden, frames] -> [frames, hidden]
                let latent = codec.encode_latent(&x)?.squeeze(0)?.t()?;
                let latent = latent.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
                let v: Vec<Vec<f64>> = latent.to_vec2()?;
                let dim = v.first().map_or(0, Vec::len);
                Ok(Mat::from_fn(v.len(), dim, |i, j| v[i][j]))
            }
            Embedder::Clap(clap) => {
                let windows = clap
                    .embed_windows(audio, clap.sample_rate())
                    .map_err(|e| EvalError::Invalid(e.to_string()))?;
                Ok(Mat::from_fn(windows.len(), clap.dim(), |i, j| {
                    windows[i][j] as f64
                }))
            }
        }
    }

    /// Embedding rows of the WAV file `path` (mixed to mono and resampled).
    pub fn embed_file(&self, path: &Path) -> Result<FileEmbedding, EvalError> {
        let (audio, _) = read_wav_at(path, self.sample_rate())?;
        let rows = self.embed(&audio).map_err(|e| EvalError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(FileEmbedding {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// Embeds every file of `paths` in order, calling `on_file` after each (a progress bar).
    pub fn embed_files(
        &self,
        paths: &[PathBuf],
        on_file: &mut dyn FnMut(),
    ) -> Result<Vec<FileEmbedding>, EvalError> {
        paths
            .iter()
            .map(|p| {
                let e = self.embed_file(p);
                on_file();
                e
            })
            .collect()
    }
}
