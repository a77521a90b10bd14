//! `probe(name).classify(wav)` in a recipe: a multiclass classifier trained here by `baton train`
//! (on capture-mode features of synthetic tones through the tiny checkpoint) labels a clip with
//! exactly the class and probabilities the RFM gives on the same pooled features; a probe without
//! a classifier is a clear error that says how to make one.

mod probe_support;
mod steer_common;

use std::path::Path;

use baton::audio::SampleFormat;
use baton::model::MusicGen;
use baton::probe::extract::pooled_clip;
use baton::probe::Pooling;
use baton::rfm::io::SavedProbe;
use baton::script::render::ModelRenderer;
use baton::script::{run_source, RecipeOptions};
use candle_core::{DType, Device};
use probe_support::{tone, train_tone_classifier, CLASSES, TINY};

fn run(src: &str, dir: &Path, lib: &Path) -> Result<Vec<String>, String> {
    let options = RecipeOptions {
        directions: lib.to_path_buf(),
        out_dir: dir.to_path_buf(),
        model_override: Some(TINY.into()),
        echo: false,
        ..RecipeOptions::default()
    };
    let renderer = ModelRenderer::new(
        Device::Cpu,
        baton::model::WeightFormat::Float(DType::F32),
        SampleFormat::Float32,
        false,
    );
    run_source("probe.rhai", src, dir, options, Box::new(renderer))
        .map(|o| o.printed)
        .map_err(steer_common::one_line)
}

#[test]
fn classify_matches_the_rfm_on_the_same_features() {
    let dir = tempfile::tempdir().unwrap();
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).unwrap();
    let lib = dir.path().join("lib");
    train_tone_classifier(&model, dir.path(), &lib);
    let saved = SavedProbe::read(&lib.join("tones/all.classifier.safetensors")).unwrap();
    assert_eq!(saved.classes, CLASSES);

    // A training clip (the kernel ridge fit nearly interpolates it) and an unseen tone.
    tone(&dir.path().join("unseen.wav"), 300.0, 0.25);
    for (clip, expect) in [("mid_1.wav", Some("mid")), ("unseen.wav", None)] {
        let src = format!(
            "let p = probe(\"tones:all\");\n\
             let c = p.classify(\"{clip}\");\n\
             print(c.class);\nprint(c.block);\n\
             for k in p.classes {{ print(c.probs[k]); }}\n\
             print(library());\n\
             print(`${{c.class}} (p = ${{c.probs[c.class]}})`);"
        );
        let printed = run(&src, dir.path(), &lib).unwrap_or_else(|e| panic!("{e}"));

        let h = pooled_clip(
            &model,
            &dir.path().join(clip),
            &[saved.layer],
            Pooling::Mean,
        )
        .unwrap()
        .remove(0);
        let x = faer::Mat::from_fn(1, h.len(), |_, j| f64::from(h[j]));
        let proba = saved.rfm.predict_proba(x.as_ref());
        let best = (0..3)
            .max_by(|&a, &b| proba[(0, a)].total_cmp(&proba[(0, b)]))
            .unwrap();
        assert_eq!(printed[0], CLASSES[best], "{clip}: {printed:?}");
        if let Some(e) = expect {
            assert_eq!(printed[0], e, "{clip}: {printed:?}");
        }
        assert_eq!(printed[1], saved.layer.to_string());
        let got: Vec<f64> = printed[2..5].iter().map(|s| s.parse().unwrap()).collect();
        for (k, g) in got.iter().enumerate() {
            assert!(
                (g - proba[(0, k)]).abs() < 1e-12,
                "{clip} {}: recipe {g}, rfm {}",
                CLASSES[k],
                proba[(0, k)]
            );
        }
        assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // The classifier file is not a direction of the library.
        assert_eq!(printed[5], "[\"tones:all\"]");
        assert_eq!(
            printed[6],
            format!("{} (p = {})", printed[0], printed[2 + best])
        );
    }

    // Naming the classifier file itself points at the bundle.
    let classifier = lib.join("tones/all.classifier.safetensors");
    let err = run(
        &format!("probe(\"{}\");", classifier.display()),
        dir.path(),
        &lib,
    )
    .unwrap_err();
    assert!(
        err.contains("is a classifier, not a direction bundle"),
        "{err}"
    );
}

#[test]
fn classify_without_a_classifier_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(lib.join("notes")).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/steer-direction.safetensors"
        ),
        lib.join("notes/C.safetensors"),
    )
    .unwrap();
    tone(&dir.path().join("clip.wav"), 440.0, 0.3);
    let err = run(
        "let p = probe(\"notes:C\");\nlet c = p.classify(\"clip.wav\");",
        dir.path(),
        &lib,
    )
    .unwrap_err();
    assert!(err.contains("has no classifier"), "{err}");
    assert!(err.contains("baton train"), "{err}");
    assert!(err.contains("--task multiclass"), "{err}");
    assert!(err.contains("C.classifier.safetensors"), "{err}");
    assert!(err.contains("probe.rhai:2"), "{err}");

    // Without a classifier the probe still has its scores; .classes is empty.
    let printed = run(
        "let p = probe(\"notes:C\");\nprint(p.classes.len());\nprint(p.best_block);",
        dir.path(),
        &lib,
    )
    .unwrap();
    assert_eq!(printed, ["0", "2"]);
}
