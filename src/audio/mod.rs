//! Audio plumbing: WAV reading (any PCM or float WAV, mixed to mono) and atomic writing,
//! spectra, chroma and onset-based tempo, and background playback through an external player.
//! Nothing here resamples: a file is read at its own rate.

pub mod play;
pub mod spectrum;
pub mod wav;

pub use wav::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};
