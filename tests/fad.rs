//! `baton fad` and the distances under it: the Fréchet distance and kernel MMD² match the
//! reference implementations (scipy's sqrtm as in fadtk, kadtk's unbiased MMD²) on the fixed
//! sets of tests/fixtures/fad/reference.json (made by tests/reference/fad_reference.py); the
//! command reports them for folders of WAVs embedded by the tiny checkpoint's codec, and refuses
//! bad input with a clear message; `--embedding clap` measures the tiny CLAP checkpoint's window
//! embeddings.

mod probe_support;

use std::path::Path;

use baton::audio::{write_wav, SampleFormat};
use baton::eval::distance::{
    frechet_distance, frechet_leave_one_out, kernel_distance, median_pairwise_distance,
    FrechetReference, Gaussian,
};
use baton::eval::embed::{Embedder, Embedding, FileEmbedding};
use baton::eval::{audio_distances, wav_files, EvalError};
use candle_core::Device;
use faer::Mat;
use probe_support::{baton, tone, TINY};

fn matrix(v: &serde_json::Value) -> Mat<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

fn close(got: f64, want: f64, what: &str) {
    let rel = (got - want).abs() / want.abs().max(1e-12);
    assert!(
        rel < 1e-6,
        "{what}: {got} vs reference {want} (relative {rel:e})"
    );
}

#[test]
fn distances_match_the_reference_implementations() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fad/reference.json"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (x, y) = (matrix(&case["reference"]), matrix(&case["generated"]));
        let files: Vec<usize> = serde_json::from_value(case["files"].clone()).unwrap();
        let mut groups = Vec::new();
        let mut start = 0;
        for n in files {
            groups.push(start..start + n);
            start += n;
        }
        close(
            frechet_distance(x.as_ref(), y.as_ref()).unwrap(),
            case["fd"].as_f64().unwrap(),
            &format!("{name} fd"),
        );
        let given = case["bandwidth_given"].as_f64();
        if given.is_none() {
            close(
                median_pairwise_distance(x.as_ref()),
                case["bandwidth"].as_f64().unwrap(),
                &format!("{name} bandwidth"),
            );
        }
        let k = kernel_distance(x.as_ref(), y.as_ref(), &groups, given).unwrap();
        close(
            k.kad(),
            case["kad"].as_f64().unwrap(),
            &format!("{name} kad"),
        );
        let reference = FrechetReference::new(Gaussian::fit(x.as_ref()).unwrap()).unwrap();
        let loo = frechet_leave_one_out(&reference, y.as_ref(), &groups).unwrap();
        for (i, (got, want)) in loo
            .iter()
            .zip(case["fd_leave_one_out"].as_array().unwrap())
            .enumerate()
        {
            // A difference of two distances: compared to the distance's own scale.
            let want = want.as_f64().unwrap();
            let scale = case["fd"].as_f64().unwrap().abs();
            assert!(
                (got.unwrap() - want).abs() / scale < 1e-6,
                "{name} file {i}: leave-one-out {got:?} vs {want}"
            );
        }
        for (i, (got, want)) in k
            .per_group
            .iter()
            .zip(case["kad_alone"].as_array().unwrap())
            .enumerate()
        {
            match (got, want.as_f64()) {
                (Some(g), Some(w)) => close(g * 100.0, w, &format!("{name} file {i} kad alone")),
                (None, None) => {}
                other => panic!("{name} file {i}: {other:?}"),
            }
        }
    }
}

/// One file's rows for the library-level checks.
fn file(name: &str, rows: Mat<f64>) -> FileEmbedding {
    FileEmbedding {
        path: name.into(),
        rows,
    }
}

#[test]
fn sets_of_different_dimensions_or_too_few_rows_are_refused() {
    let a = file("a.wav", Mat::from_fn(5, 3, |i, j| (i * 3 + j) as f64));
    let b = file("b.wav", Mat::from_fn(5, 4, |i, j| (i + j) as f64));
    let (one_a, one_b) = (std::slice::from_ref(&a), std::slice::from_ref(&b));
    let e = audio_distances(Embedding::Encodec, one_a, one_b, None).unwrap_err();
    assert!(
        matches!(
            e,
            EvalError::Dims {
                reference: 3,
                generated: 4
            }
        ),
        "{e}"
    );
    // Within one set too: the file is named.
    let both = [a.clone(), b.clone()];
    let e = audio_distances(Embedding::Encodec, &both, one_a, None).unwrap_err();
    assert!(e.to_string().contains("b.wav"), "{e}");
    let one = file("one.wav", Mat::from_fn(1, 3, |_, j| j as f64));
    let e = audio_distances(Embedding::Encodec, &[a], &[one], None).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
}

/// Writes `n` tones around `hz` into `dir` (0.2 s each at 32 kHz: 10 codec frames).
fn tones(dir: &Path, hz: f32, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        tone(
            &dir.join(format!("t{k}.wav")),
            hz * (1.0 + 0.05 * k as f32),
            0.3 + 0.1 * k as f32,
        );
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fad_reports_the_codec_distances_of_two_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (real, gen) = (dir.path().join("real"), dir.path().join("gen"));
    tones(&real, 220.0, 4);
    tones(&gen, 1500.0, 3);
    let out = dir.path().join("fad.json");
    let run = baton(&[
        "fad",
        real.to_str().unwrap(),
        gen.to_str().unwrap(),
        "--model",
        TINY,
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("embedding  encodec (16 dimensions)"),
        "{stdout}"
    );
    assert!(stdout.contains("reference  4 files, 40 rows"), "{stdout}");
    assert!(stdout.contains("generated  3 files, 30 rows"), "{stdout}");
    assert!(stdout.contains("FAD") && stdout.contains("KAD"), "{stdout}");

    // The numbers are the library's on the same embeddings.
    let embedder = Embedder::load(Embedding::Encodec, TINY, &Device::Cpu).unwrap();
    let embed = |d: &Path| {
        embedder
            .embed_files(&wav_files(d).unwrap(), &mut || {})
            .unwrap()
    };
    let want = audio_distances(Embedding::Encodec, &embed(&real), &embed(&gen), None).unwrap();
    let doc = json(&out);
    assert_eq!(doc["embedding"], "encodec");
    assert_eq!(doc["fad"].as_f64().unwrap(), want.fad);
    assert_eq!(doc["kad"].as_f64().unwrap(), want.kad);
    assert_eq!(doc["kad_scale"].as_f64().unwrap(), 100.0);
    assert!(want.fad > 0.0 && want.kad > 0.0, "{want:?}");
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for f in files {
        assert_eq!(f["rows"], 10);
        assert!(f["fad_leave_one_out"].as_f64().is_some(), "{f}");
        assert!(f["kad_alone"].as_f64().unwrap() > 0.0, "{f}");
    }

    // A folder against itself: FAD 0 (up to round-off); the unbiased KAD is not exactly 0 (the
    // cross term keeps the diagonal) but small next to the distance between the two folders.
    let run = baton(&[
        "fad",
        real.to_str().unwrap(),
        real.to_str().unwrap(),
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
    let doc = json(&out);
    assert!(
        doc["fad"].as_f64().unwrap().abs() < 1e-6 * want.fad.max(1.0),
        "{doc}"
    );
    assert!(doc["kad"].as_f64().unwrap().abs() < want.kad, "{doc}");
}

fn fails(args: &[&str], needle: &str) {
    let run = baton(args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let real = d("real");
    tones(Path::new(&real), 220.0, 2);
    std::fs::create_dir_all(d("empty")).unwrap();
    std::fs::create_dir_all(d("texts")).unwrap();
    std::fs::write(dir.path().join("texts/notes.txt"), "not audio").unwrap();
    std::fs::create_dir_all(d("broken")).unwrap();
    std::fs::write(dir.path().join("broken/bad.wav"), b"RIFF....not a wav").unwrap();
    std::fs::create_dir_all(d("short")).unwrap();
    let blip: Vec<f32> = (0..100).map(|i| (i as f32 * 0.1).sin()).collect();
    write_wav(
        &dir.path().join("short/blip.wav"),
        &blip,
        32000,
        SampleFormat::Float32,
    )
    .unwrap();

    fails(
        &["fad", &real, &d("missing"), "--model", TINY],
        "no such folder",
    );
    fails(
        &["fad", &real, &d("empty"), "--model", TINY],
        "the folder is empty",
    );
    fails(
        &["fad", &real, &d("texts"), "--model", TINY],
        "no .wav files",
    );
    fails(&["fad", &real, &d("broken"), "--model", TINY], "bad.wav");
    fails(&["fad", &real, &d("short"), "--model", TINY], "at least 2");
    // CLAP: a MusicGen folder is not a CLAP model; one file is one row, too few.
    fails(
        &[
            "fad",
            &real,
            &real,
            "--embedding",
            "clap",
            "--clap-model",
            TINY,
        ],
        "not a CLAP model",
    );
    // A 0 s file is named.
    std::fs::create_dir_all(d("silent")).unwrap();
    write_wav(
        &dir.path().join("silent/nothing.wav"),
        &[],
        48_000,
        SampleFormat::Float32,
    )
    .unwrap();
    fails(
        &[
            "fad",
            &real,
            &d("silent"),
            "--embedding",
            "clap",
            "--clap-model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a"),
        ],
        "nothing.wav has no samples",
    );
    let one = d("one");
    tones(Path::new(&one), 440.0, 1);
    fails(
        &[
            "fad",
            &real,
            &one,
            "--embedding",
            "clap",
            "--clap-model",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a"),
        ],
        "at least 2",
    );
    fails(
        &["fad", &real, &real, "--model", TINY, "--embedding", "mfcc"],
        "expected clap or encodec",
    );
    fails(
        &["fad", &real, &real, "--model", TINY, "--bandwidth", "0"],
        "--bandwidth must be a positive number",
    );
    fails(
        &[
            "fad",
            &real,
            &real,
            "--model",
            TINY,
            "--json",
            &d("nowhere/out.json"),
        ],
        "does not exist",
    );
}

/// The tiny CLAP checkpoint (random weights, 10 s windows at 48 kHz like laion's).
const TINY_CLAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a");

#[test]
fn fad_in_the_clap_embedding_is_the_library_s_on_clap_window_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (real, gen) = (dir.path().join("real"), dir.path().join("gen"));
    tones(&real, 220.0, 3);
    tones(&gen, 1500.0, 2);
    // A 12 s stereo file at 16 kHz: two 10 s windows (0-10 s, 2-12 s), so two rows.
    let long: Vec<f32> = (0..12 * 16_000 * 2)
        .map(|i| ((i / 2) as f32 / 16_000.0 * 660.0 * std::f32::consts::TAU).sin() * 0.3)
        .collect();
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(gen.join("z-long.wav"), spec).unwrap();
    for s in &long {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    let out = dir.path().join("fad.json");
    let run = baton(&[
        "fad",
        real.to_str().unwrap(),
        gen.to_str().unwrap(),
        "--embedding",
        "clap",
        "--clap-model",
        TINY_CLAP,
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let clap = baton::eval::clap::Clap::load(TINY_CLAP, &Device::Cpu).unwrap();
    let dim = clap.dim();
    assert!(
        stdout.contains(&format!("embedding  clap ({dim} dimensions)")),
        "{stdout}"
    );
    assert!(stdout.contains("reference  3 files, 3 rows"), "{stdout}");
    assert!(stdout.contains("generated  3 files, 4 rows"), "{stdout}");

    // The same numbers from the library: each file's rows are CLAP's window embeddings (a
    // short file's one row is its clip embedding, `embed_audio`).
    let rows = |d: &Path| -> Vec<FileEmbedding> {
        wav_files(d)
            .unwrap()
            .into_iter()
            .map(|path| {
                let (samples, rate) = baton::audio::read_wav_mono(&path).unwrap();
                let windows = clap.embed_windows(&samples, rate).unwrap();
                if windows.len() == 1 {
                    assert_eq!(windows[0], clap.embed_audio(&samples, rate).unwrap());
                }
                let m = Mat::from_fn(windows.len(), dim, |i, j| windows[i][j] as f64);
                file(path.to_str().unwrap(), m)
            })
            .collect()
    };
    let (reference, generated) = (rows(&real), rows(&gen));
    assert_eq!(
        generated[2].rows.nrows(),
        2,
        "the 12 s file has two windows"
    );
    let want = audio_distances(Embedding::Clap, &reference, &generated, None).unwrap();
    let doc = json(&out);
    assert_eq!(doc["embedding"], "clap");
    assert_eq!(doc["dim"].as_u64().unwrap() as usize, dim);
    let close = |key: &str, want: f64| {
        let got = doc[key].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-9),
            "{key}: {got} against the library's {want}"
        );
    };
    close("fad", want.fad);
    close("kad", want.kad);
    close("kad_bandwidth", want.kad_bandwidth);
    assert!(want.fad > 0.0, "{want:?}");
    let files = doc["files"].as_array().unwrap();
    let per_file: Vec<u64> = files.iter().map(|f| f["rows"].as_u64().unwrap()).collect();
    assert_eq!(per_file, [1, 1, 2]);
    assert!(files[2]["path"].as_str().unwrap().ends_with("z-long.wav"));
}
