//! Reading audio with a trained probe: which class a clip, or each window of it, sounds like to
//! the probe's classifier, or how far its pooled state projects onto the concept direction. This
//! is how steering is checked (the paper labels generated clips with its probes), and windows
//! show when a schedule takes effect. `baton eval` prints it.
//!
//! Each window is read on its own, like a training clip: encoded from its first sample and run
//! teacher-forced with no text, so a window sees none of the audio before it.

use std::path::Path;

use super::extract::{pooled_audio, Pooling};
use crate::audio::{read_wav_at, windows};
use crate::model::{ModelError, MusicGen};
use crate::rfm::io::SavedProbe;

/// Reading audio failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The model could not encode or run the audio.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The probe does not fit the model or the audio.
    #[error("{0}")]
    Probe(String),
    /// The clip cannot be read.
    #[error("{0}")]
    Clip(String),
}

/// A WAV file's samples, mixed to mono and resampled to the model's rate when it has another.
pub fn read_clip(model: &MusicGen, path: &Path) -> Result<Vec<f32>, EvalError> {
    read_wav_at(path, model.sample_rate())
        .map(|(audio, _)| audio)
        // Every audio error already names the file.
        .map_err(|e| EvalError::Clip(e.to_string()))
}

/// What reads a pooled block output.
pub enum Reader {
    /// A multiclass (or binary) classifier, as `baton train --task multiclass` saves it.
    Classifier(Box<SavedProbe>),
    /// A concept direction at one block: the projection onto it (larger = more concept).
    Direction {
        /// The block read.
        block: usize,
        /// The unit direction there.
        vector: Vec<f32>,
    },
}

/// What a reader made of one stretch of audio.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Class probabilities, in the classifier's class order.
    Probabilities(Vec<f64>),
    /// Projection onto the direction.
    Projection(f64),
}

/// One window's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Start of the window, seconds.
    pub start: f64,
    /// End of the window, seconds.
    pub end: f64,
    /// What the reader made of it.
    pub value: Value,
}

impl Reader {
    /// Checks that the reader fits `model`: its block exists and its width is the model's.
    pub fn check_fits(&self, model: &MusicGen) -> Result<(), EvalError> {
        let (block, width) = match self {
            Reader::Classifier(c) => (c.layer, c.rfm.centers.ncols()),
            Reader::Direction { block, vector } => (*block, vector.len()),
        };
        if block >= model.num_layers() {
            return Err(EvalError::Probe(format!(
                "the probe reads block {block}, but the model has {} blocks",
                model.num_layers()
            )));
        }
        if width != model.hidden_size() {
            return Err(EvalError::Probe(format!(
                "the probe reads {width}-wide states, but the model's are {} wide (was it \
                 trained on another model?)",
                model.hidden_size()
            )));
        }
        Ok(())
    }

    /// The decoder block whose pooled output is read.
    pub fn block(&self) -> usize {
        match self {
            Reader::Classifier(c) => c.layer,
            Reader::Direction { block, .. } => *block,
        }
    }

    /// Reads one pooled block output.
    pub fn read(&self, h: &[f32]) -> Result<Value, EvalError> {
        match self {
            Reader::Classifier(c) => c
                .classify(h)
                .map(Value::Probabilities)
                .map_err(EvalError::Probe),
            Reader::Direction { vector, .. } if vector.len() != h.len() => {
                Err(EvalError::Probe(format!(
                    "the direction is {} wide but the model's states are {}",
                    vector.len(),
                    h.len()
                )))
            }
            Reader::Direction { vector, .. } => Ok(Value::Projection(
                h.iter()
                    .zip(vector)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum(),
            )),
        }
    }
}

/// The most likely class: the first of the largest probabilities (0 when there are none).
pub fn most_likely(probs: &[f64]) -> usize {
    (0..probs.len()).fold(0, |best, k| if probs[k] > probs[best] { k } else { best })
}

/// Readings summed up: per class, the mean probability and how many readings have it as the
/// most likely class; or the projections' mean and range.
#[derive(Debug, Clone, PartialEq)]
pub enum Tally {
    /// Class readings.
    Classes {
        /// Mean probability per class.
        mean: Vec<f64>,
        /// Readings in which each class is the most likely.
        top: Vec<usize>,
        /// Readings counted.
        n: usize,
    },
    /// Projection readings.
    Projections {
        /// Mean projection.
        mean: f64,
        /// Smallest projection.
        min: f64,
        /// Largest projection.
        max: f64,
        /// Readings counted.
        n: usize,
    },
}

impl Tally {
    /// Sums up `readings` as `reader` made them (`classes` wide for a classifier).
    pub fn of<'a>(reader: &Reader, readings: impl IntoIterator<Item = &'a Reading>) -> Tally {
        match reader {
            Reader::Classifier(c) => {
                let k = c.classes.len().max(1);
                let (mut sum, mut top, mut n) = (vec![0.0; k], vec![0usize; k], 0);
                for r in readings {
                    if let Value::Probabilities(p) = &r.value {
                        n += 1;
                        if let Some(t) = top.get_mut(most_likely(p)) {
                            *t += 1;
                        }
                        for (s, pk) in sum.iter_mut().zip(p) {
                            *s += pk;
                        }
                    }
                }
                let mean = sum.iter().map(|s| s / n.max(1) as f64).collect();
                Tally::Classes { mean, top, n }
            }
            Reader::Direction { .. } => {
                let xs: Vec<f64> = readings
                    .into_iter()
                    .filter_map(|r| match r.value {
                        Value::Projection(x) => Some(x),
                        Value::Probabilities(_) => None,
                    })
                    .collect();
                let n = xs.len();
                Tally::Projections {
                    mean: xs.iter().sum::<f64>() / n.max(1) as f64,
                    min: xs.iter().copied().fold(f64::INFINITY, f64::min),
                    max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    n,
                }
            }
        }
    }
}

/// How to cut a clip: windows of `window` seconds every `hop` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windowing {
    /// Window length, seconds.
    pub window: f64,
    /// Seconds from one window's start to the next.
    pub hop: f64,
}

/// The pooled block outputs of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct PooledWindow {
    /// Start of the window, seconds.
    pub start: f64,
    /// End of the window, seconds.
    pub end: f64,
    /// One pooled vector per requested block, in the order asked.
    pub blocks: Vec<Vec<f32>>,
}

/// Checks that `windowing` can be read by `model`: windows of at least two codec frames (fewer
/// give the decoder nothing to read), a hop of at least one.
pub fn check_windowing(model: &MusicGen, windowing: Option<Windowing>) -> Result<(), EvalError> {
    let Some(w) = windowing else {
        return Ok(());
    };
    let rate = f64::from(model.sample_rate());
    let frame = model.samples_per_frame() as f64 / rate;
    if w.window < 2.0 * frame {
        return Err(EvalError::Probe(format!(
            "a {:.3} s window is too short to read (at least {:.3} s)",
            w.window,
            2.0 * frame
        )));
    }
    if w.hop < frame {
        return Err(EvalError::Probe(format!(
            "a hop of {:.4} s is shorter than one codec frame ({frame:.4} s)",
            w.hop
        )));
    }
    Ok(())
}

/// Pools blocks `layers` of `audio` (mono, at the model's rate): the whole clip, or each window
/// read on its own. `on_window(done, total)` follows the progress.
pub fn pooled_windows(
    model: &MusicGen,
    audio: &[f32],
    layers: &[usize],
    pooling: Pooling,
    windowing: Option<Windowing>,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<Vec<PooledWindow>, EvalError> {
    check_windowing(model, windowing)?;
    let rate = f64::from(model.sample_rate());
    let to_samples = |s: f64| (s * rate).round() as usize;
    let window_len = windowing.map(|w| to_samples(w.window));
    let hop_len = windowing.map_or(audio.len(), |w| to_samples(w.hop));
    let shortest = 2 * model.samples_per_frame();
    let longest = model.max_seconds();
    let spans = windows(audio.len(), window_len, hop_len);
    if let Some(span) = spans.first().filter(|s| s.len() as f64 / rate > longest) {
        return Err(EvalError::Probe(format!(
            "{:.1} s is longer than the {longest:.1} s the model reads at once: read it in \
             windows (a 4 s window matches the concept datasets' clips)",
            span.len() as f64 / rate
        )));
    }
    let total = spans.len();
    let mut pooled = Vec::with_capacity(total);
    for (i, span) in spans.into_iter().enumerate() {
        if span.len() < shortest {
            return Err(EvalError::Probe(format!(
                "{:.3} s of audio is too short to read (at least {:.3} s)",
                span.len() as f64 / rate,
                shortest as f64 / rate
            )));
        }
        pooled.push(PooledWindow {
            start: span.start as f64 / rate,
            end: span.end as f64 / rate,
            blocks: pooled_audio(model, &audio[span], layers, pooling)?,
        });
        on_window(i + 1, total);
    }
    Ok(pooled)
}

/// Reads `audio` (mono, at the model's rate) with `reader`, whole or window by window.
pub fn read_audio(
    model: &MusicGen,
    audio: &[f32],
    reader: &Reader,
    pooling: Pooling,
    windowing: Option<Windowing>,
    on_window: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Reading>, EvalError> {
    pooled_windows(
        model,
        audio,
        &[reader.block()],
        pooling,
        windowing,
        on_window,
    )?
    .into_iter()
    .map(|w| {
        let h = w
            .blocks
            .first()
            .ok_or_else(|| EvalError::Probe("no block output".into()))?;
        Ok(Reading {
            start: w.start,
            end: w.end,
            value: reader.read(h)?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_likely_class_is_the_first_of_the_largest() {
        assert_eq!(most_likely(&[0.2, 0.5, 0.3]), 1);
        assert_eq!(most_likely(&[0.4, 0.2, 0.4]), 0);
        assert_eq!(most_likely(&[]), 0);
    }

    #[test]
    fn a_direction_reads_the_projection() {
        let r = Reader::Direction {
            block: 2,
            vector: vec![0.5, 0.25],
        };
        assert_eq!(r.block(), 2);
        assert_eq!(r.read(&[1.0, 2.0]).unwrap(), Value::Projection(1.0));
        assert!(r.read(&[1.0]).is_err());
    }
}
