//! `baton sweep`: every take is the render `baton render --steer NAME:S --seed N` gives, every
//! reading what `baton eval` gives on that take, the summary is computed from those readings,
//! and a sweep resumes (adding only new takes) in its folder but refuses one of other settings.
//! Bad input fails before the model loads (the error tests name a model that does not exist).
//! The cost columns (CLAP against the prompt with a tiny CLAP checkpoint, FAD/KAD against the
//! strength-0 takes) are the library's numbers on the takes, kept or rescored consistently when
//! the sweep resumes.

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

/// The tiny CLAP checkpoints (random weights).
const TINY_CLAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a");
const TINY_CLAP_B: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-b");

/// The cost columns of a sweep of strengths including 0 are the library's numbers on its
/// takes: each strength's CLAP is the mean cosine of its takes with the prompt under
/// `clap_model`, its FAD and KAD those of `baton fad` (codec embedding) against the strength-0
/// takes; and the trade-off plot is there.
fn check_costs(out: &Path, doc: &Value, clap_model: &str) {
    use baton::eval::audio_distances;
    use baton::eval::clap::{cosine, Clap};
    use baton::eval::embed::{Embedder, Embedding};

    let clap = Clap::load(clap_model, &Device::Cpu).expect("clap");
    let prompt = clap
        .embed_text(doc["settings"]["prompt"].as_str().unwrap())
        .unwrap();
    let codec = Embedder::load(Embedding::Encodec, TINY, &Device::Cpu).expect("codec");
    let takes = doc["takes"].as_array().expect("takes");
    let of = |strength: f64| -> Vec<&Value> {
        takes
            .iter()
            .filter(|t| t["strength"].as_f64() == Some(strength))
            .collect()
    };
    let embed = |takes: &[&Value]| {
        takes
            .iter()
            .map(|t| {
                codec
                    .embed_file(&out.join(t["file"].as_str().unwrap()))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let reference = embed(&of(0.0));
    let summary = doc["summary"].as_array().expect("summary");
    for row in summary {
        let strength = row["strength"].as_f64().unwrap();
        let these = of(strength);
        let want: f64 = these
            .iter()
            .map(|t| {
                let (x, rate) =
                    baton::audio::read_wav_mono(&out.join(t["file"].as_str().unwrap())).unwrap();
                cosine(&clap.embed_audio(&x, rate).unwrap(), &prompt) as f64
            })
            .sum::<f64>()
            / these.len() as f64;
        let got = row["clap"].as_f64().expect("a CLAP column");
        assert!(
            (got - want).abs() < 1e-6,
            "strength {strength}: CLAP {got} vs {want}"
        );
        if strength == 0.0 {
            assert!(row.get("fad").is_none(), "{row}");
            continue;
        }
        let d = audio_distances(Embedding::Encodec, &reference, &embed(&these), None).unwrap();
        assert_eq!(row["fad"].as_f64(), Some(d.fad), "strength {strength}");
        assert_eq!(row["kad"].as_f64(), Some(d.kad), "strength {strength}");
    }
    assert!(
        Path::new(doc["measures"]["clap_model"].as_str().unwrap())
            .ends_with(Path::new(clap_model).file_name().unwrap()),
        "{doc}"
    );
    let png = std::fs::read(out.join("tradeoff.png")).expect("tradeoff.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
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
            "--clap-model",
            TINY_CLAP,
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
    // title, head, two strengths, what CLAP/FAD/KAD are, where the plot is
    assert_eq!(table.lines().count(), 6, "{table}");
    check_costs(&out, &doc, TINY_CLAP);
    assert!(table.contains("CLAP") && table.contains("FAD"), "{table}");
    let record = json(&out.join("s60.000-seed1.json"));

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
    assert!(
        !err.contains("scored"),
        "earlier takes were scored again: {err}"
    );
    assert_eq!(table.lines().count(), 7, "{table}");
    // the earlier takes' records (their CLAP scores) are as they were
    assert_eq!(json(&out.join("s60.000-seed1.json")), record);
    check_costs(&out, &json(&out.join("sweep.json")), TINY_CLAP);
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

    // another CLAP model scores the takes on disk again, rendering nothing; --no-clap leaves
    // the column (and the model) out
    let mut other_clap = common("-60,0,60");
    let at = other_clap.len() - 1;
    other_clap[at] = TINY_CLAP_B.to_string();
    let argv: Vec<&str> = other_clap.iter().map(String::as_str).collect();
    let (_, err) = ok(&argv);
    assert!(err.contains("6 of 6 takes already"), "{err}");
    assert!(err.contains("scored 6 earlier take(s) with CLAP"), "{err}");
    let after = std::fs::metadata(out.join("s0.000-seed0.wav"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after);
    check_costs(&out, &json(&out.join("sweep.json")), TINY_CLAP_B);
    let mut no_clap = common("-60,0,60");
    no_clap.truncate(no_clap.len() - 2);
    no_clap.extend([
        "--no-clap".to_string(),
        "--clap-model".into(),
        "nowhere/at/all".into(),
    ]);
    let argv: Vec<&str> = no_clap.iter().map(String::as_str).collect();
    let (table, _) = ok(&argv);
    assert!(!table.contains("CLAP") && table.contains("FAD"), "{table}");
    let doc = json(&out.join("sweep.json"));
    assert!(doc["summary"][0].get("clap").is_none(), "{doc}");
    assert!(doc["measures"]["clap_model"].is_null(), "{doc}");
    // the plot of the earlier run with CLAP would no longer match sweep.json
    assert!(!out.join("tradeoff.png").exists());

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

    // the default CLAP model, not in an empty offline hub cache: a clear error naming the
    // flags that choose another or leave the column out, before MusicGen loads
    let fresh = dir.path().join("fresh");
    let mut args = [&base[..], &["--steer", "tones:all", "--target", "high"]].concat();
    let at = args.iter().position(|a| *a == s(&out)).expect("out");
    args[at] = s(&fresh);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(&args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("loading"),
        "{err}"
    );
    for needle in ["laion/larger_clap_music", "--clap-model", "--no-clap"] {
        assert!(err.contains(needle), "wanted {needle:?} in {err}");
    }
    // a MusicGen folder named as the CLAP model: said so, before MusicGen loads
    let mut musicgen = args.clone();
    musicgen.extend(["--clap-model", TINY]);
    fails(&musicgen, "is not a CLAP model");
    // A sibling shard's take, written before its first sweep.json, is no foreign file: the run
    // gets past the folder check (to the CLAP model's, which comes after it).
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("mkdir");
    std::fs::write(shared.join("s0.000-seed9.wav"), "RIFF").expect("write");
    std::fs::write(shared.join("s0.000-seed9.json"), "{}").expect("write");
    let mut sibling = musicgen.clone();
    sibling[at] = s(&shared);
    fails(&sibling, "is not a CLAP model");
    fails(&musicgen, "--no-clap");
}
