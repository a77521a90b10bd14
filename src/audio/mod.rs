//! Audio plumbing: WAV reading (any PCM or float WAV, mixed to mono) and atomic writing,
//! band-limited resampling, spectra, chroma and onset-based tempo, and background playback
//! through an external player. [`read_wav_mono`] reads a file at its own rate; [`read_wav_at`]
//! converts it to the rate a caller needs.

pub mod play;
pub mod resample;
pub mod spectrum;
pub mod stream;
pub mod wav;

pub use resample::resample;
pub use stream::WavStream;
pub use wav::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};

use std::ops::Range;
use std::path::Path;

/// Reads a WAV file mixed to mono and converted to `rate` Hz. Returns the samples and the file's
/// own rate.
pub fn read_wav_at(path: &Path, rate: u32) -> Result<(Vec<f32>, u32), AudioError> {
    let (audio, own) = read_wav_mono(path)?;
    Ok((resample(&audio, own, rate), own))
}

/// Sample ranges of the windows of a clip of `len` samples: the whole clip when `window` is
/// `None`, else windows of `window` samples every `hop` samples, plus one ending at the clip's
/// end when they stop short of it (so the end of a piece is always read); a clip shorter than
/// one window is taken whole.
pub fn windows(len: usize, window: Option<usize>, hop: usize) -> Vec<Range<usize>> {
    match window {
        Some(w) if w < len => {
            let mut spans: Vec<Range<usize>> = (0..=(len - w))
                .step_by(hop.max(1))
                .map(|s| s..s + w)
                .collect();
            if spans.last().is_some_and(|r| r.end < len) {
                spans.push(len - w..len);
            }
            spans
        }
        _ => std::iter::once(0..len).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_clip_without_running_past_it() {
        assert_eq!(windows(10, None, 3), vec![0..10]);
        assert_eq!(windows(10, Some(4), 4), vec![0..4, 4..8, 6..10]);
        assert_eq!(windows(10, Some(4), 3), vec![0..4, 3..7, 6..10]);
        assert_eq!(windows(3, Some(4), 1), vec![0..3]);
        assert_eq!(windows(4, Some(4), 1), vec![0..4]);
    }
}
