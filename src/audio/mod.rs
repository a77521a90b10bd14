//! Audio plumbing: WAV reading (any PCM or float WAV, mixed to mono) and atomic writing, and
//! spectra, chroma and onset-based tempo. Nothing here resamples: a file is read at its own rate.

pub mod spectrum;
pub mod wav;

pub use wav::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};
