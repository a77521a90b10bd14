//! Parity of baton's MusicGen decoder and generation with Hugging Face transformers, on the tiny
//! random checkpoints in tests/fixtures (written by tests/reference/musicgen_reference.py).
//!
//! The decoder-level tests feed the reference's projected text states straight into the decoder,
//! so they check the decoder and generation loop alone; the `MusicGen` tests load the fixture
//! folders the way a user does and go through tokenizer, T5, decoder and EnCodec.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use baton::model::decoder::Decoder;
use baton::model::generate::{self, GenerationInputs};
use baton::model::load::{self, SafetensorsFiles, Weights};
use baton::model::{GenerateOptions, MusicGen, MusicGenConfig, Sampling};
use candle_core::{DType, Device, Tensor};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(format!("reference-{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).expect("reference fixture")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let d = max_diff(got, want);
    assert!(d < TOL, "{what}: max abs diff {d} >= {TOL}");
}

fn codes_vec(t: &Tensor) -> Vec<Vec<Vec<i64>>> {
    t.to_dtype(DType::I64).unwrap().to_vec3().unwrap()
}

struct Tiny {
    config: MusicGenConfig,
    decoder: Decoder,
    reference: HashMap<String, Tensor>,
}

fn tiny(name: &str) -> Tiny {
    tiny_in(name, DType::F32, DType::F32)
}

/// The tiny decoder with weights stored in `weights` and hidden states in `activations`, every
/// weight read into memory.
fn tiny_in(name: &str, weights: DType, activations: DType) -> Tiny {
    tiny_with(name, weights, activations, false)
}

/// The tiny f32 decoder with its products' weights used in place from the file's memory map.
fn tiny_in_place(name: &str) -> Tiny {
    let t = tiny_with(name, DType::F32, DType::F32, true);
    assert!(t.decoder.mapped_bytes() > 0, "no weight was used in place");
    t
}

fn tiny_with(name: &str, weights: DType, activations: DType, in_place: bool) -> Tiny {
    let files = load::resolve(fixtures().join(format!("tiny-{name}")).to_str().unwrap()).unwrap();
    let config =
        MusicGenConfig::from_json(&std::fs::read_to_string(&files.config).unwrap()).unwrap();
    let files = Arc::new(SafetensorsFiles::open(&files.weights).unwrap());
    let vb = files.var_builder(weights, &Device::Cpu).pp("decoder");
    let mapping = Weights::Safetensors(files.clone());
    let decoder = Decoder::load_with_activations(
        &config.decoder,
        vb,
        activations,
        in_place.then_some(&mapping),
    )
    .unwrap();
    if !in_place {
        assert_eq!(decoder.mapped_bytes(), 0);
    }
    Tiny {
        config,
        decoder,
        reference: reference(name),
    }
}

impl Tiny {
    fn r(&self, key: &str) -> &Tensor {
        self.reference
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
    }

    fn mask(&self) -> Tensor {
        self.r("text.attention_mask").to_dtype(DType::F32).unwrap()
    }

    fn generate(&self, scale: f64, sampling: Sampling, seed: u64) -> Tensor {
        let k = self.config.decoder.num_codebooks;
        let frames = self.r("gen.cfg3.codes").dim(2).unwrap();
        let (states, mask) = (self.r("t5.projected").clone(), self.mask());
        let guided = scale > 1.0;
        let (states, mask) = if guided {
            (
                Tensor::cat(&[&states, &states.zeros_like().unwrap()], 0).unwrap(),
                Tensor::cat(&[&mask, &mask.zeros_like().unwrap()], 0).unwrap(),
            )
        } else {
            (states, mask)
        };
        let cross = self.decoder.cross_context(&states, &mask).unwrap();
        let pad = self.config.decoder.vocab_size as i64;
        let inputs = GenerationInputs {
            cross: &cross,
            batch: 2,
            guided,
            pad,
            bos: pad,
            prefix: None,
            prompt: None,
            first_step: 0,
        };
        let options = GenerateOptions {
            max_new_tokens: frames + k - 1,
            sampling,
            guidance_scale: scale,
            seed,
            negative_prompt: None,
        };
        let mut rngs = generate::seeded_rngs(seed, 2);
        generate::generate(
            &self.decoder,
            &inputs,
            &options,
            None,
            &mut |_, _| {},
            &mut rngs,
        )
        .unwrap()
    }
}

fn teacher_forced_matches(name: &str) {
    teacher_forced_matches_on(name, &tiny(name));
}

fn teacher_forced_matches_on(name: &str, t: &Tiny) {
    let layers: Vec<usize> = (0..t.config.decoder.num_hidden_layers).collect();
    let cross = t
        .decoder
        .cross_context(t.r("t5.projected"), &t.mask())
        .unwrap();
    let out = t
        .decoder
        .forward(t.r("tf.codes"), Some(&cross), None, None, &layers)
        .unwrap();
    for (l, block) in out.captured.iter().enumerate() {
        assert_close(
            &format!("{name} tf.block.{l}"),
            block,
            t.r(&format!("tf.block.{l}")),
        );
    }
    assert_close(
        &format!("{name} final_norm"),
        &out.hidden,
        t.r("tf.final_norm"),
    );
    let logits = t.decoder.logits(&out.hidden).unwrap();
    assert_close(&format!("{name} tf.logits"), &logits, t.r("tf.logits"));

    // Capture mode: no text conditioning at all.
    let out = t
        .decoder
        .forward(t.r("tf.codes"), None, None, None, &layers)
        .unwrap();
    for (l, block) in out.captured.iter().enumerate() {
        let key = format!("capture.block.{l}");
        assert_close(&format!("{name} {key}"), block, t.r(&key));
    }
    let logits = t.decoder.logits(&out.hidden).unwrap();
    assert_close(
        &format!("{name} capture.logits"),
        &logits,
        t.r("capture.logits"),
    );
}

#[test]
fn decoder_teacher_forced_matches_hf_a() {
    teacher_forced_matches("a");
}

#[test]
fn decoder_teacher_forced_matches_hf_b() {
    teacher_forced_matches("b");
}

#[test]
fn cached_steps_match_one_full_pass() {
    // Feeding tokens one at a time through the KV cache must give the full pass's states.
    let t = tiny("a");
    let codes = t.r("tf.codes");
    let cross = t
        .decoder
        .cross_context(t.r("t5.projected"), &t.mask())
        .unwrap();
    let n = codes.dim(2).unwrap();
    let mut cache = t.decoder.new_cache(2, n).unwrap();
    let mut steps = Vec::new();
    for i in 0..n {
        let step = codes.narrow(2, i, 1).unwrap();
        let out = t
            .decoder
            .forward(&step, Some(&cross), Some(&mut cache), None, &[])
            .unwrap();
        steps.push(out.hidden);
    }
    let stepped = Tensor::cat(&steps, 1).unwrap();
    assert_close("cached steps", &stepped, t.r("tf.final_norm"));
}

fn greedy_matches(name: &str) {
    greedy_matches_on(name, &tiny(name));
}

fn greedy_matches_on(name: &str, t: &Tiny) {
    for (scale, key) in [(3.0, "gen.cfg3.codes"), (1.0, "gen.cfg1.codes")] {
        let got = t.generate(scale, Sampling::Greedy, 0);
        assert_eq!(
            codes_vec(&got),
            codes_vec(t.r(key)),
            "{name}: greedy codes with guidance {scale} differ from HF"
        );
    }
}

#[test]
fn greedy_generation_matches_hf_a() {
    greedy_matches("a");
}

#[test]
fn greedy_generation_matches_hf_b() {
    greedy_matches("b");
}

#[test]
fn weights_used_in_place_match_hf() {
    // The mapped store: step products over the map, a teacher-forced pass through gemm, the
    // query scale on the output and k/v as two parts.
    for name in ["a", "b"] {
        let t = tiny_in_place(name);
        teacher_forced_matches_on(name, &t);
        greedy_matches_on(name, &t);
    }
}

#[test]
fn seeded_top_k_is_reproducible_and_stays_in_top_k() {
    let t = tiny("a");
    let k = 3;
    let sampling = Sampling::TopK {
        k,
        temperature: 1.5,
    };
    let a = codes_vec(&t.generate(1.0, sampling, 11));
    assert_eq!(
        a,
        codes_vec(&t.generate(1.0, sampling, 11)),
        "same seed, other codes"
    );
    let others: Vec<_> = (12..16)
        .map(|s| codes_vec(&t.generate(1.0, sampling, s)))
        .collect();
    assert!(others.iter().any(|o| *o != a), "seed has no effect");

    // Rebuild the delay-patterned sequence each row was generated as, run it teacher-forced
    // with the same text, and check every sampled token against that step's logits.
    let kb = t.config.decoder.num_codebooks;
    let pad = t.config.decoder.vocab_size as i64;
    let frames = a[0][0].len();
    let len = frames + kb; // BOS + max_new_tokens
    let (_, pattern) = generate::build_delay_pattern(&vec![vec![pad]; kb], pad, len);
    let mut seq = vec![vec![vec![pad; len]; kb]; 2];
    for (b, item) in seq.iter_mut().enumerate() {
        for (cb, row) in item.iter_mut().enumerate() {
            for (p, slot) in row.iter_mut().enumerate() {
                if pattern[cb][p] == generate::FREE {
                    *slot = a[b][cb][p - cb - 1];
                }
            }
        }
    }
    let flat: Vec<i64> = seq.iter().flatten().flatten().copied().collect();
    let codes = Tensor::from_vec(flat, (2, kb, len), &Device::Cpu).unwrap();
    let cross = t
        .decoder
        .cross_context(t.r("t5.projected"), &t.mask())
        .unwrap();
    let out = t
        .decoder
        .forward(&codes, Some(&cross), None, None, &[])
        .unwrap();
    let logits = t.decoder.logits(&out.hidden).unwrap();
    let (_, cbs, ps, vocab) = logits.dims4().unwrap();
    let logits: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let at = |b: usize, cb: usize, p: usize| {
        let start = ((b * cbs + cb) * ps + p) * vocab;
        logits[start..start + vocab].to_vec()
    };
    let mut checked = 0;
    for (b, item) in seq.iter().enumerate() {
        for (cb, row) in item.iter().enumerate() {
            for p in 1..len {
                if pattern[cb][p] != generate::FREE {
                    continue;
                }
                let scores = at(b, cb, p - 1);
                let mut sorted = scores.clone();
                sorted.sort_by(|x, y| y.total_cmp(x));
                let token = row[p] as usize;
                assert!(
                    scores[token] >= sorted[k - 1],
                    "row {b} codebook {cb} position {p}: token {token} is outside the top {k}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * kb * frames);
}

fn load_tiny(name: &str) -> MusicGen {
    let dir = fixtures().join(format!("tiny-{name}"));
    MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).expect("load tiny model")
}

fn prompts(name: &str) -> Vec<String> {
    let meta = safetensors_meta(&fixtures().join(format!("reference-{name}.safetensors")));
    serde_json::from_str(&meta["prompts"]).unwrap()
}

fn safetensors_meta(path: &std::path::Path) -> HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().clone().unwrap_or_default()
}

fn end_to_end(name: &str) {
    let model = load_tiny(name);
    let r = reference(name);
    let prompts = prompts(name);
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let layers: Vec<usize> = (0..model.num_layers()).collect();

    let tf = model
        .teacher_forced(Some(&prompts), &r["tf.codes"], &layers)
        .unwrap();
    for (l, block) in tf.blocks.iter().enumerate() {
        assert_close(
            &format!("{name} tf.block.{l}"),
            block,
            &r[&format!("tf.block.{l}")],
        );
    }
    assert_close(&format!("{name} tf.logits"), &tf.logits, &r["tf.logits"]);
    let captured = model.capture(&r["tf.codes"], &layers).unwrap();
    for (l, block) in captured.iter().enumerate() {
        let key = format!("capture.block.{l}");
        assert_close(&format!("{name} {key}"), block, &r[&key]);
    }

    let k = model.num_codebooks();
    for (scale, tag) in [(3.0, "cfg3"), (1.0, "cfg1")] {
        let want = &r[&format!("gen.{tag}.codes")];
        let options = GenerateOptions {
            max_new_tokens: want.dim(2).unwrap() + k - 1,
            sampling: Sampling::Greedy,
            guidance_scale: scale,
            seed: 0,
            negative_prompt: None,
        };
        let mut steps = 0;
        let codes = model
            .generate(&prompts, &options, None, &mut |done, _| steps = done)
            .unwrap();
        assert_eq!(steps, options.max_new_tokens);
        assert_eq!(codes_vec(&codes), codes_vec(want), "{name} {tag} codes");
        let audio = model.decode(&codes).unwrap();
        let want_audio = &r[&format!("gen.{tag}.audio")];
        for (b, wave) in audio.iter().enumerate() {
            let got = Tensor::new(wave.as_slice(), &Device::Cpu).unwrap();
            assert_close(
                &format!("{name} {tag} audio {b}"),
                &got,
                &want_audio.get(b).unwrap(),
            );
        }
    }
}

#[test]
fn musicgen_end_to_end_matches_hf_a() {
    end_to_end("a");
}

#[test]
fn musicgen_end_to_end_matches_hf_b() {
    end_to_end("b");
}

#[test]
fn bf16_weights_stay_close_to_f32() {
    // bf16 storage keeps ~3 significant digits per weight; logits must stay near the f32 ones
    // and the activations f32.
    let dir = fixtures().join("tiny-a");
    let model = MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::BF16).unwrap();
    assert_eq!(model.dtype(), DType::BF16);
    let r = reference("a");
    let tf = model.teacher_forced(None, &r["tf.codes"], &[0]).unwrap();
    assert_eq!(tf.blocks[0].dtype(), DType::F32);
    let d = max_diff(&tf.logits, &r["capture.logits"]);
    let scale = max_diff(
        &r["capture.logits"],
        &r["capture.logits"].zeros_like().unwrap(),
    );
    assert!(
        d < 0.05 * scale,
        "bf16 logits differ by {d} (scale {scale})"
    );
    assert!(d > 0.0, "bf16 weights were not used");

    // Generation steps take the bf16 matrix-vector path (bf16 products where the CPU has
    // AVX-512 BF16, else widened to f32); f16 falls back to widening. Greedy tokens follow f32's
    // at most steps: measured 119 of 128 with bf16 products, 120 of 128 widened (a flipped
    // near-tie sends the rest of a piece down another path).
    let options = GenerateOptions {
        max_new_tokens: 16 + 3,
        sampling: Sampling::Greedy,
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };
    let prompts = ["a calm piano melody with soft strings", "loud drums"];
    let codes = model
        .generate(&prompts, &options, None, &mut |_, _| {})
        .unwrap();
    assert_eq!(codes.dims(), &[2, 4, 16]);
    let f32_model = MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let f32_codes = f32_model
        .generate(&prompts, &options, None, &mut |_, _| {})
        .unwrap();
    let (a, b) = (
        codes.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
        f32_codes.flatten_all().unwrap().to_vec1::<i64>().unwrap(),
    );
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    eprintln!("bf16 greedy tokens: {same} of {} equal f32's", a.len());
    assert!(
        same * 10 >= a.len() * 8,
        "bf16 greedy tokens: {same} of {} equal f32's",
        a.len()
    );
    let f16 = MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F16).unwrap();
    let codes = f16
        .generate(&["a"], &options, None, &mut |_, _| {})
        .unwrap();
    assert_eq!(codes.dims(), &[1, 4, 16]);
}

#[test]
fn cross_mask_is_dropped_only_where_it_changes_nothing() {
    // The fixture's first prompt fills its row and the second is padded. A batch of the first
    // prompt and an all-masked (unconditional) row mixes no text with padding, so its context
    // drops the mask; those two rows must come out as in the padded batch, which keeps it. The
    // unconditional row gets non-zero states here: cross_context must zero them.
    let t = tiny("a");
    let (states, mask) = (t.r("t5.projected"), t.mask());
    let full: Vec<f32> = mask.get(0).unwrap().to_vec1().unwrap();
    assert!(full.iter().all(|&m| m == 1.0), "prompt 1 is padded");
    let row = |x: &Tensor, i: usize| x.narrow(0, i, 1).unwrap();
    let noise = Tensor::randn(0f32, 1., row(states, 0).shape(), &Device::Cpu).unwrap();
    let zero = row(states, 0).zeros_like().unwrap();
    let no_text = row(&mask, 0).zeros_like().unwrap();
    let codes = t.r("tf.codes");
    let logits = |states: &[&Tensor], mask: &[&Tensor], codes: &[&Tensor]| {
        let cross = t
            .decoder
            .cross_context(
                &Tensor::cat(states, 0).unwrap(),
                &Tensor::cat(mask, 0).unwrap(),
            )
            .unwrap();
        let codes = Tensor::cat(codes, 0).unwrap();
        let out = t
            .decoder
            .forward(&codes, Some(&cross), None, None, &[])
            .unwrap();
        t.decoder.logits(&out.hidden).unwrap()
    };
    let (s0, s1, m0, m1) = (row(states, 0), row(states, 1), row(&mask, 0), row(&mask, 1));
    let (c0, c1) = (row(codes, 0), row(codes, 1));
    let kept = logits(&[&s0, &s1, &zero], &[&m0, &m1, &no_text], &[&c0, &c1, &c0]);
    let dropped = logits(&[&s0, &noise], &[&m0, &no_text], &[&c0, &c0]);
    assert_close("text row", &row(&dropped, 0), &row(&kept, 0));
    assert_close("unconditional row", &row(&dropped, 1), &row(&kept, 2));
}

#[test]
fn half_precision_activations_stay_close_to_f32() {
    // The accelerators' half-precision layout (weights, norms, hidden states and caches all in
    // bf16 or f16, as transformers' `.to(dtype)`), run on the CPU.
    let f32_codes = codes_vec(&tiny("a").generate(3.0, Sampling::Greedy, 0));
    for dtype in [DType::BF16, DType::F16] {
        let t = tiny_in("a", dtype, dtype);
        assert_eq!(t.decoder.activations(), dtype);
        // Two prompts of different lengths and the all-masked unconditional rows: the padding
        // mask must stay finite in the half dtype, or the unconditional rows turn to NaN.
        let states = t.r("t5.projected");
        let states = Tensor::cat(&[states, &states.zeros_like().unwrap()], 0).unwrap();
        let mask = Tensor::cat(&[t.mask(), t.mask().zeros_like().unwrap()], 0).unwrap();
        let cross = t.decoder.cross_context(&states, &mask).unwrap();
        let codes = t.r("tf.codes");
        let codes = Tensor::cat(&[codes, codes], 0).unwrap();
        let out = t
            .decoder
            .forward(&codes, Some(&cross), None, None, &[0])
            .unwrap();
        assert_eq!(out.captured[0].dtype(), DType::F32);
        let logits = t.decoder.logits(&out.hidden).unwrap();
        assert_eq!(logits.dtype(), DType::F32);
        let all: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            all.iter().all(|v| v.is_finite()),
            "{dtype:?}: non-finite logits"
        );
        let want = t.r("tf.logits");
        let got = logits.narrow(0, 0, want.dim(0).unwrap()).unwrap();
        let d = max_diff(&got, want);
        let scale = max_diff(want, &want.zeros_like().unwrap());
        assert!(
            d < 0.05 * scale,
            "{dtype:?}: logits differ by {d} (scale {scale})"
        );

        let codes = codes_vec(&t.generate(3.0, Sampling::Greedy, 0));
        let same = codes
            .iter()
            .flatten()
            .flatten()
            .zip(f32_codes.iter().flatten().flatten())
            .filter(|(a, b)| a == b)
            .count();
        let total = codes.iter().flatten().flatten().count();
        // Rounding may flip a near-tie, and later steps follow the flipped token; measured: 59
        // of 64 equal in bf16, 64 of 64 in f16.
        assert!(
            2 * same > total,
            "{dtype:?}: only {same} of {total} tokens equal f32's"
        );
    }
}

/// Adds the same vector to every listed block at every step.
struct ConstantHook {
    offsets: Vec<Option<Tensor>>,
    steps_seen: Vec<usize>,
    cond_only: bool,
}

impl baton::model::ResidualHook for ConstantHook {
    fn offsets(&mut self, step: usize, _batch: usize) -> candle_core::Result<&[Option<Tensor>]> {
        self.steps_seen.push(step);
        Ok(&self.offsets)
    }

    fn conditional_only(&self) -> bool {
        self.cond_only
    }
}

#[test]
fn residual_hook_steers_generation() {
    let model = load_tiny("a");
    let r = reference("a");
    let prompts = prompts("a");
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let want = codes_vec(&r["gen.cfg3.codes"]);
    let options = GenerateOptions {
        max_new_tokens: want[0][0].len() + model.num_codebooks() - 1,
        sampling: Sampling::Greedy,
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };
    let hidden = model.hidden_size();
    let hook_with = |v: Option<Tensor>, cond_only| ConstantHook {
        offsets: (0..model.num_layers())
            .map(|l| if l == 1 { v.clone() } else { None })
            .collect(),
        steps_seen: Vec::new(),
        cond_only,
    };
    // A zero offset changes nothing, and the hook is asked once per step, in order.
    let mut zero = hook_with(
        Some(Tensor::zeros(hidden, DType::F32, &Device::Cpu).unwrap()),
        false,
    );
    let codes = model
        .generate(&prompts, &options, Some(&mut zero), &mut |_, _| {})
        .unwrap();
    assert_eq!(codes_vec(&codes), want);
    assert_eq!(
        zero.steps_seen,
        (0..options.max_new_tokens).collect::<Vec<_>>()
    );
    // A large offset on block 1 moves the music, on both halves or the conditional one only.
    // (Zero-mean: a constant vector would vanish in the next LayerNorm.)
    let pattern: Vec<f32> = (0..hidden)
        .map(|i| if i % 3 == 0 { 8.0 } else { -4.0 })
        .collect();
    let big = Tensor::from_vec(pattern, hidden, &Device::Cpu).unwrap();
    let mut both = hook_with(Some(big.clone()), false);
    let steered = codes_vec(
        &model
            .generate(&prompts, &options, Some(&mut both), &mut |_, _| {})
            .unwrap(),
    );
    assert_ne!(steered, want);
    let mut cond = hook_with(Some(big), true);
    let cond_steered = codes_vec(
        &model
            .generate(&prompts, &options, Some(&mut cond), &mut |_, _| {})
            .unwrap(),
    );
    assert_ne!(cond_steered, want);
    assert_ne!(cond_steered, steered);
}
