//! Property-based fuzzing of what users hand baton: random recipes built from every verb with
//! hostile arguments (NaN, infinities, huge and negative numbers, paths leading out, unknown
//! names), and damaged copies of every file format baton reads (WAV, safetensors bundles,
//! features and classifiers, dataset manifests, model configs). The property is the same for
//! all: an answer (a value or an error), never a panic or an abort.
//!
//! `BATON_FUZZ_CASES` sets the cases per target (default 200, what CI runs); the issue's
//! longer campaign ran with 20,000.

mod steer_common;

use std::path::Path;

use baton::script::{run_source, DryRun, Limits, RecipeOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> impl Strategy<Value = T> + Clone {
    proptest::sample::select(items.to_vec())
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "0",
            "1",
            "-1",
            "0.5",
            "2.0",
            "-0.25",
            "1e9",
            "-1e30",
            "1e308",
            "3",
            "1000000000000",
            "(0.0 / 0.0)",
            "(1.0 / 0.0)",
            "(-1.0 / 0.0)",
            "0.0000001",
            "-5",
        ])
        .prop_map(str::to_string),
        (-100.0f64..100.0).prop_map(|x| format!("{x:?}")),
    ]
}

fn int() -> impl Strategy<Value = String> {
    pick(&["0", "1", "-1", "3", "7", "1000000", "-9223372036854775807"]).prop_map(str::to_string)
}

fn text() -> impl Strategy<Value = String> {
    pick(&[
        "\"x\"",
        "\"\"",
        "\"   \"",
        "\"lofi piano\"",
        "\"exp\"",
        "\"top:0\"",
        "\"top:2\"",
        "\"residual\"",
        "\"absolute\"",
        "\"smooth\"",
        "\"linear\"",
        "\"chœur\"",
    ])
    .prop_map(str::to_string)
}

fn schedule() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        number().prop_map(|n| format!("constant({n})")),
        (number(), number(), number(), number())
            .prop_map(|(a, b, c, d)| format!("linear({a}, {b}, {c}, {d})")),
        (number(), number()).prop_map(|(a, b)| format!("rise({a}, {b})")),
        (number(), number()).prop_map(|(a, b)| format!("fall({a}, {b})")),
        number().prop_map(|n| format!("exp_decay({n})")),
        (number(), number()).prop_map(|(a, b)| format!("logistic({a}, {b})")),
        (number(), number()).prop_map(|(a, b)| format!("sine({a}, {b})")),
        (number(), number()).prop_map(|(a, b)| format!("square({a}, {b})")),
        number().prop_map(|n| format!("step({n})")),
        (number(), number(), number(), number(), number())
            .prop_map(|(a, b, c, d, e)| format!("adsr({a}, {b}, {c}, {d}, {e})")),
        (number(), number(), number(), number())
            .prop_map(|(a, b, c, d)| format!("keyframes([[{a}, {b}], [{c}, {d}]])")),
        (int(), number()).prop_map(|(s, r)| format!("noise({s}, {r})")),
        number().prop_map(|n| format!("curve(|t| t * {n})")),
        Just("curve(|t| \"not a number\")".to_string()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("({a} * {n})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / {b})")),
            inner.clone().prop_map(|a| format!("(-{a})")),
            (inner.clone(), number(), number())
                .prop_map(|(a, lo, hi)| format!("clamp({a}, {lo}, {hi})")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("shift({a}, {n})")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("stretch({a}, {n})")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("reverse({a}, {n})")),
            (inner.clone(), number()).prop_map(|(a, n)| format!("repeat({a}, {n})")),
            (inner.clone(), inner.clone(), number(), number())
                .prop_map(|(a, b, x, y)| format!("seq([[{a}, {x}], [{b}, {y}]])")),
            (inner.clone(), inner.clone(), number(), number())
                .prop_map(|(a, b, x, y)| format!("crossfade({a}, {b}, {x}, {y})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, w)| format!("mix({a}, {b}, {w})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("min({a}, {b})")),
        ]
    })
}

fn direction() -> impl Strategy<Value = String> {
    let leaf = pick(&[
        "direction(\"notes:C\")",
        "direction(\"notes:D\")",
        "direction(\"chords:maj\")",
        "direction(\"nope:x\")",
        "direction(\"../../etc/passwd.safetensors\")",
        "direction(\"/dev/null.safetensors\")",
        "direction(\"\")",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), number()).prop_map(|(d, n)| format!("({d} * {n})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            inner.clone().prop_map(|d| format!("{d}.normalize()")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.orth({b})")),
            (inner.clone(), int()).prop_map(|(d, k)| format!("{d}.top({k})")),
            (inner.clone(), int(), int()).prop_map(|(d, a, b)| format!("{d}.blocks({a}..{b})")),
            (inner.clone(), int()).prop_map(|(d, a)| format!("{d}.blocks([{a}, 1])")),
            (inner, number()).prop_map(|(d, n)| format!("{d}.scale({n})")),
        ]
    })
}

fn strength() -> impl Strategy<Value = String> {
    prop_oneof![number(), schedule()]
}

fn piece() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        (direction(), strength()).prop_map(|(d, s)| format!(".steer({d}, {s})")),
        (direction(), strength(), number(), text(), number(), text()).prop_map(
            |(d, s, g, l, delay, u)| format!(
                ".steer({d}, {s}, #{{gate: {g}, layers: {l}, delay: {delay}, unit: {u}}})"
            )
        ),
        number().prop_map(|n| format!(".gate({n})")),
        int().prop_map(|n| format!(".seed({n})")),
        number().prop_map(|n| format!(".tempo({n})")),
        text().prop_map(|t| format!(".layers({t})")),
        number().prop_map(|n| format!(".cfg({n})")),
        text().prop_map(|t| format!(".negative({t})")),
        Just(".greedy()".to_string()),
        int().prop_map(|n| format!(".top_k({n})")),
        number().prop_map(|n| format!(".temperature({n})")),
        Just(".cond_only()".to_string()),
        (
            pick(&[
                "\"a.wav\"",
                "\"missing.wav\"",
                "\"../x.wav\"",
                "\"/dev/null\""
            ]),
            text()
        )
            .prop_map(|(c, t)| format!(".continue_from({c}, #{{steer_from: {t}}})")),
        (number(), number()).prop_map(|(w, t)| format!(".window({w}, {t})")),
    ];
    (text(), number(), proptest::collection::vec(method, 0..4))
        .prop_map(|(p, s, ms)| format!("piece({p}, {s}){}", ms.concat()))
}

fn statement() -> impl Strategy<Value = String> {
    let path = pick(&[
        "\"a.wav\"",
        "\"sub/b.wav\"",
        "\"../x.wav\"",
        "\"/tmp/baton-fuzz-escape.wav\"",
        "\"a.txt\"",
        "\"\"",
        "\"p.png\"",
    ]);
    prop_oneof![
        (piece(), path.clone()).prop_map(|(p, f)| format!("render({p}, {f});")),
        (schedule(), number(), path.clone()).prop_map(|(s, n, f)| format!("plot({s}, {n}, {f});")),
        (schedule(), number()).prop_map(|(s, t)| format!("print({s}.value({t}));")),
        (direction(), direction()).prop_map(|(a, b)| format!("print({a}.cosine({b}));")),
        (direction(), text()).prop_map(|(d, t)| format!("print({d}.weights({t}));")),
        (path.clone(), text()).prop_map(|(f, t)| format!("print(clap({f}, {t}));")),
        piece().prop_map(|p| format!("print({p});")),
        schedule().prop_map(|s| format!("let s = {s}; for i in 0..50 {{ s = s + s; }}")),
    ]
}

#[test]
fn random_recipes_answer_without_panicking() {
    let lib = steer_common::library(8, 4);
    let out = tempfile::tempdir().unwrap();
    let mut runner = runner();
    let recipe = proptest::collection::vec(statement(), 1..5).prop_map(|s| s.join("\n"));
    runner
        .run(&recipe, |source| {
            let options = RecipeOptions {
                directions: lib.path().to_path_buf(),
                out_dir: out.path().to_path_buf(),
                echo: false,
                clap_model: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clap/tiny-a")
                    .into(),
                limits: Limits {
                    max_run_operations: 2_000_000,
                    ..Limits::default()
                },
                ..RecipeOptions::default()
            };
            // Ok or a recipe error are both answers; a panic fails the property.
            let _ = run_source("fuzz.rhai", &source, Path::new("."), options, {
                Box::new(DryRun::default())
            });
            Ok(())
        })
        .unwrap();
    assert!(!Path::new("/tmp/baton-fuzz-escape.wav").exists());
}

/// Damaged copies of `seed`: bytes flipped, cut short, spliced with noise, or random outright.
fn damaged(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    let flips = proptest::collection::vec((0..len.max(1), any::<u8>()), 1..8);
    let s1 = seed.clone();
    let s2 = seed.clone();
    prop_oneof![
        flips.prop_map(move |f| {
            let mut b = s1.clone();
            for (i, v) in f {
                if i < b.len() {
                    b[i] = v;
                }
            }
            b
        }),
        (0..len.max(1)).prop_map(move |cut| s2[..cut].to_vec()),
        (0..len.max(1), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
            move |(at, noise)| {
                let mut b = seed.clone();
                b.splice(at.min(b.len())..at.min(b.len()), noise);
                b
            }
        ),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Runs `read` on damaged copies of `seed` written to a file; it must answer, never panic.
fn fuzz_file(name: &str, seed: Vec<u8>, read: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    runner()
        .run(&damaged(seed), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            read(&path);
            Ok(())
        })
        .unwrap();
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn damaged_wav_files_answer_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("seed.wav");
    let samples: Vec<f32> = (0..400).map(|i| (i as f32 * 0.05).sin()).collect();
    baton::audio::write_wav(&wav, &samples, 32000, baton::audio::SampleFormat::Pcm16).unwrap();
    fuzz_file("x.wav", std::fs::read(&wav).unwrap(), |p| {
        let _ = baton::audio::read_wav_mono(p);
    });
}

#[test]
fn damaged_safetensors_files_answer_without_panicking() {
    let bundle = std::fs::read(fixture("steer-direction.safetensors")).unwrap();
    fuzz_file("b.safetensors", bundle, |p| {
        let _ = baton::probe::DirectionBundle::read(p);
    });
    let classifier = std::fs::read(fixture("rfm-binary.safetensors")).unwrap();
    fuzz_file("c.safetensors", classifier, |p| {
        let _ = baton::rfm::io::SavedProbe::read(p);
        let _ = baton::probe::features::FeatureSet::read(p);
    });
}

#[test]
fn damaged_manifests_and_json_answer_without_panicking() {
    let manifest = br#"{"file": "clips/a.wav", "concept": "notes", "label": "C"}
{"file": "clips/b.wav", "concept": "notes", "label": "D", "index": 3}
{"file": "clips/c.wav", "concept": "tempos", "label": 120.5}
"#
    .to_vec();
    let dir = tempfile::tempdir().unwrap();
    let runner_dir = dir.path().to_path_buf();
    runner()
        .run(&damaged(manifest), |bytes| {
            std::fs::write(runner_dir.join("manifest.jsonl"), &bytes).unwrap();
            let _ = baton::concepts::manifest::read_manifest(&runner_dir);
            Ok(())
        })
        .unwrap();
    let config = std::fs::read(fixture("tiny-a/config.json")).unwrap();
    fuzz_file("config.json", config, |p| {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
        let _ = baton::model::config::MusicGenConfig::from_json(&text);
    });
}
