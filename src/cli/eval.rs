//! `baton eval CLIP... --probe NAME`: read audio with a trained probe, whole clips or windows of
//! them. With a classifier (`BUNDLE.classifier.safetensors` from `baton train --task
//! multiclass`) each reading is the class probabilities, else the projection onto the bundle's
//! direction at its best block. `--target CLASS` summarises how often and how strongly that class
//! is heard: did the steering work, and from when.

use std::path::{Path, PathBuf};

use baton::files::write_atomic;
use baton::probe::bundle::classifier_path;
use baton::probe::eval::{
    check_windowing, most_likely, read_audio, read_clip, Reader, Reading, Tally, Value, Windowing,
};
use baton::probe::{DirectionBundle, Pooling};
use baton::rfm::io::SavedProbe;
use baton::script::plot::{sparkline, sparkline_in};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use baton::steer::Direction;

use super::common::{load_model, Library, ModelArgs};
use super::output::check_output;
use super::shard::ShardArgs;
use baton::files::bytes_hash;
use baton::probe::shards::EVAL_SHARD_KEY;
use baton::shard::Shard;

/// Arguments of `baton eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// WAV files to read (mixed to mono; another rate than the model's is resampled).
    #[arg(required = true)]
    pub clips: Vec<PathBuf>,
    /// The probe: a bundle file or a library name such as `chords:all`. Its classifier is used
    /// when one was trained, else the direction's projection at its best block.
    #[arg(long)]
    pub probe: String,
    /// Read windows of this many seconds instead of whole clips (4 s matches the concept
    /// datasets' clips); when the windows stop short of a clip's end, one more ends there.
    #[arg(long)]
    pub window: Option<f64>,
    /// Seconds from one window's start to the next (default: the window length).
    #[arg(long, requires = "window")]
    pub hop: Option<f64>,
    /// A class to summarise: its mean probability, and in how many readings it is the most
    /// likely (classifier probes).
    #[arg(long)]
    pub target: Option<String>,
    /// The classifier to read with [default: BUNDLE.classifier.safetensors, when it exists].
    #[arg(long, value_name = "FILE")]
    pub classifier: Option<PathBuf>,
    /// Also write every reading to this JSON file. A shard writes JSON's name with
    /// `.shard-K-of-N` before the extension instead, for `baton merge`.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub library: Library,
    #[command(flatten)]
    pub model: ModelArgs,
    // A shard reads its share of CLIP... (a contiguous run, in the order given).
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// The probe named `probe` (a bundle file or library name), as a reader, with its pooling: its
/// classifier (`classifier`, else `BUNDLE.classifier.safetensors` when it exists), else the
/// direction's projection at its best block.
pub fn load_reader(
    probe: &str,
    classifier: Option<&Path>,
    library: &Library,
) -> miette::Result<(Reader, Pooling)> {
    let path = library.bundle("--probe", probe)?;
    let bundle =
        DirectionBundle::read(&path).map_err(|e| miette::miette!("--probe {probe}: {e}"))?;
    let pooling: Pooling = bundle
        .pooling
        .parse()
        .map_err(|e| miette::miette!("--probe {probe}: {e}"))?;
    let chosen = classifier.map(Path::to_path_buf);
    let classifier = chosen.clone().unwrap_or_else(|| classifier_path(&path));
    if chosen.is_some() && !classifier.is_file() {
        return Err(miette::miette!(
            "--classifier: no file {}",
            classifier.display()
        ));
    }
    if classifier.is_file() {
        let saved =
            SavedProbe::read(&classifier).map_err(|e| miette::miette!("--probe {probe}: {e}"))?;
        if saved.classes.is_empty() {
            return Err(miette::miette!(
                "--probe {probe}: {} is a regression probe; eval reads classes or projections",
                classifier.display()
            ));
        }
        return Ok((Reader::Classifier(Box::new(saved)), pooling));
    }
    let direction = Direction::from_bundle(probe, bundle);
    let Some((block, _)) = direction.best_block() else {
        return Err(miette::miette!(
            "--probe {probe}: the bundle holds no scored direction"
        ));
    };
    let vector = direction.vectors[&block].clone();
    Ok((Reader::Direction { block, vector }, pooling))
}

/// Checks that `--target` names one of the classifier's classes (a direction has none).
pub fn check_target(reader: &Reader, target: &str, probe: &str) -> miette::Result<()> {
    match reader {
        Reader::Classifier(c) if !c.classes.iter().any(|k| k == target) => Err(miette::miette!(
            "--target {target}: the classifier's classes are {}",
            c.classes.join(", ")
        )),
        Reader::Direction { .. } => Err(miette::miette!(
            "--target needs a classifier; --probe {probe} has none (its readings are projections)"
        )),
        _ => Ok(()),
    }
}

/// Checks `--window` and `--hop`, and turns them into a windowing.
pub fn windowing(window: Option<f64>, hop: Option<f64>) -> miette::Result<Option<Windowing>> {
    for (flag, v) in [("--window", window), ("--hop", hop)] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0) {
                return Err(miette::miette!(
                    "{flag} must be a positive number of seconds, got {v}"
                ));
            }
        }
    }
    Ok(window.map(|window| Windowing {
        window,
        hop: hop.unwrap_or(window),
    }))
}

/// Checks the arguments that need no model, and returns the windowing they ask for.
fn check_args(
    args: &EvalArgs,
    reader: &Reader,
    clips: &[PathBuf],
    json: Option<&Path>,
) -> miette::Result<Option<Windowing>> {
    let windowing = windowing(args.window, args.hop)?;
    if let Some(t) = &args.target {
        check_target(reader, t, &args.probe)?;
    }
    for clip in clips {
        if !clip.is_file() {
            return Err(miette::miette!("no audio file {}", clip.display()));
        }
    }
    if let Some(json) = json {
        check_output(json)?;
    }
    Ok(windowing)
}

/// One line of the table.
fn describe(reader: &Reader, value: &Value, target: Option<&str>) -> String {
    match (reader, value) {
        (Reader::Classifier(c), Value::Probabilities(p)) => {
            let best = most_likely(p);
            let mut text = format!("{} ({:.3})", c.class_name(best), p[best]);
            if let Some(k) = target.and_then(|t| c.classes.iter().position(|n| n == t)) {
                text = format!("{text:<24} p({}) = {:.3}", c.class_name(k), p[k]);
            }
            text
        }
        (_, Value::Projection(x)) => format!("projection {x:+.4}"),
        (_, Value::Probabilities(_)) => "?".into(),
    }
}

/// What to draw of a clip's windows: the target's probability (drawn on 0..1), or the
/// projection (drawn on its own range).
fn trace(
    reader: &Reader,
    readings: &[Reading],
    target: Option<&str>,
) -> Option<(String, Vec<f64>)> {
    match reader {
        Reader::Classifier(c) => {
            let t = target?;
            let k = c.classes.iter().position(|x| x == t)?;
            let values = readings
                .iter()
                .filter_map(|r| match &r.value {
                    Value::Probabilities(p) => p.get(k).copied(),
                    Value::Projection(_) => None,
                })
                .collect();
            Some((format!("p({t})"), values))
        }
        Reader::Direction { .. } => {
            let values = readings
                .iter()
                .filter_map(|r| match r.value {
                    Value::Projection(x) => Some(x),
                    Value::Probabilities(_) => None,
                })
                .collect();
            Some(("projection".into(), values))
        }
    }
}

/// The closing summary over all readings.
fn summary(reader: &Reader, readings: &[&Reading], target: Option<&str>) -> Vec<String> {
    match (Tally::of(reader, readings.iter().copied()), reader) {
        (Tally::Classes { mean, top, n }, Reader::Classifier(c)) => {
            match target.and_then(|t| c.classes.iter().position(|x| x == t)) {
                Some(k) => vec![format!(
                    "{}: mean probability {:.3} over {n} reading(s); the most likely class in {} of {n}",
                    c.class_name(k),
                    mean[k],
                    top[k]
                )],
                None => vec![format!(
                    "most likely class over {n} reading(s): {}",
                    (0..c.classes.len())
                        .filter(|&k| top[k] > 0)
                        .map(|k| format!("{} {}", c.class_name(k), top[k]))
                        .collect::<Vec<_>>()
                        .join(", ")
                )],
            }
        }
        (Tally::Projections { mean, min, max, n }, _) => vec![format!(
            "projection at block {} over {n} reading(s): mean {mean:+.4}, from {min:+.4} to {max:+.4}",
            reader.block()
        )],
        (Tally::Classes { .. }, Reader::Direction { .. }) => Vec::new(),
    }
}

/// One reading as JSON: its window, and its class probabilities by name or its projection.
pub fn reading_json(reader: &Reader, r: &Reading) -> serde_json::Value {
    let mut row = serde_json::json!({"start": r.start, "end": r.end});
    match (&r.value, reader) {
        (Value::Probabilities(p), Reader::Classifier(c)) => {
            let probs: serde_json::Map<String, serde_json::Value> = p
                .iter()
                .enumerate()
                .map(|(k, v)| (c.class_name(k), serde_json::json!(v)))
                .collect();
            row["probs"] = probs.into();
        }
        (Value::Projection(x), _) => row["projection"] = serde_json::json!(x),
        _ => {}
    }
    row
}

/// A reading back from [`reading_json`]'s form (`None` when it is not one).
pub fn reading_from_json(reader: &Reader, row: &serde_json::Value) -> Option<Reading> {
    let value = match reader {
        Reader::Classifier(c) => Value::Probabilities(
            (0..c.classes.len())
                .map(|k| row["probs"][c.class_name(k)].as_f64())
                .collect::<Option<Vec<f64>>>()?,
        ),
        Reader::Direction { .. } => Value::Projection(row["projection"].as_f64()?),
    };
    Some(Reading {
        start: row["start"].as_f64()?,
        end: row["end"].as_f64()?,
        value,
    })
}

/// Every reading as JSON; a shard's says which shard of which clips it holds, for
/// `baton merge`.
fn to_json(
    args: &EvalArgs,
    reader: &Reader,
    all: &[(PathBuf, Vec<Reading>)],
    shard: Shard,
) -> String {
    let rows: Vec<serde_json::Value> = all
        .iter()
        .flat_map(|(clip, readings)| {
            readings.iter().map(move |r| {
                let mut row = reading_json(reader, r);
                row["clip"] = clip.display().to_string().into();
                row
            })
        })
        .collect();
    let (kind, classes) = match reader {
        Reader::Classifier(c) => ("classes", c.classes.clone()),
        Reader::Direction { .. } => ("projection", Vec::new()),
    };
    let mut doc = serde_json::json!({
        "probe": args.probe,
        "model": args.model.source.model,
        "block": reader.block(),
        "kind": kind,
        "classes": classes,
        "readings": rows,
    });
    if !shard.is_whole() {
        // Shards of one run name the same clips in the same order: a hash of the list tells.
        let list: String = args
            .clips
            .iter()
            .map(|c| format!("{}\n", c.display()))
            .collect();
        doc[EVAL_SHARD_KEY] = serde_json::json!({
            "shard": shard.to_string(),
            "clips": args.clips.len(),
            "list": format!("{:016x}", bytes_hash(list.as_bytes())),
        });
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Runs `baton eval`.
pub fn run(args: EvalArgs) -> miette::Result<()> {
    let shard = args.shard.resolve()?;
    let clips = &args.clips[shard.range(args.clips.len())];
    let json = args.json.as_ref().map(|j| {
        if shard.is_whole() {
            j.clone()
        } else {
            shard.file_for(j)
        }
    });
    let (reader, pooling) = load_reader(&args.probe, args.classifier.as_deref(), &args.library)?;
    let windowing = check_args(&args, &reader, clips, json.as_deref())?;
    if clips.is_empty() {
        // More shards than clips: this one has none, but its (empty) readings file completes
        // the set `baton merge` joins.
        eprintln!(
            "shard {shard}: none of the {} clip(s) falls to this shard",
            args.clips.len()
        );
        if let Some(path) = &json {
            write_atomic(path, to_json(&args, &reader, &[], shard).as_bytes())
                .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
        }
        return Ok(());
    }
    let model = load_model(&args.model)?;
    reader
        .check_fits(&model)
        .map_err(|e| miette::miette!("--probe {}: {e}", args.probe))?;
    check_windowing(&model, windowing).map_err(|e| miette::miette!("{e}"))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows of {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Every clip is read from disk (and its rate checked) before the first is run.
    let audio = clips
        .iter()
        .map(|clip| read_clip(&model, clip).map_err(|e| miette::miette!("{e}")))
        .collect::<miette::Result<Vec<_>>>()?;
    let mut all = Vec::new();
    for (clip, audio) in clips.iter().zip(&audio) {
        bar.set_message(clip.display().to_string());
        let readings = read_audio(
            &model,
            audio,
            &reader,
            pooling,
            windowing,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )
        .map_err(|e| miette::miette!("{}: {e}", clip.display()))?;
        all.push((clip.clone(), readings));
    }
    bar.finish_and_clear();

    let target = args.target.as_deref();
    let width = clips
        .iter()
        .map(|c| c.display().to_string().len())
        .max()
        .unwrap_or(0);
    println!("probe {} at block {}", args.probe, reader.block());
    for (clip, readings) in &all {
        for r in readings {
            println!(
                "{:width$}  {:>7.2}s {:>7.2}s  {}",
                clip.display().to_string(),
                r.start,
                r.end,
                describe(&reader, &r.value, target)
            );
        }
    }
    // Over windows, a sparkline shows at a glance when the concept comes and goes.
    for (clip, readings) in all.iter().filter(|(_, r)| r.len() > 1) {
        if let Some((what, values)) = trace(&reader, readings, target) {
            let line = match reader {
                Reader::Classifier(_) => sparkline_in(&values, 0.0, 1.0),
                Reader::Direction { .. } => sparkline(&values),
            };
            println!("{:width$}  {what:<14} {line}", clip.display().to_string());
        }
    }
    let flat: Vec<&Reading> = all.iter().flat_map(|(_, r)| r).collect();
    for line in summary(&reader, &flat, target) {
        println!("{line}");
    }
    if let Some(path) = &json {
        write_atomic(path, to_json(&args, &reader, &all, shard).as_bytes())
            .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
