//! `baton dataset`: render a SynTheory-style concept dataset to `clips/*.wav` + `manifest.jsonl`.

use std::path::PathBuf;
use std::time::Instant;

use baton::audio::SampleFormat;
use baton::concepts::{
    find_soundfont, write_dataset, Concept, ConceptError, DatasetJob, Instruments, Renderer,
    SoundFontLookup, SpecOptions, WavFiles, SOUNDFONT_ENV,
};
use clap::Args;
use miette::miette;

fn parse_concept(s: &str) -> Result<Concept, String> {
    s.parse().map_err(|e: ConceptError| e.to_string())
}

fn parse_instruments(s: &str) -> Result<Instruments, String> {
    s.parse().map_err(|e: ConceptError| e.to_string())
}

/// Arguments of `baton dataset`.
#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// notes, intervals, scales, chords, progressions, tempos or time_signatures (SynTheory's),
    /// or timbres (the GM instrument family playing held notes, arpeggios, melodies and chords).
    #[arg(value_parser = parse_concept)]
    pub concept: Concept,
    /// Dataset folder (created; an interrupted run into it resumes).
    #[arg(long)]
    pub out: PathBuf,
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
    if args.limit == Some(0) {
        return Err(miette!("--limit must be at least 1"));
    }
    let renderer = renderer(&args)?;
    if !args.concept.uses_instruments() && args.instruments != Instruments::All {
        eprintln!(
            "note: {} clips use the five click sounds; --instruments is ignored",
            args.concept
        );
    }
    let job = DatasetJob {
        out: args.out.clone(),
        concept: args.concept,
        options: SpecOptions {
            instruments: args.instruments.clone(),
            limit: args.limit,
            seed: args.seed,
        },
        format: if args.pcm16 {
            SampleFormat::Pcm16
        } else {
            SampleFormat::Float32
        },
        progress: !args.quiet,
    };
    let started = Instant::now();
    let summary = write_dataset(&job, &renderer, &WavFiles).map_err(one_line)?;
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        summary.rendered as f64 / secs
    } else {
        0.0
    };
    eprintln!(
        "{}: {} clips in {} ({} rendered, {} already present) with {}; {:.1} s, {:.1} clips/s",
        args.concept,
        summary.total,
        args.out.display(),
        summary.rendered,
        summary.already_present,
        renderer.synth_name(),
        secs,
        rate
    );
    Ok(())
}
