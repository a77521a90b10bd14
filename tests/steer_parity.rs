//! Steering parity with the reference: tests/reference/steer_reference.py adds the same vectors
//! with forward hooks on transformers' decoder blocks during a greedy CFG-3 generation on the
//! tiny checkpoint (constant strength, a per-step linear schedule, conditional half only).
//! baton's codes must match exactly and its audio within 1e-4.

use std::collections::HashMap;
use std::path::PathBuf;

use baton::model::{GenerateOptions, MusicGen, ResidualHook, Sampling};
use baton::probe::DirectionBundle;
use baton::steer::{Direction, LayerWeights, Plan, PlanHook, Schedule, Term};
use candle_core::{DType, Device, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

fn reference() -> Reference {
    let path = fixtures().join("steer-reference.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    Reference {
        tensors: candle_core::safetensors::load(&path, &Device::Cpu).unwrap(),
        meta: meta.metadata().clone().unwrap_or_default(),
    }
}

fn steered(model: &MusicGen, r: &Reference, case: &str) -> Tensor {
    let prompts: Vec<String> = serde_json::from_str(&r.meta["prompts"]).unwrap();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let max_new_tokens: usize = r.meta["max_new_tokens"].parse().unwrap();
    let eta0: f64 = r.meta["eta0"].parse().unwrap();
    let seconds: f64 = r.meta["seconds"].parse().unwrap();
    let bundle = DirectionBundle::read(&fixtures().join("steer-direction.safetensors")).unwrap();
    let direction = Direction::from_bundle("test:random", bundle);

    // The reference's layer weights are the paper's exponential rule, computed in Python.
    let want_w: HashMap<String, f64> = serde_json::from_str(&r.meta["layer_weights"]).unwrap();
    for (l, w) in LayerWeights::default().weights(&direction) {
        assert!(
            (want_w[&l.to_string()] - w).abs() < 1e-12,
            "layer weight {l}"
        );
    }

    let schedule = match case {
        "linear" => Schedule::linear(0.0, 1.0, 0.0, seconds),
        _ => Schedule::constant(1.0),
    };
    let plan = Plan {
        terms: vec![Term {
            direction,
            strength: eta0,
            schedule,
            weights: LayerWeights::default(),
            gate: None,
            unit: Default::default(),
        }],
        conditional_only: case == "cond",
        ..Plan::default()
    };
    let mut hook = PlanHook::new(
        &plan,
        max_new_tokens,
        model.frame_rate(),
        model.num_layers(),
        model.hidden_size(),
        model.device(),
        DType::F32,
        &mut |_, _| Err("no curves".into()),
    )
    .unwrap();
    let options = GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Greedy,
        guidance_scale: r.meta["guidance_scale"].parse().unwrap(),
        seed: 0,
        negative_prompt: None,
    };
    model
        .generate(
            &prompts,
            &options,
            Some(&mut hook as &mut dyn ResidualHook),
            &mut |_, _| {},
        )
        .unwrap()
}

#[test]
fn steered_generation_matches_transformers_hooks() {
    let r = reference();
    let model = MusicGen::load(
        fixtures().join("tiny-a").to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    for case in ["const", "linear", "cond"] {
        let codes = steered(&model, &r, case);
        let want = &r.tensors[&format!("{case}.codes")];
        assert_eq!(
            codes.to_vec3::<i64>().unwrap(),
            want.to_vec3::<i64>().unwrap(),
            "{case}: codes differ from the reference"
        );
        assert_ne!(
            codes.to_vec3::<i64>().unwrap(),
            r.tensors["none.codes"].to_vec3::<i64>().unwrap(),
            "{case}: steering changed nothing"
        );
        if case == "const" {
            let audio = model.decode(&codes).unwrap();
            let want: Vec<Vec<f32>> = r.tensors["const.audio"].to_vec2().unwrap();
            for (a, b) in audio.iter().zip(&want) {
                assert_eq!(a.len(), b.len());
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(diff < 1e-4, "const: audio differs by {diff}");
            }
        }
    }
}
