//! SynTheory-style concept clips (notes, intervals, scales, chords, progressions, tempos, time
//! signatures, and baton's timbres) built as MIDI-level events and rendered in-process.
//!
//! - [`theory`]: pitch names, modes, triads voiced as SynTheory voices them;
//! - [`instruments`]: the GM program table and SynTheory's 92 tonal programs;
//! - [`events`]: event lists ([`Score`]) built in beats;
//! - [`generators`]: the eight concepts as [`ClipSpec`]s (labels, program, seed, score);
//! - [`render`]: a General-MIDI SoundFont through rustysynth, or [`builtin`] when none is found;
//! - [`manifest`] and [`writer`]: the dataset folder (`dataset.json`, `clips/*.wav`,
//!   `manifest.jsonl`), written in parallel, atomically and resumably;
//! - [`import`]: the same folder made from the user's own recordings, one sub-folder per class.
//!
//! The probe stage uses [`clip_specs`] + [`Renderer::render`] to get audio without touching the
//! disk, or [`read_manifest`] to read back a folder `baton dataset` wrote.

pub mod builtin;
pub mod events;
pub mod generators;
pub mod import;
pub mod instruments;
pub mod manifest;
pub mod render;
pub mod theory;
pub mod writer;

use std::path::PathBuf;

pub use events::{Event, EventKind, Score};
pub use generators::{
    clip_specs, ClipSpec, Concept, Instruments, Label, SpecOptions, CLIP_SECONDS,
};
pub use import::{import_folder, ImportJob, ImportSummary};
pub use manifest::{read_manifest, DatasetInfo, ManifestEntry};
pub use render::{find_soundfont, Renderer, SoundFontLookup, SOUNDFONT_ENV};
pub use writer::{
    write_dataset, write_dataset_shard, ClipSink, DatasetJob, WavFiles, WriteSummary,
};

use crate::audio::AudioError;

/// Errors building, rendering or writing concept datasets.
#[derive(Debug, thiserror::Error)]
pub enum ConceptError {
    /// A concept name that is not one of the eight.
    #[error(
        "unknown concept `{0}` (expected one of: notes, intervals, scales, chords, progressions, \
         tempos, time_signatures, timbres)"
    )]
    UnknownConcept(String),
    /// An `--instruments` value that names no program, or an empty or out-of-range list.
    #[error("bad instrument choice `{0}`: {1} (expected `all`, a count such as `8`, or a list such as `0,40,violin`)")]
    BadInstruments(String, String),
    /// A sample rate the synthesizers do not support.
    #[error("sample rate {0} Hz is out of range (16000..=192000)")]
    SampleRate(u32),
    // Causes are part of the message (and not `#[source]`), so the CLI prints one line.
    /// The SoundFont file cannot be opened or read.
    #[error("cannot read SoundFont {path}: {err}")]
    SoundFontRead { path: PathBuf, err: std::io::Error },
    /// The SoundFont file is not a SoundFont, or is cut short.
    #[error("{path} is not a valid SoundFont: {why}")]
    SoundFontInvalid { path: PathBuf, why: String },
    /// rustysynth refused the settings.
    #[error("synthesizer error: {0}")]
    Synth(String),
    /// `--out` holds a dataset made with other options: resuming into it would mix them.
    #[error(
        "{dir} holds another dataset ({difference}); choose another --out folder or delete it"
    )]
    OtherDataset { dir: PathBuf, difference: String },
    /// `--out` holds files that are not a baton dataset.
    #[error("{dir} is not empty and holds no baton dataset; choose a new or empty --out folder")]
    NotEmpty { dir: PathBuf },
    /// A clip's WAV file could not be written (disk full, permissions).
    #[error("cannot write clip {name}: {err}")]
    WriteClip { name: String, err: AudioError },
    /// A file-system operation on the dataset folder failed.
    #[error("cannot access {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A clip left by an earlier run cannot be read back.
    #[error("{err}; delete it and run again to render it anew")]
    StaleClip { err: AudioError },
    /// Writing `dataset.json` or `manifest.jsonl` failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// A folder of recordings cannot be imported as it is.
    #[error("{path}: {why}")]
    Import { path: PathBuf, why: String },
    /// `dataset.json` or `manifest.jsonl` is unreadable or malformed.
    #[error("{path}: {why}")]
    Manifest { path: PathBuf, why: String },
}

/// The `baton learn` command that makes the library bundle `name`, when it names a concept and
/// one of its targets (`notes:C#`, `tempos:bpm`).
pub fn learn_command(name: &str) -> Option<String> {
    let (concept, target) = name.split_once(':')?;
    let concept: Concept = concept.parse().ok()?;
    concept
        .targets()
        .iter()
        .any(|t| t == target)
        .then(|| format!("baton learn {}:{target}", concept.name()))
}
