//! `baton learn CONCEPT[:TARGET]`: from nothing to directions in the library in one command.
//! It renders a concept dataset, extracts its features with the model at hand and trains a probe
//! per target, writing `DIRECTIONS/CONCEPT/TARGET.safetensors`. Each stage is the verb of the same
//! name (`dataset`, `features`, `train`) with sizes chosen here, and each resumes: the dataset
//! renders only missing clips, and features are extracted again only when the dataset or the
//! model changed.

use std::path::{Path, PathBuf};

use baton::concepts::{Concept, ConceptError, Instruments, CLIP_SECONDS};
use baton::probe::FeatureSet;
use baton::shard::Shard;
use baton::steer::library::library_path;
use clap::Args;
use miette::miette;

use super::common::{model_config, Library, ModelArgs};
use super::dataset::DatasetArgs;
use super::features::FeaturesArgs;
use super::shard::ShardArgs;
use super::train::{MethodArg, TaskArg, TrainArgs};

/// Arguments of `baton learn`.
#[derive(Args, Debug)]
pub struct LearnArgs {
    /// What to learn: a concept (`chords`: a direction for each of its targets) or one target
    /// (`notes:C#`). `--list` shows them.
    pub what: Option<String>,
    /// List the concepts and targets that can be learned.
    #[arg(long)]
    pub list: bool,
    /// Where the dataset and features are kept between runs [default: learn/CONCEPT].
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Clips in the dataset (4 s each). More is slower and steers better; the paper's datasets
    /// hold thousands [default: 240, or 120 for models wider than musicgen-small].
    #[arg(long)]
    pub clips: Option<usize>,
    /// Hyper-parameter draws per block when fitting each probe (fewer is faster) [default: 20,
    /// or 8 for models wider than musicgen-small].
    #[arg(long)]
    pub search: Option<usize>,
    #[command(flatten)]
    pub library: Library,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// musicgen-small's width: wider models get smaller default sizes.
const SMALL_WIDTH: usize = 1024;

/// What `CONCEPT[:TARGET]` asks for: the concept and its targets (every one without a target).
pub fn targets(what: &str) -> Result<(Concept, Vec<String>), String> {
    let (name, target) = match what.split_once(':') {
        Some((c, t)) => (c, Some(t)),
        None => (what, None),
    };
    let concept: Concept = name.parse().map_err(|e: ConceptError| e.to_string())?;
    let all = concept.targets();
    match target {
        None => Ok((concept, all)),
        Some(t) if all.iter().any(|c| c == t) => Ok((concept, vec![t.to_string()])),
        Some(t) => Err(format!(
            "{concept} has no target {t:?}; its targets are {}",
            all.join(", ")
        )),
    }
}

/// The `--list` text: each concept and its targets.
fn list() -> String {
    let mut lines = vec![
        "what `baton learn` can learn (CONCEPT for every target, or CONCEPT:TARGET):".to_string(),
    ];
    for c in Concept::ALL {
        let (_, t) = targets(c.name()).unwrap_or((c, Vec::new()));
        lines.push(format!("  {:<16} {}", c.name(), t.join(" ")));
    }
    lines.join("\n")
}

/// Runs `baton learn`.
pub fn run(args: LearnArgs) -> miette::Result<()> {
    if args.list {
        println!("{}", list());
        return Ok(());
    }
    let Some(what) = &args.what else {
        return Err(miette!(
            "what should be learned? e.g. `baton learn notes:C#` (`baton learn --list` shows all)"
        ));
    };
    let (concept, targets) = targets(what).map_err(|e| miette!("{e}"))?;
    // Clips are balanced over the classes, and the 70/15/15 split needs a few of each class in
    // every part. Checked before the model's config is looked up.
    let least = (4 * concept.classes().len()).max(8);
    if let Some(c) = args.clips.filter(|c| *c < least) {
        return Err(miette!(
            "--clips {c} is too few to train and validate {concept} probes: at least {least} \
             ({} classes, 4 clips each)",
            concept.classes().len()
        ));
    }
    if args.search == Some(0) {
        return Err(miette!("--search must be at least 1 draw"));
    }
    // Sizes for the model at hand: wider models (medium, large) take several times longer per
    // clip and per fit, so they start smaller (never below the floor above).
    let (_, config) = model_config(&args.model.spec())?;
    let wide = config.decoder.hidden_size > SMALL_WIDTH;
    let clips = args
        .clips
        .unwrap_or(if wide { 120 } else { 240 })
        .max(least);
    let search = args.search.unwrap_or(if wide { 8 } else { 20 });
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| Path::new("learn").join(concept.name()));
    let data = work.join("data");
    let features = work.join("features.safetensors");
    // The model's shape settles the features' size before anything runs.
    let (layers, hidden) = (config.decoder.num_hidden_layers, config.decoder.hidden_size);
    let wav_mb = clips as f64 * CLIP_SECONDS * 32_000.0 * 4.0 / 1e6;
    let features_mb = (clips * layers * hidden * 4) as f64 / 1e6;
    let minutes = estimate_minutes(&config, clips, targets.len(), search);
    eprintln!(
        "learning {} direction(s) of {concept} ({}) with {}: {} clips of {CLIP_SECONDS} s \
         ({wav_mb:.0} MB of WAV in {}), features of {layers} blocks x {hidden} ({features_mb:.0} \
         MB), then {} probe(s) of {layers} blocks x {} draws; about {} on this machine (from a \
         quick timing of its matrix products: the bars show the real time left). Interrupted, \
         run the same command again to go on.",
        targets.len(),
        targets.join(", "),
        args.model.spec(),
        clips,
        data.display(),
        targets.len(),
        search,
        if minutes < 1.0 {
            "a minute or less".to_string()
        } else {
            format!("{minutes:.0} min")
        }
    );

    eprintln!("stage 1/3: dataset");
    super::dataset::run(DatasetArgs {
        concept: concept.name().to_string(),
        out: data.clone(),
        from: None,
        clip_seconds: CLIP_SECONDS,
        instruments: Instruments::All,
        limit: Some(clips),
        seed: 0,
        sample_rate: 32_000,
        soundfont: None,
        builtin_synth: false,
        pcm16: false,
        quiet: false,
        shard: whole(),
    })?;

    eprintln!("stage 2/3: features");
    if features_current(&features, &data, &args.model.spec()) {
        eprintln!("{} is up to date", features.display());
    } else {
        super::features::run(FeaturesArgs {
            dataset: data.clone(),
            out: features.clone(),
            layers: Vec::new(),
            pooling: "mean".into(),
            model: args.model.clone(),
            shard: whole(),
        })?;
    }

    for (i, target) in targets.iter().enumerate() {
        let name = format!("{concept}:{target}");
        let out = library_path(&args.library.dir, &name)
            .ok_or_else(|| miette!("{name} is not a library name"))?;
        eprintln!("stage 3/3: probes, {} of {}: {name}", i + 1, targets.len());
        let values = concept.classes().is_empty();
        super::train::run(TrainArgs {
            features: features.clone(),
            out: out.clone(),
            method: MethodArg::Rfm,
            task: Some(if values {
                TaskArg::Regression
            } else {
                TaskArg::Binary
            }),
            positive: (!values).then(|| target.clone()),
            val: None,
            search: Some(search),
            reg: None,
            bandwidth: None,
            exponent: None,
            center_grads: false,
            iters: None,
            components: 1,
            seed: 0,
            metric: None,
            layers: None,
            classifier: None,
            precision: "f32".into(),
            search_list: None,
        })?;
        eprintln!("learned {name}: {}", out.display());
    }
    Ok(())
}

/// Floating-point operations per second this machine does in f32 matrix products, timed on a
/// few products of the decoder's width (a rough rate, for estimates only).
fn measured_flops(width: usize) -> f64 {
    use candle_core::{Device, Tensor};
    let n = width.clamp(64, 1024);
    let Ok(a) = Tensor::ones((n, n), candle_core::DType::F32, &Device::Cpu) else {
        return 1e10;
    };
    let start = std::time::Instant::now();
    let mut rounds = 0;
    while rounds < 3 || start.elapsed().as_secs_f64() < 0.05 {
        if a.matmul(&a).is_err() {
            return 1e10;
        }
        rounds += 1;
    }
    2.0 * (n * n * n) as f64 * rounds as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

/// Minutes `learn` should take: the features pass (2 flops per decoder weight per frame, the
/// decoder's weights counted from its shape, twice over for the codec) and the probes (each of `search` draws a few
/// kernel solves over the training clips, per block), at this machine's measured rate. Rendering
/// the clips is fast next to them.
fn estimate_minutes(
    config: &baton::model::MusicGenConfig,
    clips: usize,
    targets: usize,
    search: usize,
) -> f64 {
    let d = &config.decoder;
    let (h, layers) = (d.hidden_size as f64, d.num_hidden_layers as f64);
    // Self- and cross-attention projections (8 h^2) and the feed-forward (2 h ffn) per block.
    let weights = layers * (8.0 * h * h + 2.0 * h * d.ffn_dim as f64);
    let frames = CLIP_SECONDS * config.frame_rate();
    // Encoding each clip with EnCodec first costs about as much again (measured on
    // musicgen-small's shapes: 48 clips took 100 s where the decoder's products alone come to
    // about 50 s).
    let features = 2.0 * 2.0 * weights * frames * clips as f64;
    // A fit: ~30 iterations of a kernel (n^2 h), its solve (n^3 / 3) and the feature matrix's
    // update (n h^2), n the training clips.
    let n = 0.7 * clips as f64;
    let per_fit = 30.0 * (2.0 * n * n * h + n * n * n / 3.0 + 2.0 * n * h * h);
    let probes = targets as f64 * layers * search as f64 * per_fit;
    (features + probes) / measured_flops(d.hidden_size) / 60.0
}

/// The shard of a stage `learn` runs: the whole job, whatever the environment says.
fn whole() -> ShardArgs {
    ShardArgs {
        shard: Some(Shard::WHOLE),
        shard_count: None,
    }
}

/// True when `features` was extracted from the dataset in `data` as it is now, by `model`.
fn features_current(features: &Path, data: &Path, model: &str) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(made), Some(listed)) = (modified(features), modified(&data.join("manifest.jsonl")))
    else {
        return false;
    };
    made >= listed
        && FeatureSet::read(features)
            .is_ok_and(|f| f.model == baton::model::load::model_identity(model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_concepts_classes_or_its_value() {
        let (c, t) = targets("notes:C#").unwrap();
        assert_eq!((c, t), (Concept::Notes, vec!["C#".to_string()]));
        assert_eq!(targets("notes").unwrap().1.len(), 12);
        assert_eq!(targets("tempos").unwrap().1, vec!["bpm"]);
        assert!(targets("notes:H").unwrap_err().contains("C#"));
        assert!(targets("nothing").is_err());
        assert!(list().contains("chords"));
    }
}
