//! Prompt tokenisation for the T5 text encoder.
//!
//! Loads the checkpoint's `tokenizer.json` with the `tokenizers` crate and turns a batch of
//! prompts into right-padded ids plus an attention mask, the way Hugging Face's
//! `tokenizer(prompts, padding=True)` does for MusicGen: `</s>` is appended to every prompt (by
//! the tokenizer's post-processor, or here when the file has none) and shorter prompts are padded
//! with the pad id (0 for T5) and mask 0.

use std::path::Path;

use candle_core::{Device, Tensor};

/// Errors from loading a tokenizer or tokenising prompts.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The tokenizer file could not be read or parsed.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The file that failed.
        path: String,
        /// What the tokenizers crate reported.
        message: String,
    },
    /// A token the T5 tokenizer needs is missing from the vocabulary.
    #[error("tokenizer {path} has no `{token}` token")]
    MissingToken {
        /// The tokenizer file.
        path: String,
        /// The missing token.
        token: &'static str,
    },
    /// Tokenising a prompt failed.
    #[error("cannot tokenise prompt {prompt:?}: {message}")]
    Encode {
        /// The prompt that failed.
        prompt: String,
        /// What the tokenizers crate reported.
        message: String,
    },
    /// An empty batch was given.
    #[error("no prompts given")]
    EmptyBatch,
    /// Building the id or mask tensors failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A batch of tokenised prompts, right-padded to the longest one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBatch {
    /// Token ids per prompt, each padded to the same length with the pad id.
    pub ids: Vec<Vec<u32>>,
    /// 1 for real tokens (including the final `</s>`), 0 for padding; same shape as `ids`.
    pub mask: Vec<Vec<u8>>,
}

impl PromptBatch {
    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the batch holds no prompts.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Padded sequence length.
    pub fn seq_len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    /// The ids as a `[batch, seq]` u32 tensor.
    pub fn ids_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        let flat: Vec<u32> = self.ids.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (self.len(), self.seq_len()), device)
    }

    /// The mask as a `[batch, seq]` f32 tensor of 0.0 / 1.0 (ready to multiply states with).
    pub fn mask_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        let flat: Vec<f32> = self.mask.iter().flatten().map(|&m| f32::from(m)).collect();
        Tensor::from_vec(flat, (self.len(), self.seq_len()), device)
    }
}

/// The longest prompt the text encoder reads, in tokens (`</s>` included): T5's and MusicGen's
/// tokenizer limit. Longer prompts are cut to it: the encoder's attention costs grow with the
/// square of the length (a 4,096-word prompt once took 17 GB), and MusicGen was trained on
/// short descriptions.
pub const MAX_PROMPT_TOKENS: usize = 512;

/// The T5 tokenizer of a MusicGen checkpoint.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: u32,
    eos_id: u32,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; it must define `<pad>` and `</s>` (T5's pad and end tokens).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TextError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TextError::Load {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let id = |token: &'static str| {
            inner.token_to_id(token).ok_or(TextError::MissingToken {
                path: shown.clone(),
                token,
            })
        };
        let pad_id = id("<pad>")?;
        let eos_id = id("</s>")?;
        Ok(Self {
            inner,
            pad_id,
            eos_id,
        })
    }

    /// Id of the padding token (0 for T5).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `</s>` (1 for T5).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Token ids of one prompt, ending with `</s>`, cut to [`MAX_PROMPT_TOKENS`] (the first
    /// 511 tokens and `</s>`, as a truncating Hugging Face tokenizer does).
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, TextError> {
        let mut ids = self.encode_whole(prompt)?;
        if ids.len() > MAX_PROMPT_TOKENS {
            ids.truncate(MAX_PROMPT_TOKENS - 1);
            ids.push(self.eos_id);
        }
        Ok(ids)
    }

    /// A warning when `prompt` is longer than the encoder reads (it is then cut).
    pub fn length_warning(&self, prompt: &str) -> Result<Option<String>, TextError> {
        let n = self.encode_whole(prompt)?.len();
        Ok((n > MAX_PROMPT_TOKENS).then(|| {
            format!(
                "the prompt is {n} tokens long; the text encoder reads the first \
                 {MAX_PROMPT_TOKENS} (the rest is left out)"
            )
        }))
    }

    /// Token ids of the whole prompt, ending with `</s>`.
    fn encode_whole(&self, prompt: &str) -> Result<Vec<u32>, TextError> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| TextError::Encode {
                prompt: prompt.to_string(),
                message: e.to_string(),
            })?;
        let mut ids = encoding.get_ids().to_vec();
        // T5's tokenizer.json appends `</s>` in its post-processor; a file without one still
        // has to give the encoder the end marker it was trained with.
        if ids.last() != Some(&self.eos_id) {
            ids.push(self.eos_id);
        }
        Ok(ids)
    }

    /// Tokenises a batch of prompts, right-padding to the longest.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<PromptBatch, TextError> {
        if prompts.is_empty() {
            return Err(TextError::EmptyBatch);
        }
        let encoded = prompts
            .iter()
            .map(|p| self.encode(p))
            .collect::<Result<Vec<_>, _>>()?;
        let width = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encoded.len());
        let mut mask = Vec::with_capacity(encoded.len());
        for mut row in encoded {
            let real = row.len();
            row.resize(width, self.pad_id);
            let mut m = vec![1u8; real];
            m.resize(width, 0);
            ids.push(row);
            mask.push(m);
        }
        Ok(PromptBatch { ids, mask })
    }
}
