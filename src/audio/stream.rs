//! WAV written as it is made: the header goes out first with its lengths left open (all ones,
//! as sox and ffmpeg write to pipes, and as players reading a pipe expect), then samples chunk
//! by chunk. A file can have its lengths set once the stream ends ([`WavStream::close_file`]),
//! so what is left is an ordinary WAV.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use super::SampleFormat;

/// The RIFF and data lengths of a stream whose end is not known.
const OPEN_LENGTH: u32 = u32::MAX;

/// A mono WAV stream into `W` (stdout, a player's stdin, a file).
pub struct WavStream<W: Write> {
    out: W,
    format: SampleFormat,
    /// Bytes of samples written.
    data_bytes: u64,
    buffer: Vec<u8>,
}

impl<W: Write> WavStream<W> {
    /// Writes the header (sizes open) and returns the stream.
    pub fn start(mut out: W, sample_rate: u32, format: SampleFormat) -> std::io::Result<Self> {
        out.write_all(&header(sample_rate, format, None))?;
        out.flush()?;
        Ok(WavStream {
            out,
            format,
            data_bytes: 0,
            buffer: Vec::new(),
        })
    }

    /// Appends samples and flushes them out. Non-finite samples are written as silence: a
    /// stream cannot take back its start, and a player must not get NaN.
    pub fn write(&mut self, samples: &[f32]) -> std::io::Result<()> {
        self.buffer.clear();
        for &s in samples {
            let s = if s.is_finite() { s } else { 0.0 };
            match self.format {
                SampleFormat::Float32 => self.buffer.extend_from_slice(&s.to_le_bytes()),
                SampleFormat::Pcm16 => {
                    let v = (s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16;
                    self.buffer.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        self.out.write_all(&self.buffer)?;
        self.out.flush()?;
        self.data_bytes += self.buffer.len() as u64;
        Ok(())
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.data_bytes / bytes_per_sample(self.format) as u64
    }

    /// The writer, for a caller that ends it its own way.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl WavStream<File> {
    /// Ends a stream into a file: sets the header's lengths (a file past 4 GiB keeps them
    /// open, as WAV cannot say more), flushes and syncs.
    pub fn close_file(mut self) -> std::io::Result<()> {
        if let Ok(data) = u32::try_from(self.data_bytes) {
            if data <= OPEN_LENGTH - 36 {
                self.out.seek(SeekFrom::Start(4))?;
                self.out.write_all(&(36 + data).to_le_bytes())?;
                self.out.seek(SeekFrom::Start(40))?;
                self.out.write_all(&data.to_le_bytes())?;
            }
        }
        self.out.flush()?;
        self.out.sync_all()
    }
}

fn bytes_per_sample(format: SampleFormat) -> u16 {
    match format {
        SampleFormat::Float32 => 4,
        SampleFormat::Pcm16 => 2,
    }
}

/// A 44-byte mono WAV header (format 3, IEEE float, or 1, PCM); `data_bytes` `None` leaves the
/// lengths open.
fn header(sample_rate: u32, format: SampleFormat, data_bytes: Option<u32>) -> Vec<u8> {
    let width = bytes_per_sample(format);
    let tag: u16 = match format {
        SampleFormat::Float32 => 3,
        SampleFormat::Pcm16 => 1,
    };
    let (riff, data) = match data_bytes {
        Some(d) => (36 + d, d),
        None => (OPEN_LENGTH, OPEN_LENGTH),
    };
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&tag.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * width as u32).to_le_bytes());
    h.extend_from_slice(&width.to_le_bytes()); // block align
    h.extend_from_slice(&(width * 8).to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_file_stream_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let samples: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        for (format, tol) in [(SampleFormat::Float32, 0.0), (SampleFormat::Pcm16, 1e-4)] {
            let path = dir.path().join("s.wav");
            let file = File::create(&path).unwrap();
            let mut w = WavStream::start(file, 32000, format).unwrap();
            for chunk in samples.chunks(700) {
                w.write(chunk).unwrap();
            }
            assert_eq!(w.samples(), 3000);
            w.close_file().unwrap();
            let (back, rate) = crate::audio::read_wav_mono(&path).unwrap();
            assert_eq!(rate, 32000);
            assert_eq!(back.len(), samples.len());
            assert!(back.iter().zip(&samples).all(|(a, b)| (a - b).abs() <= tol));
        }
    }

    #[test]
    fn an_open_stream_has_open_lengths_and_its_samples_after_the_header() {
        let mut w = WavStream::start(Vec::new(), 16000, SampleFormat::Pcm16).unwrap();
        w.write(&[0.5, f32::NAN, -1.0]).unwrap();
        let bytes = w.into_inner();
        assert_eq!(&bytes[4..8], &[0xff; 4]);
        assert_eq!(&bytes[40..44], &[0xff; 4]);
        assert_eq!(bytes.len(), 44 + 6);
        let s: Vec<i16> = bytes[44..]
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(s, vec![16384, 0, -32767]);
        // The header is the one a closed stream would have, but for the lengths.
        let mut closed = header(16000, SampleFormat::Pcm16, Some(6));
        closed[4..8].copy_from_slice(&[0xff; 4]);
        closed[40..44].copy_from_slice(&[0xff; 4]);
        assert_eq!(&bytes[..44], &closed[..]);
    }
}
