//! The seven SynTheory concepts, and baton's own timbres, as lists of clip specs: labels,
//! instrument, seed and the score.
//!
//! Enumeration order, counts and musical content follow SynTheory's generators (notes, intervals,
//! scales, chords, chord progressions, tempos, time signatures); each loop nests as theirs does,
//! instrument innermost. Timbres (the instrument family, a concept the MusicRFM paper names as
//! missing) is built the same way: the same figures on every program, labelled by GM family.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use super::events::{
    Score, ScoreBuilder, DRUM_CHANNEL, MELODY_CHANNEL, MELODY_VELOCITY, REVERB_SEND,
};
use super::instruments::{
    family_key, parse_program, program_family, program_name, spread_programs, syntheory_programs,
    tonal_families,
};
use super::theory::{
    diatonic_triad, pitch_class_name, scale_notes, triad, Inversion, Mode, Quality, INTERVAL_NAMES,
};
use super::ConceptError;
use crate::seed::{splitmix64, unit_from_hash};

/// Length of every clip, seconds (8 beats at 120 BPM).
pub const CLIP_SECONDS: f64 = 4.0;

/// Tempo of the tonal concepts and of the time-signature clicks.
const BASE_BPM: f64 = 120.0;

/// One of the seven SynTheory concepts, or baton's timbres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Concept {
    Notes,
    Intervals,
    Scales,
    Chords,
    Progressions,
    Tempos,
    TimeSignatures,
    // Last, so that the discriminant each concept's clip seeds mix in stays as it was.
    /// The GM instrument family playing a figure (baton's; not in SynTheory).
    Timbres,
}

impl Concept {
    /// All concepts: SynTheory's table order, then timbres.
    pub const ALL: [Concept; 8] = [
        Concept::Notes,
        Concept::Intervals,
        Concept::Scales,
        Concept::Chords,
        Concept::Progressions,
        Concept::Tempos,
        Concept::TimeSignatures,
        Concept::Timbres,
    ];

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Concept::Notes => "notes",
            Concept::Intervals => "intervals",
            Concept::Scales => "scales",
            Concept::Chords => "chords",
            Concept::Progressions => "progressions",
            Concept::Tempos => "tempos",
            Concept::TimeSignatures => "time_signatures",
            Concept::Timbres => "timbres",
        }
    }

    /// The concept with exactly this name (no aliases): how a manifest or an imported dataset's
    /// name is matched, so `tempo` or `instruments` stay free for the user's own concepts.
    pub fn from_name(name: &str) -> Option<Concept> {
        Concept::ALL.into_iter().find(|c| c.name() == name)
    }

    /// True for concepts whose label is a number to regress (tempo in BPM).
    pub fn is_regression(self) -> bool {
        self == Concept::Tempos
    }

    /// True for concepts played on the 92 instruments (timbres: on those the choice includes);
    /// the click concepts use five click sounds instead.
    pub fn uses_instruments(self) -> bool {
        !matches!(self, Concept::Tempos | Concept::TimeSignatures)
    }

    /// What a direction can be learned for: each class, or for a concept of values (tempos)
    /// the value's name, `bpm`. Library names are `CONCEPT:TARGET`.
    pub fn targets(self) -> Vec<String> {
        let classes = self.classes();
        if classes.is_empty() {
            vec!["bpm".to_string()]
        } else {
            classes
        }
    }

    /// Class names in a fixed order (empty for regression concepts).
    pub fn classes(self) -> Vec<String> {
        match self {
            Concept::Notes => (0..12).map(|pc| pitch_class_name(pc).to_string()).collect(),
            Concept::Intervals => INTERVAL_NAMES[1..].iter().map(|s| s.to_string()).collect(),
            Concept::Scales => Mode::CHURCH.iter().map(|m| m.name().to_string()).collect(),
            Concept::Chords => Quality::ALL.iter().map(|q| q.name().to_string()).collect(),
            Concept::Progressions => PROGRESSIONS
                .iter()
                .map(|(m, d)| progression_name(*m, d))
                .collect(),
            Concept::Tempos => Vec::new(),
            Concept::TimeSignatures => TIME_SIGNATURES
                .iter()
                .map(|(n, d)| format!("{n}/{d}"))
                .collect(),
            Concept::Timbres => tonal_families(),
        }
    }
}

impl fmt::Display for Concept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Concept {
    type Err = ConceptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase().replace('-', "_");
        let found = match key.as_str() {
            "chord_progressions" => Some(Concept::Progressions),
            "time_signature" | "timesignatures" => Some(Concept::TimeSignatures),
            "instruments" | "instrument_families" | "families" => Some(Concept::Timbres),
            _ => Concept::ALL
                .into_iter()
                .find(|c| c.name() == key || c.name().trim_end_matches('s') == key),
        };
        found.ok_or_else(|| ConceptError::UnknownConcept(s.to_string()))
    }
}

/// What a probe should predict for a clip.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// One of [`Concept::classes`].
    Class(String),
    /// A regression target (BPM for tempos).
    Value(f64),
}

impl Label {
    /// The label as JSON (a string or a number).
    pub fn to_json(&self) -> Value {
        match self {
            Label::Class(c) => Value::String(c.clone()),
            Label::Value(v) => json!(v),
        }
    }

    /// A key grouping equal labels (used to balance subsets).
    fn group_key(&self) -> String {
        match self {
            Label::Class(c) => c.clone(),
            Label::Value(v) => format!("{v}"),
        }
    }
}

/// Which instruments play the tonal concepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Instruments {
    /// SynTheory's 92 programs.
    #[default]
    All,
    /// `n` of the 92, spread evenly over the GM families.
    Count(usize),
    /// These GM programs, in this order.
    Programs(Vec<u8>),
}

impl Instruments {
    /// The GM programs this choice stands for.
    pub fn programs(&self) -> Vec<u8> {
        match self {
            Instruments::All => syntheory_programs(),
            Instruments::Count(n) => spread_programs(*n),
            Instruments::Programs(p) => p.clone(),
        }
    }
}

impl FromStr for Instruments {
    type Err = ConceptError;

    /// `all`, a count (`8`), or a comma-separated list of GM program numbers or names
    /// (`0,40,violin`; a single program needs a trailing comma: `40,`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ConceptError::BadInstruments(s.to_string(), why);
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Instruments::All);
        }
        if !t.contains(',') {
            if let Ok(n) = t.parse::<usize>() {
                let max = syntheory_programs().len();
                if n == 0 || n > max {
                    return Err(bad(format!("a count must be 1..={max}")));
                }
                return Ok(Instruments::Count(n));
            }
        }
        let mut programs = Vec::new();
        for item in t.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let p = parse_program(item)
                .ok_or_else(|| bad(format!("`{item}` is not a GM program number or name")))?;
            if !programs.contains(&p) {
                programs.push(p);
            }
        }
        if programs.is_empty() {
            return Err(bad("no programs listed".into()));
        }
        Ok(Instruments::Programs(programs))
    }
}

/// Options that choose which clips a dataset holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecOptions {
    /// Instruments for the tonal concepts (ignored by tempos and time signatures).
    pub instruments: Instruments,
    /// Keep only this many clips, balanced over the labels.
    pub limit: Option<usize>,
    /// Seeds click offsets and the balanced subset.
    pub seed: u64,
}

/// Everything needed to render one clip and to describe it in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipSpec {
    /// The concept the clip carries.
    pub concept: Concept,
    /// Position in the concept's full enumeration (stable across `--limit` and resumes).
    pub index: usize,
    /// File stem, unique within the dataset.
    pub name: String,
    /// The probe target.
    pub label: Label,
    /// Every label field (root, mode, inversion, bpm, ...), written to the manifest.
    pub fields: Map<String, Value>,
    /// GM program that plays it (the click sound's program for click concepts).
    pub program: u8,
    /// The clip's own seed, derived from the dataset seed and `index`.
    pub seed: u64,
    /// What is played.
    pub score: Score,
}

/// SynTheory's 19 progressions: 10 in major (ionian), 9 in natural minor (aeolian).
pub const PROGRESSIONS: [(Mode, [u8; 4]); 19] = [
    (Mode::Ionian, [1, 4, 5, 1]),
    (Mode::Ionian, [1, 4, 6, 5]),
    (Mode::Ionian, [1, 5, 6, 4]),
    (Mode::Ionian, [1, 6, 4, 5]),
    (Mode::Ionian, [2, 5, 1, 6]),
    (Mode::Ionian, [4, 1, 5, 6]),
    (Mode::Ionian, [4, 5, 3, 6]),
    (Mode::Ionian, [5, 4, 1, 5]),
    (Mode::Ionian, [5, 6, 4, 1]),
    (Mode::Ionian, [6, 4, 1, 5]),
    (Mode::Aeolian, [1, 2, 5, 1]),
    (Mode::Aeolian, [1, 3, 4, 1]),
    (Mode::Aeolian, [1, 4, 5, 1]),
    (Mode::Aeolian, [1, 6, 3, 7]),
    (Mode::Aeolian, [1, 6, 7, 1]),
    (Mode::Aeolian, [1, 6, 7, 3]),
    (Mode::Aeolian, [1, 7, 6, 4]),
    (Mode::Aeolian, [4, 7, 1, 1]),
    (Mode::Aeolian, [7, 6, 7, 1]),
];

/// SynTheory's eight time signatures.
pub const TIME_SIGNATURES: [(u8, u8); 8] = [
    (2, 2),
    (2, 4),
    (3, 4),
    (3, 8),
    (4, 4),
    (6, 8),
    (9, 8),
    (12, 8),
];

/// Reverb send (CC 91) of SynTheory's three reverb levels.
pub const REVERB_LEVELS: [u8; 3] = [0, 63, 127];

/// A metronome sound: which keys and velocities mark downbeats and other beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickSound {
    /// Name in manifests.
    pub name: &'static str,
    /// MIDI channel (9 = GM drum kit).
    pub channel: u8,
    /// GM program (ignored on the drum channel, where keys pick the sound).
    pub program: u8,
    /// Key of the first beat of each bar.
    pub downbeat_key: u8,
    /// Key of the other beats.
    pub offbeat_key: u8,
}

/// Velocity of downbeat clicks.
const DOWNBEAT_VELOCITY: u8 = 100;
/// Velocity of the other clicks.
const OFFBEAT_VELOCITY: u8 = 75;

/// SynTheory's five click sounds: a drum-kit side stick / sticks pair, dark and light
/// woodblock, taiko and synth drum.
pub const CLICK_SOUNDS: [ClickSound; 5] = [
    ClickSound {
        name: "drum_kit",
        channel: DRUM_CHANNEL,
        program: 0,
        downbeat_key: 37,
        offbeat_key: 31,
    },
    ClickSound {
        name: "woodblock_dark",
        channel: MELODY_CHANNEL,
        program: 115,
        downbeat_key: 37,
        offbeat_key: 31,
    },
    ClickSound {
        name: "woodblock_light",
        channel: MELODY_CHANNEL,
        program: 115,
        downbeat_key: 52,
        offbeat_key: 48,
    },
    ClickSound {
        name: "taiko",
        channel: MELODY_CHANNEL,
        program: 116,
        downbeat_key: 52,
        offbeat_key: 48,
    },
    ClickSound {
        name: "synth_drum",
        channel: MELODY_CHANNEL,
        program: 118,
        downbeat_key: 52,
        offbeat_key: 48,
    },
];

/// Random window offsets per tempo clip and per time-signature clip.
const TEMPO_OFFSETS: usize = 5;
const TIME_SIGNATURE_OFFSETS: usize = 10;

/// What each timbres clip plays, as (name, major-scale degrees from the root with octaves as
/// 8, 15..., beats per note; 0 degrees = the whole triad at once). Held notes, an arpeggio, a
/// stepwise melody and block chords, so a probe meets each instrument's sustain, attack and
/// polyphony rather than one kind of figure.
const TIMBRE_FIGURES: [(&str, &[u8], f64); 4] = [
    ("held", &[1, 1, 1, 1], 2.0),
    ("arpeggio", &[1, 3, 5, 8, 5, 3, 1, 5], 1.0),
    (
        "melody",
        &[1, 2, 3, 5, 4, 3, 2, 1, 3, 5, 8, 5, 3, 2, 1, 1],
        0.5,
    ),
    ("chord", &[0, 0, 0, 0], 2.0),
];

/// The MIDI note of C in the octave a timbres figure is played in: an octave lower for the bass
/// family, one higher for pipes (flutes, recorders), so each family plays where it sounds. Block
/// chords stay at C3 or above: a triad in the bass register is a blur of beating overtones.
fn timbre_c(program: u8, figure: &str) -> u8 {
    let c = match program_family(program) {
        "Bass" => 36,
        "Pipe" => 60,
        _ => 48,
    };
    if figure == "chord" {
        c.max(48)
    } else {
        c
    }
}

/// The MIDI notes a timbres figure step plays on `root` (the major triad for degree 0).
fn timbre_keys(root: u8, degree: u8) -> Vec<u8> {
    const MAJOR: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
    if degree == 0 {
        return vec![root, root + 4, root + 7];
    }
    let d = (degree - 1) as usize;
    vec![root + 12 * (d / 7) as u8 + MAJOR[d % 7]]
}

/// The label name of a progression, e.g. `ionian_1-4-5-1`.
pub fn progression_name(mode: Mode, degrees: &[u8; 4]) -> String {
    let d: Vec<String> = degrees.iter().map(|d| d.to_string()).collect();
    format!("{}_{}", mode.name(), d.join("-"))
}

/// A uniform number in [0, 1) from a seed.
fn unit(seed: u64) -> f64 {
    unit_from_hash(splitmix64(seed))
}

fn clip_seed(dataset_seed: u64, concept: Concept, index: usize) -> u64 {
    splitmix64(splitmix64(dataset_seed ^ ((concept as u64) << 56)) ^ index as u64)
}

/// File-name-safe pitch name (`C#` -> `Cs`).
fn file_pitch(pc: u8) -> String {
    pitch_class_name(pc).replace('#', "s")
}

/// Accumulates specs with running indices.
struct Specs {
    concept: Concept,
    seed: u64,
    out: Vec<ClipSpec>,
}

impl Specs {
    fn push(&mut self, desc: String, label: Label, fields: Value, program: u8, score: Score) {
        let index = self.out.len();
        let Value::Object(mut fields) = fields else {
            unreachable!("label fields are built as JSON objects")
        };
        fields.insert("program_name".into(), json!(program_name(program)));
        self.out.push(ClipSpec {
            concept: self.concept,
            index,
            name: format!("{index:05}_{desc}"),
            label,
            fields,
            program,
            seed: clip_seed(self.seed, self.concept, index),
            score,
        });
    }
}

/// A tonal score: `program` on SynTheory's melody channel, then `body` adds the notes.
fn tonal(program: u8, body: impl FnOnce(ScoreBuilder) -> ScoreBuilder) -> Score {
    body(ScoreBuilder::new(BASE_BPM).program(MELODY_CHANNEL, program)).build(0.0, CLIP_SECONDS)
}

/// A metronome: `clicks` clicks `unit_beats` apart with an accent every `beats_per_bar`, with
/// the reverb send set first, keeping the 4 s window at `offset` seconds.
fn click_score(
    bpm: f64,
    sound: &ClickSound,
    beats_per_bar: u8,
    unit_beats: f64,
    clicks: usize,
    reverb: u8,
    offset: f64,
) -> Score {
    let mut b = ScoreBuilder::new(bpm)
        .program(sound.channel, sound.program)
        .control(sound.channel, REVERB_SEND, reverb);
    for i in 0..clicks {
        let down = i % beats_per_bar as usize == 0;
        let (key, vel) = if down {
            (sound.downbeat_key, DOWNBEAT_VELOCITY)
        } else {
            (sound.offbeat_key, OFFBEAT_VELOCITY)
        };
        let t = i as f64 * unit_beats;
        b = b.note(sound.channel, key, vel, t, t + unit_beats);
    }
    b.build(offset, CLIP_SECONDS)
}

/// Every clip of a concept (before `--limit`), in SynTheory's order.
fn enumerate(concept: Concept, programs: &[u8], seed: u64) -> Vec<ClipSpec> {
    let mut s = Specs {
        concept,
        seed,
        out: Vec::new(),
    };
    match concept {
        Concept::Notes => {
            for midi in 0u8..108 {
                let pc = midi % 12;
                let octave = midi / 12;
                // SynTheory's registers: octaves 0-2 low, 3-5 mid, 6-8 high.
                let register = octave / 3;
                for &p in programs {
                    let score = tonal(p, |mut b| {
                        for k in 0..4 {
                            let t = 2.0 * k as f64;
                            b = b.note(MELODY_CHANNEL, midi, MELODY_VELOCITY, t, t + 2.0);
                        }
                        b
                    });
                    s.push(
                        format!("{midi:03}_{}_p{p:03}", file_pitch(pc)),
                        Label::Class(pitch_class_name(pc).into()),
                        json!({"note_name": pitch_class_name(pc), "pitch_class": pc,
                               "octave": octave, "register": register, "midi_note": midi}),
                        p,
                        score,
                    );
                }
            }
        }
        Concept::Intervals => {
            for base in 60u8..72 {
                for interval in 1u8..=12 {
                    for style in ["up", "down", "unison"] {
                        for &p in programs {
                            let (lo, hi) = (base, base + interval);
                            // Eight one-beat slots: alternating low/high (up), high/low
                            // (down), or both together (unison).
                            let score = tonal(p, |mut b| {
                                for slot in 0..8 {
                                    let t = slot as f64;
                                    let keys: &[u8] = match (style, slot % 2) {
                                        ("up", 0) | ("down", 1) => &[lo],
                                        ("up", _) | ("down", _) => &[hi],
                                        _ => &[lo, hi],
                                    };
                                    b = b.chord(MELODY_CHANNEL, keys, MELODY_VELOCITY, t, t + 1.0);
                                }
                                b
                            });
                            let name = INTERVAL_NAMES[interval as usize];
                            s.push(
                                format!("{}{base}_{name}_{style}_p{p:03}", file_pitch(base % 12)),
                                Label::Class(name.into()),
                                json!({"interval": name, "semitones": interval,
                                       "root_note_name": pitch_class_name(base % 12),
                                       "root_pitch_class": base % 12, "midi_note": base,
                                       "play_style": style}),
                                p,
                                score,
                            );
                        }
                    }
                }
            }
        }
        Concept::Scales => {
            for root in 0u8..12 {
                for mode in Mode::CHURCH {
                    for style in ["up", "down"] {
                        let mut notes = scale_notes(root, mode);
                        if style == "down" {
                            notes.reverse();
                        }
                        for &p in programs {
                            let score = tonal(p, |mut b| {
                                for (k, &n) in notes.iter().enumerate() {
                                    let t = k as f64;
                                    b = b.note(MELODY_CHANNEL, n, MELODY_VELOCITY, t, t + 1.0);
                                }
                                b
                            });
                            s.push(
                                format!("{}_{}_{style}_p{p:03}", file_pitch(root), mode.name()),
                                Label::Class(mode.name().into()),
                                json!({"mode": mode.name(), "root_note_name": pitch_class_name(root),
                                       "root_pitch_class": root, "play_style": style,
                                       "midi_notes": notes}),
                                p,
                                score,
                            );
                        }
                    }
                }
            }
        }
        Concept::Chords => {
            for root in 0u8..12 {
                for quality in Quality::ALL {
                    for inversion in Inversion::ALL {
                        let keys = triad(root, quality, inversion);
                        let pcs: Vec<u8> = keys.iter().map(|k| k % 12).collect();
                        for &p in programs {
                            let score = tonal(p, |mut b| {
                                for k in 0..4 {
                                    let t = 2.0 * k as f64;
                                    b = b.chord(MELODY_CHANNEL, &keys, MELODY_VELOCITY, t, t + 2.0);
                                }
                                b
                            });
                            s.push(
                                format!(
                                    "{}_{}_{}_p{p:03}",
                                    file_pitch(root),
                                    quality.name(),
                                    inversion.name()
                                ),
                                Label::Class(quality.name().into()),
                                json!({"chord_type": quality.name(),
                                       "root_note_name": pitch_class_name(root),
                                       "root_pitch_class": root, "inversion": inversion.name(),
                                       "figure": inversion.figure(), "pitch_classes": pcs,
                                       "midi_notes": keys}),
                                p,
                                score,
                            );
                        }
                    }
                }
            }
        }
        Concept::Progressions => {
            for key in 0u8..12 {
                for (mode, degrees) in PROGRESSIONS {
                    let chords: Vec<[u8; 3]> = degrees
                        .iter()
                        .map(|&d| diatonic_triad(key, mode, d, Inversion::Root))
                        .collect();
                    let name = progression_name(mode, &degrees);
                    for &p in programs {
                        let score = tonal(p, |mut b| {
                            for (k, chord) in chords.iter().enumerate() {
                                let t = 2.0 * k as f64;
                                b = b.chord(MELODY_CHANNEL, chord, MELODY_VELOCITY, t, t + 2.0);
                            }
                            b
                        });
                        s.push(
                            format!("{}_{name}_p{p:03}", file_pitch(key)),
                            Label::Class(name.clone()),
                            json!({"progression": name, "mode": mode.name(), "degrees": degrees,
                                   "key_note_name": pitch_class_name(key),
                                   "key_pitch_class": key, "midi_notes": chords}),
                            p,
                            score,
                        );
                    }
                }
            }
        }
        Concept::Tempos => {
            for bpm in 50u32..=210 {
                for sound in &CLICK_SOUNDS {
                    for k in 0..TEMPO_OFFSETS {
                        // SynTheory plays bpm/3 + 1 quarter-note clicks (just over 20 s), trims
                        // to 20 s and keeps a random 4 s window.
                        let clicks = (bpm / 3) as usize + 1;
                        let index = s.out.len();
                        let offset = unit(clip_seed(seed, concept, index)) * (20.0 - CLIP_SECONDS);
                        let score = click_score(bpm as f64, sound, 4, 1.0, clicks, 0, offset);
                        s.push(
                            format!("{bpm:03}bpm_{}_o{k}", sound.name),
                            Label::Value(bpm as f64),
                            json!({"bpm": bpm, "click": sound.name, "offset_index": k,
                                   "offset_s": offset}),
                            sound.program,
                            score,
                        );
                    }
                }
            }
        }
        Concept::TimeSignatures => {
            for (num, den) in TIME_SIGNATURES {
                let compound = num % 3 == 0 && den != 4;
                // One click per beat (per eighth in compound meters), ~30 s in all.
                let unit_beats = if compound { 0.5 } else { 4.0 / den as f64 };
                let clicks = (den as usize * 60) / 4 + 1;
                for (level, &reverb) in REVERB_LEVELS.iter().enumerate() {
                    for sound in &CLICK_SOUNDS {
                        for k in 0..TIME_SIGNATURE_OFFSETS {
                            let index = s.out.len();
                            let offset =
                                unit(clip_seed(seed, concept, index)) * (30.0 - CLIP_SECONDS);
                            let score = click_score(
                                BASE_BPM, sound, num, unit_beats, clicks, reverb, offset,
                            );
                            s.push(
                                format!("{num}-{den}_{}_r{level}_o{k}", sound.name),
                                Label::Class(format!("{num}/{den}")),
                                json!({"time_signature": format!("{num}/{den}"),
                                       "beats": num, "subdivision": den, "is_compound": compound,
                                       "bpm": BASE_BPM, "click": sound.name,
                                       "reverb_level": level, "offset_index": k,
                                       "offset_s": offset}),
                                sound.program,
                                score,
                            );
                        }
                    }
                }
            }
        }
        Concept::Timbres => {
            for pc in 0u8..12 {
                for (figure, degrees, beats) in TIMBRE_FIGURES {
                    for &p in programs {
                        let root = timbre_c(p, figure) + pc;
                        let steps: Vec<Vec<u8>> =
                            degrees.iter().map(|&d| timbre_keys(root, d)).collect();
                        let score = tonal(p, |mut b| {
                            for (k, keys) in steps.iter().enumerate() {
                                let t = k as f64 * beats;
                                b = b.chord(MELODY_CHANNEL, keys, MELODY_VELOCITY, t, t + beats);
                            }
                            b
                        });
                        let family = family_key(p);
                        let mut keys: Vec<u8> = steps.concat();
                        keys.sort_unstable();
                        keys.dedup();
                        s.push(
                            format!("{}_{figure}_{family}_p{p:03}", file_pitch(pc)),
                            Label::Class(family.clone()),
                            json!({"family": family, "figure": figure,
                                   "root_note_name": pitch_class_name(pc),
                                   "root_pitch_class": pc, "midi_notes": keys}),
                            p,
                            score,
                        );
                    }
                }
            }
        }
    }
    s.out
}

/// The clip specs of a dataset: the concept's full enumeration for the chosen instruments, cut
/// to a label-balanced subset when `limit` is set. Specs keep their enumeration order.
pub fn clip_specs(concept: Concept, options: &SpecOptions) -> Result<Vec<ClipSpec>, ConceptError> {
    let programs = options.instruments.programs();
    if programs.is_empty() {
        return Err(ConceptError::BadInstruments(
            "(empty)".into(),
            "no programs selected".into(),
        ));
    }
    if concept == Concept::Timbres {
        let families = tonal_families();
        if let Some(&p) = programs
            .iter()
            .find(|&&p| !families.contains(&family_key(p)))
        {
            return Err(ConceptError::BadInstruments(
                p.to_string(),
                format!(
                    "{} ({}) is in a family the timbres concept leaves out; its classes are {}",
                    program_name(p),
                    program_family(p),
                    families.join(", ")
                ),
            ));
        }
    }
    let all = enumerate(concept, &programs, options.seed);
    Ok(match options.limit {
        Some(limit) if limit < all.len() => balanced_subset(all, limit, options.seed),
        _ => all,
    })
}

/// Picks `limit` specs round-robin over the labels, each label's specs taken in a seeded
/// shuffled order, so every label is equally represented (within one) and the instruments, roots
/// and offsets within a label are mixed.
fn balanced_subset(all: Vec<ClipSpec>, limit: usize, seed: u64) -> Vec<ClipSpec> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (i, spec) in all.iter().enumerate() {
        let key = spec.label.group_key();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(i);
    }
    for members in groups.values_mut() {
        // Sort by a seeded hash: a shuffle that does not depend on any RNG crate's version.
        members.sort_by_key(|&i| splitmix64(seed ^ splitmix64(i as u64)));
    }
    let mut picked = Vec::with_capacity(limit);
    let mut round = 0;
    while picked.len() < limit {
        let available: Vec<usize> = order
            .iter()
            .filter_map(|k| groups[k].get(round).copied())
            .collect();
        if available.is_empty() {
            break;
        }
        let room = limit - picked.len();
        if available.len() <= room {
            picked.extend(available);
        } else {
            // A partial round takes labels spread evenly over the label order (every other class,
            // tempos across the whole range), not just the first ones.
            picked.extend((0..room).map(|j| available[(2 * j + 1) * available.len() / (2 * room)]));
        }
        round += 1;
    }
    picked.sort_unstable();
    let mut keep = vec![false; all.len()];
    for i in picked {
        keep[i] = true;
    }
    all.into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concept_names_parse() {
        for c in Concept::ALL {
            assert_eq!(c.name().parse::<Concept>().unwrap(), c);
        }
        assert_eq!(
            "time-signatures".parse::<Concept>().unwrap(),
            Concept::TimeSignatures
        );
        assert_eq!("chord".parse::<Concept>().unwrap(), Concept::Chords);
        assert!("melodies".parse::<Concept>().is_err());
    }

    #[test]
    fn timbres_refuse_programs_outside_their_families() {
        let opts = |list: &str| SpecOptions {
            instruments: list.parse().expect("list"),
            ..Default::default()
        };
        let err = clip_specs(Concept::Timbres, &opts("0,100"))
            .expect_err("synth effects")
            .to_string();
        assert!(
            err.contains("FX 5") || err.contains("Synth Effects"),
            "{err}"
        );
        assert!(err.contains("synth_pad"), "{err}");
        // the same program is fine for a concept that labels something else
        assert!(clip_specs(Concept::Notes, &opts("0,100")).is_ok());
        let specs = clip_specs(Concept::Timbres, &opts("33,73")).expect("bass and flute");
        assert_eq!(specs.len(), 2 * 48);
        assert_eq!(specs[0].label, Label::Class("bass".into()));
        assert_eq!(specs[1].label, Label::Class("pipe".into()));
        // bass plays an octave under the others, pipes one above
        assert_eq!(specs[0].fields["midi_notes"][0], 36);
        assert_eq!(specs[1].fields["midi_notes"][0], 60);
        assert_eq!("instruments".parse::<Concept>().unwrap(), Concept::Timbres);
    }

    #[test]
    fn instrument_choices_parse() {
        assert_eq!("all".parse::<Instruments>().unwrap(), Instruments::All);
        assert_eq!("8".parse::<Instruments>().unwrap(), Instruments::Count(8));
        assert_eq!(
            "0, violin,40".parse::<Instruments>().unwrap(),
            Instruments::Programs(vec![0, 40])
        );
        assert_eq!(
            "40,".parse::<Instruments>().unwrap(),
            Instruments::Programs(vec![40])
        );
        assert!("0".parse::<Instruments>().is_err());
        assert!("93".parse::<Instruments>().is_err());
        assert!("kazoo,1".parse::<Instruments>().is_err());
    }

    #[test]
    fn limit_balances_labels_and_is_seeded() {
        let opts = |seed| SpecOptions {
            instruments: Instruments::Count(4),
            limit: Some(24),
            seed,
        };
        let a = clip_specs(Concept::Notes, &opts(1)).unwrap();
        assert_eq!(a.len(), 24);
        let mut per_class: BTreeMap<String, usize> = BTreeMap::new();
        for s in &a {
            *per_class.entry(s.label.group_key()).or_default() += 1;
        }
        assert_eq!(per_class.len(), 12);
        assert!(per_class.values().all(|&n| n == 2));
        assert!(a.windows(2).all(|w| w[0].index < w[1].index));
        assert_eq!(a, clip_specs(Concept::Notes, &opts(1)).unwrap());
        assert_ne!(a, clip_specs(Concept::Notes, &opts(2)).unwrap());

        // fewer clips than labels: spread over the range, not the first few tempos
        let tempos = clip_specs(
            Concept::Tempos,
            &SpecOptions {
                limit: Some(8),
                ..Default::default()
            },
        )
        .unwrap();
        let bpms: Vec<f64> = tempos
            .iter()
            .map(|s| match s.label {
                Label::Value(v) => v,
                Label::Class(_) => f64::NAN,
            })
            .collect();
        assert_eq!(bpms.len(), 8);
        assert!(bpms[0] < 70.0 && bpms[7] > 190.0, "{bpms:?}");
    }
}
