//! Steering overhead: decoder steps/s with a 3-direction plan over all blocks vs unsteered,
//! same seed, interleaved in one run.
//!
//!     cargo run --release --example bench_steer -- [STEPS] [ROUNDS] [MODEL_DIR]
//!
//! Without MODEL_DIR the decoder has musicgen-small's shapes (24 blocks, width 1024, 16 heads,
//! ffn 4096, 4 x 2048 codebooks) with random weights and a CFG batch of 2 (what the steering
//! cost depends on); with MODEL_DIR (e.g. the folder `tests/reference/bench_small_shaped.py
//! build` writes) the whole model is loaded and `MusicGen::generate` is timed, text encoder
//! included. Rounds alternate unsteered / steered so machine load hits both alike; the medians
//! are reported, with the hook's own time per step measured alone and the process's peak RSS.

use std::collections::BTreeMap;
use std::time::Instant;

use baton::model::decoder::Decoder;
use baton::model::generate::{self, GenerationInputs};
use baton::model::{DecoderConfig, GenerateOptions, MusicGen, ResidualHook, Sampling};
use baton::steer::{Direction, LayerWeights, Plan, PlanHook, Schedule, Term};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

type Res = Result<(), Box<dyn std::error::Error>>;
/// Runs one generation, steered when given a hook; returns its wall time in seconds.
type Runner = Box<dyn FnMut(Option<&mut PlanHook>) -> Result<f64, Box<dyn std::error::Error>>>;

fn random_direction(name: &str, layers: usize, hidden: usize, seed: u64) -> Direction {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut vectors = BTreeMap::new();
    let mut scores = BTreeMap::new();
    for l in 0..layers {
        let v: Vec<f32> = (0..hidden).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        vectors.insert(l, v.iter().map(|x| x / n).collect());
        scores.insert(l, 0.6 + 0.4 * rng.random::<f64>());
    }
    Direction {
        name: name.into(),
        hidden_size: hidden,
        num_layers: layers,
        metric: "auc".into(),
        scores,
        vectors,
        residual_norms: Default::default(),
    }
}

fn plan(layers: usize, hidden: usize, seconds: f64) -> Plan {
    let term = |i: u64, schedule: Schedule| Term {
        direction: random_direction(&format!("d{i}"), layers, hidden, i),
        strength: 0.4,
        schedule,
        // Uniform: every one of the blocks is steered by every term.
        weights: LayerWeights::Uniform,
        gate: None,
        unit: Default::default(),
    };
    Plan {
        terms: vec![
            term(1, Schedule::linear(0.0, 1.0, 0.0, seconds)),
            term(2, Schedule::sine(seconds / 2.0, 0.0)),
            term(3, Schedule::exp_decay(0.998)),
        ],
        ..Plan::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[path = "support/peak_rss.rs"]
mod peak_rss;
use peak_rss::peak_rss_mib;

fn main() -> Res {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map_or(Ok(150), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let model_dir = args.next();
    let dev = Device::Cpu;
    let options = GenerateOptions {
        max_new_tokens: steps,
        sampling: Sampling::TopK {
            k: 250,
            temperature: 1.0,
        },
        guidance_scale: 3.0,
        seed: 0,
        negative_prompt: None,
    };

    // One closure per setup: runs a generation with or without the hook, returns seconds.
    let (layers, hidden, frame_rate, mut run): (usize, usize, f64, Runner) = match model_dir {
        Some(dir) => {
            let model = MusicGen::load(&dir, &dev, DType::F32)?;
            let (l, h, fr) = (model.num_layers(), model.hidden_size(), model.frame_rate());
            let opts = options.clone();
            (
                l,
                h,
                fr,
                Box::new(move |hook: Option<&mut PlanHook>| {
                    let t = Instant::now();
                    model.generate(
                        &["lofi hip hop with piano"],
                        &opts,
                        hook.map(|h| h as &mut dyn ResidualHook),
                        &mut |_, _| {},
                    )?;
                    Ok(t.elapsed().as_secs_f64())
                }),
            )
        }
        None => {
            let cfg: DecoderConfig = serde_json::from_value(serde_json::json!({
                "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 24,
                "ffn_dim": 4096, "num_attention_heads": 16, "hidden_size": 1024,
                "num_codebooks": 4
            }))?;
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let decoder = Decoder::load(&cfg, vb.pp("decoder"))?;
            // Real random values: untouched zero pages would make the decoder unrealistically
            // fast (every weight read hitting one page) and inflate the relative overhead.
            for var in varmap.all_vars() {
                var.set(&Tensor::randn(0f32, 0.02, var.shape(), &dev)?)?;
            }
            let states = Tensor::randn(0f32, 1., (2, 12, 1024), &dev)?;
            let mask = Tensor::cat(
                &[
                    Tensor::ones((1, 12), DType::F32, &dev)?,
                    Tensor::zeros((1, 12), DType::F32, &dev)?,
                ],
                0,
            )?;
            let cross = decoder.cross_context(&states, &mask)?;
            let opts = options.clone();
            (
                24,
                1024,
                50.0,
                Box::new(move |hook: Option<&mut PlanHook>| {
                    let inputs = GenerationInputs {
                        cross: &cross,
                        batch: 1,
                        guided: true,
                        pad: 2048,
                        bos: 2048,
                        prefix: None,
                        prompt: None,
                        first_step: 0,
                    };
                    let t = Instant::now();
                    generate::generate(
                        &decoder,
                        &inputs,
                        &opts,
                        hook.map(|h| h as &mut dyn ResidualHook),
                        &mut |_, _| {},
                        &mut generate::seeded_rngs(opts.seed, 1),
                    )?;
                    Ok(t.elapsed().as_secs_f64())
                }),
            )
        }
    };

    let plan = plan(layers, hidden, steps as f64 / frame_rate);
    let make_hook = || {
        PlanHook::new(
            &plan,
            steps,
            frame_rate,
            layers,
            hidden,
            &dev,
            DType::F32,
            &mut |_, _| Err("no curves".into()),
        )
    };
    // The hook alone: what steering adds per step before the decoder's additions.
    let mut hook = make_hook()?;
    let t = Instant::now();
    for s in 0..steps {
        hook.offsets(s, 1)?;
    }
    let hook_us = t.elapsed().as_secs_f64() / steps as f64 * 1e6;

    run(None)?; // warm-up
    let (mut plain, mut steered) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(steps as f64 / run(None)?);
        let mut hook = make_hook()?;
        steered.push(steps as f64 / run(Some(&mut hook))?);
    }
    let (p, s) = (median(plain.clone()), median(steered.clone()));
    println!(
        "{steps} steps x {rounds} rounds, 3 directions x {layers} blocks (width {hidden})\n\
         unsteered: {p:.2} steps/s (runs {plain:.2?})\n\
         steered:   {s:.2} steps/s (runs {steered:.2?})\n\
         overhead:  {:.2} % slower (median vs median)\n\
         hook alone: {hook_us:.1} us/step; hook memory {:.0} KiB; peak RSS {:.0} MiB",
        (p / s - 1.0) * 100.0,
        (3 * layers * hidden * 4 + steps * 3 * 4) as f64 / 1024.0,
        peak_rss_mib(),
    );
    Ok(())
}
