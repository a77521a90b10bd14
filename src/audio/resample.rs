//! Band-limited sample-rate conversion: a Kaiser-windowed sinc evaluated at each output
//! sample's exact position in the input.
//!
//! MusicGen's EnCodec runs at 32 kHz, and recordings come at 44.1 or 48 kHz. Going down, the
//! filter cuts just below the new Nyquist frequency, so content the new rate cannot hold is
//! removed instead of folding back (aliasing) as a spurious tone. The kernel is tabulated once
//! per call and linearly interpolated, so any pair of rates costs the same.

use std::f64::consts::PI;

/// Zero crossings of the sinc on each side of the centre: the filter's length, and so its
/// sharpness (the transition band is about `1 / ZERO_CROSSINGS` of the cut-off).
const ZERO_CROSSINGS: usize = 24;

/// Table points per zero crossing (linear interpolation between them).
const TABLE_STEPS: usize = 512;

/// The cut-off as a fraction of the lower of the two Nyquist frequencies, leaving room for the
/// transition band below it.
const ROLLOFF: f64 = 0.94;

/// Kaiser window shape: about 80 dB of stop-band rejection.
const KAISER_BETA: f64 = 8.0;

/// Converts mono `samples` from `from` Hz to `to` Hz. The output has `len * to / from` samples
/// (rounded), aligned so output sample `n` is at input time `n * from / to`. Equal rates return
/// the input unchanged.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let (from_f, to_f) = (from as f64, to as f64);
    // Cut-off in cycles per input sample, relative to the input's Nyquist frequency.
    let cutoff = ROLLOFF * (to_f / from_f).min(1.0);
    let table = kernel_table();
    // Half-width of the kernel in input samples.
    let reach = ZERO_CROSSINGS as f64 / cutoff;
    let out_len = ((samples.len() as u64 * to as u64 + from as u64 / 2) / from as u64) as usize;
    let last = samples.len() as i64 - 1;
    (0..out_len)
        .map(|n| {
            // Exact position in the input: integer arithmetic keeps long files from drifting.
            let num = n as u64 * from as u64;
            let centre = (num / to as u64) as i64;
            let frac = (num % to as u64) as f64 / to_f;
            let lo = (centre - reach.floor() as i64).max(0);
            let hi = (centre + reach.ceil() as i64 + 1).min(last);
            let mut acc = 0.0f64;
            for i in lo..=hi {
                let t = (i - centre) as f64 - frac;
                acc += samples[i as usize] as f64 * kernel(&table, t * cutoff);
            }
            (acc * cutoff) as f32
        })
        .collect()
}

/// The windowed sinc at `x` zero crossings from its centre, read from `table`.
fn kernel(table: &[f64], x: f64) -> f64 {
    let pos = x.abs() * TABLE_STEPS as f64;
    let i = pos as usize;
    if i + 1 >= table.len() {
        return 0.0;
    }
    let w = pos - i as f64;
    table[i] * (1.0 - w) + table[i + 1] * w
}

/// `sinc(x) * kaiser(x / ZERO_CROSSINGS)` for x = 0, 1/TABLE_STEPS, ..., ZERO_CROSSINGS.
fn kernel_table() -> Vec<f64> {
    let n = ZERO_CROSSINGS * TABLE_STEPS;
    let norm = bessel_i0(KAISER_BETA);
    (0..=n)
        .map(|k| {
            let x = k as f64 / TABLE_STEPS as f64;
            let sinc = if k == 0 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            };
            let r = x / ZERO_CROSSINGS as f64;
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / norm;
            sinc * window
        })
        .collect()
}

/// The modified Bessel function of the first kind, order 0 (power series; converges fast for
/// the window's arguments).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..64 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::spectrum::average_spectrum;

    fn sine(hz: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * hz * i as f64 / rate as f64).sin()) as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// The middle of a signal, away from the edges where the filter runs out of input.
    fn middle(x: &[f32]) -> &[f32] {
        &x[x.len() / 8..x.len() * 7 / 8]
    }

    #[test]
    fn equal_rates_change_nothing() {
        let x = sine(440.0, 32000, 0.1);
        assert_eq!(resample(&x, 32000, 32000), x);
        assert!(resample(&[], 48000, 32000).is_empty());
    }

    #[test]
    fn a_tone_keeps_its_pitch_level_and_phase() {
        for (from, to) in [
            (48000, 32000),
            (44100, 32000),
            (22050, 32000),
            (32000, 16000),
        ] {
            let x = sine(1000.0, from, 1.0);
            let y = resample(&x, from, to);
            assert_eq!(y.len(), to as usize, "{from} -> {to}");
            let peak = average_spectrum(&y, to, 8192)
                .peak_hz(100.0, to as f64 / 2.0)
                .expect("peak");
            assert!((peak - 1000.0).abs() < 5.0, "{from} -> {to}: {peak} Hz");
            let level = rms(middle(&y)) / rms(middle(&x));
            assert!((level - 1.0).abs() < 0.005, "{from} -> {to}: level {level}");
            // sample by sample against the ideal tone at the new rate
            let want = sine(1000.0, to, 1.0);
            let worst = middle(&y)
                .iter()
                .zip(middle(&want))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 2e-3, "{from} -> {to}: off by {worst}");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed_not_folded_back() {
        // 20 kHz fits 48 kHz but not 32 kHz, where it would alias to 12 kHz.
        let x = sine(20000.0, 48000, 0.5);
        let y = resample(&x, 48000, 32000);
        let left = rms(middle(&y)) / rms(middle(&x));
        assert!(left < 1e-3, "{left}");
        // just inside the pass band survives
        let x = sine(14000.0, 48000, 0.5);
        let kept = rms(middle(&resample(&x, 48000, 32000))) / rms(middle(&x));
        assert!(kept > 0.95, "{kept}");
    }
}
