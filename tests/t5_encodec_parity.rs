//! Parity of baton's tokenizer, T5 encoder and EnCodec with Hugging Face transformers.
//!
//! The fixtures come from `tests/reference/musicgen_reference.py`: two tiny random MusicGen
//! checkpoints laid out as a user has them (`tests/fixtures/tiny-{a,b}/`) and the reference
//! outputs transformers computed from those folders (`tests/fixtures/reference-{a,b}.safetensors`).
//! Checkpoint A stores weight norm as `weight_g`/`weight_v`, B as
//! `parametrizations.weight.original0/1`, so every EnCodec test runs on both layouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use baton::model::encodec::{Encodec, EncodecConfig};
use baton::model::t5::{relative_position_bucket, T5Config, T5EncoderModel};
use baton::model::text::TextTokenizer;
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::VarBuilder;

const TOL: f32 = 1e-4;

struct Fixture {
    dir: PathBuf,
    config: serde_json::Value,
    reference: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let dir = root.join(format!("tiny-{name}"));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let ref_path = root.join(format!("reference-{name}.safetensors"));
        let reference = candle_core::safetensors::load(&ref_path, &Device::Cpu).unwrap();
        let bytes = std::fs::read(&ref_path).unwrap();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = metadata.metadata().clone().unwrap_or_default();
        Fixture {
            dir,
            config,
            reference,
            meta,
        }
    }

    fn vb(&self) -> VarBuilder<'static> {
        // SAFETY: the fixture file is not modified while the test runs.
        unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[self.dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
            .unwrap()
        }
    }

    fn get(&self, key: &str) -> &Tensor {
        self.reference
            .get(key)
            .unwrap_or_else(|| panic!("reference tensor {key} missing"))
    }

    fn prompts(&self) -> Vec<String> {
        serde_json::from_str(&self.meta["prompts"]).unwrap()
    }

    fn t5(&self) -> T5EncoderModel {
        let cfg: T5Config = serde_json::from_value(self.config["text_encoder"].clone()).unwrap();
        T5EncoderModel::load(self.vb().pp("text_encoder"), &cfg).unwrap()
    }

    fn encodec(&self) -> Encodec {
        let cfg: EncodecConfig =
            serde_json::from_value(self.config["audio_encoder"].clone()).unwrap();
        Encodec::load(self.vb().pp("audio_encoder"), &cfg).unwrap()
    }
}

/// Largest violation of `|a - b| <= TOL * max(1, |b|)`, reported with its position.
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "{what}: shape {:?} vs reference {:?}",
        actual.dims(),
        expected.dims()
    );
    let a = actual
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut worst = (0.0f32, 0usize);
    // NaN counts as the worst possible error
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let excess = (x - y).abs() / y.abs().max(1.0);
        if excess.is_nan() || excess > worst.0 {
            worst = (excess, i);
        }
    }
    assert!(
        worst.0 <= TOL,
        "{what}: element {} is {} but reference is {} (scaled error {})",
        worst.1,
        a[worst.1],
        b[worst.1],
        worst.0
    );
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
}

fn tokenizer_matches(name: &str) {
    let fx = Fixture::load(name);
    let tok = TextTokenizer::from_file(fx.dir.join("tokenizer.json")).unwrap();
    let prompts = fx.prompts();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let batch = tok.encode_batch(&refs).unwrap();
    let ids = batch.ids_tensor(&Device::Cpu).unwrap();
    let mask = batch.mask_tensor(&Device::Cpu).unwrap();
    assert_eq!(ids.dims(), fx.get("text.input_ids").dims());
    assert_eq!(ints(&ids), ints(fx.get("text.input_ids")), "token ids");
    assert_eq!(ints(&mask), ints(fx.get("text.attention_mask")), "mask");
    assert_eq!(tok.pad_id(), 0);
    assert_eq!(tok.eos_id(), 1);
}

#[test]
fn tokenizer_matches_hf_a() {
    tokenizer_matches("a");
}

#[test]
fn tokenizer_matches_hf_b() {
    tokenizer_matches("b");
}

fn t5_matches(name: &str) {
    let fx = Fixture::load(name);
    let t5 = fx.t5();
    let ids = fx.get("text.input_ids");
    let mask = fx.get("text.attention_mask");
    let states = t5.forward(ids, mask).unwrap();
    assert_close(
        &format!("{name}: T5 last_hidden_state"),
        &states,
        fx.get("t5.last_hidden_state"),
    );

    // The projection into the decoder's width, with padded positions zeroed, as MusicGen does.
    let vb = fx.vb().pp("enc_to_dec_proj");
    let d_text = t5.config().d_model;
    let d_dec = fx.config["decoder"]["hidden_size"].as_u64().unwrap() as usize;
    let proj = candle_nn::Linear::new(
        vb.get((d_dec, d_text), "weight").unwrap(),
        Some(vb.get(d_dec, "bias").unwrap()),
    );
    let mask_f = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    let projected = proj
        .forward(&states)
        .unwrap()
        .broadcast_mul(&mask_f)
        .unwrap();
    assert_close(
        &format!("{name}: projected"),
        &projected,
        fx.get("t5.projected"),
    );

    // Masking: the short prompt alone, unpadded, gives the states it has inside the batch.
    let len = ints(&mask.i(1).unwrap())
        .iter()
        .filter(|&&m| m == 1)
        .count();
    let alone_ids = ids.i((1..2, 0..len)).unwrap();
    let alone_mask = mask.i((1..2, 0..len)).unwrap();
    let alone = t5.forward(&alone_ids, &alone_mask).unwrap();
    assert_close(
        &format!("{name}: short prompt alone vs in padded batch"),
        &alone,
        &fx.get("t5.last_hidden_state").i((1..2, 0..len)).unwrap(),
    );
}

#[test]
fn t5_matches_hf_a_relu() {
    t5_matches("a");
}

#[test]
fn t5_matches_hf_b_gated_gelu() {
    t5_matches("b");
}

#[test]
fn relative_buckets_match_t5_rules() {
    // Values from HF's _relative_position_bucket (bidirectional, 32 buckets, max distance 128).
    let cases = [
        (0, 0),
        (1, 17),
        (-1, 1),
        (7, 23),
        (-7, 7),
        (8, 24),
        (-8, 8),
        (12, 25),
        (-20, 10),
        (64, 30),
        (127, 31),
        (500, 31),
        (-500, 15),
    ];
    for (rel, bucket) in cases {
        assert_eq!(
            relative_position_bucket(rel, 32, 128),
            bucket,
            "relative {rel}"
        );
    }
}

fn encodec_encode_matches(name: &str) {
    let fx = Fixture::load(name);
    let codec = fx.encodec();
    let k = codec.num_codebooks();
    let input = fx.get("encodec.input").unsqueeze(1).unwrap();
    let latent = codec.encode_latent(&input).unwrap();
    assert_close(
        &format!("{name}: encoder latent"),
        &latent,
        fx.get("encodec.embeddings"),
    );
    for (inp, out) in [
        ("encodec.input", "encodec.codes"),
        ("encodec.odd_input", "encodec.odd_codes"),
        ("encodec.short_input", "encodec.short_codes"),
    ] {
        let audio = fx.get(inp).unsqueeze(1).unwrap();
        let codes = codec.encode(&audio, k).unwrap();
        assert_eq!(codes.dims(), fx.get(out).dims(), "{name}: {out} shape");
        assert_eq!(ints(&codes), ints(fx.get(out)), "{name}: {out}");
    }
}

#[test]
fn encodec_encode_matches_hf_a_weight_g() {
    encodec_encode_matches("a");
}

#[test]
fn encodec_encode_matches_hf_b_parametrizations() {
    encodec_encode_matches("b");
}

fn encodec_decode_matches(name: &str) {
    let fx = Fixture::load(name);
    let codec = fx.encodec();
    let hop: usize = fx.meta["samples_per_frame"].parse().unwrap();
    assert_eq!(codec.hop_length(), hop);
    for (codes, audio) in [
        ("encodec.codes", "encodec.decoded"),
        ("gen.cfg3.codes", "gen.cfg3.audio"),
        ("gen.cfg1.codes", "gen.cfg1.audio"),
    ] {
        let codes = fx.get(codes);
        let frames = codes.dim(2).unwrap();
        let decoded = codec.decode(codes).unwrap();
        assert_eq!(
            decoded.dims()[2],
            frames * hop,
            "{name}: frames * hop samples"
        );
        assert_close(
            &format!("{name}: decode of {codes:?}"),
            &decoded.squeeze(1).unwrap(),
            fx.get(audio),
        );
    }
}

#[test]
fn encodec_decode_matches_hf_a_weight_g() {
    encodec_decode_matches("a");
}

#[test]
fn encodec_decode_matches_hf_b_parametrizations() {
    encodec_decode_matches("b");
}

#[test]
fn fixtures_cover_both_weight_norm_layouts() {
    let keys = |name: &str| -> Vec<String> {
        let fx = Fixture::load(name);
        let bytes = std::fs::read(fx.dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(str::to_string).collect()
    };
    let a = keys("a");
    let b = keys("b");
    assert!(a.iter().any(|k| k.ends_with("conv.weight_g")));
    assert!(!a.iter().any(|k| k.contains("parametrizations")));
    assert!(b
        .iter()
        .any(|k| k.ends_with("parametrizations.weight.original0")));
    assert!(!b.iter().any(|k| k.ends_with("weight_g")));
}

#[test]
fn encodec_rejects_bad_input() {
    let fx = Fixture::load("a");
    let codec = fx.encodec();
    let k = codec.num_codebooks();
    let empty = Tensor::zeros((1, 1, 0), DType::F32, &Device::Cpu).unwrap();
    assert!(codec.encode(&empty, k).is_err());
    let audio = Tensor::zeros((1, 1, 640), DType::F32, &Device::Cpu).unwrap();
    assert!(codec.encode(&audio, k + 1).is_err());
    let bad = Tensor::new(&[[[64i64]]], &Device::Cpu).unwrap();
    assert!(codec.decode(&bad).is_err());
}
