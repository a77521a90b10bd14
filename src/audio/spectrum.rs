//! Spectra, chroma, pitch and onset helpers: enough to check what a clip plays (tests) and to
//! describe generated audio (evaluation), without an FFT dependency.

use std::f64::consts::PI;

/// In-place iterative radix-2 FFT of `re + i*im`; the length must be a power of two. Shared
/// with the CLAP feature extractor (`eval::clap`), which needs the same transform.
pub(crate) fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    debug_assert!(n.is_power_of_two() && im.len() == n);
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let angle = -2.0 * PI / len as f64;
        let (w_im, w_re) = angle.sin_cos();
        for start in (0..n).step_by(len) {
            let (mut c_re, mut c_im) = (1.0, 0.0);
            for k in 0..len / 2 {
                let a = start + k;
                let b = a + len / 2;
                let t_re = re[b] * c_re - im[b] * c_im;
                let t_im = re[b] * c_im + im[b] * c_re;
                re[b] = re[a] - t_re;
                im[b] = im[a] - t_im;
                re[a] += t_re;
                im[a] += t_im;
                let next = c_re * w_re - c_im * w_im;
                c_im = c_re * w_im + c_im * w_re;
                c_re = next;
            }
        }
        len <<= 1;
    }
}

/// A magnitude spectrum: `magnitudes[k]` is the level at `k * bin_hz` Hz.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Width of one bin in Hz.
    pub bin_hz: f64,
    /// Magnitudes of bins 0..=n_fft/2.
    pub magnitudes: Vec<f64>,
}

impl Spectrum {
    /// Frequency of the strongest bin within `[lo_hz, hi_hz]`.
    pub fn peak_hz(&self, lo_hz: f64, hi_hz: f64) -> Option<f64> {
        let lo = (lo_hz / self.bin_hz).ceil() as usize;
        let hi = ((hi_hz / self.bin_hz).floor() as usize).min(self.magnitudes.len() - 1);
        (lo..=hi)
            .max_by(|&a, &b| self.magnitudes[a].total_cmp(&self.magnitudes[b]))
            .map(|k| k as f64 * self.bin_hz)
    }
}

/// Average magnitude spectrum over Hann-windowed frames of `n_fft` samples (a power of two),
/// half-overlapping (Welch's method). A signal shorter than one frame is zero-padded.
pub fn average_spectrum(samples: &[f32], sample_rate: u32, n_fft: usize) -> Spectrum {
    let n_fft = n_fft.next_power_of_two().max(2);
    let window: Vec<f64> = (0..n_fft)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n_fft as f64).cos())
        .collect();
    let mut sum = vec![0.0; n_fft / 2 + 1];
    let hop = n_fft / 2;
    let mut frames = 0usize;
    let mut start = 0usize;
    loop {
        let mut re = vec![0.0; n_fft];
        let mut im = vec![0.0; n_fft];
        for (i, r) in re.iter_mut().enumerate() {
            *r = samples.get(start + i).copied().unwrap_or(0.0) as f64 * window[i];
        }
        fft(&mut re, &mut im);
        for (k, s) in sum.iter_mut().enumerate() {
            *s += (re[k] * re[k] + im[k] * im[k]).sqrt();
        }
        frames += 1;
        start += hop;
        if start + n_fft > samples.len() {
            break;
        }
    }
    for s in &mut sum {
        *s /= frames as f64;
    }
    Spectrum {
        bin_hz: sample_rate as f64 / n_fft as f64,
        magnitudes: sum,
    }
}

/// Energy per pitch class (C = 0) of the spectrum between 50 Hz and 5 kHz, each bin credited to
/// its nearest equal-tempered pitch; normalised so the largest class is 1.
pub fn chroma(samples: &[f32], sample_rate: u32) -> [f64; 12] {
    // 8192 points at 32 kHz: 3.9 Hz bins, fine enough to separate semitones from ~70 Hz up.
    let spectrum = average_spectrum(samples, sample_rate, 8192);
    let mut c = [0.0; 12];
    for (k, m) in spectrum.magnitudes.iter().enumerate() {
        let f = k as f64 * spectrum.bin_hz;
        if !(50.0..=5000.0).contains(&f) {
            continue;
        }
        let midi = 69.0 + 12.0 * (f / 440.0).log2();
        c[(midi.round() as i64).rem_euclid(12) as usize] += m * m;
    }
    let max = c.iter().cloned().fold(0.0, f64::max);
    if max > 0.0 {
        for v in &mut c {
            *v /= max;
        }
    }
    c
}

/// The strongest pitch class of a signal (argmax of its [`chroma`]).
pub fn dominant_pitch_class(samples: &[f32], sample_rate: u32) -> u8 {
    let c = chroma(samples, sample_rate);
    (0..12).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap_or(0) as u8
}

/// Pitch classes whose chroma is at least `threshold` (0..1) of the strongest, ascending.
pub fn strong_pitch_classes(samples: &[f32], sample_rate: u32, threshold: f64) -> Vec<u8> {
    let c = chroma(samples, sample_rate);
    (0..12u8).filter(|&p| c[p as usize] >= threshold).collect()
}

/// Hop of [`envelope`] in samples (2 ms).
fn envelope_hop(sample_rate: u32) -> usize {
    ((sample_rate as usize) / 500).max(1)
}

/// RMS level over a trailing 20 ms window, every 2 ms.
fn envelope(samples: &[f32], sample_rate: u32) -> Vec<f64> {
    let hop = envelope_hop(sample_rate);
    let win = hop * 10;
    let mut prefix = Vec::with_capacity(samples.len() + 1);
    let mut acc = 0.0f64;
    prefix.push(acc);
    for &x in samples {
        acc += (x as f64).powi(2);
        prefix.push(acc);
    }
    (0..=samples.len() / hop)
        .map(|i| {
            let end = (i * hop).min(samples.len());
            let start = end.saturating_sub(win);
            let n = (end - start).max(1) as f64;
            ((prefix[end] - prefix[start]) / n).sqrt()
        })
        .collect()
}

/// Rise of the level in dB over `span` hops (levels floored 80 dB below the loudest). Zero for
/// the first `span` hops: a signal that starts mid-sound has no attack there.
fn level_rise(env: &[f64], span: usize) -> Vec<f64> {
    let loudest = env.iter().cloned().fold(0.0, f64::max);
    let floor = loudest * 1e-4 + f64::MIN_POSITIVE;
    let db = |v: f64| 20.0 * (v + floor).log10();
    (0..env.len())
        .map(|i| {
            if i <= span {
                0.0
            } else {
                db(env[i]) - db(env[i - span])
            }
        })
        .collect()
}

/// Times (seconds) where the signal's energy jumps: attacks of notes and clicks.
///
/// The envelope is the RMS over a trailing 20 ms window (long enough to smooth the beating of low
/// drums), sampled every 2 ms; an onset is a local maximum of the level's rise over 20 ms that
/// exceeds 9 dB, on a level within 40 dB of the loudest, at least 60 ms after the previous onset.
pub fn onset_times(samples: &[f32], sample_rate: u32) -> Vec<f64> {
    let hop = envelope_hop(sample_rate);
    let span = 10; // hops per 20 ms
    let env = envelope(samples, sample_rate);
    let loudest = env.iter().cloned().fold(0.0, f64::max);
    if loudest <= 0.0 {
        return Vec::new();
    }
    let rise = level_rise(&env, span);
    let min_gap = (0.06 * sample_rate as f64 / hop as f64).ceil() as usize;
    let mut onsets: Vec<usize> = Vec::new();
    for i in 1..rise.len() {
        let peak = rise[i] >= rise[i - 1] && rise.get(i + 1).is_none_or(|&n| rise[i] > n);
        if !peak || rise[i] < 9.0 || env[i] < loudest * 0.01 {
            continue;
        }
        if let Some(last) = onsets.last_mut() {
            if i - *last < min_gap {
                // One attack, one onset: keep the stronger rise.
                if rise[i] > rise[*last] {
                    *last = i;
                }
                continue;
            }
        }
        onsets.push(i);
    }
    onsets
        .into_iter()
        .map(|i| (i * hop) as f64 / sample_rate as f64)
        .collect()
}

/// Tempo in beats per minute from evenly spaced onsets: the least-squares slope of onset time
/// against beat number (beat numbers from the median spacing), so small timing jitter averages
/// out. `None` with fewer than three onsets.
pub fn estimate_bpm(onsets: &[f64]) -> Option<f64> {
    if onsets.len() < 3 {
        return None;
    }
    let mut gaps: Vec<f64> = onsets.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    if median <= 0.0 {
        return None;
    }
    let beats: Vec<f64> = onsets
        .iter()
        .map(|t| ((t - onsets[0]) / median).round())
        .collect();
    let n = onsets.len() as f64;
    let mean_b = beats.iter().sum::<f64>() / n;
    let mean_t = onsets.iter().sum::<f64>() / n;
    let cov: f64 = beats
        .iter()
        .zip(onsets)
        .map(|(b, t)| (b - mean_b) * (t - mean_t))
        .sum();
    let var: f64 = beats.iter().map(|b| (b - mean_b).powi(2)).sum();
    (var > 0.0 && cov > 0.0).then(|| 60.0 * var / cov)
}

/// Onset strength every 2 ms: the positive spectral flux of log-compressed magnitude spectra
/// (Hann frames of ~32 ms, ending at each hop), i.e. how much new energy appears, summed over
/// frequency bins.
///
/// Unlike the broadband level, this sees an attack even while the previous stroke still rings
/// (a long-decaying drum re-struck fast barely raises the overall level, but its attack adds
/// energy across the upper bins). Log compression (relative to the loudest bin of the clip)
/// makes quiet and loud attacks count alike. The first frame's worth of hops is zero: a signal
/// that starts mid-sound has no attack there. Returns the strengths and the hop in seconds.
pub fn onset_strength(samples: &[f32], sample_rate: u32) -> (Vec<f64>, f64) {
    let hop = envelope_hop(sample_rate);
    let n_fft = (sample_rate as usize * 32 / 1000)
        .next_power_of_two()
        .max(16);
    let bins = n_fft / 2 + 1;
    let window: Vec<f64> = (0..n_fft)
        .map(|i| 0.5 - 0.5 * (2.0 * PI * i as f64 / n_fft as f64).cos())
        .collect();
    let frames = samples.len() / hop + 1;
    let mut mags = vec![0.0f64; frames * bins];
    let (mut re, mut im) = (vec![0.0; n_fft], vec![0.0; n_fft]);
    for (f, row) in mags.chunks_mut(bins).enumerate() {
        // frame f covers the n_fft samples ending at f * hop (zeros before the start)
        let first = (f * hop) as isize - n_fft as isize;
        for (i, (r, m)) in re.iter_mut().zip(im.iter_mut()).enumerate() {
            let idx = first + i as isize;
            *r = usize::try_from(idx)
                .ok()
                .and_then(|k| samples.get(k))
                .map_or(0.0, |&x| x as f64 * window[i]);
            *m = 0.0;
        }
        fft(&mut re, &mut im);
        for (k, v) in row.iter_mut().enumerate() {
            *v = (re[k] * re[k] + im[k] * im[k]).sqrt();
        }
    }
    let loudest = mags.iter().cloned().fold(0.0, f64::max);
    let hop_s = hop as f64 / sample_rate as f64;
    if loudest <= 0.0 {
        return (vec![0.0; frames], hop_s);
    }
    // ~60 dB of range above the floor of the log
    let gain = 1000.0 / loudest;
    for m in &mut mags {
        *m = (1.0 + gain * *m).ln();
    }
    let settle = n_fft / hop + 1;
    let strength = (0..frames)
        .map(|f| {
            if f < settle {
                return 0.0;
            }
            let (now, before) = (
                &mags[f * bins..(f + 1) * bins],
                &mags[(f - 1) * bins..f * bins],
            );
            now.iter().zip(before).map(|(a, b)| (a - b).max(0.0)).sum()
        })
        .collect();
    (strength, hop_s)
}

/// Tempo in beats per minute of a click track or other evenly pulsed audio (30-300 BPM).
///
/// Autocorrelation of the [`onset_strength`] (mean removed, normalised by overlap): the beat
/// period is the shortest lag whose correlation peak reaches half the strongest (multiples of
/// the period correlate as well as the period itself, and accents may make them stronger),
/// refined by parabolic interpolation between 2 ms lags. Stays accurate with only three or four
/// clicks in a clip, and with sounds that ring on through the next stroke. `None` for silence
/// or audio too short for one lag.
pub fn estimate_bpm_from_audio(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let (strength, hop_s) = onset_strength(samples, sample_rate);
    let mean = strength.iter().sum::<f64>() / strength.len() as f64;
    let centred: Vec<f64> = strength.iter().map(|v| v - mean).collect();
    let lo = (0.2 / hop_s).floor() as usize;
    let hi = ((2.0 / hop_s).ceil() as usize).min(centred.len() * 3 / 4);
    if lo + 3 > hi {
        return None;
    }
    let corr: Vec<f64> = (lo..=hi)
        .map(|lag| {
            let n = centred.len() - lag;
            (0..n).map(|i| centred[i] * centred[i + lag]).sum::<f64>() / n as f64
        })
        .collect();
    let peaks: Vec<usize> = (1..corr.len() - 1)
        .filter(|&k| corr[k] > 0.0 && corr[k] >= corr[k - 1] && corr[k] > corr[k + 1])
        .collect();
    let strongest = peaks.iter().map(|&k| corr[k]).fold(0.0, f64::max);
    let best = *peaks.iter().find(|&&k| corr[k] >= 0.5 * strongest)?;
    let (a, b, c) = (corr[best - 1], corr[best], corr[best + 1]);
    let denom = a - 2.0 * b + c;
    let shift = if denom.abs() > 1e-300 {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    let lag = (lo + best) as f64 + shift;
    Some(60.0 / (lag * hop_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, seconds: f64, sr: u32) -> Vec<f32> {
        (0..(seconds * sr as f64) as usize)
            .map(|i| (2.0 * PI * hz * i as f64 / sr as f64).sin() as f32)
            .collect()
    }

    #[test]
    fn fft_matches_a_direct_dft() {
        let x: Vec<f64> = (0..16).map(|i| ((i * 7 % 5) as f64) - 2.0).collect();
        let (mut re, mut im) = (x.clone(), vec![0.0; 16]);
        fft(&mut re, &mut im);
        for k in 0..16 {
            let (mut r, mut m) = (0.0, 0.0);
            for (n, v) in x.iter().enumerate() {
                let a = -2.0 * PI * (k * n) as f64 / 16.0;
                r += v * a.cos();
                m += v * a.sin();
            }
            assert!((re[k] - r).abs() < 1e-9 && (im[k] - m).abs() < 1e-9);
        }
    }

    #[test]
    fn sine_peaks_at_its_frequency_and_pitch_class() {
        let sr = 32000;
        let a4 = sine(440.0, 1.0, sr);
        let peak = average_spectrum(&a4, sr, 8192)
            .peak_hz(50.0, 5000.0)
            .unwrap();
        assert!((peak - 440.0).abs() < 4.0, "{peak}");
        assert_eq!(dominant_pitch_class(&a4, sr), 9);
        // E5 = 659.26 Hz -> pitch class 4
        assert_eq!(dominant_pitch_class(&sine(659.26, 1.0, sr), sr), 4);
    }

    #[test]
    fn clicks_give_their_tempo() {
        let sr = 32000;
        let mut x = vec![0f32; 4 * sr as usize];
        let period = 60.0 / 137.0;
        let mut t = 0.1;
        while t < 3.9 {
            let s = (t * sr as f64) as usize;
            for i in 0..200 {
                x[s + i] += (-(i as f32) / 40.0).exp();
            }
            t += period;
        }
        let bpm = estimate_bpm(&onset_times(&x, sr)).unwrap();
        assert!((bpm - 137.0).abs() < 137.0 * 0.005, "{bpm}");
    }

    /// A low drum re-struck before it has rung out, as TimGM6mb's taiko is above ~110 BPM:
    /// each stroke restarts a 2 s decay from only ~1.4 dB above what is still ringing, with a
    /// short, quiet stick noise on top.
    fn ringing_drum(bpm: f64, seconds: f64, sr: u32) -> Vec<f32> {
        let n = (seconds * sr as f64) as usize;
        let period = (60.0 / bpm * sr as f64) as usize;
        let mut noise = 0x2545_f491_u32;
        let mut x = vec![0f32; n];
        let mut amp = 0.0f64;
        let mut since = 0usize;
        for (i, v) in x.iter_mut().enumerate() {
            // strokes start 0.73 s in, so the clip opens mid-ring
            if i >= sr as usize * 73 / 100 && (i - sr as usize * 73 / 100).is_multiple_of(period) {
                amp = 1.0;
                since = 0;
            }
            let t = since as f64 / sr as f64;
            let tone = amp * (-t / 2.0).exp() * (2.0 * PI * 70.0 * t).sin();
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let stick = if since < sr as usize * 3 / 1000 && amp > 0.0 {
                0.05 * (noise as f64 / u32::MAX as f64 - 0.5)
            } else {
                0.0
            };
            *v = (tone + stick) as f32;
            since += 1;
        }
        x
    }

    #[test]
    fn a_drum_that_rings_through_the_next_stroke_gives_its_tempo() {
        let sr = 32000;
        for bpm in [112.0, 150.0, 187.0, 210.0] {
            let x = ringing_drum(bpm, 4.0, sr);
            let got = estimate_bpm_from_audio(&x, sr).unwrap_or(0.0);
            assert!((got - bpm).abs() < bpm * 0.01, "{bpm}: {got}");
        }
    }
}
