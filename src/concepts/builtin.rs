//! The built-in synthesizer: used when no SoundFont is installed, so `baton dataset` works on any
//! machine. Additive tones in a handful of timbres chosen by GM family, a click for percussion,
//! and a small comb-filter reverb driven by the reverb send. Deterministic: no clocks, no global
//! randomness.

use std::f64::consts::TAU;

use super::events::{EventKind, Score, DRUM_CHANNEL, REVERB_SEND};
use super::theory::midi_to_hz;

/// GM's default reverb send, which rustysynth also starts every channel with.
const DEFAULT_REVERB_SEND: u8 = 40;

/// How a note's loudness evolves and which overtones it has.
#[derive(Debug, Clone, Copy)]
struct Timbre {
    /// Relative amplitude of harmonic `h` (1-based) is `shape(h)`.
    shape: fn(usize) -> f64,
    /// Seconds to full level.
    attack: f64,
    /// Exponential decay time constant of a struck/plucked tone (seconds); `None` = sustained.
    decay: Option<f64>,
    /// Seconds to silence after release.
    release: f64,
}

fn struck(h: usize) -> f64 {
    1.0 / (h as f64).powf(1.6)
}
fn organ(h: usize) -> f64 {
    match h {
        1 => 1.0,
        2 => 0.7,
        4 => 0.45,
        6 => 0.25,
        8 => 0.2,
        _ => 0.0,
    }
}
fn bowed(h: usize) -> f64 {
    1.0 / h as f64
}
fn brassy(h: usize) -> f64 {
    1.0 / (h as f64).sqrt() * if h <= 8 { 1.0 } else { 0.3 }
}
fn reedy(h: usize) -> f64 {
    if h % 2 == 1 {
        1.0 / h as f64
    } else {
        0.15 / h as f64
    }
}
fn fluty(h: usize) -> f64 {
    match h {
        1 => 1.0,
        2 => 0.25,
        3 => 0.1,
        _ => 0.0,
    }
}

/// The timbre of a GM program, by family.
fn timbre(program: u8) -> Option<Timbre> {
    let t = |shape: fn(usize) -> f64, attack, decay, release| Timbre {
        shape,
        attack,
        decay,
        release,
    };
    Some(match program / 8 {
        // piano, chromatic percussion, guitar, bass, ethnic (plucked/struck)
        0 | 1 | 3 | 4 | 13 => t(struck, 0.004, Some(0.9), 0.08),
        2 => t(organ, 0.01, None, 0.05),
        // strings, ensembles, pads
        5 | 6 | 11 => t(bowed, 0.06, None, 0.15),
        // brass, synth leads
        7 | 10 => t(brassy, 0.03, None, 0.08),
        8 => t(reedy, 0.03, None, 0.06),
        9 => t(fluty, 0.04, None, 0.06),
        // synth effects, percussive, sound effects: a click
        _ => return None,
    })
}

/// Adds one sustained or decaying harmonic tone to `out`.
#[allow(clippy::too_many_arguments)]
fn add_tone(
    out: &mut [f32],
    sr: f64,
    on: usize,
    off: usize,
    key: u8,
    velocity: u8,
    timbre: &Timbre,
) {
    let f0 = midi_to_hz(key as f64);
    let nyquist = 0.45 * sr;
    let partials: Vec<(f64, f64)> = (1..=16)
        .map(|h| (h as f64 * f0, (timbre.shape)(h)))
        .filter(|&(f, a)| f < nyquist && a > 0.0)
        .collect();
    let norm: f64 = partials.iter().map(|p| p.1).sum::<f64>().max(1e-9);
    let gain = 0.3 * velocity as f64 / 127.0 / norm;
    let release = (timbre.release * sr) as usize;
    let end = (off + release).min(out.len());
    for (i, sample) in out.iter_mut().enumerate().take(end).skip(on) {
        let t = (i - on) as f64 / sr;
        let mut env = (t / timbre.attack).min(1.0);
        if let Some(tau) = timbre.decay {
            env *= (-t / tau).exp();
        }
        if i >= off {
            env *= 1.0 - (i - off) as f64 / release.max(1) as f64;
        }
        let mut v = 0.0;
        for (k, &(f, a)) in partials.iter().enumerate() {
            // higher partials of struck tones die faster, as on a real string
            let damp = match timbre.decay {
                Some(tau) => (-t * k as f64 / (2.0 * tau)).exp(),
                None => 1.0,
            };
            v += a * damp * (TAU * f * t).sin();
        }
        *sample += (gain * env * v) as f32;
    }
}

/// Adds a click: a short noise burst over a fast-decaying tone whose pitch follows the key.
fn add_click(out: &mut [f32], sr: f64, on: usize, key: u8, velocity: u8, drum: bool) {
    // Drum-kit keys name sounds, not pitches: give each key its own bright pitch.
    let f = if drum {
        600.0 + 40.0 * (key % 32) as f64
    } else {
        midi_to_hz(key as f64 + 24.0)
    };
    let gain = 0.6 * velocity as f64 / 127.0;
    let len = ((0.08 * sr) as usize).min(out.len().saturating_sub(on));
    // xorshift noise seeded by the key: deterministic, different per click sound
    let mut state: u32 = 0x9E37_79B9 ^ (key as u32).wrapping_mul(0x85EB_CA6B);
    for (i, sample) in out.iter_mut().skip(on).take(len).enumerate() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = state as f64 / u32::MAX as f64 * 2.0 - 1.0;
        let t = i as f64 / sr;
        let v = 0.6 * (TAU * f * t).sin() * (-t / 0.025).exp() + 0.4 * noise * (-t / 0.004).exp();
        *sample += (gain * v) as f32;
    }
}

/// A few parallel feedback combs (Schroeder's reverb without the all-passes): enough to smear
/// clicks audibly in proportion to the send.
fn add_reverb(dry: &[f32], sr: f64, send: f64) -> Vec<f32> {
    let mut out = dry.to_vec();
    if send <= 0.0 {
        return out;
    }
    let wet_gain = 0.35 * send;
    for (ms, feedback) in [(29.7, 0.84), (37.1, 0.83), (41.1, 0.82), (43.7, 0.81)] {
        let d = ((ms / 1000.0) * sr) as usize;
        let mut line = vec![0f32; dry.len()];
        for i in 0..dry.len() {
            let back = if i >= d { line[i - d] } else { 0.0 };
            line[i] = dry[i] + feedback * back;
            out[i] += (wet_gain / 4.0) as f32 * back;
        }
    }
    out
}

/// Renders the window `[start, start + len)` samples of a score.
pub(crate) fn render(score: &Score, sample_rate: u32, start: usize, len: usize) -> Vec<f32> {
    let sr = sample_rate as f64;
    let total = start + len;
    let mut dry = vec![0f32; total];
    let mut program = [0u8; 16];
    let mut send = [DEFAULT_REVERB_SEND; 16];
    let at = |time: f64| ((time * sr).round().max(0.0) as usize).min(total);
    for (i, e) in score.events.iter().enumerate() {
        let ch = (e.channel & 15) as usize;
        match e.kind {
            EventKind::Program(p) => program[ch] = p,
            EventKind::Control { controller, value } if controller == REVERB_SEND => {
                send[ch] = value
            }
            EventKind::Control { .. } | EventKind::NoteOff { .. } => {}
            EventKind::NoteOn { key, velocity } => {
                let on = at(e.time);
                if on >= total {
                    continue;
                }
                let off = score.events[i + 1..]
                    .iter()
                    .find(|o| o.channel == e.channel && o.kind == EventKind::NoteOff { key })
                    .map(|o| at(o.time))
                    .unwrap_or(total);
                let drum = e.channel == DRUM_CHANNEL;
                match timbre(program[ch]).filter(|_| !drum) {
                    Some(t) => add_tone(&mut dry, sr, on, off, key, velocity, &t),
                    None => add_click(&mut dry, sr, on, key, velocity, drum),
                }
            }
        }
    }
    // One reverb for the mix, at the loudest send any channel asked for: our scores play on one
    // channel at a time.
    let used_send = score
        .events
        .iter()
        .map(|e| send[(e.channel & 15) as usize])
        .max()
        .unwrap_or(DEFAULT_REVERB_SEND);
    let wet = add_reverb(&dry, sr, used_send as f64 / 127.0);
    wet[start..].to_vec()
}
