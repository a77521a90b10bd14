//! MusicGen on candle: config, T5 text encoder, decoder LM (with the residual hook), EnCodec
//! (encode + decode), generation (delay pattern, CFG, sampling, KV cache) and loading (hf-hub or a
//! local folder).
//!
//! ```no_run
//! use baton::model::{GenerateOptions, MusicGen, Sampling};
//! use candle_core::{DType, Device};
//!
//! let model = MusicGen::load("facebook/musicgen-small", &Device::Cpu, DType::F32)?;
//! let options = GenerateOptions {
//!     max_new_tokens: model.max_new_tokens_for_seconds(5.0)?,
//!     sampling: Sampling::TopK { k: 250, temperature: 1.0 },
//!     guidance_scale: 3.0,
//!     seed: 0,
//!     negative_prompt: None, // or Some("drums".into()): what guidance steers away from
//! };
//! let codes = model.generate(&["lofi piano"], &options, None, &mut |_, _| {})?;
//! let audio = model.decode(&codes)?; // one Vec<f32> per prompt, at model.sample_rate()
//! // Probing: block outputs of a teacher-forced pass over codes, no text conditioning.
//! let blocks = model.capture(&codes, &[0, 12, 23])?;
//! # Ok::<(), baton::model::ModelError>(())
//! ```
//!
//! Precision: `dtype` is the storage type of the decoder's large weights (f32, bf16 or f16;
//! [`MusicGen::load_as`] also takes 8- and 4-bit weights, [`WeightFormat::Q8`] and
//! [`WeightFormat::Q4`], for the CPU). On
//! the CPU, norms, embeddings and the residual stream stay f32 whatever it is, the
//! self-attention caches are f32 with f32 weights and bf16 with bf16, 8- or 4-bit ones
//! ([`decoder::Decoder::cache_dtype`]: a long piece's cache outweighs its packed weights), and
//! generation steps use the few-row matrix-vector kernel in [`gemv`] (f32 and bf16 weights; f16
//! is widened per call, slower). On an accelerator the whole decoder runs in `dtype`, as
//! transformers does after `.to(dtype)` ([`decoder::Decoder::default_activations`] says why).
//! Logits and captured block outputs are returned in f32, and the text encoder and codec always
//! run in f32.

pub mod config;
mod conv_cpu;
pub mod decoder;
mod dense;
pub mod encodec;
pub mod gemv;
pub mod generate;
pub mod hook;
pub mod load;
pub mod stream;
pub mod t5;
pub mod text;

pub use config::{ConfigError, DecoderConfig, GenerationDefaults, MusicGenConfig};
pub use generate::Prefix;
pub use hook::ResidualHook;
pub use stream::PieceStream;

use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use decoder::Decoder;
use load::{ModelFiles, Weights};

/// Errors from loading or running MusicGen.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A feature that does not exist yet.
    #[error("not implemented yet: {0}")]
    Unimplemented(&'static str),
    /// A required file is absent.
    #[error("{path}: file not found")]
    Missing { path: PathBuf },
    /// A file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A hub lookup failed.
    #[error("hub model {repo}{}: {message}", if file.is_empty() { String::new() } else { format!(", file {file}") })]
    Hub {
        repo: String,
        file: String,
        message: String,
    },
    /// No weight file of any known layout was found.
    #[error("weights not found for {place}: tried {tried}{}", if last.is_empty() { String::new() } else { format!(" (last: {last})") })]
    NoWeights {
        place: String,
        tried: String,
        last: String,
    },
    /// `config.json` is invalid or describes an unsupported variant.
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
    /// A weights file is corrupt, or lacks or misshapes a tensor.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// The tokenizer cannot be loaded or fails on a prompt.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input from the caller (empty prompt, length out of range, ...).
    #[error("{0}")]
    Invalid(String),
    /// Ctrl-C asked the work listening for it to stop ([`crate::interrupt`]).
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
/// How the next token of each codebook is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Always the most likely token.
    Greedy,
    /// Sample from the `k` most likely tokens after dividing logits by `temperature`.
    TopK { k: usize, temperature: f64 },
}

/// MusicGen's sampling defaults (audiocraft's and Hugging Face's): top-k 250 at temperature 1,
/// classifier-free guidance scale 3.
pub const DEFAULT_TOP_K: usize = 250;
/// See [`DEFAULT_TOP_K`].
pub const DEFAULT_TEMPERATURE: f64 = 1.0;
/// See [`DEFAULT_TOP_K`].
pub const DEFAULT_GUIDANCE_SCALE: f64 = 3.0;

/// Options for [`MusicGen::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Hugging Face meaning: decoder steps including the delay pattern's extra steps
    /// (`frames + num_codebooks - 1`).
    pub max_new_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Classifier-free guidance scale; 1.0 disables guidance (no doubled batch).
    pub guidance_scale: f64,
    /// Seed of the sampling RNG (same seed, same codes). Batch item `b` samples from its own RNG
    /// seeded `seed + b`, so it gets the codes it would get generated alone with that seed.
    pub seed: u64,
    /// What guidance steers away from: the unconditional rows are conditioned on this text
    /// instead of on nothing (zero text states, as Hugging Face does). Needs guidance (a scale
    /// above 1).
    pub negative_prompt: Option<String>,
}

/// The window a piece longer than one pass is generated in, audiocraft's way: each next window
/// is prompted with the last `frames - stride` frames of the one before (their codes, not
/// re-encoded audio) and generated until it holds `frames` frames or the piece is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Frames one pass holds, prompt and new.
    pub frames: usize,
    /// Frames each window moves on by.
    pub stride: usize,
}

/// Where a piece starts and how far one pass may reach (see [`MusicGen::generate_piece`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extent {
    /// Codes the piece continues, `[codebooks][frames]` (a clip's, see [`MusicGen::clip_codes`]):
    /// teacher-forced after BOS, never steered, and kept at the start of the returned codes.
    pub clip: Option<Vec<Vec<i64>>>,
    /// `None`: the piece is one pass, and must fit the model's positions.
    pub window: Option<Window>,
    /// The piece never ends (a live performance stops it): `max_new_tokens` is not read, and
    /// a window is needed.
    pub endless: bool,
}

/// One pass of a piece: its prompt (a run of the piece's frames so far) and what it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Index of the prompt's first frame in the piece.
    pub prompt_from: usize,
    /// Prompt frames.
    pub prompt_len: usize,
    /// New frames this pass generates.
    pub new: usize,
}

/// The passes that make `new_frames` frames after `clip_frames` frames of clip: one without a
/// window, else the first window from the clip and each next one prompted with the last
/// `frames - stride` frames of the one before.
pub fn passes(clip_frames: usize, new_frames: usize, window: Option<Window>) -> Vec<Pass> {
    stream::Passes::new(clip_frames, Some(new_frames), window).collect()
}

/// Refuses a negative prompt that is empty, or that guidance cannot use (a scale of 1 or less):
/// the one rule the CLI, recipes and [`MusicGen::generate`] share.
pub fn check_negative_prompt(negative: Option<&str>, guidance_scale: f64) -> Result<(), String> {
    match negative {
        Some(n) if n.trim().is_empty() => Err("the negative prompt is empty".into()),
        Some(_) if guidance_scale <= 1.0 => Err(format!(
            "a negative prompt works through guidance: it needs a guidance scale (cfg) above 1, \
             got {guidance_scale}"
        )),
        _ => Ok(()),
    }
}

/// Above this guidance scale (MusicGen's default is 3) the guided logits are pushed so far from
/// both halves of the batch that the music turns to noise: allowed, but said.
pub const EXTREME_GUIDANCE: f64 = 30.0;

/// A warning for a guidance scale past [`EXTREME_GUIDANCE`].
pub fn guidance_warning(guidance_scale: f64) -> Option<String> {
    (guidance_scale > EXTREME_GUIDANCE).then(|| {
        format!(
            "guidance scale {guidance_scale} is extreme (above {EXTREME_GUIDANCE}; MusicGen's \
             default is {DEFAULT_GUIDANCE_SCALE}): expect noise"
        )
    })
}

/// Generated audio codes: `[batch, num_codebooks, frames]`, i64, delay pattern already undone.
pub type Codes = Tensor;

/// Result of a teacher-forced pass (see [`MusicGen::teacher_forced`]).
pub struct TeacherForced {
    /// Outputs of the requested blocks, each `[batch, frames, hidden]`, f32.
    pub blocks: Vec<Tensor>,
    /// Logits `[batch, codebooks, frames, vocab]`, f32.
    pub logits: Tensor,
}

/// A loaded MusicGen model: text encoder, decoder LM and EnCodec audio codec.
pub struct MusicGen {
    config: MusicGenConfig,
    parts: parts::Parts,
    enc_to_dec_proj: Option<Linear>,
    decoder: Decoder,
    pad: i64,
    bos: i64,
    device: Device,
    dtype: DType,
}

fn read_text(path: &std::path::Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The parsed `config.json` of `files`.
fn read_config(files: &ModelFiles) -> Result<MusicGenConfig, ModelError> {
    MusicGenConfig::from_json(&read_text(&files.config)?).map_err(|source| ModelError::Config {
        path: files.config.clone(),
        source,
    })
}

/// Loads only the audio codec of the model `spec` names (hub id or folder): what reads audio
/// without the text encoder or the decoder LM (`baton fad`'s EnCodec embedding). Only the
/// codec's tensors are read from the weight files.
pub fn load_codec(spec: &str, device: &Device) -> Result<encodec::Encodec, ModelError> {
    let files = load::resolve(spec)?;
    let config = read_config(&files)?;
    let weights = Weights::open(&files.weights)?;
    encodec::Encodec::load(
        weights.var_builder(DType::F32, device).pp("audio_encoder"),
        &config.audio_encoder,
    )
    .map_err(|e| weights_error(&files, e))
}

/// Wraps a candle error raised while reading weights so it names the weight files.
fn weights_error(files: &ModelFiles, e: candle_core::Error) -> ModelError {
    ModelError::Weights {
        path: files.weights[0].clone(),
        message: e.to_string(),
    }
}

/// How the decoder's large weights are stored: `f32`, `f16`, `bf16`, `q8` (8 bits with a scale
/// per output row, CPU only: a quarter of f32's bytes for a generation step to stream) or `q4`
/// (4 bits with a scale per 32 weights, CPU only: 5 bits a weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// A float dtype.
    Float(DType),
    /// 8-bit weights ([`decoder::Decoder::quantize_q8`]).
    Q8,
    /// 4-bit weights ([`decoder::Decoder::quantize_q4`]).
    Q4,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "f32" => Ok(WeightFormat::Float(DType::F32)),
            "f16" => Ok(WeightFormat::Float(DType::F16)),
            "bf16" => Ok(WeightFormat::Float(DType::BF16)),
            "q8" => Ok(WeightFormat::Q8),
            "q4" => Ok(WeightFormat::Q4),
            other => Err(format!(
                "unknown weight format {other:?}: expected f32, f16, bf16, q8 or q4"
            )),
        }
    }
}

impl MusicGen {
    /// [`MusicGen::load`] with the decoder's weights in `format` (8- and 4-bit weights are quantized
    /// from f32 at load, on the CPU only).
    pub fn load_as(spec: &str, device: &Device, format: WeightFormat) -> Result<Self, ModelError> {
        Self::load_files_as(&load::resolve(spec)?, device, format)
    }

    /// [`MusicGen::load_files`] with the decoder's weights in `format` (see
    /// [`MusicGen::load_as`]): resolving (downloading) and loading as two steps.
    pub fn load_files_as(
        files: &ModelFiles,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self, ModelError> {
        match format {
            WeightFormat::Float(dtype) => Self::load_files(files, device, dtype),
            WeightFormat::Q8 => {
                Self::load_packed(files, device, "8-bit weights (q8)", |d| d.quantize_q8())
            }
            WeightFormat::Q4 => {
                Self::load_packed(files, device, "4-bit weights (q4)", |d| d.quantize_q4())
            }
        }
    }

    /// Loads the decoder in f32 and packs its large weights with `pack`; `what` names the
    /// format when the device cannot run it.
    fn load_packed(
        files: &ModelFiles,
        device: &Device,
        what: &str,
        pack: fn(&mut decoder::Decoder) -> candle_core::Result<()>,
    ) -> Result<Self, ModelError> {
        if !device.is_cpu() {
            return Err(ModelError::Invalid(format!("{what} run on the CPU only")));
        }
        let mut model = Self::load_files(files, device, DType::F32)?;
        pack(&mut model.decoder)?;
        Ok(model)
    }

    /// Whether the decoder's large weights are stored in 8 or 4 bits.
    pub fn quantized(&self) -> bool {
        self.decoder.quantized()
    }

    /// Bytes of decoder weights used in place from the checkpoint's memory map (see
    /// [`decoder::Decoder::load_from`]).
    pub fn mapped_bytes(&self) -> usize {
        self.decoder.mapped_bytes()
    }

    /// Loads a model from a hub id (`facebook/musicgen-small`, cached by hf-hub, honouring
    /// `HF_HUB_OFFLINE`; `owner/name@REV` for a revision) or a local folder holding config.json,
    /// the weights (model.safetensors, pytorch_model.bin, or either's sharded index),
    /// tokenizer.json and generation_config.json. `dtype` applies to the decoder.
    pub fn load(spec: &str, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let files = load::resolve(spec)?;
        Self::load_files(&files, device, dtype)
    }

    /// Loads a model from already resolved files.
    pub fn load_files(
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(ModelError::Invalid(format!(
                "decoder dtype must be f32, f16 or bf16, not {dtype:?}"
            )));
        }
        let config = read_config(files)?;
        let defaults: GenerationDefaults = match &files.generation_config {
            Some(p) => serde_json::from_str(&read_text(p)?).map_err(|e| ModelError::Config {
                path: p.clone(),
                source: ConfigError::Parse(e.to_string()),
            })?,
            None => GenerationDefaults::default(),
        };
        let pad = defaults.pad_token_id.unwrap_or(config.decoder.pad_id());
        let bos = defaults
            .decoder_start_token_id
            .or(config.decoder.bos_token_id)
            .unwrap_or(pad);
        let vocab = config.decoder.vocab_size as i64;
        if pad != vocab || !(0..=vocab).contains(&bos) {
            return Err(ModelError::Config {
                path: files
                    .generation_config
                    .clone()
                    .unwrap_or_else(|| files.config.clone()),
                source: ConfigError::OutOfRange {
                    field: "pad_token_id / decoder_start_token_id",
                    value: format!("{pad} / {bos}"),
                    reason: "pad must equal decoder.vocab_size and BOS lie within 0..=vocab_size",
                },
            });
        }

        let weights = Weights::open(&files.weights)?;
        let vb32 = weights.var_builder(DType::F32, device);
        let parts = parts::Parts::load(&config, files, &weights, device)?;
        let enc_to_dec_proj = if config.has_enc_to_dec_proj() {
            Some(
                candle_nn::linear(
                    config.text_hidden_size,
                    config.decoder.hidden_size,
                    vb32.pp("enc_to_dec_proj"),
                )
                .map_err(|e| weights_error(files, e))?,
            )
        } else {
            None
        };
        let decoder = Decoder::load_from(&config.decoder, &weights, dtype, device)
            .map_err(|e| weights_error(files, e))?;
        Ok(MusicGen {
            config,
            parts,
            enc_to_dec_proj,
            decoder,
            pad,
            bos,
            device: device.clone(),
            dtype,
        })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &MusicGenConfig {
        &self.config
    }

    /// Number of decoder blocks.
    pub fn num_layers(&self) -> usize {
        self.config.decoder.num_hidden_layers
    }

    /// Width of the decoder's residual stream.
    pub fn hidden_size(&self) -> usize {
        self.config.decoder.hidden_size
    }

    /// Parallel codebooks per frame.
    pub fn num_codebooks(&self) -> usize {
        self.config.decoder.num_codebooks
    }

    /// Audio frames per second of the codec (50 for the real models).
    pub fn frame_rate(&self) -> f64 {
        self.config.frame_rate()
    }

    /// Audio sample rate of the codec (32000 for the real models).
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Audio samples per codec frame.
    pub fn samples_per_frame(&self) -> usize {
        self.config.hop_length
    }

    /// The decoder's device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Storage dtype of the decoder's large weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Dtype of the decoder's hidden states (see
    /// [`decoder::Decoder::default_activations`]); steering offsets made in it are added
    /// without a cast.
    pub fn activations(&self) -> DType {
        self.decoder.activations()
    }

    /// The largest `max_new_tokens` the decoder's positions allow.
    pub fn max_new_tokens_limit(&self) -> usize {
        self.config.decoder.max_position_embeddings
    }

    /// The longest audio this model can generate, in seconds.
    pub fn max_seconds(&self) -> f64 {
        self.config.max_seconds()
    }

    /// The smallest `max_new_tokens` for which the delay pattern applies (HF leaves shorter
    /// sequences unpatterned, which yields no whole frame).
    pub fn min_new_tokens(&self) -> usize {
        self.config.min_new_tokens()
    }

    /// Converts a length in seconds to `max_new_tokens` (frames + codebooks - 1), checking it
    /// against the model's limits.
    pub fn max_new_tokens_for_seconds(&self, seconds: f64) -> Result<usize, ModelError> {
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(ModelError::Invalid(format!(
                "seconds must be a positive number, got {seconds}"
            )));
        }
        let frames = (seconds * self.frame_rate()).round().max(1.0);
        let limit = self.max_new_tokens_limit();
        let tokens = frames + (self.num_codebooks() - 1) as f64;
        if tokens > limit as f64 {
            let max_s = self.max_seconds();
            return Err(ModelError::Invalid(format!(
                "{seconds} s is longer than this model can generate (at most {max_s:.2} s)"
            )));
        }
        Ok((tokens as usize).max(self.min_new_tokens()))
    }

    fn check_options(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
        extent: &Extent,
    ) -> Result<(), ModelError> {
        if prompts.is_empty() {
            return Err(ModelError::Invalid("no prompt given".into()));
        }
        if let Some(i) = prompts.iter().position(|p| p.trim().is_empty()) {
            return Err(ModelError::Invalid(format!("prompt {} is empty", i + 1)));
        }
        let clip = extent
            .clip
            .as_ref()
            .map_or(0, |c| c.first().map_or(0, Vec::len));
        if let Some(c) = &extent.clip {
            let k = self.num_codebooks();
            if c.len() != k || c.iter().any(|row| row.len() != clip) || clip == 0 {
                return Err(ModelError::Invalid(format!(
                    "the clip's codes must be {k} codebooks of one length, at least one frame"
                )));
            }
        }
        if extent.endless && extent.window.is_none() {
            return Err(ModelError::Invalid(
                "an endless piece needs a window to move on in".into(),
            ));
        }
        if let Some(w) = extent.window {
            self.check_window(w)?;
            if clip >= w.frames {
                return Err(ModelError::Invalid(format!(
                    "the clip is {clip} frames, the window {}: a window must hold the clip and \
                     at least one new frame (shorten the clip or widen the window)",
                    w.frames
                )));
            }
        }
        let (lo, hi) = (self.min_new_tokens(), self.max_new_tokens_limit());
        let one_pass_limit = hi.saturating_sub(clip);
        if !extent.endless
            && (options.max_new_tokens < lo
                || (extent.window.is_none() && options.max_new_tokens > one_pass_limit))
        {
            return Err(ModelError::Invalid(format!(
                "max_new_tokens must be within {lo}..={one_pass_limit} for this model{}, got {}",
                if clip > 0 {
                    format!(" after a clip of {clip} frames")
                } else {
                    String::new()
                },
                options.max_new_tokens
            )));
        }
        if !(options.guidance_scale.is_finite() && options.guidance_scale >= 0.0) {
            return Err(ModelError::Invalid(format!(
                "guidance scale must be a non-negative number, got {}",
                options.guidance_scale
            )));
        }
        check_negative_prompt(options.negative_prompt.as_deref(), options.guidance_scale)
            .map_err(ModelError::Invalid)?;
        if let Sampling::TopK { k, temperature } = options.sampling {
            if k == 0 {
                return Err(ModelError::Invalid("top-k must be at least 1".into()));
            }
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(ModelError::Invalid(format!(
                    "temperature must be a positive number, got {temperature}"
                )));
            }
        }
        Ok(())
    }

    /// Encodes prompts to decoder-width text states `[b, s, hidden]` and the text mask `[b, s]`
    /// (f32, 1 = real token). [`decoder::Decoder::cross_context`] zeroes the padded positions,
    /// as HF does before the cross-attention.
    pub fn text_states(&self, prompts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let (states, mask) = self.parts.encode_text(prompts)?;
        let states = match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(&states)?,
            None => states,
        };
        Ok((states, mask.to_dtype(DType::F32)?))
    }

    /// A warning for a prompt longer than the text encoder reads (it is cut to
    /// [`text::MAX_PROMPT_TOKENS`] tokens), or `None`.
    pub fn prompt_warning(&self, prompt: &str) -> Result<Option<String>, ModelError> {
        self.parts.prompt_warning(prompt)
    }

    /// Generates codes for a batch of prompts. `hook` steers (see [`ResidualHook`]);
    /// `on_step(done, total)` is called after every decoder step (for progress bars).
    pub fn generate(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
        hook: Option<&mut dyn ResidualHook>,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Codes, ModelError> {
        self.generate_reusing(prompts, options, hook, on_step, None)
    }

    /// [`MusicGen::generate`], taking the first steps from an earlier generation of the same
    /// prompts and options (see [`Prefix`]): re-rendering a piece whose steering changes late
    /// only generates from the change on.
    pub fn generate_reusing(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
        hook: Option<&mut dyn ResidualHook>,
        on_step: &mut dyn FnMut(usize, usize),
        prefix: Option<&Prefix>,
    ) -> Result<Codes, ModelError> {
        self.generate_piece(prompts, options, &Extent::default(), hook, on_step, prefix)
    }

    /// A whole piece at once, by running a [`PieceStream`] (the one generation loop) to its
    /// end: `options.max_new_tokens` steps after the extent's clip (none:
    /// from BOS), in one pass or window by window ([`passes`]), reusing an earlier generation's
    /// first steps when `prefix` says so. The steering hook sees the piece's steps (each window
    /// asks for its own from where the piece is), and the sampler's RNG and the gates go on
    /// across windows. `on_step(done, total)` counts the piece's steps over all windows (each
    /// window adds `codebooks - 1` steps for its delay pattern). Returns `[batch, codebooks,
    /// frames]`: the clip's frames, then the new ones.
    pub fn generate_piece(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
        extent: &Extent,
        mut hook: Option<&mut dyn ResidualHook>,
        on_step: &mut dyn FnMut(usize, usize),
        prefix: Option<&Prefix>,
    ) -> Result<Codes, ModelError> {
        if extent.endless {
            return Err(ModelError::Invalid(
                "an endless piece has no whole to return: step a PieceStream instead".into(),
            ));
        }
        let mut stream = PieceStream::new(
            self,
            prompts,
            options,
            extent,
            hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook),
            prefix,
        )?;
        let total = stream.total_steps().unwrap_or(0);
        if stream.steps_done() > 0 {
            on_step(stream.steps_done(), total);
        }
        while stream.step(hook.as_mut().map(|h| &mut **h as &mut dyn ResidualHook))? {
            on_step(stream.steps_done(), total);
            // A REPL input being interrupted: the whole piece is not wanted any more.
            if crate::interrupt::requested() {
                return Err(ModelError::Interrupted);
            }
        }
        stream.codes()
    }

    /// Text conditioning for a generation: the cross-attention context of the prompts (and
    /// with guidance, of the unconditional rows after them), and whether guidance is on.
    fn cross_context(
        &self,
        prompts: &[&str],
        options: &GenerateOptions,
    ) -> Result<(decoder::CrossContext, bool), ModelError> {
        // HF: guidance is on only for scales above 1; the unconditional rows see zero text
        // states and an all-zero mask, or here the negative prompt's.
        let guided = options.guidance_scale > 1.0;
        let (states, mask) = match (&options.negative_prompt, guided) {
            (Some(negative), true) => {
                // One encoding for both halves, so they are padded alike.
                let mut all = prompts.to_vec();
                all.extend(std::iter::repeat_n(negative.as_str(), prompts.len()));
                self.text_states(&all)?
            }
            (None, true) => {
                let (states, mask) = self.text_states(prompts)?;
                (
                    Tensor::cat(&[&states, &states.zeros_like()?], 0)?,
                    Tensor::cat(&[&mask, &mask.zeros_like()?], 0)?,
                )
            }
            (_, false) => self.text_states(prompts)?,
        };
        Ok((self.decoder.cross_context(&states, &mask)?, guided))
    }

    /// New frames `max_new_tokens` decoder steps make in one pass (the delay pattern holds
    /// back `codebooks - 1`).
    pub fn new_frames(&self, max_new_tokens: usize) -> usize {
        (max_new_tokens + 1).saturating_sub(self.num_codebooks())
    }

    /// The passes of a piece of `max_new_tokens` steps after the extent's clip (see
    /// [`passes`]).
    pub fn piece_passes(&self, extent: &Extent, max_new_tokens: usize) -> Vec<Pass> {
        let clip = extent
            .clip
            .as_ref()
            .map_or(0, |c| c.first().map_or(0, Vec::len));
        passes(clip, self.new_frames(max_new_tokens), extent.window)
    }

    /// The decoder steps of each pass of such a piece: its new frames plus the delay pattern's
    /// `codebooks - 1` (one pass: `max_new_tokens` itself). What progress counts.
    pub fn pass_steps(&self, extent: &Extent, max_new_tokens: usize) -> Vec<usize> {
        let k = self.num_codebooks();
        self.piece_passes(extent, max_new_tokens)
            .iter()
            .map(|p| p.new + k - 1)
            .collect()
    }

    /// The window `window_s` seconds long, moving on by `stride_s`, in frames (see
    /// [`MusicGenConfig::window`]).
    pub fn window(&self, window_s: f64, stride_s: f64) -> Result<Window, ModelError> {
        self.config
            .window(window_s, stride_s)
            .map_err(ModelError::Invalid)
    }

    fn check_window(&self, w: Window) -> Result<(), ModelError> {
        self.config.check_window(w).map_err(ModelError::Invalid)
    }

    /// A clip's codes for [`Extent::clip`]: mono audio at [`MusicGen::sample_rate`], encoded,
    /// `[codebooks][frames]`.
    pub fn clip_codes(&self, audio: &[f32]) -> Result<Vec<Vec<i64>>, ModelError> {
        let codes = self.encode(audio)?.squeeze(0)?.to_dtype(DType::I64)?;
        Ok(codes.to_vec2()?)
    }

    /// Decodes codes `[batch, codebooks, frames]` to mono audio, one `Vec` per batch item, each
    /// exactly `frames * samples_per_frame` long.
    pub fn decode(&self, codes: &Codes) -> Result<Vec<Vec<f32>>, ModelError> {
        self.check_codes(codes, false)?;
        self.parts.decode(codes)
    }

    /// A decoder for codes that arrive a few frames at a time, as a [`PieceStream`] hands them
    /// out: its audio equals [`MusicGen::decode`]'s of the whole codes.
    pub fn decode_stream(&self) -> Result<stream::AudioStream<'_>, ModelError> {
        Ok(stream::AudioStream::new(
            self.parts.codec().decode_stream()?,
            self.num_codebooks(),
        ))
    }

    /// Encodes mono audio at [`MusicGen::sample_rate`] to codes `[1, codebooks, frames]`.
    pub fn encode(&self, audio: &[f32]) -> Result<Codes, ModelError> {
        if audio.is_empty() {
            return Err(ModelError::Invalid("cannot encode empty audio".into()));
        }
        self.parts.encode(audio)
    }

    fn check_codes(&self, codes: &Codes, allow_pad: bool) -> Result<(), ModelError> {
        let dims = codes.dims();
        if dims.len() != 3 || dims[1] != self.num_codebooks() || dims[2] == 0 {
            return Err(ModelError::Invalid(format!(
                "codes must be [batch, {}, frames], got {dims:?}",
                self.num_codebooks()
            )));
        }
        let ids: Vec<i64> = codes.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
        let hi = self.config.decoder.vocab_size as i64 + i64::from(allow_pad);
        if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= hi) {
            return Err(ModelError::Invalid(format!(
                "code {bad} is outside the codebook (0..{hi})"
            )));
        }
        Ok(())
    }

    /// Teacher-forced pass over `codes` `[batch, codebooks, frames]` (no delay pattern applied;
    /// the pad/BOS id is allowed), conditioned on `prompts` (one per batch row) or on nothing.
    /// Returns the requested blocks' outputs and the logits.
    pub fn teacher_forced(
        &self,
        prompts: Option<&[&str]>,
        codes: &Codes,
        layers: &[usize],
    ) -> Result<TeacherForced, ModelError> {
        self.check_codes(codes, true)?;
        if let Some(&l) = layers.iter().find(|&&l| l >= self.num_layers()) {
            return Err(ModelError::Invalid(format!(
                "block {l} does not exist (the model has {} blocks)",
                self.num_layers()
            )));
        }
        let frames = codes.dim(2)?;
        if frames > self.max_new_tokens_limit() {
            return Err(ModelError::Invalid(format!(
                "{frames} frames exceed the model's limit of {}",
                self.max_new_tokens_limit()
            )));
        }
        let cross = match prompts {
            Some(p) => {
                if p.len() != codes.dim(0)? {
                    return Err(ModelError::Invalid(format!(
                        "{} prompts for a batch of {}",
                        p.len(),
                        codes.dim(0)?
                    )));
                }
                let (states, mask) = self.text_states(p)?;
                Some(self.decoder.cross_context(&states, &mask)?)
            }
            None => None,
        };
        let codes = codes.to_device(&self.device)?;
        let out = self
            .decoder
            .forward(&codes, cross.as_ref(), None, None, layers)?;
        Ok(TeacherForced {
            logits: self.decoder.logits(&out.hidden)?,
            blocks: out.captured,
        })
    }

    /// Teacher-forced pass over `codes` `[batch, codebooks, frames]` with no text conditioning and
    /// no delay pattern; returns the outputs of the requested blocks, each `[batch, frames,
    /// hidden]` in f32.
    pub fn capture(&self, codes: &Codes, layers: &[usize]) -> Result<Vec<Tensor>, ModelError> {
        Ok(self.teacher_forced(None, codes, layers)?.blocks)
    }
}

/// Runs `f` on one of rayon's worker threads (in place when already on one). Work made of many
/// small operations that rayon splits (a generation step, the codec's layers) runs there with
/// its splits work-stolen; called from a thread outside the pool, each split would park the
/// caller and wake it again (measured: 6.8 ms against 1.4 ms a step with 64-wide blocks). A
/// pool of one thread is left free instead: work that blocks on another thread (a steering hook
/// waiting for a lock) could otherwise hold the pool's only worker while that thread needs it.
pub(crate) fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// The text encoder, tokenizer and audio codec, behind the few calls MusicGen makes.
mod parts {
    use super::*;
    use crate::model::encodec::Encodec;
    use crate::model::t5::T5EncoderModel;
    use crate::model::text::TextTokenizer;

    pub struct Parts {
        tokenizer: TextTokenizer,
        t5: T5EncoderModel,
        codec: Encodec,
        device: Device,
    }

    impl Parts {
        pub fn load(
            config: &MusicGenConfig,
            files: &ModelFiles,
            weights: &Weights,
            device: &Device,
        ) -> Result<Self, ModelError> {
            let vb = weights.var_builder(DType::F32, device);
            let tokenizer = TextTokenizer::from_file(&files.tokenizer)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            let t5 = T5EncoderModel::load_mapped(
                vb.pp("text_encoder"),
                &config.text_encoder,
                Some(weights),
            )
            .map_err(|e| weights_error(files, e))?;
            let codec = Encodec::load(vb.pp("audio_encoder"), &config.audio_encoder)
                .map_err(|e| weights_error(files, e))?;
            if codec.num_codebooks() < config.decoder.num_codebooks {
                return Err(ModelError::Invalid(format!(
                    "{}: the decoder predicts {} codebooks but the audio codec has only {}",
                    files.config.display(),
                    config.decoder.num_codebooks,
                    codec.num_codebooks()
                )));
            }
            Ok(Parts {
                tokenizer,
                t5,
                codec,
                device: device.clone(),
            })
        }

        pub fn prompt_warning(&self, prompt: &str) -> Result<Option<String>, ModelError> {
            self.tokenizer
                .length_warning(prompt)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))
        }

        /// T5 states `[b, s, d_text]` and mask `[b, s]`.
        pub fn encode_text(&self, prompts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
            let batch = self
                .tokenizer
                .encode_batch(prompts)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            let ids = batch.ids_tensor(&self.device)?;
            let mask = batch.mask_tensor(&self.device)?;
            let states = self.t5.forward(&ids, &mask)?;
            Ok((states, mask))
        }

        pub fn codec(&self) -> &Encodec {
            &self.codec
        }

        pub fn decode(&self, codes: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
            let audio = self.codec.decode(codes)?; // [b, 1, samples]
            let audio = audio.squeeze(1)?.to_dtype(DType::F32)?;
            Ok(audio.to_vec2()?)
        }

        pub fn encode(&self, audio: &[f32]) -> Result<Tensor, ModelError> {
            let x = Tensor::from_slice(audio, (1, 1, audio.len()), &self.device)?;
            let k = self.codec.num_codebooks();
            Ok(self.codec.encode(&x, k)?.to_device(&Device::Cpu)?)
        }
    }
}

/// Writes one item's codes `[codebooks, frames]` as a safetensors file with tensor `codes` (i64),
/// atomically.
pub fn write_codes(path: &std::path::Path, codes: &Tensor) -> Result<(), ModelError> {
    let (k, frames) = codes.dims2()?;
    let ids: Vec<i64> = codes.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
    let meta =
        std::collections::HashMap::from([("baton.format".to_string(), "codes/1".to_string())]);
    crate::files::write(
        path,
        &[crate::files::OwnedTensor::i64(
            "codes",
            vec![k, frames],
            &ids,
        )],
        meta,
    )
    .map_err(|e| ModelError::Invalid(e.to_string()))
}

/// Largest absolute element-wise difference of two same-shaped f32 tensors (the model's unit
/// tests compare kernels and paths with it).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
