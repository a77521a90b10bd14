//! Schedules against closed-form values (the paper's five at 50 Hz among them), the stochastic
//! gate, plan algebra, layer weights, and the decoder hook against a plain-Rust evaluation.

mod steer_common;

use baton::model::ResidualHook;
use baton::steer::{
    gate_open, Direction, Interp, LayerWeights, Plan, PlanHook, Schedule, StrengthUnit, Term,
};
use candle_core::{DType, Device, Tensor};

const FR: f64 = 50.0;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn the_papers_five_schedules_at_50_hz() {
    // Paper (t in steps, 1500 = 30 s): clip(t/1500,0,1), 1 - that, 0.998^t,
    // 1/(1+exp(-(t-750)/200)), (1+sin(2 pi t/1500))/2.
    let rise = Schedule::linear(0.0, 1.0, 0.0, 30.0);
    let decay = Schedule::linear(1.0, 0.0, 0.0, 30.0);
    let exp = Schedule::exp_decay(0.998);
    let logistic = Schedule::logistic(15.0, 4.0);
    let sine = Schedule::sine(30.0, 0.0);
    for t in [0usize, 1, 37, 500, 750, 1234, 1499, 1500, 1700] {
        let s = t as f64 / FR;
        let tf = t as f64;
        close(rise.eval(s), (tf / 1500.0).clamp(0.0, 1.0));
        close(decay.eval(s), 1.0 - (tf / 1500.0).clamp(0.0, 1.0));
        assert!((exp.eval(s) - 0.998f64.powf(tf)).abs() < 1e-12);
        close(
            logistic.eval(s),
            1.0 / (1.0 + (-(tf - 750.0) / 200.0).exp()),
        );
        close(
            sine.eval(s),
            (1.0 + (std::f64::consts::TAU * tf / 1500.0).sin()) / 2.0,
        );
    }
}

#[test]
fn shapes_and_combinators() {
    close(Schedule::cosine(4.0, 0.0).eval(0.0), 1.0);
    close(Schedule::sine(4.0, 0.25).eval(0.0), 1.0);
    let sq = Schedule::square(2.0, 0.25);
    assert_eq!(
        [0.0, 0.4, 0.6, 2.1, 2.6].map(|t| sq.eval(t)),
        [1.0, 1.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        [0.9, 1.0].map(|t| Schedule::step(1.0, 0.7).eval(t)),
        [0.0, 0.7]
    );
    let env = Schedule::adsr(1.0, 1.0, 0.5, 2.0, 4.0);
    let got = [0.5, 1.0, 1.5, 3.0, 5.0, 7.0].map(|t| env.eval(t));
    assert_eq!(got, [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]);
    let k = Schedule::keyframes(vec![(2.0, 1.0), (0.0, 0.0), (4.0, 0.0)], Interp::Linear);
    assert_eq!(
        [-1.0, 1.0, 2.0, 3.5, 9.0].map(|t| k.eval(t)),
        [0.0, 0.5, 1.0, 0.25, 0.0]
    );
    let n = Schedule::noise(3, 2.0);
    let v: Vec<f64> = (0..200).map(|i| n.eval(i as f64 * 0.01)).collect();
    assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
    // smooth: neighbouring 10 ms samples never jump far, and the same seed repeats exactly
    assert!(v.windows(2).all(|w| (w[0] - w[1]).abs() < 0.05));
    assert_eq!(Schedule::noise(3, 2.0).eval(0.77), n.eval(0.77));
    assert_ne!(Schedule::noise(4, 2.0).eval(0.77), n.eval(0.77));

    let r = Schedule::linear(0.0, 1.0, 0.0, 10.0);
    close((2.0 * r.clone() + 1.0).eval(5.0), 2.0);
    close((r.clone() - 1.0).eval(5.0), -0.5);
    close((1.0 / (r.clone() + 1.0)).eval(10.0), 0.5);
    close((-r.clone()).eval(5.0), -0.5);
    close(r.clamp(0.2, 0.3).eval(5.0), 0.3);
    close(r.shift(2.0).eval(5.0), 0.3);
    close(r.stretch(2.0).eval(5.0), 0.25);
    close(r.reverse(10.0).eval(2.0), 0.8);
    close(r.repeat(4.0).eval(9.0), 0.1);
    let x = Schedule::crossfade(&Schedule::constant(1.0), &r, 2.0, 4.0);
    close(x.eval(1.0), 1.0);
    close(x.eval(3.0), 0.5 + 0.5 * 0.3);
    close(x.eval(8.0), 0.8);
    close(Schedule::mix(&0.0.into(), &2.0.into(), &r).eval(5.0), 1.0);
    let s = Schedule::seq(vec![
        (r.clone(), 2.0),
        (Schedule::constant(5.0), 1.0),
        (r.clone(), 1.0),
    ]);
    assert_eq!(
        [1.0, 2.5, 3.5, 5.0].map(|t| s.eval(t)),
        [0.1, 5.0, 0.05, 0.2]
    );
}

#[test]
fn gate_is_seeded_shared_and_has_the_right_rate() {
    let a: Vec<bool> = (0..4000).map(|s| gate_open(7, s, 0.3)).collect();
    let b: Vec<bool> = (0..4000).map(|s| gate_open(7, s, 0.3)).collect();
    let c: Vec<bool> = (0..4000).map(|s| gate_open(8, s, 0.3)).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let rate = a.iter().filter(|x| **x).count() as f64 / 4000.0;
    assert!((rate - 0.3).abs() < 0.03, "{rate}");
    assert!((0..100).all(|s| gate_open(1, s, 1.0) && !gate_open(1, s, 0.0)));

    // Two terms with the same p share one draw per step; the plan's seed picks the pattern.
    let d = dir(&[(0, 0.9, vec![1.0, 0.0])]);
    let term = |gate| Term {
        direction: d.clone(),
        strength: 1.0,
        schedule: Schedule::constant(1.0),
        weights: LayerWeights::Uniform,
        gate,
        unit: Default::default(),
    };
    let plan = Plan {
        terms: vec![term(None), term(Some(0.3)), term(Some(0.6))],
        gate: 0.3,
        seed: 7,
        ..Plan::default()
    };
    let c = plan.coefficients(400, FR, &mut |_, _| Ok(0.0)).unwrap();
    assert_eq!(c[0], c[1]);
    assert_ne!(c[0], c[2]);
    for (s, v) in c[0].iter().enumerate() {
        assert_eq!(*v == 1.0, a[s]);
    }
}

fn dir(blocks: &[(usize, f64, Vec<f32>)]) -> Direction {
    Direction {
        name: "d".into(),
        hidden_size: blocks[0].2.len(),
        num_layers: 4,
        metric: "auc".into(),
        scores: blocks.iter().map(|(l, s, _)| (*l, *s)).collect(),
        vectors: blocks.iter().map(|(l, _, v)| (*l, v.clone())).collect(),
        residual_norms: Default::default(),
    }
}

#[test]
fn plan_algebra() {
    let d = dir(&[(0, 0.9, vec![1.0, 0.0]), (2, 0.5, vec![0.0, 1.0])]);
    let a = Plan {
        terms: vec![Term {
            direction: d.clone(),
            strength: 0.5,
            schedule: Schedule::linear(0.0, 1.0, 0.0, 1.0),
            weights: LayerWeights::Uniform,
            gate: None,
            unit: Default::default(),
        }],
        ..Plan::default()
    };
    let b = a.scaled(2.0).shifted(0.5);
    let both = a.merge(&b);
    assert_eq!(both.terms.len(), 2);
    let c = both.coefficients(51, FR, &mut |_, _| Ok(0.0)).unwrap();
    close(c[0][25], 0.25);
    close(c[1][25], 0.0);
    close(c[1][50], 0.5);
    // At t = 1 s: 0.5 * ramp(1) + (2 * 0.5) * ramp(0.5) = 1, summed into each steered block.
    let off = both.offsets_at(&[c[0][50], c[1][50]], 4, 2).unwrap();
    assert_eq!(off[0], Some(vec![1.0, 0.0]));
    assert_eq!(off[1], None);
    assert_eq!(off[2], Some(vec![0.0, 1.0]));
}

#[test]
fn residual_units_scale_each_block_by_its_norm() {
    let d = Direction {
        residual_norms: [(0, 4.0), (2, 10.0)].into_iter().collect(),
        ..dir(&[(0, 0.9, vec![1.0, 0.0]), (2, 0.5, vec![0.0, 1.0])])
    };
    let plan = |d: &Direction, unit: StrengthUnit| Plan {
        terms: vec![Term {
            direction: d.clone(),
            strength: 0.5,
            schedule: Schedule::constant(1.0),
            weights: LayerWeights::Uniform,
            gate: None,
            unit,
        }],
        ..Plan::default()
    };
    let absolute = plan(&d, StrengthUnit::Absolute);
    let residual = plan(&d, StrengthUnit::Residual);
    assert_eq!(
        absolute.offsets_at(&[0.5], 4, 2).unwrap()[2],
        Some(vec![0.0, 0.5])
    );
    let off = residual.offsets_at(&[0.5], 4, 2).unwrap();
    assert_eq!(off[0], Some(vec![2.0, 0.0]));
    assert_eq!(off[1], None);
    assert_eq!(off[2], Some(vec![0.0, 5.0]));
    assert!(residual.to_string().contains("in residual units"));
    // The hook applies the same vectors.
    let mut hook = PlanHook::new(
        &residual,
        3,
        FR,
        4,
        2,
        &Device::Cpu,
        DType::F32,
        &mut |_, _| Ok(0.0),
    )
    .unwrap();
    let got = hook.offsets(1, 1).unwrap();
    assert_eq!(
        got[2].as_ref().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0, 5.0]
    );

    // A direction without norms for a steered block cannot steer in residual units.
    let old = Direction {
        residual_norms: [(0, 4.0)].into_iter().collect(),
        ..d.clone()
    };
    let err = plan(&old, StrengthUnit::Residual)
        .validate(4, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no residual norm for block 2"), "{err}");
    assert!(plan(&old, StrengthUnit::Absolute).validate(4, 2).is_ok());
    // ... unless that block is weighted out.
    let mut top = plan(&old, StrengthUnit::Residual);
    top.terms[0].weights = LayerWeights::TopK { k: 1 };
    assert!(top.validate(4, 2).is_ok());
    assert_eq!(
        "residual".parse::<StrengthUnit>(),
        Ok(StrengthUnit::Residual)
    );
    assert!("relative"
        .parse::<StrengthUnit>()
        .unwrap_err()
        .contains("absolute or residual"));
}

#[test]
fn hook_matches_the_plain_evaluation() {
    let (hidden, layers) = (16, 4);
    let b1 = steer_common::bundle("notes", "C", hidden, layers, 1);
    let b2 = steer_common::bundle("chords", "maj", hidden, layers, 2);
    let d1 = Direction::from_bundle("a", b1);
    let d2 = Direction::from_bundle("b", b2).top(2);
    let plan = Plan {
        terms: vec![
            Term {
                direction: d1,
                strength: 0.7,
                schedule: Schedule::sine(0.3, 0.0),
                weights: LayerWeights::default(),
                gate: None,
                unit: Default::default(),
            },
            Term {
                direction: d2,
                strength: -0.4,
                schedule: Schedule::custom(0, "t^2"),
                weights: LayerWeights::Linear,
                gate: Some(0.5),
                unit: Default::default(),
            },
        ],
        gate: 0.8,
        seed: 3,
        ..Plan::default()
    };
    let mut ext = |_: usize, t: f64| Ok(t * t);
    let steps = 40;
    let coef = plan.coefficients(steps, FR, &mut ext).unwrap();
    let mut hook = PlanHook::new(
        &plan,
        steps,
        FR,
        layers,
        hidden,
        &Device::Cpu,
        DType::F32,
        &mut ext,
    )
    .unwrap();
    for s in 0..steps + 2 {
        let want = if s < steps {
            plan.offsets_at(
                &coef.iter().map(|c| c[s]).collect::<Vec<_>>(),
                layers,
                hidden,
            )
            .unwrap()
        } else {
            vec![None; layers]
        };
        let got = hook.offsets(s, 1).unwrap();
        for l in 0..layers {
            match (&want[l], &got[l]) {
                (None, None) => {}
                (Some(w), Some(g)) => {
                    let g: Vec<f32> = g.to_vec1().unwrap();
                    for (x, y) in w.iter().zip(&g) {
                        assert!((x - y).abs() < 1e-6, "step {s} block {l}: {x} vs {y}");
                    }
                }
                // The hook may return a zero vector where the plain version has one (a block
                // is active but its terms are gated off) only if all entries are zero.
                (None, Some(g)) => assert!(g.to_vec1::<f32>().unwrap().iter().all(|x| *x == 0.0)),
                (Some(w), None) => assert!(w.iter().all(|x| *x == 0.0), "step {s} block {l}"),
            }
        }
    }
    // In a batch, item b is gated as the plan seeded `seed + b` gates a lone generation: one
    // vector per item where their draws differ, one shared vector where they agree.
    let batch = 3;
    let per_item: Vec<Vec<Vec<f64>>> = (0..batch)
        .map(|b| {
            let alone = Plan {
                seed: plan.seed + b as u64,
                ..plan.clone()
            };
            alone.coefficients(steps, FR, &mut ext).unwrap()
        })
        .collect();
    let mut apart = 0;
    for s in 0..steps {
        let got: Vec<Option<Tensor>> = hook.offsets(s, batch).unwrap().to_vec();
        for (l, g) in got.iter().enumerate() {
            let Some(g) = g else {
                continue;
            };
            if g.rank() == 3 {
                apart += 1;
                assert_eq!(g.dims(), &[batch, 1, hidden]);
            }
            for (b, coef) in per_item.iter().enumerate() {
                let c: Vec<f64> = coef.iter().map(|c| c[s]).collect();
                let want = plan.offsets_at(&c, layers, hidden).unwrap()[l]
                    .clone()
                    .unwrap_or(vec![0.0; hidden]);
                let row: Vec<f32> = if g.rank() == 3 {
                    g.get(b).unwrap().flatten_all().unwrap().to_vec1().unwrap()
                } else {
                    g.to_vec1().unwrap()
                };
                for (x, y) in want.iter().zip(&row) {
                    assert!(
                        (x - y).abs() < 1e-6,
                        "step {s} block {l} item {b}: {x} vs {y}"
                    );
                }
            }
        }
    }
    assert!(apart > 0, "no step gated the items apart");
    // A model of another width is refused with a clear message.
    let err = PlanHook::new(
        &plan,
        1,
        FR,
        layers,
        hidden + 1,
        &Device::Cpu,
        DType::F32,
        &mut ext,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("width 16") && err.contains("17 wide"), "{err}");
}
