//! CLAP on candle against transformers' ClapModel: two tiny random checkpoints
//! (tests/fixtures/clap/tiny-{a,b}, written by tests/reference/clap_reference.py) must give the
//! reference's token ids, log-mel input, text and audio embeddings (per 10 s window and for the
//! whole clip under baton's window-mean rule) and cosines within 1e-4.

use std::collections::HashMap;
use std::path::PathBuf;

use baton::eval::clap::{features, Clap, ClapScores};
use candle_core::{Device, Tensor};

const RATE: u32 = 48_000;
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clap")
        .join(name)
}

/// The reference script's clip_signal: two tones (one amplitude-modulated) and a chirp, 48 kHz.
fn clip_signal(seconds: f64) -> Vec<f32> {
    let n = (seconds * RATE as f64).round() as usize;
    let tau = 2.0 * std::f64::consts::PI;
    (0..n)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            (0.4 * (tau * 440.0 * t).sin()
                + 0.25 * (tau * 3100.0 * t + 0.5).sin() * (0.5 + 0.5 * (tau * 1.3 * t).sin())
                + 0.1 * (tau * (200.0 + 40.0 * t) * t).sin()) as f32
        })
        .collect()
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Reference {
    fn open(key: &str) -> Self {
        let path = fixture(&format!("reference-{key}.safetensors"));
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        Reference { tensors, meta }
    }

    fn vec(&self, name: &str) -> Vec<f32> {
        self.tensors[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    }

    fn rows(&self, name: &str) -> Vec<Vec<f32>> {
        self.tensors[name].to_vec2::<f32>().unwrap()
    }

    fn list<T: serde::de::DeserializeOwned>(&self, key: &str) -> Vec<T> {
        serde_json::from_str(&self.meta[key]).unwrap()
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{what}: max diff {worst:e}");
    assert!(
        worst <= tol,
        "{what}: max |diff| {worst:e} > {tol:e}\n got {got:?}\nwant {want:?}"
    );
}

fn check(key: &str) {
    let r = Reference::open(key);
    let clap = Clap::load(
        fixture(&format!("tiny-{key}")).to_str().unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let texts: Vec<String> = r.list("texts");
    let mut text_embs = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let want: Vec<i64> = r.tensors[&format!("text.{i}.ids")].to_vec1().unwrap();
        let got: Vec<i64> = clap
            .tokenize(text)
            .unwrap()
            .iter()
            .map(|&x| x as i64)
            .collect();
        assert_eq!(got, want, "{key}: ids of {text:?}");
        let e = clap.embed_text(text).unwrap();
        assert_close(
            &format!("{key}: text {text:?}"),
            &e,
            &r.vec(&format!("text.{i}.embedding")),
            TOL,
        );
        text_embs.push(e);
    }
    let clips: Vec<String> = r.list("clips");
    let seconds: Vec<f64> = r.list("clip_seconds");
    let mut clip_embs = Vec::new();
    for (name, &s) in clips.iter().zip(&seconds) {
        let x = clip_signal(s);
        let spans = features::windows(x.len(), clap.window_samples());
        let want_windows = r.rows(&format!("audio.{name}.windows"));
        assert_eq!(spans.len(), want_windows.len(), "{key}/{name}: windows");
        // The log-mel input itself (dB, so a looser bound in absolute terms).
        let mel = clap.features().log_mel(&x[spans[0].clone()]);
        let head = r.vec(&format!("audio.{name}.mel_head"));
        assert_close(
            &format!("{key}/{name}: mel"),
            &mel[..head.len()],
            &head,
            2e-3,
        );
        for (w, span) in spans.iter().enumerate() {
            let e = clap.embed_input(&x[span.clone()]).unwrap();
            assert_close(
                &format!("{key}/{name}: window {w}"),
                &e,
                &want_windows[w],
                TOL,
            );
        }
        let e = clap.embed_audio(&x, RATE).unwrap();
        assert_close(
            &format!("{key}/{name}: clip"),
            &e,
            &r.vec(&format!("audio.{name}.embedding")),
            TOL,
        );
        clip_embs.push(e);
    }
    let scores = ClapScores::new(clips.clone(), &clip_embs, texts.clone(), &text_embs);
    let want = r.rows("scores");
    for (c, row) in scores.scores.iter().enumerate() {
        assert_close(
            &format!("{key}: scores of {}", clips[c]),
            row,
            &want[c],
            TOL,
        );
    }
}

#[test]
fn tiny_a_matches_transformers() {
    check("a");
}

#[test]
fn tiny_b_matches_transformers() {
    check("b");
}

#[test]
fn other_rates_are_resampled_to_the_model_rate() {
    let clap = Clap::load(fixture("tiny-a").to_str().unwrap(), &Device::Cpu).unwrap();
    let at_16k: Vec<f32> = clip_signal(2.0).into_iter().step_by(3).collect();
    let direct = clap.embed_audio(&at_16k, 16_000).unwrap();
    let via = clap
        .embed_audio(&baton::audio::resample(&at_16k, 16_000, RATE), RATE)
        .unwrap();
    assert_eq!(direct, via);
    // Band-limited to 8 kHz, the clip still sounds like itself to the model.
    let full = clap.embed_audio(&clip_signal(2.0), RATE).unwrap();
    assert!(baton::eval::clap::cosine(&direct, &full) > 0.9);
    assert!(clap.embed_audio(&[], RATE).is_err());
    assert!(clap.embed_audio(&[0.1, f32::NAN], RATE).is_err());
    assert!(clap.embed_audio(&[0.1], 0).is_err());
    assert!(clap.embed_input(&[]).is_err());
    assert!(clap
        .embed_input(&vec![0.0; clap.window_samples() + 1])
        .is_err());
}

#[test]
fn pytorch_pickles_load_like_safetensors() {
    // laion's repositories publish pytorch_model.bin; the same weights must give the same numbers.
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json", "preprocessor_config.json"] {
        std::fs::copy(fixture("tiny-a").join(name), dir.path().join(name)).unwrap();
    }
    std::fs::copy(
        fixture("tiny-a.pytorch_model.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let clap = Clap::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
    let r = Reference::open("a");
    let texts: Vec<String> = r.list("texts");
    let e = clap.embed_text(&texts[0]).unwrap();
    assert_close("pth: text", &e, &r.vec("text.0.embedding"), TOL);
    let e = clap.embed_audio(&clip_signal(3.7), RATE).unwrap();
    assert_close("pth: short clip", &e, &r.vec("audio.short.embedding"), TOL);
}
