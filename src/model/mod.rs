//! MusicGen on candle: config, T5 text encoder, decoder LM (with the residual hook), EnCodec
//! (encode + decode), generation (delay pattern, CFG, sampling, KV cache) and loading (hf-hub or a
//! local folder).
//!
//! OWNER NOTE (skeleton): the public surface below is what `probe`, `script` and the CLI build
//! on. Keep these names and signatures; fill in the bodies.

pub mod encodec;
pub mod hook;
pub mod t5;
pub mod text;

pub use hook::ResidualHook;

use candle_core::{DType, Device, Tensor};

/// Errors from loading or running MusicGen.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not implemented yet: {0}")]
    Unimplemented(&'static str),
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
    /// Seed of the sampling RNG (same seed, same codes).
    pub seed: u64,
}

/// Generated audio codes: `[batch, num_codebooks, frames]`, i64, delay pattern already undone.
pub type Codes = Tensor;

/// A loaded MusicGen model: text encoder, decoder LM and EnCodec audio codec.
pub struct MusicGen {
    _private: (),
}

impl MusicGen {
    /// Loads a model from a hub id (`facebook/musicgen-small`, cached by hf-hub, honouring
    /// `HF_HUB_OFFLINE`) or a local folder holding config.json, model.safetensors (or a sharded
    /// index), tokenizer.json and generation_config.json. `dtype` applies to the decoder.
    pub fn load(_spec: &str, _device: &Device, _dtype: DType) -> Result<Self, ModelError> {
        Err(ModelError::Unimplemented("MusicGen::load"))
    }

    /// Number of decoder blocks.
    pub fn num_layers(&self) -> usize {
        unimplemented!()
    }

    /// Width of the decoder's residual stream.
    pub fn hidden_size(&self) -> usize {
        unimplemented!()
    }

    /// Audio frames per second of the codec (50 for the real models).
    pub fn frame_rate(&self) -> f64 {
        unimplemented!()
    }

    /// Audio sample rate of the codec (32000 for the real models).
    pub fn sample_rate(&self) -> u32 {
        unimplemented!()
    }

    /// The decoder's device.
    pub fn device(&self) -> &Device {
        unimplemented!()
    }

    /// The decoder's dtype (steering vectors must be in it).
    pub fn dtype(&self) -> DType {
        unimplemented!()
    }

    /// Generates codes for a batch of prompts. `hook` steers (see [`ResidualHook`]);
    /// `on_step(done, total)` is called after every decoder step (for progress bars).
    pub fn generate(
        &self,
        _prompts: &[&str],
        _options: &GenerateOptions,
        _hook: Option<&mut dyn ResidualHook>,
        _on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Codes, ModelError> {
        Err(ModelError::Unimplemented("MusicGen::generate"))
    }

    /// Decodes codes `[batch, codebooks, frames]` to mono audio, one `Vec` per batch item, each
    /// exactly `frames * samples_per_frame` long.
    pub fn decode(&self, _codes: &Codes) -> Result<Vec<Vec<f32>>, ModelError> {
        Err(ModelError::Unimplemented("MusicGen::decode"))
    }

    /// Encodes mono audio at [`MusicGen::sample_rate`] to codes `[1, codebooks, frames]`.
    pub fn encode(&self, _audio: &[f32]) -> Result<Codes, ModelError> {
        Err(ModelError::Unimplemented("MusicGen::encode"))
    }

    /// Teacher-forced pass over `codes` `[batch, codebooks, frames]` with no text conditioning and
    /// no delay pattern; returns the outputs of the requested blocks, each `[batch, frames,
    /// hidden]` in f32.
    pub fn capture(&self, _codes: &Codes, _layers: &[usize]) -> Result<Vec<Tensor>, ModelError> {
        Err(ModelError::Unimplemented("MusicGen::capture"))
    }
}
