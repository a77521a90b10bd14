//! `config.json` of a transformers `ClapModel` and `preprocessor_config.json` of its
//! `ClapFeatureExtractor`.
//!
//! Checkpoints save only the values that differ from transformers' defaults (laion's
//! `larger_clap_music` names four audio keys and no text key at all), so every field here
//! defaults to the value of `ClapAudioConfig`, `ClapTextConfig` or `ClapFeatureExtractor` in
//! transformers 5.

use serde::Deserialize;

/// The top-level `config.json` of a `ClapModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClapConfig {
    /// Must be `"clap"`: anything else is another kind of model.
    #[serde(default)]
    pub model_type: String,
    /// The HTSAT audio encoder.
    #[serde(default)]
    pub audio_config: AudioConfig,
    /// The RoBERTa text encoder.
    #[serde(default)]
    pub text_config: TextConfig,
    /// Width of the shared embedding space; overrides both sub-configs (as `ClapConfig` does).
    #[serde(default = "d_projection_dim")]
    pub projection_dim: usize,
    /// Activation between the two linear layers of each projection; overrides both sub-configs.
    #[serde(default = "d_relu")]
    pub projection_hidden_act: String,
}

/// `audio_config`: the HTSAT (Swin transformer) audio encoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AudioConfig {
    /// Attention window side, in patches.
    pub window_size: usize,
    /// Mel bins of the input features.
    pub num_mel_bins: usize,
    /// Side of the square image the spectrogram is folded into.
    pub spec_size: usize,
    /// Activation of the MLPs.
    pub hidden_act: String,
    /// Patch side (the patch convolution's kernel).
    pub patch_size: usize,
    /// Patch convolution stride, (height, width); a single number in some configs.
    #[serde(deserialize_with = "one_or_two")]
    pub patch_stride: Vec<usize>,
    /// Width after the last stage (must equal `patch_embeds_hidden_size * 2^(stages-1)`).
    pub hidden_size: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    pub num_attention_heads: Vec<usize>,
    /// Feature fusion of long clips (fused checkpoints are not supported).
    pub enable_fusion: bool,
    /// Input channels of the patch convolution.
    pub patch_embed_input_channels: usize,
    /// Whether patch embeddings are flattened to tokens (always, for the encoder to work).
    pub flatten_patch_embeds: bool,
    /// Width of the first stage.
    pub patch_embeds_hidden_size: usize,
    /// Layer norm after the patch embedding.
    pub enable_patch_layer_norm: bool,
    /// Bias on the query, key and value projections.
    pub qkv_bias: bool,
    /// MLP width as a multiple of the stage width.
    pub mlp_ratio: f64,
    /// Epsilon of the blocks' layer norms.
    pub layer_norm_eps: f64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            window_size: 8,
            num_mel_bins: 64,
            spec_size: 256,
            hidden_act: "gelu".into(),
            patch_size: 4,
            patch_stride: vec![4, 4],
            hidden_size: 768,
            depths: vec![2, 2, 6, 2],
            num_attention_heads: vec![4, 8, 16, 32],
            enable_fusion: false,
            patch_embed_input_channels: 1,
            flatten_patch_embeds: true,
            patch_embeds_hidden_size: 96,
            enable_patch_layer_norm: true,
            qkv_bias: true,
            mlp_ratio: 4.0,
            layer_norm_eps: 1e-5,
        }
    }
}

/// `text_config`: the RoBERTa text encoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// MLP activation.
    pub hidden_act: String,
    /// Rows of the position table (RoBERTa's positions start after the pad id).
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// Epsilon of the layer norms.
    pub layer_norm_eps: f64,
    /// The pad id, which also offsets positions.
    pub pad_token_id: Option<u32>,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 50265,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(1),
        }
    }
}

/// Reads `4` or `[4, 4]` as `[4, 4]`.
fn one_or_two<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => vec![n, n],
        OneOrMany::Many(v) => v,
    })
}

fn d_projection_dim() -> usize {
    512
}

fn d_relu() -> String {
    "relu".into()
}

/// `preprocessor_config.json`: how audio becomes a log-mel spectrogram. Only the fields the
/// unfused (`rand_trunc`) path reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FeatureConfig {
    /// Mel bins.
    pub feature_size: usize,
    /// The rate the model hears, Hz.
    pub sampling_rate: u32,
    /// STFT hop, samples.
    pub hop_length: usize,
    /// Length of one input, seconds.
    pub max_length_s: usize,
    /// STFT frame (and FFT) length, samples.
    pub fft_window_size: usize,
    /// Lowest mel filter edge, Hz.
    pub frequency_min: f64,
    /// Highest mel filter edge, Hz.
    pub frequency_max: f64,
    /// How shorter clips are filled: `repeatpad`, `repeat` or `pad`.
    pub padding: String,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            feature_size: 64,
            sampling_rate: 48_000,
            hop_length: 480,
            max_length_s: 10,
            fft_window_size: 1024,
            frequency_min: 0.0,
            frequency_max: 14_000.0,
            padding: "repeatpad".into(),
        }
    }
}

impl FeatureConfig {
    /// Samples of one model input (10 s at 48 kHz by default).
    pub fn max_samples(&self) -> usize {
        self.max_length_s * self.sampling_rate as usize
    }
}
