//! Helpers shared by the steering tests: random direction bundles and a library folder.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use baton::probe::DirectionBundle;
use baton::script::{run_source, DryRun, DryRunLog, RecipeOptions, RecipeOutcome, ScriptError};
use rand::{Rng, SeedableRng};

/// Every library name the recipes in scripts/ use.
pub const NAMES: &[&str] = &[
    "notes:C",
    "notes:C#",
    "notes:D",
    "notes:G",
    "notes:A",
    "chords:maj",
    "chords:min",
    "tempos:bpm",
    "timbres:brass",
];

/// A random unit-vector bundle for a model of the given shape, with residual norms.
pub fn bundle(
    concept: &str,
    target: &str,
    hidden: usize,
    layers: usize,
    seed: u64,
) -> DirectionBundle {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut directions = BTreeMap::new();
    let mut scores = BTreeMap::new();
    for l in 0..layers {
        let v: Vec<f32> = (0..hidden).map(|_| rng.random::<f32>() - 0.5).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        directions.insert(l, v.iter().map(|x| x / n).collect());
        scores.insert(l, 0.5 + 0.5 * rng.random::<f64>());
    }
    DirectionBundle {
        concept: concept.into(),
        target: target.into(),
        model: "tiny".into(),
        hidden_size: hidden,
        num_layers: layers,
        metric: if concept == "tempos" { "mse" } else { "auc" }.into(),
        pooling: "mean".into(),
        scores,
        residual_norms: directions.keys().map(|&l| (l, 8.0 + l as f32)).collect(),
        directions,
        method: "rfm".into(),
    }
}

/// Writes a bundle at `dir/concept/target.safetensors`.
pub fn add(dir: &Path, name: &str, hidden: usize, layers: usize, seed: u64) {
    let (concept, target) = name.split_once(':').unwrap();
    std::fs::create_dir_all(dir.join(concept)).unwrap();
    bundle(concept, target, hidden, layers, seed)
        .write(&dir.join(concept).join(format!("{target}.safetensors")))
        .unwrap();
}

/// A temporary direction library with every name in [`NAMES`].
pub fn library(hidden: usize, layers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in NAMES.iter().enumerate() {
        add(dir.path(), name, hidden, layers, 100 + i as u64);
    }
    dir
}

/// Runs `source` without a model (a [`DryRun`]) over the direction library `lib`, writing under
/// `out`, with the options `tweak` changes; returns the outcome and what was asked to render.
pub fn dry_run(
    source: &str,
    lib: &Path,
    out: &Path,
    tweak: impl FnOnce(&mut RecipeOptions),
) -> (Result<RecipeOutcome, Box<ScriptError>>, DryRunLog) {
    let mut options = RecipeOptions {
        directions: lib.to_path_buf(),
        out_dir: out.to_path_buf(),
        echo: false,
        ..RecipeOptions::default()
    };
    tweak(&mut options);
    let dry = DryRun::default();
    let outcome = run_source(
        "recipe.rhai",
        source,
        Path::new("."),
        options,
        Box::new(dry.clone()),
    );
    (outcome, dry.log())
}

/// A recipe error as one line of text (message and help): miette wraps long messages at the
/// terminal's width and draws a margin, so a phrase may straddle lines in the drawn report.
pub fn one_line(e: Box<ScriptError>) -> String {
    format!("{:?}", miette::Report::new(*e))
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
