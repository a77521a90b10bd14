//! `baton render` and `baton info` succeeding on the tiny-a checkpoint: batch file naming,
//! saved codes equal to the library's generation, 16-bit output, and a sharded checkpoint
//! generating exactly what the single-file one does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use baton::model::{GenerateOptions, MusicGen, Sampling};
use candle_core::{DType, Device, Tensor};

const PROMPTS: [&str; 2] = [
    "warm jazz piano",
    "a much longer prompt about loud rock drums",
];
/// The fewest steps that give whole frames for 4 codebooks, plus two: 5 frames.
const STEPS: usize = 8;
const FRAMES: usize = STEPS - 3;

fn tiny_a() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a")
}

/// Runs baton in `cwd`, offline; panics with its stderr on failure; returns stdout.
fn baton(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(cwd)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cwd.join("hf"))
        .output()
        .expect("run baton");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The CLI's render options for `--max-new-tokens STEPS --greedy` (default cfg 3.0, seed 0).
fn options() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: STEPS,
        sampling: Sampling::Greedy,
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    }
}

fn generate(model_dir: &Path) -> Tensor {
    let model = MusicGen::load(model_dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    model
        .generate(&PROMPTS, &options(), None, &mut |_, _| {})
        .unwrap()
}

fn codes_vec(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2().unwrap()
}

fn wav_spec(path: &Path) -> (hound::WavSpec, u32) {
    let reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (reader.spec(), reader.duration())
}

#[test]
fn batch_into_a_relative_folder_with_codes_and_a_stem_in_pcm16() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_a();
    let m = model.to_str().unwrap();
    let steps = STEPS.to_string();
    let common = [
        "render",
        "--model",
        m,
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        "--max-new-tokens",
        &steps,
        "--greedy",
    ];
    // `--out wav/`: a relative folder one level deep that does not exist yet.
    let mut args = common.to_vec();
    args.extend(["--out", "wav/", "--save-codes", "codes/"]);
    baton(&args, dir.path());
    let expected = generate(&model);
    for i in 0..2 {
        let wav = dir.path().join(format!("wav/prompt-{}.wav", i + 1));
        let (spec, samples) = wav_spec(&wav);
        assert_eq!(spec.sample_format, hound::SampleFormat::Float);
        assert_eq!(spec.bits_per_sample, 32);
        assert_eq!((spec.channels, spec.sample_rate), (1, 32000));
        assert_eq!(samples as usize, FRAMES * 640);

        let codes_path = dir
            .path()
            .join(format!("codes/prompt-{}.safetensors", i + 1));
        let saved = candle_core::safetensors::load(&codes_path, &Device::Cpu).unwrap();
        let codes = &saved["codes"];
        assert_eq!(codes.dtype(), DType::I64);
        assert_eq!(codes.dims(), &[4, FRAMES]);
        assert_eq!(
            codes_vec(codes),
            codes_vec(&expected.get(i).unwrap()),
            "saved codes of prompt {} differ from MusicGen::generate",
            i + 1
        );
    }

    // `--out stem.wav` for a batch: stem-1.wav and stem-2.wav next to it, 16-bit.
    let mut args = common.to_vec();
    args.extend(["--out", "take.wav", "--pcm16"]);
    baton(&args, dir.path());
    assert!(!dir.path().join("take.wav").exists());
    for i in 1..=2 {
        let (spec, samples) = wav_spec(&dir.path().join(format!("take-{i}.wav")));
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(samples as usize, FRAMES * 640);
    }
}

#[test]
fn info_names_the_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = baton(&["info", "--model", tiny_a().to_str().unwrap()], dir.path());
    for needle in [
        "3 blocks, hidden 32, 4 heads, ffn 64",
        "4 x 64 entries",
        "d_model 40",
        "32000 Hz mono, 640 samples/frame, 50 frames/s",
        "at most 5.1 s",
        "total",
    ] {
        assert!(out.contains(needle), "expected {needle:?} in:\n{out}");
    }
}

#[test]
fn sharded_checkpoint_generates_the_same_codes() {
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_a();
    let tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
        .expect("read tiny-a");
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let chunk: HashMap<&str, Tensor> = part
            .iter()
            .map(|n| (n.as_str(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&chunk, dir.path().join(&file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    assert!(!dir.path().join("model.safetensors").exists());
    assert_eq!(
        codes_vec(&generate(dir.path()).flatten_to(1).unwrap()),
        codes_vec(&generate(&src).flatten_to(1).unwrap())
    );
}
