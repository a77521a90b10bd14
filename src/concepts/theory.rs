//! Pitch names, modes and triads, voiced exactly as SynTheory voices them.
//!
//! SynTheory's voicing has two quirks kept here on purpose, because probes trained on our clips
//! should see the same audio as probes trained on theirs:
//! - a key's tonic sits within a tritone of middle C (C..F at or above 60, F#..B below it);
//! - a chord's tones are the scale's offsets from that tonic *without octave wrapping*, so a V chord
//!   in C is G4 B4 D4 (its fifth sits below its root), not G4 B4 D5.

/// Middle C as a MIDI note number.
pub const MIDDLE_C: u8 = 60;

/// Sharp spellings of the twelve pitch classes, C = 0.
pub const PITCH_CLASS_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// Interval names by size in semitones (index 0 = unison, 12 = octave).
pub const INTERVAL_NAMES: [&str; 13] = [
    "P1", "m2", "M2", "m3", "M3", "P4", "TT", "P5", "m6", "M6", "m7", "M7", "P8",
];

/// The sharp name of a pitch class (taken modulo 12).
pub fn pitch_class_name(pitch_class: u8) -> &'static str {
    PITCH_CLASS_NAMES[(pitch_class % 12) as usize]
}

/// Parses a pitch-class name (`C`, `C#`, `Db`, ... case-insensitive) to 0..=11.
pub fn parse_pitch_class(name: &str) -> Option<u8> {
    let lower = name.trim().to_ascii_lowercase();
    let mut chars = lower.chars();
    let base = match chars.next()? {
        'c' => 0,
        'd' => 2,
        'e' => 4,
        'f' => 5,
        'g' => 7,
        'a' => 9,
        'b' => 11,
        _ => return None,
    };
    let shift: i32 = chars
        .map(|c| match c {
            '#' => Some(1),
            'b' => Some(-1),
            _ => None,
        })
        .sum::<Option<i32>>()?;
    Some((base + shift).rem_euclid(12) as u8)
}

/// Equal-tempered frequency of a MIDI note (A4 = 69 = 440 Hz).
pub fn midi_to_hz(note: f64) -> f64 {
    440.0 * 2f64.powf((note - 69.0) / 12.0)
}

/// A church mode or minor-scale variant, as semitone offsets of its seven degrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Ionian,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Aeolian,
    Locrian,
    /// Natural minor with a raised seventh (used for augmented triads).
    HarmonicMinor,
}

impl Mode {
    /// The seven modes SynTheory's scales concept uses, in its order.
    pub const CHURCH: [Mode; 7] = [
        Mode::Ionian,
        Mode::Dorian,
        Mode::Phrygian,
        Mode::Lydian,
        Mode::Mixolydian,
        Mode::Aeolian,
        Mode::Locrian,
    ];

    /// Semitone offsets of degrees 1..=7 above the tonic.
    pub fn offsets(self) -> [u8; 7] {
        match self {
            Mode::Ionian => [0, 2, 4, 5, 7, 9, 11],
            Mode::Dorian => [0, 2, 3, 5, 7, 9, 10],
            Mode::Phrygian => [0, 1, 3, 5, 7, 8, 10],
            Mode::Lydian => [0, 2, 4, 6, 7, 9, 11],
            Mode::Mixolydian => [0, 2, 4, 5, 7, 9, 10],
            Mode::Aeolian => [0, 2, 3, 5, 7, 8, 10],
            Mode::Locrian => [0, 1, 3, 5, 6, 8, 10],
            Mode::HarmonicMinor => [0, 2, 3, 5, 7, 8, 11],
        }
    }

    /// Lower-case name (`ionian`, ..., `harmonic_minor`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Ionian => "ionian",
            Mode::Dorian => "dorian",
            Mode::Phrygian => "phrygian",
            Mode::Lydian => "lydian",
            Mode::Mixolydian => "mixolydian",
            Mode::Aeolian => "aeolian",
            Mode::Locrian => "locrian",
            Mode::HarmonicMinor => "harmonic_minor",
        }
    }
}

/// MIDI note of a key's tonic: within a tritone of middle C, as SynTheory places it.
pub fn tonic_midi(tonic_pitch_class: u8) -> u8 {
    let pc = tonic_pitch_class % 12;
    if pc <= 5 {
        MIDDLE_C + pc
    } else {
        MIDDLE_C + pc - 12
    }
}

/// MIDI notes of a scale from its tonic up to the octave (8 notes).
pub fn scale_notes(tonic_pitch_class: u8, mode: Mode) -> [u8; 8] {
    let tonic = tonic_midi(tonic_pitch_class);
    let offsets = mode.offsets();
    let mut notes = [tonic + 12; 8];
    for (n, o) in notes.iter_mut().zip(offsets) {
        *n = tonic + o;
    }
    notes
}

/// Triad quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    Major,
    Minor,
    Augmented,
    Diminished,
}

impl Quality {
    /// The four qualities in SynTheory's order.
    pub const ALL: [Quality; 4] = [
        Quality::Major,
        Quality::Minor,
        Quality::Augmented,
        Quality::Diminished,
    ];

    /// SynTheory's label (`major`, `minor`, `aug`, `dim`).
    pub fn name(self) -> &'static str {
        match self {
            Quality::Major => "major",
            Quality::Minor => "minor",
            Quality::Augmented => "aug",
            Quality::Diminished => "dim",
        }
    }

    /// Semitones of the third and fifth above the root.
    pub fn intervals(self) -> [u8; 2] {
        match self {
            Quality::Major => [4, 7],
            Quality::Minor => [3, 7],
            Quality::Augmented => [4, 8],
            Quality::Diminished => [3, 6],
        }
    }
}

/// Which chord tone is in the bass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inversion {
    Root,
    /// Third in the bass (figured-bass "6").
    First,
    /// Fifth in the bass (figured-bass "64").
    Second,
}

impl Inversion {
    /// The three positions in SynTheory's order.
    pub const ALL: [Inversion; 3] = [Inversion::Root, Inversion::First, Inversion::Second];

    /// Name used in manifests (`root`, `first`, `second`).
    pub fn name(self) -> &'static str {
        match self {
            Inversion::Root => "root",
            Inversion::First => "first",
            Inversion::Second => "second",
        }
    }

    /// Figured-bass code SynTheory writes (`5`, `6`, `64`).
    pub fn figure(self) -> &'static str {
        match self {
            Inversion::Root => "5",
            Inversion::First => "6",
            Inversion::Second => "64",
        }
    }
}

/// The triad on a scale degree (1-based) of a key, as MIDI notes, voiced as SynTheory does:
/// degrees `d, d+2, d+4` of the mode, each at its plain offset above the tonic (no octave
/// wrapping), then inverted by lifting the lowest tones an octave.
pub fn diatonic_triad(
    key_pitch_class: u8,
    mode: Mode,
    degree: u8,
    inversion: Inversion,
) -> [u8; 3] {
    let tonic = tonic_midi(key_pitch_class);
    let offsets = mode.offsets();
    let d = (degree.max(1) - 1) as usize;
    let tone = |k: usize| tonic + offsets[(d + 2 * k) % 7];
    let [a, b, c] = [tone(0), tone(1), tone(2)];
    match inversion {
        Inversion::Root => [a, b, c],
        Inversion::First => [b, c, a + 12],
        Inversion::Second => [c, a + 12, b + 12],
    }
}

/// A root-position-or-inverted triad of a given quality on a root pitch class, built the way
/// SynTheory builds it: major on the ionian tonic, minor on the aeolian tonic, diminished on the
/// locrian tonic, augmented as the III of the harmonic minor a minor third below the root.
pub fn triad(root_pitch_class: u8, quality: Quality, inversion: Inversion) -> [u8; 3] {
    let root = root_pitch_class % 12;
    match quality {
        Quality::Major => diatonic_triad(root, Mode::Ionian, 1, inversion),
        Quality::Minor => diatonic_triad(root, Mode::Aeolian, 1, inversion),
        Quality::Diminished => diatonic_triad(root, Mode::Locrian, 1, inversion),
        Quality::Augmented => diatonic_triad((root + 9) % 12, Mode::HarmonicMinor, 3, inversion),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_names_round_trip() {
        for pc in 0..12u8 {
            assert_eq!(parse_pitch_class(pitch_class_name(pc)), Some(pc));
        }
        assert_eq!(parse_pitch_class("Db"), Some(1));
        assert_eq!(parse_pitch_class("cb"), Some(11));
        assert_eq!(parse_pitch_class("H"), None);
    }

    #[test]
    fn tonic_stays_within_a_tritone_of_middle_c() {
        assert_eq!(tonic_midi(0), 60);
        assert_eq!(tonic_midi(5), 65);
        assert_eq!(tonic_midi(6), 54);
        assert_eq!(tonic_midi(11), 59);
    }

    #[test]
    fn triads_match_syntheory_voicing() {
        // C major root position: C4 E4 G4; first inversion E4 G4 C5; second G4 C5 E5.
        assert_eq!(triad(0, Quality::Major, Inversion::Root), [60, 64, 67]);
        assert_eq!(triad(0, Quality::Major, Inversion::First), [64, 67, 72]);
        assert_eq!(triad(0, Quality::Major, Inversion::Second), [67, 72, 76]);
        // A minor: tonic 57.
        assert_eq!(triad(9, Quality::Minor, Inversion::Root), [57, 60, 64]);
        // B diminished: tonic 59, B D F.
        assert_eq!(
            triad(11, Quality::Diminished, Inversion::Root),
            [59, 62, 65]
        );
        // C augmented = III of A harmonic minor (tonic 57): C5 E5 G#5.
        assert_eq!(triad(0, Quality::Augmented, Inversion::Root), [60, 64, 68]);
        // V in C major is voiced without wrapping: G4 B4 D4.
        assert_eq!(
            diatonic_triad(0, Mode::Ionian, 5, Inversion::Root),
            [67, 71, 62]
        );
        for q in Quality::ALL {
            for root in 0..12u8 {
                let [a, b, c] = triad(root, q, Inversion::Root);
                assert_eq!(a % 12, root);
                assert_eq!([(b + 12 - a) % 12, (c + 12 - a) % 12], q.intervals());
            }
        }
    }
}
