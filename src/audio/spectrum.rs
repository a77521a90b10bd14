//! Spectra, chroma, pitch and onset helpers: enough to check what a clip plays (tests) and to
//! describe generated audio (evaluation), without an FFT dependency.

use std::f64::consts::PI;

/// In-place iterative radix-2 FFT of `re + i*im`; the length must be a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
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

/// Times (seconds) where the signal's energy jumps: attacks of notes and clicks.
///
/// The envelope is the RMS over 2 ms hops; an onset is a local maximum of its rise that exceeds a
/// fifth of the largest rise, at least 50 ms after the previous onset.
pub fn onset_times(samples: &[f32], sample_rate: u32) -> Vec<f64> {
    let hop = ((sample_rate as usize) / 500).max(1);
    let env: Vec<f64> = samples
        .chunks(hop)
        .map(|c| (c.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
        .collect();
    let rise: Vec<f64> = std::iter::once(0.0)
        .chain(env.windows(2).map(|w| (w[1] - w[0]).max(0.0)))
        .collect();
    let max = rise.iter().cloned().fold(0.0, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    let min_gap = (0.05 * sample_rate as f64 / hop as f64).ceil() as usize;
    let mut onsets = Vec::new();
    let mut last: Option<usize> = None;
    for i in 1..rise.len() {
        let peak = rise[i] >= rise[i - 1] && rise.get(i + 1).is_none_or(|&n| rise[i] > n);
        if peak && rise[i] >= 0.2 * max && last.is_none_or(|l| i - l >= min_gap) {
            onsets.push(i);
            last = Some(i);
        }
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
}
