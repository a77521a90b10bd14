//! The General MIDI program table and SynTheory's choice of 92 tonal programs.

/// General MIDI program names, index = program number (0-based).
pub const GM_PROGRAM_NAMES: [&str; 128] = [
    "Acoustic Grand Piano",
    "Bright Acoustic Piano",
    "Electric Grand Piano",
    "Honky-tonk Piano",
    "Rhodes Piano",
    "Chorused Piano",
    "Harpsichord",
    "Clavinet",
    "Celesta",
    "Glockenspiel",
    "Music Box",
    "Vibraphone",
    "Marimba",
    "Xylophone",
    "Tubular Bells",
    "Dulcimer",
    "Hammond Organ",
    "Percussive Organ",
    "Rock Organ",
    "Church Organ",
    "Reed Organ",
    "Accordion",
    "Harmonica",
    "Tango Accordion",
    "Acoustic Nylon Guitar",
    "Acoustic Steel Guitar",
    "Electric Jazz Guitar",
    "Electric Clean Guitar",
    "Electric Muted Guitar",
    "Overdriven Guitar",
    "Distortion Guitar",
    "Guitar Harmonics",
    "Acoustic Bass",
    "Fingered Electric Bass",
    "Plucked Electric Bass",
    "Fretless Bass",
    "Slap Bass 1",
    "Slap Bass 2",
    "Synth Bass 1",
    "Synth Bass 2",
    "Violin",
    "Viola",
    "Cello",
    "Contrabass",
    "Tremolo Strings",
    "Pizzicato Strings",
    "Orchestral Harp",
    "Timpani",
    "String Ensemble 1",
    "String Ensemble 2",
    "Synth Strings 1",
    "Synth Strings 2",
    "Choir \"Aah\"",
    "Choir \"Ooh\"",
    "Synth Voice",
    "Orchestral Hit",
    "Trumpet",
    "Trombone",
    "Tuba",
    "Muted Trumpet",
    "French Horn",
    "Brass Section",
    "Synth Brass 1",
    "Synth Brass 2",
    "Soprano Sax",
    "Alto Sax",
    "Tenor Sax",
    "Baritone Sax",
    "Oboe",
    "English Horn",
    "Bassoon",
    "Clarinet",
    "Piccolo",
    "Flute",
    "Recorder",
    "Pan Flute",
    "Bottle Blow",
    "Shakuhachi",
    "Whistle",
    "Ocarina",
    "Square Wave Lead",
    "Sawtooth Wave Lead",
    "Calliope Lead",
    "Chiff Lead",
    "Charang Lead",
    "Voice Lead",
    "Fifths Lead",
    "Bass Lead",
    "New Age Pad",
    "Warm Pad",
    "Polysynth Pad",
    "Choir Pad",
    "Bowed Pad",
    "Metallic Pad",
    "Halo Pad",
    "Sweep Pad",
    "Rain Effect",
    "Soundtrack Effect",
    "Crystal Effect",
    "Atmosphere Effect",
    "Brightness Effect",
    "Goblins Effect",
    "Echoes Effect",
    "Sci-Fi Effect",
    "Sitar",
    "Banjo",
    "Shamisen",
    "Koto",
    "Kalimba",
    "Bagpipe",
    "Fiddle",
    "Shanai",
    "Tinkle Bell",
    "Agogo",
    "Steel Drums",
    "Woodblock",
    "Taiko Drum",
    "Melodic Tom",
    "Synth Drum",
    "Reverse Cymbal",
    "Guitar Fret Noise",
    "Breath Noise",
    "Seashore",
    "Bird Tweet",
    "Telephone Ring",
    "Helicopter",
    "Applause",
    "Gun Shot",
];

/// General MIDI families of eight programs each, in program order.
pub const GM_FAMILIES: [&str; 16] = [
    "Piano",
    "Chromatic Percussion",
    "Organ",
    "Guitar",
    "Bass",
    "Strings",
    "Ensemble",
    "Brass",
    "Reed",
    "Pipe",
    "Synth Lead",
    "Synth Pad",
    "Synth Effects",
    "Ethnic",
    "Percussive",
    "Sound Effects",
];

/// Programs SynTheory drops although their family is tonal: strong inharmonic overtones
/// (celesta, glockenspiel, tubular bells, accordion, tango accordion, timpani, fifths lead) or very
/// expressive articulation (harmonica, guitar harmonics, orchestral hit, shakuhachi, whistle), both
/// of which blur the played pitch.
const DROPPED_PROGRAMS: [u8; 12] = [8, 9, 14, 21, 22, 23, 31, 47, 55, 77, 78, 86];

/// The name of a GM program (0..=127).
pub fn program_name(program: u8) -> &'static str {
    GM_PROGRAM_NAMES[(program & 0x7f) as usize]
}

/// The GM family of a program.
pub fn program_family(program: u8) -> &'static str {
    GM_FAMILIES[((program & 0x7f) / 8) as usize]
}

/// The GM family of a program as a label: lower case, words joined by `_` (`synth_lead`).
pub fn family_key(program: u8) -> String {
    program_family(program)
        .to_ascii_lowercase()
        .replace(' ', "_")
}

/// The families [`syntheory_programs`] span, as [`family_key`]s in GM order: the classes of the
/// timbres concept (13: every family but synth effects, percussive and sound effects).
pub fn tonal_families() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in syntheory_programs() {
        let key = family_key(p);
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// The 92 programs SynTheory renders tonal concepts with, in program order: every GM program
/// except synth effects (96..=103), percussive and sound effects (112..=127, one "sound effects"
/// category in SynTheory's table) and 12 programs whose pitch is blurred by inharmonic overtones or
/// expressive articulation (celesta, glockenspiel, tubular bells, accordions, timpani, fifths lead,
/// harmonica, guitar harmonics, orchestral hit, shakuhachi, whistle).
pub fn syntheory_programs() -> Vec<u8> {
    (0u8..128)
        .filter(|p| !(96..104).contains(p) && *p < 112 && !DROPPED_PROGRAMS.contains(p))
        .collect()
}

/// `n` programs spread evenly over [`syntheory_programs`], so that a small selection still spans
/// the families (piano, strings, brass, ...). `n` is clamped to 1..=92.
pub fn spread_programs(n: usize) -> Vec<u8> {
    let all = syntheory_programs();
    let n = n.clamp(1, all.len());
    (0..n)
        .map(|i| all[(2 * i + 1) * all.len() / (2 * n)])
        .collect()
}

/// Finds a program by number (`40`) or by name, ignoring case, spaces, underscores and quotes
/// (`violin`, `acoustic_grand_piano`).
pub fn parse_program(text: &str) -> Option<u8> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u8>() {
        return (n < 128).then_some(n);
    }
    let key = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    let wanted = key(text);
    if wanted.is_empty() {
        return None;
    }
    GM_PROGRAM_NAMES
        .iter()
        .position(|name| key(name) == wanted)
        .map(|p| p as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntheory_keeps_92_tonal_programs() {
        let programs = syntheory_programs();
        assert_eq!(programs.len(), 92);
        assert_eq!(programs[0], 0);
        // Ethnic family kept, synth effects (96..=103) and sound effects (112..) dropped.
        assert!(programs.contains(&104) && programs.contains(&111));
        assert!(!programs.iter().any(|p| (96..104).contains(p) || *p >= 112));
        for p in DROPPED_PROGRAMS {
            assert!(!programs.contains(&p));
        }
    }

    #[test]
    fn spread_covers_families_and_names_parse() {
        let four = spread_programs(4);
        assert_eq!(four.len(), 4);
        assert!(four.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(spread_programs(500).len(), 92);
        assert_eq!(parse_program("violin"), Some(40));
        assert_eq!(parse_program("Acoustic_Grand_Piano"), Some(0));
        assert_eq!(parse_program("choir aah"), Some(52));
        assert_eq!(parse_program("128"), None);
        assert_eq!(parse_program("kazoo"), None);
    }

    #[test]
    fn families_are_snake_case_keys_of_the_tonal_programs() {
        assert_eq!(family_key(81), "synth_lead");
        assert_eq!(family_key(8), "chromatic_percussion");
        let families = tonal_families();
        assert_eq!(families.len(), 13);
        assert_eq!(families.first().map(String::as_str), Some("piano"));
        assert_eq!(families.last().map(String::as_str), Some("ethnic"));
        assert!(!families
            .iter()
            .any(|f| f == "synth_effects" || f == "percussive"));
    }
}
