//! What tests/q8_weights.rs and tests/q4_weights.rs share: packed decoder weights against f32,
//! as teacher-forced logits and greedy tokens on the tiny checkpoint, and as logits of a decoder
//! with musicgen-small's block shapes.

mod random_weights;

use std::path::PathBuf;

use baton::model::decoder::Decoder;
use baton::model::{DecoderConfig, GenerateOptions, MusicGen, Sampling, WeightFormat};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use random_weights::{seeded_normal, RandomWeights};

/// How packed logits compare with f32's.
#[derive(Debug)]
pub struct Agreement {
    /// Largest |f32 - packed| as a fraction of the f32 logits' standard deviation.
    pub max_error: f32,
    /// Mean |f32 - packed| as a fraction of the same.
    // q4_weights bounds it; q8_weights, compiled from the same module, only prints it.
    #[allow(dead_code)]
    pub mean_error: f32,
    /// Share of positions whose top token agrees.
    pub top1: f32,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Compares logits `[.., vocab]`.
pub fn compare(f32_logits: &Tensor, packed: &Tensor) -> Agreement {
    let a = f32_logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = packed.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let n = a.len() as f32;
    let mean = a.iter().sum::<f32>() / n;
    let std = (a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs());
    let worst = diff.clone().fold(0f32, f32::max);
    let mean_diff = diff.sum::<f32>() / n;
    let top = |t: &Tensor| {
        t.argmax(D::Minus1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
    };
    let (ta, tb) = (top(f32_logits), top(packed));
    let same = ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
    Agreement {
        max_error: worst / std,
        mean_error: mean_diff / std,
        top1: same as f32 / ta.len() as f32,
    }
}

/// tiny-a in f32 against tiny-a in `format`: teacher-forced logits of two prompts, and the share
/// of greedy tokens (guided, 16 frames) that agree. The greedy steps stream the packed weights
/// through the matrix-vector kernels.
pub fn tiny_checkpoint(format: WeightFormat) -> (Agreement, f32) {
    let dir = fixtures().join("tiny-a");
    let dir = dir.to_str().unwrap();
    let full = MusicGen::load(dir, &Device::Cpu, DType::F32).unwrap();
    let packed = MusicGen::load_as(dir, &Device::Cpu, format).unwrap();
    assert!(packed.quantized() && !full.quantized());
    let prompts = ["a calm piano melody with soft strings", "loud drums"];
    let k = full.num_codebooks();
    let codes: Vec<i64> = (0..2 * k * 12)
        .map(|i| ((i * 37 + 5) % 64) as i64)
        .collect();
    let codes = Tensor::from_vec(codes, (2, k, 12), &Device::Cpu).unwrap();
    let a = full.teacher_forced(Some(&prompts), &codes, &[]).unwrap();
    let b = packed.teacher_forced(Some(&prompts), &codes, &[]).unwrap();
    let forced = compare(&a.logits, &b.logits);

    let options = GenerateOptions {
        max_new_tokens: 16 + k - 1,
        sampling: Sampling::Greedy,
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };
    let gen = |m: &MusicGen| {
        m.generate(&prompts, &options, None, &mut |_, _| {})
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    };
    let (ga, gb) = (gen(&full), gen(&packed));
    let same = ga.iter().zip(&gb).filter(|(x, y)| x == y).count() as f32 / ga.len() as f32;
    (forced, same)
}

/// A decoder with musicgen-small's blocks (d 1024, 16 heads, ffn 4096, 4 codebooks of 2048),
/// two of them, random weights: teacher-forced logits in f32 against the same weights packed by
/// `pack`.
pub fn musicgen_small_shaped(pack: fn(&mut Decoder) -> candle_core::Result<()>) -> Agreement {
    let cfg: DecoderConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 2,
        "ffn_dim": 4096, "num_attention_heads": 16, "hidden_size": 1024, "num_codebooks": 4
    }))
    .unwrap();
    let dev = Device::Cpu;
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, dev.clone());
    let mut decoder = Decoder::load(&cfg, vb.pp("decoder")).unwrap();
    let states = seeded_normal((2, 12, 1024), 1.0, 1, &dev);
    let mask = Tensor::ones((2, 12), DType::F32, &dev).unwrap();
    let codes: Vec<u32> = (0..2 * 4 * 20)
        .map(|i| ((i * 611 + 7) % 2048) as u32)
        .collect();
    let codes = Tensor::from_vec(codes, (2, 4, 20), &dev).unwrap();
    let logits = |d: &Decoder| {
        let cross = d.cross_context(&states, &mask).unwrap();
        let out = d.forward(&codes, Some(&cross), None, None, &[]).unwrap();
        d.logits(&out.hidden).unwrap()
    };
    let a = logits(&decoder);
    pack(&mut decoder).unwrap();
    let b = logits(&decoder);
    compare(&a, &b)
}
