//! `baton sweep`: render one prompt at several steering strengths and seeds, read every take
//! with a probe, and tabulate how strongly the concept is heard at each strength: the paper's
//! strength sweep (probe accuracy of generated audio at eta0 = .15/.30/.45/.60), and the way to
//! calibrate a new direction before writing a recipe around it.
//!
//! Each take is what `baton render --prompt P --steer NAME:S --seed N` gives (on the CPU
//! exactly, batched or not; on a GPU a batch may round differently), and each
//! reading what `baton eval TAKE --probe PROBE` gives. Each take's readings are kept beside
//! it (`OUT/s{STRENGTH}-seed{N}.json`, written atomically as the take finishes) and gathered
//! into `OUT/sweep.json`, so an interrupted sweep resumes, one run with more strengths or takes
//! adds only the new ones, and shards (`--shard K/N`) render their share of the takes into one
//! folder at once: each gathers sweep.json again after its last take until it holds every take
//! on disk ([`baton::shard::settle`]), so the last shard to finish leaves it complete.
//!
//! Beside the concept, the summary says what the steering costs ([`super::sweep_cost`]): each
//! strength's CLAP cosine with the prompt, its FAD and KAD against the strength-0 takes, and
//! `OUT/tradeoff.png`, concept against CLAP per strength.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use baton::audio::{write_wav, SampleFormat};
use baton::files::{content_hash, remove_file_if_there, write_atomic};
use baton::probe::bundle::classifier_path;
use baton::probe::eval::{check_windowing, read_audio, read_clip, Reader, Reading, Tally};
use baton::probe::DirectionBundle;
use baton::shard::settle;
use baton::steer::{Plan, StrengthUnit};
use clap::Args;
use serde_json::{json, Value as Json};

use super::common::{load_model, model_config, parse_device, Library, ModelArgs};
use super::eval::{check_target, load_reader, reading_from_json, reading_json, windowing};
use super::generation::{check_seconds, parse_steer, plan_hook, SamplingArgs, SteerArgs};
use super::render::generate_with_progress;
use super::shard::ShardArgs;
use super::sweep_cost::{
    clap_id, clap_of, fill_clap, mean_clap, write_tradeoff, ClapScorer, Distances, TRADEOFF_FILE,
};
use baton::eval::clap::DEFAULT_MODEL;
use baton::files::temp_target;
use baton::model::Extent;

/// The file that records a sweep's settings, takes and readings.
const SWEEP_FILE: &str = "sweep.json";

/// Arguments of `baton sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Text prompt of every take.
    #[arg(long)]
    pub prompt: String,
    /// Strengths to try, comma-separated; each is given to every --steer direction. The
    /// default is the paper's sweep with the unsteered baseline.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "0,0.15,0.3,0.45,0.6"
    )]
    pub strengths: Vec<f64>,
    /// Takes per strength, seeded --seed, --seed + 1, ... (every strength uses the same seeds).
    #[arg(long, default_value_t = 3)]
    pub takes: usize,
    /// Seed of the first take.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Length of each take, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The probe that reads each take: a bundle file or library name [default: the first
    /// --steer]. Its classifier is used when one was trained, else the projection onto its
    /// direction.
    #[arg(long)]
    pub probe: Option<String>,
    /// The class the steering aims at, summarised per strength [default: the first --steer
    /// bundle's target, with a classifier probe].
    #[arg(long)]
    pub target: Option<String>,
    /// Read each take in windows of this many seconds instead of whole.
    #[arg(long)]
    pub window: Option<f64>,
    /// Seconds from one window's start to the next (default: the window length).
    #[arg(long, requires = "window")]
    pub hop: Option<f64>,
    /// Folder for the takes (`s{STRENGTH}-seed{N}.wav`) and sweep.json; a sweep of the same
    /// settings there resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Write 16-bit PCM instead of 32-bit float WAV.
    #[arg(long)]
    pub pcm16: bool,
    /// Takes of one strength generated together (faster: the weights are read once per step
    /// for all of them; each take keeps its own seed's samples and gate draws).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// CLAP checkpoint that scores each take against the prompt (the CLAP column and the
    /// trade-off plot): a hub id or a local folder (transformers' ClapModel format).
    #[arg(long, value_name = "M", default_value = DEFAULT_MODEL)]
    pub clap_model: String,
    /// Leave out the CLAP column and the trade-off plot (no CLAP model is loaded).
    #[arg(long)]
    pub no_clap: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub steering: SteerArgs,
    #[command(flatten)]
    pub library: Library,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// One take's place in the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Take {
    strength: f64,
    seed: u64,
}

/// A strength as take files name it: strengths that print the same here are the same take.
fn strength_key(strength: f64) -> String {
    format!("{strength:.3}")
}

impl Take {
    /// The take's WAV file name, which also identifies it in sweep.json (so strengths count as
    /// equal at the name's precision, 0.001).
    fn file(&self) -> String {
        format!("s{}-seed{}.wav", strength_key(self.strength), self.seed)
    }

    /// The file that records the take's readings, beside its audio.
    fn record(&self) -> String {
        format!("s{}-seed{}.json", strength_key(self.strength), self.seed)
    }
}

/// Whether `name` is shaped like a take's audio or record (see [`Take::file`]): a sweep's own
/// file, perhaps a sibling shard's written before its first sweep.json.
fn is_take_file(name: &str) -> bool {
    let Some(stem) = name
        .strip_suffix(".wav")
        .or_else(|| name.strip_suffix(".json"))
    else {
        return false;
    };
    let Some((strength, seed)) = stem
        .strip_prefix('s')
        .and_then(|rest| rest.rsplit_once("-seed"))
    else {
        return false;
    };
    strength.parse::<f64>().is_ok() && !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit())
}

/// What a sweep must share with an earlier one in the same folder for its takes to count: the
/// flags, with the probe as resolved, a local model folder as a full path, and the contents of
/// every bundle and classifier involved (a retrained direction makes other takes).
fn settings(args: &SweepArgs, probe: &str, files: &[PathBuf]) -> Json {
    let model = Path::new(&args.model.source.model)
        .canonicalize()
        .map_or_else(|_| args.model.spec(), |p| p.display().to_string());
    let contents: Vec<String> = files
        .iter()
        .map(|f| content_hash(f).map_or_else(|| "missing".into(), |h| format!("{h:016x}")))
        .collect();
    let mut settings = json!({
        "prompt": args.prompt,
        "seconds": args.seconds,
        "greedy": args.sampling.greedy,
        "top_k": args.sampling.top_k,
        "temperature": args.sampling.temperature,
        "cfg": args.sampling.cfg,
        "steer": args.steering.steer,
        "layer_weights": args.steering.layer_weights,
        "gate": args.steering.gate,
        "model": model,
        "dtype": args.model.dtype,
        "probe": probe,
        "files": contents,
        "window": args.window,
        "hop": args.hop,
        "pcm16": args.pcm16,
    });
    // Only when not the default, so sweeps from before these flags existed still resume.
    if args.steering.strength_unit != StrengthUnit::Absolute {
        settings["strength_unit"] = json!(args.steering.strength_unit.name());
    }
    if let Some(n) = &args.sampling.negative_prompt {
        settings["negative_prompt"] = json!(n);
    }
    settings
}

/// The takes already in `out/sweep.json` (by key), after checking it was made with `settings`.
fn earlier_takes(out: &Path, settings: &Json) -> miette::Result<BTreeMap<String, Json>> {
    let path = out.join(SWEEP_FILE);
    // Sibling shards write into the folder while this one looks: what a look finds that only a
    // sibling's write since the read explains is looked at again (for a while, so a folder that
    // stays that way gets its answer).
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let doc = loop {
        let again = Instant::now() < deadline;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Another shard's files in flight (a take rendered before the first sweep.json,
                // or a temporary file) do not make the folder someone else's.
                let names: Vec<String> = std::fs::read_dir(out)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if again && names.iter().any(|n| n == SWEEP_FILE) {
                    // A sibling wrote the first sweep.json since the read: read that.
                    continue;
                }
                let occupied = names
                    .iter()
                    .any(|n| temp_target(n).is_none() && !is_take_file(n));
                if occupied {
                    return Err(miette::miette!(
                        "{} holds files but no {SWEEP_FILE}; choose a new or empty --out folder",
                        out.display()
                    ));
                }
                return Ok(BTreeMap::new());
            }
            Err(e) => return Err(miette::miette!("cannot read {}: {e}", path.display())),
        };
        let doc: Json = serde_json::from_str(&text)
            .map_err(|e| miette::miette!("{}: not a sweep file ({e})", path.display()))?;
        let no_takes = doc
            .get("takes")
            .and_then(Json::as_array)
            .is_some_and(Vec::is_empty);
        if !no_takes {
            break doc;
        }
        if take_records(out, &BTreeMap::new())?.is_empty() {
            // A sweep whose first take failed: nothing to keep, so any settings may start it
            // anew.
            return Ok(BTreeMap::new());
        }
        // Of this sweep already (its takes' sweep.json is rewritten with each take), or waited
        // for long enough: the settings decide.
        if !again || doc.get("settings") == Some(settings) {
            break doc;
        }
        // A take recorded although sweep.json lists none: a sibling's first take, landed since
        // the read; its shard rewrites sweep.json (with the settings that take was made with)
        // right after.
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if doc.get("settings") != Some(settings) {
        let theirs = doc.get("settings").cloned().unwrap_or(Json::Null);
        // Keys of either run: one that only the earlier sweep has differs too.
        let keys: std::collections::BTreeSet<&str> = [settings, &theirs]
            .iter()
            .filter_map(|s| s.as_object())
            .flat_map(|o| o.keys().map(String::as_str))
            .collect();
        let differs: Vec<String> = keys
            .into_iter()
            .filter(|k| settings.get(k) != theirs.get(k))
            .map(|k| {
                let show = |s: &Json| s.get(k).cloned().unwrap_or(Json::Null);
                format!(
                    "{k}: this run {}, earlier {}",
                    show(settings),
                    show(&theirs)
                )
            })
            .collect();
        return Err(miette::miette!(
            "{} holds a sweep with other settings ({}); choose another --out folder",
            out.display(),
            differs.join(", ")
        ));
    }
    let takes = doc
        .get("takes")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(takes
        .into_iter()
        .filter_map(|t| {
            let file = t.get("file")?.as_str()?.to_string();
            // A take counts only while its audio is there too.
            out.join(&file).is_file().then_some((file, t))
        })
        .collect())
}

/// Every take in `out`: those of `earlier` (sweep.json's when the run began) and those recorded
/// beside their audio, by file; a take counts only while its audio is there.
fn take_records(
    out: &Path,
    earlier: &BTreeMap<String, Json>,
) -> miette::Result<BTreeMap<String, Json>> {
    let mut takes = earlier.clone();
    let entries = match std::fs::read_dir(out) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(takes),
        Err(e) => return Err(miette::miette!("cannot read {}: {e}", out.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if name == SWEEP_FILE || temp_target(&name).is_some() {
            continue;
        }
        let wav = format!("{stem}.wav");
        if !out.join(&wav).is_file() {
            continue;
        }
        let text = match std::fs::read_to_string(entry.path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(miette::miette!(
                    "cannot read {}: {e}",
                    entry.path().display()
                ))
            }
        };
        let record: Json = serde_json::from_str(&text).map_err(|e| {
            miette::miette!("{}: not a take's record ({e})", entry.path().display())
        })?;
        if record.get("file").and_then(Json::as_str) == Some(wav.as_str()) {
            takes.insert(wav, record);
        }
    }
    Ok(takes)
}

/// Splits the takes to render into batches of at most `size`: the same strength, consecutive
/// seeds.
fn batches<'a>(todo: &[&'a Take], size: usize) -> Vec<Vec<&'a Take>> {
    let mut out: Vec<Vec<&Take>> = Vec::new();
    for &take in todo {
        match out.last_mut() {
            Some(b)
                if b.len() < size
                    && b[0].strength == take.strength
                    && b[b.len() - 1].seed + 1 == take.seed =>
            {
                b.push(take)
            }
            _ => out.push(vec![take]),
        }
    }
    out
}

/// Per-strength summary of the readings in `takes`: for a classifier and target, the mean
/// probability of the target and how many readings have it as the most likely class (the
/// paper's accuracy); for a direction, the mean projection.
fn summarise(reader: &Reader, target: Option<&str>, strength: f64, takes: &[&Json]) -> Json {
    let readings: Vec<Reading> = takes
        .iter()
        .filter_map(|t| t.get("readings").and_then(Json::as_array))
        .flatten()
        .filter_map(|r| reading_from_json(reader, r))
        .collect();
    let mut row = json!({"strength": strength, "takes": takes.len(), "readings": readings.len()});
    match (Tally::of(reader, &readings), reader) {
        (Tally::Classes { mean, top, .. }, Reader::Classifier(c)) => {
            if let Some(k) = target.and_then(|t| c.classes.iter().position(|x| x == t)) {
                row["mean_p"] = json!(mean[k]);
                row["top1"] = json!(top[k]);
            }
        }
        (Tally::Projections { mean, .. }, _) => row["mean_projection"] = json!(mean),
        _ => {}
    }
    row
}

/// Runs `baton sweep`.
pub fn run(args: SweepArgs) -> miette::Result<()> {
    // Everything that can be checked without the model is, before the slow load.
    if args.prompt.trim().is_empty() {
        return Err(miette::miette!("--prompt is empty"));
    }
    if args.steering.steer.is_empty() {
        return Err(miette::miette!(
            "nothing to sweep: give --steer NAME (a bundle or library name such as notes:C#)"
        ));
    }
    if let Some(spec) = args
        .steering
        .steer
        .iter()
        .find(|s| parse_steer(s, &args.library).is_ok_and(|(_, own)| own.is_some()))
    {
        return Err(miette::miette!(
            "--steer {spec}: a sweep sets the strength itself (--strengths); name the direction \
             only"
        ));
    }
    if args.strengths.is_empty() || args.strengths.iter().any(|s| !s.is_finite()) {
        return Err(miette::miette!(
            "--strengths must list finite numbers, e.g. 0,0.15,0.3"
        ));
    }
    if args.takes == 0 {
        return Err(miette::miette!("--takes must be at least 1"));
    }
    if args.batch == 0 {
        return Err(miette::miette!("--batch must be at least 1"));
    }
    check_seconds(args.seconds)?;
    args.sampling.check()?;
    let windowing = windowing(args.window, args.hop)?;
    // The bundles are read once, now, so a bad one fails before the model loads; each batch
    // scales this unit-strength plan and seeds its gate.
    let unit_plan = args.steering.plan(0, &args.library, Some(1.0))?;
    // Each strength once, in the order given; two that the take files (0.001 apart) cannot
    // tell apart are refused. `+ 0.0` makes -0 the unsteered 0.
    let mut strengths: Vec<f64> = Vec::new();
    for s in args.strengths.iter().map(|s| s + 0.0) {
        match strengths
            .iter()
            .find(|&&t| strength_key(t) == strength_key(s))
        {
            Some(&t) if t == s => {}
            Some(&t) => {
                return Err(miette::miette!(
                    "--strengths {t} and {s} are closer than the 0.001 a take's file name tells \
                     apart"
                ))
            }
            None => strengths.push(s),
        }
    }
    let steered = &args.steering.steer[0];
    let probe = args.probe.clone().unwrap_or_else(|| steered.clone());
    let (reader, pooling) = load_reader(&probe, None, &args.library)?;
    let target = match (&args.target, &reader) {
        (Some(t), _) => {
            check_target(&reader, t, &probe)?;
            Some(t.clone())
        }
        (None, Reader::Classifier(c)) => {
            let path = args.library.bundle("--steer", steered)?;
            let aim = DirectionBundle::read(&path)
                .map_err(|e| miette::miette!("--steer {steered}: {e}"))?
                .target;
            if !c.classes.contains(&aim) {
                return Err(miette::miette!(
                    "--probe {probe}: its classes ({}) do not include `{aim}`, the target of \
                     --steer {steered}; name one with --target",
                    c.classes.join(", ")
                ));
            }
            Some(aim)
        }
        (None, Reader::Direction { .. }) => None,
    };
    // Every file the takes and readings depend on, in a fixed order.
    let mut files = args
        .steering
        .steer
        .iter()
        .map(|name| args.library.bundle("--steer", name))
        .collect::<miette::Result<Vec<_>>>()?;
    let probe_file = args.library.bundle("--probe", &probe)?;
    files.push(classifier_path(&probe_file));
    files.push(probe_file);
    let shard = args.shard.resolve()?;
    let settings = settings(&args, &probe, &files);
    let earlier = earlier_takes(&args.out, &settings)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| miette::miette!("cannot create {}: {e}", args.out.display()))?;
    let gather = || take_records(&args.out, &earlier);
    // The folder is marked as this sweep's before the first take, so a failed take leaves it
    // resumable.
    write_sweep(&args.out, &settings, &gather()?, None)?;
    let done = gather()?;

    let takes: Vec<Take> = strengths
        .iter()
        .flat_map(|&strength| {
            (0..args.takes as u64).map(move |k| Take {
                strength,
                seed: args.seed + k,
            })
        })
        .collect();
    // Every shard splits the same list of this run's takes.
    let mine = &takes[shard.range(takes.len())];
    let todo: Vec<&Take> = mine
        .iter()
        .filter(|t| !done.contains_key(&t.file()))
        .collect();
    if todo.len() < mine.len() {
        eprintln!(
            "{} of {} takes already in {}",
            mine.len() - todo.len(),
            mine.len(),
            args.out.display()
        );
    }
    // CLAP is loaded before the (slow) MusicGen load, so a missing model fails at once; and
    // only when a take needs scoring (a finished sweep in a folder reports without it).
    let device = parse_device(&args.model.source.device)?;
    let clap_model = (!args.no_clap).then(|| clap_id(&args.clap_model));
    let scorer = match &clap_model {
        Some(id) if !todo.is_empty() || done.values().any(|r| clap_of(r, id).is_none()) => {
            Some(ClapScorer::load(&args.clap_model, &args.prompt, &device)?)
        }
        _ => None,
    };
    if !todo.is_empty() {
        // The length is settled by config.json: say so before the weights load.
        let (_, config) = model_config(&args.model.spec())?;
        if args.seconds > config.max_seconds() {
            return Err(miette::miette!(
                "--seconds {} is longer than this model generates in one take (at most {:.2} s)",
                args.seconds,
                config.max_seconds()
            ));
        }
        let model = load_model(&args.model)?;
        // What can only be checked against the model is, before minutes of rendering.
        reader
            .check_fits(&model)
            .map_err(|e| miette::miette!("--probe {probe}: {e}"))?;
        check_windowing(&model, windowing).map_err(|e| miette::miette!("{e}"))?;
        let steps = model
            .max_new_tokens_for_seconds(args.seconds)
            .map_err(|e| miette::miette!("{e}"))?;
        let format = SampleFormat::from_pcm16_flag(args.pcm16);
        let started = Instant::now();
        let mut finished = 0;
        for batch in batches(&todo, args.batch) {
            let first = batch[0];
            let last = batch[batch.len() - 1];
            if batch.len() == 1 {
                eprintln!(
                    "take {} of {}: strength {}, seed {}",
                    finished + 1,
                    todo.len(),
                    first.strength,
                    first.seed
                );
            } else {
                eprintln!(
                    "takes {}-{} of {}: strength {}, seeds {}-{}",
                    finished + 1,
                    finished + batch.len(),
                    todo.len(),
                    first.strength,
                    first.seed,
                    last.seed
                );
            }
            // One batch is one generation: item b is sampled with seed + b, exactly as
            // `baton render --seed` renders it alone.
            let plan = Plan {
                seed: first.seed,
                ..unit_plan.scaled(first.strength)
            };
            let mut hook = plan_hook(&model, &plan, steps)?;
            let options = args.sampling.options(steps, first.seed);
            let prompts = vec![args.prompt.as_str(); batch.len()];
            let codes = generate_with_progress(
                &model,
                &prompts,
                &options,
                &Extent::default(),
                hook.as_mut(),
            )?;
            let audio = model.decode(&codes).map_err(|e| miette::miette!("{e}"))?;
            for (take, wave) in batch.iter().zip(&audio) {
                let file = args.out.join(take.file());
                write_wav(&file, wave, model.sample_rate(), format)
                    .map_err(|e| miette::miette!("{e}"))?;
                // Read back from the file, so the readings are what `baton eval` gives on it.
                let clip = read_clip(&model, &file).map_err(|e| miette::miette!("{e}"))?;
                let readings =
                    read_audio(&model, &clip, &reader, pooling, windowing, &mut |_, _| {})
                        .map_err(|e| miette::miette!("{}: {e}", file.display()))?;
                let mut record = json!({
                    "strength": take.strength,
                    "seed": take.seed,
                    "file": take.file(),
                    "readings": readings
                        .iter()
                        .map(|r| reading_json(&reader, r))
                        .collect::<Vec<_>>(),
                });
                if let Some(scorer) = &scorer {
                    record["clap"] = scorer.score(&file)?;
                }
                // Recorded take by take: a failure later in the batch keeps this one.
                write_json(&args.out.join(take.record()), &record)?;
                write_sweep(&args.out, &settings, &gather()?, None)?;
            }
            finished += batch.len();
        }
        eprintln!(
            "{} take(s) in {:.1} s",
            todo.len(),
            started.elapsed().as_secs_f64()
        );
    }

    // Takes rendered before CLAP scores existed, or scored by another --clap-model, are
    // scored now (their audio stays).
    if let Some(scorer) = &scorer {
        let n = fill_clap(&args.out, gather()?.values(), scorer)?;
        if n > 0 {
            eprintln!("scored {n} earlier take(s) with CLAP ({})", scorer.id());
        }
    }
    // The summary covers every take in the folder, also those of earlier runs with other
    // strengths or more seeds, and of other shards.
    let mut distances = Distances::new(args.model.spec(), device);
    let (concept_key, concept_label) = match target.as_deref() {
        Some(t) => ("mean_p", format!("mean p({t})")),
        None => ("mean_projection", "mean projection".to_string()),
    };
    let mut rows = Vec::new();
    let done = settle(gather, |done| {
        rows = summary(&reader, target.as_deref(), done);
        add_costs(
            &mut rows,
            done,
            &args.out,
            clap_model.as_deref(),
            &mut distances,
        )?;
        if clap_model.is_some() {
            let legend = args.steering.steer.join(" + ");
            write_tradeoff(&args.out, &rows, concept_key, &concept_label, &legend)?;
        } else {
            // A plot from an earlier run with CLAP would no longer match sweep.json.
            // Sibling shards settling at once may both remove it.
            let stale = args.out.join(TRADEOFF_FILE);
            if stale.is_file() {
                remove_file_if_there(&stale)
                    .map_err(|e| miette::miette!("{}: cannot remove: {e}", stale.display()))?;
            }
        }
        let measures = json!({
            "clap_model": clap_model,
            "distances": {
                "embedding": distances.embedding(),
                "rows": "one per codec frame",
                "reference_strength": 0.0,
            },
            "tradeoff": clap_model.as_ref().map(|_| TRADEOFF_FILE),
        });
        write_sweep(&args.out, &settings, done, Some((&rows, &measures)))
    })?;
    print_table(&args, &probe, &reader, target.as_deref(), &rows);
    let zero = strength_key(0.0);
    let has_zero = rows.iter().any(|r| {
        r["strength"]
            .as_f64()
            .is_some_and(|s| strength_key(s) == zero)
    });
    if !has_zero && !rows.is_empty() {
        eprintln!(
            "no strength-0 takes in {}: FAD and KAD are measured against them (add 0 to \
             --strengths)",
            args.out.display()
        );
    }
    let left = takes
        .iter()
        .filter(|t| !done.contains_key(&t.file()))
        .count();
    if left > 0 {
        eprintln!(
            "{left} of this sweep's {} takes are not in {} yet (other shards'); sweep.json \
             covers every take once every shard is done (or a run without --shard renders what \
             is left)",
            takes.len(),
            args.out.display()
        );
    }
    Ok(())
}

/// The takes of `done` by strength, in increasing strength.
fn by_strength(done: &BTreeMap<String, Json>) -> Vec<(f64, Vec<&Json>)> {
    let mut groups: Vec<(f64, Vec<&Json>)> = Vec::new();
    for t in done.values() {
        let s = t["strength"].as_f64().unwrap_or(f64::NAN);
        match groups
            .iter_mut()
            .find(|(g, _)| strength_key(*g) == strength_key(s))
        {
            Some((_, takes)) => takes.push(t),
            None => groups.push((s, vec![t])),
        }
    }
    groups.sort_by(|a, b| a.0.total_cmp(&b.0));
    groups
}

/// The per-strength summary of every take in `done`, by strength.
fn summary(reader: &Reader, target: Option<&str>, done: &BTreeMap<String, Json>) -> Vec<Json> {
    by_strength(done)
        .iter()
        .map(|(s, takes)| summarise(reader, target, *s, takes))
        .collect()
}

/// Adds to each summary row (one per strength, as [`summary`] orders them) what the steering
/// costs: the mean CLAP cosine with the prompt (`clap`, of model `clap_model`) and FAD/KAD of
/// its takes against the strength-0 takes (`fad`, `kad`; none for strength 0 itself, nor
/// without strength-0 takes).
fn add_costs(
    rows: &mut [Json],
    done: &BTreeMap<String, Json>,
    out: &Path,
    clap_model: Option<&str>,
    distances: &mut Distances,
) -> miette::Result<()> {
    let groups = by_strength(done);
    let files = |takes: &[&Json]| -> Vec<PathBuf> {
        takes
            .iter()
            .filter_map(|t| t.get("file").and_then(Json::as_str))
            .map(|f| out.join(f))
            .collect()
    };
    let zero = strength_key(0.0);
    let reference = groups
        .iter()
        .find(|(s, _)| strength_key(*s) == zero)
        .map(|(_, takes)| files(takes));
    for (row, (strength, takes)) in rows.iter_mut().zip(&groups) {
        if let Some((mean, n)) = clap_model.and_then(|id| mean_clap(takes, id)) {
            row["clap"] = json!(mean);
            row["clap_takes"] = json!(n);
        }
        if let (Some(reference), false) = (&reference, strength_key(*strength) == zero) {
            if let Some(d) = distances.between(reference, &files(takes))? {
                row["fad"] = json!(d.fad);
                row["kad"] = json!(d.kad);
            }
        }
    }
    Ok(())
}

/// Writes sweep.json: settings, every take so far, and the summary once there is one (with
/// what its cost columns measure).
fn write_sweep(
    out: &Path,
    settings: &Json,
    done: &BTreeMap<String, Json>,
    summary: Option<(&[Json], &Json)>,
) -> miette::Result<()> {
    let mut doc = json!({
        "settings": settings,
        "takes": done.values().collect::<Vec<_>>(),
    });
    if let Some((s, measures)) = summary {
        doc["summary"] = json!(s);
        doc["measures"] = measures.clone();
    }
    write_json(&out.join(SWEEP_FILE), &doc)
}

/// Writes `doc` as pretty JSON to `path`, atomically (a take's record or sweep.json).
pub fn write_json(path: &Path, doc: &Json) -> miette::Result<()> {
    let text = serde_json::to_string_pretty(doc).unwrap_or_default();
    write_atomic(path, text.as_bytes())
        .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))
}

/// The table: the concept per strength, then what it costs (CLAP, FAD, KAD) where measured,
/// and a line saying what those are.
fn print_table(
    args: &SweepArgs,
    probe: &str,
    reader: &Reader,
    target: Option<&str>,
    summary: &[Json],
) {
    println!(
        "\"{}\" steered by {}, read by {probe} at block {}",
        args.prompt,
        args.steering.steer.join(" + "),
        reader.block()
    );
    let head = match target {
        Some(t) => format!("mean p({t})"),
        None => "mean projection".into(),
    };
    let w = head.len();
    let has = |key: &str| summary.iter().any(|r| r.get(key).is_some());
    let (clap, dist) = (has("clap"), has("fad"));
    let mut line = format!("strength  takes  {head}");
    if target.is_some() {
        line.push_str("  most likely");
    }
    if clap {
        line.push_str("    CLAP");
    }
    if dist {
        line.push_str(&format!("  {:>12}  {:>12}", "FAD", "KAD"));
    }
    println!("{}", line.trim_end());
    let cell = |row: &Json, key: &str| row.get(key).and_then(Json::as_f64);
    for row in summary {
        let (s, k, n) = (
            row["strength"].as_f64().unwrap_or(f64::NAN),
            row["takes"].as_u64().unwrap_or(0),
            row["readings"].as_u64().unwrap_or(0),
        );
        let mut line = match target {
            Some(_) => format!(
                "{s:>8.3}  {k:>5}  {:>w$.3}  {:<11}",
                row["mean_p"].as_f64().unwrap_or(f64::NAN),
                format!("{} of {n}", row["top1"].as_u64().unwrap_or(0)),
            ),
            None => format!(
                "{s:>8.3}  {k:>5}  {:>+w$.4}",
                row["mean_projection"].as_f64().unwrap_or(f64::NAN)
            ),
        };
        if clap {
            match cell(row, "clap") {
                Some(c) => line.push_str(&format!("  {c:>+6.4}")),
                None => line.push_str(&format!("  {:>7}", "-")),
            }
        }
        if dist {
            for key in ["fad", "kad"] {
                let v = cell(row, key).map_or_else(|| "-".to_string(), super::fad::num);
                line.push_str(&format!("  {v:>12}"));
            }
        }
        println!("{}", line.trim_end());
    }
    let mut notes = Vec::new();
    if clap {
        notes.push(format!(
            "CLAP: mean cosine of the takes with the prompt ({})",
            args.clap_model
        ));
    }
    if dist {
        notes.push(
            "FAD, KAD: the takes against the strength-0 takes, in the model's codec embedding \
             (one row per frame)"
                .to_string(),
        );
    }
    if !notes.is_empty() {
        println!("{}", notes.join("; "));
    }
    if clap {
        println!(
            "concept against CLAP per strength: {}",
            args.out.join(TRADEOFF_FILE).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_one_strength_and_consecutive_seeds() {
        let t = |strength, seed| Take { strength, seed };
        let takes = [
            t(0.0, 0),
            t(0.0, 1),
            t(0.0, 2),
            t(0.0, 4),
            t(0.5, 5),
            t(0.5, 6),
        ];
        let todo: Vec<&Take> = takes.iter().collect();
        let seeds = |size| -> Vec<Vec<u64>> {
            batches(&todo, size)
                .iter()
                .map(|b| b.iter().map(|t| t.seed).collect())
                .collect()
        };
        assert_eq!(seeds(4), [vec![0, 1, 2], vec![4], vec![5, 6]]);
        assert_eq!(seeds(2), [vec![0, 1], vec![2], vec![4], vec![5, 6]]);
        assert_eq!(seeds(1).len(), 6);
    }

    #[test]
    fn a_sibling_shards_first_sweep_file_never_makes_the_folder_foreign() {
        // Shards start at once on a new folder: each looks for sweep.json while another may be
        // writing the first one. Whenever the look falls between the two, sweep.json was once
        // taken for a foreign file (seen in CI); races are rare, so the test runs many.
        let settings = json!({"prompt": "a tune"});
        for round in 0..200 {
            let dir = tempfile::tempdir().expect("tmp");
            let out = dir.path().to_path_buf();
            let written = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    write_sweep(&out, &settings, &BTreeMap::new(), None).expect("write");
                    written.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                // Looks again and again while the sibling writes, as a slow start would (at
                // least once, and once after the write).
                loop {
                    let done = written.load(std::sync::atomic::Ordering::SeqCst);
                    let found = earlier_takes(&out, &settings);
                    assert!(
                        matches!(&found, Ok(t) if t.is_empty()),
                        "round {round}: {found:?}"
                    );
                    if done {
                        break;
                    }
                }
            });
        }
    }

    #[test]
    fn a_sibling_shards_first_take_is_read_with_the_sweep_file_it_rewrites() {
        // A folder prepared with an empty sweep.json of other settings (a sweep whose first
        // take failed) that sibling shards start into: one's first take lands between this
        // shard's read of sweep.json and its look for takes, and that shard rewrites sweep.json
        // with this sweep's settings right after. Read again, the folder is this sweep's.
        let settings = json!({"prompt": "a tune"});
        let take = Take {
            strength: 0.0,
            seed: 0,
        };
        let record = json!({"strength": 0.0, "seed": 0, "file": take.file()});
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("tmp");
            let out = dir.path().to_path_buf();
            write_json(&out.join(SWEEP_FILE), &json!({"settings": {}, "takes": []}))
                .expect("failed sweep");
            std::fs::write(out.join(take.file()), b"RIFF").expect("wav");
            write_json(&out.join(take.record()), &record).expect("record");
            std::thread::scope(|s| {
                s.spawn(|| {
                    let done = BTreeMap::from([(take.file(), record.clone())]);
                    write_sweep(&out, &settings, &done, None).expect("write");
                });
                let found = earlier_takes(&out, &settings);
                assert!(
                    matches!(&found, Ok(t) if t.len() == 1),
                    "round {round}: {found:?}"
                );
            });
        }
    }

    #[test]
    fn take_files_are_told_from_foreign_ones() {
        let take = Take {
            strength: -2.5,
            seed: 7,
        };
        assert!(is_take_file(&take.file()));
        assert!(is_take_file(&take.record()));
        for foreign in [
            "notes.txt",
            "s1.000-seed.wav",
            "sx-seed1.wav",
            "a0.000-seed1.wav",
            "s0.5-seed1.mp3",
        ] {
            assert!(!is_take_file(foreign), "{foreign}");
        }
    }
}
