//! `--negative-prompt`: the unconditional half of the guidance batch is conditioned on the
//! negative text instead of on nothing, so the first token equals the argmax of
//! `l(N) + s * (l(P) - l(N))` from two teacher-forced passes; batch items still get what they
//! get alone.

use std::path::PathBuf;

use baton::model::{GenerateOptions, MusicGen, Sampling};
use candle_core::{DType, Device, Tensor};

fn tiny() -> (MusicGen, i64) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let bos = config["decoder_start_token_id"].as_i64().unwrap();
    let model = MusicGen::load(dir.to_str().unwrap(), &Device::Cpu, DType::F32).unwrap();
    (model, bos)
}

fn options(negative: Option<&str>, sampling: Sampling) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 12,
        sampling,
        guidance_scale: 3.0,
        seed: 4,
        negative_prompt: negative.map(str::to_string),
    }
}

fn generate(model: &MusicGen, prompts: &[&str], options: &GenerateOptions) -> Vec<Vec<Vec<i64>>> {
    model
        .generate(prompts, options, None, &mut |_, _| {})
        .unwrap()
        .to_vec3()
        .unwrap()
}

#[test]
fn guidance_steers_away_from_the_negative_prompt() {
    let (model, bos) = tiny();
    let prompts = ["lofi piano", "a jazz trio with brushes and upright bass"];
    let negative = "distorted drums";
    let with = generate(&model, &prompts, &options(Some(negative), Sampling::Greedy));
    let without = generate(&model, &prompts, &options(None, Sampling::Greedy));
    assert_ne!(with, without, "the negative prompt changed nothing");

    // Step 0 reads BOS on every codebook and only codebook 0 is free (the delay pattern): its
    // token is the argmax of the guided logits of the two passes.
    let start = Tensor::full(bos, (1, model.num_codebooks(), 1), &Device::Cpu).unwrap();
    let first_logits = |text: &str| -> Vec<f32> {
        let out = model.teacher_forced(Some(&[text]), &start, &[]).unwrap();
        out.logits
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let uncond = first_logits(negative);
    for (b, prompt) in prompts.iter().enumerate() {
        let cond = first_logits(prompt);
        let guided: Vec<f32> = cond
            .iter()
            .zip(&uncond)
            .map(|(c, u)| u + 3.0 * (c - u))
            .collect();
        let best = guided
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i64)
            .unwrap();
        assert_eq!(with[b][0][0], best, "prompt {b}");
    }

    // Sampled, each item of the batch is what it is alone (prompts and negative padded alike).
    let sampled = Sampling::TopK {
        k: 8,
        temperature: 1.0,
    };
    let batch = generate(&model, &prompts, &options(Some(negative), sampled));
    for (b, prompt) in prompts.iter().enumerate() {
        let mut alone = options(Some(negative), sampled);
        alone.seed += b as u64;
        assert_eq!(batch[b], generate(&model, &[prompt], &alone)[0], "item {b}");
    }

    // A negative prompt needs guidance, and text.
    let mut unguided = options(Some(negative), Sampling::Greedy);
    unguided.guidance_scale = 1.0;
    let err = model
        .generate(&prompts, &unguided, None, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs a guidance scale (cfg) above 1"),
        "{err}"
    );
    let err = model
        .generate(
            &prompts,
            &options(Some("  "), Sampling::Greedy),
            None,
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("negative prompt is empty"), "{err}");
}

#[test]
fn render_flag_and_recipe_verb_reach_generation() {
    let (model, _) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let tiny_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-a");
    let baton = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.success(), stderr)
    };
    let common = [
        "--model",
        tiny_dir.to_str().unwrap(),
        "--greedy",
        "--max-new-tokens",
        "12",
        "--negative-prompt",
        "distorted drums",
    ];
    let (ok, err) = baton(
        &[
            &[
                "render",
                "--prompt",
                "lofi piano",
                "--save-codes",
                "c.safetensors",
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let saved =
        candle_core::safetensors::load(dir.path().join("c.safetensors"), &Device::Cpu).unwrap();
    let saved: Vec<Vec<i64>> = saved["codes"].to_vec2().unwrap();
    let want = generate(
        &model,
        &["lofi piano"],
        &options(Some("distorted drums"), Sampling::Greedy),
    );
    assert_eq!(saved, want[0]);

    // `baton render NAME.rhai --model MODEL --out out` of a recipe written from `source`.
    let recipe = |name: &str, source: &str, model: &str| {
        std::fs::write(dir.path().join(name), source).unwrap();
        baton(&["render", name, "--model", model, "--out", "out"])
    };
    let tiny_model = tiny_dir.to_str().unwrap();

    // The same piece from a recipe.
    let (ok, err) = recipe(
        "neg.rhai",
        r#"render(piece("lofi piano", 1.0).negative("distorted drums").greedy(), "r.wav");"#,
        tiny_model,
    );
    assert!(ok, "{err}");
    assert!(dir.path().join("out/r.wav").is_file());

    // Refused before the model loads: without guidance, or empty.
    let (ok, err) = baton(&[&["render", "--prompt", "x", "--cfg", "1"][..], &common].concat());
    assert!(
        !ok && err.contains("needs a guidance scale (cfg) above 1"),
        "{err}"
    );
    assert!(!err.contains("loading"), "the model loaded first: {err}");
    let (ok, err) = recipe(
        "bad.rhai",
        r#"render(piece("x", 1.0).negative("drums").cfg(1.0), "r.wav");"#,
        "/nonexistent",
    );
    assert!(
        !ok && err.contains("needs a guidance scale (cfg) above 1"),
        "{err}"
    );
    // ... and a recipe can take a negative prompt back.
    let (ok, err) = recipe(
        "back.rhai",
        r#"render(piece("x", 1.0).negative("drums").negative(()).cfg(1.0).greedy(), "b.wav");"#,
        tiny_model,
    );
    assert!(ok, "{err}");
    // Flags a recipe sets per piece are refused next to one, not silently ignored.
    let (ok, err) = baton(&[
        "render",
        "neg.rhai",
        "--negative-prompt",
        "drums",
        "--model",
        "/nonexistent",
    ]);
    assert!(
        !ok && err.contains("--negative-prompt is for --prompt renders"),
        "{err}"
    );
}
