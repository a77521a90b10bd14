//! Listening tests: render a handful of clips of each concept (with the built-in synthesizer and,
//! when installed, the TimGM6mb SoundFont) and check what they play against their labels, using
//! spectra, chroma and onsets.

mod concepts_support;

use baton::audio::spectrum::{
    average_spectrum, chroma, dominant_pitch_class, estimate_bpm_from_audio,
};
use baton::concepts::{clip_specs, ClipSpec, Concept, Instruments, Renderer, SpecOptions};
use concepts_support::{renderers, SR};
use serde_json::Value;

fn specs(concept: Concept, programs: &[u8]) -> Vec<ClipSpec> {
    let options = SpecOptions {
        instruments: Instruments::Programs(programs.to_vec()),
        ..Default::default()
    };
    clip_specs(concept, &options).expect("specs")
}

fn field_u8(spec: &ClipSpec, key: &str) -> u8 {
    spec.fields[key].as_u64().unwrap_or_else(|| panic!("{key}")) as u8
}

fn field_str<'a>(spec: &'a ClipSpec, key: &str) -> &'a str {
    spec.fields[key].as_str().unwrap_or_else(|| panic!("{key}"))
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u8)
        .collect()
}

/// The dominant pitch class of each beat (0.5 s at 120 BPM), skipping the first 60 ms of each
/// beat so the attack and the previous note's release do not count.
fn pitch_class_per_beat(audio: &[f32], beats: usize) -> Vec<u8> {
    let beat = SR as usize / 2;
    let skip = SR as usize * 60 / 1000;
    (0..beats)
        .map(|b| dominant_pitch_class(&audio[b * beat + skip..(b + 1) * beat], SR))
        .collect()
}

fn top_pitch_classes(audio: &[f32], n: usize) -> Vec<u8> {
    let c = chroma(audio, SR);
    let mut idx: Vec<u8> = (0..12).collect();
    idx.sort_by(|&a, &b| c[b as usize].total_cmp(&c[a as usize]));
    let mut top = idx[..n].to_vec();
    top.sort_unstable();
    top
}

fn render(r: &Renderer, spec: &ClipSpec) -> Vec<f32> {
    let audio = r.render(spec).expect("render");
    assert_eq!(audio.len(), 4 * SR as usize, "{}", spec.name);
    assert!(
        audio.iter().any(|&x| x.abs() > 1e-3),
        "{} is silent with {}",
        spec.name,
        r.synth_name()
    );
    audio
}

#[test]
fn a_rendered_note_peaks_at_its_labelled_pitch_class() {
    for r in renderers() {
        let notes = specs(Concept::Notes, &[0, 24, 40, 73]);
        for spec in notes
            .iter()
            .filter(|s| [52, 61, 66, 75].contains(&field_u8(s, "midi_note")))
        {
            let audio = render(&r, spec);
            let want = field_u8(spec, "pitch_class");
            assert_eq!(
                dominant_pitch_class(&audio, SR),
                want,
                "{} with {}: chroma {:?}",
                spec.name,
                r.synth_name(),
                chroma(&audio, SR)
            );
            // the label is the pitch class name
            assert_eq!(
                spec.label,
                baton::concepts::Label::Class(field_str(spec, "note_name").into())
            );
        }
    }
}

#[test]
fn a_chord_sounds_its_labelled_pitch_classes() {
    for r in renderers() {
        let chords = specs(Concept::Chords, &[0, 48]);
        for spec in chords
            .iter()
            .filter(|s| [0, 7].contains(&field_u8(s, "root_pitch_class")))
            .filter(|s| field_str(s, "inversion") != "second")
        {
            let audio = render(&r, spec);
            let mut want = u8s(&spec.fields["pitch_classes"]);
            want.sort_unstable();
            assert_eq!(
                top_pitch_classes(&audio, 3),
                want,
                "{} with {}",
                spec.name,
                r.synth_name()
            );
        }
    }
}

#[test]
fn intervals_play_their_pitch_sequence() {
    for r in renderers() {
        let intervals = specs(Concept::Intervals, &[0, 73]);
        for spec in intervals
            .iter()
            .filter(|s| [3, 7].contains(&field_u8(s, "semitones")))
            .filter(|s| [60, 66].contains(&field_u8(s, "midi_note")))
        {
            let audio = render(&r, spec);
            let lo = field_u8(spec, "midi_note") % 12;
            let hi = (lo + field_u8(spec, "semitones")) % 12;
            let what = format!("{} with {}", spec.name, r.synth_name());
            match field_str(spec, "play_style") {
                "up" => assert_eq!(
                    pitch_class_per_beat(&audio, 8),
                    [lo, hi].repeat(4),
                    "{what}"
                ),
                "down" => {
                    assert_eq!(
                        pitch_class_per_beat(&audio, 8),
                        [hi, lo].repeat(4),
                        "{what}"
                    )
                }
                _ => {
                    let mut want = vec![lo, hi];
                    want.sort_unstable();
                    assert_eq!(top_pitch_classes(&audio, 2), want, "{what}");
                }
            }
        }
    }
}

#[test]
fn scales_play_their_modes_up_and_down() {
    for r in renderers() {
        let scales = specs(Concept::Scales, &[0, 40]);
        for spec in scales
            .iter()
            .filter(|s| [2, 9].contains(&field_u8(s, "root_pitch_class")))
            .filter(|s| ["ionian", "dorian", "phrygian", "locrian"].contains(&field_str(s, "mode")))
        {
            let audio = render(&r, spec);
            let want: Vec<u8> = u8s(&spec.fields["midi_notes"])
                .iter()
                .map(|n| n % 12)
                .collect();
            // the written sequence really is the labelled mode, in the labelled direction
            let root = field_u8(spec, "root_pitch_class");
            let mode = baton::concepts::theory::Mode::CHURCH
                .into_iter()
                .find(|m| m.name() == field_str(spec, "mode"))
                .expect("mode");
            let mut expected: Vec<u8> = mode
                .offsets()
                .iter()
                .chain(&[12])
                .map(|o| (root + o) % 12)
                .collect();
            if field_str(spec, "play_style") == "down" {
                expected.reverse();
            }
            assert_eq!(want, expected, "{}", spec.name);
            assert_eq!(
                pitch_class_per_beat(&audio, 8),
                want,
                "{} with {}",
                spec.name,
                r.synth_name()
            );
        }
    }
}

#[test]
fn progressions_play_their_chords_in_order() {
    for r in renderers() {
        let progressions = specs(Concept::Progressions, &[0]);
        for spec in progressions
            .iter()
            .filter(|s| field_u8(s, "key_pitch_class") == 2)
            .filter(|s| {
                ["ionian_1-4-5-1", "aeolian_1-6-3-7"].contains(&field_str(s, "progression"))
            })
        {
            let audio = render(&r, spec);
            let chords = spec.fields["midi_notes"].as_array().expect("chords");
            for (k, chord) in chords.iter().enumerate() {
                let mut want: Vec<u8> = u8s(chord).iter().map(|n| n % 12).collect();
                want.sort_unstable();
                // the middle of the chord's two beats
                let seg = &audio[(k * SR as usize) + SR as usize / 10..(k + 1) * SR as usize];
                assert_eq!(
                    top_pitch_classes(seg, 3),
                    want,
                    "{} chord {k} with {}",
                    spec.name,
                    r.synth_name()
                );
            }
        }
    }
}

/// Every click sound (taiko included: TimGM6mb's rings on through the next stroke at fast
/// tempos), 50 to 210 BPM every 16 BPM, one of the five window offsets each.
#[test]
fn tempo_clicks_are_spaced_at_the_labelled_bpm_within_one_percent() {
    let tempos = clip_specs(Concept::Tempos, &SpecOptions::default()).expect("specs");
    let chosen: Vec<&ClipSpec> = tempos
        .iter()
        .filter(|s| {
            let bpm = field_u8(s, "bpm");
            (bpm - 50).is_multiple_of(16) && field_u8(s, "offset_index") == bpm % 5
        })
        .collect();
    assert_eq!(chosen.len(), 11 * 5);
    for r in renderers() {
        for spec in &chosen {
            let audio = render(&r, spec);
            let bpm = spec.fields["bpm"].as_f64().expect("bpm");
            let got = estimate_bpm_from_audio(&audio, SR).unwrap_or(0.0);
            assert!(
                (got - bpm).abs() <= 0.01 * bpm,
                "{} with {}: estimated {got:.2} BPM",
                spec.name,
                r.synth_name()
            );
        }
    }
}

#[test]
fn time_signature_clicks_follow_the_beat_unit() {
    for r in renderers() {
        let signatures =
            clip_specs(Concept::TimeSignatures, &SpecOptions::default()).expect("specs");
        for spec in signatures
            .iter()
            .filter(|s| field_str(s, "click") == "woodblock_light")
            .filter(|s| field_u8(s, "offset_index") == 0)
        {
            let audio = render(&r, spec);
            let den = field_u8(spec, "subdivision") as f64;
            // clicks per minute: quarter-note beats scaled by the denominator, eighths in
            // compound meters
            let want = if spec.fields["is_compound"] == Value::Bool(true) {
                240.0
            } else {
                120.0 * den / 4.0
            };
            let got = estimate_bpm_from_audio(&audio, SR).unwrap_or(0.0);
            assert!(
                (got - want).abs() <= 0.01 * want,
                "{} with {}: {got:.2} clicks/min, want {want}",
                spec.name,
                r.synth_name()
            );
        }
    }
}

#[test]
fn time_signature_downbeats_recur_every_bar() {
    for r in renderers() {
        let signatures =
            clip_specs(Concept::TimeSignatures, &SpecOptions::default()).expect("specs");
        for spec in signatures
            .iter()
            .filter(|s| field_str(s, "click") == "woodblock_light")
            .filter(|s| field_u8(s, "offset_index") == 1)
            .filter(|s| field_u8(s, "reverb_level") != 1)
        {
            let audio = render(&r, spec);
            let beats = field_u8(spec, "beats") as i64;
            let offset = spec.fields["offset_s"].as_f64().expect("offset");
            let unit = if spec.fields["is_compound"] == Value::Bool(true) {
                0.25
            } else {
                2.0 / field_u8(spec, "subdivision") as f64
            };
            // the pitch class of each click heard whole in the window, split by bar position
            let (mut down, mut off) = (Vec::new(), Vec::new());
            let first = (offset / unit).ceil() as i64;
            for k in first.. {
                let t = k as f64 * unit - offset;
                let (a, b) = ((t + 0.005) * SR as f64, (t + unit - 0.005) * SR as f64);
                if b as usize > audio.len() {
                    break;
                }
                let pc = dominant_pitch_class(&audio[a as usize..b as usize], SR);
                if k % beats == 0 {
                    down.push(pc);
                } else {
                    off.push(pc);
                }
            }
            let what = format!(
                "{} with {}: down {down:?} off {off:?}",
                spec.name,
                r.synth_name()
            );
            assert!(!down.is_empty() && !off.is_empty(), "{what}");
            assert!(down.iter().all(|&p| p == down[0]), "{what}");
            assert!(off.iter().all(|&p| p == off[0]), "{what}");
            assert_ne!(down[0], off[0], "{what}");
        }
    }
}

#[test]
fn timbre_figures_play_their_root_and_each_family_sounds_its_own() {
    for r in renderers() {
        let timbres = specs(Concept::Timbres, &[0, 33, 40, 73]);
        let mut held_spectra = Vec::new();
        for spec in timbres
            .iter()
            .filter(|s| [0, 7].contains(&field_u8(s, "root_pitch_class")))
        {
            let audio = render(&r, spec);
            let pc = field_u8(spec, "root_pitch_class");
            let what = format!("{} with {}", spec.name, r.synth_name());
            match field_str(spec, "figure") {
                "held" => {
                    assert_eq!(dominant_pitch_class(&audio, SR), pc, "{what}");
                    if pc == 0 {
                        held_spectra.push((spec.program, average_spectrum(&audio, SR, 4096)));
                    }
                }
                "arpeggio" => {
                    let want: Vec<u8> = [0, 4, 7, 0, 7, 4, 0, 7]
                        .iter()
                        .map(|i| (pc + i) % 12)
                        .collect();
                    assert_eq!(pitch_class_per_beat(&audio, 8), want, "{what}");
                }
                "chord" => {
                    let mut want = vec![pc, (pc + 4) % 12, (pc + 7) % 12];
                    want.sort_unstable();
                    assert_eq!(top_pitch_classes(&audio, 3), want, "{what}");
                }
                _ => {}
            }
        }
        if !r.uses_soundfont() {
            continue;
        }
        // The program change takes effect: no two families' held C share a spectral shape.
        for (i, (pa, a)) in held_spectra.iter().enumerate() {
            for (pb, b) in &held_spectra[i + 1..] {
                let dot: f64 = a
                    .magnitudes
                    .iter()
                    .zip(&b.magnitudes)
                    .map(|(x, y)| x * y)
                    .sum();
                let norm = |s: &baton::audio::spectrum::Spectrum| {
                    s.magnitudes.iter().map(|x| x * x).sum::<f64>().sqrt()
                };
                let cosine = dot / (norm(a) * norm(b));
                assert!(cosine < 0.95, "programs {pa} and {pb}: cosine {cosine:.3}");
            }
        }
        assert_eq!(held_spectra.len(), 4);
    }
}
