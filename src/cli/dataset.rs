//! `baton dataset`: render a SynTheory-style concept dataset to `clips/*.wav` + `manifest.jsonl`.

use std::path::PathBuf;
use std::time::Instant;

use baton::audio::SampleFormat;
use baton::concepts::{
    find_soundfont, import_folder, write_dataset_shard, Concept, ConceptError, DatasetJob,
    ImportJob, Instruments, Renderer, SoundFontLookup, SpecOptions, WavFiles, SOUNDFONT_ENV,
};
use clap::Args;
use miette::miette;

use super::shard::ShardArgs;

fn parse_instruments(s: &str) -> Result<Instruments, String> {
    s.parse().map_err(|e: ConceptError| e.to_string())
}

/// Arguments of `baton dataset`.
#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// notes, intervals, scales, chords, progressions, tempos or time_signatures (SynTheory's),
    /// or timbres (the GM instrument family playing held notes, arpeggios, melodies and chords).
    /// With --from: any name for a concept of your own (letters, digits, `_`, `-`).
    pub concept: String,
    /// Dataset folder (created; an interrupted run into it resumes; with --from it must be new
    /// or empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Make the dataset from your own recordings instead: a folder with one sub-folder of WAV
    /// files per class (`calm/*.wav`, `tense/*.wav`). Files are mixed to mono, resampled to
    /// --sample-rate and cut into --clip-seconds clips; silence and files under 1 s are left out.
    #[arg(long, value_name = "FOLDER", conflicts_with_all = ["instruments", "limit", "seed", "soundfont", "builtin_synth", "shard"])]
    pub from: Option<PathBuf>,
    /// With --from: length of the clips recordings are cut into, seconds (1 to 30; a shorter
    /// file is one clip).
    #[arg(long, default_value_t = 4.0, requires = "from")]
    pub clip_seconds: f64,
    /// `all` (SynTheory's 92 GM programs), a count N (spread over the GM families), or a list of
    /// GM program numbers or names (`0,40,violin`; one program: `40,`). Tempos and time
    /// signatures use their five click sounds instead.
    #[arg(long, default_value = "all", value_parser = parse_instruments)]
    pub instruments: Instruments,
    /// Render only N clips, balanced over the labels.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seeds click-track offsets and the `--limit` subset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample rate of the clips (MusicGen's EnCodec runs at 32000).
    #[arg(long, default_value_t = 32000)]
    pub sample_rate: u32,
    /// General-MIDI SoundFont (default: $BATON_SOUNDFONT, then TimGM6mb from the
    /// `timgm6mb-soundfont` package; the built-in synthesizer when none is found).
    #[arg(long)]
    pub soundfont: Option<PathBuf>,
    /// Use the built-in synthesizer even when a SoundFont is installed.
    #[arg(long, conflicts_with = "soundfont")]
    pub builtin_synth: bool,
    /// Write 16-bit PCM instead of 32-bit float WAV (half the disk space).
    #[arg(long)]
    pub pcm16: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    // Shards write one --out folder at the same time: each renders its share of the clips, and
    // manifest.jsonl appears once every clip is there (a plain run after them renders what a
    // failed shard left, and writes it).
    #[command(flatten)]
    pub shard: ShardArgs,
}

/// A library error as one line: its message already names the cause, and miette would print
/// the `source` chain again on lines of their own.
fn one_line(e: ConceptError) -> miette::Report {
    miette!("{e}")
}

fn renderer(args: &DatasetArgs) -> miette::Result<Renderer> {
    if args.builtin_synth {
        return Renderer::builtin(args.sample_rate).map_err(one_line);
    }
    match find_soundfont(args.soundfont.as_deref()) {
        SoundFontLookup::Explicit(p)
        | SoundFontLookup::FromEnv(p)
        | SoundFontLookup::Standard(p) => {
            Renderer::soundfont(&p, args.sample_rate).map_err(one_line)
        }
        SoundFontLookup::NotFound => {
            eprintln!(
                "note: no General-MIDI SoundFont found (install `timgm6mb-soundfont`, or pass \
                 --soundfont / set {SOUNDFONT_ENV}); rendering with the built-in synthesizer"
            );
            Renderer::builtin(args.sample_rate).map_err(one_line)
        }
    }
}

/// Runs `baton dataset`.
pub fn run(args: DatasetArgs) -> miette::Result<()> {
    let shard = args.shard.resolve()?;
    if let Some(from) = &args.from {
        if !shard.is_whole() {
            return Err(miette!(
                "--from imports recordings in one process and cannot be sharded; run it outside \
                 the array (or pass --shard 1/1)"
            ));
        }
        return import(&args, from);
    }
    let concept: Concept = args.concept.parse().map_err(|e: ConceptError| {
        miette!("{e}; for a dataset of your own recordings, pass --from FOLDER")
    })?;
    if args.limit == Some(0) {
        return Err(miette!("--limit must be at least 1"));
    }
    let renderer = renderer(&args)?;
    if !concept.uses_instruments() && args.instruments != Instruments::All {
        eprintln!("note: {concept} clips use the five click sounds; --instruments is ignored");
    }
    let job = DatasetJob {
        out: args.out.clone(),
        concept,
        options: SpecOptions {
            instruments: args.instruments.clone(),
            limit: args.limit,
            seed: args.seed,
        },
        format: SampleFormat::from_pcm16_flag(args.pcm16),
        progress: !args.quiet,
    };
    let started = Instant::now();
    let summary = write_dataset_shard(&job, shard, &renderer, &WavFiles).map_err(one_line)?;
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        summary.rendered as f64 / secs
    } else {
        0.0
    };
    let clips = if shard.is_whole() {
        format!("{} clips", summary.total)
    } else {
        format!(
            "shard {shard}: {} of {} clips",
            summary.shard_clips, summary.total
        )
    };
    eprintln!(
        "{}: {clips} in {} ({} rendered, {} already present) with {}; {:.1} s, {:.1} clips/s",
        concept,
        args.out.display(),
        summary.rendered,
        summary.already_present,
        renderer.synth_name(),
        secs,
        rate
    );
    if let Some(limit) = args.limit.filter(|l| *l > summary.total) {
        eprintln!(
            "note: --limit {limit} is more than the {} clips {concept} has: all of them are \
             there",
            summary.total
        );
    }
    if summary.complete() && !shard.is_whole() {
        eprintln!("every clip of the dataset is there; manifest.jsonl lists them");
    }
    if !summary.complete() {
        eprintln!(
            "{} clip(s) of other shards still missing; manifest.jsonl is written once every \
             shard is done (or by a run without --shard, which renders what is missing)",
            summary.missing
        );
    }
    Ok(())
}

/// `baton dataset NAME --from FOLDER`: the user's recordings as a dataset.
fn import(args: &DatasetArgs, from: &std::path::Path) -> miette::Result<()> {
    let job = ImportJob {
        from: from.to_path_buf(),
        out: args.out.clone(),
        concept: args.concept.clone(),
        clip_seconds: args.clip_seconds,
        sample_rate: args.sample_rate,
        format: SampleFormat::from_pcm16_flag(args.pcm16),
        progress: !args.quiet,
    };
    let started = Instant::now();
    let summary = import_folder(&job).map_err(one_line)?;
    let per_class: Vec<String> = summary
        .classes
        .iter()
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    eprintln!(
        "{}: {} clips in {} from {} files ({}); {:.1} s",
        job.concept,
        summary.clips(),
        job.out.display(),
        summary.files,
        per_class.join(", "),
        started.elapsed().as_secs_f64()
    );
    if summary.resampled > 0 {
        eprintln!(
            "note: {} file(s) resampled to {} Hz",
            summary.resampled, job.sample_rate
        );
    }
    if summary.silent > 0 {
        eprintln!("note: {} silent clip(s) left out", summary.silent);
    }
    if let Some((first, why)) = summary.unreadable.first() {
        eprintln!(
            "note: {} WAV file(s) could not be read, left out (first: {}: {why})",
            summary.unreadable.len(),
            first.display()
        );
    }
    for (what, paths) in [
        ("shorter than 1 s or empty, left out", &summary.too_short),
        (
            "not a .wav file in a class folder, ignored",
            &summary.ignored,
        ),
    ] {
        if let Some(first) = paths.first() {
            eprintln!(
                "note: {} file(s) {what} (first: {})",
                paths.len(),
                first.display()
            );
        }
    }
    Ok(())
}
