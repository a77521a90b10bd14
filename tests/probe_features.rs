//! `baton features` end to end on a tiny checkpoint: a rendered concept dataset becomes a features
//! file whose rows are the pooled capture-mode block outputs of each clip.

use std::path::{Path, PathBuf};
use std::process::Command;

use baton::audio::{read_wav_mono, resample, SampleFormat};
use baton::concepts::{
    read_manifest, write_dataset, Concept, DatasetJob, Instruments, Renderer, SpecOptions, WavFiles,
};
use baton::model::MusicGen;
use baton::probe::extract::{pool, pooled_audio};
use baton::probe::{FeatureSet, Labels, Pooling};
use candle_core::{DType, Device};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `baton features DATASET --out OUT --model MODEL EXTRA..`; returns success and stderr
/// (checked for panics).
fn features_cmd(dataset: &Path, out: &Path, model: &Path, extra: &[&str]) -> (bool, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "features",
            dataset.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--model", model.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (run.status.success(), stderr)
}

fn notes_dataset(dir: &Path, sample_rate: u32, limit: usize) {
    let job = DatasetJob {
        out: dir.to_path_buf(),
        concept: Concept::Notes,
        options: SpecOptions {
            instruments: "1".parse::<Instruments>().unwrap(),
            limit: Some(limit),
            seed: 3,
        },
        format: SampleFormat::Float32,
        progress: false,
    };
    let renderer = Renderer::builtin(sample_rate).unwrap();
    write_dataset(&job, &renderer, &WavFiles).unwrap();
}

#[test]
fn features_are_pooled_capture_outputs_with_manifest_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("notes");
    notes_dataset(&data, 32000, 3);
    let out = tmp.path().join("feats.safetensors");
    // Typed relative to the package root, where cargo runs tests.
    let model_dir = PathBuf::from("tests/fixtures/tiny-a");
    let (ok, err) = features_cmd(&data, &out, &model_dir, &[]);
    assert!(ok, "{err}");

    let feats = FeatureSet::read(&out).unwrap();
    let model = MusicGen::load(model_dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(feats.n, 3);
    assert_eq!(feats.concept, "notes");
    // The model as an absolute path, whatever path was typed, so the file means the same
    // thing from any folder.
    let absolute = std::fs::canonicalize(&model_dir).unwrap();
    assert_eq!(feats.model, absolute.display().to_string());
    assert_eq!(feats.pooling, "mean");
    assert_eq!(feats.hidden_size, model.hidden_size());
    assert_eq!(feats.num_layers, Some(model.num_layers()));
    assert_eq!(
        feats.layers.keys().copied().collect::<Vec<_>>(),
        (0..model.num_layers()).collect::<Vec<_>>()
    );
    assert_eq!(feats.classes.len(), 12);

    let manifest = read_manifest(&data).unwrap();
    let Labels::Classes(ids) = &feats.labels else {
        panic!("notes are classes")
    };
    for (entry, &id) in manifest.iter().zip(ids) {
        let baton::concepts::Label::Class(name) = &entry.label else {
            panic!("class label expected")
        };
        assert_eq!(&feats.classes[id as usize], name);
    }

    // Row i of block l is the mean over frames of block l's capture-mode output for clip i, and
    // block l's residual norm the mean over clips and frames of each frame's L2 norm.
    let hidden = feats.hidden_size;
    let mut norm_sums = vec![0f64; model.num_layers()];
    for (i, entry) in manifest.iter().enumerate() {
        let (audio, _) = read_wav_mono(&data.join(&entry.file)).unwrap();
        let codes = model.encode(&audio).unwrap();
        let frames = codes.dim(2).unwrap();
        assert_eq!(frames, (audio.len() as f64 / 640.0).ceil() as usize);
        let layers: Vec<usize> = (0..model.num_layers()).collect();
        let blocks = model.capture(&codes, &layers).unwrap();
        for (l, block) in layers.iter().zip(&blocks) {
            let all: Vec<f32> = block.flatten_all().unwrap().to_vec1().unwrap();
            let expected: Vec<f32> = (0..hidden)
                .map(|h| (0..frames).map(|t| all[t * hidden + h]).sum::<f32>() / frames as f32)
                .collect();
            let row = &feats.layers[l][i * hidden..(i + 1) * hidden];
            for (a, b) in row.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "block {l} clip {i}: {a} vs {b}");
            }
            norm_sums[*l] += all
                .chunks_exact(hidden)
                .map(|frame| frame.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt())
                .sum::<f64>()
                / frames as f64;
        }
    }
    assert_eq!(feats.residual_norms.len(), model.num_layers());
    for (l, sum) in norm_sums.iter().enumerate() {
        let want = sum / manifest.len() as f64;
        let got = feats.residual_norms[&l] as f64;
        assert!(
            (got - want).abs() < 1e-4 * want,
            "block {l}: norm {got} vs {want}"
        );
    }
    // Different notes give different features.
    let l0 = &feats.layers[&0];
    assert_ne!(&l0[..hidden], &l0[hidden..2 * hidden]);
}

#[test]
fn last_pooling_takes_the_final_frame() {
    let t = candle_core::Tensor::arange(0f32, 12.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 4))
        .unwrap();
    let last: Vec<f32> = pool(&t, Pooling::Last)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(last, vec![8.0, 9.0, 10.0, 11.0]);
    let mean: Vec<f32> = pool(&t, Pooling::Mean)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(mean, vec![4.0, 5.0, 6.0, 7.0]);
}

#[test]
fn clips_at_another_rate_are_resampled_and_a_missing_dataset_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("notes16k");
    notes_dataset(&data, 16000, 1);
    let out = tmp.path().join("feats.safetensors");
    let model_dir = fixture("tiny-a");
    let (ok, err) = features_cmd(&data, &out, &model_dir, &["--layers", "1"]);
    assert!(ok, "{err}");
    let feats = FeatureSet::read(&out).unwrap();
    let model = MusicGen::load(model_dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    let entry = &read_manifest(&data).unwrap()[0];
    let (audio, rate) = read_wav_mono(&data.join(&entry.file)).unwrap();
    assert_eq!(rate, 16000);
    let want = pooled_audio(&model, &resample(&audio, 16000, 32000), &[1], Pooling::Mean)
        .unwrap()
        .remove(0);
    assert_eq!(feats.layers[&1], want);

    let out2 = tmp.path().join("feats2.safetensors");
    let (ok, err) = features_cmd(&tmp.path().join("nowhere"), &out2, &model_dir, &[]);
    assert!(!ok && err.contains("manifest.jsonl"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn repeated_and_unordered_layers_are_extracted_once_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("notes");
    notes_dataset(&data, 32000, 2);
    let model_dir = fixture("tiny-a");
    let all = tmp.path().join("all.safetensors");
    let (ok, err) = features_cmd(&data, &all, &model_dir, &[]);
    assert!(ok, "{err}");
    let picked = tmp.path().join("picked.safetensors");
    let (ok, err) = features_cmd(&data, &picked, &model_dir, &["--layers", "1,0,1"]);
    assert!(ok, "{err}");
    let (all, picked) = (
        FeatureSet::read(&all).unwrap(),
        FeatureSet::read(&picked).unwrap(),
    );
    assert_eq!(picked.layers.keys().copied().collect::<Vec<_>>(), [0, 1]);
    for l in [0, 1] {
        assert_eq!(picked.layers[&l], all.layers[&l], "block {l}");
    }
    // The block count of the model is recorded whichever blocks are kept.
    assert_eq!(picked.num_layers, all.num_layers);
}

#[test]
fn manifest_and_output_are_checked_before_the_model_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("notes");
    notes_dataset(&data, 32000, 1);
    let out = tmp.path().join("feats.safetensors");
    // No model here: any error about the dataset or --out must come before loading one.
    let no_model = tmp.path().join("no-model");

    let blocked = tmp.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let (ok, err) = features_cmd(&data, &blocked.join("f.st"), &no_model, &[]);
    assert!(!ok && err.contains("not a folder"), "{err}");
    assert!(err.contains("blocked"), "{err}");
    let (ok, err) = features_cmd(&data, tmp.path(), &no_model, &[]);
    assert!(!ok && err.contains("it is a folder"), "{err}");

    let manifest = data.join("manifest.jsonl");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let file = read_manifest(&data).unwrap()[0].file.clone();
    let outside = tmp.path().join("outside.wav");
    std::fs::copy(data.join(&file), &outside).unwrap();
    for bad in [
        "../outside.wav",
        outside.to_str().unwrap(),
        "clips/../../outside.wav",
    ] {
        std::fs::write(&manifest, good.replace(&file, bad)).unwrap();
        for model in [&no_model, &fixture("tiny-a")] {
            let (ok, err) = features_cmd(&data, &out, model, &[]);
            assert!(!ok, "{bad}: {err}");
            assert!(
                err.contains("must be a path inside the dataset folder"),
                "{err}"
            );
            assert!(!out.exists());
        }
    }

    std::fs::write(&manifest, "").unwrap();
    let (ok, err) = features_cmd(&data, &out, &no_model, &[]);
    assert!(!ok && err.contains("lists no clips"), "{err}");
}
