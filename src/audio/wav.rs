//! WAV files: read any PCM/float WAV to mono f32, write f32 or 16-bit PCM atomically.

use std::path::{Path, PathBuf};

/// Errors reading or writing audio files.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file cannot be opened, is not a WAV file, or is cut short.
    #[error("cannot read WAV file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    /// Creating, writing or renaming the file (or its temporary sibling) failed.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// hound refused to encode the samples (a format or size WAV cannot hold).
    #[error("cannot encode WAV for {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: hound::Error,
    },
    /// A WAV file that holds no samples.
    #[error("{path} has no samples")]
    Empty { path: PathBuf },
    /// A float WAV file holding NaN or infinite samples (no audio has them: the file is broken,
    /// and every number read from it would be meaningless).
    #[error("{path} holds non-finite samples (NaN or infinity), the first at sample {index}")]
    NotFinite { path: PathBuf, index: usize },
}

/// How samples are stored in a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleFormat {
    /// 32-bit IEEE float (lossless for the model's output).
    #[default]
    Float32,
    /// 16-bit signed PCM, clipped to [-1, 1].
    Pcm16,
}

impl SampleFormat {
    /// 16-bit PCM when `pcm16` (the `--pcm16` flag every writing verb takes), else 32-bit float.
    pub fn from_pcm16_flag(pcm16: bool) -> Self {
        if pcm16 {
            SampleFormat::Pcm16
        } else {
            SampleFormat::Float32
        }
    }
}

/// Reads a WAV file and mixes it down to mono f32 in [-1, 1]. Returns (samples, sample_rate).
pub fn read_wav_mono(path: &Path) -> Result<(Vec<f32>, u32), AudioError> {
    let read_err = |source| AudioError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(read_err)?;
    let spec = reader.spec();
    let channels = spec.channels.max(1) as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(read_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.saturating_sub(1))) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(read_err)?
        }
    };
    if interleaved.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some(index) = interleaved.iter().position(|s| !s.is_finite()) {
        return Err(AudioError::NotFinite {
            path: path.to_path_buf(),
            index: index / channels,
        });
    }
    let mono = interleaved
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Writes mono samples as a WAV file, atomically (temp file in the same folder, then rename), so
/// an interrupted run never leaves a truncated file behind. Non-finite samples (what a far too
/// strong push can make of the model's output) are refused rather than written.
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: SampleFormat,
) -> Result<(), AudioError> {
    if let Some(index) = samples.iter().position(|s| !s.is_finite()) {
        return Err(AudioError::NotFinite {
            path: path.to_path_buf(),
            index,
        });
    }
    let (bits, sample_format) = match format {
        SampleFormat::Float32 => (32, hound::SampleFormat::Float),
        SampleFormat::Pcm16 => (16, hound::SampleFormat::Int),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut bytes = std::io::Cursor::new(Vec::with_capacity(samples.len() * 4 + 64));
    let enc_err = |source| AudioError::Encode {
        path: path.to_path_buf(),
        source,
    };
    {
        let mut writer = hound::WavWriter::new(&mut bytes, spec).map_err(enc_err)?;
        for &s in samples {
            match format {
                SampleFormat::Float32 => writer.write_sample(s),
                SampleFormat::Pcm16 => {
                    writer.write_sample((s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16)
                }
            }
            .map_err(enc_err)?;
        }
        writer.finalize().map_err(enc_err)?;
    }
    write_atomic(path, bytes.get_ref())
}

/// [`crate::files::write_atomic`] with the path in the error, for audio-side callers.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AudioError> {
    crate::files::write_atomic(path, bytes).map_err(|source| AudioError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_and_pcm16_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
        for (format, tol) in [(SampleFormat::Float32, 0.0), (SampleFormat::Pcm16, 1e-4)] {
            let path = dir.path().join("x.wav");
            write_wav(&path, &samples, 32000, format).unwrap();
            let (back, sr) = read_wav_mono(&path).unwrap();
            assert_eq!(sr, 32000);
            assert_eq!(back.len(), samples.len());
            for (a, b) in back.iter().zip(&samples) {
                assert!((a - b).abs() <= tol, "{a} vs {b}");
            }
        }
        // no temp files left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn non_finite_samples_are_refused_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 32000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for s in [0.0, 0.0, 0.5, f32::NAN, 0.1, 0.1] {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let err = read_wav_mono(&path).unwrap_err();
        assert!(
            matches!(err, AudioError::NotFinite { index: 1, .. }),
            "{err}"
        );
        let out = dir.path().join("out.wav");
        let err = write_wav(&out, &[0.0, f32::INFINITY], 32000, SampleFormat::Pcm16).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn unwritable_path_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("x.wav");
        let err = write_wav(&path, &[0.0; 10], 32000, SampleFormat::Float32).unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert!(!path.exists());
    }
}
