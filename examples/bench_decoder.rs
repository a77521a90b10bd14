//! Times the decoder alone on random weights with musicgen-small's shapes (CFG batch of 2).
use baton::model::decoder::Decoder;
use baton::model::generate::{self, GenerationInputs};
use baton::model::{DecoderConfig, GenerateOptions, Sampling};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn main() -> anyhow_free::Result {
    let cfg: DecoderConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 24,
        "ffn_dim": 4096, "num_attention_heads": 16, "hidden_size": 1024, "num_codebooks": 4
    }))?;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let dtype = match std::env::var("BENCH_DTYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        _ => DType::F32,
    };
    let vb = VarBuilder::from_varmap(&varmap, dtype, &dev);
    let decoder = Decoder::load(&cfg, vb.pp("decoder"))?;
    let states = Tensor::randn(0f32, 1., (2, 12, 1024), &dev)?;
    let mask = Tensor::cat(
        &[
            Tensor::ones((1, 12), DType::F32, &dev)?,
            Tensor::zeros((1, 12), DType::F32, &dev)?,
        ],
        0,
    )?;
    let cross = decoder.cross_context(&states, &mask)?;
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(50);
    let inputs = GenerationInputs {
        cross: &cross,
        batch: 1,
        guided: true,
        pad: 2048,
        bos: 2048,
    };
    let options = GenerateOptions {
        max_new_tokens: steps,
        sampling: Sampling::TopK {
            k: 250,
            temperature: 1.0,
        },
        guidance_scale: 3.0,
        seed: 0,
    };
    let t = std::time::Instant::now();
    generate::generate(&decoder, &inputs, &options, None, &mut |_, _| {})?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{dtype:?}: {steps} steps in {s:.2} s: {:.2} steps/s",
        steps as f64 / s
    );
    Ok(())
}

mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
