//! `baton eval`: the readings it prints and writes are exactly what the probe's classifier (or
//! direction) gives on the same pooled features, for whole clips and for windows read on their
//! own; bad input fails before the model loads.

mod probe_support;

use std::path::Path;

use baton::audio::{read_wav_at, read_wav_mono, resample, write_wav, SampleFormat};
use baton::model::MusicGen;
use baton::probe::extract::{pooled_audio, pooled_clip};
use baton::probe::{DirectionBundle, Pooling};
use baton::rfm::io::SavedProbe;
use baton::script::render::ModelRenderer;
use baton::script::{run_source, RecipeOptions};
use baton::steer::Direction;
use candle_core::{DType, Device};
use probe_support::{baton, tone, train_tone_classifier, TINY};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn classifier_readings_match_the_rfm_per_clip_and_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).unwrap();
    let lib = dir.path().join("lib");
    train_tone_classifier(&model, dir.path(), &lib);
    let saved = SavedProbe::read(&lib.join("tones/all.classifier.safetensors")).unwrap();

    // A clip that is a low tone, then a high one: two 0.2 s windows.
    tone(&dir.path().join("lo.wav"), 110.0, 0.3);
    tone(&dir.path().join("hi.wav"), 1760.0, 0.3);
    let (lo, _) = read_wav_mono(&dir.path().join("lo.wav")).unwrap();
    let (hi, _) = read_wav_mono(&dir.path().join("hi.wav")).unwrap();
    let both = [lo.clone(), hi.clone()].concat();
    let both_path = dir.path().join("both.wav");
    write_wav(&both_path, &both, 32000, SampleFormat::Float32).unwrap();

    let out = dir.path().join("eval.json");
    let run = baton(&[
        "eval",
        both_path.to_str().unwrap(),
        dir.path().join("hi.wav").to_str().unwrap(),
        "--probe",
        "tones:all",
        "--directions",
        lib.to_str().unwrap(),
        "--model",
        TINY,
        "--window",
        "0.2",
        "--target",
        "high",
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = json(&out);
    assert_eq!(doc["kind"], "classes");
    assert_eq!(doc["block"], saved.layer);
    let readings = doc["readings"].as_array().unwrap();
    // both.wav: [0, 0.2) and [0.2, 0.4); hi.wav: one window, the whole clip.
    assert_eq!(readings.len(), 3);
    let expected = [&lo[..], &hi[..], &hi[..]];
    for (r, audio) in readings.iter().zip(expected) {
        let h = pooled_audio(&model, audio, &[saved.layer], Pooling::Mean)
            .unwrap()
            .remove(0);
        let want = saved.classify(&h).unwrap();
        for (k, w) in want.iter().enumerate() {
            let got = r["probs"][saved.class_name(k)].as_f64().unwrap();
            assert!((got - w).abs() < 1e-12, "{r}: {got} vs {w}");
        }
    }
    assert_eq!(readings[1]["start"].as_f64(), Some(0.2));
    assert_eq!(readings[1]["end"].as_f64(), Some(0.4));
    // A recipe reads the same windows.
    let options = RecipeOptions {
        directions: lib.clone(),
        out_dir: dir.path().to_path_buf(),
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
    let src = "for r in probe(\"tones:all\").classify(\"both.wav\", #{window: 0.2}) {\n\
               print(`${r.start} ${r.end} ${r.class} ${r.probs.high}`);\n}";
    let printed = run_source("eval.rhai", src, dir.path(), options, Box::new(renderer))
        .unwrap()
        .printed;
    assert_eq!(printed.len(), 2);
    for (line, r) in printed.iter().zip(readings) {
        let high = r["probs"]["high"].as_f64().unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields[0].parse::<f64>().unwrap(),
            r["start"].as_f64().unwrap()
        );
        assert_eq!(
            fields[1].parse::<f64>().unwrap(),
            r["end"].as_f64().unwrap()
        );
        assert!(
            (fields[3].parse::<f64>().unwrap() - high).abs() < 1e-12,
            "{line}"
        );
    }

    // The table and the summary.
    assert!(stdout.contains("p(high) ="), "{stdout}");
    assert!(stdout.contains("high: mean probability"), "{stdout}");
    assert!(stdout.contains("over 3 reading(s)"), "{stdout}");
    // both.wav (two windows) gets a sparkline of p(high) from low to high; hi.wav (one) none
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("p(high) ")).collect();
    let spark = lines
        .iter()
        .find(|l| !l.contains('='))
        .unwrap_or_else(|| panic!("no sparkline in {stdout}"));
    let p = |i: usize| readings[i]["probs"]["high"].as_f64().unwrap();
    // on the fixed 0..1 scale of a probability
    let want = baton::script::plot::sparkline_in(&[p(0), p(1)], 0.0, 1.0);
    assert!(
        spark.contains("both.wav") && spark.ends_with(&want),
        "{spark} vs {want}"
    );
    assert!(want.ends_with("[0.000 .. 1.000]"), "{want}");
    assert_eq!(
        lines.iter().filter(|l| !l.contains('=')).count(),
        1,
        "{stdout}"
    );
}

#[test]
fn a_bundle_without_classifier_reads_projections_at_its_best_block() {
    let dir = tempfile::tempdir().unwrap();
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).unwrap();
    let bundle_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/steer-direction.safetensors");
    let clip = dir.path().join("clip.wav");
    tone(&clip, 440.0, 0.3);
    let out = dir.path().join("eval.json");
    // `baton eval CLIP --json` with the bundle: its first reading's projection
    let eval_projection = |clip: &Path| -> f64 {
        let run = baton(&[
            "eval",
            clip.to_str().unwrap(),
            "--probe",
            bundle_path.to_str().unwrap(),
            "--model",
            TINY,
            "--json",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        json(&out)["readings"][0]["projection"].as_f64().unwrap()
    };
    let direction = Direction::from_bundle("d", DirectionBundle::read(&bundle_path).unwrap());
    let (block, _) = direction.best_block().unwrap();
    let project = |h: Vec<f32>| -> f64 {
        h.iter()
            .zip(&direction.vectors[&block])
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };

    let got = eval_projection(&clip);
    let want = project(
        pooled_clip(&model, &clip, &[block], Pooling::Mean)
            .unwrap()
            .remove(0),
    );
    let doc = json(&out);
    assert_eq!(doc["kind"], "projection");
    assert_eq!(doc["block"], block);
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");

    // a clip at another rate is read as its resampled audio
    let (audio, rate) = read_wav_mono(&clip).unwrap();
    let at_48k = dir.path().join("clip48k.wav");
    write_wav(
        &at_48k,
        &resample(&audio, rate, 48000),
        48000,
        SampleFormat::Float32,
    )
    .unwrap();
    let got = eval_projection(&at_48k);
    let (back, _) = read_wav_at(&at_48k, rate).unwrap();
    let want = project(
        pooled_audio(&model, &back, &[block], Pooling::Mean)
            .unwrap()
            .remove(0),
    );
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn bad_input_fails_before_the_model_loads() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/steer-direction.safetensors"
    );
    let clip = dir.path().join("clip.wav");
    tone(&clip, 440.0, 0.3);
    let clip = clip.to_str().unwrap();
    // A model that does not exist: every case must fail on its own argument first.
    let missing = dir.path().join("no-model");
    let m = missing.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&[clip, "--probe", "nope:none"], "no bundle file"),
        (&["no.wav", "--probe", bundle], "no audio file no.wav"),
        (
            &[clip, "--probe", bundle, "--window", "0"],
            "--window must be a positive",
        ),
        (
            &[clip, "--probe", bundle, "--target", "C#"],
            "--target needs a classifier",
        ),
        (
            &[clip, "--probe", bundle, "--json", "/no/such/dir/x.json"],
            "does not exist",
        ),
        (&[clip, "--probe", bundle], "no-model"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["eval", "--model", m];
        all.extend(args);
        let run = baton(&all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{all:?} succeeded");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(needle),
            "{all:?}: expected {needle:?} in {stderr}"
        );
    }
    // Checks that need the model: a window shorter than two codec frames, a hop shorter than
    // one, a clip longer than the model reads at once (tiny-a: about 5 s).
    let long = dir.path().join("long.wav");
    write_wav(&long, &vec![0.1; 32000 * 6], 32000, SampleFormat::Float32).unwrap();
    let long = long.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&[clip, "--window", "0.01"], "too short to read"),
        (
            &[clip, "--window", "0.1", "--hop", "0.001"],
            "shorter than one codec frame",
        ),
        (&[long], "longer than the"),
        (
            &[clip, "--classifier", "/no/such.safetensors"],
            "--classifier: no file",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["eval", "--probe", bundle, "--model", TINY];
        all.extend(args);
        let run = baton(&all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{all:?} succeeded");
        assert!(
            stderr.contains(needle),
            "{all:?}: expected {needle:?} in {stderr}"
        );
    }
}
