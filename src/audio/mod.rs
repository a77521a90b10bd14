//! Audio plumbing: WAV reading and atomic writing, resampling, spectra.

pub mod spectrum;
pub mod wav;

pub use wav::{read_wav_mono, write_atomic, write_wav, AudioError, SampleFormat};
