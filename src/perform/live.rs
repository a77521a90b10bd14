//! A piece playing in the background whose steering changes while it plays: what the REPL's
//! `play` and `baton watch --live` drive.
//!
//! The performance thread steers through a [`LiveHook`], which reads the steering from a slot
//! the caller can fill at any time ([`LivePiece::steer`]). A change reaches the next step the
//! decoder takes, so it is heard after the audio already generated ahead of the ear (the
//! control latency, [`LiveStatus::ahead_s`]); it can jump, or ramp from the old steering to the
//! new over a number of steps.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::Tensor;

use super::{perform, Buffering, Listen, PlayEvent, PlayerSink, Report, Sink, Sparkline, WavFile};
use crate::audio::play::Player;
use crate::audio::SampleFormat;
use crate::model::{Extent, GenerateOptions, MusicGen, ResidualHook};
use crate::steer::PlanHook;

/// The steering a playing piece reads, and the change under way.
struct Slot {
    now: Option<PlanHook>,
    /// The steering being ramped away from, with the step the ramp began at and its length.
    before: Option<(Option<PlanHook>, usize, usize)>,
    /// A change waiting for the next step (its ramp length in steps).
    pending: Option<(Option<PlanHook>, usize)>,
    /// The last step the decoder asked for.
    step: usize,
}

/// The [`ResidualHook`] of a live piece (see the module doc).
pub struct LiveHook {
    slot: Arc<Mutex<Slot>>,
    out: Vec<Option<Tensor>>,
    conditional_only: bool,
}

impl LiveHook {
    /// A hook steering as `hook` does until told otherwise, and the handle that tells it.
    pub fn new(hook: Option<PlanHook>) -> (Self, LiveSteering) {
        let conditional_only = hook.as_ref().is_some_and(|h| h.conditional_only());
        let slot = Arc::new(Mutex::new(Slot {
            now: hook,
            before: None,
            pending: None,
            step: 0,
        }));
        (
            LiveHook {
                slot: slot.clone(),
                out: Vec::new(),
                conditional_only,
            },
            LiveSteering { slot },
        )
    }
}

/// Offsets of `hook` at `step`, as owned tensors (none when it adds nothing).
fn offsets_of(
    hook: Option<&mut PlanHook>,
    step: usize,
    batch: usize,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    match hook {
        Some(h) => Ok(h.offsets(step, batch)?.to_vec()),
        None => Ok(Vec::new()),
    }
}

impl ResidualHook for LiveHook {
    fn offsets(&mut self, step: usize, batch: usize) -> candle_core::Result<&[Option<Tensor>]> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| candle_core::Error::Msg("the live steering slot is poisoned".into()))?;
        slot.step = step;
        if let Some((next, ramp)) = slot.pending.take() {
            let old = std::mem::replace(&mut slot.now, next);
            slot.before = (ramp > 0).then_some((old, step, ramp));
        }
        self.conditional_only = slot.now.as_ref().is_some_and(|h| h.conditional_only());
        let new = offsets_of(slot.now.as_mut(), step, batch)?;
        let done = match &mut slot.before {
            Some((old, from, ramp)) if step < *from + *ramp => {
                let a = (step - *from + 1) as f64 / (*ramp + 1) as f64;
                let old = offsets_of(old.as_mut(), step, batch)?;
                let n = new.len().max(old.len());
                self.out = (0..n)
                    .map(|l| {
                        let (o, w) = (old.get(l).cloned().flatten(), new.get(l).cloned().flatten());
                        Ok(match (o, w) {
                            (None, None) => None,
                            (Some(o), None) => Some((o * (1.0 - a))?),
                            (None, Some(w)) => Some((w * a)?),
                            (Some(o), Some(w)) => {
                                Some(((o * (1.0 - a))?.broadcast_add(&(w * a)?))?)
                            }
                        })
                    })
                    .collect::<candle_core::Result<_>>()?;
                false
            }
            _ => {
                self.out = new;
                true
            }
        };
        if done {
            slot.before = None;
        }
        Ok(&self.out)
    }

    fn conditional_only(&self) -> bool {
        self.conditional_only
    }
}

/// The handle that changes a [`LiveHook`]'s steering from another thread.
#[derive(Clone)]
pub struct LiveSteering {
    slot: Arc<Mutex<Slot>>,
}

impl LiveSteering {
    /// From the next step on, steers as `hook` says, moving there over `ramp_steps` steps (0:
    /// at once). Returns the step the change starts at.
    pub fn replace(&self, hook: Option<PlanHook>, ramp_steps: usize) -> usize {
        match self.slot.lock() {
            Ok(mut slot) => {
                slot.pending = Some((hook, ramp_steps));
                slot.step + 1
            }
            Err(_) => 0,
        }
    }
}

/// How a live piece is going.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    /// Decoder steps taken.
    pub steps: usize,
    /// Seconds of audio generated.
    pub audio_s: f64,
    /// Seconds since it started.
    pub elapsed_s: f64,
    /// Seconds of audio generated but not yet heard: how late a change is heard (`None`
    /// before playback starts).
    pub ahead_s: Option<f64>,
    /// Frames per second of audio, to turn steps into real time.
    pub frame_rate: f64,
    /// The listened concept's reading over the last seconds, drawn (empty when none).
    pub reading: String,
}

impl LiveStatus {
    /// Generation speed against real time (above 1: faster).
    pub fn speed(&self) -> f64 {
        self.steps as f64 / self.elapsed_s.max(1e-9) / self.frame_rate.max(1e-9)
    }
}

impl std::fmt::Display for LiveStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} s played of {:.1} s made, {:.1} steps/s ({:.2}x real time)",
            (self.audio_s - self.ahead_s.unwrap_or(self.audio_s)).max(0.0),
            self.audio_s,
            self.steps as f64 / self.elapsed_s.max(1e-9),
            self.speed()
        )?;
        if let Some(a) = self.ahead_s {
            write!(f, ", {a:.1} s buffered (a change is heard that late)")?;
        }
        if !self.reading.is_empty() {
            write!(f, ", concept {}", self.reading)?;
        }
        Ok(())
    }
}

/// What a live piece plays: the piece, and where its sound goes.
pub struct LiveRequest {
    /// The prompt.
    pub prompt: String,
    /// Generation options (`max_new_tokens` unread when the extent is endless).
    pub options: GenerateOptions,
    /// Clip, window, endless.
    pub extent: Extent,
    /// The steering to start with.
    pub hook: Option<PlanHook>,
    /// The concept read while it plays.
    pub listen: Option<Listen>,
    /// The player and its buffering.
    pub player: Player,
    /// How the player buffers.
    pub buffering: Buffering,
    /// A file that keeps what is played (whole when stopped).
    pub keep: Option<PathBuf>,
    /// Sample format of the stream and the file.
    pub format: SampleFormat,
}

/// A piece playing in the background (see the module doc).
pub struct LivePiece {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Report, String>>>,
    steering: LiveSteering,
    status: Arc<Mutex<LiveStatus>>,
    frame_rate: f64,
}

impl LivePiece {
    /// Starts playing `request` on `model`; `events` hears what playback does (started,
    /// underruns). Returns at once.
    pub fn start(
        model: Arc<MusicGen>,
        request: LiveRequest,
        events: Arc<dyn Fn(PlayEvent) + Send + Sync>,
    ) -> Result<LivePiece, String> {
        let rate = model.sample_rate();
        let frame_rate = model.frame_rate();
        let player = PlayerSink::start(
            &request.player,
            rate,
            request.format,
            request.buffering,
            events,
        )
        .map_err(|e| e.to_string())?;
        let clock = player.clock();
        let file = request
            .keep
            .as_deref()
            .map(|p| WavFile::create(p, rate, request.format))
            .transpose()
            .map_err(|e| e.to_string())?;
        let (mut hook, steering) = LiveHook::new(request.hook);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(LiveStatus {
            frame_rate,
            ..LiveStatus::default()
        }));
        let (stop_flag, shared_status) = (stop.clone(), status.clone());
        let thread = std::thread::spawn(move || {
            let mut player = player;
            let mut file = file;
            let mut sinks: Vec<&mut dyn Sink> = vec![&mut player];
            if let Some(f) = file.as_mut() {
                sinks.push(f);
            }
            let mut should_stop = || stop_flag.load(Ordering::SeqCst);
            let mut line = Sparkline::new((5.0 * frame_rate) as usize);
            let mut on_progress = |p: &super::Progress| {
                if let Some(r) = p.reading {
                    line.push(r);
                }
                if let Ok(mut s) = shared_status.lock() {
                    *s = LiveStatus {
                        steps: p.steps,
                        audio_s: p.audio_s,
                        elapsed_s: p.elapsed_s,
                        ahead_s: clock.ahead_s(),
                        frame_rate,
                        reading: line.draw(24),
                    };
                }
            };
            perform(
                &model,
                &request.prompt,
                &request.options,
                &request.extent,
                Some(&mut hook),
                request.listen.as_ref(),
                &mut sinks,
                super::DEFAULT_CHUNK_FRAMES,
                &mut should_stop,
                &mut on_progress,
            )
            .map_err(|e| e.to_string())
        });
        Ok(LivePiece {
            stop,
            thread: Some(thread),
            steering,
            status,
            frame_rate,
        })
    }

    /// Steers the playing piece as `hook` says from its next step, ramping over `ramp_s`
    /// seconds of music (0: at once). Returns the step the change starts at (the piece's
    /// step, as the hook counts them) and the status at the change.
    pub fn steer(&self, hook: Option<PlanHook>, ramp_s: f64) -> (usize, LiveStatus) {
        let ramp_steps = (ramp_s.max(0.0) * self.frame_rate).round() as usize;
        let from = self.steering.replace(hook, ramp_steps);
        (from, self.status())
    }

    /// How it is going.
    pub fn status(&self) -> LiveStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// False once the piece has ended (or failed).
    pub fn is_playing(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the piece (at once, if it still plays) and returns what it did.
    pub fn stop(mut self) -> Result<Report, String> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Report, String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the performance thread failed".into()),
            None => Err("the piece was already stopped".into()),
        }
    }
}

impl Drop for LivePiece {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::{Plan, Schedule, Term};
    use candle_core::{DType, Device};

    /// A hook adding `strength` times a fixed direction at block 0 of an 8-block, 2-wide model.
    fn hook(strength: f64) -> PlanHook {
        let plan = Plan {
            terms: vec![Term {
                direction: crate::steer::direction::tests::dir(
                    "d",
                    "auc",
                    &[(0, 1.0, vec![0.6, 0.8])],
                ),
                strength,
                schedule: Schedule::constant(1.0),
                weights: Default::default(),
                gate: None,
                unit: Default::default(),
            }],
            ..Plan::default()
        };
        PlanHook::new(
            &plan,
            100,
            50.0,
            8,
            2,
            &Device::Cpu,
            DType::F32,
            &mut |_, _| Ok(0.0),
        )
        .unwrap()
    }

    fn block0(offsets: &[Option<Tensor>]) -> Vec<f32> {
        offsets[0]
            .as_ref()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn a_change_reaches_the_next_step_and_ramps_from_the_old_steering_to_the_new() {
        let (mut old, mut new) = (hook(1.0), hook(3.0));
        let (mut live, steering) = LiveHook::new(Some(hook(1.0)));
        for step in 0..5 {
            let want = block0(old.offsets(step, 1).unwrap());
            assert_eq!(block0(live.offsets(step, 1).unwrap()), want);
        }
        // Asked after step 4: the change starts at step 5, over 4 steps.
        assert_eq!(steering.replace(Some(hook(3.0)), 4), 5);
        for step in 5..12 {
            let a = ((step as f64 - 4.0) / 5.0).min(1.0) as f32;
            let (o, n) = (
                block0(old.offsets(step, 1).unwrap()),
                block0(new.offsets(step, 1).unwrap()),
            );
            let got = block0(live.offsets(step, 1).unwrap());
            for ((g, o), n) in got.iter().zip(o).zip(n) {
                let want = o * (1.0 - a) + n * a;
                assert!((g - want).abs() < 1e-5, "step {step}: {g} vs {want}");
            }
        }
        // A jump: no ramp, and none for no steering at all.
        steering.replace(None, 0);
        assert!(live.offsets(12, 1).unwrap().iter().all(Option::is_none));
    }
}
