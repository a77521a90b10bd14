//! What a piece is besides its text and its steering: the clip it continues and the window a
//! piece longer than the model's context is generated in. Every front end (the `render` verb,
//! recipes, watch mode, the REPL) turns its flags or verbs into a [`model::Extent`](crate::model::Extent) here, so they
//! all continue clips and extend pieces the same way.
//!
//! Continuation is transformers' `generate(input_values=...)`: the clip is encoded with EnCodec
//! and its frames are teacher-forced after BOS; the output holds the clip's frames, then the new
//! ones. Long pieces are extended as audiocraft does: windows of [`DEFAULT_WINDOW_S`] seconds
//! (at most the model's limit), each next one prompted with the codes of the last `window -
//! stride` seconds of the one before, joined in code space and decoded once.

use std::path::{Path, PathBuf};

use crate::model::{Extent, ModelError, MusicGen, MusicGenConfig, Window};
use crate::steer::Plan;

/// Seconds one pass holds by default (audiocraft's, and musicgen's training length).
pub const DEFAULT_WINDOW_S: f64 = 30.0;
/// Seconds each next window moves on by, by default (audiocraft's `extend_stride`).
pub const DEFAULT_STRIDE_S: f64 = 18.0;
/// Peak level under which a clip counts as silent: there is nothing in it to continue.
const SILENT_PEAK: f32 = 1e-4;

/// A clip a piece continues.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPrompt {
    /// The WAV file.
    pub path: PathBuf,
    /// A hash of its bytes when it was checked: a render of a changed clip is not reused.
    pub hash: u64,
    /// Its length in seconds (0 when not read yet: a take this run is still rendering).
    pub seconds: f64,
    /// Schedule time 0 at the clip's start instead of at the first new frame.
    pub steer_from_clip: bool,
}

impl ClipPrompt {
    /// Checks the clip as far as it can be without the model (readable, not empty, not silent)
    /// and remembers its contents' hash.
    pub fn new(path: &Path, steer_from_clip: bool) -> Result<Self, String> {
        let (audio, rate) = crate::audio::read_wav_mono(path).map_err(|e| e.to_string())?;
        check_not_silent(path, &audio)?;
        Ok(ClipPrompt {
            path: path.to_path_buf(),
            hash: crate::files::content_hash(path).unwrap_or(0),
            seconds: audio.len() as f64 / f64::from(rate.max(1)),
            steer_from_clip,
        })
    }

    /// The clip's codes for `model`: mixed to mono, resampled to the model's rate, encoded.
    pub fn codes(&self, model: &MusicGen) -> Result<Vec<Vec<i64>>, String> {
        let (audio, _) = crate::audio::read_wav_at(&self.path, model.sample_rate())
            .map_err(|e| e.to_string())?;
        check_not_silent(&self.path, &audio)?;
        model
            .clip_codes(&audio)
            .map_err(|e| format!("cannot encode {}: {e}", self.path.display()))
    }
}

fn check_not_silent(path: &Path, audio: &[f32]) -> Result<(), String> {
    let peak = audio.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if peak < SILENT_PEAK {
        return Err(format!(
            "{} is silent: there is nothing in it to continue",
            path.display()
        ));
    }
    Ok(())
}

/// Checks window and stride seconds as far as they can be without the model (positive, the
/// stride inside the window).
pub fn check_window_seconds(window_s: Option<f64>, stride_s: Option<f64>) -> Result<(), String> {
    if let Some(w) = window_s {
        if !(w.is_finite() && w > 0.0) {
            return Err(format!(
                "the window must be a positive number of seconds, got {w}"
            ));
        }
    }
    if let Some(t) = stride_s {
        if !(t.is_finite() && t > 0.0) {
            return Err(format!(
                "the stride must be a positive number of seconds, got {t}"
            ));
        }
        if let Some(w) = window_s.filter(|w| t >= *w) {
            return Err(format!(
                "the stride ({t} s) must be shorter than the window ({w} s)"
            ));
        }
    }
    Ok(())
}

/// The window for a model of this config: `window_s` (default [`DEFAULT_WINDOW_S`], at most the
/// model's limit) moving on by `stride_s` (default [`DEFAULT_STRIDE_S`], at most 60 % of the
/// window).
pub fn window(
    config: &MusicGenConfig,
    window_s: Option<f64>,
    stride_s: Option<f64>,
) -> Result<Window, String> {
    let w = window_s.unwrap_or_else(|| DEFAULT_WINDOW_S.min(config.max_seconds()));
    let t = stride_s.unwrap_or_else(|| DEFAULT_STRIDE_S.min(0.6 * w));
    config.window(w, t)
}

/// Checks a piece's window and clip against a model's config alone (no weights loaded): the
/// window fits the model, and leaves room after the clip.
pub fn check_with_config(
    config: &MusicGenConfig,
    clip: Option<&ClipPrompt>,
    window_s: Option<f64>,
    stride_s: Option<f64>,
) -> Result<(), String> {
    let w = window(config, window_s, stride_s)?;
    if let Some(c) = clip {
        let frames = (c.seconds * config.frame_rate()).ceil() as usize;
        if frames >= w.frames {
            return Err(format!(
                "the clip ({:.2} s, {frames} frames) is as long as the window ({} frames): a \
                 window must hold the clip and at least one new frame (shorten the clip or widen \
                 the window)",
                c.seconds, w.frames
            ));
        }
    }
    Ok(())
}

/// The longest finite piece, in seconds: an hour, as far as the steering of a piece without end
/// is worked out. A finite length is generated, steered and held whole before it is written, so
/// a slip like `--seconds 1e9` would take tens of gigabytes before failing; longer music is a
/// piece without end (`--seconds inf`), streamed or stopped with Ctrl-C.
pub const MAX_PIECE_SECONDS: f64 = FOREVER_STEER_HORIZON_S;

/// Refuses a finite piece length that is not a positive number of seconds up to
/// [`MAX_PIECE_SECONDS`].
pub fn check_seconds(seconds: f64) -> Result<(), String> {
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("must be a positive number, got {seconds}"));
    }
    if seconds > MAX_PIECE_SECONDS {
        // 1e300 written out would be a screenful of zeros.
        let shown = if seconds < 1e9 {
            seconds.to_string()
        } else {
            format!("{seconds:e}")
        };
        return Err(format!(
            "{shown} is longer than the longest finite piece ({MAX_PIECE_SECONDS} s; \
             `--seconds inf` plays without end)"
        ));
    }
    Ok(())
}

/// Refuses a `max_new_tokens` outside what a model of this config generates as one finite
/// piece (no weights loaded): at least [`MusicGenConfig::min_new_tokens`], at most the steps of
/// [`MAX_PIECE_SECONDS`].
pub fn check_new_tokens(config: &MusicGenConfig, max_new_tokens: usize) -> Result<(), String> {
    let codebooks = config.decoder.num_codebooks;
    let lo = config.min_new_tokens();
    if max_new_tokens < lo {
        return Err(format!(
            "must be at least {lo} for this model ({codebooks} codebooks), got {max_new_tokens}"
        ));
    }
    let frames = (MAX_PIECE_SECONDS * config.frame_rate()).round() as usize;
    let hi = frames + codebooks - 1;
    if max_new_tokens > hi {
        return Err(format!(
            "must be at most {hi} for this model ({codebooks} codebooks, {} frames/s: \
             {MAX_PIECE_SECONDS} s, the longest finite piece), got {max_new_tokens}",
            config.frame_rate()
        ));
    }
    Ok(())
}

/// Decoder steps for `seconds` of new music (frames + codebooks - 1), up to
/// [`MAX_PIECE_SECONDS`]: pieces longer than a window are generated window by window.
pub fn steps_for_seconds(model: &MusicGen, seconds: f64) -> Result<usize, ModelError> {
    check_seconds(seconds).map_err(|e| ModelError::Invalid(format!("seconds {e}")))?;
    let frames = (seconds * model.frame_rate()).round().max(1.0) as usize;
    Ok(frames + model.num_codebooks() - 1)
}

/// Steering schedules of a piece without end are worked out this far ahead (an hour); past it
/// the piece plays on unsteered.
pub const FOREVER_STEER_HORIZON_S: f64 = 3600.0;

/// The decoder steps a piece's steering is worked out for: its own `steps`, or an hour's for a
/// piece without end.
pub fn steering_steps(model: &MusicGen, steps: usize, endless: bool) -> Result<usize, ModelError> {
    if endless {
        steps_for_seconds(model, FOREVER_STEER_HORIZON_S)
    } else {
        Ok(steps)
    }
}

/// The extent of a piece: the clip's codes (if any) and its window.
pub fn extent(
    model: &MusicGen,
    clip: Option<&ClipPrompt>,
    window_s: Option<f64>,
    stride_s: Option<f64>,
) -> Result<Extent, String> {
    Ok(Extent {
        clip: clip.map(|c| c.codes(model)).transpose()?,
        window: Some(window(model.config(), window_s, stride_s)?),
        endless: false,
    })
}

/// `plan` as the piece's new frames see it: unchanged, or (when the clip asks) with schedule
/// time 0 at the clip's start, so the first new frame is at the clip's length.
pub fn plan_for(plan: &Plan, clip: Option<&ClipPrompt>, extent: &Extent, frame_rate: f64) -> Plan {
    let clip_frames = extent
        .clip
        .as_ref()
        .map_or(0, |c| c.first().map_or(0, Vec::len));
    match clip {
        Some(c) if c.steer_from_clip && clip_frames > 0 => {
            plan.shifted(-plan.time_of(clip_frames, frame_rate))
        }
        _ => plan.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::Schedule;

    #[test]
    fn steering_from_the_clip_moves_schedule_time_zero_to_the_clip_start() {
        let plan = Plan::default();
        let ramp = Schedule::linear(0.0, 1.0, 0.0, 1.0);
        let extent = Extent {
            clip: Some(vec![vec![0; 25]; 2]),
            window: None,
            endless: false,
        };
        let clip = |from_clip| ClipPrompt {
            path: PathBuf::from("c.wav"),
            hash: 0,
            seconds: 0.5,
            steer_from_clip: from_clip,
        };
        let mut with_term = plan.clone();
        with_term.terms.push(crate::steer::Term {
            direction: crate::steer::direction::tests::dir("d", "auc", &[(0, 1.0, vec![1.0])]),
            strength: 1.0,
            schedule: ramp,
            weights: Default::default(),
            gate: None,
            unit: Default::default(),
        });
        let strengths = |p: &Plan| p.strengths(1, 50.0, &mut |_, _| Ok(0.0)).unwrap()[0][0];
        // From the first new frame: t = 0 there. From the clip's start: 25 frames = 0.5 s in.
        assert_eq!(
            strengths(&plan_for(&with_term, Some(&clip(false)), &extent, 50.0)),
            0.0
        );
        let shifted = plan_for(&with_term, Some(&clip(true)), &extent, 50.0);
        assert!((strengths(&shifted) - 0.5).abs() < 1e-12);
        // With a tempo, schedule time is beats: 0.5 s at 120 BPM is one beat.
        let mut beats = with_term.clone();
        beats.tempo = Some(120.0);
        let shifted = plan_for(&beats, Some(&clip(true)), &extent, 50.0);
        assert!((strengths(&shifted) - 1.0).abs() < 1e-12);
    }
}
