//! Every recipe in scripts/ runs: parsed, evaluated under the sandbox, its pieces rendered by a
//! dry-run renderer (plans sampled at 50 Hz) against a library of small random bundles shaped
//! like the tiny checkpoint; and, with the tiny checkpoint itself, through real generation.

mod steer_common;

use std::path::PathBuf;

use baton::script::{run_file, DryRun, RecipeOptions};

fn recipes() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    v.sort();
    v
}

#[test]
fn at_least_six_recipes() {
    assert!(recipes().len() >= 6, "{:?}", recipes());
}

#[test]
fn every_recipe_runs_dry() {
    let lib = steer_common::library(32, 3);
    for recipe in recipes() {
        let out = tempfile::tempdir().unwrap();
        let options = RecipeOptions {
            directions: lib.path().to_path_buf(),
            out_dir: out.path().to_path_buf(),
            echo: false,
            ..RecipeOptions::default()
        };
        let dry = DryRun::default();
        let outcome = match run_file(&recipe, options, Box::new(dry.clone())) {
            Ok(r) => r,
            Err(e) => panic!("{}: {:?}", recipe.display(), miette::Report::new(*e)),
        };
        let dry = dry.log();
        assert!(
            !dry.requests.is_empty(),
            "{} renders nothing",
            recipe.display()
        );
        for (req, coef) in dry.requests.iter().zip(&dry.coefficients) {
            assert!(req.out.starts_with(out.path()));
            assert!(
                !req.plan.terms.is_empty(),
                "{} steers nothing",
                recipe.display()
            );
            // Every term must steer at some step, or the recipe shows nothing.
            for (m, c) in coef.iter().enumerate() {
                assert!(
                    c.iter().any(|x| *x != 0.0),
                    "{}: term {m} is zero throughout",
                    recipe.display()
                );
            }
        }
        assert!(outcome.written.len() >= dry.requests.len());
    }
}

#[test]
fn every_recipe_renders_on_the_tiny_checkpoint() {
    use baton::audio::SampleFormat;
    use baton::script::render::ModelRenderer;
    use candle_core::{DType, Device};

    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");
    let lib = steer_common::library(32, 3);
    for recipe in recipes() {
        let out = tempfile::tempdir().unwrap();
        let options = RecipeOptions {
            directions: lib.path().to_path_buf(),
            out_dir: out.path().to_path_buf(),
            model_override: Some(tiny.into()),
            seconds_override: Some(0.12),
            greedy: true,
            echo: false,
            ..RecipeOptions::default()
        };
        let renderer = ModelRenderer::new(
            Device::Cpu,
            baton::model::WeightFormat::Float(DType::F32),
            SampleFormat::Float32,
            false,
        );
        let outcome = match run_file(&recipe, options, Box::new(renderer)) {
            Ok(r) => r,
            Err(e) => panic!("{}: {:?}", recipe.display(), miette::Report::new(*e)),
        };
        let wavs: Vec<_> = outcome
            .written
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        assert!(!wavs.is_empty(), "{}", recipe.display());
        for wav in wavs {
            let (samples, rate) = baton::audio::read_wav_mono(wav).unwrap();
            assert_eq!(rate, 32000);
            // 0.12 s = 6 frames of 640 samples at 50 Hz.
            assert_eq!(samples.len(), 6 * 640, "{}", wav.display());
            assert!(samples.iter().all(|s| s.is_finite()));
        }
    }
}

#[test]
fn probes_project_audio_onto_their_direction() {
    use baton::audio::{write_wav, SampleFormat};
    use baton::model::MusicGen;
    use baton::probe::extract::pooled_clip;
    use baton::probe::{DirectionBundle, Pooling};
    use baton::script::render::ModelRenderer;
    use baton::script::run_source;
    use candle_core::{DType, Device};

    let dir = tempfile::tempdir().unwrap();
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");
    let bundle = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/steer-direction.safetensors"
    );
    let clip: Vec<f32> = (0..6400).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let wav = dir.path().join("clip.wav");
    write_wav(&wav, &clip, 32000, SampleFormat::Float32).unwrap();
    let src = format!(
        "let p = probe(\"{bundle}\");\nlet c = p.project(\"clip.wav\");\nprint(c.block);\nprint(c.projection);"
    );
    let options = RecipeOptions {
        model_override: Some(tiny.into()),
        echo: false,
        ..RecipeOptions::default()
    };
    let renderer = ModelRenderer::new(
        Device::Cpu,
        baton::model::WeightFormat::Float(DType::F32),
        SampleFormat::Float32,
        false,
    );
    let outcome = run_source("probe.rhai", &src, dir.path(), options, Box::new(renderer))
        .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(*e)));
    assert_eq!(outcome.printed[0], "2"); // the fixture's best-scoring block
    let projection: f64 = outcome.printed[1].parse().unwrap();

    // The same features through the extractor, dotted with the bundle's block-2 direction.
    let model = MusicGen::load(tiny, &Device::Cpu, DType::F32).unwrap();
    let h = pooled_clip(&model, &wav, &[2], Pooling::Mean)
        .unwrap()
        .remove(0);
    let q = &DirectionBundle::read(std::path::Path::new(bundle))
        .unwrap()
        .directions[&2];
    let expect: f64 = h.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum();
    assert!(expect != 0.0);
    assert!(
        (projection - expect).abs() < 1e-12,
        "{projection} vs {expect}"
    );
}

#[test]
fn clap_scores_a_clip_against_a_text_with_the_run_s_clap_model() {
    use baton::audio::{write_wav, SampleFormat};
    use baton::eval::clap::{cosine, Clap};
    use baton::script::run_source;
    use candle_core::Device;

    let dir = tempfile::tempdir().unwrap();
    let tiny_clap = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a");
    let clip: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.07).sin() * 0.3).collect();
    write_wav(
        &dir.path().join("take.wav"),
        &clip,
        16_000,
        SampleFormat::Float32,
    )
    .unwrap();
    let options = |clap_model: &str| RecipeOptions {
        clap_model: clap_model.into(),
        echo: false,
        ..RecipeOptions::default()
    };
    let run = |src: &str, clap_model: &str| {
        run_source(
            "clap.rhai",
            src,
            dir.path(),
            options(clap_model),
            Box::new(DryRun::default()),
        )
    };
    // Two calls, two texts: one model, loaded once, scores both.
    let src = r#"print(clap("take.wav", "lofi piano")); print(clap("take.wav", "heavy metal"));"#;
    let outcome = run(src, tiny_clap).unwrap_or_else(|e| panic!("{:?}", miette::Report::new(*e)));
    let got: Vec<f64> = outcome.printed.iter().map(|l| l.parse().unwrap()).collect();
    let clap = Clap::load(tiny_clap, &Device::Cpu).unwrap();
    let audio = clap.embed_audio(&clip, 16_000).unwrap();
    for (g, text) in got.iter().zip(["lofi piano", "heavy metal"]) {
        let want = cosine(&audio, &clap.embed_text(text).unwrap()) as f64;
        assert_eq!(*g, want, "{text}");
    }
    assert_ne!(got[0], got[1]);

    // Clear errors: a missing clip, not a WAV, an empty text, a model of another kind.
    let fails = |src: &str, model: &str, needle: &str| {
        let e = run(src, model).expect_err(src);
        let text = steer_common::one_line(e);
        assert!(text.contains(needle), "{src}: {text}");
    };
    fails(r#"clap("gone.wav", "piano")"#, tiny_clap, "not found");
    fails(
        r#"clap("notes.txt", "piano")"#,
        tiny_clap,
        "not a .wav file",
    );
    fails(r#"clap("take.wav", " ")"#, tiny_clap, "the text is empty");
    let musicgen = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");
    fails(r#"clap("take.wav", "piano")"#, musicgen, "not a CLAP model");
    fails(r#"clap("take.wav", "piano")"#, musicgen, "--clap-model");
}
