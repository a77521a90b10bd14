//! Reusing the first steps of an earlier generation (`MusicGen::generate_reusing`): when two
//! plans agree up to step `s`, generating the second from the first's codes, reused up to `s`,
//! gives exactly the codes of generating it from scratch, greedy or sampled, steering both
//! halves of the guidance batch or only the conditional one.

use std::path::PathBuf;

use baton::model::{GenerateOptions, MusicGen, Prefix, ResidualHook, Sampling};
use baton::probe::DirectionBundle;
use baton::steer::{Direction, LayerWeights, Plan, PlanHook, Schedule, Term};
use candle_core::{DType, Device, Tensor};

const STEPS: usize = 40;
/// The step from which the two plans differ.
const CHANGE: usize = 17;
const PROMPTS: [&str; 2] = ["lofi piano", "a jazz trio with brushes"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn model() -> MusicGen {
    MusicGen::load(
        fixtures().join("tiny-a").to_str().unwrap(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap()
}

/// A plan whose strength rises from 0 to 3 over the generation, with 3 more from step `CHANGE`
/// on when `boost` is set. (It changes at every step, so each reused step needs its own offset.)
fn plan(model: &MusicGen, boost: bool, conditional_only: bool, gate: f64) -> Plan {
    let bundle = DirectionBundle::read(&fixtures().join("steer-direction.safetensors")).unwrap();
    let mut schedule = Schedule::linear(0.0, 1.0, 0.0, STEPS as f64 / model.frame_rate());
    if boost {
        let at = CHANGE as f64 / model.frame_rate();
        schedule = schedule.binary(baton::steer::schedule::Op::Add, &Schedule::step(at, 1.0));
    }
    Plan {
        terms: vec![Term {
            direction: Direction::from_bundle("test:random", bundle),
            // Gated, the items differ only where their draws do: a strength that changes tokens
            // there makes replaying one item's offsets for both fail.
            strength: if gate < 1.0 { 30.0 } else { 3.0 },
            schedule,
            weights: LayerWeights::default(),
            gate: None,
            unit: Default::default(),
        }],
        conditional_only,
        gate,
        ..Plan::default()
    }
}

fn generate(
    model: &MusicGen,
    plan: &Plan,
    sampling: Sampling,
    prefix: Option<&Prefix>,
) -> Vec<Vec<Vec<i64>>> {
    generate_seeded(model, plan, sampling, 5, prefix)
}

fn generate_seeded(
    model: &MusicGen,
    plan: &Plan,
    sampling: Sampling,
    seed: u64,
    prefix: Option<&Prefix>,
) -> Vec<Vec<Vec<i64>>> {
    let mut hook = PlanHook::new(
        plan,
        STEPS,
        model.frame_rate(),
        model.num_layers(),
        model.hidden_size(),
        model.device(),
        model.activations(),
        &mut |_, _| Err("no curves".into()),
    )
    .unwrap();
    let options = GenerateOptions {
        max_new_tokens: STEPS,
        sampling,
        guidance_scale: 3.0,
        seed,
        negative_prompt: None,
    };
    let mut reported = Vec::new();
    let codes = model
        .generate_reusing(
            &PROMPTS,
            &options,
            Some(&mut hook as &mut dyn ResidualHook),
            &mut |done, _| reported.push(done),
            prefix,
        )
        .unwrap();
    // Progress starts at the reused steps and ends at the last step.
    let first = prefix.map_or(1, |p| p.steps);
    assert_eq!(reported.first(), Some(&first));
    assert_eq!(reported.last(), Some(&STEPS));
    codes.to_vec3().unwrap()
}

fn tensor(codes: &[Vec<Vec<i64>>]) -> Tensor {
    let (b, k, f) = (codes.len(), codes[0].len(), codes[0][0].len());
    let flat: Vec<i64> = codes.iter().flatten().flatten().copied().collect();
    Tensor::from_vec(flat, (b, k, f), &Device::Cpu).unwrap()
}

#[test]
fn reused_steps_give_the_codes_of_a_fresh_generation() {
    let m = model();
    let sampled = Sampling::TopK {
        k: 50,
        temperature: 1.0,
    };
    // Under a gate of 0.5 the two prompts are gated apart (their own draws), so the reused
    // steps get one offset per item.
    for (sampling, conditional_only, gate) in [
        (Sampling::Greedy, false, 1.0),
        (sampled, false, 1.0),
        (sampled, true, 1.0),
        (sampled, false, 0.5),
        (sampled, true, 0.5),
    ] {
        let case = format!("{sampling:?}, conditional only {conditional_only}, gate {gate}");
        let before = generate(&m, &plan(&m, false, conditional_only, gate), sampling, None);
        let after_plan = plan(&m, true, conditional_only, gate);
        let fresh = generate(&m, &after_plan, sampling, None);
        assert_ne!(fresh, before, "{case}: the change made no difference");
        let earlier = tensor(&before);
        let prefix = Prefix {
            codes: &earlier,
            steps: CHANGE,
        };
        let reused = generate(&m, &after_plan, sampling, Some(&prefix));
        assert_eq!(reused, fresh, "{case}: reusing steps changed the result");
    }
}

#[test]
fn the_prefix_is_taken_not_regenerated() {
    let m = model();
    let p = plan(&m, false, false, 1.0);
    let sampled = Sampling::TopK {
        k: 50,
        temperature: 1.0,
    };
    let own = generate(&m, &p, sampled, None);
    // Codes from another seed: a real reuse must keep their first frames.
    let other_codes = generate_seeded(&m, &p, sampled, 99, None);
    assert_ne!(other_codes, own);
    let other = tensor(&other_codes);
    let prefix = Prefix {
        codes: &other,
        steps: CHANGE,
    };
    let reused = generate(&m, &p, sampled, Some(&prefix));
    for (item, (got, want)) in reused.iter().zip(&other_codes).enumerate() {
        for (cb, (g, w)) in got.iter().zip(want).enumerate() {
            // Codebook cb's frame f is chosen at step f + cb.
            let kept = CHANGE - cb;
            assert_eq!(g[..kept], w[..kept], "item {item}, codebook {cb}");
        }
    }
    // Reusing every step generates nothing.
    let all = Prefix {
        codes: &other,
        steps: STEPS,
    };
    assert_eq!(generate(&m, &p, sampled, Some(&all)), other_codes);
}

#[test]
fn a_prefix_of_another_shape_is_refused() {
    let m = model();
    let short = Tensor::zeros((1, 4, 5), DType::I64, &Device::Cpu).unwrap();
    let options = GenerateOptions {
        max_new_tokens: STEPS,
        sampling: Sampling::Greedy,
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };
    let prefix = Prefix {
        codes: &short,
        steps: 3,
    };
    let err = m
        .generate_reusing(&PROMPTS, &options, None, &mut |_, _| {}, Some(&prefix))
        .unwrap_err();
    assert!(err.to_string().contains("earlier codes"), "{err}");
    let one = Tensor::zeros((2, 4, 5), DType::I64, &Device::Cpu).unwrap();
    let prefix = Prefix {
        codes: &one,
        steps: 12,
    };
    let err = m
        .generate_reusing(&PROMPTS, &options, None, &mut |_, _| {}, Some(&prefix))
        .unwrap_err();
    assert!(err.to_string().contains("too few"), "{err}");
}

#[test]
fn reused_steps_after_a_clip_give_the_codes_of_a_fresh_generation() {
    let m = model();
    let k = m.num_codebooks();
    // Six frames of clip, as EnCodec would give them (any valid codes do).
    let clip: Vec<Vec<i64>> = (0..k)
        .map(|cb| (0..6).map(|f| ((cb * 7 + f * 5) % 64) as i64).collect())
        .collect();
    let extent = baton::model::Extent {
        clip: Some(clip),
        window: None,
        ..Default::default()
    };
    let sampled = Sampling::TopK {
        k: 50,
        temperature: 1.0,
    };
    let run = |plan: &Plan, prefix: Option<&Prefix>| -> Vec<Vec<Vec<i64>>> {
        let mut hook = PlanHook::new(
            plan,
            STEPS,
            m.frame_rate(),
            m.num_layers(),
            m.hidden_size(),
            m.device(),
            m.activations(),
            &mut |_, _| Err("no curves".into()),
        )
        .unwrap();
        let options = GenerateOptions {
            max_new_tokens: STEPS,
            sampling: sampled,
            guidance_scale: 3.0,
            seed: 5,
            negative_prompt: None,
        };
        m.generate_piece(
            &PROMPTS,
            &options,
            &extent,
            Some(&mut hook as &mut dyn ResidualHook),
            &mut |_, _| {},
            prefix,
        )
        .unwrap()
        .to_vec3()
        .unwrap()
    };
    let before = run(&plan(&m, false, false, 1.0), None);
    let after_plan = plan(&m, true, false, 1.0);
    let fresh = run(&after_plan, None);
    assert_ne!(fresh, before, "the change made no difference");
    assert_eq!(
        fresh[0][0][..6],
        extent.clip.as_ref().unwrap()[0][..],
        "clip first"
    );
    let earlier = tensor(&before);
    let prefix = Prefix {
        codes: &earlier,
        steps: CHANGE,
    };
    assert_eq!(
        run(&after_plan, Some(&prefix)),
        fresh,
        "reusing steps changed the result"
    );
}
