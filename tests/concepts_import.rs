//! `baton dataset NAME --from FOLDER`: the user's recordings as a dataset. Clips must be the
//! resampled mono mix of the source, cut where the manifest says; the folder must read back
//! through `baton features` and train; bad folders must fail before anything is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::audio::{read_wav_mono, resample, SampleFormat};
use baton::concepts::{
    import_folder, read_manifest, ConceptError, DatasetInfo, ImportJob, Label, ManifestEntry,
};
use baton::probe::{check_entries, DirectionBundle, Labels};
use serde_json::Map;

const SR: u32 = 32000;

/// Writes a 16-bit WAV whose channel `c` holds `signal(i) * (c + 1) / channels`.
fn wav(path: &Path, rate: u32, channels: u16, seconds: f64, hz: f64) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).expect("create");
    for i in 0..(rate as f64 * seconds) as usize {
        let x = 0.4 * (2.0 * std::f64::consts::PI * hz * i as f64 / rate as f64).sin();
        for c in 0..channels {
            let v = x * (c + 1) as f64 / channels as f64;
            w.write_sample((v * 32767.0) as i16).expect("sample");
        }
    }
    w.finalize().expect("finalize");
}

/// calm/: 9 s stereo at 44.1 kHz, 7 s mono at 32 kHz, 0.5 s (too short), 2 s of silence, a
/// text file; tense/: 3 s at 48 kHz in a nested folder.
fn recordings(root: &Path) -> PathBuf {
    let src = root.join("src");
    wav(&src.join("calm/long.wav"), 44100, 2, 9.0, 220.0);
    wav(&src.join("calm/seven.wav"), SR, 1, 7.0, 330.0);
    wav(&src.join("calm/blip.wav"), SR, 1, 0.5, 440.0);
    wav(&src.join("calm/quiet.wav"), SR, 1, 2.0, 0.0);
    std::fs::write(src.join("calm/notes.txt"), "not audio").expect("txt");
    wav(&src.join("tense/take 1/short.WAV"), 48000, 1, 3.0, 880.0);
    src
}

fn job(from: &Path, out: &Path) -> ImportJob {
    ImportJob {
        from: from.to_path_buf(),
        out: out.to_path_buf(),
        concept: "mood".into(),
        clip_seconds: 4.0,
        sample_rate: SR,
        format: SampleFormat::Float32,
        progress: false,
    }
}

#[test]
fn clips_are_the_resampled_mono_mix_cut_where_the_manifest_says() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = recordings(tmp.path());
    let out = tmp.path().join("data");
    let summary = import_folder(&job(&src, &out)).expect("import");

    // long: 0-4, 4-8 (the window ending at 9 s would add 1 s: dropped); seven: 0-4, 3-7 (adds
    // 3 s: kept); blip too short; quiet silent; short: one 3 s clip.
    assert_eq!(
        summary.classes,
        vec![("calm".to_string(), 4), ("tense".to_string(), 1)]
    );
    assert_eq!(
        (summary.files, summary.resampled, summary.silent),
        (5, 2, 1)
    );
    assert_eq!(summary.too_short, vec![src.join("calm/blip.wav")]);
    assert_eq!(summary.ignored, vec![src.join("calm/notes.txt")]);

    let entries = read_manifest(&out).expect("manifest");
    let starts: Vec<(String, f64, f64)> = entries
        .iter()
        .map(|e| {
            (
                e.fields["source"].as_str().expect("source").to_string(),
                e.fields["start_s"].as_f64().expect("start"),
                e.fields["seconds"].as_f64().expect("seconds"),
            )
        })
        .collect();
    let want = [
        ("calm/long.wav", 0.0, 4.0),
        ("calm/long.wav", 4.0, 4.0),
        ("calm/seven.wav", 0.0, 4.0),
        ("calm/seven.wav", 3.0, 4.0),
        ("tense/take 1/short.WAV", 0.0, 3.0),
    ];
    assert_eq!(
        starts,
        want.iter()
            .map(|(s, a, b)| (s.to_string(), *a, *b))
            .collect::<Vec<_>>()
    );
    for (i, e) in entries.iter().enumerate() {
        assert_eq!((e.index, e.concept.as_str()), (i, "mood"));
        let class = if i < 4 { "calm" } else { "tense" };
        assert_eq!(e.label, Label::Class(class.into()));
        // the clip is the source, mixed to mono and resampled, from start_s on
        let (source, rate) =
            read_wav_mono(&src.join(e.fields["source"].as_str().unwrap())).expect("source");
        let full = resample(&source, rate, SR);
        let start = (e.fields["start_s"].as_f64().unwrap() * SR as f64).round() as usize;
        let (clip, clip_rate) = read_wav_mono(&out.join(&e.file)).expect("clip");
        assert_eq!(clip_rate, SR);
        assert!(clip == full[start..start + clip.len()], "{}", e.file);
    }
    // stereo is mixed, not one channel taken: channel 2 is twice channel 1
    let (long, _) = read_wav_mono(&out.join(&entries[0].file)).expect("clip");
    let peak = long.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!((peak - 0.3).abs() < 0.01, "{peak}");

    let info = DatasetInfo::read(&out).expect("info").expect("present");
    assert_eq!(info.concept, "mood");
    assert_eq!(info.clips, 5);
    assert_eq!(info.imported_from.as_deref(), src.to_str());

    // features read it: the classes are the folders, sorted
    let plan = check_entries(&out, &entries).expect("plan");
    assert_eq!(plan.concept, "mood");
    assert_eq!(plan.classes, vec!["calm", "tense"]);
    assert_eq!(plan.labels, Labels::Classes(vec![0, 0, 0, 0, 1]));
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no staging folder left: {leftovers:?}");
}

#[test]
fn a_folder_that_cannot_be_imported_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = recordings(tmp.path());
    let out = tmp.path().join("data");
    let fails = |j: ImportJob, needle: &str| {
        let err = import_folder(&j).expect_err(needle).to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!j.out.exists(), "{needle}: {} was written", j.out.display());
    };

    fails(job(&tmp.path().join("nowhere"), &out), "is not a folder");
    let one = tmp.path().join("one");
    wav(&one.join("calm/a.wav"), SR, 1, 2.0, 220.0);
    fails(job(&one, &out), "at least two");
    let empty_class = tmp.path().join("empty_class");
    wav(&empty_class.join("calm/a.wav"), SR, 1, 2.0, 220.0);
    std::fs::create_dir_all(empty_class.join("tense")).expect("mkdir");
    fails(job(&empty_class, &out), "`tense` holds no .wav");
    let silent = tmp.path().join("silent_class");
    wav(&silent.join("calm/a.wav"), SR, 1, 2.0, 220.0);
    wav(&silent.join("tense/a.wav"), SR, 1, 2.0, 0.0);
    fails(
        job(&silent, &out),
        "no clip of at least 1 s of sound in class `tense`",
    );
    let mut bad_rate = job(&src, &out);
    bad_rate.sample_rate = 0;
    fails(bad_rate, "sample rate 0 Hz is out of range");
    let loose = tmp.path().join("loose");
    wav(&loose.join("a.wav"), SR, 1, 2.0, 220.0);
    fails(
        job(&loose, &out),
        "the 1 .wav file(s) directly in it belong to no class",
    );
    fails(
        job(&src, &src.join("calm/data")),
        "inside the folder being imported",
    );
    let staging: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("baton-import"))
        .collect();
    assert!(
        staging.is_empty(),
        "a failed import left its staging folder"
    );

    let mut bad_name = job(&src, &out);
    bad_name.concept = "my mood".into();
    fails(bad_name, "letters, digits");
    let mut builtin = job(&src, &out);
    builtin.concept = "chords".into();
    fails(builtin, "`calm` is not one of its classes");
    let mut long = job(&src, &out);
    long.clip_seconds = 60.0;
    fails(long, "out of range");

    // an occupied --out is left as it was
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    let err = import_folder(&job(&src, &out)).expect_err("occupied");
    assert!(matches!(err, ConceptError::NotEmpty { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).expect("kept"),
        "mine"
    );
    // an empty one is used
    std::fs::remove_file(out.join("keep.txt")).expect("rm");
    import_folder(&job(&src, &out)).expect("empty --out");
    assert_eq!(read_manifest(&out).expect("manifest").len(), 5);
    // and a second import into it is refused as such
    let err = import_folder(&job(&src, &out))
        .expect_err("again")
        .to_string();
    assert!(err.contains("holds a dataset already"), "{err}");
}

#[test]
fn damaged_and_empty_files_are_left_out_and_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    wav(&src.join("calm/a.wav"), SR, 1, 2.0, 220.0);
    wav(&src.join("tense/b.wav"), SR, 1, 2.0, 880.0);
    wav(&src.join("tense/empty.wav"), SR, 1, 0.0, 880.0);
    std::fs::write(src.join("tense/z.wav"), b"RIFF but not really").expect("write");
    let summary = import_folder(&job(&src, &tmp.path().join("data"))).expect("import");
    assert_eq!(summary.clips(), 2);
    assert_eq!(summary.too_short, vec![src.join("tense/empty.wav")]);
    assert_eq!(summary.unreadable.len(), 1);
    assert_eq!(summary.unreadable[0].0, src.join("tense/z.wav"));
}

#[test]
fn the_working_folder_can_be_the_dataset_folder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = recordings(tmp.path());
    let here = tmp.path().join("here");
    std::fs::create_dir(&here).expect("mkdir");
    let run = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "dataset",
            "mood",
            "--from",
            src.to_str().expect("utf-8"),
            "--out",
            ".",
        ])
        .arg("--quiet")
        .current_dir(&here)
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(read_manifest(&here).expect("manifest").len(), 5);
    // nothing hidden left behind, in it or beside it
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&here), ["clips", "dataset.json", "manifest.jsonl"]);
    assert_eq!(names(tmp.path()), ["here", "src"]);
}

fn entry(concept: &str, label: Label) -> ManifestEntry {
    ManifestEntry {
        file: "a.wav".into(),
        concept: concept.into(),
        label,
        index: 0,
        program: None,
        seed: None,
        fields: Map::new(),
    }
}

#[test]
fn a_hand_written_manifest_of_any_concept_reads_as_classes_or_values() {
    let dir = Path::new("/data");
    let values = [
        entry("brightness", Label::Value(0.2)),
        entry("brightness", Label::Value(0.9)),
    ];
    let plan = check_entries(dir, &values).expect("regression");
    assert!(plan.classes.is_empty());
    assert_eq!(plan.labels, Labels::Values(vec![0.2, 0.9]));

    let classes = [
        entry("mood", Label::Class("tense".into())),
        entry("mood", Label::Class("calm".into())),
    ];
    let plan = check_entries(dir, &classes).expect("classes");
    assert_eq!(plan.classes, vec!["calm", "tense"]);
    assert_eq!(plan.labels, Labels::Classes(vec![1, 0]));

    let one = [entry("mood", Label::Class("calm".into()))];
    let err = check_entries(dir, &one).expect_err("one class").to_string();
    assert!(err.contains("every clip is labelled `calm`"), "{err}");
    let mixed = [
        entry("mood", Label::Class("calm".into())),
        entry("mood", Label::Class("tense".into())),
        entry("mood", Label::Value(1.0)),
    ];
    let err = check_entries(dir, &mixed).expect_err("mixed").to_string();
    assert!(err.contains("numeric label"), "{err}");
    // a built-in concept keeps its own classes and their order
    let notes = [entry("notes", Label::Class("D".into()))];
    let plan = check_entries(dir, &notes).expect("notes");
    assert_eq!(plan.classes.len(), 12);
    assert_eq!(plan.labels, Labels::Classes(vec![2]));
}

fn baton(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .expect("run baton");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn recordings_go_from_folder_to_direction_bundle_on_the_command_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let src = tmp.path().join("src");
    for k in 0..8 {
        wav(
            &src.join(format!("low/{k}.wav")),
            44100,
            2,
            1.5,
            150.0 + 10.0 * k as f64,
        );
        wav(
            &src.join(format!("high/{k}.wav")),
            48000,
            1,
            1.5,
            900.0 + 30.0 * k as f64,
        );
    }
    let data = tmp.path().join("data");
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();
    let (ok, err) = baton(&[
        "dataset",
        "pitch_height",
        "--from",
        &p(&src),
        "--out",
        &p(&data),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("pitch_height: 16 clips"), "{err}");
    assert!(
        err.contains("high 8, low 8") && err.contains("16 file(s) resampled"),
        "{err}"
    );

    // features and train make the folders of their outputs
    let bundle = tmp.path().join("lib/pitch_height/low.safetensors");
    let read = features_then_train(
        &data,
        &tmp.path().join("feats/f.safetensors"),
        &bundle,
        &["--positive", "low"],
    );
    assert_eq!(
        (read.concept.as_str(), read.target.as_str()),
        ("pitch_height", "low")
    );

    // --from decides what the name means, and what goes with it
    let (ok, err) = baton(&[
        "dataset",
        "pitch_height",
        "--out",
        &p(&tmp.path().join("x")),
    ]);
    assert!(
        !ok && err.contains("unknown concept") && err.contains("--from"),
        "{err}"
    );
    let (ok, err) = baton(&[
        "dataset",
        "m",
        "--from",
        &p(&src),
        "--instruments",
        "8",
        "--out",
        &p(&tmp.path().join("y")),
    ]);
    assert!(!ok && err.contains("--instruments"), "{err}");
    let (ok, err) = baton(&[
        "dataset",
        "notes",
        "--clip-seconds",
        "2",
        "--out",
        &p(&tmp.path().join("z")),
    ]);
    assert!(!ok && err.contains("--from"), "{err}");
}

/// `baton features DATA --out FEATS` on the tiny checkpoint, then `baton train FEATS --out
/// BUNDLE --search 3 EXTRA..`; returns the bundle.
fn features_then_train(
    data: &Path,
    feats: &Path,
    bundle: &Path,
    extra: &[&str],
) -> DirectionBundle {
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();
    let model = fixture("tiny-a");
    let (ok, err) = baton(&[
        "features",
        &p(data),
        "--out",
        &p(feats),
        "--model",
        &p(&model),
    ]);
    assert!(ok, "{err}");
    let mut args = vec!["train".to_string(), p(feats), "--out".into(), p(bundle)];
    args.extend(["--search", "3"].iter().chain(extra).map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, err) = baton(&args);
    assert!(ok, "{err}");
    DirectionBundle::read(bundle).expect("bundle")
}

#[test]
fn a_hand_written_manifest_with_numbers_trains_a_regression_probe() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("brightness");
    let mut manifest = String::new();
    for k in 0..12 {
        let file = format!("clips/{k}.wav");
        wav(&data.join(&file), 44100, 1, 1.2, 200.0 + 150.0 * k as f64);
        manifest.push_str(&format!(
            "{{\"file\":\"{file}\",\"concept\":\"brightness\",\"label\":{}}}\n",
            k as f64 / 11.0
        ));
    }
    std::fs::write(data.join("manifest.jsonl"), manifest).expect("manifest");
    let read = features_then_train(
        &data,
        &tmp.path().join("f.safetensors"),
        &tmp.path().join("lib/brightness/value.safetensors"),
        &[],
    );
    assert_eq!(
        (
            read.concept.as_str(),
            read.target.as_str(),
            read.metric.as_str()
        ),
        ("brightness", "value", "mse")
    );
}
