//! Rendering scores to mono audio: a General-MIDI SoundFont through rustysynth, or the built-in
//! synthesizer when no SoundFont is installed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};

use super::builtin;
use super::events::{EventKind, Score};
use super::generators::ClipSpec;
use super::ConceptError;

/// Environment variable naming the SoundFont to use.
pub const SOUNDFONT_ENV: &str = "BATON_SOUNDFONT";

/// Where the Debian/Ubuntu package `timgm6mb-soundfont` (and a few other layouts) put TimGM6mb,
/// the SoundFont SynTheory renders with.
pub const STANDARD_SOUNDFONT_PATHS: [&str; 3] = [
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/TimGM6mb.sf2",
    "/usr/local/share/sounds/sf2/TimGM6mb.sf2",
];

/// Name recorded for the built-in synthesizer.
pub const BUILTIN_SYNTH: &str = "builtin";

/// How a SoundFont was (or was not) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoundFontLookup {
    /// Named explicitly (`--soundfont`): must load, or it is an error.
    Explicit(PathBuf),
    /// Named by [`SOUNDFONT_ENV`]: must load, or it is an error.
    FromEnv(PathBuf),
    /// Found at a standard install path.
    Standard(PathBuf),
    /// Nothing found: use the built-in synthesizer.
    NotFound,
}

/// Finds the SoundFont to use: `explicit`, else `$BATON_SOUNDFONT`, else the first existing
/// [`STANDARD_SOUNDFONT_PATHS`].
pub fn find_soundfont(explicit: Option<&Path>) -> SoundFontLookup {
    if let Some(p) = explicit {
        return SoundFontLookup::Explicit(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(SOUNDFONT_ENV).filter(|v| !v.is_empty()) {
        return SoundFontLookup::FromEnv(PathBuf::from(p));
    }
    STANDARD_SOUNDFONT_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(|p| SoundFontLookup::Standard(p.to_path_buf()))
        .unwrap_or(SoundFontLookup::NotFound)
}

enum Synth {
    SoundFont(Arc<SoundFont>),
    Builtin,
}

/// Renders clip scores to mono f32 audio at a fixed sample rate. Cheap to share across threads.
pub struct Renderer {
    synth: Synth,
    name: String,
    sample_rate: u32,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("synth", &self.name)
            .field("sample_rate", &self.sample_rate)
            .finish()
    }
}

/// Refuses a sample rate outside what the synthesizers (and datasets) support.
pub(crate) fn check_rate(sample_rate: u32) -> Result<(), ConceptError> {
    if (16_000..=192_000).contains(&sample_rate) {
        Ok(())
    } else {
        Err(ConceptError::SampleRate(sample_rate))
    }
}

impl Renderer {
    /// A renderer playing the SoundFont at `path`.
    pub fn soundfont(path: &Path, sample_rate: u32) -> Result<Self, ConceptError> {
        check_rate(sample_rate)?;
        let bytes = std::fs::read(path).map_err(|e| ConceptError::SoundFontRead {
            path: path.to_path_buf(),
            err: e,
        })?;
        let invalid = |why: String| ConceptError::SoundFontInvalid {
            path: path.to_path_buf(),
            why,
        };
        // rustysynth indexes into the file's chunks directly and can panic on a malformed file:
        // turn that into an error instead of a crash.
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            SoundFont::new(&mut std::io::Cursor::new(&bytes))
        }));
        let font = match parsed {
            Ok(Ok(font)) => font,
            Ok(Err(e)) => return Err(invalid(e.to_string())),
            Err(_) => return Err(invalid("malformed SoundFont data".into())),
        };
        if font.get_presets().is_empty() {
            return Err(invalid("it holds no presets".into()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Self {
            synth: Synth::SoundFont(Arc::new(font)),
            name,
            sample_rate,
        })
    }

    /// A renderer using the built-in synthesizer (a few timbres and a click; no files needed).
    pub fn builtin(sample_rate: u32) -> Result<Self, ConceptError> {
        check_rate(sample_rate)?;
        Ok(Self {
            synth: Synth::Builtin,
            name: BUILTIN_SYNTH.into(),
            sample_rate,
        })
    }

    /// The SoundFont's file name, or `builtin`.
    pub fn synth_name(&self) -> &str {
        &self.name
    }

    /// True when rendering with a SoundFont.
    pub fn uses_soundfont(&self) -> bool {
        matches!(self.synth, Synth::SoundFont(_))
    }

    /// Output sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Renders one clip to mono samples (no disk access).
    pub fn render(&self, spec: &ClipSpec) -> Result<Vec<f32>, ConceptError> {
        self.render_score(&spec.score)
    }

    /// Renders the kept window of a score to mono samples.
    pub fn render_score(&self, score: &Score) -> Result<Vec<f32>, ConceptError> {
        let sr = self.sample_rate as f64;
        let start = (score.start * sr).round() as usize;
        let len = (score.length * sr).round() as usize;
        match &self.synth {
            Synth::Builtin => Ok(builtin::render(score, self.sample_rate, start, len)),
            Synth::SoundFont(font) => render_soundfont(font, score, self.sample_rate, start, len),
        }
    }
}

/// Plays the score through rustysynth sample-accurately up to each event (rustysynth applies an
/// event at its next 64-sample block, i.e. within 2 ms at 32 kHz) and mixes the stereo output to
/// mono.
fn render_soundfont(
    font: &Arc<SoundFont>,
    score: &Score,
    sample_rate: u32,
    start: usize,
    len: usize,
) -> Result<Vec<f32>, ConceptError> {
    let settings = SynthesizerSettings::new(sample_rate as i32);
    let mut synth =
        Synthesizer::new(font, &settings).map_err(|e| ConceptError::Synth(e.to_string()))?;
    let total = start + len;
    let mut left = vec![0f32; total];
    let mut right = vec![0f32; total];
    let mut pos = 0usize;
    let sr = sample_rate as f64;
    for e in &score.events {
        let at = ((e.time * sr).round().max(0.0) as usize).min(total);
        if at > pos {
            synth.render(&mut left[pos..at], &mut right[pos..at]);
            pos = at;
        }
        if at >= total {
            break;
        }
        let ch = e.channel as i32;
        match e.kind {
            EventKind::Program(p) => synth.process_midi_message(ch, 0xC0, p as i32, 0),
            EventKind::Control { controller, value } => {
                synth.process_midi_message(ch, 0xB0, controller as i32, value as i32)
            }
            EventKind::NoteOn { key, velocity } => synth.note_on(ch, key as i32, velocity as i32),
            EventKind::NoteOff { key } => synth.note_off(ch, key as i32),
        }
    }
    if pos < total {
        synth.render(&mut left[pos..], &mut right[pos..]);
    }
    Ok(left[start..]
        .iter()
        .zip(&right[start..])
        .map(|(l, r)| 0.5 * (l + r))
        .collect())
}
