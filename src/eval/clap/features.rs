//! The log-mel spectrogram `ClapFeatureExtractor` computes on its unfused path
//! (`truncation="rand_trunc"`), number for number: the clip is filled to 10 s (`repeatpad`:
//! repeated whole, then zero-padded), framed with a periodic Hann window after reflect padding,
//! and its power spectrum goes through Slaney-normalised Slaney-scale mel filters into decibels.
//!
//! Clips longer than one input are not cropped at random, as `rand_trunc` does (that would make
//! every score a draw): [`windows`] cuts them into consecutive 10 s windows, whose embeddings the
//! caller averages.

use std::ops::Range;

use super::config::FeatureConfig;

/// Turns 48 kHz mono audio into the model's input features.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    cfg: FeatureConfig,
    /// Periodic Hann window of `fft_window_size` samples.
    window: Vec<f64>,
    /// Mel filters, `[mel][bin]` flattened (`mels * bins`).
    filters: Vec<f64>,
}

impl FeatureExtractor {
    /// Checks the settings and tabulates the window and the filters.
    pub fn new(cfg: FeatureConfig) -> Result<Self, String> {
        let n = cfg.fft_window_size;
        if !n.is_power_of_two() || n < 4 {
            return Err(format!(
                "fft_window_size {n} is not supported (a power of two is needed)"
            ));
        }
        if cfg.hop_length == 0 || cfg.sampling_rate == 0 || cfg.max_samples() == 0 {
            return Err("hop_length, sampling_rate and max_length_s must be positive".into());
        }
        if cfg.feature_size == 0 || cfg.frequency_min > cfg.frequency_max {
            return Err("feature_size must be positive and frequency_min <= frequency_max".into());
        }
        if !matches!(cfg.padding.as_str(), "repeatpad" | "repeat" | "pad") {
            return Err(format!(
                "padding {:?} is not one of repeatpad, repeat, pad",
                cfg.padding
            ));
        }
        // np.hanning(n + 1)[:-1]: the periodic window transformers' window_function("hann") gives.
        let window = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
            .collect();
        let filters = slaney_filters(
            n / 2 + 1,
            cfg.feature_size,
            cfg.frequency_min,
            cfg.frequency_max,
            cfg.sampling_rate,
        );
        Ok(FeatureExtractor {
            cfg,
            window,
            filters,
        })
    }

    /// The settings.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    /// Frames of one input's spectrogram (1001 for 10 s at hop 480).
    pub fn frames(&self) -> usize {
        1 + self.cfg.max_samples() / self.cfg.hop_length
    }

    /// The log-mel spectrogram of one input: `samples` (at the model's rate, at most one input
    /// long, not empty) filled to one input, as `[frames][mels]` flattened.
    pub fn log_mel(&self, samples: &[f32]) -> Vec<f32> {
        let wave = self.fill(samples);
        let n = self.cfg.fft_window_size;
        let half = n / 2;
        let mels = self.cfg.feature_size;
        let bins = n / 2 + 1;
        // Reflect padding by half a frame on each side (numpy's "reflect": the edge sample is
        // not repeated), as spectrogram(center=True) does.
        let len = wave.len();
        let at = |i: isize| -> f64 {
            let len = len as isize;
            let j = if i < 0 {
                -i
            } else if i >= len {
                2 * (len - 1) - i
            } else {
                i
            };
            wave[j.clamp(0, len - 1) as usize]
        };
        let frames = 1 + (len + 2 * half - n) / self.cfg.hop_length;
        let mut out = vec![0f32; frames * mels];
        let (mut re, mut im) = (vec![0.0; n], vec![0.0; n]);
        let mut power = vec![0.0; bins];
        for f in 0..frames {
            let start = (f * self.cfg.hop_length) as isize - half as isize;
            for k in 0..n {
                re[k] = at(start + k as isize) * self.window[k];
                im[k] = 0.0;
            }
            crate::audio::spectrum::fft(&mut re, &mut im);
            for k in 0..bins {
                // transformers stores the transform as complex64 before taking |.|^2 in f64.
                let (r, i) = (re[k] as f32 as f64, im[k] as f32 as f64);
                power[k] = r.hypot(i).powi(2);
            }
            for (m, filter) in self.filters.chunks_exact(bins).enumerate() {
                let acc: f64 = filter.iter().zip(&power).map(|(w, p)| w * p).sum();
                out[f * mels + m] = (10.0 * acc.max(1e-10).log10()) as f32;
            }
        }
        out
    }

    /// Fills a short clip to exactly one input the way the configured `padding` does.
    fn fill(&self, samples: &[f32]) -> Vec<f64> {
        let max = self.cfg.max_samples();
        let src: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        if src.is_empty() || src.len() >= max {
            let mut v = src;
            v.resize(max, 0.0);
            return v;
        }
        let repeats = max / src.len();
        let mut v: Vec<f64> = match self.cfg.padding.as_str() {
            "repeatpad" => src
                .iter()
                .copied()
                .cycle()
                .take(src.len() * repeats)
                .collect(),
            "repeat" => src.iter().copied().cycle().take(max).collect(),
            _ => src,
        };
        v.resize(max, 0.0);
        v
    }
}

/// Sample ranges of the model inputs a clip of `len` samples is read as: the whole clip when it
/// fits one input of `max` samples, else consecutive windows of `max` samples from the start,
/// plus one ending at the clip's end when they stop short of it (so every window is a full
/// input and the whole clip is heard).
pub fn windows(len: usize, max: usize) -> Vec<Range<usize>> {
    crate::audio::windows(len, Some(max), max)
}

/// transformers' `hertz_to_mel(f, "slaney")`: linear below 1 kHz, logarithmic above.
fn hz_to_mel(f: f64) -> f64 {
    let logstep = 27.0 / 6.4f64.ln();
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * logstep
    } else {
        3.0 * f / 200.0
    }
}

/// The inverse of [`hz_to_mel`].
fn mel_to_hz(m: f64) -> f64 {
    let logstep = 6.4f64.ln() / 27.0;
    if m >= 15.0 {
        1000.0 * (logstep * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// numpy's `linspace(a, b, n)` (the last point exactly `b`).
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
    v[n - 1] = b;
    v
}

/// transformers' `mel_filter_bank(norm="slaney", mel_scale="slaney")`, transposed: `[mel][bin]`
/// flattened, so each filter is one contiguous row.
fn slaney_filters(bins: usize, mels: usize, f_min: f64, f_max: f64, rate: u32) -> Vec<f64> {
    let centres: Vec<f64> = linspace(hz_to_mel(f_min), hz_to_mel(f_max), mels + 2)
        .into_iter()
        .map(mel_to_hz)
        .collect();
    let fft_freqs = linspace(0.0, (rate / 2) as f64, bins);
    let mut out = vec![0.0; bins * mels];
    for (k, &f) in fft_freqs.iter().enumerate() {
        for m in 0..mels {
            let down = -(centres[m] - f) / (centres[m + 1] - centres[m]);
            let up = (centres[m + 2] - f) / (centres[m + 2] - centres[m + 1]);
            let enorm = 2.0 / (centres[m + 2] - centres[m]);
            out[m * bins + k] = down.min(up).max(0.0) * enorm;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clips_repeat_whole_then_pad() {
        let cfg = FeatureConfig {
            sampling_rate: 4,
            max_length_s: 2,
            ..FeatureConfig::default()
        };
        let fx = FeatureExtractor::new(cfg).unwrap();
        assert_eq!(
            fx.fill(&[1.0, 2.0, 3.0]),
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0, 0.0]
        );
    }

    #[test]
    fn long_clips_are_read_in_full_windows() {
        assert_eq!(windows(5, 10), vec![0..5]);
        assert_eq!(windows(10, 10), vec![0..10]);
        assert_eq!(windows(25, 10), vec![0..10, 10..20, 15..25]);
    }

    #[test]
    fn slaney_scale_round_trips() {
        for f in [0.0, 440.0, 999.0, 1000.0, 14000.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9);
        }
    }
}
