//! `baton sweep`: every take is the render `baton render --steer NAME:S --seed N` gives, every
//! reading what `baton eval` gives on that take, the summary is computed from those readings,
//! and a sweep resumes (adding only new takes) in its folder but refuses one of other settings.
//! Bad input fails before the model loads (the error tests name a model that does not exist).

mod probe_support;

use std::path::Path;

use baton::model::MusicGen;
use candle_core::{DType, Device};
use probe_support::{baton, train_tone_classifier, TINY};
use serde_json::Value;

fn ok(args: &[&str]) -> (String, String) {
    let run = baton(args);
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout).to_string(),
        String::from_utf8_lossy(&run.stderr).to_string(),
    );
    assert!(run.status.success(), "{args:?}: {err}");
    (out, err)
}

fn fails(args: &[&str], needle: &str) {
    let run = baton(args);
    let err = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{args:?}: wanted {needle:?} in {err}");
    assert!(
        !err.contains("loading"),
        "{args:?}: the model loaded first: {err}"
    );
}

/// `baton render` of the sweep's prompt with its sampling (0.2 s, top-k 8) to `out`, plus
/// `extra` flags (seed, steering, more prompts).
fn render_tune(lib: &Path, out: &str, extra: &[&str]) {
    let mut args = vec![
        "render",
        "--prompt",
        "a tune",
        "--seconds",
        "0.2",
        "--top-k",
        "8",
        "--out",
        out,
        "--model",
        TINY,
        "--directions",
        s(lib),
    ];
    args.extend_from_slice(extra);
    ok(&args);
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

#[test]
fn takes_are_renders_readings_are_evals_and_a_sweep_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = dir.path().join("lib");
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).expect("tiny");
    train_tone_classifier(&model, dir.path(), &lib);
    let out = dir.path().join("sweep");
    let common = |strengths: &str| -> Vec<String> {
        [
            "sweep",
            "--prompt",
            "a tune",
            "--steer",
            "tones:all",
            "--strengths",
            strengths,
            "--takes",
            "2",
            "--seconds",
            "0.2",
            "--top-k",
            "8",
            "--target",
            "high",
            "--out",
            s(&out),
            "--model",
            TINY,
            "--directions",
            s(&lib),
        ]
        .map(String::from)
        .to_vec()
    };
    let args = common("0,60");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (table, _) = ok(&argv);

    let doc = json(&out.join("sweep.json"));
    let takes = doc["takes"].as_array().expect("takes");
    assert_eq!(takes.len(), 4);
    let files: Vec<&str> = takes.iter().map(|t| t["file"].as_str().unwrap()).collect();
    for f in [
        "s0.000-seed0.wav",
        "s0.000-seed1.wav",
        "s60.000-seed0.wav",
        "s60.000-seed1.wav",
    ] {
        assert!(files.contains(&f), "{f} in {files:?}");
    }

    // strength 0 is the unsteered render with the same seed, byte for byte
    let plain = dir.path().join("plain.wav");
    render_tune(&lib, s(&plain), &["--seed", "1"]);
    let unsteered = std::fs::read(out.join("s0.000-seed1.wav")).expect("take");
    assert!(std::fs::read(&plain).expect("plain") == unsteered);
    // and a steered take is `render --steer NAME:S`, which differs from it
    let steered = dir.path().join("steered.wav");
    render_tune(
        &lib,
        s(&steered),
        &["--seed", "1", "--steer", "tones:all:60"],
    );
    let take = std::fs::read(out.join("s60.000-seed1.wav")).expect("take");
    assert!(std::fs::read(&steered).expect("steered") == take);
    assert!(take != unsteered, "strength 60 changed nothing");

    // every reading is baton eval's on the take, and the summary is made from them
    let mut p_high: Vec<(f64, f64)> = Vec::new();
    for t in takes {
        let wav = out.join(t["file"].as_str().unwrap());
        let eval_json = dir.path().join("eval.json");
        let _ = std::fs::remove_file(&eval_json);
        ok(&[
            "eval",
            s(&wav),
            "--probe",
            "tones:all",
            "--model",
            TINY,
            "--directions",
            s(&lib),
            "--json",
            s(&eval_json),
        ]);
        let want = &json(&eval_json)["readings"][0]["probs"];
        assert_eq!(&t["readings"][0]["probs"], want, "{wav:?}");
        p_high.push((
            t["strength"].as_f64().unwrap(),
            want["high"].as_f64().unwrap(),
        ));
    }
    let summary = doc["summary"].as_array().expect("summary");
    assert_eq!(summary.len(), 2);
    for row in summary {
        let strength = row["strength"].as_f64().unwrap();
        let ps: Vec<f64> = p_high
            .iter()
            .filter(|(s, _)| *s == strength)
            .map(|(_, p)| *p)
            .collect();
        let mean = ps.iter().sum::<f64>() / ps.len() as f64;
        assert!((row["mean_p"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert_eq!(row["takes"], 2);
    }
    assert!(table.contains("mean p(high)"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // more strengths (a negative one first, without `=`): only the new takes are rendered, the
    // old files stay as they were; naming the default probe, or the model by another path,
    // is the same sweep
    let before = std::fs::metadata(out.join("s0.000-seed0.wav"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut args = common("-60,0,60");
    args.extend(["--probe".to_string(), "tones:all".to_string()]);
    let model_index = args.iter().position(|a| a == TINY).expect("model");
    args[model_index] = format!("{TINY}/../tiny-a");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (table, err) = ok(&argv);
    assert!(err.contains("4 of 6 takes already"), "{err}");
    assert!(
        err.contains("takes 1-2 of 2: strength -60, seeds 0-1"),
        "{err}"
    );
    assert_eq!(table.lines().count(), 5, "{table}");
    let after = std::fs::metadata(out.join("s0.000-seed0.wav"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after);
    assert_eq!(
        json(&out.join("sweep.json"))["takes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // a take that fails (a window the model cannot read) leaves the folder resumable with
    // corrected settings
    let failed = dir.path().join("failed");
    let mut args = common("0");
    let at = args.iter().position(|a| a == s(&out)).expect("out");
    args[at] = s(&failed).to_string();
    let mut bad = args.clone();
    bad.extend(["--window".to_string(), "0.001".to_string()]);
    let argv: Vec<&str> = bad.iter().map(String::as_str).collect();
    fails(&argv, "window is too short to read");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&argv);

    // under a stochastic gate, takes batched together keep their own gate draws
    let gated = dir.path().join("gated");
    let mut args = common("60");
    let at = args.iter().position(|a| a == s(&out)).expect("out");
    args[at] = s(&gated).to_string();
    args.extend(["--gate".to_string(), "0.5".to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&argv);
    let alone = dir.path().join("gated.wav");
    let gated_steer = ["--steer", "tones:all:60", "--gate", "0.5"];
    render_tune(
        &lib,
        s(&alone),
        &[&["--seed", "1"], &gated_steer[..]].concat(),
    );
    assert!(
        std::fs::read(gated.join("s60.000-seed1.wav")).expect("take")
            == std::fs::read(&alone).expect("alone")
    );
    // and so is each prompt of a render batch
    let batch = dir.path().join("gated-batch");
    render_tune(
        &lib,
        &format!("{}/", s(&batch)),
        &[&["--prompt", "a tune", "--seed", "0"], &gated_steer[..]].concat(),
    );
    assert!(
        std::fs::read(batch.join("prompt-2.wav")).expect("prompt 2")
            == std::fs::read(&alone).expect("alone")
    );

    // a class named by a number is reached without a strength
    std::fs::create_dir_all(lib.join("level")).expect("mkdir");
    std::fs::copy(
        lib.join("tones/all.safetensors"),
        lib.join("level/2.safetensors"),
    )
    .expect("copy");
    for spec in ["level:2", "level:2:60"] {
        render_tune(
            &lib,
            s(&dir.path().join("level.wav")),
            &["--seed", "1", "--steer", spec],
        );
    }
    let level = std::fs::read(dir.path().join("level.wav")).expect("level");
    assert!(level == take, "level:2:60 is tones:all at 60");

    // other settings in the same folder are refused, before the model loads
    let mut other = common("0");
    other[2] = "another tune".into();
    let argv: Vec<&str> = other.iter().map(String::as_str).collect();
    fails(&argv, "holds a sweep with other settings (prompt:");
    // and so is the same command once the direction has been retrained
    let bundle = lib.join("tones/all.safetensors");
    let mut retrained = baton::probe::DirectionBundle::read(&bundle).expect("bundle");
    for v in retrained.directions.values_mut() {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    retrained.write(&bundle).expect("write");
    let args = common("0,60");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    fails(&argv, "holds a sweep with other settings (files:");
    // a setting only the earlier sweep has is named too
    let file = out.join("sweep.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    doc["settings"]["strength_unit"] = "residual".into();
    std::fs::write(&file, doc.to_string()).expect("write");
    fails(&argv, "strength_unit: this run null, earlier \"residual\"");
}

#[test]
fn bad_sweeps_fail_before_the_model_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let lib = dir.path().join("lib");
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).expect("tiny");
    train_tone_classifier(&model, dir.path(), &lib);
    let out = dir.path().join("sweep");
    let base = [
        "sweep",
        "--prompt",
        "x",
        "--seconds",
        "0.2",
        "--out",
        s(&out),
        "--model",
        TINY,
        "--directions",
        s(&lib),
    ];
    let run = |extra: &[&str], needle: &str| {
        let args = [&base[..], extra].concat();
        fails(&args, needle);
        assert!(!out.exists(), "{extra:?} created the folder");
    };
    run(&[], "nothing to sweep");
    run(&["--steer", "tones:all:0.5"], "sets the strength itself");
    run(&["--steer", "tones:none"], "no bundle file");
    run(
        &["--steer", "tones:all", "--target", "loud"],
        "classes are low, mid, high",
    );
    // a classifier probe needs a class to summarise: the bundle's target `all` is not one
    run(&["--steer", "tones:all"], "name one with --target");
    run(
        &["--steer", "tones:all", "--target", "high", "--takes", "0"],
        "--takes",
    );
    run(
        &[
            "--steer",
            "tones:all",
            "--target",
            "high",
            "--strengths",
            "0.1504,0.1496",
        ],
        "closer than the 0.001",
    );
    run(
        &["--steer", "tones:all", "--target", "high", "--window", "0"],
        "--window must be a positive",
    );
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("mine.txt"), "x").expect("write");
    let args = [&base[..], &["--steer", "tones:all", "--target", "high"]].concat();
    fails(&args, "holds files but no sweep.json");
}
