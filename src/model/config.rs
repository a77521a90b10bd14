//! MusicGen's `config.json`: the decoder's shape plus the text-encoder and audio-codec sub-configs,
//! validated with errors that name the offending field.

use serde::Deserialize;

use super::encodec::EncodecConfig;
use super::t5::T5Config;

/// A config field that is out of range or a model variant baton does not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not parse or lacks a required field.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A field holds a value the model cannot use.
    #[error("config field `{field}` = {value}: {reason}")]
    OutOfRange {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A MusicGen variant that is not implemented.
    #[error("{0} is not supported yet (baton runs mono text-to-music MusicGen checkpoints)")]
    Unsupported(String),
}

fn default_pad() -> Option<i64> {
    Some(2048)
}
fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu".to_string()
}
fn default_one() -> usize {
    1
}

/// The decoder LM's shape (`config.json` → `decoder`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DecoderConfig {
    /// Entries per codebook (the embeddings hold one more: the pad/BOS id).
    pub vocab_size: usize,
    /// Positions the model was trained for; generation refuses to go beyond.
    pub max_position_embeddings: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Width of the feed-forward layer.
    pub ffn_dim: usize,
    /// Attention heads (self and cross).
    pub num_attention_heads: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Parallel codebooks (4 for mono checkpoints).
    pub num_codebooks: usize,
    /// 1 for mono; stereo checkpoints are not supported yet.
    #[serde(default = "default_one")]
    pub audio_channels: usize,
    /// Pad token id (also the BOS id in the released checkpoints).
    #[serde(default = "default_pad")]
    pub pad_token_id: Option<i64>,
    /// BOS / decoder start id.
    #[serde(default = "default_pad")]
    pub bos_token_id: Option<i64>,
    /// Feed-forward activation; only `gelu` (exact, erf-based) is used by MusicGen.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Width of the cross-attention inputs, when it differs from `hidden_size` (unsupported).
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
    /// LayerNorm epsilon (PyTorch's default; not stored in the released configs).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

impl DecoderConfig {
    /// The id fed as the first decoder input and written where the delay pattern pads.
    pub fn pad_id(&self) -> i64 {
        self.pad_token_id.unwrap_or(self.vocab_size as i64)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks every field the decoder depends on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(field: &'static str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: v.to_string(),
                    reason: "must be at least 1",
                });
            }
            Ok(())
        }
        positive("decoder.vocab_size", self.vocab_size)?;
        positive(
            "decoder.max_position_embeddings",
            self.max_position_embeddings,
        )?;
        positive("decoder.num_hidden_layers", self.num_hidden_layers)?;
        positive("decoder.ffn_dim", self.ffn_dim)?;
        positive("decoder.num_attention_heads", self.num_attention_heads)?;
        positive("decoder.hidden_size", self.hidden_size)?;
        positive("decoder.num_codebooks", self.num_codebooks)?;
        // The delay pattern needs one whole frame: num_codebooks - 1 delay steps on top.
        if self.max_position_embeddings < self.num_codebooks.saturating_mul(2) - 1 {
            return Err(ConfigError::OutOfRange {
                field: "decoder.max_position_embeddings",
                value: self.max_position_embeddings.to_string(),
                reason: "must be at least 2 * decoder.num_codebooks - 1 (one frame with the delay pattern)",
            });
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::OutOfRange {
                field: "decoder.hidden_size",
                value: self.hidden_size.to_string(),
                reason: "must be a multiple of decoder.num_attention_heads",
            });
        }
        if !self.hidden_size.is_multiple_of(2) {
            return Err(ConfigError::OutOfRange {
                field: "decoder.hidden_size",
                value: self.hidden_size.to_string(),
                reason: "must be even (sinusoidal positions)",
            });
        }
        if self.audio_channels == 2 {
            return Err(ConfigError::Unsupported("stereo MusicGen".into()));
        }
        if self.audio_channels != 1 {
            return Err(ConfigError::OutOfRange {
                field: "decoder.audio_channels",
                value: self.audio_channels.to_string(),
                reason: "must be 1 (mono)",
            });
        }
        let pad = self.pad_id();
        if pad != self.vocab_size as i64 {
            // The embeddings have vocab_size + 1 rows and the heads vocab_size outputs: the pad
            // id must be the extra row, otherwise generated tokens could collide with it.
            return Err(ConfigError::OutOfRange {
                field: "decoder.pad_token_id",
                value: pad.to_string(),
                reason: "must equal decoder.vocab_size (the extra embedding row)",
            });
        }
        if let Some(bos) = self.bos_token_id {
            if bos < 0 || bos > self.vocab_size as i64 {
                return Err(ConfigError::OutOfRange {
                    field: "decoder.bos_token_id",
                    value: bos.to_string(),
                    reason: "must be within 0..=vocab_size",
                });
            }
        }
        if self.activation_function != "gelu" {
            return Err(ConfigError::OutOfRange {
                field: "decoder.activation_function",
                value: self.activation_function.clone(),
                reason: "only \"gelu\" is supported",
            });
        }
        if let Some(c) = self.cross_attention_hidden_size {
            if c != self.hidden_size {
                return Err(ConfigError::Unsupported(format!(
                    "decoder.cross_attention_hidden_size = {c} (different from hidden_size)"
                )));
            }
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(ConfigError::OutOfRange {
                field: "decoder.layer_norm_eps",
                value: self.layer_norm_eps.to_string(),
                reason: "must be a positive number",
            });
        }
        Ok(())
    }
}

/// The decoding defaults of `generation_config.json` that shape the token sequence.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct GenerationDefaults {
    /// First decoder input id (BOS).
    #[serde(default)]
    pub decoder_start_token_id: Option<i64>,
    /// Pad id written by the delay pattern.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Default classifier-free guidance scale.
    #[serde(default)]
    pub guidance_scale: Option<f64>,
}

/// The top-level MusicGen `config.json`: decoder, text encoder and audio codec.
#[derive(Debug, Clone)]
pub struct MusicGenConfig {
    /// Decoder LM shape.
    pub decoder: DecoderConfig,
    /// `text_encoder` sub-config (T5).
    pub text_encoder: T5Config,
    /// `audio_encoder` sub-config (EnCodec).
    pub audio_encoder: EncodecConfig,
    /// Width of the text encoder's output (`text_encoder.d_model`).
    pub text_hidden_size: usize,
    /// Audio sample rate of the codec.
    pub sample_rate: u32,
    /// Samples per codec frame (product of the codec's upsampling ratios).
    pub hop_length: usize,
}

impl MusicGenConfig {
    /// Parses and validates `config.json` text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
        match model_type {
            "musicgen" => {}
            "musicgen_melody" => return Err(ConfigError::Unsupported("musicgen-melody".into())),
            other => {
                return Err(ConfigError::Parse(format!(
                    "model_type is {other:?}, expected \"musicgen\""
                )))
            }
        }
        let sub = |name: &str| {
            v.get(name)
                .cloned()
                .ok_or_else(|| ConfigError::Parse(format!("missing `{name}` section")))
        };
        let decoder: DecoderConfig = serde_json::from_value(sub("decoder")?)
            .map_err(|e| ConfigError::Parse(format!("decoder: {e}")))?;
        decoder.validate()?;
        let text_encoder: T5Config = serde_json::from_value(sub("text_encoder")?)
            .map_err(|e| ConfigError::Parse(format!("text_encoder: {e}")))?;
        let audio_encoder: EncodecConfig = serde_json::from_value(sub("audio_encoder")?)
            .map_err(|e| ConfigError::Parse(format!("audio_encoder: {e}")))?;
        let text_hidden_size = text_encoder.d_model;
        if text_hidden_size == 0 {
            return Err(ConfigError::OutOfRange {
                field: "text_encoder.d_model",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let sample_rate = audio_encoder.sampling_rate;
        if sample_rate == 0 || sample_rate > 1_000_000 {
            return Err(ConfigError::OutOfRange {
                field: "audio_encoder.sampling_rate",
                value: sample_rate.to_string(),
                reason: "must be within 1..=1000000",
            });
        }
        let ratios = &audio_encoder.upsampling_ratios;
        if ratios.is_empty() || ratios.contains(&0) {
            return Err(ConfigError::OutOfRange {
                field: "audio_encoder.upsampling_ratios",
                value: format!("{ratios:?}"),
                reason: "must be non-empty positive integers",
            });
        }
        let Some(hop_length) = audio_encoder.checked_hop_length() else {
            return Err(ConfigError::OutOfRange {
                field: "audio_encoder.upsampling_ratios",
                value: format!("{ratios:?}"),
                reason: "their product overflows",
            });
        };
        if audio_encoder.audio_channels == 2 {
            return Err(ConfigError::Unsupported("stereo EnCodec".into()));
        }
        Ok(MusicGenConfig {
            decoder,
            text_encoder,
            audio_encoder,
            text_hidden_size,
            sample_rate,
            hop_length,
        })
    }

    /// Codec frames per second, rounded up like Hugging Face's `EncodecConfig.frame_rate`.
    pub fn frame_rate(&self) -> f64 {
        self.audio_encoder.frame_rate() as f64
    }

    /// The longest audio the decoder's positions allow, in seconds: `max_position_embeddings`
    /// steps hold `max_position_embeddings - (num_codebooks - 1)` frames once the delay pattern
    /// is undone (validation guarantees at least one).
    pub fn max_seconds(&self) -> f64 {
        let d = &self.decoder;
        let frames = (d.max_position_embeddings + 1).saturating_sub(d.num_codebooks);
        frames as f64 / self.frame_rate()
    }

    /// The smallest `max_new_tokens` for which the delay pattern applies (HF leaves shorter
    /// sequences unpatterned, which yields no whole frame).
    pub fn min_new_tokens(&self) -> usize {
        (2 * self.decoder.num_codebooks).saturating_sub(2).max(1)
    }

    /// The window `window_s` seconds long, moving on by `stride_s`, in frames; refused when it
    /// is longer than the decoder's positions or the stride is not inside it.
    pub fn window(&self, window_s: f64, stride_s: f64) -> Result<super::Window, String> {
        let frames_of = |s: f64| (s * self.frame_rate()).round();
        if !(window_s.is_finite() && window_s > 0.0) {
            return Err(format!(
                "the window must be a positive number of seconds, got {window_s}"
            ));
        }
        if !(stride_s.is_finite() && stride_s > 0.0 && stride_s < window_s) {
            return Err(format!(
                "the window's stride must be above 0 and below the window ({window_s} s), got \
                 {stride_s}"
            ));
        }
        let w = super::Window {
            frames: frames_of(window_s).max(1.0) as usize,
            stride: frames_of(stride_s).max(1.0) as usize,
        };
        self.check_window(w)?;
        Ok(w)
    }

    /// Checks that a window fits the decoder's positions and its stride is inside it.
    pub fn check_window(&self, w: super::Window) -> Result<(), String> {
        let d = &self.decoder;
        let limit = (d.max_position_embeddings + 1).saturating_sub(d.num_codebooks);
        if w.frames > limit || w.frames < 2 {
            return Err(format!(
                "a window of {} frames does not fit this model (2 to {limit} frames, at most \
                 {:.2} s)",
                w.frames,
                self.max_seconds()
            ));
        }
        if w.stride == 0 || w.stride >= w.frames {
            return Err(format!(
                "the stride ({} frames) must be at least 1 and below the window ({} frames)",
                w.stride, w.frames
            ));
        }
        // Each next window starts from the last `frames - stride` frames: fewer than the
        // codebooks and its pass is too short for the delay pattern (transformers then leaves
        // the codes unpatterned, which is not music).
        let k = d.num_codebooks;
        if w.frames - w.stride < k {
            return Err(format!(
                "the window keeps {} frames of context (window {} - stride {}): at least {k} \
                 (the model's codebooks) are needed; shorten the stride",
                w.frames - w.stride,
                w.frames,
                w.stride
            ));
        }
        Ok(())
    }

    /// Whether the checkpoint projects text states with `enc_to_dec_proj` (HF adds it exactly
    /// when the text and decoder widths differ).
    pub fn has_enc_to_dec_proj(&self) -> bool {
        self.text_hidden_size != self.decoder.hidden_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> serde_json::Value {
        serde_json::json!({
            "model_type": "musicgen",
            "decoder": {"vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 24,
                        "ffn_dim": 4096, "num_attention_heads": 16, "hidden_size": 1024,
                        "num_codebooks": 4, "pad_token_id": 2048, "bos_token_id": 2048},
            "text_encoder": {"d_model": 768},
            "audio_encoder": {"sampling_rate": 32000, "upsampling_ratios": [8, 5, 4, 4]}
        })
    }

    #[test]
    fn musicgen_small_shape_parses() {
        let c = MusicGenConfig::from_json(&small().to_string()).unwrap();
        assert_eq!(c.frame_rate(), 50.0);
        assert_eq!(c.decoder.head_dim(), 64);
        assert!(c.has_enc_to_dec_proj());
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let mut v = small();
        v["decoder"]["num_attention_heads"] = 7.into();
        let e = MusicGenConfig::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("decoder.hidden_size"), "{e}");
        let mut v = small();
        v["decoder"]["num_hidden_layers"] = 0.into();
        let e = MusicGenConfig::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("num_hidden_layers"), "{e}");
    }

    #[test]
    fn variants_are_refused_clearly() {
        let mut v = small();
        v["model_type"] = "musicgen_melody".into();
        let e = MusicGenConfig::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        let mut v = small();
        v["decoder"]["audio_channels"] = 2.into();
        let e = MusicGenConfig::from_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("stereo"), "{e}");
    }
}
