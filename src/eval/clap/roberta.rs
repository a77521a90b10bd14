//! CLAP's text encoder: RoBERTa (transformers' `ClapTextModel`, post-norm BERT layers, positions
//! numbered from the pad id + 1), up to its pooled output (tanh of a dense layer on `<s>`).

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use super::config::TextConfig;
use super::Activation;

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    out_norm: LayerNorm,
}

/// The RoBERTa encoder and its pooler.
pub struct Roberta {
    words: Embedding,
    positions: Embedding,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    pooler: Linear,
    act: Activation,
    heads: usize,
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
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let e = vb.pp("embeddings");
        let words = candle_nn::embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?;
        let positions =
            candle_nn::embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?;
        // Token type 0 for every token (the model is never given others).
        let token_type = e
            .pp("token_type_embeddings")
            .get((cfg.type_vocab_size, h), "weight")?
            .narrow(0, 0, 1)?;
        let emb_norm = candle_nn::layer_norm(h, eps, e.pp("LayerNorm"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = vb.pp("encoder").pp("layer").pp(i);
                let a = l.pp("attention");
                Ok(Layer {
                    query: candle_nn::linear(h, h, a.pp("self").pp("query"))?,
                    key: candle_nn::linear(h, h, a.pp("self").pp("key"))?,
                    value: candle_nn::linear(h, h, a.pp("self").pp("value"))?,
                    attn_out: candle_nn::linear(h, h, a.pp("output").pp("dense"))?,
                    attn_norm: candle_nn::layer_norm(h, eps, a.pp("output").pp("LayerNorm"))?,
                    fc1: candle_nn::linear(
                        h,
                        cfg.intermediate_size,
                        l.pp("intermediate").pp("dense"),
                    )?,
                    fc2: candle_nn::linear(cfg.intermediate_size, h, l.pp("output").pp("dense"))?,
                    out_norm: candle_nn::layer_norm(h, eps, l.pp("output").pp("LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Roberta {
            words,
            positions,
            token_type,
            emb_norm,
            layers,
            pooler: candle_nn::linear(h, h, vb.pp("pooler").pp("dense"))?,
            act,
            heads: cfg.num_attention_heads,
            pad: cfg.pad_token_id.unwrap_or(1),
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Most tokens one text may have (positions run from pad + 1).
    pub fn max_tokens(&self) -> usize {
        self.max_positions.saturating_sub(self.pad as usize + 1)
    }

    /// The pooled output (`[hidden]`) of one tokenised text (no padding, so no mask).
    pub fn forward(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        let dev = self.token_type.device();
        let n = ids.len();
        if n == 0 || n > self.max_tokens() {
            candle_core::bail!(
                "{n} tokens; the text encoder takes 1 to {}",
                self.max_tokens()
            );
        }
        let ids_t = Tensor::new(ids, dev)?.unsqueeze(0)?;
        // create_position_ids_from_input_ids: pad + 1, pad + 2, ... for non-pad tokens, the pad
        // position for pad tokens.
        let mut count = 0u32;
        let pos: Vec<u32> = ids
            .iter()
            .map(|&id| {
                if id == self.pad {
                    self.pad
                } else {
                    count += 1;
                    self.pad + count
                }
            })
            .collect();
        let pos = Tensor::new(pos.as_slice(), dev)?.unsqueeze(0)?;
        let x = self
            .words
            .forward(&ids_t)?
            .broadcast_add(&self.token_type)?
            .add(&self.positions.forward(&pos)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        for layer in &self.layers {
            x = self.layer(layer, &x)?;
        }
        let first = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.pooler.forward(&first)?.tanh()?.squeeze(0)
    }

    fn layer(&self, l: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(l.query.forward(x)?)?;
        let k = split(l.key.forward(x)?)?;
        let v = split(l.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, n, c))?;
        let x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let m = l.fc2.forward(&self.act.forward(&l.fc1.forward(&x)?)?)?;
        l.out_norm.forward(&(m + x)?)
    }
}
