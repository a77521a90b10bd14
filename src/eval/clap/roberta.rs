//! CLAP's text encoder: RoBERTa (transformers' `ClapTextModel`: post-norm BERT layers, positions
//! numbered from the pad id + 1) up to its pooled output (tanh of a dense layer on `<s>`).
//!
//! The encoder is candle-transformers' `XLMRobertaModel`, which has RoBERTa's layout, key names
//! and position numbering; CLAP adds the pooler, which that model does not have.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::xlm_roberta::{Config, XLMRobertaModel};

use super::config::TextConfig;
use super::Activation;

/// The RoBERTa encoder and its pooler.
pub struct Roberta {
    encoder: XLMRobertaModel,
    pooler: Linear,
    pad: u32,
    max_positions: usize,
}

impl Roberta {
    /// Loads the encoder under `vb` (`text_model`).
    pub fn load(cfg: &TextConfig, vb: VarBuilder) -> Result<Self, String> {
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(format!(
                "text_config: hidden_size {} is not a multiple of {} heads",
                cfg.hidden_size, cfg.num_attention_heads
            ));
        }
        let act = Activation::parse(&cfg.hidden_act).map_err(|e| e.to_string())?;
        Self::load_checked(cfg, act, vb).map_err(|e| e.to_string())
    }

    fn load_checked(
        cfg: &TextConfig,
        act: Activation,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let pad = cfg.pad_token_id.unwrap_or(1);
        let config = Config {
            hidden_size: cfg.hidden_size,
            layer_norm_eps: cfg.layer_norm_eps,
            attention_probs_dropout_prob: 0.0,
            hidden_dropout_prob: 0.0,
            num_attention_heads: cfg.num_attention_heads,
            position_embedding_type: "absolute".into(),
            intermediate_size: cfg.intermediate_size,
            hidden_act: match act {
                Activation::Gelu => candle_nn::Activation::Gelu,
                Activation::GeluTanh => candle_nn::Activation::NewGelu,
                Activation::Relu => candle_nn::Activation::Relu,
                Activation::Silu => candle_nn::Activation::Silu,
            },
            num_hidden_layers: cfg.num_hidden_layers,
            vocab_size: cfg.vocab_size,
            max_position_embeddings: cfg.max_position_embeddings,
            type_vocab_size: cfg.type_vocab_size,
            pad_token_id: pad,
        };
        let h = cfg.hidden_size;
        Ok(Roberta {
            encoder: XLMRobertaModel::new(&config, vb.clone())?,
            pooler: candle_nn::linear(h, h, vb.pp("pooler").pp("dense"))?,
            pad,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Most tokens one text may have (positions run from pad + 1).
    pub fn max_tokens(&self) -> usize {
        self.max_positions.saturating_sub(self.pad as usize + 1)
    }

    /// The pooled output (`[hidden]`) of one tokenised text (no padding: every token attends).
    pub fn forward(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let n = ids.len();
        if n == 0 || n > self.max_tokens() {
            candle_core::bail!(
                "{n} tokens; the text encoder takes 1 to {}",
                self.max_tokens()
            );
        }
        let dev = self.pooler.weight().device();
        let ids = Tensor::new(ids, dev)?.unsqueeze(0)?;
        let token_types = ids.zeros_like()?;
        let mask = Tensor::ones((1, n), DType::F32, dev)?;
        let states = self
            .encoder
            .forward(&ids, &mask, &token_types, None, None, None)?;
        let first = states.narrow(1, 0, 1)?.squeeze(1)?;
        self.pooler.forward(&first)?.tanh()?.squeeze(0)
    }
}
