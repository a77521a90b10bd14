//! Shared by the probe tests: synthetic tones in three pitch classes, their features through the
//! tiny checkpoint, and a multiclass classifier trained on them with `baton train`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::audio::{write_wav, SampleFormat};
use baton::model::MusicGen;
use baton::probe::extract::pooled_clip;
use baton::probe::{FeatureSet, Labels, Pooling};

pub const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");
pub const CLASSES: [&str; 3] = ["low", "mid", "high"];

pub fn baton(args: &[&str]) -> std::process::Output {
    // BATON_BIN: a specific binary (when several checkouts share one target folder).
    let bin = std::env::var("BATON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_baton").into());
    Command::new(bin)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// A 0.2 s tone at 32 kHz.
pub fn tone(path: &Path, hz: f32, amp: f32) {
    let clip: Vec<f32> = (0..6400)
        .map(|i| (i as f32 / 32000.0 * hz * std::f32::consts::TAU).sin() * amp)
        .collect();
    write_wav(path, &clip, 32000, SampleFormat::Float32).unwrap();
}

/// Three tones per class; returns the clip paths and their class ids.
pub fn tones(dir: &Path) -> (Vec<PathBuf>, Vec<i64>) {
    let mut paths = Vec::new();
    let mut ids = Vec::new();
    for (c, hz) in [110.0f32, 440.0, 1760.0].iter().enumerate() {
        for k in 0..3 {
            let p = dir.join(format!("{}_{k}.wav", CLASSES[c]));
            tone(&p, hz * (1.0 + 0.03 * k as f32), 0.2 + 0.1 * k as f32);
            paths.push(p);
            ids.push(c as i64);
        }
    }
    (paths, ids)
}

/// Features of the clips at every block of the tiny model, as `baton features` writes them.
pub fn features(model: &MusicGen, clips: &[PathBuf], ids: Vec<i64>) -> FeatureSet {
    let layers: Vec<usize> = (0..model.num_layers()).collect();
    let mut rows: std::collections::BTreeMap<usize, Vec<f32>> = Default::default();
    for clip in clips {
        let pooled = pooled_clip(model, clip, &layers, Pooling::Mean).unwrap();
        for (l, v) in layers.iter().zip(pooled) {
            rows.entry(*l).or_default().extend(v);
        }
    }
    FeatureSet {
        concept: "tones".into(),
        model: "tiny-a".into(),
        pooling: "mean".into(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        n: clips.len(),
        hidden_size: model.hidden_size(),
        num_layers: Some(model.num_layers()),
        layers: rows,
        labels: Labels::Classes(ids),
        residual_norms: Default::default(),
    }
}

/// Trains the tones classifier into `lib/tones/all.safetensors` (and its
/// `all.classifier.safetensors`) from clips written in `dir`.
pub fn train_tone_classifier(model: &MusicGen, dir: &Path, lib: &Path) {
    let (clips, ids) = tones(dir);
    let feats = features(model, &clips, ids);
    let feats_path = dir.join("tones.features.safetensors");
    feats.write(&feats_path).unwrap();
    std::fs::create_dir_all(lib.join("tones")).unwrap();
    let bundle = lib.join("tones/all.safetensors");
    let f = feats_path.to_str().unwrap();
    let out = baton(&[
        "train",
        f,
        "--out",
        bundle.to_str().unwrap(),
        "--task",
        "multiclass",
        "--val",
        f,
        "--reg",
        "1e-3",
        "--bandwidth",
        "10",
        "--exponent",
        "1",
        "--iters",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
