//! Times the decoder alone on random weights with musicgen-small's shapes (CFG batch of 2).
//!
//! `cargo run --release --example bench_decoder [STEPS]`. `BENCH_DTYPE=bf16` stores the weights
//! in bf16 (`q8`, `q4`: packed as `--dtype q8`, `q4` pack them); `BENCH_HIDDEN=64` narrows the blocks (same layer and op count, little arithmetic) so
//! the time is per-op overhead, the regime a GPU step is in; `BENCH_GREEDY=1` picks greedily.
use baton::model::decoder::Decoder;
use baton::model::generate::{self, GenerationInputs};
use baton::model::{DecoderConfig, GenerateOptions, Sampling};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

#[path = "../tests/quant_common/random_weights.rs"]
mod random_weights;
use random_weights::{seeded_normal, RandomWeights};

fn main() -> anyhow_free::Result {
    let hidden: usize = match std::env::var("BENCH_HIDDEN") {
        Ok(h) => h.parse()?,
        Err(_) => 1024,
    };
    let cfg: DecoderConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 24,
        "ffn_dim": 4 * hidden, "num_attention_heads": 16, "hidden_size": hidden, "num_codebooks": 4
    }))?;
    let dev = Device::Cpu;
    let packing = std::env::var("BENCH_DTYPE").unwrap_or_default();
    let dtype = match packing.as_str() {
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, dev.clone());
    let mut decoder = Decoder::load(&cfg, vb.pp("decoder"))?;
    match packing.as_str() {
        "q8" => decoder.quantize_q8()?,
        "q4" => decoder.quantize_q4()?,
        _ => {}
    }
    let states = seeded_normal((2, 12, hidden), 1.0, 1, &dev);
    let mask = Tensor::cat(
        &[
            Tensor::ones((1, 12), DType::F32, &dev)?,
            Tensor::zeros((1, 12), DType::F32, &dev)?,
        ],
        0,
    )?;
    let cross = decoder.cross_context(&states, &mask)?;
    let steps: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 50,
    };
    let inputs = GenerationInputs {
        cross: &cross,
        batch: 1,
        guided: true,
        pad: 2048,
        bos: 2048,
        prefix: None,
        prompt: None,
        first_step: 0,
    };
    let options = GenerateOptions {
        max_new_tokens: steps,
        sampling: if std::env::var_os("BENCH_GREEDY").is_some() {
            Sampling::Greedy
        } else {
            Sampling::TopK {
                k: 250,
                temperature: 1.0,
            }
        },
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };
    let t = std::time::Instant::now();
    let mut rngs = generate::seeded_rngs(0, 1);
    generate::generate(&decoder, &inputs, &options, None, &mut |_, _| {}, &mut rngs)?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{}, hidden {hidden}: {steps} steps in {s:.2} s: {:.2} steps/s, {:.3} ms/step",
        if packing.is_empty() { "f32" } else { &packing },
        steps as f64 / s,
        1e3 * s / steps as f64
    );
    Ok(())
}

mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
