//! Dataset folders: counts per concept, determinism, resume after an interruption (including a
//! full disk), and clear errors for bad input, through the library and the `baton dataset` CLI.

mod concepts_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton::audio::{read_wav_mono, AudioError, SampleFormat};
use baton::concepts::instruments::{family_key, syntheory_programs};
use baton::concepts::{
    clip_specs, read_manifest, write_dataset, ClipSink, Concept, ConceptError, DatasetJob,
    Instruments, Label, Renderer, SpecOptions, WavFiles,
};
use concepts_support::{soundfont, SR};

fn job(out: &Path, concept: Concept, programs: usize, limit: usize, seed: u64) -> DatasetJob {
    DatasetJob {
        out: out.to_path_buf(),
        concept,
        options: SpecOptions {
            instruments: Instruments::Count(programs),
            limit: Some(limit),
            seed,
        },
        format: SampleFormat::Float32,
        progress: false,
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

fn builtin() -> Renderer {
    Renderer::builtin(SR).expect("builtin")
}

#[test]
fn full_counts_and_labels_match_syntheory() {
    let expected = [
        (Concept::Notes, 9_936, 12),
        (Concept::Intervals, 39_744, 12),
        (Concept::Scales, 15_456, 7),
        (Concept::Chords, 13_248, 4),
        (Concept::Progressions, 20_976, 19),
        (Concept::Tempos, 4_025, 0),
        (Concept::TimeSignatures, 1_200, 8),
        (Concept::Timbres, 4_416, 13),
    ];
    for (concept, count, classes) in expected {
        let specs = clip_specs(concept, &SpecOptions::default()).expect("specs");
        assert_eq!(specs.len(), count, "{concept}");
        assert_eq!(concept.classes().len(), classes, "{concept}");
        let names: std::collections::HashSet<&str> =
            specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), count, "{concept}: file names are unique");
        let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
        for s in &specs {
            match &s.label {
                Label::Class(c) => {
                    assert!(concept.classes().contains(c), "{concept}: {c}");
                    *per_label.entry(c.clone()).or_default() += 1;
                }
                Label::Value(bpm) => assert!((50.0..=210.0).contains(bpm)),
            }
        }
        if concept == Concept::Timbres {
            // 12 roots x 4 figures per program; the families hold 5 to 8 of the 92 programs.
            assert_eq!(per_label.len(), classes);
            for (family, n) in &per_label {
                let programs = syntheory_programs()
                    .into_iter()
                    .filter(|&p| &family_key(p) == family)
                    .count();
                assert_eq!(*n, 48 * programs, "{family}");
            }
        } else if classes > 0 {
            assert_eq!(per_label.len(), classes, "{concept}");
            assert!(
                per_label.values().all(|&n| n == count / classes),
                "{concept}: {per_label:?}"
            );
        }
    }
}

#[test]
fn same_options_give_the_same_bytes_and_the_library_render_matches_the_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut renderers = vec![builtin()];
    renderers.extend(soundfont());
    for r in &renderers {
        for concept in [Concept::Chords, Concept::Tempos] {
            let a = tmp.path().join(format!("{}-{concept}-a", r.synth_name()));
            let b = tmp.path().join(format!("{}-{concept}-b", r.synth_name()));
            write_dataset(&job(&a, concept, 2, 6, 3), r, &WavFiles).expect("write a");
            write_dataset(&job(&b, concept, 2, 6, 3), r, &WavFiles).expect("write b");
            let (sa, sb) = (snapshot(&a), snapshot(&b));
            assert_eq!(sa.len(), 6 + 2, "6 clips, dataset.json, manifest.jsonl");
            assert!(sa == sb, "{concept} with {}: runs differ", r.synth_name());

            // what the probe stage gets in memory is what is on disk
            let entries = read_manifest(&a).expect("manifest");
            let specs = clip_specs(concept, &job(&a, concept, 2, 6, 3).options).expect("specs");
            for (entry, spec) in entries.iter().zip(&specs) {
                assert_eq!(entry.index, spec.index);
                assert_eq!(entry.label, spec.label);
                let path = baton::concepts::manifest::entry_path(&a, entry).expect("inside");
                let (disk, rate) = read_wav_mono(&path).expect("wav");
                assert_eq!(rate, SR);
                assert!(disk == r.render(spec).expect("render"), "{}", entry.file);
                let silent = disk.iter().all(|&x| x == 0.0);
                assert_eq!(entry.fields["is_silent"], serde_json::Value::Bool(silent));
            }
        }
    }
    // another seed moves the tempo windows
    let c = tmp.path().join("seed4");
    write_dataset(&job(&c, Concept::Tempos, 2, 6, 4), &builtin(), &WavFiles).expect("write");
    let d = tmp.path().join("builtin-tempos-a");
    let offsets = |dir: &Path| -> Vec<f64> {
        read_manifest(dir)
            .expect("manifest")
            .iter()
            .map(|e| e.fields["offset_s"].as_f64().expect("offset"))
            .collect()
    };
    assert_ne!(offsets(&c), offsets(&d));
}

/// Fails every write after the first `ok`, as a disk that fills up would.
struct FullDisk {
    ok: usize,
    done: AtomicUsize,
}

impl ClipSink for FullDisk {
    fn write_clip(
        &self,
        path: &Path,
        samples: &[f32],
        sample_rate: u32,
        format: SampleFormat,
    ) -> Result<(), AudioError> {
        if self.done.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return Err(AudioError::Write {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        WavFiles.write_clip(path, samples, sample_rate, format)
    }
}

#[test]
fn a_full_disk_mid_run_leaves_nothing_corrupt_and_the_run_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("notes");
    let j = job(&out, Concept::Notes, 3, 12, 0);
    let sink = FullDisk {
        ok: 5,
        done: AtomicUsize::new(0),
    };
    let err = write_dataset(&j, &builtin(), &sink).expect_err("the disk fills up");
    assert!(matches!(err, ConceptError::WriteClip { .. }), "{err}");
    assert!(err.to_string().contains("cannot write clip"), "{err}");

    // no manifest (the dataset is incomplete), no temp files, every clip present is whole
    assert!(!out.join("manifest.jsonl").exists());
    assert!(read_manifest(&out).is_err());
    let clips: Vec<PathBuf> = std::fs::read_dir(out.join("clips"))
        .expect("clips")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(clips.len(), 5, "{clips:?}");
    for c in &clips {
        let (samples, _) = read_wav_mono(c).expect("whole WAV");
        assert_eq!(samples.len(), 4 * SR as usize);
    }
    // an interrupted write_atomic would leave a temp file: the resume removes it
    std::fs::write(out.join("clips").join(".00001_x.wav.123.tmp"), b"partial").expect("tmp");

    let summary = write_dataset(&j, &builtin(), &WavFiles).expect("resume");
    assert_eq!(summary.total, 12);
    assert_eq!(summary.already_present, 5);
    assert_eq!(summary.rendered, 7);

    let fresh = tmp.path().join("fresh");
    write_dataset(
        &job(&fresh, Concept::Notes, 3, 12, 0),
        &builtin(),
        &WavFiles,
    )
    .expect("fresh");
    assert!(
        snapshot(&out) == snapshot(&fresh),
        "resumed run differs from a fresh one"
    );
}

#[test]
fn a_folder_holding_something_else_is_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("d");
    write_dataset(&job(&out, Concept::Notes, 1, 2, 0), &builtin(), &WavFiles).expect("notes");
    let before = snapshot(&out);
    for other in [
        job(&out, Concept::Chords, 1, 2, 0),
        job(&out, Concept::Notes, 1, 2, 9),
        job(&out, Concept::Notes, 2, 2, 0),
    ] {
        let err = write_dataset(&other, &builtin(), &WavFiles).expect_err("another dataset");
        assert!(matches!(err, ConceptError::OtherDataset { .. }), "{err}");
        assert!(err.to_string().contains("holds another dataset"), "{err}");
    }
    if let Some(sf) = soundfont() {
        let err = write_dataset(&job(&out, Concept::Notes, 1, 2, 0), &sf, &WavFiles)
            .expect_err("other synth");
        assert!(err.to_string().contains("synth"), "{err}");
    }
    assert!(snapshot(&out) == before);

    let stranger = tmp.path().join("photos");
    std::fs::create_dir(&stranger).expect("mkdir");
    std::fs::write(stranger.join("cat.jpg"), b"meow").expect("write");
    let err = write_dataset(
        &job(&stranger, Concept::Notes, 1, 2, 0),
        &builtin(),
        &WavFiles,
    )
    .expect_err("not empty");
    assert!(matches!(err, ConceptError::NotEmpty { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&stranger).expect("dir").count(), 1);
}

#[test]
fn bad_soundfonts_are_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("nope.sf2");
    let err = Renderer::soundfont(&missing, SR).expect_err("missing");
    assert!(err.to_string().contains("cannot read SoundFont"), "{err}");
    assert!(err.to_string().contains("nope.sf2"), "{err}");

    let garbage = tmp.path().join("garbage.sf2");
    std::fs::write(&garbage, vec![7u8; 4096]).expect("write");
    let err = Renderer::soundfont(&garbage, SR).expect_err("garbage");
    assert!(err.to_string().contains("not a valid SoundFont"), "{err}");

    // a real SoundFont cut short: must be an error, not a crash
    let head = match baton::concepts::find_soundfont(None) {
        baton::concepts::SoundFontLookup::Standard(p)
        | baton::concepts::SoundFontLookup::FromEnv(p)
            if p.is_file() =>
        {
            std::fs::read(p).expect("sf2")[..100_000].to_vec()
        }
        _ => b"RIFF\x00\x10\x00\x00sfbkLIST\x40\x00\x00\x00INFO".to_vec(),
    };
    let cut = tmp.path().join("cut.sf2");
    std::fs::write(&cut, head).expect("write");
    let err = Renderer::soundfont(&cut, SR).expect_err("truncated");
    assert!(err.to_string().contains("not a valid SoundFont"), "{err}");

    let err = Renderer::builtin(8000).expect_err("rate");
    assert!(err.to_string().contains("8000"), "{err}");
}

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_SOUNDFONT")
        .output()
        .expect("run baton")
}

#[test]
fn cli_writes_a_balanced_dataset_and_rejects_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("chords");
    let o = out.to_str().expect("utf-8");
    let run = baton(&[
        "dataset",
        "chords",
        "--out",
        o,
        "--instruments",
        "0,violin",
        "--limit",
        "8",
        "--builtin-synth",
        "--sample-rate",
        "16000",
        "--quiet",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let entries = read_manifest(&out).expect("manifest");
    assert_eq!(entries.len(), 8);
    let mut per_quality: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        assert!([Some(0), Some(40)].contains(&e.program));
        if let Label::Class(q) = &e.label {
            *per_quality.entry(q.clone()).or_default() += 1;
        }
        let (samples, rate) = read_wav_mono(&out.join(&e.file)).expect("wav");
        assert_eq!((samples.len(), rate), (64_000, 16_000));
    }
    assert_eq!(per_quality.len(), 4);
    assert!(per_quality.values().all(|&n| n == 2), "{per_quality:?}");

    let bad: [(&[&str], &str); 5] = [
        (&["dataset", "melodies", "--out"], "unknown concept"),
        (
            &["dataset", "notes", "--instruments", "kazoo,", "--out"],
            "kazoo",
        ),
        (
            &[
                "dataset",
                "notes",
                "--soundfont",
                "/nonexistent.sf2",
                "--out",
            ],
            "/nonexistent.sf2",
        ),
        (
            &["dataset", "notes", "--sample-rate", "1000", "--out"],
            "1000",
        ),
        (
            &["dataset", "scales", "--builtin-synth", "--out"],
            "holds another dataset",
        ),
    ];
    for (args, needle) in bad {
        let target = if needle == "holds another dataset" {
            o.to_string()
        } else {
            tmp.path().join("never").display().to_string()
        };
        let mut argv = args.to_vec();
        argv.push(&target);
        let run = baton(&argv);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(error_lines(&stderr), 1, "{args:?}: {stderr}");
        assert!(
            !tmp.path().join("never").exists(),
            "{args:?} created its folder"
        );
    }

    // A clip from an interrupted run that cannot be read back (its WAV error has a `source`
    // chain): one line that says what to do, and doing it works.
    let good: Vec<&str> = [
        "dataset",
        "chords",
        "--out",
        o,
        "--instruments",
        "0,violin",
        "--limit",
        "8",
        "--builtin-synth",
        "--sample-rate",
        "16000",
        "--quiet",
    ]
    .to_vec();
    std::fs::remove_file(out.join("manifest.jsonl")).expect("rm manifest");
    let clip = out.join(&entries[3].file);
    std::fs::write(&clip, b"not a wav").expect("corrupt");
    let run = baton(&good);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a corrupt clip was accepted");
    assert!(
        stderr.contains(&entries[3].file) && stderr.contains("delete it and run again"),
        "{stderr}"
    );
    assert_eq!(error_lines(&stderr), 1, "{stderr}");
    std::fs::remove_file(&clip).expect("rm clip");
    let run = baton(&good);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(read_manifest(&out).expect("manifest").len(), 8);

    // The manifest cannot be written (here: a folder is in its way): the I/O cause is part of
    // the one line, not repeated on a line of its own.
    std::fs::remove_file(out.join("manifest.jsonl")).expect("rm manifest");
    std::fs::create_dir(out.join("manifest.jsonl")).expect("mkdir");
    let run = baton(&good);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "wrote over a folder");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert_eq!(error_lines(&stderr), 1, "{stderr}");
}

/// Lines of an error report: the CLI prints each error as one line. Not counted: `note:` advice
/// printed before the work starts, and clap's pointer to `--help` under argument errors.
fn error_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("note:") && !l.starts_with("For more information, try"))
        .count()
}

/// CI sets BATON_REQUIRE_SOUNDFONT=1 after installing `timgm6mb-soundfont`: there a missing or
/// broken SoundFont fails here instead of every test silently falling back to the built-in synth.
#[test]
fn the_soundfont_loads_when_ci_requires_it() {
    match soundfont() {
        Some(r) => {
            assert!(r.uses_soundfont());
            let clip =
                &clip_specs(Concept::Notes, &SpecOptions::default()).expect("specs")[60 * 92];
            let audio = r.render(clip).expect("render");
            assert!(audio.iter().any(|&x| x.abs() > 1e-3), "middle C is silent");
        }
        None => eprintln!("no SoundFont installed: only the built-in synthesizer was tested"),
    }
}

#[test]
fn a_limit_above_the_concepts_clips_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("notes");
    let run = baton(&[
        "dataset",
        "notes",
        "--instruments",
        "0,",
        "--limit",
        "100000",
        "--builtin-synth",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("--limit 100000 is more than the 108 clips notes has"),
        "{stderr}"
    );
}
