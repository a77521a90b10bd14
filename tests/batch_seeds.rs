//! A batch item samples with its own RNG (seeded `seed + b`), so each prompt of a batch gets the
//! codes it gets generated alone with that seed: with guidance, with steering, and with prompts
//! of different lengths (padded in the batch), and under a stochastic gate (item b is gated as
//! the plan seeded `seed + b` gates it alone).

mod steer_common;

use baton::model::{GenerateOptions, MusicGen, Sampling};
use baton::steer::{Direction, LayerWeights, Plan, Schedule, Term};
use candle_core::{DType, Device};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-a");

fn options(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 14,
        sampling: Sampling::TopK {
            k: 8,
            temperature: 1.0,
        },
        guidance_scale: 3.0,
        seed,
        negative_prompt: None,
    }
}

/// Codes sampled with `seed`, the plan's gate seeded with it too (as `baton render --seed`
/// seeds both).
fn codes(
    model: &MusicGen,
    prompts: &[&str],
    seed: u64,
    steer: Option<&Plan>,
) -> Vec<Vec<Vec<i64>>> {
    let plan = steer.map(|p| Plan { seed, ..p.clone() });
    codes_with_plan(model, prompts, seed, plan.as_ref())
}

/// Codes sampled with `seed` under `steer` as it is.
fn codes_with_plan(
    model: &MusicGen,
    prompts: &[&str],
    seed: u64,
    steer: Option<&Plan>,
) -> Vec<Vec<Vec<i64>>> {
    let opts = options(seed);
    let mut hook = steer.map(|plan| {
        baton::script::render::plan_hook(model, plan, opts.max_new_tokens, &mut |_, _| {
            Err("no curves".into())
        })
        .expect("hook")
        .expect("steers")
    });
    let hook = hook
        .as_mut()
        .map(|h| h as &mut dyn baton::model::ResidualHook);
    model
        .generate(prompts, &opts, hook, &mut |_, _| {})
        .expect("generate")
        .to_vec3()
        .expect("codes")
}

#[test]
fn each_batch_item_samples_what_it_would_alone() {
    let model = MusicGen::load(TINY, &Device::Cpu, DType::F32).expect("tiny");
    let bundle = steer_common::bundle("notes", "C#", model.hidden_size(), model.num_layers(), 3);
    let plan = Plan {
        terms: vec![Term {
            direction: Direction::from_bundle("notes:C#", bundle),
            strength: 40.0,
            schedule: Schedule::constant(1.0),
            weights: LayerWeights::Uniform,
            gate: None,
            unit: Default::default(),
        }],
        ..Plan::default()
    };
    let gated = Plan {
        gate: 0.5,
        ..plan.clone()
    };
    let gated_cond = Plan {
        conditional_only: true,
        ..gated.clone()
    };
    for steer in [None, Some(&plan), Some(&gated), Some(&gated_cond)] {
        let case = steer.map_or("unsteered".to_string(), |p| p.to_string());
        let same = codes(&model, &["a tune", "a tune", "a tune"], 5, steer);
        for (b, item) in same.iter().enumerate() {
            let alone = codes(&model, &["a tune"], 5 + b as u64, steer);
            assert_eq!(item, &alone[0], "item {b}, {case}");
        }
        assert_ne!(same[0], same[1], "the items share their noise");

        let mixed = codes(
            &model,
            &["a tune", "a much longer prompt than that"],
            9,
            steer,
        );
        assert_eq!(mixed[0], codes(&model, &["a tune"], 9, steer)[0], "{case}");
        let long = codes(&model, &["a much longer prompt than that"], 10, steer);
        assert_eq!(mixed[1], long[0], "{case}");
    }
    // The gate matters here: shared draws (item 1 gated as item 0) give other codes.
    let shared = Plan {
        seed: 5,
        ..gated.clone()
    };
    let shared = codes_with_plan(&model, &["a tune"], 6, Some(&shared));
    assert_ne!(shared[0], codes(&model, &["a tune"], 6, Some(&gated))[0]);
}
