//! Scale out (`--shard K/N`): N shards of `dataset`, `features`, `sweep` and `eval`, run at once
//! as separate processes, give exactly what one process gives (the same files, byte for byte,
//! or the same features once `baton merge`d); a shard that failed, rerun (or a plain run after
//! the shards), completes the set; the scheduler's environment picks the shard; incomplete or
//! mixed sets are refused by name.

mod probe_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use baton::concepts::{clip_specs, Concept, Instruments, SpecOptions};
use baton::model::MusicGen;
use baton::probe::FeatureSet;
use baton::shard::Shard;
use candle_core::{DType, Device};
use probe_support::{tone, train_tone_classifier, TINY};

/// Scheduler variables a test's own environment (a CI job under Slurm) must not leak in.
const SCHEDULER_VARS: [&str; 7] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "BATON_SHARD_COUNT",
];

fn command(args: &[String], env: &[(&str, String)]) -> Command {
    let bin = std::env::var("BATON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_baton").into());
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("BATON_SOUNDFONT");
    for var in SCHEDULER_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn ok(args: &[String], env: &[(&str, String)]) -> Output {
    let out = command(args, env).output().expect("run baton");
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

fn fails(args: &[String], needle: &str) -> String {
    let out = command(args, &[]).output().expect("run baton");
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{args:?}: wanted {needle:?} in {err}");
    err
}

/// Starts every command at once (one process each) and waits for all; returns their outputs in
/// order.
fn at_once(runs: Vec<Command>) -> Vec<Output> {
    let children: Vec<_> = runs
        .into_iter()
        .map(|mut c| {
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn baton")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect()
}

/// `args` plus `--shard K/N`, for each K.
fn shards(args: &[String], n: usize) -> Vec<Command> {
    (1..=n)
        .map(|k| {
            let mut a = args.to_vec();
            a.extend(["--shard".to_string(), format!("{k}/{n}")]);
            command(&a, &[])
        })
        .collect()
}

fn all_succeed(outs: &[Output]) {
    for (k, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "shard {}: {}", k + 1, stderr(out));
    }
}

/// Every file under `dir` (relative path -> bytes).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

const LIMIT: usize = 10;

fn dataset_args(out: &Path) -> Vec<String> {
    let mut a = strings(&[
        "dataset",
        "notes",
        "--instruments",
        "2",
        "--limit",
        "10",
        "--seed",
        "3",
        "--builtin-synth",
        "--quiet",
        "--out",
    ]);
    a.push(s(out));
    a
}

/// The clip files of the test dataset, in the dataset's order.
fn clip_names() -> Vec<String> {
    let specs = clip_specs(
        Concept::Notes,
        &SpecOptions {
            instruments: Instruments::Count(2),
            limit: Some(LIMIT),
            seed: 3,
        },
    )
    .expect("specs");
    specs
        .iter()
        .map(|spec| format!("clips/{}.wav", spec.name))
        .collect()
}

#[test]
fn dataset_shards_at_once_equal_one_process_and_a_failed_shard_rerun_completes_the_set() {
    let tmp = tempfile::tempdir().expect("tmp");
    let one = tmp.path().join("one");
    ok(&dataset_args(&one), &[]);
    let want = snapshot(&one);
    assert!(want.contains_key(Path::new("manifest.jsonl")));
    assert_eq!(want.len(), LIMIT + 2);

    // Shards at once, numbered by the scheduler's environment: three Slurm array tasks
    // (--array=0-2), then four Kubernetes indexed-job pods.
    let slurm = tmp.path().join("slurm");
    let runs = (0..3)
        .map(|id| {
            command(
                &dataset_args(&slurm),
                &[
                    ("SLURM_ARRAY_TASK_ID", id.to_string()),
                    ("SLURM_ARRAY_TASK_MIN", "0".into()),
                    ("SLURM_ARRAY_TASK_MAX", "2".into()),
                    ("SLURM_ARRAY_TASK_COUNT", "3".into()),
                ],
            )
        })
        .collect();
    let outs = at_once(runs);
    all_succeed(&outs);
    assert!(stderr(&outs[1]).contains("shard 2/3 (from SLURM_ARRAY_TASK_ID)"));
    assert_eq!(snapshot(&slurm), want, "Slurm shards");

    let pods = tmp.path().join("pods");
    let runs = (0..4)
        .map(|index| {
            command(
                &dataset_args(&pods),
                &[
                    ("JOB_COMPLETION_INDEX", index.to_string()),
                    ("BATON_SHARD_COUNT", "4".into()),
                ],
            )
        })
        .collect();
    all_succeed(&at_once(runs));
    assert_eq!(snapshot(&pods), want, "Kubernetes shards");

    // A shard fails (a folder stands where one of its clips goes): the others finish, and the
    // set is incomplete, without a manifest. The folder is a dataset of these options already.
    let failed = tmp.path().join("failed");
    std::fs::create_dir_all(&failed).expect("mkdir");
    std::fs::copy(one.join("dataset.json"), failed.join("dataset.json")).expect("copy");
    let names = clip_names();
    let blocked = &names[Shard::new(2, 3).expect("shard").range(LIMIT).start];
    std::fs::create_dir_all(failed.join(blocked)).expect("obstacle");
    let outs = at_once(shards(&dataset_args(&failed), 3));
    assert!(outs[0].status.success() && outs[2].status.success());
    assert!(!outs[1].status.success(), "shard 2 wrote into a folder");
    assert!(!stderr(&outs[1]).contains("panicked"));
    assert!(!failed.join("manifest.jsonl").exists());
    // The shards that finished said so, and that the set is not complete yet.
    assert!(
        stderr(&outs[2]).contains("still missing"),
        "{}",
        stderr(&outs[2])
    );

    // Rerun the failed shard: the set is complete, and the folder is the one-process folder.
    std::fs::remove_dir(failed.join(blocked)).expect("rm obstacle");
    let mut rerun = dataset_args(&failed);
    rerun.extend(strings(&["--shard", "2/3"]));
    ok(&rerun, &[]);
    assert_eq!(snapshot(&failed), want, "after the rerun");

    // A plain run after the shards renders nothing new and changes nothing.
    let out = ok(&dataset_args(&failed), &[]);
    assert!(stderr(&out).contains("(0 rendered"), "{}", stderr(&out));
    assert_eq!(snapshot(&failed), want);

    // Or a plain run finalises what a failed shard left: it renders only the missing clips.
    let left = tmp.path().join("left");
    std::fs::create_dir_all(&left).expect("mkdir");
    std::fs::copy(one.join("dataset.json"), left.join("dataset.json")).expect("copy");
    std::fs::create_dir_all(left.join(blocked)).expect("obstacle");
    let outs = at_once(shards(&dataset_args(&left), 3));
    assert!(!outs[1].status.success());
    std::fs::remove_dir(left.join(blocked)).expect("rm obstacle");
    let missing = names.iter().filter(|n| !left.join(n).is_file()).count();
    assert!(missing >= 1);
    let out = ok(&dataset_args(&left), &[]);
    assert!(
        stderr(&out).contains(&format!("({missing} rendered")),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&left), want, "after the plain run");
}

#[test]
fn bad_shards_and_conflicting_environments_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("d");
    for (shard, why) in [
        ("0/3", "K must be 1 to 3"),
        ("4/3", "K must be 1 to 3"),
        ("1/0", "at least 1"),
        ("x", "is not K/N"),
    ] {
        let mut a = dataset_args(&out);
        a.extend(strings(&["--shard", shard]));
        fails(&a, why);
    }
    let run = |env: &[(&str, String)]| command(&dataset_args(&out), env).output().expect("run");
    for (env, why) in [
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "0".to_string()),
                ("SLURM_ARRAY_TASK_COUNT", "2".into()),
                ("JOB_COMPLETION_INDEX", "0".into()),
            ],
            "both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX",
        ),
        (
            vec![("JOB_COMPLETION_INDEX", "1".to_string())],
            "--shard-count",
        ),
        (
            vec![
                ("JOB_COMPLETION_INDEX", "2".to_string()),
                ("BATON_SHARD_COUNT", "2".into()),
            ],
            "not below the number of shards",
        ),
    ] {
        let o = run(&env);
        let err = stderr(&o);
        assert!(!o.status.success(), "{env:?}");
        assert!(
            err.contains(why) && !err.contains("panicked"),
            "{env:?}: {err}"
        );
    }
    assert!(!out.exists(), "an error left a folder behind");
    // --from imports in one process
    let mut a = strings(&["dataset", "mood", "--from", "x", "--out"]);
    a.push(s(&out));
    a.extend(strings(&["--shard", "1/2"]));
    fails(&a, "--shard");
}

fn features_args(data: &Path, out: &Path) -> Vec<String> {
    let mut a = strings(&["features"]);
    a.extend([
        s(data),
        "--out".into(),
        s(out),
        "--model".into(),
        TINY.into(),
    ]);
    a
}

#[test]
fn features_shards_at_once_merge_into_the_one_process_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("notes");
    ok(&dataset_args(&data), &[]);
    let whole = tmp.path().join("feats.safetensors");
    ok(&features_args(&data, &whole), &[]);
    let want = FeatureSet::read(&whole).expect("features");
    assert_eq!(want.n, LIMIT);

    // Three shards at once; the second fails first (a folder stands where its file goes).
    let out = tmp.path().join("sharded/feats.safetensors");
    let part = |k: usize, n: usize| Shard::new(k, n).expect("shard").file_for(&out);
    std::fs::create_dir_all(part(2, 3)).expect("obstacle");
    let outs = at_once(shards(&features_args(&data, &out), 3));
    assert!(outs[0].status.success() && outs[2].status.success());
    assert!(!outs[1].status.success());
    assert!(part(1, 3).is_file() && part(3, 3).is_file());
    // a shard file is not a features file
    let mut train = strings(&["train"]);
    train.extend([
        s(&part(1, 3)),
        "--out".into(),
        s(&tmp.path().join("b.safetensors")),
    ]);
    fails(&train, "features-shard/1");

    let merged = tmp.path().join("merged.safetensors");
    let merge = |parts: &[PathBuf]| {
        let mut a = strings(&["merge"]);
        a.extend(parts.iter().map(|p| s(p)));
        a.extend(["--out".into(), s(&merged)]);
        a
    };
    fails(
        &merge(&[part(3, 3), part(1, 3)]),
        "missing shard(s) 2/3 of 3",
    );
    assert!(!merged.exists());

    // The failed shard, rerun, completes the set; merged in any order it is the whole file.
    std::fs::remove_dir(part(2, 3)).expect("rm obstacle");
    let mut rerun = features_args(&data, &out);
    rerun.extend(strings(&["--shard", "2/3"]));
    ok(&rerun, &[]);
    ok(&merge(&[part(3, 3), part(1, 3), part(2, 3)]), &[]);
    assert_eq!(FeatureSet::read(&merged).expect("merged"), want);

    // Shards of another split, or the same shard twice, are refused by name.
    let mut two = features_args(&data, &out);
    two.extend(strings(&["--shard", "1/2"]));
    ok(&two, &[]);
    fails(
        &merge(&[part(1, 3), part(2, 3), part(3, 3), part(1, 2)]),
        "number of shards 3 vs 2",
    );
    fails(
        &merge(&[part(1, 3), part(2, 3), part(2, 3)]),
        "shard 2/3 is given twice",
    );
}

#[test]
fn a_shard_of_ones_own_concept_keeps_the_whole_datasets_classes() {
    // Four clips of a concept baton does not know, sorted by label: shard 1/2 holds only `calm`
    // clips, yet its rows are labelled in the dataset's classes (calm, tense), as one process
    // labels them.
    let tmp = tempfile::tempdir().expect("tmp");
    let notes = tmp.path().join("notes");
    ok(&dataset_args(&notes), &[]);
    let data = tmp.path().join("mood");
    std::fs::create_dir_all(data.join("clips")).expect("mkdir");
    let mut manifest = String::new();
    for (i, (name, label)) in clip_names()
        .iter()
        .zip(["calm", "calm", "tense", "tense"])
        .enumerate()
    {
        std::fs::copy(notes.join(name), data.join(name)).expect("copy");
        manifest.push_str(&format!(
            "{{\"file\":\"{name}\",\"concept\":\"mood\",\"label\":\"{label}\",\"take\":{i}}}\n"
        ));
    }
    std::fs::write(data.join("manifest.jsonl"), manifest).expect("manifest");
    let whole = tmp.path().join("mood.safetensors");
    ok(&features_args(&data, &whole), &[]);
    let out = tmp.path().join("sharded.safetensors");
    all_succeed(&at_once(shards(&features_args(&data, &out), 2)));
    let mut merge = strings(&["merge"]);
    merge.extend((1..=2).map(|k| s(&Shard::new(k, 2).expect("shard").file_for(&out))));
    let merged = tmp.path().join("merged.safetensors");
    merge.extend(["--out".into(), s(&merged)]);
    ok(&merge, &[]);
    let want = FeatureSet::read(&whole).expect("whole");
    assert_eq!(want.classes, ["calm", "tense"]);
    assert_eq!(FeatureSet::read(&merged).expect("merged"), want);
}

#[test]
fn sweep_and_eval_shards_at_once_equal_one_process() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lib = tmp.path().join("lib");
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).expect("tiny");
    train_tone_classifier(&model, tmp.path(), &lib);
    let sweep = |out: &Path| {
        let mut a = strings(&[
            "sweep",
            "--prompt",
            "a tune",
            "--steer",
            "tones:all",
            "--strengths",
            "0,60",
            "--takes",
            "2",
            "--seconds",
            "0.2",
            "--top-k",
            "8",
            "--target",
            "high",
            "--model",
            TINY,
            "--clap-model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a"),
            "--directions",
        ]);
        a.extend([s(&lib), "--out".into(), s(out)]);
        a
    };
    let one = tmp.path().join("one");
    ok(&sweep(&one), &[]);
    let want = snapshot(&one);
    assert_eq!(
        want.len(),
        10,
        "4 takes, 4 records, sweep.json, tradeoff.png: {:?}",
        want.keys()
    );

    // Three shards at once, the third (strength 60, both seeds) failing on its first take.
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(sharded.join("s60.000-seed0.wav")).expect("obstacle");
    std::fs::write(
        sharded.join("sweep.json"),
        r#"{"settings": {}, "takes": []}"#,
    )
    .expect("empty sweep");
    let outs = at_once(shards(&sweep(&sharded), 3));
    assert!(outs[0].status.success() && outs[1].status.success());
    assert!(!outs[2].status.success(), "shard 3 wrote into a folder");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.join("sweep.json")).expect("read"))
            .expect("json");
    assert_eq!(doc["takes"].as_array().map(Vec::len), Some(2));

    // Rerun: the folder is the one-process folder, sweep.json included.
    std::fs::remove_dir(sharded.join("s60.000-seed0.wav")).expect("rm obstacle");
    let mut rerun = sweep(&sharded);
    rerun.extend(strings(&["--shard", "3/3"]));
    ok(&rerun, &[]);
    assert_eq!(snapshot(&sharded), want);
    // and a plain run after them renders nothing
    let out = ok(&sweep(&sharded), &[]);
    assert!(
        stderr(&out).contains("4 of 4 takes already"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&sharded), want);

    // All shards succeeding at once (four, one with nothing to do but finish).
    let at_once_dir = tmp.path().join("at-once");
    all_succeed(&at_once(shards(&sweep(&at_once_dir), 5)));
    assert_eq!(snapshot(&at_once_dir), want);

    // eval: shards' readings, merged, are the one-process readings file.
    let clips: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = tmp.path().join(format!("clip{i}.wav"));
            tone(&p, 110.0 * (i + 1) as f32, 0.3);
            p
        })
        .collect();
    let eval = |json: &Path| {
        let mut a = strings(&["eval"]);
        a.extend(clips.iter().map(|c| s(c)));
        a.extend(strings(&[
            "--probe",
            "tones:all",
            "--model",
            TINY,
            "--directions",
        ]));
        a.extend([s(&lib), "--json".into(), s(json)]);
        a
    };
    let whole = tmp.path().join("readings.json");
    ok(&eval(&whole), &[]);
    // Seven shards of five clips: two have none, and still write their (empty) part.
    let sharded = tmp.path().join("sharded-readings.json");
    all_succeed(&at_once(shards(&eval(&sharded), 7)));
    let part = |k| Shard::new(k, 7).expect("shard").file_for(&sharded);
    let merged = tmp.path().join("merged-readings.json");
    let mut merge = strings(&["merge"]);
    merge.extend((1..=7).rev().map(|k| s(&part(k))));
    merge.extend(["--out".into(), s(&merged)]);
    ok(&merge, &[]);
    assert_eq!(
        std::fs::read(&merged).expect("merged"),
        std::fs::read(&whole).expect("whole")
    );
    let mut incomplete = strings(&["merge"]);
    incomplete.extend([s(&part(2)), s(&part(5)), "--out".into(), s(&merged)]);
    fails(&incomplete, "missing shard(s) 1/7, 3/7, 4/7, 6/7, 7/7 of 7");
}
