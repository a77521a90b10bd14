//! CLAP (contrastive language-audio pretraining) on candle: how well a clip matches a text.
//!
//! Loads any transformers `ClapModel` checkpoint with `enable_fusion=False` (laion's
//! `larger_clap_music` by default; a hub id or a local folder holding `config.json`,
//! `model.safetensors` or `pytorch_model.bin`, `tokenizer.json` and optionally
//! `preprocessor_config.json`) and embeds audio and text into the shared space:
//!
//! - audio: mixed to mono by the caller, resampled to 48 kHz, turned into the log-mel
//!   spectrogram of `ClapFeatureExtractor`'s unfused path ([`features`]), encoded by HTSAT
//!   ([`htsat`]) and projected. A clip longer than one 10 s input is read as consecutive 10 s
//!   windows (plus one ending at the clip's end when they stop short of it), and its embedding is
//!   the mean of the windows' unit embeddings, scaled back to unit length: deterministic, where
//!   transformers would crop one window at random.
//! - text: tokenised with the checkpoint's `tokenizer.json`, encoded by RoBERTa ([`roberta`])
//!   and projected.
//!
//! Embeddings are unit length (as `ClapModel.get_audio_features`/`get_text_features` return
//! them), so the cosine of a clip and a text is their dot product ([`cosine`]).

pub mod config;
pub mod features;
pub mod htsat;
pub mod roberta;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::model::load;
use crate::model::ModelError;
use config::{ClapConfig, FeatureConfig};
use features::FeatureExtractor;
use htsat::Htsat;
use roberta::Roberta;

/// The checkpoint `baton clap` uses when none is named.
pub const DEFAULT_MODEL: &str = "laion/larger_clap_music";

/// Errors loading a CLAP model or embedding with it.
#[derive(Debug, thiserror::Error)]
pub enum ClapError {
    /// Finding or reading the checkpoint's files failed.
    #[error(transparent)]
    Files(#[from] ModelError),
    /// `config.json` describes another kind of model.
    #[error("{path}: model_type {found:?} is not a CLAP model (expected a transformers ClapModel checkpoint, model_type \"clap\", such as {DEFAULT_MODEL})")]
    NotClap {
        /// The config file.
        path: PathBuf,
        /// The model_type it names.
        found: String,
    },
    /// A config file is unreadable JSON or describes an unsupported shape.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights lack or misshape a tensor the config implies.
    #[error("{path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer cannot be loaded or fails on a text.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Audio the model cannot hear (no samples, NaN, a zero rate).
    #[error("{0}")]
    Audio(String),
    /// A text too long for the text encoder.
    #[error("text {text:?} is {tokens} tokens long; the text encoder takes at most {max}")]
    TextTooLong {
        /// The text (cut short when long).
        text: String,
        /// Its token count.
        tokens: usize,
        /// The most the encoder takes.
        max: usize,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// An activation named in a config (`hidden_act`, `projection_hidden_act`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    /// Exact (erf) GELU: transformers' "gelu".
    Gelu,
    /// tanh-approximated GELU: "gelu_new", "gelu_pytorch_tanh".
    GeluTanh,
    Relu,
    Silu,
}

impl Activation {
    pub(crate) fn parse(name: &str) -> candle_core::Result<Self> {
        Ok(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => candle_core::bail!("activation {other:?} is not supported"),
        })
    }

    pub(crate) fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// `ClapProjectionLayer`: linear, activation, linear.
struct Projection {
    linear1: Linear,
    linear2: Linear,
    act: Activation,
}

impl Projection {
    fn load(inp: usize, out: usize, act: Activation, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Projection {
            linear1: candle_nn::linear(inp, out, vb.pp("linear1"))?,
            linear2: candle_nn::linear(out, out, vb.pp("linear2"))?,
            act,
        })
    }

    /// Projects a `[hidden]` vector and scales it to unit length.
    fn unit(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let y = self.linear1.forward(&x.unsqueeze(0)?)?;
        let y = self.linear2.forward(&self.act.forward(&y)?)?.squeeze(0)?;
        Ok(normalized(y.to_dtype(DType::F32)?.to_vec1::<f32>()?))
    }
}

/// `v` scaled to unit length (F.normalize: the norm is floored at 1e-12).
fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for x in &mut v {
        *x = (*x as f64 / norm) as f32;
    }
    v
}

/// Cosine similarity of two embeddings (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

/// The files of a CLAP checkpoint.
#[derive(Debug, Clone)]
pub struct ClapFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` (or its shards), or `pytorch_model.bin`.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `preprocessor_config.json`, when the checkpoint has one (else the extractor's defaults).
    pub preprocessor: Option<PathBuf>,
}

/// A loaded CLAP model: both encoders, their projections, the tokenizer and the feature
/// extractor.
pub struct Clap {
    audio: Htsat,
    audio_projection: Projection,
    text: Roberta,
    text_projection: Projection,
    tokenizer: tokenizers::Tokenizer,
    tokenizer_path: PathBuf,
    features: FeatureExtractor,
    dim: usize,
}

impl Clap {
    /// Loads `spec`: a local folder, or a hub id (downloaded once and cached; only the cache is
    /// read when `HF_HUB_OFFLINE` is set). The config is checked before any weights are fetched.
    pub fn load(spec: &str, device: &Device) -> Result<Self, ClapError> {
        let files = resolve(spec)?;
        Self::load_files(&files, device)
    }

    /// Loads a checkpoint from its files.
    pub fn load_files(files: &ClapFiles, device: &Device) -> Result<Self, ClapError> {
        let cfg = read_config(&files.config)?;
        let fcfg: FeatureConfig = match &files.preprocessor {
            Some(p) => read_json(p)?,
            None => FeatureConfig::default(),
        };
        let config_err = |path: &Path, message: String| ClapError::Config {
            path: path.to_path_buf(),
            message,
        };
        let prep_path = files
            .preprocessor
            .clone()
            .unwrap_or_else(|| files.config.clone());
        let features = FeatureExtractor::new(fcfg).map_err(|m| config_err(&prep_path, m))?;
        if features.config().feature_size != cfg.audio_config.num_mel_bins {
            return Err(config_err(
                &prep_path,
                format!(
                    "feature_size {} differs from the audio encoder's num_mel_bins {}",
                    features.config().feature_size,
                    cfg.audio_config.num_mel_bins
                ),
            ));
        }
        let weights_path = files.weights.first().cloned().unwrap_or_default();
        let weights_err = |e: String| ClapError::Weights {
            path: weights_path.clone(),
            message: e,
        };
        let vb = load::Weights::open(&files.weights)?.var_builder(DType::F32, device);
        let act = Activation::parse(&cfg.projection_hidden_act)
            .map_err(|e| config_err(&files.config, e.to_string()))?;
        // Shape errors name the config (what is inconsistent); missing tensors the weights.
        let audio = Htsat::load(&cfg.audio_config, vb.pp("audio_model").pp("audio_encoder"))
            .map_err(|m| {
                if m.starts_with("audio_config") {
                    config_err(&files.config, m)
                } else {
                    weights_err(m)
                }
            })?;
        if features.frames() > audio.max_frames() {
            return Err(config_err(
                &prep_path,
                format!(
                    "one input is {} frames, more than the audio encoder's {}",
                    features.frames(),
                    audio.max_frames()
                ),
            ));
        }
        let text = Roberta::load(&cfg.text_config, vb.pp("text_model")).map_err(|m| {
            if m.starts_with("text_config") {
                config_err(&files.config, m)
            } else {
                weights_err(m)
            }
        })?;
        let dim = cfg.projection_dim;
        let audio_projection = Projection::load(
            cfg.audio_config.hidden_size,
            dim,
            act,
            vb.pp("audio_projection"),
        )
        .map_err(|e| weights_err(e.to_string()))?;
        let text_projection = Projection::load(
            cfg.text_config.hidden_size,
            dim,
            act,
            vb.pp("text_projection"),
        )
        .map_err(|e| weights_err(e.to_string()))?;
        let tok_err = |message: String| ClapError::Tokenizer {
            path: files.tokenizer.clone(),
            message,
        };
        let mut tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| tok_err(e.to_string()))?;
        // One text at a time: no padding; a text too long is refused rather than cut.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| tok_err(e.to_string()))?;
        Ok(Clap {
            audio,
            audio_projection,
            text,
            text_projection,
            tokenizer,
            tokenizer_path: files.tokenizer.clone(),
            features,
            dim,
        })
    }

    /// The feature extractor (log-mel spectrograms of one input).
    pub fn features(&self) -> &FeatureExtractor {
        &self.features
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The rate the model hears (48 kHz for laion's checkpoints); other rates are resampled.
    pub fn sample_rate(&self) -> u32 {
        self.features.config().sampling_rate
    }

    /// Samples of one model input at [`Clap::sample_rate`] (10 s).
    pub fn window_samples(&self) -> usize {
        self.features.config().max_samples()
    }

    /// The unit embedding of mono `samples` at `rate` Hz: resampled to the model's rate, and for
    /// clips longer than one input, the mean of the windows' embeddings (see the module docs).
    pub fn embed_audio(&self, samples: &[f32], rate: u32) -> Result<Vec<f32>, ClapError> {
        let windows = self.embed_windows(samples, rate)?;
        let mut sum = vec![0f64; self.dim];
        for e in &windows {
            for (s, &v) in sum.iter_mut().zip(e) {
                *s += v as f64;
            }
        }
        Ok(normalized(
            sum.iter()
                .map(|&s| (s / windows.len() as f64) as f32)
                .collect(),
        ))
    }

    /// The unit embedding of each 10 s window of mono `samples` at `rate` Hz (one for a clip of
    /// at most one input; the windows of [`features::windows`] for a longer one): the rows
    /// `baton fad --embedding clap` measures, whose normalised mean is [`Clap::embed_audio`].
    pub fn embed_windows(&self, samples: &[f32], rate: u32) -> Result<Vec<Vec<f32>>, ClapError> {
        if rate == 0 {
            return Err(ClapError::Audio("the sample rate is 0 Hz".into()));
        }
        if samples.is_empty() {
            return Err(ClapError::Audio("the clip has no samples (0 s)".into()));
        }
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(ClapError::Audio(format!(
                "the clip holds a non-finite sample (NaN or infinity) at sample {i}"
            )));
        }
        let audio = crate::audio::resample(samples, rate, self.sample_rate());
        if audio.is_empty() {
            return Err(ClapError::Audio(format!(
                "the clip ({} samples at {rate} Hz) is shorter than one sample at {} Hz",
                samples.len(),
                self.sample_rate()
            )));
        }
        features::windows(audio.len(), self.window_samples())
            .into_iter()
            .map(|span| self.embed_input(&audio[span]))
            .collect()
    }

    /// The unit embedding of one model input (at most one window, at the model's rate): what
    /// `ClapModel.get_audio_features` gives for it.
    pub fn embed_input(&self, samples: &[f32]) -> Result<Vec<f32>, ClapError> {
        if samples.is_empty() || samples.len() > self.window_samples() {
            return Err(ClapError::Audio(format!(
                "one model input is 1 to {} samples, not {} (embed_audio takes clips of any length)",
                self.window_samples(),
                samples.len()
            )));
        }
        let mel = self.features.log_mel(samples);
        let frames = mel.len() / self.audio.mels();
        let pooled = self.audio.forward(&mel, frames)?;
        Ok(self.audio_projection.unit(&pooled)?)
    }

    /// The token ids the text encoder reads for `text` (with `<s>` and `</s>`).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ClapError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ClapError::Tokenizer {
                path: self.tokenizer_path.clone(),
                message: format!("cannot tokenise {text:?}: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The unit embedding of `text`.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>, ClapError> {
        let ids = self.tokenize(text)?;
        if ids.len() > self.text.max_tokens() || ids.is_empty() {
            let shown: String = text.chars().take(60).collect();
            return Err(ClapError::TextTooLong {
                text: shown,
                tokens: ids.len(),
                max: self.text.max_tokens(),
            });
        }
        let pooled = self.text.forward(&ids)?;
        Ok(self.text_projection.unit(&pooled)?)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ClapError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| ClapError::Config {
        path: path.to_path_buf(),
        message: format!("not a valid config: {e}"),
    })
}

/// Reads `config.json` and checks that it is a CLAP model's.
fn read_config(path: &Path) -> Result<ClapConfig, ClapError> {
    let raw: serde_json::Value = read_json(path)?;
    let kind = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    if kind != "clap" {
        return Err(ClapError::NotClap {
            path: path.to_path_buf(),
            found: kind.to_string(),
        });
    }
    serde_json::from_value(raw).map_err(|e| ClapError::Config {
        path: path.to_path_buf(),
        message: format!("not a valid ClapModel config: {e}"),
    })
}

/// Finds a CLAP checkpoint's files: an existing folder as is, else a hub id (`owner/name`).
pub fn resolve(spec: &str) -> Result<ClapFiles, ClapError> {
    let path = Path::new(spec);
    if path.exists() {
        if !path.is_dir() {
            return Err(ModelError::Invalid(format!(
                "--clap-model {spec} is a file; give the folder that holds config.json and the weights"
            ))
            .into());
        }
        let need = |name: &str| {
            let p = path.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(ModelError::Missing { path: p })
            }
        };
        let config = need("config.json")?;
        // Check the kind first: a MusicGen folder is told so, not that a file is missing.
        read_config(&config)?;
        let weights = load::find_weights(&path.display().to_string(), &need)?;
        return Ok(ClapFiles {
            config,
            weights,
            tokenizer: need("tokenizer.json")?,
            preprocessor: Some(path.join("preprocessor_config.json")).filter(|p| p.is_file()),
        });
    }
    if !load::looks_like_hub_id(spec) {
        return Err(ModelError::Invalid(format!(
            "CLAP model folder {spec} does not exist (and it is not a hub id like {DEFAULT_MODEL})"
        ))
        .into());
    }
    resolve_hub(spec)
}

fn resolve_hub(id: &str) -> Result<ClapFiles, ClapError> {
    let (fetch, place) = load::hub_fetcher(id, None)?;
    let config = fetch("config.json")?;
    read_config(&config)?;
    // laion's CLAP repositories hold pytorch_model.bin alone on their main branch.
    let weights = load::find_weights(&place, &fetch)?;
    Ok(ClapFiles {
        config,
        weights,
        tokenizer: fetch("tokenizer.json")?,
        preprocessor: fetch("preprocessor_config.json").ok(),
    })
}

/// The cosine of every (clip, text) pair: what `baton clap` prints and writes with `--json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClapScores {
    /// The clips, as named by the caller (file paths for `baton clap`).
    pub clips: Vec<String>,
    /// The texts.
    pub texts: Vec<String>,
    /// `scores[c][t]`: cosine of clip `c` and text `t`.
    pub scores: Vec<Vec<f32>>,
}

impl ClapScores {
    /// Scores clip embeddings against text embeddings (both as [`Clap`] gives them).
    pub fn new(
        clips: Vec<String>,
        clip_embeddings: &[Vec<f32>],
        texts: Vec<String>,
        text_embeddings: &[Vec<f32>],
    ) -> Self {
        let scores = clip_embeddings
            .iter()
            .map(|a| text_embeddings.iter().map(|t| cosine(a, t)).collect())
            .collect();
        ClapScores {
            clips,
            texts,
            scores,
        }
    }
}
